"""load_audio: every format/rate/layout a user has, and one clear error for everything else."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from blender_m2d.core import audio as audio_mod
from blender_m2d.core.audio import Audio, audio_from_array, load_audio
from blender_m2d.core.errors import M2DError

SR = 22_050


@pytest.fixture(scope="module")
def reference(fixtures_dir) -> Audio:
    return load_audio(fixtures_dir / "audio" / "music_10s.ogg")


def _similar(a: np.ndarray, b: np.ndarray, *, max_lag: int = 2048) -> float:
    """Best normalised correlation of two signals within +-max_lag samples (codec delays)."""
    n = min(a.size, b.size) - 2 * max_lag
    x = a[max_lag:max_lag + n]
    best = 0.0
    for lag in range(-max_lag, max_lag + 1, 1):
        y = b[max_lag + lag:max_lag + lag + n]
        c = float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))
        best = max(best, c)
        if best > 0.999:
            break
    return best


def test_ogg_stereo_44k_becomes_mono_22k(reference):
    assert reference.sr == SR and reference.source_sr == 44_100
    assert reference.source_channels == 2
    assert reference.y.dtype == np.float32 and reference.y.ndim == 1
    assert reference.duration_s == pytest.approx(10.0, abs=0.01)
    assert 0.05 < np.abs(reference.y).max() <= 1.0


@pytest.mark.parametrize("fmt,subtype,ext", [
    ("WAV", "PCM_16", ".wav"), ("WAV", "FLOAT", ".wav"), ("FLAC", "PCM_24", ".flac"),
    ("OGG", "VORBIS", ".ogg"), ("MP3", "MPEG_LAYER_III", ".mp3"), ("AIFF", "PCM_16", ".aiff"),
])
def test_every_soundfile_format_decodes_to_the_same_music(tmp_path, reference, fmt, subtype,
                                                          ext):
    path = tmp_path / f"song{ext}"
    sf.write(path, reference.y, SR, format=fmt, subtype=subtype)
    got = load_audio(path)
    assert got.sr == SR
    assert got.duration_s == pytest.approx(reference.duration_s, abs=0.08)  # mp3 padding
    lossy = fmt in ("OGG", "MP3")
    assert _similar(reference.y, got.y, max_lag=0 if not lossy else 2048) > (
        0.97 if lossy else 0.9999)


@pytest.mark.parametrize("source_sr", [8_000, 16_000, 44_100, 48_000, 96_000])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_any_rate_and_channel_count_gives_the_same_tone(tmp_path, source_sr, channels):
    t = np.arange(int(1.5 * source_sr)) / source_sr
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    data = np.repeat(tone[:, None], channels, axis=1)
    path = tmp_path / f"tone_{source_sr}_{channels}.wav"
    sf.write(path, data, source_sr, subtype="FLOAT")
    got = load_audio(path)
    assert got.source_sr == source_sr and got.source_channels == channels
    assert got.duration_s == pytest.approx(1.5, abs=1e-3)
    spec = np.abs(np.fft.rfft(got.y[2000:-2000]))
    peak_hz = np.argmax(spec) * SR / (got.y.size - 4000)
    assert peak_hz == pytest.approx(440.0, abs=2.0)
    assert np.abs(got.y).max() == pytest.approx(0.5, abs=0.02)


def test_stereo_is_the_mean_of_the_channels(tmp_path):
    left = np.full(SR, 0.6, dtype=np.float32)
    right = np.full(SR, -0.2, dtype=np.float32)
    path = tmp_path / "lr.wav"
    sf.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    assert np.allclose(load_audio(path).y, 0.2, atol=1e-6)


def test_unicode_path(tmp_path, reference):
    path = tmp_path / "Ñandú – 踊る 🎵 song.ogg"
    sf.write(path, reference.y[: SR * 2], SR, format="OGG", subtype="VORBIS")
    got = load_audio(path)
    assert got.path == str(path)
    assert got.duration_s == pytest.approx(2.0, abs=0.01)


def test_long_files_stream_in_blocks_without_loss(tmp_path):
    rng = np.random.default_rng(0)
    y = (0.1 * rng.normal(size=44_100 * 7)).astype(np.float32)
    path = tmp_path / "noise.flac"
    sf.write(path, y, 44_100, subtype="PCM_24")
    got = load_audio(path, sr=44_100)  # no resampling: exact up to 24-bit quantisation
    assert got.y.size == y.size
    assert np.abs(got.y - y).max() < 1e-6


def test_audio_from_array_resamples_and_mixes_down():
    y = np.zeros((48_000, 2), dtype=np.float32)
    a = audio_from_array(y, 48_000)
    assert a.sr == SR and a.source_channels == 2 and a.y.size == SR


# ------------------------------------------------------------------------------- bad input


def _error(path, **kw) -> M2DError:
    with pytest.raises(M2DError) as info:
        load_audio(path, **kw)
    return info.value


def test_missing_file(tmp_path):
    err = _error(tmp_path / "nope.wav")
    assert err.path == str(tmp_path / "nope.wav") and "no such" in err.reason


def test_directory(tmp_path):
    err = _error(tmp_path)
    assert err.path == str(tmp_path) and "folder" in err.reason


def test_zero_length_file(tmp_path):
    path = tmp_path / "empty.mp3"
    path.write_bytes(b"")
    err = _error(path)
    assert err.path == str(path) and "empty" in err.reason


def test_corrupt_bytes(fixtures_dir):
    path = fixtures_dir / "audio" / "corrupt.mp3"
    err = _error(path)
    assert err.path == str(path) and "damaged" in err.reason


def test_text_file_with_audio_extension(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("not audio at all\n" * 100)
    assert "damaged" in _error(path).reason


def test_truncated_wav_header(tmp_path, reference):
    good = tmp_path / "good.wav"
    sf.write(good, reference.y, SR)
    bad = tmp_path / "truncated.wav"
    bad.write_bytes(good.read_bytes()[:30])
    assert isinstance(_error(bad), M2DError)


def test_wav_with_no_samples(tmp_path):
    path = tmp_path / "nothing.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), SR)
    err = _error(path)
    assert "no audio samples" in err.reason


@pytest.mark.skipif(audio_mod._decode_with_audioread("x", sr=SR, max_duration_s=None) is not None,
                    reason="an FFmpeg backend is installed here")
@pytest.mark.parametrize("ext", [".m4a", ".aac", ".wma"])
def test_unsupported_container_names_the_missing_decoder(tmp_path, ext):
    path = tmp_path / f"song{ext}"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(4000))  # an MP4 box header + junk
    err = _error(path)
    assert err.path == str(path)
    if "aud" in sys.modules:  # bpy was imported in this process: Blender's FFmpeg tried and refused
        assert "cannot decode this file" in err.reason
    else:
        assert "no decoder" in err.reason and "FFmpeg" in err.reason


def test_header_longer_than_the_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "long.wav"
    with sf.SoundFile(path, "w", samplerate=8_000, channels=1, subtype="PCM_16") as f:
        block = np.zeros(8_000 * 60, dtype=np.int16)
        for _ in range(3):  # 3 minutes
            f.write(block)
    err = _error(path, max_duration_s=60.0)
    assert "3.0 min" in err.reason and "limit" in err.reason


def test_stream_longer_than_the_limit_stops_decoding():
    # a header can under-report (damaged VBR files): the cap also holds while streaming
    blocks = (np.zeros((44_100, 2), dtype=np.float32) for _ in range(10_000))
    with pytest.raises(M2DError, match="limit"):
        audio_mod._mono_resampled(blocks, "x.wav", source_sr=44_100, sr=SR,
                                  expected_frames=None, max_duration_s=30.0)


def test_aac_decodes_through_blenders_ffmpeg(tmp_path, fixtures_dir):
    """Inside Blender, ``aud`` (FFmpeg) reads AAC/M4A; checked with the bpy wheel."""
    pytest.importorskip("bpy")
    code = f"""
import bpy, aud, numpy as np
from blender_m2d.core.audio import load_audio
src = aud.Sound.file({str(fixtures_dir / 'audio' / 'music_10s.ogg')!r})
out = {str(tmp_path / 'song.aac')!r}
src.write(out, rate=44100, channels=aud.CHANNELS_STEREO, format=aud.FORMAT_S16,
          container=aud.CONTAINER_AAC, codec=aud.CODEC_AAC, bitrate=160000)
a = load_audio(out)
ref = load_audio({str(fixtures_dir / 'audio' / 'music_10s.ogg')!r})
n = min(a.y.size, ref.y.size) - 4096
best = max(np.corrcoef(a.y[lag:lag + n], ref.y[:n])[0, 1] for lag in range(0, 2048, 1))
print(a.source_sr, a.source_channels, round(a.duration_s, 2), round(best, 3))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    sr, ch, dur, corr = out.stdout.split()[-4:]
    assert int(sr) == 44_100 and int(ch) == 2
    assert float(dur) == pytest.approx(10.0, abs=0.1)
    assert float(corr) > 0.97
