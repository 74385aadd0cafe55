"""core.choreography seams: crossfades after the boundary beat, the seam (root height) prior of
the decoder; core.beatsync's speed-through candidates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from choreo_synth import SynthMotion, synth_library, synth_song

from blender_m2d.core import beatsync
from blender_m2d.core.baseline import style_transition
from blender_m2d.core.choreography import (
    ChoreographyOptions,
    SeamPrior,
    make_plan,
    seam_intervals,
)
from blender_m2d.core.decode import DecodeOptions
from blender_m2d.core.placement import accent_time, fit_warp
from blender_m2d.core.retargeting import leg_length


def _plan(lib, probs, beats, intervals, transition=None, **kw):
    pb = [beats[(beats >= s - 1e-3) & (beats <= e + 1e-3)] for s, e in intervals]
    if transition is None:
        transition = style_transition([p.style for p in lib.phrases])
    return make_plan(song={"path": "song.wav", "duration_s": intervals[-1][1]},
                     intervals_s=intervals, phrase_beats_s=pb, beats_s=beats, library=lib,
                     probs=probs, transition=transition,
                     scorer_info={"kind": "test", "path": None, "providers": []},
                     options=ChoreographyOptions(beat_sync=False, **kw))


def test_seam_intervals_move_each_boundary_half_a_crossfade_past_its_beat():
    beats = np.arange(0.0, 12.01, 0.6)
    intervals = [(0.0, 4.8), (4.8, 9.6), (9.6, 12.0)]
    pb = [beats[(beats >= s - 1e-3) & (beats <= e + 1e-3)] for s, e in intervals]
    out = seam_intervals(intervals, pb, 0.3)
    assert np.allclose(out, [(0.0, 4.95), (4.95, 9.75), (9.75, 12.0)])
    # a beat shorter than the crossfade: at most half of it
    fast = np.arange(0.0, 4.01, 0.2)
    out = seam_intervals([(0.0, 2.0), (2.0, 4.0)], [fast[:11], fast[10:]], 0.3)
    assert np.allclose(out, [(0.0, 2.1), (2.1, 4.0)])


@pytest.mark.parametrize("after", [True, False])
def test_crossfades_start_on_the_boundary_beat(after):
    lib = synth_library(6)
    beats, intervals = synth_song(16.0, bpm=100)
    probs = np.random.default_rng(0).dirichlet(np.ones(len(lib.ids)), size=len(intervals))
    plan = _plan(lib, probs, beats, intervals, seams_after_beat=after)
    xf = plan.crossfade_frames
    for ph in plan.phrases[1:]:
        beat_frame = round(plan.frame_start + ph.music_start_s * plan.fps)
        assert ph.frame_start == (beat_frame if after else beat_frame - xf // 2)
        assert ph.music_start_s in beats          # the music intervals stay the analysis'


def _crouching_library():
    """synth_library(4) with phrase 0 going down to a crouch (hips 40 cm lower) from 30 % of
    its duration on: any cut after that leaves the dancer low."""
    lib = synth_library(4)
    pid = lib.ids[0]
    m = lib.motions[pid]
    n = m.positions.shape[0]
    drop = np.clip((np.arange(n) - 0.3 * n) / (0.1 * n), 0.0, 1.0) * 0.4
    pos = m.positions.copy()
    pos[:, :, 2] -= drop[:, None]
    lib.motions[pid] = SynthMotion(m.fps, pos, m.rotations)
    return lib


def test_seam_prior_penalises_following_a_crouch_with_an_upright_start():
    lib = _crouching_library()
    beats, intervals = synth_song(24.0, bpm=120)
    pb = [beats[(beats >= s - 1e-3) & (beats <= e + 1e-3)] for s, e in intervals]
    prior = SeamPrior(lib, intervals, pb)
    rows = np.arange(len(lib.ids))
    f = prior(1, rows)
    assert f.shape == (4, 4)
    assert np.all(f[0, 1:] < 1e-3)                 # crouched end -> upright starts
    assert np.all(f[1:, 1:] > 0.5)                 # upright -> upright
    leg = leg_length(lib.motions[lib.ids[0]].positions)
    assert prior.end[0, 0] < prior.start[1] - 0.3 / leg


@pytest.mark.parametrize("method", ["greedy", "viterbi"])
def test_decoder_with_the_seam_prior_avoids_the_crouch_except_at_the_end(method):
    lib = _crouching_library()
    beats, intervals = synth_song(24.0, bpm=120)
    n = len(intervals)
    probs = np.full((n, 4), 0.1)
    probs[:, 0] = 0.7                              # the scorer loves the crouching phrase
    opts = {"decode": DecodeOptions(method=method, recent=0), "transition": np.ones((4, 4))}
    plain = _plan(lib, probs, beats, intervals, seam_prior=False, **opts)
    assert plain.phrase_ids.count(lib.ids[0]) >= n // 2 - 1
    seam = _plan(lib, probs, beats, intervals, **opts)
    ids = seam.phrase_ids
    assert all(a != lib.ids[0] for a in ids[:-1]), ids
    assert ids[-1] == lib.ids[0]                   # nothing follows the last phrase
    assert seam.decoding["seam_prior"] is True
    # candidates: Eq. 6 on the scorer's probabilities (no look-ahead factor) with M_t; the
    # crouching phrase starts upright, so after an upright phrase it still ranks first
    assert seam.phrases[1].candidates[0].phrase_id == lib.ids[0]
    assert seam.phrases[1].candidates[0].prob == pytest.approx(0.7)


def test_speed_through_runs_faster_over_a_missed_stop_and_keeps_the_beats():
    music = np.arange(0.0, 4.81, 0.6)
    dance = np.arange(0.0, 4.81, 0.6)
    warp = fit_warp(dance, 5.0, music, accent=1.0)
    miss = np.array([0.6 * 3 + 0.3])               # a stop in the middle of beat interval 3
    fast = beatsync._speed_through(warp, miss, music, 2.0, (0.5, 2.0), half_s=0.1)
    assert fast is not None
    assert np.allclose(fast(music), warp(music), atol=1e-9)       # every beat stays put
    t = np.linspace(0.0, 4.8, 2001)
    assert np.all(np.diff(fast(t)) >= -1e-12)                      # monotone

    def plain_rate(w, s):
        p = dataclasses.replace(w, accent=0.0, accent_beats_s=None)
        u = accent_time(np.array([s - 0.02, s + 0.02]), w.accent_beats_s, w.accent)
        return float(np.diff(p(u))[0] / np.diff(u)[0])

    assert plain_rate(fast, miss[0]) == pytest.approx(2.0 * plain_rate(warp, miss[0]), rel=0.05)
    assert np.all(fast.rates() <= 2.0 + 1e-9) and np.all(fast.rates()[fast.rates() > 0] >= 0.5)
    # other beat intervals are untouched
    other = np.linspace(0.0, 1.79, 50)
    assert np.allclose(fast(other), warp(other))
    # a rate limit that leaves no room: nothing to offer
    assert beatsync._speed_through(warp, miss, music, 2.0, (0.95, 2.0), half_s=0.1) is None
