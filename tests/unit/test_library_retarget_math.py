"""Rotation helpers and the bpy-free retarget solve on synthetic skeletons."""

from __future__ import annotations

import numpy as np
import pytest

from blender_m2d.core import rigmath as rm
from blender_m2d.core.retargeting import (
    N_JOINTS,
    TPOSE_DIRECTION,
    TargetRig,
    canonical_rotations,
    estimate_offsets,
    leg_length,
    rest_offsets,
    semantic_frames,
    solve_target,
    target_tpose_rotations,
    tpose_positions,
)
from blender_m2d.core.skeleton import CANON_PARENTS, JOINT_INDEX

J = JOINT_INDEX
RNG = np.random.default_rng(7)


def _random_rotations(n: int) -> np.ndarray:
    return rm.quat_to_matrix(rm.quat_normalize(RNG.normal(size=(n, 4))))


@pytest.mark.parametrize("order", rm.EULER_ORDERS)
def test_euler_round_trip_in_every_blender_order(order):
    angles = RNG.uniform(-3, 3, size=(500, 3))
    m = rm.euler_to_matrix(angles, order)
    back = rm.matrix_to_euler(m, order)
    np.testing.assert_allclose(rm.euler_to_matrix(back, order), m, atol=1e-9)


def test_euler_order_convention_matches_blender():
    # 'XYZ' applies X first: R = Rz @ Ry @ Rx
    a = np.array([0.3, -0.4, 0.5])
    rx, ry, rz = (rm.euler_to_matrix(np.eye(3)[i] * a[i], "XYZ") for i in range(3))
    np.testing.assert_allclose(rm.euler_to_matrix(a, "XYZ"), rz @ ry @ rx, atol=1e-12)
    np.testing.assert_allclose(rm.euler_to_matrix(a, "ZYX"), rx @ ry @ rz, atol=1e-12)


def test_quaternion_matrix_round_trip_and_product():
    q = rm.quat_normalize(RNG.normal(size=(300, 4)))
    m = rm.quat_to_matrix(q)
    q2 = rm.matrix_to_quat(m)
    np.testing.assert_allclose(np.abs(np.sum(q * q2, -1)), 1.0, atol=1e-12)
    a, b = q[:150], q[150:]
    np.testing.assert_allclose(rm.quat_to_matrix(rm.quat_mul(a, b)),
                               rm.quat_to_matrix(a) @ rm.quat_to_matrix(b), atol=1e-12)
    cont = rm.quat_make_continuous(np.concatenate([q[:1], -q[:1], q[:1]]))
    assert np.all(np.sum(cont[1:] * cont[:-1], -1) > 0)


def test_rotation_between_handles_opposite_directions():
    a = RNG.normal(size=(200, 3))
    b = RNG.normal(size=(200, 3))
    b[:3] = -a[:3]
    r = rm.rotation_between(a, b)
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", r, an), bn, atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-9)


def test_kabsch_recovers_a_rotation():
    r = _random_rotations(20)
    src = RNG.normal(size=(20, 4, 3))
    dst = np.einsum("nij,nkj->nki", r, src)
    np.testing.assert_allclose(rm.kabsch(src, dst), r, atol=1e-9)


def _tpose() -> np.ndarray:
    p = np.zeros((N_JOINTS, 3))
    p[0] = (0, 0, 0.95)
    lengths = {J["Spine"]: 0.1, J["Chest"]: 0.25, J["Neck"]: 0.2, J["Head"]: 0.1,
               J["LeftUpperArm"]: 0.14, J["LeftLowerArm"]: 0.28, J["LeftHand"]: 0.25,
               J["RightUpperArm"]: 0.14, J["RightLowerArm"]: 0.28, J["RightHand"]: 0.25,
               J["LeftLowerLeg"]: 0.42, J["LeftFoot"]: 0.42, J["LeftToes"]: 0.14,
               J["RightLowerLeg"]: 0.42, J["RightFoot"]: 0.42, J["RightToes"]: 0.14}
    for j in range(1, N_JOINTS):
        par = CANON_PARENTS[j]
        if j in (J["LeftShoulder"], J["RightShoulder"]):
            p[j] = p[J["Chest"]] + (0.03 if j == J["LeftShoulder"] else -0.03, 0, 0.15)
        elif j in (J["LeftUpperLeg"], J["RightUpperLeg"]):
            p[j] = p[0] + (0.09 if j == J["LeftUpperLeg"] else -0.09, 0, -0.03)
        else:
            p[j] = p[par] + TPOSE_DIRECTION[par] * lengths[j]
    return p


def _pose(tpose: np.ndarray, rots: np.ndarray, root: np.ndarray) -> np.ndarray:
    """FK: every joint rotates its subtree by its world rotation (rots = canonical q)."""
    n = rots.shape[0]
    out = np.zeros((n, N_JOINTS, 3))
    out[:, 0] = root
    for j in range(1, N_JOINTS):
        par = CANON_PARENTS[j]
        out[:, j] = out[:, par] + np.einsum("nij,j->ni", rots[:, par], tpose[j] - tpose[par])
    return out


def _motion(n: int = 120):
    """A dance-like motion: free 3D joint rotations, hinge-only elbows and knees, mostly
    flexing ankles; local rotations average to zero over the cycle (no systematic twist)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    small = np.stack([0.4 * np.sin(t + k) for k in range(3)], -1)
    rots = np.zeros((n, N_JOINTS, 3, 3))
    bend = 0.7 + 0.5 * np.sin(2 * t)
    z = np.zeros(n)
    for j in range(N_JOINTS):
        rots[:, j] = rm.euler_to_matrix(small * (0.3 + 0.05 * j), "XYZ")
    for side, sign in (("Left", -1.0), ("Right", 1.0)):
        rots[:, J[side + "LowerArm"]] = rm.euler_to_matrix(np.stack([z, z, sign * bend], -1),
                                                          "XYZ")
        rots[:, J[side + "LowerLeg"]] = rm.euler_to_matrix(np.stack([0.8 * bend, z, z], -1),
                                                          "XYZ")
        rots[:, J[side + "Foot"]] = rm.euler_to_matrix(
            np.stack([0.3 * np.sin(t), 0.05 * np.cos(t), z], -1), "XYZ")
    # world rotations must compose: child world = parent world @ local
    world = np.zeros_like(rots)
    for j in range(N_JOINTS):
        par = CANON_PARENTS[j]
        world[:, j] = rots[:, j] if par < 0 else world[:, par] @ rots[:, j]
    tpose = _tpose()
    pos = _pose(tpose, world, np.stack([0.1 * np.sin(t), 0.05 * t, 0.95 + 0.02 * np.cos(t)],
                                       -1))
    return tpose, world, pos


def test_semantic_frames_are_identity_in_the_canonical_tpose():
    frames, w = semantic_frames(_tpose()[None])
    for j in range(N_JOINTS):
        if w[0, j] > 0.3:       # hinge cues vanish for straight limbs
            np.testing.assert_allclose(frames[0, j], np.eye(3), atol=1e-9)


def test_offsets_of_an_upside_down_rest_pose_are_recovered_from_the_motion():
    _, world, pos = _motion()
    # a "bone" whose axes are an arbitrary constant rotation away from the canonical frame
    off = _random_rotations(N_JOINTS)
    bone_rot = world @ np.swapaxes(off, -1, -2)[None]
    est = estimate_offsets(bone_rot, pos)
    d = np.swapaxes(est, -1, -2) @ off
    err_deg = np.degrees(np.arccos(np.clip((np.trace(d, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))
    assert err_deg.max() < 8.0, err_deg.round(1)
    q, used_rest = canonical_rotations(bone_rot, pos, rest_offsets=off)
    assert used_rest.all()
    np.testing.assert_allclose(np.abs(np.sum(q * rm.matrix_to_quat(world), -1)), 1, atol=1e-9)
    flipped = off.copy()
    flipped[J["LeftUpperLeg"]] = flipped[J["LeftUpperLeg"]] @ rm.euler_to_matrix(
        np.array([np.pi, 0, 0]), "XYZ")
    _, used_rest = canonical_rotations(bone_rot, pos, rest_offsets=flipped)
    assert not used_rest[J["LeftUpperLeg"]] and used_rest[J["RightUpperLeg"]]


def _rig_from(tpose: np.ndarray, *, facing_yaw: float = 0.0, a_pose: bool = False,
              drop=()) -> TargetRig:
    p = tpose.copy()
    rots = np.tile(np.eye(3), (N_JOINTS, 1, 1))
    if a_pose:
        for side, sign in (("Left", 1), ("Right", -1)):
            r = rm.euler_to_matrix(np.array([0, sign * np.pi / 4, 0]), "XYZ")
            ua = J[side + "UpperArm"]
            for j in (ua, J[side + "LowerArm"], J[side + "Hand"]):
                p[j] = p[ua] + r @ (p[j] - p[ua])
                rots[j] = r
    # arbitrary bone rolls: rig bone axes differ from canonical ones
    rolls = _random_rotations(N_JOINTS)
    rots = rots @ rolls
    yaw = rm.yaw_matrix(facing_yaw)
    p = p @ yaw.T
    rots = yaw[None] @ rots
    joints = tuple(j for j in range(N_JOINTS) if j not in drop)
    return TargetRig(joints, p, rots, rots[:, :, 1])


@pytest.mark.parametrize("kwargs", [{}, {"a_pose": True}, {"facing_yaw": np.pi},
                                    {"drop": (J["LeftToes"], J["RightToes"])}])
def test_solve_reproduces_joint_positions_on_rigs_with_other_rest_poses(kwargs):
    tpose, world, pos = _motion()
    rig = _rig_from(tpose, **kwargs)
    q = rm.matrix_to_quat(world)
    _, heads, _ = solve_target(rig, pos, q)
    err = np.linalg.norm(heads[:, list(rig.joints)] - pos[:, list(rig.joints)], axis=-1)
    assert err.max() < 1e-6


def test_rigs_without_neck_or_shoulders_follow_approximately():
    tpose, world, pos = _motion()
    rig = _rig_from(tpose, drop=(J["Neck"], J["LeftShoulder"], J["RightShoulder"]))
    _, heads, _ = solve_target(rig, pos, rm.matrix_to_quat(world))
    err = np.linalg.norm(heads - pos, axis=-1)[:, list(rig.joints)]
    assert err.max() < 0.05
    legs = [rig.joints.index(J[n]) for n in ("LeftFoot", "RightToes", "Hips")]
    assert err[:, legs].max() < 1e-6


def test_solve_transfers_twist_between_rigs_with_sane_rest_poses():
    tpose, world, pos = _motion()
    src = _rig_from(tpose)
    tgt = _rig_from(tpose, a_pose=True)
    # source bone orientations from the canonical motion and its rest offsets
    c_src = rest_offsets(src)
    bone_rot = world @ np.swapaxes(c_src, -1, -2)[None]
    q, used = canonical_rotations(bone_rot, pos, rest_offsets=c_src,
                                  max_rest_deviation_deg=180.0)
    assert used.all()
    rots, _, _ = solve_target(tgt, pos, q)
    # target bone = canonical rotation x its T-pose orientation
    r_t = np.swapaxes(target_tpose_rotations(tgt), -1, -2) @ tgt.rest_rots
    for j in (J["LeftLowerArm"], J["RightHand"], J["Head"]):
        np.testing.assert_allclose(rots[:, j], world[:, j] @ r_t[j], atol=1e-6)


def test_tpose_and_leg_length_of_a_motion():
    tpose, world, pos = _motion()
    t = tpose_positions(pos, rm.matrix_to_quat(world))
    np.testing.assert_allclose(t - t[0], tpose - tpose[0], atol=1e-9)
    assert leg_length(pos) == pytest.approx(0.84, abs=1e-9)


def test_length_slack_absorbs_a_stretching_segment_but_not_other_proportions():
    tpose, world, pos = _motion()
    q = rm.matrix_to_quat(world)
    stretched = pos.copy()
    wobble = 0.006 * np.sin(np.linspace(0, 6 * np.pi, pos.shape[0]))
    chest = J["Chest"]
    up = pos[:, chest] - pos[:, J["Spine"]]
    up /= np.linalg.norm(up, axis=1, keepdims=True)
    above = [j for j in range(N_JOINTS) if j >= chest and j not in (
        J["LeftUpperLeg"], J["LeftLowerLeg"], J["LeftFoot"], J["LeftToes"], J["RightUpperLeg"],
        J["RightLowerLeg"], J["RightFoot"], J["RightToes"])]
    stretched[:, above] += (wobble[:, None] * up)[:, None]      # the spine segment stretches
    rig = _rig_from(tpose)
    _, heads, shifts = solve_target(rig, stretched, q)
    assert np.linalg.norm(heads - stretched, axis=-1).max() > 0.004
    _, heads, shifts = solve_target(rig, stretched, q, slack_m=0.01,
                                    movable=set(range(1, N_JOINTS)))
    np.testing.assert_allclose(heads, stretched, atol=1e-6)
    assert np.abs(shifts[:, chest]).max() > 0.004
    big = _rig_from(tpose * 1.1)                                   # other proportions
    _, heads, shifts = solve_target(big, pos, q, slack_m=0.01, movable=set(range(1, N_JOINTS)))
    assert np.abs(shifts[:, J["LeftHand"]]).max() == 0.0
