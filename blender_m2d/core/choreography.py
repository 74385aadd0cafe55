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
from .decode import DecodeOptions, decode, style_mask
from .errors import M2DError
from .placement import PlacementOptions, crossfade_frames, fit_warp, phrase_frames
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
    target_bone_lengths: tuple[float, ...] | None = None
    """Bone lengths (m, per canonical joint, from its parent) of the armature the plan is for;
    the beat sync then sees the body the armature will show (:func:`.beatsync.reproportion`)."""


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
        dec = decode(probs, transition, method=dopt.method, no_repeat=dopt.no_repeat,
                     allowed=allowed, locks=locks, top_k=dopt.top_k, seed=dopt.seed,
                     variety=dopt.variety)
    fps = float(options.fps)
    xf = crossfade_frames(fps, options.placement.crossfade_s)
    frames = phrase_frames(intervals_s, fps=fps, frame_start=options.frame_start, xf_frames=xf)
    placed = []
    with timer("warp"):
        for i, ((s, e), (a, b)) in enumerate(zip(intervals_s, frames)):
            k = int(dec.sequence[i])
            meta = phrases_meta[k]
            mb = np.asarray(phrase_beats_s[i], dtype=np.float64)
            warp = fit_warp(np.asarray(meta.beats_s, dtype=np.float64), float(meta.duration_s),
                            mb, rate_range=options.placement.rate_range,
                            dance_tempo_bpm=getattr(meta, "tempo_bpm", None),
                            accent=options.placement.accent)
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
    if options.target_bone_lengths is not None:
        from .beatsync import reproportion
        from .skeleton import JOINT_INDEX

        lengths = np.asarray(options.target_bone_lengths, np.float64)
        rig_leg = float(np.mean([lengths[JOINT_INDEX[s + "LowerLeg"]]
                                 + lengths[JOINT_INDEX[s + "Foot"]] for s in ("Left", "Right")]))
        if rig_leg > 1e-6 and np.all(np.isfinite(lengths)):
            lengths = lengths * (ref_leg / rig_leg)
            scaled = {pid: reproportion(p, lengths) for pid, p in scaled.items()}
    items, warps = [], []
    for i, ph in enumerate(placed):
        meta = metas[ph.phrase_id]
        items.append(SyncPhrase(
            start_s=ph.music_start_s, end_s=ph.music_end_s,
            music_beats_s=np.asarray(phrase_beats_s[i], np.float64),
            positions=scaled[ph.phrase_id], fps=float(motions[ph.phrase_id].fps),
            duration_s=float(meta.duration_s), library_beats_s=np.asarray(meta.beats_s),
            tempo_bpm=getattr(meta, "tempo_bpm", None), locked_warp=i in kept))
        warps.append(Warp.from_summary(ph.warp, float(meta.duration_s)))
    res = sync_warps(items, warps, np.asarray(beats_s, np.float64), xf_s=xf_s,
                     rate_range=options.placement.rate_range, sweeps=options.sync_sweeps,
                     accent=options.placement.accent)
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
    from .analysis import MAX_SONG_S, analyze_song
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
    plan = make_plan(song=song_info, intervals_s=intervals, phrase_beats_s=pbeats,
                     beats_s=np.asarray(analysis.beats_s), library=library, probs=probs,
                     transition=transition, scorer_info=info, options=options, timer=timer)
    report(1.0, "planned")
    return Choreography(plan=plan, analysis=analysis, audio=audio, probs=probs,
                        transition=transition)
