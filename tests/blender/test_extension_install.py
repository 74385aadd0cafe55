"""Extension packaging (issue #7): build_addon.py zips validate with Blender's extension CLI,
install into a fresh Blender user profile with bpy, and enable.

Default run: a zip without wheels (`--no-wheels`, about 1 s to build, 1 s to install) and the
offline error path. `slow`: the real linux-x64 py311 zip with its wheels (about 145 MB; wheels come
from REPO/.cache/wheels, downloaded there on the first run), whose bundled libraries are then
imported and used from the profile's extension site-packages, isolated from this venv.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "blender_m2d"
BUILD = REPO / "build_addon.py"
UI_MODULES = ("preferences", "props", "operators", "panels")
ADDON_MODULE = "bl_ext.user_default.blender_m2d"

if importlib.util.find_spec("bpy") is None:  # the CLI and tags.py ship inside the bpy module
    pytest.skip("bpy (Blender as a Python module) is not installed", allow_module_level=True)


def _load_build_addon():
    spec = importlib.util.spec_from_file_location("build_addon", BUILD)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_addon", module)   # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


build_addon = _load_build_addon()
CLI, TAGS = build_addon.find_extension_cli(None, None)


def run_build(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BUILD), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLI), *args], capture_output=True, text=True,
                          timeout=300)


def manifest_of(zip_path: Path) -> dict:
    with zipfile.ZipFile(zip_path) as zf:
        return tomllib.loads(zf.read("blender_manifest.toml").decode("utf-8"))


# Runs in a fresh Python process: bpy reads BLENDER_USER_RESOURCES when it is imported.
INSTALL_SCRIPT = textwrap.dedent("""
    import json, sys, traceback
    import bpy  # first: it puts Blender's modules (addon_utils) on sys.path
    import addon_utils

    zip_path, result_path, module, disable = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    res = {"extensions_dir": bpy.utils.user_resource("EXTENSIONS"), "errors": []}
    res["install"] = sorted(bpy.ops.extensions.package_install_files(
        filepath=zip_path, repo="user_default", enable_on_install=True))
    res["loaded"] = list(addon_utils.check(module))
    res["enabled"] = module in bpy.context.preferences.addons
    res["m2d_ops"] = sorted(dir(bpy.ops.m2d))
    res["sys_path"] = list(sys.path)
    if disable == "disable":  # (this also removes the extension's wheels from the profile)
        try:
            addon_utils.disable(module, default_set=True, handle_error=lambda ex: res[
                "errors"].append("".join(traceback.format_exception(ex))))
        except Exception:
            res["errors"].append(traceback.format_exc())
        res["enabled_after_disable"] = module in bpy.context.preferences.addons
    with open(result_path, "w") as fh:
        json.dump(res, fh)
""")


def install_in_fresh_profile(zip_path: Path, profile: Path, disable: bool = True) -> dict:
    """Install + enable (then disable) ``zip_path`` in an empty Blender user profile; return what
    bpy saw."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLENDER_USER_")}
    env["BLENDER_USER_RESOURCES"] = str(profile)
    script = profile.parent / f"{profile.name}_install.py"
    result = profile.parent / f"{profile.name}_result.json"
    script.write_text(INSTALL_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(zip_path), str(result), ADDON_MODULE,
                           "disable" if disable else "keep"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(result.read_text())
    res["log"] = proc.stdout + proc.stderr
    return res


def test_source_manifest_is_valid():
    manifest = tomllib.loads((PACKAGE / "blender_manifest.toml").read_text())
    assert manifest["id"] == PACKAGE.name
    assert manifest["version"] == build_addon.addon_version()
    assert manifest["blender_version_min"] == "4.2.0"
    assert "wheels" not in manifest
    proc = run_cli("validate", str(PACKAGE), "--valid-tags", str(TAGS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def nowheels_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = run_build("--no-wheels", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    zips = sorted(out.glob("*.zip"))
    assert [z.name for z in zips] == [f"blender_m2d-{build_addon.addon_version()}-nowheels.zip"]
    return zips[0]


def test_nowheels_zip_contents(nowheels_zip):
    with zipfile.ZipFile(nowheels_zip) as zf:
        names = set(zf.namelist())
    assert {"blender_manifest.toml", "__init__.py", "core/__init__.py"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/." in n]
    assert not [n for n in names if n.startswith(("wheels/", "tests/"))]
    # every asset (models, libraries made by other parts of the project) is shipped
    assets = {p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "assets").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")}
    assert assets <= names, sorted(assets - names)
    manifest = manifest_of(nowheels_zip)
    assert "platforms" not in manifest and "wheels" not in manifest


def test_nowheels_zip_validates(nowheels_zip):
    proc = run_cli("validate", str(nowheels_zip), "--valid-tags", str(TAGS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def nowheels_install(nowheels_zip, tmp_path_factory) -> dict:
    return install_in_fresh_profile(nowheels_zip, tmp_path_factory.mktemp("bl") / "profile")


def test_nowheels_zip_installs_and_enables(nowheels_install):
    res = nowheels_install
    assert res["install"] == ["FINISHED"], res["log"]
    assert res["loaded"] == [True, True], res["log"]
    assert res["enabled"], res["log"]
    installed = Path(res["extensions_dir"]) / "user_default" / "blender_m2d"
    assert (installed / "__init__.py").is_file() and (installed / "core").is_dir()


def test_addon_disables_cleanly(nowheels_install):
    assert nowheels_install["errors"] == []
    assert not nowheels_install["enabled_after_disable"]


def test_m2d_operators_registered(nowheels_install):
    missing = [m for m in UI_MODULES
               if not (PACKAGE / f"{m}.py").is_file() and not (PACKAGE / m).is_dir()]
    if "operators" in missing:
        pytest.skip(f"UI modules not written yet ({', '.join(missing)} missing in blender_m2d/): "
                    "no bpy.ops.m2d operators to check")
    assert nowheels_install["m2d_ops"], "the add-on is enabled but registers no bpy.ops.m2d.*"


def test_offline_without_cached_wheels_lists_what_is_missing(tmp_path):
    proc = run_build("--platform", "linux-x64", "--python", "3.11", "--offline",
                     "--wheel-cache", str(tmp_path / "empty"), "--out", str(tmp_path / "dist"))
    assert proc.returncode == 1
    assert "--offline" in proc.stderr
    for root in ("librosa==", "soundfile==", "onnxruntime=="):
        assert root in proc.stderr, proc.stderr
    assert not list((tmp_path / "dist").glob("*.zip"))


# Imports the bundled libraries with nothing but the standard library, numpy (as Blender ships
# it) and the profile's extension site-packages on sys.path, then uses them.
RUNTIME_CHECK = textwrap.dedent("""
    import importlib, os, pkgutil, sys, tempfile
    import numpy as np
    import librosa, onnxruntime as ort, soundfile
    site, model, repo_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    for mod in (librosa, ort, soundfile):
        assert mod.__file__.startswith(site), (mod.__name__, mod.__file__)
    # every core module of the installed add-on imports with what the zip bundled
    sys.path.append(repo_dir)
    import blender_m2d.core as core
    assert core.__file__.startswith(repo_dir), core.__file__
    for info in pkgutil.iter_modules(core.__path__):
        importlib.import_module("blender_m2d.core." + info.name)
    sr = 22050
    y = np.zeros(sr * 6, dtype=np.float32)
    for t in np.arange(0.25, 6.0, 0.5):
        i = int(t * sr)
        y[i:i + 256] += np.hanning(256).astype(np.float32)
    path = os.path.join(tempfile.mkdtemp(), "clicks.wav")
    soundfile.write(path, y, 44100)
    y2, _ = librosa.load(path, sr=sr)
    tempo, beats = librosa.beat.beat_track(y=y2, sr=sr)
    chroma = librosa.feature.chroma_stft(y=y2, sr=sr)
    bounds = librosa.segment.agglomerative(chroma, 3)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"x": np.ones((2, 3), np.float32)})[0]
    assert np.allclose(out, 2.0), out
    print("OK", float(np.atleast_1d(tempo)[0]), len(beats), len(bounds), ort.__version__)
""")


def _tiny_onnx(path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "double", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.slow
def test_linux_x64_py311_zip_with_wheels(tmp_path):
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        pytest.skip("installs linux-x64 wheels: needs a linux x86-64 machine")
    out = tmp_path / "dist"
    proc = run_build("--platform", "linux-x64", "--python", "3.11", "--out", str(out),
                     "--wheel-cache", str(REPO / ".cache" / "wheels"), timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    zip_path = out / f"blender_m2d-{build_addon.addon_version()}-linux-x64-py311.zip"
    report = json.loads(zip_path.with_suffix(".json").read_text())
    bundled = {w["name"] for w in report["wheels"]}
    assert {"librosa", "soundfile", "onnxruntime", "scipy", "numba", "llvmlite", "soxr",
            "scikit-learn", "audioread", "cffi"} <= bundled
    assert not bundled & build_addon.BLENDER_PROVIDES          # never numpy, requests, ...
    assert "onnxruntime-gpu" not in bundled

    manifest = manifest_of(zip_path)
    assert manifest["platforms"] == ["linux-x64"]
    assert (manifest["blender_version_min"], manifest["blender_version_max"]) == ("4.2.0", "5.1.0")
    assert sorted(Path(w).name for w in manifest["wheels"]) == sorted(
        w["file"] for w in report["wheels"])
    proc = run_cli("validate", str(zip_path), "--valid-tags", str(TAGS))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    res = install_in_fresh_profile(zip_path, tmp_path / "profile", disable=False)
    assert res["loaded"] == [True, True] and res["enabled"], res["log"]
    site = Path(res["extensions_dir"]) / ".local" / "lib" / "python3.11" / "site-packages"
    repo_dir = Path(res["extensions_dir"]) / "user_default"  # holds the installed blender_m2d/
    assert (site / "librosa").is_dir() and (site / "onnxruntime").is_dir(), res["log"]
    assert not (site / "numpy").exists()

    # numpy alone (Blender provides it), linked from this venv
    import numpy

    numpy_only = tmp_path / "numpy_only"
    numpy_only.mkdir()
    np_dir = Path(numpy.__file__).parent
    for entry in (np_dir, np_dir.with_name("numpy.libs")):
        if entry.exists():
            (numpy_only / entry.name).symlink_to(entry)
    model = tmp_path / "double.onnx"
    _tiny_onnx(model)
    code = (f"import sys; sys.path[:0] = [{str(numpy_only)!r}, {str(site)!r}]\n"
            + RUNTIME_CHECK)
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(site), str(model), str(repo_dir)],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("OK"), proc.stdout
