"""Benchmark: a ~3-minute song -> .blend, headless, on this machine's CPU.

Prints a table (warm runs per stage, the cold run) and one JSON line. "Warm" is a second or
later run in the same process (imports done, numba JIT compiled, model session built, library
loaded); "cold" is a fresh ``python -m blender_m2d choreograph`` process, imports included.
Goals (issue #5): warm <= 0.02 s per second of music, cold <= 10 s.

    .venv/bin/python benchmarks/bench_choreograph.py [--song SONG] [--runs 3] [--no-cold]
        [--against DIR]

``--against DIR`` times another copy of the package (``DIR/blender_m2d``, e.g. the tree before
a change, copied aside) in the same process, its warm runs alternating with this tree's, and
prints the ratios of the medians per stage: on a machine shared with other jobs that cancels
most of the load noise a comparison of two separate runs has.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
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


def _load_against(folder: str):
    """``folder/blender_m2d`` imported as the package ``m2d_against`` (relative imports only,
    so it does not touch this tree's modules); its ``run_pipeline``."""
    init = Path(folder) / "blender_m2d" / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"--against: no blender_m2d package in {folder}")
    spec = importlib.util.spec_from_file_location("m2d_against", init,
                                                  submodule_search_locations=[str(init.parent)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["m2d_against"] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module("m2d_against.commands.choreograph").run_pipeline


def _compare(a, song: str, tmp: Path, run_pipeline) -> dict:
    """Alternate warm runs of this tree and ``--against``; medians and their ratios."""
    other = _load_against(a.against)
    for fn, tag in ((run_pipeline, "new"), (other, "old")):           # warm both up
        fn(song, args=_args(song, tmp / f"{tag}-w.blend", a.baseline),
           out_blend=tmp / f"{tag}-w.blend")
    rows: dict[str, list[dict]] = {"new": [], "old": []}
    for k in range(a.runs):
        for fn, tag in ((run_pipeline, "new"), (other, "old")) if k % 2 == 0 else \
                ((other, "old"), (run_pipeline, "new")):
            out = tmp / f"{tag}{k}.blend"
            t0 = time.perf_counter()
            res = fn(song, args=_args(song, out, a.baseline), out_blend=out)
            rows[tag].append({**res.timings_s, "wall": time.perf_counter() - t0})
    med = {tag: {key: statistics.median(r.get(key, 0.0) for r in runs) for key in runs[0]}
           for tag, runs in rows.items()}
    print(f"\nsame process, {a.runs} alternating warm runs each, medians (s): "
          f"this tree vs {a.against}")
    print(f"{'stage':<22}{'new':>9}{'old':>9}{'new/old':>9}")
    for key in med["new"]:
        n, o = med["new"][key], med["old"].get(key, 0.0)
        print(f"{key:<22}{n:>9.3f}{o:>9.3f}{(n / o if o > 0 else float('nan')):>9.2f}")
    return {"new_s": {k: round(v, 4) for k, v in med["new"].items()},
            "old_s": {k: round(v, 4) for k, v in med["old"].items()},
            "wall_ratio": round(med["new"]["wall"] / med["old"]["wall"], 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--song", default=next((str(p) for p in CANDIDATES if p.is_file()), None))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-cold", action="store_true")
    ap.add_argument("--baseline", action="store_true", help="force the baseline scorer")
    ap.add_argument("--against", metavar="DIR", help="also time DIR/blender_m2d in this "
                    "process (alternating runs) and print the ratios")
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
    against = _compare(a, a.song, tmp, run_pipeline) if a.against else None
    print(json.dumps({
        "bench": "choreograph", "song": Path(a.song).name, "duration_s": round(dur, 2),
        "phrases": len(plan.phrases), "scorer": plan.scorer["kind"],
        "warm_s": round(best_wall, 3), "warm_s_per_s": round(best_wall / dur, 5),
        "warm_median_s": round(walls[len(walls) // 2], 3),
        "first_run_s": round(first[0], 3), "cold_s": None if cold is None else round(cold, 3),
        "stages_s": stages, "cpu_count": os.cpu_count(),
        **({"against": against} if against else {})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
