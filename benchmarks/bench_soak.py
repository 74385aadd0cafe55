"""Soak benchmark: choreograph 50 songs in one Blender process; memory and datablocks must not grow.

Each song goes through what a (re)choreography does: ``core.choreograph`` (analysis, scoring,
decoding, beat sync), ``nla.apply_plan`` on the same armature (replacing the previous dance:
actions, tracks, sound strip, markers, evaluation metrics) and the plan stored in a text block;
with ``--panel`` through the Dance panel's job instead (add-on registered, worker thread,
result applied by the job's poll, plan stored in the scene's properties).

Songs: the 10 s fixture, excerpts of the two bundled songs at different offsets and lengths,
and generated steady-beat songs (80-160 bpm, 10-20 s, mono/stereo, 44.1/48 kHz), so no two
runs see the same audio.

Measured after every song (after ``gc.collect()``): resident memory (``/proc/self/statm``),
Python objects, and the count of every ``bpy.data`` collection plus orphan datablocks
(0 users, no fake user). Criteria (issue #9): RSS after song 50 within 10 % of RSS after song 5;
datablock counts the same after every song (no steady-state leak); after ``remove_plan`` the
file holds exactly what it held before the first song (no teardown leak).

    .venv/bin/python benchmarks/bench_soak.py [--songs 50] [--panel] [--json-only]

Prints a table every 5 songs, a verdict, and one JSON line; exits 1 when a criterion fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COLLECTIONS = ("actions", "armatures", "objects", "meshes", "materials", "sounds", "texts",
               "collections", "images", "node_groups", "scenes", "worlds")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def counts() -> dict[str, int]:
    import bpy

    out = {name: len(getattr(bpy.data, name)) for name in COLLECTIONS}
    out["orphans"] = sum(1 for name in COLLECTIONS for i in getattr(bpy.data, name)
                         if i.users == 0 and not i.use_fake_user)
    return out


def click_song(path: Path, seconds: float, *, sr: int, channels: int, bpm: float,
               seed: int) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    y = np.zeros(n, np.float32)
    beat = 60.0 / bpm
    kt = np.arange(int(0.12 * sr)) / sr
    kick = (np.sin(2 * np.pi * (50 + 120 * np.exp(-kt * 40)) * kt) * np.exp(-kt * 25))
    hat = rng.normal(size=int(0.03 * sr)) * np.exp(-np.arange(int(0.03 * sr)) / (0.005 * sr))
    k = 0
    while k * beat < seconds:
        i = int(k * beat * sr)
        y[i:i + kick.size] += kick[: n - i] * (1.0 if k % 4 == 0 else 0.7)
        j = int((k + 0.5) * beat * sr)
        if j < n:
            y[j:j + hat.size] += 0.2 * hat[: n - j]
        k += 1
    notes = 220.0 * 2 ** (rng.integers(0, 12, size=int(seconds / beat) + 2) / 12)
    y += (0.15 * np.sin(2 * np.pi * np.cumsum(notes[(t / beat).astype(int)]) / sr))
    y /= max(1.0, float(np.abs(y).max()) / 0.9)
    data = np.repeat(y[:, None], channels, axis=1) if channels > 1 else y
    sf.write(str(path), data.astype(np.float32), sr)
    return path


def make_songs(folder: Path, n: int) -> list[Path]:
    import soundfile as sf

    rng = np.random.default_rng(9)
    songs = [REPO / "data" / "fixtures" / "audio" / "music_10s.ogg"]
    for src in sorted((REPO / "data" / "songs").glob("*.ogg")):
        info = sf.info(str(src))
        for k in range(6):
            seconds = float(rng.uniform(12, 20))
            start = int(rng.uniform(0, max(info.duration - seconds, 0)) * info.samplerate)
            y, sr = sf.read(str(src), start=start, frames=int(seconds * info.samplerate),
                            dtype="float32")
            out = folder / f"{src.stem}_{k}.wav"
            sf.write(str(out), y, sr)
            songs.append(out)
    i = 0
    while len(songs) < n:
        songs.append(click_song(folder / f"click_{i:02d}.wav", float(rng.uniform(10, 20)),
                                sr=int(rng.choice([44100, 48000])),
                                channels=int(rng.choice([1, 2])),
                                bpm=float(rng.uniform(80, 160)), seed=i))
        i += 1
    order = rng.permutation(len(songs))
    return [songs[j] for j in order[:n]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--songs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5, help="songs before the memory baseline")
    ap.add_argument("--panel", action="store_true",
                    help="run each song through the Dance panel's job (operators.start_job)")
    ap.add_argument("--json-only", action="store_true")
    args = ap.parse_args()

    import bpy

    from blender_m2d import nla, rigs
    from blender_m2d.core.choreography import choreograph
    from blender_m2d.core.library import load_library

    say = (lambda *a: None) if args.json_only else print
    tmp = Path(tempfile.mkdtemp(prefix="m2d-soak-"))
    songs = make_songs(tmp, args.songs)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 30, 1.0
    ob = rigs.build_test_armature("mixamo", name="Dancer", with_mesh=True)
    library = load_library(REPO / "blender_m2d" / "assets" / "library")
    gc.collect()
    start_counts, start_rss = counts(), rss_mb()
    rows = []
    say(f"{'song':>4}  {'file':28s} {'len s':>6} {'phr':>4} {'sec':>6} {'RSS MB':>8} "
        f"{'py objs':>9} {'actions':>7} {'sounds':>6} {'texts':>5} {'orphans':>7}")
    t_all = time.perf_counter()
    if args.panel:
        import blender_m2d
        from blender_m2d import operators

        blender_m2d.register()
        scene.m2d.armature = ob
    for i, song in enumerate(songs, start=1):
        t0 = time.perf_counter()
        if args.panel:
            scene.m2d.song_path = str(song)
            job = operators.start_job(bpy.context)
            while (state := job.poll(bpy.context)) == operators.RUNNING:
                time.sleep(0.005)
            if state != operators.FINISHED:
                raise SystemExit(f"song {i} ({song.name}): {state}: {job.message}")
            plan_doc = json.loads(scene.m2d.plan_json)
            del job
        else:
            ch = choreograph(song, library)
            applied = nla.apply_plan(ob, ch.plan, library)
            text = bpy.data.texts.get("m2d PLAN.json") or bpy.data.texts.new("m2d PLAN.json")
            text.from_string(json.dumps(applied.plan.to_json()))
            plan_doc = json.loads(text.as_string())
            del ch, applied
        seconds = time.perf_counter() - t0
        gc.collect()
        row = {"song": i, "file": song.name, "duration_s": None, "seconds": round(seconds, 3),
               "rss_mb": round(rss_mb(), 1), "py_objects": len(gc.get_objects()),
               "threads": threading.active_count(), **counts()}
        row["duration_s"] = plan_doc["song"]["duration_s"]
        row["phrases"] = len(plan_doc["phrases"])
        rows.append(row)
        if i % 5 == 0 or i == 1:
            say(f"{i:>4}  {song.name[:28]:28s} {row['duration_s']:6.1f} {row['phrases']:>4} "
                f"{seconds:6.2f} {row['rss_mb']:8.1f} {row['py_objects']:>9} "
                f"{row['actions']:>7} {row['sounds']:>6} {row['texts']:>5} {row['orphans']:>7}")
    total_s = time.perf_counter() - t_all
    if args.panel:
        blender_m2d.unregister()
    nla.remove_plan(ob)
    text = bpy.data.texts.get("m2d PLAN.json")
    if text is not None:
        bpy.data.texts.remove(text)
    gc.collect()
    end_counts = counts()

    base = rows[min(args.warmup, len(rows)) - 1]
    last = rows[-1]
    growth = (last["rss_mb"] - base["rss_mb"]) / base["rss_mb"]
    steady_keys = [k for k in start_counts if k != "actions"] + ["threads"]
    steady = {k: sorted({r[k] for r in rows[args.warmup - 1:]}) for k in steady_keys}
    steady_leaks = {k: v for k, v in steady.items() if len(v) > 1}
    # our actions: one per phrase of the current plan, nothing more
    extra_actions = [r["actions"] - r["phrases"] - start_counts["actions"] for r in rows]
    if any(extra_actions):
        steady_leaks["actions beyond the current plan"] = sorted(set(extra_actions))
    teardown = {k: end_counts[k] - start_counts[k] for k in start_counts
                if end_counts[k] != start_counts[k]}
    ok_mem = growth <= 0.10
    result = {
        "bench": "soak", "mode": "panel" if args.panel else "core+nla", "songs": len(rows),
        "total_s": round(total_s, 1),
        "s_per_song": round(total_s / len(rows), 2),
        "music_s": round(sum(r["duration_s"] for r in rows), 1),
        "rss_start_mb": round(start_rss, 1), "rss_after_warmup_mb": base["rss_mb"],
        "rss_end_mb": last["rss_mb"], "rss_peak_mb": max(r["rss_mb"] for r in rows),
        "rss_growth_after_warmup": round(growth, 4),
        "py_objects_after_warmup": base["py_objects"], "py_objects_end": last["py_objects"],
        "threads_end": last["threads"],
        "counts_start": start_counts, "counts_end_after_remove": end_counts,
        "steady_state_leaks": steady_leaks, "teardown_leaks": teardown,
        "ok_memory": ok_mem, "ok_steady_state": not steady_leaks, "ok_teardown": not teardown,
    }
    say("")
    say(f"{len(rows)} songs ({result['music_s']:.0f} s of music) in {total_s:.0f} s; RSS "
        f"{start_rss:.0f} MB at start, {base['rss_mb']:.0f} MB after song {args.warmup}, "
        f"{last['rss_mb']:.0f} MB after song {len(rows)} ({growth:+.1%}): "
        f"{'OK' if ok_mem else 'FAIL'} (limit +10%)")
    say(f"datablocks per song: {'stable' if not steady_leaks else steady_leaks}; after "
        f"remove_plan: {'as before the first song' if not teardown else teardown}")
    print(json.dumps(result))
    return 0 if ok_mem and not steady_leaks and not teardown else 1


if __name__ == "__main__":
    sys.exit(main())
