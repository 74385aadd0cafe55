"""Library phrases -> Actions on user armatures (bpy): the 1 cm round trip and the slot set-up."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from blender_m2d import compat, retarget, rigs  # noqa: E402
from blender_m2d.core import rigmath as rm  # noqa: E402
from blender_m2d.core.bonemap import bone_map_for, split_ref  # noqa: E402
from blender_m2d.core.errors import M2DError  # noqa: E402
from blender_m2d.core.library import PhraseMotion, load_library  # noqa: E402
from blender_m2d.core.retargeting import leg_length  # noqa: E402
from blender_m2d.core.skeleton import CANON_JOINTS, JOINT_INDEX  # noqa: E402
from blender_m2d.library_build import build_library  # noqa: E402

TOL_M = 0.01


@pytest.fixture(autouse=True)
def empty_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.scene.render.fps = 30
    yield


@pytest.fixture(scope="module")
def fixture_library(tmp_path_factory, fixtures_dir):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bvh = fixtures_dir / "bvh"
    out = tmp_path_factory.mktemp("rt") / "lib"
    build_library([bvh / "modern_005_02_f100_4s.bvh", bvh / "salsa_61_01_f600_4s.bvh"], out,
                  min_beats=5)
    return load_library(out), {"modern_005_02_f100_4s": bvh / "modern_005_02_f100_4s.bvh",
                               "salsa_61_01_f600_4s": bvh / "salsa_61_01_f600_4s.bvh"}


@pytest.fixture(scope="module")
def shared_library(tmp_path_factory, shared_data):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    mocap = shared_data / "mocap"
    files = {"60_10": mocap / "cmu_salsa" / "60_10.bvh",
             "005_12": mocap / "cmu_05_modern" / "005_12.bvh"}
    out = tmp_path_factory.mktemp("rt_shared") / "lib"
    build_library(list(files.values()), out)
    return load_library(out), files


def _source_positions(lib, phrase, path: Path) -> np.ndarray:
    """Joint world positions of the phrase as Blender shows the *source file*, in library
    coordinates: an independent import, evaluated by the depsgraph."""
    take = next(t for t in lib.takes if t["take"] == phrase.take)
    norm = take["normalisation"]
    bpy.ops.import_anim.bvh(filepath=str(path), global_scale=1.0, rotate_mode="NATIVE",
                            use_fps_scale=False, update_scene_fps=False,
                            update_scene_duration=False)
    ob = bpy.context.view_layer.objects.active
    bmap = take["bone_map"]
    step = take["src_fps"] / lib.fps
    out = np.zeros((phrase.n_frames, len(CANON_JOINTS), 3))
    sc = bpy.context.scene
    for k in range(phrase.n_frames):
        f = 1 + phrase.frame_start + k * step
        sc.frame_set(math.floor(f), subframe=float(f - math.floor(f)))
        for j, joint in enumerate(CANON_JOINTS):
            bone, tail = split_ref(bmap[joint])
            pb = ob.pose.bones[bone]
            out[k, j] = np.array(ob.matrix_world @ (pb.tail if tail else pb.head))
    raw = (out + np.array(norm["root_shift"])) * norm["scale"]
    lib_pos = raw @ rm.yaw_matrix(norm["yaw_rad"]).T + np.array(norm["translation_m"])
    bpy.data.objects.remove(ob)
    return lib_pos


def _heads(ob, bone_map, frames) -> np.ndarray:
    out = np.full((len(frames), len(CANON_JOINTS), 3), np.nan)
    sc = bpy.context.scene
    for k, f in enumerate(frames):
        sc.frame_set(int(f))
        ev = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
        for j, joint in enumerate(CANON_JOINTS):
            if joint in bone_map:
                out[k, j] = np.array(ev.matrix_world @ ev.pose.bones[bone_map[joint]].head)
    return out


def _round_trip(lib, files, preset, pose, every=3):
    worst = 0.0
    for phrase in lib.phrases:
        motion = lib.motion(phrase.id)
        src = _source_positions(lib, phrase, files[phrase.take])
        ob = rigs.build_test_armature(preset, proportions=motion, pose=pose,
                                      name=f"{preset}_{phrase.id}")
        act = retarget.write_action(ob, motion, name=phrase.id)
        compat.assign_action(ob.animation_data_create(), act)
        bmap = retarget.resolve_bone_map(ob)
        ks = np.arange(0, phrase.n_frames, every)
        got = _heads(ob, bmap, 1 + ks)
        err = np.linalg.norm(got - src[ks], axis=-1)
        mapped = [JOINT_INDEX[j] for j in bmap]
        assert len(mapped) == len(CANON_JOINTS)
        worst = max(worst, float(np.nanmax(err[:, mapped])))
    return worst


@pytest.mark.parametrize("preset, pose", [("mixamo", "T"), ("rigify_def", "A")])
def test_round_trip_mocap_to_action_reproduces_joint_positions(fixture_library, preset, pose):
    lib, files = fixture_library
    assert {p.take for p in lib.phrases} == set(files)
    worst = _round_trip(lib, files, preset, pose)
    assert worst < TOL_M, f"{preset}: {worst * 100:.2f} cm"


@pytest.mark.parametrize("preset, pose", [("mixamo", "T"), ("rigify_def", "A")])
def test_round_trip_on_full_shared_takes(shared_library, preset, pose):
    lib, files = shared_library
    worst = _round_trip(lib, files, preset, pose, every=5)
    assert worst < TOL_M, f"{preset}: {worst * 100:.2f} cm"


def test_action_has_one_dance_slot_and_plays_from_an_nla_strip(fixture_library):
    lib, _ = fixture_library
    motion = lib.motion(lib.ids[0])
    ob = rigs.build_test_armature("unreal", proportions=motion)
    act = retarget.write_action(ob, motion, name="dance", frame_start=10)
    assert [s.identifier for s in act.slots] == ["OB" + compat.SLOT_NAME]
    fcs = compat.action_fcurves(act, act.slots[0], create=False)
    assert fcs is not None and len(fcs) > 0
    assert tuple(act.frame_range) == (10.0, 10.0 + motion.n_frames - 1)
    bmap = retarget.resolve_bone_map(ob)
    ad = ob.animation_data_create()
    compat.assign_action(ad, act)
    direct = _heads(ob, bmap, [20, 30])
    ad.action = None
    track = ad.nla_tracks.new()
    strip = track.strips.new("dance", 10, act)
    compat.assign_action(strip, act)
    assert compat.action_slot_of(strip) == act.slots[0]
    np.testing.assert_allclose(_heads(ob, bmap, [20, 30]), direct, atol=1e-5)
    # keyed in-between bones make the action self-contained: 'root' is keyed at rest
    paths = {fc.data_path for fc in fcs}
    assert 'pose.bones["root"].rotation_quaternion' in paths
    assert 'pose.bones["spine_02"].rotation_quaternion' in paths


def test_other_proportions_scale_the_root_by_leg_length_and_keep_feet_grounded(
        fixture_library):
    lib, _ = fixture_library
    pid = next(p.id for p in lib.phrases if p.take.startswith("modern"))
    motion = lib.motion(pid)
    small = {k: (v[0] * 0.8, v[1] * 0.8, v[2] * 0.8) for k, v in rigs.DEFAULT_TPOSE.items()}
    ob = rigs.build_test_armature("mixamo", proportions=small, with_mesh=False)
    bmap = retarget.resolve_bone_map(ob)
    rig_leg = retarget.leg_length_of(ob, bmap)
    scale = rig_leg / leg_length(motion.positions)
    act = retarget.write_action(ob, motion, name="small")
    assert act["m2d_scale"] == pytest.approx(scale)
    compat.assign_action(ob.animation_data_create(), act)
    frames = np.arange(1, motion.n_frames + 1, 4)
    got = _heads(ob, bmap, frames)
    src = motion.positions[frames - 1]
    hips = JOINT_INDEX["Hips"]
    np.testing.assert_allclose(got[:, hips], src[:, hips] * scale, atol=1e-4)
    feet = [JOINT_INDEX[n] for n in ("LeftToes", "RightToes")]
    assert abs(np.nanmin(got[:, feet, 2]) - np.min(src[:, feet, 2]) * scale) < 0.03


def test_euler_bones_and_a_transformed_cm_armature_follow_the_motion(fixture_library):
    lib, _ = fixture_library
    motion = lib.motion(lib.ids[-1])
    ob = rigs.build_test_armature("canonical", proportions=motion, pose="A", with_mesh=False)
    for pb in ob.pose.bones:
        pb.rotation_mode = "YXZ" if "Left" in pb.name else "AXIS_ANGLE" if "Right" in pb.name \
            else "QUATERNION"
    # a centimetre rig (scale 0.01, data x100) turned 90 degrees and placed at (2, 1, 0)
    arm = ob.data
    bpy.context.view_layer.objects.active = ob
    bpy.ops.object.mode_set(mode="EDIT")
    for b in arm.edit_bones:
        b.head, b.tail = b.head * 100, b.tail * 100
    bpy.ops.object.mode_set(mode="OBJECT")
    ob.scale = (0.01, 0.01, 0.01)
    ob.rotation_euler = (0.0, 0.0, math.pi / 2)
    ob.location = (2.0, 1.0, 0.0)
    bpy.context.view_layer.update()
    act = retarget.write_action(ob, motion, name="euler")
    compat.assign_action(ob.animation_data_create(), act)
    bmap = retarget.resolve_bone_map(ob)
    frames = np.arange(1, motion.n_frames + 1, 5)
    got = _heads(ob, bmap, frames)
    want = motion.transformed(math.pi / 2, (2.0, 1.0, 0.0)).positions[frames - 1]
    assert np.nanmax(np.linalg.norm(got - want, axis=-1)) < TOL_M


def test_unknown_rig_names_every_missing_bone():
    arm = bpy.data.armatures.new("odd")
    ob = bpy.data.objects.new("odd", arm)
    bpy.context.scene.collection.objects.link(ob)
    bpy.context.view_layer.objects.active = ob
    bpy.ops.object.mode_set(mode="EDIT")
    b = arm.edit_bones.new("mixamorig:Hips")
    b.head, b.tail = (0, 0, 1), (0, 0, 1.1)
    bpy.ops.object.mode_set(mode="OBJECT")
    with pytest.raises(M2DError) as err:
        retarget.resolve_bone_map(ob, "mixamo")
    msg = str(err.value)
    for bone in ("mixamorig:Spine", "mixamorig:LeftHand", "mixamorig:RightUpLeg"):
        assert bone in msg
    with pytest.raises(M2DError, match="cannot recognise"):
        retarget.resolve_bone_map(ob)
    custom = {j: "mixamorig:Hips" if j == "Hips" else "Nope" for j in CANON_JOINTS}
    with pytest.raises(M2DError, match="'Nope'"):
        retarget.resolve_bone_map(ob, custom)


def test_custom_bone_map_file_drives_a_renamed_rig(tmp_path, fixture_library):
    lib, _ = fixture_library
    motion = lib.motion(lib.ids[0])
    ob = rigs.build_test_armature("unreal", proportions=motion, with_mesh=False)
    mapping, _ = bone_map_for([b.name for b in ob.data.bones], "unreal", role="target")
    for b in list(ob.data.bones):
        b.name = "X_" + b.name
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"format": "m2d-bonemap", "format_version": 1,
                                "bones": {j: "X_" + n for j, n in mapping.items()}}))
    bmap = retarget.resolve_bone_map(ob, str(path))
    act = retarget.write_action(ob, motion, name="custom", bone_map=str(path))
    compat.assign_action(ob.animation_data_create(), act)
    got = _heads(ob, bmap, [1, 11])
    want = motion.positions[[0, 10]]
    assert np.nanmax(np.linalg.norm(got - want, axis=-1)) < TOL_M


def test_write_action_lays_keys_out_at_the_scene_rate():
    motion = PhraseMotion(60.0, np.zeros((7, len(CANON_JOINTS), 3), np.float32),
                          np.tile(np.array([1, 0, 0, 0], np.float32), (7, len(CANON_JOINTS), 1)))
    p = np.array([rigs.DEFAULT_TPOSE.get(j, (0, 0, 0)) for j in CANON_JOINTS], np.float32)
    for j, name in enumerate(CANON_JOINTS):
        if name.startswith("Right"):
            x, y, z = rigs.DEFAULT_TPOSE["Left" + name[5:]]
            p[j] = (-x, y, z)
    motion = PhraseMotion(60.0, np.repeat(p[None], 7, 0), motion.rotations)
    ob = rigs.build_test_armature("mixamo", with_mesh=False)
    act = retarget.write_action(ob, motion, name="half", fps=30.0, frame_start=5)
    assert tuple(act.frame_range) == (5.0, 8.0)
