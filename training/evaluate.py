"""Top-1/5/10 and MRR on a split, raw and with the transition matrix applied (spec 6.1, #32).

"with M" is the paper's decoding (Eq. 6): songs are processed left to right and each phrase's
probabilities are multiplied by M(d_{t-1} -> .), d_{t-1} being the model's own (rescaled) choice
for the previous phrase, then ranked. "with M, true previous" conditions on the labelled previous
dance phrase instead (Eq. 6 as a conditional model, P(d_t | u_t, d_{t-1}); no error
propagation). The first phrase of a song (or after a gap) is not rescaled.
A checkpoint is scored with torch; a model folder (model.onnx + model.json) with onnxruntime
through ``blender_m2d.core.inference`` -- exactly what the add-on runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from blender_m2d.core.errors import M2DError
from blender_m2d.core.fileio import write_json_atomic

from .config import EvaluateConfig
from .data import SPLIT_CODES, TRAIN, PhraseData, load_prepared
from .transition import rescale_greedy, subset_prev

log = logging.getLogger(__name__)
KS = (1, 5, 10)


def ranks_of(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1-based rank of each true label in its row of ``scores`` (ties count against it)."""
    true = scores[np.arange(len(labels)), labels]
    return (scores > true[:, None]).sum(axis=1) + 1


def retrieval_metrics(probs: np.ndarray, labels: np.ndarray, prev: np.ndarray,
                      transition: np.ndarray | None, ks: tuple[int, ...] = KS) -> dict[str, Any]:
    """``{"n", "raw": {top1, top5, top10, mrr}, "with_M": {...}, "with_M_true_prev": {...}}``
    (fractions in [0, 1])."""
    out: dict[str, Any] = {"n": len(labels)}
    if len(labels) == 0:
        return out
    variants = {"raw": probs}
    if transition is not None:
        variants["with_M"] = rescale_greedy(probs, prev, transition)[0]
        tf = np.array(probs, dtype=np.float64)
        has = prev >= 0
        tf[has] *= transition[labels[prev[has]]]
        variants["with_M_true_prev"] = tf
    for name, scores in variants.items():
        r = ranks_of(np.asarray(scores), labels)
        out[name] = {**{f"top{k}": float(np.mean(r <= k)) for k in ks},
                     "mrr": float(np.mean(1.0 / r))}
    return out


def frequency_baseline(data: PhraseData, rows: np.ndarray) -> dict[str, Any]:
    """The frequency baseline: always rank dance phrases by their count in the train split."""
    counts = np.bincount(data.label[data.indices(TRAIN)], minlength=data.space.k).astype(float)
    scores = np.tile(counts + 1e-6 * np.arange(data.space.k)[::-1], (rows.size, 1))
    return retrieval_metrics(scores, data.label[rows], subset_prev(data.prev, rows), None)


def split_rows(data: PhraseData, split: str) -> np.ndarray:
    if split not in ("train", "val", "test"):
        raise M2DError(f"split must be train, val or test, got {split!r}")
    rows = data.indices(SPLIT_CODES[split])
    if rows.size == 0:
        raise M2DError(f"the prepared data has no labelled phrases in split {split!r}",
                       path=data.path)
    return rows


def evaluate_rows(data: PhraseData, rows: np.ndarray, probs: np.ndarray,
                  transition: np.ndarray | None) -> dict[str, Any]:
    return retrieval_metrics(probs, data.label[rows], subset_prev(data.prev, rows), transition)


def probs_from_model_folder(folder: Path, data: PhraseData, rows: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
    from blender_m2d.core.inference import load_scorer

    scorer = load_scorer(folder, device="auto")
    if tuple(scorer.phrase_ids) != tuple(data.space.ids) or scorer.library_hash != \
            data.space.hash:
        raise M2DError("the model was trained for another dance library than this prepared "
                       "data's", path=folder)
    probs = np.concatenate([scorer.score(np.asarray(data.mel[rows[i:i + 256]], np.float32))
                            for i in range(0, rows.size, 256)])
    return probs, scorer.transition


def run(cfg: EvaluateConfig) -> dict[str, Any]:
    """``python -m training evaluate``: metrics of a checkpoint or a model folder on a split."""
    data = load_prepared(cfg.data)
    rows = split_rows(data, cfg.split)
    target = Path(cfg.checkpoint)
    if (target / "model.onnx").is_file() or target.suffix == ".onnx":
        probs, m = probs_from_model_folder(target if target.is_dir() else target.parent,
                                           data, rows)
        source = "onnx"
    else:
        from .classify import predict_probs_from_checkpoint

        probs, m = predict_probs_from_checkpoint(target, data, rows, cfg)
        source = "checkpoint"
    report = {"split": cfg.split, "source": source, "model": str(target),
              **evaluate_rows(data, rows, probs, m),
              "frequency_baseline": frequency_baseline(data, rows)}
    out = Path(cfg.out) if cfg.out else (target if target.is_dir() else target.parent) / \
        f"eval-{cfg.split}.json"
    write_json_atomic(out, report)
    report["report"] = str(out)
    return report
