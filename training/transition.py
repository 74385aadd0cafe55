"""The dance-phrase transition matrix M (paper section 5.3, Algorithm 1 steps b and f-g).

M(i -> j) in [0.01, 1] is how acceptable dance phrase j is right after dance phrase i. It
rescales a phrase's class probabilities given the previous phrase's choice (Eq. 6). All numpy.
"""

from __future__ import annotations

import numpy as np

M_MIN, M_MAX = 0.01, 1.0


def initial_transition(similarity: np.ndarray | None, k: int, labels: np.ndarray,
                       prev: np.ndarray) -> np.ndarray:
    """M0 (spec 8 #27): the dance-style similarity (1 everywhere without style information),
    raised to 1 for every transition observed between adjacent labelled phrases, clipped.

    Parameters
    ----------
    similarity : (K, K) in [0, 1] or None
    labels : (n,) int — labels of the labelled training phrases, in song order
    prev : (n,) int — position (into ``labels``) of each phrase's adjacent predecessor, or -1
    """
    m = np.ones((k, k), np.float32) if similarity is None else np.array(similarity, np.float32)
    has = prev >= 0
    m[labels[prev[has]], labels[has]] = 1.0
    return np.clip(m, M_MIN, M_MAX)


def rescale_greedy(probs: np.ndarray, prev: np.ndarray, m: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 6 applied left to right: phrase t's probabilities times M(d_{t-1} -> .), where
    d_{t-1} is the (rescaled) choice for the previous phrase; a phrase without a predecessor is
    not rescaled. Each rescaled row is renormalised to sum to 1 (spec 5.4, threshold scale).

    ``prev[i]`` must be -1 or < i. Returns (rescaled probabilities (n, K), choices (n,)).
    """
    probs = np.asarray(probs, np.float64)
    n = probs.shape[0]
    out = probs.copy()
    choice = np.empty(n, np.int64)
    # process "waves": phrases whose predecessor is already decided, vectorised per wave
    depth = np.zeros(n, np.int64)
    for i in range(n):  # prev[i] < i, so one forward pass gives each phrase's depth
        if prev[i] >= 0:
            depth[i] = depth[prev[i]] + 1
    order = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[order], np.arange(depth.max(initial=0) + 2))
    for d in range(len(bounds) - 1):
        idx = order[bounds[d]:bounds[d + 1]]
        if idx.size == 0:
            continue
        if d > 0:
            q = probs[idx] * m[choice[prev[idx]]]
            out[idx] = q / np.maximum(q.sum(axis=1, keepdims=True), 1e-30)
        choice[idx] = np.argmax(out[idx], axis=1)
    return out.astype(np.float32), choice


def update_transition(m: np.ndarray, rescaled: np.ndarray, prev: np.ndarray, alpha: float
                      ) -> np.ndarray:
    """Algorithm 1 steps f-g as read in spec 5.4: accumulate
    C(i -> j) = sum over adjacent pairs of P(d_{t-1}) * P(d_t) (top-1 choices and confidences of
    the rescaled probabilities), normalise each row by its maximum, then
    M' = clip(alpha * M + (1 - alpha) * C~, 0.01, 1). Rows with no pair at all keep M."""
    choice = rescaled.argmax(axis=1)
    conf = rescaled[np.arange(len(choice)), choice].astype(np.float64)
    has = prev >= 0
    a, b = choice[prev[has]], choice[has]
    w = conf[prev[has]] * conf[has]
    k = m.shape[0]
    c = np.zeros((k, k), np.float64)
    np.add.at(c, (a, b), w)
    rowmax = c.max(axis=1, keepdims=True)
    seen = rowmax[:, 0] > 0
    c_norm = np.where(seen[:, None], c / np.maximum(rowmax, 1e-30), 0.0)
    new = np.where(seen[:, None], alpha * m + (1 - alpha) * c_norm, m)
    return np.clip(new, M_MIN, M_MAX).astype(np.float32)


def subset_prev(prev: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Restrict a global predecessor array to ``rows`` (sorted): positions into ``rows``, -1
    where the predecessor is not in the subset."""
    pos = np.full(prev.shape[0], -1, np.int64)
    pos[rows] = np.arange(rows.size)
    p = prev[rows]
    return np.where(p >= 0, pos[np.maximum(p, 0)], -1)
