#!/usr/bin/env python3
"""Build the blender_m2d Blender extension zips (Blender 4.2+), one per platform / Python / GPU.

Usage (run with the repo's venv python; see docs/packaging.md)::

    python build_addon.py                                   # CPU zips: 3 platforms x py311, py313
    python build_addon.py --platform current --python 3.11  # one zip for this machine
    python build_addon.py --platform linux-x64 --gpu        # onnxruntime-gpu variant
    python build_addon.py --all                             # every CPU and GPU zip
    python build_addon.py --no-wheels                       # add-on only (tests, development)
    options: --out dist  --wheel-cache .cache/wheels  --offline  --keep-staging

Steps per zip: copy ``blender_m2d/`` (without caches and dev files) into a staging folder; resolve
the wheels Blender lacks (librosa and all its dependencies, soundfile, onnxruntime or
onnxruntime-gpu) with pip for the target platform and CPython ABI, pinned to
``requirements/base.txt`` and resolved against the numpy that Blender ships; download them into a
wheel cache; write that variant's ``blender_manifest.toml`` (``wheels``, ``platforms``, Blender
version range); build and validate the zip with the extension CLI that ships inside ``bpy``
(``blender_ext.py build`` / ``validate --valid-tags``). Never bundles numpy or anything else
Blender already ships (:data:`BLENDER_PROVIDES`).

Zip names: ``blender_m2d-<version>-<platform>[-gpu]-py<311|313>.zip`` and, for ``--no-wheels``,
``blender_m2d-<version>-nowheels.zip``. Each zip gets a ``.json`` report beside it (wheels,
versions, hashes, licences, size).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import glob
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

from blender_m2d.core.errors import M2DError  # noqa: E402

PACKAGE_DIR = REPO / "blender_m2d"
MANIFEST_NAME = "blender_manifest.toml"
BASE_REQUIREMENTS = REPO / "requirements" / "base.txt"

#: What the add-on needs at run time beyond Blender (versions pinned in requirements/base.txt).
ROOT_PACKAGES = ("librosa", "soundfile", "onnxruntime")

#: Distributions Blender bundles in its own Python (4.2-5.1): never put these in a zip. A second
#: copy would shadow or fight Blender's (numpy is ABI-critical: bpy, aud and every compiled wheel
#: here must use Blender's numpy).
BLENDER_PROVIDES = frozenset({
    "numpy", "requests", "urllib3", "idna", "charset-normalizer", "certifi", "zstandard", "cython",
})

#: Files and folders of blender_m2d/ that never go into a zip (the manifest's
#: [build].paths_exclude_pattern repeats this for Blender's CLI).
DEV_IGNORE = ("__pycache__", "*.pyc", "*.pyo", ".*", "*.egg-info", "tests", "wheels", "*~")


@dataclasses.dataclass(frozen=True)
class PythonTarget:
    version: str            # "3.11"
    abi: str                # "cp311"
    numpy: str              # numpy specifier of the Blender releases that use this Python
    blender_min: str
    blender_max: str | None  # first Blender version NOT supported (exclusive), None = open


PYTHONS = {
    # Blender 4.2 LTS ships numpy 1.24.3, 4.4-5.0 numpy 1.26.4: resolving against the oldest
    # keeps every compiled wheel importable on all of them (scipy 1.17 needs numpy>=1.26.4).
    "3.11": PythonTarget("3.11", "cp311", "numpy==1.24.3", "4.2.0", "5.1.0"),
    # Blender 5.1 moved to Python 3.13 and numpy 2.3.
    "3.13": PythonTarget("3.13", "cp313", "numpy>=2.3,<2.4", "5.1.0", None),
}


@dataclasses.dataclass(frozen=True)
class PlatformTarget:
    name: str                   # Blender's platform name
    pip_platforms: tuple[str, ...]
    markers: dict
    gpu: bool                   # an onnxruntime-gpu build exists


def _manylinux(arch: str, glibc_max: int) -> tuple[str, ...]:
    # pip does not expand manylinux_2_X to older glibc tags itself; Blender 4.2+ needs glibc 2.28.
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc_max, 4, -1)]
    return (*tags, f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}")


def _markers(sys_platform: str, system: str, os_name: str, machine: str) -> dict:
    return {"sys_platform": sys_platform, "platform_system": system, "os_name": os_name,
            "platform_machine": machine}


PLATFORMS = {
    "linux-x64": PlatformTarget("linux-x64", _manylinux("x86_64", 28),
                                _markers("linux", "Linux", "posix", "x86_64"), gpu=True),
    "windows-x64": PlatformTarget("windows-x64", ("win_amd64",),
                                  _markers("win32", "Windows", "nt", "AMD64"), gpu=True),
    # pip expands macosx_14_0 to every older macOS tag (and universal2). onnxruntime 1.32 only
    # ships macosx_14_0_arm64, so the arm64 zip needs macOS 14+ anyway.
    "macos-arm64": PlatformTarget("macos-arm64", ("macosx_14_0_arm64",),
                                  _markers("darwin", "Darwin", "posix", "arm64"), gpu=False),
    # Intel Macs: Blender 4.2-5.0 only (5.1 dropped them); onnxruntime 1.32 has no x86_64 wheel,
    # so this target currently fails with the list of missing wheels.
    "macos-x64": PlatformTarget("macos-x64", ("macosx_11_0_x86_64",),
                                _markers("darwin", "Darwin", "posix", "x86_64"), gpu=False),
}
DEFAULT_PLATFORMS = ("linux-x64", "windows-x64", "macos-arm64")


@dataclasses.dataclass(frozen=True)
class Variant:
    platform: PlatformTarget | None   # None: --no-wheels
    python: PythonTarget | None
    gpu: bool = False

    def zip_name(self, addon_id: str, version: str) -> str:
        if self.platform is None:
            return f"{addon_id}-{version}-nowheels.zip"
        gpu = "-gpu" if self.gpu else ""
        return f"{addon_id}-{version}-{self.platform.name}{gpu}-py{self.python.abi[2:]}.zip"

    def label(self) -> str:
        if self.platform is None:
            return "no wheels"
        return f"{self.platform.name} {self.python.abi}{' gpu' if self.gpu else ''}"


@dataclasses.dataclass
class Wheel:
    name: str        # canonical distribution name
    version: str
    filename: str
    sha256: str | None
    requires: list[str]


# --------------------------------------------------------------------------------------------
# Small helpers


def log(msg: str) -> None:
    print(msg, flush=True)


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _packaging():
    try:
        from packaging.markers import Marker
        from packaging.requirements import Requirement
        from packaging.version import Version
    except ImportError as err:  # the repo venv has it (pip, setuptools, pooch need it)
        raise SystemExit(f"build_addon.py needs the 'packaging' module: {err}") from err
    return Marker, Requirement, Version


def _pip_noise(line: str) -> bool:
    return "is ignored: it is neither a file nor a directory" in line or not line.strip()


def _pip_tail(text: str, lines: int = 12) -> str:
    kept = [ln for ln in text.splitlines() if not _pip_noise(ln)]
    return "\n".join(kept[-lines:])


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def addon_version() -> str:
    text = (PACKAGE_DIR / "__init__.py").read_text(encoding="utf-8")
    m = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.M)
    if not m:
        raise M2DError("no __version__ found", path=PACKAGE_DIR / "__init__.py")
    return m.group(1)


def load_base_manifest() -> dict:
    path = PACKAGE_DIR / MANIFEST_NAME
    try:
        with open(path, "rb") as fh:
            manifest = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise M2DError(f"cannot read the extension manifest: {err}", path=path) from err
    version = addon_version()
    if manifest.get("version") != version:
        raise M2DError(f"version = {manifest.get('version')!r} but blender_m2d.__version__ = "
                       f"{version!r}; make them equal", path=path)
    for key in ("wheels", "python_versions"):
        if key in manifest:
            raise M2DError(f"the source manifest must not set {key!r}: build_addon.py writes it "
                           "per variant", path=path)
    return manifest


def base_pins() -> dict[str, str]:
    """``{canonical name: "==X"}`` from requirements/base.txt."""
    pins = {}
    for raw in BASE_REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(==\s*[^\s;]+)", line)
        if m:
            pins[_canon(m.group(1))] = m.group(2).replace(" ", "")
    return pins


def root_requirements(gpu: bool) -> list[str]:
    pins = base_pins()
    reqs = []
    for name in ROOT_PACKAGES:
        spec = pins.get(_canon(name), "")
        if name == "onnxruntime" and gpu:
            # onnxruntime-gpu is released later than (and not always alongside) onnxruntime:
            # take the newest GPU build no newer than the CPU pin, within one minor version.
            if spec.startswith("=="):
                major, minor = (int(x) for x in spec[2:].split(".")[:2])
                spec = f">={major}.{max(minor - 1, 0)},<={spec[2:]}"
            name = "onnxruntime-gpu"
        reqs.append(f"{name}{spec}")
    return reqs


def toml_dumps(data: dict) -> str:
    """TOML for the manifest's value types: str, int, bool, lists of str, one level of tables."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, list):
            if not v:
                return "[]"
            return "[\n" + "".join(f"  {value(x)},\n" for x in v) + "]"
        raise TypeError(f"unsupported manifest value {v!r}")

    head, tables = [], []

    def table(prefix: str, d: dict) -> None:
        rows, subs = [], []
        for k, v in d.items():
            (subs if isinstance(v, dict) else rows).append((k, v))
        tables.append(f"\n[{prefix}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in rows))
        for k, v in subs:
            table(f"{prefix}.{k}", v)

    for k, v in data.items():
        if isinstance(v, dict):
            table(k, v)
        else:
            head.append(f"{k} = {value(v)}\n")
    return "".join(head) + "".join(tables)


# --------------------------------------------------------------------------------------------
# Blender's extension CLI (ships inside the bpy module)


def find_extension_cli(cli: str | None, tags: str | None) -> tuple[Path, Path]:
    if cli is None or tags is None:
        spec = importlib.util.find_spec("bpy")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("build_addon.py: the bpy module (Blender as a Python module) is not "
                             "installed; run with the repo venv (.venv/bin/python) or pass --cli "
                             "and --tags")
        root = Path(next(iter(spec.submodule_search_locations)))
        found_cli = sorted(glob.glob(str(root / "*" / "scripts" / "addons_core" / "bl_pkg" / "cli"
                                         / "blender_ext.py")))
        found_tags = sorted(glob.glob(str(root / "*" / "scripts" / "modules" / "_bpy_internal"
                                          / "extensions" / "tags.py")))
        if not found_cli or not found_tags:
            raise SystemExit(f"build_addon.py: Blender's extension CLI was not found under {root}")
        cli = cli or found_cli[-1]
        tags = tags or found_tags[-1]
    return Path(cli), Path(tags)


def run_cli(cli: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(cli), *args], capture_output=True, text=True,
                          timeout=600)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise M2DError(f"blender_ext.py {args[0]} failed (exit {proc.returncode}):\n{out}")
    return out


# --------------------------------------------------------------------------------------------
# Wheel resolution and download


class Resolver:
    """Resolves and fetches the wheels of one (platform, Python, gpu) target with pip."""

    def __init__(self, variant: Variant, cache: Path, offline: bool) -> None:
        self.variant = variant
        self.plat = variant.platform
        self.py = variant.python
        self.cache = cache
        self.offline = offline
        self.Marker, self.Requirement, self.Version = _packaging()
        self.env = {
            **self.plat.markers,
            "implementation_name": "cpython", "implementation_version": f"{self.py.version}.0",
            "platform_python_implementation": "CPython", "platform_release": "",
            "platform_version": "", "python_version": self.py.version,
            "python_full_version": f"{self.py.version}.0",
        }

    def _target_args(self) -> list[str]:
        args = ["--only-binary=:all:", "--python-version", self.py.version,
                "--implementation", "cp", "--abi", self.py.abi]
        for tag in self.plat.pip_platforms:
            args += ["--platform", tag]
        if self.offline:
            args += ["--no-index", "--find-links", str(self.cache)]
        return args

    def _pip(self, args: list[str]) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "pip", *args]
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONWARNINGS": "ignore"}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)

    def _dry_run(self, reqs: list[str], no_deps: bool = False):
        with tempfile.TemporaryDirectory(prefix="m2d_pip_") as tmp:
            report = Path(tmp) / "report.json"
            args = ["install", "--dry-run", "--ignore-installed", "--quiet", "--report",
                    str(report), *self._target_args(), *(["--no-deps"] if no_deps else []), *reqs]
            proc = self._pip(args)
            data = json.loads(report.read_text()) if proc.returncode == 0 else None
        return proc, data

    def _what(self) -> str:
        return f"{self.plat.name} / CPython {self.py.version} ({self.py.abi})"

    @staticmethod
    def _available(stderr: str) -> str:
        m = re.search(r"\(from versions: ([^)]*)\)", stderr)
        return (m.group(1).strip() if m else "") or "none"

    def _diagnose(self, reqs: list[str], proc: subprocess.CompletedProcess) -> M2DError:
        """pip stops at the first missing wheel: probe each requirement on its own, then resolve
        the ones that have wheels to name a missing transitive dependency too."""
        missing, ok = [], []
        for req in reqs:
            if _canon(self.Requirement(req).name) in BLENDER_PROVIDES:
                ok.append(req)
                continue
            probe, _ = self._dry_run([req], no_deps=True)
            if probe.returncode != 0:
                missing.append(f"{req} (versions with a wheel for this target: "
                               f"{self._available(probe.stderr)})")
            else:
                ok.append(req)
        deeper = proc
        if missing and ok:
            deeper, _ = self._dry_run(ok)
        if deeper.returncode != 0:
            m = re.search(r"No matching distribution found for (\S+)", deeper.stderr)
            if m and not any(x.startswith(m.group(1) + " ") for x in missing):
                missing.append(f"{m.group(1)} (a dependency; versions with a wheel for this "
                               f"target: {self._available(deeper.stderr)})")
        where = (f"the wheel cache {self.cache} (--offline; run once without --offline to fill it)"
                 if self.offline else "the package index")
        if missing:
            return M2DError(f"no wheels for {self._what()} in {where}; missing: "
                            + "; ".join(missing))
        return M2DError(f"pip could not resolve the wheels for {self._what()}:\n"
                        + _pip_tail(proc.stderr))

    def resolve(self) -> tuple[list[Wheel], list[Wheel]]:
        """``(bundle, provided)``: the wheels to bundle, and those of Blender's own packages
        (numpy) that the resolution used: these are only cached, so ``--offline`` can resolve.

        Why re-walk pip's resolution: ``pip --platform/--python-version`` picks files for the
        target but evaluates environment markers for the running interpreter (audioread's
        ``standard-aifc; python_version >= "3.13"`` is dropped when pip runs on 3.11). So walk
        the dependency graph again with the target's markers, add what pip left out and
        re-resolve, and drop what only the host needed.
        """
        reqs = [*root_requirements(self.variant.gpu), self.py.numpy]
        for _ in range(6):
            proc, report = self._dry_run(reqs)
            if proc.returncode != 0:
                raise self._diagnose(reqs, proc)
            found = {}
            for item in report["install"]:
                meta, info = item["metadata"], item["download_info"]
                filename = unquote(os.path.basename(urlparse(info["url"]).path))
                hashes = info.get("archive_info", {}).get("hashes", {})
                found[_canon(meta["name"])] = Wheel(_canon(meta["name"]), meta["version"],
                                                    filename, hashes.get("sha256"),
                                                    meta.get("requires_dist") or [])
            needed, missing, conflicts = self._walk(reqs, found)
            if conflicts:
                raise M2DError(f"inconsistent resolution for {self._what()}: "
                               + "; ".join(conflicts))
            if not missing:
                provided = [found[n] for n in sorted(BLENDER_PROVIDES) if n in found]
                return sorted(needed.values(), key=lambda w: w.name), provided
            reqs = reqs + [m for m in missing if m not in reqs]
        raise M2DError(f"dependency resolution for {self._what()} did not converge: {reqs}")

    def _walk(self, roots: list[str], found: dict[str, Wheel]):
        needed: dict[str, Wheel] = {}
        missing: list[str] = []
        conflicts: list[str] = []
        seen: set[tuple[str, str]] = set()
        queue = [(self.Requirement(r), "") for r in roots]
        while queue:
            req, parent = queue.pop(0)
            name = _canon(req.name)
            if name in BLENDER_PROVIDES:
                continue
            wheel = found.get(name)
            if wheel is None:
                spec = f"{req.name}{req.specifier}"
                if spec not in missing:
                    missing.append(spec)
                continue
            if not req.specifier.contains(self.Version(wheel.version), prereleases=True):
                conflicts.append(f"{parent or 'root'} needs {req} but {name} {wheel.version} "
                                 "was resolved")
            needed[name] = wheel
            for extra in ("", *sorted(req.extras)):
                if (name, extra) in seen:
                    continue
                seen.add((name, extra))
                for dep in wheel.requires:
                    dreq = self.Requirement(dep)
                    if dreq.marker is None or dreq.marker.evaluate({**self.env, "extra": extra}):
                        queue.append((dreq, name))
        return needed, missing, conflicts

    def fetch(self, wheels: list[Wheel]) -> list[Path]:
        self.cache.mkdir(parents=True, exist_ok=True)
        todo = [w for w in wheels if not self._cached_ok(w)]
        if todo:
            if self.offline:
                raise M2DError(f"--offline but the wheel cache {self.cache} lacks: "
                               + ", ".join(w.filename for w in todo))
            log(f"  downloading {len(todo)} wheel(s) into {self.cache}: "
                + ", ".join(f"{w.name}=={w.version}" for w in todo))
            proc = self._pip(["download", "--no-deps", "--quiet", "--dest", str(self.cache),
                              *self._target_args(), *(f"{w.name}=={w.version}" for w in todo)])
            if proc.returncode != 0:
                raise M2DError(f"pip download failed for {self._what()}:\n"
                               + _pip_tail(proc.stderr))
            bad = [w.filename for w in todo if not self._cached_ok(w)]
            if bad:
                raise M2DError(f"downloaded wheels are missing or fail their sha256 check in "
                               f"{self.cache}: " + ", ".join(bad))
        return [self.cache / w.filename for w in wheels]

    def _cached_ok(self, wheel: Wheel) -> bool:
        path = self.cache / wheel.filename
        if not path.is_file():
            return False
        if wheel.sha256 is None:
            wheel.sha256 = sha256_of(path)
            return True
        return sha256_of(path) == wheel.sha256


def wheel_license(path: Path) -> str:
    """Short licence string from a wheel's METADATA (License-Expression, classifiers, License)."""
    try:
        with zipfile.ZipFile(path) as zf:
            meta_name = next(n for n in zf.namelist()
                             if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
            text = zf.read(meta_name).decode("utf-8", "replace")
    except (OSError, StopIteration, zipfile.BadZipFile):
        return "unknown"
    header = text.split("\n\n", 1)[0]
    fields: dict[str, list[str]] = {}
    for line in header.splitlines():
        if ":" in line and not line.startswith((" ", "\t")):
            k, v = line.split(":", 1)
            fields.setdefault(k.strip().lower(), []).append(v.strip())
    if fields.get("license-expression"):
        return fields["license-expression"][0]
    classifiers = [c.split("::")[-1].strip() for c in fields.get("classifier", [])
                   if c.startswith("License ::")]
    if classifiers:
        return " / ".join(classifiers)
    lic = (fields.get("license") or [""])[0]
    return lic[:60] if lic else "unknown"


# --------------------------------------------------------------------------------------------
# Staging and building


def _ignore_dev(directory: str, names: list[str]) -> set[str]:
    import fnmatch

    top = Path(directory).resolve() == PACKAGE_DIR.resolve()
    ignored = set()
    for n in names:
        for pat in DEV_IGNORE:
            if pat in ("tests", "wheels") and not top:
                continue
            if fnmatch.fnmatch(n, pat):
                ignored.add(n)
    return ignored


def check_relative_imports(stage: Path) -> None:
    """Installed as an extension the package is ``bl_ext.<repo>.blender_m2d``: any absolute
    ``import blender_m2d...`` inside it would import nothing (or a different copy)."""
    bad = []
    for path in sorted(stage.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as err:
            raise M2DError(f"syntax error: {err}", path=path) from err
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            if any(n == "blender_m2d" or n.startswith("blender_m2d.") for n in names):
                bad.append(f"{path.relative_to(stage)}:{node.lineno}")
    if bad:
        raise M2DError("absolute imports of blender_m2d break the installed extension (it is "
                       "imported as bl_ext.<repo>.blender_m2d); use relative imports: "
                       + ", ".join(bad))


def variant_manifest(base: dict, variant: Variant, wheel_files: list[str]) -> dict:
    manifest = {k: v for k, v in base.items()}
    if variant.platform is None:
        manifest.pop("platforms", None)   # platform independent: needs the deps from elsewhere
        return manifest
    manifest["platforms"] = [variant.platform.name]
    manifest["blender_version_min"] = variant.python.blender_min
    if variant.python.blender_max:
        manifest["blender_version_max"] = variant.python.blender_max
    else:
        manifest.pop("blender_version_max", None)
    manifest["wheels"] = [f"./wheels/{name}" for name in wheel_files]
    order = ["schema_version", "id", "version", "name", "tagline", "maintainer", "type", "tags",
             "blender_version_min", "blender_version_max", "license", "platforms", "wheels"]
    return {k: manifest[k] for k in order if k in manifest} | {
        k: v for k, v in manifest.items() if k not in order}


def build_variant(variant: Variant, *, out: Path, cache: Path, offline: bool, cli: Path,
                  tags: Path, keep_staging: bool) -> dict:
    base = load_base_manifest()
    zip_path = out / variant.zip_name(base["id"], base["version"])
    log(f"== {zip_path.name} ({variant.label()})")

    wheels: list[Wheel] = []
    wheel_paths: list[Path] = []
    if variant.platform is not None:
        resolver = Resolver(variant, cache, offline)
        wheels, provided = resolver.resolve()
        log(f"  {len(wheels)} wheels: " + " ".join(f"{w.name}=={w.version}" for w in wheels))
        wheel_paths = resolver.fetch(wheels + provided)[: len(wheels)]

    staging_root = Path(tempfile.mkdtemp(prefix="m2d_stage_"))
    try:
        stage = staging_root / base["id"]
        shutil.copytree(PACKAGE_DIR, stage, ignore=_ignore_dev)
        check_relative_imports(stage)
        if wheel_paths:
            (stage / "wheels").mkdir()
            for p in wheel_paths:
                shutil.copy2(p, stage / "wheels" / p.name)
        manifest = variant_manifest(base, variant, [p.name for p in wheel_paths])
        (stage / MANIFEST_NAME).write_text(toml_dumps(manifest), encoding="utf-8")

        out.mkdir(parents=True, exist_ok=True)
        zip_path.unlink(missing_ok=True)
        run_cli(cli, "validate", str(stage), "--valid-tags", str(tags))
        run_cli(cli, "build", "--source-dir", str(stage), "--output-filepath", str(zip_path),
                "--valid-tags", str(tags))
        run_cli(cli, "validate", str(zip_path), "--valid-tags", str(tags))
    finally:
        if keep_staging:
            log(f"  staging kept at {staging_root}")
        else:
            shutil.rmtree(staging_root, ignore_errors=True)

    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    in_zip = sorted(n.split("/", 1)[1] for n in names if n.startswith("wheels/"))
    if in_zip != sorted(p.name for p in wheel_paths):
        raise M2DError(f"the built zip holds wheels {in_zip}, expected "
                       f"{sorted(p.name for p in wheel_paths)}", path=zip_path)
    junk = [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    if junk:
        raise M2DError(f"the built zip holds caches: {junk[:5]}", path=zip_path)

    report = {
        "zip": zip_path.name,
        "size_bytes": zip_path.stat().st_size,
        "platform": variant.platform.name if variant.platform else None,
        "python": variant.python.version if variant.python else None,
        "gpu": variant.gpu,
        "blender_version_min": manifest["blender_version_min"],
        "blender_version_max": manifest.get("blender_version_max"),
        "wheels": [
            {"name": w.name, "version": w.version, "file": p.name, "size_bytes": p.stat().st_size,
             "sha256": w.sha256, "license": wheel_license(p)}
            for w, p in zip(wheels, wheel_paths)
        ],
    }
    zip_path.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n",
                                             encoding="utf-8")
    log(f"  built {zip_path} ({report['size_bytes'] / 1e6:.1f} MB)")
    return report


# --------------------------------------------------------------------------------------------
# Command line


def current_platform() -> str:
    system = {"linux": "linux", "windows": "windows", "darwin": "macos"}.get(
        platform.system().lower())
    machine = {"x86_64": "x64", "amd64": "x64", "arm64": "arm64", "aarch64": "arm64"}.get(
        platform.machine().lower())
    name = f"{system}-{machine}"
    if name not in PLATFORMS:
        raise SystemExit(f"build_addon.py: this machine ({platform.system()} "
                         f"{platform.machine()}) is not a supported platform; choose one of "
                         f"{', '.join(PLATFORMS)}")
    return name


def plan_variants(args: argparse.Namespace) -> list[Variant]:
    if args.no_wheels:
        return [Variant(None, None)]
    platforms = list(dict.fromkeys(
        current_platform() if p == "current" else p for p in (args.platform or [])))
    pythons = [PYTHONS[v] for v in dict.fromkeys(args.python or PYTHONS)]
    variants = []
    if args.all:
        for py in pythons:
            for name in platforms or DEFAULT_PLATFORMS:
                variants.append(Variant(PLATFORMS[name], py))
                if PLATFORMS[name].gpu:
                    variants.append(Variant(PLATFORMS[name], py, gpu=True))
        return variants
    if args.gpu:
        names = platforms or [n for n in DEFAULT_PLATFORMS if PLATFORMS[n].gpu]
        no_gpu = [n for n in names if not PLATFORMS[n].gpu]
        if no_gpu:
            raise SystemExit(f"build_addon.py: onnxruntime-gpu has no build for "
                             f"{', '.join(no_gpu)} (only linux-x64 and windows-x64); build the "
                             "CPU zip there")
    else:
        names = platforms or list(DEFAULT_PLATFORMS)
    for py in pythons:
        for name in names:
            variants.append(Variant(PLATFORMS[name], py, gpu=args.gpu))
    return variants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build_addon.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--platform", action="append", choices=[*PLATFORMS, "current"],
                        help="Blender platform (repeatable; default: "
                             f"{', '.join(DEFAULT_PLATFORMS)}); 'current' = this machine")
    parser.add_argument("--python", action="append", choices=list(PYTHONS),
                        help="Blender's Python: 3.11 = Blender 4.2-5.0, 3.13 = Blender 5.1+ "
                             "(repeatable; default: both)")
    parser.add_argument("--gpu", action="store_true",
                        help="bundle onnxruntime-gpu instead of onnxruntime (linux-x64, "
                             "windows-x64)")
    parser.add_argument("--all", action="store_true",
                        help="every CPU zip plus the GPU zips where onnxruntime-gpu exists")
    parser.add_argument("--no-wheels", action="store_true",
                        help="one platform-independent zip without wheels (tests, development: "
                             "the dependencies must come from elsewhere)")
    parser.add_argument("--out", type=Path, default=Path("dist"), help="output folder (dist)")
    parser.add_argument("--wheel-cache", type=Path, default=Path(".cache/wheels"),
                        help="downloaded wheels are kept here (.cache/wheels)")
    parser.add_argument("--offline", action="store_true",
                        help="resolve and take wheels from --wheel-cache only (no network)")
    parser.add_argument("--keep-staging", action="store_true",
                        help="keep the staging folders (printed) for inspection")
    parser.add_argument("--cli", help="path of Blender's blender_ext.py (default: from bpy)")
    parser.add_argument("--tags", help="path of Blender's tags.py (default: from bpy)")
    args = parser.parse_args(argv)
    if args.no_wheels and (args.platform or args.python or args.gpu or args.all):
        parser.error("--no-wheels takes no --platform/--python/--gpu/--all")
    if args.all and args.gpu:
        parser.error("--all already includes the GPU variants")

    cli, tags = find_extension_cli(args.cli, args.tags)
    variants = plan_variants(args)
    reports, failures = [], []
    for variant in variants:
        try:
            reports.append(build_variant(variant, out=args.out, cache=args.wheel_cache,
                                         offline=args.offline, cli=cli, tags=tags,
                                         keep_staging=args.keep_staging))
        except M2DError as err:
            failures.append(f"{variant.label()}: {err}")
            print(f"build_addon.py: error: {variant.label()}: {err}", file=sys.stderr, flush=True)

    if reports:
        log("\nzip                                              size")
        for r in reports:
            log(f"{r['zip']:<48} {r['size_bytes'] / 1e6:7.1f} MB  ({len(r['wheels'])} wheels)")
    if failures:
        print(f"\nbuild_addon.py: {len(failures)} of {len(variants)} zip(s) failed:\n  "
              + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
