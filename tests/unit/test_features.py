"""Per-phrase model inputs: shapes, ranges, the spec's scaling rules, one shared code path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blender_m2d.core import features as feat
from blender_m2d.core.analysis import SongAnalysis, analyze_song, mel_power_spectrogram
from blender_m2d.core.audio import audio_from_array, load_audio

REPO = Path(__file__).resolve().parents[2]
SR = 22_050


@pytest.fixture(scope="module")
def song():
    audio = load_audio(REPO / "data" / "songs" / "kevin_macleod_vibe_ace.ogg")
    return audio, analyze_song(audio)


def test_song_features_have_the_contract_shapes_and_ranges(song):
    audio, analysis = song
    f = feat.song_features(audio, analysis)
    p = len(analysis.phrases)
    assert f.mel.shape == (p, 128, 128) and f.mel.dtype == np.float32
    assert f.melody.shape == (p, 128) and f.melody.dtype == np.float32
    assert f.rhythm.shape == (p, 128) and f.rhythm.dtype == np.float32
    assert 0.0 <= f.mel.min() and f.mel.max() <= 1.0
    assert np.all(f.mel.reshape(p, -1).max(axis=1) > 0.97)  # ref = phrase max (resampled)
    assert 0.0 <= f.melody.min() and f.melody.max() <= 1.0
    assert set(np.unique(f.rhythm)) <= {0.0, 1.0}
    assert 0.05 < f.rhythm.mean() < 0.6
    assert 0.1 < (f.melody > 0).mean() < 1.0


def test_mel_image_is_the_phrase_frames_in_db_re_max_resized_along_time(song):
    audio, analysis = song
    ph = analysis.phrases[3]
    img = feat.mel_image(analysis.mel_power, ph.start_s, ph.end_s)
    fps = SR / 512
    frames = analysis.mel_power[int(np.ceil(ph.start_s * fps)):int(np.ceil(ph.end_s * fps))]
    assert frames.shape[0] == pytest.approx(ph.duration_s * fps, abs=1)
    db = 10 * np.log10(np.maximum(frames, 1e-10) / frames.max())
    ref = feat.resize_time(((np.clip(db, -80, 0) + 80) / 80).astype(np.float32), 128)
    assert np.abs(img - ref).max() < 1e-5
    # the song-level mel is the phrase audio's own mel away from the edges
    a = int(np.ceil(ph.start_s * fps))
    own = mel_power_spectrogram(audio.y[a * 512 - 4096:a * 512 + 4096 * 3])[8:-8]
    assert np.allclose(own, analysis.mel_power[a:a + own.shape[0]], rtol=1e-4, atol=1e-6)


def test_resize_keeps_end_points_and_interpolates_linearly():
    x = np.arange(301, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    y = feat.resize_time(x, 128)
    assert y.shape == (128, 3)
    assert y[0, 0] == 0 and y[-1, 0] == 300
    assert np.allclose(np.diff(y[:, 0]), 300 / 127, atol=1e-4)
    assert np.array_equal(feat.resize_time(x[:1], 128), np.zeros((128, 3), np.float32))


def test_melody_curve_scales_midi_21_to_108_and_keeps_unvoiced_at_zero():
    times = np.arange(0, 2, 0.0625)
    f0 = np.where(times < 1.0, 440.0, 0.0)  # A4 = MIDI 69, then unvoiced
    curve = feat.melody_curve(times, f0, 0.0, 2.0)
    assert np.allclose(curve[:60], (69 - 21) / (108 - 21), atol=1e-6)
    assert np.all(curve[68:] == 0.0)


def test_rhythm_curve_marks_each_event_in_its_bin():
    # bins of 4 s / 128 = 31.25 ms; the interval is half-open, so 4.0 is outside
    curve = feat.rhythm_curve(np.array([0.0, 0.05, 1.0, 3.99, 4.0]), 0.0, 4.0)
    assert np.flatnonzero(curve).tolist() == [0, 1, 32, 127]
    assert set(np.unique(curve)) == {0.0, 1.0}


def test_features_after_json_round_trip_are_identical(song, tmp_path):
    audio, analysis = song
    back = SongAnalysis.load(analysis.save(tmp_path / "a.json"))
    a = feat.song_features(audio, analysis)
    b = feat.song_features(audio, back)  # mel recomputed: not in JSON
    assert np.array_equal(a.mel, b.mel)
    assert np.array_equal(a.rhythm, b.rhythm)
    assert np.abs(a.melody - b.melody).max() < 1e-4  # f0 stored to 0.01 Hz


def test_without_an_analysis_the_same_pipeline_is_run(song):
    audio, analysis = song
    iv = np.array([[p.start_s, p.end_s] for p in analysis.phrases[:5]])
    a = feat.phrase_features(audio, iv, analysis=analysis)
    b = feat.phrase_features(audio, iv)
    assert np.array_equal(a.mel, b.mel)
    assert np.array_equal(a.melody, b.melody)
    assert np.array_equal(a.rhythm, b.rhythm)


def test_arbitrary_training_intervals_are_clipped_and_validated(song):
    audio, analysis = song
    f = feat.phrase_features(audio, [[-1.0, 2.0], [60.0, 99.0], [10.0, 10.4]], analysis=analysis)
    assert f.mel.shape == (3, 128, 128)
    with pytest.raises(ValueError, match="empty"):
        feat.phrase_features(audio, [[5.0, 5.0]], analysis=analysis)


def test_click_track_rhythm_hits_the_clicks():
    period = 0.5
    clicks = np.arange(0.25, 12, period)
    y = np.zeros(12 * SR, dtype=np.float32)
    for c in clicks:
        i = int(c * SR)
        y[i:i + 600] += np.exp(-np.arange(600) / 80.0).astype(np.float32) * 0.8
    audio = audio_from_array(y, SR)
    analysis = analyze_song(audio)
    f = feat.phrase_features(audio, [[2.0, 6.0]], analysis=analysis)
    hit_bins = np.flatnonzero(f.rhythm[0])
    expected = ((clicks[(clicks >= 2.0) & (clicks < 6.0)] - 2.0) / 4.0 * 128).astype(int)
    for e in expected:
        assert np.min(np.abs(hit_bins - e)) <= 2
