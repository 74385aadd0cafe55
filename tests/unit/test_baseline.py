from __future__ import annotations

import numpy as np
import pytest

from blender_m2d.core import baseline as B


def _dance(periods, durations, speeds, styles=None):
    n = len(periods)
    beats = [np.arange(0, d + 1e-9, p) for p, d in zip(periods, durations)]
    return B.dance_descriptors_from([f"d{k}" for k in range(n)], beats, durations,
                                    [60 / p for p in periods], speeds,
                                    styles or ["salsa"] * n)


def _music(periods, durations, intensity):
    n = len(periods)
    return B.MusicDescriptors(np.asarray(periods, float), np.asarray(durations, float),
                              np.zeros(n), np.zeros(n), np.asarray(intensity, float))


def test_rows_are_probabilities_and_deterministic():
    dd = _dance([0.4, 0.5, 0.6, 0.8], [4, 5, 6, 8], [0.5, 1.0, 1.5, 2.0])
    md = _music([0.45, 0.6], [4.0, 6.0], [0.2, 0.9])
    p1, p2 = B.score(md, dd), B.score(md, dd)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0)
    np.testing.assert_array_equal(p1, p2)


def test_matching_tempo_wins():
    dd = _dance([0.3, 0.5, 0.9], [6, 6, 6], [1, 1, 1])
    md = _music([0.5 / B.PREFERRED_RATE], [6.0 / B.PREFERRED_RATE], [0.5])
    assert int(np.argmax(B.score(md, dd)[0])) == 1


def test_matching_energy_wins():
    dd = _dance([0.5, 0.5, 0.5], [5, 5, 5], [0.2, 1.0, 3.0])
    md = _music([0.5, 0.5], [5.0, 5.0], [0.05, 0.95])
    p = B.score(md, dd)
    assert int(np.argmax(p[0])) == 0 and int(np.argmax(p[1])) == 2


def test_a_phrase_too_short_for_the_music_phrase_is_penalised_more_than_one_too_long():
    dd = _dance([0.5, 0.5], [2.0, 16.0], [1, 1])
    rate = 1.0
    short = B.duration_cost(dd.duration_s, np.array([8.0]), np.array([[rate, rate]]))
    assert short[0, 0] > short[0, 1] > 0


def test_music_descriptors_see_busier_and_louder_phrases():
    sr = 22050
    y = np.zeros(sr * 8, np.float32)
    rng = np.random.default_rng(0)
    for k, t in enumerate(np.arange(0, 8, 0.125)):           # 2nd half: clicks every 0.125 s
        if t < 4 and k % 4:
            continue
        i = int(t * sr)
        amp = 0.2 if t < 4 else 0.8
        y[i:i + 300] += amp * rng.normal(size=300).astype(np.float32)
    beats = np.arange(0, 8.01, 0.5)
    md = B.music_descriptors(y, sr, [(0.0, 4.0), (4.0, 8.0)], beats)
    assert md.onset_density[1] > md.onset_density[0]
    assert md.loudness_db[1] > md.loudness_db[0]
    assert md.intensity[1] > md.intensity[0]
    assert md.beat_period_s == pytest.approx([0.5, 0.5])


def test_style_transition_is_the_papers_m0():
    m = B.style_transition(["salsa", "salsa", "modern"])
    assert m[0, 1] == 1.0 and m[0, 2] == 0.01 and m.min() >= 0.01 and m.max() <= 1.0
