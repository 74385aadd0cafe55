"""Cut a take into dance phrases at dance beats, and describe each phrase's style.

**Cutting.** Dance beats come from :func:`blender_m2d.core.motion.detect_dance_beats` (the
supplement's self-adaptive velocity/acceleration detector) over the whole take. Phrase
boundaries are chosen among those beats by dynamic programming: every phrase spans at least
``min_beats`` (6) beat intervals, at most ``max_beats`` (16) and ``max_s`` seconds; the cost is
the body's motion energy at each boundary beat (relative to the take's median at its beats: cut
where the dancer is still) plus ``(n - target_beats)^2 / (2 target_beats)`` for a phrase of
``n`` beat intervals (prefer 8, one dance "eight-count"). Up to 3 beats may be left out at each
end of the take. A take with fewer than
``min_beats`` beat intervals gives no phrase.

**Style features.** :data:`FEATURE_NAMES` lists a small, documented motion descriptor per phrase
(rhythm, travel, turning, arm and leg usage, posture), all distances divided by the phrase's
leg length so body size does not matter. :func:`standardize_features` z-scores them over a
library and :func:`style_similarity` is a Gaussian kernel on the result.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .motion import detect_dance_beats
from .retargeting import leg_length
from .skeleton import JOINT_INDEX as J

BEAT_DERIVATIVES = "per_second"
"""How the library calls the beat detector (see :func:`~.motion.detect_dance_beats`)."""
MIN_BEATS = 6
TARGET_BEATS = 8
MAX_BEATS = 16


@dataclass(frozen=True)
class PhraseCut:
    """One phrase of a take: frames ``start``..``end`` (inclusive) at the take's fps."""

    start: int
    end: int
    beats_s: np.ndarray      # from the phrase start; first 0, last = duration

    @property
    def n_frames(self) -> int:
        return self.end - self.start + 1


def motion_energy(positions: np.ndarray, fps: float, *, smooth_s: float = 0.25) -> np.ndarray:
    """Per-frame motion energy [shape=(F,)]: summed joint speed (m/s), smoothed."""
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape[0] < 2:
        return np.zeros(pos.shape[0])
    v = np.gradient(pos, axis=0) * fps
    e = np.linalg.norm(v, axis=-1).sum(axis=-1)
    k = max(round(smooth_s * fps), 1)
    if k > 1:
        kernel = np.ones(k) / k
        e = np.convolve(np.pad(e, (k // 2, k - 1 - k // 2), mode="edge"), kernel, mode="valid")
    return e


def cut_phrases(positions: np.ndarray, fps: float, *, min_beats: int = MIN_BEATS,
                target_beats: int = TARGET_BEATS, max_beats: int = MAX_BEATS,
                max_s: float = 12.0, beats_s: np.ndarray | None = None
                ) -> tuple[list[PhraseCut], np.ndarray]:
    """Phrases of a take and the take's dance beats (seconds).

    Parameters
    ----------
    positions : np.ndarray [shape=(F, J, 3)]
        Canonical world joint positions at ``fps``.
    beats_s : np.ndarray, optional
        Dance beats to use instead of detecting them.

    Returns
    -------
    cuts : list[PhraseCut]
        Consecutive phrases (each boundary is a dance beat), possibly empty.
    beats_s : np.ndarray [shape=(n,)]
        All dance beats of the take.
    """
    pos = np.asarray(positions, dtype=np.float64)
    beats = detect_dance_beats(pos, fps, derivatives=BEAT_DERIVATIVES) if beats_s is None \
        else np.asarray(beats_s, float)
    frames = np.clip(np.round(beats * fps).astype(int), 0, pos.shape[0] - 1)
    frames = np.unique(frames)
    n = frames.size
    if n - 1 < min_beats:
        return [], beats
    energy = motion_energy(pos, fps)
    e = energy[frames] / max(float(np.median(energy[frames])), 1e-9)
    inf = np.inf
    cost = np.full(n, inf)
    back = np.full(n, -1)
    slack = 3                                # phrases may start within the first beats
    cost[:min(slack + 1, n)] = e[:min(slack + 1, n)] + 0.25 * np.arange(min(slack + 1, n))
    for k in range(1, n):
        for i in range(max(0, k - max_beats), k - min_beats + 1):
            if not np.isfinite(cost[i]):
                continue
            if (frames[k] - frames[i]) / fps > max_s and k - i > min_beats:
                continue
            c = cost[i] + e[k] + ((k - i) - target_beats) ** 2 / (2.0 * target_beats)
            if c < cost[k]:
                cost[k], back[k] = c, i
    ends = [k for k in range(max(0, n - 1 - slack), n) if np.isfinite(cost[k]) and back[k] >= 0]
    if not ends:
        return [], beats
    k = min(ends, key=lambda k: cost[k] + 0.25 * (n - 1 - k))
    bounds = [k]
    while back[k] >= 0:
        k = back[k]
        bounds.append(k)
    bounds.reverse()
    cuts = []
    for a, b in itertools.pairwise(bounds):
        f0, f1 = int(frames[a]), int(frames[b])
        cuts.append(PhraseCut(f0, f1, (frames[a:b + 1] - f0) / fps))
    return cuts, beats


def tempo_bpm(beats_s: np.ndarray) -> float:
    """Tempo of a beat sequence: 60 / median inter-beat interval."""
    d = np.diff(np.asarray(beats_s, dtype=np.float64))
    d = d[d > 0]
    return float(60.0 / np.median(d)) if d.size else 0.0


# --- style features ------------------------------------------------------------------------------

FEATURE_NAMES: tuple[str, ...] = (
    "tempo_log2",          # log2(tempo_bpm / 120)
    "beat_irregularity",   # std / mean of the dance-beat intervals
    "travel_speed",        # mean horizontal hip speed, leg lengths per second
    "hip_height",          # mean hip height / leg length
    "hip_bounce",          # std of hip height / leg length
    "turn_rate",           # mean |heading change| of the hips, radians per second
    "hand_speed",          # mean hand speed relative to the hips, leg lengths per second
    "foot_speed",          # mean foot speed relative to the hips, leg lengths per second
    "arm_vs_leg",          # log(hand_speed / foot_speed)
    "hand_height",         # mean hand height above the hips / leg length
    "hand_raise",          # fraction of frames with a hand above the head
    "hand_spread",         # mean distance between the hands / leg length
    "foot_spread",         # mean distance between the feet / leg length
    "foot_lift",           # 95th percentile of foot height above the floor / leg length
    "trunk_lean",          # mean angle of the hips->chest line from vertical, radians
    "hand_jerk",           # log of mean hand acceleration (leg lengths / s^2)
    "limb_sync",           # correlation of hand speed and foot speed over time
)
"""Per-phrase motion features (the style descriptor); see docs/library.md."""


def _heading(positions: np.ndarray) -> np.ndarray:
    left = positions[:, J["LeftUpperLeg"]] - positions[:, J["RightUpperLeg"]]
    left += positions[:, J["LeftUpperArm"]] - positions[:, J["RightUpperArm"]]
    return np.unwrap(np.arctan2(left[:, 1], left[:, 0]))


def phrase_features(positions: np.ndarray, fps: float, beats_s: np.ndarray) -> np.ndarray:
    """Style features [shape=(len(FEATURE_NAMES),)] of one phrase (positions (F, J, 3))."""
    pos = np.asarray(positions, dtype=np.float64)
    n = pos.shape[0]
    leg = max(leg_length(pos), 1e-6)
    p = pos / leg
    hips = p[:, J["Hips"]]
    hands = p[:, [J["LeftHand"], J["RightHand"]]]
    feet = p[:, [J["LeftFoot"], J["RightFoot"]]]
    floor = min(float(np.percentile(p[:, :, 2].min(axis=1), 5)), float(feet[..., 2].min()))
    dt = 1.0 / fps

    def speed(x):
        return np.linalg.norm(np.gradient(x, dt, axis=0), axis=-1) if n > 1 else np.zeros(
            x.shape[:-1])

    bi = np.diff(np.asarray(beats_s, dtype=np.float64))
    bpm = 60.0 / np.median(bi) if bi.size and np.median(bi) > 0 else 120.0
    hand_v = speed(hands - hips[:, None])
    foot_v = speed(feet - hips[:, None])
    hs, fs = float(hand_v.mean()), float(foot_v.mean())
    heading = _heading(pos)
    trunk = p[:, J["Chest"]] - hips
    lean = np.arccos(np.clip(trunk[:, 2] / np.maximum(np.linalg.norm(trunk, axis=-1), 1e-9),
                             -1.0, 1.0))
    acc = np.linalg.norm(np.gradient(np.gradient(hands, dt, axis=0), dt, axis=0), axis=-1) \
        if n > 2 else np.zeros((n, 2))
    hv, fv = hand_v.mean(axis=1), foot_v.mean(axis=1)
    sync = float(np.corrcoef(hv, fv)[0, 1]) if n > 2 and hv.std() > 1e-9 and fv.std() > 1e-9 \
        else 0.0
    head_z = p[:, J["Head"], 2]
    feats = [
        np.log2(max(bpm, 1e-3) / 120.0),
        float(bi.std() / bi.mean()) if bi.size > 1 and bi.mean() > 0 else 0.0,
        float(speed(hips[:, :2]).mean()),
        float((hips[:, 2] - floor).mean()),
        float(hips[:, 2].std()),
        float(np.abs(np.gradient(heading, dt)).mean()) if n > 1 else 0.0,
        hs, fs, float(np.log((hs + 1e-3) / (fs + 1e-3))),
        float((hands[..., 2] - hips[:, None, 2]).mean()),
        float((hands[..., 2] > head_z[:, None]).any(axis=1).mean()),
        float(np.linalg.norm(hands[:, 0] - hands[:, 1], axis=-1).mean()),
        float(np.linalg.norm(feet[:, 0] - feet[:, 1], axis=-1).mean()),
        float(np.percentile(feet[..., 2] - floor, 95)),
        float(lean.mean()),
        float(np.log(acc.mean() + 1e-3)),
        sync,
    ]
    out = np.asarray(feats, dtype=np.float64)
    return np.where(np.isfinite(out), out, 0.0)


def standardize_features(features: np.ndarray) -> np.ndarray:
    """Z-score each column [shape=(K, D)] over the rows; constant columns become 0."""
    f = np.asarray(features, dtype=np.float64)
    if f.shape[0] == 0:
        return f.copy()
    mu = f.mean(axis=0)
    sd = f.std(axis=0)
    return np.where(sd > 1e-9, (f - mu) / np.where(sd > 1e-9, sd, 1.0), 0.0)


def style_similarity(vectors: np.ndarray, *, sigma: float | None = None,
                     max_sample: int = 2000) -> np.ndarray:
    """Gaussian-kernel similarity [shape=(K, K)] in [0, 1], float32.

    ``sigma`` defaults to the median pairwise distance (over a deterministic sample of at most
    ``max_sample`` rows).
    """
    v = np.asarray(vectors, dtype=np.float64)
    k = v.shape[0]
    if k == 0:
        return np.zeros((0, 0), np.float32)
    sq = np.sum(v * v, axis=1)
    if sigma is None:
        idx = np.linspace(0, k - 1, min(k, max_sample)).astype(int)
        s = v[idx]
        d2 = np.maximum(sq[idx, None] + sq[None, idx] - 2 * s @ s.T, 0.0)
        iu = np.triu_indices(len(idx), 1)
        sigma = float(np.sqrt(np.median(d2[iu]))) if iu[0].size else 1.0
    sigma = max(float(sigma), 1e-6)
    out = np.empty((k, k), np.float32)
    step = 1024
    for a in range(0, k, step):
        d2 = np.maximum(sq[a:a + step, None] + sq[None] - 2 * v[a:a + step] @ v.T, 0.0)
        out[a:a + step] = np.exp(-d2 / (2 * sigma * sigma))
    np.fill_diagonal(out, 1.0)
    return out
