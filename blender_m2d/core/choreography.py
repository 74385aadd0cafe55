"""Song + dance library (+ model) -> :class:`~blender_m2d.core.plan.Plan`, without Blender.

The pipeline of the paper (spec section 0), one function per stage::

    audio    = load_audio(song)                              # core.audio
    analysis = analyze_song(audio)                           # core.analysis: beats, phrases
    probs, M = score_phrases(audio, analysis, library, scorer)   # ONNX model or baseline
    decoded  = decode(probs, M, ...)                         # core.decode: Eq. 6 / Viterbi
    plan     = make_plan(...)                                # frames + beat warps per phrase

Placing the plan's motions on an armature is :mod:`blender_m2d.nla` (bpy).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import baseline
from .decode import DecodeOptions, decode, rank, style_mask
from .errors import M2DError
from .placement import (
    PlacementOptions,
    crossfade_frames,
    dance_beat_period,
    fit_warp,
    fold_rate,
    phrase_frames,
)
from .plan import Candidate, PlacedPhrase, Plan
from .timebase import DEFAULT_FPS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChoreographyOptions:
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    placement: PlacementOptions = field(default_factory=PlacementOptions)
    fps: float = DEFAULT_FPS
    frame_start: int = 1
    locks: Mapping[int, str] = field(default_factory=dict)
    """``{music phrase index: library phrase id}`` kept fixed by the decoder."""
    fit_prior: bool = True
    """Multiply a model's probabilities by the baseline's duration-feasibility factor."""
    beat_sync: bool = True
    """Refine the warps against the dance-beat detector (:mod:`~blender_m2d.core.beatsync`)."""
    sync_sweeps: int = 3
    seam_prior: bool = True
    """Decode with the :class:`SeamPrior` (root heights where phrases are cut and start)."""
    seams_after_beat: bool = True
    """Start each crossfade on its phrase boundary beat instead of centring it there
    (:func:`seam_intervals`)."""
    target_bone_lengths: tuple[float, ...] | None = None
    """Bone lengths (m, per canonical joint, from its parent) of the armature the plan is for;
    the beat sync then sees the body the armature will show (:func:`.beatsync.reproportion`)."""
    target_rig: Any = None
    """The armature's :class:`~.retargeting.TargetRig` (``blender_m2d.retarget.target_rig``):
    the beat sync then sees exactly the joint positions the retarget solve gives the armature
    (:func:`~.retargeting.solve_target`), which ``target_bone_lengths`` only approximates."""


@dataclass
class Timer:
    """Wall-clock seconds per named stage."""

    timings: dict[str, float] = field(default_factory=dict)

    def __call__(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.timings[name] = round(
                    timer.timings.get(name, 0.0) + time.perf_counter() - self.t0, 4)
                return False

        return _Stage()


@dataclass
class Choreography:
    """Result of :func:`choreograph`: the plan plus what it was made from."""

    plan: Plan
    analysis: Any
    audio: Any
    probs: np.ndarray
    transition: np.ndarray


def _intervals(analysis) -> list[tuple[float, float]]:
    return [(float(p.start_s), float(p.end_s)) for p in analysis.phrases]


def _phrase_beats(analysis, i: int, s: float, e: float) -> np.ndarray:
    if hasattr(analysis, "phrase_beats"):
        b = np.asarray(analysis.phrase_beats(i), dtype=np.float64)
    else:
        beats = np.asarray(analysis.beats_s, dtype=np.float64)
        b = beats[(beats >= s - 1e-3) & (beats <= e + 1e-3)]
    b = b[(b >= s - 1e-3) & (b <= e + 1e-3)]
    if b.size == 0 or b[0] > s + 1e-3:
        b = np.concatenate([[s], b])
    if b[-1] < e - 1e-3:
        b = np.concatenate([b, [e]])
    b[0], b[-1] = s, e
    return b


SEAM_HEIGHT_FREE = 0.08
"""Root height difference (leg lengths) a seam takes without cost (:class:`SeamPrior`)."""
SEAM_HEIGHT_SIGMA = 0.02
"""Scale (leg lengths) of the Gaussian cost of the difference beyond that."""
SEAM_RISE_MAX = 0.1
"""Root height change (leg lengths) over a crossfade the beat sync may not exceed (unless the
decoded warp already does; :func:`.beatsync.sync_warps` ``max_seam_rise_m``)."""
SEAM_PASSES = 4
"""Decoding passes with the seam prior, each with the cuts of the phrases chosen so far
replaced by their fitted warps' (:meth:`SeamPrior.refine`)."""
_HEIGHTS: dict[tuple[str, str, int], tuple[list[np.ndarray], np.ndarray, np.ndarray]] = {}


def _root_heights(library) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Per library phrase: root height curve in leg lengths, its fps, and the phrase's dance
    beat period (s, NaN if unknown). Cached per library."""
    key = (str(getattr(library, "path", "")), str(getattr(library, "hash", "")),
           len(library.ids))
    if key not in _HEIGHTS:
        from .retargeting import leg_length

        curves, fps, period = [], np.zeros(len(library.ids)), np.full(len(library.ids), np.nan)
        for k, meta in enumerate(library.phrases):
            m = library.motion(library.ids[k])
            pos = np.asarray(m.positions, dtype=np.float64)
            curves.append(pos[:, 0, 2] / max(leg_length(pos), 1e-6))
            fps[k] = float(m.fps)
            p = dance_beat_period(meta.beats_s, getattr(meta, "tempo_bpm", None))
            if p is not None:
                period[k] = p
        _HEIGHTS.clear()
        _HEIGHTS[key] = (curves, fps, period)
    return _HEIGHTS[key]


class SeamPrior:
    """Seam compatibility of consecutive dance phrases, a step factor of the decoder
    (:func:`~.decode.decode` ``step_factor``): for phrase j after phrase i at music phrase t,
    ``exp(-0.5 (max(|h_i - h_j| - SEAM_HEIGHT_FREE, 0) / SEAM_HEIGHT_SIGMA)^2)`` with ``h`` the
    root (hips) height in leg lengths of each phrase's dancer: ``h_j`` at the start of j,
    ``h_i`` where phrase i is cut at the end of music phrase t - 1. The cut is estimated as
    the time warp will place it: at the natural rate (dance beat period over music beat
    period, moved by octaves into the rate range, :func:`~.placement.natural_rate`) times the
    music phrase's length, or the phrase's end if it runs out.

    Root alignment turns and moves the incoming phrase but keeps heights as captured, so a
    phrase cut while the dancer is crouched (or ends on the floor) followed by one that starts
    upright rises by the difference inside the crossfade (50 cm in 0.3 s in the worst case of
    the bundled library). Style similarity, the paper's M, does not see that.
    """

    def __init__(self, library, intervals_s: Sequence[tuple[float, float]],
                 phrase_beats_s: Sequence[np.ndarray],
                 rate_range: tuple[float, float] = (0.5, 2.0)) -> None:
        curves, fps, p_d = _root_heights(library)
        n = len(intervals_s)
        p_m = np.array([float(np.median(np.diff(np.asarray(b, np.float64))))
                        if np.size(b) >= 2 else 0.5 for b in phrase_beats_s])
        dur = np.array([e - s for s, e in intervals_s], dtype=np.float64)
        pd = np.where(np.isfinite(p_d)[None, :], p_d[None, :], p_m[:, None])
        g = fold_rate(pd / np.maximum(p_m[:, None], 1e-6), rate_range)    # (P, K)
        self.curves, self.fps = curves, fps
        self.intervals = [(float(a), float(b)) for a, b in intervals_s]
        self.end = np.zeros((n, len(curves)))
        self.start = np.array([c[0] for c in curves])
        self.known: set[tuple[int, int]] = set()
        for k, c in enumerate(curves):
            last = (c.size - 1) / fps[k]
            tau = np.minimum(g[:, k] * dur, last)
            self.end[:, k] = self.height(k, tau)

    def height(self, k: int, tau_s):
        c = self.curves[k]
        return np.interp(np.asarray(tau_s) * self.fps[k], np.arange(c.size), c)

    def refine(self, chosen) -> bool:
        """Replace the estimated cut of each ``(music phrase, library phrase, warp)`` in
        ``chosen`` by where its fitted warp cuts it (the warp at the music phrase's end).
        True if any of them moved by more than 0.02 leg lengths (decode again)."""
        moved = False
        for i, k, warp in chosen:
            if (i, k) in self.known or i >= len(self.intervals) - 1:
                continue
            self.known.add((i, k))
            h = float(self.height(k, float(warp(np.array([self.intervals[i][1]]))[0])))
            moved |= abs(h - self.end[i, k]) > 0.02
            self.end[i, k] = h
        return moved

    def __call__(self, t: int, rows: np.ndarray) -> np.ndarray:
        """Factor [shape=(len(rows), K)] of the step into music phrase ``t`` from the phrases
        ``rows`` (library indices) at music phrase ``t - 1``."""
        d = np.abs(self.end[t - 1, np.asarray(rows, dtype=np.int64)][:, None]
                   - self.start[None, :])
        excess = np.maximum(d - SEAM_HEIGHT_FREE, 0.0) / SEAM_HEIGHT_SIGMA
        return np.exp(-0.5 * excess * excess)


def seam_lookahead(probs: np.ndarray, transition: np.ndarray, prior: SeamPrior,
                   allowed: np.ndarray | None, locks: Mapping[int, int]) -> np.ndarray:
    """[shape=(P, K)] factor for greedy decoding with the seam prior: how well the best next
    phrase can follow phrase j at music phrase t, ``max_k q(k) C(j, k) / max_k q(k)`` with
    ``q(k) = p_{t+1}(k) M[j, k]`` over the allowed phrases (the locked one where t + 1 is
    locked) and ``C`` the prior of step t + 1; 1 for the last phrase.

    Eq. 6 picks each phrase without looking ahead; with the seam prior in the transitions it
    would still walk into a phrase that few phrases can follow (one cut on the floor) and pay
    at the next seam."""
    p = np.asarray(probs, dtype=np.float64)
    n, k = p.shape
    out = np.ones((n, k))
    allow = np.ones(k, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    block = max(1, LOOKAHEAD_BLOCK_ELEMENTS // max(k, 1))   # rows per (block, K) temporary
    for t in range(n - 1):
        nxt = p[t + 1] * allow
        if t + 1 in locks:
            nxt = np.zeros(k)
            nxt[locks[t + 1]] = 1.0
        for r0 in range(0, k, block):
            rows = np.arange(r0, min(r0 + block, k))
            q = transition[rows] * nxt[None, :]
            best = q.max(axis=1)
            q *= prior(t + 1, rows)
            out[t, rows] = np.where(best > 0, q.max(axis=1) / np.maximum(best, 1e-300), 1.0)
    return out


LOOKAHEAD_BLOCK_ELEMENTS = 1 << 22
"""Elements of each temporary of :func:`seam_lookahead` (32 MB of float64): a K = 10,000
library is processed in blocks of 419 rows instead of three K x K (800 MB) arrays at once."""


def seam_intervals(intervals_s: Sequence[tuple[float, float]],
                   phrase_beats_s: Sequence[np.ndarray], xf_s: float) -> list[tuple[float, float]]:
    """Where the strips of the phrases meet (the crossfade middles): each phrase boundary moved
    half a crossfade later (at most half the next beat interval), so the crossfade starts on
    the boundary beat.

    A linear crossfade between two different poses moves the body by itself (the weight's rate
    times the pose difference) and kinks its velocity at both ends. Centred on the boundary
    beat it therefore erased the stop both phrases make on that beat and put two stops of its
    own 0.15 s either side of it, off the beat (one lost beat and up to two off-beat dance beats
    per seam). Starting on the beat, the outgoing phrase stops on its last beat alone, the
    crossfade's first kink falls on that stop, and only its end is off the beat."""
    out = [list(x) for x in intervals_s]
    for i in range(1, len(out)):
        b = np.asarray(phrase_beats_s[i], dtype=np.float64)
        if b.size < 2:
            continue
        t = float(b[0] + min(0.5 * xf_s, 0.5 * (b[1] - b[0])))
        if out[i - 1][0] < t < out[i][1]:
            out[i - 1][1] = out[i][0] = t
    return [(float(a), float(b)) for a, b in out]


def score_phrases(audio, analysis, library, scorer=None, *, fit_prior: bool = True,
                  timer: Timer | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Probabilities [shape=(P, K)] over the library per music phrase, the transition matrix
    [shape=(K, K)] and a description of the scorer (for the plan)."""
    timer = timer or Timer()
    with timer("music_descriptors"):
        md = baseline.analysis_descriptors(audio, analysis)
    with timer("dance_descriptors"):
        dd = baseline.dance_descriptors(library)
    if scorer is None:
        with timer("scoring"):
            probs = baseline.score(md, dd)
            transition = baseline.library_transition(library)
        return probs, transition, {"kind": "baseline", "path": None, "providers": []}
    if tuple(scorer.phrase_ids) != tuple(library.ids):
        raise M2DError("the model was trained for another dance library (its phrase ids differ); "
                       "pass the matching --library or leave out --model to use the baseline")
    from .features import song_features

    with timer("features"):
        feats = song_features(audio, analysis)
    with timer("scoring"):
        probs = np.asarray(scorer.score(feats.mel), dtype=np.float64)
        if fit_prior:
            probs = probs * baseline.fit_prior(dd, md)
            probs /= np.maximum(probs.sum(axis=1, keepdims=True), 1e-300)
        transition = np.asarray(scorer.transition, dtype=np.float64)
    return probs, transition, {"kind": "model",
                               "path": getattr(scorer, "onnx_path", None) and
                               str(scorer.onnx_path),
                               "providers": list(getattr(scorer, "providers_used", []))}


def make_plan(*, song: dict, intervals_s: Sequence[tuple[float, float]],
              phrase_beats_s: Sequence[np.ndarray], beats_s: np.ndarray, library,
              probs: np.ndarray, transition: np.ndarray, scorer_info: dict,
              options: ChoreographyOptions = ChoreographyOptions(),
              timer: Timer | None = None) -> Plan:
    """Decode the sequence and lay out frames and beat warps (bpy-free, no audio needed)."""
    timer = timer or Timer()
    ids = list(library.ids)
    phrases_meta = list(library.phrases)
    dopt = options.decode
    with timer("decode"):
        allowed = style_mask([getattr(p, "style", "") or "" for p in phrases_meta], dopt.styles)
        locks = {}
        for t, pid in (options.locks or {}).items():
            try:
                locks[int(t)] = library.index_of(pid) if hasattr(library, "index_of") \
                    else ids.index(pid)
            except (KeyError, ValueError) as err:
                raise M2DError(f"locked phrase {pid!r} is not in the dance library") from err
        trans = np.asarray(transition, dtype=np.float64)
        warps: dict[tuple[int, int], Any] = {}

        def warp_of(i: int, k: int):
            if (i, k) not in warps:
                meta = phrases_meta[k]
                warps[i, k] = fit_warp(
                    np.asarray(meta.beats_s, dtype=np.float64), float(meta.duration_s),
                    np.asarray(phrase_beats_s[i], dtype=np.float64),
                    rate_range=options.placement.rate_range,
                    dance_tempo_bpm=getattr(meta, "tempo_bpm", None),
                    accent=options.placement.accent)
            return warps[i, k]

        prior = None
        if options.seam_prior and hasattr(library, "motion") and len(intervals_s) > 1:
            prior = SeamPrior(library, intervals_s, phrase_beats_s,
                              options.placement.rate_range)
        for _ in range(SEAM_PASSES if prior is not None else 1):
            p_dec = np.asarray(probs, dtype=np.float64)
            if prior is not None and dopt.method == "greedy":
                p_dec = p_dec * seam_lookahead(p_dec, trans, prior, allowed, locks)
            dec = decode(p_dec, trans, method=dopt.method, no_repeat=dopt.no_repeat,
                         allowed=allowed, locks=locks, top_k=dopt.top_k, seed=dopt.seed,
                         variety=dopt.variety, recent=dopt.recent,
                         recent_penalty=dopt.recent_penalty, step_factor=prior)
            # the estimated cuts of the chosen phrases -> where their fitted warps cut them
            if prior is None or not prior.refine(
                    [(i, int(k), warp_of(i, int(k))) for i, k in enumerate(dec.sequence)]):
                break
        if prior is not None:   # candidates: Eq. 6 (M_t with the seam prior) on the scorer's
            top_i, top_s, top_p = rank(probs, trans, dec.sequence, allowed=allowed,  # probs
                                       top_k=dopt.top_k, step_factor=prior)
            dec = dataclasses.replace(dec, top_index=top_i, top_score=top_s, top_prob=top_p)
    fps = float(options.fps)
    xf = crossfade_frames(fps, options.placement.crossfade_s)
    frames = phrase_frames(seam_intervals(intervals_s, phrase_beats_s, xf / fps)
                           if options.seams_after_beat else intervals_s, fps=fps,
                           frame_start=options.frame_start, xf_frames=xf)
    placed = []
    with timer("warp"):
        for i, ((s, e), (a, b)) in enumerate(zip(intervals_s, frames)):
            k = int(dec.sequence[i])
            mb = np.asarray(phrase_beats_s[i], dtype=np.float64)
            warp = warp_of(i, k)
            cands = tuple(Candidate(ids[j], float(sc), float(pr)) for j, sc, pr in
                          zip(dec.top_index[i], dec.top_score[i], dec.top_prob[i]))
            placed.append(PlacedPhrase(
                index=i, music_start_s=float(s), music_end_s=float(e), phrase_id=ids[k],
                candidates=cands, frame_start=int(a), frame_end=int(b),
                n_music_beats=int(max(mb.size - 1, 0)), locked=i in locks,
                warp=warp.summary()))
    sync_info = None
    if options.beat_sync and len(placed) and hasattr(library, "motion"):
        with timer("beat_sync"):
            placed, sync_info = _sync(placed, library, phrase_beats_s, beats_s, fps, xf, options,
                                      locks)
    decoding = {**dopt.to_json(), "locks": {str(k): v for k, v in (options.locks or {}).items()},
                "fit_prior": bool(options.fit_prior and scorer_info.get("kind") == "model"),
                "seam_prior": bool(options.seam_prior),
                "log_score": round(dec.log_score, 4)}
    placement = options.placement.to_json()
    if sync_info is not None:
        placement["beat_sync"] = sync_info
    return Plan(
        song=song,
        library={"path": str(getattr(library, "path", "") or ""),
                 "hash": str(getattr(library, "hash", "")), "n_phrases": len(ids)},
        scorer=scorer_info, decoding=decoding, fps=fps, frame_start=int(options.frame_start),
        crossfade_frames=xf, beats_s=tuple(float(b) for b in np.asarray(beats_s)),
        phrases=tuple(placed), timings_s=dict(timer.timings), placement=placement)


def _sync(placed: list[PlacedPhrase], library, phrase_beats_s, beats_s, fps: float, xf: int,
          options: ChoreographyOptions, locks: Mapping[int, int]):
    """Detector-in-the-loop refinement of the warps (see :mod:`.beatsync`)."""
    return sync_phrase_warps(placed, library, phrase_beats_s, beats_s, xf_s=xf / fps,
                             options=options)


_RIG_VIEWS: dict[tuple, np.ndarray] = {}
_RIG_VIEWS_MAX = 4000


def rig_view(library, pid: str, motion, rig, leg: float) -> np.ndarray:
    """Joint positions [shape=(F, J, 3)] the armature described by ``rig`` (a
    :class:`~.retargeting.TargetRig`) shows for library phrase ``pid`` scaled to the rig's leg
    length (:func:`~.retargeting.solve_target`, no length slack, as the NLA keys it; unmapped
    joints 0). Depends only on the library phrase and the rig, so it is cached (per library
    hash, phrase and rig rest pose) across choreographies."""
    from .retargeting import solve_target

    digest = hash((rig.joints, np.asarray(rig.rest_heads).tobytes(),
                   np.asarray(rig.rest_rots).tobytes(), np.asarray(rig.tail_dirs).tobytes()))
    pos = np.asarray(motion.positions)
    key = (str(getattr(library, "path", "")), str(getattr(library, "hash", "")), pid, digest,
           pos.shape, pos[[0, pos.shape[0] // 2, -1]].tobytes(), float(leg))
    out = _RIG_VIEWS.get(key)
    if out is None:
        s = float(rig.leg_length()) / max(leg, 1e-6)
        out = solve_target(rig, np.asarray(motion.positions, np.float64) * s,
                           np.asarray(motion.rotations, np.float64))[1]
        out.flags.writeable = False
        if len(_RIG_VIEWS) >= _RIG_VIEWS_MAX:
            _RIG_VIEWS.clear()
        _RIG_VIEWS[key] = out
    return out


def sync_phrase_warps(placed: Sequence[PlacedPhrase], library, phrase_beats_s, beats_s, *,
                      xf_s: float, options: ChoreographyOptions,
                      kept: frozenset[int] | set[int] = frozenset()) -> tuple[list, dict]:
    """Refine the warps of ``placed`` with the dance-beat detector in the loop.

    Phrases are normalised to one leg length (and to the armature's proportions when
    ``options.target_bone_lengths`` is set) before :func:`.beatsync.sync_warps` runs. Phrases
    whose index is in ``kept`` are fixed context (``locked_warp``) and are returned unchanged;
    the UI re-syncs only what an edit changed this way. ``xf_s`` is the crossfade in seconds.
    """
    from .beatsync import SyncPhrase, sync_warps
    from .placement import Warp
    from .retargeting import leg_length

    ids = list(dict.fromkeys(p.phrase_id for p in placed))
    motions = {pid: library.motion(pid) for pid in ids}
    legs = {pid: leg_length(np.asarray(m.positions)) for pid, m in motions.items()}
    ref_leg = float(np.median(list(legs.values())))
    metas = {pid: library.phrases[library.index_of(pid)] for pid in ids}
    scaled = {pid: np.asarray(m.positions, np.float64) * (ref_leg / max(legs[pid], 1e-6))
              for pid, m in motions.items()}
    if options.target_rig is not None:
        rig = options.target_rig
        rig_leg = float(rig.leg_length())
        for pid, m in motions.items():
            scaled[pid] = rig_view(library, pid, m, rig, legs[pid]) * (ref_leg / rig_leg)
    elif options.target_bone_lengths is not None:
        from .beatsync import reproportion
        from .skeleton import JOINT_INDEX

        lengths = np.asarray(options.target_bone_lengths, np.float64)
        rig_leg = float(np.mean([lengths[JOINT_INDEX[s + "LowerLeg"]]
                                 + lengths[JOINT_INDEX[s + "Foot"]] for s in ("Left", "Right")]))
        if rig_leg > 1e-6 and np.all(np.isfinite(lengths)):
            lengths = lengths * (ref_leg / rig_leg)
            scaled = {pid: reproportion(p, lengths) for pid, p in scaled.items()}
    items, warps = [], []
    f0, fps = float(options.frame_start), float(options.fps)
    for i, ph in enumerate(placed):
        meta = metas[ph.phrase_id]
        items.append(SyncPhrase(
            start_s=ph.music_start_s, end_s=ph.music_end_s,
            music_beats_s=np.asarray(phrase_beats_s[i], np.float64),
            positions=scaled[ph.phrase_id], fps=float(motions[ph.phrase_id].fps),
            duration_s=float(meta.duration_s), library_beats_s=np.asarray(meta.beats_s),
            tempo_bpm=getattr(meta, "tempo_bpm", None), locked_warp=i in kept,
            strip_s=((ph.frame_start - f0) / fps, (ph.frame_end - f0) / fps)))
        warps.append(Warp.from_summary(ph.warp, float(meta.duration_s)))
    res = sync_warps(items, warps, np.asarray(beats_s, np.float64), xf_s=xf_s,
                     rate_range=options.placement.rate_range, sweeps=options.sync_sweeps,
                     accent=options.placement.accent,
                     max_seam_rise_m=SEAM_RISE_MAX * ref_leg if options.seam_prior else None)
    out = [ph if i in kept else dataclasses.replace(ph, warp=w.summary())
           for i, (ph, w) in enumerate(zip(placed, res.warps))]
    info = {"sweeps": res.sweeps, "canonical_before": res.metrics_before,
            "canonical_after": res.metrics_after}
    return out, info


def choreograph(song: str | os.PathLike | Any, library, *, scorer=None,
                options: ChoreographyOptions = ChoreographyOptions(),
                progress: Callable[[float, str], None] | None = None,
                cancel: threading.Event | None = None, analysis=None,
                timer: Timer | None = None) -> Choreography:
    """Analyse ``song`` (a path or a loaded ``Audio``), score, decode and lay out the plan.

    ``cancel`` (a :class:`threading.Event`) is checked between stages; ``analysis`` (a
    ``SongAnalysis`` of this song) skips the analysis stage."""
    from .analysis import MAX_SONG_S, analyze_song, beat_warning
    from .audio import load_audio

    timer = timer or Timer()

    def report(x: float, what: str) -> None:
        if progress is not None:
            progress(x, what)
        if cancel is not None and cancel.is_set():
            raise M2DError("cancelled")

    report(0.0, "loading audio")
    with timer("load_audio"):
        audio = song if hasattr(song, "y") else load_audio(song, max_duration_s=MAX_SONG_S)
    report(0.1, "analysing the song")
    if analysis is None:
        with timer("analysis"):
            analysis = analyze_song(audio, cancel=cancel)
    if len(analysis.phrases) == 0:
        raise M2DError("no music phrases found (is the song silent or too short?)",
                       path=getattr(audio, "path", None))
    confidence = getattr(analysis, "beat_confidence", None)
    warning = beat_warning(getattr(audio, "path", None) or str(song), confidence)
    if warning:  # a warning, not an error: the dance is made on the estimated grid
        log.warning("%s", warning)
    report(0.6, "scoring dance phrases")
    probs, transition, info = score_phrases(audio, analysis, library, scorer,
                                            fit_prior=options.fit_prior, timer=timer)
    report(0.8, "decoding")
    intervals = _intervals(analysis)
    pbeats = [_phrase_beats(analysis, i, s, e) for i, (s, e) in enumerate(intervals)]
    song_info = {"path": str(getattr(audio, "path", song)),
                 "duration_s": round(float(analysis.duration_s), 6),
                 "tempo_bpm": round(float(getattr(analysis, "tempo_bpm", 0.0) or 0.0), 3),
                 "n_beats": int(np.asarray(analysis.beats_s).size)}
    if confidence is not None:
        song_info["beat_confidence"] = round(float(confidence), 3)
    plan = make_plan(song=song_info, intervals_s=intervals, phrase_beats_s=pbeats,
                     beats_s=np.asarray(analysis.beats_s), library=library, probs=probs,
                     transition=transition, scorer_info=info, options=options, timer=timer)
    report(1.0, "planned")
    return Choreography(plan=plan, analysis=analysis, audio=audio, probs=probs,
                        transition=transition)
