"""An animator's choices as labelled training pairs (bpy-free).

"Save edits as labels" in the add-on turns the phrases a user swapped or locked into rows of
the studio training dataset (``docs/formats.md``, "Training dataset"; read by
``training.data.load_dataset``)::

    <dataset>/dataset.json   {"format": "m2d-dataset", "format_version": 1,
                              "library": <library folder>, "songs_dir": "songs",
                              "labels": "labels.csv"}
    <dataset>/labels.csv     song,start_s,end_s,phrase_id,split
    <dataset>/songs/<song>   a copy of the song (labels name songs inside songs_dir)

An existing dataset is extended: it must name the same dance library (same folder or same
library hash); the song is copied in once (a different file with the same name gets a short
hash suffix); the song's previous rows are replaced by the new ones (the latest choices win,
and rows of one song never overlap). ``split`` is left empty so the trainer assigns the song to
a split by its hash (songs never straddle splits). Writes are atomic.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import M2DError
from .fileio import read_json, safe_child, write_bytes_atomic, write_json_atomic

DATASET_FORMAT = "m2d-dataset"
DATASET_VERSION = 1
COLUMNS = ("song", "start_s", "end_s", "phrase_id", "split")


@dataclass(frozen=True)
class LabelRow:
    """One labelled music phrase: seconds from the start of the song and the dance phrase."""

    start_s: float
    end_s: float
    phrase_id: str


def rows_from_plan(plan, indices: Iterable[int] | None = None) -> list[LabelRow]:
    """Label rows of a :class:`~blender_m2d.core.plan.Plan` (all phrases, or ``indices``)."""
    chosen = range(len(plan.phrases)) if indices is None else sorted(set(indices))
    rows = []
    for i in chosen:
        p = plan.phrases[i]
        rows.append(LabelRow(round(float(p.music_start_s), 3), round(float(p.music_end_s), 3),
                             str(p.phrase_id)))
    return rows


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _library_hash(path: Path) -> str:
    from .library import load_library

    return str(load_library(path).hash)


def _same_library(ours: Path, ours_hash: str, theirs: Path) -> bool:
    a = ours.resolve()
    b = theirs.resolve()
    if b.name == "library.json":
        b = b.parent
    if a.name == "library.json":
        a = a.parent
    if a == b:
        return True
    return bool(ours_hash) and _library_hash(b) == ours_hash


def _song_into(songs_dir: Path, song: Path) -> str:
    """Path of ``song`` relative to ``songs_dir``, copying it in when it is outside."""
    songs_dir.mkdir(parents=True, exist_ok=True)
    song_r, dir_r = song.resolve(), songs_dir.resolve()
    if dir_r in song_r.parents:
        return song_r.relative_to(dir_r).as_posix()
    target = dir_r / song.name
    if target.exists():
        if target.is_file() and _sha256(target) == _sha256(song):
            return target.name
        target = dir_r / f"{song.stem}-{_sha256(song)[:8]}{song.suffix}"
        if target.exists():
            return target.name
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        shutil.copyfile(song, tmp)
        os.replace(tmp, target)
    except OSError as err:
        raise M2DError(f"cannot copy the song into the dataset ({err.strerror})",
                       path=target) from err
    finally:
        if tmp.exists():
            tmp.unlink()
    return target.name


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        return list(COLUMNS), []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = [dict(r) for r in reader]
    except (OSError, UnicodeDecodeError) as err:
        raise M2DError(f"cannot read the labels ({err})", path=path) from err
    missing = [c for c in COLUMNS[:4] if c not in header]
    if missing:
        raise M2DError(f"labels file lacks column(s) {', '.join(missing)}", path=path)
    return header + [c for c in COLUMNS if c not in header], rows


def save_labels(dataset_dir: str | os.PathLike, *, song_path: str | os.PathLike,
                library_path: str | os.PathLike, library_hash: str,
                rows: Sequence[LabelRow], split: str = "") -> dict[str, Any]:
    """Add ``rows`` for ``song_path`` to the dataset in ``dataset_dir`` (created if needed).

    Returns ``{"dataset", "labels", "song", "rows", "replaced", "total"}``. Raises
    :class:`M2DError` for a dataset of another library, a missing song, overlapping rows or
    an unwritable folder; nothing is written then.
    """
    dataset_dir = Path(dataset_dir)
    song = Path(song_path)
    library = Path(library_path)
    if not rows:
        raise M2DError("no phrases to save: swap or lock the phrases you want to keep as "
                       "labels (or include all phrases)")
    if not song.is_file():
        raise M2DError("the song file is missing", path=song)
    if split and split not in ("train", "val", "test"):
        raise M2DError(f"split must be train, val, test or empty, got {split!r}")
    ordered = sorted(rows, key=lambda r: r.start_s)
    for a in ordered:
        if not (0 <= a.start_s < a.end_s) or not a.phrase_id:
            raise M2DError(f"invalid label row {a}")
    for a, b in itertools.pairwise(ordered):
        if b.start_s < a.end_s - 1e-3:
            raise M2DError(f"labelled phrases overlap ({a.start_s}-{a.end_s} s and "
                           f"{b.start_s}-{b.end_s} s)")
    if dataset_dir.exists() and not dataset_dir.is_dir():
        raise M2DError("the dataset location is not a folder", path=dataset_dir)
    if not dataset_dir.parent.is_dir():
        raise M2DError("the dataset's parent folder does not exist", path=dataset_dir.parent)
    spec_path = dataset_dir / "dataset.json"
    if spec_path.is_file():
        doc = read_json(spec_path, kind=DATASET_FORMAT, max_version=DATASET_VERSION)
        if "library" not in doc:
            raise M2DError("this dataset names its dance phrases with a phrase list, not a "
                           "library; save the labels into a new dataset folder", path=spec_path)
        theirs = Path(doc["library"])
        theirs = theirs if theirs.is_absolute() else dataset_dir / theirs
        if not _same_library(library, library_hash, theirs):
            raise M2DError(f"this dataset is for another dance library ({theirs}); save the "
                           "labels into a new dataset folder", path=spec_path)
        songs_dir = dataset_dir / str(doc.get("songs_dir", "."))
        labels_path = dataset_dir / str(doc.get("labels") or "labels.csv")
    else:
        doc = None
        songs_dir = dataset_dir / "songs"
        labels_path = dataset_dir / "labels.csv"
    header, existing = _read_rows(labels_path)
    dataset_dir.mkdir(exist_ok=True)
    rel = _song_into(songs_dir, song)
    safe_child(songs_dir, rel)
    kept = [r for r in existing if (r.get("song") or "").strip() != rel]
    replaced = len(existing) - len(kept)
    old_split = {(r.get("split") or "").strip() for r in existing
                 if (r.get("song") or "").strip() == rel}
    if not split and len(old_split) == 1:
        split = old_split.pop()
    new = [{"song": rel, "start_s": f"{r.start_s:.3f}", "end_s": f"{r.end_s:.3f}",
            "phrase_id": r.phrase_id, "split": split} for r in ordered]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in kept + new:
        writer.writerow({k: r.get(k, "") for k in header})
    write_bytes_atomic(labels_path, buf.getvalue().encode("utf-8"))
    if doc is None:
        lib_dir = library.resolve()
        if lib_dir.name == "library.json":
            lib_dir = lib_dir.parent
        try:
            lib_ref = lib_dir.relative_to(dataset_dir.resolve()).as_posix()
        except ValueError:
            lib_ref = str(lib_dir)
        write_json_atomic(spec_path, {"format": DATASET_FORMAT, "format_version": DATASET_VERSION,
                                      "library": lib_ref, "songs_dir": "songs",
                                      "labels": "labels.csv"})
    return {"dataset": str(spec_path), "labels": str(labels_path), "song": rel,
            "rows": len(new), "replaced": replaced, "total": len(kept) + len(new)}


__all__ = ["COLUMNS", "LabelRow", "rows_from_plan", "save_labels"]
