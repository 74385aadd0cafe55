from __future__ import annotations

import json

import pytest

from blender_m2d.core.errors import M2DError
from blender_m2d.core.fileio import atomic_directory, read_json, safe_child, write_json_atomic


def test_json_round_trip_and_version_checks(tmp_path):
    p = write_json_atomic(tmp_path / "x.json", {"format": "plan", "format_version": 1, "a": [1]})
    assert read_json(p, kind="plan", max_version=1)["a"] == [1]
    with pytest.raises(M2DError, match="newer than"):
        read_json(p, kind="plan", max_version=0)
    with pytest.raises(M2DError, match="not a library file"):
        read_json(p, kind="library", max_version=1)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(M2DError, match=r"bad\.json: not a valid plan JSON"):
        read_json(tmp_path / "bad.json", kind="plan", max_version=1)
    with pytest.raises(M2DError, match="no such plan file"):
        read_json(tmp_path / "missing.json", kind="plan", max_version=1)


def test_failed_atomic_directory_leaves_existing_output_untouched(tmp_path):
    out = tmp_path / "lib"
    out.mkdir()
    (out / "library.json").write_text(json.dumps({"old": True}))
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "library.json").write_text("half")
        raise RuntimeError("killed")
    assert json.loads((out / "library.json").read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["lib"]
    with atomic_directory(out) as tmp:
        (tmp / "library.json").write_text("{}")
    assert (out / "library.json").read_text() == "{}"


def test_safe_child_refuses_escapes(tmp_path):
    assert safe_child(tmp_path, "a/b.npz") == (tmp_path / "a/b.npz").resolve()
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(M2DError):
            safe_child(tmp_path, bad)


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    from blender_m2d.core import fileio

    p = write_json_atomic(tmp_path / "plan.json", {"a": 1})
    assert (p.stat().st_mode & 0o777) == 0o666 & ~fileio._UMASK
