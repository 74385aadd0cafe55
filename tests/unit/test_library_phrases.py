"""Phrase cutting, style features and style similarity (bpy-free), and the bundled library."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from blender_m2d.core.library import load_library
from blender_m2d.core.motion import detect_dance_beats
from blender_m2d.core.phrasing import (
    FEATURE_NAMES,
    cut_phrases,
    phrase_features,
    standardize_features,
    style_similarity,
    tempo_bpm,
)
from blender_m2d.core.skeleton import CANON_JOINTS

BUNDLED = Path(__file__).resolve().parents[2] / "blender_m2d" / "assets" / "library"


def _swinging_body(fps: float, duration_s: float, freq_hz: float) -> np.ndarray:
    """A standing figure swinging its arms sideways (sinusoid): stops at every reversal."""
    t = np.arange(int(duration_s * fps)) / fps
    pos = np.zeros((t.size, len(CANON_JOINTS), 3))
    pos[:, :, 2] = np.linspace(0.1, 1.6, len(CANON_JOINTS))
    pos[:, :, 0] = np.linspace(-0.2, 0.2, len(CANON_JOINTS))
    swing = 0.25 * np.sin(2 * np.pi * freq_hz * t)
    for j in (6, 7, 8, 10, 11, 12):                   # arms
        pos[:, j, 0] += swing
    return pos


def test_per_second_derivatives_find_the_stops_of_a_slow_smooth_swing():
    """The reason the library calls the detector with derivatives='per_second'."""
    pos = _swinging_body(30.0, 10.0, 1.0)             # reversals every 0.5 s (120 per minute)
    per_frame = detect_dance_beats(pos, 30.0)
    per_second = detect_dance_beats(pos, 30.0, derivatives="per_second")
    expected = 0.25 + 0.5 * np.arange(20)
    assert per_frame.size == 0                        # the spec's reading misses all of them
    assert per_second.size == expected.size
    assert np.abs(per_second - expected).max() <= 1.5 / 30.0


def test_detector_rejects_an_unknown_derivative_mode():
    with pytest.raises(ValueError):
        detect_dance_beats(np.zeros((30, 2, 3)), 30.0, derivatives="per_hour")


def test_cuts_are_consecutive_phrases_of_six_to_sixteen_beats_at_beats():
    fps = 30.0
    pos = _swinging_body(fps, 40.0, 1.0)
    beats = np.arange(0.5, 39.5, 0.5)
    cuts, got = cut_phrases(pos, fps, beats_s=beats)
    assert got is not None and len(cuts) >= 4
    frames = set(np.round(beats * fps).astype(int))
    for a, b in itertools.pairwise(cuts):
        assert a.end == b.start
    for c in cuts:
        assert c.start in frames and c.end in frames
        n = c.beats_s.size - 1
        assert 6 <= n <= 16
        assert c.beats_s[0] == 0 and c.beats_s[-1] == pytest.approx((c.end - c.start) / fps)
    assert cuts[0].start <= round(beats[3] * fps)
    assert cuts[-1].end >= round(beats[-4] * fps)
    assert tempo_bpm(cuts[0].beats_s) == pytest.approx(120.0)


def test_cuts_prefer_low_energy_beats():
    fps = 30.0
    pos = _swinging_body(fps, 20.0, 1.0)
    beats = np.arange(0.5, 19.6, 0.5)
    still = np.round(np.array([4.5, 8.5, 12.5]) * fps).astype(int)
    for f in still:      # freeze the arms around three beats: the best places to cut
        pos[f - 8:f + 9, :, 0] = pos[f, :, 0]
    cuts, _ = cut_phrases(pos, fps, beats_s=beats)
    bounds = {c.start for c in cuts} | {c.end for c in cuts}
    assert len(bounds & set(still)) >= 2


def test_too_few_beats_give_no_phrase():
    pos = _swinging_body(30.0, 4.0, 1.0)
    cuts, beats = cut_phrases(pos, 30.0, beats_s=np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0]))
    assert cuts == [] and beats.size == 6


def test_features_are_finite_and_size_invariant():
    pos = _swinging_body(30.0, 6.0, 1.0)
    beats = np.arange(0.0, 6.0, 0.5)
    f1 = phrase_features(pos, 30.0, beats)
    f2 = phrase_features(pos * 1.7, 30.0, beats)
    assert f1.shape == (len(FEATURE_NAMES),) and np.all(np.isfinite(f1))
    np.testing.assert_allclose(f1, f2, atol=1e-9)


def test_style_similarity_is_a_symmetric_kernel_in_unit_range():
    v = standardize_features(np.random.default_rng(0).normal(size=(50, 6)))
    s = style_similarity(v)
    assert s.shape == (50, 50) and s.dtype == np.float32
    assert np.all((s >= 0) & (s <= 1))
    np.testing.assert_allclose(np.diag(s), 1.0)
    np.testing.assert_allclose(s, s.T, atol=1e-6)
    assert style_similarity(np.zeros((0, 3))).shape == (0, 0)


def test_bundled_library_loads_and_matches_its_documented_facts():
    lib = load_library(BUNDLED)
    lib.verify()
    s = lib.summary()
    assert s["phrases"] >= 50 and s["minutes"] >= 6.0
    assert set(s["styles"]) == {"salsa", "modern"}
    assert s["size_bytes"] < 6_000_000
    assert all(p.n_beats >= 6 for p in lib.phrases)
    sources = (BUNDLED / "SOURCES.md").read_text()
    assert "mocap.cs.cmu.edu" in sources and "NSF EIA-0196217" in sources
    assert lib.hash in sources and (BUNDLED / "LICENSE-Apache-2.0.txt").is_file()


def test_style_similarity_separates_salsa_from_modern():
    lib = load_library(BUNDLED)
    sim = lib.style_similarity()
    style = np.array([p.style for p in lib.phrases])
    same = style[:, None] == style[None]
    off = ~np.eye(len(style), dtype=bool)
    assert sim[same & off].mean() > sim[~same].mean() + 0.1
    nn = np.where(off, sim, -1).argmax(axis=1)
    assert (style[nn] == style).mean() >= 0.9
    for name in ("salsa", "modern"):             # each style's nearest neighbours agree
        assert (style[nn] == style)[style == name].mean() >= 0.8
    # rank test (AUC): a same-style pair outranks a cross-style pair
    iu = np.triu_indices(len(style), 1)
    pos, neg = sim[iu][same[iu]], sim[iu][~same[iu]]
    auc = (pos[:, None] > neg[None]).mean()
    assert auc > 0.8
