"""Per-phrase model inputs, shared by the add-on and training (spec sections 3.1-3.3, 8).

For each interval [start_s, end_s) of a song:

* ``mel`` [128 x 128] (time, mel): the song's mel power spectrogram (computed once per song,
  22,050 Hz, n_fft 2048, hop 512, 128 bands) sliced to the frames whose centres fall in the
  interval, converted with ``power_to_db(ref=max over the phrase)``, clipped to [-80, 0] dB,
  mapped to [0, 1] by ``(dB + 80) / 80``, and resized along time to 128 rows by linear
  interpolation (end points kept, see :func:`resize_time`);
* ``melody`` [128]: the main-melody f0 at the centres of 128 equal time bins (nearest melody
  frame), as MIDI scaled from 21..108 to [0, 1]; 0 where unvoiced;
* ``rhythm`` [128] in {0, 1}: bin ``i`` covers ``[start + i*w, start + (i+1)*w)`` with
  ``w = (end - start) / 128`` and is 1 if any event falls in it -- a librosa onset, a beat, or a
  melody note onset (see :func:`melody_note_onsets`). That is the max-pool of the event train.

Every numeric step is numpy, so training (torch) and the add-on (onnxruntime) see identical
inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .audio import Audio
from .timebase import HOP_LENGTH, N_MELS, SAMPLE_RATE

SIZE = 128
"""Time steps of every per-phrase feature (and mel bands of the image)."""
MIDI_LO, MIDI_HI = 21.0, 108.0
"""MIDI range mapped to [0, 1] by the melody feature (A0..C8)."""
TOP_DB = 80.0
"""Dynamic range of the mel image, dB."""


@dataclass(frozen=True)
class PhraseFeatures:
    """Model inputs for P intervals.

    Attributes
    ----------
    mel : np.ndarray [shape=(P, 128, 128), dtype=float32]
        In [0, 1]; axes (phrase, time, mel) -- time first, per spec section 3.1's axis note.
    melody : np.ndarray [shape=(P, 128), dtype=float32]
        In [0, 1] (MIDI 21..108 scaled), 0 = unvoiced.
    rhythm : np.ndarray [shape=(P, 128), dtype=float32]
        Values in {0, 1}.
    intervals_s : np.ndarray [shape=(P, 2)] or None
        The (start_s, end_s) each row was computed for (None when built elsewhere).
    """

    mel: np.ndarray
    melody: np.ndarray
    rhythm: np.ndarray
    intervals_s: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.mel.shape[0])


def phrase_features(audio: Audio, intervals_s: np.ndarray, *, analysis=None) -> PhraseFeatures:
    """Features for arbitrary intervals of ``audio`` (training uses labelled intervals).

    Parameters
    ----------
    audio : Audio
        The song at 22,050 Hz.
    intervals_s : np.ndarray [shape=(P, 2)]
        (start_s, end_s) per phrase, seconds; clipped to the song; each must be > 0 long.
    analysis : SongAnalysis or None
        When given, its beats, onsets, melody and (if still in memory) mel spectrogram are
        reused; otherwise they are computed here (mel, onsets, beats, CREPE melody -- no
        structure or phrases).
    """
    from . import analysis as an
    from . import melody as mel_mod

    if audio.sr != SAMPLE_RATE:
        raise ValueError(f"features need audio at {SAMPLE_RATE} Hz, got {audio.sr}")
    iv = np.asarray(intervals_s, dtype=np.float64).reshape(-1, 2)
    n_frames = 1 + audio.y.size // HOP_LENGTH
    mel_power = getattr(analysis, "mel_power", None)
    if analysis is not None and (mel_power is None or mel_power.shape[0] != n_frames):
        mel_power = an.mel_power_spectrogram(audio.y)
    if analysis is not None:
        beats_s, onsets_s = analysis.beats_s, analysis.onsets_s
        melody = mel_mod.Melody(times_s=np.asarray(analysis.melody_times_s),
                                f0_hz=np.asarray(analysis.melody_hz, dtype=np.float32),
                                confidence=np.zeros(len(analysis.melody_hz), dtype=np.float32),
                                hop_s=_hop_of(analysis.melody_times_s),
                                method=analysis.melody_method)
    else:
        mel_power, chroma = an.mel_and_chroma(audio.y)
        beats_s, env = an.song_beats(mel_power, chroma)
        onsets_s = an.detect_onsets(env)
        melody = mel_mod.extract_melody(audio.y, audio.sr)
    events = np.sort(np.concatenate([np.asarray(onsets_s, dtype=np.float64),
                                     np.asarray(beats_s, dtype=np.float64),
                                     melody_note_onsets(melody)]))
    p = iv.shape[0]
    out_mel = np.empty((p, SIZE, N_MELS), dtype=np.float32)
    out_melody = np.empty((p, SIZE), dtype=np.float32)
    out_rhythm = np.empty((p, SIZE), dtype=np.float32)
    for k, (start, end) in enumerate(iv):
        start, end = max(0.0, float(start)), min(float(end), audio.duration_s)
        if not end > start:
            raise ValueError(f"interval {k} ({iv[k, 0]:.3f}, {iv[k, 1]:.3f}) s is empty")
        out_mel[k] = mel_image(mel_power, start, end)
        out_melody[k] = melody_curve(melody.times_s, melody.f0_hz, start, end)
        out_rhythm[k] = rhythm_curve(events, start, end)
    return PhraseFeatures(mel=out_mel, melody=out_melody, rhythm=out_rhythm, intervals_s=iv)


def song_features(audio: Audio, analysis) -> PhraseFeatures:
    """Features for every phrase of ``analysis`` (intervals from ``analysis.phrases``)."""
    iv = np.asarray([(p.start_s, p.end_s) for p in analysis.phrases], dtype=np.float64)
    return phrase_features(audio, iv, analysis=analysis)


# ---------------------------------------------------------------------------------------------
# the three features


def mel_image(mel_power: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    """[128 x 128] (time, mel) image in [0, 1] of the frames centred in [start_s, end_s).

    Frame ``t`` is centred at ``t * HOP_LENGTH / SAMPLE_RATE`` s. At least one frame is used.
    """
    fps = SAMPLE_RATE / HOP_LENGTH
    a = int(np.ceil(start_s * fps - 1e-9))
    b = int(np.ceil(end_s * fps - 1e-9))
    a = min(max(a, 0), mel_power.shape[0] - 1)
    b = min(max(b, a + 1), mel_power.shape[0])
    s = mel_power[a:b]
    ref = float(s.max())
    if ref <= 0.0:
        return np.zeros((SIZE, mel_power.shape[1]), dtype=np.float32)
    db = 10.0 * np.log10(np.maximum(s, 1e-10) / ref)
    img = (np.clip(db, -TOP_DB, 0.0) + TOP_DB) / TOP_DB
    return resize_time(img.astype(np.float32), SIZE)


def resize_time(x: np.ndarray, n: int) -> np.ndarray:
    """Linearly resample rows of ``x`` [shape=(T, F)] to ``n`` rows.

    Output row ``i`` samples input position ``i * (T - 1) / (n - 1)`` (first and last rows
    kept, like ``align_corners=True``); a single input row is repeated.
    """
    t = x.shape[0]
    if t == 1:
        return np.repeat(x, n, axis=0)
    pos = np.arange(n, dtype=np.float64) * (t - 1) / (n - 1)
    i0 = np.minimum(np.floor(pos).astype(int), t - 2)
    w = (pos - i0)[:, None].astype(np.float32)
    return (1.0 - w) * x[i0] + w * x[i0 + 1]


def melody_curve(times_s: np.ndarray, f0_hz: np.ndarray, start_s: float,
                 end_s: float) -> np.ndarray:
    """[128] melody in [0, 1] at the centres of 128 equal bins (nearest melody frame)."""
    out = np.zeros(SIZE, dtype=np.float32)
    times_s = np.asarray(times_s, dtype=np.float64)
    if times_s.size == 0:
        return out
    centres = start_s + (np.arange(SIZE) + 0.5) * (end_s - start_s) / SIZE
    j = np.clip(np.searchsorted(times_s, centres), 1, max(times_s.size - 1, 1))
    if times_s.size > 1:
        j = np.where(np.abs(times_s[j - 1] - centres) <= np.abs(times_s[j] - centres), j - 1, j)
    else:
        j = np.zeros(SIZE, dtype=int)
    f = np.asarray(f0_hz, dtype=np.float64)[j]
    voiced = f > 0
    midi = 69.0 + 12.0 * np.log2(np.where(voiced, f, 440.0) / 440.0)
    out[voiced] = np.clip((midi[voiced] - MIDI_LO) / (MIDI_HI - MIDI_LO), 0.0, 1.0)
    return out


def rhythm_curve(events_s: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    """[128] binary: 1 where a bin of [start_s, end_s) holds at least one event time."""
    out = np.zeros(SIZE, dtype=np.float32)
    e = np.asarray(events_s, dtype=np.float64)
    e = e[(e >= start_s) & (e < end_s)]
    if e.size:
        # + 1e-3 bin: an event on a bin edge lands in the later bin even after the interval
        # has been through JSON (times stored to 1 us)
        pos = (e - start_s) * SIZE / (end_s - start_s) + 1e-3
        out[np.minimum(pos.astype(int), SIZE - 1)] = 1.0
    return out


def melody_note_onsets(melody) -> np.ndarray:
    """Note onsets (s): starts of :func:`~blender_m2d.core.melody.melody_notes` (an unvoiced
    to voiced transition, or a pitch move that takes the note's spread to >= 1 semitone)."""
    from .melody import melody_notes

    notes = melody_notes(melody)
    return notes[:, 0].copy() if notes.size else np.zeros(0)


def _hop_of(times_s: np.ndarray) -> float:
    t = np.asarray(times_s, dtype=np.float64)
    return float(np.median(np.diff(t))) if t.size > 1 else 0.0625
