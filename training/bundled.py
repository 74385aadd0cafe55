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
    runtime_of,
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


TEACHERS = ("argmax", "greedy")
TEACHER_NOTE = {
    "argmax": "teacher: the core.baseline rhythm/energy matcher's top-scored library phrase for "
              "each music phrase",
    "greedy": "teacher: the core.baseline rhythm/energy matcher decoded greedily (Eq. 6) with the "
              "style transition matrix M0, no immediate repeats"}


def teacher_rows(song: Path, library: Any, teacher: str = "argmax"
                 ) -> list[tuple[float, float, str]]:
    """(start_s, end_s, phrase id) per analysed phrase of ``song``: the model-free matcher's pick.

    ``teacher="argmax"``: the library phrase the rhythm/energy matcher scores highest for that
    music phrase on its own (a function of the phrase's music alone). ``"greedy"``: the phrase
    the add-on's model-free choreographer places there (greedy Eq. 6 with the style transition
    matrix M0, no immediate repeats), which also depends on the previous phrase's choice.
    """
    from blender_m2d.core.analysis import analyze_song
    from blender_m2d.core.audio import load_audio
    from blender_m2d.core.choreography import score_phrases
    from blender_m2d.core.decode import decode

    if teacher not in TEACHERS:
        raise M2DError(f"unknown teacher {teacher!r}; use one of {TEACHERS}")
    audio = load_audio(song)
    analysis = analyze_song(audio)
    probs, m, _ = score_phrases(audio, analysis, library, None)
    if teacher == "argmax":
        seq = probs.argmax(axis=1)
    else:
        seq = decode(probs, m, method="greedy").sequence
    return [(float(p.start_s), float(p.end_s), library.ids[int(j)])
            for p, j in zip(analysis.phrases, seq)]


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)``."""
    k = min(k, n)
    return sorted({(i * n) // k + (n // k) // 2 for i in range(k)}) if k else []


def corpus_split(cfg: BundledConfig) -> dict[str, list[Path]]:
    """The songs of ``cfg.corpus`` by role: ``test`` (held out for evaluation), ``val`` (model
    selection), ``unlabelled`` (stage 1 and co-ascent only) and ``seed`` (teacher-labelled).

    The corpus' audio files are sorted by path; ``corpus_test_songs`` of them spread evenly over
    that list are held out, then ``corpus_val_songs`` spread evenly over the rest, then
    ``corpus_unlabelled_songs`` spread evenly over what remains; up to ``corpus_seed_songs`` of
    the remainder are teacher-labelled for training. Deterministic, and every package
    contributes to every role.
    """
    roles: dict[str, list[Path]] = {"test": [], "val": [], "unlabelled": [], "seed": []}
    if not cfg.corpus:
        return roles
    root = Path(cfg.corpus)
    if not root.is_dir():
        log.warning("no corpus folder %s (python -m training.fetch_corpus); using the shipped "
                    "music only", root)
        return roles
    rest = sorted(p for p in root.rglob("*") if p.is_file()
                  and p.suffix.lower() in AUDIO_SUFFIXES)
    for role, n in (("test", cfg.corpus_test_songs), ("val", cfg.corpus_val_songs),
                    ("unlabelled", cfg.corpus_unlabelled_songs)):
        roles[role] = [rest[i] for i in _spread(len(rest), n)]
        rest = [p for p in rest if p not in roles[role]]
    roles["seed"] = rest[:max(cfg.corpus_seed_songs, 0)]
    return roles


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
    roles = corpus_split(cfg)
    work = Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "teacher"
    cache.mkdir(exist_ok=True)
    summary: dict[str, Any] = {"seed_songs": [], "val_songs": [], "test_songs": [],
                               "unlabelled_songs": [], "corpus": str(cfg.corpus or "")}

    names = {p: p.name for p in songs}
    split_of = {p: "test" if p.stem in test else "train" for p in songs}
    for role, split in (("seed", "train"), ("val", "val"), ("test", "test")):
        for p in roles[role]:
            split_of[p] = split
    for p in [*songs, *(q for r in roles.values() for q in r)]:
        if p not in songs:
            names[p] = "corpus__" + "__".join(p.relative_to(cfg.corpus).parts)
    unlabelled = [p for p in songs if p.stem in unl] + roles["unlabelled"]

    with atomic_directory(work / "dataset") as ds:
        (ds / "songs").mkdir()
        (ds / "unlabelled").mkdir()
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["song", "start_s", "end_s", "phrase_id", "split"])
        for p, split in split_of.items():
            if p in unlabelled:
                continue
            name = names[p]
            _place(p, ds / "songs" / name)
            key = cache / f"{_sha(p)[:16]}-{library.hash[:12]}-{cfg.teacher}.json"
            if key.is_file():
                rows = [tuple(r) for r in json.loads(key.read_text())]
            else:
                log.info("teacher-labelling %s", name)
                rows = teacher_rows(p, library, cfg.teacher)
                write_json_atomic(key, rows)
            role = {"train": "seed_songs", "val": "val_songs", "test": "test_songs"}[split]
            summary[role].append({"song": name, "phrases": len(rows)})
            for s, e, pid in rows:
                w.writerow([name, f"{s:.4f}", f"{e:.4f}", pid, split])
        for p in unlabelled:
            _place(p, ds / "unlabelled" / names[p])
            summary["unlabelled_songs"].append(names[p])
        write_bytes_atomic(ds / "labels.csv", buf.getvalue().encode("utf-8"))
        write_json_atomic(ds / "dataset.json", {
            "format": DATASET_FORMAT, "format_version": DATASET_VERSION,
            "library": str((lib_path / "library.json").resolve() if lib_path.is_dir()
                           else lib_path.resolve()),
            "labels": "labels.csv", "songs_dir": "songs", "unlabelled_dir": "unlabelled",
            "label_source": TEACHER_NOTE[cfg.teacher]})
    summary["teacher"] = cfg.teacher
    summary["library_phrases"] = len(library.ids)
    return work / "dataset", summary


STAGES = ("all", "data", "fit", "install")
"""``data``: teacher-labelled dataset + features (CPU, needs the audio); ``fit``: pre-training,
classifier and co-ascent from ``<work>/prepared`` (where a GPU is); ``install``: export the
co-ascent checkpoint, evaluate it on the held-out songs and install it if it beats the frequency
baseline; ``all``: the three in order."""


def _data_summary(work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    summary_file = work / "data-summary.json"
    if not summary_file.is_file():
        raise M2DError("no prepared data: run the 'data' stage first", path=summary_file)
    saved = json.loads(summary_file.read_text(encoding="utf-8"))
    return saved["dataset"], saved["prepared"]


def fit(cfg: BundledConfig) -> dict[str, Any]:
    """Stages 1-3 on ``<work>/prepared``: ``<work>/pretrain``, ``classify``, ``coascent``."""
    from .classify import train_classifier
    from .coascent import co_ascent
    from .data import load_prepared
    from .pretrain import train_encoder

    work, rt = Path(cfg.work), runtime_of(cfg)
    _data_summary(work)
    data = load_prepared(work / "prepared")
    pre = train_encoder(data, PretrainConfig(**rt, data=str(work / "prepared"),
                                             out=str(work / "pretrain"), preset=cfg.preset,
                                             epochs=cfg.pretrain_epochs, lr=cfg.pretrain_lr,
                                             step_epochs=max(cfg.pretrain_epochs // 2, 1),
                                             val_fraction=0.0))
    cls = train_classifier(data, ClassifyConfig(**rt, data=str(work / "prepared"),
                                                encoder=str(work / "pretrain"),
                                                out=str(work / "classify"),
                                                epochs=cfg.classify_epochs, balance=cfg.balance,
                                                allow_empty_classes=True))
    co = co_ascent(data, CoascentConfig(**rt, data=str(work / "prepared"),
                                        classifier=str(work / "classify"),
                                        out=str(work / "coascent"), balance=cfg.balance,
                                        max_rounds=cfg.coascent_rounds))
    summary = {"pretrain": _plain(pre), "classify": _plain(cls), "coascent": _plain(co)}
    write_json_atomic(work / "fit-summary.json", summary)
    return summary


_JSON = (str, int, float, bool, dict, list, tuple, type(None))


def _plain(x: Any) -> Any:
    """JSON-safe copy of a step's result (drops what JSON cannot hold, e.g. modules)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items() if isinstance(v, _JSON)}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x if isinstance(v, _JSON)]
    return x


def install(cfg: BundledConfig) -> dict[str, Any]:
    """Export ``<work>/coascent``, evaluate it on the held-out songs, install it into
    ``cfg.out`` when it beats the frequency baseline (Top-1 and MRR, raw scores)."""
    from .evaluate import run as evaluate
    from .export import export_checkpoint

    work, rt = Path(cfg.work), runtime_of(cfg)
    dsum, prep = _data_summary(work)
    note = f"labels from a {TEACHER_NOTE[dsum.get('teacher', 'greedy')]}, not from " \
           "choreographers; see docs/training.md"
    exp = export_checkpoint(ExportConfig(checkpoint=str(work / "coascent"),
                                         out=str(work / "model"), data_note=note),
                            training_extra={"bundled": dsum})
    report = evaluate(EvaluateConfig(**rt, data=str(work / "prepared"),
                                     checkpoint=str(work / "model"), split="test",
                                     out=str(work / "eval-test.json")))
    model, base = report.get("raw", {}), report["frequency_baseline"].get("raw", {})
    beats = model.get("top1", 0) > base.get("top1", 0) and model.get("mrr", 0) > \
        base.get("mrr", 0)
    result = {"dataset": dsum, "prepared": prep, "export": exp,
              "test": {k: report.get(k) for k in ("n", "raw", "with_M")},
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


def run(cfg: BundledConfig) -> dict[str, Any]:
    from .prepare import prepare

    if cfg.stage not in STAGES:
        raise M2DError(f"unknown stage {cfg.stage!r}; use one of {STAGES}")
    work = Path(cfg.work)
    result: dict[str, Any] = {}
    if cfg.stage in ("all", "data"):
        dataset, dsum = build_dataset(cfg)
        prep = prepare(PrepareConfig(dataset=str(dataset), out=str(work / "prepared"),
                                     workers=cfg.prepare_workers, progress=cfg.progress))
        write_json_atomic(work / "data-summary.json", {"dataset": dsum, "prepared": prep})
        result.update(dataset=dsum, prepared=prep)
    if cfg.stage in ("all", "fit"):
        result["fit"] = fit(cfg)
    if cfg.stage in ("all", "install"):
        result.update(install(cfg))
    return result


def readme(result: dict[str, Any]) -> str:
    t, b = result["test"], result["frequency_baseline"]
    ds = result["dataset"]

    def pct(d: dict | None, k: str) -> str:
        return f"{100 * d[k]:.1f} %" if d and k in d else "-"

    def songs(items: list) -> str:
        names = [x["song"] if isinstance(x, dict) else x for x in items]
        return f"{len(names)} ({', '.join(names)})" if names else "none"

    return "\n".join([
        "# The bundled model", "",
        "Built by `python -m training bundled` (docs/training.md, \"The bundled model\").", "",
        "**Its labels do not come from choreographers.** The project can ship no "
        "expert-labelled data, so every music phrase of the seed songs was labelled by the "
        "add-on's own model-free choreographer, the rhythm/energy matcher in "
        f"`blender_m2d/core/baseline.py` ({TEACHER_NOTE[ds.get('teacher', 'greedy')]}). "
        "The network learns to imitate that teacher from the mel spectrogram alone; "
        "co-ascent then refines it on unlabelled songs. It is a demonstration of the paper's "
        "pipeline on shippable data, not the paper's model.", "",
        f"* library: {ds.get('library_phrases')} dance phrases (`blender_m2d/assets/library`)",
        f"* seed songs (teacher labels): {songs(ds['seed_songs'])}",
        f"* validation songs (teacher labels, model selection): {songs(ds.get('val_songs', []))}",
        f"* held-out songs (teacher labels, never trained on): {songs(ds['test_songs'])}",
        f"* unlabelled songs: {songs(ds['unlabelled_songs'])}",
        "* music: `../shared/data/music`, `data/songs` (data/SOURCES.md) and, as `corpus__*`, "
        "Debian game soundtracks fetched by `python -m training.fetch_corpus` (wesnoth-1.16-music"
        ", supertux-data; GPL-2+ / CC BY-SA, see each package's copyright file). The weights were "
        "fitted on that music; retrain with `--corpus \"\"` for a model of the shipped songs "
        "only.", "",
        f"Held-out agreement with the teacher ({t.get('n')} phrases): Top-1 "
        f"{pct(t.get('raw'), 'top1')}, Top-5 {pct(t.get('raw'), 'top5')}, Top-10 "
        f"{pct(t.get('raw'), 'top10')}, MRR {pct(t.get('raw'), 'mrr')}; with the transition "
        f"matrix (greedy Eq. 6): Top-1 {pct(t.get('with_M'), 'top1')}, MRR "
        f"{pct(t.get('with_M'), 'mrr')}. Frequency baseline (always the teacher's most frequent "
        f"phrases): Top-1 {pct(b.get('raw'), 'top1')}, Top-5 {pct(b.get('raw'), 'top5')}, "
        f"Top-10 {pct(b.get('raw'), 'top10')}, MRR {pct(b.get('raw'), 'mrr')}.", ""])


__all__ = ["build_dataset", "collect_songs", "readme", "run", "teacher_rows"]
