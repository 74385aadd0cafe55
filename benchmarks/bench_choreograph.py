"""Benchmark: a ~3-minute song -> .blend, headless, on this machine's CPU.

Prints a table (warm runs per stage, the cold run) and one JSON line. "Warm" is a second or
later run in the same process (imports done, numba JIT compiled, model session built, library
loaded); "cold" is a fresh ``python -m blender_m2d choreograph`` process, imports included.
Goals (issue #5): warm <= 0.02 s per second of music, cold <= 10 s.

    .venv/bin/python benchmarks/bench_choreograph.py [--song SONG] [--runs 3] [--no-cold]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CANDIDATES = [REPO.parent / "shared" / "data" / "music" / "sectoid_war_of_freedom.ogg",
              REPO / "data" / "songs" / "sectoid_metal_madness.ogg"]


def _args(song: str, out: Path, baseline: bool) -> SimpleNamespace:
    return SimpleNamespace(
        song=song, library=None, model=None, baseline=baseline, rig="mixamo", seed=0,
        variety=0.3, device="cpu", decoder="greedy", allow_repeats=False, styles=None, lock=[],
        top_k=5, fps=30.0, crossfade=0.3, feet="lock", blend=None, armature=None, out=str(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--song", default=next((str(p) for p in CANDIDATES if p.is_file()), None))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-cold", action="store_true")
    ap.add_argument("--baseline", action="store_true", help="force the baseline scorer")
    a = ap.parse_args()
    if not a.song:
        print("no song found; pass --song", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="m2d-bench-"))

    cold = None
    if not a.no_cold:
        cmd = [sys.executable, "-m", "blender_m2d", "choreograph", a.song, "--out",
               str(tmp / "cold.blend"), "--device", "cpu"] + (["--baseline"] if a.baseline
                                                               else [])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        cold = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            return 1

    t0 = time.perf_counter()
    from blender_m2d.commands.choreograph import run_pipeline
    imports = time.perf_counter() - t0
    runs = []
    for k in range(a.runs + 1):
        out = tmp / f"warm{k}.blend"
        t0 = time.perf_counter()
        res = run_pipeline(a.song, args=_args(a.song, out, a.baseline), out_blend=out)
        wall = time.perf_counter() - t0
        runs.append((wall, res))
    first, warm = runs[0], runs[1:]
    walls = sorted(w for w, _ in warm)
    best_wall, best = min(warm, key=lambda r: r[0])
    plan = best.plan
    dur = float(plan.song["duration_s"])
    stages = {k: v for k, v in best.timings_s.items()}
    print(f"song: {Path(a.song).name}, {dur:.1f} s, {len(plan.phrases)} phrases, "
          f"scorer {plan.scorer['kind']}, library K={plan.library['n_phrases']}")
    print(f"{'stage':<22}{'seconds':>10}")
    for k, v in stages.items():
        print(f"{k:<22}{v:>10.3f}")
    print(f"{'warm wall (best)':<22}{best_wall:>10.3f}   {best_wall / dur:.4f} s per s of music"
          f" (goal 0.02)")
    print(f"{'warm wall (median)':<22}{walls[len(walls) // 2]:>10.3f}")
    print(f"{'first run in process':<22}{first[0]:>10.3f}   (imports before: {imports:.2f} s)")
    if cold is not None:
        print(f"{'cold (subprocess)':<22}{cold:>10.3f}   (goal 10 s)")
    print(json.dumps({
        "bench": "choreograph", "song": Path(a.song).name, "duration_s": round(dur, 2),
        "phrases": len(plan.phrases), "scorer": plan.scorer["kind"],
        "warm_s": round(best_wall, 3), "warm_s_per_s": round(best_wall / dur, 5),
        "warm_median_s": round(walls[len(walls) // 2], 3),
        "first_run_s": round(first[0], 3), "cold_s": None if cold is None else round(cold, 3),
        "stages_s": stages, "cpu_count": os.cpu_count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
