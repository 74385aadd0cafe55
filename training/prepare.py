"""``python -m training prepare``: dataset.json -> a prepared folder of model inputs/targets.

Every song is decoded, analysed and featurised with ``blender_m2d.core`` -- the add-on's own
code (``audio.load_audio``, ``analysis.analyze_song``, ``features.phrase_features``), so the
model trains on exactly what it will see. Labelled songs use the labelled intervals; unlabelled
songs use the phrases ``analyze_song`` finds. Songs run in parallel processes with a progress
bar; each song's result is cached under ``<out>/cache/`` (keyed by the file's path, size and
mtime, the intervals and the feature settings), so an interrupted prepare resumes where it
stopped. The final arrays are written to a fresh folder and switched in atomically.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blender_m2d.core.errors import M2DError

from .config import PrepareConfig
from .data import (
    SPLIT_CODES,
    UNLABELLED,
    DatasetSpec,
    PhraseData,
    PreparedWriter,
    load_dataset,
    load_prepared,
    summarize,
)
from .runtime import progress

log = logging.getLogger(__name__)
CACHE_VERSION = 1
END_TOLERANCE_S = 0.5


@dataclass(frozen=True)
class SongTask:
    """One song to featurise: labelled rows' intervals, or None (use the analysed phrases)."""

    song: str                       # name as written in the dataset (relative path)
    path: str                       # absolute file
    kind: str                       # "labelled" | "unlabelled"
    intervals: tuple[tuple[float, float], ...] | None
    lines: tuple[int, ...]          # labels.csv lines of the intervals (for errors)
    cache: str


def feature_signature() -> dict[str, Any]:
    """What the cached features depend on besides the audio (bump on any feature change)."""
    from blender_m2d.core import features, inference

    return {"cache_version": CACHE_VERSION, **inference.feature_params(),
            "features_version": getattr(features, "FEATURES_VERSION",
                                        getattr(features, "FEATURE_VERSION", None))}


def _cache_key(path: Path, intervals: Any, signature: dict[str, Any]) -> str:
    st = path.stat()
    doc = json.dumps({"path": str(path.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns,
                      "intervals": intervals, "sig": signature}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:24]


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def featurise_song(task: SongTask) -> dict[str, Any]:
    """Worker: decode, analyse, featurise one song and write its cache file atomically.

    Returns ``{"song", "ok", "phrases" | "error"}``; labelled songs raise on problems (their
    labels would silently vanish otherwise), unlabelled songs are skipped with the reason.
    """
    from blender_m2d.core import analysis as core_analysis
    from blender_m2d.core import audio as core_audio
    from blender_m2d.core import features as core_features

    try:
        audio = core_audio.load_audio(task.path)
        if task.intervals is None:  # unlabelled: the add-on's own phrases
            analysis = core_analysis.analyze_song(audio)
            intervals = np.asarray([(p.start_s, p.end_s) for p in analysis.phrases], np.float64)
        else:  # labelled: the given intervals; beats/onsets/melody computed by features
            analysis = None
            core_analysis.check_not_silent(audio)
            intervals = np.asarray(task.intervals, np.float64)
            late = np.flatnonzero((intervals[:, 1] > audio.duration_s + END_TOLERANCE_S)
                                  | (intervals[:, 0] >= audio.duration_s))
            if late.size:
                i = int(late[0])
                raise M2DError(f"labels.csv line {task.lines[i]}: {intervals[i, 0]:.2f}-"
                               f"{intervals[i, 1]:.2f} s is past the end of the song "
                               f"({audio.duration_s:.2f} s)", path=task.path)
            intervals[:, 1] = np.minimum(intervals[:, 1], audio.duration_s)
        if intervals.shape[0] == 0:
            raise M2DError("no music phrases found", path=task.path)
        feats = core_features.phrase_features(audio, intervals, analysis=analysis)
        mel = np.asarray(feats.mel, np.float32)
        melody = np.asarray(feats.melody, np.float32)
        rhythm = np.asarray(feats.rhythm)
        p = intervals.shape[0]
        if mel.shape != (p, 128, 128) or melody.shape != (p, 128) or rhythm.shape != (p, 128):
            raise ValueError(f"features have shapes {mel.shape}, {melody.shape}, "
                             f"{rhythm.shape} for {p} phrases")
        if not (np.isfinite(mel).all() and np.isfinite(melody).all()):
            raise M2DError("features contain NaN/inf", path=task.path)
    except M2DError as err:
        if task.kind == "labelled":
            raise
        return {"song": task.song, "ok": False, "error": str(err)}
    tmp = task.cache + f".{os.getpid()}.tmp.npz"
    np.savez(tmp, mel=mel.astype(np.float16), melody=melody.astype(np.float16),
             rhythm=(rhythm > 0.5).astype(np.uint8), intervals=intervals.astype(np.float32),
             sha256=np.asarray(_file_sha256(task.path)), duration_s=audio.duration_s)
    os.replace(tmp, task.cache)
    return {"song": task.song, "ok": True, "phrases": int(intervals.shape[0])}


def song_tasks(spec: DatasetSpec, cache_dir: Path, *, unlabelled: bool, max_unlabelled: int
               ) -> list[SongTask]:
    sig = feature_signature()
    tasks = []
    by_song: dict[str, list] = {}
    for r in spec.labels:
        by_song.setdefault(r.song, []).append(r)
    for song in sorted(by_song):
        rows = sorted(by_song[song], key=lambda r: r.start_s)
        iv = tuple((r.start_s, r.end_s) for r in rows)
        path = spec.song_path(song)
        tasks.append(SongTask(song, str(path), "labelled", iv, tuple(r.line for r in rows),
                              str(cache_dir / f"{_cache_key(path, iv, sig)}.npz")))
    labelled_paths = {Path(t.path).resolve() for t in tasks}
    extra = [p for p in spec.unlabelled if p.resolve() not in labelled_paths] if unlabelled \
        else []
    if max_unlabelled and len(extra) > max_unlabelled:  # spread over folders, deterministic
        pick = np.unique(np.linspace(0, len(extra) - 1, max_unlabelled).round().astype(int))
        extra = [extra[i] for i in pick]
    for p in extra:
        tasks.append(SongTask(spec.unlabelled_name(p), str(p), "unlabelled", None, (),
                              str(cache_dir / f"{_cache_key(p, None, sig)}.npz")))
    return tasks


def prepare(cfg: PrepareConfig) -> dict[str, Any]:
    if not cfg.dataset:
        raise M2DError("give --dataset (the dataset.json to prepare)")
    spec = load_dataset(cfg.dataset)
    out = Path(cfg.out) if cfg.out else spec.path.parent / "prepared"
    cache_dir = out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    tasks = song_tasks(spec, cache_dir, unlabelled=cfg.unlabelled,
                       max_unlabelled=cfg.max_unlabelled)
    todo = [t for t in tasks if not Path(t.cache).is_file()]
    log.info("%d songs, %d cached, %d to featurise", len(tasks), len(tasks) - len(todo),
             len(todo))
    skipped: dict[str, str] = {}
    if todo:
        workers = max(1, min(cfg.workers, len(todo)))
        if workers == 1:
            results = (featurise_song(t) for t in todo)
            for r in progress(results, enabled=cfg.progress, desc="prepare", total=len(todo)):
                if not r["ok"]:
                    skipped[r["song"]] = r["error"]
        else:
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                futs = [pool.submit(featurise_song, t) for t in todo]
                try:
                    for f in progress(cf.as_completed(futs), enabled=cfg.progress,
                                      desc="prepare", total=len(futs)):
                        r = f.result()
                        if not r["ok"]:
                            skipped[r["song"]] = r["error"]
                except BaseException:
                    for f in futs:
                        f.cancel()
                    raise
    for song, why in skipped.items():
        log.warning("skipped unlabelled song %s: %s", song, why)
    data = _consolidate(spec, tasks, out, skipped)
    return {"prepared": str(out), **summarize(data), "skipped_songs": len(skipped)}


def _consolidate(spec: DatasetSpec, tasks: list[SongTask], out: Path,
                 skipped: dict[str, str]) -> PhraseData:
    """Gather the cached songs into the prepared arrays (labelled songs, then unlabelled),
    streaming the big arrays so memory stays bounded by one song."""
    by_song: dict[str, list] = {}
    for r in spec.labels:
        by_song.setdefault(r.song, []).append(r)
    keep: list[SongTask] = []
    small: dict[str, list[np.ndarray]] = {k: [] for k in ("label", "split", "song", "start_s",
                                                          "end_s")}
    songs: list[str] = []
    labelled_sha: set[str] = set()
    dropped_dupes = 0
    for t in tasks:                                   # pass 1: metadata only
        if not Path(t.cache).is_file():
            if t.kind == "unlabelled":
                continue
            raise M2DError("labelled song was not featurised", path=t.path)
        with np.load(t.cache, allow_pickle=False) as z:
            sha, iv = str(z["sha256"]), z["intervals"]
        if t.kind == "labelled":
            labelled_sha.add(sha)
            rows = sorted(by_song[t.song], key=lambda r: r.start_s)
            label = np.asarray([r.label for r in rows], np.int64)
            split = np.asarray([SPLIT_CODES[r.split] for r in rows], np.int8)
        elif sha in labelled_sha:
            dropped_dupes += 1  # the same audio as a labelled song: never "unlabelled"
            continue
        else:
            label = np.full(iv.shape[0], -1, np.int64)
            split = np.full(iv.shape[0], UNLABELLED, np.int8)
        small["song"].append(np.full(len(label), len(songs), np.int32))
        songs.append(t.song)
        keep.append(t)
        small["label"].append(label)
        small["split"].append(split)
        small["start_s"].append(iv[:, 0].astype(np.float32))
        small["end_s"].append(iv[:, 1].astype(np.float32))
    if not keep:
        raise M2DError("no song could be prepared", path=spec.path)
    arrays = {k: np.concatenate(v) for k, v in small.items()}
    writer = PreparedWriter(out, int(arrays["label"].size))
    try:
        for t in keep:                                # pass 2: the big arrays
            with np.load(t.cache, allow_pickle=False) as z:
                writer.add(z["mel"], z["melody"], z["rhythm"])
        meta = PhraseData(np.zeros((0, 128, 128), np.float16), np.zeros((0, 128)),
                          np.zeros((0, 128)), **arrays, songs=songs, space=spec.phrases)
        summary = {**summarize(meta), "skipped_unlabelled": skipped,
                   "unlabelled_duplicates_dropped": dropped_dupes, "dataset": str(spec.path)}
        writer.finish(arrays, songs=songs, space=spec.phrases, summary=summary,
                      extra={"features": feature_signature()})
    except BaseException:
        writer.abort()
        raise
    return load_prepared(out)


def run(cfg: PrepareConfig) -> dict[str, Any]:
    return prepare(cfg)
