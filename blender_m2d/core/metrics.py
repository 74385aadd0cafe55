"""Quality metrics of a choreographed animation, computed from joint trajectories.

Beat metrics (spec section 6.3, Table 3). For one music-dance animation with N_d dance beats
(from :func:`blender_m2d.core.motion.detect_dance_beats` on the animation), N_m music beats and
N_h hits (a dance beat within ``tol_s`` = 0.1 s of a music beat, matched one-to-one so that
N_h <= min(N_d, N_m)):

=================  =========================  ============
Beat coverage      N_d / N_m
Beat hit rate      N_h / N_d                  (precision)
Music hit rate     N_h / N_m                  (recall)
Beat overlap       N_h / (N_m + N_d - N_h)    (IoU)
=================  =========================  ============

"pooled" sums the counts over clips before dividing, "per-clip" averages the clip ratios
(spec section 6.3 asks for both).

Seam metrics, per crossfade between an outgoing phrase A and an incoming phrase B:

* ``root_gap_cm``: horizontal distance between A's and B's root (each evaluated alone) at the
  middle of the crossfade: what root alignment removes;
* ``root_jump_cm``: the largest extra root step the blend adds over the sources,
  ``max_f (|p(f) - p(f-1)| - max(|pA(f) - pA(f-1)|, |pB(f) - pB(f-1)|))`` over the crossfade
  frames (0 for a seam that moves no faster than either phrase; a teleport shows in full).

Foot skate: mean horizontal speed (cm/s) of the feet (ankle joints) over the frames where a foot
is in contact with the floor (its height is within ``contact_m`` of its floor level, the 5th
percentile of its height over the animation), counted only inside the given frame zones (the
crossfades and the frames after them that foot handling may modify).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

HIT_TOLERANCE_S = 0.1
CONTACT_M = 0.05
"""Foot contact: height within this of the foot's floor level (metres)."""


@dataclass(frozen=True)
class BeatMetrics:
    n_dance: int
    n_music: int
    n_hits: int

    @property
    def coverage(self) -> float:
        return self.n_dance / self.n_music if self.n_music else 0.0

    @property
    def hit_rate(self) -> float:
        return self.n_hits / self.n_dance if self.n_dance else 0.0

    @property
    def music_hit_rate(self) -> float:
        return self.n_hits / self.n_music if self.n_music else 0.0

    @property
    def overlap(self) -> float:
        union = self.n_music + self.n_dance - self.n_hits
        return self.n_hits / union if union else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "beat_coverage": round(self.coverage, 4),
                "beat_hit_rate": round(self.hit_rate, 4),
                "music_hit_rate": round(self.music_hit_rate, 4),
                "beat_overlap": round(self.overlap, 4)}


def count_hits(dance_s: np.ndarray, music_s: np.ndarray, *, tol_s: float = HIT_TOLERANCE_S) -> int:
    """Maximum one-to-one matching of dance beats to music beats within ``tol_s`` seconds.

    A two-pointer scan over both sorted lists; for points on a line with a symmetric window it
    finds a maximum matching (a greedy matching of the earliest compatible pair is never worse).
    """
    d = np.sort(np.asarray(dance_s, dtype=np.float64).ravel()).tolist()
    m = np.sort(np.asarray(music_s, dtype=np.float64).ravel()).tolist()
    tol = tol_s + 1e-9
    nd, nm = len(d), len(m)
    i = j = hits = 0
    while i < nd and j < nm:
        if abs(d[i] - m[j]) <= tol:
            hits += 1
            i += 1
            j += 1
        elif d[i] < m[j]:
            i += 1
        else:
            j += 1
    return hits


def beat_metrics(dance_s: np.ndarray, music_s: np.ndarray, *,
                 tol_s: float = HIT_TOLERANCE_S) -> BeatMetrics:
    """The paper's four beat metrics for one clip (see the module docstring)."""
    d = np.asarray(dance_s, dtype=np.float64).ravel()
    m = np.asarray(music_s, dtype=np.float64).ravel()
    return BeatMetrics(int(d.size), int(m.size), count_hits(d, m, tol_s=tol_s))


def aggregate(clips: Sequence[BeatMetrics]) -> dict:
    """Pooled (counts summed) and per-clip mean metrics over several clips."""
    pooled = BeatMetrics(sum(c.n_dance for c in clips), sum(c.n_music for c in clips),
                         sum(c.n_hits for c in clips))

    def mean(attr: str) -> float:
        return float(np.mean([getattr(c, attr) for c in clips])) if clips else 0.0

    return {"pooled": pooled.to_json(),
            "per_clip_mean": {"beat_coverage": round(mean("coverage"), 4),
                              "beat_hit_rate": round(mean("hit_rate"), 4),
                              "music_hit_rate": round(mean("music_hit_rate"), 4),
                              "beat_overlap": round(mean("overlap"), 4)},
            "n_clips": len(clips)}


def clip_windows(duration_s: float, clip_s: float = 30.0) -> list[tuple[float, float]]:
    """Cut ``[0, duration_s]`` into consecutive clips of ``clip_s`` (the user study's 30 s);
    a last piece shorter than half a clip is merged into the previous one."""
    edges = [*list(np.arange(0.0, duration_s, clip_s)), duration_s]
    if len(edges) > 2 and edges[-1] - edges[-2] < clip_s / 2:
        edges.pop(-2)
    return list(itertools.pairwise(edges))


def song_beat_metrics(dance_s: np.ndarray, music_s: np.ndarray, duration_s: float, *,
                      clip_s: float = 30.0, tol_s: float = HIT_TOLERANCE_S) -> dict:
    """Metrics of a whole song: the song as one clip, plus pooled/per-clip over 30 s clips."""
    d = np.asarray(dance_s, dtype=np.float64)
    m = np.asarray(music_s, dtype=np.float64)
    m = m[(m >= 0) & (m <= duration_s + 1e-6)]
    clips = []
    for lo, hi in clip_windows(duration_s, clip_s):
        clips.append(beat_metrics(d[(d >= lo) & (d < hi)], m[(m >= lo) & (m < hi)], tol_s=tol_s))
    whole = beat_metrics(d, m, tol_s=tol_s)
    return {"song": whole.to_json(), "clips_30s": aggregate(clips)}


# --------------------------------------------------------------------------- seams
@dataclass(frozen=True)
class Seam:
    """A crossfade from phrase ``index - 1`` to phrase ``index`` over scene frames
    ``frame_start..frame_end`` (inclusive; the incoming phrase's weight rises from 0 to 1)."""

    index: int
    frame_start: int
    frame_end: int

    @property
    def middle(self) -> float:
        return 0.5 * (self.frame_start + self.frame_end)


def seam_root_metrics(root: np.ndarray, *, frame0: int, seam: Seam, fps: float,
                      root_a_mid: np.ndarray | None = None,
                      root_b_mid: np.ndarray | None = None, context_s: float = 0.5) -> dict:
    """Root jump (and gap, when the phrases' roots at the crossfade middle are given) at one
    seam, see the module docstring.

    ``root`` [shape=(F, 3)] holds world root positions in metres of the evaluated animation for
    scene frames ``frame0 .. frame0 + F - 1``; ``root_a_mid``/``root_b_mid`` [shape=(3,)] are the
    outgoing/incoming phrase's root, each evaluated alone, at the crossfade middle.
    """
    lo = seam.frame_start - frame0
    hi = seam.frame_end - frame0
    n_ctx = max(1, round(context_s * fps))
    n_step = max(len(root) - 1, 0)
    s0 = min(max(lo - n_ctx, 0), n_step)       # only the steps used below
    s1 = max(min(hi + n_ctx, n_step), s0)
    part = np.linalg.norm(np.diff(root[s0:s1 + 1], axis=0), axis=1)   # step[f-1]: f-1 -> f

    def step(a: int, b: int) -> np.ndarray:
        return part[max(a, s0) - s0:max(min(b, s1), s0) - s0]

    inside = step(max(lo, 0), max(hi, 0))
    before = step(max(lo - n_ctx, 0), max(lo, 0))
    after = step(min(hi, n_step), min(hi + n_ctx, n_step))
    allowance = max(float(np.max(before, initial=0.0)), float(np.max(after, initial=0.0)))
    jump = max(float(np.max(inside, initial=0.0)) - allowance, 0.0)
    out = {"index": seam.index, "root_jump_cm": round(100 * jump, 4)}
    if root_a_mid is not None and root_b_mid is not None:
        gap = float(np.linalg.norm((np.asarray(root_a_mid) - np.asarray(root_b_mid))[:2]))
        out["root_gap_cm"] = round(100 * gap, 4)
    return out


def floor_levels(feet: np.ndarray) -> np.ndarray:
    """Floor level per foot [shape=(n_feet,)]: the 5th percentile of its height (metres)."""
    return np.percentile(np.asarray(feet)[:, :, 2], 5, axis=0)


def contact_mask(feet: np.ndarray, *, contact_m: float = CONTACT_M,
                 floor: np.ndarray | None = None) -> np.ndarray:
    """[shape=(F, n_feet)] True where a foot is within ``contact_m`` of its floor level."""
    feet = np.asarray(feet, dtype=np.float64)
    floor = floor_levels(feet) if floor is None else np.asarray(floor)
    return feet[:, :, 2] < floor[None, :] + contact_m


def foot_skate(feet: np.ndarray, fps: float, zones: Iterable[tuple[int, int]], *,
               contact_m: float = CONTACT_M, floor: np.ndarray | None = None) -> dict:
    """Foot skate in cm/s over ``zones`` (inclusive frame-index ranges into ``feet``).

    ``feet`` [shape=(F, n_feet, 3)] are world foot (ankle) positions in metres at ``fps``. A frame
    step counts when the foot is in contact at both of its ends; the result is the mean
    horizontal speed over those steps (``mean_cm_s``), their count and the largest speed.
    """
    return foot_skates(feet, fps, [zones], contact_m=contact_m, floor=floor)[0]


def foot_skates(feet: np.ndarray, fps: float, zone_sets: Sequence[Iterable[tuple[int, int]]],
                *, contact_m: float = CONTACT_M, floor: np.ndarray | None = None) -> list[dict]:
    """:func:`foot_skate` of the same feet over several sets of zones (contact and speeds
    computed once)."""
    feet = np.asarray(feet, dtype=np.float64)
    contact = contact_mask(feet, contact_m=contact_m, floor=floor)
    speed = np.linalg.norm(np.diff(feet[:, :, :2], axis=0), axis=2) * fps * 100.0   # (F-1, n)
    both = contact[1:] & contact[:-1]
    out = []
    for zones in zone_sets:
        sel = np.zeros_like(both)
        for lo, hi in zones:
            lo, hi = max(int(lo), 1), min(int(hi), feet.shape[0] - 1)
            if hi >= lo:
                sel[lo - 1:hi] = True
        vals = speed[both & sel]
        out.append({"mean_cm_s": round(float(vals.mean()), 4) if vals.size else 0.0,
                    "max_cm_s": round(float(vals.max()), 4) if vals.size else 0.0,
                    "contact_steps": int(vals.size)})
    return out
