"""``m2d report SONG|PLAN.json --out report.html``: a choreography report to look at.

With a PLAN.json (from ``m2d choreograph --plan`` or ``m2d demo``) the report shows that plan;
the song named in it is loaded for the waveform and analysed for its sections when the file can
be found. With a song, it is first choreographed exactly like ``m2d choreograph`` (bundled
library and model, test rig, the same options) and the report shows the result. The page is
self-contained HTML (the timeline is an inlined PNG); see :mod:`blender_m2d.report`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .choreograph import add_common_arguments

NAME = "report"
HELP = "HTML report of a choreography: timeline with beats and phrases, beat and seam metrics"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="SONG|PLAN.json",
                        help="a song to choreograph first, or a plan written by m2d "
                        "choreograph --plan / m2d demo")
    parser.add_argument("--out", required=True, metavar="REPORT.html", help="HTML to write")
    parser.add_argument("--png", metavar="TIMELINE.png", help="also write the timeline picture")
    parser.add_argument("--plan", metavar="PLAN.json",
                        help="with a SONG: also write the plan it was choreographed to")
    parser.add_argument("--analysis", metavar="SONG.json",
                        help="song analysis (m2d analyze --json) for the sections; default: "
                        "analyse the song when it can be found")
    parser.add_argument("--no-audio", action="store_true",
                        help="do not load the song (no waveform, no sections)")
    add_common_arguments(parser)
    parser.set_defaults(blend=None, armature=None)


def _is_plan(path: Path) -> bool:
    if path.suffix.lower() == ".json":
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(64).lstrip().startswith(b"{")
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    from ..core.errors import M2DError
    from ..core.plan import Plan
    from ..report import song_path_of, write_report

    src = Path(args.input)
    if not src.is_file():
        raise M2DError("no such file", path=src)
    analysis = None
    if _is_plan(src):
        plan = Plan.load(src)
        song = None if args.no_audio else song_path_of(plan, src)
        if song is None and not args.no_audio:
            log.info("the plan's song %s was not found; no waveform", plan.song.get("path"))
    else:
        from .choreograph import run_pipeline

        result = run_pipeline(str(src), args=args, out_blend=None, plan_path=args.plan)
        plan = result.plan
        song = None if args.no_audio else src
        analysis = getattr(result, "analysis", None)
    y = sr = None
    if song is not None:
        from ..core.audio import load_audio

        audio = load_audio(song)
        y, sr = audio.y, audio.sr
        if args.analysis:
            from ..core.analysis import SongAnalysis

            analysis = SongAnalysis.load(args.analysis)
        elif analysis is None:
            from ..core.analysis import analyze_song

            analysis = analyze_song(audio)
    elif args.analysis:
        from ..core.analysis import SongAnalysis

        analysis = SongAnalysis.load(args.analysis)
    out = write_report(args.out, plan, y=y, sr=sr, analysis=analysis, png_path=args.png)
    b = plan.metrics.get("beats", {}).get("song", {})
    if b:
        print(f"{Path(str(plan.song.get('path', ''))).name}: beat hit rate "
              f"{b.get('beat_hit_rate', 0):.1%}, music hit rate {b.get('music_hit_rate', 0):.1%}, "
              f"coverage {b.get('beat_coverage', 0):.1%}, overlap {b.get('beat_overlap', 0):.3f}")
    print(f"wrote {out}")
    if args.png:
        print(f"wrote {args.png}")
    return 0
