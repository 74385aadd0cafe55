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
* ``seed``/``variety``: with ``variety > 0`` the log-scores get Gumbel noise of that scale drawn
  from ``seed``, so different seeds give different (still plausible) dances; ``variety = 0``
  (default) is fully deterministic. Ties break towards the lower library index.

Every decoded phrase also gets its ``top_k`` alternatives ranked by the rescaled score of Eq. 6,
``q_t(j) = p_t(j) * M[d_{t-1}, j]`` (``p_1`` for the first phrase), renormalised over the allowed
phrases; that is the list an animator picks swaps from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import M2DError

METHODS = ("greedy", "viterbi")
_EPS = 1e-12


@dataclass(frozen=True)
class DecodeOptions:
    method: str = "greedy"
    no_repeat: bool = True
    styles: tuple[str, ...] | None = None
    top_k: int = 5
    seed: int = 0
    variety: float = 0.0

    def to_json(self) -> dict:
        return {"method": self.method, "no_repeat": self.no_repeat,
                "styles": list(self.styles) if self.styles else None, "top_k": self.top_k,
                "seed": self.seed, "variety": self.variety}


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
           variety: float = 0.0) -> Decoded:
    """Decode the dance-phrase sequence for a song.

    Parameters
    ----------
    probs : np.ndarray [shape=(P, K)]
        Scorer probabilities per music phrase (rows need not sum to 1).
    transition : np.ndarray [shape=(K, K)]
        ``M[i, j]``: how acceptable phrase j is after phrase i, in [0.01, 1] (spec section 5.3).
    method : "greedy" | "viterbi"
    no_repeat, allowed, locks, top_k, seed, variety
        See the module docstring.
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
    logm = np.log(np.maximum(m, _EPS))

    if method == "greedy":
        seq = _greedy(logp, logm, allow, locks, no_repeat)
    else:
        seq = _viterbi(logp, logm, allow, locks, no_repeat)

    # ranked alternatives (Eq. 6 rescaling by the chosen previous phrase)
    kk = max(1, min(int(top_k), int(allow.sum()) or k))
    top_i = np.zeros((n_phr, kk), dtype=np.int64)
    top_s = np.zeros((n_phr, kk))
    top_p = np.zeros((n_phr, kk))
    for t in range(n_phr):
        q = p[t] * (m[seq[t - 1]] if t else 1.0)
        q = np.where(allow, q, 0.0)
        if q.sum() <= 0:
            q = p[t].copy()
        q = q / max(q.sum(), _EPS)
        order = np.lexsort((np.arange(k), -q))[:kk]
        top_i[t], top_s[t], top_p[t] = order, q[order], p[t, order]
    total = float(logp[np.arange(n_phr), seq].sum()
                  + (logm[seq[:-1], seq[1:]].sum() if n_phr > 1 else 0.0))
    return Decoded(sequence=seq, top_index=top_i, top_score=top_s, top_prob=top_p,
                   log_score=total)


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


def _greedy(logp, logm, allow, locks, no_repeat) -> np.ndarray:
    n_phr = logp.shape[0]
    seq = np.zeros(n_phr, dtype=np.int64)
    prev = None
    for t in range(n_phr):
        if t in locks:
            seq[t] = locks[t]
        else:
            v = logp[t] + (logm[prev] if prev is not None else 0.0)
            v = np.where(_row_mask(allow, prev, no_repeat), v, -np.inf)
            seq[t] = _argmax(v)
        prev = int(seq[t])
    return seq


def _viterbi(logp, logm, allow, locks, no_repeat) -> np.ndarray:
    n_phr, k = logp.shape
    neg = -1e30
    emit = np.where(allow, logp, neg)
    for t, j in locks.items():
        row = np.full(k, neg)
        row[j] = logp[t, j]
        emit[t] = row
    trans = logm.copy()
    if no_repeat and k > 1:
        np.fill_diagonal(trans, neg)
    delta = emit[0].copy()
    back = np.zeros((n_phr, k), dtype=np.int64)
    for t in range(1, n_phr):
        cand = delta[:, None] + trans              # (prev, cur)
        best_prev = np.argmax(cand, axis=0)        # first maximum = lowest index on ties
        best = cand[best_prev, np.arange(k)]
        if no_repeat and (best + emit[t] <= neg / 2).all():
            # only repeats are feasible here (e.g. two equal locks): allow them for this step
            cand = delta[:, None] + logm
            best_prev = np.argmax(cand, axis=0)
            best = cand[best_prev, np.arange(k)]
        back[t] = best_prev
        delta = best + emit[t]
    seq = np.zeros(n_phr, dtype=np.int64)
    seq[-1] = _argmax(delta)
    for t in range(n_phr - 1, 0, -1):
        seq[t - 1] = back[t, seq[t]]
    return seq
