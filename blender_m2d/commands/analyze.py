"""``m2d analyze SONG [--json OUT.json]``: beats, sections and music phrases of a song."""

from __future__ import annotations

import argparse

NAME = "analyze"
HELP = "analyse a song: tempo, beats, downbeats, sections and music phrases (optionally JSON)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("song", help="audio file (wav, flac, ogg, mp3; m4a/aac inside Blender)")
    parser.add_argument("--json", metavar="OUT.json",
                        help="write the analysis here (format m2d-song-analysis, docs/formats.md)")
    parser.add_argument("--melody", choices=("crepe", "crepe-fp32", "pyin", "pyin-coarse"),
                        default="crepe",
                        help="melody extractor (default: CREPE tiny int8; pyin is much slower)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary line")


def run(args: argparse.Namespace) -> int:
    from ..core.analysis import analyze_song

    result = analyze_song(args.song, melody=args.melody)
    if args.json:
        result.save(args.json)
    print(format_report(result, table=not args.quiet))
    if args.json:
        print(f"wrote {args.json}")
    return 0


def format_report(result, *, table: bool = True) -> str:
    """Human-readable summary and phrase table of a SongAnalysis."""
    from ..core.analysis import LOW_BEAT_CONFIDENCE

    total = result.timings_s.get("total", 0.0)
    speed = f"{result.duration_s / total:.0f}x real time" if total > 0 else ""
    lines = [
        f"{result.path}",
        f"  {result.duration_s:.1f} s, {result.tempo_bpm:.1f} bpm, {result.beats_s.size} beats, "
        f"{result.downbeats_s.size} bars, {len(result.sections)} sections, "
        f"{len(result.phrases)} phrases, {len(result.rests_s)} rests, "
        f"{len(result.long_tones_s)} long tones",
        f"  analysed in {total:.2f} s ({speed}; melody: {result.melody_method})",
    ]
    conf = getattr(result, "beat_confidence", None)
    if conf is not None:
        line = f"  beat confidence {conf:.2f}"
        if conf < LOW_BEAT_CONFIDENCE:
            line += (f" (below {LOW_BEAT_CONFIDENCE:.2f}: no clear beat found; the beats and "
                     "phrases follow an estimated grid)")
        lines.insert(2, line)
    if table:
        lines.append("")
        lines.append(f"  {'#':>3}  {'start s':>8}  {'end s':>8}  {'len s':>6}  {'beats':>5}  "
                     f"{'section':>7}  ends at")
        for p in result.phrases:
            label = next((s.label for s in result.sections
                          if s.start_s <= p.start_s + 1e-6 < s.end_s), 0)
            lines.append(f"  {p.index:>3}  {p.start_s:8.2f}  {p.end_s:8.2f}  "
                         f"{p.duration_s:6.2f}  {p.n_beats:>5}  {label:>7}  {p.end_reason}")
    return "\n".join(lines)
