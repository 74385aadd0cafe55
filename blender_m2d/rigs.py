"""Build simple character armatures named like common rigs (bpy).

:func:`build_test_armature` makes a humanoid armature whose bones follow a preset's naming
(Mixamo, Rigify metarig/DEF, Unreal mannequin, the CMU skeletons or the canonical names),
including the in-between bones those rigs have (``Spine1``, ``DEF-upper_arm.L.001``, ``root``),
in a T-pose or an A-pose, with preset-specific bone rolls, and optionally a blocky skinned mesh
so the dance is visible in the viewport. Tests use it to check retargeting onto rigs whose rest
poses and bone axes differ from the mocap's; ``m2d demo`` uses it as the dancing character.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import bpy
import numpy as np

from .core.bonemap import PRESET_ALIASES, PRESETS, split_ref
from .core.errors import M2DError
from .core.library import PhraseMotion
from .core.retargeting import LEAF_LENGTH_M, SEMANTIC, TPOSE_DIRECTION, tpose_positions
from .core.skeleton import CANON_JOINTS, CANON_PARENTS, JOINT_INDEX

J = JOINT_INDEX

DEFAULT_TPOSE = {
    "Hips": (0.0, 0.0, 0.95), "Spine": (0.0, 0.01, 1.05), "Chest": (0.0, 0.0, 1.30),
    "Neck": (0.0, 0.0, 1.50), "Head": (0.0, -0.01, 1.60),
    "LeftShoulder": (0.04, 0.0, 1.45), "LeftUpperArm": (0.18, 0.0, 1.45),
    "LeftLowerArm": (0.46, 0.0, 1.45), "LeftHand": (0.71, 0.0, 1.45),
    "LeftUpperLeg": (0.09, 0.0, 0.92), "LeftLowerLeg": (0.09, 0.0, 0.50),
    "LeftFoot": (0.09, 0.02, 0.08), "LeftToes": (0.09, -0.12, 0.02),
}
"""Canonical T-pose joint positions of an average adult (metres; right side mirrored)."""

# in-between bones per preset: (canonical joint, [names]) -> the joint's segment to its primary
# child is split into len(names) + 1 bones; plus extra bones above the hips
_SPLITS = {
    "mixamo": {"Spine": ["Spine1"]},
    "rigify_def": {"Spine": ["DEF-spine.002"], "Neck": ["DEF-spine.005"],
                   "LeftUpperArm": ["DEF-upper_arm.L.001"], "LeftLowerArm": ["DEF-forearm.L.001"],
                   "RightUpperArm": ["DEF-upper_arm.R.001"],
                   "RightLowerArm": ["DEF-forearm.R.001"],
                   "LeftUpperLeg": ["DEF-thigh.L.001"], "LeftLowerLeg": ["DEF-shin.L.001"],
                   "RightUpperLeg": ["DEF-thigh.R.001"], "RightLowerLeg": ["DEF-shin.R.001"]},
    "rigify_metarig": {"Spine": ["spine.002"], "Neck": ["spine.005"]},
    "unreal": {"Spine": ["spine_02"]},
}
_ROOT_BONE = {"unreal": "root"}
_LEAF_EXTRA = {"mixamo": ("Head", "HeadTop_End")}
# bone roll: which world axis each bone's local Z should point to (None: Blender's default)
_ROLL_AXIS = {"mixamo": None, "rigify_def": (0.0, -1.0, 0.0), "rigify_metarig": (0.0, -1.0, 0.0),
              "unreal": (0.0, 0.0, 1.0), "canonical": (1.0, 0.0, 0.0)}


def _tpose(proportions) -> np.ndarray:
    if proportions is None:
        proportions = DEFAULT_TPOSE
    if isinstance(proportions, PhraseMotion):
        return tpose_positions(proportions.positions, proportions.rotations)
    if isinstance(proportions, Mapping):
        out = np.zeros((len(CANON_JOINTS), 3))
        for j, name in enumerate(CANON_JOINTS):
            if name in proportions:
                out[j] = proportions[name]
            elif name.startswith("Right") and "Left" + name[5:] in proportions:
                x, y, z = proportions["Left" + name[5:]]
                out[j] = (-x, y, z)
            else:
                raise M2DError(f"proportions lack joint {name!r}")
        return out
    arr = np.asarray(proportions, dtype=np.float64)
    if arr.shape != (len(CANON_JOINTS), 3):
        raise M2DError(f"proportions must be (J, 3) T-pose positions, got shape {arr.shape}")
    return arr.copy()


def _rotate_about(points: np.ndarray, pivot: np.ndarray, axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    r = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
    return (points - pivot) @ r.T + pivot


def _descendants(j: int) -> list[int]:
    out = [j]
    for c in range(len(CANON_JOINTS)):
        if CANON_PARENTS[c] in out:
            out.append(c)
    return out


def _apply_pose(p: np.ndarray, pose: str) -> np.ndarray:
    """Turn a T-pose into an A-pose (arms 45 degrees down, elbows and knees slightly bent)."""
    p = p.copy()
    if pose == "T":
        return p
    if pose != "A":
        raise M2DError(f"unknown rest pose {pose!r} (use 'T' or 'A')")
    for side, sign in (("Left", 1.0), ("Right", -1.0)):
        ua, la = J[side + "UpperArm"], J[side + "LowerArm"]
        arm = _descendants(ua)
        p[arm] = _rotate_about(p[arm], p[ua], (0, 1, 0), sign * math.radians(45))
        fore = _descendants(la)
        p[fore] = _rotate_about(p[fore], p[la], (0, 0, 1), -sign * math.radians(10))
        ll = J[side + "LowerLeg"]
        shin = _descendants(ll)
        p[shin] = _rotate_about(p[shin], p[ll], (1, 0, 0), math.radians(-6))
    return p


def _bone_names(preset: str) -> dict[str, str]:
    names = {}
    for joint in CANON_JOINTS:
        for cand in PRESETS[preset][joint]:
            bone, tail = split_ref(cand)
            if not tail:
                names[joint] = bone
                break
    return names


def build_test_armature(preset: str = "mixamo", *, proportions=None, name: str | None = None,
                        pose: str = "T", with_mesh: bool = True, prefix: str = "mixamorig:",
                        collection=None):
    """Create a humanoid armature named after ``preset`` and return its object.

    Parameters
    ----------
    preset : str
        ``"mixamo"``, ``"rigify_def"`` (alias ``"rigify"``), ``"rigify_metarig"``, ``"unreal"``,
        ``"cmu_bvh"``, ``"cmu_cgspeed"``, ``"cc_base"`` or ``"canonical"``.
    proportions : PhraseMotion | dict | np.ndarray | None
        Body proportions: a library phrase's motion (its T-pose is measured), canonical T-pose
        joint positions (J, 3) or a dict of them (right side mirrored if absent); None: an
        average adult (:data:`DEFAULT_TPOSE`).
    pose : str
        Rest pose, ``"T"`` or ``"A"``.
    with_mesh : bool
        Add a blocky mesh skinned to the bones (one box per bone).
    prefix : str
        Bone-name prefix for Mixamo rigs.
    """
    preset = PRESET_ALIASES.get(preset, preset)
    if preset not in PRESETS:
        raise M2DError(f"unknown rig preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = _apply_pose(_tpose(proportions), pose)
    body = float(np.ptp(p[:, 2])) / 1.6
    names = _bone_names(preset)
    pre = prefix if preset == "mixamo" else ""
    splits = _SPLITS.get(preset, {})
    name = name or f"{preset}_rig"
    arm = bpy.data.armatures.new(name)
    ob = bpy.data.objects.new(name, arm)
    (collection or bpy.context.scene.collection).objects.link(ob)
    view_layer = bpy.context.view_layer
    prev_active = view_layer.objects.active
    view_layer.objects.active = ob
    prev_mode = ob.mode
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        eb = arm.edit_bones
        bone_of_joint = {}
        last_of_joint = {}
        root = None
        if preset in _ROOT_BONE:
            root = eb.new(_ROOT_BONE[preset])
            root.head, root.tail = (0, 0, 0), (0, -0.25 * body, 0)
        for j, joint in enumerate(CANON_JOINTS):
            if joint not in names:
                continue
            spec = SEMANTIC[j]
            child = spec[0] if spec[0] != "parent" else None
            head = p[j]
            if child is not None and CANON_JOINTS[child] in names:
                end = p[child]
            else:
                d = p[j] - p[CANON_PARENTS[j]] if CANON_PARENTS[j] >= 0 else TPOSE_DIRECTION[j]
                d = d / max(np.linalg.norm(d), 1e-9)
                end = head + d * LEAF_LENGTH_M.get(j, 0.1) * body
            parts = splits.get(joint, [])
            pts = [head + (end - head) * k / (len(parts) + 1) for k in range(len(parts) + 2)]
            chain = [pre + names[joint]] + [pre + s for s in parts]
            parent_j = CANON_PARENTS[j]
            parent_bone = last_of_joint.get(parent_j, root) if parent_j >= 0 else root
            first = None
            for k, bname in enumerate(chain):
                b = eb.new(bname)
                b.head, b.tail = pts[k], pts[k + 1]
                b.parent = parent_bone
                if parent_bone is not None and k > 0:
                    b.use_connect = True
                parent_bone = b
                first = first or b
            bone_of_joint[j], last_of_joint[j] = first, parent_bone
        extra = _LEAF_EXTRA.get(preset)
        if extra is not None:
            host = bone_of_joint[J[extra[0]]]
            b = eb.new(pre + extra[1])
            b.head = host.tail
            b.tail = host.tail + (host.tail - host.head) * 0.5
            b.parent, b.use_connect = host, True
        axis = _ROLL_AXIS.get(preset)
        if axis is not None:
            for b in eb:
                b.align_roll(axis)
    finally:
        bpy.ops.object.mode_set(mode=prev_mode if prev_mode != "EDIT" else "OBJECT")
        view_layer.objects.active = prev_active if prev_active is not None else ob
    for pb in ob.pose.bones:
        pb.rotation_mode = "QUATERNION"
    arm.display_type = "OCTAHEDRAL"
    ob.show_in_front = True
    if with_mesh:
        _add_block_mesh(ob, body, collection)
    return ob


def _add_block_mesh(ob, body: float, collection) -> None:
    """One box per deforming bone, weighted 1.0 to it, under an Armature modifier."""
    verts, faces, groups = [], [], []
    cube_faces = [(0, 1, 2, 3), (4, 7, 6, 5), (0, 4, 5, 1), (1, 5, 6, 2), (2, 6, 7, 3),
                  (3, 7, 4, 0)]
    for b in ob.data.bones:
        head, tail = np.array(b.head_local), np.array(b.tail_local)
        m = np.array(b.matrix_local)[:3, :3]
        length = np.linalg.norm(tail - head)
        r = max(min(0.045 * body, 0.25 * length), 0.01 * body)
        x, z = m[:, 0] * r, m[:, 2] * r
        base = len(verts)
        for end in (head + (tail - head) * 0.08, tail - (tail - head) * 0.08):
            verts += [end - x - z, end + x - z, end + x + z, end - x + z]
        faces += [tuple(base + i for i in f) for f in cube_faces]
        groups.append((b.name, list(range(base, base + 8))))
    mesh = bpy.data.meshes.new(ob.name + "_body")
    mesh.from_pydata([tuple(v) for v in verts], [], faces)
    mesh.update()
    body_ob = bpy.data.objects.new(ob.name + "_body", mesh)
    (collection or bpy.context.scene.collection).objects.link(body_ob)
    for bone, idx in groups:
        vg = body_ob.vertex_groups.new(name=bone)
        vg.add(idx, 1.0, "REPLACE")
    body_ob.parent = ob
    mod = body_ob.modifiers.new("Armature", "ARMATURE")
    mod.object = ob
