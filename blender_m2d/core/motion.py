"""Motion analysis on joint trajectories: the supplement's self-adaptive dance-beat detector.

Used by the library (cut takes into phrases at dance beats), by choreography metrics (dance beats
of the placed animation) and by the benchmarks, so every dance beat in the project comes from this
one function.
"""

from __future__ import annotations

import numpy as np

DETECTOR_FPS = 30.0
"""Frame rate the detector works at (the paper's 30 fps); inputs are resampled to it."""


def resample_positions(positions: np.ndarray, fps: float, target_fps: float) -> np.ndarray:
    """Linearly resample joint positions [shape=(F, J, D)] from ``fps`` to ``target_fps``."""
    positions = np.asarray(positions, dtype=np.float64)
    if abs(fps - target_fps) < 1e-9 or positions.shape[0] < 2:
        return positions
    duration_s = (positions.shape[0] - 1) / fps
    n = int(np.floor(duration_s * target_fps + 1e-9)) + 1
    t_src = np.arange(positions.shape[0]) / fps
    t_dst = np.arange(n) / target_fps
    flat = positions.reshape(positions.shape[0], -1)
    out = np.empty((n, flat.shape[1]))
    for c in range(flat.shape[1]):
        out[:, c] = np.interp(t_dst, t_src, flat[:, c])
    return out.reshape((n, *positions.shape[1:]))


def detect_dance_beats(positions: np.ndarray, fps: float, *, alpha_v: float = 0.5,
                       alpha_a: float = 1.0 / np.sqrt(3.0), window_s: float = 0.4,
                       project_2d: bool = True, derivatives: str = "per_frame") -> np.ndarray:
    """Dance beats of a motion, in seconds from its first frame (supplement section 5).

    Parameters
    ----------
    positions : np.ndarray [shape=(F, J, 3)]
        World joint positions in metres (Blender axes: +Z up, front view looks along +Y).
    fps : float
        Frame rate of ``positions`` in frames per second; resampled to 30 fps internally
        because the thresholds are tied to per-frame differences.
    alpha_v, alpha_a, window_s : float
        The paper's settings: T_V = mean(|V|) - alpha_v * std(|V|) (clamped >= 0),
        T_A = alpha_a * T_V, non-maximum suppression over ``window_s`` seconds.
    project_2d : bool
        Use the front-view 2D projection (X, Z), as the paper does for all methods.
    derivatives : str
        ``"per_frame"`` (default, the spec's reading): V and A are per-frame differences at
        30 fps, so T_A = alpha_a * T_V compares them numerically. ``"per_second"``: V and A are
        time derivatives (m/s, m/s^2), the literal reading of V = dS/dt, A = d2S/dt2. Per-frame
        differences make the acceleration test reject the stops of smooth motion slower than
        about 1.4 Hz (a 1 Hz arm swing gives no beat at all), which leaves slow dances such as
        CMU subject 5's modern takes with 0-6 beats in 5-10 s; the dance library cuts phrases
        with ``"per_second"`` (see docs/library.md).

    Returns
    -------
    np.ndarray [shape=(n,)]
        Beat times in seconds, ascending.
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 3 or pos.shape[2] != 3:
        raise ValueError(f"positions must have shape (F, J, 3), got {pos.shape}")
    if project_2d:
        pos = pos[:, :, [0, 2]]
    pos = resample_positions(pos, fps, DETECTOR_FPS)
    n = pos.shape[0]
    if n < 5:
        return np.zeros(0)
    s = pos.reshape(n, -1)
    v = np.zeros_like(s)
    a = np.zeros_like(s)
    if derivatives not in ("per_frame", "per_second"):
        raise ValueError(f"derivatives must be 'per_frame' or 'per_second', got {derivatives!r}")
    dt = 1.0 / DETECTOR_FPS if derivatives == "per_second" else 1.0
    v[1:-1] = (s[2:] - s[:-2]) * 0.5 / dt
    a[1:-1] = (s[2:] - 2.0 * s[1:-1] + s[:-2]) / (dt * dt)
    speed = np.linalg.norm(v, axis=1)
    accel = np.linalg.norm(a, axis=1)
    inner = slice(1, n - 1)
    t_v = max(float(speed[inner].mean() - alpha_v * speed[inner].std()), 0.0)
    t_a = alpha_a * t_v
    coarse = np.zeros(n, dtype=bool)
    coarse[inner] = (speed[inner] < t_v) & (accel[inner] > t_a)
    strength = (t_v - speed) + (accel - t_a)
    half = max(round(window_s * DETECTOR_FPS / 2), 1)
    keep = []
    for t in np.flatnonzero(coarse):
        lo, hi = max(t - half, 0), min(t + half + 1, n)
        window = np.where(coarse[lo:hi], strength[lo:hi], -np.inf)
        if strength[t] >= window.max() and not (keep and t - keep[-1] <= half):
            keep.append(t)
    return np.asarray(keep, dtype=np.float64) / DETECTOR_FPS
