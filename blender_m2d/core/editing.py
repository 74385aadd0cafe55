"""Editing a choreography after it was made, without Blender: re-decoding the unlocked phrases
with the transition matrix, re-ranking a swap's follower, readouts, and the compact storage of
the scorer's probabilities in a ``.blend`` (the add-on's ``Scene.m2d``).

Everything here works from a :class:`~blender_m2d.core.plan.Plan` plus the per-phrase scorer
probabilities [shape=(P, K)] that :func:`blender_m2d.core.choreography.choreograph` returned, so
a reopened file can re-decode without analysing the song or running the model again.
"""

from __future__ import annotations

import base64
import dataclasses
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .choreography import ChoreographyOptions, make_plan
from .decode import DecodeOptions, style_mask
from .errors import M2DError
from .metrics import HIT_TOLERANCE_S, beat_metrics
from .placement import PlacementOptions
from .plan import Candidate, Plan

ARRAY_PREFIX = "m2d-f32:"


# --------------------------------------------------------------------------- storage
def encode_array(a: np.ndarray) -> str:
    """A float array as ``"m2d-f32:<rows>x<cols>:<base64 of zlib'd float32>"`` (for a
    StringProperty in the .blend)."""
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {a.shape}")
    blob = base64.b64encode(zlib.compress(a.tobytes(), 6)).decode("ascii")
    return f"{ARRAY_PREFIX}{a.shape[0]}x{a.shape[1]}:{blob}"


def decode_array(text: str) -> np.ndarray:
    """Inverse of :func:`encode_array`; M2DError when the text is not such an array."""
    try:
        if not text.startswith(ARRAY_PREFIX):
            raise ValueError("missing prefix")
        shape_s, blob = text[len(ARRAY_PREFIX):].split(":", 1)
        rows, cols = (int(x) for x in shape_s.split("x"))
        raw = zlib.decompress(base64.b64decode(blob.encode("ascii")))
        return np.frombuffer(raw, dtype=np.float32).reshape(rows, cols).astype(np.float64)
    except (ValueError, zlib.error) as err:
        raise M2DError("the stored phrase scores are damaged; choreograph again") from err


def stable_number(text: str) -> int:
    """A stable positive 31-bit number for an enum identifier (zlib.crc32)."""
    return zlib.crc32(text.encode("utf-8")) & 0x7FFFFFFF


# --------------------------------------------------------------------------- candidates
def candidate_label(rank: int, cand: Candidate) -> str:
    """``"2. 60_02_01  0.10"``: rank (1 = best), phrase id, decoder score."""
    return f"{rank}. {cand.phrase_id}  {cand.score:.2f}"


def ranked_choices(plan: Plan, index: int) -> list[tuple[str, str, str, int]]:
    """Enum items ``(id, label, description, number)`` for phrase ``index``: its ranked
    candidates, plus the placed phrase when it is not among them."""
    ph = plan.phrases[index]
    items = []
    for r, c in enumerate(ph.candidates, start=1):
        items.append((c.phrase_id, candidate_label(r, c),
                      f"score {c.score:.3f} (model probability {c.prob:.3f})",
                      stable_number(c.phrase_id)))
    if ph.phrase_id not in {c.phrase_id for c in ph.candidates}:
        items.append((ph.phrase_id, f"-. {ph.phrase_id}", "placed (not among the ranked)",
                      stable_number(ph.phrase_id)))
    return items


def rescored_candidates(probs: np.ndarray, transition: np.ndarray, prev: int | None, *,
                        allowed: np.ndarray | None, top_k: int, ids: Sequence[str]
                        ) -> tuple[Candidate, ...]:
    """Eq. 6 ranking of one music phrase given the previous chosen library index (as
    :func:`blender_m2d.core.decode.decode` ranks them)."""
    p = np.asarray(probs, dtype=np.float64)
    k = p.size
    q = p * (np.asarray(transition, dtype=np.float64)[prev] if prev is not None else 1.0)
    if allowed is not None:
        q = np.where(allowed, q, 0.0)
    if q.sum() <= 0:
        q = p.copy()
    q = q / max(q.sum(), 1e-12)
    order = np.lexsort((np.arange(k), -q))[:max(1, min(int(top_k), k))]
    return tuple(Candidate(str(ids[j]), float(q[j]), float(p[j])) for j in order)


def rerank_after(plan: Plan, index: int, library, probs: np.ndarray | None,
                 transition: np.ndarray | None, *, styles: Sequence[str] | None = None
                 ) -> Plan:
    """After phrase ``index`` changed, re-rank the candidates of phrase ``index + 1`` (their
    Eq. 6 scores depend on the previous phrase). Without probabilities the plan is returned as
    it is."""
    j = index + 1
    if probs is None or transition is None or j >= len(plan.phrases):
        return plan
    ids = list(library.ids)
    allowed = style_mask([getattr(p, "style", "") or "" for p in library.phrases], styles)
    top_k = int(plan.decoding.get("top_k", 5))
    prev = library.index_of(plan.phrases[index].phrase_id)
    cands = rescored_candidates(probs[j], transition, prev, allowed=allowed, top_k=top_k,
                                ids=ids)
    return plan.with_phrase(j, dataclasses.replace(plan.phrases[j], candidates=cands))


# --------------------------------------------------------------------------- re-decoding
def phrase_beats(beats_s: Sequence[float], start_s: float, end_s: float) -> np.ndarray:
    """Music beats of a phrase with its start and end added (what
    :func:`~blender_m2d.core.choreography.make_plan` fits warps to)."""
    beats = np.asarray(beats_s, dtype=np.float64)
    b = beats[(beats >= start_s - 1e-3) & (beats <= end_s + 1e-3)]
    if b.size == 0 or b[0] > start_s + 1e-3:
        b = np.concatenate([[start_s], b])
    if b[-1] < end_s - 1e-3:
        b = np.concatenate([b, [end_s]])
    b[0], b[-1] = start_s, end_s
    return b


def placement_options(plan: Plan) -> PlacementOptions:
    """The plan's placement options as a :class:`PlacementOptions`."""
    fields = {f.name for f in dataclasses.fields(PlacementOptions)}
    kw: dict[str, Any] = {k: v for k, v in (plan.placement or {}).items() if k in fields}
    if "rate_range" in kw:
        kw["rate_range"] = tuple(kw["rate_range"])
    return PlacementOptions(**kw)


def redecode(plan: Plan, library, probs: np.ndarray, transition: np.ndarray, *,
             locks: Mapping[int, str], decode_options: DecodeOptions,
             target_bone_lengths: Sequence[float] | None = None,
             target_rig: Any = None) -> Plan:
    """Decode the song again keeping the ``locks`` (``{phrase index: phrase id}``) and lay it
    out on the same frames. Metrics, timings and the armature entry are left empty: placing
    the plan fills them. ``target_bone_lengths`` / ``target_rig``: the armature's body for the
    beat sync (:class:`.choreography.ChoreographyOptions`).

    A locked phrase keeps exactly its previous placement (dance phrase, frames and beat warp):
    the new warps of the other phrases are fitted (and beat-synced) as usual, then the locked
    phrases' previous warps are put back, so locking a phrase pins its timing too."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(plan.phrases), len(library.ids)):
        raise M2DError(f"the stored phrase scores have shape {probs.shape}, but the plan has "
                       f"{len(plan.phrases)} phrases over a library of {len(library.ids)}; "
                       "choreograph again")
    intervals = [(p.music_start_s, p.music_end_s) for p in plan.phrases]
    pbeats = [phrase_beats(plan.beats_s, s, e) for s, e in intervals]
    kw: dict[str, Any] = {"target_rig": target_rig}
    if target_bone_lengths is not None:
        kw["target_bone_lengths"] = tuple(float(x) for x in target_bone_lengths)
    options = ChoreographyOptions(
        decode=decode_options, placement=placement_options(plan), fps=plan.fps,
        frame_start=plan.frame_start, locks=dict(locks),
        fit_prior=bool(plan.decoding.get("fit_prior", False)), **kw)
    new = make_plan(song=dict(plan.song), intervals_s=intervals, phrase_beats_s=pbeats,
                    beats_s=np.asarray(plan.beats_s), library=library, probs=probs,
                    transition=transition, scorer_info=dict(plan.scorer),
                    options=dataclasses.replace(options, beat_sync=False))
    # a phrase that keeps its dance keeps its (already beat-synced) warp; only the phrases
    # whose dance changed are fitted and beat-synced again, against their kept neighbours
    phrases = list(new.phrases)
    kept = set()
    for i, (old, ph) in enumerate(zip(plan.phrases, phrases)):
        if old.phrase_id == ph.phrase_id and old.warp:
            phrases[i] = dataclasses.replace(ph, warp=dict(old.warp))
            kept.add(i)
    placement = dict(new.placement)
    if plan.placement.get("beat_sync") is not None:
        placement["beat_sync"] = plan.placement["beat_sync"]
    if options.beat_sync and len(kept) < len(phrases) and hasattr(library, "motion"):
        phrases, info = _sync_changed(phrases, kept, library, pbeats, plan, options)
        placement["beat_sync"] = info
    return dataclasses.replace(new, phrases=tuple(phrases), placement=placement)


def _sync_changed(phrases: list, kept: set[int], library, pbeats, plan: Plan,
                  options: ChoreographyOptions) -> tuple[list, dict]:
    """Beat-sync (:func:`.choreography.sync_phrase_warps`) only the phrases not in ``kept``;
    the kept ones are fixed context."""
    from .choreography import sync_phrase_warps

    out, info = sync_phrase_warps(phrases, library, pbeats, plan.beats_s,
                                  xf_s=plan.crossfade_frames / plan.fps, options=options,
                                  kept=frozenset(kept))
    return out, {**info, "synced": len(phrases) - len(kept)}


def changed_phrases(old: Plan, new: Plan) -> list[int]:
    """Indices whose placed dance phrase differs."""
    return [i for i, (a, b) in enumerate(zip(old.phrases, new.phrases))
            if a.phrase_id != b.phrase_id]


# --------------------------------------------------------------------------- readouts
def phrase_readouts(plan: Plan) -> list[dict[str, float]]:
    """Per phrase: ``beat_hit`` (share of the dance beats in the phrase that land within
    0.1 s of a music beat, -1 before the plan was measured), ``n_dance``/``n_music`` beats,
    ``seam_jump_cm`` (root jump of the crossfade into this phrase, 0 for the first)."""
    beats = plan.metrics.get("beats", {}) if plan.metrics else {}
    dance = np.sort(np.asarray(beats.get("dance_beats_s", []), dtype=np.float64))
    music = np.sort(np.asarray(plan.beats_s, dtype=np.float64))
    measured = bool(plan.metrics) and "dance_beats_s" in beats
    seams = {}
    for s in (plan.metrics.get("seams", {}) or {}).get("per_seam", []) if plan.metrics else []:
        seams[int(s["index"])] = float(s.get("root_jump_cm", 0.0))
    out = []
    for p in plan.phrases:
        lo, hi = p.music_start_s, p.music_end_s
        if measured:          # the beats in [lo, hi) of the sorted arrays
            d0, d1 = np.searchsorted(dance, [lo, hi], side="left")
            m0, m1 = np.searchsorted(music, [lo, hi], side="left")
            bm = beat_metrics(dance[d0:d1], music[m0:m1], tol_s=HIT_TOLERANCE_S)
            hit = bm.hit_rate
            nd, nm = bm.n_dance, bm.n_music
        else:
            hit, nd, nm = -1.0, 0, 0
        out.append({"beat_hit": float(hit), "n_dance": int(nd), "n_music": int(nm),
                    "seam_jump_cm": float(seams.get(p.index, 0.0))})
    return out


def song_readouts(plan: Plan) -> dict[str, float]:
    """Song-level ``beat_hit`` (dance beats on music beats), ``beat_coverage``,
    ``max_seam_jump_cm`` and the analysis' ``beat_confidence``; -1 for what was not measured
    (plans made before the beat confidence existed have none)."""
    m = plan.metrics or {}
    song = (m.get("beats", {}) or {}).get("song", {}) or {}
    seams = m.get("seams", {}) or {}
    confidence = (plan.song or {}).get("beat_confidence")
    return {"beat_hit": float(song.get("beat_hit_rate", -1.0)),
            "beat_coverage": float(song.get("beat_coverage", -1.0)),
            "max_seam_jump_cm": float(seams.get("max_root_jump_cm", -1.0)),
            "beat_confidence": -1.0 if confidence is None else float(confidence)}


__all__ = ["candidate_label", "changed_phrases", "decode_array", "encode_array",
           "phrase_beats", "phrase_readouts", "placement_options", "ranked_choices",
           "redecode", "rerank_after", "rescored_candidates", "song_readouts",
           "stable_number"]


# --------------------------------------------------------------------------- dance beats
class DanceBeatTrack:
    """:func:`blender_m2d.core.motion.detect_dance_beats` of a whole song's joint positions,
    kept up to date when frames change.

    The detector's per-frame quantities (the resampled front-view joint paths, their speed and
    acceleration) are cached; :meth:`update` recomputes them only on the samples a window of
    changed frames reaches, and :meth:`beats` takes the thresholds from the whole-song speed
    statistics again (mean and std over the cached array, the same numbers a full run computes)
    before the vectorised candidate and non-maximum-suppression steps. The result equals a full
    ``detect_dance_beats`` of the updated positions exactly (tested); NaN positions
    (unmapped joints) count as 0, as in :func:`blender_m2d.nla.measure`.
    """

    def __init__(self, positions: np.ndarray, fps: float, *, derivatives: str = "per_frame",
                 alpha_v: float = 0.5, alpha_a: float = 1.0 / np.sqrt(3.0),
                 window_s: float = 0.4):
        from .motion import DETECTOR_FPS

        if derivatives not in ("per_frame", "per_second"):
            raise ValueError(f"derivatives must be 'per_frame' or 'per_second', "
                             f"got {derivatives!r}")
        pos = np.asarray(positions, dtype=np.float64)
        if pos.ndim != 3 or pos.shape[2] != 3:
            raise ValueError(f"positions must have shape (F, J, 3), got {pos.shape}")
        self.fps, self.det_fps = float(fps), DETECTOR_FPS
        self.alpha_v, self.alpha_a, self.window_s = alpha_v, alpha_a, window_s
        self.dt = 1.0 / DETECTOR_FPS if derivatives == "per_second" else 1.0
        self.n_src = pos.shape[0]
        self.same_rate = abs(self.fps - self.det_fps) < 1e-9 or self.n_src < 2
        if self.same_rate:
            self.n = self.n_src
        else:
            self.n = int(np.floor((self.n_src - 1) / self.fps * self.det_fps + 1e-9)) + 1
        self.t_src = np.arange(self.n_src) / self.fps
        self.t_dst = np.arange(self.n) / self.det_fps
        self.s = np.empty((self.n, pos.shape[1] * 2))
        self.speed = np.zeros(self.n)
        self.accel = np.zeros(self.n)
        self._resample(pos, 0, self.n_src, 0, self.n)
        self._derive(1, self.n - 1)

    def _resample(self, pos: np.ndarray, lo: int, hi: int, k0: int, k1: int) -> None:
        """Detector samples ``k0..k1-1`` from source frames ``lo..hi-1`` of ``pos``."""
        p2 = np.nan_to_num(pos[lo:hi][:, :, [0, 2]]).reshape(hi - lo, -1)
        if self.same_rate:
            self.s[k0:k1] = p2[k0 - lo:k1 - lo]
            return
        xp = self.t_src[lo:hi]
        x = self.t_dst[k0:k1]
        for c in range(p2.shape[1]):
            self.s[k0:k1, c] = np.interp(x, xp, p2[:, c])

    def _derive(self, k0: int, k1: int) -> None:
        """Speed and acceleration of inner samples ``k0..k1-1`` (clipped to 1..n-2)."""
        k0, k1 = max(k0, 1), min(k1, self.n - 1)
        if k1 <= k0:
            return
        s, dt = self.s, self.dt
        v = np.ascontiguousarray((s[k0 + 1:k1 + 1] - s[k0 - 1:k1 - 1]) * 0.5 / dt)
        a = np.ascontiguousarray((s[k0 + 1:k1 + 1] - 2.0 * s[k0:k1] + s[k0 - 1:k1 - 1])
                                 / (dt * dt))
        self.speed[k0:k1] = np.linalg.norm(v, axis=1)
        self.accel[k0:k1] = np.linalg.norm(a, axis=1)

    def update(self, positions: np.ndarray, lo: int, hi: int) -> None:
        """Frames ``lo..hi-1`` of the song changed; ``positions`` is the whole updated song."""
        lo, hi = max(int(lo), 0), min(int(hi), self.n_src)
        if hi <= lo:
            return
        pos = np.asarray(positions, dtype=np.float64)
        if self.same_rate:
            k0, k1 = lo, hi
            self._resample(pos, lo, hi, k0, k1)
        else:
            # samples whose bracketing source frames meet the window, and source frames
            # two beyond them so every sample is interpolated from the same pair as a full run
            k0 = max(int(np.floor((lo - 1) / self.fps * self.det_fps)) - 1, 0)
            k1 = min(int(np.ceil(hi / self.fps * self.det_fps)) + 2, self.n)
            s0 = max(int(np.floor(self.t_dst[k0] * self.fps)) - 2, 0)
            s1 = min(int(np.ceil(self.t_dst[k1 - 1] * self.fps)) + 3, self.n_src)
            self._resample(pos, s0, s1, k0, k1)
        self._derive(k0 - 1, k1 + 1)

    def beats(self) -> np.ndarray:
        """Beat times in seconds from the first frame (as ``detect_dance_beats``)."""
        n = self.n
        if n < 5:
            return np.zeros(0)
        speed, accel = self.speed, self.accel
        inner = slice(1, n - 1)
        t_v = max(float(speed[inner].mean() - self.alpha_v * speed[inner].std()), 0.0)
        t_a = self.alpha_a * t_v
        coarse = np.zeros(n, dtype=bool)
        coarse[inner] = (speed[inner] < t_v) & (accel[inner] > t_a)
        strength = (t_v - speed) + (accel - t_a)
        half = max(round(self.window_s * self.det_fps / 2), 1)
        masked = np.full(n + 2 * half, -np.inf)
        masked[half:half + n] = np.where(coarse, strength, -np.inf)
        wmax = np.lib.stride_tricks.sliding_window_view(masked, 2 * half + 1).max(axis=1)
        keep: list[int] = []
        for t in np.flatnonzero(coarse & (strength >= wmax)).tolist():
            if not (keep and t - keep[-1] <= half):
                keep.append(t)
        return np.asarray(keep, dtype=np.float64) / self.det_fps
