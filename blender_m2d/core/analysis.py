"""Song analysis: beats, downbeats, tempo, sections, melody rests/long tones and music phrases.

This is step 1 of the paper (spec section 2): a song is cut into *music phrases* that each
absorb at least 6 beats and end at a break point -- a structure boundary (spectral clustering),
a rest in the main melody, or the end of a long held tone -- or, failing those, after 16 beats.

Pipeline (:func:`analyze_song`), all at 22,050 Hz / hop 512 (23.2 ms frames):

1. decode (:func:`blender_m2d.core.audio.load_audio`, streamed, <= ``MAX_SONG_S``);
2. mel power spectrogram, computed once in blocks (2048-point Hann STFT, 128 bands, 0..11 kHz);
   it is also kept on the result for :mod:`blender_m2d.core.features`; a 12-bin chromagram
   from the same blocks (used for the beat phase only);
3. beats: librosa's ``beat_track`` algorithm (ported to numpy in :mod:`.mir`, identical
   output, no numba) on an onset envelope that adds a low-band (< 150 Hz, kick and bass) onset
   envelope to librosa's default one, untrimmed, minus a 29 ms latency measured on synthetic
   clicks (see :func:`track_beats`); then one beat phase for the whole song -- the tracked
   beats or the off-beats half a beat later -- chosen by kick/bass onsets and chord changes
   (see :func:`beat_phase`); tempo from the median 8-beat span; onsets with librosa's
   ``onset_detect`` (ported) on the default envelope; a beat confidence (0..1) from the
   pulse clarity of the envelope at the beat grid (see :func:`beat_confidence`);
4. downbeats: 4/4 assumed; the bar phase (0..3) whose beats carry the most low-band (< 150 Hz)
   onset energy plus spectral change is chosen (a heuristic; see :func:`find_downbeats`);
5. main melody with CREPE tiny (:mod:`blender_m2d.core.melody`, on a second thread while
   steps 2-4 and 6 run: ``PARALLEL_MELODY``); rests are unvoiced runs >= max(0.2 s, half a
   beat), long tones are notes >= 1 beat with < 1 semitone spread;
6. sections: librosa-style Laplacian segmentation (McFee & Ellis 2014) on beat-synchronous
   log-mel (recurrence) and MFCC (path) features, k = 5 clusters, sections shorter than
   ``MIN_SECTION_BEATS`` merged into their most similar neighbour;
7. phrases by the paper's rule (:func:`segment_phrases`).

Every failure a user can cause raises :class:`~blender_m2d.core.errors.M2DError`.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import melody as melody_mod
from . import mir
from .audio import Audio, load_audio
from .errors import M2DError
from .fileio import read_json, write_json_atomic
from .timebase import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE

log = logging.getLogger(__name__)

FORMAT = "m2d-song-analysis"
FORMAT_VERSION = 1

MAX_SONG_S = 20 * 60.0
"""Longest song analysed, seconds (20 min; longer files are refused while decoding)."""
MIN_BEATS = 6
"""Minimum beats (beat intervals) per phrase (the paper's rule)."""
MAX_BEATS = 16
"""A phrase with no break point is cut after this many beats (spec section 8, row 10)."""
N_SECTIONS = 5
"""Clusters of the structure segmentation (spec section 8, row 6)."""
MIN_SECTION_BEATS = 8
"""Sections shorter than this many beats are merged into a neighbour."""
MAX_STRUCTURE_UNITS = 1000
"""Beat segments clustered at most; longer songs cluster groups of beats (memory is t x t)."""
REST_MIN_S = 0.2
"""A rest lasts at least max(REST_MIN_S, REST_MIN_BEATS beats)."""
REST_MIN_BEATS = 0.5
LONG_TONE_MIN_BEATS = 1.0
"""A long tone lasts at least this many beats with a pitch spread below 1 semitone."""
SILENCE_PEAK = 10 ** (-70 / 20)
"""Peak amplitude below which a song counts as silent (-70 dBFS)."""
LOW_BAND_HZ = 150.0
"""Upper edge of the 'kick and bass' band (beat envelope and downbeat heuristic), Hz."""
ONSET_LATENCY_S = 0.029
"""How late librosa's onset-envelope peaks (and so its beats) sit after sharp onsets, seconds.

Measured with synthetic percussive clicks at 95-150 bpm (median 29-31 ms, 10-90 % 20-40 ms);
subtracted from beat and onset times."""
END_REASONS = ("section", "rest", "long_tone", "max_beats", "end")
"""Why a phrase ended, in order of precedence when several apply at one beat."""

ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class Section:
    """A structural section [start_s, end_s) with its cluster ``label`` (0..N_SECTIONS-1)."""

    start_s: float
    end_s: float
    label: int


@dataclass(frozen=True)
class Phrase:
    """A music phrase [start_s, end_s).

    ``n_beats`` counts beat intervals between its first and last beat marks; ``end_reason`` is
    one of :data:`END_REASONS`.
    """

    index: int
    start_s: float
    end_s: float
    n_beats: int
    end_reason: str

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, eq=False)
class SongAnalysis:
    """Everything :func:`analyze_song` finds in one song (times in seconds from its start).

    Attributes
    ----------
    path : str
        The analysed file.
    duration_s : float
        Length of the decoded audio.
    tempo_bpm : float
        60 / median inter-beat interval, beats per minute.
    beats_s : np.ndarray [shape=(n_beats,)]
        Beat times, ascending.
    downbeats_s : np.ndarray [shape=(n_bars,)]
        The beats that start a 4/4 bar (every 4th beat from the detected phase).
    sections : tuple[Section, ...]
        Structure; tiles [0, duration_s].
    phrases : tuple[Phrase, ...]
        Music phrases; tile [0, duration_s] without gaps or overlaps.
    rests_s : np.ndarray [shape=(n, 2)]
        Melody rests as (start_s, end_s).
    long_tones_s : np.ndarray [shape=(n, 2)]
        Long held melody notes as (start_s, end_s).
    melody_times_s, melody_hz : np.ndarray [shape=(m,)]
        Main-melody f0 curve (Hz, 0 = unvoiced) at the melody frame times.
    onsets_s : np.ndarray [shape=(k,)]
        librosa onsets (used by the rhythm feature).
    timings_s : dict[str, float]
        Wall time per stage.
    melody_method : str
        Which melody extractor made ``melody_hz``.
    mel_power : np.ndarray [shape=(T, 128), dtype=float32] or None
        The song's mel power spectrogram (frames at HOP_LENGTH / SAMPLE_RATE s); kept in
        memory for :mod:`blender_m2d.core.features`, never written to JSON.
    beat_confidence : float or None
        How clearly the music has the tracked beat, 0..1 (:func:`beat_confidence`); below
        :data:`LOW_BEAT_CONFIDENCE` the beat grid is an estimate. None when unknown (an
        analysis file written before the measure existed).
    """

    path: str
    duration_s: float
    tempo_bpm: float
    beats_s: np.ndarray
    downbeats_s: np.ndarray
    sections: tuple[Section, ...]
    phrases: tuple[Phrase, ...]
    rests_s: np.ndarray
    long_tones_s: np.ndarray
    melody_times_s: np.ndarray
    melody_hz: np.ndarray
    timings_s: dict[str, float]
    onsets_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    melody_method: str = "crepe-tiny-int8"
    mel_power: np.ndarray | None = field(default=None, repr=False)
    beat_confidence: float | None = None

    @property
    def low_beat_confidence(self) -> bool:
        """True when the beat confidence is known and below :data:`LOW_BEAT_CONFIDENCE`."""
        return self.beat_confidence is not None and self.beat_confidence < LOW_BEAT_CONFIDENCE

    def phrase_beats(self, i: int) -> np.ndarray:
        """Beat times (s) of phrase ``i``, including the beats at its start and end."""
        p = self.phrases[i]
        first = 0 if i == 0 else int(np.searchsorted(self.beats_s, p.start_s - 1e-3))
        last = (self.beats_s.size - 1 if i == len(self.phrases) - 1
                else int(np.searchsorted(self.beats_s, p.end_s + 1e-3)) - 1)
        return self.beats_s[first:last + 1].copy()

    # ---------------------------------------------------------------------------- JSON

    def to_json(self) -> dict:
        """The versioned JSON document (format ``m2d-song-analysis``, see docs/formats.md)."""
        r4 = _round_list  # times in microseconds: keeps features bit-identical after a reload
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "path": self.path,
            "duration_s": round(float(self.duration_s), 6),
            "tempo_bpm": round(float(self.tempo_bpm), 3),
            **({} if self.beat_confidence is None
               else {"beat_confidence": round(float(self.beat_confidence), 3)}),
            "beats_s": r4(self.beats_s),
            "downbeats_s": r4(self.downbeats_s),
            "sections": [{"start_s": round(s.start_s, 6), "end_s": round(s.end_s, 6),
                          "label": int(s.label)} for s in self.sections],
            "phrases": [{"index": p.index, "start_s": round(p.start_s, 6),
                         "end_s": round(p.end_s, 6), "n_beats": p.n_beats,
                         "end_reason": p.end_reason} for p in self.phrases],
            "rests_s": [r4(r) for r in self.rests_s],
            "long_tones_s": [r4(r) for r in self.long_tones_s],
            "onsets_s": r4(self.onsets_s),
            "melody": {"method": self.melody_method, "times_s": r4(self.melody_times_s),
                       "f0_hz": _round_list(self.melody_hz, 2)},
            "timings_s": {k: round(float(v), 4) for k, v in self.timings_s.items()},
        }

    @classmethod
    def from_json(cls, doc: dict, *, path: str | os.PathLike | None = None) -> SongAnalysis:
        """Rebuild from :meth:`to_json` output; raises :class:`M2DError` on a malformed doc."""
        where = None if path is None else os.fspath(path)
        try:
            if doc.get("format") != FORMAT:
                raise M2DError(f"not a {FORMAT} document", path=where)
            version = doc.get("format_version")
            if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
                raise M2DError(f"unsupported {FORMAT} format_version {version!r}", path=where)
            mel = doc.get("melody", {})
            phrases = tuple(Phrase(index=int(p["index"]), start_s=float(p["start_s"]),
                                   end_s=float(p["end_s"]), n_beats=int(p["n_beats"]),
                                   end_reason=str(p["end_reason"])) for p in doc["phrases"])
            bad = {p.end_reason for p in phrases} - set(END_REASONS)
            if bad:
                raise M2DError(f"unknown phrase end_reason {sorted(bad)}", path=where)
            return cls(
                path=str(doc["path"]),
                duration_s=float(doc["duration_s"]),
                tempo_bpm=float(doc["tempo_bpm"]),
                beats_s=np.asarray(doc["beats_s"], dtype=np.float64),
                downbeats_s=np.asarray(doc["downbeats_s"], dtype=np.float64),
                sections=tuple(Section(float(s["start_s"]), float(s["end_s"]), int(s["label"]))
                               for s in doc["sections"]),
                phrases=phrases,
                rests_s=np.asarray(doc["rests_s"], dtype=np.float64).reshape(-1, 2),
                long_tones_s=np.asarray(doc["long_tones_s"], dtype=np.float64).reshape(-1, 2),
                melody_times_s=np.asarray(mel.get("times_s", []), dtype=np.float64),
                melody_hz=np.asarray(mel.get("f0_hz", []), dtype=np.float32),
                timings_s={str(k): float(v) for k, v in doc.get("timings_s", {}).items()},
                onsets_s=np.asarray(doc.get("onsets_s", []), dtype=np.float64),
                melody_method=str(mel.get("method", "unknown")),
                beat_confidence=_confidence_from_json(doc.get("beat_confidence")),
            )
        except M2DError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
            raise M2DError(f"malformed song analysis ({type(err).__name__}: {err})",
                           path=where) from err

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON document atomically."""
        return write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> SongAnalysis:
        """Read a file written by :meth:`save` (checks format and version)."""
        return cls.from_json(read_json(path, kind=FORMAT, max_version=FORMAT_VERSION), path=path)


def _confidence_from_json(value) -> float | None:
    """``beat_confidence`` of a document: None when absent (older files), else a number in
    [0, 1] (ValueError otherwise, reported as a malformed analysis)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"beat_confidence must be a number in [0, 1], got {value!r}")
    return float(value)


def _round_list(a, digits: int = 6) -> list:
    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()


# ---------------------------------------------------------------------------------------------
# orchestrator


def analyze_song(path_or_audio: str | os.PathLike | Audio, *, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None, melody: str = "crepe",
                 max_duration_s: float = MAX_SONG_S) -> SongAnalysis:
    """Analyse a song file (or decoded :class:`Audio`) into beats, sections and phrases.

    Parameters
    ----------
    path_or_audio : str | os.PathLike | Audio
        An audio file in any format :func:`~blender_m2d.core.audio.load_audio` reads.
    progress : callable(fraction: float, message: str) or None
        Called at the start of each stage and with 1.0 at the end.
    cancel : threading.Event or None
        Checked between stages (and between melody batches); when set,
        ``M2DError("cancelled")`` is raised.
    melody : {"crepe", "crepe-fp32", "pyin", "pyin-coarse"}
        Melody extractor: CREPE tiny int8 (default), its float32 export, or librosa.pyin (the
        slow baseline, used by the benchmark) at its default hop (512 samples, 23 ms) or at
        CREPE's hop (62.5 ms).
    max_duration_s : float
        Refuse longer songs (seconds).

    Raises
    ------
    M2DError
        Unreadable file, silence, too long, or too short / no steady beat (fewer than
        ``MIN_BEATS`` beat intervals). Audio with enough beats but no clear pulse (noise,
        speech, a drone) is analysed anyway: the tracker's grid is then an estimate, and the
        result's ``beat_confidence`` is below :data:`LOW_BEAT_CONFIDENCE`.
    """
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    stage = _Stages(progress, cancel, timings)

    stage.begin("decode", 0.0, "decoding audio")
    if isinstance(path_or_audio, Audio):
        audio = path_or_audio
        if audio.duration_s > max_duration_s + 1.0:
            raise M2DError(f"the song is {audio.duration_s / 60:.1f} min long; the limit is "
                           f"{max_duration_s / 60:.0f} min, so trim it first", path=audio.path)
    else:
        audio = load_audio(path_or_audio, max_duration_s=max_duration_s)
    if audio.sr != SAMPLE_RATE:
        raise ValueError(f"analysis needs audio at {SAMPLE_RATE} Hz, got {audio.sr}")
    check_not_silent(audio)

    # the melody model runs on its own thread while the spectrogram, beats and sections are
    # computed (onnxruntime releases the GIL): the two longest stages overlap on two cores
    job = _Background(run_melody, audio, method=melody, cancel=cancel) \
        if PARALLEL_MELODY else None
    try:
        stage.begin("spectrogram", 0.12, "computing the spectrogram")
        mel_power, chroma = mel_and_chroma(audio.y)

        stage.begin("beats", 0.22, "tracking beats")
        beats_s, onset_env, beat_env = song_beats_and_envelope(mel_power, chroma)
        if beats_s.size < MIN_BEATS + 1:
            raise M2DError(
                f"found only {beats_s.size} beats in {audio.duration_s:.1f} s of audio; a "
                f"phrase needs {MIN_BEATS} beats. Is the clip too short or without a steady "
                "beat?", path=audio.path)
        tempo_bpm = tempo_from_beats(beats_s)
        confidence = beat_confidence(beat_env, beats_s, onset_env)
        onsets_s = detect_onsets(onset_env)
        downbeats_s = find_downbeats(beats_s, mel_power, onset_env)

        stage.begin("structure", 0.32, "finding the song's sections")
        sections = segment_structure(mel_power, beats_s, audio.duration_s)

        stage.begin("melody", 0.45, "following the melody")
        mel = job.result() if job is not None else run_melody(audio, method=melody,
                                                               cancel=cancel)
    except BaseException:
        if job is not None:
            job.stop()
        raise
    rests_s = find_rests(mel, beats_s)
    long_tones_s = find_long_tones(mel, beats_s)

    stage.begin("phrases", 0.95, "forming phrases")
    phrases = segment_phrases(beats_s, audio.duration_s, sections=sections, rests_s=rests_s,
                              long_tones_s=long_tones_s)
    stage.end()
    timings["total"] = time.perf_counter() - t_all
    if progress is not None:
        progress(1.0, f"{len(phrases)} phrases")
    return SongAnalysis(
        path=audio.path, duration_s=audio.duration_s, tempo_bpm=tempo_bpm, beats_s=beats_s,
        downbeats_s=downbeats_s, sections=sections, phrases=phrases, rests_s=rests_s,
        long_tones_s=long_tones_s, melody_times_s=mel.times_s, melody_hz=mel.f0_hz,
        timings_s=timings, onsets_s=onsets_s, melody_method=mel.method, mel_power=mel_power,
        beat_confidence=round(confidence, 3))


PARALLEL_MELODY = True
"""Run the melody model on a second thread, overlapping the other stages (same results)."""


class _Background:
    """``fn(*args, **kw)`` on a daemon thread; :meth:`result` joins it (re-raising its error);
    :meth:`stop` asks it to end at its next cancellation check (``kw["cancel"]`` is replaced by
    an event that is also set by :meth:`stop`) and waits for it."""

    def __init__(self, fn, *args, **kw) -> None:
        user = kw.get("cancel")
        self._stop = threading.Event()
        kw["cancel"] = _Either(user, self._stop)
        self._out: list = []
        self._err: list[BaseException] = []

        def run() -> None:
            try:
                self._out.append(fn(*args, **kw))
            except BaseException as err:     # handed to the caller by result()
                self._err.append(err)

        self._thread = threading.Thread(target=run, name="m2d-melody", daemon=True)
        self._thread.start()

    def result(self):
        self._thread.join()
        if self._err:
            raise self._err[0]
        return self._out[0]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _Either:
    """``is_set()`` of either of two events (the first may be None)."""

    def __init__(self, a: threading.Event | None, b: threading.Event) -> None:
        self.a, self.b = a, b

    def is_set(self) -> bool:
        return self.b.is_set() or (self.a is not None and self.a.is_set())


class _Stages:
    """Times stages, reports progress and honours cancellation between stages."""

    def __init__(self, progress: ProgressFn | None, cancel: threading.Event | None,
                 timings: dict[str, float]) -> None:
        self.progress, self.cancel, self.timings = progress, cancel, timings
        self.name: str | None = None
        self.t0 = 0.0

    def begin(self, name: str, fraction: float, message: str) -> None:
        self.end()
        if self.cancel is not None and self.cancel.is_set():
            raise M2DError("cancelled")
        if self.progress is not None:
            self.progress(fraction, message)
        self.name, self.t0 = name, time.perf_counter()

    def end(self) -> None:
        if self.name is not None:
            self.timings[self.name] = time.perf_counter() - self.t0
            self.name = None


def check_not_silent(audio: Audio) -> None:
    """Raise :class:`M2DError` if the audio peaks below -70 dBFS."""
    peak = float(np.max(np.abs(audio.y))) if audio.y.size else 0.0
    if peak < SILENCE_PEAK:
        level = "digital silence" if peak == 0 else f"peak {20 * np.log10(peak):.0f} dBFS"
        raise M2DError(f"the audio is silent ({level}); pick a song with sound in it",
                       path=audio.path)


# ---------------------------------------------------------------------------------------------
# spectrogram, onsets, beats, downbeats

_MEL_BASIS: np.ndarray | None = None
_CHROMA_BASIS: np.ndarray | None = None
_WINDOW: np.ndarray | None = None


def mel_power_spectrogram(y: np.ndarray, *, block_frames: int = 256) -> np.ndarray:
    """Mel power spectrogram of 22,050 Hz mono audio, computed in blocks.

    Same numbers as ``librosa.feature.melspectrogram(y=y, sr=22050)`` (n_fft 2048, hop 512,
    Hann, centred frames with zero padding, 128 Slaney mel bands over 0..11,025 Hz, power 2),
    but the STFT never exists in full, so memory is O(frames x 128).

    Returns
    -------
    np.ndarray [shape=(1 + len(y) // 512, 128), dtype=float32]
        Axes (time, mel).
    """
    return _spectrograms(y, block_frames=block_frames, chroma=False)[0]


def mel_and_chroma(y: np.ndarray, *, block_frames: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mel_power_spectrogram` and a chromagram from the same STFT blocks.

    The chromagram is ``librosa.feature.chroma_stft(S=power, tuning=0.0)``: 12 pitch classes
    (C first) from the power spectrum with :func:`.mir.chroma_filterbank`, each frame divided
    by its maximum. It costs one (frames x 1025) @ (1025 x 12) product more (10-15 ms for a
    3-minute song) and is used to choose the beat phase (:func:`align_beat_phase`).

    Returns
    -------
    (np.ndarray [shape=(T, 128)], np.ndarray [shape=(T, 12)]), both float32, axes (time, bins).
    """
    return _spectrograms(y, block_frames=block_frames, chroma=True)


def _spectrograms(y: np.ndarray, *, block_frames: int, chroma: bool
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    import scipy.fft

    global _MEL_BASIS, _CHROMA_BASIS, _WINDOW
    if _MEL_BASIS is None:
        _MEL_BASIS = np.ascontiguousarray(
            mir.mel_filterbank(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS).T)
        _CHROMA_BASIS = np.ascontiguousarray(
            mir.chroma_filterbank(sr=SAMPLE_RATE, n_fft=N_FFT).T)
        _WINDOW = mir.hann(N_FFT).astype(np.float32)
    y = np.asarray(y, dtype=np.float32)
    n = 1 + y.size // HOP_LENGTH
    padded = np.pad(y, (N_FFT // 2, N_FFT // 2 + N_FFT))
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:n]
    out = np.empty((n, N_MELS), dtype=np.float32)
    out_chroma = np.empty((n, 12), dtype=np.float32) if chroma else None
    for s in range(0, n, block_frames):
        spec = scipy.fft.rfft(frames[s:s + block_frames] * _WINDOW, axis=1)
        power = spec.real ** 2 + spec.imag ** 2
        out[s:s + block_frames] = power @ _MEL_BASIS
        if out_chroma is not None:
            out_chroma[s:s + block_frames] = power @ _CHROMA_BASIS
    if out_chroma is not None:
        peak = out_chroma.max(axis=1, keepdims=True)
        out_chroma /= np.where(peak > 0, peak, 1.0)
    return out, out_chroma


def onset_strength(mel_power: np.ndarray) -> np.ndarray:
    """librosa's default onset envelope [shape=(T,)] from a (time, mel) power spectrogram."""
    return mir.onset_strength(mir.power_to_db(mel_power.T), n_fft=N_FFT, hop_length=HOP_LENGTH)


def beat_envelope(mel_power: np.ndarray, onset_env: np.ndarray, *,
                  low_env: np.ndarray | None = None) -> np.ndarray:
    """Onset envelope for beat tracking: full-band + low-band (< ``LOW_BAND_HZ``) envelopes.

    Each is divided by its standard deviation before adding. In rock and pop the off-beat
    eighths (guitar, snare on the "and") often out-weigh the beats in the full-band envelope and
    librosa's tracker then locks to the off-beat; the kick and bass mark the beat. On the four
    rock songs with ground truth this raised the mean beat F-measure (70 ms) from 0.48 to 0.61
    (docs/analysis.md). ``low_env`` is :func:`low_band_onset_strength`, computed if not given.
    """
    if low_env is None:
        low_env = low_band_onset_strength(mel_power)
    return onset_env / (onset_env.std() + 1e-9) + low_env / (low_env.std() + 1e-9)


def low_band_onset_strength(mel_power: np.ndarray) -> np.ndarray:
    """Onset envelope [shape=(T,)] of the mel bands below ``LOW_BAND_HZ`` (kick drum, bass)."""
    return mir.onset_strength(mir.power_to_db(_low_band(mel_power).T), n_fft=N_FFT,
                              hop_length=HOP_LENGTH)


def _low_band(mel_power: np.ndarray) -> np.ndarray:
    mel_hz = mir.mel_frequencies(N_MELS + 2, fmax=SAMPLE_RATE / 2)[1:-1]
    return mel_power[:, mel_hz < LOW_BAND_HZ]


def song_beats(mel_power: np.ndarray, chroma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Beat times in seconds and the onset envelope of a song, the one beat step of the project.

    Tracks beats on the combined onset + low-band envelope (:func:`beat_envelope`,
    :func:`track_beats`), then picks one beat phase for the whole song
    (:func:`align_beat_phase`). ``mel_power`` and ``chroma`` come from :func:`mel_and_chroma`.
    """
    beats_s, onset_env, _ = song_beats_and_envelope(mel_power, chroma)
    return beats_s, onset_env


def song_beats_and_envelope(mel_power: np.ndarray, chroma: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`song_beats` plus the envelope the beats were tracked on (:func:`beat_envelope`),
    which :func:`beat_confidence` needs: ``(beats_s, onset_env, beat_env)``."""
    onset_env = onset_strength(mel_power)
    low_env = low_band_onset_strength(mel_power)
    beat_env = beat_envelope(mel_power, onset_env, low_env=low_env)
    beats_s = track_beats(beat_env)
    return align_beat_phase(beats_s, low_env, chroma), onset_env, beat_env


def track_beats(envelope: np.ndarray) -> np.ndarray:
    """Beat times in seconds: librosa's ``beat_track`` (:func:`.mir.beat_track`) minus
    ``ONSET_LATENCY_S``.

    librosa defaults except ``trim=False``: the default trims beats in weak passages at both
    ends (up to 12 s of a fade-out on the test songs), which would leave the song's tail out of
    the beat grid; untrimmed, the grid covers the song and the beat F-measure is the same or
    better on all four rock songs. Returns an empty array when the envelope is flat (silence).
    """
    if not np.any(envelope > 0):
        return np.zeros(0)
    _, frames = mir.beat_track(envelope, sr=SAMPLE_RATE, hop_length=HOP_LENGTH, trim=False)
    t = np.unique(frames).astype(np.float64) * HOP_LENGTH / SAMPLE_RATE - ONSET_LATENCY_S
    return t[t >= 0.0]


def tempo_from_beats(beats_s: np.ndarray, *, span_beats: int = 8) -> float:
    """Tempo in bpm: 60 / (median ``span_beats``-beat span / ``span_beats``).

    Spans smooth out the one-frame (23 ms) quantisation of single inter-beat intervals, which
    biases a plain median IBI (150 bpm reads as 152).
    """
    span = min(span_beats, beats_s.size - 1)
    if span < 1:
        return 0.0
    period = float(np.median(beats_s[span:] - beats_s[:-span])) / span
    return 60.0 / period


LOW_BEAT_CONFIDENCE = 0.2
"""Songs whose :func:`beat_confidence` is below this have no clear beat: the dance then follows
an estimated grid, and ``m2d choreograph``, ``m2d demo`` and the Dance panel warn (measured in
docs/analysis.md: every song in the data 0.28-1; noise, hums, a held chord 0; speech-like
synthetic syllables 0-0.16)."""
CONFIDENCE_WINDOW_S = 6.0
"""Window of the local pulse clarity in :func:`beat_confidence`, seconds (hop a quarter)."""
CONFIDENCE_BEATS = (1, 2, 3, 4)
"""Lags, in beats, at which :func:`beat_confidence` looks for the envelope repeating."""
CLARITY_FLOOR = 0.15
"""Pulse clarity an envelope without any periodicity reaches by chance (the largest of 12
autocorrelation values per window; measured on noise: 0.08-0.14); mapped to confidence 0."""
CLARITY_CLEAR = 0.65
"""Pulse clarity of a song with a steady, clear beat (the rock songs here: 0.48-0.76); mapped
to confidence 1."""
ONSET_FLOOR_DB = 0.1
"""Onset-envelope standard deviation (dB per frame, mean over the mel bands) at and below which
a signal has no onsets at all (steady tones: 0.01-0.06); :func:`beat_confidence` is 0 there."""
ONSET_CLEAR_DB = 0.4
"""Onset-envelope standard deviation from which onsets count fully (music: 0.9-2.3; stationary
noise 0.15-0.19)."""


def beat_confidence(beat_env: np.ndarray, beats_s: np.ndarray, onset_env: np.ndarray) -> float:
    """How clearly the song has the beat that was tracked: 0 (no more than noise) .. 1 (a
    steady, clear beat).

    The product of two measures, both from what the beat step already has:

    * *pulse clarity at the beat grid*: in windows of ``CONFIDENCE_WINDOW_S`` (hop a quarter of
      that), the normalised autocorrelation of the tracking envelope ``beat_env``
      (:func:`beat_envelope`, mean removed per window) at 1, 2, 3 and 4 local beat periods
      (the window's mean inter-beat interval, +-1 frame; lags up to half the window), the
      largest of these: does the envelope repeat after a beat, a half bar or a bar? Its
      median over the windows (so a rubato passage does not outweigh a song's steady parts)
      is mapped linearly from ``CLARITY_FLOOR`` (0) to ``CLARITY_CLEAR`` (1).
    * *onset presence*: the onset envelope's standard deviation (dB) mapped linearly from
      ``ONSET_FLOOR_DB`` (0) to ``ONSET_CLEAR_DB`` (1). A steady tone (a hum, a held chord)
      has no onsets, but its tiny numerical envelope can be perfectly periodic (a 50 Hz hum
      beats against the 43 Hz frame rate), so the clarity alone would call it a beat.

    Costs under a millisecond for a 3-minute song (one batched FFT over the windows). Below
    :data:`LOW_BEAT_CONFIDENCE` the beat grid is an estimate the music does not support.

    Parameters
    ----------
    beat_env : np.ndarray [shape=(T,)]
        The envelope the beats were tracked on (frames at HOP_LENGTH / SAMPLE_RATE s).
    beats_s : np.ndarray
        Beat times (s) as returned by :func:`song_beats` (latency already subtracted).
    onset_env : np.ndarray [shape=(T,)]
        :func:`onset_strength` of the song.
    """
    import scipy.fft

    env = np.asarray(beat_env, dtype=np.float64)
    beats_s = np.asarray(beats_s, dtype=np.float64)
    n = env.size
    sd = float(np.std(onset_env)) if np.size(onset_env) else 0.0
    presence = min(max((sd - ONSET_FLOOR_DB) / (ONSET_CLEAR_DB - ONSET_FLOOR_DB), 0.0), 1.0)
    if presence == 0.0 or beats_s.size < 3 or n < 8:
        return 0.0
    fps = SAMPLE_RATE / HOP_LENGTH
    w = min(n, round(CONFIDENCE_WINDOW_S * fps))
    hop = max(1, w // 4)
    starts = np.arange(0, n - w + 1, hop)
    x = np.lib.stride_tricks.sliding_window_view(env, w)[starts]
    x = x - x.mean(axis=1, keepdims=True)
    spec = scipy.fft.rfft(x, n=scipy.fft.next_fast_len(2 * w, real=True), axis=1)
    ac = scipy.fft.irfft(spec.real ** 2 + spec.imag ** 2, axis=1)[:, :w // 2 + 1]
    ac /= (w - np.arange(ac.shape[1]))[None, :]          # unbiased per lag
    c0 = ac[:, 0].copy()
    # the window's beats (frames) and their mean interval
    bf = (beats_s + ONSET_LATENCY_S) * fps
    lo = np.searchsorted(bf, starts, side="left")
    hi = np.searchsorted(bf, starts + w, side="left") - 1
    count = hi - lo
    ok = (count >= 2) & (c0 > 1e-12 * max(float(np.max(c0)), 1e-300))
    if not np.any(ok):
        return 0.0
    period = (bf[np.clip(hi, 0, bf.size - 1)] - bf[np.clip(lo, 0, bf.size - 1)]) \
        / np.maximum(count, 1)
    lags = np.round(np.asarray(CONFIDENCE_BEATS, dtype=np.float64)[None, :, None]
                    * period[:, None, None]).astype(np.int64) + np.arange(-1, 2)[None, None, :]
    lags = lags.reshape(lags.shape[0], -1)
    valid = (lags >= 1) & (lags <= w // 2)
    r = np.take_along_axis(ac, np.clip(lags, 0, ac.shape[1] - 1), axis=1) \
        / np.where(c0 > 0, c0, 1.0)[:, None]
    r = np.where(valid, r, -np.inf).max(axis=1)
    ok &= np.isfinite(r)
    if not np.any(ok):
        return 0.0
    return pulse_confidence(float(np.median(r[ok]))) * presence


def beat_warning(song: str | os.PathLike | None, confidence: float | None) -> str:
    """The warning for a song without a clear beat ("" when its beat is clear or unknown):
    ``no clear beat found in SONG (confidence 0.12): the dance follows an estimated grid``."""
    if confidence is None or not confidence < LOW_BEAT_CONFIDENCE:
        return ""
    name = Path(os.fspath(song)).name if song else "the song"
    return (f"no clear beat found in {name or song} (confidence {confidence:.2f}): the dance "
            "follows an estimated grid")


def pulse_confidence(clarity: float) -> float:
    """Pulse clarity mapped linearly from ``CLARITY_FLOOR`` (0) to ``CLARITY_CLEAR`` (1)."""
    x = (clarity - CLARITY_FLOOR) / (CLARITY_CLEAR - CLARITY_FLOOR)
    return min(max(x, 0.0), 1.0)


PHASE_WINDOW_BEATS = 8
"""Beats either side used to fit the local half-beat grid in :func:`beat_phase`."""
PHASE_MIN_STEADINESS = 0.7
"""Median fit of the tracked beats to a steady half-beat grid (mean resultant length, 0..1)
below which :func:`beat_phase` leaves them as tracked (rubato, free tempo). Measured: rock
songs 0.95-0.98, the pop and jazz songs 0.85-0.97, the two orchestral songs 0.36-0.38."""
PHASE_PRIOR_Z = 2.0
"""Weight, in standard errors of the evidence, of the tracker's own phase preference (all its
beats on one half-beat phase = +-2) in :func:`beat_phase`."""


@dataclass(frozen=True)
class BeatPhase:
    """What :func:`beat_phase` measured and decided (also for tests and docs).

    The tracked beats fall on two interleaved half-beat grids, ``parity`` 0 (the grid of the
    first beat) and 1. ``z_low``, ``z_chroma`` and ``z`` are evidence (mean / standard error
    over the beats) that parity 0 carries the beats: positive favours 0, negative 1.
    """

    beats_s: np.ndarray
    steadiness: float
    share_0: float
    """Fraction of the tracked beats on parity 0."""
    z_low: float
    z_chroma: float
    z: float
    chosen: int
    """The parity kept (0 or 1), or -1 when the beats were left as tracked."""
    moved: int
    """Tracked beats moved by half a beat."""


def align_beat_phase(beats_s: np.ndarray, low_env: np.ndarray,
                     chroma: np.ndarray | None = None) -> np.ndarray:
    """The tracked beats with every beat on one half-beat phase, chosen by :func:`beat_phase`."""
    return beat_phase(beats_s, low_env, chroma).beats_s


def beat_phase(beats_s: np.ndarray, low_env: np.ndarray,
               chroma: np.ndarray | None = None) -> BeatPhase:
    """Choose between the tracked beats and the off-beats half a beat later, for the whole song.

    librosa's tracker follows the right tempo but, in songs whose hi-hats, snare or guitar
    accent the off-beat eighths, sits on the off-beat for whole sections and hops back at
    section changes. Steps:

    1. *Grid*: each beat's position in half-beats, ``2 (t - t0) / period``, is referred to a
       local half-beat grid (circular mean over +-``PHASE_WINDOW_BEATS`` beats, unwrapped, so
       it follows slow tempo drift). Every beat gets a half-beat index; its parity (0/1) says
       which of the two interleaved phases it is on. The tracker's hops show as parity changes.
       If the beats fit no steady grid (median resultant < ``PHASE_MIN_STEADINESS``) nothing
       is changed.
    2. *Evidence*, measured at the fitted grid times of each beat and of the half-beat after it
       (the same for both phases, so the tracker's alignment to its own peaks is no advantage):
       (a) low-band (< ``LOW_BAND_HZ``) onset strength, max over +-2 frames -- kick drum and
       bass notes start on the beat; (b) harmonic change, the cosine distance between the mean
       chroma of the beat after and the beat before the point -- chords change on beats (Goto
       2001 used both cues). Each per-beat difference (parity 0 minus parity 1) is divided by
       its standard deviation; ``z`` is the mean of their sum over its standard error.
    3. *Decision*, one phase for the whole song: parity 0 if ``z + PHASE_PRIOR_Z *
       (2 share_0 - 1) >= 0``. The tracker's own preference is the prior: a tracker that put
       all beats on one phase needs 2 standard errors of contrary evidence to be overruled;
       a tracker split 50/50 is decided by the evidence alone.
    4. Beats on the chosen phase keep their time (or move to the grid if they sat more than a
       quarter of a half-beat off it, in a hop); the others move to the grid point half a beat
       later. Duplicates (at hops) are merged and gaps filled along the grid.

    On the four rock songs the pooled evidence favours the true beat on every song (z_low
    +7.5 / +2.6 / +4.2 / +1.1, z_chroma +2.0 / +0.6 / +0.8 / +2.6); see docs/analysis.md.
    A whole-song decision assumes the beat phase does not change mid-song, true of music with
    a steady tempo; the steadiness gate leaves the rest alone.
    """
    beats_s = np.asarray(beats_s, dtype=np.float64)
    n = beats_s.size
    w = PHASE_WINDOW_BEATS

    def unchanged(steadiness: float = 0.0, share_0: float = 1.0, z_low: float = 0.0,
                  z_chroma: float = 0.0, z: float = 0.0) -> BeatPhase:
        return BeatPhase(beats_s=beats_s, steadiness=steadiness, share_0=share_0, z_low=z_low,
                         z_chroma=z_chroma, z=z, chosen=-1, moved=0)

    if n < 2 * w:
        return unchanged()
    period = 60.0 / tempo_from_beats(beats_s)
    x = 2.0 * (beats_s - beats_s[0]) / period
    kernel = np.ones(2 * w + 1)
    local = np.convolve(np.exp(2j * np.pi * x), kernel, mode="full")[w:w + n]
    count = np.convolve(np.ones(n), kernel, mode="full")[w:w + n]
    steadiness = float(np.median(np.abs(local) / count))
    if steadiness < PHASE_MIN_STEADINESS:
        return unchanged(steadiness)
    offset = np.unwrap(np.angle(local)) / (2 * np.pi)
    idx = np.round(x - offset).astype(np.int64)
    resid = x - offset - idx
    parity = idx % 2
    grid = beats_s[0] + (idx + offset) * (period / 2)
    share_0 = float(np.mean(parity == 0))

    on_grid = np.abs(resid) <= 0.25
    sign = np.where(parity == 0, 1.0, -1.0)[on_grid]
    g = grid[on_grid]
    e_low = sign * (_envelope_at(low_env, g) - _envelope_at(low_env, g + period / 2))
    parts = [e_low]
    z_chroma = 0.0
    if chroma is not None and chroma.shape[0] > 4 * period * SAMPLE_RATE / HOP_LENGTH:
        csum = np.concatenate([np.zeros((1, chroma.shape[1])), np.cumsum(chroma, axis=0)])
        e_chroma = sign * (_chroma_change(csum, g, period)
                           - _chroma_change(csum, g + period / 2, period))
        parts.append(e_chroma)
        z_chroma = _zscore(e_chroma)
    evidence = sum(e / (e.std() + 1e-12) for e in parts)
    z_low, z = _zscore(e_low), _zscore(evidence)
    chosen = 0 if z + PHASE_PRIOR_Z * (2 * share_0 - 1) >= 0 else 1
    on = parity == chosen
    if on.all():
        return BeatPhase(beats_s=beats_s, steadiness=steadiness, share_0=share_0, z_low=z_low,
                         z_chroma=z_chroma, z=z, chosen=chosen, moved=0)

    times = np.where(on & on_grid, beats_s, np.where(on, grid, grid + period / 2))
    slots, first = np.unique(np.where(on, idx, idx + 1), return_index=True)
    times = times[first]
    steps = np.diff(slots) // 2
    if np.any(np.diff(times) <= 0) or np.any(steps < 1):
        return unchanged(steadiness, share_0, z_low, z_chroma, z)
    if np.any(steps > 1):  # fill gaps left by merged or moved beats along the grid
        pieces = [times[:1]]
        for a, b, k in zip(times[:-1], times[1:], steps):
            pieces.append(a + (b - a) * np.arange(1, k + 1) / k)
        times = np.concatenate(pieces)
    end_s = (low_env.size - 1) * HOP_LENGTH / SAMPLE_RATE
    times = times[(times >= 0.0) & (times <= end_s)]
    return BeatPhase(beats_s=times, steadiness=steadiness, share_0=share_0, z_low=z_low,
                     z_chroma=z_chroma, z=z, chosen=chosen, moved=int(np.sum(~on)))


def _envelope_at(env: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """Max of an onset envelope within +-2 frames of each beat time (latency undone)."""
    f = np.round((times_s + ONSET_LATENCY_S) * SAMPLE_RATE / HOP_LENGTH).astype(np.int64)
    return env[np.clip(f[:, None] + np.arange(-2, 3)[None, :], 0, env.size - 1)].max(axis=1)


def _chroma_change(csum: np.ndarray, times_s: np.ndarray, period: float) -> np.ndarray:
    """Cosine distance between the mean chroma of the beat after and the beat before each time.

    ``csum`` is the cumulative sum of the (time, 12) chromagram with a zero row in front.
    """
    h = max(1, round(period * SAMPLE_RATE / HOP_LENGTH))
    n = csum.shape[0] - 1
    f = np.round((times_s + ONSET_LATENCY_S) * SAMPLE_RATE / HOP_LENGTH).astype(np.int64)
    f = np.clip(f, h, n - h)
    after = csum[f + h] - csum[f]
    before = csum[f] - csum[f - h]
    norm = np.linalg.norm(after, axis=1) * np.linalg.norm(before, axis=1)
    return 1.0 - np.sum(after * before, axis=1) / np.maximum(norm, 1e-12)


def _zscore(e: np.ndarray) -> float:
    """Mean over its standard error (0 for fewer than 2 values or no spread)."""
    if e.size < 2:
        return 0.0
    sd = float(np.std(e, ddof=1))
    return float(np.mean(e) / (sd / np.sqrt(e.size))) if sd > 0 else 0.0


def detect_onsets(onset_env: np.ndarray) -> np.ndarray:
    """librosa's ``onset_detect`` (:func:`.mir.onset_detect`) times in seconds minus latency."""
    if not np.any(onset_env > 0):
        return np.zeros(0)
    frames = mir.onset_detect(onset_env, sr=SAMPLE_RATE, hop_length=HOP_LENGTH)
    t = frames.astype(np.float64) * HOP_LENGTH / SAMPLE_RATE
    return np.maximum(t - ONSET_LATENCY_S, 0.0)


def _beat_frames(beats_s: np.ndarray, n_frames: int) -> np.ndarray:
    """Analysis frame of each beat (undoing the latency shift), clipped to the spectrogram."""
    f = np.round((beats_s + ONSET_LATENCY_S) * SAMPLE_RATE / HOP_LENGTH).astype(int)
    return np.clip(f, 0, n_frames - 1)


def find_downbeats(beats_s: np.ndarray, mel_power: np.ndarray, onset_env: np.ndarray,
                   *, beats_per_bar: int = 4) -> np.ndarray:
    """Downbeat times: every ``beats_per_bar``-th beat from the most bar-like phase.

    Heuristic (4/4 assumed): for each beat, (a) the positive spectral flux of the mel bands
    below ``LOW_BAND_HZ`` (kick drum, bass note changes) within +-2 frames of the beat and
    (b) the change of the beat-synchronous log-mel from the previous beat (chord changes) are
    z-scored; the phase ``p`` whose beats ``p, p+4, ...`` have the largest mean of (a) + (b)
    wins.
    """
    n = beats_s.size
    if n < beats_per_bar:
        return beats_s[:1].copy()
    frames = _beat_frames(beats_s, mel_power.shape[0])
    low = _low_band(mel_power)
    low_db = mir.power_to_db(low.T, ref=float(np.max(low)) + 1e-12)
    flux = np.maximum(0.0, np.diff(low_db, axis=1, prepend=low_db[:, :1])).mean(axis=0)
    win = np.clip(frames[:, None] + np.arange(-2, 3)[None, :], 0, flux.size - 1)
    low_onset = flux[win].max(axis=1)
    log_mel = mir.power_to_db(mel_power.T, ref=float(np.max(mel_power)) + 1e-12)
    bounds = np.concatenate([frames, [mel_power.shape[0]]])
    sync = np.stack([log_mel[:, a:max(b, a + 1)].mean(axis=1)
                     for a, b in itertools.pairwise(bounds)], axis=1)
    change = np.concatenate([[0.0], np.linalg.norm(np.diff(sync, axis=1), axis=0)])

    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean()) / (x.std() + 1e-9)

    score = z(low_onset) + z(change)
    phase_scores = [score[p::beats_per_bar].mean() for p in range(beats_per_bar)]
    phase = int(np.argmax(phase_scores))
    return beats_s[phase::beats_per_bar].copy()


# ---------------------------------------------------------------------------------------------
# melody: rests and long tones


def run_melody(audio: Audio, *, method: str = "crepe",
               cancel: threading.Event | None = None) -> melody_mod.Melody:
    """Main melody with the chosen extractor (see :func:`analyze_song`)."""
    if method == "crepe":
        return melody_mod.extract_melody(audio.y, audio.sr, cancel=cancel)
    if method == "crepe-fp32":
        return melody_mod.extract_melody(audio.y, audio.sr, precision="fp32", cancel=cancel)
    if method == "pyin":
        return melody_mod.pyin_melody(audio.y, audio.sr)
    if method == "pyin-coarse":
        return melody_mod.pyin_melody(audio.y, audio.sr, hop_s=melody_mod.DEFAULT_HOP_S)
    raise ValueError(f"unknown melody method {method!r}")


def beat_period_at(t_s: np.ndarray, beats_s: np.ndarray) -> np.ndarray:
    """Local beat period (s) at times ``t_s``: the inter-beat interval around each time."""
    ibi = np.diff(beats_s)
    mid = 0.5 * (beats_s[1:] + beats_s[:-1])
    return np.interp(t_s, mid, ibi)


def find_rests(mel: melody_mod.Melody, beats_s: np.ndarray) -> np.ndarray:
    """Unvoiced runs lasting >= max(``REST_MIN_S``, ``REST_MIN_BEATS`` local beats).

    A run of unvoiced frames ``i..j`` spans ``[t_i - hop/2, t_j + hop/2]`` (clipped at 0).

    Returns
    -------
    np.ndarray [shape=(n, 2)]
        (start_s, end_s) per rest.
    """
    unvoiced = ~mel.voiced
    runs = _runs(unvoiced)
    if runs.size == 0:
        return np.zeros((0, 2))
    half = mel.hop_s / 2
    start = np.maximum(mel.times_s[runs[:, 0]] - half, 0.0)
    end = mel.times_s[runs[:, 1] - 1] + half
    need = np.maximum(REST_MIN_S, REST_MIN_BEATS * beat_period_at(0.5 * (start + end), beats_s))
    keep = (end - start) >= need - 1e-9
    return np.stack([start[keep], end[keep]], axis=1)


def find_long_tones(mel: melody_mod.Melody, beats_s: np.ndarray) -> np.ndarray:
    """Melody notes (< 1 semitone spread) lasting >= ``LONG_TONE_MIN_BEATS`` local beats.

    Returns
    -------
    np.ndarray [shape=(n, 2)]
        (start_s, end_s) per long tone; a note of frames ``i..j`` spans
        ``[t_i - hop/2, t_j + hop/2]``.
    """
    notes = melody_mod.melody_notes(mel)
    if notes.size == 0:
        return np.zeros((0, 2))
    start = np.maximum(notes[:, 0] - mel.hop_s / 2, 0.0)
    end = notes[:, 1] - mel.hop_s / 2
    need = LONG_TONE_MIN_BEATS * beat_period_at(0.5 * (start + end), beats_s)
    keep = (end - start) >= need - 1e-9
    return np.stack([start[keep], end[keep]], axis=1)


def _runs(mask: np.ndarray) -> np.ndarray:
    """(start, stop) index pairs [shape=(n, 2)] of the True runs of a boolean mask."""
    m = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(m[1:] != m[:-1])
    return edges.reshape(-1, 2)


# ---------------------------------------------------------------------------------------------
# structure


def segment_structure(mel_power: np.ndarray, beats_s: np.ndarray, duration_s: float, *,
                      k: int = N_SECTIONS, min_beats: int = MIN_SECTION_BEATS,
                      ) -> tuple[Section, ...]:
    """Laplacian structural segmentation (McFee & Ellis 2014) on beat-synchronous features.

    Follows the librosa gallery recipe with the song's log-mel (median per beat) in place of a
    CQT: kNN affinity recurrence (width 3, symmetric) with time-lag median filtering, plus a
    path graph weighted by MFCC continuity (20 MFCCs from the same log-mel), balanced by the
    recipe's ``mu``; eigenvectors of the normalised Laplacian, 9-beat median filtered; k-means
    with ``k`` clusters on the first ``k`` normalised eigenvectors. Sections shorter than
    ``min_beats`` are merged into the neighbour with the closer mean log-mel.

    Returns
    -------
    tuple[Section, ...]
        Tiling [0, duration_s]; boundaries sit on beats.
    """
    import scipy.linalg
    import scipy.ndimage
    import scipy.sparse.csgraph

    log_mel = mir.power_to_db(mel_power.T, ref=float(np.max(mel_power)) + 1e-12)  # (mel, T)
    frames = _beat_frames(beats_s, log_mel.shape[1])
    # segments between beats: [0, b0), [b0, b1), ..., [b_last, T)
    bounds = np.unique(np.concatenate([[0], frames, [log_mel.shape[1]]]))
    if bounds.size - 1 > MAX_STRUCTURE_UNITS:  # long songs: cluster groups of beats (bounded
        step = int(np.ceil((bounds.size - 1) / MAX_STRUCTURE_UNITS))  # t x t matrices)
        bounds = np.unique(np.concatenate([bounds[::step], bounds[-1:]]))
    n_seg = bounds.size - 1
    if n_seg < max(2 * k, 3, 2 * 3 + 2):
        return (Section(0.0, float(duration_s), 0),)
    sync = mir.sync_median(log_mel, bounds)  # (mel, n_seg)
    mfcc_sync = mir.sync_mean(mir.mfcc(log_mel, n_mfcc=20), bounds)

    rec = mir.recurrence_affinity(sync, width=3)
    rec = mir.timelag_median(rec, width=7)
    path_distance = np.sum(np.diff(mfcc_sync, axis=1) ** 2, axis=0)
    sigma = float(np.median(path_distance)) or 1.0
    path_sim = np.exp(-path_distance / sigma)
    r_path = np.diag(path_sim, k=1) + np.diag(path_sim, k=-1)
    deg_path = r_path.sum(axis=1)
    deg_rec = rec.sum(axis=1)
    mu = deg_path.dot(deg_path + deg_rec) / max(np.sum((deg_path + deg_rec) ** 2), 1e-12)
    affinity = mu * rec + (1 - mu) * r_path
    lap = scipy.sparse.csgraph.laplacian(affinity, normed=True)
    _, evecs = scipy.linalg.eigh(lap, subset_by_index=[0, k - 1])
    evecs = scipy.ndimage.median_filter(evecs, size=(9, 1))
    norm = np.cumsum(evecs ** 2, axis=1) ** 0.5
    x = evecs / np.maximum(norm[:, k - 1:k], 1e-12)
    labels = _kmeans(x, k)

    # runs of equal labels -> sections (in segment indices), then merge short ones
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [n_seg]])
    secs = [[int(a), int(b), int(labels[a])] for a, b in zip(starts, stops)]
    means = [sync[:, a:b].mean(axis=1) for a, b, _ in secs]
    while len(secs) > 1:
        lengths = [b - a for a, b, _ in secs]
        i = int(np.argmin(lengths))
        if lengths[i] >= min_beats:
            break
        if i == 0:
            j = 1
        elif i == len(secs) - 1:
            j = i - 1
        else:
            d_prev = np.linalg.norm(means[i] - means[i - 1])
            d_next = np.linalg.norm(means[i] - means[i + 1])
            j = i - 1 if d_prev <= d_next else i + 1
        a, b = min(i, j), max(i, j)
        keep = j  # the longer-lived neighbour keeps its label
        merged = [secs[a][0], secs[b][1], secs[keep][2]]
        w_a, w_b = secs[a][1] - secs[a][0], secs[b][1] - secs[b][0]
        means[a] = (means[a] * w_a + means[b] * w_b) / (w_a + w_b)
        secs[a] = merged
        del secs[b], means[b]
        # neighbours with the same label fuse
        if a > 0 and secs[a - 1][2] == secs[a][2]:
            secs[a - 1][1] = secs[a][1]
            del secs[a], means[a]

    beat_at_frame = dict(zip(frames.tolist(), beats_s.tolist()))
    seg_times = np.asarray([0.0] + [beat_at_frame[int(f)] for f in bounds[1:-1]]
                           + [float(duration_s)])
    relabel: dict[int, int] = {}
    out = []
    for a, b, lab in secs:
        lab = relabel.setdefault(lab, len(relabel))
        out.append(Section(float(seg_times[a]), float(seg_times[b]), lab))
    return tuple(out)


def _kmeans(x: np.ndarray, k: int, *, n_init: int = 10, iters: int = 100,
            seed: int = 0) -> np.ndarray:
    """Deterministic k-means++ (Lloyd) on rows of ``x``; labels [shape=(n,)]."""
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    n = x.shape[0]
    k = min(k, n)
    for _ in range(n_init):
        centres = [x[rng.integers(n)]]
        for _ in range(1, k):
            d2 = np.min(((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
            centres.append(x[rng.choice(n, p=p)])
        c = np.asarray(centres)
        labels = np.zeros(n, dtype=int)
        for it in range(iters):
            d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)
            new = d2.argmin(axis=1)
            if it > 0 and np.array_equal(new, labels):
                break
            labels = new
            for j in range(k):
                if np.any(labels == j):
                    c[j] = x[labels == j].mean(axis=0)
        inertia = float(((x - c[labels]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = labels.copy(), inertia
    return best


# ---------------------------------------------------------------------------------------------
# phrases


def break_points(beats_s: np.ndarray, *, sections: tuple[Section, ...] = (),
                 rests_s: np.ndarray | None = None,
                 long_tones_s: np.ndarray | None = None) -> dict[int, str]:
    """Beat indices where a phrase may end, with the reason (highest precedence wins).

    * ``section``: a section boundary (already on a beat);
    * ``rest``: the beat nearest the end of a melody rest (spec section 8, row 11);
    * ``long_tone``: the beat nearest the end of a long tone.
    """
    out: dict[int, str] = {}

    def add(times: np.ndarray, reason: str) -> None:
        for t in np.asarray(times, dtype=np.float64).reshape(-1):
            j = int(np.argmin(np.abs(beats_s - t)))
            if reason_rank(reason) < reason_rank(out.get(j, "end")):
                out[j] = reason

    add(np.asarray([s.start_s for s in sections[1:]]), "section")
    if rests_s is not None and len(rests_s):
        add(np.asarray(rests_s)[:, 1], "rest")
    if long_tones_s is not None and len(long_tones_s):
        add(np.asarray(long_tones_s)[:, 1], "long_tone")
    return out


def reason_rank(reason: str) -> int:
    return END_REASONS.index(reason)


def segment_phrases(beats_s: np.ndarray, duration_s: float, *,
                    sections: tuple[Section, ...] = (), rests_s: np.ndarray | None = None,
                    long_tones_s: np.ndarray | None = None, min_beats: int = MIN_BEATS,
                    max_beats: int = MAX_BEATS) -> tuple[Phrase, ...]:
    """The paper's phrase rule over the beat grid.

    A phrase starts where the previous one ended (the first at 0 s) and absorbs at least
    ``min_beats`` beat intervals; it then ends at the first break point (see
    :func:`break_points`) at or after that, or is cut after ``max_beats`` beats
    (``end_reason="max_beats"``). A remainder shorter than ``min_beats`` at the end of the song
    is merged into the last phrase, which then runs to ``duration_s`` (``"end"``); so every
    phrase has >= ``min_beats`` beats and the last one may have up to
    ``max_beats + min_beats - 1``. The first phrase also holds any lead-in before the first
    beat and the last any tail after the last beat.

    Raises
    ------
    M2DError
        Fewer than ``min_beats`` beat intervals in the song.
    """
    beats_s = np.asarray(beats_s, dtype=np.float64)
    last = beats_s.size - 1
    if last < min_beats:
        raise M2DError(f"only {beats_s.size} beats; a phrase needs {min_beats} beats")
    breaks = break_points(beats_s, sections=sections, rests_s=rests_s, long_tones_s=long_tones_s)
    spans: list[list] = []
    i = 0
    while i < last:
        lo = i + min_beats
        if lo > last:  # remainder too short: merge into the previous phrase
            spans[-1][1], spans[-1][2] = last, "end"
            break
        hi = min(i + max_beats, last)
        j = next((b for b in range(lo, hi + 1) if b in breaks), None)
        reason = breaks.get(j, "") if j is not None else ""
        if j is None:
            j = hi
            reason = "max_beats" if j < last else "end"
        if j == last:
            reason = "end"
        spans.append([i, j, reason])
        i = j
    phrases = []
    for idx, (a, b, reason) in enumerate(spans):
        start = 0.0 if idx == 0 else float(beats_s[a])
        end = float(duration_s) if idx == len(spans) - 1 else float(beats_s[b])
        phrases.append(Phrase(index=idx, start_s=start, end_s=end, n_beats=int(b - a),
                              end_reason=reason))
    return tuple(phrases)


# ---------------------------------------------------------------------------------------------
# evaluation


def beat_f_measure(estimated_s: np.ndarray, reference_s: np.ndarray, *,
                   tolerance_s: float = 0.07) -> float:
    """Beat F-measure: one-to-one matches within +-``tolerance_s`` (as mir_eval, no trimming).

    Each reference beat is matched to the nearest unmatched estimate inside the window
    (greedy in time order, which is optimal when the window is under half a beat).
    """
    est = np.sort(np.asarray(estimated_s, dtype=np.float64))
    ref = np.sort(np.asarray(reference_s, dtype=np.float64))
    if est.size == 0 or ref.size == 0:
        return 0.0
    used = np.zeros(est.size, dtype=bool)
    hits = 0
    for r in ref:
        i = int(np.searchsorted(est, r))
        best = None
        for j in (i - 1, i, i + 1):
            if 0 <= j < est.size and not used[j] and abs(est[j] - r) <= tolerance_s and (
                    best is None or abs(est[j] - r) < abs(est[best] - r)):
                best = j
        if best is not None:
            used[best] = True
            hits += 1
    if hits == 0:
        return 0.0
    precision, recall = hits / est.size, hits / ref.size
    return 2 * precision * recall / (precision + recall)
