"""Independent metric check: beat metrics from an exported FBX re-imported into Blender.

    .venv/bin/python benchmarks/bench_fbx_metrics.py [--song SONG] [--quick] [--no-glb]

The song (default: the bundled ``kevin_macleod_vibe_ace.ogg``) is choreographed exactly like
``m2d choreograph SONG --fbx OUT.fbx --glb OUT.glb`` (bundled library and model, Mixamo test
rig); the plan stores the beat metrics measured on the evaluated armature. Then a fresh, empty
Blender scene imports the FBX (and the glTF), the depsgraph is sampled on every frame of the
song, the supplement's dance-beat detector runs on the re-imported joints and the paper's four
beat metrics are recomputed (``nla.measure``, the same function, but on an animation that went
through the exporter, the file and the importer). Every metric must match the plan's within
1 % (relative). Prints a table and one ``BENCH_JSON`` line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_SONG = REPO / "data" / "songs" / "kevin_macleod_vibe_ace.ogg"
TOLERANCE = 0.01
KEYS = ("beat_coverage", "beat_hit_rate", "music_hit_rate", "beat_overlap")


def choreograph(song: Path, out: Path, *, glb: bool):
    from blender_m2d.commands import choreograph as C

    parser = argparse.ArgumentParser()
    C.add_arguments(parser)
    args = parser.parse_args([str(song), "--out", str(out / "dance.blend"), "--device", "cpu"])
    return C.run_pipeline(str(song), args=args, out_blend=None, fbx=out / "dance.fbx",
                          glb=(out / "dance.glb") if glb else None, plan_path=out / "PLAN.json")


def reimport(kind: str, path: Path, fps: float):
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    sc = bpy.context.scene
    sc.render.fps, sc.render.fps_base = round(fps), round(fps) / fps
    if kind == "fbx":
        bpy.ops.import_scene.fbx(filepath=str(path), anim_offset=0.0)
    else:
        bpy.ops.import_scene.gltf(filepath=str(path))
    return next(o for o in bpy.data.objects if o.type == "ARMATURE")


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12) if (a or b) else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--song", type=Path, default=DEFAULT_SONG)
    ap.add_argument("--quick", action="store_true", help="FBX only (no glTF)")
    ap.add_argument("--no-glb", action="store_true", help="FBX only (no glTF)")
    args = ap.parse_args(argv)
    glb = not (args.quick or args.no_glb)

    from blender_m2d import nla

    tmp = Path(tempfile.mkdtemp(prefix="m2d-fbx-metrics-"))
    t0 = time.perf_counter()
    res = choreograph(args.song, tmp, glb=glb)
    t_choreo = time.perf_counter() - t0
    plan = res.plan
    bone_map = dict(res.applied.bone_map)
    ref = plan.metrics["beats"]
    frames = list(range(plan.frame_start, plan.frame_end + 1))
    results = {}
    for kind in ("fbx", "glb") if glb else ("fbx",):
        t0 = time.perf_counter()
        arm = reimport(kind, tmp / f"dance.{kind}", plan.fps)
        pos = nla.depsgraph_joint_positions(arm, bone_map, frames)
        got = nla.measure(pos, plan)["beats"]
        wall = time.perf_counter() - t0
        d_ref = np.asarray(ref["dance_beats_s"])
        d_got = np.asarray(got["dance_beats_s"])
        same_n = d_ref.size == d_got.size
        worst = max(rel_diff(got["song"][k], ref["song"][k]) for k in KEYS)
        worst_clip = max(rel_diff(got["clips_30s"]["pooled"][k], ref["clips_30s"]["pooled"][k])
                         for k in KEYS)
        results[kind] = {
            "song": {k: got["song"][k] for k in (*KEYS, "n_dance", "n_music", "n_hits")},
            "worst_rel_diff": round(worst, 6), "worst_rel_diff_clips": round(worst_clip, 6),
            "dance_beats_same_count": same_n,
            "dance_beat_max_shift_s": round(float(np.max(np.abs(d_ref - d_got))), 4)
            if same_n and d_ref.size else None,
            "frames": len(frames), "seconds": round(wall, 2),
            "ok": bool(worst <= TOLERANCE and worst_clip <= TOLERANCE)}

    rows_h = [("metric", "plan (armature)", *[f"re-imported {k.upper()}" for k in results])]
    for k in (*KEYS, "n_dance", "n_music", "n_hits"):
        rows_h.append((k, str(ref["song"][k]), *[str(r["song"][k]) for r in results.values()]))
    rows_h.append(("worst relative difference", "", *[f"{r['worst_rel_diff']:.4%}"
                                                      for r in results.values()]))
    w = [max(len(r[i]) for r in rows_h) for i in range(len(rows_h[0]))]
    print(f"{args.song.name}: {plan.song['duration_s']:.1f} s, {len(plan.phrases)} phrases, "
          f"{len(frames)} frames; choreographed + exported in {t_choreo:.1f} s")
    for r in rows_h:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)))

    rows = []
    for kind, r in results.items():
        rows.append({"metric": f"beat metrics from the re-imported {kind.upper()} vs the plan, "
                     "worst relative difference", "value": 100 * r["worst_rel_diff"],
                     "unit": "%", "better": "lower", "goal": f"<= {100 * TOLERANCE:g}",
                     "note": f"{args.song.name}, {r['frames']} frames; dance beats "
                     f"{r['song']['n_dance']} vs {ref['song']['n_dance']} in the plan"
                     + (f", max shift {r['dance_beat_max_shift_s']} s"
                        if r["dance_beat_max_shift_s"] is not None else "")})
    columns = ["metric", "plan (armature)", *[f"re-imported {k.upper()}" for k in results]]
    table = {"title": f"Beat metrics of {args.song.name}: plan vs re-imported files",
             "columns": columns, "rows": [list(r) for r in rows_h[1:]]}
    ok = all(r["ok"] for r in results.values())
    print("BENCH_JSON " + json.dumps({
        "name": "fbx_metrics", "rows": rows, "tables": [table],
        "notes": ["The plan's metrics come from the evaluated armature at choreography time; "
                  "the re-imported ones from Blender's FBX/glTF importers in an empty scene, "
                  "depsgraph-sampled on every frame, with the same detector and matching."],
        "data": {"song": args.song.name, "plan": ref["song"], "results": results, "ok": ok,
                 "choreograph_export_s": round(t_choreo, 2)}}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
