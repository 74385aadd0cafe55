"""Put a :class:`~blender_m2d.core.plan.Plan` on an armature's NLA (bpy).

What :func:`apply_plan` builds (the crossfade recipe verified in ``../shared/notes/blender.md``,
section 3):

* one Action per placed phrase (:func:`blender_m2d.retarget.write_action` of the canonical
  motion from :func:`blender_m2d.core.placement.place_all`: beat-warped, root-aligned,
  feet handled), keyed on every scene frame of its strip, named ``"m2d 003 <phrase id>"`` and
  tagged with the custom property ``m2d_owner``;
* two NLA tracks on top of the armature's stack, ``"m2d A"`` (even phrases: full influence,
  ``HOLD_FORWARD``, no blends) and ``"m2d B"`` above it (odd phrases: ``REPLACE``, blend in and
  out over the crossfade, ``NOTHING`` outside), so only the upper strip ever fades and the pose
  never dips toward rest; quaternion curves are sign-aligned with the previous phrase at each
  crossfade and Euler curves unwrapped to it, because the NLA blends channel by channel;
* the song as a sound strip ``"m2d song"`` in the sequencer, timeline markers ``"m2d beat N"``
  on every music beat and ``"m2d phrase N <id>"`` on every phrase start, and the scene's frame
  range set to the song.

Nothing of the user's is touched: their tracks, strips, actions, markers and sequencer strips
stay as they are (an active action of theirs stays assigned and overrides our tracks on the
channels it animates; a warning says so). Re-applying replaces our previous tracks, strips,
actions, sound strip and markers. The new tracks and actions are built first and the old ones
removed only when everything succeeded, so any error leaves the armature as it was.

Metrics (:func:`evaluate_plan`) are computed from the evaluated animation: by default with
:func:`evaluate_rig`, a numpy re-implementation of exactly what Blender evaluates for this
setup (our two tracks, linear keys on whole frames, pose-bone FK), proven equal to the depsgraph
by ``tests/blender/test_choreograph.py``; when anything else could influence the pose (an
active action, other tracks above ours, constraints, drivers, non-default inheritance) the
depsgraph itself is sampled frame by frame instead.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import bpy
import numpy as np

from . import compat
from .core import metrics as M
from .core import placement as P
from .core import rigmath as rm
from .core.editing import DanceBeatTrack
from .core.errors import M2DError
from .core.motion import detect_dance_beats
from .core.phrasing import BEAT_DERIVATIVES
from .core.plan import Plan
from .core.retargeting import leg_length
from .core.skeleton import CANON_JOINTS, FEET, ROOT

log = logging.getLogger(__name__)

TRACK_LOWER = "m2d A"
TRACK_UPPER = "m2d B"
SOUND_STRIP = "m2d song"
MARKER_PREFIX = "m2d "
OWNER_PROP = "m2d_owner"
OWNER = "blender_m2d"
ANIMDATA_PROP = "m2d_made_animdata"
"""Action custom property: set on our actions when :func:`apply_plan` had to create the
armature's AnimData, so :func:`remove_plan` removes it again (when nothing else uses it)."""

_PATH_RE = re.compile(r'^pose\.bones\["((?:[^"\\]|\\.)*)"\]\.(\w+)$')


# =========================================================================== small helpers
def scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base


def is_ours(idblock_or_track) -> bool:
    """True for tracks/actions/strips blender_m2d created."""
    name = getattr(idblock_or_track, "name", "")
    if isinstance(idblock_or_track, bpy.types.NlaTrack):
        return name in (TRACK_LOWER, TRACK_UPPER) or name.startswith(MARKER_PREFIX)
    try:
        return idblock_or_track.get(OWNER_PROP) == OWNER
    except (AttributeError, TypeError):
        return False


def _action_name(index: int, phrase_id: str) -> str:
    name = f"m2d {index:03d} {phrase_id}"
    return name if len(name.encode("utf-8")) <= 63 else name.encode("utf-8")[:63].decode(
        "utf-8", "ignore")


def _sequences(se):
    """Top-level sequencer strips (``strips`` on 4.4+, ``sequences`` on 4.2)."""
    return se.strips if hasattr(se, "strips") else se.sequences


# =========================================================================== channels
@dataclass
class ActionChannels:
    """Keyed values of one of our actions on whole frames ``frame_start..frame_end``."""

    frame_start: int
    frame_end: int
    channels: dict[tuple[str, str], np.ndarray]
    """``(bone, property) -> (n_frames, dim)`` values."""


def read_action(action, frame_start: int, frame_end: int) -> ActionChannels:
    """Read all pose-bone F-curves of ``action`` as arrays on frames ``frame_start..frame_end``.

    Keys on exactly those whole frames (what :func:`blender_m2d.retarget.write_action` writes
    for a motion at the scene rate) are read directly; anything else is sampled with
    ``fcurve.evaluate``.
    """
    return _read_action(action, frame_start, frame_end)[0]


def _read_action(action, frame_start: int, frame_end: int) -> tuple[ActionChannels, bool]:
    """:func:`read_action` and whether every curve has its keys exactly on those frames."""
    n = frame_end - frame_start + 1
    frames = np.arange(frame_start, frame_end + 1, dtype=np.float64)
    exact = True
    out: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    for fc in compat.action_fcurves(action, None, create=False) or ():
        m = _PATH_RE.match(fc.data_path)
        if not m:
            continue
        bone, prop = m.group(1).replace('\\"', '"'), m.group(2)
        kp = fc.keyframe_points
        co = np.empty(2 * len(kp), np.float64)
        kp.foreach_get("co", co)
        t, v = co[0::2], co[1::2]
        if t.size == n and abs(t[0] - frame_start) <= 1e-4 and abs(t[-1] - frame_end) <= 1e-4 \
                and np.all(np.abs(t - frames) <= 1e-4):
            vals = v
            exact = exact and bool(np.array_equal(t, frames))
        else:
            vals = np.array([fc.evaluate(f) for f in frames])
            exact = False
        out.setdefault((bone, prop), {})[fc.array_index] = vals
    channels = {}
    for key, comps in out.items():
        dim = max(comps) + 1
        arr = np.zeros((n, dim))
        for i, v in comps.items():
            arr[:, i] = v
        channels[key] = arr
    return ActionChannels(frame_start, frame_end, channels), exact


def _write_channel(action, bone: str, prop: str, values: np.ndarray) -> None:
    """Overwrite the key values (not times) of one channel of ``action``."""
    fcs = compat.action_fcurves(action, None, create=False)
    for i in range(values.shape[1]):
        fc = fcs.find(f'pose.bones["{bone}"].{prop}', index=i)
        if fc is None:
            continue
        kp = fc.keyframe_points
        co = np.empty(2 * len(kp), np.float64)
        kp.foreach_get("co", co)
        co[1::2] = values[:, i]
        kp.foreach_set("co", co.astype(np.float32))
        fc.update()


def align_channels(prev: ActionChannels, nxt: ActionChannels, action, frame: int) -> int:
    """Make ``nxt``'s rotation channels blend correctly with ``prev``'s at scene ``frame``:
    flip quaternion curves into the hemisphere of ``prev``'s value there, shift Euler curves by
    whole turns to within half a turn of it. Edits ``action`` (and ``nxt``); returns the number
    of curves changed."""
    changed = 0
    ia, ib = frame - prev.frame_start, frame - nxt.frame_start
    for (bone, prop), vals in nxt.channels.items():
        ref = prev.channels.get((bone, prop))
        if ref is None or not (0 <= ia < len(ref)) or not (0 <= ib < len(vals)):
            continue
        if prop == "rotation_quaternion":
            if float(np.dot(ref[ia], vals[ib])) < 0:
                vals *= -1.0
                _write_channel(action, bone, prop, vals)
                changed += 1
        elif prop == "rotation_euler":
            k = np.round((ref[ia] - vals[ib]) / math.tau)
            if np.any(k != 0):
                vals += k[None, :] * math.tau
                _write_channel(action, bone, prop, vals)
                changed += 1
    return changed


# =========================================================================== rig evaluation
@dataclass
class RigModel:
    """What FK needs about an armature, read once from bpy."""

    names: tuple[str, ...]            # bones, parents first
    parent: np.ndarray                # index into names, -1 for roots
    rest: np.ndarray                  # (B, 4, 4) bone.matrix_local
    length: np.ndarray                # (B,)
    modes: tuple[str, ...]            # pose-bone rotation modes
    defaults: dict[tuple[str, str], np.ndarray]   # current pose values of every channel
    world: np.ndarray                 # (4, 4) object matrix_world

    @classmethod
    def of(cls, ob) -> RigModel:
        """The model of ``ob``; the bone topology and rest pose are cached per armature (and
        rebuilt when they change), the pose's current channel values and the object matrix
        are read every time."""
        pbones = ob.pose.bones
        nb = len(pbones)
        key = ob.as_pointer()
        fp = _rig_fingerprint(ob)
        hit = _RIG_CACHE.get(key)
        if hit is None or hit[0] != fp:
            bones = list(ob.data.bones)
            depth = {}
            for b in bones:
                d, p = 0, b.parent
                while p is not None:
                    d, p = d + 1, p.parent
                depth[b.name] = d
            bones.sort(key=lambda b: depth[b.name])
            names = tuple(b.name for b in bones)
            idx = {n: i for i, n in enumerate(names)}
            parent = np.array([idx[b.parent.name] if b.parent else -1 for b in bones])
            rest = np.array([np.array(b.matrix_local) for b in bones], dtype=np.float64)
            length = np.array([b.length for b in bones], dtype=np.float64)
            order = np.array([idx[pb.name] for pb in pbones], dtype=np.int64)
            offs = np.tile(np.eye(4), (len(names), 1, 1))
            for i, p in enumerate(parent):
                if p >= 0:
                    offs[i] = rm.rigid_inverse(rest[p]) @ rest[i]
            for arr in (parent, rest, length, offs):
                arr.flags.writeable = False
            if len(_RIG_CACHE) > 32:
                _RIG_CACHE.clear()
            _RIG_CACHE[key] = (fp, (names, parent, rest, length, order, offs))
            hit = _RIG_CACHE[key]
        names, parent, rest, length, order, offs = hit[1]
        modes = [""] * nb
        for pb, i in zip(pbones, order):
            modes[i] = pb.rotation_mode
        defaults, stacks = {}, {}
        for prop, dim in (("location", 3), ("rotation_quaternion", 4), ("rotation_euler", 3),
                          ("rotation_axis_angle", 4), ("scale", 3)):
            buf = np.empty(nb * dim, np.float32)
            pbones.foreach_get(prop, buf)
            vals = np.empty((nb, dim))
            vals[order] = buf.reshape(nb, dim)
            stacks[prop] = vals
            for i, name in enumerate(names):
                defaults[(name, prop)] = vals[i]
        model = cls(names, parent, rest, length, tuple(modes), defaults,
                    np.array(ob.matrix_world, dtype=np.float64))
        model._offs = offs
        model._stacks = stacks
        return model

    def parent_offsets(self) -> np.ndarray:
        """``parent_rest^-1 @ rest`` per bone [shape=(B, 4, 4)] (identity for roots)."""
        offs = getattr(self, "_offs", None)
        if offs is None:
            offs = np.tile(np.eye(4), (len(self.names), 1, 1))
            for i, p in enumerate(self.parent):
                if p >= 0:
                    offs[i] = rm.rigid_inverse(self.rest[p]) @ self.rest[i]
            self._offs = offs
        return offs

    def pose_matrices(self, channels: Mapping[tuple[str, str], np.ndarray], n: int,
                      bones: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Armature-space pose matrices [shape=(n, 4, 4)] per bone from channel values
        (missing channels take the pose's current values), as Blender's pose evaluation does:
        ``pose = parent_pose @ parent_rest^-1 @ rest @ T(loc) @ R(rot) @ S(scale)``.

        Every bone's basis is computed at once and the chain is walked one depth level of the
        hierarchy at a time (every frame and bone is computed exactly as it would be alone)."""
        want = None
        if bones is not None:
            want = set()
            for b in bones:
                i = self.names.index(b)
                while i >= 0:
                    want.add(i)
                    i = int(self.parent[i])
        idx = [i for i in range(len(self.names)) if want is None or i in want]
        if not idx:
            return {}
        if n > _POSE_CHUNK:            # in cache-sized pieces of frames
            out = {self.names[i]: np.empty((n, 4, 4)) for i in idx}
            names = [self.names[i] for i in idx]
            for f0 in range(0, n, _POSE_CHUNK):
                f1 = min(f0 + _POSE_CHUNK, n)
                part = self.pose_matrices({k: v[f0:f1] for k, v in channels.items()}, f1 - f0,
                                          bones=names)
                for name, m in part.items():
                    out[name][f0:f1] = m
            return out
        nb = len(idx)
        stacks = getattr(self, "_stacks", None) or {}

        def stacked(prop, dim):
            """[shape=(nb, n, dim)] channel values of the wanted bones."""
            base = stacks.get(prop)
            if base is None:
                base = np.array([self.defaults[(self.names[i], prop)][:dim] for i in
                                 range(len(self.names))]).reshape(len(self.names), dim)
            out = np.empty((nb, n, dim))
            out[:] = base[idx, None, :dim]
            for k, i in enumerate(idx):
                v = channels.get((self.names[i], prop))
                if v is not None:
                    out[k] = v
            return out

        rot = np.empty((nb, n, 3, 3))
        quat = [k for k, i in enumerate(idx) if self.modes[i] == "QUATERNION"]
        if quat:
            q = stacked("rotation_quaternion", 4)[quat]
            rot[quat] = rm.quat_to_matrix(rm.quat_normalize(q))
        for k, i in enumerate(idx):
            mode = self.modes[i]
            if mode == "QUATERNION":
                continue
            name = self.names[i]
            if mode == "AXIS_ANGLE":
                aa = channels.get((name, "rotation_axis_angle"))
                if aa is None:
                    aa = np.broadcast_to(self.defaults[(name, "rotation_axis_angle")][:4], (n, 4))
                axis = aa[:, 1:] / np.maximum(np.linalg.norm(aa[:, 1:], axis=1, keepdims=True),
                                              1e-12)
                half = aa[:, 0] * 0.5
                qa = np.concatenate([np.cos(half)[:, None], axis * np.sin(half)[:, None]], axis=1)
                rot[k] = rm.quat_to_matrix(qa)
            else:
                e = channels.get((name, "rotation_euler"))
                if e is None:
                    e = np.broadcast_to(self.defaults[(name, "rotation_euler")][:3], (n, 3))
                rot[k] = rm.euler_to_matrix(e, mode)
        basis = np.zeros((nb, n, 4, 4))
        basis[..., :3, :3] = rot * stacked("scale", 3)[..., None, :]
        basis[..., :3, 3] = stacked("location", 3)
        basis[..., 3, 3] = 1.0
        offs = self.parent_offsets()
        pos_of = {i: k for k, i in enumerate(idx)}
        mats = np.empty((nb, n, 4, 4))
        depth = {}
        for k, i in enumerate(idx):               # parents come first in names
            p = int(self.parent[i])
            depth[k] = 0 if p < 0 else depth[pos_of[p]] + 1
        for d in range(max(depth.values()) + 1):
            ks = [k for k in range(nb) if depth[k] == d]
            if d == 0:
                mats[ks] = self.rest[[idx[k] for k in ks]][:, None] @ basis[ks]
            else:
                par = [pos_of[int(self.parent[idx[k]])] for k in ks]
                mats[ks] = mats[par] @ offs[[idx[k] for k in ks]][:, None] @ basis[ks]
        return {self.names[i]: mats[k] for k, i in enumerate(idx)}


_POSE_CHUNK = 256
"""Frames per piece in :meth:`RigModel.pose_matrices` (all bones of a piece at once)."""
_RIG_CACHE: dict[int, tuple] = {}
"""armature object pointer -> (fingerprint, static part of its :class:`RigModel`)."""


def _rig_fingerprint(ob) -> tuple:
    bones = ob.data.bones
    mats = np.empty(16 * len(bones), np.float64)
    bones.foreach_get("matrix_local", mats)
    lengths = np.empty(len(bones), np.float64)
    bones.foreach_get("length", lengths)
    return (ob.name, ob.data.name,
            tuple((b.name, b.parent.name if b.parent else None) for b in bones),
            tuple(pb.name for pb in ob.pose.bones), mats.tobytes(), lengths.tobytes())


def rig_is_plain(ob) -> tuple[bool, str]:
    """Whether :func:`evaluate_rig` reproduces Blender exactly for ``ob`` (and why not)."""
    ad = ob.animation_data
    if ad is not None and ad.action is not None:
        return False, f"the armature has an active action '{ad.action.name}'"
    if ad is not None:
        ours = False
        for t in ad.nla_tracks:
            if is_ours(t):
                ours = True
            elif ours and not t.mute and len(t.strips):
                return False, f"track '{t.name}' lies above the dance tracks"
        if len(ad.drivers):
            return False, "the armature has drivers"
    for pb in ob.pose.bones:
        if len(pb.constraints):
            return False, f"bone '{pb.name}' has constraints"
        b = pb.bone
        if not b.use_inherit_rotation or getattr(b, "inherit_scale", "FULL") != "FULL":
            return False, f"bone '{b.name}' does not inherit its parent's full transform"
        if b.use_connect and np.any(np.abs(np.array(pb.location)) > 0):
            return False, f"connected bone '{b.name}' has a location offset"
    if ob.parent is not None or len(ob.constraints):
        return False, "the armature object is parented or constrained"
    return True, ""


def blend_channels(layers: Sequence[ActionChannels], *, xf_frames: int, frame_first: int,
                   frame_last: int) -> dict[tuple[str, str], np.ndarray]:
    """The NLA result of our two tracks per channel on frames ``frame_first..frame_last``.

    ``layers[i]`` is phrase i (even: lower track, held forward; odd: upper track, linear blend
    in/out over ``xf_frames``, nothing outside). Channels are mixed linearly with the upper
    strip's influence, as Blender's NLA does for ``REPLACE`` strips (quaternions component-wise;
    the pose normalises them); a channel the active strip of a track does not animate takes its
    default there (what Blender does), not a held value. All channels are handled as one
    array (columns), each value computed as it would be alone.
    """
    frames = np.arange(frame_first, frame_last + 1)
    n = frames.size
    dims: dict[tuple[str, str], int] = {}
    for lay in layers:
        for k, v in lay.channels.items():
            dims[k] = v.shape[1]
    keys = tuple(dims)
    cols = np.cumsum([0] + [dims[k] for k in keys])
    lower = np.full((n, int(cols[-1])), np.nan)
    upper = lower.copy()
    w = np.zeros(n)
    last = len(layers) - 1
    for i, lay in enumerate(layers):
        vals = _stacked(lay, keys, dims)
        if i % 2 == 0:
            # the track's active strip alone decides: a channel it does not animate is not
            # held from an earlier strip but falls back to its default
            sel = frames >= lay.frame_start
            idx = np.clip(frames[sel] - lay.frame_start, 0, lay.frame_end - lay.frame_start)
            lower[sel] = vals[idx]
        else:
            sel = (frames >= lay.frame_start) & (frames <= lay.frame_end)
            f = frames[sel]
            upper[sel] = vals[f - lay.frame_start]
            infl = np.ones(f.size)
            if i > 0:
                infl = np.minimum(infl, (f - lay.frame_start) / xf_frames)
            if i < last:
                infl = np.minimum(infl, (lay.frame_end - f) / xf_frames)
            w[sel] = np.clip(infl, 0.0, 1.0)
    default = np.concatenate([_channel_default(k[1], dims[k]) for k in keys]) if keys \
        else np.zeros(0)
    lo = np.where(np.isnan(lower), default, lower)
    up = np.where(np.isnan(upper), lo, upper)
    res = (1.0 - w)[:, None] * lo + w[:, None] * up
    return {k: res[:, cols[j]:cols[j + 1]] for j, k in enumerate(keys)}


def _stacked(lay: ActionChannels, keys: tuple, dims: Mapping[tuple[str, str], int]) -> np.ndarray:
    """``lay``'s channels ``keys`` side by side [shape=(frames, sum of dims)] (NaN where it has
    no such channel); kept on a layer of read-only arrays (the cached keys of an action, see
    :func:`_keep_layer`) for the next call with the same keys."""
    hit = getattr(lay, "_stack", None)
    if hit is not None and hit[0] == keys:
        return hit[1]
    frozen = all(not v.flags.writeable for v in lay.channels.values())
    parts = []
    for k in keys:
        v = lay.channels.get(k)
        if v is None or v.shape[1] != dims[k]:
            v = np.full((lay.frame_end - lay.frame_start + 1, dims[k]), np.nan)
        parts.append(np.asarray(v, dtype=np.float64))
    out = np.concatenate(parts, axis=1) if parts else \
        np.zeros((lay.frame_end - lay.frame_start + 1, 0))
    if frozen:
        out.flags.writeable = False
        lay._stack = (keys, out)
    return out


def _channel_default(prop: str, dim: int) -> np.ndarray:
    """What the NLA evaluates a channel to where no strip animates it (the RNA default)."""
    if prop == "rotation_quaternion":
        return np.array([1.0, 0.0, 0.0, 0.0])[:dim]
    if prop == "scale":
        return np.ones(dim)
    if prop == "rotation_axis_angle":
        return np.array([0.0, 0.0, 1.0, 0.0])[:dim]
    return np.zeros(dim)


def joint_positions(model: RigModel, mats: Mapping[str, np.ndarray],
                    bone_map: Mapping[str, str]) -> np.ndarray:
    """World head positions [shape=(F, J, 3)] of the canonical joints (unmapped joints: NaN)."""
    n = next(iter(mats.values())).shape[0]
    out = np.full((n, len(CANON_JOINTS), 3), np.nan)
    for j, joint in enumerate(CANON_JOINTS):
        bone = bone_map.get(joint)
        if bone in mats:
            out[:, j] = (mats[bone][:, :3, 3] @ model.world[:3, :3].T) + model.world[:3, 3]
    return out


def depsgraph_joint_positions(ob, bone_map: Mapping[str, str], frames: Sequence[int],
                              scene=None) -> np.ndarray:
    """World head positions [shape=(F, J, 3)] of the canonical joints from the depsgraph."""
    scene = scene or bpy.context.scene
    keep = scene.frame_current
    out = np.full((len(frames), len(CANON_JOINTS), 3), np.nan)
    try:
        for k, f in enumerate(frames):
            scene.frame_set(int(f))
            dg = bpy.context.evaluated_depsgraph_get()
            ev = ob.evaluated_get(dg)
            mw = np.array(ev.matrix_world)
            for j, joint in enumerate(CANON_JOINTS):
                bone = bone_map.get(joint)
                if bone:
                    h = np.array(ev.pose.bones[bone].head)
                    out[k, j] = mw[:3, :3] @ h + mw[:3, 3]
    finally:
        scene.frame_set(keep)
    return out


# =========================================================================== apply
@dataclass
class AppliedPlan:
    """Result of :func:`apply_plan`."""

    plan: Plan
    actions: list = field(default_factory=list)
    placed: list = field(default_factory=list)
    bone_map: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    evaluation: str = ""
    positions: np.ndarray | None = None
    """World joint positions [shape=(F, J, 3)] of the evaluated animation (frames
    ``plan.frame_start..plan.frame_end``)."""


def _write(retarget, armature_ob, pm, **kw):
    """``retarget.write_action`` with the same channels for every phrase: location keys only on
    the root (``slack_m=0``), because a channel that one phrase animates and the next does not
    falls back to its default in the NLA and pops at the seam."""
    import inspect

    if "slack_m" in inspect.signature(retarget.write_action).parameters:
        kw["slack_m"] = 0.0
    return retarget.write_action(armature_ob, pm, **kw)


def write_actions(armature_ob, placed, *, bone_map, fps: float, scale: float
                  ) -> tuple[list, list[ActionChannels]]:
    """One Action per placed phrase and its channel values (as keyed, float32).

    Solves the retarget once for all phrases together (:func:`blender_m2d.retarget.solve_pose`
    on the concatenated frames, which is what :func:`~blender_m2d.retarget.write_action` does
    per phrase) and writes each phrase's slice; falls back to one ``write_action`` per phrase
    (then reads the keys back) when the retarget module lacks the pieces. Every action gets the
    same channels: rotations of the keyed bones, the root's location, zero locations of
    unmapped free bones.
    """
    from . import retarget
    from .core.library import PhraseMotion

    needed = ("solve_pose", "rotation_channels", "_write_curves")
    if not all(hasattr(retarget, n) for n in needed):
        acts = [_write(retarget, armature_ob, pm, name=_action_name(pm.index, pm.phrase_id),
                       bone_map=bone_map, frame_start=float(pm.frame_start), fps=fps,
                       scale=scale) for pm in placed]
        return acts, [read_action(a, pm.frame_start, pm.frame_end) for a, pm in zip(acts, placed)]
    import inspect

    kw = {"scale": scale}
    if "slack_m" in inspect.signature(retarget.solve_pose).parameters:
        kw["slack_m"] = 0.0
    motion = PhraseMotion(fps, np.concatenate([pm.positions for pm in placed]).astype(np.float32),
                          np.concatenate([pm.rotations for pm in placed]).astype(np.float32))
    solved = retarget.solve_pose(armature_ob, motion, bone_map, **kw)
    rot = retarget.rotation_channels(armature_ob, solved["basis"], solved["keyed"])
    root = solved["root"]
    free = [b for b in solved["keyed"] if (root is None or b != root[0])
            and b not in solved["mapped"] and not armature_ob.data.bones[b].use_connect]
    bounds = np.cumsum([0] + [pm.n_frames for pm in placed])
    acts, layers = [], []
    try:
        for pm, a, b in zip(placed, bounds[:-1], bounds[1:]):
            times = pm.frame_start + np.arange(pm.n_frames, dtype=np.float64)
            act, slot = compat.new_action(_action_name(pm.index, pm.phrase_id))
            acts.append(act)
            channels = {}
            for bone, (prop, vals) in rot.items():
                v = vals[a:b]
                retarget._write_curves(act, slot, bone, prop, v, times)
                channels[(bone, prop)] = v.astype(np.float32).astype(np.float64)
            if root is not None:
                v = root[1][a:b]
                retarget._write_curves(act, slot, root[0], "location", v, times)
                channels[(root[0], "location")] = v.astype(np.float32).astype(np.float64)
            for bone in free:
                z = np.zeros((b - a, 3))
                retarget._write_curves(act, slot, bone, "location", z, times)
                channels[(bone, "location")] = z
            act["m2d_scale"] = float(solved["scale"])
            layers.append(ActionChannels(pm.frame_start, pm.frame_end, channels))
    except BaseException:
        for act in acts:
            bpy.data.actions.remove(act)
        raise
    return acts, layers


def _library_motions(library, ids: Sequence[str]) -> tuple[dict, dict]:
    motions, durations = {}, {}
    for pid in dict.fromkeys(ids):
        motions[pid] = library.motion(pid)
        durations[pid] = float(library.phrases[library.index_of(pid)].duration_s)
    return motions, durations


def reference_leg_length(motions: Mapping[str, object]) -> float:
    """Body size every placed phrase is normalised to: the median leg length (hip to ankle, m)
    of the phrases used."""
    legs = [leg_length(np.asarray(m.positions)) for m in motions.values()]
    return float(np.median(legs)) if legs else 1.0


def place_plan(plan: Plan, library, *, options: P.PlacementOptions | None = None,
               motions: Mapping | None = None) -> tuple[list, float]:
    """Canonical placed motions of a plan and the leg length they were normalised to."""
    if options is None:
        opts = plan.placement or {}
        options = P.PlacementOptions(
            crossfade_s=float(opts.get("crossfade_s", P.CROSSFADE_S)),
            rate_range=tuple(opts.get("rate_range", P.RATE_RANGE)),
            feet=str(opts.get("feet", "lock")), root=str(opts.get("root", "hermite")),
            release_s=float(opts.get("release_s", 1.0)),
            contact_m=float(opts.get("contact_m", 0.05)),
            contact_speed_m_s=float(opts.get("contact_speed_m_s", 1.0)))
    if motions is None:
        motions, durations = _library_motions(library, plan.phrase_ids)
    else:
        durations = {pid: float(library.phrases[library.index_of(pid)].duration_s)
                     for pid in plan.phrase_ids}
    ref_leg = reference_leg_length({pid: motions[pid] for pid in plan.phrase_ids})
    placed = P.place_all(plan.phrases, motions, durations, fps=plan.fps,
                         frame_start=plan.frame_start, xf_frames=plan.crossfade_frames,
                         options=options, leg_length_m=ref_leg)
    return placed, ref_leg


def rig_bone_lengths(armature_ob, rig=None) -> tuple[float, ...]:
    """Rest length (m) of the bone from each canonical joint's parent to it on the armature
    (NaN where a joint is not mapped), for :class:`ChoreographyOptions.target_bone_lengths`."""
    from . import retarget
    from .core.skeleton import CANON_PARENTS

    bone_map = retarget.resolve_bone_map(armature_ob, rig)
    target, _ = retarget.target_rig(armature_ob, bone_map)
    out = []
    for j, p in enumerate(CANON_PARENTS):
        if p < 0:
            out.append(0.0)
        elif j in target.joints and p in target.joints:
            out.append(float(np.linalg.norm(target.rest_heads[j] - target.rest_heads[p])))
        else:
            out.append(float("nan"))
    return tuple(out)


def check_plan_fits(plan: Plan, library, scene) -> None:
    if abs(scene_fps(scene) - plan.fps) > 1e-6:
        raise M2DError(f"the plan was made for {plan.fps:g} fps but the scene runs at "
                       f"{scene_fps(scene):g} fps; choreograph again for this scene")
    lib_hash = str(getattr(library, "hash", ""))
    if plan.library.get("hash") and lib_hash and plan.library["hash"] != lib_hash:
        raise M2DError("the plan was made with another dance library (hash mismatch); use the "
                       "library it names or choreograph again",
                       path=plan.library.get("path") or None)
    ids = set(library.ids)
    missing = [p for p in plan.phrase_ids if p not in ids]
    if missing:
        raise M2DError(f"the dance library has no phrase {missing[0]!r} used by the plan")


def check_rig(armature_ob, bone_map: Mapping[str, str]) -> None:
    """Refuse rigs the dance cannot play on, before anything is created: a non-uniform object
    scale (on the armature or a parent: bones would stretch as they rotate) and a hips bone
    connected to its parent (no root motion)."""
    ob = armature_ob
    while ob is not None:
        s = tuple(float(v) for v in ob.scale)
        if max(abs(v) for v in s) - min(abs(v) for v in s) > 1e-4 * max(abs(v) for v in s):
            whose = "" if ob is armature_ob else f"'s parent '{ob.name}'"
            raise M2DError(
                f"armature '{armature_ob.name}'{whose} has a non-uniform scale "
                f"({s[0]:g}, {s[1]:g}, {s[2]:g}): its bones would stretch as they rotate; apply "
                "the scale first (Ctrl+A > Scale in Object mode), a uniform scale is fine")
        ob = ob.parent
    hips = bone_map.get(CANON_JOINTS[ROOT]) if bone_map else None
    bone = armature_ob.data.bones.get(hips) if hips else None
    if bone is not None and bone.use_connect:
        raise M2DError(f"the hips bone '{hips}' is connected to its parent, so it cannot move; "
                       "disconnect it to play root motion")


def apply_plan(armature_ob, plan: Plan, library, *, rig=None, scene=None, sound: bool = True,
               markers: bool = True, evaluate: bool = True,
               options: P.PlacementOptions | None = None,
               progress: Callable[[float, str], None] | None = None) -> AppliedPlan:
    """Place ``plan`` on ``armature_ob`` (see the module docstring).

    Parameters
    ----------
    armature_ob : bpy.types.Object
        The armature to animate.
    plan : Plan
    library : blender_m2d.core.library.Library
        The library the plan was made with.
    rig : str | dict | None
        Bone map: preset name, bone-map JSON path, dict, or None to auto-detect.
    sound, markers : bool
        Add the song as a sound strip / beat and phrase markers.
    evaluate : bool
        Compute the metrics on the evaluated animation and put them in the returned plan.
    options : PlacementOptions, optional
        Override the plan's placement options (e.g. ``feet="none"`` for a plain crossfade).
    """
    from . import retarget

    scene = scene or bpy.context.scene
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def step(name: str, t_start: float) -> float:
        now = time.perf_counter()
        timings[name] = round(timings.get(name, 0.0) + now - t_start, 4)
        if progress is not None:
            progress(0.0, name)
        return now

    # ---- validate everything before touching the scene
    check_plan_fits(plan, library, scene)
    bone_map = retarget.resolve_bone_map(armature_ob, rig)
    check_rig(armature_ob, bone_map)
    if sound:
        song_path = plan.song.get("path")
        if not song_path or not os.path.isfile(song_path):
            raise M2DError("the song file is missing", path=song_path)
    t = step("validate", t0)
    placed, ref_leg = place_plan(plan, library, options=options)
    t = step("placement", t)
    rig_leg = retarget.leg_length_of(armature_ob, bone_map)
    scale = rig_leg / ref_leg if ref_leg > 1e-9 else 1.0

    warnings = []
    ad = armature_ob.animation_data
    if ad is not None and ad.action is not None and not is_ours(ad.action):
        warnings.append(f"armature '{armature_ob.name}' has the active action "
                        f"'{ad.action.name}', which overrides the dance on the channels it "
                        "animates; push it down to the NLA or unassign it to see the dance")
    created_ad = False
    made_ad = ad is None or any(                  # the AnimData is ours (an earlier apply)
        s.action is not None and bool(s.action.get(ANIMDATA_PROP))
        for tr in ad.nla_tracks if is_ours(tr) for s in tr.strips)
    created_actions, new_tracks, layers = [], [], []
    undo_scene = None
    new_song = None
    try:
        created_actions, layers = write_actions(armature_ob, placed, bone_map=bone_map,
                                                fps=plan.fps, scale=scale)
        for act, pm in zip(created_actions, placed):
            act[OWNER_PROP] = OWNER
            act[PLACE_PROP] = _placement_record(pm, ref_leg)
            act[REV_PROP] = _next_rev()
            if made_ad:
                act[ANIMDATA_PROP] = True
        t = step("write_actions", t)
        for i in range(1, len(layers)):
            align_channels(layers[i - 1], layers[i], created_actions[i], placed[i].frame_start)
        for act, lay in zip(created_actions, layers):
            _keep_layer(act, lay)
        t = step("align_channels", t)
        if ad is None:
            ad = armature_ob.animation_data_create()
            created_ad = True
        lower = ad.nla_tracks.new()
        new_tracks.append(lower)
        upper = ad.nla_tracks.new(prev=lower)
        new_tracks.append(upper)
        lower.name, upper.name = TRACK_LOWER + " (new)", TRACK_UPPER + " (new)"
        xf = plan.crossfade_frames
        last = len(placed) - 1
        for i, (act, pm) in enumerate(zip(created_actions, placed)):
            track = lower if i % 2 == 0 else upper
            st = track.strips.new(act.name[:63], int(pm.frame_start), act)
            compat.assign_action(st, act)
            st.blend_type = "REPLACE"
            st.use_auto_blend = False
            if i % 2 == 0:
                st.extrapolation = "HOLD_FORWARD"
                st.blend_in = st.blend_out = 0.0
            else:
                st.extrapolation = "NOTHING"
                st.blend_in = float(xf) if i > 0 else 0.0
                st.blend_out = float(xf) if i < last else 0.0
        t = step("nla", t)
        # ---- sound, markers, frame range: still before the commit, undone on failure
        undo_scene = _SceneUndo.of(scene)
        if sound:
            new_song = _add_song(scene, plan.song["path"], frame_start=plan.frame_start,
                                 name=SOUND_STRIP + " (new)")
        if markers:
            set_markers(scene, plan)
        scene.frame_start = plan.frame_start
        scene.frame_end = plan.frame_end
        t = step("sound_markers", t)
    except BaseException:
        if new_song is not None:
            _remove_sound_strip(scene, new_song)
        if undo_scene is not None:
            undo_scene.restore(scene)
        for tr in new_tracks:
            ad.nla_tracks.remove(tr)
        for act in created_actions:
            bpy.data.actions.remove(act)
        if created_ad:
            armature_ob.animation_data_clear()
        raise

    # ---- commit: drop our previous tracks/actions/song, name the new ones (cannot fail)
    old_actions = []
    for tr in [tr for tr in ad.nla_tracks if is_ours(tr) and tr not in new_tracks]:
        old_actions += [s.action for s in tr.strips if s.action is not None]
        ad.nla_tracks.remove(tr)
    if ad.action is not None and is_ours(ad.action):
        ad.action = None
    for act in old_actions:
        if is_ours(act) and act.users == 0:
            bpy.data.actions.remove(act)
    lower.name, upper.name = TRACK_LOWER, TRACK_UPPER
    if new_song is not None:
        _commit_song(scene, new_song)

    applied = AppliedPlan(plan=plan, actions=created_actions, placed=placed,
                          bone_map=dict(bone_map), warnings=warnings)
    new_plan = dataclasses.replace(
        plan, armature={"name": armature_ob.name, "rig": rig if isinstance(rig, str) else None,
                        "root_scale": round(scale, 6)},
        timings_s={**plan.timings_s, **timings})
    applied.plan = new_plan
    if evaluate:
        t = time.perf_counter()
        applied = evaluate_plan(armature_ob, applied, layers=layers, scene=scene)
        applied.plan = dataclasses.replace(
            applied.plan, timings_s={**applied.plan.timings_s,
                                     "metrics": round(time.perf_counter() - t, 4)})
    for w in warnings:
        log.warning(w)
    return applied


def has_audio() -> bool:
    """Whether this Blender can play sound strips (the bpy 4.2 wheel is built without)."""
    return bool(getattr(bpy.app.build_options, "audaspace", True))


def set_song(scene, path: str, *, frame_start: int = 1):
    """Put the song on the sequencer as ``"m2d song"`` (replacing ours); M2DError if Blender
    cannot read it (ours then stays as it was). Returns None (and logs) on a Blender built
    without audio."""
    st = _add_song(scene, path, frame_start=frame_start, name=SOUND_STRIP + " (new)")
    if st is not None:
        st = _commit_song(scene, st)
    return st


def _add_song(scene, path: str, *, frame_start: int, name: str):
    """A new sound strip ``name`` for ``path`` beside ours (not replacing it yet); M2DError
    (and nothing added) if Blender cannot read the file; None without audio support."""
    if not has_audio():
        log.warning("this Blender has no audio support; the song is not added to the sequencer")
        return None
    se = scene.sequence_editor or scene.sequence_editor_create()
    strips = _sequences(se)
    used = {s.channel for s in strips}
    channel = next(c for c in range(1, 129) if c not in used)
    st = strips.new_sound(name, os.fspath(path), channel, int(frame_start))
    snd = st.sound
    if snd.samplerate == 0 or snd.channels == "INVALID":
        _remove_sound_strip(scene, st)
        raise M2DError("Blender cannot read this audio file", path=path)
    return st


def _remove_sound_strip(scene, st) -> None:
    """Remove sequencer strip ``st`` and its Sound datablock when nothing else uses it."""
    se = scene.sequence_editor
    if se is None:
        return
    snd = getattr(st, "sound", None)
    _sequences(se).remove(st)
    if snd is not None and snd.users == 0:
        bpy.data.sounds.remove(snd)


def _commit_song(scene, new):
    """Replace our previous song strip(s) by ``new``: old strips and their unused sounds
    removed, ``new`` named ``"m2d song"`` (its sound keeps the old sound's name when free) and
    moved to the lowest free channel."""
    strips = _sequences(scene.sequence_editor)
    old_names = []
    for st in [s for s in strips if s.name.startswith(SOUND_STRIP) and s != new]:
        snd = getattr(st, "sound", None)
        if snd is not None:
            old_names.append(snd.name)
        _remove_sound_strip(scene, st)
    new.name = SOUND_STRIP
    snd = new.sound
    if old_names and snd is not None and snd.name != old_names[0] \
            and old_names[0] not in bpy.data.sounds:
        snd.name = old_names[0]
    used = {s.channel for s in strips if s != new}
    channel = next(c for c in range(1, 129) if c not in used)
    if channel < new.channel:
        new.channel = channel
    return new


@dataclass
class _SceneUndo:
    """What the sound/markers step changes besides the new strip: our markers, frame range."""

    markers: list
    frames: tuple[int, int]

    @classmethod
    def of(cls, scene) -> _SceneUndo:
        return cls([(m.name, m.frame, m.select, m.camera) for m in scene.timeline_markers
                    if m.name.startswith(MARKER_PREFIX)], (scene.frame_start, scene.frame_end))

    def restore(self, scene) -> None:
        for m in [m for m in scene.timeline_markers if m.name.startswith(MARKER_PREFIX)]:
            scene.timeline_markers.remove(m)
        for name, frame, select, camera in self.markers:
            m = scene.timeline_markers.new(name, frame=frame)
            m.select, m.camera = select, camera
        start, end = self.frames
        if start > scene.frame_end:
            scene.frame_end = end
            scene.frame_start = start
        else:
            scene.frame_start = start
            scene.frame_end = end


def set_markers(scene, plan: Plan) -> None:
    """Beat and phrase markers (ours replaced, the user's kept)."""
    for m in [m for m in scene.timeline_markers if m.name.startswith(MARKER_PREFIX)]:
        scene.timeline_markers.remove(m)
    for n, b in enumerate(plan.beats_s, start=1):
        m = scene.timeline_markers.new(f"{MARKER_PREFIX}beat {n}",
                                       frame=round(plan.frame_start + b * plan.fps))
        m.select = False
    for ph in plan.phrases:
        name = f"{MARKER_PREFIX}phrase {ph.index + 1} {ph.phrase_id}"[:63]
        m = scene.timeline_markers.new(
            name, frame=round(plan.frame_start + ph.music_start_s * plan.fps))
        m.select = False


def remove_plan(armature_ob, scene=None) -> None:
    """Remove everything :func:`apply_plan` added (tracks, actions, sound strip and its sound,
    markers, and the armature's AnimData when :func:`apply_plan` created it and nothing else
    is left in it) and put the pose channels only our actions drove back to rest (the frame
    range stays set to the song)."""
    scene = scene or bpy.context.scene
    ad = armature_ob.animation_data
    if ad is not None:
        acts = []
        for tr in [tr for tr in ad.nla_tracks if is_ours(tr)]:
            acts += [s.action for s in tr.strips if s.action is not None]
            ad.nla_tracks.remove(tr)
        if ad.action is not None and is_ours(ad.action):
            acts.append(ad.action)
            ad.action = None
        made_ad = any(is_ours(act) and act.get(ANIMDATA_PROP) for act in acts)
        ours = set()
        for act in acts:
            ours |= _pose_channels(act)
        _reset_pose(armature_ob, ours - _user_channels(ad))
        for act in dict.fromkeys(acts):
            if is_ours(act) and act.users == 0:
                bpy.data.actions.remove(act)
        if made_ad and not len(ad.nla_tracks) and ad.action is None and not len(ad.drivers):
            armature_ob.animation_data_clear()
    se = scene.sequence_editor
    if se is not None:
        for st in [s for s in _sequences(se) if s.name.startswith(SOUND_STRIP)]:
            _remove_sound_strip(scene, st)
    for m in [m for m in scene.timeline_markers if m.name.startswith(MARKER_PREFIX)]:
        scene.timeline_markers.remove(m)


_REST = {"location": (0.0, 0.0, 0.0), "rotation_quaternion": (1.0, 0.0, 0.0, 0.0),
         "rotation_euler": (0.0, 0.0, 0.0), "rotation_axis_angle": (0.0, 0.0, 1.0, 0.0),
         "scale": (1.0, 1.0, 1.0)}


def _pose_channels(action) -> set[tuple[str, str]]:
    """``(bone, property)`` of every pose-bone F-curve of ``action`` (all slots)."""
    out = set()
    bags = []
    if compat.has_slots():
        for layer in getattr(action, "layers", ()):
            for strip in layer.strips:
                bags += [b.fcurves for b in getattr(strip, "channelbags", ())]
    else:
        bags.append(action.fcurves)
    for fcs in bags:
        for fc in fcs:
            m = _PATH_RE.match(fc.data_path)
            if m:
                out.add((m.group(1).replace('\\"', '"'), m.group(2)))
    return out


def _user_channels(ad) -> set[tuple[str, str]]:
    """Pose channels the user's own animation drives: their active action, the actions on
    their NLA tracks (muted ones included), their drivers."""
    out = set()
    if ad is None:
        return out
    if ad.action is not None and not is_ours(ad.action):
        out |= _pose_channels(ad.action)
    for tr in ad.nla_tracks:
        if not is_ours(tr):
            for st in tr.strips:
                if st.action is not None:
                    out |= _pose_channels(st.action)
    for fc in ad.drivers:
        m = _PATH_RE.match(fc.data_path)
        if m:
            out.add((m.group(1).replace('\\"', '"'), m.group(2)))
    return out


def _reset_pose(armature_ob, channels) -> None:
    """Set the given ``(bone, property)`` pose channels to their rest values."""
    pbones = armature_ob.pose.bones if armature_ob.pose is not None else {}
    for bone, prop in channels:
        pb = pbones.get(bone)
        if pb is not None and prop in _REST:
            setattr(pb, prop, _REST[prop])


# =========================================================================== metrics
def our_layers(armature_ob, plan: Plan) -> list[ActionChannels]:
    """Channel data of the plan's actions as placed on our tracks."""
    ad = armature_ob.animation_data
    strips = {}
    for tr in ad.nla_tracks if ad else ():
        if is_ours(tr):
            for s in tr.strips:
                strips[round(s.frame_start)] = s
    out = []
    for ph in plan.phrases:
        s = strips.get(ph.frame_start)
        if s is None or s.action is None:
            raise M2DError(f"phrase {ph.index + 1} is not on the armature's NLA; apply the plan")
        out.append(read_layer(s.action, round(s.frame_start), round(s.frame_end)))
    return out


def evaluate_plan(armature_ob, applied: AppliedPlan, *, layers=None, scene=None,
                  force_depsgraph: bool = False) -> AppliedPlan:
    """Measure the placed dance on the evaluated animation and store the metrics in the plan."""
    scene = scene or bpy.context.scene
    plan = applied.plan
    bone_map = applied.bone_map
    layers = layers or our_layers(armature_ob, plan)
    f_first, f_last = plan.frame_start, plan.frame_end
    n = f_last - f_first + 1
    model = RigModel.of(armature_ob)
    plain, why = rig_is_plain(armature_ob)
    if plain and not force_depsgraph:
        chans = blend_channels(layers, xf_frames=plan.crossfade_frames, frame_first=f_first,
                               frame_last=f_last)
        mats = model.pose_matrices(chans, n, bones=[b for b in bone_map.values()])
        pos = joint_positions(model, mats, bone_map)
        how = "numpy NLA evaluation (equal to the depsgraph, see tests)"
    else:
        pos = depsgraph_joint_positions(armature_ob, bone_map, range(f_first, f_last + 1), scene)
        how = f"depsgraph ({why})" if why else "depsgraph"
    root_bone = bone_map[CANON_JOINTS[ROOT]]
    seams = []
    mids = [(layers[i].frame_start + layers[i - 1].frame_end) // 2 for i in range(1, len(layers))]
    alone = _roots_alone(model, [(layers[i + d], m) for i, m in enumerate(mids) for d in (0, 1)],
                         root_bone)
    for i in range(1, len(layers)):
        a, b = layers[i - 1], layers[i]
        f0, f1 = b.frame_start, a.frame_end
        seams.append(M.seam_root_metrics(pos[:, ROOT], frame0=f_first,
                                         seam=M.Seam(i, f0, f1), fps=plan.fps,
                                         root_a_mid=alone[2 * i - 2], root_b_mid=alone[2 * i - 1]))
    track = DanceBeatTrack(pos, plan.fps, derivatives=BEAT_DERIVATIVES)
    metrics = measure(pos, plan, track=track)
    metrics["seams"] = {
        "max_root_jump_cm": max((s["root_jump_cm"] for s in seams), default=0.0),
        "max_root_gap_cm": max((s.get("root_gap_cm", 0.0) for s in seams), default=0.0),
        "per_seam": seams}
    metrics["evaluation"] = how
    applied.plan = dataclasses.replace(plan, metrics=metrics)
    applied.positions = pos
    applied.evaluation = how
    _remember(armature_ob, pos, track)
    return applied


def _roots_alone(model: RigModel, items: Sequence[tuple[ActionChannels, int]],
                 root_bone: str) -> list[np.ndarray]:
    """:func:`_root_alone` of every ``(layer, frame)`` of ``items`` (one pose evaluation)."""
    if not items:
        return []
    chain, i = set(), model.names.index(root_bone)
    while i >= 0:
        chain.add(model.names[i])
        i = int(model.parent[i])
    keys = [k for k in items[0][0].channels if k[0] in chain]
    if any([k for k in lay.channels if k[0] in chain] != keys or
           any(lay.channels[k].shape[1] != items[0][0].channels[k].shape[1] for k in keys)
           for lay, _f in items):
        return [_root_alone(model, lay, f, root_bone) for lay, f in items]
    ch = {k: np.stack([lay.channels[k][f - lay.frame_start] for lay, f in items]) for k in keys}
    m = model.pose_matrices(ch, len(items), bones=[root_bone])[root_bone]
    return [model.world[:3, :3] @ mm[:3, 3] + model.world[:3, 3] for mm in m]


def _root_alone(model: RigModel, layer: ActionChannels, frame: int, root_bone: str) -> np.ndarray:
    k = frame - layer.frame_start
    ch = {key: v[k:k + 1] for key, v in layer.channels.items()}
    m = model.pose_matrices(ch, 1, bones=[root_bone])[root_bone][0]
    return model.world[:3, :3] @ m[:3, 3] + model.world[:3, 3]


def measure(positions: np.ndarray, plan: Plan, *, track: DanceBeatTrack | None = None,
            changed: Sequence[tuple[int, int]] = ()) -> dict:
    """Beat metrics and foot skate of an evaluated animation [shape=(F, J, 3)] on the plan's
    frames (see :mod:`blender_m2d.core.metrics`).

    ``track``: the dance-beat detector state of these positions before frames ``changed``
    (``(lo, hi)`` index ranges) changed; it is brought up to date in place, which gives the
    same beats as detecting on the whole song again."""
    if track is None:
        dance_s = detect_dance_beats(np.nan_to_num(positions), plan.fps,
                                     derivatives=BEAT_DERIVATIVES)
    else:       # NaN (unmapped joints) reads as 0 there too
        for lo, hi in changed:
            track.update(positions, lo, hi)
        dance_s = track.beats()
    duration = plan.song["duration_s"]
    beats = song_beat_range(plan)
    out = {"beats": M.song_beat_metrics(dance_s, beats, duration)}
    out["beats"]["dance_beats_s"] = [round(float(x), 4) for x in dance_s]
    zones = P.seam_zones([(p.frame_start, p.frame_end) for p in plan.phrases], fps=plan.fps,
                         release_s=float(plan.placement.get("release_s", 1.0)))
    feet = np.nan_to_num(positions[:, list(FEET)])
    idx = [(z0 - plan.frame_start, z1 - plan.frame_start) for z0, _, _, z1 in zones]
    xfs = [(f0 - plan.frame_start, f1 - plan.frame_start) for _, f0, f1, _ in zones]
    zoned, xfaded = M.foot_skates(feet, plan.fps, [idx, xfs])
    out["feet"] = {"seam_zones": zoned, "crossfades_only": xfaded, "contact_m": M.CONTACT_M}
    return out


def song_beat_range(plan: Plan) -> np.ndarray:
    b = np.asarray(plan.beats_s, dtype=np.float64)
    return b[(b >= 0) & (b <= plan.song["duration_s"] + 1e-6)]


# =========================================================================== swaps
def _rename_phrase_marker(scene, index: int, phrase_id: str) -> None:
    prefix = f"{MARKER_PREFIX}phrase {index + 1} "
    for m in scene.timeline_markers:
        if m.name.startswith(prefix):
            m.name = f"{prefix}{phrase_id}"[:63]


def replace_phrase(armature_ob, applied: AppliedPlan, index: int, phrase_id: str, library, *,
                   scene=None, evaluate: bool = True, local: bool = True) -> AppliedPlan:
    """Swap the dance phrase of music phrase ``index`` for ``phrase_id`` and re-place it.

    The phrase's warp is refitted. By default (``local``) only the swapped phrase is placed
    again, chained to the phrase before it, with the root difference to the phrase after it
    spread over it, so no other phrase moves (:func:`replace_phrases`); only its action and the
    seam zones of its neighbours are rewritten, in place. With ``local=False`` (or on an NLA
    without placement records) the whole plan is placed again and, because root motion is
    chained, the actions of phrases ``index - 1`` to the end are rewritten on the existing
    strips; earlier phrases are untouched. The swapped phrase is marked locked.
    """
    from . import retarget

    scene = scene or bpy.context.scene
    plan = applied.plan
    if not 0 <= index < len(plan.phrases):
        raise M2DError(f"there is no phrase {index + 1} in this plan")
    k = library.index_of(phrase_id)
    meta = library.phrases[k]
    old = plan.phrases[index]
    pb = np.asarray([b for b in plan.beats_s
                     if old.music_start_s - 1e-3 <= b <= old.music_end_s + 1e-3])
    if pb.size == 0 or pb[0] > old.music_start_s + 1e-3:
        pb = np.concatenate([[old.music_start_s], pb])
    if pb[-1] < old.music_end_s - 1e-3:
        pb = np.concatenate([pb, [old.music_end_s]])
    rr = tuple(plan.placement.get("rate_range", P.RATE_RANGE))
    warp = P.fit_warp(meta.beats_s, float(meta.duration_s), pb, rate_range=rr,
                      dance_tempo_bpm=meta.tempo_bpm,
                      accent=float(plan.placement.get("accent", 0.0)))
    new_phrase = dataclasses.replace(old, phrase_id=phrase_id, locked=True, warp=warp.summary())
    plan = plan.with_phrase(index, new_phrase)
    if local:
        out = replace_phrases(armature_ob, applied, plan, [index], library, scene=scene,
                              evaluate=evaluate)
        if out is not None:
            _rename_phrase_marker(scene, index, phrase_id)
            return out
    placed, ref_leg = place_plan(plan, library)
    bone_map = applied.bone_map or retarget.resolve_bone_map(armature_ob, None)
    scale = retarget.leg_length_of(armature_ob, bone_map) / ref_leg
    ad = armature_ob.animation_data
    strips = {}
    for tr in ad.nla_tracks:
        if is_ours(tr):
            for s in tr.strips:
                strips[round(s.frame_start)] = s
    prev_layer = None
    for i in range(max(index - 1, 0), len(placed)):
        pm = placed[i]
        st = strips.get(pm.frame_start)
        if st is None:
            raise M2DError("the dance on the NLA does not match the plan; apply the plan again")
        new = _write(retarget, armature_ob, pm, name=_action_name(i, pm.phrase_id),
                     bone_map=bone_map, frame_start=float(pm.frame_start), fps=plan.fps,
                     scale=scale)
        new[OWNER_PROP] = OWNER
        new[PLACE_PROP] = _placement_record(pm, ref_leg)
        new[REV_PROP] = _next_rev()
        if st.action is not None and st.action.get(ANIMDATA_PROP):
            new[ANIMDATA_PROP] = True
        if prev_layer is None and i > 0:
            prev_st = strips[placed[i - 1].frame_start]
            prev_layer = read_action(prev_st.action, placed[i - 1].frame_start,
                                     placed[i - 1].frame_end)
        layer = read_action(new, pm.frame_start, pm.frame_end)
        if prev_layer is not None:
            align_channels(prev_layer, layer, new, pm.frame_start)
        old_act = st.action
        compat.assign_action(st, new)
        st.name = new.name[:63]
        if old_act is not None and is_ours(old_act) and old_act.users == 0:
            bpy.data.actions.remove(old_act)
        prev_layer = layer
    _rename_phrase_marker(scene, index, phrase_id)
    out = AppliedPlan(plan=plan, actions=[s.action for s in strips.values()], placed=placed,
                      bone_map=dict(bone_map), warnings=list(applied.warnings))
    if evaluate:
        out = evaluate_plan(armature_ob, out, scene=scene)
    return out


# =========================================================================== local edits
PLACE_PROP = "m2d_place"
"""Action custom property: JSON of how the phrase's canonical motion was placed (yaw,
translation, optional ramp, reference leg length), so an edit can re-place a neighbour exactly
as it is without re-placing the song from the start."""
REV_PROP = "m2d_rev"
"""Action custom property: revision stamp, changed whenever blender_m2d writes the action's
keys (validates the cached evaluation after undo or outside edits)."""

KEEP_TOL = 1e-5
"""A local edit leaves a neighbouring phrase's channel untouched when its new keys differ from
the ones there by at most this much (quaternion components, metres): placing and solving the
neighbour again reproduces its keys only up to rounding."""

_REV = [0]
_EVAL_CACHE: dict[str, tuple] = {}
"""armature name -> (NLA token, world positions [F, J, 3]) of the last evaluation."""


def _next_rev() -> str:
    _REV[0] += 1
    return f"{time.time_ns():x}.{_REV[0]}"


def _placement_record(pm, ref_leg: float, ramp: dict | None = None) -> str:
    import json

    return json.dumps({"phrase_id": pm.phrase_id, "yaw": float(pm.yaw),
                       "t": [float(x) for x in np.asarray(pm.translation)],
                       "ramp": ramp, "ref_leg": float(ref_leg)})


def _read_record(act) -> dict | None:
    import json

    try:
        text = act.get(PLACE_PROP) if act is not None else None
        return json.loads(text) if text else None
    except (TypeError, ValueError):
        return None


def _apply_ramp(pm, ramp: Mapping) -> None:
    """Turn and move ``pm`` frame by frame: by ``s * dyaw`` about ``pivot`` plus ``s * dpos``
    (horizontal), ``s`` a smoothstep from 0 at scene frame ``f0`` to 1 at ``f1``."""
    frames = pm.frame_start + np.arange(pm.n_frames, dtype=np.float64)
    f0, f1 = float(ramp["f0"]), float(ramp["f1"])
    u = np.clip((frames - f0) / max(f1 - f0, 1.0), 0.0, 1.0)
    s = u * u * (3.0 - 2.0 * u)
    q = P.qz(s * float(ramp["dyaw"]))                       # (F, 4)
    pivot = np.array([*ramp["pivot"][:2], 0.0])
    dpos = np.array([*ramp["dpos"][:2], 0.0])
    rel = pm.positions - pivot
    pm.positions = P.qrot(q[:, None, :], rel) + pivot + s[:, None, None] * dpos
    pm.rotations = P.qmul(q[:, None, :], pm.rotations)


def _options_of(plan: Plan) -> P.PlacementOptions:
    opts = plan.placement or {}
    return P.PlacementOptions(
        crossfade_s=float(opts.get("crossfade_s", P.CROSSFADE_S)),
        rate_range=tuple(opts.get("rate_range", P.RATE_RANGE)),
        feet=str(opts.get("feet", "lock")), root=str(opts.get("root", "hermite")),
        release_s=float(opts.get("release_s", 1.0)),
        contact_m=float(opts.get("contact_m", 0.05)),
        contact_speed_m_s=float(opts.get("contact_speed_m_s", 1.0)))


def _our_strips(ad) -> dict[int, object]:
    out = {}
    for tr in ad.nla_tracks if ad is not None else ():
        if is_ours(tr):
            for s in tr.strips:
                out[round(s.frame_start)] = s
    return out


def _nla_token(armature_ob) -> tuple:
    """What the cached evaluation depends on: our strips' actions and their revisions, and the
    object's placement."""
    strips = _our_strips(armature_ob.animation_data)
    items = tuple((f, s.action.name if s.action else "",
                   str(s.action.get(REV_PROP, "")) if s.action else "")
                  for f, s in sorted(strips.items()))
    mw = tuple(round(float(x), 6) for row in armature_ob.matrix_world for x in row)
    return (armature_ob.name, items, mw)


def _remember(armature_ob, positions: np.ndarray, track: DanceBeatTrack | None = None) -> None:
    try:
        _EVAL_CACHE[armature_ob.name] = (_nla_token(armature_ob), positions, track)
    except (AttributeError, ReferenceError):
        pass


def _take_track(armature_ob, positions: np.ndarray) -> DanceBeatTrack | None:
    """The cached beat-detector state of exactly ``positions`` (taken out of the cache: the
    caller updates it)."""
    hit = _EVAL_CACHE.get(getattr(armature_ob, "name", None))
    if hit is None or hit[1] is not positions or hit[2] is None:
        return None
    _EVAL_CACHE[armature_ob.name] = (hit[0], hit[1], None)
    return hit[2]


def _cached_positions(armature_ob, plan: Plan) -> np.ndarray | None:
    hit = _EVAL_CACHE.get(armature_ob.name)
    if hit is None or hit[0] != _nla_token(armature_ob):
        return None
    pos = hit[1]
    if pos.shape[0] != plan.frame_end - plan.frame_start + 1:
        return None
    return pos


_LAYER_CACHE: dict[int, tuple[str, ActionChannels]] = {}
"""action session uid -> (its m2d_rev, its keys as arrays): what blender_m2d last wrote or read
into one of its actions, valid while the action's revision stamp is unchanged."""
_LAYER_CACHE_MAX = 400
"""At most this many actions' keys are kept (~0.1 MB each for a 3-minute song's phrases)."""


def _layer_key(action) -> int | None:
    try:
        return int(action.session_uid)
    except (AttributeError, ReferenceError):
        return None


def _layer_of(action, frame_start: int, frame_end: int) -> ActionChannels | None:
    """The cached keys of one of our actions (keys on every whole frame), or None."""
    key = _layer_key(action)
    hit = _LAYER_CACHE.get(key) if key is not None else None
    if hit is None:
        return None
    rev = str(action.get(REV_PROP, ""))
    lay = hit[1]
    if not rev or hit[0] != rev or lay.frame_start != frame_start or lay.frame_end != frame_end:
        return None
    return lay


def _keep_layer(action, layer: ActionChannels) -> None:
    """Remember ``layer`` as the keys of ``action`` at its current revision (values as stored:
    float32)."""
    key = _layer_key(action)
    rev = str(action.get(REV_PROP, "")) if key is not None else ""
    if not rev:
        return
    chans = {}
    for k, v in layer.channels.items():
        v = np.asarray(v, dtype=np.float32).astype(np.float64)
        v.flags.writeable = False
        chans[k] = v
    _LAYER_CACHE.pop(key, None)
    _LAYER_CACHE[key] = (rev, ActionChannels(layer.frame_start, layer.frame_end, chans))
    _trim(_LAYER_CACHE, _LAYER_CACHE_MAX)


def _patch_layer(action, old: ActionChannels | None, updates) -> None:
    """After writing ``updates`` (``((bone, prop), lo, values)``) into ``action`` and stamping
    it with a new revision: update its cached keys ``old`` (the cache entry valid before the
    write), or forget them when there were none."""
    key = _layer_key(action)
    if key is None:
        return
    if old is None:
        _LAYER_CACHE.pop(key, None)
        return
    n = old.frame_end - old.frame_start + 1
    chans = dict(old.channels)
    for ch, lo, vals in updates:
        v = np.asarray(vals, dtype=np.float32).astype(np.float64)
        cur = chans.get(ch)
        if cur is None or cur.shape[1] != v.shape[1]:
            if lo == 0 and v.shape[0] == n:
                cur = v
            else:
                _LAYER_CACHE.pop(key, None)
                return
        else:
            cur = cur.copy()
            cur[lo:lo + v.shape[0]] = v
        cur.flags.writeable = False
        chans[ch] = cur
    rev = str(action.get(REV_PROP, ""))
    if not rev:
        _LAYER_CACHE.pop(key, None)
        return
    _LAYER_CACHE.pop(key, None)
    _LAYER_CACHE[key] = (rev, ActionChannels(old.frame_start, old.frame_end, chans))
    _trim(_LAYER_CACHE, _LAYER_CACHE_MAX)


def _trim(cache: dict, size: int) -> None:
    """Drop the oldest entries of ``cache`` (insertion order) beyond ``size``."""
    while len(cache) > size:
        cache.pop(next(iter(cache)))


def read_layer(action, frame_start: int, frame_end: int) -> ActionChannels:
    """:func:`read_action` of one of our actions, from the cache when its revision is the one
    cached (the arrays are shared and read-only)."""
    lay = _layer_of(action, frame_start, frame_end)
    if lay is not None:
        return lay
    lay, exact = _read_action(action, frame_start, frame_end)
    if exact:
        _keep_layer(action, lay)
        return _layer_of(action, frame_start, frame_end) or lay
    return lay


_PLACE_CACHE: dict[tuple, tuple] = {}
"""(library id, phrase, warp, frames, placement record, ...) -> (library, PlacedMotion): a kept
phrase placed as its action's record says (what a local edit re-places around every run)."""


def _copy_placed(pm):
    return dataclasses.replace(pm, positions=np.array(pm.positions, copy=True),
                               rotations=np.array(pm.rotations, copy=True),
                               dance_time_s=np.array(pm.dance_time_s, copy=True),
                               translation=np.array(pm.translation, copy=True))


def _fcurve_map(action) -> dict[tuple[str, int], object]:
    fcs = compat.action_fcurves(action, None, create=False) or ()
    return {(fc.data_path, fc.array_index): fc for fc in fcs}


class _Curves:
    """``(data path, index) -> FCurve`` of one action, read from bpy only when first needed
    (an edit that finds every key it needs in the layer cache never lists the curves)."""

    __slots__ = ("_action", "_map")

    def __init__(self, action):
        self._action = action
        self._map: dict | None = None

    def _all(self) -> dict:
        if self._map is None:
            self._map = _fcurve_map(self._action)
        return self._map

    def get(self, key):
        return self._all().get(key)

    def __setitem__(self, key, fc) -> None:
        self._all()[key] = fc

    def __iter__(self):
        return iter(self._all())


def _tag(action) -> None:
    """Tell the depsgraph that ``action``'s keys changed (what ``FCurve.update`` tags)."""
    action.update_tag(refresh={"TIME"})


def _linear() -> int:
    return bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value


def _put_keys(action, fmap: dict, bone: str, prop: str, frame_start: int,
              values: np.ndarray, lo: int = 0, layer: ActionChannels | None = None) -> None:
    """Write ``values`` [shape=(n, dim)] into the keys of frames ``frame_start + lo ...`` of a
    channel of ``action`` (keys on every whole frame from ``frame_start``), in place; a curve
    without those keys is rewritten whole (``lo`` must then be 0). ``layer``: the action's
    cached keys (see :func:`_layer_of`), which spare reading the curve back.

    Keys edited in place keep their frames, order and LINEAR interpolation, so the curve is
    not updated (``FCurve.update`` sorts the keys and recomputes their Bezier handles, which
    LINEAR keys do not use; Blender recomputes them on any edit in the Graph Editor): the
    caller tags the action once for the depsgraph (:func:`_tag`). A curve rewritten whole is
    updated."""
    path = f'pose.bones["{bone}"].{prop}'
    n = values.shape[0]
    known = layer.channels.get((bone, prop)) if layer is not None else None
    for i in range(values.shape[1]):
        fc = fmap.get((path, i))
        if fc is None:
            fc = compat.ensure_fcurve(action, None, path, i, group=bone)
            fmap[(path, i)] = fc
        kp = fc.keyframe_points
        m = len(kp)
        co = np.empty(2 * m, np.float32)
        if known is not None and i < known.shape[1] and known.shape[0] == m and m and \
                layer.frame_start == frame_start:
            co[0::2] = frame_start + np.arange(m)
            co[1::2] = known[:, i]
        elif m:
            kp.foreach_get("co", co)
        if m >= lo + n and m and abs(co[0] - frame_start) < 1e-3 and \
                abs(co[2 * (m - 1)] - (frame_start + m - 1)) < 1e-3:
            co[2 * lo + 1:2 * (lo + n):2] = values[:, i]
            kp.foreach_set("co", co)
            continue
        if lo:
            raise M2DError("the dance on the NLA does not match the plan; apply the plan again")
        if m:
            kp.clear()
        kp.add(n)
        co = np.empty(2 * n, np.float32)
        co[0::2] = frame_start + np.arange(n)
        co[1::2] = values[:, i]
        kp.foreach_set("co", co)
        kp.foreach_set("interpolation", np.full(n, _linear(), np.int32))
        fc.update()


def _get_keys(fmap: dict, bone: str, prop: str, dim: int, lo: int, hi: int,
              layer: ActionChannels | None = None) -> np.ndarray | None:
    """Key values of frames ``lo..hi-1`` (indices from the action's first key); from ``layer``
    (the action's cached keys) when given."""
    path = f'pose.bones["{bone}"].{prop}'
    if layer is not None:
        known = layer.channels.get((bone, prop))
        if known is not None and known.shape[1] == dim and known.shape[0] >= hi:
            return known[lo:hi].copy()
    out = np.empty((hi - lo, dim))
    for i in range(dim):
        fc = fmap.get((path, i))
        if fc is None:
            return None
        kp = fc.keyframe_points
        co = np.empty(2 * len(kp), np.float32)
        kp.foreach_get("co", co)
        if len(kp) < hi:
            return None
        out[:, i] = co[2 * lo + 1:2 * hi:2]
    return out


def _match_sign(prop: str, vals: np.ndarray, ref: np.ndarray, k: int, k_ref: int) -> np.ndarray:
    """``vals`` with quaternion sign / Euler turns chosen so ``vals[k]`` blends with
    ``ref[k_ref]``."""
    if prop == "rotation_quaternion":
        if float(np.dot(vals[k], ref[k_ref])) < 0:
            return -vals
    elif prop == "rotation_euler":
        turns = np.round((ref[k_ref] - vals[k]) / math.tau)
        if np.any(turns != 0):
            return vals + turns[None, :] * math.tau
    return vals


def replace_phrases(armature_ob, applied: AppliedPlan, new_plan: Plan, indices: Sequence[int],
                    library, *, scene=None, evaluate: bool = True) -> AppliedPlan | None:
    """Put ``new_plan``'s phrases ``indices`` on the NLA *locally* (the phrases' frames must be
    those already placed).

    Each run of consecutive changed phrases is placed again, chained to the phrase before it
    as it stands; the phrase after it keeps its place, and the root position/heading difference
    at that seam is spread over the run with a smoothstep ramp (so no later phrase moves).
    Only the run's actions are rewritten whole (keys edited in place), plus the keys of the
    neighbours' seam zones (crossfade, Hermite root, foot locking). Metrics are updated from
    the previous evaluation for the frames that changed (the whole song is evaluated when
    there is none to start from).

    Returns None (nothing changed) when the NLA was not made by this version of
    :func:`apply_plan` (no placement records) or does not match the plan; the caller then
    falls back to re-placing everything.
    """
    from . import retarget
    from .core.library import PhraseMotion

    scene = scene or bpy.context.scene
    old_plan = applied.plan
    idx = sorted({int(i) for i in indices})
    n_ph = len(new_plan.phrases)
    if not idx or n_ph != len(old_plan.phrases) or any(
            (a.frame_start, a.frame_end) != (b.frame_start, b.frame_end)
            for a, b in zip(old_plan.phrases, new_plan.phrases)):
        return None
    ad = armature_ob.animation_data
    strips = _our_strips(ad)
    if len(strips) != n_ph:
        return None
    st_of = []
    for ph in new_plan.phrases:
        st = strips.get(ph.frame_start)
        if st is None or st.action is None or round(st.frame_end) != ph.frame_end:
            return None
        st_of.append(st)
    records = {}
    need = set(idx) | {i - 1 for i in idx if i > 0} | {i + 1 for i in idx if i + 1 < n_ph}
    for i in need:
        rec = _read_record(st_of[i].action)
        if rec is None:
            return None
        records[i] = rec
    ref_leg = float(records[idx[0]]["ref_leg"])
    bone_map = applied.bone_map or retarget.resolve_bone_map(armature_ob, None)
    rig_leg = retarget.leg_length_of(armature_ob, bone_map)
    scale = rig_leg / ref_leg if ref_leg > 1e-9 else 1.0
    options = _options_of(new_plan)
    fps, xf = new_plan.fps, new_plan.crossfade_frames
    motions, durations = {}, {}

    def place(i: int):
        ph = new_plan.phrases[i]
        if ph.phrase_id not in motions:
            motions[ph.phrase_id] = library.motion(ph.phrase_id)
            durations[ph.phrase_id] = float(
                library.phrases[library.index_of(ph.phrase_id)].duration_s)
        m = motions[ph.phrase_id]
        warp = P.Warp.from_summary(ph.warp, durations[ph.phrase_id])
        sc = ref_leg / max(leg_length(np.asarray(m.positions)), 1e-6)
        return P.place_phrase(m, warp, index=ph.index, phrase_id=ph.phrase_id,
                              frame_range=(ph.frame_start, ph.frame_end), fps=fps,
                              frame_start=new_plan.frame_start, scale=sc)

    def place_as_recorded(i: int):
        rec = records[i]
        ph = new_plan.phrases[i]
        if rec.get("phrase_id") != ph.phrase_id:
            raise LookupError
        key = (id(library), ph.phrase_id, repr(ph.warp), ph.index, ph.frame_start,
               ph.frame_end, fps, new_plan.frame_start, ref_leg,
               str(st_of[i].action.get(PLACE_PROP, "")))
        hit = _PLACE_CACHE.get(key)
        if hit is not None and hit[0] is library:
            return _copy_placed(hit[1])
        pm = place(i)
        pm.positions, pm.rotations = P.apply_yaw_translation(
            pm.positions, pm.rotations, float(rec["yaw"]), np.asarray(rec["t"], np.float64))
        pm.yaw, pm.translation = float(rec["yaw"]), np.asarray(rec["t"], np.float64)
        if rec.get("ramp"):
            _apply_ramp(pm, rec["ramp"])
        _PLACE_CACHE[key] = (library, _copy_placed(pm))
        _trim(_PLACE_CACHE, 64)
        return pm

    runs: list[list[int]] = []
    for i in idx:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    old_pos = applied.positions
    if old_pos is None and evaluate:
        old_pos = _cached_positions(armature_ob, old_plan)     # before anything is written
    # ---- numpy: place every run with its neighbours, decide what to write where
    jobs = []   # (phrase index, placed motion, lo, hi): frames lo..hi-1 of the phrase change
    windows = []    # per run: the first and last scene frame whose keys may change
    run_jobs = []   # per run: its jobs jobs[j0:j1]
    new_records = {}
    try:
        for run in runs:
            n_jobs = len(jobs)
            a, b = run[0], run[-1]
            prev = place_as_recorded(a - 1) if a > 0 else None
            nxt = place_as_recorded(b + 1) if b + 1 < n_ph else None
            chain = [] if prev is None else [prev]
            for i in run:
                pm = place(i)
                if chain:
                    mid = min(pm.frame_start + xf // 2, chain[-1].frame_end)
                    yaw, t = P.align_root(chain[-1], pm, mid)
                else:
                    rec0 = records[i]
                    yaw, t = float(rec0["yaw"]), np.asarray(rec0["t"], np.float64)
                pm.positions, pm.rotations = P.apply_yaw_translation(pm.positions,
                                                                     pm.rotations, yaw, t)
                pm.yaw, pm.translation = yaw, t
                chain.append(pm)
            ramp = None
            if nxt is not None:
                last = chain[-1]
                mid = min(nxt.frame_start + xf // 2, last.frame_end)
                piv = last.positions[mid - last.frame_start, 0]
                ya = float(P.heading(last.positions[mid - last.frame_start]))
                yb = float(P.heading(nxt.positions[mid - nxt.frame_start]))
                target = nxt.positions[mid - nxt.frame_start, 0]
                first = chain[1] if prev is not None else chain[0]
                f0 = min(first.frame_start + xf // 2, prev.frame_end) if prev is not None \
                    else first.frame_start
                ramp = {"f0": int(f0), "f1": int(mid),
                        "dyaw": float(math.remainder(yb - ya, math.tau)),
                        "pivot": [float(piv[0]), float(piv[1])],
                        "dpos": [float(target[0] - piv[0]), float(target[1] - piv[1])]}
                for pm in chain[1 if prev is not None else 0:]:
                    _apply_ramp(pm, ramp)
            full = chain + ([nxt] if nxt is not None else [])
            for k in range(1, len(full)):
                ref = full[k - 1].rotations[full[k].frame_start - full[k - 1].frame_start]
                full[k].rotations = P.make_continuous(full[k].rotations, ref)
            if options.root == "hermite":
                P.smooth_root_seams(full)
            if options.feet == "lock" and len(full) > 1:
                P.lock_feet(full, fps=fps, options=options)
            zones = P.seam_zones([(pm.frame_start, pm.frame_end) for pm in full], fps=fps,
                                 release_s=options.release_s)
            if options.feet != "lock":
                zones = [(f0, f0, f1, f1) for _, f0, f1, _ in zones]
            if prev is not None:
                lo = max(zones[0][0] - prev.frame_start, 0)
                jobs.append((a - 1, prev, lo, prev.n_frames))
            for pm in chain[1 if prev is not None else 0:]:
                jobs.append((pm.index, pm, 0, pm.n_frames))
                new_records[pm.index] = _placement_record(pm, ref_leg, ramp)
            if nxt is not None:
                hi = min(zones[-1][3] - nxt.frame_start + 1, nxt.n_frames)
                jobs.append((b + 1, nxt, 0, hi))
            mine = jobs[n_jobs:]
            run_jobs.append((n_jobs, len(jobs)))
            windows.append((min(pm.frame_start + lo for _, pm, lo, _ in mine),
                            max(pm.frame_start + hi - 1 for _, pm, _, hi in mine)))
    except LookupError:
        return None
    # ---- one retarget solve over all changed frames
    motion = PhraseMotion(fps, np.concatenate([pm.positions[lo:hi] for _, pm, lo, hi in jobs]),
                          np.concatenate([pm.rotations[lo:hi] for _, pm, lo, hi in jobs]))
    solved = retarget.solve_pose(armature_ob, motion, bone_map, scale=scale, slack_m=0.0)
    rot = retarget.rotation_channels(armature_ob, solved["basis"], solved["keyed"])
    root = solved["root"]
    chans = {(bone, prop): vals for bone, (prop, vals) in rot.items()}
    if root is not None:
        chans[(root[0], "location")] = root[1]
    bounds = np.cumsum([0] + [hi - lo for _, _, lo, hi in jobs])
    # ---- bpy: write keys in place, run by run
    rot_props = ("rotation_quaternion", "rotation_euler")
    last_vals: dict[tuple[str, str], tuple[int, np.ndarray]] = {}   # scene frame0, values
    fmaps: dict[int, _Curves] = {}
    for run, (j0, j1) in zip(runs, run_jobs):
        a, b = run[0], run[-1]
        todo = []     # per job: what to write, and every rotation channel's keys afterwards
        for (i, pm, lo, hi), s0, s1 in zip(jobs[j0:j1], bounds[j0:j1], bounds[j0 + 1:j1 + 1]):
            act = st_of[i].action
            if i not in fmaps:
                fmaps[i] = _Curves(act)
            fmap = fmaps[i]
            whole = i in new_records
            layer = _layer_of(act, new_plan.phrases[i].frame_start,
                              new_plan.phrases[i].frame_end)
            put, final = {}, {}
            for (bone, prop), vals in chans.items():
                v = np.asarray(vals[s0:s1], dtype=np.float64)
                if prop in rot_props:
                    if whole:                 # chained to what was just written before it
                        ref = last_vals.get((bone, prop))
                        if ref is not None and 0 <= pm.frame_start - ref[0] < len(ref[1]):
                            v = _match_sign(prop, v, ref[1], 0, pm.frame_start - ref[0])
                    else:                     # continuous with the keys kept next to the window
                        k = 0 if lo > 0 else hi - 1
                        old = _get_keys(fmap, bone, prop, v.shape[1], lo + k, lo + k + 1,
                                        layer)
                        if old is not None:
                            v = _match_sign(prop, v, old, k, 0)
                if not whole:
                    # a neighbour's channel that the edit leaves as it is (up to the rounding
                    # of placing and solving it again) keeps its keys: nothing to write
                    old = _get_keys(fmap, bone, prop, v.shape[1], lo, hi, layer)
                    if old is not None and old.shape == v.shape and \
                            float(np.max(np.abs(old - v), initial=0.0)) <= KEEP_TOL:
                        v = old
                    else:
                        put[(bone, prop)] = v
                else:
                    put[(bone, prop)] = v
                final[(bone, prop)] = v
                last_vals[(bone, prop)] = (pm.frame_start + lo, v)
            todo.append((i, pm, lo, act, fmap, layer, whole, put, final))
        back = _back_channels(todo, a, b, n_ph)
        for key in back:       # the run now blends with the phrase after it, not before it
            for job in todo:
                if job[6]:                          # whole: put[key] = final[key] = f(...)
                    job[7][key] = job[8][key] = back[key](job[7][key])
        for i, pm, lo, act, fmap, layer, whole, put, _final in todo:
            updates = []
            for (bone, prop), v in put.items():
                _put_keys(act, fmap, bone, prop, pm.frame_start, v, lo, layer)
                updates.append(((bone, prop), lo, v))
            if whole:
                act.name = _action_name(i, pm.phrase_id)
                st_of[i].name = act.name[:63]
                act[PLACE_PROP] = new_records[i]
                act["m2d_scale"] = float(scale)
            if updates or whole:
                act[REV_PROP] = _next_rev()
                _patch_layer(act, layer, updates)
                _tag(act)
        if back and a > 0:
            # the phrase before the run (and so on up the song while the next one disagrees)
            _cascade_signs_back(st_of, fmaps, a - 1, list(back))
        if b + 1 < n_ph:
            # the kept phrase after the run: its curves must blend with the run's end; where
            # they do not, flip them (and so on down the song while the next one disagrees)
            _cascade_signs(st_of, fmaps, b + 1, n_ph)
    return _finish_local(armature_ob, applied, new_plan, st_of, runs, scene, evaluate=evaluate,
                         old_pos=old_pos, windows=windows)


def _back_channels(todo, a: int, b: int, n_ph: int) -> dict:
    """Rotation channels whose keys at the end of the run ``a..b`` (as ``todo`` of
    :func:`replace_phrases` will write them) do not blend with the kept phrase ``b + 1`` (a
    quaternion sign or whole Euler turns apart), when there are fewer phrases before the run
    than after it: then the run's curves are turned to match the phrase after it and the
    phrases before it are flipped (:func:`_cascade_signs_back`) instead of all the later ones
    (:func:`_cascade_signs`). Returns ``{channel: transform of the run's values}``."""
    if b + 1 >= n_ph or a >= n_ph - 1 - b or len(todo) < 2:
        return {}
    last, nxt = todo[-2], todo[-1]
    if last[0] != b or nxt[0] != b + 1 or not last[6] or nxt[2] != 0:
        return {}
    k = nxt[1].frame_start - last[1].frame_start
    out = {}
    for key, v in last[8].items():
        ref = nxt[8].get(key)
        if key[1] not in ("rotation_quaternion", "rotation_euler") or ref is None or \
                not 0 <= k < len(v):
            continue
        new = _match_sign(key[1], v, ref, k, 0)
        if new is v:
            continue
        if key[1] == "rotation_quaternion":
            out[key] = np.negative
        else:
            turns = new[0] - v[0]
            out[key] = lambda x, turns=turns: x + turns[None, :]
    return out


def _cascade_signs(st_of, fmaps: dict, start: int, n_ph: int) -> None:
    """Make every rotation curve of phrase ``start`` blend with phrase ``start - 1`` at its
    first frame (quaternion sign / Euler turns), flipping whole curves of the following phrases
    as long as they then disagree with their predecessor (each phrase's flipped curves are
    written together)."""
    def fmap_of(i):
        if i not in fmaps:
            fmaps[i] = _Curves(st_of[i].action)
        return fmaps[i]

    frames = [(round(st.frame_start), round(st.frame_end)) for st in st_of[start - 1:]]

    def layer_of(i):
        f0, f1 = frames[i - start + 1]
        return _layer_of(st_of[i].action, f0, f1)

    rot_props = ("rotation_quaternion", "rotation_euler")
    lay = layer_of(start - 1)
    if lay is not None:
        todo = [key for key in lay.channels if key[1] in rot_props]
    else:
        todo = []
        for (path, _i) in fmap_of(start - 1):
            m = _PATH_RE.match(path)
            if m and m.group(2) in rot_props:
                key = (m.group(1).replace('\\"', '"'), m.group(2))
                if key not in todo:
                    todo.append(key)
    lay_a = lay
    i = start
    while todo and i < n_ph:
        (a0, _a1), (b0, b1) = frames[i - start], frames[i - start + 1]
        k, n = b0 - a0, b1 - b0 + 1
        fa, fb = fmap_of(i - 1), fmap_of(i)
        lay_b = layer_of(i)
        flips, keep = [], []
        for bone, prop in todo:
            dim = 4 if prop == "rotation_quaternion" else 3
            ref = _get_keys(fa, bone, prop, dim, k, k + 1, lay_a)
            first = _get_keys(fb, bone, prop, dim, 0, 1, lay_b)
            if ref is None or first is None or _match_sign(prop, first, ref, 0, 0) is first:
                continue
            cur = _get_keys(fb, bone, prop, dim, 0, n, lay_b)
            if cur is not None:
                flips.append(((bone, prop), 0, _match_sign(prop, cur, ref, 0, 0)))
                keep.append((bone, prop))
        if not flips:
            break
        _write_flips(st_of[i].action, fb, b0, lay_b, flips)
        todo = keep
        lay_a = layer_of(i)
        i += 1


def _write_flips(act, fmap, frame0: int, layer, flips) -> None:
    """Write the sign-flipped rotation curves ``flips`` (``((bone, prop), lo, keys)``) of one
    phrase's action, whose first key sits at scene frame ``frame0``."""
    for (bone, prop), _lo, new in flips:
        _put_keys(act, fmap, bone, prop, frame0, new, 0, layer)
    act[REV_PROP] = _next_rev()
    _patch_layer(act, layer, flips)
    _tag(act)


def _cascade_signs_back(st_of, fmaps: dict, end: int, keys: Sequence[tuple[str, str]]) -> None:
    """Flip the whole rotation curves ``keys`` of phrase ``end`` where they do not blend with
    phrase ``end + 1`` at its first frame (quaternion sign / Euler turns), and so on up the
    song as long as a phrase then disagrees with the one after it."""
    def fmap_of(i):
        if i not in fmaps:
            fmaps[i] = _Curves(st_of[i].action)
        return fmaps[i]

    frames = [(round(st.frame_start), round(st.frame_end)) for st in st_of[:end + 2]]

    def layer_of(i):
        return _layer_of(st_of[i].action, *frames[i])

    todo = list(keys)
    lay_b = layer_of(end + 1)
    i = end
    while todo and i >= 0:
        (a0, a1), (b0, _b1) = frames[i], frames[i + 1]
        k, n = b0 - a0, a1 - a0 + 1
        fa, fb = fmap_of(i), fmap_of(i + 1)
        lay_a = layer_of(i)
        flips, keep = [], []
        for bone, prop in todo:
            dim = 4 if prop == "rotation_quaternion" else 3
            ref = _get_keys(fb, bone, prop, dim, 0, 1, lay_b)
            at = _get_keys(fa, bone, prop, dim, k, k + 1, lay_a) if 0 <= k < n else None
            if ref is None or at is None or _match_sign(prop, at, ref, 0, 0) is at:
                continue
            cur = _get_keys(fa, bone, prop, dim, 0, n, lay_a)
            if cur is not None:
                flips.append(((bone, prop), 0, _match_sign(prop, cur, ref, k, 0)))
                keep.append((bone, prop))
        if not flips:
            break
        _write_flips(st_of[i].action, fa, a0, lay_a, flips)
        todo = keep
        lay_b = layer_of(i)
        i -= 1


def _finish_local(armature_ob, applied: AppliedPlan, new_plan: Plan, st_of, runs, scene, *,
                  evaluate: bool, old_pos: np.ndarray | None,
                  windows: Sequence[tuple[int, int]] | None = None) -> AppliedPlan:
    """AppliedPlan of a local edit, with metrics updated for the frames that changed
    (``windows``: per run, the first and last scene frame whose keys were rewritten)."""
    out = AppliedPlan(plan=new_plan, actions=[s.action for s in st_of], placed=[],
                      bone_map=dict(applied.bone_map), warnings=list(applied.warnings))
    if not evaluate:
        return out
    plain, _why = rig_is_plain(armature_ob)
    if old_pos is None or not plain or not applied.plan.metrics or \
            old_pos.shape[0] != new_plan.frame_end - new_plan.frame_start + 1:
        return evaluate_plan(armature_ob, out, scene=scene)
    return _evaluate_local(armature_ob, out, old_pos, applied.plan.metrics, runs, windows)


def _evaluate_local(armature_ob, out: AppliedPlan, old_pos: np.ndarray, old_metrics: dict,
                    runs: Sequence[Sequence[int]],
                    windows: Sequence[tuple[int, int]] | None = None) -> AppliedPlan:
    """Metrics after a local edit: the numpy NLA evaluation redone on the frames that changed
    around each run (``windows``: first and last scene frame per run; default: the run and its
    neighbours whole), spliced into the previous evaluation; the seams of the runs measured
    again, the others kept; beat and foot metrics of the whole song recomputed from the
    positions."""
    plan = out.plan
    bone_map = out.bone_map
    n_ph = len(plan.phrases)
    f_first = plan.frame_start
    model = RigModel.of(armature_ob)
    root_bone = bone_map[CANON_JOINTS[ROOT]]
    strips = out.actions
    track = _take_track(armature_ob, old_pos)
    pos = old_pos.copy()
    changed = []
    seams = {int(s["index"]): s for s in (old_metrics.get("seams", {}) or {}).get("per_seam", [])}
    for r, run in enumerate(runs):
        a, b = run[0], run[-1]
        s0 = max(a - 2, 0)
        s0 -= s0 % 2
        s1 = min(b + 2, n_ph - 1)
        layers = [read_layer(strips[k], plan.phrases[k].frame_start, plan.phrases[k].frame_end)
                  for k in range(s0, s1 + 1)]
        w0 = plan.phrases[max(a - 1, 0)].frame_start
        w1 = plan.phrases[min(b + 1, n_ph - 1)].frame_end
        if windows is not None:
            w0, w1 = max(w0, int(windows[r][0])), min(w1, int(windows[r][1]))
        chans = blend_channels(layers, xf_frames=plan.crossfade_frames, frame_first=w0,
                               frame_last=w1)
        n = w1 - w0 + 1
        mats = model.pose_matrices(chans, n, bones=list(bone_map.values()))
        pos[w0 - f_first:w1 - f_first + 1] = joint_positions(model, mats, bone_map)
        changed.append((w0 - f_first, w1 - f_first + 1))
        ks = list(range(max(a, 1), min(b + 1, n_ph - 1) + 1))
        mids = [(layers[k - s0].frame_start + layers[k - 1 - s0].frame_end) // 2 for k in ks]
        alone = _roots_alone(model, [(layers[k - 1 - s0 + d], m) for k, m in zip(ks, mids)
                                     for d in (0, 1)], root_bone)
        for j, k in enumerate(ks):
            la, lb = layers[k - 1 - s0], layers[k - s0]
            f0, f1 = lb.frame_start, la.frame_end
            seams[k] = M.seam_root_metrics(
                pos[:, ROOT], frame0=f_first, seam=M.Seam(k, f0, f1), fps=plan.fps,
                root_a_mid=alone[2 * j], root_b_mid=alone[2 * j + 1])
    per_seam = [seams[k] for k in sorted(seams)]
    if track is None or track.n_src != pos.shape[0] or abs(track.fps - plan.fps) > 1e-9:
        track = DanceBeatTrack(pos, plan.fps, derivatives=BEAT_DERIVATIVES)
        changed = []
    metrics = measure(pos, plan, track=track, changed=changed)
    metrics["seams"] = {
        "max_root_jump_cm": max((s["root_jump_cm"] for s in per_seam), default=0.0),
        "max_root_gap_cm": max((s.get("root_gap_cm", 0.0) for s in per_seam), default=0.0),
        "per_seam": per_seam}
    how = old_metrics.get("evaluation") or \
        "numpy NLA evaluation (equal to the depsgraph, see tests)"
    metrics["evaluation"] = how
    out.plan = dataclasses.replace(plan, metrics=metrics)
    out.positions = pos
    out.evaluation = how
    _remember(armature_ob, pos, track)
    return out
