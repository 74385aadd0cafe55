"""``python -m training bundled``: the model shipped in ``blender_m2d/assets/model``.

What the project can honestly ship has no expert labels, so the labels come from a documented
teacher (docs/training.md, "The bundled model"):

1. Songs: the redistributable music in ``../shared/data/music`` and ``data/songs`` (deduplicated
   by content), plus optional extra unlabelled songs (``--unlabelled-dir``, e.g. the Debian
   game-soundtrack corpus of ``python -m training.fetch_corpus``).
2. Teacher labels: every phrase ``analyze_song`` finds in a *seed* song gets the dance phrase
   that the add-on's model-free choreographer picks -- the rhythm/energy matcher
   (``core.baseline``) decoded greedily with the style transition matrix M0
   (``core.choreography.score_phrases`` + ``core.decode.decode``).
3. Held-out songs (``--test-songs``) are teacher-labelled too but never trained on; songs named
   in ``--unlabelled-songs`` (and the extra folder) are used without labels (stage 1 and
   co-ascent only).
4. prepare -> pretrain -> classify -> coascent -> export (``small`` preset), then the exported
   ONNX model is evaluated on the held-out songs with ``core.inference`` and compared with the
   frequency baseline; the model is copied to ``--out`` only when it beats that baseline.

The model therefore learns to imitate the baseline matcher from the mel spectrogram; it is a
demonstration of the pipeline on shippable data, not the paper's expert-labelled model.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from blender_m2d.core.errors import M2DError
from blender_m2d.core.fileio import atomic_directory, write_bytes_atomic, write_json_atomic

from .config import (
    BundledConfig,
    ClassifyConfig,
    CoascentConfig,
    EvaluateConfig,
    ExportConfig,
    PrepareConfig,
    PretrainConfig,
)
from .data import AUDIO_SUFFIXES, DATASET_FORMAT, DATASET_VERSION

log = logging.getLogger(__name__)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def collect_songs(folders: list[Path]) -> list[Path]:
    """Audio files of ``folders``, the first copy of each distinct content."""
    seen: set[str] = set()
    out = []
    for folder in folders:
        if not folder.is_dir():
            raise M2DError("music folder not found", path=folder)
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file():
                h = _sha(p)
                if h not in seen:
                    seen.add(h)
                    out.append(p)
    return out


def teacher_rows(song: Path, library: Any) -> list[tuple[float, float, str]]:
    """(start_s, end_s, phrase id) per analysed phrase: the model-free choreographer's choice."""
    from blender_m2d.core.analysis import analyze_song
    from blender_m2d.core.audio import load_audio
    from blender_m2d.core.choreography import score_phrases
    from blender_m2d.core.decode import decode

    audio = load_audio(song)
    analysis = analyze_song(audio)
    probs, m, _ = score_phrases(audio, analysis, library, None)
    seq = decode(probs, m, method="greedy").sequence
    return [(float(p.start_s), float(p.end_s), library.ids[int(j)])
            for p, j in zip(analysis.phrases, seq)]


def corpus_split(cfg: BundledConfig) -> tuple[list[Path], list[Path]]:
    """(seed songs, unlabelled songs) from ``cfg.corpus``: evenly spread over its sorted audio
    files, alternating seed / unlabelled."""
    if not cfg.corpus:
        return [], []
    root = Path(cfg.corpus)
    if not root.is_dir():
        log.warning("no corpus folder %s (python -m training.fetch_corpus); using the shipped "
                    "music only", root)
        return [], []
    pool = sorted(p for p in root.rglob("*") if p.is_file()
                  and p.suffix.lower() in AUDIO_SUFFIXES)
    n = min(len(pool), cfg.corpus_seed_songs + cfg.corpus_unlabelled_songs)
    if n == 0:
        return [], []
    picks = sorted({round(i * (len(pool) - 1) / max(n - 1, 1)) for i in range(n)})
    chosen = [pool[i] for i in picks]
    seed = chosen[0::2][:cfg.corpus_seed_songs]
    unl = [p for p in chosen if p not in seed][:cfg.corpus_unlabelled_songs]
    return seed, unl


def _place(src: Path, dst: Path) -> None:
    """Hard-link (same file system) or copy ``src`` to ``dst``."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build_dataset(cfg: BundledConfig) -> tuple[Path, dict[str, Any]]:
    """Write ``<work>/dataset`` (dataset.json, labels.csv, songs/, unlabelled/)."""
    from blender_m2d.core.library import load_library

    lib_path = Path(cfg.library)
    library = load_library(lib_path)
    songs = collect_songs([Path(f.strip()) for f in cfg.music.split(",") if f.strip()])
    test = {s.strip() for s in cfg.test_songs.split(",") if s.strip()}
    unl = {s.strip() for s in cfg.unlabelled_songs.split(",") if s.strip()}
    missing = (test | unl) - {p.stem for p in songs}
    if missing:
        raise M2DError(f"songs named in test_songs/unlabelled_songs not found: {sorted(missing)}")
    corpus_seed, corpus_unl = corpus_split(cfg)
    work = Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "teacher"
    cache.mkdir(exist_ok=True)
    summary: dict[str, Any] = {"seed_songs": [], "test_songs": [], "unlabelled_songs": [],
                               "corpus": str(cfg.corpus or "")}

    names = {p: p.name for p in songs}
    names.update({p: "corpus__" + "__".join(p.relative_to(cfg.corpus).parts)
                  for p in [*corpus_seed, *corpus_unl]})

    with atomic_directory(work / "dataset") as ds:
        (ds / "songs").mkdir()
        (ds / "unlabelled").mkdir()
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["song", "start_s", "end_s", "phrase_id", "split"])
        for p in [*songs, *corpus_seed]:
            name = names[p]
            if p.stem in unl:
                _place(p, ds / "unlabelled" / name)
                summary["unlabelled_songs"].append(name)
                continue
            _place(p, ds / "songs" / name)
            key = cache / f"{_sha(p)[:16]}-{library.hash[:12]}.json"
            if key.is_file():
                rows = [tuple(r) for r in json.loads(key.read_text())]
            else:
                log.info("teacher-labelling %s", name)
                rows = teacher_rows(p, library)
                write_json_atomic(key, rows)
            split = "test" if p.stem in test else "train"
            summary["test_songs" if split == "test" else "seed_songs"].append(
                {"song": name, "phrases": len(rows)})
            for s, e, pid in rows:
                w.writerow([name, f"{s:.4f}", f"{e:.4f}", pid, split])
        for p in corpus_unl:
            _place(p, ds / "unlabelled" / names[p])
            summary["unlabelled_songs"].append(names[p])
        write_bytes_atomic(ds / "labels.csv", buf.getvalue().encode("utf-8"))
        write_json_atomic(ds / "dataset.json", {
            "format": DATASET_FORMAT, "format_version": DATASET_VERSION,
            "library": str((lib_path / "library.json").resolve() if lib_path.is_dir()
                           else lib_path.resolve()),
            "labels": "labels.csv", "songs_dir": "songs", "unlabelled_dir": "unlabelled",
            "label_source": "teacher: core.baseline rhythm/energy matcher, greedy Eq. 6 "
                            "decoding with the style transition matrix M0"})
    summary["library_phrases"] = len(library.ids)
    return work / "dataset", summary


def run(cfg: BundledConfig) -> dict[str, Any]:
    from .coascent import co_ascent
    from .data import load_prepared
    from .evaluate import run as evaluate
    from .export import export_checkpoint
    from .prepare import prepare

    work = Path(cfg.work)
    rt = {k: getattr(cfg, k) for k in ("device", "amp", "channels_last", "seed", "workers",
                                       "progress", "resume")}
    dataset, dsum = build_dataset(cfg)
    prep = prepare(PrepareConfig(dataset=str(dataset), out=str(work / "prepared"),
                                 workers=cfg.prepare_workers, progress=cfg.progress))
    data = load_prepared(work / "prepared")
    from .classify import train_classifier
    from .pretrain import train_encoder

    train_encoder(data, PretrainConfig(**rt, data=str(work / "prepared"),
                                       out=str(work / "pretrain"), preset=cfg.preset,
                                       epochs=cfg.pretrain_epochs, lr=cfg.pretrain_lr,
                                       step_epochs=max(cfg.pretrain_epochs // 2, 1),
                                       val_fraction=0.0))
    train_classifier(data, ClassifyConfig(**rt, data=str(work / "prepared"),
                                          encoder=str(work / "pretrain"),
                                          out=str(work / "classify"),
                                          epochs=cfg.classify_epochs, balance=cfg.balance,
                                          allow_empty_classes=True))
    co = co_ascent(data, CoascentConfig(**rt, data=str(work / "prepared"),
                                        classifier=str(work / "classify"),
                                        out=str(work / "coascent"), balance=cfg.balance,
                                        max_rounds=cfg.coascent_rounds))
    note = ("labels from a teacher (the model-free rhythm/energy matcher, core.baseline, "
            "greedy-decoded with M0), not from choreographers; see docs/training.md")
    exp = export_checkpoint(ExportConfig(checkpoint=str(work / "coascent"),
                                         out=str(work / "model"), data_note=note),
                            training_extra={"bundled": dsum})
    report = evaluate(EvaluateConfig(**rt, data=str(work / "prepared"),
                                     checkpoint=str(work / "model"), split="test",
                                     out=str(work / "eval-test.json")))
    model, base = report.get("raw", {}), report["frequency_baseline"].get("raw", {})
    beats = model.get("top1", 0) > base.get("top1", 0) and model.get("mrr", 0) > \
        base.get("mrr", 0)
    result = {"dataset": dsum, "prepared": prep, "coascent_rounds": co["rounds"],
              "export": exp, "test": {k: report.get(k) for k in ("n", "raw", "with_M")},
              "frequency_baseline": report["frequency_baseline"], "beats_baseline": beats}
    if not beats:
        raise M2DError(f"the bundled model does not beat the frequency baseline on the held-out "
                       f"songs (model {model}, baseline {base}); not installing it",
                       path=work / "model")
    # re-export with the held-out metrics in the sidecar, then install atomically
    exp = export_checkpoint(ExportConfig(checkpoint=str(work / "coascent"),
                                         out=str(work / "model"), data_note=note,
                                         metrics=str(work / "eval-test.json")),
                            training_extra={"bundled": dsum})
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out) as tmp:
        for f in ("model.onnx", "model.json"):
            shutil.copy2(work / "model" / f, tmp / f)
        write_bytes_atomic(tmp / "README.md", readme(result).encode("utf-8"))
    result["installed"] = str(out)
    return result


def readme(result: dict[str, Any]) -> str:
    t, b = result["test"], result["frequency_baseline"]
    ds = result["dataset"]

    def pct(d: dict, k: str) -> str:
        return f"{100 * d[k]:.1f} %" if d and k in d else "-"

    return "\n".join([
        "# The bundled model", "",
        "Built by `python -m training bundled` (docs/training.md, \"The bundled model\").", "",
        "**Labels are not from choreographers.** The project can ship no expert-labelled data, "
        "so every music phrase of the seed songs was labelled with the dance phrase that the "
        "add-on's model-free choreographer picks (the rhythm/energy matcher in "
        "`blender_m2d/core/baseline.py`, decoded greedily with the style transition matrix). "
        "The network learns to imitate that teacher from the mel spectrogram; then co-ascent "
        "refines it on unlabelled songs.", "",
        f"* library: {ds.get('library_phrases')} dance phrases (`blender_m2d/assets/library`)",
        f"* seed songs (teacher labels): {', '.join(s['song'] for s in ds['seed_songs'])}",
        f"* held-out songs: {', '.join(s['song'] for s in ds['test_songs'])}",
        f"* unlabelled songs: {', '.join(ds['unlabelled_songs']) or '-'}", "",
        f"Held-out agreement with the teacher ({t.get('n')} phrases): Top-1 "
        f"{pct(t.get('raw'), 'top1')}, Top-5 {pct(t.get('raw'), 'top5')}, MRR "
        f"{pct(t.get('raw'), 'mrr')}; with the transition matrix: Top-1 "
        f"{pct(t.get('with_M'), 'top1')}. Frequency baseline: Top-1 {pct(b.get('raw'), 'top1')},"
        f" Top-5 {pct(b.get('raw'), 'top5')}, MRR {pct(b.get('raw'), 'mrr')}.", "",
        "Music: see data/SOURCES.md for licences and attribution.", ""])


__all__ = ["build_dataset", "collect_songs", "readme", "run", "teacher_rows"]
