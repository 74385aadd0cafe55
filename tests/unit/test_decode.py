from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blender_m2d.core.decode import decode, style_mask
from blender_m2d.core.errors import M2DError


def _random(p: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(k), size=p)
    trans = np.clip(rng.uniform(0.0, 1.0, (k, k)), 0.01, 1.0)
    return probs, trans


def _path_score(probs, trans, seq):
    s = np.log(probs[np.arange(len(seq)), seq]).sum()
    return s + sum(np.log(trans[a, b]) for a, b in itertools.pairwise(seq))


def test_greedy_is_equation_6_left_to_right():
    probs, trans = _random(6, 5, seed=1)
    dec = decode(probs, trans, method="greedy", no_repeat=False)
    expect = [int(np.argmax(probs[0]))]
    for t in range(1, 6):
        expect.append(int(np.argmax(probs[t] * trans[expect[-1]])))
    assert dec.sequence.tolist() == expect


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(2, 4), st.integers(0, 10_000), st.booleans())
def test_viterbi_finds_the_best_whole_path(p, k, seed, no_repeat):
    probs, trans = _random(p, k, seed)
    dec = decode(probs, trans, method="viterbi", no_repeat=no_repeat)
    paths = [s for s in itertools.product(range(k), repeat=p)
             if not no_repeat or all(a != b for a, b in itertools.pairwise(s))]
    best = max(_path_score(probs, trans, s) for s in paths)
    assert _path_score(probs, trans, dec.sequence) == pytest.approx(best, abs=1e-9)
    assert dec.log_score == pytest.approx(best, abs=1e-9)


def test_viterbi_never_scores_below_greedy():
    for seed in range(20):
        probs, trans = _random(8, 6, seed)
        g = decode(probs, trans, method="greedy", no_repeat=False)
        v = decode(probs, trans, method="viterbi", no_repeat=False)
        assert v.log_score >= g.log_score - 1e-9


@pytest.mark.parametrize("method", ["greedy", "viterbi"])
def test_no_repeat_forbids_a_phrase_following_itself(method):
    probs = np.tile([0.9, 0.05, 0.05], (5, 1))
    trans = np.ones((3, 3))
    seq = decode(probs, trans, method=method, no_repeat=True).sequence
    assert all(a != b for a, b in itertools.pairwise(seq))
    seq = decode(probs, trans, method=method, no_repeat=False).sequence
    assert seq.tolist() == [0] * 5


@pytest.mark.parametrize("method", ["greedy", "viterbi"])
def test_locks_are_kept_and_the_rest_plans_around_them(method):
    probs, trans = _random(6, 5, seed=3)
    locks = {2: 4, 5: 0}
    dec = decode(probs, trans, method=method, locks=locks, no_repeat=True)
    assert dec.sequence[2] == 4 and dec.sequence[5] == 0
    assert dec.sequence[1] != 4 and dec.sequence[3] != 4


@pytest.mark.parametrize("method", ["greedy", "viterbi"])
def test_style_filter_only_uses_allowed_phrases(method):
    probs, trans = _random(7, 6, seed=4)
    styles = ["salsa", "modern", "salsa", "modern", "salsa", "modern"]
    mask = style_mask(styles, ["Modern"])
    dec = decode(probs, trans, method=method, allowed=mask)
    assert all(styles[j] == "modern" for j in dec.sequence)
    assert all(styles[j] == "modern" for j in dec.top_index.ravel())


def test_unknown_style_is_a_user_error():
    with pytest.raises(M2DError, match="hip-hop"):
        style_mask(["salsa", "modern"], ["hip-hop"])


def test_top_k_is_ranked_and_contains_the_greedy_choice():
    probs, trans = _random(5, 8, seed=5)
    dec = decode(probs, trans, method="greedy", top_k=4, no_repeat=False)
    assert dec.top_index.shape == (5, 4)
    assert np.all(np.diff(dec.top_score, axis=1) <= 1e-12)
    assert np.all(dec.top_index[:, 0] == dec.sequence)
    # scores are the renormalised Eq. 6 products
    q = probs[1] * trans[dec.sequence[0]]
    assert dec.top_score[1, 0] == pytest.approx(q.max() / q.sum())


def test_seed_gives_reproducible_variety():
    probs, trans = _random(10, 6, seed=6)
    a = decode(probs, trans, seed=7, variety=0.5).sequence
    b = decode(probs, trans, seed=7, variety=0.5).sequence
    c = decode(probs, trans, seed=8, variety=0.5).sequence
    base = decode(probs, trans).sequence
    assert a.tolist() == b.tolist()
    assert a.tolist() != base.tolist() or c.tolist() != base.tolist()


def test_lock_outside_the_song_is_a_user_error():
    probs, trans = _random(3, 3)
    with pytest.raises(M2DError):
        decode(probs, trans, locks={5: 0})
    with pytest.raises(M2DError):
        decode(probs, trans, locks={0: 9})


def test_single_phrase_library_relaxes_no_repeat():
    dec = decode(np.ones((4, 1)), np.ones((1, 1)), method="viterbi", no_repeat=True)
    assert dec.sequence.tolist() == [0, 0, 0, 0]
    dec = decode(np.ones((4, 1)), np.ones((1, 1)), method="greedy", no_repeat=True)
    assert dec.sequence.tolist() == [0, 0, 0, 0]
