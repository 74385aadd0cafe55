"""core.editing: re-decoding with locks from stored scores, re-ranking, readouts, storage."""

from __future__ import annotations

import numpy as np
import pytest

from blender_m2d.core import editing
from blender_m2d.core.choreography import ChoreographyOptions, make_plan
from blender_m2d.core.decode import DecodeOptions
from blender_m2d.core.errors import M2DError
from blender_m2d.core.library import load_library, write_synthetic_library


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    lib = load_library(write_synthetic_library(tmp_path_factory.mktemp("lib") / "lib", 8,
                                               n_frames=90))
    rng = np.random.default_rng(0)
    n = 6
    probs = rng.dirichlet(np.ones(len(lib.ids)), size=n)
    trans = rng.uniform(0.05, 1.0, size=(len(lib.ids), len(lib.ids)))
    beats = np.arange(0.0, 2.0 * n + 1e-9, 0.5)
    intervals = [(2.0 * i, 2.0 * i + 2.0) for i in range(n)]
    plan = make_plan(song={"path": "song.wav", "duration_s": 2.0 * n}, intervals_s=intervals,
                     phrase_beats_s=[editing.phrase_beats(beats, s, e) for s, e in intervals],
                     beats_s=beats, library=lib, probs=probs, transition=trans,
                     scorer_info={"kind": "baseline"}, options=ChoreographyOptions(fps=30.0))
    return lib, probs, trans, plan


def test_probabilities_survive_the_string_storage():
    a = np.random.default_rng(1).random((7, 13))
    b = editing.decode_array(editing.encode_array(a))
    assert b.shape == (7, 13) and np.allclose(a, b, atol=1e-7)
    with pytest.raises(M2DError):
        editing.decode_array("garbage")


def test_redecode_without_locks_reproduces_the_plan(setup):
    lib, probs, trans, plan = setup
    again = editing.redecode(plan, lib, probs, trans, locks={}, decode_options=DecodeOptions())
    assert again.phrase_ids == plan.phrase_ids
    assert [(p.frame_start, p.frame_end) for p in again.phrases] == [
        (p.frame_start, p.frame_end) for p in plan.phrases]


def test_redecode_keeps_locked_phrases_and_continues_from_them(setup):
    lib, probs, trans, plan = setup
    alt = plan.phrases[2].candidates[1].phrase_id
    new = editing.redecode(plan, lib, probs, trans, locks={2: alt},
                           decode_options=DecodeOptions())
    assert new.phrases[2].phrase_id == alt and new.phrases[2].locked
    assert new.phrase_ids[:2] == plan.phrase_ids[:2]          # greedy: left part unchanged
    assert not any(p.locked for i, p in enumerate(new.phrases) if i != 2)
    expected_next = editing.rescored_candidates(
        probs[3], trans, lib.index_of(alt), allowed=None, top_k=5, ids=lib.ids)
    assert new.phrases[3].candidates == expected_next
    assert editing.changed_phrases(plan, new)[0] == 2


def test_rerank_after_a_swap_matches_the_decoder(setup):
    lib, probs, trans, plan = setup
    alt = plan.phrases[1].candidates[1].phrase_id
    import dataclasses
    swapped = plan.with_phrase(1, dataclasses.replace(plan.phrases[1], phrase_id=alt))
    re = editing.rerank_after(swapped, 1, lib, probs, trans)
    full = editing.redecode(plan, lib, probs, trans, locks={1: alt},
                            decode_options=DecodeOptions())
    assert re.phrases[2].candidates == full.phrases[2].candidates
    assert re.phrases[1] == swapped.phrases[1]


def test_choices_are_ranked_with_stable_numbers(setup):
    _, _, _, plan = setup
    items = editing.ranked_choices(plan, 0)
    assert items[0][0] == plan.phrases[0].candidates[0].phrase_id
    assert items[0][1].startswith("1. ")
    assert all(it[3] == editing.stable_number(it[0]) for it in items)


def test_readouts_before_measurement_are_marked_unknown(setup):
    _, _, _, plan = setup
    assert all(r["beat_hit"] == -1.0 for r in editing.phrase_readouts(plan))
    assert editing.song_readouts(plan)["beat_hit"] == -1.0


def test_readouts_split_measured_beats_by_phrase(setup):
    import dataclasses
    _, _, _, plan = setup
    metrics = {"beats": {"song": {"beat_hit_rate": 0.5, "beat_coverage": 0.8},
                         "dance_beats_s": [0.5, 1.02, 1.3, 2.5, 3.1]},
               "seams": {"max_root_jump_cm": 2.0,
                         "per_seam": [{"index": 1, "root_jump_cm": 2.0}]}}
    m = dataclasses.replace(plan, metrics=metrics)
    ro = editing.phrase_readouts(m)
    assert ro[0]["n_dance"] == 3 and ro[0]["beat_hit"] == pytest.approx(2 / 3)
    assert ro[1]["n_dance"] == 2 and ro[1]["seam_jump_cm"] == 2.0
    assert editing.song_readouts(m) == {"beat_hit": 0.5, "beat_coverage": 0.8,
                                        "max_seam_jump_cm": 2.0, "beat_confidence": -1.0}
    m = dataclasses.replace(m, song={**m.song, "beat_confidence": 0.42})
    assert editing.song_readouts(m)["beat_confidence"] == 0.42


def test_locked_phrase_keeps_its_timing_when_neighbours_change(setup):
    lib, probs, trans, plan = setup
    keep = plan.phrases[3]
    new = editing.redecode(plan, lib, probs[::-1].copy(), trans, locks={3: keep.phrase_id},
                           decode_options=DecodeOptions(method="viterbi"))
    assert new.phrases[3].phrase_id == keep.phrase_id
    assert new.phrases[3].warp == keep.warp
    assert (new.phrases[3].frame_start, new.phrases[3].frame_end) == (keep.frame_start,
                                                                      keep.frame_end)


@pytest.mark.parametrize("fps", [24.0, 25.0, 30.0, 60.0])
@pytest.mark.parametrize("derivatives", ["per_frame", "per_second"])
def test_dance_beat_track_equals_full_detection(fps, derivatives):
    """Updating the cached detector on windows of changed frames gives exactly the beats (and
    per-sample speeds) of detecting on the whole updated song again."""
    from blender_m2d.core.editing import DanceBeatTrack
    from blender_m2d.core.motion import detect_dance_beats

    rng = np.random.default_rng(int(fps))
    n = 1500
    t = np.arange(n) / fps
    pos = np.cumsum(rng.normal(size=(n, 22, 3)) * 0.01, axis=0)
    pos += 0.2 * np.sin(7.0 * t)[:, None, None]
    pos[:, 5] = np.nan                                   # an unmapped joint
    track = DanceBeatTrack(pos, fps, derivatives=derivatives)
    clean = np.nan_to_num(pos)
    np.testing.assert_array_equal(track.beats(),
                                  detect_dance_beats(clean, fps, derivatives=derivatives))
    for lo, hi in ((0, 120), (600, 851), (n - 90, n), (7, 8), (300, 301)):
        pos = pos.copy()
        pos[lo:hi] += rng.normal(size=(hi - lo, 22, 3)) * 0.05
        track.update(pos, lo, hi)
        full = DanceBeatTrack(pos, fps, derivatives=derivatives)
        np.testing.assert_array_equal(track.speed, full.speed)
        np.testing.assert_array_equal(track.accel, full.accel)
        np.testing.assert_array_equal(
            track.beats(), detect_dance_beats(np.nan_to_num(pos), fps, derivatives=derivatives))
