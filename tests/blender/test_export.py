"""FBX and glTF exports of a placed dance re-import with the right frames, root motion and rest
pose, and leave the scene as it was."""

from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from test_choreograph import FPS, fresh_scene, library, plan, read_only_dir, song  # noqa: E402

from blender_m2d import export, nla  # noqa: E402
from blender_m2d.core.errors import M2DError  # noqa: E402

__all__ = ["library", "plan", "read_only_dir", "song"]       # fixtures used below


@pytest.fixture(scope="module")
def exported(plan, library, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    scene, ob = fresh_scene()
    ap = nla.apply_plan(ob, plan, library, rig="mixamo", scene=scene)
    frames = sorted({1, plan.phrases[1].frame_start + plan.crossfade_frames // 2,
                     plan.frame_end // 2, plan.frame_end})
    ref = nla.depsgraph_joint_positions(ob, ap.bone_map, frames, scene)
    rest = {b.name: np.array(ob.matrix_world @ b.head_local) for b in ob.data.bones}
    scene.frame_set(37)
    ob.select_set(False)
    state = (scene.frame_current, ob.select_get(), bpy.context.view_layer.objects.active,
             [tuple(pb.rotation_quaternion) for pb in ob.pose.bones])
    export.export_fbx(ob, out / "dance.fbx")
    export.export_glb(ob, out / "dance.glb")
    after = (scene.frame_current, ob.select_get(), bpy.context.view_layer.objects.active,
             [tuple(pb.rotation_quaternion) for pb in ob.pose.bones])
    return out, ap, frames, ref, rest, state, after


def _reimport(kind, path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.scene.render.fps = FPS                 # glTF converts seconds with this
    if kind == "fbx":
        bpy.ops.import_scene.fbx(filepath=str(path), anim_offset=0.0)
    else:
        bpy.ops.import_scene.gltf(filepath=str(path))
    return next(o for o in bpy.data.objects if o.type == "ARMATURE")


@pytest.mark.parametrize("kind", ["fbx", "glb"])
def test_export_reimports_with_frames_root_motion_and_rest_pose(exported, plan, kind):
    out, ap, frames, ref, rest, _, _ = exported
    arm = _reimport(kind, out / f"dance.{kind}")
    lo, hi = (round(v) for v in arm.animation_data.action.frame_range)
    assert (lo, hi) == (plan.frame_start, plan.frame_end)
    rest_err = max(np.abs(np.array(arm.matrix_world @ b.head_local) - rest[b.name]).max()
                   for b in arm.data.bones if b.name in rest)
    assert rest_err < 1e-4                              # rest pose = the rig's rest pose
    got = nla.depsgraph_joint_positions(arm, ap.bone_map, frames)
    assert np.nanmax(np.abs(got - ref)) < 1e-3          # root motion and pose survive
    root_travel = np.linalg.norm(got[-1, 0, :2] - got[0, 0, :2])
    assert root_travel == pytest.approx(np.linalg.norm(ref[-1, 0, :2] - ref[0, 0, :2]),
                                        abs=1e-3)


def test_export_restores_the_scene(exported):
    *_, state, after = exported
    assert after == state


def test_export_to_a_read_only_folder_fails_cleanly(read_only_dir, plan, library):
    scene, ob = fresh_scene()
    nla.apply_plan(ob, plan, library, rig="mixamo", scene=scene, evaluate=False)
    with pytest.raises(M2DError, match="cannot write"):
        export.export_fbx(ob, read_only_dir / "x.fbx")
    with pytest.raises(M2DError, match="cannot write"):
        export.save_blend(read_only_dir / "x.blend")
    assert list(read_only_dir.iterdir()) == []
