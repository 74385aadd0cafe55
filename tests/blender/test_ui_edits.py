"""Local edits (``m2d.swap``) anywhere in the song keep the NLA blendable and up to date.

A swap rewrites the swapped phrase and the seam zones of its neighbours in place. When the new
phrase's rotation curves end in the other quaternion hemisphere (or whole Euler turns away)
from the kept phrase after it, whole curves of the kept phrases on the shorter side of the song
are flipped (the same pose, see ``nla._back_channels``). The depsgraph is told about the
changed actions without ``FCurve.update`` (keys edited in place), so the evaluated pose at the
current frame follows the edit without a frame change.
"""

from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

import ui_support as U  # noqa: E402


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    import blender_m2d
    from blender_m2d import rigs

    U.fresh_scene()
    blender_m2d.register()
    song = U.excerpt(tmp_path_factory.mktemp("song") / "vibe_ace_24s.wav", 24.0)
    scene = U.fresh_scene()
    scene.m2d.armature = rigs.build_test_armature("mixamo", name="Dancer")
    scene.m2d.song_path = str(song)
    assert bpy.ops.m2d.choreograph() == {"FINISHED"}
    yield scene
    blender_m2d.unregister()
    U.fresh_scene()


def _layers():
    """Every phrase's keys, read from the actions (no cache)."""
    from blender_m2d import nla, operators

    ob, applied, _lib = operators.current(bpy.context)
    strips = nla._our_strips(ob.animation_data)
    return applied.plan, [nla.read_action(strips[p.frame_start].action, p.frame_start,
                                          p.frame_end) for p in applied.plan.phrases]


def _disagreeing_seams(layers) -> list:
    """(seam, channel) where the incoming phrase's first key does not blend with the outgoing
    phrase's key on that frame (NLA REPLACE mixes quaternions component-wise)."""
    out = []
    for i in range(1, len(layers)):
        a, b = layers[i - 1], layers[i]
        k = b.frame_start - a.frame_start
        for key, v in b.channels.items():
            ref = a.channels.get(key)
            if ref is None:
                continue
            if key[1] == "rotation_quaternion" and float(np.dot(ref[k], v[0])) < 0:
                out.append((i, key))
            if key[1] == "rotation_euler" and np.any(np.abs(ref[k] - v[0]) > np.pi):
                out.append((i, key))
    return out


def _swap(i: int, rank: int = 1):
    from blender_m2d import operators

    ph = operators.plan_of(bpy.context.scene.m2d).phrases[i]
    cands = [c.phrase_id for c in ph.candidates if c.phrase_id != ph.phrase_id]
    assert bpy.ops.m2d.swap(index=i, phrase_id=cands[rank % len(cands)]) == {"FINISHED"}


def test_swaps_anywhere_keep_every_seam_blendable(scene):
    plan, layers = _layers()
    n = len(plan.phrases)
    assert n >= 5 and not _disagreeing_seams(layers)
    for rank, i in [(r, i) for r in (1, 2, 3) for i in range(n)]:
        before = layers
        _swap(i, rank)
        plan, layers = _layers()
        assert not _disagreeing_seams(layers), (i, _disagreeing_seams(layers))
        # phrases away from the swap keep their pose; whole quaternion curves may be flipped,
        # and only on one side of the swap (the shorter one)
        flipped = set()
        for k in [k for k in range(n) if abs(k - i) > 1]:
            for key, v in before[k].channels.items():
                w = layers[k].channels[key]
                if key[1] == "rotation_quaternion" and np.array_equal(v, -w) and np.any(v):
                    flipped.add(k)
                    continue
                np.testing.assert_array_equal(v, w, err_msg=f"phrase {k} {key} (swap {i})")
        if flipped and min(flipped) < i:          # the phrases before it: fewer of them
            assert max(flipped) < i and i < n - 1 - i, (i, flipped)
        elif flipped:
            assert i >= n - 1 - i, (i, flipped)


def test_a_swap_updates_the_evaluated_pose_at_the_current_frame(scene):
    """No frame change after the operator: the depsgraph re-evaluated the edited actions."""
    from blender_m2d import nla, operators
    from blender_m2d.core.skeleton import CANON_JOINTS

    plan = operators.plan_of(scene.m2d)
    i = len(plan.phrases) // 2
    frame = (plan.phrases[i].frame_start + plan.phrases[i].frame_end) // 2
    scene.frame_set(frame)
    ob = scene.m2d.target
    dg = bpy.context.evaluated_depsgraph_get()
    hips = ob.evaluated_get(dg).pose.bones["mixamorig:Hips"].head.copy()
    _swap(i, 2)
    assert scene.frame_current == frame
    ob_, applied, _lib = operators.current(bpy.context)
    pos = nla.evaluate_plan(ob_, applied).positions[frame - plan.frame_start]
    dg = bpy.context.evaluated_depsgraph_get()
    ev = ob.evaluated_get(dg)
    mw = np.array(ob.matrix_world)
    got = np.array([(mw @ np.array([*ev.pose.bones[applied.bone_map[j]].head, 1.0]))[:3]
                    for j in CANON_JOINTS if j in applied.bone_map])
    want = np.array([pos[k] for k, j in enumerate(CANON_JOINTS) if j in applied.bone_map])
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.linalg.norm(np.array(ev.pose.bones["mixamorig:Hips"].head) - np.array(hips)) \
        > 1e-4                                       # and it did change


def test_swap_caches_equal_a_fresh_read_and_full_evaluation(scene):
    """After the swaps above, what the local edits keep (each action's keys, the evaluated
    positions and metrics) equals reading every action again and evaluating the whole song."""
    from blender_m2d import nla, operators

    ob, applied, _lib = operators.current(bpy.context)
    plan = applied.plan
    strips = nla._our_strips(ob.animation_data)
    for ph in plan.phrases:
        act = strips[ph.frame_start].action
        lay = nla._layer_of(act, ph.frame_start, ph.frame_end)
        assert lay is not None
        fresh = nla.read_action(act, ph.frame_start, ph.frame_end)
        for key, v in fresh.channels.items():
            np.testing.assert_array_equal(lay.channels[key], v, err_msg=str(key))
    local = nla._EVAL_CACHE[ob.name][1].copy()
    nla._LAYER_CACHE.clear()
    nla._EVAL_CACHE.clear()
    full = nla.evaluate_plan(ob, nla.AppliedPlan(plan=plan, bone_map=applied.bone_map))
    np.testing.assert_array_equal(full.positions, local)
    assert full.plan.metrics["beats"] == plan.metrics["beats"]
    assert full.plan.metrics["feet"] == plan.metrics["feet"]
    assert full.plan.metrics["seams"]["per_seam"] == plan.metrics["seams"]["per_seam"]


def _flip_quaternion_curves(action, bone: str) -> None:
    from blender_m2d import compat

    fcs = compat.action_fcurves(action, None, create=False)
    for i in range(4):
        fc = fcs.find(f'pose.bones["{bone}"].rotation_quaternion', index=i)
        co = np.empty(2 * len(fc.keyframe_points), np.float32)
        fc.keyframe_points.foreach_get("co", co)
        co[1::2] *= -1.0
        fc.keyframe_points.foreach_set("co", co)
        fc.update()


@pytest.mark.parametrize("where", ["early", "late"])
def test_a_run_ending_in_the_other_hemisphere_flips_the_shorter_side(scene, where):
    """Re-place phrase i after turning the hips' quaternion curves of every phrase after it
    into the other hemisphere (same pose): the re-placed phrase then ends in the hemisphere
    opposite to the kept phrase after it, so either it and the phrases before it (fewer
    before it) or the phrases after it are flipped, never both, and every seam blends."""
    from blender_m2d import nla, operators

    ob, applied, lib = operators.current(bpy.context)
    plan = applied.plan
    n = len(plan.phrases)
    i = 1 if where == "early" else n - 2
    strips = nla._our_strips(ob.animation_data)
    bone = applied.bone_map["Hips"]
    for p in plan.phrases[i + 1:]:
        _flip_quaternion_curves(strips[p.frame_start].action, bone)
    nla._LAYER_CACHE.clear()
    nla._EVAL_CACHE.clear()
    _plan, before = _layers()
    assert nla.replace_phrases(ob, applied, plan, [i], lib) is not None
    _plan, after = _layers()
    assert not _disagreeing_seams(after)
    key = (bone, "rotation_quaternion")
    flipped = []
    for k in range(n):
        if k == i:
            continue
        f = 0 if k < i else -1                     # a key the edit's windows do not reach
        a, b = before[k].channels[key][f], after[k].channels[key][f]
        if float(np.dot(a, b)) < 0:
            np.testing.assert_array_equal(b, -a)
            flipped.append(k)
    if where == "early":
        assert flipped == list(range(i))
    else:
        assert flipped == list(range(i + 1, n))
