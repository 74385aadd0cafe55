"""Load any song a Blender user has into mono float32 at the analysis rate, in bounded memory.

Decoders, tried in order:

1. ``soundfile`` (libsndfile >= 1.1: WAV/W64/RF64, FLAC, Ogg Vorbis/Opus, MP3, AIFF, CAF, ...),
   streamed in blocks;
2. Blender's own audio module ``aud`` (FFmpeg inside Blender: M4A/AAC, WMA, ...) when it can be
   imported, i.e. when this code runs inside Blender or after ``import bpy``;
3. ``audioread`` with a real backend (FFmpeg command line, GStreamer, Core Audio), streamed.

Anything else raises :class:`~blender_m2d.core.errors.M2DError` naming the file and saying why
(missing, a folder, empty, unreadable, damaged, no decoder for the container, too long, no
samples). Decoder exceptions never escape.

Every block is mixed down to mono (mean of the channels) and resampled with soxr (``HQ``) as it
is decoded, so peak memory is the mono output plus one block, whatever the source rate, channel
count or length. ``max_duration_s`` stops decoding (with an error) as soon as the limit is
passed, even when the file's header under-reports its length.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .errors import M2DError
from .timebase import SAMPLE_RATE

log = logging.getLogger(__name__)

BLOCK_FRAMES = 1 << 16
"""Source frames decoded per block (1.5 s at 44.1 kHz)."""

SOUNDFILE_EXTENSIONS = frozenset({
    ".wav", ".wave", ".w64", ".rf64", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff",
    ".aifc", ".caf", ".au", ".snd"})
"""Extensions libsndfile decodes (a file with another extension is still tried)."""

FFMPEG_ONLY_EXTENSIONS = frozenset({
    ".m4a", ".m4b", ".mp4", ".aac", ".alac", ".wma", ".ac3", ".eac3", ".mka", ".mkv", ".webm",
    ".mov", ".amr", ".ape", ".wv", ".mpc", ".ra"})
"""Containers libsndfile cannot read; they need FFmpeg (inside Blender) or audioread."""


@dataclass(frozen=True)
class Audio:
    """A decoded song.

    Attributes
    ----------
    y : np.ndarray [shape=(n,), dtype=float32]
        Mono samples at ``sr`` (mean of the source channels), nominally in [-1, 1].
    sr : int
        Sample rate of ``y`` in Hz (``SAMPLE_RATE`` = 22,050 unless asked otherwise).
    path : str
        Where the audio came from (``"<memory>"`` for arrays).
    duration_s : float
        ``len(y) / sr`` in seconds.
    source_sr : int
        Sample rate of the file in Hz.
    source_channels : int
        Channel count of the file.
    """

    y: np.ndarray
    sr: int
    path: str
    duration_s: float
    source_sr: int
    source_channels: int


def audio_from_array(y: np.ndarray, sr: int, *, target_sr: int = SAMPLE_RATE,
                     path: str = "<memory>") -> Audio:
    """Wrap samples already in memory as :class:`Audio` (mixed to mono, resampled).

    Parameters
    ----------
    y : np.ndarray [shape=(n,) or (n, channels)]
        Samples in [-1, 1]; 2-D input is frames x channels (soundfile's layout).
    sr : int
        Rate of ``y`` in Hz.
    target_sr : int
        Rate of the result in Hz.
    """
    y = np.asarray(y, dtype=np.float32)
    channels = 1 if y.ndim == 1 else int(y.shape[1])
    if y.ndim == 2:
        y = y.mean(axis=1, dtype=np.float32)
    elif y.ndim != 1:
        raise ValueError(f"audio must be 1-D or (frames, channels), got shape {y.shape}")
    y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    if sr != target_sr and y.size:
        import soxr

        y = soxr.resample(y, sr, target_sr, quality="HQ").astype(np.float32, copy=False)
    return Audio(y=np.ascontiguousarray(y), sr=target_sr, path=path,
                 duration_s=y.size / target_sr, source_sr=int(sr), source_channels=channels)


def load_audio(path: str | os.PathLike, *, sr: int = SAMPLE_RATE,
               max_duration_s: float | None = None) -> Audio:
    """Decode ``path`` to mono float32 at ``sr`` Hz.

    Parameters
    ----------
    path : str | os.PathLike
        Any audio file (unicode names are fine).
    sr : int
        Output sample rate in Hz.
    max_duration_s : float | None
        Refuse files longer than this many seconds (checked from the header and again while
        decoding, so memory stays bounded by ``max_duration_s * sr * 4`` bytes).

    Returns
    -------
    Audio

    Raises
    ------
    M2DError
        The file is missing, a folder, empty, unreadable, damaged, in a container no available
        decoder reads, longer than ``max_duration_s``, or holds no samples.
    """
    path_str = os.fspath(path)
    _check_file(path_str)
    ext = os.path.splitext(path_str)[1].lower()

    sf_file, sf_error = _open_soundfile(path_str)
    if sf_file is not None:
        with sf_file:
            source_sr, channels = int(sf_file.samplerate), int(sf_file.channels)
            frames = int(sf_file.frames) if 0 < sf_file.frames < 2**62 else None
            _check_header_length(path_str, frames, source_sr, max_duration_s)
            blocks = _soundfile_blocks(sf_file, path_str)
            y = _mono_resampled(blocks, path_str, source_sr=source_sr, sr=sr,
                                expected_frames=frames, max_duration_s=max_duration_s)
        return _finish(path_str, y, sr, source_sr, channels)

    ffmpeg_tried = False  # True once an FFmpeg-based decoder exists and refused the file
    for decoder in (_decode_with_aud, _decode_with_audioread):
        result = decoder(path_str, sr=sr, max_duration_s=max_duration_s)
        if result is None:
            continue
        if result is _REFUSED:
            ffmpeg_tried = True
            continue
        y, source_sr, channels = result
        return _finish(path_str, y, sr, source_sr, channels)

    if ext in FFMPEG_ONLY_EXTENSIONS and not ffmpeg_tried:
        raise M2DError(
            f"no decoder for {ext} files is available here (they need FFmpeg, which Blender "
            "has but this Python does not); convert the song to WAV, FLAC, OGG or MP3",
            path=path_str)
    detail = "" if not sf_error or "does not exist" in sf_error else f" (libsndfile: {sf_error})"
    raise M2DError("cannot decode this file: it is damaged or not in a supported audio format "
                   f"(WAV, FLAC, OGG, MP3, AIFF){detail}", path=path_str)


# ---------------------------------------------------------------------------------------------
# helpers


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise M2DError("no such audio file", path=path)
    if os.path.isdir(path):
        raise M2DError("is a folder, not an audio file", path=path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            fh.read(1)
    except PermissionError as err:
        raise M2DError("cannot read the file (permission denied)", path=path) from err
    except OSError as err:
        raise M2DError(f"cannot read the file ({err.strerror})", path=path) from err
    if size == 0:
        raise M2DError("the file is empty (0 bytes)", path=path)


def _open_soundfile(path: str):
    """``(open soundfile.SoundFile, None)`` or ``(None, why libsndfile refused it)``."""
    import soundfile as sf

    try:
        f = sf.SoundFile(path)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as err:
        reason = str(err).replace(repr(path), "").replace(path, "")
        reason = reason.replace("Error opening", "").strip(" :.")
        return None, reason or type(err).__name__
    if f.samplerate <= 0 or f.channels <= 0:
        f.close()
        return None, "invalid sample rate or channel count in the header"
    return f, None


def _check_header_length(path: str, frames: int | None, source_sr: int,
                         max_duration_s: float | None) -> None:
    if max_duration_s is None or frames is None:
        return
    length_s = frames / source_sr
    if length_s > max_duration_s + 1.0:
        raise M2DError(_too_long(length_s, max_duration_s), path=path)


def _too_long(length_s: float, max_duration_s: float) -> str:
    return (f"the song is {_span(length_s)} long; the limit is {_span(max_duration_s)}, "
            "so trim it first")


def _span(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _soundfile_blocks(sf_file, path: str) -> Iterator[np.ndarray]:
    import soundfile as sf

    while True:
        try:
            block = sf_file.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as err:
            raise M2DError(f"decoding failed part-way: the file is damaged ({err})",
                           path=path) from err
        if block.shape[0] == 0:
            return
        yield block
        if block.shape[0] < BLOCK_FRAMES:
            return


def _mono_resampled(blocks: Iterator[np.ndarray], path: str, *, source_sr: int, sr: int,
                    expected_frames: int | None, max_duration_s: float | None) -> np.ndarray:
    """Mix each (frames, channels) block to mono, resample, append; bounded extra memory."""
    import soxr

    stream = None if source_sr == sr else soxr.ResampleStream(
        source_sr, sr, 1, dtype="float32", quality="HQ")
    ratio = sr / source_sr
    capacity = math.ceil((expected_frames or source_sr * 60) * ratio) + 1024
    if max_duration_s is not None:
        capacity = min(capacity, math.ceil((max_duration_s + 2.0) * sr) + 1024)
    out = np.empty(capacity, dtype=np.float32)
    n_out = 0
    n_in = 0
    limit_frames = None if max_duration_s is None else (max_duration_s + 1.0) * source_sr

    def append(chunk: np.ndarray) -> None:
        nonlocal out, n_out
        if n_out + chunk.size > out.size:
            grown = np.empty(max(out.size * 2, n_out + chunk.size), dtype=np.float32)
            grown[:n_out] = out[:n_out]
            out = grown
        out[n_out:n_out + chunk.size] = chunk
        n_out += chunk.size

    for block in blocks:
        n_in += block.shape[0]
        if limit_frames is not None and n_in > limit_frames:
            raise M2DError(_too_long(n_in / source_sr, max_duration_s) + " (or more)",
                           path=path)
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
        append(mono if stream is None else stream.resample_chunk(mono))
    if stream is not None:
        append(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    return out[:n_out].copy() if n_out < out.size * 0.9 else out[:n_out]


def _finish(path: str, y: np.ndarray, sr: int, source_sr: int, channels: int) -> Audio:
    if y.size == 0:
        raise M2DError("the file holds no audio samples (0 s)", path=path)
    np.clip(y, -4.0, 4.0, out=y)  # guards against garbage floats in damaged float WAVs
    return Audio(y=y, sr=sr, path=path, duration_s=y.size / sr, source_sr=source_sr,
                 source_channels=channels)


_REFUSED = "refused"
"""A fallback decoder exists but could not read the file."""


def _decode_with_aud(path: str, *, sr: int, max_duration_s: float | None):
    """Blender's ``aud`` (FFmpeg): ``(y, source_sr, channels)``, ``_REFUSED``, or None if absent.
    """
    try:
        import aud  # only importable inside Blender (or after ``import bpy``)
    except ImportError:
        return None
    try:
        sound = aud.Sound.file(path)
        source_sr, channels = sound.specs
        source_sr, channels = int(source_sr), int(channels)
        length = int(sound.length)
    except Exception as err:  # aud raises plain Exception/AUDError for unreadable files
        log.debug("aud cannot open %s: %s", path, err)
        return _REFUSED
    if source_sr <= 0 or channels <= 0 or length <= 0:
        return _REFUSED
    _check_header_length(path, length, source_sr, max_duration_s)
    try:
        # aud's limit() is not sample-exact after a seek in compressed streams, so the mono
        # source is decoded in one piece (bounded by the header check above) and then streamed
        # through the resampler.
        mono = np.asarray((sound.rechannel(1) if channels > 1 else sound).data(),
                          dtype=np.float32).reshape(-1)
    except Exception as err:  # AUDError has no public class to catch
        raise M2DError(f"decoding failed ({err})", path=path) from err

    def blocks() -> Iterator[np.ndarray]:
        for start in range(0, mono.size, BLOCK_FRAMES):
            yield mono[start:start + BLOCK_FRAMES, None]

    y = _mono_resampled(blocks(), path, source_sr=source_sr, sr=sr, expected_frames=length,
                        max_duration_s=max_duration_s)
    return y, source_sr, channels


def _decode_with_audioread(path: str, *, sr: int, max_duration_s: float | None):
    """audioread with a real backend (not its stdlib WAV/AIFF reader, soundfile covers those)."""
    try:
        import audioread
        from audioread.rawread import RawAudioFile
    except ImportError:
        return None
    backends = [b for b in audioread.available_backends() if b is not RawAudioFile]
    if not backends:
        return None
    try:
        f = audioread.audio_open(path, backends=backends)
    except (audioread.DecodeError, OSError, EOFError) as err:
        log.debug("audioread cannot open %s: %s", path, err)
        return _REFUSED
    with f:
        source_sr, channels = int(f.samplerate), int(f.channels)
        if source_sr <= 0 or channels <= 0:
            return _REFUSED
        frames = int(f.duration * source_sr) if f.duration else None
        _check_header_length(path, frames, source_sr, max_duration_s)

        def blocks() -> Iterator[np.ndarray]:
            try:
                for buf in f:
                    pcm = np.frombuffer(buf, dtype="<i2").astype(np.float32) / 32768.0
                    yield pcm[: pcm.size - pcm.size % channels].reshape(-1, channels)
            except (audioread.DecodeError, OSError) as err:
                raise M2DError(f"decoding failed part-way ({err})", path=path) from err

        y = _mono_resampled(blocks(), path, source_sr=source_sr, sr=sr, expected_frames=frames,
                            max_duration_s=max_duration_s)
    return y, source_sr, channels
