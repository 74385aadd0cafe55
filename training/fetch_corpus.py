"""Fetch a redistributable, unlabelled music corpus from Debian game-soundtrack packages.

Stage 1 (pre-training) and stage 3 (co-ascent) want much more music than the project can ship.
Debian's game data packages carry soundtracks under free licences. This step downloads them with
``apt-get download`` (no root needed, no install), extracts the ``.ogg`` tracks of at least
``--min-duration`` seconds and keeps each package's ``copyright`` file beside its tracks. The audio
stays out of the repository (``corpus/`` is git-ignored); honour each package's licence when you
redistribute anything derived from it.

Usage::

    python -m training.fetch_corpus --out corpus
    python -m training.fetch_corpus --out corpus --packages wesnoth-1.16-music

Default packages (Debian 12): ``wesnoth-1.16-music`` (GPL-2+, about 2 h of orchestral music) and
``supertux-data`` (music under GPL-2+ / CC BY-SA, about 1.5 h of tracks over 60 s).
``manifest.json`` lists every track with its package, version, duration and licence file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from blender_m2d.core.errors import M2DError
from blender_m2d.core.fileio import atomic_directory, write_json_atomic

DEFAULT_PACKAGES = ("wesnoth-1.16-music", "supertux-data")
AUDIO_SUFFIXES = (".ogg", ".flac", ".wav", ".mp3")


def _run(cmd: list[str], cwd: Path) -> str:
    try:
        out = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise M2DError(f"'{cmd[0]}' is not available; this step needs Debian's apt tools") from err
    except subprocess.CalledProcessError as err:
        raise M2DError(f"'{' '.join(cmd)}' failed: {err.stderr.strip()[-500:]}") from err
    return out.stdout


def fetch_corpus(out: Path, packages: tuple[str, ...] = DEFAULT_PACKAGES, *,
                 min_duration_s: float = 60.0, cache: Path | None = None) -> dict:
    """Download ``packages``, extract their audio into ``out`` (atomically) and return the manifest.

    Parameters
    ----------
    out : Path
        Corpus folder to create or replace: ``out/<package>/<track>.ogg``,
        ``out/<package>/copyright``, ``out/manifest.json``.
    packages : tuple of str
        Debian package names.
    min_duration_s : float
        Tracks shorter than this (jingles, stingers) are skipped, in seconds.
    cache : Path or None
        Folder that keeps the downloaded ``.deb`` files between runs.
    """
    import soundfile as sf

    cache = (Path(cache) if cache else Path(tempfile.mkdtemp(prefix="m2d-debs-"))).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    tracks = []
    with atomic_directory(out) as tmp:
        for pkg in packages:
            debs = sorted(cache.glob(f"{pkg}_*.deb"))
            if not debs:
                _run(["apt-get", "download", pkg], cwd=cache)
                debs = sorted(cache.glob(f"{pkg}_*.deb"))
            if not debs:
                raise M2DError(f"apt-get download {pkg} produced no .deb", path=cache)
            deb = debs[-1]
            version = deb.name.split("_")[1].replace("%3a", ":")
            with tempfile.TemporaryDirectory(prefix="m2d-deb-") as xdir:
                _run(["dpkg-deb", "-x", str(deb), xdir], cwd=cache)
                root = Path(xdir)
                copyright_files = list(root.glob("usr/share/doc/*/copyright"))
                if not copyright_files:
                    raise M2DError("package has no copyright file; refusing to use it", path=deb)
                dest = tmp / pkg
                dest.mkdir()
                shutil.copy2(copyright_files[0], dest / "copyright")
                for src in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
                    try:
                        duration = float(sf.info(str(src)).duration)
                    except RuntimeError:
                        continue  # not decodable by libsndfile: skip, listed as skipped below
                    if duration < min_duration_s:
                        continue
                    name = "__".join(src.relative_to(root).parts[-3:])
                    shutil.copy2(src, dest / name)
                    tracks.append({"file": f"{pkg}/{name}", "package": pkg, "version": version,
                                   "duration_s": round(duration, 3),
                                   "licence_file": f"{pkg}/copyright"})
        manifest = {"format": "m2d-corpus", "format_version": 1, "packages": list(packages),
                    "min_duration_s": min_duration_s, "tracks": tracks,
                    "total_minutes": round(sum(t["duration_s"] for t in tracks) / 60, 2)}
        write_json_atomic(tmp / "manifest.json", manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.fetch_corpus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("corpus"))
    parser.add_argument("--packages", nargs="+", default=list(DEFAULT_PACKAGES))
    parser.add_argument("--min-duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--cache", type=Path, default=Path(".cache/debs"))
    args = parser.parse_args(argv)
    try:
        m = fetch_corpus(args.out, tuple(args.packages), min_duration_s=args.min_duration,
                         cache=args.cache)
    except M2DError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"tracks": len(m["tracks"]), "total_minutes": m["total_minutes"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
