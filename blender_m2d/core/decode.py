"""Choose one dance phrase per music phrase from per-phrase scores and the transition matrix.

* ``greedy`` is the paper's Eq. 6 (spec section 5.5): ``d_1 = argmax p_1``, then left to right
  ``d_t = argmax p_t * M[d_{t-1}, :]``.
* ``viterbi`` maximises ``sum_t log p_t(d_t) + sum_t log M[d_{t-1}, d_t]`` over the whole song
  (spec section 5.5, optional [D]).

Options, applied identically by both methods:

* ``no_repeat``: a phrase may not follow itself (``d_t != d_{t-1}``); relaxed for a step only when
  nothing else is allowed there.
* ``allowed``: boolean mask over the library (e.g. a style filter, see :func:`style_mask`);
  disallowed phrases are never chosen unless locked.
* ``locks``: ``{music phrase index: library index}`` kept fixed; the decoder plans around them
  (Viterbi) or continues from them (greedy).
* ``recent``/``recent_penalty``: variety over the song. A phrase already used among the last
  ``recent`` music phrases costs ``recent_penalty`` (log-score) per use there, so the decoder
  does not settle into alternating two phrases (``A B A B ...``, which ``no_repeat`` alone
  allows). ``recent = 0`` or ``recent_penalty = 0`` turns it off: exactly the paper's decoder,
  which :func:`decode` does by default (training and evaluation use it so); the choreographer
  turns it on through :class:`DecodeOptions` (last ``RECENT`` phrases, ``RECENT_PENALTY``).
  Greedy applies it to the phrases chosen before (locked ones included). Viterbi carries, per
  state, the recent history of the best path into it and charges the penalty along that path
  (exact for the decoder without it; with it, a path-dependent cost, so the search is the usual
  approximation of keeping one best history per state); a locked phrase costs its penalty too,
  which steers the phrases before a lock away from its phrase. Locks themselves are never
  changed by it.
* ``step_factor``: an extra, step-dependent factor of the transitions,
  ``M_t[i, j] = M[i, j] * step_factor(t, rows)[i, j]`` for the step into music phrase ``t``
  (``rows``: the previous phrases asked for). The choreographer uses it for the seam prior
  (root heights where phrase i is cut and phrase j starts); None (default): ``M`` everywhere.
* ``seed``/``variety``: with ``variety > 0`` the log-scores get Gumbel noise of that scale drawn
  from ``seed``, so different seeds give different (still plausible) dances; ``variety = 0``
  (default) is fully deterministic. Ties break towards the lower library index.

Every decoded phrase also gets its ``top_k`` alternatives ranked by the rescaled score of Eq. 6,
``q_t(j) = p_t(j) * M_t[d_{t-1}, j]`` (``p_1`` for the first phrase; ``M_t`` includes the step
factor), renormalised over the allowed phrases (:func:`rank`; the recency penalty only steers the
choice, so with it the chosen phrase need not rank first); that is the list an animator picks
swaps from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import M2DError

METHODS = ("greedy", "viterbi")
_EPS = 1e-12
RECENT = 4
"""Music phrases looked back on by the choreographer's recency penalty."""
RECENT_PENALTY = 0.5
"""Log-score charged per use of a phrase among the last ``RECENT`` ones (choreographer)."""


@dataclass(frozen=True)
class DecodeOptions:
    method: str = "greedy"
    no_repeat: bool = True
    styles: tuple[str, ...] | None = None
    top_k: int = 5
    seed: int = 0
    variety: float = 0.0
    recent: int = RECENT
    recent_penalty: float = RECENT_PENALTY

    def to_json(self) -> dict:
        return {"method": self.method, "no_repeat": self.no_repeat,
                "styles": list(self.styles) if self.styles else None, "top_k": self.top_k,
                "seed": self.seed, "variety": self.variety, "recent": self.recent,
                "recent_penalty": self.recent_penalty}


@dataclass(frozen=True)
class Decoded:
    """Decoder result for P music phrases over a library of K phrases."""

    sequence: np.ndarray
    """[shape=(P,)] chosen library index per music phrase."""
    top_index: np.ndarray
    """[shape=(P, k)] ranked alternatives (library indices), best first."""
    top_score: np.ndarray
    """[shape=(P, k)] their rescaled, renormalised Eq. 6 scores."""
    top_prob: np.ndarray
    """[shape=(P, k)] their raw scorer probabilities."""
    log_score: float
    """``sum log p_t(d_t) + sum log M[d_{t-1}, d_t]`` of the chosen sequence."""


def style_mask(styles: Sequence[str], allowed: Iterable[str] | None) -> np.ndarray | None:
    """Boolean mask over the library for the allowed dance styles (None: all allowed)."""
    if not allowed:
        return None
    wanted = {s.strip().lower() for s in allowed if s.strip()}
    mask = np.array([str(s).lower() in wanted for s in styles], dtype=bool)
    if not mask.any():
        known = ", ".join(sorted({str(s) for s in styles}))
        raise M2DError(f"no library phrase has the style(s) {sorted(wanted)}; "
                       f"the library has: {known}")
    return mask


def _check(probs: np.ndarray, transition: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    m = np.asarray(transition, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 1:
        raise ValueError(f"probs must have shape (P, K), got {p.shape}")
    if m.shape != (p.shape[1], p.shape[1]):
        raise ValueError(f"transition must have shape ({p.shape[1]}, {p.shape[1]}), got {m.shape}")
    if not (np.isfinite(p).all() and np.isfinite(m).all()) or (p < 0).any() or (m < 0).any():
        raise ValueError("probs and transition must be finite and non-negative")
    return p, m


def decode(probs: np.ndarray, transition: np.ndarray, *, method: str = "greedy",
           no_repeat: bool = True, allowed: np.ndarray | None = None,
           locks: Mapping[int, int] | None = None, top_k: int = 5, seed: int = 0,
           variety: float = 0.0, recent: int = 0, recent_penalty: float = 0.0,
           step_factor: Callable[[int, np.ndarray], np.ndarray] | None = None) -> Decoded:
    """Decode the dance-phrase sequence for a song.

    Parameters
    ----------
    probs : np.ndarray [shape=(P, K)]
        Scorer probabilities per music phrase (rows need not sum to 1).
    transition : np.ndarray [shape=(K, K)]
        ``M[i, j]``: how acceptable phrase j is after phrase i, in [0.01, 1] (spec section 5.3).
    method : "greedy" | "viterbi"
    no_repeat, allowed, locks, top_k, seed, variety, recent, recent_penalty, step_factor
        See the module docstring (``recent``: off by default, the paper's decoder).
    """
    if method not in METHODS:
        raise ValueError(f"unknown decoding method {method!r}; use one of {METHODS}")
    p, m = _check(probs, transition)
    n_phr, k = p.shape
    locks = {int(t): int(j) for t, j in (locks or {}).items()}
    for t, j in locks.items():
        if not 0 <= t < n_phr:
            raise M2DError(f"locked phrase {t} is outside the song's {n_phr} phrases")
        if not 0 <= j < k:
            raise M2DError(f"locked library index {j} is outside the library's {k} phrases")
    allow = np.ones(k, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    if allow.shape != (k,):
        raise ValueError(f"allowed must have shape ({k},)")
    logp = np.log(np.maximum(p, _EPS))
    if variety > 0:
        rng = np.random.default_rng(seed)
        logp = logp + variety * rng.gumbel(size=logp.shape)
    logm = _Steps(m, step_factor)
    if not (np.isfinite(recent_penalty) and recent_penalty >= 0):
        raise ValueError("recent_penalty must be finite and non-negative")
    recency = _Recency(int(recent), float(recent_penalty), k)

    if method == "greedy":
        seq = _greedy(logp, logm, allow, locks, no_repeat, recency)
    else:
        seq = _viterbi(logp, logm, allow, locks, no_repeat, recency)

    top_i, top_s, top_p = rank(p, m, seq, allowed=allow, top_k=top_k, step_factor=step_factor)
    total = float(logp[np.arange(n_phr), seq].sum()
                  + sum(float(logm.log_rows(t, seq[t - 1:t])[0, seq[t]])
                        for t in range(1, n_phr)))
    return Decoded(sequence=seq, top_index=top_i, top_score=top_s, top_prob=top_p,
                   log_score=total)


def rank(probs: np.ndarray, transition: np.ndarray, sequence: Sequence[int], *,
         allowed: np.ndarray | None = None, top_k: int = 5,
         step_factor: Callable[[int, np.ndarray], np.ndarray] | None = None
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ranked alternatives of every music phrase given the decoded ``sequence``: indices,
    renormalised Eq. 6 scores ``p_t(j) M_t[d_{t-1}, j]`` (``p_1`` for the first phrase; ``M_t``
    is ``M`` times the step factor, if any) over the allowed phrases, and the raw
    probabilities, each [shape=(P, k)], best first, ties to the lower index. The recency
    penalty steers the decoder's choice only."""
    p = np.asarray(probs, dtype=np.float64)
    steps = _Steps(np.asarray(transition, dtype=np.float64), step_factor)
    n_phr, k = p.shape
    allow = np.ones(k, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    seq = np.asarray(sequence, dtype=np.int64)
    kk = max(1, min(int(top_k), int(allow.sum()) or k))
    top_i = np.zeros((n_phr, kk), dtype=np.int64)
    top_s = np.zeros((n_phr, kk))
    top_p = np.zeros((n_phr, kk))
    for t in range(n_phr):
        q = p[t] * (steps.rows(t, seq[t - 1:t])[0] if t else 1.0)
        q = np.where(allow, q, 0.0)
        if q.sum() <= 0:
            q = p[t].copy()
        q = q / max(q.sum(), _EPS)
        order = np.lexsort((np.arange(k), -q))[:kk]
        top_i[t], top_s[t], top_p[t] = order, q[order], p[t, order]
    return top_i, top_s, top_p


def _row_mask(allow: np.ndarray, prev: int | None, no_repeat: bool) -> np.ndarray:
    mask = allow.copy()
    if no_repeat and prev is not None:
        mask[prev] = False
        if not mask.any():          # nothing else allowed: relax no_repeat for this step
            mask[prev] = allow[prev]
    if not mask.any():
        mask[:] = True
    return mask


def _argmax(v: np.ndarray) -> int:
    return int(np.flatnonzero(v == v.max())[0])


class _Steps:
    """The transitions of each step: ``M`` times the optional ``step_factor`` (module
    docstring), as probabilities (:meth:`rows`) or logarithms (:meth:`log_rows`)."""

    def __init__(self, m: np.ndarray, step_factor) -> None:
        self.m = m
        self.log = np.log(np.maximum(m, _EPS))
        self.factor = step_factor
        self.k = m.shape[0]

    def rows(self, t: int, prev) -> np.ndarray:
        prev = np.asarray(prev, dtype=np.int64)
        if self.factor is None:
            return self.m[prev]
        f = np.asarray(self.factor(t, prev), dtype=np.float64)
        if f.shape != (prev.size, self.k) or not np.isfinite(f).all() or (f < 0).any():
            raise ValueError(f"step_factor must return finite, non-negative ({prev.size}, "
                             f"{self.k}) arrays")
        return self.m[prev] * f

    def log_rows(self, t: int, prev) -> np.ndarray:
        if self.factor is None:
            return self.log[np.asarray(prev, dtype=np.int64)]
        return np.log(np.maximum(self.rows(t, prev), _EPS))

    def log_full(self, t: int) -> np.ndarray:
        return self.log if self.factor is None else self.log_rows(t, np.arange(self.k))


class _Recency:
    """The recency penalty (module docstring): ``penalty(history)`` [shape=(K,)] for the next
    phrase after the chosen ``history`` (oldest first; only its last ``n`` count)."""

    def __init__(self, n: int, weight: float, k: int) -> None:
        self.n = max(int(n), 0)
        self.weight = float(weight)
        self.k = k
        self.on = self.n > 0 and self.weight > 0.0

    def penalty(self, history) -> np.ndarray:
        out = np.zeros(self.k)
        if self.on:
            h = np.asarray(history, dtype=np.int64)[-self.n:]
            np.add.at(out, h, self.weight)
        return out

    def path_penalty(self, hist: np.ndarray) -> np.ndarray:
        """[shape=(len(hist), K)] penalty of each next phrase after each path history
        ``hist`` [shape=(paths, n)] (-1: before the song): the weight times its uses there."""
        uses = np.zeros((hist.shape[0], self.k), dtype=np.int64)
        rows = np.arange(hist.shape[0])
        for col in hist.T:
            ok = col >= 0
            np.add.at(uses, (rows[ok], col[ok]), 1)
        return self.weight * uses


def _greedy(logp, logm, allow, locks, no_repeat, recency: _Recency) -> np.ndarray:
    n_phr = logp.shape[0]
    seq = np.zeros(n_phr, dtype=np.int64)
    prev = None
    for t in range(n_phr):
        if t in locks:
            seq[t] = locks[t]
        else:
            v = logp[t] + (logm.log_rows(t, [prev])[0] if prev is not None else 0.0)
            if recency.on:
                v = v - recency.penalty(seq[max(t - recency.n, 0):t])
            v = np.where(_row_mask(allow, prev, no_repeat), v, -np.inf)
            seq[t] = _argmax(v)
        prev = int(seq[t])
    return seq


def _viterbi(logp, logm, allow, locks, no_repeat, recency: _Recency) -> np.ndarray:
    """Viterbi over the whole song. With the recency penalty on, it is charged along the best
    path into each state (module docstring): ``hist[i]`` holds the last ``recency.n`` phrases
    of that path, oldest first, -1 where the song has not started yet."""
    n_phr, k = logp.shape
    neg = -1e30
    emit = np.where(allow, logp, neg)
    for t, j in locks.items():
        row = np.full(k, neg)
        row[j] = logp[t, j]
        emit[t] = row
    states = np.arange(k)
    delta = emit[0].copy()
    hist = None
    if recency.on:
        hist = np.full((k, recency.n), -1, dtype=np.int64)
        hist[:, -1] = states
    back = np.zeros((n_phr, k), dtype=np.int64)
    for t in range(1, n_phr):
        base = delta[:, None]
        if hist is not None:      # recency penalty of phrase j after the best path ending in i
            base = base - recency.path_penalty(hist)
        log_t = logm.log_full(t)
        trans = log_t.copy()
        if no_repeat and k > 1:
            np.fill_diagonal(trans, neg)
        cand = base + trans                        # (prev, cur)
        best_prev = np.argmax(cand, axis=0)        # first maximum = lowest index on ties
        best = cand[best_prev, states]
        if no_repeat and (best + emit[t] <= neg / 2).all():
            # only repeats are feasible here (e.g. two equal locks): allow them for this step
            cand = base + log_t
            best_prev = np.argmax(cand, axis=0)
            best = cand[best_prev, states]
        back[t] = best_prev
        delta = best + emit[t]
        if hist is not None:
            hist = np.concatenate([hist[best_prev, 1:], states[:, None]], axis=1)
    seq = np.zeros(n_phr, dtype=np.int64)
    seq[-1] = _argmax(delta)
    for t in range(n_phr - 1, 0, -1):
        seq[t - 1] = back[t, seq[t]]
    return seq
