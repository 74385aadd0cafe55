"""The studio dataset format (``dataset.json``), its validation, and the prepared arrays.

A dataset (docs/formats.md, "Training dataset") names the K dance phrases (a built library, or a
plain phrase list with optional styles / style vectors), the labelled pairs (song, start/end
seconds, dance phrase id, optional split) and a folder of unlabelled songs. ``prepare`` turns it
into a *prepared* folder: per-phrase model inputs and targets as memory-mapped ``.npy`` arrays
plus ``prepared.json``; every training step reads that folder through :func:`load_prepared`.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from blender_m2d.core.errors import M2DError
from blender_m2d.core.fileio import read_json, safe_child, write_json_atomic

DATASET_FORMAT = "m2d-dataset"
DATASET_VERSION = 1
PREPARED_FORMAT = "m2d-prepared"
PREPARED_VERSION = 1

SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST, UNLABELLED = 0, 1, 2, 3
SPLIT_CODES = {"train": TRAIN, "val": VAL, "test": TEST, "unlabelled": UNLABELLED}
AUDIO_SUFFIXES = (".wav", ".ogg", ".flac", ".mp3", ".m4a", ".aiff", ".aif")
ADJACENT_GAP_S = 0.5
"""Two labelled phrases of one song are adjacent (M applies) when the gap is at most this."""


# --------------------------------------------------------------------------------------------
# The K classes
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PhraseSpace:
    """The library's dance phrases in class order, with what M0 needs.

    ``similarity`` (K, K) in [0, 1] is the dance-style similarity (None: no style information,
    every transition is allowed a priori).
    """

    ids: tuple[str, ...]
    hash: str
    styles: tuple[str | None, ...]
    similarity: np.ndarray | None
    source: str

    @property
    def k(self) -> int:
        return len(self.ids)

    def index(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.ids)}


def phrase_list_hash(ids: list[str], styles: list[str | None],
                     vectors: list[list[float] | None]) -> str:
    """Hash of a plain phrase list: sha256 of its canonical JSON."""
    doc = json.dumps({"ids": ids, "styles": styles, "vectors": vectors}, sort_keys=True,
                     separators=(",", ":"))
    return hashlib.sha256(doc.encode("utf-8")).hexdigest()


def similarity_from(styles: list[str | None], vectors: list[list[float] | None]
                    ) -> np.ndarray | None:
    """Style similarity in [0, 1]: cosine of style vectors (negative -> 0) when every phrase
    has one, else 1 for equal style tags and 0 otherwise; None without any style information."""
    k = len(styles)
    if k and all(v is not None for v in vectors):
        v = np.asarray(vectors, dtype=np.float64)
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return np.clip(v @ v.T, 0.0, 1.0).astype(np.float32)
    if any(s for s in styles):
        s = np.asarray([s or f"\0{i}" for i, s in enumerate(styles)])
        return (s[:, None] == s[None, :]).astype(np.float32)
    return None


def load_phrase_list(path: Path) -> PhraseSpace:
    """A CSV with columns ``id`` (required), ``style`` and ``style_vector`` (space-separated
    numbers), both optional."""
    rows = _read_csv(path, required=("id",))
    ids: list[str] = []
    styles: list[str | None] = []
    vectors: list[list[float] | None] = []
    for line, row in rows:
        pid = (row.get("id") or "").strip()
        if not pid:
            raise M2DError(f"line {line}: empty phrase id", path=path)
        if pid in ids:
            raise M2DError(f"line {line}: duplicate phrase id {pid!r}", path=path)
        ids.append(pid)
        styles.append((row.get("style") or "").strip() or None)
        vec = (row.get("style_vector") or "").strip()
        try:
            vectors.append([float(x) for x in vec.split()] if vec else None)
        except ValueError as err:
            raise M2DError(f"line {line}: style_vector of {pid!r} is not numbers", path=path) \
                from err
    if len(ids) < 2:
        raise M2DError("a phrase list needs at least 2 dance phrases", path=path)
    dims = {len(v) for v in vectors if v is not None}
    if len(dims) > 1:
        raise M2DError(f"style vectors have different lengths {sorted(dims)}", path=path)
    return PhraseSpace(tuple(ids), phrase_list_hash(ids, styles, vectors), tuple(styles),
                       similarity_from(styles, vectors), str(path))


def load_library_space(path: Path) -> PhraseSpace:
    """The K classes of a built dance library (``core.library.load_library``)."""
    from blender_m2d.core.library import load_library

    lib = load_library(path)
    styles = tuple(getattr(p, "style", None) for p in lib.phrases)
    sim = np.asarray(lib.style_similarity(), dtype=np.float32)
    k = len(lib.ids)
    if sim.shape != (k, k):
        raise M2DError(f"library style similarity has shape {sim.shape}, expected ({k}, {k})",
                       path=path)
    return PhraseSpace(tuple(lib.ids), str(lib.hash), styles, np.clip(sim, 0, 1), str(path))


# --------------------------------------------------------------------------------------------
# dataset.json
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelRow:
    """One labelled music phrase (``labels.csv`` line ``line``)."""

    line: int
    song: str           # path relative to the songs folder, as written in the CSV
    start_s: float
    end_s: float
    phrase_id: str
    label: int
    split: str


@dataclass
class DatasetSpec:
    path: Path
    phrases: PhraseSpace
    labels: list[LabelRow]
    songs_dir: Path
    labels_path: Path
    unlabelled: list[Path] = field(default_factory=list)
    unlabelled_roots: list[Path] = field(default_factory=list)

    def song_path(self, song: str) -> Path:
        return safe_child(self.songs_dir, song)

    def labelled_songs(self) -> list[str]:
        return sorted({r.song for r in self.labels})

    def unlabelled_name(self, p: Path) -> str:
        """``unlabelled/<folder name>/<path inside the folder>`` for an unlabelled song."""
        for r in self.unlabelled_roots:
            if r in p.parents:
                return f"unlabelled/{r.name}/{p.relative_to(r).as_posix()}"
        return f"unlabelled/{p.name}"


def _read_csv(path: Path, *, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise M2DError("file not found", path=path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise M2DError(f"missing column(s) {', '.join(missing)} (header: {header})",
                               path=path)
            reader.fieldnames = header
            return [(i + 2, row) for i, row in enumerate(reader)]
    except UnicodeDecodeError as err:
        raise M2DError("not a UTF-8 CSV file", path=path) from err


def _split_of(song: str, test_fraction: float, val_fraction: float, seed: int) -> str:
    """Deterministic per-song split from a hash of the song's path."""
    h = int(hashlib.sha256(f"{seed}:{song}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if h < test_fraction:
        return "test"
    if h < test_fraction + val_fraction:
        return "val"
    return "train"


def load_dataset(path: str | os.PathLike) -> DatasetSpec:
    """Read and validate ``dataset.json``; every problem names the file, line and item.

    Checks: the phrase source exists; every labelled song exists; every phrase id is in the
    library; times are numbers with 0 <= start < end; splits are train/val/test; the unlabelled
    folder holds audio files.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "dataset.json"
    doc = read_json(path, kind=DATASET_FORMAT, max_version=DATASET_VERSION)
    root = path.parent
    if ("library" in doc) == ("phrases" in doc):
        raise M2DError("give exactly one of 'library' (library.json) or 'phrases' (a phrase "
                       "list CSV)", path=path)
    if "library" in doc:
        space = load_library_space(_resolve(root, doc["library"], "library", path))
    else:
        space = load_phrase_list(_resolve(root, doc["phrases"], "phrases", path))
    songs_dir = _resolve(root, doc.get("songs_dir", "."), "songs_dir", path)
    split_cfg = doc.get("split")
    split_cfg = {} if split_cfg is None else split_cfg
    if not isinstance(split_cfg, dict):
        raise M2DError("'split' must be an object with test_fraction, val_fraction, seed",
                       path=path)
    try:
        test_fraction = float(split_cfg.get("test_fraction", 0.1))
        val_fraction = float(split_cfg.get("val_fraction", 0.0))
        split_seed = int(split_cfg.get("seed", 0))
    except (TypeError, ValueError, OverflowError) as err:
        raise M2DError(f"'split' has a value that is not a number ({err})", path=path) from err
    if not (0.0 <= test_fraction < 1.0 and 0.0 <= val_fraction < 1.0
            and test_fraction + val_fraction < 1.0):
        raise M2DError("'split' fractions must lie in [0, 1) and sum to less than 1", path=path)
    labels: list[LabelRow] = []
    labels_path = root / "labels.csv"
    if doc.get("labels"):
        labels_path = _resolve(root, doc["labels"], "labels", path)
        index = space.index()
        for line, row in _read_csv(labels_path, required=("song", "start_s", "end_s",
                                                          "phrase_id")):
            labels.append(_label_row(line, row, index, labels_path, songs_dir,
                                     test_fraction, val_fraction, split_seed))
    unlabelled: list[Path] = []
    dirs = doc.get("unlabelled_dir") or []
    if isinstance(dirs, str):
        dirs = [dirs]
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise M2DError("'unlabelled_dir' must be a folder path or a list of folder paths",
                       path=path)
    roots: list[Path] = []
    for d in dirs:
        folder = _resolve(root, d, "unlabelled_dir", path)
        if not folder.is_dir():
            raise M2DError("unlabelled_dir is not a folder", path=folder)
        roots.append(folder)
        unlabelled += sorted(p for p in folder.rglob("*")
                             if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not labels and not unlabelled:
        raise M2DError("the dataset has neither labelled phrases nor unlabelled songs",
                       path=path)
    _check_overlaps(labels, labels_path)
    return DatasetSpec(path, space, labels, songs_dir, labels_path, unlabelled, roots)


def _resolve(root: Path, value: Any, key: str, path: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise M2DError(f"'{key}' must be a non-empty path string", path=path)
    p = Path(value)
    return p if p.is_absolute() else (root / p).resolve()


def _label_row(line: int, row: dict[str, str], index: dict[str, int], labels_path: Path,
               songs_dir: Path, test_fraction: float, val_fraction: float, seed: int
               ) -> LabelRow:
    where = f"line {line}"
    song = (row.get("song") or "").strip()
    if not song:
        raise M2DError(f"{where}: empty song", path=labels_path)
    try:
        song_file = safe_child(songs_dir, song)
    except M2DError as err:
        raise M2DError(f"{where}: song {song!r}: {err.reason}", path=labels_path) from err
    if not song_file.is_file():
        raise M2DError(f"{where}: song {song!r} not found (looked for {song_file})",
                       path=labels_path)
    try:
        start_s, end_s = float(row.get("start_s", "")), float(row.get("end_s", ""))
    except ValueError as err:
        raise M2DError(f"{where}: start_s/end_s must be numbers in seconds", path=labels_path) \
            from err
    if not (np.isfinite(start_s) and np.isfinite(end_s) and 0 <= start_s < end_s):
        raise M2DError(f"{where}: need 0 <= start_s < end_s, got {start_s}, {end_s}",
                       path=labels_path)
    pid = (row.get("phrase_id") or "").strip()
    if pid not in index:
        raise M2DError(f"{where}: unknown dance phrase id {pid!r} (not in the library)",
                       path=labels_path)
    split = (row.get("split") or "").strip().lower()
    if not split:
        split = _split_of(song, test_fraction, val_fraction, seed)
    if split not in SPLITS:
        raise M2DError(f"{where}: split must be one of {', '.join(SPLITS)}, got {split!r}",
                       path=labels_path)
    return LabelRow(line, song, start_s, end_s, pid, index[pid], split)


def _check_overlaps(labels: list[LabelRow], labels_path: Path) -> None:
    by_song: dict[str, list[LabelRow]] = {}
    for r in labels:
        by_song.setdefault(r.song, []).append(r)
    for rows in by_song.values():
        rows.sort(key=lambda r: r.start_s)
        for a, b in itertools.pairwise(rows):
            if b.start_s < a.end_s - 1e-3:
                raise M2DError(f"lines {a.line} and {b.line}: phrases of {a.song!r} overlap "
                               f"({a.start_s}-{a.end_s} s and {b.start_s}-{b.end_s} s)",
                               path=labels_path)
        splits = {r.split for r in rows}
        if len(splits) > 1:
            raise M2DError(f"song {rows[0].song!r} has rows in several splits "
                           f"({', '.join(sorted(splits))}); split by song to avoid leakage",
                           path=labels_path)


# --------------------------------------------------------------------------------------------
# Prepared arrays
# --------------------------------------------------------------------------------------------

@dataclass
class PhraseData:
    """Every prepared phrase, songs in order and phrases in song order.

    Arrays (N = phrases): ``mel`` (N, 128, 128) float16 in [0, 1], axes (time, mel);
    ``melody`` (N, 128) float16; ``rhythm`` (N, 128) uint8; ``label`` (N,) int64 (-1:
    unlabelled); ``split`` (N,) int8 (TRAIN/VAL/TEST/UNLABELLED); ``song`` (N,) int32 into
    ``songs``; ``start_s``/``end_s`` (N,) float32; ``prev`` (N,) int64, the adjacent previous
    phrase of the same song or -1.
    """

    mel: np.ndarray
    melody: np.ndarray
    rhythm: np.ndarray
    label: np.ndarray
    split: np.ndarray
    song: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    songs: list[str]
    space: PhraseSpace
    path: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    prev: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.prev = adjacency(self.song, self.start_s, self.end_s)

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def indices(self, *splits: int) -> np.ndarray:
        return np.flatnonzero(np.isin(self.split, splits))


def adjacency(song: np.ndarray, start_s: np.ndarray, end_s: np.ndarray,
              max_gap_s: float = ADJACENT_GAP_S) -> np.ndarray:
    """Index of the previous phrase when it is of the same song and ends at most ``max_gap_s``
    before this one starts, else -1. Phrases must be in song order."""
    n = len(song)
    prev = np.full(n, -1, dtype=np.int64)
    if n > 1:
        same = song[1:] == song[:-1]
        close = np.abs(start_s[1:] - end_s[:-1]) <= max_gap_s
        prev[1:] = np.where(same & close, np.arange(n - 1), -1)
    return prev


ARRAYS = ("mel", "melody", "rhythm", "label", "split", "song", "start_s", "end_s")


class PreparedWriter:
    """Writes a prepared folder: arrays into a fresh ``arrays-<id>/`` (the big ones as
    memory-mapped ``.npy`` filled part by part), then ``prepared.json`` (atomic) pointing at it;
    older array folders are removed afterwards. A crash leaves the previous version in use."""

    BIG: ClassVar[dict[str, tuple]] = {"mel": ((128, 128), np.float16),
                                       "melody": ((128,), np.float16),
                                       "rhythm": ((128,), np.uint8)}

    def __init__(self, out: Path, n: int) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.build = f"arrays-{uuid.uuid4().hex[:12]}"
        self.folder = self.out / self.build
        self.folder.mkdir()
        self.n, self.pos = n, 0
        self.maps = {name: np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+",
                                                     dtype=dt, shape=(n, *shape))
                     for name, (shape, dt) in self.BIG.items()}

    def add(self, mel: np.ndarray, melody: np.ndarray, rhythm: np.ndarray) -> None:
        k = mel.shape[0]
        for name, a in (("mel", mel), ("melody", melody), ("rhythm", rhythm)):
            self.maps[name][self.pos:self.pos + k] = a
        self.pos += k

    def finish(self, small: dict[str, np.ndarray], *, songs: list[str], space: PhraseSpace,
               summary: dict[str, Any], extra: dict | None = None) -> Path:
        if self.pos != self.n:
            raise ValueError(f"wrote {self.pos} of {self.n} phrases")
        for m in self.maps.values():
            m.flush()
        self.maps.clear()
        for name in ARRAYS:
            if name not in self.BIG:
                np.save(self.folder / f"{name}.npy", small[name], allow_pickle=False)
        if space.similarity is not None:
            np.save(self.folder / "similarity.npy", space.similarity.astype(np.float32))
        doc = {"format": PREPARED_FORMAT, "format_version": PREPARED_VERSION,
               "arrays": self.build, "n_phrases": self.n, "songs": songs,
               "phrase_ids": list(space.ids), "library_hash": space.hash,
               "styles": list(space.styles), "phrase_source": space.source,
               "summary": summary, **(extra or {})}
        write_json_atomic(self.out / "prepared.json", doc)
        for old in self.out.glob("arrays-*"):
            if old.name != self.build:
                shutil.rmtree(old, ignore_errors=True)
        return self.out

    def abort(self) -> None:
        self.maps.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


def write_prepared(out: Path, arrays: dict[str, np.ndarray], *, songs: list[str],
                   space: PhraseSpace, summary: dict[str, Any], extra: dict | None = None) -> Path:
    """Write in-memory arrays as a prepared folder (see :class:`PreparedWriter`)."""
    w = PreparedWriter(out, len(arrays["label"]))
    try:
        w.add(arrays["mel"], arrays["melody"], arrays["rhythm"])
        return w.finish(arrays, songs=songs, space=space, summary=summary, extra=extra)
    except BaseException:
        w.abort()
        raise


def write_prepared_from(out: Path, data: PhraseData, **kw: Any) -> Path:
    arrays = {name: getattr(data, name) for name in ARRAYS}
    return write_prepared(out, arrays, songs=data.songs, space=data.space,
                          summary=data.summary or summarize(data), **kw)


def load_prepared(path: str | os.PathLike, *, mmap: bool = True) -> PhraseData:
    """Open a prepared folder (arrays memory-mapped)."""
    path = Path(path)
    if path.name == "prepared.json":
        path = path.parent
    doc = read_json(path / "prepared.json", kind=PREPARED_FORMAT, max_version=PREPARED_VERSION)
    try:
        return _open_prepared(path, doc, mmap=mmap)
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as err:
        raise M2DError(f"prepared.json is invalid ({type(err).__name__}: {err}); run prepare "
                       "again", path=path / "prepared.json") from err


def _open_prepared(path: Path, doc: dict, *, mmap: bool) -> PhraseData:
    folder = safe_child(path, doc["arrays"])
    arrays = {}
    for name in ARRAYS:
        f = folder / f"{name}.npy"
        if not f.is_file():
            raise M2DError(f"prepared data is incomplete ({f.name} missing); run prepare again",
                           path=path)
        arrays[name] = np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
    n = int(doc["n_phrases"])
    for name, a in arrays.items():
        if a.shape[0] != n:
            raise M2DError(f"prepared array {name} has {a.shape[0]} rows, expected {n}",
                           path=path)
    sim_file = folder / "similarity.npy"
    sim = np.load(sim_file) if sim_file.is_file() else None
    space = PhraseSpace(tuple(doc["phrase_ids"]), doc["library_hash"],
                        tuple(doc.get("styles") or [None] * len(doc["phrase_ids"])), sim,
                        doc.get("phrase_source", ""))
    label = np.asarray(arrays["label"], dtype=np.int64)
    if label.size and label.max() >= space.k:
        raise M2DError(f"prepared labels reach class {label.max()} but K={space.k}", path=path)
    return PhraseData(arrays["mel"], arrays["melody"], arrays["rhythm"], label,
                      np.asarray(arrays["split"], dtype=np.int8),
                      np.asarray(arrays["song"], dtype=np.int32),
                      np.asarray(arrays["start_s"], dtype=np.float32),
                      np.asarray(arrays["end_s"], dtype=np.float32), list(doc["songs"]), space,
                      path, dict(doc.get("summary") or {}))


def summarize(data: PhraseData) -> dict[str, Any]:
    """Counts of songs / phrases per split and labelled classes (goes into checkpoints and the
    sidecar's training summary)."""
    out: dict[str, Any] = {"phrases": len(data), "songs": len(data.songs), "K": data.space.k}
    for name, code in SPLIT_CODES.items():
        idx = data.indices(code)
        out[f"{name}_phrases"] = int(idx.size)
        out[f"{name}_songs"] = int(np.unique(data.song[idx]).size)
    tr = data.label[data.indices(TRAIN)]
    out["classes_with_train_labels"] = int(np.unique(tr).size)
    return out


def class_counts(labels: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(labels[labels >= 0], minlength=k)


def check_classes(data: PhraseData, idx: np.ndarray, *, allow_empty: bool, where: str) -> None:
    """Refuse training when some dance phrase has no labelled training example."""
    counts = class_counts(data.label[idx], data.space.k)
    empty = np.flatnonzero(counts == 0)
    if idx.size == 0:
        raise M2DError("no labelled training phrases (split 'train' is empty)", path=where)
    if empty.size and not allow_empty:
        names = ", ".join(repr(data.space.ids[i]) for i in empty[:8])
        more = f" and {empty.size - 8} more" if empty.size > 8 else ""
        raise M2DError(f"{empty.size} of {data.space.k} dance phrases have no labelled training "
                       f"example: {names}{more}. Label some, or pass --allow-empty-classes "
                       f"(they will rarely be predicted)", path=where)
