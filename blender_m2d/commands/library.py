"""``m2d library build|info``: build a dance library from mocap takes, or summarise one."""

from __future__ import annotations

import argparse
import json
import logging
import shlex

NAME = "library"
HELP = "build a dance library from BVH/FBX takes, or print a library's summary"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="library_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="import BVH/FBX takes, cut them into dance phrases and "
                       "write a library folder",
                       description="Import BVH/FBX takes with Blender's importers, map them onto "
                       "the canonical skeleton, cut them into dance phrases at dance beats and "
                       "write LIB/library.json + LIB/motion/*.npy (atomically).")
    b.add_argument("sources", nargs="+", metavar="SRC", help="BVH/FBX files or folders")
    b.add_argument("--out", required=True, metavar="LIB", help="library folder to (re)write")
    g = b.add_mutually_exclusive_group()
    g.add_argument("--rig", metavar="PRESET", help="skeleton preset of every take (default: "
                   "auto-detect per take; see docs/library.md for the list)")
    g.add_argument("--bone-map", metavar="MAP.json", help="custom bone map JSON file")
    b.add_argument("--fps", type=float, default=30.0, help="library frame rate (default 30)")
    b.add_argument("--units", default="auto", help="file units: auto (by leg length), m, cm, "
                   "mm, in, dm, or metres per file unit (default auto)")
    b.add_argument("--style", help="style of every take (e.g. salsa, modern, hip-hop)")
    b.add_argument("--tag", action="append", default=[], help="tag for every phrase (repeat)")
    b.add_argument("--meta", metavar="META.json", help='per-file style/tags: {"glob": '
                   '{"style": "salsa", "tags": ["lead"]}, ...}')
    b.add_argument("--name", help="library name stored in library.json")
    b.add_argument("--min-beats", type=int, default=6,
                   help="minimum dance-beat intervals per phrase (default 6)")
    i = sub.add_parser("info", help="print a library's summary")
    i.add_argument("library", metavar="LIB")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.add_argument("--verify", action="store_true", help="re-hash the motion files")
    i.add_argument("--phrases", action="store_true", help="list every phrase")


def _read_meta(path: str | None) -> dict | None:
    if path is None:
        return None
    from ..core.errors import M2DError

    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise M2DError(f"cannot read the meta file ({err})", path=path) from err
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise M2DError('meta must map glob patterns to {"style": ..., "tags": [...]}', path=path)
    return doc


def _build(args: argparse.Namespace) -> int:
    from ..library_build import build_library

    parts = ["m2d", "library", "build", *args.sources, "--out", args.out]
    for flag, value in (("--rig", args.rig), ("--bone-map", args.bone_map),
                        ("--fps", args.fps), ("--units", args.units), ("--style", args.style),
                        ("--meta", args.meta), ("--name", args.name),
                        ("--min-beats", args.min_beats)):
        if value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    for tag in args.tag:
        parts += ["--tag", tag]
    command = " ".join(shlex.quote(str(p)) for p in parts)

    def progress(i: int, n: int, label: str) -> None:
        log.info("[%d/%d] %s", i + 1, n, label)

    report = build_library(args.sources, args.out, rig=args.bone_map or args.rig, fps=args.fps,
                           units=args.units, style=args.style, tags=args.tag,
                           meta=_read_meta(args.meta), name=args.name,
                           min_beats=args.min_beats, command=command, on_take=progress)
    print("\n".join(report.lines()))
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..core.library import load_library

    lib = load_library(args.library)
    if args.verify:
        lib.verify()
    s = lib.summary()
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"{s['name']} ({s['path']}), format {s['format_version']}, {s['fps']:g} fps")
    print(f"  phrases K = {s['phrases']}, {s['minutes']} min, from {s['takes']} takes"
          f" ({s['skipped']} inputs skipped)")
    print("  styles: " + ", ".join(f"{k} {v}" for k, v in s["styles"].items()))
    t, b, d = s["tempo_bpm"], s["beats_per_phrase"], s["phrase_s"]
    print(f"  dance-beat tempo {t['min']}-{t['max']} bpm (median {t['median']}); "
          f"{b['min']}-{b['max']} beats per phrase; {d['min']}-{d['max']} s per phrase")
    print(f"  size {s['size_bytes'] / 1e6:.2f} MB, hash {s['hash'][:16]}"
          + (", motion verified" if args.verify else ""))
    for sk in lib.skipped:
        print(f"  skipped {sk.get('source')}: {sk.get('reason')}")
    if args.phrases:
        for p in lib.phrases:
            print(f"  {p.id:24s} {p.style:10s} {p.duration_s:6.2f} s {p.n_beats:3d} beats "
                  f"{p.tempo_bpm:6.1f} bpm  {p.source} [{p.frame_start}-{p.frame_end}]")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.library_command == "build":
        return _build(args)
    return _info(args)
