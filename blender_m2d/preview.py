"""A preview picture of a choreographed dance (matplotlib, no bpy).

Drawn from the *evaluated* animation (world joint positions per frame, e.g.
``AppliedPlan.positions``): a filmstrip of front-view stick figures, one per music phrase at
its middle, over a timeline with the music beats, the detected dance beats (hits green,
misses red), the phrase boundaries with the chosen phrase ids and the dancer's motion energy.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .core.fileio import write_bytes_atomic
from .core.metrics import HIT_TOLERANCE_S
from .core.skeleton import CANON_PARENTS


def _hits(dance_s: np.ndarray, music_s: np.ndarray, tol: float) -> np.ndarray:
    """Boolean per dance beat: matched one-to-one to a music beat within ``tol``."""
    d_order = np.argsort(dance_s)
    m = np.sort(music_s)
    hit = np.zeros(dance_s.size, bool)
    i = j = 0
    while i < d_order.size and j < m.size:
        d = dance_s[d_order[i]]
        if abs(d - m[j]) <= tol + 1e-9:
            hit[d_order[i]] = True
            i += 1
            j += 1
        elif d < m[j]:
            i += 1
        else:
            j += 1
    return hit


def render_preview(path: str | os.PathLike, positions: np.ndarray, plan, *,
                   dance_beats_s: np.ndarray | None = None, max_figures: int = 12,
                   title: str | None = None) -> Path:
    """Write the preview PNG (atomically) and return its path.

    Parameters
    ----------
    positions : np.ndarray [shape=(F, J, 3)]
        World joint positions (canonical joints) of the evaluated animation, frames
        ``plan.frame_start..plan.frame_end``.
    plan : Plan
        The applied plan (phrases, beats, fps, metrics).
    dance_beats_s : np.ndarray, optional
        Dance beats (s); default: those stored in ``plan.metrics``.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    pos = np.nan_to_num(np.asarray(positions, dtype=np.float64))
    fps = plan.fps
    t = np.arange(pos.shape[0]) / fps
    music = np.asarray(plan.beats_s, dtype=np.float64)
    if dance_beats_s is None:
        dance_beats_s = plan.metrics.get("beats", {}).get("dance_beats_s", [])
    dance = np.asarray(dance_beats_s, dtype=np.float64)
    hit = _hits(dance, music, HIT_TOLERANCE_S)

    phrases = list(plan.phrases)
    step = max(1, int(np.ceil(len(phrases) / max_figures)))
    shown = phrases[::step]
    fig = plt.figure(figsize=(max(10.0, 1.25 * len(shown)), 5.6), dpi=110)
    gs = fig.add_gridspec(2, 1, height_ratios=[2.0, 1.3], hspace=0.08)
    ax_f = fig.add_subplot(gs[0])
    ax_t = fig.add_subplot(gs[1])

    # --- filmstrip: front view (x, z), each figure centred on its hips
    gap = 1.2
    for k, ph in enumerate(shown):
        mid_s = 0.5 * (ph.music_start_s + ph.music_end_s)
        f = int(np.clip(round(mid_s * fps), 0, pos.shape[0] - 1))
        p = pos[f]
        x0 = p[0, 0]
        for j, par in enumerate(CANON_PARENTS):
            if par < 0:
                continue
            ax_f.plot([p[par, 0] - x0 + k * gap, p[j, 0] - x0 + k * gap],
                      [p[par, 2], p[j, 2]], color="C0", lw=2, solid_capstyle="round")
        ax_f.plot(p[4, 0] - x0 + k * gap, p[4, 2], "o", color="C0", ms=6)
        ax_f.text(k * gap, -0.12, f"{ph.index + 1}: {ph.phrase_id}"[:22], ha="center",
                  va="top", fontsize=7)
        ax_f.text(k * gap, pos[:, :, 2].max() + 0.12, f"{mid_s:.1f} s", ha="center",
                  fontsize=7, color="0.4")
    ax_f.set_aspect("equal")
    ax_f.set_xlim(-0.8, (len(shown) - 1) * gap + 0.8)
    ax_f.set_ylim(-0.35, pos[:, :, 2].max() + 0.3)
    ax_f.axis("off")
    beats = plan.metrics.get("beats", {}).get("song", {})
    seams = plan.metrics.get("seams", {})
    feet = plan.metrics.get("feet", {}).get("seam_zones", {})
    head = title or Path(str(plan.song.get("path", ""))).name
    summary = (f"beat hit rate {beats.get('beat_hit_rate', float('nan')):.1%}   "
               f"beat overlap {beats.get('beat_overlap', float('nan')):.3f}   "
               f"coverage {beats.get('beat_coverage', float('nan')):.1%}   "
               f"max root jump {seams.get('max_root_jump_cm', float('nan')):.2f} cm   "
               f"foot skate at seams {feet.get('mean_cm_s', float('nan')):.1f} cm/s")
    ax_f.set_title(f"{head}  ({plan.scorer.get('kind', '?')}, "
                   f"{plan.decoding.get('method', '?')})\n{summary}", fontsize=9)

    # --- timeline
    speed = np.zeros(pos.shape[0])
    if pos.shape[0] > 1:
        speed[1:] = np.linalg.norm(np.diff(pos, axis=0), axis=2).mean(axis=1) * fps
    ax_t.plot(t, speed, color="0.55", lw=0.8, label="motion energy (mean joint speed, m/s)")
    top = max(float(speed.max()), 1e-3) * 1.15
    ax_t.vlines(music, 0, top, color="0.8", lw=0.6, label="music beats")
    if dance.size:
        y = np.interp(dance, t, speed)
        ax_t.plot(dance[hit], y[hit], "o", color="tab:green", ms=4, label="dance beat: hit")
        ax_t.plot(dance[~hit], y[~hit], "x", color="tab:red", ms=4, label="dance beat: miss")
    for ph in phrases:
        ax_t.axvline(ph.music_start_s, color="C0", lw=0.8, alpha=0.6)
        if len(phrases) <= 40:
            ax_t.text(ph.music_start_s + 0.1, top * 0.98, ph.phrase_id[:14], fontsize=6,
                      rotation=90, va="top", color="C0")
    ax_t.set_xlim(0, t[-1] if t.size else 1)
    ax_t.set_ylim(0, top)
    ax_t.set_xlabel("time (s)")
    ax_t.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), fontsize=7, ncol=4,
                frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())
