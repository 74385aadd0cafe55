from __future__ import annotations

import itertools

import numpy as np
import pytest
from choreo_synth import synth_library, synth_song

from blender_m2d.core import metrics as M
from blender_m2d.core import placement as P
from blender_m2d.core.baseline import style_transition
from blender_m2d.core.choreography import ChoreographyOptions, make_plan
from blender_m2d.core.skeleton import FEET


# --------------------------------------------------------------------------- warp
def test_warp_puts_dance_beats_on_music_beats_within_the_rate_limits():
    dance = np.array([0.0, 0.55, 1.1, 1.62, 2.2, 2.75, 3.3, 3.9, 4.4])
    music = 10.0 + np.arange(9) * 0.5
    w = P.fit_warp(dance, 4.4, music)
    assert w.n_anchored >= 8
    # every anchored dance beat lands exactly on a music beat
    for t, tau in w.anchors[:-1]:
        if np.min(np.abs(dance - tau)) < 1e-9:
            assert np.min(np.abs(music - t)) < 1e-9
    rates = w.rates()
    assert np.all(rates >= P.RATE_RANGE[0] - 1e-9) and np.all(rates <= P.RATE_RANGE[1] + 1e-9)
    t = np.linspace(9.5, 14.5, 500)
    assert np.all(np.diff(w(t)) >= -1e-12)            # monotone
    assert w(np.array([music[0]]))[0] == 0.0          # phrase start on the music phrase start


def test_warp_holds_the_last_pose_when_the_dance_runs_out():
    w = P.fit_warp(np.array([0.0, 0.5, 1.0]), 1.0, np.arange(0, 8.01, 0.5))
    s = w.summary()
    assert s["hold_s"] > 0
    assert w(np.array([8.0]))[0] == pytest.approx(1.0)
    assert s["rate_min"] >= P.RATE_RANGE[0] - 1e-9


def test_warp_cuts_a_dance_that_is_too_long():
    w = P.fit_warp(np.arange(0, 20.01, 0.5), 20.0, np.arange(0, 4.01, 0.5))
    assert w.summary()["dance_used_s"] < 20.0 * 0.5
    assert w.summary()["hold_s"] == 0.0


def test_warp_summary_round_trips():
    w = P.fit_warp(np.array([0.0, 0.4, 0.9, 1.5]), 1.5, np.array([2.0, 2.5, 3.0, 3.5]))
    w2 = P.Warp.from_summary(w.summary(), 1.5)
    t = np.linspace(1.5, 4.0, 50)
    np.testing.assert_allclose(w(t), w2(t), atol=1e-4)


# --------------------------------------------------------------------------- frames
def test_consecutive_strips_overlap_by_exactly_the_crossfade():
    xf = P.crossfade_frames(30.0)
    assert xf == 10 and xf % 2 == 0
    frames = P.phrase_frames([(0, 3.1), (3.1, 7.45), (7.45, 12.0)], fps=30.0, xf_frames=xf)
    assert frames[0][0] == 1
    for (_a0, b0), (a1, _b1) in itertools.pairwise(frames):
        assert b0 - a1 == xf


def test_seam_zones_do_not_overlap_and_contain_the_crossfades():
    frames = P.phrase_frames([(0, 3), (3, 6), (6, 7.2), (7.2, 12)], fps=30.0, xf_frames=10)
    zones = P.seam_zones(frames, fps=30.0, release_s=1.0)
    for z0, f0, f1, z1 in zones:
        assert z0 <= f0 < f1 <= z1
    for (_, _, _, z1), (z0, _, _, _) in itertools.pairwise(zones):
        assert z1 <= z0


# --------------------------------------------------------------------------- quaternions / IK
def test_quaternion_tracks_are_made_sign_continuous():
    rng = np.random.default_rng(0)
    q = P.qnormalize(rng.normal(size=(50, 3, 4)))
    q[1:] = P.nlerp(q[:-1], q[1:], 0.1)                     # a smooth-ish track
    flipped = q * np.where(rng.random((50, 3, 1)) < 0.5, -1, 1)
    out = P.make_continuous(flipped, reference=-q[0])
    assert np.all(np.sum(out[1:] * out[:-1], axis=-1) >= 0)
    assert np.all(np.sum(out[0] * -q[0], axis=-1) >= 0)
    np.testing.assert_allclose(np.abs(np.sum(out * q, axis=-1)), 1.0, atol=1e-9)


def test_two_bone_ik_reaches_the_target_and_keeps_bone_lengths():
    hip = np.zeros((5, 3))
    knee = np.tile([0.0, -0.05, -0.42], (5, 1))
    ankle = np.tile([0.0, 0.0, -0.84], (5, 1))
    r = np.tile([1.0, 0, 0, 0], (5, 1))
    target = ankle + np.array([[0.05, 0.02, 0.03]])
    rt, rs = P.two_bone_ik(hip, knee, ankle, target, r, r)
    new_knee = hip + P.qrot(rt, knee - hip)
    new_ankle = new_knee + P.qrot(rs, ankle - knee)
    np.testing.assert_allclose(new_ankle, target, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(new_knee - hip, axis=1), 0.42297, atol=1e-4)


# --------------------------------------------------------------------------- whole placement
@pytest.fixture(scope="module")
def placed_song():
    lib = synth_library(6)
    beats, intervals = synth_song(30.0, bpm=118)
    k = len(lib.ids)
    probs = np.full((len(intervals), k), 1.0 / k)
    pb = [beats[(beats >= s - 1e-3) & (beats <= e + 1e-3)] for s, e in intervals]
    plan = make_plan(song={"path": "synthetic", "duration_s": intervals[-1][1]},
                     intervals_s=intervals, phrase_beats_s=pb, beats_s=beats, library=lib,
                     probs=probs, transition=style_transition([p.style for p in lib.phrases]),
                     scorer_info={"kind": "test"},
                     options=ChoreographyOptions(beat_sync=False))
    durations = {p.id: p.duration_s for p in lib.phrases}
    out = {}
    for feet, root in (("lock", "hermite"), ("none", "linear")):
        placed = P.place_all(plan.phrases, lib.motions, durations, fps=30.0, frame_start=1,
                             xf_frames=plan.crossfade_frames,
                             options=P.PlacementOptions(feet=feet, root=root))
        pos, _ = P.blend_placed(placed, xf_frames=plan.crossfade_frames, frame_first=1,
                                frame_last=plan.frame_end)
        out[feet] = (placed, pos)
    return plan, out


def test_roots_coincide_at_every_crossfade_middle(placed_song):
    plan, out = placed_song
    placed, _ = out["none"]
    for a, b in itertools.pairwise(placed):
        mid = b.frame_start + plan.crossfade_frames // 2
        pa, pb = a.positions[mid - a.frame_start, 0], b.positions[mid - b.frame_start, 0]
        assert np.linalg.norm((pa - pb)[:2]) < 1e-9
        assert P.heading(a.positions[mid - a.frame_start]) == pytest.approx(
            P.heading(b.positions[mid - b.frame_start]), abs=1e-9)


def test_blended_root_has_no_jump_at_seams(placed_song):
    _plan, out = placed_song
    for feet in ("lock", "none"):
        placed, pos = out[feet]
        for i in range(1, len(placed)):
            seam = M.Seam(i, placed[i].frame_start, placed[i - 1].frame_end)
            r = M.seam_root_metrics(pos[:, 0], frame0=1, seam=seam, fps=30.0)
            assert r["root_jump_cm"] < 1.0


def test_foot_lock_halves_foot_skate_of_a_plain_crossfade(placed_song):
    plan, out = placed_song
    zones = [(z0 - 1, z1 - 1) for z0, _, _, z1 in
             P.seam_zones([(p.frame_start, p.frame_end) for p in plan.phrases], fps=30.0)]
    skate = {}
    for feet in ("lock", "none"):
        _, pos = out[feet]
        skate[feet] = M.foot_skate(pos[:, list(FEET)], 30.0, zones)["mean_cm_s"]
    assert skate["none"] > 1.0
    assert skate["lock"] <= 0.5 * skate["none"]


def test_foot_lock_leaves_frames_outside_seam_zones_alone(placed_song):
    plan, out = placed_song
    zones = P.seam_zones([(p.frame_start, p.frame_end) for p in plan.phrases], fps=30.0)
    inside = np.zeros(plan.frame_end + 1, bool)
    for z0, _, _, z1 in zones:
        inside[z0:z1 + 1] = True
    lock, _ = out["lock"]
    none, _ = out["none"]
    for a, b in zip(lock, none):
        f = np.arange(a.frame_start, a.frame_end + 1)
        keep = ~inside[np.minimum(f, plan.frame_end)]
        np.testing.assert_allclose(a.positions[keep][:, [15, 19]] - a.positions[keep][:, :1],
                                   b.positions[keep][:, [15, 19]] - b.positions[keep][:, :1],
                                   atol=1e-9)


def test_placed_motion_keeps_the_body_rigid(placed_song):
    _, out = placed_song
    placed, _ = out["lock"]
    for pm in placed:
        off = P.bone_offsets(pm.positions, pm.rotations)
        for j, p in enumerate(P.CANON_PARENTS):
            if p < 0:
                continue
            pred = pm.positions[:, p] + P.qrot(pm.rotations[:, p], off[j])
            assert np.max(np.linalg.norm(pred - pm.positions[:, j], axis=1)) < 5e-3


def test_accent_time_stops_on_every_beat_and_keeps_each_interval():
    beats = np.array([0.0, 0.5, 1.0, 1.6, 2.0])
    t = np.linspace(-0.2, 2.3, 25001)
    e = P.accent_time(t, beats, 1.0)
    rate = np.diff(e) / np.diff(t)
    assert np.all(rate >= -1e-9)                                  # monotone
    np.testing.assert_allclose(P.accent_time(beats, beats, 1.0), beats, atol=1e-12)
    far = np.array([-0.6, 2.5, 3.0])                               # beyond one more beat
    np.testing.assert_allclose(P.accent_time(far, beats, 1.0), far)
    near = np.min(np.abs(t[:-1, None] - beats[None, 1:-1]), axis=1) < 2e-4
    assert rate[near].max() < 0.02                                 # a stop on each inner beat
    assert rate.max() < 1.21                                       # steady part barely faster
    assert np.max(np.abs(np.diff(rate))) < 0.01                    # rate continuous (C1 map)
    half = P.accent_time(t, beats, 0.5)
    r_half = np.diff(half) / np.diff(t)
    assert abs(r_half[near].mean() - 0.5) < 0.02
    np.testing.assert_allclose(P.accent_time(t, beats, 0.0), t)


def test_warp_accent_round_trips_through_the_plan_summary():
    music = np.arange(0.0, 4.01, 0.5)
    w = P.fit_warp(np.arange(0.0, 4.01, 0.55), 4.4, music, accent=1.0)
    w0 = P.fit_warp(np.arange(0.0, 4.01, 0.55), 4.4, music)
    np.testing.assert_allclose(w.anchors, w0.anchors)              # the fit is unchanged
    np.testing.assert_allclose(w(music), w0(music))                # beats map as before
    back = P.Warp.from_summary(w.summary(), 4.4)
    t = np.linspace(0, 4, 401)
    np.testing.assert_allclose(back(t), w(t), atol=1e-4)
    assert "accent" not in w0.summary()
    speed = np.abs(np.diff(w(t)))
    at_beat = np.isin(np.round(t[:-1], 4), np.round(music[1:-1], 4))
    assert speed[at_beat].max() < 0.2 * np.median(speed)
