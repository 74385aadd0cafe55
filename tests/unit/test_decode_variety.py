"""core.decode: the recency penalty (variety over the song) and the per-step transition factor."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from blender_m2d.core.decode import RECENT, RECENT_PENALTY, DecodeOptions, decode


def _random(p: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(k), size=p)
    trans = np.clip(rng.uniform(0.0, 1.0, (k, k)), 0.01, 1.0)
    return probs, trans


def _two_favourites(p: int = 12, k: int = 6) -> np.ndarray:
    """Every music phrase prefers phrases 0 and 1 a little over the rest: with ``no_repeat``
    the plain decoder alternates 0 1 0 1 ... over the whole song."""
    rest = np.linspace(0.12, 0.09, k - 2)
    row = np.array([0.30, 0.28, *rest])
    return np.tile(row / row.sum(), (p, 1))


@pytest.mark.parametrize("method", ["greedy", "viterbi"])
def test_plain_decoder_alternates_two_phrases_and_recency_breaks_it(method):
    probs, trans = _two_favourites(), np.ones((6, 6))
    plain = decode(probs, trans, method=method, no_repeat=True).sequence.tolist()
    assert set(plain) == {0, 1}
    varied = decode(probs, trans, method=method, no_repeat=True, recent=4,
                    recent_penalty=1.0).sequence.tolist()
    assert len(set(varied)) >= 4
    # every 4 consecutive phrases hold at least 3 different ones (the plain decoder: 2); a
    # phrase used in the last 4 costs 1.0, more than the 0.92 gap to an unused one
    assert all(len(set(varied[t:t + 4])) >= 3 for t in range(len(varied) - 3))


@pytest.mark.parametrize("method", ["greedy", "viterbi"])
@pytest.mark.parametrize("window", [1, 2, 3, 5])
def test_a_large_penalty_keeps_every_window_free_of_repeats(method, window):
    for seed in range(5):
        probs, trans = _random(15, window + 2, seed)
        seq = decode(probs, trans, method=method, no_repeat=False, recent=window,
                     recent_penalty=50.0).sequence.tolist()
        for t in range(len(seq)):
            assert seq[t] not in seq[max(t - window, 0):t], (seed, t, seq)


@pytest.mark.parametrize("method", ["greedy", "viterbi"])
def test_recency_off_is_exactly_the_paper_decoder(method):
    for seed in range(5):
        probs, trans = _random(10, 7, seed)
        ref = decode(probs, trans, method=method, no_repeat=False)
        for kw in ({"recent": 0, "recent_penalty": 3.0}, {"recent": 4, "recent_penalty": 0.0}):
            dec = decode(probs, trans, method=method, no_repeat=False, **kw)
            assert dec.sequence.tolist() == ref.sequence.tolist()
            assert dec.log_score == ref.log_score
            assert np.array_equal(dec.top_index, ref.top_index)


def test_decode_defaults_are_the_paper_decoder_but_the_choreographer_turns_variety_on():
    import inspect

    params = inspect.signature(decode).parameters
    assert params["recent"].default == 0 and params["recent_penalty"].default == 0.0
    opts = DecodeOptions()
    assert (opts.recent, opts.recent_penalty) == (RECENT, RECENT_PENALTY)
    assert RECENT >= 2 and RECENT_PENALTY > 0
    assert opts.to_json()["recent"] == RECENT


@pytest.mark.parametrize("no_repeat", [False, True])
def test_viterbi_with_a_one_phrase_window_is_exact(no_repeat):
    """``recent = 1`` is a first-order cost (a penalty on d_t == d_{t-1}), so Viterbi must find
    the best path of the penalised objective."""
    lam = 0.7
    for seed in range(12):
        probs, trans = _random(5, 3, seed)
        seq = decode(probs, trans, method="viterbi", no_repeat=no_repeat, recent=1,
                     recent_penalty=lam).sequence

        def score(s, probs=probs, trans=trans):
            v = np.log(probs[np.arange(len(s)), s]).sum()
            return v + sum(np.log(trans[a, b]) - (lam if a == b else 0.0)
                           for a, b in itertools.pairwise(s))

        paths = [s for s in itertools.product(range(3), repeat=5)
                 if not no_repeat or all(a != b for a, b in itertools.pairwise(s))]
        best = max(score(s) for s in paths)
        assert score(seq) == pytest.approx(best, abs=1e-9), seed


@pytest.mark.parametrize("method", ["greedy", "viterbi"])
def test_locks_are_kept_with_recency_and_their_neighbours_avoid_the_locked_phrase(method):
    probs, trans = _two_favourites(p=9), np.ones((6, 6))
    locks = {4: 0}
    seq = decode(probs, trans, method=method, no_repeat=True, locks=locks, recent=3,
                 recent_penalty=1.0).sequence.tolist()
    assert seq[4] == 0
    assert 0 not in seq[5:7]                       # the lock counts as a recent use
    if method == "viterbi":                        # planned around: none right before it
        assert 0 not in seq[2:4]


def test_locked_phrases_are_never_changed_by_recency():
    probs, trans = _random(8, 5, seed=3)
    locks = {1: 2, 2: 4, 3: 2, 5: 2}
    for method in ("greedy", "viterbi"):
        seq = decode(probs, trans, method=method, locks=locks, recent=4,
                     recent_penalty=20.0).sequence
        assert all(seq[t] == j for t, j in locks.items())


@pytest.mark.parametrize("method", ["greedy", "viterbi"])
def test_step_factor_forbids_a_transition_at_one_step_only(method):
    probs = np.array([[0.6, 0.3, 0.1], [0.3, 0.6, 0.1]] * 2)
    trans = np.ones((3, 3))
    plain = decode(probs, trans, method=method, no_repeat=True).sequence.tolist()
    assert plain == [0, 1, 0, 1]

    def factor(t, rows):
        f = np.ones((len(rows), 3))
        if t == 2:
            f[np.asarray(rows) == 1, 0] = 1e-6      # 1 -> 0 impossible into phrase 2
        return f

    seq = decode(probs, trans, method=method, no_repeat=True, step_factor=factor)
    s = seq.sequence.tolist()
    assert s != plain and not (s[1] == 1 and s[2] == 0)
    assert s[2:] != [0, 1] or s[1] != 1
    # the step factor is counted in the path score
    assert seq.log_score < decode(probs, trans, method=method, no_repeat=True).log_score


def test_step_factor_of_the_wrong_shape_is_refused():
    probs, trans = _random(3, 3)
    with pytest.raises(ValueError):
        decode(probs, trans, step_factor=lambda t, rows: np.ones((3, 3, 1)))
