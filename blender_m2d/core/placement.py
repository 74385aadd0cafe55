"""Place library dance phrases on the music: time warp, root alignment, feet (no bpy).

For every placed phrase this module produces the canonical motion (world joint positions and
rotations on :data:`~blender_m2d.core.skeleton.CANON_JOINTS`) sampled at the scene frame rate on
the scene frames of its NLA strip. The bpy layer (:mod:`blender_m2d.nla`) writes each one to an
Action and crossfades them on alternating NLA tracks. Everything is deterministic numpy.

Frames
    Scene frame ``frame_start`` (Blender's 1) is time 0 of the song. Phrase ``i`` covers the
    music interval ``[s_i, e_i]``; its strip starts ``crossfade_frames / 2`` before ``s_i`` and
    ends ``crossfade_frames / 2`` after ``e_i`` (not before the song's first frame), so
    consecutive strips overlap by exactly ``crossfade_frames`` frames, centred on the phrase
    boundary (default 0.3 s rounded to an even number of frames: 10 at 30 fps).

Time warp (:func:`fit_warp`)
    A monotone piecewise-linear map from song time to the dance phrase's own time whose anchors
    pin dance beats (library ``beats_s``) onto music beats of the phrase. The anchor chain is the
    best path of a small dynamic programme: +1 per anchored dance beat, -0.7 per dance beat left
    between anchors, -0.15 per music beat skipped, and ``2 * ln(rate / g)**2`` per music beat
    spanned, where ``g`` is the phrase's natural rate (dance beat period / music beat period,
    moved by octaves into range). The dance phrase start is pinned to the music phrase start.
    Local rates (dance seconds per song second) are limited to ``rate_range`` = [0.5, 2]: never
    slower than half or faster than double the captured speed between two beats (the fitted
    rates cluster near the phrase's natural rate; the extremes are reached only for a beat or
    two). After the last anchor the rest of the phrase runs at the natural rate (clamped); a
    dance phrase that runs out holds its last pose (``hold_s`` in the plan), one that is too
    long is cut. :mod:`blender_m2d.core.beatsync` then refines the anchors against the
    dance-beat detector run on the composed dance. With ``accent`` > 0 (default 1) the song
    time is first re-timed per music beat (:func:`accent_time`) so the dance stops on every
    music beat and moves slightly faster in between; only the timing changes.

Root motion (:func:`align_root`)
    Each phrase is turned about +Z and translated horizontally (``p' = Rz(a) p + t``,
    ``q' = qz(a) q``) so that at the middle of the crossfade its root (hips) position and heading
    (the direction of the line between the hip joints) equal the previous phrase's; heights are
    kept as captured. Phrases are chained, so the dance travels continuously.

    Over the crossfade both phrases then get the same root path, a cubic Hermite curve from the
    outgoing root's position and velocity to the incoming one's (:func:`smooth_root_seams`), so
    the blended root has no velocity kink (``root="linear"`` keeps the plain linear mix).

Quaternions
    Every joint's rotation track is made sign-continuous over time and, at each crossfade, in the
    same hemisphere as the previous phrase (NLA blends quaternions component-wise).

Feet (:func:`lock_feet`)
    A plain linear crossfade slides a planted foot from where phrase A has it to where phrase B
    has it. Here, for every seam, the blended pose the NLA will produce (root position lerp,
    local-rotation nlerp) is predicted, and over the seam zone (the crossfade plus up to
    ``release_s`` = 1 s on each side, :func:`seam_zones`) a new ankle path is fitted that keeps
    planted feet still and moves the difference into the fast steps of the swing (evenly over
    the zone when the foot never lifts), then a two-bone IK re-solves the legs. Corrected
    leg rotations (relative to the hips) are written into *both* phrases over the crossfade, so
    the NLA blend of the two equals the corrected legs, and into the outgoing phrase before and
    the incoming phrase after it. The foot-skate metric is measured over the same zones.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .retargeting import leg_length
from .skeleton import CANON_PARENTS, JOINT_INDEX

RATE_RANGE = (0.5, 2.0)
CROSSFADE_S = 0.3
ACCENT = 1.0
"""Default beat accent of the time warp (:func:`accent_time`): the dance stops on every music
beat (chosen by measurement, docs/choreography.md; 0 is the plain piecewise-linear warp)."""
ACCENT_WIDTH_S = 0.1
"""How long (s) the accent's slow-down into and out of a beat lasts (:func:`accent_time`)."""
FEET_MODES = ("lock", "none")
ROOT_MODES = ("hermite", "linear")

LEGS = (
    (JOINT_INDEX["LeftUpperLeg"], JOINT_INDEX["LeftLowerLeg"], JOINT_INDEX["LeftFoot"],
     JOINT_INDEX["LeftToes"]),
    (JOINT_INDEX["RightUpperLeg"], JOINT_INDEX["RightLowerLeg"], JOINT_INDEX["RightFoot"],
     JOINT_INDEX["RightToes"]),
)
_HIP_L, _HIP_R = JOINT_INDEX["LeftUpperLeg"], JOINT_INDEX["RightUpperLeg"]


# ================================================================ quaternions (w, x, y, z)
def qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of quaternion arrays [shape=(..., 4)], w first."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    w = aw * bw - ax * bx - ay * by - az * bz
    out = np.empty((*w.shape, 4))
    out[..., 0] = w
    out[..., 1] = aw * bx + ax * bw + ay * bz - az * by
    out[..., 2] = aw * by - ax * bz + ay * bw + az * bx
    out[..., 3] = aw * bz + ax * by - ay * bx + az * bw
    return out


def qconj(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def qnormalize(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    n = np.sqrt(np.sum(q * q, axis=-1, keepdims=True))
    return q / np.where(n > 1e-12, n, 1.0)


def qrot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors ``v`` [shape=(..., 3)] by unit quaternions ``q`` [shape=(..., 4)]."""
    q = np.asarray(q, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    vx, vy, vz = v[..., 0], v[..., 1], v[..., 2]
    # t = 2 u x v ; v' = v + w t + u x t
    tx = 2.0 * (y * vz - z * vy)
    ty = 2.0 * (z * vx - x * vz)
    tz = 2.0 * (x * vy - y * vx)
    x0 = vx + w * tx + (y * tz - z * ty)
    out = np.empty((*x0.shape, 3))
    out[..., 0] = x0
    out[..., 1] = vy + w * ty + (z * tx - x * tz)
    out[..., 2] = vz + w * tz + (x * ty - y * tx)
    return out


def qz(angle: np.ndarray | float) -> np.ndarray:
    """Rotation about +Z by ``angle`` radians."""
    a = np.asarray(angle, dtype=np.float64) * 0.5
    return np.stack([np.cos(a), np.zeros_like(a), np.zeros_like(a), np.sin(a)], axis=-1)


def qbetween(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shortest-arc rotation taking directions ``u`` to ``v`` [shape=(..., 3)]."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    u = u / np.maximum(np.linalg.norm(u, axis=-1, keepdims=True), 1e-12)
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    d = np.sum(u * v, axis=-1, keepdims=True)
    c = np.cross(u, v)
    q = np.concatenate([1.0 + d, c], axis=-1)
    # antiparallel: any axis perpendicular to u
    anti = (1.0 + d[..., 0]) < 1e-9
    if np.any(anti):
        perp = np.cross(u[anti], np.array([1.0, 0.0, 0.0]))
        small = np.linalg.norm(perp, axis=-1) < 1e-6
        perp[small] = np.cross(u[anti][small], np.array([0.0, 1.0, 0.0]))
        q[anti] = np.concatenate([np.zeros((perp.shape[0], 1)), perp], axis=-1)
    return qnormalize(q)


def nlerp(a: np.ndarray, b: np.ndarray, w: np.ndarray | float) -> np.ndarray:
    """Sign-aligned normalised linear interpolation (what the NLA does to quaternions)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    b = np.where(np.sum(a * b, axis=-1, keepdims=True) < 0, -b, b)
    w = np.asarray(w, dtype=np.float64)
    if w.ndim:
        w = w.reshape(w.shape + (1,) * (a.ndim - w.ndim))
    return qnormalize((1.0 - w) * a + w * b)


def make_continuous(rot: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Flip quaternions [shape=(F, J, 4)] so consecutive frames have a non-negative dot product
    and, if ``reference`` [shape=(J, 4)] is given, frame 0 is in its hemisphere."""
    q = np.array(rot, dtype=np.float64, copy=True)
    dots = np.sum(q[1:] * q[:-1], axis=-1)                     # (F-1, J) before any flip
    flips = np.concatenate([np.zeros((1, q.shape[1]), bool), dots < 0], axis=0)
    sign = np.where(np.cumsum(flips, axis=0) % 2 == 1, -1.0, 1.0)
    q *= sign[..., None]
    if reference is not None:
        s = np.where(np.sum(q[0] * np.asarray(reference), axis=-1) < 0, -1.0, 1.0)
        q *= s[None, :, None]
    return q


# =========================================================================== skeleton helpers
def local_rotations(rot: np.ndarray, parents: Sequence[int] = CANON_PARENTS) -> np.ndarray:
    """World rotations [shape=(F, J, 4)] -> rotations relative to the parent joint."""
    rot = np.asarray(rot, dtype=np.float64)
    out = rot.copy()
    for j, p in enumerate(parents):
        if p >= 0:
            out[:, j] = qmul(qconj(rot[:, p]), rot[:, j])
    return out


def bone_offsets(pos: np.ndarray, rot: np.ndarray,
                 parents: Sequence[int] = CANON_PARENTS) -> np.ndarray:
    """Offsets [shape=(J, 3)] of each joint in its parent's frame, ``p_j = p_p + R_p off_j``
    (mean over frames; zero for the root)."""
    pos = np.asarray(pos, dtype=np.float64)
    rot = np.asarray(rot, dtype=np.float64)
    off = np.zeros((pos.shape[1], 3))
    for j, p in enumerate(parents):
        if p >= 0:
            off[j] = qrot(qconj(rot[:, p]), pos[:, j] - pos[:, p]).mean(axis=0)
    return off


def heading(pos: np.ndarray) -> np.ndarray:
    """Heading angle (radians) of the hips [shape=(F,)]: direction of the left-to-right hip
    line turned by 90 degrees, so that it is the facing direction for any root convention."""
    lat = np.asarray(pos)[..., _HIP_L, :2] - np.asarray(pos)[..., _HIP_R, :2]
    return np.arctan2(lat[..., 1], lat[..., 0]) - 0.5 * np.pi


# =========================================================================== frames
def crossfade_frames(fps: float, crossfade_s: float = CROSSFADE_S) -> int:
    """Crossfade length in frames: ``crossfade_s`` rounded to an even count (>= 2) so the
    crossfade middle is a whole frame."""
    return max(2, 2 * math.floor(crossfade_s * fps / 2 + 0.5))


def phrase_frames(intervals_s: Sequence[tuple[float, float]], *, fps: float, frame_start: int = 1,
                  xf_frames: int) -> list[tuple[int, int]]:
    """First and last scene frame of every phrase's strip (see the module docstring)."""
    h = xf_frames // 2
    out = []
    n = len(intervals_s)
    for i, (s, e) in enumerate(intervals_s):
        a = round(frame_start + s * fps) - (h if i > 0 else 0)
        b = round(frame_start + e * fps) + (xf_frames - h if i < n - 1 else 0)
        out.append((max(a, frame_start), b))
    return out


# =========================================================================== time warp
@dataclass(frozen=True)
class Warp:
    """Monotone piecewise-linear map from song time (s) to dance-phrase time (s)."""

    anchors: np.ndarray
    """[shape=(M, 2)] (song time, dance time) knots, song time increasing."""
    dance_duration_s: float
    n_anchored: int = 0
    """Dance beats pinned to music beats."""
    n_dance_beats: int = 0
    accent: float = 0.0
    """Beat accent in [0, 1] (:func:`accent_time`): 0 is the plain piecewise-linear warp."""
    accent_beats_s: np.ndarray | None = None
    """[shape=(N,)] music beats (song time) the accent stops the dance on."""

    def __call__(self, t_s: np.ndarray) -> np.ndarray:
        t = np.asarray(t_s, dtype=np.float64)
        if self.accent > 0.0 and self.accent_beats_s is not None:
            t = accent_time(t, self.accent_beats_s, self.accent)
        a = self.anchors
        out = np.interp(t, a[:, 0], a[:, 1])
        if a.shape[0] >= 2:
            r0 = _slope(a[0], a[1])
            r1 = _slope(a[-2], a[-1])
            out = np.where(t < a[0, 0], a[0, 1] + (t - a[0, 0]) * r0, out)
            out = np.where(t > a[-1, 0], a[-1, 1] + (t - a[-1, 0]) * r1, out)
        return np.clip(out, 0.0, self.dance_duration_s)

    def rates(self) -> np.ndarray:
        a = self.anchors
        dt = np.diff(a[:, 0])
        keep = dt > 1e-9
        return np.diff(a[:, 1])[keep] / dt[keep]

    def summary(self) -> dict:
        rates = self.rates()
        moving = rates[rates > 1e-6]
        a = self.anchors
        hold = float(np.sum(np.diff(a[:, 0])[np.diff(a[:, 1]) <= 1e-9]))
        return {
            "anchors_s": [[round(float(x), 5), round(float(y), 5)] for x, y in a],
            "rate_min": round(float(moving.min()), 4) if moving.size else 0.0,
            "rate_max": round(float(moving.max()), 4) if moving.size else 0.0,
            "anchored_beats": int(self.n_anchored),
            "dance_beats": int(self.n_dance_beats),
            "dance_used_s": round(float(a[-1, 1] - a[0, 1]), 4),
            "hold_s": round(hold, 4),
            **({"accent": round(float(self.accent), 4),
                "accent_beats_s": [round(float(x), 5) for x in self.accent_beats_s]}
               if self.accent > 0.0 and self.accent_beats_s is not None else {}),
        }

    @classmethod
    def from_summary(cls, summary: Mapping, dance_duration_s: float) -> Warp:
        beats = summary.get("accent_beats_s")
        return cls(np.asarray(summary["anchors_s"], dtype=np.float64), float(dance_duration_s),
                   int(summary.get("anchored_beats", 0)), int(summary.get("dance_beats", 0)),
                   float(summary.get("accent", 0.0)),
                   None if beats is None else np.asarray(beats, dtype=np.float64))


def accent_time(t_s: np.ndarray, beats_s: np.ndarray, accent: float,
                width_s: float = ACCENT_WIDTH_S) -> np.ndarray:
    """Beat-accent re-timing of song time (the warp applies it before its anchors).

    Inside every interval ``[b_k, b_k+1]`` (length ``L``) of ``beats_s`` the clock runs at the
    rate ``f(d) = (1 - a) + a R(d / w) / (1 - 2 w / (3 L))``, ``a = accent``, ``d`` the distance
    to the nearer of the two beats, ``w = min(width_s, L / 2)`` and ``R(x) = 1 - (1 - x)^2``
    for ``x < 1``, else 1. So the dance slows down linearly into every music beat (to
    ``1 - a`` of its speed; a stop at ``a = 1``), leaves it linearly, is back to a steady speed
    ``w`` after it, and the steady part runs slightly faster (``1 / (1 - 2 w / (3 L))``: 1.14x
    for 0.1 s on a 0.53 s beat) so that every interval still takes exactly its time: the map
    is monotone, fixes every beat, keeps each interval's average rate (so the warp's rate limits
    hold on average) and is C1 (the rate is continuous, ``1 - a`` on both sides of a beat).
    The V-shaped stop is short (below 10 % of the speed for ~5 % of ``w`` on each side) with
    its deceleration peaking on the beat, which is what the dance-beat detector marks (speed
    below its threshold, strongest acceleration). The first and last intervals are repeated
    once outside the beats (a strip's crossfade parts); times beyond are unchanged.
    """
    t = np.asarray(t_s, dtype=np.float64)
    b = np.asarray(beats_s, dtype=np.float64)
    if b.size < 2 or accent <= 0.0:
        return t
    a = float(accent)
    # one more interval on either side, so the crossfade lead-in and tail of a strip stop on
    # the phrase's first and last beats too (the rate stays continuous there)
    b = np.concatenate([[2.0 * b[0] - b[1]], b, [2.0 * b[-1] - b[-2]]])
    k = np.clip(np.searchsorted(b, t, side="right") - 1, 0, b.size - 2)
    span = b[k + 1] - b[k]
    inside = (t >= b[0]) & (t <= b[-1]) & (span > 1e-9)
    span = np.where(span > 1e-9, span, 1.0)
    tau = np.clip(t - b[k], 0.0, span)
    w = np.minimum(float(width_s), 0.5 * span)
    norm = 1.0 - 2.0 * w / (3.0 * span)

    def half(d):                                   # eased time for d in [0, L/2]
        integral = d - (w / 3.0) * (1.0 - np.maximum(1.0 - d / w, 0.0) ** 3)
        return (1.0 - a) * d + a * integral / norm

    first = tau <= 0.5 * span
    eased = np.where(first, half(np.minimum(tau, 0.5 * span)),
                     span - half(np.minimum(span - tau, 0.5 * span)))
    return np.where(inside, b[k] + eased, t)


def _slope(p, q) -> float:
    dt = q[0] - p[0]
    return float((q[1] - p[1]) / dt) if dt > 1e-9 else 0.0


def natural_rate(dance_beats_s: np.ndarray, music_beats_s: np.ndarray, *,
                 dance_tempo_bpm: float | None = None,
                 rate_range: tuple[float, float] = RATE_RANGE) -> float:
    """Dance seconds per song second that puts one dance beat on every music beat, moved by
    octaves (x2, /2) towards 1 and clipped to ``rate_range``."""
    mb = np.asarray(music_beats_s, dtype=np.float64)
    p_m = float(np.median(np.diff(mb))) if mb.size >= 2 else 0.5
    p_d = dance_beat_period(dance_beats_s, dance_tempo_bpm)
    return float(fold_rate((p_m if p_d is None else p_d) / max(p_m, 1e-6), rate_range))


def dance_beat_period(dance_beats_s: np.ndarray, dance_tempo_bpm: float | None = None
                      ) -> float | None:
    """A dance phrase's beat period (s): the median interval of its beats when it has at
    least three, else ``60 / dance_tempo_bpm``, else None (unknown)."""
    db = np.asarray(dance_beats_s, dtype=np.float64)
    if db.size >= 3:
        return float(np.median(np.diff(db)))
    if dance_tempo_bpm:
        return 60.0 / float(dance_tempo_bpm)
    return None


def fold_rate(g, rate_range: tuple[float, float] = RATE_RANGE) -> np.ndarray:
    """Rates ``g`` (scalar or array) moved by octaves (x2, /2) until within 1.2x of
    ``rate_range``, then clipped to it (elementwise)."""
    lo, hi = rate_range
    g = np.array(g, dtype=np.float64)
    for _ in range(64):                  # 2^64: no finite period ratio needs more
        down = g > hi * 1.2
        if not down.any():
            break
        g = np.where(down, g / 2, g)
    for _ in range(64):
        up = g < lo / 1.2
        if not up.any():
            break
        g = np.where(up, g * 2, g)
    return np.clip(g, lo, hi)


def fit_warp(dance_beats_s: np.ndarray, dance_duration_s: float, music_beats_s: np.ndarray, *,
             rate_range: tuple[float, float] = RATE_RANGE, dance_tempo_bpm: float | None = None,
             max_music_step: int = 4, max_dance_step: int = 3,
             target_rate: float | None = None, accent: float = 0.0) -> Warp:
    """Fit the beat-anchored time warp of one dance phrase onto one music phrase.

    Parameters
    ----------
    dance_beats_s : np.ndarray [shape=(n,)]
        Dance beats of the library phrase, seconds from its first frame.
    dance_duration_s : float
        Length of the library phrase in seconds.
    music_beats_s : np.ndarray [shape=(N+1,)]
        Song times of the music phrase's beats, its start and end beats included.
    rate_range : (float, float)
        Allowed local rates, dance seconds per song second.
    target_rate : float, optional
        Preferred rate (default: :func:`natural_rate`).
    accent : float
        Beat accent in [0, 1] stored in the warp (:func:`accent_time` on ``music_beats_s``);
        the anchors do not depend on it.
    """
    lo, hi = rate_range
    mu = np.asarray(music_beats_s, dtype=np.float64)
    D = float(dance_duration_s)
    if mu.size < 2 or D <= 0:
        raise ValueError("need a music phrase with a start and an end beat and a non-empty dance")
    beta = np.asarray(dance_beats_s, dtype=np.float64)
    beta = np.concatenate([[0.0], np.sort(beta[(beta > 0.05) & (beta <= D + 1e-6)])])
    g = natural_rate(beta[1:], mu, dance_tempo_bpm=dance_tempo_bpm, rate_range=rate_range) \
        if target_rate is None else float(np.clip(target_rate, *rate_range))
    n_m, n_d = mu.size, beta.size
    mus, bet = mu.tolist(), beta.tolist()
    neg = -1e18
    val = [[neg] * n_d for _ in range(n_m)]
    back = [[(-1, -1)] * n_d for _ in range(n_m)]
    val[0][0] = 0.0
    lg = math.log(g)
    log = math.log
    for j in range(n_m - 1):
        row = val[j]
        for k in range(n_d):
            v0 = row[k]
            if v0 <= neg / 2:
                continue
            for dj in range(1, min(max_music_step, n_m - 1 - j) + 1):
                span = mus[j + dj] - mus[j]
                if span <= 1e-6:
                    continue
                nrow, nback = val[j + dj], back[j + dj]
                for dk in range(1, min(max_dance_step, n_d - 1 - k) + 1):
                    r = (bet[k + dk] - bet[k]) / span
                    if r > hi:                    # bet is sorted: r only grows with dk
                        break
                    if r < lo:
                        continue
                    v = v0 + 1.0 - 0.7 * (dk - 1) - 0.15 * (dj - 1) - 2.0 * dj * (
                        log(r) - lg) ** 2
                    if v > nrow[k + dk]:
                        nrow[k + dk] = v
                        nback[k + dk] = (j, k)
    best, best_state, best_tail = neg, (0, 0), None
    for j in range(n_m):
        for k in range(n_d):
            if val[j][k] <= max(best, neg / 2):   # the tail costs >= 0: cannot win
                continue
            tail, cost = _tail(mus[j], bet[k], mus[-1], D, bet, g, lo, hi)
            v = val[j][k] - cost
            if v > best:
                best, best_state, best_tail = v, (j, k), tail
    chain = []
    j, k = best_state
    while j >= 0:
        chain.append((mus[j], bet[k]))
        j, k = back[j][k]
    chain.reverse()
    anchors = chain + (best_tail or [])
    return Warp(np.asarray(anchors, dtype=np.float64), D, n_anchored=len(chain),
                n_dance_beats=int(beta.size), accent=float(accent),
                accent_beats_s=mu.copy() if accent > 0 else None)


def _tail(t0: float, tau0: float, t_end: float, D: float, beta: list, g: float, lo: float,
          hi: float):
    """Knots after the last anchor and their cost: run at the natural rate, cut the phrase if it
    is too long, hold its last pose if it runs out. ``beta`` is sorted."""
    span = t_end - t0
    if span <= 1e-6:
        return [], 0.0
    left = D - tau0
    r = min(max(g, lo), hi)
    cost = 0.0
    if tau0 + r * span <= D + 1e-9:
        knots = [(t_end, tau0 + r * span)]
        used = r * span
    else:
        r2 = left / span
        if r2 >= lo:
            knots = [(t_end, D)]
            used = left
            cost += 2.0 * (span / max(g, 1e-6)) * (math.log(max(r2, 1e-6)) - math.log(g)) ** 2
        else:
            t_stop = t0 + left / lo
            knots = [(t_stop, D), (t_end, D)] if left > 0 else [(t_end, D)]
            used = left
            cost += 3.0 * (t_end - t_stop)              # holding still is bad for the beat
    loose = bisect.bisect_right(beta, tau0 + used + 1e-6) - bisect.bisect_right(beta, tau0 + 1e-6)
    cost += 0.35 * float(loose)
    return knots, cost


# =========================================================================== motion sampling
def sample_motion(positions: np.ndarray, rotations: np.ndarray, fps: float,
                  times_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample a motion at arbitrary times (s from its first frame): positions by linear
    interpolation, rotations by nlerp between neighbouring frames; clamped at both ends."""
    pos = np.asarray(positions, dtype=np.float64)
    rot = np.asarray(rotations, dtype=np.float64)
    n = pos.shape[0]
    x = np.clip(np.asarray(times_s, dtype=np.float64) * fps, 0.0, n - 1)
    i0 = np.minimum(np.floor(x).astype(np.int64), max(n - 2, 0))
    i1 = np.minimum(i0 + 1, n - 1)
    w = (x - i0)[:, None]
    p = (1.0 - w)[..., None] * pos[i0] + w[..., None] * pos[i1]
    q = nlerp(rot[i0], rot[i1], np.repeat(w, rot.shape[1], axis=1))
    return p, q


# =========================================================================== placed motion
@dataclass
class PlacedMotion:
    """Canonical motion of one placed phrase at the scene frame rate.

    Frame ``k`` of ``positions``/``rotations`` is scene frame ``frame_start + k``. The attributes
    ``fps``, ``positions`` and ``rotations`` make it usable wherever a library ``PhraseMotion``
    is expected (e.g. :func:`blender_m2d.retarget.write_action`).
    """

    index: int
    phrase_id: str
    frame_start: int
    fps: float
    positions: np.ndarray
    rotations: np.ndarray
    dance_time_s: np.ndarray
    yaw: float = 0.0
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @property
    def frame_end(self) -> int:
        return self.frame_start + self.positions.shape[0] - 1

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])


def apply_yaw_translation(pos: np.ndarray, rot: np.ndarray, yaw: float,
                          translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``p' = Rz(yaw) p + t``, ``q' = qz(yaw) q`` for motion arrays."""
    qy = qz(yaw)
    return qrot(qy, pos) + np.asarray(translation)[None, None, :], qmul(qy, rot)


def align_root(prev: PlacedMotion, nxt: PlacedMotion, frame: int) -> tuple[float, np.ndarray]:
    """Yaw and translation that put ``nxt``'s root position (horizontal) and heading at scene
    ``frame`` onto ``prev``'s (heights untouched)."""
    ia, ib = frame - prev.frame_start, frame - nxt.frame_start
    ya = heading(prev.positions[ia])
    yb = heading(nxt.positions[ib])
    yaw = float(math.remainder(float(ya - yb), math.tau))
    pb = qrot(qz(yaw), nxt.positions[ib, 0])
    t = prev.positions[ia, 0] - pb
    t[2] = 0.0
    return yaw, t


def place_phrase(motion, warp: Warp, *, index: int, phrase_id: str, frame_range: tuple[int, int],
                 fps: float, frame_start: int = 1, scale: float = 1.0) -> PlacedMotion:
    """Resample one library phrase through its warp onto the frames of its strip; positions are
    multiplied by ``scale`` (body-size normalisation)."""
    a, b = frame_range
    frames = np.arange(a, b + 1, dtype=np.float64)
    tau = warp((frames - frame_start) / fps)
    pos, rot = sample_motion(motion.positions, motion.rotations, float(motion.fps), tau)
    if scale != 1.0:
        pos = pos * scale
    return PlacedMotion(index=index, phrase_id=phrase_id, frame_start=int(a), fps=float(fps),
                        positions=pos, rotations=make_continuous(rot), dance_time_s=tau)


@dataclass(frozen=True)
class PlacementOptions:
    crossfade_s: float = CROSSFADE_S
    rate_range: tuple[float, float] = RATE_RANGE
    feet: str = "lock"
    root: str = "hermite"
    release_s: float = 1.0
    contact_m: float = 0.05
    contact_speed_m_s: float = 1.0
    accent: float = ACCENT
    """Beat accent of the time warps (:func:`accent_time`); used when the warps are fitted
    (:func:`fit_warp`), each warp carries its own value in the plan."""

    def to_json(self) -> dict:
        return {"crossfade_s": self.crossfade_s, "rate_range": list(self.rate_range),
                "feet": self.feet, "root": self.root, "release_s": self.release_s,
                "contact_m": self.contact_m, "contact_speed_m_s": self.contact_speed_m_s,
                "accent": self.accent}


def place_all(phrases: Sequence, motions: Mapping[str, object], durations: Mapping[str, float],
              *, fps: float, frame_start: int, xf_frames: int,
              options: PlacementOptions = PlacementOptions(),
              start_yaw: float = 0.0, start_translation: np.ndarray | None = None,
              leg_length_m: float | None = None) -> list[PlacedMotion]:
    """Place every phrase of a plan.

    ``phrases`` are :class:`~blender_m2d.core.plan.PlacedPhrase` (their ``warp`` holds the fitted
    anchors), ``motions`` maps phrase ids to library motions (``fps``, ``positions``,
    ``rotations``), ``durations`` their lengths in seconds. The first phrase is turned by
    ``start_yaw`` and moved so its root starts at ``start_translation`` horizontally (default:
    where the library has it). With ``leg_length_m`` every phrase is scaled so its dancer's leg
    (hip to ankle) has that length, so phrases captured from different bodies join without a
    change of size or stride at the seams.
    """
    if options.feet not in FEET_MODES:
        raise ValueError(f"unknown feet mode {options.feet!r}; use one of {FEET_MODES}")
    if options.root not in ROOT_MODES:
        raise ValueError(f"unknown root mode {options.root!r}; use one of {ROOT_MODES}")
    placed: list[PlacedMotion] = []
    for ph in phrases:
        warp = Warp.from_summary(ph.warp, durations[ph.phrase_id])
        motion = motions[ph.phrase_id]
        scale = 1.0
        if leg_length_m:
            scale = leg_length_m / max(leg_length(np.asarray(motion.positions)), 1e-6)
        pm = place_phrase(motion, warp, index=ph.index, phrase_id=ph.phrase_id,
                          frame_range=(ph.frame_start, ph.frame_end), fps=fps,
                          frame_start=frame_start, scale=scale)
        if not placed:
            t = np.zeros(3)
            if start_translation is not None:
                r0 = qrot(qz(start_yaw), pm.positions[0, 0])
                t = np.asarray(start_translation, dtype=np.float64) - r0
                t[2] = 0.0
            yaw = float(start_yaw)
        else:
            prev = placed[-1]
            mid = pm.frame_start + xf_frames // 2
            mid = min(mid, prev.frame_end)
            yaw, t = align_root(prev, pm, mid)
        pm.positions, pm.rotations = apply_yaw_translation(pm.positions, pm.rotations, yaw, t)
        pm.yaw, pm.translation = yaw, t
        ref = None
        if placed:
            prev = placed[-1]
            k = pm.frame_start - prev.frame_start
            if 0 <= k < prev.n_frames:
                ref = prev.rotations[k]
        pm.rotations = make_continuous(pm.rotations, ref)
        placed.append(pm)
    if options.root == "hermite":
        smooth_root_seams(placed)
    if options.feet == "lock" and len(placed) > 1:
        lock_feet(placed, fps=fps, options=options)
    return placed


def smooth_root_seams(placed: Sequence[PlacedMotion]) -> None:
    """Give both phrases of every crossfade the same root path over it: the cubic Hermite curve
    from the outgoing phrase's root position and velocity at the crossfade start to the incoming
    phrase's at its end. The NLA's linear mix of two identical paths is that path, so the root
    moves with C1 continuity instead of the small velocity kink a linear mix of two diverging
    paths makes. Every joint of a phrase moves with its root (the pose is unchanged)."""
    for a, b in itertools.pairwise(placed):
        f0, f1 = b.frame_start, a.frame_end
        n = f1 - f0
        ia0, ib1 = f0 - a.frame_start, f1 - b.frame_start
        if n < 2 or ia0 < 1 or ib1 + 1 >= b.n_frames:
            continue
        p0 = a.positions[ia0, 0]
        v0 = p0 - a.positions[ia0 - 1, 0]
        p1 = b.positions[ib1, 0]
        v1 = b.positions[ib1 + 1, 0] - p1
        t = (np.arange(n + 1) / n)[:, None]
        h = ((2 * t ** 3 - 3 * t ** 2 + 1) * p0 + (t ** 3 - 2 * t ** 2 + t) * n * v0
             + (-2 * t ** 3 + 3 * t ** 2) * p1 + (t ** 3 - t ** 2) * n * v1)
        for pm, i0 in ((a, ia0), (b, ib1 - n)):
            sl = slice(i0, i0 + n + 1)
            pm.positions[sl] += (h - pm.positions[sl, 0])[:, None, :]


# =========================================================================== feet
def seam_zones(frames: Sequence[tuple[int, int]], *, fps: float,
               release_s: float = 1.0) -> list[tuple[int, int, int, int]]:
    """Per seam ``(zone_start, crossfade_start, crossfade_end, zone_end)`` in scene frames.

    The zone is the crossfade plus up to ``release_s`` of the outgoing phrase before it and of the
    incoming phrase after it, never more than half of a phrase's solo part, so zones of
    neighbouring seams do not overlap. Foot handling edits only these frames and the foot-skate
    metric is measured over exactly them (for any placement, so variants compare fairly).
    """
    n_rel = round(release_s * fps)
    out = []
    for i in range(1, len(frames)):
        f0, f1 = frames[i][0], frames[i - 1][1]
        prev_in = frames[i - 2][1] if i >= 2 else frames[i - 1][0]       # end of A's fade-in
        next_out = frames[i + 1][0] if i + 1 < len(frames) else frames[i][1]   # B's fade-out
        pre = min(n_rel, max((f0 - prev_in) // 2, 0))
        post = min(n_rel, max((next_out - f1) // 2, 0))
        out.append((f0 - pre, f0, f1, f1 + post))
    return out


def _contact_floor(placed: Sequence[PlacedMotion]) -> np.ndarray:
    heights = np.concatenate([pm.positions[:, [leg[2] for leg in LEGS], 2] for pm in placed],
                             axis=0)
    return np.percentile(heights, 5, axis=0)


_LEG_JOINTS = np.array(LEGS, dtype=np.int64)
"""[shape=(2, 4)] hip, knee, ankle and toe joint of the left and the right leg."""
_LEG_PARENTS = np.asarray(CANON_PARENTS, dtype=np.int64)[_LEG_JOINTS]


def _leg_offsets(pm: PlacedMotion) -> np.ndarray:
    """:func:`bone_offsets` of the leg joints of ``pm`` [shape=(2, 4, 3)]."""
    js, ps = _LEG_JOINTS.ravel(), _LEG_PARENTS.ravel()
    rot, pos = pm.rotations, pm.positions
    return qrot(qconj(rot[:, ps]), pos[:, js] - pos[:, ps]).mean(axis=0).reshape(2, 4, 3)


def _blend_window(a: PlacedMotion, b: PlacedMotion, f0: int, f1: int):
    """Predicted NLA blend of ``a`` (outgoing) and ``b`` over scene frames f0..f1 (crossfade):
    root position lerp and local-rotation nlerp of the hips and the legs. Returns the root
    position [shape=(n, 3)], the hips rotation [shape=(n, 4)], the local rotations of hip,
    knee and ankle of both legs [shape=(n, 2, 3, 4)] and the weights."""
    frames = np.arange(f0, f1 + 1)
    w = (frames - f0) / max(f1 - f0, 1)
    ia, ib = frames - a.frame_start, frames - b.frame_start
    js, ps = _LEG_JOINTS[:, :3].ravel(), _LEG_PARENTS[:, :3].ravel()

    def local(pm, idx):                  # local_rotations of the hips and those joints
        r = pm.rotations[idx]
        return np.concatenate([r[:, :1], qmul(qconj(r[:, ps]), r[:, js])], axis=1)

    la, lb = local(a, ia), local(b, ib)
    root = (1 - w)[:, None] * a.positions[ia, 0] + w[:, None] * b.positions[ib, 0]
    loc = nlerp(la, lb, np.repeat(w[:, None], la.shape[1], axis=1))
    return root, loc[:, 0], loc[:, 1:].reshape(-1, 2, 3, 4), w


def _leg_fk(root, hips_rot, loc, off):
    """World positions/rotations of both legs' chains (hip, knee, ankle) from the root:
    ``root`` [shape=(n, 3)], ``hips_rot`` [shape=(n, 4)], leg local rotations ``loc``
    [shape=(n, 2, 3, 4)], leg offsets ``off`` [shape=(2, 4, 3)]; each [shape=(n, 2, ...)]."""
    n = root.shape[0]
    hips = hips_rot[:, None]
    r0 = qmul(hips, loc[:, :, 0])
    p0 = root[:, None] + qrot(hips, np.broadcast_to(off[:, 0], (n, 2, 3)))
    r1 = qmul(r0, loc[:, :, 1])
    p1 = p0 + qrot(r0, np.broadcast_to(off[:, 1], (n, 2, 3)))
    r2 = qmul(r1, loc[:, :, 2])
    p2 = p1 + qrot(r1, np.broadcast_to(off[:, 2], (n, 2, 3)))
    return (p0, p1, p2), (r0, r1, r2)


def two_bone_ik(hip: np.ndarray, knee: np.ndarray, ankle: np.ndarray, target: np.ndarray,
                r_thigh: np.ndarray, r_shin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New world rotations of thigh and shin [shape=(F, 4)] that put the ankle on ``target``
    (as close as reachable) keeping the knee in the plane of the reference knee."""
    l1 = np.linalg.norm(knee - hip, axis=1)
    l2 = np.linalg.norm(ankle - knee, axis=1)
    d_vec = target - hip
    d = np.linalg.norm(d_vec, axis=1)
    d_c = np.clip(d, np.abs(l1 - l2) + 1e-4, l1 + l2 - 1e-4)
    u = d_vec / np.maximum(d, 1e-9)[:, None]
    tgt = hip + u * d_c[:, None]
    v = knee - hip
    v_perp = v - np.sum(v * u, axis=1, keepdims=True) * u
    nv = np.linalg.norm(v_perp, axis=1, keepdims=True)
    v_hat = v_perp / np.maximum(nv, 1e-9)
    a = (l1 ** 2 - l2 ** 2 + d_c ** 2) / (2 * d_c)
    h = np.sqrt(np.maximum(l1 ** 2 - a ** 2, 0.0))
    new_knee = hip + u * a[:, None] + v_hat * h[:, None]
    d1 = qbetween(knee - hip, new_knee - hip)
    rt = qmul(d1, r_thigh)
    shin_ref = qrot(d1, ankle - knee)
    d2 = qbetween(shin_ref, tgt - new_knee)
    rs = qmul(d2, qmul(d1, r_shin))
    return qnormalize(rt), qnormalize(rs)


def _set_legs(pm: PlacedMotion, idx: np.ndarray, side: np.ndarray, loc_new: Sequence[np.ndarray],
              off: np.ndarray) -> None:
    """Write leg local rotations ``loc_new`` (hip, knee, ankle; each [shape=(K, 4)], relative
    to the phrase's own hips) of leg ``side[k]`` at frame index ``idx[k]`` into ``pm``, re-doing
    FK of the leg's positions with the leg offsets ``off`` [shape=(2, 4, 3)]."""
    js = _LEG_JOINTS[side]                                     # (K, 4)
    o = off[side]                                              # (K, 4, 3)
    hips = pm.rotations[idx, 0]
    root = pm.positions[idx, 0]
    toe_local = qmul(qconj(pm.rotations[idx, js[:, 2]]), pm.rotations[idx, js[:, 3]])
    r0 = qmul(hips, loc_new[0])
    r1 = qmul(r0, loc_new[1])
    r2 = qmul(r1, loc_new[2])
    r3 = qmul(r2, toe_local)
    p0 = root + qrot(hips, o[:, 0])
    p1 = p0 + qrot(r0, o[:, 1])
    p2 = p1 + qrot(r1, o[:, 2])
    p3 = p2 + qrot(r2, o[:, 3])
    for k, r, p in ((0, r0, p0), (1, r1, p1), (2, r2, p2), (3, r3, p3)):
        pm.rotations[idx, js[:, k]] = r
        pm.positions[idx, js[:, k]] = p


def distribute_slide(ref_xy: np.ndarray, weights: np.ndarray, desired: np.ndarray) -> np.ndarray:
    """Foot path [shape=(n, 2)] with the same end points as ``ref_xy`` whose steps are closest to
    ``desired`` [shape=(n-1, 2)] in the weighted least-squares sense: steps
    ``e = desired + lambda / weights`` with ``lambda`` fixed by the end points, so whatever the
    desired steps do not cover is spread over the steps inversely to their weight."""
    total = ref_xy[-1] - ref_xy[0]
    inv = 1.0 / weights
    lam = (total - desired.sum(axis=0)) / inv.sum()
    steps = desired + inv[:, None] * lam[None, :]
    out = np.empty_like(ref_xy)
    out[0] = ref_xy[0]
    out[1:] = ref_xy[0] + np.cumsum(steps, axis=0)
    return out


def lock_feet(placed: list[PlacedMotion], *, fps: float,
              options: PlacementOptions = PlacementOptions()) -> list[dict]:
    """Foot handling at every seam (see the module docstring); edits ``placed`` in place and
    returns per-seam diagnostics.

    Over each seam zone (:func:`seam_zones`) the reference ankle path is what a plain crossfade
    gives (outgoing phrase, predicted blend, incoming phrase). The corrected path keeps the same
    end points and is the weighted least-squares fit of the reference's steps with planted steps
    (within ``contact_m`` of the floor and slower than ``contact_speed_m_s`` in their own phrase)
    asked to be still (weight 100), steps of a low but moving foot to follow the reference
    (weight 10 / (v + 0.05)) and steps in the air to follow it (weight 1 / (v + 0.05), v = the
    foot's speed in m/s): the slide of a plain crossfade ends up in the fast parts of the swing,
    and evenly spread over the zone when the foot never lifts. Legs are re-solved with
    :func:`two_bone_ik`.

    Both legs are handled at once (arrays with a leg axis); every frame and leg is computed
    exactly as it would be alone.
    """
    floor = _contact_floor(placed)
    frames = [(pm.frame_start, pm.frame_end) for pm in placed]
    zones = seam_zones(frames, fps=fps, release_s=options.release_s)
    legs = _LEG_JOINTS
    info = []
    for i, (z0, f0, f1, z1) in enumerate(zones, start=1):
        a, b = placed[i - 1], placed[i]
        if f1 <= f0:
            continue
        root_w, hips_w, loc_w, w = _blend_window(a, b, f0, f1)
        off_a = _leg_offsets(a)
        off_b = _leg_offsets(b)
        ia_pre = np.arange(z0, f0) - a.frame_start
        ia = np.arange(f0, f1 + 1) - a.frame_start
        ib = np.arange(f0, f1 + 1) - b.frame_start
        ib_post = np.arange(f1 + 1, z1 + 1) - b.frame_start
        n_pre, n_w = ia_pre.size, ia.size
        seam_info = {"index": i, "corrected_frames": 0, "max_offset_cm": 0.0}
        va_all = _speed(a.positions[:, legs[:, 2], :2], fps)
        vb_all = _speed(b.positions[:, legs[:, 2], :2], fps)
        (p0w, p1w, p2w), (r0w, r1w, r2w) = _leg_fk(root_w, hips_w, loc_w, off_a)
        pa, ra = a.positions[ia_pre], a.rotations[ia_pre]
        pb, rb = b.positions[ib_post], b.rotations[ib_post]
        # [shape=(m, 2, ...)]: frames of the zone x legs
        ref = np.concatenate([pa[:, legs[:, 2]], p2w, pb[:, legs[:, 2]]], axis=0)
        hip = np.concatenate([pa[:, legs[:, 0]], p0w, pb[:, legs[:, 0]]], axis=0)
        knee = np.concatenate([pa[:, legs[:, 1]], p1w, pb[:, legs[:, 1]]], axis=0)
        r_th = np.concatenate([ra[:, legs[:, 0]], r0w, rb[:, legs[:, 0]]], axis=0)
        r_sh = np.concatenate([ra[:, legs[:, 1]], r1w, rb[:, legs[:, 1]]], axis=0)
        r_ft = np.concatenate([ra[:, legs[:, 2]], r2w, rb[:, legs[:, 2]]], axis=0)
        # each source's own ankle speed says what is a planted foot
        sp_all = np.concatenate([va_all[ia_pre], (1 - w)[:, None] * va_all[ia]
                                 + w[:, None] * vb_all[ib], vb_all[ib_post]])
        target = ref.copy()
        moved = np.zeros(ref.shape[:2], dtype=bool)
        for side in range(2):
            rs_ = np.ascontiguousarray(ref[:, side])
            sp = np.ascontiguousarray(sp_all[:, side])
            low = rs_[:, 2] < floor[side] + options.contact_m
            planted = low & (sp < options.contact_speed_m_s)
            step_planted = planted[1:] & planted[:-1]
            step_low = (low[1:] | low[:-1]) & ~step_planted
            desired = np.diff(rs_[:, :2], axis=0)
            # a free step takes correction in proportion to how fast the foot moves there, so
            # the slide hides in the swing and the foot's stops (dance beats) stay where they are
            step_speed = np.linalg.norm(desired, axis=1) * fps
            free = 1.0 / (step_speed + 0.05)
            weights = np.where(step_planted, 100.0, np.where(step_low, 10.0 * free, free))
            desired[step_planted] = 0.0
            xy = distribute_slide(rs_[:, :2], weights, desired)
            d = np.linalg.norm(xy - rs_[:, :2], axis=1)
            changed = d > 1e-5
            if not changed.any():
                continue
            seam_info["max_offset_cm"] = max(seam_info["max_offset_cm"],
                                             round(float(d.max()) * 100, 3))
            seam_info["corrected_frames"] += int(changed.sum())
            target[:, side, :2] = xy
            moved[:, side] = changed
        if not moved.any():
            a.rotations = make_continuous(a.rotations)
            b.rotations = make_continuous(b.rotations, a.rotations[f0 - a.frame_start])
            info.append(seam_info)
            continue
        rt, rs = two_bone_ik(hip[moved], knee[moved], ref[moved], target[moved], r_th[moved],
                             r_sh[moved])
        hips = np.concatenate([a.rotations[ia_pre, 0], hips_w, b.rotations[ib_post, 0]])
        hips = np.broadcast_to(hips[:, None], (*moved.shape, 4))[moved]
        sel = (qmul(qconj(hips), rt), qmul(qconj(rt), rs), qmul(qconj(rs), r_ft[moved]))
        k, side = np.nonzero(moved)                   # zone frame and leg of every row
        in_a = k < n_pre + n_w                        # before the zone's end of the crossfade
        in_b = k >= n_pre
        if in_a.any():
            _set_legs(a, np.concatenate([ia_pre, ia])[k[in_a]], side[in_a],
                      [s[in_a] for s in sel], off_a)
        if in_b.any():
            _set_legs(b, np.concatenate([ib, ib_post])[k[in_b] - n_pre], side[in_b],
                      [s[in_b] for s in sel], off_b)
        a.rotations = make_continuous(a.rotations)
        b.rotations = make_continuous(b.rotations, a.rotations[f0 - a.frame_start])
        info.append(seam_info)
    return info


def _speed(xy: np.ndarray, fps: float) -> np.ndarray:
    """Per-frame horizontal speed (m/s) of points [shape=(F, ..., 2)]."""
    v = np.zeros(xy.shape[:-1])
    if xy.shape[0] > 1:
        s = np.linalg.norm(np.diff(xy, axis=0), axis=-1) * fps
        v[1:] = s
        v[0] = s[0]
    return v


# =========================================================================== composite
def fk(root: np.ndarray, local: np.ndarray, offsets: np.ndarray,
       parents: Sequence[int] = CANON_PARENTS) -> tuple[np.ndarray, np.ndarray]:
    """Forward kinematics: root positions [shape=(F, 3)], local rotations [shape=(F, J, 4)] and
    offsets [shape=(J, 3) or (F, J, 3)] -> world positions and rotations."""
    n, nj = local.shape[:2]
    off = np.broadcast_to(offsets, (n, nj, 3))
    pos = np.zeros((n, nj, 3))
    rot = np.zeros((n, nj, 4))
    for j, p in enumerate(parents):
        if p < 0:
            rot[:, j] = local[:, j]
            pos[:, j] = root
        else:
            rot[:, j] = qmul(rot[:, p], local[:, j])
            pos[:, j] = pos[:, p] + qrot(rot[:, p], off[:, j])
    return pos, qnormalize(rot)


def blend_placed(placed: Sequence[PlacedMotion], *, xf_frames: int, frame_first: int,
                 frame_last: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical prediction of what the NLA recipe of :mod:`blender_m2d.nla` evaluates to.

    Phrase ``i`` lies on the lower track (even ``i``: full influence, held forward) or the
    upper track (odd ``i``: fades in and out over ``xf_frames``, nothing outside). Root
    position is lerped and local rotations are nlerped with the upper strip's influence, as the
    NLA does per channel. Returns world positions [shape=(F, J, 3)] and rotations for scene
    frames ``frame_first..frame_last``.
    """
    frames = np.arange(frame_first, frame_last + 1)
    n = frames.size
    nj = placed[0].rotations.shape[1]
    lo_root = np.zeros((n, 3))
    lo_loc = np.tile(np.array([1.0, 0, 0, 0]), (n, nj, 1))
    lo_off = np.zeros((n, nj, 3))
    up_root, up_loc, up_off = lo_root.copy(), lo_loc.copy(), lo_off.copy()
    w = np.zeros(n)
    last = len(placed) - 1
    for i, pm in enumerate(placed):
        loc = local_rotations(pm.rotations)
        off = bone_offsets(pm.positions, pm.rotations)
        if i % 2 == 0:
            sel = frames >= pm.frame_start
            idx = np.clip(frames[sel] - pm.frame_start, 0, pm.n_frames - 1)
            lo_root[sel], lo_loc[sel], lo_off[sel] = pm.positions[idx, 0], loc[idx], off
        else:
            sel = (frames >= pm.frame_start) & (frames <= pm.frame_end)
            f = frames[sel]
            idx = f - pm.frame_start
            up_root[sel], up_loc[sel], up_off[sel] = pm.positions[idx, 0], loc[idx], off
            infl = np.ones(f.size)
            if i > 0:
                infl = np.minimum(infl, (f - pm.frame_start) / xf_frames)
            if i < last:
                infl = np.minimum(infl, (pm.frame_end - f) / xf_frames)
            w[sel] = np.clip(infl, 0.0, 1.0)
    root = (1 - w)[:, None] * lo_root + w[:, None] * up_root
    loc = nlerp(lo_loc, up_loc, np.repeat(w[:, None], nj, axis=1))
    off = (1 - w)[:, None, None] * lo_off + w[:, None, None] * up_off
    return fk(root, loc, off)
