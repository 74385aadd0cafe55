"""Shared test fixtures: paths to the repo's bundled data and (when present) ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
FIXTURES = DATA / "fixtures"
SONGS = DATA / "songs"
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    """Mark everything under tests/blender as `blender`; skip `gpu` tests without CUDA."""
    gpu = None
    for item in items:
        if "/tests/blender/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.blender)
        if item.get_closest_marker("gpu"):
            if gpu is None:
                try:
                    import onnxruntime as ort

                    gpu = "CUDAExecutionProvider" in ort.get_available_providers()
                except ImportError:
                    gpu = False
            if not gpu:
                item.add_marker(pytest.mark.skip(reason="no GPU (CUDA) here"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data when the checkout has it (developers, CI); skipped for users without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present beside the checkout")
    return SHARED_DATA
