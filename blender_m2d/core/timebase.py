"""Seconds <-> frames <-> beats, in one place.

Conventions used across the project:

* audio analysis runs at ``SAMPLE_RATE`` = 22,050 Hz mono with ``HOP_LENGTH`` = 512 samples
  (one feature frame = 23.2 ms), as in the paper's defaults (spec section 3.1);
* animation runs at a scene frame rate ``fps`` (default ``DEFAULT_FPS`` = 30); scene frame
  ``start_frame`` (Blender's default 1) is time 0 s of the song;
* beat positions are fractional: beat 2.5 is halfway between beat marks 2 and 3.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 22_050
"""Analysis sample rate in Hz."""
HOP_LENGTH = 512
"""Analysis hop in samples (23.2 ms at ``SAMPLE_RATE``)."""
N_FFT = 2048
"""STFT window in samples."""
N_MELS = 128
"""Mel bands of the model input."""
DEFAULT_FPS = 30.0
"""Default animation frame rate (frames per second)."""


def seconds_to_frames(t_s, *, fps: float, start_frame: float = 1.0):
    """Scene frame (float) of time ``t_s`` seconds: ``start_frame + t_s * fps``."""
    return start_frame + np.asarray(t_s, dtype=np.float64) * fps


def frames_to_seconds(frame, *, fps: float, start_frame: float = 1.0):
    """Time in seconds of scene frame ``frame``: ``(frame - start_frame) / fps``."""
    return (np.asarray(frame, dtype=np.float64) - start_frame) / fps


def feature_frames_to_seconds(idx, *, sr: int = SAMPLE_RATE, hop: int = HOP_LENGTH):
    """Time in seconds of analysis frame ``idx``: ``idx * hop / sr``."""
    return np.asarray(idx, dtype=np.float64) * hop / sr


def seconds_to_beats(t_s, beat_times_s: np.ndarray):
    """Fractional beat index of times ``t_s`` given beat marks ``beat_times_s``.

    Linear inside the beat grid; outside it, extrapolated with the first/last beat period. Beat
    ``i`` is ``beat_times_s[i]``.
    """
    b = np.asarray(beat_times_s, dtype=np.float64)
    t = np.asarray(t_s, dtype=np.float64)
    if b.size < 2:
        raise ValueError("need at least two beats to convert seconds to beats")
    idx = np.arange(b.size, dtype=np.float64)
    out = np.interp(t, b, idx)
    p0, p1 = b[1] - b[0], b[-1] - b[-2]
    out = np.where(t < b[0], (t - b[0]) / p0, out)
    return np.where(t > b[-1], b.size - 1 + (t - b[-1]) / p1, out)


def beats_to_seconds(beats, beat_times_s: np.ndarray):
    """Inverse of :func:`seconds_to_beats`: time in seconds of fractional beat indices."""
    b = np.asarray(beat_times_s, dtype=np.float64)
    x = np.asarray(beats, dtype=np.float64)
    if b.size < 2:
        raise ValueError("need at least two beats to convert beats to seconds")
    idx = np.arange(b.size, dtype=np.float64)
    out = np.interp(x, idx, b)
    p0, p1 = b[1] - b[0], b[-1] - b[-2]
    out = np.where(x < 0, b[0] + x * p0, out)
    return np.where(x > b.size - 1, b[-1] + (x - (b.size - 1)) * p1, out)
