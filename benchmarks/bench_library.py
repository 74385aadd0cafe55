"""Dance-library benchmark: build speed vs real time, 10k-phrase load time, retarget error.

Run from the repository root:

    .venv/bin/python benchmarks/bench_library.py [--mocap ../shared/data/mocap] [--quick]

Prints a table and one JSON line (``{"bench": "library", ...}``). Targets (issue #4): building
from ../shared/data/mocap runs >= 20x faster than real time (total mocap duration / wall time of
``build_library``, Blender import included); loading a 10,000-phrase library takes < 1 s;
retargeted joints stay within 1 cm of the library motion on test rigs with the motion's
proportions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bench_build(mocap: Path, work: Path) -> dict:
    from blender_m2d.library_build import build_library

    files = sorted(mocap.rglob("*.bvh"))
    meta = {"cmu_salsa/*": {"style": "salsa"}, "cmu_05_modern/*": {"style": "modern"}}
    t0 = time.perf_counter()
    report = build_library(files, work / "full", meta=meta)
    wall = time.perf_counter() - t0
    s = report.library.summary()
    return {"takes": len(files), "mocap_s": round(report.mocap_s, 1), "build_s": round(wall, 2),
            "speed_ratio": round(report.mocap_s / wall, 1), "phrases": s["phrases"],
            "minutes": s["minutes"], "skipped": len(report.skipped)}


def bench_load(work: Path, n: int = 10_000, frames: int = 30) -> dict:
    from blender_m2d.core.library import load_library, write_synthetic_library

    t0 = time.perf_counter()
    out = write_synthetic_library(work / "big", n, n_frames=frames)
    gen = time.perf_counter() - t0
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        lib = load_library(out)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for pid in lib.ids[:: max(n // 200, 1)]:
        lib.motion(pid)
    motion_ms = (time.perf_counter() - t0) / len(lib.ids[:: max(n // 200, 1)]) * 1e3
    t0 = time.perf_counter()
    lib.style_vectors()
    vec_s = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"phrases": len(lib), "frames_per_phrase": frames, "generate_s": round(gen, 2),
            "load_first_s": round(times[0], 3), "load_median_s": round(float(np.median(times)), 3),
            "motion_ms": round(motion_ms, 3), "style_vectors_s": round(vec_s, 3),
            "size_mb": round(size / 1e6, 1)}


def bench_retarget(library: Path, every: int = 5) -> dict:
    import bpy

    from blender_m2d import compat, retarget, rigs
    from blender_m2d.core.library import load_library
    from blender_m2d.core.skeleton import CANON_JOINTS

    lib = load_library(library)
    out = {}
    for preset, pose in (("mixamo", "T"), ("rigify_def", "A")):
        errs, write_s, frames = [], 0.0, 0
        for pid in lib.ids:
            bpy.ops.wm.read_factory_settings(use_empty=True)
            sc = bpy.context.scene
            sc.render.fps = int(lib.fps)
            m = lib.motion(pid)
            ob = rigs.build_test_armature(preset, proportions=m, pose=pose, with_mesh=False)
            t0 = time.perf_counter()
            act = retarget.write_action(ob, m, name=pid)
            write_s += time.perf_counter() - t0
            frames += m.n_frames
            compat.assign_action(ob.animation_data_create(), act)
            bmap = retarget.resolve_bone_map(ob)
            for k in range(0, m.n_frames, every):
                sc.frame_set(1 + k)
                for j, joint in enumerate(CANON_JOINTS):
                    h = np.array(ob.matrix_world @ ob.pose.bones[bmap[joint]].head)
                    errs.append(np.linalg.norm(h - m.positions[k, j]))
        e = np.array(errs) * 100
        out[preset] = {"max_cm": round(float(e.max()), 3), "p99_cm": round(float(
            np.percentile(e, 99)), 3), "mean_cm": round(float(e.mean()), 4),
            "write_ms_per_100_frames": round(write_s / frames * 100 * 1e3, 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mocap", type=Path, default=REPO.parent / "shared" / "data" / "mocap")
    ap.add_argument("--quick", action="store_true", help="skip the retarget error sweep")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_library."))
    result = {"bench": "library", "cpu_count": os.cpu_count()}
    try:
        if args.mocap.is_dir():
            result["build"] = bench_build(args.mocap, work)
        result["load_10k"] = bench_load(work)
        if not args.quick:
            result["retarget"] = bench_retarget(REPO / "blender_m2d" / "assets" / "library")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    if "build" in result:
        b = result["build"]
        rows.append(("build ../shared/data/mocap", f"{b['takes']} takes, {b['mocap_s']} s mocap "
                     f"in {b['build_s']} s", f"{b['speed_ratio']}x real time (target >= 20x)"))
    ld = result["load_10k"]
    rows.append(("load 10,000-phrase library", f"{ld['size_mb']} MB, {ld['frames_per_phrase']} "
                 "frames/phrase", f"{ld['load_median_s']} s median, first {ld['load_first_s']} s "
                 "(target < 1 s)"))
    rows.append(("motion() of one phrase", "memory-mapped", f"{ld['motion_ms']} ms"))
    for preset, r in result.get("retarget", {}).items():
        rows.append((f"retarget bundled -> {preset}", f"write {r['write_ms_per_100_frames']} ms "
                     "/100 frames", f"max {r['max_cm']} cm, p99 {r['p99_cm']} cm (target < 1)"))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
