"""The choreography's Blender tests on the Blender versions studios use: 4.2 LTS and 4.5 LTS.

Each version gets its own venv under ``.cache/bpy-venvs/<version>`` (bpy wheels for Python 3.11
from PyPI, ~400-500 MB each, installed once), then ``tests/blender/test_choreograph.py`` and
``test_export.py`` run there in a subprocess. The default run (bpy 5.0.1) runs them directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "bpy-venvs"
VERSIONS = ("4.2.0", "4.5.15")
PACKAGES = ("numpy==1.26.4", "librosa==0.11.0", "soundfile==0.13.1", "onnxruntime==1.32.0",
            "matplotlib", "pytest", "pytest-timeout", "hypothesis")


def _venv(version: str) -> Path:
    py = CACHE / version / "bin" / "python"
    stamp = CACHE / version / ".installed"
    if stamp.is_file():
        return py
    if sys.version_info[:2] != (3, 11):
        pytest.skip("bpy wheels need Python 3.11")
    subprocess.run([sys.executable, "-m", "venv", str(CACHE / version)], check=True)
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", f"bpy=={version}", *PACKAGES,
                           "-c", str(REPO / "requirements" / "constraints.txt")],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        pytest.skip(f"cannot install bpy=={version}: {proc.stderr[-500:]}")
    stamp.write_text("ok\n")
    return py


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_choreography_blender_tests_pass_on(version):
    py = _venv(version)
    proc = subprocess.run(
        [str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
         "tests/blender/test_choreograph.py", "tests/blender/test_export.py"],
        cwd=REPO, capture_output=True, text=True, timeout=3600,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
