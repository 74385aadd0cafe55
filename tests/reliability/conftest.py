"""Fixtures of the bad-input suite (issue #9).

Every case asserts the exact user-facing :class:`M2DError` text (or, where the input is valid
after all, the values it produced) and that the user's files and Blender data did not change.
``refused(...)`` does both and records the message; with ``M2D_RELIABILITY_REPORT=FILE`` the
session writes ``{test id: message}`` to FILE (docs/reliability.md's table is made from it).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from snapshot import assert_same, file_tree

from blender_m2d.core.errors import M2DError

REPO = Path(__file__).resolve().parents[2]
MESSAGES: dict[str, str] = {}


def _case_id(request) -> str:
    return request.node.nodeid.split("tests/reliability/")[-1]


@pytest.fixture()
def refused(request) -> Callable[..., M2DError]:
    """``refused(fn, pattern, *watched_paths)``: ``fn()`` raises M2DError (or a subclass) matching
    ``pattern`` (a regex searched in ``str(err)``), and every watched file or folder is byte
    for byte what it was before. Returns the error."""

    def check(fn: Callable[[], object], pattern: str, *watch: str | os.PathLike) -> M2DError:
        before = {str(p): file_tree(p) for p in watch}
        with pytest.raises(Exception) as info:
            fn()
        err = info.value
        assert isinstance(err, M2DError), (
            f"expected M2DError, got {type(err).__name__}: {err}")
        assert re.search(pattern, str(err)), f"{str(err)!r} does not match {pattern!r}"
        if err.path is not None:
            assert str(err).startswith(f"{err.path}: "), str(err)
        for p in watch:
            assert_same(before[str(p)], file_tree(p), f"{p}")
        MESSAGES.setdefault(_case_id(request), str(err))
        return err

    return check


@pytest.fixture()
def note(request) -> Callable[[str], None]:
    """Record what a case produced when it is not an error (for the docs table)."""

    def put(text: str) -> None:
        MESSAGES.setdefault(_case_id(request), text)

    return put


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("M2D_RELIABILITY_REPORT")
    if out and MESSAGES:
        Path(out).write_text(json.dumps(MESSAGES, indent=1, ensure_ascii=False) + "\n")


BUNDLED_LIBRARY = REPO / "blender_m2d" / "assets" / "library"


@pytest.fixture(scope="session")
def bundled_library():
    from blender_m2d.core.library import load_library

    return load_library(BUNDLED_LIBRARY)


@pytest.fixture(scope="session")
def bundled_library_dir() -> Path:
    return BUNDLED_LIBRARY


@pytest.fixture()
def synth_library(tmp_path) -> Path:
    """A small valid library folder (8 synthetic phrases) the test may damage."""
    from blender_m2d.core.library import write_synthetic_library

    return write_synthetic_library(tmp_path / "lib", 8, n_frames=12)


def strip_timings(obj):
    """A plan/analysis JSON document without wall-clock timings (for equality checks)."""
    if isinstance(obj, dict):
        return {k: strip_timings(v) for k, v in obj.items() if k not in ("timings_s",)}
    if isinstance(obj, list):
        return [strip_timings(v) for v in obj]
    return obj

