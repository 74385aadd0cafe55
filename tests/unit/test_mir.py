"""The numpy ports in core.mir reproduce librosa 0.11 (which the analysis no longer imports)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

librosa = pytest.importorskip("librosa")

from blender_m2d.core import mir  # noqa: E402
from blender_m2d.core.analysis import mel_and_chroma, mel_power_spectrogram  # noqa: E402
from blender_m2d.core.audio import load_audio  # noqa: E402
from blender_m2d.core.timebase import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE  # noqa: E402


@pytest.fixture(scope="module", params=["kevin_macleod_vibe_ace.ogg", "sectoid_metal_madness.ogg"])
def song(request, fixtures_dir):
    audio = load_audio(fixtures_dir.parent / "songs" / request.param)
    mel = mel_power_spectrogram(audio.y).T  # (mel, T)
    db = librosa.power_to_db(mel)
    env = librosa.onset.onset_strength(S=db, sr=SAMPLE_RATE)
    return audio, mel, db, env


def test_mel_spectrogram_matches_librosa(song):
    audio, mel, _, _ = song
    ref = librosa.feature.melspectrogram(y=audio.y, sr=SAMPLE_RATE, n_fft=N_FFT,
                                         hop_length=HOP_LENGTH, n_mels=N_MELS)
    assert ref.shape == mel.shape
    assert np.abs(librosa.power_to_db(ref) - librosa.power_to_db(mel)).max() < 1e-3


def test_filterbank_and_db_match_librosa(song):
    _, mel, db, _ = song
    fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS)
    assert np.abs(mir.mel_filterbank(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS) - fb).max() < 1e-7
    assert np.array_equal(mir.power_to_db(mel), db)
    assert np.array_equal(mir.mfcc(db, n_mfcc=20), librosa.feature.mfcc(S=db, n_mfcc=20))


def test_chromagram_matches_librosa_chroma_stft(song):
    audio = song[0]
    fb = librosa.filters.chroma(sr=SAMPLE_RATE, n_fft=N_FFT, tuning=0.0)
    assert np.abs(mir.chroma_filterbank(sr=SAMPLE_RATE, n_fft=N_FFT) - fb).max() < 1e-7
    mel, chroma = mel_and_chroma(audio.y[:30 * SAMPLE_RATE])
    assert np.array_equal(mel, mel_power_spectrogram(audio.y[:30 * SAMPLE_RATE]))
    ref = librosa.feature.chroma_stft(y=audio.y[:30 * SAMPLE_RATE], sr=SAMPLE_RATE, n_fft=N_FFT,
                                      hop_length=HOP_LENGTH, tuning=0.0)
    assert ref.shape == chroma.T.shape
    assert np.abs(ref - chroma.T).max() < 1e-4


def test_onset_envelope_tempo_beats_and_onsets_are_identical(song):
    _, _, db, env = song
    assert np.array_equal(mir.onset_strength(db), env)
    assert mir.estimate_tempo(env, sr=SAMPLE_RATE, hop_length=HOP_LENGTH) == pytest.approx(
        float(librosa.feature.tempo(onset_envelope=env, sr=SAMPLE_RATE)[0]), rel=1e-12)
    for trim in (True, False):
        _, ref = librosa.beat.beat_track(onset_envelope=env, sr=SAMPLE_RATE, trim=trim)
        _, got = mir.beat_track(env, sr=SAMPLE_RATE, hop_length=HOP_LENGTH, trim=trim)
        assert np.array_equal(got, ref)
    ref_on = librosa.onset.onset_detect(onset_envelope=env, sr=SAMPLE_RATE)
    assert np.array_equal(mir.onset_detect(env, sr=SAMPLE_RATE, hop_length=HOP_LENGTH), ref_on)


def test_structure_helpers_match_librosa(song):
    import scipy.ndimage

    _, _, db, env = song
    _, beats = librosa.beat.beat_track(onset_envelope=env, sr=SAMPLE_RATE)
    bounds = librosa.util.fix_frames(beats, x_min=0, x_max=db.shape[1])
    sync = librosa.util.sync(db, bounds, aggregate=np.median)
    assert np.array_equal(mir.sync_median(db, bounds), sync)
    assert np.allclose(mir.sync_mean(db, bounds), librosa.util.sync(db, bounds), atol=1e-3)
    ref = librosa.segment.recurrence_matrix(sync, width=3, mode="affinity", sym=True)
    got = mir.recurrence_affinity(sync, width=3)
    # identical links; values equal up to float rounding of the distances
    assert np.array_equal(got > 0, ref > 0)
    assert np.abs(got - ref).max() < 1e-6
    lag = librosa.segment.timelag_filter(scipy.ndimage.median_filter)(ref, size=(1, 7))
    assert np.array_equal(mir.timelag_median(ref, width=7), lag)


def test_peak_pick_matches_librosa_on_noise():
    x = np.random.default_rng(3).random(2000)
    kw = dict(pre_max=3, post_max=2, pre_avg=5, post_avg=4, delta=0.1, wait=4)
    assert np.array_equal(mir.peak_pick(x, **kw), librosa.util.peak_pick(x, **kw))


def test_analysis_never_imports_numba_librosa_or_sklearn(fixtures_dir):
    code = ("import sys\n"
            "from blender_m2d.core.analysis import analyze_song\n"
            "from blender_m2d.core.features import song_features\n"
            "from blender_m2d.core.audio import load_audio\n"
            f"a = load_audio({str(fixtures_dir / 'audio' / 'music_10s.ogg')!r})\n"
            "song_features(a, analyze_song(a))\n"
            "print(sorted(m for m in ('numba', 'librosa', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]"
