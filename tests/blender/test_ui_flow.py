"""The Dance panel's operators driven headless through the must-show flow of issue #7:

register (``blender_m2d.register()``), choreograph a real song, swap phrase 3 to its 2nd-ranked
alternative, lock, re-choreograph the unlocked phrases, "undo", save and reopen the .blend (the
dropdowns still work from the stored plan, nothing is recomputed), export FBX/glTF and save the
edits as training labels. Poses are read back from the depsgraph at seam frames.

Undo: ``ed.undo`` cannot run headless (its poll needs a window with an editor, see
../shared/notes/blender.md section 6), so the undo test checks the data effects that make undo
work: every editing operator is ``{'REGISTER', 'UNDO'}`` and does its whole edit inside one call,
and everything the panel needs lives in the .blend, so going back to the pre-edit data (what
memfile undo restores, done here by reloading a copy saved before the edit) gives a working
panel with the old choreography.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

import ui_support as U  # noqa: E402

from blender_m2d.commands.choreograph import BUNDLED_MODEL  # noqa: E402


@pytest.fixture(scope="module")
def addon():
    import blender_m2d

    U.fresh_scene()
    blender_m2d.register()
    yield blender_m2d
    blender_m2d.unregister()
    U.fresh_scene()


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    return U.excerpt(tmp_path_factory.mktemp("song") / "vibe_ace_24s.wav", 24.0)


@pytest.fixture(scope="module")
def choreographed(addon, song):
    """A scene choreographed by the real operator (background mode waits in execute)."""
    from blender_m2d import rigs

    scene = U.fresh_scene()
    ob = rigs.build_test_armature("mixamo", name="Dancer")
    s = scene.m2d
    s.armature = ob
    s.song_path = str(song)
    assert bpy.ops.m2d.choreograph() == {"FINISHED"}
    return scene


def _plan(scene=None):
    from blender_m2d import operators

    return operators.plan_of((scene or bpy.context.scene).m2d)


def _strip_actions(ob) -> dict[int, str]:
    """Scene start frame -> action name of our NLA strips."""
    out = {}
    for tr in ob.animation_data.nla_tracks:
        if tr.name.startswith("m2d "):
            for st in tr.strips:
                out[round(st.frame_start)] = st.action.name
    return out


def _action_quat(action, bone: str, frame: float) -> np.ndarray:
    from blender_m2d import compat

    fcs = compat.action_fcurves(action, None, create=False)
    q = np.array([fcs.find(f'pose.bones["{bone}"].rotation_quaternion', index=i).evaluate(frame)
                  for i in range(4)])
    return q / np.linalg.norm(q)


def _same_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|<a, b>| per quaternion pair (1 = same rotation)."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.abs(np.sum(a * b, axis=-1))


def test_choreograph_fills_the_panel_state_and_the_nla(choreographed):
    s = choreographed.m2d
    plan = _plan()
    assert len(plan.phrases) >= 5, "the 24 s excerpt should give several phrases"
    assert [r.phrase_id for r in s.phrases] == list(plan.phrase_ids)
    assert all(r.rank >= 1 for r in s.phrases)       # the placed phrase is among the ranked
    assert sum(r.rank == 1 for r in s.phrases) >= len(s.phrases) // 2
    assert s.target.name == "Dancer"
    if BUNDLED_MODEL.is_file():   # the panel says what scored the song
        assert s.device_used in ("CPUExecutionProvider", "CUDAExecutionProvider"), s.device_used
    else:
        assert s.device_used == "baseline (no model)"
    assert s.probs_data and s.library_used
    assert 0.0 <= s.song_beat_hit <= 1.0 and s.song_max_seam_cm >= 0.0
    assert all(r.beat_hit >= 0 for r in s.phrases)
    ob = s.target
    strips = _strip_actions(ob)
    assert sorted(strips) == [p.frame_start for p in plan.phrases]
    se = choreographed.sequence_editor
    assert [st.name for st in se.strips] == ["m2d song"]
    info = bpy.context.window_manager.m2d_job.info
    assert info.startswith(f"Placed {len(plan.phrases)} phrases"), info


def test_swap_phrase_3_to_its_second_candidate(choreographed):
    s = choreographed.m2d
    ob = s.target
    before = _plan()
    cand = before.phrases[2].candidates[1].phrase_id
    assert cand != before.phrases[2].phrase_id
    first_frames = range(before.frame_start, before.phrases[1].frame_start)
    q_before = U.pose_quats(ob, first_frames)
    actions_before = _strip_actions(ob)

    assert bpy.ops.m2d.swap(index=2, phrase_id=cand) == {"FINISHED"}

    after = _plan()
    assert after.phrases[2].phrase_id == cand and after.phrases[2].locked
    assert s.phrases[2].phrase_id == cand and s.phrases[2].rank == 2 and s.phrases[2].edited
    assert after.phrase_ids[:2] == before.phrase_ids[:2]
    assert after.phrase_ids[3:] == before.phrase_ids[3:]    # only the swapped phrase changed
    # phrase 1's strip and pose are untouched (the engine rewrites from phrase 2 on)
    acts = _strip_actions(ob)
    assert acts[after.phrases[0].frame_start] == actions_before[before.phrases[0].frame_start]
    assert np.all(_same_rotation(U.pose_quats(ob, first_frames), q_before) > 1 - 1e-6)
    # inside phrase 3, after its crossfade, the pose is the new phrase's action
    ph = after.phrases[2]
    act = bpy.data.actions[acts[ph.frame_start]]
    assert cand in act.name
    frames = [ph.frame_start + after.crossfade_frames + 2, (ph.frame_start + ph.frame_end) // 2]
    quats = U.pose_quats(ob, frames)
    names = [pb.name for pb in ob.pose.bones]
    for k, f in enumerate(frames):
        for bone in ("mixamorig:Spine", "mixamorig:LeftArm", "mixamorig:RightUpLeg"):
            expected = _action_quat(act, bone, f)
            got = quats[k, names.index(bone)]
            assert _same_rotation(got, expected) > 1 - 1e-5, (bone, f)
    # the next phrase's ranking now follows the swapped phrase (Eq. 6)
    assert after.phrases[3].candidates != before.phrases[3].candidates or \
        before.phrases[2].phrase_id == cand


def test_seams_around_the_swap_have_no_pops(choreographed):
    """Depsgraph poses across the crossfades into and out of phrase 3: no joint moves much
    more in one frame at a seam than the dance itself moves in a frame."""
    s = choreographed.m2d
    plan = _plan()
    xf = plan.crossfade_frames
    seam_frames = []
    for i in (2, 3):
        f0 = plan.phrases[i].frame_start
        seam_frames += list(range(f0 - 1, f0 + xf + 2))
    body_frames = range(plan.phrases[2].frame_start + xf + 2, plan.phrases[2].frame_end - xf - 1)
    heads_seam = U.pose_heads(s.target, seam_frames)
    heads_body = U.pose_heads(s.target, body_frames)
    step_seam = np.linalg.norm(np.diff(heads_seam, axis=0), axis=-1)
    step_body = np.linalg.norm(np.diff(heads_body, axis=0), axis=-1)
    contiguous = np.diff(seam_frames) == 1
    worst_seam = float(step_seam[contiguous].max())
    typical = float(np.percentile(step_body, 99))
    assert worst_seam < max(2.0 * typical, 0.05), (worst_seam, typical)
    jump = [r.seam_jump_cm for r in s.phrases]
    assert max(jump) < 10.0, jump


def _check_edit_caches(scene) -> None:
    """What the local edits keep cached (the keys written into each action, the beat detector
    state, the evaluated positions) equals reading the actions again and evaluating the whole
    song from scratch."""
    from blender_m2d import nla, operators

    ob, applied, _lib = operators.current(bpy.context)
    plan = applied.plan
    strips = nla._our_strips(ob.animation_data)
    cached = 0
    for ph in plan.phrases:
        act = strips[ph.frame_start].action
        lay = nla._layer_of(act, ph.frame_start, ph.frame_end)
        if lay is None:
            continue
        cached += 1
        fresh = nla.read_action(act, ph.frame_start, ph.frame_end)
        assert lay.channels.keys() == fresh.channels.keys()
        for key, v in fresh.channels.items():
            np.testing.assert_array_equal(lay.channels[key], v, err_msg=str(key))
    assert cached == len(plan.phrases)
    local = plan.metrics
    nla._LAYER_CACHE.clear()
    nla._EVAL_CACHE.clear()
    full = nla.evaluate_plan(ob, nla.AppliedPlan(plan=plan, bone_map=applied.bone_map))
    np.testing.assert_allclose(full.plan.metrics["beats"]["dance_beats_s"],
                               local["beats"]["dance_beats_s"], atol=1e-9)
    for key, v in local["beats"]["song"].items():
        if isinstance(v, float):
            assert full.plan.metrics["beats"]["song"][key] == pytest.approx(v), key
    a = [sm["root_jump_cm"] for sm in full.plan.metrics["seams"]["per_seam"]]
    b = [sm["root_jump_cm"] for sm in local["seams"]["per_seam"]]
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_swap_caches_equal_a_fresh_read_and_full_evaluation(choreographed):
    _check_edit_caches(choreographed)


def test_lock_toggles_and_stays_in_the_plan(choreographed):
    s = choreographed.m2d
    assert s.phrases[2].locked
    assert bpy.ops.m2d.toggle_lock(index=2) == {"FINISHED"}
    assert not s.phrases[2].locked and not _plan().phrases[2].locked
    assert bpy.ops.m2d.toggle_lock(index=2) == {"FINISHED"}
    assert bpy.ops.m2d.toggle_lock(index=0) == {"FINISHED"}
    plan = _plan()
    assert [p.index for p in plan.phrases if p.locked] == [0, 2]
    assert [r.index for r in s.phrases if r.locked] == [0, 2]


def test_rechoreograph_unlocked_keeps_locked_phrases_in_place(choreographed):
    from blender_m2d.core.placement import seam_zones

    s = choreographed.m2d
    s.method = "viterbi"                  # re-decode the unlocked phrases over the whole song
    ob = s.target
    before = _plan()
    locked = [p.index for p in before.phrases if p.locked]
    zones = seam_zones([(p.frame_start, p.frame_end) for p in before.phrases], fps=before.fps)
    solo = {}
    for i in locked:
        lo = zones[i - 1][3] + 1 if i > 0 else before.phrases[i].frame_start
        hi = zones[i][0] - 1 if i < len(zones) else before.phrases[i].frame_end
        solo[i] = list(range(lo, hi + 1, 3))
    names = [pb.name for pb in ob.pose.bones]
    root = names.index("mixamorig:Hips")
    q_before = {i: U.pose_quats(ob, f) for i, f in solo.items()}

    assert bpy.ops.m2d.rechoreograph_unlocked() == {"FINISHED"}
    after = _plan()
    msg = bpy.context.window_manager.m2d_job.info
    assert msg.startswith(("Re-choreographed", "No phrase changed")), msg
    for i in locked:
        a, b = before.phrases[i], after.phrases[i]
        assert (b.phrase_id, b.frame_start, b.frame_end, b.locked) == (
            a.phrase_id, a.frame_start, a.frame_end, True)
        assert b.warp == a.warp
        q = U.pose_quats(ob, solo[i])
        body = [j for j in range(len(names)) if j != root]
        # the locked dance is the same motion (bones relative to their parents); only the
        # travelling root can follow a changed predecessor
        assert np.all(_same_rotation(q[:, body], q_before[i][:, body]) > 1 - 1e-4), i
    assert after.decoding["method"] == "viterbi"
    assert {int(k) for k in after.decoding["locks"]} == set(locked)
    assert sorted(_strip_actions(ob)) == [p.frame_start for p in after.phrases]
    assert [r.phrase_id for r in s.phrases] == list(after.phrase_ids)
    assert s.phrases[2].edited      # the hand swap is remembered for the labels


def test_rechoreograph_caches_equal_a_fresh_read_and_full_evaluation(choreographed):
    _check_edit_caches(choreographed)


def test_jump_and_play_move_the_playhead_to_the_phrase(choreographed):
    scene = choreographed
    plan = _plan()
    ph = plan.phrases[3]
    music_frame = round(plan.frame_start + ph.music_start_s * plan.fps)
    assert bpy.ops.m2d.jump_to_phrase(index=3) == {"FINISHED"}
    assert scene.frame_current == music_frame and scene.m2d.active_phrase == 3
    assert bpy.ops.m2d.play_phrase(index=1) == {"FINISHED"}    # no playback headless
    assert scene.use_preview_range
    assert (scene.frame_preview_start, scene.frame_preview_end) == (
        plan.phrases[1].frame_start, plan.phrases[1].frame_end)
    assert bpy.ops.m2d.play_song() == {"FINISHED"}
    assert not scene.use_preview_range and scene.frame_current == scene.frame_start
    with pytest.raises(RuntimeError, match="no phrase 99"):
        bpy.ops.m2d.jump_to_phrase(index=98)


def test_editing_operators_are_single_undo_steps(addon):
    from blender_m2d import operators

    editing = {"m2d.choreograph", "m2d.swap", "m2d.toggle_lock", "m2d.rechoreograph_unlocked",
               "m2d.remove_dance", "m2d.use_active_armature"}
    for cls in operators.classes:
        if cls.bl_idname in editing:
            assert {"REGISTER", "UNDO"} <= set(cls.bl_options), cls.bl_idname
        else:   # navigation, playback, export, labels do not edit the scene
            assert "UNDO" not in cls.bl_options, cls.bl_idname


def test_undo_data_effects_restore_a_working_panel(choreographed, tmp_path):
    """Memfile undo restores the scene data of the previous step; all the panel needs is in
    that data, and the in-memory caches are keyed by content, so the restored state works."""
    from blender_m2d import operators

    pre = tmp_path / "pre_swap.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(pre), copy=True)
    plan_pre = _plan()
    i = 4
    alt = plan_pre.phrases[i].candidates[1].phrase_id
    assert bpy.ops.m2d.swap(index=i, phrase_id=alt) == {"FINISHED"}
    assert _plan().phrases[i].phrase_id == alt

    bpy.ops.wm.open_mainfile(filepath=str(pre))          # = the data before the swap
    scene = bpy.context.scene
    s = scene.m2d
    assert _plan(scene).phrase_ids == plan_pre.phrase_ids
    assert s.phrases[i].phrase_id == plan_pre.phrases[i].phrase_id
    assert operators.current_job() is None and not bpy.context.window_manager.m2d_job.running
    acts = _strip_actions(s.target)
    assert plan_pre.phrases[i].phrase_id in acts[plan_pre.phrases[i].frame_start]
    # and it can be edited again from there
    assert bpy.ops.m2d.swap(index=i, phrase_id=alt) == {"FINISHED"}


def test_reopened_file_keeps_dropdowns_without_recomputing(choreographed, tmp_path,
                                                           monkeypatch):
    from blender_m2d import operators
    from blender_m2d.core import analysis, choreography

    path = tmp_path / "dance.blend"
    assert bpy.ops.wm.save_as_mainfile(filepath=str(path)) == {"FINISHED"}
    plan_saved = _plan()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    operators.clear_caches()                       # like a fresh Blender session

    def boom(*a, **k):
        raise AssertionError("the song was analysed/choreographed again")

    monkeypatch.setattr(analysis, "analyze_song", boom)
    monkeypatch.setattr(choreography, "choreograph", boom)
    assert bpy.ops.wm.open_mainfile(filepath=str(path)) == {"FINISHED"}
    scene = bpy.context.scene
    s = scene.m2d
    plan = _plan(scene)
    assert plan.phrase_ids == plan_saved.phrase_ids
    assert [r.phrase_id for r in s.phrases] == list(plan.phrase_ids)

    class Probe:
        index = 3

    items = operators.swap_items(Probe, bpy.context)
    assert [it[0] for it in items][:len(plan.phrases[3].candidates)] == [
        c.phrase_id for c in plan.phrases[3].candidates]
    assert items[1][1].startswith("2. ")
    alt = items[1][0]
    assert bpy.ops.m2d.swap(index=3, candidate=alt) == {"FINISHED"}
    assert _plan(scene).phrases[3].phrase_id == alt
    assert bpy.ops.m2d.rechoreograph_unlocked() == {"FINISHED"}
    assert _plan(scene).phrases[3].phrase_id == alt


def test_export_fbx_and_gltf_leave_the_scene_as_it_was(choreographed, tmp_path):
    scene = bpy.context.scene
    before = U.snapshot(scene)
    fbx, glb = tmp_path / "dance.fbx", tmp_path / "dance.glb"
    assert bpy.ops.m2d.export_fbx(filepath=str(fbx)) == {"FINISHED"}
    assert bpy.ops.m2d.export_gltf(filepath=str(glb)) == {"FINISHED"}
    assert fbx.stat().st_size > 10_000 and glb.stat().st_size > 10_000
    assert U.snapshot(scene) == before


def test_save_edits_as_labels_writes_a_training_dataset(choreographed, tmp_path):
    data = pytest.importorskip("training.data")
    s = bpy.context.scene.m2d
    plan = _plan()
    picked = [r.index for r in s.phrases if r.locked or r.edited]
    assert picked
    assert bpy.ops.m2d.save_labels(directory=str(tmp_path / "ds")) == {"FINISHED"}
    spec = data.load_dataset(tmp_path / "ds")
    assert [r.phrase_id for r in spec.labels] == [plan.phrases[i].phrase_id for i in picked]
    assert [r.start_s for r in spec.labels] == [
        round(plan.phrases[i].music_start_s, 3) for i in picked]
    doc = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert Path(doc["library"]).resolve() == Path(s.library_used).resolve()
    assert bpy.ops.m2d.save_labels(directory=str(tmp_path / "ds"), include_all=True) == {
        "FINISHED"}
    assert len(data.load_dataset(tmp_path / "ds").labels) == len(plan.phrases)
