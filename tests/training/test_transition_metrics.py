"""Transition matrix (M0, Eq. 6 rescaling, Algorithm 1 update) and retrieval metrics."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluate import ranks_of, retrieval_metrics
from training.transition import (
    initial_transition,
    rescale_greedy,
    subset_prev,
    update_transition,
)


def test_m0_is_style_similarity_plus_observed_transitions_clipped():
    sim = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32)
    labels = np.array([0, 2, 1])
    prev = np.array([-1, 0, -1])          # 0 -> 2 observed; 1 starts another song
    m = initial_transition(sim, 3, labels, prev)
    assert m[0, 2] == 1.0                 # observed although styles differ
    assert m[2, 0] == pytest.approx(0.01)  # not observed, other style: clipped floor
    assert m[0, 1] == 1.0 and m.min() >= np.float32(0.01)
    assert np.all(initial_transition(None, 3, labels[:0], prev[:0]) == 1.0)


def test_rescale_greedy_follows_eq6_left_to_right():
    probs = np.array([[0.9, 0.1, 0.0], [0.4, 0.6, 0.0], [0.5, 0.5, 0.0]])
    m = np.array([[0.01, 1.0, 0.01], [1.0, 0.01, 0.01], [1, 1, 1]], np.float32)
    prev = np.array([-1, 0, 1])
    out, choice = rescale_greedy(probs, prev, m)
    assert list(choice) == [0, 1, 0]
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out[0], probs[0], rtol=1e-6)        # first phrase untouched
    q = probs[1] * m[0]
    np.testing.assert_allclose(out[1], q / q.sum(), rtol=1e-6)


def test_rescale_greedy_agrees_with_core_decode_greedy():
    from blender_m2d.core.decode import decode

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7), size=12)
    m = rng.uniform(0.01, 1, (7, 7)).astype(np.float32)
    prev = np.r_[-1, np.arange(11)]
    _, choice = rescale_greedy(p, prev, m)
    ref = decode(p, m, method="greedy", no_repeat=False).sequence
    assert list(choice) == list(ref)


def test_update_transition_normalises_rows_and_uses_momentum():
    k = 3
    m = np.full((k, k), 0.5, np.float32)
    rescaled = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], np.float64)
    prev = np.array([-1, 0, 1, -1])       # pairs 0->1 (w=1), 1->0 (w=1)
    new = update_transition(m, rescaled, prev, alpha=0.5)
    assert new[0, 1] == pytest.approx(0.75)   # 0.5*0.5 + 0.5*1
    assert new[0, 0] == pytest.approx(0.25)   # seen row, unseen entry decays
    np.testing.assert_allclose(new[2], m[2])  # row without any pair keeps M
    assert new.min() >= np.float32(0.01) and new.max() <= 1.0


def test_subset_prev_maps_into_the_subset():
    prev = np.array([-1, 0, 1, -1, 3])
    rows = np.array([1, 2, 4])
    assert list(subset_prev(prev, rows)) == [-1, 0, -1]


def test_ranks_topk_and_mrr():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 1])
    assert list(ranks_of(scores, labels)) == [1, 3, 2]
    res = retrieval_metrics(scores, labels, np.array([-1, -1, -1]), None, ks=(1, 2))
    assert res["raw"]["top1"] == pytest.approx(1 / 3)
    assert res["raw"]["top2"] == pytest.approx(2 / 3)
    assert res["raw"]["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    assert "with_M" not in res


def test_metrics_with_transition_report_greedy_and_true_previous():
    probs = np.array([[0.6, 0.4], [0.45, 0.55]])
    labels = np.array([1, 0])
    m = np.array([[0.01, 1.0], [1.0, 0.01]], np.float32)
    res = retrieval_metrics(probs, labels, np.array([-1, 0]), m)
    assert res["raw"]["top1"] == 0.0
    assert res["with_M"]["top1"] == 0.0           # greedy followed its wrong first choice
    assert res["with_M_true_prev"]["top1"] == 0.5  # given the true previous phrase (1 -> 0)
