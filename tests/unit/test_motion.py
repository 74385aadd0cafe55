from __future__ import annotations

import numpy as np

from blender_m2d.core.motion import detect_dance_beats, resample_positions


def _bouncing_arms(fps: float, period_s: float, duration_s: float) -> np.ndarray:
    """Two joints: one still, one moving back and forth at constant speed (a triangle wave).

    The moving joint stops and reverses sharply (v = 0, |a| large) at t = k * period_s / 2.
    """
    t = np.arange(int(duration_s * fps)) / fps
    phase = (t / period_s) % 1.0
    pos = np.zeros((t.size, 2, 3))
    pos[:, 1, 0] = 0.3 * (1.0 - 4.0 * np.abs(phase - 0.5))
    pos[:, 1, 2] = 1.5
    return pos


def test_detector_finds_the_turning_points_of_a_swing():
    beats = detect_dance_beats(_bouncing_arms(60.0, 1.0, 8.0), 60.0)
    expected = 0.5 * np.arange(17)
    expected = expected[(expected > 0.1) & (expected < 7.9)]
    assert len(beats) == len(expected)
    assert np.max(np.abs(beats - expected)) <= 1.5 / 30.0


def test_detector_on_still_motion_finds_nothing():
    assert detect_dance_beats(np.zeros((120, 3, 3)), 30.0).size == 0


def test_resample_keeps_duration():
    pos = np.random.default_rng(0).normal(size=(121, 2, 3))
    out = resample_positions(pos, 60.0, 30.0)
    assert out.shape == (61, 2, 3)
    np.testing.assert_allclose(out[::10], pos[::20])
