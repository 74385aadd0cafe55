"""Cancel and kill: a choreography cancelled at any stage, the Dance panel's job cancelled
mid-way, ``m2d library build`` and ``m2d choreograph`` SIGKILLed while writing their outputs.
Nothing partial is ever left under an output's name (hidden temporary siblings only), what was
there before is byte for byte intact, and the next run works."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading

import pytest
from hazards import FIXTURES, REPO, kill9, run_until
from snapshot import file_tree, leftovers

from blender_m2d.core.errors import M2DError

SONG = FIXTURES / "audio" / "music_10s.ogg"
BVH = FIXTURES / "bvh"


# ----------------------------------------------------------------------- cancel (core)

STAGES = ["loading audio", "analysing the song", "scoring dance phrases", "decoding"]


@pytest.mark.parametrize("stage", STAGES)
def test_choreograph_cancelled_at_each_stage(bundled_library, refused, stage, tmp_path):
    from blender_m2d.core.choreography import choreograph

    cancel = threading.Event()
    seen = []

    def progress(x, what):
        seen.append(what)
        if what == stage:
            cancel.set()

    song = shutil.copy(SONG, tmp_path / "song.ogg")
    refused(lambda: choreograph(song, bundled_library, progress=progress, cancel=cancel),
            r"^cancelled$", tmp_path)
    assert seen[-1] == stage
    again = choreograph(song, bundled_library)                    # the next run works
    clean = choreograph(song, bundled_library)
    assert again.plan.phrase_ids == clean.plan.phrase_ids


# ----------------------------------------------------------------------- cancel (panel)

@pytest.fixture(scope="module")
def addon():
    pytest.importorskip("bpy")
    from scenes import fresh_scene

    import blender_m2d

    fresh_scene()
    blender_m2d.register()
    yield blender_m2d
    blender_m2d.unregister()
    fresh_scene()


def _pump(job, context, timeout_s=300.0):
    import time

    from blender_m2d import operators

    t0 = time.perf_counter()
    while (state := job.poll(context)) == operators.RUNNING:
        assert time.perf_counter() - t0 < timeout_s, "job did not finish"
        time.sleep(0.01)
    return state


@pytest.mark.blender
@pytest.mark.parametrize("when", ["loading", "analysing", "scoring"])
def test_panel_job_cancelled_mid_way_changes_nothing(addon, when, note):
    import time

    import bpy
    from scenes import user_scene
    from snapshot import assert_same, scene_state

    from blender_m2d import operators

    scene, ob = user_scene()
    scene.m2d.armature = ob
    scene.m2d.song_path = str(SONG)
    before = scene_state()
    job = operators.start_job(bpy.context)
    t0 = time.perf_counter()
    while when not in job.status and job.thread.is_alive() and time.perf_counter() - t0 < 60:
        time.sleep(0.002)
    job.request_cancel()
    assert _pump(job, bpy.context) == operators.CANCELLED
    assert job.message == "Choreography cancelled; nothing was changed"
    after = scene_state()
    for state in (before, after):        # the job's own status fields are not user data
        state.pop("texts")
    assert_same(before, after, f"the scene after a cancel while {job.status or when!r}")
    job = operators.start_job(bpy.context)                         # the next run works
    assert _pump(job, bpy.context) == operators.FINISHED
    assert [t.name for t in ob.animation_data.nla_tracks] == ["Hero walk", "m2d A", "m2d B"]
    note(f"no error: '{operators.CANCELLED}' with message 'Choreography cancelled; nothing was "
         "changed'; the scene is identical and the next run finishes")


# ----------------------------------------------------------------------- kills

KILL_LIBRARY = textwrap.dedent("""
    import sys, time, pathlib
    import numpy as np
    marker = pathlib.Path(sys.argv[1])
    real = np.save
    def save_then_hang(file, arr, *a, **kw):
        real(file, arr, *a, **kw)
        if ".tmp" in str(file):      # inside the temporary library folder
            marker.touch()
            time.sleep(600)
    np.save = save_then_hang
    from blender_m2d.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def _cli(*args: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "blender_m2d", *args], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.blender
def test_library_build_killed_while_writing(tmp_path, note):
    pytest.importorskip("bpy")
    from blender_m2d.core.library import load_library, write_synthetic_library

    lib = write_synthetic_library(tmp_path / "lib", 5)
    before = file_tree(lib)
    script = tmp_path / "kill_library.py"
    script.write_text(KILL_LIBRARY)
    build = ["library", "build", str(BVH / "modern_005_02_f100_4s.bvh"), "--out", str(lib),
             "--min-beats", "4"]
    proc = run_until([sys.executable, str(script), str(tmp_path / "writing"), *build],
                     tmp_path / "writing", timeout_s=300)
    kill9(proc)
    assert file_tree(lib) == before                              # the old library, intact
    stale = [n for n in leftovers(tmp_path, {"lib", "kill_library.py", "writing"})]
    assert all(n.startswith(".lib.") and n.endswith(".tmp") for n in stale), stale
    assert len(load_library(lib)) == 5
    done = _cli(*build)                                           # the next run works
    assert done.returncode == 0, done.stderr[-2000:]
    new = load_library(lib)
    assert {p.take for p in new.phrases} == {"modern_005_02_f100_4s"}
    note(f"no error: old library intact, next build fine; SIGKILL leaves hidden {stale}")


KILL_SWAP = textwrap.dedent("""
    import sys, time, pathlib, os
    from blender_m2d.core import fileio
    from blender_m2d.core.library import write_synthetic_library
    marker, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    real = os.replace
    def replace(a, b):
        real(a, b)
        if ".old-" in str(b):        # the old library moved aside, the new one not yet in
            marker.touch()
            time.sleep(600)
    fileio.os.replace = replace
    write_synthetic_library(out, 7)
""")


def test_kill_between_the_two_renames_of_a_library_swap(tmp_path):
    import os

    from blender_m2d.core.library import load_library, write_synthetic_library

    lib = write_synthetic_library(tmp_path / "lib", 5)
    script = tmp_path / "kill_swap.py"
    script.write_text(KILL_SWAP)
    proc = run_until([sys.executable, str(script), str(tmp_path / "swapping"), str(lib)],
                     tmp_path / "swapping", env={"PYTHONPATH": os.fspath(REPO)})
    kill9(proc)
    assert len(load_library(lib)) in (5, 7)


KILL_CHOREOGRAPH = textwrap.dedent("""
    import sys, time, pathlib
    from blender_m2d import export
    marker = pathlib.Path(sys.argv[1])
    real = export.save_blend
    def save_then_hang(path):
        real(path)                   # the new .blend is complete in its temporary sibling
        marker.touch()
        time.sleep(600)
    export.save_blend = save_then_hang
    from blender_m2d.cli import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.blender
def test_choreograph_killed_while_saving_its_outputs(tmp_path, note):
    pytest.importorskip("bpy")
    out = tmp_path / "out"
    out.mkdir()
    (out / "dance.blend").write_bytes(b"yesterday's dance")
    (out / "PLAN.json").write_text('{"yesterday": true}')
    before = file_tree(out)
    script = tmp_path / "kill_choreograph.py"
    script.write_text(KILL_CHOREOGRAPH)
    args = ["choreograph", str(SONG), "--out", str(out / "dance.blend"), "--plan",
            str(out / "PLAN.json")]
    proc = run_until([sys.executable, str(script), str(tmp_path / "saving"), *args],
                     tmp_path / "saving", timeout_s=300)
    kill9(proc)
    after = file_tree(out)
    stale = sorted(set(after) - set(before))
    assert {k: after[k] for k in before} == before                # outputs untouched
    assert all(n.startswith(".dance.") and ".tmp" in n for n in stale), stale
    done = _cli(*args)                                            # the next run works
    assert done.returncode == 0, done.stderr[-2000:]
    from blender_m2d.core.plan import Plan

    assert len(Plan.load(out / "PLAN.json").phrases) >= 1
    head = (out / "dance.blend").read_bytes()[:7]
    assert head == b"BLENDER" or head[:4] == b"(\xb5/\xfd"     # plain or zstd-compressed
    note(f"no error: old outputs intact; SIGKILL leaves hidden {stale}")


def test_cancelled_cli_outputs_are_not_written(tmp_path, bundled_library, refused):
    """Any error during the pipeline (here: a cancel from analysis) commits no output."""
    import argparse

    pytest.importorskip("bpy")
    from blender_m2d.commands import choreograph as cmd
    from blender_m2d.core import analysis

    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    args = parser.parse_args([str(SONG), "--out", str(tmp_path / "dance.blend"), "--plan",
                              str(tmp_path / "PLAN.json")])
    real = analysis.analyze_song

    def cancelled(*a, **kw):
        raise M2DError("cancelled")

    analysis.analyze_song = cancelled
    try:
        refused(lambda: cmd.run_pipeline(args.song, args=args, out_blend=args.out,
                                         plan_path=args.plan), r"^cancelled$", tmp_path)
    finally:
        analysis.analyze_song = real
    assert leftovers(tmp_path) == []


@pytest.mark.blender
def test_plan_cache_of_the_panel_is_bounded(addon, bundled_library, note):
    """Every choreography, swap and lock stores a plan; the parsed-plan cache must not grow
    with them (found by benchmarks/bench_soak.py --panel: +80 Python objects per song)."""
    import dataclasses

    import bpy

    from blender_m2d import operators
    from blender_m2d.core.choreography import choreograph

    plan = choreograph(SONG, bundled_library).plan
    operators.clear_caches()
    for i in range(40):
        operators.store_plan(bpy.context, dataclasses.replace(plan, metrics={"edit": i}))
    assert len(operators._PLANS) <= 16
    assert operators.plan_of(bpy.context.scene.m2d).metrics == {"edit": 39}
    note("no error: 40 stored plans, the cache keeps the last 16 (was unbounded)")
