"""A choreography report a choreographer can look at: one self-contained HTML page (no bpy).

From a :class:`~blender_m2d.core.plan.Plan` (placed, so it carries the measured metrics), the
song's samples and optionally its analysis:

* a timeline (matplotlib PNG, inlined as base64): the waveform, the music beats, the music
  phrase boundaries with the chosen dance phrase and its rank among the candidates, the song's
  sections, the crossfades and the dance beats the supplement's detector found on the placed
  animation (hit = within 0.1 s of a music beat, one-to-one; miss otherwise). An overview of the
  whole song comes first, then the song in equal rows of at most ``row_s`` seconds;
* the paper's four beat metrics (beat coverage, beat hit rate, music hit rate, beat overlap) for
  the whole song, pooled over 30 s clips and averaged per clip, next to the paper's Table 3;
* the seam metrics (root jump, root gap, foot skate) and the beat sync's before/after figures;
* the phrases: music interval, beats, the chosen dance phrase, its rank and score among the
  ranked candidates, the alternatives, the time warp, the dance beats and hits inside it.

Element ids the tests (and scripts) rely on: ``timeline`` (the ``<img>``), ``metrics``,
``seams`` and ``phrases`` (the ``<table>``s).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .core.fileio import write_bytes_atomic
from .core.metrics import HIT_TOLERANCE_S

PAPER_TABLE3 = {"beat_coverage": 0.874, "beat_hit_rate": 0.632, "music_hit_rate": 0.552,
                "beat_overlap": 0.417}
"""The paper's own row of Table 3 ("Ours"), for reference."""

BEAT_METRICS = (("beat_coverage", "Beat coverage", "N_d / N_m"),
                ("beat_hit_rate", "Beat hit rate", "N_h / N_d (precision)"),
                ("music_hit_rate", "Music hit rate", "N_h / N_m (recall)"),
                ("beat_overlap", "Beat overlap", "N_h / (N_m + N_d - N_h) (IoU)"))


# =========================================================================== helpers
def hit_mask(dance_s: np.ndarray, music_s: np.ndarray, tol_s: float = HIT_TOLERANCE_S
             ) -> np.ndarray:
    """Per dance beat: matched one-to-one to a music beat within ``tol_s`` (the same two-pointer
    matching as :func:`blender_m2d.core.metrics.count_hits`)."""
    d = np.asarray(dance_s, dtype=np.float64)
    m = np.sort(np.asarray(music_s, dtype=np.float64))
    order = np.argsort(d, kind="stable")
    hit = np.zeros(d.size, dtype=bool)
    i = j = 0
    while i < order.size and j < m.size:
        x = d[order[i]]
        if abs(x - m[j]) <= tol_s + 1e-9:
            hit[order[i]] = True
            i += 1
            j += 1
        elif x < m[j]:
            i += 1
        else:
            j += 1
    return hit


def candidate_rank(phrase) -> int | None:
    """1-based rank of the chosen dance phrase among the phrase's ranked candidates (None when
    it is not among them, e.g. a lock or a swap to a phrase outside the top k)."""
    for k, c in enumerate(phrase.candidates, start=1):
        if c.phrase_id == phrase.phrase_id:
            return k
    return None


def dance_beats_of(plan) -> np.ndarray:
    return np.asarray(plan.metrics.get("beats", {}).get("dance_beats_s", []), dtype=np.float64)


def _envelope(y: np.ndarray, sr: int, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Min/max of the samples in ``n_bins`` equal time bins: (times, lo, hi)."""
    y = np.asarray(y, dtype=np.float32).ravel()
    n_bins = max(1, min(n_bins, y.size))
    edges = np.linspace(0, y.size, n_bins + 1).astype(np.int64)
    lo = np.minimum.reduceat(y, edges[:-1]) if y.size else np.zeros(n_bins)
    hi = np.maximum.reduceat(y, edges[:-1]) if y.size else np.zeros(n_bins)
    t = (edges[:-1] + edges[1:]) * 0.5 / sr
    return t, lo, hi


# =========================================================================== timeline
def timeline_png(plan, *, y: np.ndarray | None = None, sr: int | None = None,
                 sections: Sequence[tuple[float, float, int]] = (), row_s: float = 30.0,
                 dpi: int = 100) -> bytes:
    """The timeline picture as PNG bytes (see the module docstring).

    ``y``/``sr``: the song's mono samples (the waveform is left out without them);
    ``sections``: ``(start_s, end_s, label)`` of the song's structure.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    duration = float(plan.song.get("duration_s") or 0.0)
    if duration <= 0 and plan.phrases:
        duration = float(plan.phrases[-1].music_end_s)
    duration = max(duration, 1e-3)
    music = np.asarray(plan.beats_s, dtype=np.float64)
    dance = dance_beats_of(plan)
    hit = hit_mask(dance, music)
    n_rows = max(1, int(np.ceil(duration / row_s - 1e-9)))
    row_s = duration / n_rows                     # equal rows, the last one not mostly empty
    width_in = 16.0
    fig = plt.figure(figsize=(width_in, 1.9 + 1.55 * n_rows), dpi=dpi)
    gs = fig.add_gridspec(n_rows + 1, 1, height_ratios=[1.25] + [1.0] * n_rows, hspace=0.55)
    env = None
    if y is not None and sr and np.asarray(y).size:
        env = _envelope(np.asarray(y), int(sr), int(width_in * dpi * 2 * max(1.0, n_rows)))
        peak = max(float(np.max(np.abs(env[1:]))), 1e-6)
        env = (env[0], env[1] / peak, env[2] / peak)
    sec_colors = plt.get_cmap("Pastel2")
    xf_s = plan.crossfade_frames / plan.fps if plan.fps else 0.0
    ranks = [candidate_rank(p) for p in plan.phrases]

    def draw(ax, t0: float, t1: float, *, labels: str) -> None:
        for s, e, lab in sections:
            if e > t0 and s < t1:
                ax.axvspan(max(s, t0), min(e, t1), color=sec_colors(int(lab) % 8), alpha=0.45,
                           lw=0, zorder=0)
        if env is not None:
            sel = (env[0] >= t0) & (env[0] <= t1)
            ax.fill_between(env[0][sel], env[1][sel], env[2][sel], color="0.55", lw=0,
                            zorder=1)
        for ph in plan.phrases[1:]:
            c = ph.music_start_s
            if t0 - xf_s < c < t1 + xf_s and xf_s > 0:
                ax.axvspan(c - xf_s / 2, c + xf_s / 2, ymin=0.0, ymax=0.1, color="black",
                           alpha=0.5, lw=0, zorder=1)
        mb = music[(music >= t0) & (music <= t1)]
        ax.vlines(mb, 0.15, 1.05, color="tab:blue", lw=0.9, zorder=2)
        sel = (dance >= t0) & (dance <= t1)
        ax.vlines(dance[sel & hit], -1.05, -0.15, color="tab:green", lw=1.6, zorder=3)
        ax.vlines(dance[sel & ~hit], -1.05, -0.15, color="tab:red", lw=1.6, zorder=3)
        for i, ph in enumerate(plan.phrases):
            s = ph.music_start_s
            if t0 - 1e-6 <= s <= t1:
                ax.axvline(s, color="black", lw=1.4 if labels == "full" else 0.9, zorder=4)
            if labels == "none":
                continue
            centre = 0.5 * (ph.music_start_s + ph.music_end_s)
            if not t0 <= centre < t1 and not (centre >= t1 and t1 >= duration - 1e-6):
                continue                    # labelled in the row that holds its middle
            mid = 0.5 * (max(ph.music_start_s, t0) + min(ph.music_end_s, t1))
            r = ranks[i]
            text = f"{i + 1}" if labels == "index" else (
                f"{i + 1}: {ph.phrase_id} · rank {r if r else '-'}"
                + (" · locked" if ph.locked else ""))
            ax.text(mid, 1.15, text, ha="center", va="bottom", fontsize=7 if labels == "full"
                    else 6, color="black", zorder=5, clip_on=True)
        ax.set_xlim(t0, t1)
        ax.set_ylim(-1.15, 1.55)
        ax.set_yticks([0.6, -0.6], ["music", "dance"], fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)

    ax0 = fig.add_subplot(gs[0])
    draw(ax0, 0.0, duration, labels="index" if len(plan.phrases) <= 60 else "none")
    beats = plan.metrics.get("beats", {}).get("song", {})
    head = Path(str(plan.song.get("path", "song"))).name
    summary = ""
    if beats:
        summary = (f"   beat hit rate {beats.get('beat_hit_rate', 0):.1%}, music hit rate "
                   f"{beats.get('music_hit_rate', 0):.1%}, coverage "
                   f"{beats.get('beat_coverage', 0):.1%}, overlap "
                   f"{beats.get('beat_overlap', 0):.3f}")
    ax0.set_title(f"{head}: whole song ({duration:.1f} s, {len(plan.phrases)} phrases){summary}",
                  fontsize=9, loc="left")
    for k in range(n_rows):
        ax = fig.add_subplot(gs[k + 1])
        t0 = k * row_s
        draw(ax, t0, t0 + row_s, labels="full")
        if k == n_rows - 1:
            ax.set_xlabel("time (s)", fontsize=8)
        ax.axvline(duration, color="0.3", lw=0.8, ls=":")
    handles = [Patch(color="0.55", label="waveform"),
               Line2D([], [], color="tab:blue", lw=1.2, label="music beats"),
               Line2D([], [], color="tab:green", lw=1.6, label="dance beat: hit (±0.1 s)"),
               Line2D([], [], color="tab:red", lw=1.6, label="dance beat: miss"),
               Line2D([], [], color="black", lw=1.4, label="music phrase boundary"),
               Patch(color="black", alpha=0.5, label="crossfade")]
    if sections:
        handles.append(Patch(color=sec_colors(0), label="song sections (by label)"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 1.0))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


# =========================================================================== HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:1.4em;margin-bottom:4px} h2{font-size:1.1em;margin-top:28px}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f4f4f4} td.l,th.l{text-align:left}
tr.warn td{background:#fff4e5}
img#timeline{max-width:100%;border:1px solid #eee}
.muted{color:#888} code{font-size:12px} .nw{white-space:nowrap}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _pct(x: Any) -> str:
    return f"{float(x):.1%}" if isinstance(x, (int, float)) else "—"


def _f(x: Any, nd: int = 2) -> str:
    return f"{float(x):.{nd}f}" if isinstance(x, (int, float)) else "—"


def _table(tid: str, head: Sequence[str], rows: Sequence[Sequence[Any]], *,
           left: Sequence[int] = (0,), row_class: Sequence[str] | None = None) -> str:
    out = [f'<table id="{tid}">', "<thead><tr>"]
    out += [f'<th class="{"l" if k in left else ""}">{_e(h)}</th>' for k, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for n, r in enumerate(rows):
        cls = f' class="{row_class[n]}"' if row_class and row_class[n] else ""
        out.append(f"<tr{cls}>" + "".join(
            f'<td class="{"l" if k in left else ""}">{c}</td>' for k, c in enumerate(r))
            + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _metrics_section(plan) -> str:
    beats = plan.metrics.get("beats", {})
    song = beats.get("song", {})
    clips = beats.get("clips_30s", {})
    pooled, per_clip = clips.get("pooled", {}), clips.get("per_clip_mean", {})
    sync = (plan.placement or {}).get("beat_sync") or {}
    before = (sync.get("canonical_before") or {})
    after = (sync.get("canonical_after") or {})
    before = before.get("song", before) if isinstance(before, dict) else {}
    after = after.get("song", after) if isinstance(after, dict) else {}
    if not song:
        return ('<table id="metrics"><tbody><tr><td class="l">not measured: the plan was not '
                "placed on an armature (choreograph it, or open it in Blender and place "
                "it)</td></tr></tbody></table>")
    rows = []
    for key, name, formula in BEAT_METRICS:
        fmt = _f if key == "beat_overlap" else _pct
        nd = {"nd": 3} if key == "beat_overlap" else {}
        cells = [f"<b>{_e(name)}</b> <span class=muted>{_e(formula)}</span>",
                 f"<b>{fmt(song.get(key), **nd)}</b>", fmt(pooled.get(key), **nd),
                 fmt(per_clip.get(key), **nd)]
        if sync:
            cells += [fmt(before.get(key), **nd), fmt(after.get(key), **nd)]
        cells.append(fmt(PAPER_TABLE3[key], **nd))
        rows.append(cells)
    counts = ["counts N_d / N_m / N_h", f"{song.get('n_dance', '—')} / {song.get('n_music', '—')}"
              f" / {song.get('n_hits', '—')}",
              f"{pooled.get('n_dance', '—')} / {pooled.get('n_music', '—')} / "
              f"{pooled.get('n_hits', '—')}", f"{clips.get('n_clips', '—')} clips"]
    if sync:
        counts += ["", ""]
    counts.append("")
    rows.append(counts)
    head = ["beat metric (±0.1 s, one-to-one)", "whole song", "30 s clips, pooled",
            "30 s clips, mean"]
    if sync:
        head += ["canonical, before beat sync", "canonical, after beat sync"]
    head.append("paper, Table 3 (Ours)")
    return _table("metrics", head, rows)


def _seams_section(plan) -> str:
    seams = plan.metrics.get("seams", {})
    feet = plan.metrics.get("feet", {})
    if not seams and not feet:
        return ('<table id="seams"><tbody><tr><td class="l">not measured</td></tr>'
                "</tbody></table>")
    zones, xfs = feet.get("seam_zones", {}), feet.get("crossfades_only", {})
    rows = [
        ["max root jump (extra root step a crossfade adds)",
         f"{_f(seams.get('max_root_jump_cm'))} cm"],
        ["max root gap (roots apart at a crossfade middle)",
         f"{_f(seams.get('max_root_gap_cm'))} cm"],
        ["foot skate in the seam zones (mean / max)",
         f"{_f(zones.get('mean_cm_s'))} / {_f(zones.get('max_cm_s'), 0)} cm/s "
         f"({zones.get('contact_steps', '—')} contact steps)"],
        ["foot skate in the crossfades only (mean / max)",
         f"{_f(xfs.get('mean_cm_s'))} / {_f(xfs.get('max_cm_s'), 0)} cm/s "
         f"({xfs.get('contact_steps', '—')} contact steps)"],
        ["placement", _e(", ".join(f"{k} {v}" for k, v in (plan.placement or {}).items()
                                   if k != "beat_sync"))],
        ["evaluated on", _e(plan.metrics.get("evaluation", "—"))],
    ]
    return _table("seams", ["seam metric", "value"], rows, left=(0, 1))


def _phrases_section(plan) -> str:
    music = np.asarray(plan.beats_s, dtype=np.float64)
    dance = dance_beats_of(plan)
    hit = hit_mask(dance, music)
    per_seam = {int(s.get("index", -1)): s for s in plan.metrics.get("seams", {}).get(
        "per_seam", [])}
    rows, classes = [], []
    for i, ph in enumerate(plan.phrases):
        r = candidate_rank(ph)
        chosen = next((c for c in ph.candidates if c.phrase_id == ph.phrase_id), None)
        alts = ", ".join(f"{_e(c.phrase_id)} {c.score:.2f}" for c in ph.candidates
                         if c.phrase_id != ph.phrase_id)
        sel = (dance >= ph.music_start_s) & (dance < ph.music_end_s)
        w = ph.warp or {}
        seam = per_seam.get(i, {})
        rows.append([
            str(i + 1), f'<span class="nw">{ph.music_start_s:.2f}–{ph.music_end_s:.2f}</span>',
            str(ph.n_music_beats),
            f"<b>{_e(ph.phrase_id)}</b>" + (" 🔒" if ph.locked else ""),
            str(r) if r else "—", _f(chosen.score, 3) if chosen else "—",
            _f(chosen.prob, 3) if chosen else "—",
            f"{_f(w.get('rate_min'))}–{_f(w.get('rate_max'))}",
            f"{w.get('anchored_beats', '—')}/{w.get('dance_beats', '—')}",
            _f(w.get("hold_s")), f"{int(sel.sum())} / {int((sel & hit).sum())}",
            _f(seam.get("root_jump_cm")) if seam else "",
            alts or "—"])
        classes.append("warn" if (r is None or r > 1) else "")
    head = ["#", "music (s)", "beats", "dance phrase", "rank", "score", "prob",
            "warp rate", "anchored / dance beats", "hold (s)", "dance beats / hits",
            "seam jump (cm)", "alternatives (score)"]
    return _table("phrases", head, rows, left=(3, 12), row_class=classes)


def build_html(plan, *, png: bytes, title: str | None = None, notes: Sequence[str] = ()) -> str:
    """The report page (see the module docstring) around the timeline ``png``."""
    song = plan.song
    name = title or Path(str(song.get("path", "song"))).name
    ranks = [candidate_rank(p) for p in plan.phrases]
    top1 = sum(1 for r in ranks if r == 1)
    timings = plan.timings_s or {}
    sub = (f"{float(song.get('duration_s', 0)):.1f} s, {float(song.get('tempo_bpm', 0)):.0f} "
           f"bpm, {len(plan.beats_s)} music beats, {len(plan.phrases)} music phrases · scorer "
           f"<b>{_e(plan.scorer.get('kind', '?'))}</b>, decoder "
           f"<b>{_e(plan.decoding.get('method', '?'))}</b> · library "
           f"{_e(Path(str(plan.library.get('path', ''))).name or '?')} "
           f"(K = {plan.library.get('n_phrases', '?')}) · {plan.fps:g} fps")
    img = base64.b64encode(png).decode("ascii")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>m2d report: {_e(name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(name)}</h1>", f'<p class="sub">{sub}</p>',
        "<h2>Timeline</h2>",
        '<p class="muted">Top: the whole song. Below: the same timeline in rows of at most '
        "30 s. Blue: "
        "music beats; green/red: dance beats of the placed animation (hit within ±0.1 s of a "
        "music beat, one-to-one / miss); black: music phrase boundaries, labelled with the "
        "chosen dance phrase and its rank among the candidates; dark bars at the bottom: "
        "crossfades; background: song sections.</p>",
        f'<img id="timeline" alt="timeline of {_e(name)}" src="data:image/png;base64,{img}">',
        "<h2>Beat metrics</h2>", _metrics_section(plan),
        "<h2>Seams</h2>", _seams_section(plan),
        "<h2>Phrases</h2>",
        f'<p class="muted">{top1} of {len(ranks)} phrases use their top-ranked candidate; '
        "highlighted rows use a lower-ranked one (a seed, a lock, a swap or the no-repeat "
        "rule).</p>",
        _phrases_section(plan),
    ]
    if timings:
        parts += ["<h2>Timings</h2>", _table("timings", ["stage", "seconds"], [
            [_e(k), _f(v, 3)] for k, v in timings.items()])]
    if notes:
        parts += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{_e(n)}</li>" for n in notes] + ["</ul>"]
    parts += ['<p class="muted">Written by <code>m2d report</code> (blender_m2d). Beat metrics: '
              "spec section 6.3; dance beats: the supplement's self-adaptive detector.</p>",
              "</body></html>"]
    return "\n".join(parts) + "\n"


def _sections_of(analysis) -> list[tuple[float, float, int]]:
    if analysis is None:
        return []
    out = []
    for s in getattr(analysis, "sections", []) or []:
        if isinstance(s, dict):
            out.append((float(s["start_s"]), float(s["end_s"]), int(s.get("label", 0))))
        else:
            out.append((float(s.start_s), float(s.end_s), int(getattr(s, "label", 0))))
    return out


def song_path_of(plan, plan_path: str | os.PathLike | None = None) -> Path | None:
    """The plan's song file if it can be found (as written, or relative to the plan file)."""
    p = Path(str(plan.song.get("path", "")))
    if not str(p):
        return None
    cands = [p]
    if plan_path is not None and not p.is_absolute():
        cands.append(Path(plan_path).parent / p)
    return next((c for c in cands if c.is_file()), None)


def write_report(path: str | os.PathLike, plan, *, y: np.ndarray | None = None,
                 sr: int | None = None, analysis=None, png_path: str | os.PathLike | None = None,
                 title: str | None = None, notes: Sequence[str] = ()) -> Path:
    """Render the timeline and write the HTML report (and the PNG alone when ``png_path``)."""
    png = timeline_png(plan, y=y, sr=sr, sections=_sections_of(analysis))
    notes = list(notes)
    if y is None:
        notes.append("the song's audio was not available: the waveform is left out")
    page = build_html(plan, png=png, title=title, notes=notes)
    if png_path is not None:
        write_bytes_atomic(png_path, png)
    return write_bytes_atomic(path, page.encode("utf-8"))
