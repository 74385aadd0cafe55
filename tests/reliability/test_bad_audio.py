"""Bad songs: every one is refused with a message naming the file, or decoded correctly; the
song file itself is never modified."""

from __future__ import annotations

import shutil
import time
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from hazards import FIXTURES, click_song, unprivileged, world_dir

from blender_m2d.core.analysis import analyze_song
from blender_m2d.core.audio import load_audio

CORRUPT = FIXTURES / "audio" / "corrupt.mp3"
MUSIC_10S = FIXTURES / "audio" / "music_10s.ogg"


def _one_hour_wav(path):
    """60 minutes of 8 kHz 8-bit mono (29 MB) with a valid header."""
    block = (0.2 * np.sin(2 * np.pi * 220 * np.arange(8000 * 60) / 8000)).astype(np.float32)
    with sf.SoundFile(str(path), "w", 8000, 1, subtype="PCM_U8") as f:
        for _ in range(60):
            f.write(block)
    return path


def test_corrupt_file_is_refused(tmp_path, refused):
    song = shutil.copy(CORRUPT, tmp_path / "corrupt.mp3")
    refused(lambda: analyze_song(song), r"corrupt\.mp3: cannot decode this file: it is damaged "
            r"or not in a supported audio format", tmp_path)


def test_text_file_named_wav_is_refused(tmp_path, refused):
    song = tmp_path / "notes.wav"
    song.write_text("these are my notes, not a song\n" * 50)
    refused(lambda: load_audio(song), r"notes\.wav: cannot decode this file", tmp_path)


def test_wav_truncated_inside_its_header_is_refused(tmp_path, refused):
    full = click_song(tmp_path / "full.wav", 3.0)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:30])
    refused(lambda: load_audio(cut), r"cut\.wav: cannot decode this file: it is damaged .*"
            r"No 'data' chunk", tmp_path)


def test_wav_truncated_mid_data_decodes_what_is_there(tmp_path, note):
    full = click_song(tmp_path / "full.wav", 4.0, sr=44100)
    cut = tmp_path / "cut.wav"
    data = full.read_bytes()
    cut.write_bytes(data[: 44 + (len(data) - 44) // 2])    # header says 4 s, 2 s present
    before = cut.read_bytes()
    a = load_audio(cut)
    assert a.duration_s == pytest.approx(2.0, abs=0.01)
    assert np.isfinite(a.y).all() and np.abs(a.y).max() <= 1.0
    assert np.corrcoef(a.y[: int(1.9 * 22050)][::10],
                       load_audio(full).y[: int(1.9 * 22050)][::10])[0, 1] > 0.999
    assert cut.read_bytes() == before
    note(f"no error: decodes the {a.duration_s:.1f} s present (header says 4 s)")


def test_ogg_truncated_mid_stream_decodes_what_is_there(tmp_path, note):
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(MUSIC_10S.read_bytes()[: MUSIC_10S.stat().st_size // 2])
    a = load_audio(cut)
    assert 3.0 < a.duration_s < 7.0 and np.isfinite(a.y).all()
    note(f"no error: decodes the {a.duration_s:.1f} s present")


def test_silent_song_is_refused(tmp_path, refused):
    song = tmp_path / "silence.wav"
    sf.write(str(song), np.zeros(44100 * 20, np.float32), 44100)
    refused(lambda: analyze_song(song), r"silence\.wav: the audio is silent \(digital silence\); "
            r"pick a song with sound in it", tmp_path)


def test_half_second_song_is_refused(tmp_path, refused):
    """0.5 s (shorter than the beat tracker's window) used to raise IndexError in mir.beat_track."""
    song = tmp_path / "blip.wav"
    sf.write(str(song), np.random.default_rng(0).normal(0, 0.1, 22050).astype(np.float32), 44100)
    refused(lambda: analyze_song(song), r"blip\.wav: found only \d beats in 0\.5 s of audio; a "
            r"phrase needs 6 beats", tmp_path)


@pytest.mark.parametrize("seconds", [0.05, 0.3, 1.0, 1.9])
def test_very_short_clicks_are_refused_not_crashed(tmp_path, refused, seconds):
    song = click_song(tmp_path / "short.wav", seconds, bpm=240)
    refused(lambda: analyze_song(song), r"short\.wav: (found only \d+ beats|the audio is silent)",
            tmp_path)


def test_one_hour_song_is_refused_from_its_header(tmp_path, refused):
    song = _one_hour_wav(tmp_path / "mix 1h.wav")
    t0 = time.perf_counter()
    refused(lambda: analyze_song(song), r"mix 1h\.wav: the song is 60\.0 min long; the limit is "
            r"20(\.0)? min, so trim it first", tmp_path)
    assert time.perf_counter() - t0 < 1.0


def test_one_hour_song_is_refused_by_choreograph_without_decoding_it(tmp_path, bundled_library):
    from blender_m2d.core.choreography import choreograph
    from blender_m2d.core.errors import M2DError

    song = _one_hour_wav(tmp_path / "mix.wav")
    tracemalloc.start()
    try:
        with pytest.raises(M2DError, match=r"60\.0 min long"):
            choreograph(song, bundled_library)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64e6, f"peak {peak / 1e6:.0f} MB while refusing a song that is too long"


def test_eight_channels_are_mixed_to_mono(tmp_path, note):
    song = click_song(tmp_path / "surround.wav", 12.0, channels=8)
    a = load_audio(song)
    assert (a.source_channels, a.sr) == (8, 22050)
    # channel c is the mono mix times linspace(1, 0.6, 8)[c]: the mono result is their mean
    mono_ref = load_audio(click_song(tmp_path / "mono.wav", 12.0)).y * np.linspace(1, 0.6, 8).mean()
    assert a.y.shape == mono_ref.shape
    assert np.max(np.abs(a.y - mono_ref)) < 1e-3
    r = analyze_song(a)
    assert len(r.phrases) >= 1 and abs(r.tempo_bpm - 120) < 2
    note(f"no error: 8 channels mixed to mono; {len(r.phrases)} phrases, {r.tempo_bpm:.0f} bpm")


def test_192_khz_is_resampled(tmp_path, note):
    song = click_song(tmp_path / "hires.flac", 12.0, sr=192000, subtype="PCM_24")
    a = load_audio(song)
    assert (a.source_sr, a.sr) == (192000, 22050)
    assert a.duration_s == pytest.approx(12.0, abs=1e-3)
    r = analyze_song(a)
    assert abs(r.tempo_bpm - 120) < 2 and len(r.phrases) >= 1
    note(f"no error: resampled 192 kHz -> 22.05 kHz; {r.tempo_bpm:.0f} bpm")


def test_float_wav_with_nan_and_inf_samples_loads_finite(tmp_path, note):
    y = np.sin(np.arange(44100 * 2) / 10).astype(np.float32)
    y[::1000] = np.nan
    y[5::1000] = np.inf
    y[7::1000] = 1e30
    song = tmp_path / "garbage.wav"
    sf.write(str(song), y, 44100, subtype="FLOAT")
    a = load_audio(song)
    assert np.isfinite(a.y).all() and np.abs(a.y).max() <= 4.0
    note("no error: NaN/inf samples become 0, huge values are clipped")


def test_unicode_and_space_path(tmp_path, note):
    folder = tmp_path / "Tänze 日本 ♪" / "my song (final) [v2]"
    folder.mkdir(parents=True)
    song = click_song(folder / "Ça va — ダンス.wav", 12.0)
    r = analyze_song(song)
    assert r.path == str(song) and len(r.phrases) >= 1
    note(f"no error: analysed ({len(r.phrases)} phrases)")


def test_unicode_path_is_kept_in_the_error(tmp_path, refused):
    folder = tmp_path / "Tänze 日本 ♪"
    folder.mkdir()
    refused(lambda: load_audio(folder / "fehlt ü.wav"), r"Tänze 日本 ♪/fehlt ü\.wav: no such "
            r"audio file$", tmp_path)


def test_a_folder_is_refused(tmp_path, refused):
    (tmp_path / "album.wav").mkdir()
    refused(lambda: analyze_song(tmp_path / "album.wav"), r"album\.wav: is a folder, not an "
            r"audio file$", tmp_path)


def test_empty_file_is_refused(tmp_path, refused):
    (tmp_path / "empty.ogg").write_bytes(b"")
    refused(lambda: analyze_song(tmp_path / "empty.ogg"), r"empty\.ogg: the file is empty "
            r"\(0 bytes\)$", tmp_path)


def test_missing_file_is_refused(tmp_path, refused):
    refused(lambda: analyze_song(tmp_path / "gone.mp3"), r"gone\.mp3: no such audio file$",
            tmp_path)


def test_file_without_read_permission_is_refused(refused):
    import soxr  # noqa: F401 - imported before the uid switch (no cache writes as nobody)

    def load_as_nobody(path):
        with unprivileged():
            return load_audio(path)

    with world_dir() as d:
        song = click_song(d / "private.wav", 3.0)
        song.chmod(0o000)
        err = refused(lambda: load_as_nobody(song), r"private\.wav: cannot read the file "
                      r"\(permission denied\)$", d)
        assert err.path == str(song)
