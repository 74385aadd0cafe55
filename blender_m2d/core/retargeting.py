"""Canonical joint orientations and the retarget solve, in numpy (the bpy layer only feeds it).

**Canonical orientation.** ``PhraseMotion.rotations[f, j]`` is the world orientation of joint
``j`` *relative to the canonical T-pose*: the identity when the character stands facing -Y with
+Z up, its left side at +X, arms straight out sideways with palms down, legs straight down and
feet pointing forward. Rigs differ in bone axes and rest poses, so each rig gets constant
per-bone offsets that convert its bone orientations into this convention:

* *sources* (mocap takes): the offset of joint ``j`` is estimated from the animation itself as
  the average over frames of ``R_bone(f)^T F_j(f)``, where ``F_j(f)`` is a *semantic frame*
  built from joint positions (bone direction plus an anatomical cue: the left-right hip or
  shoulder line, the elbow hinge axis, the foot's forward direction). This works for any rest
  pose, including CMU subject 5's upside-down leg rest pose; twist comes from the bones.
* *targets* (the user's armature): the offset comes from the rest pose, swinging each bone from
  its rest direction to its T-pose direction (A-pose arms, bent knees and rigs facing +Y are
  all handled); the rest pose is taken to have neutral twist.

**Solve.** For each frame a target bone takes ``R = q_j(f) R_T`` (canonical rotation times its
T-pose orientation), then is swung to point exactly at the stored position of its canonical
child (*direction matching*); joints with several children (Hips, Chest) are fitted to all of
them with Kabsch. The root follows the stored hip position, scaled by the ratio of leg lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import rigmath as rm
from .skeleton import CANON_JOINTS, CANON_PARENTS, JOINT_INDEX

J = JOINT_INDEX
N_JOINTS = len(CANON_JOINTS)
X, Y, Z = np.eye(3)

# Semantic frame of each joint: primary = direction to its canonical child; secondary = an
# anatomical cue; both with their values in the canonical T-pose. ("parent",) marks leaves that
# borrow their parent's frame. Cues: ("vec", a, b) = P[b] - P[a]; ("sum", (a, b), (c, d));
# ("hinge", a, b, c) = (P[b]-P[a]) x (P[c]-P[b]).
_LEFT_LEGS = ("vec", J["RightUpperLeg"], J["LeftUpperLeg"])
_LEFT_ARMS = ("vec", J["RightUpperArm"], J["LeftUpperArm"])
_UP_CHEST = ("vec", J["Chest"], J["Neck"])

SEMANTIC: dict[int, tuple] = {
    J["Hips"]: (J["Spine"], _LEFT_LEGS, Z, X),
    J["Spine"]: (J["Chest"], ("sum", _LEFT_LEGS[1:], _LEFT_ARMS[1:]), Z, X),
    J["Chest"]: (J["Neck"], _LEFT_ARMS, Z, X),
    J["Neck"]: (J["Head"], _LEFT_ARMS, Z, X),
    J["Head"]: ("parent",),
}
for _s, _sign in (("Left", 1.0), ("Right", -1.0)):
    _sh, _ua, _la, _h = (J[_s + n] for n in ("Shoulder", "UpperArm", "LowerArm", "Hand"))
    _ul, _ll, _f, _t = (J[_s + n] for n in ("UpperLeg", "LowerLeg", "Foot", "Toes"))
    _hinge = ("hinge", _ua, _la, _h)
    _fwd = ("vec", _f, _t)
    SEMANTIC.update({
        _sh: (_ua, _UP_CHEST, _sign * X, Z),
        _ua: (_la, _hinge, _sign * X, -_sign * Z),
        _la: (_h, _hinge, _sign * X, -_sign * Z),
        _h: ("parent",),
        _ul: (_ll, _fwd, -Z, -Y),
        _ll: (_f, _fwd, -Z, -Y),
        _f: (_t, ("vec", _f, _ll), -Y, Z),
        _t: ("parent",),
    })

TPOSE_DIRECTION = np.array([SEMANTIC[j][2] if SEMANTIC[j][0] != "parent" else
                            SEMANTIC[CANON_PARENTS[j]][2] for j in range(N_JOINTS)])
"""Unit direction from each joint to its primary child in the T-pose (leaves: parent's)."""
LEAF_LENGTH_M = {J["Head"]: 0.2, J["LeftHand"]: 0.09, J["RightHand"]: 0.09,
                 J["LeftToes"]: 0.05, J["RightToes"]: 0.05}
"""Display length of leaf bones on generated armatures (scaled by body size)."""


def _cue(spec: tuple, pos: np.ndarray) -> np.ndarray:
    kind = spec[0]
    if kind == "vec":
        return pos[..., spec[2], :] - pos[..., spec[1], :]
    if kind == "sum":
        (a, b), (c, d) = spec[1], spec[2]
        v1 = pos[..., b, :] - pos[..., a, :]
        v2 = pos[..., d, :] - pos[..., c, :]
        return (v1 / np.maximum(np.linalg.norm(v1, axis=-1, keepdims=True), 1e-9)
                + v2 / np.maximum(np.linalg.norm(v2, axis=-1, keepdims=True), 1e-9))
    if kind == "hinge":
        a, b, c = spec[1:]
        return np.cross(pos[..., b, :] - pos[..., a, :], pos[..., c, :] - pos[..., b, :])
    raise ValueError(kind)


def semantic_frames(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical orientation estimates from joint positions.

    Parameters
    ----------
    positions : np.ndarray [shape=(F, J, 3)]

    Returns
    -------
    frames : np.ndarray [shape=(F, J, 3, 3)]
        ``F_j(f)``: rotation taking the T-pose semantic frame of joint j to its frame at f.
    weights : np.ndarray [shape=(F, J)]
        Reliability in [0, 1]: sine of the angle between primary and secondary cue.
    """
    pos = np.asarray(positions, dtype=np.float64)
    n = pos.shape[0]
    frames = np.zeros((n, N_JOINTS, 3, 3))
    weights = np.zeros((n, N_JOINTS))
    for j in range(N_JOINTS):
        spec = SEMANTIC[j]
        if spec[0] == "parent":
            continue
        child, cue, p_t, s_t = spec
        prim = pos[:, child] - pos[:, j]
        sec = _cue(cue, pos)
        basis = rm.frame_from_axes(prim, sec)
        frames[:, j] = basis @ rm.frame_from_axes(p_t, s_t).T
        pn = prim / np.maximum(np.linalg.norm(prim, axis=-1, keepdims=True), 1e-12)
        sn = sec / np.maximum(np.linalg.norm(sec, axis=-1, keepdims=True), 1e-12)
        weights[:, j] = np.linalg.norm(np.cross(pn, sn), axis=-1)
    for j in range(N_JOINTS):
        if SEMANTIC[j][0] == "parent":
            frames[:, j] = frames[:, CANON_PARENTS[j]]
            weights[:, j] = weights[:, CANON_PARENTS[j]]
    return frames, weights


def estimate_offsets(bone_rotations: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Per-joint constant offsets C_j [shape=(J, 3, 3)] with ``q_j(f) = R_bone(f) @ C_j``.

    ``bone_rotations`` [shape=(F, J, 3, 3)] are the world orientations of the source bones that
    play each joint; ``positions`` [shape=(F, J, 3)] their joint positions. Least squares over
    frames, weighted by cue reliability.
    """
    frames, w = semantic_frames(positions)
    acc = np.einsum("fj,fjba,fjbc->jac", w, bone_rotations, frames)
    return rm.orthonormalize(acc + 1e-12 * np.eye(3))


def canonical_rotations(bone_rotations: np.ndarray, positions: np.ndarray, *,
                        rest_offsets: np.ndarray | None = None,
                        max_rest_deviation_deg: float = 45.0) -> tuple[np.ndarray, np.ndarray]:
    """Canonical joint quaternions [shape=(F, J, 4)] (sign-continuous) of a source take.

    Each joint's offset comes from the source's rest pose (``rest_offsets``, from
    :func:`target_tpose_rotations`, the same convention as targets, so twist transfers exactly
    between rigs with sane rest poses) unless it deviates from the animation-based estimate of
    :func:`estimate_offsets` by more than ``max_rest_deviation_deg`` -- a rest pose that is not
    a T/A-pose, like CMU subject 5's upside-down legs -- in which case the estimate is used.

    Returns the quaternions and a boolean mask [shape=(J,)] of joints that used the rest pose.
    """
    offsets = estimate_offsets(bone_rotations, positions)
    used_rest = np.zeros(N_JOINTS, dtype=bool)
    if rest_offsets is not None:
        d = np.swapaxes(offsets, -1, -2) @ rest_offsets
        ang = np.degrees(np.arccos(np.clip((np.trace(d, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))
        used_rest = ang <= max_rest_deviation_deg
        offsets = np.where(used_rest[:, None, None], rest_offsets, offsets)
    q = rm.matrix_to_quat(bone_rotations @ offsets[None])
    return rm.quat_make_continuous(q, axis=0), used_rest


def rest_offsets(rig: TargetRig) -> np.ndarray:
    """Offsets C_j [shape=(J, 3, 3)] of a rig from its rest pose: ``q_j = R_bone @ C_j``."""
    q_rest = target_tpose_rotations(rig)
    return np.swapaxes(rig.rest_rots, -1, -2) @ q_rest


# --- body measurements -------------------------------------------------------------------------

def leg_length(positions: np.ndarray) -> float:
    """Median hip-to-ankle length (thigh + shin), averaged over both legs, in input units."""
    p = np.asarray(positions, dtype=np.float64).reshape(-1, N_JOINTS, 3)
    total = []
    for s in ("Left", "Right"):
        a, b, c = J[s + "UpperLeg"], J[s + "LowerLeg"], J[s + "Foot"]
        total.append(np.linalg.norm(p[:, b] - p[:, a], axis=-1)
                     + np.linalg.norm(p[:, c] - p[:, b], axis=-1))
    return float(np.median(np.mean(total, axis=0)))


def tpose_positions(positions: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """The body of a motion in the canonical T-pose [shape=(J, 3)], feet on the floor.

    Single-child bones get their median length along :data:`TPOSE_DIRECTION`; the children of
    Hips and Chest keep their median offsets in the parent's canonical frame. Used to build test
    armatures with the proportions of a library phrase.
    """
    pos = np.asarray(positions, dtype=np.float64)
    rot = rm.quat_to_matrix(np.asarray(rotations, dtype=np.float64))
    out = np.zeros((N_JOINTS, 3))
    multi = {J["Hips"], J["Chest"]}
    for j in range(1, N_JOINTS):
        p = CANON_PARENTS[j]
        if p in multi:
            local = np.einsum("fba,fb->fa", rot[:, p], pos[:, j] - pos[:, p])
            out[j] = out[p] + np.median(local, axis=0)
        else:
            length = np.median(np.linalg.norm(pos[:, j] - pos[:, p], axis=-1))
            out[j] = out[p] + TPOSE_DIRECTION[p] * length
    floor = min(out[J["LeftToes"], 2], out[J["RightToes"], 2],
                out[J["LeftFoot"], 2] - 0.06, out[J["RightFoot"], 2] - 0.06)
    out[:, 2] -= floor
    return out


# --- target side ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TargetRig:
    """A target armature in motion space (metres, +Z up), as the solve needs it.

    ``joints``: canonical indices that are mapped, in canonical order; ``rest_heads`` [(J, 3)]
    and ``rest_rots`` [(J, 3, 3)] are rest head positions and orientations of their bones (rows
    of unmapped joints are unused); ``tail_dirs`` [(J, 3)] each bone's rest head->tail direction.
    """

    joints: tuple[int, ...]
    rest_heads: np.ndarray
    rest_rots: np.ndarray
    tail_dirs: np.ndarray

    def mapped(self, j: int) -> bool:
        return j in self.joints

    def mapped_parent(self, j: int) -> int:
        p = CANON_PARENTS[j]
        while p >= 0 and p not in self.joints:
            p = CANON_PARENTS[p]
        return p

    def mapped_children(self, j: int) -> list[int]:
        """Nearest mapped canonical descendants of j (skipping unmapped joints)."""
        out = []
        for c in range(N_JOINTS):
            if CANON_PARENTS[c] == j:
                if c in self.joints:
                    out.append(c)
                else:
                    out += self.mapped_children(c)
        return out

    def primary_child(self, j: int) -> int | None:
        """Mapped joint along j's primary chain (Chest -> Neck, else Head), or None."""
        spec = SEMANTIC[j]
        c = spec[0] if spec[0] != "parent" else None
        while c is not None and c not in self.joints:
            nxt = SEMANTIC[c][0]
            c = nxt if nxt != "parent" else None
        return c

    def leg_length(self) -> float:
        total = []
        for s in ("Left", "Right"):
            a, b, c = J[s + "UpperLeg"], J[s + "LowerLeg"], J[s + "Foot"]
            h = self.rest_heads
            total.append(np.linalg.norm(h[b] - h[a]) + np.linalg.norm(h[c] - h[b]))
        return float(np.mean(total))


def target_tpose_rotations(rig: TargetRig) -> np.ndarray:
    """Canonical orientation of each mapped target bone in its rest pose [shape=(J, 3, 3)].

    The rig's T-pose orientation of bone j is then ``R_T = q_rest_j^T @ rest_rots[j]``.
    """
    q = np.tile(np.eye(3), (N_JOINTS, 1, 1))
    h = rig.rest_heads
    for j in rig.joints:
        spec = SEMANTIC[j]
        parent = rig.mapped_parent(j)
        q_parent = q[parent] if parent >= 0 else np.eye(3)
        child = rig.primary_child(j)
        if child is None:                              # leaf: borrow the parent's frame
            q[j] = q_parent
            continue
        p_t = spec[2]
        prim = h[child] - h[j]
        cue = spec[1]
        refs = [i for i in (cue[1:] if cue[0] in ("vec", "hinge") else
                            (*cue[1], *cue[2])) if isinstance(i, (int, np.integer))]
        usable = cue[0] != "hinge" and all(r in rig.joints for r in refs)
        if usable:
            sec = _cue(cue, h)
            sn = np.linalg.norm(sec)
            pn = np.linalg.norm(prim)
            usable = sn > 1e-9 and np.linalg.norm(np.cross(prim / pn, sec / sn)) > 0.3
        if usable:
            q[j] = rm.frame_from_axes(prim, sec) @ rm.frame_from_axes(p_t, spec[3]).T
        elif parent < 0:
            q[j] = rm.rotation_between(p_t, prim)
        else:
            q[j] = rm.rotation_between(q_parent @ p_t, prim) @ q_parent
    return q


def tpose_orientations(rig: TargetRig) -> np.ndarray:
    """The rig's T-pose orientation of every bone, ``R_T = q_rest^T @ rest_rots`` [(J, 3, 3)]
    (what :func:`solve_target` starts each bone from; constant per rig)."""
    return np.swapaxes(target_tpose_rotations(rig), -1, -2) @ rig.rest_rots


def solve_target(rig: TargetRig, positions: np.ndarray, rotations: np.ndarray, *,
                 slack_m: float = 0.0, movable: frozenset[int] | set[int] = frozenset(),
                 tpose: np.ndarray | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World orientations and heads of the target's mapped bones that follow a motion.

    Parameters
    ----------
    rig : TargetRig
        The target in motion space.
    positions : np.ndarray [shape=(F, J, 3)]
        Desired joint positions (already scaled to the target's size).
    rotations : np.ndarray [shape=(F, J, 4)]
        Canonical joint quaternions.
    slack_m : float
        Length slack: a joint in ``movable`` whose head misses its stored position by a median
        of at most ``slack_m`` (and never more than 3x that) over the motion is moved onto it
        each frame. This absorbs the frame-to-frame length changes of canonical segments that
        span several source bones (CMU subject 5's waist-to-chest), so rigs with the motion's
        proportions match it exactly; rigs with other proportions are left alone (their
        offsets exceed the slack).
    movable : set[int]
        Joints whose bones may translate (not connected, local location).
    tpose : np.ndarray, optional
        :func:`tpose_orientations` of ``rig`` when the caller has it cached.

    Returns
    -------
    rots : np.ndarray [shape=(F, J, 3, 3)]
        World orientation of each mapped bone (identity rows for unmapped joints).
    heads : np.ndarray [shape=(F, J, 3)]
        Resulting head positions (to check the fit).
    shifts : np.ndarray [shape=(F, J, 3)]
        World translation applied to each joint's head beyond its rest offset (zeros unless
        slack was used).
    """
    pos = np.asarray(positions, dtype=np.float64)
    qmat = rm.quat_to_matrix(np.asarray(rotations, dtype=np.float64))
    n = pos.shape[0]
    r_t = tpose_orientations(rig) if tpose is None else tpose   # rig's T-pose orientations
    rots = np.tile(np.eye(3), (n, N_JOINTS, 1, 1))
    heads = np.zeros((n, N_JOINTS, 3))
    shifts = np.zeros((n, N_JOINTS, 3))
    for j in rig.joints:
        parent = rig.mapped_parent(j)
        if parent < 0:
            heads[:, j] = pos[:, j]
        else:
            rest_off = rig.rest_rots[parent].T @ (rig.rest_heads[j] - rig.rest_heads[parent])
            heads[:, j] = heads[:, parent] + rots[:, parent] @ rest_off
            if slack_m > 0 and j in movable:
                miss = pos[:, j] - heads[:, j]
                dist = np.linalg.norm(miss, axis=-1)
                if np.median(dist) <= slack_m and dist.max() <= 3 * slack_m:
                    shifts[:, j] = miss
                    heads[:, j] = pos[:, j]
        children = rig.mapped_children(j)
        local = [rig.rest_rots[j].T @ (rig.rest_heads[c] - rig.rest_heads[j]) for c in children]
        base = qmat[:, j] @ r_t[j]
        if len(children) >= 2:
            src = np.broadcast_to(np.array(local), (n, len(children), 3))
            dst = pos[:, children] - heads[:, j, None]
            w = np.array([2.0 if c == rig.primary_child(j) else 1.0 for c in children])
            rots[:, j] = rm.kabsch(src, dst, w)
        elif len(children) == 1:
            d0 = base @ local[0]
            d1 = pos[:, children[0]] - heads[:, j]
            rots[:, j] = rm.rotation_between(d0, d1) @ base
        else:
            rots[:, j] = base
    return rots, heads, shifts
