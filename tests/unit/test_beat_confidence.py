"""Beat confidence (issue: noise, a hum or a drone got an invented beat grid without a warning).

Real songs must score clearly above ``LOW_BEAT_CONFIDENCE``; generated white, pink and brown
noise, low-level noise, mains hums, a sustained chord and speech-like syllables clearly below.
The calibration test prints the table that docs/analysis.md shows. Then: the JSON field (old
files without it still load), the plan's song record (old plans still load), the CLI line and
the choreography's warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from choreo_synth import synth_library

from blender_m2d.core import analysis as an
from blender_m2d.core.analysis import (
    LOW_BEAT_CONFIDENCE,
    SongAnalysis,
    analyze_song,
    beat_confidence,
    beat_warning,
)
from blender_m2d.core.audio import Audio, audio_from_array, load_audio
from blender_m2d.core.errors import M2DError

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
SR = 22_050
MUSIC_MIN = 0.25
"""Every real song must score at least this (measured: 0.28 and up)."""
NOISE_MAX = 0.05
"""Noise, hums and the chord must score at most this (measured: 0)."""
SPEECH_MAX = 0.18
"""The speech-like syllables must score at most this (measured: 0-0.16 over 30 seeds, mean
0.045; the closest non-music signal to the threshold)."""


# ---------------------------------------------------------------------------- signals


def _colored(n: int, exponent: float, seed: int) -> np.ndarray:
    """Noise with a 1 / f**exponent power spectrum (0 white, 1 pink, 2 brown), peak 0.5."""
    spec = np.fft.rfft(np.random.default_rng(seed).normal(size=n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    y = np.fft.irfft(spec / f ** (exponent / 2), n)
    return 0.5 * y / np.abs(y).max()


def _syllables(seed: int, seconds: float = 30.0) -> np.ndarray:
    """Speech-like: voiced syllables of 0.1-0.3 s (harmonic tones with a pitch glide), words of
    1-4 syllables, pauses of 0.15-0.8 s between words; no steady pulse."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    y = np.zeros(n)
    pos = 0.3
    while pos < seconds - 1:
        for _ in range(rng.integers(1, 5)):
            d = rng.uniform(0.1, 0.3)
            i = int(pos * SR)
            m = min(int(d * SR), n - i)
            f0 = rng.uniform(100, 180) * np.linspace(1, rng.uniform(0.8, 1.2), m)
            ph = 2 * np.pi * np.cumsum(f0) / SR
            tone = sum(np.sin(k * ph) / k for k in range(1, 15)) + 0.05 * rng.normal(size=m)
            y[i:i + m] += tone * np.hanning(m) * rng.uniform(0.1, 0.3)
            pos += d + rng.uniform(0.0, 0.08)
        pos += rng.uniform(0.15, 0.8)
    return 0.5 * y / np.abs(y).max()


def non_music() -> dict[str, np.ndarray]:
    """30 s each (the low-level noise peaks at -60 dBFS, above the -70 dBFS silence check)."""
    n = 30 * SR
    t = np.arange(n) / SR
    chord = sum(0.15 * np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0, 523.25))
    return {
        "white noise": 0.1 * np.random.default_rng(1).normal(size=n),
        "pink noise": _colored(n, 1.0, 2),
        "brown noise": _colored(n, 2.0, 3),
        "low-level white noise, -60 dBFS": 1e-3 * np.random.default_rng(4).uniform(-1, 1, n),
        "50 Hz hum": 0.5 * np.sin(2 * np.pi * 50 * t),
        "60 Hz hum with harmonics": sum(0.3 / k * np.sin(2 * np.pi * 60 * k * t)
                                        for k in (1, 2, 3, 5)),
        "sustained C major chord (2 s fade-in)": chord * np.minimum(1.0, t / 2),
        **{f"speech-like syllables, seed {s}": _syllables(s) for s in (0, 1, 2)},
    }


def songs(shared: Path | None) -> list[Path]:
    found = sorted((REPO / "data" / "songs").glob("*.ogg"))
    found += sorted(p for p in (REPO / "data" / "fixtures" / "audio").glob("music_*")
                    if p.suffix in (".ogg", ".wav"))
    if shared is not None:
        found += sorted((shared / "music").glob("*.ogg"))
    return list({p.name: p for p in found}.values())   # the bundled songs are in both


def confidence_of(audio: Audio) -> tuple[float, float]:
    """(beat confidence, tempo) through the analysis' own beat step (no melody, no sections)."""
    mel, chroma = an.mel_and_chroma(audio.y)
    beats, onset_env, beat_env = an.song_beats_and_envelope(mel, chroma)
    return beat_confidence(beat_env, beats, onset_env), an.tempo_from_beats(beats)


# ------------------------------------------------------------------------ calibration


def test_songs_score_high_and_noise_hum_drone_and_speech_low(capsys):
    shared = SHARED_DATA if SHARED_DATA.is_dir() else None   # ../shared/data, when present
    rows = []
    for path in songs(shared):
        audio = load_audio(path)
        c, bpm = confidence_of(audio)
        rows.append(("song", path.name, audio.duration_s, bpm, c))
    for name, y in non_music().items():
        c, bpm = confidence_of(audio_from_array(y.astype(np.float32), SR, path=name))
        rows.append(("not music", name, 30.0, bpm, c))
    with capsys.disabled():
        print("\n| signal | kind | s | tracked bpm | beat confidence |\n|---|---|---|---|---|")
        for kind, name, dur, bpm, c in rows:
            print(f"| {name} | {kind} | {dur:.1f} | {bpm:.1f} | {c:.3f} |")
    assert len([r for r in rows if r[0] == "song"]) >= 4
    for kind, name, _, _, c in rows:
        assert 0.0 <= c <= 1.0, name
        if kind == "song":
            assert c >= MUSIC_MIN, f"{name}: {c:.3f}"
        else:
            assert c <= (SPEECH_MAX if "speech" in name else NOISE_MAX), f"{name}: {c:.3f}"
    assert NOISE_MAX < SPEECH_MAX < LOW_BEAT_CONFIDENCE < MUSIC_MIN


def test_steady_tones_have_no_onsets_and_score_exactly_zero():
    """A hum's envelope is tiny but periodic (it beats against the frame rate): the onset
    presence, not the clarity, has to reject it."""
    t = np.arange(20 * SR) / SR
    y = (0.5 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)
    mel, chroma = an.mel_and_chroma(y)
    beats, onset_env, beat_env = an.song_beats_and_envelope(mel, chroma)
    assert beats.size > 20                           # the tracker still invents a grid
    assert onset_env.std() < an.ONSET_FLOOR_DB
    assert beat_confidence(beat_env, beats, onset_env) == 0.0


def test_a_click_track_scores_one_and_degenerate_input_zero():
    period = 60 / 128
    y = np.zeros(int(21 * SR), dtype=np.float32)
    burst = (np.exp(-np.arange(2000) / 200.0)
             * np.random.default_rng(0).normal(size=2000)).astype(np.float32)
    for c in np.arange(0.5, 20, period):
        y[int(c * SR):int(c * SR) + 2000] += burst
    c, bpm = confidence_of(audio_from_array(y, SR, path="clicks"))
    assert c == 1.0 and bpm == pytest.approx(128, rel=0.01)
    env = np.abs(np.random.default_rng(0).normal(size=500))
    assert beat_confidence(env, np.array([1.0, 1.5]), env) == 0.0       # < 3 beats
    assert beat_confidence(np.zeros(500), np.arange(0.5, 10, 0.5), env) == 0.0  # flat envelope
    assert beat_confidence(env, np.arange(0.5, 10, 0.5), np.zeros(500)) == 0.0  # no onsets


def test_warning_text():
    assert beat_warning("/x/talk.wav", 0.123) == (
        "no clear beat found in talk.wav (confidence 0.12): the dance follows an estimated grid")
    assert beat_warning("/x/song.ogg", LOW_BEAT_CONFIDENCE) == ""
    assert beat_warning("/x/song.ogg", None) == ""


# ------------------------------------------------------------------------ analysis JSON


@pytest.fixture(scope="module")
def noise_analysis() -> SongAnalysis:
    y = (0.1 * np.random.default_rng(1).normal(size=20 * SR)).astype(np.float32)
    return analyze_song(audio_from_array(y, SR, path="noise.wav"))


def test_analysis_carries_the_confidence_and_writes_it_to_json(noise_analysis, tmp_path):
    music = analyze_song(REPO / "data" / "fixtures" / "audio" / "music_10s.ogg")
    assert music.beat_confidence >= MUSIC_MIN and not music.low_beat_confidence
    assert noise_analysis.beat_confidence < LOW_BEAT_CONFIDENCE
    assert noise_analysis.low_beat_confidence
    path = noise_analysis.save(tmp_path / "a.json")
    doc = json.loads(path.read_text())
    assert doc["format_version"] == 1
    assert doc["beat_confidence"] == noise_analysis.beat_confidence
    assert SongAnalysis.load(path).beat_confidence == noise_analysis.beat_confidence


def test_analysis_files_without_the_field_still_load(noise_analysis, tmp_path):
    doc = noise_analysis.to_json()
    del doc["beat_confidence"]
    (tmp_path / "old.json").write_text(json.dumps(doc))
    old = SongAnalysis.load(tmp_path / "old.json")
    assert old.beat_confidence is None and not old.low_beat_confidence
    assert "beat_confidence" not in old.to_json()
    assert len(old.phrases) == len(noise_analysis.phrases)


@pytest.mark.parametrize("bad", [1.5, -0.1, "high", True, [0.5]])
def test_a_malformed_confidence_is_refused(noise_analysis, tmp_path, bad):
    doc = noise_analysis.to_json()
    doc["beat_confidence"] = bad
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(M2DError, match=r"malformed song analysis.*beat_confidence"):
        SongAnalysis.load(tmp_path / "bad.json")


# ------------------------------------------------------------------- CLI and choreography


def test_cli_analyze_prints_the_confidence_and_flags_a_low_one(tmp_path, capsys):
    from blender_m2d.cli import main

    noise = tmp_path / "noise.wav"
    sf.write(noise, 0.1 * np.random.default_rng(1).normal(size=20 * SR), SR)
    assert main(["analyze", str(noise), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "beat confidence 0.00 (below 0.20: no clear beat found" in out
    assert main(["analyze", str(REPO / "data" / "fixtures" / "audio" / "music_10s.ogg"),
                 "--quiet"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "beat confidence" in x)
    assert float(line.split()[2]) >= MUSIC_MIN and "no clear beat" not in line


def test_choreography_warns_on_noise_records_the_confidence_and_still_dances(
        noise_analysis, caplog):
    from blender_m2d.core.choreography import choreograph
    from blender_m2d.core.editing import song_readouts
    from blender_m2d.core.plan import Plan

    y = (0.1 * np.random.default_rng(1).normal(size=20 * SR)).astype(np.float32)
    audio = audio_from_array(y, SR, path="/songs/noise.wav")
    lib = synth_library(6)
    with caplog.at_level(logging.WARNING, logger="blender_m2d.core.choreography"):
        ch = choreograph(audio, lib, analysis=noise_analysis)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"no clear beat found in noise.wav (confidence {noise_analysis.beat_confidence:.2f}): "
        "the dance follows an estimated grid"]
    plan = ch.plan
    assert len(plan.phrases) >= 2                      # a warning, not a refusal
    assert plan.song["beat_confidence"] == noise_analysis.beat_confidence
    assert song_readouts(plan)["beat_confidence"] == noise_analysis.beat_confidence
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))).song == plan.song
    # a plan written before the field existed loads, with the confidence unknown
    doc = plan.to_json()
    del doc["song"]["beat_confidence"]
    old = Plan.from_json(doc)
    assert "beat_confidence" not in old.song and song_readouts(old)["beat_confidence"] == -1.0
    # an analysis without a confidence (an old JSON file) warns about nothing
    caplog.clear()
    unknown = dataclasses.replace(noise_analysis, beat_confidence=None)
    with caplog.at_level(logging.WARNING, logger="blender_m2d.core.choreography"):
        ch = choreograph(audio, lib, analysis=unknown)
    assert not caplog.records and "beat_confidence" not in ch.plan.song
