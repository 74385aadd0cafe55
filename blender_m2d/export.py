"""Export the evaluated dance of an armature to FBX and glTF for game engines (bpy).

Both exporters bake the *evaluated* NLA result (our crossfaded tracks, and whatever else
animates the armature) on every frame of the scene's range into one animation clip:

FBX (``bpy.ops.export_scene.fbx``)
    ``bake_anim_use_nla_strips=False, bake_anim_use_all_actions=False`` (one take named after
    the scene holding the baked result, not one per strip/action), ``bake_anim_step=1``,
    ``bake_anim_simplify_factor=0`` (every frame keyed, no curve simplification),
    ``bake_anim_force_startend_keying=True``, ``add_leaf_bones=False``, bone axes
    ``primary_bone_axis='Y', secondary_bone_axis='X'`` (Blender's own), ``armature_nodetype=
    'NULL'``, ``apply_scale_options='FBX_SCALE_ALL'`` (1 Blender unit = 1 m arrives as 1 m in
    Unity and as 100 cm in Unreal). The exporter writes the pose of the *current frame* as the
    bones' bind/rest transforms, so the export runs from a frame before the song where nothing of
    ours is active with every pose channel reset: the file's rest pose is the rig's rest pose
    (``../shared/notes/blender.md`` section 8).
glTF (``bpy.ops.export_scene.gltf``, ``.glb``)
    ``export_animation_mode='SCENE'`` (the baked scene), ``export_force_sampling=True``,
    ``export_frame_range=True``, ``export_optimize_animation_size=False``; joints use the rest
    pose (``export_rest_position_armature``, the default).

Only the armature and the meshes parented to it are exported. Selection, active object, the
current frame and the pose are restored afterwards. Writes are atomic: the exporter writes a
temporary sibling that is renamed on success, and removed on any error.

Engine notes: the dance's root motion is on the hips bone (keyed translation). Unity: import
the FBX as Humanoid (or Generic with Root node = the hips) and enable *Bake Into Pose* for Y if
the character should keep the captured height. Unreal: the hips carry the motion, so enable
*Root Motion* only on a skeleton with a ground-level root bone; otherwise import as in-place
plus the baked hips translation (the default).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import bpy

from .core.errors import M2DError

FBX_SETTINGS = dict(
    use_selection=True, object_types={"ARMATURE", "MESH"}, bake_anim=True,
    bake_anim_use_nla_strips=False, bake_anim_use_all_actions=False,
    bake_anim_use_all_bones=True, bake_anim_force_startend_keying=True, bake_anim_step=1.0,
    bake_anim_simplify_factor=0.0, add_leaf_bones=False, primary_bone_axis="Y",
    secondary_bone_axis="X", apply_scale_options="FBX_SCALE_ALL", armature_nodetype="NULL",
    use_armature_deform_only=False)
GLTF_SETTINGS = dict(
    export_format="GLB", use_selection=True, export_animations=True,
    export_animation_mode="SCENE", export_frame_range=True, export_force_sampling=True,
    export_optimize_animation_size=False)


def check_writable(path: str | os.PathLike) -> Path:
    """Raise M2DError unless a file can be created in ``path``'s folder."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise M2DError("the output folder does not exist", path=parent)
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as err:
        raise M2DError(f"cannot write here ({err.strerror})", path=path) from err
    os.close(fd)
    os.unlink(probe)
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same extension) and move it into place when the
    block succeeds; remove it on error."""
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    os.unlink(tmp)
    tmp = Path(tmp)
    try:
        yield tmp
        if not tmp.is_file():
            raise M2DError("the exporter wrote nothing", path=path)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def _export_context(armature_ob, *, rest_reference: bool) -> Iterator[None]:
    """Select only the armature and its meshes; optionally show the rest pose at a frame
    before the song (see the module docstring). Restores everything afterwards."""
    scene = bpy.context.scene
    view_layer = bpy.context.view_layer
    selected = [ob for ob in view_layer.objects if ob.select_get()]
    active = view_layer.objects.active
    frame = scene.frame_current
    ad = armature_ob.animation_data
    saved_action = saved_slot = None
    tmp_track = None
    saved_extrap = []
    saved_pose = [(pb, tuple(pb.location), tuple(pb.rotation_quaternion),
                   tuple(pb.rotation_euler), tuple(pb.rotation_axis_angle), tuple(pb.scale))
                  for pb in armature_ob.pose.bones]
    try:
        for ob in selected:
            ob.select_set(False)
        armature_ob.select_set(True)
        for child in armature_ob.children_recursive:
            if child.type == "MESH" and child.name in view_layer.objects:
                child.select_set(True)
        view_layer.objects.active = armature_ob
        if rest_reference:
            if ad is not None and ad.action is not None:
                from . import compat

                saved_action, saved_slot = ad.action, compat.action_slot_of(ad)
                tmp_track = ad.nla_tracks.new()
                st = tmp_track.strips.new("m2d export tmp", int(ad.action.frame_range[0]),
                                          ad.action)
                compat.assign_action(st, ad.action, saved_slot)
                st.extrapolation = "NOTHING"
                ad.action = None
            if ad is not None:
                for tr in ad.nla_tracks:
                    for st in tr.strips:
                        if st.extrapolation == "HOLD" and st.frame_start <= scene.frame_start:
                            saved_extrap.append((st, st.extrapolation))
                            st.extrapolation = "HOLD_FORWARD"
            scene.frame_set(scene.frame_start - 1)
            for pb in armature_ob.pose.bones:
                pb.location = (0.0, 0.0, 0.0)
                pb.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
                pb.rotation_euler = (0.0, 0.0, 0.0)
                pb.rotation_axis_angle = (0.0, 0.0, 1.0, 0.0)
                pb.scale = (1.0, 1.0, 1.0)
        yield
    finally:
        if tmp_track is not None:
            ad.nla_tracks.remove(tmp_track)
            from . import compat

            compat.assign_action(ad, saved_action, saved_slot)
        for st, ex in saved_extrap:
            st.extrapolation = ex
        for ob in view_layer.objects:
            ob.select_set(ob in selected)
        view_layer.objects.active = active
        for pb, loc, q, e, aa, s in saved_pose:
            pb.location, pb.rotation_quaternion, pb.rotation_euler = loc, q, e
            pb.rotation_axis_angle, pb.scale = aa, s
        scene.frame_set(frame)


def _blender_error(err: RuntimeError) -> str:
    """The telling line of a ``bpy.ops`` error ("Error: No space left on device", or the last
    line of an exporter's Python traceback)."""
    lines = [ln.strip() for ln in str(err).splitlines()
             if ln.strip() and not ln.strip().startswith("Location:")]
    last = lines[-1] if lines else type(err).__name__
    return last.removeprefix("Error: ").strip()


def export_fbx(armature_ob, path: str | os.PathLike, **overrides) -> Path:
    """Export the armature (and its meshes) with the baked dance to FBX (atomic)."""
    settings = {**FBX_SETTINGS, **overrides}
    with atomic_output(path) as tmp, _export_context(armature_ob, rest_reference=True):
        try:
            res = bpy.ops.export_scene.fbx(filepath=str(tmp), **settings)
        except RuntimeError as err:      # e.g. a full disk: the exporter's OSError
            raise M2DError(f"the FBX exporter failed ({_blender_error(err)})",
                           path=path) from err
        if "FINISHED" not in res:
            raise M2DError(f"the FBX exporter failed ({res})", path=path)
    return Path(path)


def export_glb(armature_ob, path: str | os.PathLike, **overrides) -> Path:
    """Export the armature (and its meshes) with the baked dance to binary glTF (atomic)."""
    settings = {**GLTF_SETTINGS, **overrides}
    with atomic_output(path) as tmp, _export_context(armature_ob, rest_reference=False):
        try:
            res = bpy.ops.export_scene.gltf(filepath=str(tmp), **settings)
        except RuntimeError as err:
            raise M2DError(f"the glTF exporter failed ({_blender_error(err)})",
                           path=path) from err
        if "FINISHED" not in res:
            raise M2DError(f"the glTF exporter failed ({res})", path=path)
    return Path(path)


def save_blend(path: str | os.PathLike) -> Path:
    """Save the current file as a copy at ``path`` atomically (temporary sibling, rename)."""
    with atomic_output(path) as tmp:
        try:
            bpy.ops.wm.save_as_mainfile(filepath=str(tmp), copy=True, check_existing=False)
        except RuntimeError as err:      # "Error: No space left on device", ...
            raise M2DError(f"cannot save the .blend file ({_blender_error(err)})",
                           path=path) from err
    return Path(path)
