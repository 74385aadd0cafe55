"""Placing a plan on an armature's NLA, checked on the evaluated animation (depsgraph).

The plan is made from a synthetic click-track song (known beats and phrases, no audio analysis)
with the bundled dance library and placed on a Mixamo-named test rig; the CLI tests run the
whole pipeline on a real 10 s song.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")


from blender_m2d import nla, rigs  # noqa: E402
from blender_m2d.core import baseline  # noqa: E402
from blender_m2d.core import metrics as M  # noqa: E402
from blender_m2d.core import placement as P  # noqa: E402
from blender_m2d.core.analysis import LOW_BEAT_CONFIDENCE  # noqa: E402
from blender_m2d.core.choreography import ChoreographyOptions, make_plan  # noqa: E402
from blender_m2d.core.errors import M2DError  # noqa: E402
from blender_m2d.core.library import load_library  # noqa: E402
from blender_m2d.core.skeleton import ROOT  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "blender_m2d" / "assets" / "library"
SONG_10S = REPO / "data" / "fixtures" / "audio" / "music_10s.ogg"
FPS = 30


def write_click_track(path: Path, beats_s: np.ndarray, duration_s: float, sr: int = 22050):
    n = int(duration_s * sr)
    y = np.zeros(n)
    t = np.arange(400) / sr
    for k, b in enumerate(beats_s):
        i = int(b * sr)
        seg = y[i:i + 400]
        seg += (0.9 if k % 4 == 0 else 0.5) * np.sin(2 * np.pi * 1000 * t[:seg.size]) * np.exp(
            -t[:seg.size] * 60)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(y, -1, 1) * 30000).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def library():
    if not (LIBRARY / "library.json").is_file():
        pytest.skip("the bundled library is not built")
    return load_library(LIBRARY)


def fresh_scene(preset: str = "mixamo"):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = FPS, 1.0
    ob = rigs.build_test_armature(preset, name="Dancer", with_mesh=False)
    return scene, ob


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    """24 s at 123 bpm, phrases of 8 beats (the last one longer)."""
    period = 60.0 / 123.0
    duration = 24.0
    beats = np.arange(0.0, duration - 0.2, period)
    idx = [*list(range(0, beats.size - 4, 8)), beats.size - 1]
    intervals = [(float(beats[a]), float(beats[b])) for a, b in itertools.pairwise(idx)]
    intervals[-1] = (intervals[-1][0], duration)
    path = tmp_path_factory.mktemp("song") / "clicks.wav"
    write_click_track(path, beats, duration)
    return path, beats, intervals, duration


@pytest.fixture(scope="module")
def plan(library, song):
    path, beats, intervals, duration = song
    pb = [beats[(beats >= s - 1e-3) & (beats <= e + 1e-3)] for s, e in intervals]
    md = baseline.music_descriptors(None, 22050, intervals, beats, onsets_s=beats,
                                    frame_db=np.zeros(10))
    probs = baseline.score(md, baseline.dance_descriptors(library))
    _, ob = fresh_scene()
    lengths = nla.rig_bone_lengths(ob, "mixamo")
    return make_plan(song={"path": str(path), "duration_s": duration, "tempo_bpm": 123.0},
                     intervals_s=intervals, phrase_beats_s=pb, beats_s=beats, library=library,
                     probs=probs, transition=baseline.library_transition(library),
                     scorer_info={"kind": "baseline", "path": None, "providers": []},
                     options=ChoreographyOptions(fps=FPS, target_bone_lengths=lengths))


@pytest.fixture()
def applied(plan, library):
    scene, ob = fresh_scene()
    ap = nla.apply_plan(ob, plan, library, rig="mixamo", scene=scene)
    return scene, ob, ap


def seams_of(plan):
    return [(i, plan.phrases[i].frame_start, plan.phrases[i - 1].frame_end)
            for i in range(1, len(plan.phrases))]


def nla_fingerprint(ob, scene):
    """Everything of the user's we promise not to touch."""
    ad = ob.animation_data
    tracks = []
    if ad is not None:
        for tr in ad.nla_tracks:
            if nla.is_ours(tr):
                continue
            tracks.append((tr.name, tr.mute, tr.is_solo, [
                (s.name, s.frame_start, s.frame_end, s.action.name if s.action else None,
                 s.extrapolation, s.blend_type, s.blend_in, s.blend_out, s.influence)
                for s in tr.strips]))
    actions = {}
    for act in bpy.data.actions:
        if nla.is_ours(act):
            continue
        curves = []
        from blender_m2d import compat

        for fc in compat.action_fcurves(act, None, create=False) or ():
            co = np.empty(2 * len(fc.keyframe_points))
            fc.keyframe_points.foreach_get("co", co)
            curves.append((fc.data_path, fc.array_index, tuple(np.round(co, 6))))
        actions[act.name] = sorted(curves)
    markers = sorted((m.name, m.frame) for m in scene.timeline_markers
                     if not m.name.startswith(nla.MARKER_PREFIX))
    se = scene.sequence_editor
    strips = sorted((s.name, s.channel, s.frame_start) for s in nla._sequences(se)
                    if not s.name.startswith(nla.SOUND_STRIP)) if se else []
    return (ad.action.name if ad and ad.action else None, tracks, actions, markers, strips)


def add_user_animation(ob, scene, song_path):
    """A user's own track (with an action) under ours, a marker and a sequencer strip."""
    pb = ob.pose.bones["mixamorig:Head"]
    pb.keyframe_insert("rotation_quaternion", frame=1)
    pb.rotation_quaternion = (0.9, 0.1, 0.0, 0.0)
    pb.keyframe_insert("rotation_quaternion", frame=40)
    ad = ob.animation_data
    act = ad.action
    act.name = "UserNod"
    from blender_m2d import compat

    tr = ad.nla_tracks.new()
    tr.name = "User layer"
    st = tr.strips.new("nod", 1, act)
    compat.assign_action(st, act)
    ad.action = None
    pb.rotation_quaternion = (1, 0, 0, 0)
    scene.timeline_markers.new("chorus", frame=100)
    se = scene.sequence_editor_create()
    if nla.has_audio():
        nla._sequences(se).new_sound("user voice", str(song_path), 5, 1)
    else:
        nla._sequences(se).new_effect("user color", "COLOR", 5, frame_start=1, frame_end=20)


# =========================================================================== evaluation
def test_numpy_evaluation_equals_the_depsgraph_at_seams(applied, plan):
    scene, ob, ap = applied
    assert ap.evaluation.startswith("numpy")
    frames = set()
    for _, f0, f1 in seams_of(plan):
        frames.update({f0 - 1, f0, (f0 + f1) // 2, f1, f1 + 1})
    rng = np.random.default_rng(0)
    frames.update(rng.integers(plan.frame_start, plan.frame_end, 25).tolist())
    frames = sorted(frames)
    dg = nla.depsgraph_joint_positions(ob, ap.bone_map, frames, scene)
    ours = ap.positions[np.asarray(frames) - plan.frame_start]
    assert np.nanmax(np.abs(dg - ours)) < 1e-4


def test_root_is_continuous_across_every_seam_in_the_depsgraph(applied, plan):
    scene, ob, ap = applied
    frames = range(plan.frame_start, plan.frame_end + 1)
    pos = nla.depsgraph_joint_positions(ob, ap.bone_map, frames, scene)
    ad = ob.animation_data
    upper = ad.nla_tracks[nla.TRACK_UPPER]
    lower = ad.nla_tracks[nla.TRACK_LOWER]
    root_bone = ap.bone_map["Hips"]
    for i, f0, f1 in seams_of(plan):
        r = M.seam_root_metrics(pos[:, ROOT], frame0=plan.frame_start, seam=M.Seam(i, f0, f1),
                                fps=FPS)
        assert r["root_jump_cm"] < 1.0, (i, r)
        # each phrase alone at the crossfade middle, also from the depsgraph: its strip at
        # full influence, the other track muted
        mid = (f0 + f1) // 2
        alone = {}
        for who, k in (("out", i - 1), ("in", i)):
            track, other = (upper, lower) if k % 2 else (lower, upper)
            strip = next(s for s in track.strips
                         if round(s.frame_start) == plan.phrases[k].frame_start)
            saved = (strip.blend_in, strip.blend_out, other.mute)
            strip.blend_in = strip.blend_out = 0.0
            other.mute = True
            scene.frame_set(mid)
            ev = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
            alone[who] = np.array(ob.matrix_world @ ev.pose.bones[root_bone].head)
            strip.blend_in, strip.blend_out, other.mute = saved
        assert np.linalg.norm((alone["out"] - alone["in"])[:2]) < 0.01, i


def test_no_dip_toward_rest_at_crossfade_middles(applied, plan):
    """The pose at a crossfade middle is the 50/50 mix of the two phrases, not pulled to rest."""
    scene, ob, ap = applied
    model = nla.RigModel.of(ob)
    layers = nla.our_layers(ob, plan)
    rest = nla.joint_positions(model, model.pose_matrices({}, 1), ap.bone_map)[0]
    for i, f0, f1 in seams_of(plan):
        mid = (f0 + f1) // 2
        a, b = layers[i - 1], layers[i]
        scene.frame_set(mid)
        ev = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
        for (bone, prop), va in a.channels.items():
            if prop != "rotation_quaternion":
                continue
            qa, qb = va[mid - a.frame_start], b.channels[(bone, prop)][mid - b.frame_start]
            assert np.dot(qa, qb) >= 0                       # hemispheres aligned
            got = np.array(ev.pose.bones[bone].rotation_quaternion)
            np.testing.assert_allclose(got, 0.5 * (qa + qb), atol=1e-5)
            assert np.linalg.norm(got) > 0.7                # no cancellation towards zero
        pos = nla.depsgraph_joint_positions(ob, ap.bone_map, [mid], scene)[0]

        def alone(layer, k=mid):
            ch = {key: v[k - layer.frame_start:k - layer.frame_start + 1]
                  for key, v in layer.channels.items()}
            return nla.joint_positions(model, model.pose_matrices(ch, 1), ap.bone_map)[0]

        pa, pb = alone(a), alone(b)
        mean = 0.5 * (pa + pb)
        rel = lambda p: p - p[ROOT]                                           # noqa: E731
        err = np.linalg.norm(rel(pos) - rel(mean), axis=1).max()
        spread = np.linalg.norm(rel(pa) - rel(pb), axis=1).max()
        to_rest = np.linalg.norm(rel(pos) - rel(rest), axis=1).max()
        # joint positions of a rotation blend lie on arcs, not on the chord between the two
        # poses, so compare loosely; a dip toward rest would be far off and near the rest pose
        assert err <= 0.5 * spread + 0.02, (i, err, spread)
        assert err < 0.5 * to_rest, (i, err, to_rest)


def test_feet_skate_at_most_half_of_a_plain_linear_crossfade(plan, library):
    skate = {}
    for name, opts in (("ours", None),
                       ("linear", P.PlacementOptions(feet="none", root="linear"))):
        scene, ob = fresh_scene()
        ap = nla.apply_plan(ob, plan, library, rig="mixamo", scene=scene, options=opts,
                            evaluate=False)
        ap = nla.evaluate_plan(ob, ap, scene=scene, force_depsgraph=True)
        assert ap.evaluation.startswith("depsgraph")
        skate[name] = ap.plan.metrics["feet"]["seam_zones"]["mean_cm_s"]
    print(f"\nfoot skate at seams: ours {skate['ours']:.2f} cm/s, plain linear crossfade "
          f"{skate['linear']:.2f} cm/s")
    assert skate["linear"] > 0.5
    assert skate["ours"] <= 0.5 * skate["linear"]


def test_metrics_are_stored_in_the_plan(applied, plan):
    _, _, ap = applied
    m = ap.plan.metrics
    assert set(m) >= {"beats", "feet", "seams", "evaluation"}
    assert m["beats"]["song"]["n_music"] == len(plan.beats_s)
    assert m["seams"]["max_root_jump_cm"] < 1.0
    assert len(m["seams"]["per_seam"]) == len(plan.phrases) - 1
    assert {"placement", "write_actions", "nla"} <= set(ap.plan.timings_s)


# =========================================================================== NLA structure
def test_tracks_strips_sound_and_markers(applied, plan):
    scene, ob, _ap = applied
    ad = ob.animation_data
    ours = [t for t in ad.nla_tracks if nla.is_ours(t)]
    assert [t.name for t in ours] == [nla.TRACK_LOWER, nla.TRACK_UPPER]
    assert ad.action is None
    lower, upper = ours
    assert len(lower.strips) + len(upper.strips) == len(plan.phrases)
    for s in lower.strips:
        assert s.extrapolation == "HOLD_FORWARD" and s.blend_in == s.blend_out == 0
    for s in upper.strips:
        assert s.extrapolation == "NOTHING" and s.blend_type == "REPLACE"
        assert s.blend_in == plan.crossfade_frames
    if nla.has_audio():
        strip = next(s for s in nla._sequences(scene.sequence_editor)
                     if s.name == nla.SOUND_STRIP)
        assert strip.sound.samplerate > 0
    beats = [m for m in scene.timeline_markers if m.name.startswith("m2d beat")]
    phrases = [m for m in scene.timeline_markers if m.name.startswith("m2d phrase")]
    assert len(beats) == len(plan.beats_s) and len(phrases) == len(plan.phrases)
    assert (scene.frame_start, scene.frame_end) == (plan.frame_start, plan.frame_end)


def test_users_tracks_actions_markers_untouched_and_reapply_replaces_ours(plan, library, song):
    scene, ob = fresh_scene()
    add_user_animation(ob, scene, song[0])
    before = nla_fingerprint(ob, scene)
    n_actions = len(bpy.data.actions)
    nla.apply_plan(ob, plan, library, rig="mixamo", scene=scene)
    nla.apply_plan(ob, plan, library, rig="mixamo", scene=scene)
    assert nla_fingerprint(ob, scene) == before
    assert len(bpy.data.actions) == n_actions + len(plan.phrases)
    names = [t.name for t in ob.animation_data.nla_tracks]
    assert names == ["User layer", nla.TRACK_LOWER, nla.TRACK_UPPER]
    assert len([s for s in nla._sequences(scene.sequence_editor)
                if s.name.startswith(nla.SOUND_STRIP)]) == int(nla.has_audio())
    nla.remove_plan(ob, scene)
    assert nla_fingerprint(ob, scene) == before
    assert len(bpy.data.actions) == n_actions


def test_remove_plan_drops_the_animdata_it_created_and_only_that(plan, library, song):
    scene, ob = fresh_scene()
    assert ob.animation_data is None
    nla.apply_plan(ob, plan, library, rig="mixamo", scene=scene, evaluate=False)
    nla.apply_plan(ob, plan, library, rig="mixamo", scene=scene, evaluate=False)   # re-apply
    assert ob.animation_data is not None
    nla.remove_plan(ob, scene)
    assert ob.animation_data is None                     # ours and left empty: removed
    # created by us, but the user put a track on it meanwhile: kept, with their track
    nla.apply_plan(ob, plan, library, rig="mixamo", scene=scene, evaluate=False)
    ob.animation_data.nla_tracks.new().name = "User layer"
    nla.remove_plan(ob, scene)
    assert ob.animation_data is not None
    assert [t.name for t in ob.animation_data.nla_tracks] == ["User layer"]
    # the user's own (empty) AnimData stays
    scene, ob = fresh_scene()
    ob.animation_data_create()
    nla.apply_plan(ob, plan, library, rig="mixamo", scene=scene, evaluate=False)
    nla.remove_plan(ob, scene)
    assert ob.animation_data is not None and len(ob.animation_data.nla_tracks) == 0


def test_missing_bones_fail_before_touching_anything(plan, library, song):
    scene, ob = fresh_scene()
    add_user_animation(ob, scene, song[0])
    bpy.context.view_layer.objects.active = ob
    bpy.ops.object.mode_set(mode="EDIT")
    for name in ("mixamorig:LeftFoot", "mixamorig:LeftToeBase"):
        ob.data.edit_bones.remove(ob.data.edit_bones[name])
    bpy.ops.object.mode_set(mode="OBJECT")
    before = nla_fingerprint(ob, scene)
    n_actions = len(bpy.data.actions)
    with pytest.raises(M2DError, match="LeftFoot"):
        nla.apply_plan(ob, plan, library, rig="mixamo", scene=scene)
    assert nla_fingerprint(ob, scene) == before
    assert len(bpy.data.actions) == n_actions
    assert not any(nla.is_ours(t) for t in ob.animation_data.nla_tracks)


def test_plan_for_another_library_or_fps_is_refused(plan, library):
    scene, ob = fresh_scene()
    with pytest.raises(M2DError, match="another dance library"):
        nla.apply_plan(ob, dataclasses.replace(plan, library={**plan.library, "hash": "x"}),
                       library, rig="mixamo", scene=scene)
    scene.render.fps = 24
    with pytest.raises(M2DError, match="fps"):
        nla.apply_plan(ob, plan, library, rig="mixamo", scene=scene)
    assert ob.animation_data is None or len(ob.animation_data.nla_tracks) == 0


def test_replacing_one_phrase_keeps_seams_continuous(applied, plan, library):
    scene, ob, ap = applied
    index = 2
    old = {i: s.action for t in ob.animation_data.nla_tracks if nla.is_ours(t)
           for i, s in enumerate(sorted(t.strips, key=lambda s: s.frame_start))}
    new_id = next(c.phrase_id for c in plan.phrases[index].candidates
                  if c.phrase_id != plan.phrases[index].phrase_id)
    first_action = nla.our_layers(ob, plan)[0]
    out = nla.replace_phrase(ob, ap, index, new_id, library, scene=scene)
    assert out.plan.phrases[index].phrase_id == new_id and out.plan.phrases[index].locked
    strips = sorted((s for t in ob.animation_data.nla_tracks if nla.is_ours(t)
                     for s in t.strips), key=lambda s: s.frame_start)
    assert new_id in strips[index].action.name
    assert len(strips) == len(plan.phrases)
    again = nla.our_layers(ob, out.plan)[0]
    for key, v in first_action.channels.items():   # phrase 1 untouched (a local edit may
        w = again.channels[key]                     # flip whole quaternion curves: same pose)
        if key[1] == "rotation_quaternion" and np.array_equal(v, -w):
            continue
        np.testing.assert_array_equal(v, w)
    assert out.plan.metrics["seams"]["max_root_jump_cm"] < 1.0
    assert out.plan.metrics["seams"]["max_root_gap_cm"] < 1.0
    assert old


def test_plan_is_rig_independent(plan, library):
    """The same plan places on a Rigify-named rig with its own rest pose and bone axes."""
    scene, ob = fresh_scene("rigify")
    ap = nla.apply_plan(ob, plan, library, rig="rigify", scene=scene)
    assert ap.plan.metrics["seams"]["max_root_jump_cm"] < 1.0
    frames = [plan.phrases[1].frame_start + plan.crossfade_frames // 2, plan.frame_end // 2]
    dg = nla.depsgraph_joint_positions(ob, ap.bone_map, frames, scene)
    np.testing.assert_allclose(dg, ap.positions[np.asarray(frames) - 1], atol=1e-4)


# =========================================================================== command line
def _cli(*args: str) -> int:
    from blender_m2d.cli import main

    return main(list(args))


@pytest.mark.skipif(not SONG_10S.is_file(), reason="fixture song missing")
def test_choreograph_command_writes_blend_fbx_and_plan(tmp_path, library):
    out = tmp_path / "out.blend"
    rc = _cli("choreograph", str(SONG_10S), "--library", str(LIBRARY), "--baseline",
              "--out", str(out), "--fbx", str(tmp_path / "out.fbx"),
              "--plan", str(tmp_path / "PLAN.json"), "--rig", "mixamo")
    assert rc == 0
    from blender_m2d.core.plan import Plan

    plan = Plan.load(tmp_path / "PLAN.json")
    assert plan.scorer["kind"] == "baseline" and plan.metrics["beats"]["song"]["n_music"] > 10
    assert {"analysis", "apply", "save_blend", "export_fbx"} <= set(plan.timings_s)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PLAN.json", "out.blend", "out.fbx"]
    assert plan.song["beat_confidence"] >= LOW_BEAT_CONFIDENCE   # a real song: no beat warning
    bpy.ops.wm.open_mainfile(filepath=str(out))
    ob = bpy.data.objects["Dancer"]
    assert [t.name for t in ob.animation_data.nla_tracks] == [nla.TRACK_LOWER, nla.TRACK_UPPER]
    assert "m2d PLAN.json" in bpy.data.texts


def test_choreograph_warns_when_the_song_has_no_clear_beat(tmp_path, library, capsys, caplog):
    """White noise still gets a dance (the tracker's estimated grid), with a WARNING logged
    while it runs, a "warning:" line after the summary, and the confidence in PLAN.json."""
    import logging

    import soundfile as sf

    from blender_m2d.core.plan import Plan

    noise = tmp_path / "static.wav"
    sf.write(noise, 0.1 * np.random.default_rng(1).normal(size=12 * 22050), 22050)
    with caplog.at_level(logging.WARNING):
        rc = _cli("choreograph", str(noise), "--library", str(LIBRARY), "--baseline",
                  "--out", str(tmp_path / "out.blend"), "--plan", str(tmp_path / "PLAN.json"),
                  "--rig", "mixamo")
    assert rc == 0
    plan = Plan.load(tmp_path / "PLAN.json")
    low = plan.song["beat_confidence"]
    assert low < LOW_BEAT_CONFIDENCE and len(plan.phrases) >= 2
    message = (f"no clear beat found in static.wav (confidence {low:.2f}): the dance follows an "
               "estimated grid")
    assert [(r.levelname, r.getMessage()) for r in caplog.records
            if "clear beat" in r.getMessage()] == [("WARNING", message)]
    out = capsys.readouterr().out
    assert f"(beat confidence {low:.2f})" in out and f"warning: {message}" in out


def _library_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "lib"
    shutil.copytree(LIBRARY, dst)
    return dst


def test_missing_library_file_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    lib = _library_copy(tmp_path)
    (lib / "motion" / "joints.npy").unlink()
    out = tmp_path / "out"
    out.mkdir()
    rc = _cli("choreograph", str(SONG_10S), "--library", str(lib), "--out",
              str(out / "x.blend"), "--plan", str(out / "PLAN.json"))
    assert rc == 2
    assert "joints.npy" in capsys.readouterr().err
    assert list(out.iterdir()) == []


@pytest.fixture()
def read_only_dir(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(
                ["chattr", "+i", str(d)], capture_output=True).returncode != 0:
            pytest.skip("running as root without chattr: cannot make a read-only folder")
        yield d
        subprocess.run(["chattr", "-i", str(d)], check=False)
    else:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)


def test_read_only_output_is_a_clear_error_and_writes_nothing(read_only_dir, tmp_path, capsys):
    plan_path = tmp_path / "PLAN.json"
    rc = _cli("choreograph", str(SONG_10S), "--library", str(LIBRARY), "--baseline", "--out",
              str(read_only_dir / "x.blend"), "--plan", str(plan_path))
    assert rc == 2
    assert "cannot write" in capsys.readouterr().err
    assert list(read_only_dir.iterdir()) == [] and not plan_path.exists()


@pytest.fixture(scope="module")
def foreign_model(tmp_path_factory):
    """A tiny (untrained) model whose sidecar names another library."""
    torch = pytest.importorskip("torch")
    from models import Encoder, Predictor, get_preset
    from models.export_onnx import export_model

    torch.manual_seed(0)
    k = 5
    cfg = get_preset("tiny", n_classes=k)
    out = tmp_path_factory.mktemp("model") / "model"
    export_model(Encoder(cfg).eval(), Predictor(cfg).eval(), out, cfg=cfg,
                 phrase_ids=[f"other_{i}" for i in range(k)], library_hash="0" * 64,
                 transition=np.full((k, k), 0.5, np.float32))
    return out / "model.onnx"


def test_library_model_mismatch_is_a_clear_error_and_writes_nothing(foreign_model, tmp_path,
                                                                     capsys):
    rc = _cli("choreograph", str(SONG_10S), "--library", str(LIBRARY), "--model",
              str(foreign_model), "--out", str(tmp_path / "x.blend"))
    assert rc == 2
    err = capsys.readouterr().err
    assert "model.json" in err and "librar" in err
    assert not (tmp_path / "x.blend").exists()
