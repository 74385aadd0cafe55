"""Rotation math for the dance library and retargeting, batched over frames (numpy only).

Conventions (the same as Blender's ``mathutils``):

* rotation matrices act on column vectors, ``p' = R @ p``; shape ``(..., 3, 3)``;
* quaternions are ``(w, x, y, z)`` (w first), Hamilton product, ``q * v * q^-1`` rotates ``v``;
* Euler angles in radians, Blender order strings: ``"XYZ"`` means X first, so
  ``R = Rz @ Ry @ Rx``; in general order ``"ABC"`` gives ``R = R_C @ R_B @ R_A``.
"""

from __future__ import annotations

import numpy as np

EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")


# --- quaternions ---------------------------------------------------------------------------------

def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternions [shape=(..., 4)]; a zero quaternion becomes the identity."""
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    out = q / np.maximum(n, 1e-12)
    small = n[..., 0] <= 1e-12
    if small.any():
        out[small] = (1.0, 0.0, 0.0, 0.0)
    return out


def quat_conj(q: np.ndarray) -> np.ndarray:
    """Conjugate (the inverse of a unit quaternion)."""
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` (apply ``b`` first, then ``a``); broadcasts."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices [shape=(..., 3, 3)] of (not necessarily unit) quaternions."""
    q = quat_normalize(q)
    w, x, y, z = np.moveaxis(q, -1, 0)
    out = np.empty((*q.shape[:-1], 3, 3))
    out[..., 0, 0] = 1 - 2 * (y * y + z * z)
    out[..., 0, 1] = 2 * (x * y - w * z)
    out[..., 0, 2] = 2 * (x * z + w * y)
    out[..., 1, 0] = 2 * (x * y + w * z)
    out[..., 1, 1] = 1 - 2 * (x * x + z * z)
    out[..., 1, 2] = 2 * (y * z - w * x)
    out[..., 2, 0] = 2 * (x * z - w * y)
    out[..., 2, 1] = 2 * (y * z + w * x)
    out[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return out


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Unit quaternions [shape=(..., 4)] with ``w >= 0`` from rotation matrices (..., 3, 3)."""
    m = np.asarray(m, dtype=np.float64)
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    d21 = m[..., 2, 1] - m[..., 1, 2]
    d02 = m[..., 0, 2] - m[..., 2, 0]
    d10 = m[..., 1, 0] - m[..., 0, 1]
    s21 = m[..., 2, 1] + m[..., 1, 2]
    s02 = m[..., 0, 2] + m[..., 2, 0]
    s10 = m[..., 1, 0] + m[..., 0, 1]
    # Shepperd: four candidate (unnormalised) quaternions, keep the best-conditioned one.
    diag = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                     1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    k = np.argmax(diag, axis=-1)
    cands = (
        (diag[..., 0], d21, d02, d10),
        (d21, diag[..., 1], s10, s02),
        (d02, s10, diag[..., 2], s21),
        (d10, s02, s21, diag[..., 3]),
    )
    q = np.empty((*m.shape[:-2], 4))
    for c in range(4):
        q[..., c] = np.choose(k, [cand[c] for cand in cands])
    q = quat_normalize(q)
    return np.where(q[..., :1] < 0, -q, q)


def quat_make_continuous(q: np.ndarray, *, axis: int = 0) -> np.ndarray:
    """Flip signs along ``axis`` (frames) so consecutive quaternions have a positive dot."""
    q = np.array(q, dtype=np.float64, copy=True)
    q = np.moveaxis(q, axis, 0)
    if q.shape[0] > 1:
        dots = np.sum(q[1:] * q[:-1], axis=-1)
        flips = np.cumsum(dots < 0, axis=0) % 2 == 1
        q[1:] = np.where(flips[..., None], -q[1:], q[1:])
    return np.moveaxis(q, 0, axis)


def yaw_quat(angle_rad) -> np.ndarray:
    """Quaternion of a rotation by ``angle_rad`` about +Z [shape=(..., 4)]."""
    a = np.asarray(angle_rad, dtype=np.float64) * 0.5
    z = np.zeros_like(a)
    return np.stack([np.cos(a), z, z, np.sin(a)], axis=-1)


def yaw_matrix(angle_rad) -> np.ndarray:
    """Rotation matrix about +Z [shape=(..., 3, 3)]."""
    a = np.asarray(angle_rad, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    out = np.zeros((*a.shape, 3, 3))
    out[..., 0, 0], out[..., 0, 1], out[..., 1, 0], out[..., 1, 1] = c, -s, s, c
    out[..., 2, 2] = 1.0
    return out


# --- Euler angles (Blender orders) ------------------------------------------------------------

def _axis_matrix(axis: str, a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    out = np.zeros((*a.shape, 3, 3))
    i = "XYZ".index(axis)
    j, k = (i + 1) % 3, (i + 2) % 3
    out[..., i, i] = 1.0
    out[..., j, j], out[..., j, k], out[..., k, j], out[..., k, k] = c, -s, s, c
    return out


def euler_to_matrix(angles: np.ndarray, order: str = "XYZ") -> np.ndarray:
    """Rotation matrices of Blender Euler angles [shape=(..., 3)] (x, y, z in radians)."""
    if order not in EULER_ORDERS:
        raise ValueError(f"unknown Euler order {order!r}")
    angles = np.asarray(angles, dtype=np.float64)
    m = None
    for axis in order:
        r = _axis_matrix(axis, angles[..., "XYZ".index(axis)])
        m = r if m is None else r @ m
    return m


def matrix_to_euler(m: np.ndarray, order: str = "XYZ") -> np.ndarray:
    """Blender Euler angles [shape=(..., 3)] of rotation matrices; unwrapped along axis 0."""
    if order not in EULER_ORDERS:
        raise ValueError(f"unknown Euler order {order!r}")
    m = np.asarray(m, dtype=np.float64)
    # R = R_c R_b R_a with (a, b, c) = order. Tait-Bryan decomposition via index permutation.
    i, j, k = ("XYZ".index(order[0]), "XYZ".index(order[1]), "XYZ".index(order[2]))
    parity = 1.0 if (j - i) % 3 == 1 else -1.0
    # For R = Rk Rj Ri: R[k, i] = -parity * sin(b)
    sb = np.clip(-parity * m[..., k, i], -1.0, 1.0)
    b = np.arcsin(sb)
    cb = np.sqrt(np.maximum(0.0, 1 - sb * sb))
    regular = cb > 1e-6
    a = np.where(regular, np.arctan2(parity * m[..., k, j], m[..., k, k]),
                 np.arctan2(-parity * m[..., j, k], m[..., j, j]))
    c = np.where(regular, np.arctan2(parity * m[..., j, i], m[..., i, i]), 0.0)
    out = np.empty((*m.shape[:-2], 3))
    out[..., i], out[..., j], out[..., k] = a, b, c
    if out.ndim >= 2 and out.shape[0] > 1:
        out = np.unwrap(out, axis=0)
    return out


# --- constructions -------------------------------------------------------------------------------

def orthonormalize(m: np.ndarray) -> np.ndarray:
    """Nearest rotation matrix (polar decomposition via SVD) [shape=(..., 3, 3)]."""
    u, _, vt = np.linalg.svd(np.asarray(m, dtype=np.float64))
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    u = u.copy()
    u[..., :, 2] *= d[..., None]
    return u @ vt


def rigid_inverse(m: np.ndarray, *, tol: float = 1e-5) -> np.ndarray:
    """Inverse of 4x4 rigid transforms [shape=(..., 4, 4)] in closed form (``R^T``,
    ``-R^T t``); falls back to ``np.linalg.inv`` when a matrix is not rigid (scale, shear,
    projective row)."""
    m = np.asarray(m, dtype=np.float64)
    r = m[..., :3, :3]
    rt = np.swapaxes(r, -1, -2)
    rigid = (np.abs(rt @ r - np.eye(3)).max() <= tol
             and np.abs(m[..., 3, :] - np.array([0.0, 0.0, 0.0, 1.0])).max() <= tol)
    if not rigid:
        return np.linalg.inv(m)
    out = np.zeros_like(m)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -(rt @ m[..., :3, 3, None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def frame_from_axes(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Orthonormal frames [shape=(..., 3, 3)] with columns (p, s', p x s').

    ``p`` is ``primary`` normalised; ``s'`` is ``secondary`` made orthogonal to it. Degenerate
    secondaries (parallel to the primary) fall back to a fixed perpendicular axis.
    """
    p = np.asarray(primary, dtype=np.float64)
    s = np.asarray(secondary, dtype=np.float64)
    p = p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
    s = s - np.sum(s * p, axis=-1, keepdims=True) * p
    n = np.linalg.norm(s, axis=-1, keepdims=True)
    fallback = np.where(np.abs(p[..., :1]) < 0.9, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
    fallback = fallback - np.sum(fallback * p, axis=-1, keepdims=True) * p
    fallback /= np.linalg.norm(fallback, axis=-1, keepdims=True)
    s = np.where(n > 1e-9, s / np.maximum(n, 1e-12), fallback)
    return np.stack([p, s, np.cross(p, s)], axis=-1)


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation [shape=(..., 3, 3)] taking direction ``a`` onto direction ``b``.

    For opposite directions the rotation is 180 degrees about an axis perpendicular to ``a``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    a, b = np.broadcast_arrays(a, b)
    v = np.cross(a, b)
    c = np.sum(a * b, axis=-1)
    # quaternion (1 + c, v) normalised; for c ~ -1 use a perpendicular axis
    q = np.concatenate([(1.0 + c)[..., None], v], axis=-1)
    opposite = c < -1 + 1e-9
    if np.any(opposite):
        perp = np.where(np.abs(a[..., :1]) < 0.9, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
        axis = np.cross(a, perp)
        axis /= np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-12)
        flip = np.concatenate([np.zeros_like(c)[..., None], axis], -1)
        q = np.where(opposite[..., None], flip, q)
    return quat_to_matrix(q)


def kabsch(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Rotations R [shape=(..., 3, 3)] minimising sum_i w_i |R src_i - dst_i|^2.

    ``src`` and ``dst`` have shape (..., n, 3) (vectors, no translation).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if weights is not None:
        src = src * np.asarray(weights, dtype=np.float64)[..., None]
    h = np.swapaxes(dst, -1, -2) @ src          # sum_i dst_i src_i^T
    return orthonormalize(h)


def yaw_of_direction(v: np.ndarray) -> np.ndarray:
    """Heading angle (radians, about +Z) of horizontal direction ``v`` measured from +X."""
    v = np.asarray(v, dtype=np.float64)
    return np.arctan2(v[..., 1], v[..., 0])
