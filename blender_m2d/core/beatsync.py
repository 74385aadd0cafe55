"""Fit the phrases' beat warps against the dance-beat detector itself ("detector in the loop").

The library stores each phrase's dance beats as detected on its whole take. In a song the same
motion is seen in another context: other phrases around it change the detector's self-adaptive
thresholds (spec section 6.3: they come from the whole sequence), crossfades blend two phrases,
root alignment turns the dancer, which changes the front-view projection the detector uses.
The beats the detector finds in the finished dance are therefore not exactly the library's.

:func:`sync_warps` starts from the warps fitted to the library beats and improves them by
coordinate descent, phrase by phrase, on the real objective: the dance beats
:func:`blender_m2d.core.motion.detect_dance_beats` finds in the composed dance should hit the
music beats. For each phrase a handful of candidate warps is tried:

* the current one; the fit to the library beats; the fit to the beats the detector sees in this
  phrase now (mapped back into the phrase's own time); the fit to both; both refitted at 0.8x
  and 1.25x the current rate;
* the current one with every detected beat that misses moved onto its nearest free music beat
  (when the local rates allow it);
* the current one *run faster through the stops that miss* (:func:`_speed_through`): a stop is
  a moment where the whole body is slower than the song's threshold; most of the mocap's own
  stops between the beats are shallow (half of the misses on the 95 bpm test song have their
  slowest frame above half the threshold), so played 1.5-2x faster over +-0.07-0.1 s they are
  no stops any more, while the rest of that beat interval runs slower and both beats stay put.
  A time warp can thus remove an off-beat stop, not only move it;
* the current one with its interior anchors shifted by +-1 and +-2 detector frames.

Each candidate is scored on the frames it can influence (the phrase, its crossfades and the
start of the next phrase, which it turns and moves) with the detector's thresholds at their
whole-song values: ``hits - misses`` (one-to-one within 0.1 s). The best candidate is kept
(ties keep the current one). The thresholds follow the song: after every accepted change the
speeds of the frames it changed are updated and the thresholds recomputed, so later phrases
are scored against the detector the finished song will have (with thresholds frozen per sweep
the sweeps oscillated). After each sweep the whole song is re-detected with the real detector;
the best sweep wins. All warps keep the monotonicity and rate limits of
:func:`blender_m2d.core.placement.fit_warp`; with ``max_seam_rise_m`` a candidate may also not
make the root climb more over a crossfade than the decoder's choice allowed.

The composed dance used here is the canonical motion (body-size normalised, root aligned at the
crossfade middles exactly as :func:`~blender_m2d.core.placement.place_all` does) as the target
armature shows it (the retarget solve's joint positions, or the bone-length approximation
:func:`reproportion`), sampled at the detector's 30 fps on each phrase's strip (its frames in
the plan), with joint positions mixed linearly in crossfades; the final metrics are measured on
the evaluated armature (:mod:`blender_m2d.nla`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .metrics import HIT_TOLERANCE_S, beat_metrics, count_hits
from .motion import DETECTOR_FPS, detect_dance_beats
from .placement import RATE_RANGE, Warp, accent_time, fit_warp, heading

ALPHA_V = 0.5
ALPHA_A = 1.0 / math.sqrt(3.0)
HALF_WINDOW = max(round(0.4 * DETECTOR_FPS / 2), 1)
SPEEDUP = ((1.5, 2.0 / DETECTOR_FPS), (1.5, 0.1), (2.0, 2.0 / DETECTOR_FPS))
"""(rate factor, half-width s) of the :func:`_speed_through` candidates: the fast stretch
runs that many times the beat interval's mean rate over +- that many seconds."""


@dataclass
class SyncPhrase:
    """What the search needs about one placed phrase."""

    start_s: float
    """Music phrase start (s)."""
    end_s: float
    music_beats_s: np.ndarray
    """Music beats of the phrase, start and end included."""
    positions: np.ndarray
    """[shape=(F, J, 3)] canonical positions of the library phrase (body-size normalised)."""
    fps: float
    """Frame rate of ``positions``."""
    duration_s: float
    library_beats_s: np.ndarray
    tempo_bpm: float | None = None
    locked_warp: bool = False
    strip_s: tuple[float, float] | None = None
    """Song-time span of the phrase's strip (its crossfades included); default: the music
    interval plus half the crossfade on each inner side."""

    def strip(self, xf_s: float, first: bool, last: bool) -> tuple[float, float]:
        if self.strip_s is not None:
            return float(self.strip_s[0]), float(self.strip_s[1])
        return (self.start_s - (0.0 if first else xf_s / 2),
                self.end_s + (0.0 if last else xf_s / 2))


@dataclass
class SyncResult:
    warps: list[Warp]
    metrics_before: dict
    metrics_after: dict
    sweeps: int
    history: list[dict] = field(default_factory=list)


class _Song:
    """Composite of all phrases at the detector rate with cached per-phrase samples."""

    def __init__(self, phrases: Sequence[SyncPhrase], xf_s: float, derivatives: str) -> None:
        self.ph = list(phrases)
        self.xf_s = xf_s
        self.dt = 1.0 / DETECTOR_FPS if derivatives == "per_second" else 1.0
        self.derivatives = derivatives
        self.duration = max(p.end_s for p in phrases)
        self.n = math.floor(self.duration * DETECTOR_FPS + 1e-9) + 1
        self.t = np.arange(self.n) / DETECTOR_FPS
        last = len(phrases) - 1
        self.spans = []
        self.strips = [p.strip(xf_s, i == 0, i == last) for i, p in enumerate(phrases)]
        for lo, hi in self.strips:
            k0 = max(math.ceil(lo * DETECTOR_FPS - 1e-9), 0)
            k1 = min(math.floor(hi * DETECTOR_FPS + 1e-9), self.n - 1)
            self.spans.append((k0, k1))
        self._accented: dict[tuple, np.ndarray] = {}
        self._w = [self.weights(i, np.arange(k0, k1 + 1)) for i, (k0, k1) in
                   enumerate(self.spans)]
        self.unaligned: list[np.ndarray] = [None] * len(phrases)       # type: ignore
        self.transform: list[tuple[float, np.ndarray]] = [(0.0, np.zeros(3))] * len(phrases)
        self._placed: list[np.ndarray | None] = [None] * len(phrases)

    # --- sampling and alignment
    def sample(self, i: int, warp: Warp) -> np.ndarray:
        p = self.ph[i]
        k0, k1 = self.spans[i]
        if warp.accent > 0.0 and warp.accent_beats_s is not None:
            # every candidate of a phrase re-times the same frames with the same beats: the
            # accented clock is computed once (the warp applies it before its anchors)
            key = (i, warp.accent, warp.accent_beats_s.tobytes())
            acc = self._accented.get(key)
            if acc is None:
                acc = self._accented[key] = accent_time(self.t[k0:k1 + 1],
                                                        warp.accent_beats_s, warp.accent)
            tau = dataclasses.replace(warp, accent=0.0, accent_beats_s=None)(acc)
        else:
            tau = warp(self.t[k0:k1 + 1])
        pos = p.positions
        x = np.clip(tau * p.fps, 0.0, pos.shape[0] - 1)
        i0 = np.minimum(np.floor(x).astype(np.int64), max(pos.shape[0] - 2, 0))
        i1 = np.minimum(i0 + 1, pos.shape[0] - 1)
        w = (x - i0)[:, None, None]
        return (1.0 - w) * pos[i0] + w * pos[i1]

    def mid_index(self, i: int) -> int:
        """Detector frame of the middle of the crossfade into phrase ``i``."""
        return round((self.strips[i][0] + self.xf_s / 2) * DETECTOR_FPS)

    def align(self, prev_placed: np.ndarray, prev_k0: int, i: int, unaligned: np.ndarray
              ) -> tuple[float, np.ndarray]:
        k0 = self.spans[i][0]
        m = self.mid_index(i)
        ia = min(max(m - prev_k0, 0), prev_placed.shape[0] - 1)
        ib = min(max(m - k0, 0), unaligned.shape[0] - 1)
        yaw = math.remainder(float(heading(prev_placed[ia]) - heading(unaligned[ib])), math.tau)
        c, s = math.cos(yaw), math.sin(yaw)
        x, y = unaligned[ib, 0, 0], unaligned[ib, 0, 1]
        t = np.array([prev_placed[ia, 0, 0] - (c * x - s * y),
                      prev_placed[ia, 0, 1] - (s * x + c * y), 0.0])
        return yaw, t

    @staticmethod
    def apply(unaligned: np.ndarray, tr: tuple[float, np.ndarray]) -> np.ndarray:
        yaw, t = tr
        c, s = math.cos(yaw), math.sin(yaw)
        r = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return unaligned @ r.T + t

    def placed(self, i: int) -> np.ndarray:
        if self._placed[i] is None:
            self._placed[i] = self.apply(self.unaligned[i], self.transform[i])
        return self._placed[i]

    def set_phrase(self, i: int, unaligned: np.ndarray) -> None:
        """Replace phrase ``i`` and re-align the next one to it (later ones follow at the next
        :meth:`rechain`)."""
        self.unaligned[i] = unaligned
        self._placed[i] = None
        if i + 1 < len(self.ph):
            self.transform[i + 1] = self.align(self.placed(i), self.spans[i][0], i + 1,
                                               self.unaligned[i + 1])
            self._placed[i + 1] = None

    def rebuild(self, warps: Sequence[Warp]) -> None:
        for i, w in enumerate(warps):
            self.unaligned[i] = self.sample(i, w)
        self.rechain(0)

    def rechain(self, start: int) -> None:
        for i in range(max(start, 0), len(self.ph)):
            self._placed[i] = None
            if i == 0:
                self.transform[0] = (0.0, np.zeros(3))
                continue
            prev = self.placed(i - 1)
            self.transform[i] = self.align(prev, self.spans[i - 1][0], i, self.unaligned[i])

    def seam_rise(self, i: int, unaligned: np.ndarray) -> float:
        """Largest root height change across the crossfades into and out of phrase ``i``
        with ``unaligned`` [shape=(k1 - k0 + 1, J, 3)] as its samples: from the outgoing
        phrase where a crossfade starts to the incoming one where it ends (what the root path
        over the crossfade has to climb; alignment keeps heights)."""
        n_xf = round(self.xf_s * DETECTOR_FPS)
        out = 0.0
        k0 = self.spans[i][0]
        if i > 0 and self.unaligned[i - 1] is not None:
            prev = self.unaligned[i - 1]
            a = min(max(k0 - self.spans[i - 1][0], 0), prev.shape[0] - 1)
            b = min(n_xf, unaligned.shape[0] - 1)
            out = abs(float(unaligned[b, 0, 2] - prev[a, 0, 2]))
        if i + 1 < len(self.ph) and self.unaligned[i + 1] is not None:
            nxt = self.unaligned[i + 1]
            a = min(max(self.spans[i + 1][0] - k0, 0), unaligned.shape[0] - 1)
            b = min(n_xf, nxt.shape[0] - 1)
            out = max(out, abs(float(nxt[b, 0, 2] - unaligned[a, 0, 2])))
        return out

    # --- composite
    def weights(self, i: int, k: np.ndarray) -> np.ndarray:
        t = k / DETECTOR_FPS
        w = np.ones(k.size)
        if i > 0:
            w = np.minimum(w, (t - self.strips[i][0]) / self.xf_s)
        if i < len(self.ph) - 1:
            w = np.minimum(w, (self.strips[i][1] - t) / self.xf_s)
        return np.clip(w, 0.0, 1.0)

    def composite(self, lo: int, hi: int, override: dict[int, np.ndarray] | None = None
                  ) -> np.ndarray:
        """Positions [shape=(hi - lo + 1, J, 3)] on detector frames lo..hi."""
        override = override or {}
        nj = self.ph[0].positions.shape[1]
        acc = np.zeros((hi - lo + 1, nj, 3))
        wsum = np.zeros(hi - lo + 1)
        for i, (k0, k1) in enumerate(self.spans):
            if k1 < lo or k0 > hi:
                continue
            pos = override.get(i)
            if pos is None:
                pos = self.placed(i)
            a, b = max(k0, lo), min(k1, hi)
            w = self._w[i][a - k0:b - k0 + 1]
            acc[a - lo:b - lo + 1] += w[:, None, None] * pos[a - k0:b - k0 + 1]
            wsum[a - lo:b - lo + 1] += w
        return acc / np.maximum(wsum, 1e-12)[:, None, None]

    # --- detector pieces
    def kinematics(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = pos[:, :, [0, 2]].reshape(pos.shape[0], -1)
        v = np.zeros(s.shape[0])
        a = np.zeros(s.shape[0])
        v[1:-1] = np.linalg.norm((s[2:] - s[:-2]) * 0.5 / self.dt, axis=1)
        a[1:-1] = np.linalg.norm((s[2:] - 2.0 * s[1:-1] + s[:-2]) / (self.dt * self.dt), axis=1)
        return v, a

    def detect_local(self, pos: np.ndarray, t_v: float, t_a: float) -> np.ndarray:
        """The detector on ``pos`` (detector frames) with fixed thresholds; frame indices."""
        v, a = self.kinematics(pos)
        n = v.size
        coarse = np.zeros(n, dtype=bool)
        coarse[1:-1] = (v[1:-1] < t_v) & (a[1:-1] > t_a)
        if not coarse.any():
            return np.zeros(0, dtype=np.int64)
        strength = np.where(coarse, (t_v - v) + (a - t_a), -np.inf)
        h = HALF_WINDOW
        padded = np.concatenate([np.full(h, -np.inf), strength, np.full(h, -np.inf)])
        wmax = np.max(np.lib.stride_tricks.sliding_window_view(padded, 2 * h + 1), axis=1)
        cand = np.flatnonzero(coarse & (strength >= wmax))
        keep: list[int] = []
        for t in cand.tolist():
            if not (keep and t - keep[-1] <= h):
                keep.append(t)
        return np.asarray(keep, dtype=np.int64)

    def detect_all(self) -> np.ndarray:
        comp = self.composite(0, self.n - 1)
        return detect_dance_beats(comp, DETECTOR_FPS, derivatives=self.derivatives)


def reproportion(positions: np.ndarray, lengths: np.ndarray,
                 parents: Sequence[int] | None = None) -> np.ndarray:
    """Positions [shape=(F, J, 3)] rebuilt with bone ``lengths`` [shape=(J,)] (length of the bone
    from each joint's parent to it; the root keeps its position): what the armature will show
    when it follows these positions by direction matching (:mod:`blender_m2d.retarget`)."""
    from .skeleton import CANON_PARENTS

    parents = CANON_PARENTS if parents is None else parents
    pos = np.asarray(positions, dtype=np.float64)
    out = np.empty_like(pos)
    out[:, 0] = pos[:, 0]
    for j, p in enumerate(parents):
        if p < 0:
            continue
        d = pos[:, j] - pos[:, p]
        n = np.linalg.norm(d, axis=-1, keepdims=True)
        out[:, j] = out[:, p] + d / np.maximum(n, 1e-9) * float(lengths[j])
    return out


def _nudge(warp: Warp, det_t: np.ndarray, music: np.ndarray, rate_range) -> Warp:
    """Move each detected beat that misses onto its nearest music beat by inserting an anchor,
    where monotonicity and the rate limits allow it."""
    lo_r, hi_r = rate_range
    a = [tuple(x) for x in warp.anchors]
    used: set[int] = set()
    for td in det_t:
        tau = float(warp(td))
        j = int(np.argmin(np.abs(music - td)))
        tm = float(music[j])
        if j in used or abs(tm - td) > 0.3:
            continue
        used.add(j)
        if abs(tm - td) <= 0.02:
            continue
        left = [p for p in a if p[0] < min(td, tm) - 1e-6 and p[1] < tau - 1e-6]
        right = [p for p in a if p[0] > max(td, tm) + 1e-6 and p[1] > tau + 1e-6]
        if not left or not right:
            continue
        lft, rgt = left[-1], right[0]
        r1 = (tau - lft[1]) / (tm - lft[0])
        r2 = (rgt[1] - tau) / (rgt[0] - tm)
        if lo_r <= r1 <= hi_r and lo_r <= r2 <= hi_r:
            a = [*left, (tm, tau), *right]
    return dataclasses.replace(warp, anchors=np.asarray(a))


def _speed_through(warp: Warp, miss_t: np.ndarray, music: np.ndarray, factor: float,
                   rate_range, half_s: float = 0.1) -> Warp | None:
    """Run faster through the dance's own stops that miss the music beats.

    A stop the detector finds is a moment where the whole body is slow (speed below the
    song's threshold). Many of the mocap's own stops between beats are shallow; played
    ``factor`` times faster (at most the rate limit) they are no stops any more. For every
    beat interval ``[b_k, b_k+1]`` with a missed stop at song time ``t_d``, the warp gets
    knots that play dance time ``tau_d +- r_f h`` in song time ``2 h`` (``r_f`` = ``factor`` x
    the interval's mean rate), the rest of the interval at one slower, equal rate; the warp's
    values at both beats are kept, so every anchored beat stays on its music beat. Knots live
    in the warp's accented time (:func:`~.placement.accent_time`), like its anchors. Intervals
    where the rate limits do not allow it are left as they are; None if none changed."""
    lo_r, hi_r = rate_range
    mb = np.asarray(music, dtype=np.float64)
    a = warp.anchors
    if mb.size < 2 or a.shape[0] < 2:
        return None
    plain = dataclasses.replace(warp, accent=0.0, accent_beats_s=None)

    def to_acc(t):
        if warp.accent > 0.0 and warp.accent_beats_s is not None:
            return accent_time(np.asarray(t, np.float64), warp.accent_beats_s, warp.accent)
        return np.asarray(t, np.float64)

    k_of = np.searchsorted(mb, miss_t, side="right") - 1
    knots: list[tuple[float, float]] = []
    spans: list[tuple[float, float]] = []
    done: set[int] = set()
    for td, k in zip(miss_t.tolist(), k_of.tolist()):
        if k < 0 or k >= mb.size - 1 or k in done:
            continue
        b0, b1 = float(mb[k]), float(mb[k + 1])
        if b0 < a[0, 0] - 1e-9 or b1 > a[-1, 0] + 1e-9:
            continue
        length = b1 - b0
        h = min(half_s, 0.25 * length)
        tau0, tau1 = float(plain(b0)), float(plain(b1))
        mean = (tau1 - tau0) / length
        if mean <= 1e-6:
            continue
        r_f = min(factor * mean, hi_r)
        r_s = (tau1 - tau0 - 2.0 * h * r_f) / (length - 2.0 * h)
        if r_f <= mean * 1.05 or r_s < lo_r:
            continue
        tau_d = float(plain(to_acc(td)))
        t_a = b0 + (tau_d - r_f * h - tau0) / r_s
        t_a = min(max(t_a, b0 + 1e-3), b1 - 2.0 * h - 1e-3)
        if t_a <= b0 or t_a + 2.0 * h >= b1:
            continue
        u_a = tau0 + r_s * (t_a - b0)
        done.add(k)
        spans.append((b0, b1))
        knots += [(b0, tau0), (t_a, u_a), (t_a + 2.0 * h, u_a + 2.0 * h * r_f), (b1, tau1)]
    if not knots:
        return None
    keep = [tuple(p) for p in a
            if not any(s0 - 1e-9 <= p[0] <= s1 + 1e-9 for s0, s1 in spans)]
    new = np.asarray(sorted(set(keep + knots)), dtype=np.float64)
    return dataclasses.replace(warp, anchors=new)


def _shifted(warp: Warp, d_s: float, rate_range) -> Warp | None:
    a = warp.anchors.copy()
    if a.shape[0] < 3:
        return None
    a[1:-1, 1] = np.clip(a[1:-1, 1] + d_s, 0.0, warp.dance_duration_s)
    dt = np.diff(a[:, 0])
    du = np.diff(a[:, 1])
    ok = dt > 1e-9
    if np.any(du < -1e-9):
        return None
    r = du[ok] / dt[ok]
    moving = r[r > 1e-6]
    if moving.size and (moving.min() < rate_range[0] - 1e-6 or moving.max() > rate_range[1] + 1e-6):
        return None
    return dataclasses.replace(warp, anchors=a)


def sync_warps(phrases: Sequence[SyncPhrase], warps: Sequence[Warp], music_beats_s: np.ndarray,
               *, xf_s: float, derivatives: str = "per_second",
               rate_range: tuple[float, float] = RATE_RANGE, sweeps: int = 3,
               miss_cost: float = 1.0, accent: float = 0.0,
               max_seam_rise_m: float | None = None) -> SyncResult:
    """Improve ``warps`` so the detector's dance beats hit ``music_beats_s`` (module docstring).

    ``max_seam_rise_m``: a candidate may not make the root height change across one of its
    phrase's crossfades (outgoing phrase where the crossfade starts, incoming one where it
    ends, :meth:`_Song.seam_rise`) larger than this or than the current warp's, whichever is
    larger (the decoder chose the phrases for compatible heights where they are cut;
    :class:`~.choreography.SeamPrior`). Returns the best warps found (never worse, on the
    whole-song detection, than the input)."""
    song = _Song(phrases, xf_s, derivatives)
    music = np.asarray(music_beats_s, dtype=np.float64)
    warps = list(warps)
    song.rebuild(warps)
    det = song.detect_all()
    start = beat_metrics(det, music)
    best = (_objective(start), list(warps), start)
    history = [start.to_json()]
    tol = HIT_TOLERANCE_S
    margin = HALF_WINDOW + 2
    lib_fits: dict[int, Warp] = {}
    done = 0
    for _sweep in range(sweeps):
        comp = song.composite(0, song.n - 1)
        speed = song.kinematics(comp)[0]
        changed = 0
        for i, ph in enumerate(phrases):
            if ph.locked_warp:
                continue
            t_v, t_a = _thresholds(speed)
            k0, k1 = song.spans[i]
            nxt = i + 1 if i + 1 < len(phrases) else None
            lo = max(k0 - margin, 0)
            hi = min((song.spans[nxt][0] + round(xf_s * DETECTOR_FPS) + margin)
                     if nxt is not None else k1 + margin, song.n - 1)
            hi = max(hi, min(k1 + margin, song.n - 1))
            m_local = music[(music >= (lo - 0.5) / DETECTOR_FPS - tol)
                            & (music <= (hi + 0.5) / DETECTOR_FPS + tol)]
            cur = warps[i]
            comp_now = song.composite(lo, hi)
            det_now = song.detect_local(comp_now, t_v, t_a)
            det_t = (det_now + lo) / DETECTOR_FPS
            own = det_t[(det_t >= ph.start_s) & (det_t < ph.end_s)]
            tau_det = np.sort(cur(own))
            lib_beats = np.asarray(ph.library_beats_s, dtype=np.float64)
            cands: list[Warp] = [cur]
            if i not in lib_fits and lib_beats.size:
                lib_fits[i] = fit_warp(lib_beats, ph.duration_s, ph.music_beats_s,
                                       rate_range=rate_range, dance_tempo_bpm=ph.tempo_bpm,
                                       accent=accent)
            if i in lib_fits:
                cands.append(lib_fits[i])
            for beats in (tau_det, np.union1d(tau_det, lib_beats)):
                if beats.size:
                    cands.append(fit_warp(beats, ph.duration_s, ph.music_beats_s,
                                          rate_range=rate_range, dance_tempo_bpm=ph.tempo_bpm,
                                          accent=accent))
            cands.append(_nudge(cur, own, ph.music_beats_s, rate_range))
            base = np.union1d(tau_det, lib_beats) if tau_det.size else lib_beats
            g = _rate_of(cur)
            for f in (0.8, 1.25):
                cands.append(fit_warp(base, ph.duration_s, ph.music_beats_s,
                                      rate_range=rate_range, target_rate=g * f, accent=accent))
            miss_t = own[np.min(np.abs(own[:, None] - m_local[None, :]), axis=1,
                                initial=np.inf) > tol] if m_local.size else own
            if miss_t.size:
                for f, hw in SPEEDUP:
                    c = _speed_through(cur, miss_t, ph.music_beats_s, f, rate_range, hw)
                    if c is not None:
                        cands.append(c)
            for d in (-2, -1, 1, 2):
                s = _shifted(cur, d / DETECTOR_FPS, rate_range)
                if s is not None:
                    cands.append(s)
            scores = []
            rise_cap = None
            for c in cands:
                un = song.unaligned[i] if c is cur else song.sample(i, c)
                if max_seam_rise_m is not None:
                    rise = song.seam_rise(i, un)
                    if rise_cap is None:                     # the current warp comes first
                        rise_cap = max(max_seam_rise_m, rise) + 1e-9
                    elif rise > rise_cap:
                        scores.append(-np.inf)
                        continue
                tr = song.transform[i]
                override = {i: song.apply(un, tr)}
                if nxt is not None:
                    head = song.unaligned[nxt][:hi - song.spans[nxt][0] + 1]
                    tr_n = song.align(override[i], k0, nxt, head)
                    override[nxt] = song.apply(head, tr_n)
                comp_c = song.composite(lo, hi, override)
                d = (song.detect_local(comp_c, t_v, t_a) + lo) / DETECTOR_FPS
                hits = count_hits(d, m_local, tol_s=tol)
                scores.append(hits - miss_cost * (d.size - hits))
            k = int(np.argmax(scores))
            if k != 0 and scores[k] > scores[0]:
                warps[i] = cands[k]
                song.set_phrase(i, song.sample(i, cands[k]))
                changed += 1
                # keep the song's speed (hence the detector's thresholds) up to date: this
                # phrase and the next one, which it turned
                a0 = max(k0 - 1, 0)
                b0 = min((song.spans[nxt][1] if nxt is not None else k1) + 1, song.n - 1)
                speed[a0 + 1:b0] = song.kinematics(song.composite(a0, b0))[0][1:-1]
        song.rechain(0)
        det = song.detect_all()
        now = beat_metrics(det, music)
        history.append(now.to_json())
        done += 1
        if _objective(now) > best[0]:
            best = (_objective(now), list(warps), now)
        if changed == 0:
            break
    return SyncResult(warps=best[1], metrics_before=start.to_json(),
                      metrics_after=best[2].to_json(), sweeps=done, history=history)


def _thresholds(speed: np.ndarray) -> tuple[float, float]:
    """The detector's speed and acceleration thresholds from the whole song's joint speed
    (spec section 6.3), as :func:`~.motion.detect_dance_beats` sets them."""
    inner = speed[1:-1]
    t_v = max(float(inner.mean() - ALPHA_V * inner.std()), 0.0)
    return t_v, ALPHA_A * t_v


def _rate_of(warp: Warp) -> float:
    a = warp.anchors
    span = a[-1, 0] - a[0, 0]
    return float((a[-1, 1] - a[0, 1]) / span) if span > 1e-6 else 1.0


def _objective(m) -> float:
    return m.n_hits - (m.n_dance - m.n_hits)
