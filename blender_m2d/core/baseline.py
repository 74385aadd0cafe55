"""Rhythm/energy matching baseline: scores every library phrase for every music phrase without a
trained model.

It is what ``m2d`` uses when no model matches the library, the yardstick the trained model is
measured against, and the teacher that labels music phrases for training the bundled model. It
is deterministic: the same song and library always give the same scores.

Music phrase descriptors (from the song's analysis and its audio):

* ``beat_period_s``: median interval between the phrase's music beats;
* ``duration_s``: phrase length;
* ``intensity``: the phrase's loudness (mean frame level in dB, from the analysis' mel power or
  librosa RMS) and onset density (onsets per second, the analysis' librosa onsets), z-scored
  within the song and averaged, turned into a rank quantile in [0, 1] (0 = the calmest phrase
  of the song), then mixed half and half with an absolute quantile of the onset density,
  ``1 / (1 + exp(-(density - 3) / 1))``, so a calm song does not get the library's wildest
  phrases in its loudest part.

Dance phrase descriptors (from the library):

* ``beat_period_s``: median interval between the phrase's dance beats (``60 / tempo_bpm`` when
  it has fewer than three);
* ``duration_s``;
* ``energy``: how much the dancer moves, as a rank quantile within the library: the sum of the
  library's ``hand_speed``, ``foot_speed`` and ``travel_speed`` style features (leg lengths per
  second), or the mean joint speed (m/s) of the motion when a library lacks those features.

Score of dance phrase k for music phrase i, as a log-score (then a softmax over k per row, so
every row sums to 1):

* rhythm: ``g = period_dance / period_music`` is how much the dance must be sped up (g > 1) or
  slowed down to put one dance beat on every music beat. Cost ``(ln(g / 1.1) / ln 1.3)^2``
  (no octave folding: a dance beat on every other music beat would leave half the music beats
  bare, two per music beat would put half the dance beats off the beat);
* duration: the dance needs ``need = duration_music * g`` seconds (``g`` clipped to the warp's
  range [0.5, 2]); with ``u = duration_dance / need``, cost
  ``(ln u / 0.15)^2`` when ``u < 1`` (the phrase would run out and hold) and ``(ln u / 0.7)^2``
  when ``u > 1`` (it gets cut);
* energy: ``((intensity_i - energy_k) / 0.25)^2``.

The transition matrix without a model is the paper's M0 (spec section 5.3): 1 between phrases
of the same style, 0.01 otherwise (``library.style_similarity()`` clipped to [0.01, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .placement import RATE_RANGE

SIGMA_RATE = math.log(1.3)
PREFERRED_RATE = 1.1
"""Slightly faster than captured: dancers tend to push a move to fit a busier song."""
SIGMA_SHORT = 0.15
SIGMA_LONG = 0.7
SIGMA_ENERGY = 0.25
ENERGY_FEATURES = ("hand_speed", "foot_speed", "travel_speed")
"""Library style features whose sum is a phrase's motion energy (leg lengths per second)."""


@dataclass(frozen=True)
class MusicDescriptors:
    """Per music phrase [shape=(P,)] descriptors."""

    beat_period_s: np.ndarray
    duration_s: np.ndarray
    loudness_db: np.ndarray
    onset_density: np.ndarray
    intensity: np.ndarray


@dataclass(frozen=True)
class DanceDescriptors:
    """Per library phrase [shape=(K,)] descriptors."""

    ids: tuple[str, ...]
    beat_period_s: np.ndarray
    duration_s: np.ndarray
    speed_m_s: np.ndarray
    energy: np.ndarray
    styles: tuple[str, ...]


def _rank_quantile(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    order = np.lexsort((np.arange(x.size), x))
    ranks = np.empty(x.size)
    ranks[order] = np.arange(x.size)
    # ties share the mean rank
    for v in np.unique(x):
        sel = x == v
        if sel.sum() > 1:
            ranks[sel] = ranks[sel].mean()
    return (ranks + 0.5) / x.size


def _z(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-9 else np.zeros_like(x)


def music_descriptors(y: np.ndarray | None, sr: int, intervals_s: Sequence[tuple[float, float]],
                      beats_s: np.ndarray, *, onsets_s: np.ndarray | None = None,
                      frame_db: np.ndarray | None = None, hop_length: int = 512
                      ) -> MusicDescriptors:
    """Descriptors of the music phrases ``intervals_s`` (seconds) of a song.

    ``y`` is mono audio at ``sr`` Hz, ``beats_s`` the song's beat times in seconds. Onsets
    (``onsets_s``, s) and the loudness curve (``frame_db``, dB per analysis frame of
    ``hop_length`` samples) are computed from ``y`` with librosa unless given (the song analysis
    has both).
    """
    beats = np.asarray(beats_s, dtype=np.float64)
    if onsets_s is None or frame_db is None:
        import librosa

        y = np.asarray(y, dtype=np.float32)
        if onsets_s is None:
            env = librosa.onset.onset_strength(y=y, sr=sr, hop_length=hop_length)
            onsets_s = librosa.onset.onset_detect(onset_envelope=env, sr=sr,
                                                  hop_length=hop_length, units="time")
        if frame_db is None:
            rms = librosa.feature.rms(y=y, hop_length=hop_length)[0]
            frame_db = 20.0 * np.log10(np.maximum(rms, 1e-5))
    onsets = np.asarray(onsets_s, dtype=np.float64)
    rms_db = np.asarray(frame_db, dtype=np.float64)
    t_rms = np.arange(rms_db.size) * hop_length / sr
    song_period = float(np.median(np.diff(beats))) if beats.size >= 2 else 0.5
    n = len(intervals_s)
    period, dur, loud, dens = (np.zeros(n) for _ in range(4))
    for i, (s, e) in enumerate(intervals_s):
        dur[i] = max(e - s, 1e-3)
        b = beats[(beats >= s - 1e-3) & (beats <= e + 1e-3)]
        period[i] = float(np.median(np.diff(b))) if b.size >= 3 else song_period
        sel = (t_rms >= s) & (t_rms < e)
        loud[i] = float(rms_db[sel].mean()) if sel.any() else float(rms_db.mean())
        dens[i] = float(np.sum((onsets >= s) & (onsets < e))) / dur[i]
    rel = _rank_quantile(0.5 * _z(loud) + 0.5 * _z(dens)) if n > 1 else np.full(n, 0.5)
    absolute = 1.0 / (1.0 + np.exp(-(dens - 3.0) / 1.0))
    return MusicDescriptors(period, dur, loud, dens, 0.5 * rel + 0.5 * absolute)


def motion_speed(positions: np.ndarray, fps: float) -> float:
    """Mean joint speed (m/s) of a motion [shape=(F, J, 3)]."""
    p = np.asarray(positions, dtype=np.float64)
    if p.shape[0] < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(p, axis=0), axis=2).mean() * fps)


def dance_descriptors_from(ids: Sequence[str], beats_s: Sequence[np.ndarray],
                           durations_s: Sequence[float], tempos_bpm: Sequence[float | None],
                           speeds_m_s: Sequence[float], styles: Sequence[str]
                           ) -> DanceDescriptors:
    """Build dance descriptors from per-phrase values (see :func:`dance_descriptors`)."""
    period = np.zeros(len(ids))
    for k, (b, dur, bpm) in enumerate(zip(beats_s, durations_s, tempos_bpm)):
        b = np.asarray(b, dtype=np.float64)
        if b.size >= 3:
            period[k] = float(np.median(np.diff(np.sort(b))))
        elif bpm:
            period[k] = 60.0 / float(bpm)
        else:
            period[k] = max(float(dur) / max(b.size, 1), 0.25)
    speeds = np.asarray(speeds_m_s, dtype=np.float64)
    return DanceDescriptors(tuple(ids), period, np.asarray(durations_s, dtype=np.float64),
                            speeds, _rank_quantile(speeds), tuple(str(s) for s in styles))


_DANCE_CACHE: dict[str, DanceDescriptors] = {}


def dance_descriptors(library) -> DanceDescriptors:
    """Descriptors of every library phrase (cached per library hash)."""
    key = str(getattr(library, "hash", id(library)))
    if key in _DANCE_CACHE:
        return _DANCE_CACHE[key]
    phrases = list(library.phrases)
    names = tuple(getattr(library, "feature_names", ()) or ())
    speeds = []
    for ph in phrases:
        feats = getattr(ph, "features", None)
        if all(n in names for n in ENERGY_FEATURES) and feats is not None:
            f = np.asarray(feats, dtype=np.float64)
            sp = float(sum(f[names.index(n)] for n in ENERGY_FEATURES))
        else:
            m = library.motion(ph.id)
            sp = motion_speed(m.positions, m.fps)
        speeds.append(sp)
    dd = dance_descriptors_from(
        [p.id for p in phrases], [np.asarray(p.beats_s) for p in phrases],
        [float(p.duration_s) for p in phrases], [getattr(p, "tempo_bpm", None) for p in phrases],
        speeds, [getattr(p, "style", "") or "" for p in phrases])
    if len(_DANCE_CACHE) > 8:
        _DANCE_CACHE.clear()
    _DANCE_CACHE[key] = dd
    return dd


def rhythm_cost(dance_period_s: np.ndarray, music_period_s: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Rhythm cost [shape=(P, K)] and the warp rate it implies (clipped to the warp's range).

    ``g = period_dance / period_music`` is the rate that puts one dance beat on every music beat;
    the cost is ``(ln(g / PREFERRED_RATE) / SIGMA_RATE)^2``. There is no octave folding: a dance
    with a beat on every other music beat leaves half the music beats without a dance beat, and
    one with two beats per music beat puts half its beats off the beat."""
    g = np.asarray(dance_period_s)[None, :] / np.asarray(music_period_s)[:, None]
    cost = (np.log(g / PREFERRED_RATE) / SIGMA_RATE) ** 2
    return cost, np.clip(g, *RATE_RANGE)


def duration_cost(dance_duration_s: np.ndarray, music_duration_s: np.ndarray,
                  rate: np.ndarray) -> np.ndarray:
    need = np.asarray(music_duration_s)[:, None] * rate
    u = np.log(np.asarray(dance_duration_s)[None, :] / np.maximum(need, 1e-6))
    return np.where(u < 0, (u / SIGMA_SHORT) ** 2, (u / SIGMA_LONG) ** 2)


def score(md: MusicDescriptors, dd: DanceDescriptors) -> np.ndarray:
    """Probabilities [shape=(P, K)] of every dance phrase for every music phrase (rows sum to 1)."""
    c_rhythm, rate = rhythm_cost(dd.beat_period_s, md.beat_period_s)
    c_dur = duration_cost(dd.duration_s, md.duration_s, rate)
    c_energy = ((md.intensity[:, None] - dd.energy[None, :]) / SIGMA_ENERGY) ** 2
    return softmax(-(c_rhythm + c_dur + c_energy))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_prior(dd: DanceDescriptors, md: MusicDescriptors) -> np.ndarray:
    """Duration-feasibility factor [shape=(P, K)] in (0, 1]: ``exp(-duration cost)``. Used to
    re-weight a model's probabilities so phrases that cannot fill the music phrase are
    avoided (a placement constraint, not a musical judgement)."""
    _, rate = rhythm_cost(dd.beat_period_s, md.beat_period_s)
    return np.exp(-duration_cost(dd.duration_s, md.duration_s, rate))


def style_transition(styles: Sequence[str], similarity: np.ndarray | None = None) -> np.ndarray:
    """The paper's M0: ``similarity`` (or 1 for equal styles, 0 otherwise) clipped to
    [0.01, 1]."""
    if similarity is None:
        s = np.asarray([str(x) for x in styles])
        similarity = (s[:, None] == s[None, :]).astype(np.float64)
    return np.clip(np.asarray(similarity, dtype=np.float64), 0.01, 1.0)


def library_transition(library) -> np.ndarray:
    """M0 for a library: its ``style_similarity()`` when it has one, else equal styles."""
    styles = [getattr(p, "style", "") or "" for p in library.phrases]
    sim = library.style_similarity() if hasattr(library, "style_similarity") else None
    return style_transition(styles, sim)


def analysis_descriptors(audio, analysis) -> MusicDescriptors:
    """Music descriptors of a song's phrases from its :class:`SongAnalysis` (onsets and mel
    power reused when the analysis kept them) and its audio."""
    intervals = [(float(p.start_s), float(p.end_s)) for p in analysis.phrases]
    onsets = getattr(analysis, "onsets_s", None)
    mel_power = getattr(analysis, "mel_power", None)
    frame_db = None
    if mel_power is not None and np.size(mel_power):
        frame_db = 10.0 * np.log10(np.maximum(np.asarray(mel_power, np.float64).sum(axis=1),
                                              1e-10))
    if onsets is not None and np.size(onsets) == 0:
        onsets = None
    return music_descriptors(None if audio is None else audio.y,
                             int(getattr(audio, "sr", 22050)), intervals, analysis.beats_s,
                             onsets_s=onsets, frame_db=frame_db)


def score_song(audio, analysis, library) -> np.ndarray:
    """Baseline probabilities [shape=(P, K)] for a song's phrases over a library."""
    return score(analysis_descriptors(audio, analysis), dance_descriptors(library))
