from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
from choreo_synth import synth_library, synth_song

from blender_m2d.core.baseline import style_transition
from blender_m2d.core.choreography import ChoreographyOptions, make_plan
from blender_m2d.core.decode import DecodeOptions
from blender_m2d.core.errors import M2DError
from blender_m2d.core.plan import PLAN_VERSION, Plan


@pytest.fixture(scope="module")
def plan():
    lib = synth_library(6)
    beats, intervals = synth_song(20.0, bpm=120)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(len(lib.ids)), size=len(intervals))
    pb = [beats[(beats >= s - 1e-3) & (beats <= e + 1e-3)] for s, e in intervals]
    return make_plan(song={"path": "song.wav", "duration_s": intervals[-1][1]},
                     intervals_s=intervals, phrase_beats_s=pb, beats_s=beats, library=lib,
                     probs=probs, transition=style_transition([p.style for p in lib.phrases]),
                     scorer_info={"kind": "test", "path": None, "providers": []},
                     options=ChoreographyOptions(decode=DecodeOptions(top_k=3),
                                                 locks={1: "synth_05"}))


def test_plan_covers_the_song_without_gaps(plan):
    assert plan.phrases[0].music_start_s == 0.0
    for a, b in itertools.pairwise(plan.phrases):
        assert a.music_end_s == b.music_start_s
        assert a.frame_end - b.frame_start == plan.crossfade_frames
    assert plan.phrases[-1].music_end_s == pytest.approx(plan.song["duration_s"])
    assert plan.phrases[-1].frame_end == plan.frame_end


def test_plan_keeps_locks_and_ranked_candidates(plan):
    assert plan.phrases[1].phrase_id == "synth_05" and plan.phrases[1].locked
    for ph in plan.phrases:
        scores = [c.score for c in ph.candidates]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert ph.warp["anchors_s"]


def test_plan_json_round_trips(plan, tmp_path):
    p = dataclasses.replace(plan, metrics={"beats": {"song": {"beat_hit_rate": 0.9}}},
                            timings_s={"analysis": 1.5})
    path = p.save(tmp_path / "PLAN.json")
    back = Plan.load(path)
    assert back.to_json() == p.to_json()
    doc = json.loads(path.read_text())
    assert doc["format"] == "m2d.plan" and doc["format_version"] == PLAN_VERSION


def test_plan_from_the_future_or_broken_is_refused(plan, tmp_path):
    doc = plan.to_json()
    doc["format_version"] = PLAN_VERSION + 1
    (tmp_path / "new.json").write_text(json.dumps(doc))
    with pytest.raises(M2DError, match="newer"):
        Plan.load(tmp_path / "new.json")
    doc = plan.to_json()
    del doc["phrases"]
    (tmp_path / "broken.json").write_text(json.dumps(doc))
    with pytest.raises(M2DError, match="invalid plan"):
        Plan.load(tmp_path / "broken.json")
    with pytest.raises(M2DError, match="no such"):
        Plan.load(tmp_path / "missing.json")
