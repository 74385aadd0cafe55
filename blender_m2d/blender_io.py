"""Import BVH/FBX takes with Blender's own importers into canonical motion arrays (bpy).

:func:`import_take` runs ``bpy.ops.import_anim.bvh`` / ``bpy.ops.import_scene.fbx``, maps the
imported armature onto the canonical skeleton with a bone map, samples the evaluated joint
positions and orientations at the library frame rate, normalises them and removes everything
it imported. What the library holds is therefore what a user sees after importing the same file
in Blender.

Sampling: forward kinematics in numpy from the imported F-curves (``foreach_get`` + linear
interpolation, about 100x faster than ``scene.frame_set``); armatures with constraints, drivers,
NLA strips, F-curve modifiers or unusual bone inheritance fall back to depsgraph sampling.
``tests/blender/test_library_import.py`` checks both samplers agree.

Normalisation of each take (recorded in library.json, see docs/library.md):

1. **Root offset fix** (BVH): files that store the root position relative to the root's OFFSET
   (CMU subject 5 via iClone) import about 1 m too low in Blender; the offset is added back
   when doing so brings the feet to the floor.
2. **Units**: the leg length (hip to ankle) decides the unit: metres, cm, mm, inches or dm when
   one gives an adult leg (0.7-1.1 m); otherwise the take is scaled to a 0.86 m leg
   ("normalised by leg length", e.g. the CMU salsa takes in cgspeed units / 128).
3. **Floor**: the 1st percentile of the lowest foot/toe joint is put at z = 0.
4. **Start pose**: rotated about +Z so the character faces -Y at the take's first frame, moved so
   the hips start above the origin.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np

from .core import rigmath as rm
from .core.bonemap import bone_map_for, split_ref
from .core.bvh import BvhHeader, read_bvh_header
from .core.errors import M2DError
from .core.retargeting import N_JOINTS, TargetRig, canonical_rotations, leg_length, rest_offsets
from .core.skeleton import CANON_JOINTS, JOINT_INDEX

log = logging.getLogger(__name__)

SUPPORTED = (".bvh", ".fbx")
UNIT_CANDIDATES = (("m", 1.0), ("cm", 0.01), ("mm", 0.001), ("in", 0.0254), ("dm", 0.1))
ADULT_LEG_M = (0.7, 1.1)
NORMAL_LEG_M = 0.86
_ID_COLLECTIONS = ("objects", "armatures", "actions", "meshes", "materials", "images",
                   "textures", "cameras", "lights", "collections", "node_groups")


@dataclass
class Take:
    """One imported take in canonical form (positions/rotations at ``fps``)."""

    name: str
    source: str
    fmt: str
    src_fps: float
    src_frames: int
    fps: float
    positions: np.ndarray            # (F, J, 3) float64, metres, normalised
    rotations: np.ndarray            # (F, J, 4) float64, canonical, w first
    rig: str
    bone_map: dict[str, str]
    units: str
    unit_scale: float
    root_offset_fix: bool
    yaw_rad: float
    translation_m: np.ndarray        # applied after scale and yaw
    sampler: str
    notes: list[str] = field(default_factory=list)
    root_shift: np.ndarray = field(default_factory=lambda: np.zeros(3))   # raw, before scale

    @property
    def duration_s(self) -> float:
        return (self.src_frames - 1) / self.src_fps

    def normalize_points(self, raw_world: np.ndarray) -> np.ndarray:
        """Map world points of this file as Blender imports it into library coordinates."""
        p = np.asarray(raw_world, dtype=np.float64) + self.root_shift
        return p * self.unit_scale @ rm.yaw_matrix(self.yaw_rad).T + self.translation_m

    def info(self) -> dict:
        """The take's entry in library.json."""
        return {
            "take": self.name, "source": self.source, "format": self.fmt,
            "src_fps": self.src_fps, "src_frames": self.src_frames,
            "duration_s": round(self.duration_s, 4), "rig": self.rig,
            "units": self.units, "unit_scale": self.unit_scale,
            "root_offset_fix": self.root_offset_fix,
            "normalisation": {"root_shift": [round(float(v), 6) for v in self.root_shift],
                              "scale": self.unit_scale, "yaw_rad": round(self.yaw_rad, 9),
                              "translation_m": [round(float(v), 9) for v in self.translation_m]},
            "bone_map": dict(self.bone_map), "sampler": self.sampler, "notes": list(self.notes),
        }


# --- importing -----------------------------------------------------------------------------------

def _id_snapshot() -> dict[str, set[int]]:
    return {name: {i.as_pointer() for i in getattr(bpy.data, name)} for name in _ID_COLLECTIONS}


def remove_new_ids(before: dict[str, set[int]]) -> None:
    """Remove every datablock created since ``before`` (an :func:`_id_snapshot`)."""
    doomed = []
    for name in _ID_COLLECTIONS:
        doomed += [i for i in getattr(bpy.data, name) if i.as_pointer() not in before[name]]
    if doomed:
        bpy.data.batch_remove(doomed)


def _quiet():
    """Silence the importers' progress prints (they use Python's print)."""
    return contextlib.redirect_stdout(io.StringIO())


def _import_bvh(path: Path):
    with _quiet():
            bpy.ops.import_anim.bvh(filepath=str(path), global_scale=1.0, rotate_mode="NATIVE",
                                use_fps_scale=False, update_scene_fps=False,
                                update_scene_duration=False, frame_start=1)
    return bpy.context.view_layer.objects.active


def _import_fbx(path: Path, before: dict[str, set[int]]):
    scene = bpy.context.scene
    saved = (scene.render.fps, scene.render.fps_base)
    try:
        with _quiet():
            bpy.ops.import_scene.fbx(filepath=str(path), use_anim=True,
                                     automatic_bone_orientation=False)
        fps = scene.render.fps / scene.render.fps_base
    finally:
        scene.render.fps, scene.render.fps_base = saved
    arms = [o for o in bpy.data.objects
            if o.as_pointer() not in before["objects"] and o.type == "ARMATURE"]
    return arms, float(fps)


def _action_range(ob) -> tuple[float, float] | None:
    ad = ob.animation_data
    if ad is None or ad.action is None:
        return None
    fcs = _fcurves_of(ob)
    if not fcs:
        return None
    lo, hi = math.inf, -math.inf
    for fc in fcs:
        if len(fc.keyframe_points):
            r = fc.range()
            lo, hi = min(lo, r[0]), max(hi, r[1])
    return (lo, hi) if hi > lo else None


def _fcurves_of(ob):
    from . import compat

    ad = ob.animation_data
    if ad is None or ad.action is None:
        return []
    slot = compat.action_slot_of(ad)
    fcs = compat.action_fcurves(ad.action, slot, create=False) if (
        slot is not None or not compat.has_slots()) else None
    return list(fcs) if fcs is not None else []


# --- sampling ------------------------------------------------------------------------------------

def _chain(ob, bones: list[str]) -> list[str]:
    """The bones and all their ancestors, parents first."""
    need: list[str] = []
    seen = set()
    for name in bones:
        path = []
        b = ob.data.bones[name]
        while b is not None and b.name not in seen:
            path.append(b.name)
            seen.add(b.name)
            b = b.parent
        need += reversed(path)
    order = {b.name: i for i, b in enumerate(ob.data.bones)}
    # parents before children: sort by depth
    depth = {n: len(ob.data.bones[n].parent_recursive) for n in need}
    return sorted(need, key=lambda n: (depth[n], order[n]))


def _fcurve_fast_path_ok(ob, bones: list[str]) -> str | None:
    """Why the numpy FK sampler cannot be used for ``bones`` (None if it can)."""
    ad = ob.animation_data
    if ad is not None:
        if ad.drivers and len(ad.drivers):
            return "drivers"
        if any(not t.mute for t in ad.nla_tracks) and ad.use_nla:
            return "NLA tracks"
    if ob.constraints and len(ob.constraints):
        return "object constraints"
    for n in bones:
        pb = ob.pose.bones[n]
        b = pb.bone
        if len(pb.constraints):
            return f"constraints on {n}"
        if not b.use_inherit_rotation or b.inherit_scale != "FULL" or not b.use_local_location:
            return f"non-default inheritance on {n}"
        if pb.rotation_mode not in rm.EULER_ORDERS and pb.rotation_mode not in (
                "QUATERNION", "AXIS_ANGLE"):
            return f"rotation mode {pb.rotation_mode} on {n}"
    for fc in _fcurves_of(ob):
        if not fc.data_path.startswith("pose.bones["):
            return f"object animation ({fc.data_path})"
        if len(fc.modifiers):
            return "F-curve modifiers"
        if fc.extrapolation != "CONSTANT":
            return "extrapolated F-curves"
    return None


def _curve_values(fc, frames: np.ndarray) -> np.ndarray:
    kp = fc.keyframe_points
    n = len(kp)
    if n == 0:
        return np.full(frames.shape, fc.evaluate(0.0))
    co = np.empty(2 * n, np.float64)
    kp.foreach_get("co", co)
    interp = np.empty(n, np.int32)
    kp.foreach_get("interpolation", interp)
    linear = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value
    x, y = co[0::2], co[1::2]
    if n == 1:
        return np.full(frames.shape, y[0])
    if np.all(interp[:-1] == linear) and np.all(np.diff(x) > 0):
        return np.interp(frames, x, y)
    return np.array([fc.evaluate(float(f)) for f in frames])


def sample_fcurves(ob, bones: list[str], frames: np.ndarray) -> dict[str, np.ndarray]:
    """World matrices [shape=(F, 4, 4)] of ``bones`` at (fractional) scene ``frames``, by
    forward kinematics from the assigned action's F-curves (see :func:`_fcurve_fast_path_ok`)."""
    frames = np.asarray(frames, dtype=np.float64)
    chain = _chain(ob, bones)
    curves: dict[tuple[str, str, int], object] = {}
    for fc in _fcurves_of(ob):
        dp = fc.data_path
        if dp.startswith('pose.bones["'):
            name, _, prop = dp[len('pose.bones["'):].partition('"].')
            curves[(name, prop, fc.array_index)] = fc
    n = frames.size
    out: dict[str, np.ndarray] = {}
    mats: dict[str, np.ndarray] = {}
    world = np.array(ob.matrix_world, dtype=np.float64)
    for name in chain:
        pb = ob.pose.bones[name]
        bone = pb.bone

        def chan(prop, count, current, name=name):
            vals = np.empty((n, count))
            for i in range(count):
                fc = curves.get((name, prop, i))
                vals[:, i] = _curve_values(fc, frames) if fc is not None else current[i]
            return vals

        loc = chan("location", 3, pb.location)
        scale = chan("scale", 3, pb.scale)
        mode = pb.rotation_mode
        if mode == "QUATERNION":
            rot = rm.quat_to_matrix(chan("rotation_quaternion", 4, pb.rotation_quaternion))
        elif mode == "AXIS_ANGLE":
            aa = chan("rotation_axis_angle", 4, pb.rotation_axis_angle)
            axis = aa[:, 1:] / np.maximum(np.linalg.norm(aa[:, 1:], axis=1, keepdims=True),
                                          1e-12)
            half = aa[:, :1] * 0.5
            rot = rm.quat_to_matrix(np.concatenate([np.cos(half), axis * np.sin(half)], 1))
        else:
            rot = rm.euler_to_matrix(chan("rotation_euler", 3, pb.rotation_euler), mode)
        basis = np.zeros((n, 4, 4))
        basis[:, :3, :3] = rot * scale[:, None, :]
        if not bone.use_connect:
            basis[:, :3, 3] = loc
        basis[:, 3, 3] = 1.0
        rest = np.array(bone.matrix_local, dtype=np.float64)
        if bone.parent is None:
            m = rest @ basis
        else:
            prest = np.array(bone.parent.matrix_local, dtype=np.float64)
            m = mats[bone.parent.name] @ (np.linalg.inv(prest) @ rest) @ basis
        mats[name] = m
        if name in bones:
            out[name] = world @ m
    return out


def sample_depsgraph(ob, bones: list[str], frames: np.ndarray) -> dict[str, np.ndarray]:
    """World matrices [shape=(F, 4, 4)] of ``bones`` via ``scene.frame_set`` (any rig)."""
    scene = bpy.context.scene
    saved = (scene.frame_current, scene.frame_subframe)
    out = {b: np.empty((len(frames), 4, 4)) for b in bones}
    try:
        for k, f in enumerate(np.asarray(frames, dtype=np.float64)):
            fi = math.floor(f)
            scene.frame_set(int(fi), subframe=float(f - fi))
            ev = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
            world = np.array(ev.matrix_world, dtype=np.float64)
            for b in bones:
                out[b][k] = world @ np.array(ev.pose.bones[b].matrix, dtype=np.float64)
    finally:
        scene.frame_set(saved[0], subframe=saved[1])
    return out


def canonical_arrays(ob, bone_map: dict[str, str], frames: np.ndarray, *,
                     method: str = "auto") -> tuple[np.ndarray, np.ndarray, str]:
    """Raw world joint positions [(F, J, 3)] and bone orientations [(F, J, 3, 3)] of the
    canonical joints of ``ob`` at scene ``frames``, plus the sampler used."""
    bones = sorted({split_ref(ref)[0] for ref in bone_map.values()})
    why = _fcurve_fast_path_ok(ob, _chain(ob, bones)) if method != "depsgraph" else "asked"
    if method == "fcurves" and why is not None:
        raise M2DError(f"cannot sample '{ob.name}' from F-curves: {why}")
    if why is None:
        mats, used = sample_fcurves(ob, bones, frames), "fcurves"
    else:
        log.debug("%s: depsgraph sampling (%s)", ob.name, why)
        mats, used = sample_depsgraph(ob, bones, frames), "depsgraph"
    n = len(frames)
    pos = np.empty((n, len(CANON_JOINTS), 3))
    rot = np.empty((n, len(CANON_JOINTS), 3, 3))
    for j, joint in enumerate(CANON_JOINTS):
        bone, tail = split_ref(bone_map[joint])
        m = mats[bone]
        if tail:
            length = ob.data.bones[bone].length
            pos[:, j] = (m @ np.array([0.0, length, 0.0, 1.0]))[:, :3]
        else:
            pos[:, j] = m[:, :3, 3]
        rot[:, j] = rm.orthonormalize(m[:, :3, :3])
    return pos, rot, used


# --- the take ------------------------------------------------------------------------------------

def _bone_parents(ob) -> dict[str, str | None]:
    return {b.name: (b.parent.name if b.parent else None) for b in ob.data.bones}


def source_rest_rig(ob, bone_map: dict[str, str]) -> TargetRig:
    """The rest pose of a source armature's mapped bones in world space (tails for ``@tail``)."""
    w = np.array(ob.matrix_world, dtype=np.float64)
    wr = rm.orthonormalize(w[:3, :3])
    heads = np.zeros((N_JOINTS, 3))
    rots = np.tile(np.eye(3), (N_JOINTS, 1, 1))
    tails = np.zeros((N_JOINTS, 3))
    for j, joint in enumerate(CANON_JOINTS):
        bone, tail = split_ref(bone_map[joint])
        b = ob.data.bones[bone]
        m = np.array(b.matrix_local, dtype=np.float64)
        point = np.array(b.tail_local) if tail else m[:3, 3]
        heads[j] = (w @ np.append(point, 1.0))[:3]
        rots[j] = wr @ rm.orthonormalize(m[:3, :3])
        tails[j] = rots[j][:, 1]
    return TargetRig(tuple(range(N_JOINTS)), heads, rots, tails)


def _choose_units(leg_raw: float, units: str) -> tuple[str, float]:
    if units != "auto":
        for name, scale in UNIT_CANDIDATES:
            if units == name:
                return name, scale
        try:
            value = float(units)
        except ValueError:
            raise M2DError(f"unknown unit {units!r}: use auto, m, cm, mm, in, dm or a number "
                           "(metres per file unit)") from None
        if not value > 0:
            raise M2DError(f"unit scale must be positive, got {units!r}")
        return f"x{value:g}", value
    if not leg_raw > 0:
        raise M2DError("the skeleton has zero leg length; cannot find its units")
    plausible = [(abs(math.log(leg_raw * s / NORMAL_LEG_M)), name, s)
                 for name, s in UNIT_CANDIDATES if ADULT_LEG_M[0] <= leg_raw * s <= ADULT_LEG_M[1]]
    if plausible:
        _, name, s = min(plausible)
        return name, s
    return "normalised by leg length", NORMAL_LEG_M / leg_raw


def check_bvh(path: str | os.PathLike) -> BvhHeader:
    """Header of a BVH take, or :class:`M2DError` if it is truncated or too short."""
    hdr = read_bvh_header(path)
    if hdr.truncated or hdr.partial_line:
        raise M2DError(f"truncated BVH: declares {hdr.frames_declared} frames but holds "
                       f"{hdr.frames_complete} complete frame lines"
                       + (" and a partial one" if hdr.partial_line else ""), path=path)
    if hdr.frames_complete < 2:
        raise M2DError("BVH holds fewer than 2 frames: no animation", path=path)
    if hdr.frames_nonfinite:
        # Blender's importer turns NaN rotations into zeros: glitch frames in the library
        raise M2DError(f"BVH holds NaN or infinite values in {hdr.frames_nonfinite} of "
                       f"{hdr.frames_complete} frames (the first is frame "
                       f"{hdr.first_nonfinite + 1}); fix or re-export the take", path=path)
    return hdr


def import_take(path: str | os.PathLike, *, rig=None, fps: float = 30.0, units: str = "auto",
                name: str | None = None, source_label: str | None = None,
                sampler: str = "auto", keep: bool = False,
                header: BvhHeader | None = None) -> Take:
    """Import one BVH/FBX take with Blender's importer into canonical, normalised motion.

    Parameters
    ----------
    rig : str | dict | None
        Bone map of the take's skeleton: preset name, JSON path, dict, or None (auto-detect).
    fps : float
        Library frame rate; the take is sampled at ``k / fps`` seconds.
    units : str
        ``"auto"`` (by leg length), ``"m"``, ``"cm"``, ``"mm"``, ``"in"``, ``"dm"`` or metres per
        file unit.
    keep : bool
        Keep the imported armature and action in the file (default: remove them).
    header : BvhHeader, optional
        The result of :func:`check_bvh` when the caller already has it.

    Raises :class:`M2DError` for unreadable, truncated or unrecognised takes.
    """
    path = Path(path)
    if not path.is_file():
        raise M2DError("no such file", path=path)
    ext = path.suffix.lower()
    if ext not in SUPPORTED:
        raise M2DError(f"unsupported file type {ext!r} (use .bvh or .fbx)", path=path)
    if not fps > 0:
        raise M2DError(f"fps must be positive, got {fps}")
    hdr = (header or check_bvh(path)) if ext == ".bvh" else None
    if hdr is not None and header is None:
        # validate the bone map on the header before importing anything
        parents = {n: (hdr.joints[p] if p >= 0 else None)
                   for n, p in zip(hdr.joints, hdr.parents)}
        bone_map_for(hdr.joints, rig, parents=parents, role="source",
                     rig_label=f"'{path.name}'", path=path)
    before = _id_snapshot()
    view_layer = bpy.context.view_layer
    was_active = view_layer.objects.active
    was_selected = {o.as_pointer() for o in view_layer.objects if o.select_get()}
    try:
        if hdr is not None:
            ob = _import_bvh(path)
            src_fps = hdr.fps
            if ob is None or ob.type != "ARMATURE":
                raise M2DError("Blender's BVH importer made no armature", path=path)
        else:
            try:
                arms, src_fps = _import_fbx(path, before)
            except RuntimeError as err:
                raise M2DError(f"Blender's FBX importer failed: {str(err).splitlines()[-1]}",
                               path=path) from err
            if not arms:
                raise M2DError("FBX file has no armature", path=path)
            animated = [a for a in arms if _action_range(a) is not None]
            if not animated:
                raise M2DError("FBX file has an armature but no animation", path=path)
            ob = max(animated, key=lambda a: len(a.data.bones))
        rng = _action_range(ob)
        if rng is None:
            raise M2DError("the imported armature has no animation", path=path)
        mapping, label = bone_map_for([b.name for b in ob.data.bones], rig,
                                      parents=_bone_parents(ob), role="source",
                                      rig_label=f"'{path.name}'", path=path)
        first, last = rng
        src_frames = round(last - first) + 1 if hdr is None else hdr.frames_complete
        duration_s = (src_frames - 1) / src_fps
        n = math.floor(duration_s * fps + 1e-6) + 1
        frames = first + np.arange(n) / fps * src_fps
        raw_pos, raw_rot, used = canonical_arrays(ob, mapping, frames, method=sampler)
        rest_rig = source_rest_rig(ob, mapping)
        scene_scale = float(np.mean(np.array(ob.matrix_world.to_scale())))
    finally:
        if not keep:
            remove_new_ids(before)
            # the importers make their armature the only selected, active object
            for o in view_layer.objects:
                if o is not None:       # removed objects linger as None until an update
                    o.select_set(o.as_pointer() in was_selected)
            view_layer.objects.active = was_active
    notes = []
    # 1. root offset fix (BVH roots stored relative to OFFSET)
    fix = False
    shift = np.zeros(3)
    if hdr is not None and any(abs(v) > 0 for v in hdr.root_offset):
        ox, oy, oz = hdr.root_offset
        cand = np.array([ox, -oz, oy]) * scene_scale
        low = np.median(raw_pos[..., 2].min(axis=1))
        if abs(low + cand[2]) < abs(low):
            fix, shift = True, cand
            raw_pos = raw_pos + shift
            notes.append("root position read relative to the root OFFSET")
    # 2. units
    unit_name, unit_scale = _choose_units(leg_length(raw_pos), units)
    pos = raw_pos * unit_scale
    # 3. floor
    feet = [JOINT_INDEX[k] for k in ("LeftFoot", "RightFoot", "LeftToes", "RightToes")]
    floor = float(np.percentile(pos[:, feet, 2].min(axis=1), 1))
    # 4. start pose: face -Y, hips above the origin
    j = JOINT_INDEX
    left = (pos[0, j["LeftUpperLeg"]] - pos[0, j["RightUpperLeg"]]
            + pos[0, j["LeftUpperArm"]] - pos[0, j["RightUpperArm"]])
    yaw = -math.atan2(left[1], left[0])
    rz = rm.yaw_matrix(yaw)
    pos = pos @ rz.T
    translation = np.array([-pos[0, 0, 0], -pos[0, 0, 1], -floor])
    pos = pos + translation
    rot, from_rest = canonical_rotations(rz[None, None] @ raw_rot, pos,
                                         rest_offsets=rest_offsets(rest_rig))
    if not from_rest.all():
        notes.append("rest pose not usable for joints "
                     + ", ".join(CANON_JOINTS[j] for j in np.flatnonzero(~from_rest))
                     + "; their twist reference was estimated from the motion")
    take = Take(
        name=name or path.stem, source=source_label or path.name, fmt=ext[1:],
        src_fps=float(src_fps), src_frames=src_frames, fps=float(fps), positions=pos,
        rotations=rot, rig=label, bone_map=mapping, units=unit_name,
        unit_scale=float(unit_scale), root_offset_fix=fix, yaw_rad=float(yaw),
        translation_m=translation, sampler=used, notes=notes, root_shift=shift)
    return take
