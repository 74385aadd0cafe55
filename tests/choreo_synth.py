"""Synthetic dance phrases on the canonical skeleton for choreography tests (no data files).

A phrase moves between random key poses that sit on its dance beats with an ease that starts
slowly and stops sharply, so the joints stop (v = 0, |a| large) exactly on the beats, as the
supplement's detector expects. Legs
alternate between planted (straight, ankle on the floor) and lifted, and the root steps and turns
a little, so seams have real root-motion and foot-contact differences to fix.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from blender_m2d.core.placement import fk, qconj, qmul, qnormalize, two_bone_ik
from blender_m2d.core.skeleton import CANON_JOINTS, JOINT_INDEX

# rest offsets (metres) of each joint in its parent's frame; the character faces -Y, left = +X
REST_OFFSETS = np.array([
    (0, 0, 0),            # Hips
    (0, 0, 0.10),         # Spine
    (0, 0, 0.15),         # Chest
    (0, 0, 0.22),         # Neck
    (0, 0, 0.10),         # Head
    (0.05, 0, 0.18),      # LeftShoulder
    (0.12, 0, 0),         # LeftUpperArm
    (0.28, 0, 0),         # LeftLowerArm
    (0.25, 0, 0),         # LeftHand
    (-0.05, 0, 0.18),     # RightShoulder
    (-0.12, 0, 0),        # RightUpperArm
    (-0.28, 0, 0),        # RightLowerArm
    (-0.25, 0, 0),        # RightHand
    (0.10, 0, -0.05),     # LeftUpperLeg
    (0, 0, -0.42),        # LeftLowerLeg
    (0, 0, -0.42),        # LeftFoot
    (0, -0.12, -0.06),    # LeftToes
    (-0.10, 0, -0.05),    # RightUpperLeg
    (0, 0, -0.42),        # RightLowerLeg
    (0, 0, -0.42),        # RightFoot
    (0, -0.12, -0.06),    # RightToes
], dtype=np.float64)
HIP_HEIGHT = 0.05 + 0.84 + 0.08     # ankle 8 cm above the floor with straight legs


def axis_angle(axis, angle) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    a = np.asarray(angle, dtype=np.float64)[..., None] * 0.5
    return np.concatenate([np.cos(a), np.sin(a) * axis], axis=-1)


@dataclass
class SynthMotion:
    fps: float
    positions: np.ndarray
    rotations: np.ndarray


@dataclass
class SynthPhrase:
    id: str
    duration_s: float
    n_frames: int
    beats_s: np.ndarray
    tempo_bpm: float
    style: str
    root_displacement_m: float = 0.0
    tags: tuple = ()
    features: dict = field(default_factory=dict)


def synth_phrase(seed: int, *, period_s: float = 0.5, n_beats: int = 12, fps: float = 30.0,
                 step_m: float = 0.06, turn_rad: float = 0.15, amp: float = 0.6
                 ) -> tuple[SynthMotion, np.ndarray]:
    """One phrase: (motion, dance beats in seconds).

    Upper body: random key poses on the beats. Legs: footsteps; on every other beat one foot
    steps to a new footprint under the moving root while the other stays planted, solved with a
    two-bone IK, so the source motion itself does not skate.
    """
    rng = np.random.default_rng(seed)
    beats = np.arange(n_beats + 1) * period_s
    beats[1:-1] += rng.uniform(-0.06, 0.06, n_beats - 1) * period_s
    duration = float(beats[-1])
    n = round(duration * fps) + 1
    t = np.arange(n) / fps
    nj = len(CANON_JOINTS)
    keys = n_beats + 1
    ang = rng.normal(0, amp * 0.5, (keys, nj, 3))
    ang[:, 0] *= 0.15
    ang[:, 1:5] *= 0.4
    legs = [[JOINT_INDEX[f"{side}{part}"] for part in ("UpperLeg", "LowerLeg", "Foot", "Toes")]
            for side in ("Left", "Right")]
    for leg in legs:
        ang[:, leg] = 0.0
        ang[:, leg[0], 0] = -0.3          # slightly bent knees (the IK needs a knee direction)
        ang[:, leg[1], 0] = 0.6
        ang[:, leg[2], 0] = -0.3
    yaw_k = np.cumsum(rng.uniform(-turn_rad, turn_rad, keys))
    xy_k = np.cumsum(rng.normal(0, step_m, (keys, 2)), axis=0)
    xy_k[0] = 0.0
    yaw_k[0] = 0.0
    # slow start, sharp stop on the beat (a dance "hit"): cosine ease on u**2
    seg = np.clip(np.searchsorted(beats, t, side="right") - 1, 0, keys - 2)
    u = (t - beats[seg]) / (beats[seg + 1] - beats[seg])
    e = (1 - np.cos(np.pi * np.clip(u, 0, 1) ** 2)) / 2
    ang_t = ang[seg] * (1 - e)[:, None, None] + ang[seg + 1] * e[:, None, None]
    yaw_t = yaw_k[seg] * (1 - e) + yaw_k[seg + 1] * e
    xy_t = xy_k[seg] * (1 - e)[:, None] + xy_k[seg + 1] * e[:, None]
    local = np.tile(np.array([1.0, 0, 0, 0]), (n, nj, 1))
    for j in range(nj):
        q = axis_angle((1, 0, 0), ang_t[:, j, 0])
        q = qmul(axis_angle((0, 1, 0), ang_t[:, j, 1]), q)
        q = qmul(axis_angle((0, 0, 1), ang_t[:, j, 2]), q)
        local[:, j] = q
    local[:, 0] = qmul(axis_angle((0, 0, 1), yaw_t), local[:, 0])
    # footprints: foot (k % 2) steps during interval k -> k+1 when k is odd for this seed
    stepping = (np.arange(keys - 1) + seed) % 2 == 0
    swing_side = (np.arange(keys - 1) // 2 + seed) % 2

    def footprint(k, side):
        c, s_ = np.cos(yaw_k[k]), np.sin(yaw_k[k])
        dx = 0.1 if side == 0 else -0.1
        return np.array([xy_k[k, 0] + c * dx, xy_k[k, 1] + s_ * dx, 0.08])

    prints = np.zeros((keys, 2, 3))
    prints[0] = [footprint(0, 0), footprint(0, 1)]
    for k in range(keys - 1):
        prints[k + 1] = prints[k]
        if stepping[k]:
            prints[k + 1, swing_side[k]] = footprint(k + 1, swing_side[k])
    target = prints[seg] * (1 - e)[:, None, None] + prints[seg + 1] * e[:, None, None]
    swing = np.zeros((n, 2))
    for side in range(2):
        moving = np.linalg.norm(prints[seg + 1, side] - prints[seg, side], axis=1) > 1e-9
        swing[:, side] = np.where(moving, np.sin(np.pi * e), 0.0)
    target[:, :, 2] += 0.12 * swing
    root = np.stack([xy_t[:, 0], xy_t[:, 1], HIP_HEIGHT - 0.05 - 0.03 * swing.max(axis=1)],
                    axis=1)
    pos, rot = fk(root, qnormalize(local), REST_OFFSETS)
    for side, leg in enumerate(legs):
        j0, j1, j2, _ = leg
        rt, rs = two_bone_ik(pos[:, j0], pos[:, j1], pos[:, j2], target[:, side],
                             rot[:, j0], rot[:, j1])
        local[:, j0] = qmul(qconj(rot[:, 0]), rt)
        local[:, j1] = qmul(qconj(rt), rs)
        local[:, j2] = qmul(qconj(rs), axis_angle((0, 0, 1), yaw_t))     # flat foot
    pos, rot = fk(root, qnormalize(local), REST_OFFSETS)
    return SynthMotion(fps, pos, rot), beats


@dataclass
class SynthLibrary:
    """A tiny library with the attributes blender_m2d's choreography code reads."""

    phrases: list
    motions: dict
    fps: float = 30.0
    hash: str = "synthetic"
    path: str = "<synthetic>"

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.phrases)

    def index_of(self, pid: str) -> int:
        return self.ids.index(pid)

    def motion(self, pid: str) -> SynthMotion:
        return self.motions[pid]

    def style_similarity(self) -> np.ndarray:
        s = np.array([p.style for p in self.phrases])
        return (s[:, None] == s[None, :]).astype(float)


def synth_library(n: int = 6, *, fps: float = 30.0, periods=(0.45, 0.5, 0.6),
                  styles=("salsa", "modern")) -> SynthLibrary:
    phrases, motions = [], {}
    for k in range(n):
        period = periods[k % len(periods)]
        n_beats = 8 + 2 * (k % 3)
        motion, beats = synth_phrase(100 + k, period_s=period, n_beats=n_beats, fps=fps)
        pid = f"synth_{k:02d}"
        phrases.append(SynthPhrase(pid, float(beats[-1]), motion.positions.shape[0],
                                   beats[1:-1].copy() if k % 2 else beats.copy(),
                                   60.0 / period, styles[k % len(styles)]))
        motions[pid] = motion
    return SynthLibrary(phrases, motions, fps)


def synth_song(duration_s: float = 24.0, *, bpm: float = 120.0, beats_per_phrase: int = 8):
    """Beat grid and phrases of a song with a steady tempo: (beats_s, intervals_s)."""
    period = 60.0 / bpm
    beats = np.arange(0.0, duration_s + 1e-9, period)
    idx = list(range(0, beats.size, beats_per_phrase))
    if idx[-1] != beats.size - 1:
        if beats.size - 1 - idx[-1] < beats_per_phrase // 2 and len(idx) > 1:
            idx[-1] = beats.size - 1
        else:
            idx.append(beats.size - 1)
    intervals = [(float(beats[a]), float(beats[b])) for a, b in itertools.pairwise(idx)]
    return beats, intervals


def rest_positions() -> np.ndarray:
    """Canonical joint positions [shape=(J, 3)] of the synthetic skeleton at rest (T-pose)."""
    pos = np.zeros((len(CANON_JOINTS), 3))
    from blender_m2d.core.skeleton import CANON_PARENTS

    pos[0] = (0.0, 0.0, HIP_HEIGHT)
    for j in range(1, len(CANON_JOINTS)):
        pos[j] = pos[CANON_PARENTS[j]] + REST_OFFSETS[j]
    return pos


def library_records(n: int = 6, *, fps: float = 30.0, periods=(0.45, 0.5, 0.6),
                    styles=("salsa", "modern"), seed0: int = 100):
    """:class:`blender_m2d.core.library.PhraseRecord` list of synthetic dance phrases."""
    from blender_m2d.core.library import DancePhrase, PhraseMotion, PhraseRecord
    from blender_m2d.core.phrasing import phrase_features

    recs = []
    for k in range(n):
        period = periods[k % len(periods)]
        motion, beats = synth_phrase(seed0 + k, period_s=period, n_beats=8 + 2 * (k % 3),
                                     fps=fps)
        pos = motion.positions.astype(np.float32)
        ph = DancePhrase(
            id=f"synth_{k:02d}", source="synthetic", take=f"take_{k}", frame_start=0,
            frame_end=pos.shape[0] - 1, n_frames=pos.shape[0], duration_s=float(beats[-1]),
            beats_s=beats.copy(), tempo_bpm=60.0 / period,
            root_displacement_m=(pos[-1, 0] - pos[0, 0]).astype(np.float64),
            style=styles[k % len(styles)], tags=("synthetic",),
            features=phrase_features(pos, fps, beats))
        recs.append(PhraseRecord(ph, PhraseMotion(fps, pos,
                                                  motion.rotations.astype(np.float32))))
    return recs


def write_library_dir(out, n: int = 6, **kw):
    from blender_m2d.core.library import write_library
    from blender_m2d.core.phrasing import FEATURE_NAMES

    return write_library(out, library_records(n, **kw), fps=kw.get("fps", 30.0),
                         feature_names=FEATURE_NAMES, name="synthetic-dance")
