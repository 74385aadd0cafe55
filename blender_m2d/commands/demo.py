"""``m2d demo --out out/demo``: the README's main command.

Choreographs a bundled song (``data/songs/kevin_macleod_vibe_ace.ogg``, 61 s, CC BY 3.0) with
the bundled dance library and the bundled model (the baseline when there is no model) onto a
test character, and writes ``demo.blend``, ``demo.fbx``, ``demo.glb``, ``preview.png`` and
``PLAN.json`` into the output folder (built in a temporary sibling and moved into place only
when complete).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .choreograph import (
    Outputs,
    add_common_arguments,
    run_pipeline,
    summary_lines,
    warnings_of,
)

NAME = "demo"
HELP = "choreograph a bundled song onto a test character (.blend, .fbx, .glb, preview, plan)"

REPO = Path(__file__).resolve().parents[2]
SONGS = REPO / "data" / "songs"
DEFAULT_SONG = "kevin_macleod_vibe_ace.ogg"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", metavar="DIR",
                        help="output folder (default out/demo; replaced when complete)")
    parser.add_argument("--song", metavar="SONG",
                        help=f"song to use (default data/songs/{DEFAULT_SONG})")
    add_common_arguments(parser)
    parser.set_defaults(blend=None, armature=None)


def run(args: argparse.Namespace) -> int:
    from ..core.errors import M2DError
    from ..core.fileio import atomic_directory

    song = Path(args.song) if args.song else SONGS / DEFAULT_SONG
    if not song.is_file():
        raise M2DError("the demo song is missing (pass --song)", path=song)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out) as tmp:
        outputs = Outputs()
        try:
            result = run_pipeline(
                str(song), args=args, out_blend=tmp / "demo.blend", fbx=tmp / "demo.fbx",
                glb=tmp / "demo.glb", plan_path=tmp / "PLAN.json",
                preview_path=tmp / "preview.png", outputs=outputs)
            outputs.commit()
        except BaseException:
            outputs.abort()
            raise
    from .choreograph import _umask

    out.chmod(0o777 & ~_umask())                 # the temporary folder was private (0700)
    result.files = [out / n for n in ("demo.blend", "demo.fbx", "demo.glb", "preview.png",
                                      "PLAN.json")]
    for line in summary_lines(result):
        print(line)
    for w in warnings_of(result):
        print(f"warning: {w}")
    return 0
