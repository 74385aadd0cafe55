"""Song analysis: the phrase rule, real songs end to end, beat accuracy, JSON, bad input, CLI."""

from __future__ import annotations

import csv
import itertools
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from blender_m2d.core import analysis as an
from blender_m2d.core.analysis import (
    END_REASONS,
    MAX_BEATS,
    MIN_BEATS,
    Phrase,
    Section,
    SongAnalysis,
    analyze_song,
    beat_f_measure,
    segment_phrases,
)
from blender_m2d.core.audio import audio_from_array, load_audio
from blender_m2d.core.errors import M2DError

REPO = Path(__file__).resolve().parents[2]
BUNDLED = sorted((REPO / "data" / "songs").glob("*.ogg"))
SR = 22_050

_cache: dict[str, SongAnalysis] = {}


def analysed(path: Path) -> SongAnalysis:
    """Analyse each song once per test session."""
    key = str(path)
    if key not in _cache:
        _cache[key] = analyze_song(path)
    return _cache[key]


def shared_songs(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "music").glob("*.ogg"))


def reference_beats(song: Path) -> np.ndarray:
    with open(song.with_name(song.stem + "_beats.csv"), newline="") as fh:
        return np.asarray([float(r["time_s"]) for r in csv.DictReader(fh)])


# ------------------------------------------------------------------------ the phrase rule


def _grid(n: int, period: float = 0.5, start: float = 0.25) -> np.ndarray:
    return start + period * np.arange(n)


def test_no_break_points_cuts_every_16_beats_and_merges_the_tail():
    beats = _grid(41)  # 40 beat intervals = 16 + 16 + 8
    ph = segment_phrases(beats, 21.0)
    assert [p.n_beats for p in ph] == [16, 16, 8]
    assert [p.end_reason for p in ph] == ["max_beats", "max_beats", "end"]
    beats = _grid(37)  # 36 = 16 + 16 + 4: the 4-beat tail joins the last phrase
    ph = segment_phrases(beats, 19.0)
    assert [p.n_beats for p in ph] == [16, 20]
    assert ph[-1].end_reason == "end"


def test_a_phrase_takes_at_least_6_beats_then_ends_at_the_next_break():
    beats = _grid(33)
    rests = np.array([[0.9, 1.2], [beats[9] - 0.3, beats[9] + 0.02]])  # ends near beats 2, 9
    sections = (Section(0.0, beats[20], 0), Section(beats[20], 20.0, 1))
    ph = segment_phrases(beats, 20.0, sections=sections, rests_s=rests)
    assert [(p.n_beats, p.end_reason) for p in ph[:2]] == [(9, "rest"), (11, "section")]
    assert ph[0].start_s == 0.0 and ph[0].end_s == beats[9]
    assert ph[1].end_s == beats[20]


def test_section_beats_rest_beats_long_tone_at_the_same_beat():
    beats = _grid(20)
    sections = (Section(0.0, beats[7], 0), Section(beats[7], 10.0, 1))
    breaks = an.break_points(beats, sections=sections, rests_s=np.array([[3.0, beats[7]]]),
                             long_tones_s=np.array([[2.0, beats[7]], [4.0, beats[12]]]))
    assert breaks == {7: "section", 12: "long_tone"}


def test_too_few_beats_is_a_user_error():
    with pytest.raises(M2DError, match="6 beats"):
        segment_phrases(_grid(6), 3.0)


@pytest.mark.parametrize("n", [7, 8, 13, 22, 23, 37, 100])
def test_phrases_tile_and_respect_min_and_max(n):
    beats = _grid(n)
    rng = np.random.default_rng(n)
    rests = np.sort(rng.uniform(0, beats[-1], size=(n // 4, 2)), axis=1)
    ph = segment_phrases(beats, beats[-1] + 0.3, rests_s=rests)
    _check_phrases(ph, beats, beats[-1] + 0.3)


def _check_phrases(phrases: tuple[Phrase, ...], beats: np.ndarray, duration_s: float) -> None:
    assert phrases[0].start_s == 0.0
    assert phrases[-1].end_s == pytest.approx(duration_s)
    for a, b in itertools.pairwise(phrases):
        assert a.end_s == b.start_s  # no gap, no overlap
    for i, p in enumerate(phrases):
        assert p.index == i and p.end_s > p.start_s
        assert p.end_reason in END_REASONS
        assert p.n_beats >= MIN_BEATS
        limit = MAX_BEATS + MIN_BEATS - 1 if i == len(phrases) - 1 else MAX_BEATS
        assert p.n_beats <= limit
        if i < len(phrases) - 1:
            assert p.end_reason != "end"
            assert np.min(np.abs(beats - p.end_s)) < 1e-9  # inner boundaries sit on beats
    assert phrases[-1].end_reason == "end"
    assert sum(p.n_beats for p in phrases) == beats.size - 1


# ------------------------------------------------------------------------- real songs


def _check_song(result: SongAnalysis) -> None:
    _check_phrases(result.phrases, result.beats_s, result.duration_s)
    assert np.all(np.diff(result.beats_s) > 0)
    assert result.beats_s[0] >= 0 and result.beats_s[-1] <= result.duration_s
    assert 40 < result.tempo_bpm < 240
    # downbeats: every 4th beat from one phase
    idx = np.searchsorted(result.beats_s, result.downbeats_s)
    assert np.array_equal(result.beats_s[idx], result.downbeats_s)
    assert len(set(np.diff(idx).tolist())) <= 1
    # sections tile the song and start on beats
    secs = result.sections
    assert secs[0].start_s == 0.0 and secs[-1].end_s == pytest.approx(result.duration_s)
    assert all(a.end_s == b.start_s for a, b in itertools.pairwise(secs))
    for s in secs[1:]:
        assert np.min(np.abs(result.beats_s - s.start_s)) < 1e-9
    for i in range(len(result.phrases)):
        pb = result.phrase_beats(i)
        assert pb.size == result.phrases[i].n_beats + 1
    assert result.rests_s.shape[1] == 2 and result.long_tones_s.shape[1] == 2
    assert result.melody_hz.shape == result.melody_times_s.shape
    assert 0.0 < np.mean(result.melody_hz > 0) < 1.0


@pytest.mark.parametrize("song", BUNDLED, ids=lambda p: p.stem)
def test_bundled_songs_give_valid_phrases(song):
    result = analysed(song)
    _check_song(result)
    print(f"\n{song.name}: {result.tempo_bpm:.1f} bpm, {len(result.phrases)} phrases, "
          f"{len(result.sections)} sections, {result.timings_s['total']:.2f} s")


def test_shared_songs_give_valid_phrases(shared_data):
    songs = shared_songs(shared_data)
    assert len(songs) == 9
    print()
    for song in songs:
        result = analysed(song)
        _check_song(result)
        reasons = {r: sum(p.end_reason == r for p in result.phrases) for r in END_REASONS}
        print(f"{song.stem:34s} {result.duration_s:6.1f} s {result.tempo_bpm:6.1f} bpm "
              f"{len(result.phrases):3d} phrases, mean {np.mean([p.duration_s for p in result.phrases]):.1f} s "  # noqa: E501
              f"{reasons}")


def test_beats_match_the_rock_songs_ground_truth(shared_data, fixtures_dir, capsys):
    """Beat F-measure (+-70 ms) against the tempo map of the four sectoid rock songs.

    ``F`` is the strict score of the beats; ``F half`` scores the points halfway between them
    (the off-beat eighths). ``tracker`` is librosa's tracker alone, ``shipped`` adds the
    whole-song phase choice (:func:`analysis.beat_phase`; ``z``: its evidence for the phase it
    kept). Asserted: every tempo within 1 % of the ground truth, every song's strict F >= 0.9
    and the mean >= 0.95 (measured 1.000 / 0.996 / 0.992 / 0.942, mean 0.982; the tracker alone
    0.626; see docs/analysis.md). The 10 s fixture (the intro of war of freedom) is printed but
    not asserted: its kick and harmony do not favour the true beat and it stays on the off-beat.
    """
    songs = [s for s in shared_songs(shared_data) if s.with_name(s.stem + "_beats.csv").exists()]
    assert len(songs) == 4
    rows = []
    for song in [*songs, fixtures_dir / "audio" / "music_10s.ogg"]:
        result = analysed(song)
        ref = reference_beats(song)
        mel = result.mel_power
        low_env = an.low_band_onset_strength(mel)
        tracked = an.track_beats(an.beat_envelope(mel, an.onset_strength(mel), low_env=low_env))
        phase = an.beat_phase(tracked, low_env)
        ref_bpm = 60.0 / float(np.median(np.diff(ref)))
        rows.append((song.stem.removeprefix("sectoid_"), result.tempo_bpm, ref_bpm,
                     *_f_and_half(tracked, ref), *_f_and_half(result.beats_s, ref), phase.z_low))
    mean_f = float(np.mean([r[5] for r in rows[:4]]))
    with capsys.disabled():  # always shown, also without -s
        print("\n\nbeat F-measure (+-70 ms) vs ground truth     tracker         shipped")
        print("song                      tempo  truth      F  F half      F  F half  z low")
        for name, bpm, ref_bpm, f0, h0, f, h, z in rows:
            print(f"{name:24s} {bpm:6.1f} {ref_bpm:6.1f}  {f0:5.3f}  {h0:5.3f}   {f:5.3f}  {h:5.3f}"
                  f"  {z:+5.1f}")
        print(f"mean strict F (4 songs) = {mean_f:.3f}, tracker alone "
              f"{np.mean([r[3] for r in rows[:4]]):.3f}")
    for name, bpm, ref_bpm, *_ in rows[:4]:
        assert bpm == pytest.approx(ref_bpm, rel=0.01), name
    for name, *_, f, _, _ in rows[:4]:
        assert f >= 0.9, name
    assert mean_f >= 0.95


def _f_and_half(est: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    return beat_f_measure(est, ref), beat_f_measure(0.5 * (est[1:] + est[:-1]), ref)


def _kick_hat_chord_song(bpm: float = 120.0, dur_s: float = 24.0) -> tuple[np.ndarray, np.ndarray]:
    """Kick on every beat, a louder hi-hat on every off-beat, a chord change every 2 beats."""
    rng = np.random.default_rng(0)
    period = 60.0 / bpm
    y = np.zeros(int(dur_s * SR))
    t = np.arange(int(0.3 * SR)) / SR
    kick = 0.5 * np.sin(2 * np.pi * 55 * t) * np.exp(-t / 0.08)
    hat = 0.8 * np.diff(rng.normal(size=int(0.1 * SR) + 1)) * np.exp(-t[:int(0.1 * SR)] / 0.02)
    chords = [(261.6, 329.6, 392.0), (349.2, 440.0, 523.3), (392.0, 493.9, 587.3),
              (440.0, 523.3, 659.3)]
    beats = np.arange(0.5, dur_s - 1, period)
    for i, b in enumerate(beats):
        s = int(b * SR)
        y[s:s + kick.size] += kick
        h = int((b + period / 2) * SR)
        y[h:h + hat.size] += hat
        if i % 2 == 0:
            tt = np.arange(int(2 * period * SR)) / SR
            y[s:s + tt.size] += sum(0.08 * np.sin(2 * np.pi * f * tt) for f in chords[i // 2 % 4])
    return y.astype(np.float32), beats


def test_beat_phase_moves_off_beat_and_mixed_tracks_onto_the_kicks_and_chord_changes():
    y, beats = _kick_hat_chord_song()
    mel, chroma = an.mel_and_chroma(y)
    low_env = an.low_band_onset_strength(mel)
    off = beats[:-1] + 0.25  # the hi-hats: what a tracker locked to the off-beat returns
    mixed = np.sort(np.concatenate([beats[beats < 10], off[off > 10]]))  # hops at 10 s
    for tracked in (off, mixed):
        for ch in (chroma, None):  # both cues, and the low band alone
            got = an.beat_phase(tracked, low_env, ch)
            assert got.chosen == (0 if tracked is mixed else 1)
            assert beat_f_measure(got.beats_s, beats, tolerance_s=0.03) > 0.97
            assert np.all(np.diff(got.beats_s) > 0.4)
    on = an.beat_phase(beats, low_env, chroma)
    assert on.moved == 0 and np.array_equal(on.beats_s, beats)
    assert on.z_low > 5 and on.z_chroma > 2


def test_beat_phase_leaves_unsteady_or_short_beats_alone():
    y, beats = _kick_hat_chord_song()
    mel, chroma = an.mel_and_chroma(y)
    low_env = an.low_band_onset_strength(mel)
    jittered = np.sort(beats + np.random.default_rng(1).uniform(-0.12, 0.12, beats.size))
    got = an.beat_phase(jittered + 0.25, low_env, chroma)
    assert got.chosen == -1 and got.steadiness < an.PHASE_MIN_STEADINESS
    assert np.array_equal(got.beats_s, jittered + 0.25)
    short = beats[:10] + 0.25
    assert np.array_equal(an.beat_phase(short, low_env, chroma).beats_s, short)


def test_beat_f_measure_is_a_proper_one_to_one_score():
    ref = np.arange(0, 10, 0.5)
    assert beat_f_measure(ref + 0.06, ref) == 1.0
    assert beat_f_measure(ref + 0.08, ref) == 0.0
    assert beat_f_measure(np.sort(np.concatenate([ref, ref + 0.01])), ref) == pytest.approx(
        2 / 3)
    assert beat_f_measure(ref[::2], ref) == pytest.approx(2 / 3, abs=0.02)


def test_click_track_beats_land_on_the_clicks():
    period = 60 / 128
    clicks = np.arange(0.5, 20, period)
    y = np.zeros(int(21 * SR), dtype=np.float32)
    burst = (np.exp(-np.arange(2000) / 200.0)
             * np.random.default_rng(0).normal(size=2000)).astype(np.float32)
    for c in clicks:
        i = int(c * SR)
        y[i:i + 2000] += burst
    result = analyze_song(audio_from_array(y, SR, path="clicks"))
    assert result.tempo_bpm == pytest.approx(128, rel=0.01)
    assert beat_f_measure(result.beats_s, clicks, tolerance_s=0.03) > 0.95


# ----------------------------------------------------------------------------- JSON


def test_json_round_trip_is_versioned_and_lossless(tmp_path):
    result = analysed(BUNDLED[0])
    path = result.save(tmp_path / "a.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == "m2d-song-analysis" and doc["format_version"] == 1
    assert set(doc["phrases"][0]) == {"index", "start_s", "end_s", "n_beats", "end_reason"}
    back = SongAnalysis.load(path)
    for a, b in [*zip(back.phrases, result.phrases), *zip(back.sections, result.sections)]:
        assert type(a) is type(b)
        for name in a.__dataclass_fields__:
            assert getattr(a, name) == pytest.approx(getattr(b, name), abs=1e-6)
    assert len(back.phrases) == len(result.phrases)
    assert len(back.sections) == len(result.sections)
    assert np.allclose(back.beats_s, result.beats_s, atol=1e-6)
    assert np.allclose(back.melody_hz, result.melody_hz, atol=0.01)
    assert back.mel_power is None
    for i in range(len(result.phrases)):
        a, b = back.phrase_beats(i), result.phrase_beats(i)
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-6)


def test_json_from_the_future_or_malformed_is_refused(tmp_path):
    doc = analysed(BUNDLED[0]).to_json()
    doc["format_version"] = 99
    (tmp_path / "new.json").write_text(json.dumps(doc))
    with pytest.raises(M2DError, match="newer"):
        SongAnalysis.load(tmp_path / "new.json")
    doc["format_version"] = 1
    del doc["phrases"]
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(M2DError, match="malformed"):
        SongAnalysis.load(tmp_path / "bad.json")


# ----------------------------------------------------------------- progress and cancel


def test_progress_is_reported_in_order(fixtures_dir):
    seen = []
    analyze_song(fixtures_dir / "audio" / "music_10s.ogg",
                 progress=lambda f, msg: seen.append((f, msg)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert len(seen) >= 7


def test_cancel_between_stages(fixtures_dir):
    cancel = threading.Event()

    def progress(fraction, message):
        if fraction > 0.2:
            cancel.set()

    with pytest.raises(M2DError, match="cancelled"):
        analyze_song(fixtures_dir / "audio" / "music_10s.ogg", progress=progress, cancel=cancel)


# -------------------------------------------------------------------------- bad input


def _write(path: Path, y: np.ndarray, sr: int = SR) -> Path:
    sf.write(path, y, sr, subtype="PCM_16")
    return path


@pytest.mark.parametrize("case", ["missing", "directory", "corrupt", "empty", "container",
                                  "silence", "one_second"])
def test_bad_input_gives_one_clear_error(case, tmp_path, fixtures_dir):
    path = {
        "missing": tmp_path / "missing.ogg",
        "directory": tmp_path,
        "corrupt": fixtures_dir / "audio" / "corrupt.mp3",
        "empty": tmp_path / "empty.wav",
        "container": tmp_path / "song.m4a",
        "silence": fixtures_dir / "audio" / "silence_2s.wav",
        "one_second": tmp_path / "clip.wav",
    }[case]
    if case == "empty":
        path.write_bytes(b"")
    if case == "container":
        path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(2000))
    if case == "one_second":
        _write(path, load_audio(fixtures_dir / "audio" / "music_10s.ogg").y[:SR])
    with pytest.raises(M2DError) as info:
        analyze_song(path)
    err = info.value
    assert err.path == str(path), str(err)
    assert str(err).startswith(str(path) + ": ")
    assert err.reason and "Traceback" not in err.reason


def test_one_hour_file_is_refused_quickly_in_bounded_memory(tmp_path):
    import time
    import tracemalloc

    path = tmp_path / "hour.wav"
    with sf.SoundFile(path, "w", samplerate=8_000, channels=1, subtype="PCM_16") as f:
        minute = (1000 * np.sin(np.arange(8_000 * 60) * 0.05)).astype(np.int16)
        for _ in range(60):
            f.write(minute)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(M2DError, match=r"60\.0 min long; the limit is 20\.0 min") as info:
            analyze_song(path)
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert info.value.path == str(path)
    assert time.perf_counter() - t0 < 2.0
    assert peak_mb < 20  # refused from the header: nothing decoded


# --------------------------------------------------------------------------------- CLI


def test_cli_prints_a_phrase_table_and_writes_json(tmp_path):
    song = REPO / "data" / "songs" / "kevin_macleod_vibe_ace.ogg"
    out = tmp_path / "vibe.json"
    run = subprocess.run([sys.executable, "-m", "blender_m2d", "analyze", str(song), "--json",
                          str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert "ends at" in run.stdout and "bpm" in run.stdout
    doc = SongAnalysis.load(out)
    rows = [line for line in run.stdout.splitlines() if re.match(r"^\s+\d+\s+\d+\.\d\d\s", line)]
    assert len(rows) == len(doc.phrases) > 5
    assert rows[-1].split()[-1] == "end"


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    run = subprocess.run([sys.executable, "-m", "blender_m2d", "analyze",
                          str(tmp_path / "nope.mp3")], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and "no such audio file" in run.stderr
    assert "Traceback" not in run.stderr
