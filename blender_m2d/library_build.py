"""Build a dance library from a studio's BVH/FBX takes (bpy; behind ``m2d library build``).

Pipeline (each step reports problems before the expensive ones run)::

    collect files -> check the output folder -> read every BVH header (truncation, skeleton,
    bone map) -> per take: import with Blender, canonical motion (blender_io) -> dance beats and
    phrase cuts, features (core.phrasing) -> write LIB atomically (core.library)

Bad takes are skipped and listed (in the summary and in library.json's ``skipped``); a bone map
given explicitly that does not fit a take is an error naming every missing bone, raised before
any import. An existing library is replaced only when the new one is complete.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .core.bonemap import BoneMapError, bone_map_for
from .core.errors import M2DError
from .core.library import (
    LIBRARY_FILE,
    DancePhrase,
    Library,
    PhraseMotion,
    PhraseRecord,
    load_library,
    write_library,
)
from .core.phrasing import FEATURE_NAMES, MIN_BEATS, cut_phrases, phrase_features, tempo_bpm

log = logging.getLogger(__name__)

SUPPORTED = (".bvh", ".fbx")


@dataclass
class BuildReport:
    """What a build did: counts, skips and timing (for the CLI, the benchmark and tests)."""

    out: Path
    library: Library | None
    takes: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    mocap_s: float = 0.0
    build_s: float = 0.0

    @property
    def speed_ratio(self) -> float:
        """Seconds of mocap processed per second of build time."""
        return self.mocap_s / self.build_s if self.build_s > 0 else float("inf")

    def lines(self) -> list[str]:
        lib = self.library
        out = []
        if lib is not None:
            s = lib.summary()
            out.append(f"built {s['path']}: {s['phrases']} phrases, {s['minutes']} min, from "
                       f"{s['takes']} takes ({self.mocap_s / 60:.1f} min of mocap) in "
                       f"{self.build_s:.1f} s ({self.speed_ratio:.0f}x real time)")
            out.append("styles: " + ", ".join(f"{k} {v}" for k, v in s["styles"].items()))
            t = s["tempo_bpm"]
            out.append(f"dance-beat tempo: {t['min']}-{t['max']} bpm (median {t['median']})")
        out.append(f"skipped {len(self.skipped)} input(s)" + (":" if self.skipped else ""))
        out += [f"  {s['source']}: {s['reason']}" for s in self.skipped]
        return out


def collect_sources(sources: Iterable[str | os.PathLike]) -> tuple[list[Path], list[dict]]:
    """Expand files and folders (recursively) into sorted BVH/FBX files, plus skipped inputs."""
    files, skipped = [], []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file()
                           and f.suffix.lower() in SUPPORTED)
            if not found:
                skipped.append({"source": str(p), "reason": "folder holds no .bvh/.fbx files"})
            files += found
        elif p.is_file():
            if p.suffix.lower() in SUPPORTED:
                files.append(p)
            else:
                skipped.append({"source": str(p), "reason": f"unsupported file type "
                                f"'{p.suffix}' (use .bvh or .fbx)"})
        else:
            raise M2DError("no such file or folder", path=p)
    seen, unique = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, skipped


def check_output(out: str | os.PathLike) -> Path:
    """Fail early unless ``out`` can be (re)written as a library folder."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise M2DError("the output's parent folder does not exist", path=parent)
    if out.exists():
        if not out.is_dir():
            raise M2DError("exists and is not a folder", path=out)
        if any(out.iterdir()) and not (out / LIBRARY_FILE).is_file():
            raise M2DError("exists and is not a dance library; refusing to replace it "
                           "(choose an empty or new folder)", path=out)
    try:
        probe = tempfile.mkdtemp(prefix=f".{out.name}.probe.", dir=parent)
        os.rmdir(probe)
    except OSError as err:
        raise M2DError(f"cannot write the library here ({err.strerror})", path=parent) from err
    return out


def _label(path: Path, base: Path | None) -> str:
    try:
        return path.resolve().relative_to(base).as_posix() if base else path.name
    except ValueError:
        return path.name


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "take"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _meta_for(label: str, meta: Mapping[str, Mapping] | None, style: str | None,
              tags: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    st, tg = style or "unlabeled", list(tags)
    for pattern, spec in (meta or {}).items():
        if fnmatch.fnmatch(label, pattern) or fnmatch.fnmatch(Path(label).name, pattern):
            st = spec.get("style", st)
            tg += [t for t in spec.get("tags", []) if t not in tg]
    return str(st).strip().lower(), tuple(tg)


def build_library(sources: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                  rig: str | Mapping[str, str] | None = None, fps: float = 30.0,
                  units: str = "auto", style: str | None = None, tags: Sequence[str] = (),
                  meta: Mapping[str, Mapping] | None = None, name: str | None = None,
                  min_beats: int = MIN_BEATS, command: str | None = None,
                  on_take: Callable[[int, int, str], None] | None = None) -> BuildReport:
    """Build a library folder ``out`` from BVH/FBX files or folders of them.

    ``rig`` (preset, bone-map JSON path or dict) applies to every take; None auto-detects each
    take's skeleton (takes no preset fits are skipped). ``meta`` maps glob patterns (matched
    against the source label or file name) to ``{"style": ..., "tags": [...]}``; ``style`` and
    ``tags`` are the defaults. Raises :class:`M2DError` for unusable output folders, missing
    inputs, no usable take, and explicit bone maps that do not fit.
    """
    from . import blender_io  # bpy

    t0 = time.perf_counter()
    if not fps > 0:
        raise M2DError(f"--fps must be positive, got {fps}")
    if min_beats < 1:
        raise M2DError(f"--min-beats must be at least 1, got {min_beats}")
    out = check_output(out)
    files, skipped = collect_sources(sources)
    if not files:
        raise M2DError("no .bvh/.fbx takes in the given sources")
    roots = [f.resolve().parent for f in files]
    base = Path(os.path.commonpath(roots)) if roots else None
    # 1. headers of every BVH (truncation, skeleton, bone map) before importing anything
    usable: list[Path] = []
    headers: dict[Path, object] = {}
    map_errors: list[str] = []
    for f in files:
        label = _label(f, base)
        if f.suffix.lower() == ".bvh":
            try:
                hdr = blender_io.check_bvh(f)
                parents = {n: (hdr.joints[p] if p >= 0 else None)
                           for n, p in zip(hdr.joints, hdr.parents)}
                bone_map_for(hdr.joints, rig, parents=parents, role="source",
                             rig_label=f"'{f.name}'", path=f)
                headers[f] = hdr
            except BoneMapError as err:
                if rig is not None:
                    map_errors.append(str(err))
                else:
                    skipped.append({"source": label, "reason": err.reason})
                continue
            except M2DError as err:
                skipped.append({"source": label, "reason": err.reason})
                continue
        usable.append(f)
    if map_errors:
        raise M2DError("the bone map does not fit these takes (nothing was imported):\n  "
                       + "\n  ".join(map_errors))
    # 2. import and cut
    names: dict[str, int] = {}
    for f in usable:
        names[f.stem] = names.get(f.stem, 0) + 1
    records: list[PhraseRecord] = []
    takes: list[dict] = []
    mocap_s = 0.0
    for i, f in enumerate(usable):
        label = _label(f, base)
        take_name = _safe_id(f.stem if names[f.stem] == 1 else f"{f.parent.name}_{f.stem}")
        if on_take is not None:
            on_take(i, len(usable), label)
        try:
            take = blender_io.import_take(f, rig=rig, fps=fps, units=units, name=take_name,
                                          source_label=label, header=headers.get(f))
        except BoneMapError as err:
            if rig is not None:
                raise
            skipped.append({"source": label, "reason": err.reason})
            continue
        except M2DError as err:
            skipped.append({"source": label, "reason": err.reason})
            continue
        mocap_s += take.duration_s
        st, tg = _meta_for(label, meta, style, tags)
        cuts, beats = cut_phrases(take.positions, take.fps, min_beats=min_beats)
        info = take.info()
        info.update({"style": st, "tags": list(tg), "source_sha256": _sha256(f),
                     "dance_beats": len(beats), "n_phrases": len(cuts)})
        if not cuts:
            reason = (f"shorter than {min_beats} dance beats: {len(beats)} beat marks "
                      f"({max(len(beats) - 1, 0)} intervals) in {take.duration_s:.1f} s"
                      if len(beats) - 1 < min_beats else
                      f"no phrase of {min_beats}+ beats fits ({len(beats)} beats)")
            skipped.append({"source": label, "reason": reason})
            continue
        takes.append(info)
        for k, cut in enumerate(cuts):
            pos = take.positions[cut.start:cut.end + 1]
            rot = take.rotations[cut.start:cut.end + 1]
            n = pos.shape[0]
            phrase = DancePhrase(
                id=f"{take_name}_{k:02d}", source=label, take=take_name,
                frame_start=round(cut.start / fps * take.src_fps),
                frame_end=round(cut.end / fps * take.src_fps), n_frames=n,
                duration_s=(n - 1) / fps, beats_s=cut.beats_s, tempo_bpm=tempo_bpm(cut.beats_s),
                root_displacement_m=pos[-1, 0] - pos[0, 0], style=st, tags=tg,
                features=phrase_features(pos, fps, cut.beats_s))
            records.append(PhraseRecord(phrase, PhraseMotion(fps, pos.astype(np.float32),
                                                             rot.astype(np.float32))))
    if not records:
        raise M2DError("no usable dance phrase in the given takes; skipped: "
                       + "; ".join(f"{s['source']}: {s['reason']}" for s in skipped))
    import bpy

    build = {"tool": f"blender_m2d {__version__}", "blender": bpy.app.version_string,
             "command": command or "", "fps": fps, "units": units,
             "rig": rig if isinstance(rig, str) or rig is None else "custom map",
             "min_beats": min_beats, "phrase_cutting": "dance beats (supplement detector), "
             "DP over low-energy beats, target 8 beat intervals"}
    write_library(out, records, fps=fps, feature_names=FEATURE_NAMES, takes=takes,
                  skipped=skipped, build=build, name=name or out.name)
    report = BuildReport(out=out, library=load_library(out), takes=takes, skipped=skipped,
                         mocap_s=mocap_s, build_s=time.perf_counter() - t0)
    return report
