from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blender_m2d.core import metrics as M


def _brute_hits(d, m, tol=0.1):
    """Maximum one-to-one matching by trying every assignment (tiny inputs only)."""
    best = 0
    for k in range(min(len(d), len(m)), 0, -1):
        for ds in itertools.combinations(d, k):
            for ms in itertools.permutations(m, k):
                if all(abs(a - b) <= tol + 1e-9 for a, b in zip(ds, ms)):
                    return k
    return best


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 3), max_size=5), st.lists(st.floats(0, 3), max_size=5))
def test_hit_count_is_a_maximum_one_to_one_matching(d, m):
    hits = M.count_hits(np.array(d), np.array(m))
    assert hits <= min(len(d), len(m))
    assert hits == _brute_hits(sorted(d), sorted(m))


def test_the_four_beat_metrics_follow_the_paper():
    dance = np.array([0.0, 0.52, 1.05, 1.7, 2.5])          # 0.0, 0.52 hit; 1.05 hits 1.0
    music = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    b = M.beat_metrics(dance, music)
    assert (b.n_dance, b.n_music, b.n_hits) == (5, 6, 3)
    assert b.coverage == pytest.approx(5 / 6)
    assert b.hit_rate == pytest.approx(3 / 5)
    assert b.music_hit_rate == pytest.approx(3 / 6)
    assert b.overlap == pytest.approx(3 / (6 + 5 - 3))
    assert b.music_hit_rate == pytest.approx(b.coverage * b.hit_rate)


def test_a_dance_beat_is_matched_to_at_most_one_music_beat():
    assert M.count_hits(np.array([1.0]), np.array([0.95, 1.05])) == 1
    assert M.count_hits(np.array([0.95, 1.05]), np.array([1.0])) == 1
    assert M.count_hits(np.array([1.0]), np.array([1.11])) == 0


def test_pooled_and_per_clip_aggregation_differ_as_documented():
    a = M.BeatMetrics(10, 10, 10)
    b = M.BeatMetrics(2, 10, 0)
    agg = M.aggregate([a, b])
    assert agg["pooled"]["beat_hit_rate"] == pytest.approx(10 / 12, abs=1e-4)
    assert agg["per_clip_mean"]["beat_hit_rate"] == pytest.approx(0.5, abs=1e-4)


def test_song_metrics_cut_30_second_clips():
    music = np.arange(0, 70, 0.5)
    out = M.song_beat_metrics(music + 0.02, music, 70.0)
    assert out["song"]["beat_hit_rate"] == 1.0
    assert out["clips_30s"]["n_clips"] == 2          # 0-30 and 30-70 (10 s remainder merged)


def test_root_jump_detects_a_teleport_but_not_steady_motion():
    f = np.arange(100)
    root = np.stack([0.02 * f, np.zeros(100), np.ones(100)], axis=1)     # 0.6 m/s walk
    seam = M.Seam(1, 45, 55)
    calm = M.seam_root_metrics(root, frame0=0, seam=seam, fps=30.0,
                               root_a_mid=root[50], root_b_mid=root[50])
    assert calm["root_jump_cm"] == pytest.approx(0.0, abs=1e-9)
    assert calm["root_gap_cm"] == 0.0
    jumped = root.copy()
    jumped[50:, 0] += 0.05
    out = M.seam_root_metrics(jumped, frame0=0, seam=seam, fps=30.0,
                              root_a_mid=root[50], root_b_mid=root[50] + [0.05, 0, 0])
    assert out["root_jump_cm"] == pytest.approx(5.0, abs=1e-6)
    assert out["root_gap_cm"] == pytest.approx(5.0, abs=1e-6)


def test_foot_skate_counts_only_planted_steps_inside_zones():
    n = 60
    feet = np.zeros((n, 2, 3))
    feet[:, 0, 0] = np.linspace(0, 0.3, n)       # left foot slides 0.3 m over 2 s, on the floor
    feet[:, 1, 2] = 0.5                          # right foot in the air: not in contact
    feet[:, 1, 0] = np.linspace(0, 1.0, n)
    out = M.foot_skate(feet, 30.0, [(0, n - 1)], floor=np.zeros(2))
    speed = 0.3 / ((n - 1) / 30.0) * 100
    assert out["mean_cm_s"] == pytest.approx(speed, abs=1e-3)
    none = M.foot_skate(feet, 30.0, [], floor=np.zeros(2))
    assert none["contact_steps"] == 0 and none["mean_cm_s"] == 0.0


def _root_jump_reference(root, lo, hi, n_ctx):
    """The seam root jump from the steps of the whole path (what seam_root_metrics defines)."""
    step = np.linalg.norm(np.diff(root, axis=0), axis=1)
    inside = step[max(lo, 0):max(hi, 0)]
    before = step[max(lo - n_ctx, 0):max(lo, 0)]
    after = step[min(hi, step.size):min(hi + n_ctx, step.size)]
    allowance = max(float(np.max(before, initial=0.0)), float(np.max(after, initial=0.0)))
    return round(100 * max(float(np.max(inside, initial=0.0)) - allowance, 0.0), 4)


def test_root_jump_reads_only_the_steps_around_the_seam_with_the_same_result():
    rng = np.random.default_rng(3)
    for _ in range(500):
        n = int(rng.integers(1, 60))
        root = np.cumsum(rng.normal(size=(n, 3)), axis=0)
        f0 = int(rng.integers(-5, 70))
        f1 = f0 + int(rng.integers(-3, 20))
        frame0 = int(rng.integers(-3, 5))
        fps = float(rng.choice([4.0, 10.0, 30.0]))
        got = M.seam_root_metrics(root, frame0=frame0, seam=M.Seam(1, f0, f1), fps=fps)
        n_ctx = max(1, round(0.5 * fps))
        assert got["root_jump_cm"] == _root_jump_reference(root, f0 - frame0, f1 - frame0,
                                                           n_ctx)


def test_foot_skates_of_several_zone_sets_equal_one_at_a_time():
    rng = np.random.default_rng(4)
    feet = np.cumsum(rng.normal(scale=0.01, size=(300, 2, 3)), axis=0)
    feet[..., 2] = np.abs(feet[..., 2])
    sets = [[(10, 40), (100, 130)], [(0, 299)], [], [(250, 400)]]
    many = M.foot_skates(feet, 30.0, sets)
    assert many == [M.foot_skate(feet, 30.0, z) for z in sets]
    assert many[1]["contact_steps"] > many[0]["contact_steps"] > 0
