"""What goes where: the choreography plan and its versioned ``PLAN.json``.

A :class:`Plan` is the complete, bpy-free description of a choreographed song: for every music
phrase the chosen library dance phrase, the ranked alternatives with their scores, the music
interval and the scene frame range of its NLA strip. After the plan is placed on an armature
the metrics measured on the evaluated animation and the per-stage timings are added with
:func:`dataclasses.replace`, so the object itself stays immutable.

The file format is documented in ``docs/formats.md`` (section "Plan").
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import M2DError
from .fileio import read_json, write_json_atomic

PLAN_FORMAT = "m2d.plan"
"""Value of the ``format`` key of PLAN.json."""
PLAN_VERSION = 1
"""Current (and newest readable) ``format_version`` of PLAN.json."""


@dataclass(frozen=True)
class Candidate:
    """One ranked alternative for a music phrase.

    ``score`` is the decoder's rescaled probability (paper Eq. 6: the scorer's probability times
    the transition-matrix entry from the previous chosen phrase), renormalised over the phrases
    the options allow, so the scores of all allowed phrases sum to 1. ``prob`` is the scorer's
    raw probability for the music phrase alone.
    """

    phrase_id: str
    score: float
    prob: float


@dataclass(frozen=True)
class PlacedPhrase:
    """One music phrase and the dance phrase placed on it.

    Times are seconds from the start of the song; frames are scene frames at ``Plan.fps`` where
    scene frame ``Plan.frame_start`` is time 0. ``frame_start``/``frame_end`` are the first and
    last frame of the phrase's NLA strip, crossfade lead-in and tail included (so consecutive
    phrases overlap by ``Plan.crossfade_frames``).
    """

    index: int
    music_start_s: float
    music_end_s: float
    phrase_id: str
    candidates: tuple[Candidate, ...]
    frame_start: int
    frame_end: int
    n_music_beats: int = 0
    locked: bool = False
    warp: dict[str, Any] = field(default_factory=dict)
    """Time-warp summary: ``rate_min``/``rate_max`` (dance seconds per music second),
    ``anchored_beats`` (dance beats pinned to music beats), ``dance_used_s``, ``hold_s``."""


@dataclass(frozen=True)
class Plan:
    """A choreographed song (see ``docs/formats.md``, section "Plan")."""

    song: dict[str, Any]
    """``path``, ``duration_s``, ``tempo_bpm``, ``n_beats`` and, in plans made since it
    existed, ``beat_confidence`` (0..1, see :func:`.analysis.beat_confidence`)."""
    library: dict[str, Any]
    """``path``, ``hash``, ``n_phrases``."""
    scorer: dict[str, Any]
    """``kind`` ("model" or "baseline"), ``path``, ``providers``."""
    decoding: dict[str, Any]
    """The decoder options used (method, no_repeat, styles, locks, top_k, seed, ...)."""
    fps: float
    frame_start: int
    crossfade_frames: int
    beats_s: tuple[float, ...]
    phrases: tuple[PlacedPhrase, ...]
    metrics: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    placement: dict[str, Any] = field(default_factory=dict)
    """Placement options used (warp rate range, foot handling, ...)."""
    armature: dict[str, Any] = field(default_factory=dict)
    """``name`` and ``rig`` of the armature the plan was applied to (empty before)."""

    @property
    def phrase_ids(self) -> tuple[str, ...]:
        return tuple(p.phrase_id for p in self.phrases)

    @property
    def frame_end(self) -> int:
        """Last scene frame of the song."""
        return round(self.frame_start + self.song["duration_s"] * self.fps)

    def with_phrase(self, index: int, phrase: PlacedPhrase) -> Plan:
        phrases = list(self.phrases)
        phrases[index] = phrase
        return dataclasses.replace(self, phrases=tuple(phrases))

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"format": PLAN_FORMAT, "format_version": PLAN_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "phrases":
                value = [_phrase_to_json(p) for p in value]
            elif f.name == "beats_s":
                value = [round(float(b), 6) for b in value]
            doc[f.name] = value
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any], *, path: str | os.PathLike | None = None) -> Plan:
        try:
            phrases = tuple(_phrase_from_json(p) for p in doc["phrases"])
            numbers = [float(doc["fps"])] + [float(b) for b in doc["beats_s"]]
            numbers += [t for p in phrases for t in (p.music_start_s, p.music_end_s)]
            if not all(math.isfinite(x) for x in numbers) or not float(doc["fps"]) > 0:
                raise ValueError("fps, beat and phrase times must be finite (fps > 0)")
            return cls(
                song=dict(doc["song"]), library=dict(doc["library"]),
                scorer=dict(doc["scorer"]), decoding=dict(doc["decoding"]),
                fps=float(doc["fps"]), frame_start=int(doc["frame_start"]),
                crossfade_frames=int(doc["crossfade_frames"]),
                beats_s=tuple(float(b) for b in doc["beats_s"]), phrases=phrases,
                metrics=dict(doc.get("metrics", {})),
                timings_s={k: float(v) for k, v in doc.get("timings_s", {}).items()},
                placement=dict(doc.get("placement", {})),
                armature=dict(doc.get("armature", {})))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
            raise M2DError(f"invalid plan file ({type(err).__name__}: {err})", path=path) from err

    def save(self, path: str | os.PathLike) -> Path:
        """Write PLAN.json atomically."""
        return write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plan:
        doc = read_json(path, kind=PLAN_FORMAT, max_version=PLAN_VERSION)
        return cls.from_json(doc, path=path)


def _phrase_to_json(p: PlacedPhrase) -> dict[str, Any]:
    return {
        "index": p.index,
        "music_start_s": round(p.music_start_s, 6),
        "music_end_s": round(p.music_end_s, 6),
        "phrase_id": p.phrase_id,
        "frame_start": p.frame_start,
        "frame_end": p.frame_end,
        "n_music_beats": p.n_music_beats,
        "locked": p.locked,
        "candidates": [{"phrase_id": c.phrase_id, "score": round(c.score, 6),
                        "prob": round(c.prob, 6)} for c in p.candidates],
        "warp": p.warp,
    }


def _phrase_from_json(d: dict[str, Any]) -> PlacedPhrase:
    return PlacedPhrase(
        index=int(d["index"]), music_start_s=float(d["music_start_s"]),
        music_end_s=float(d["music_end_s"]), phrase_id=str(d["phrase_id"]),
        candidates=tuple(Candidate(str(c["phrase_id"]), float(c["score"]), float(c["prob"]))
                         for c in d["candidates"]),
        frame_start=int(d["frame_start"]), frame_end=int(d["frame_end"]),
        n_music_beats=int(d.get("n_music_beats", 0)), locked=bool(d.get("locked", False)),
        warp=dict(d.get("warp", {})))


load_plan = Plan.load
