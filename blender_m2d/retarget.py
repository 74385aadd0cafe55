"""Canonical library motion -> an Action on the user's armature (bpy).

:func:`write_action` solves the pose of every mapped bone per frame with
:func:`blender_m2d.core.retargeting.solve_target` (direction matching against the stored joint
positions, twist from the stored canonical rotations, Kabsch fits for Hips and Chest), converts
world orientations into each bone's local ``matrix_basis`` rotation, and writes one F-curve per
channel with ``foreach_set``. Bones that lie between mapped bones (``Spine1``, Rigify's
``DEF-upper_arm.L.001``, UE's ``root``) are keyed at rest so the Action is self-contained.

Placement: the motion is played relative to the armature object's location and heading (yaw
about +Z); any other object rotation (e.g. the 90 degree X rotation of some FBX imports) and
the object's scale are compensated, so the character moves in metres, Z up. The root (hip)
trajectory, height included, is scaled by the ratio of the rig's leg length to the motion's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import bpy
import numpy as np

from . import compat
from .core import rigmath as rm
from .core.bonemap import bone_map_for
from .core.errors import M2DError
from .core.library import PhraseMotion
from .core.retargeting import N_JOINTS, TargetRig, leg_length, solve_target, tpose_orientations
from .core.skeleton import CANON_JOINTS, JOINT_INDEX


def resolve_bone_map(armature_ob, rig: str | Mapping[str, str] | None = None) -> dict[str, str]:
    """Canonical joint -> bone name for ``armature_ob``.

    ``rig``: preset name, path to a bone-map JSON file, dict, or None to auto-detect a preset.
    Raises :class:`M2DError` listing every missing bone (and unknown joints) at once.
    """
    if armature_ob is None or armature_ob.type != "ARMATURE":
        raise M2DError(f"'{getattr(armature_ob, 'name', armature_ob)}' is not an armature")
    bones = armature_ob.data.bones
    parents = {b.name: (b.parent.name if b.parent else None) for b in bones}
    mapping, _ = bone_map_for([b.name for b in bones], rig, parents=parents, role="target",
                              rig_label=f"armature '{armature_ob.name}'")
    return mapping


def _placement(ob) -> tuple[np.ndarray, np.ndarray]:
    """(A, A_inv): armature space -> motion space and back (4x4)."""
    w = np.array(ob.matrix_world, dtype=np.float64)
    r = rm.orthonormalize(w[:3, :3])
    x = r @ np.array([1.0, 0.0, 0.0])
    g = np.eye(4)
    g[:3, :3] = rm.yaw_matrix(math.atan2(x[1], x[0]))
    g[:3, 3] = w[:3, 3]
    a = np.linalg.inv(g) @ w
    return a, np.linalg.inv(a)


def target_rig(armature_ob, bone_map: Mapping[str, str]) -> tuple[TargetRig, np.ndarray]:
    """The armature's mapped bones in motion space, and the armature->motion matrix."""
    st = _static(armature_ob, bone_map)
    return st.rig, st.a


def _target_rig(armature_ob, bone_map: Mapping[str, str]) -> tuple[TargetRig, np.ndarray]:
    a, _ = _placement(armature_ob)
    ra = rm.orthonormalize(a[:3, :3])
    heads = np.zeros((N_JOINTS, 3))
    rots = np.tile(np.eye(3), (N_JOINTS, 1, 1))
    tails = np.zeros((N_JOINTS, 3))
    joints = []
    for j, joint in enumerate(CANON_JOINTS):
        if joint not in bone_map:
            continue
        b = armature_ob.data.bones[bone_map[joint]]
        m = np.array(b.matrix_local, dtype=np.float64)
        heads[j] = (a @ np.append(m[:3, 3], 1.0))[:3]
        rots[j] = ra @ rm.orthonormalize(m[:3, :3])
        tails[j] = rots[j] @ np.array([0.0, 1.0, 0.0])
        joints.append(j)
    return TargetRig(tuple(joints), heads, rots, tails), a


class _RigStatic:
    """Everything :func:`solve_pose` reads from bpy about an armature and a bone map (rest
    pose, placement, keyed bones), computed once and reused while the armature's bones, object
    matrix and bone map stay the same (see :func:`_static`)."""

    def __init__(self, ob, bone_map: Mapping[str, str]):
        self.rig, self.a = _target_rig(ob, bone_map)
        self.ra = rm.orthonormalize(self.a[:3, :3])
        self.a_inv = np.linalg.inv(self.a)
        self.r_t = tpose_orientations(self.rig)
        bones = ob.data.bones
        self.bone_of = {bone_map[CANON_JOINTS[j]]: j for j in self.rig.joints}
        self.movable = frozenset(j for b, j in self.bone_of.items()
                                 if not bones[b].use_connect and bones[b].use_local_location)
        self.keyed = _keyed_bones(ob, set(self.bone_of))
        self.matrix = {}      # keyed bone and its keyed-parent chain: matrix_local (4x4)
        self.rest = {}        # orthonormalised rest rotation (3x3)
        self.parent = {}      # nearest keyed ancestor (or None)
        self.connect = {}
        self.local_loc = {}
        seen = set()
        for name in self.keyed:
            b = bones[name]
            self.matrix[name] = np.array(b.matrix_local, dtype=np.float64)
            self.rest[name] = rm.orthonormalize(self.matrix[name][:3, :3])
            p = b.parent
            while p is not None and p.name not in seen:
                p = p.parent
            self.parent[name] = None if p is None else p.name
            self.connect[name] = bool(b.use_connect)
            self.local_loc[name] = bool(b.use_local_location)
            seen.add(name)
        for name in self.keyed:
            for k in (self.rest, self.matrix):
                k[name].flags.writeable = False


_STATIC: dict[int, tuple[tuple, _RigStatic]] = {}
"""armature object pointer -> (fingerprint, _RigStatic)."""


def _fingerprint(ob, bone_map: Mapping[str, str]) -> tuple:
    bones = ob.data.bones
    n = len(bones)
    mats = np.empty(16 * n, np.float64)
    bones.foreach_get("matrix_local", mats)
    flags = np.empty(2 * n, bool)
    bones.foreach_get("use_connect", flags[:n])
    bones.foreach_get("use_local_location", flags[n:])
    names = tuple((b.name, b.parent.name if b.parent else None) for b in bones)
    mw = np.array(ob.matrix_world, dtype=np.float64)
    return (ob.name, ob.data.name, names, mats.tobytes(), flags.tobytes(), mw.tobytes(),
            tuple(sorted(bone_map.items())))


def _static(ob, bone_map: Mapping[str, str]) -> _RigStatic:
    """The cached :class:`_RigStatic` of ``ob`` (rebuilt when its bones, rest pose, object
    matrix or the bone map changed)."""
    key = ob.as_pointer()
    fp = _fingerprint(ob, bone_map)
    hit = _STATIC.get(key)
    if hit is not None and hit[0] == fp:
        return hit[1]
    st = _RigStatic(ob, bone_map)
    if len(_STATIC) > 32:
        _STATIC.clear()
    _STATIC[key] = (fp, st)
    return st


def clear_cache() -> None:
    """Forget the cached rest-pose data of every armature."""
    _STATIC.clear()


def _keyed_bones(ob, mapped: set[str]) -> list[str]:
    """Mapped bones plus every bone on the paths between them and up to the armature root,
    parents first."""
    keep = set()
    for name in mapped:
        b = ob.data.bones[name]
        keep.add(name)
        p = b.parent
        path = []
        while p is not None:
            path.append(p.name)
            if p.name in mapped:
                break
            p = p.parent
        else:
            keep.update(path)          # unmapped ancestors of the root bone
            continue
        keep.update(path[:-1])
    return [b.name for b in ob.data.bones if b.name in keep]


def _rotation_channels(pb, r_basis: np.ndarray) -> tuple[str, np.ndarray]:
    mode = pb.rotation_mode
    if mode == "QUATERNION":
        return "rotation_quaternion", rm.quat_make_continuous(rm.matrix_to_quat(r_basis))
    if mode == "AXIS_ANGLE":
        q = rm.quat_make_continuous(rm.matrix_to_quat(r_basis))
        ang = 2 * np.arccos(np.clip(q[:, 0], -1.0, 1.0))
        axis = q[:, 1:] / np.maximum(np.linalg.norm(q[:, 1:], axis=1, keepdims=True), 1e-9)
        axis[np.linalg.norm(q[:, 1:], axis=1) < 1e-9] = (0.0, 1.0, 0.0)
        return "rotation_axis_angle", np.concatenate([ang[:, None], axis], axis=1)
    return "rotation_euler", rm.matrix_to_euler(r_basis, mode)


def rotation_channels(armature_ob, basis: Mapping[str, np.ndarray],
                      bones) -> dict[str, tuple[str, np.ndarray]]:
    """:func:`_rotation_channels` of every bone in ``bones`` (``basis``: bone -> (F, 3, 3)),
    with the quaternion bones converted together in one batch."""
    pbones = armature_ob.pose.bones
    bones = list(bones)
    quat = [b for b in bones if pbones[b].rotation_mode == "QUATERNION"]
    out = {}
    if quat:
        q = rm.quat_make_continuous(rm.matrix_to_quat(np.stack([basis[b] for b in quat],
                                                                axis=1)), axis=0)
        for k, b in enumerate(quat):
            out[b] = ("rotation_quaternion", np.ascontiguousarray(q[:, k]))
    return {b: out[b] if b in out else _rotation_channels(pbones[b], basis[b]) for b in bones}


def _write_curves(action, slot, bone: str, prop: str, values: np.ndarray,
                  times: np.ndarray) -> None:
    n = times.size
    linear = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value
    for i in range(values.shape[1]):
        fc = compat.ensure_fcurve(action, slot, f'pose.bones["{bone}"].{prop}', i, group=bone)
        kp = fc.keyframe_points
        if len(kp):
            kp.clear()
        kp.add(n)
        co = np.empty(2 * n, np.float32)
        co[0::2] = times
        co[1::2] = values[:, i]
        kp.foreach_set("co", co)
        kp.foreach_set("interpolation", np.full(n, linear, np.int32))
        fc.update()


SLACK_M = 0.01
"""Default length slack of :func:`write_action` (metres, see ``solve_target``)."""


def solve_pose(armature_ob, motion: PhraseMotion, bone_map: Mapping[str, str], *,
               scale: float | None = None, slack_m: float = SLACK_M) -> dict:
    """Per-bone local channels that make ``armature_ob`` follow ``motion`` (no bpy writes).

    Returns ``{"basis": {bone: (F, 3, 3)}, "root": (bone, (F, 3) location), "scale": s,
    "heads": (F, J, 3) solved world heads in motion space}``.
    """
    st = _static(armature_ob, bone_map)
    rig, ra, a_inv = st.rig, st.ra, st.a_inv
    pos = np.asarray(motion.positions, dtype=np.float64)
    if scale is None:
        src_leg = leg_length(pos)
        scale = rig.leg_length() / src_leg if src_leg > 1e-9 else 1.0
    bone_of = st.bone_of
    world_rots, heads, shifts = solve_target(rig, pos * scale, motion.rotations,
                                             slack_m=slack_m, movable=st.movable,
                                             tpose=st.r_t)
    n = pos.shape[0]
    locations = {}
    arm_rot = {}      # armature-space pose orientation of every keyed bone
    basis = {}
    keyed = st.keyed
    root_info = None
    for name in keyed:
        rest = st.rest[name]
        parent = st.parent[name]
        if name in bone_of:
            r_arm = ra.T @ world_rots[:, bone_of[name]]
        else:   # keyed at rest: follows its keyed parent rigidly
            if parent is None:
                r_arm = np.broadcast_to(rest, (n, 3, 3)).copy()
            else:
                r_arm = arm_rot[parent] @ (st.rest[parent].T @ rest)
        arm_rot[name] = r_arm
        if parent is None:
            basis[name] = rest.T @ r_arm
        else:
            basis[name] = (rest.T @ st.rest[parent]) @ np.swapaxes(arm_rot[parent], -1, -2) \
                @ r_arm
        if name in bone_of and name != bone_map["Hips"] and np.any(shifts[:, bone_of[name]]):
            # head moved by `shift` (motion space): location in the bone's rest-chain frame
            shift_arm = (a_inv[:3, :3] @ shifts[:, bone_of[name]].T).T
            if parent is None:
                chain = np.broadcast_to(rest, (n, 3, 3))
            else:
                chain = arm_rot[parent] @ (st.rest[parent].T @ rest)
            locations[name] = np.einsum("fba,fb->fa", chain, shift_arm)
        if name == bone_map["Hips"]:
            if st.connect[name]:
                raise M2DError(f"the hips bone '{name}' is connected to its parent, so it "
                               "cannot move; disconnect it to play root motion")
            head_arm = (a_inv[:3, :3] @ heads[:, bone_of[name]].T).T + a_inv[:3, 3]
            m = st.matrix[name]
            if st.local_loc[name]:
                loc = (head_arm - m[:3, 3]) @ rest
            else:
                loc = head_arm - m[:3, 3]
            root_info = (name, loc)
    return {"basis": basis, "root": root_info, "scale": float(scale), "heads": heads,
            "keyed": list(keyed), "mapped": bone_of, "locations": locations}


def write_action(armature_ob, motion: PhraseMotion, *, name: str, bone_map=None,
                 frame_start: float = 1.0, fps: float | None = None,
                 scale: float | None = None, slack_m: float = SLACK_M):
    """Bake ``motion`` onto ``armature_ob`` as a new Action (not assigned).

    Parameters
    ----------
    armature_ob : bpy.types.Object
        The user's armature (its rest pose may differ from the motion's: A/T pose, bone axes).
    motion : PhraseMotion
        Canonical motion, e.g. ``library.motion(phrase_id)``.
    name : str
        Action name.
    bone_map : str | dict | None
        Preset name, bone-map JSON path or dict; None auto-detects a preset.
    frame_start : float
        Scene frame of the motion's first frame.
    fps : float, optional
        Scene frame rate the keys are laid out for (default: the scene's); the motion's frame
        k lands on ``frame_start + k * fps / motion.fps``.
    scale : float, optional
        Root scale (default: target leg length / motion leg length).
    slack_m : float
        Bones whose head misses the motion's joint by a median of at most this much get small
        location keys that close the gap (segments of the source that stretch, e.g. a spine
        mapped across several source bones); 0 disables. Rigs with other proportions miss by
        more and are only rotated.

    Returns
    -------
    bpy.types.Action
        With one slot (``compat.SLOT_NAME``, identifier ``"OBDance"``) holding all curves;
        assign it with ``compat.assign_action(anim_data_or_strip, action)``.
    """
    if not isinstance(bone_map, Mapping):
        bone_map = resolve_bone_map(armature_ob, bone_map)
    if motion.n_frames < 1:
        raise M2DError("the motion has no frames")
    if fps is None:
        scene = bpy.context.scene
        fps = scene.render.fps / scene.render.fps_base
    solved = solve_pose(armature_ob, motion, bone_map, scale=scale, slack_m=slack_m)
    times = frame_start + np.arange(motion.n_frames) * (fps / motion.fps)
    action, slot = compat.new_action(name)
    for bone in solved["keyed"]:
        pb = armature_ob.pose.bones[bone]
        prop, vals = _rotation_channels(pb, solved["basis"][bone])
        _write_curves(action, slot, bone, prop, vals, times)
    root = solved["root"]
    if root is not None:
        _write_curves(action, slot, root[0], "location", root[1], times)
    for bone in solved["keyed"]:
        if root is not None and bone == root[0]:
            continue
        if bone in solved["locations"]:
            _write_curves(action, slot, bone, "location", solved["locations"][bone], times)
        elif bone not in solved["mapped"] and not armature_ob.data.bones[bone].use_connect:
            _write_curves(action, slot, bone, "location", np.zeros((times.size, 3)), times)
    action["m2d_scale"] = solved["scale"]
    return action


def leg_length_of(armature_ob, bone_map: Mapping[str, str]) -> float:
    """Leg length (hip to ankle, metres in motion space) of an armature."""
    rig, _ = target_rig(armature_ob, bone_map)
    return rig.leg_length()


__all__ = ["JOINT_INDEX", "leg_length_of", "resolve_bone_map", "rotation_channels", "solve_pose",
           "target_rig", "write_action"]
