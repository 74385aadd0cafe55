"""Stage 3: co-ascent learning (supplementary Algorithm 1, read as in spec 5.4).

E stays frozen; starting from the stage-2 predictor P_0 and M_0, each round k:
  a. P_k scores every unlabelled phrase;
  b. Eq. 6 rescales the scores left to right within each song by M_k(d_{t-1} -> .), d_{t-1}
     being the previous phrase's rescaled choice; each rescaled row is renormalised;
  c./d. phrases whose renormalised top probability exceeds tau form D_u' (pseudo-labelled);
  e. P is fine-tuned on D_l + D_u' for ``epochs_per_round`` epochs (SGD lr 1e-5, class-balanced);
  f./g. M_{k+1} = clip(alpha M_k + (1 - alpha) C~, 0.01, 1), C~ = row-max-normalised sums of
     P(d_{t-1}) P(d_t) over all adjacent unlabelled pairs (step-b probabilities).
It stops when D_u' grows by less than ``min_growth`` of D_u, when all of D_u is labelled, or
after ``max_rounds``. Checkpoint after every round; a killed run resumes at the last round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blender_m2d.core.errors import M2DError

from . import distributed
from .checkpoint import CHECKPOINT_NAME, check_resumable, load_checkpoint, save_checkpoint
from .classify import embed, fit_head, head_probs, load_classifier, sgd, split_metrics
from .config import CoascentConfig, to_dict
from .data import TEST, TRAIN, UNLABELLED, VAL, PhraseData, load_prepared, summarize
from .runtime import NanGuard, RunLog, prepare_out, progress, save_run_config, seed_everything
from .transition import rescale_greedy, subset_prev, update_transition

log = logging.getLogger(__name__)
STAGE = "coascent"
RESUME_IGNORES = {"max_rounds", "workers", "progress", "resume", "device", "data", "out"}


def pseudo_labels(rescaled: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """(positions, labels) of the phrases whose renormalised top probability exceeds ``tau``."""
    conf = rescaled.max(axis=1)
    keep = np.flatnonzero(conf > tau)
    return keep, rescaled[keep].argmax(axis=1)


def co_ascent(data: PhraseData, cfg: CoascentConfig, *,
              on_round: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run Algorithm 1 from ``cfg.classifier`` and write ``<out>/checkpoint.pt``."""
    info = distributed.init(cfg.device)
    out = prepare_out(cfg.out, is_main=info.is_main)
    seed_everything(cfg.seed)
    dev = info.device
    encoder, head, m0, src = load_classifier(cfg.classifier, data.space.k)
    if tuple(src["phrase_ids"]) != data.space.ids or src["library_hash"] != data.space.hash:
        raise M2DError("the classifier was trained for another dance library than this "
                       "prepared data's", path=src["_path"])
    if src.get("head", "resatt") != "resatt":
        raise M2DError("co-ascent fine-tunes the Res-Att predictor P; this checkpoint has "
                       f"a {src.get('head')!r} head", path=src["_path"])
    lab_rows = data.indices(TRAIN)
    unl_splits = (UNLABELLED, TEST) if cfg.include_test_songs else (UNLABELLED,)
    unl_rows = data.indices(*unl_splits)
    if unl_rows.size == 0:
        raise M2DError("co-ascent needs unlabelled songs; the prepared data has none",
                       path=data.path)
    eval_rows = np.sort(np.concatenate([data.indices(VAL), data.indices(TEST)]))
    all_rows = np.sort(np.concatenate([lab_rows, unl_rows, eval_rows]))
    emb = embed(encoder, data, all_rows, device=dev, amp=cfg.amp,
                channels_last=cfg.channels_last, show=cfg.progress and info.is_main)
    pos = np.full(len(data), -1, np.int64)
    pos[all_rows] = np.arange(all_rows.size)
    x_lab = torch.from_numpy(emb[pos[lab_rows]])
    y_lab = torch.from_numpy(data.label[lab_rows])
    emb_unl = emb[pos[unl_rows]]
    prev_unl = subset_prev(data.prev, unl_rows)

    head.to(dev)
    model = distributed.wrap(head, info)
    opt = sgd(head.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    m = m0.copy()
    cfg_dict = to_dict(cfg)
    ckpt_path = out / CHECKPOINT_NAME
    start, history, prev_size = 0, [], 0
    if cfg.resume and ckpt_path.is_file():
        doc = load_checkpoint(ckpt_path, stages=(STAGE,), n_classes=data.space.k)
        check_resumable(doc, cfg_dict, ignore=RESUME_IGNORES)
        head.load_state_dict(doc["state"]["predictor"])
        opt.load_state_dict(doc["optimizer"])
        m = doc["transition"].numpy().astype(np.float32)
        start, history = int(doc["round"]), list(doc.get("history", []))
        prev_size = int(history[-1]["pseudo_labelled"]) if history else 0
        if doc.get("done"):
            return _summary(doc, ckpt_path)
    if info.is_main:
        save_run_config(out, STAGE, cfg_dict)
    runlog = RunLog(out, keep_until_epoch=start, enabled=info.is_main)
    guard = NanGuard(dev, STAGE, out)
    done = False
    rounds = range(start + 1, cfg.max_rounds + 1)
    for k in progress(rounds, enabled=cfg.progress and info.is_main, desc="co-ascent",
                      total=len(rounds)):
        probs = head_probs(head, emb_unl, dev)                                   # a
        rescaled, _ = rescale_greedy(probs, prev_unl, m)                         # b
        keep, plabels = pseudo_labels(rescaled, cfg.tau)                         # c, d
        x = torch.cat([x_lab, torch.from_numpy(emb_unl[keep])]).to(dev)
        y = torch.cat([y_lab, torch.from_numpy(plabels)]).to(dev)
        losses = []
        for e in range(cfg.epochs_per_round):                                    # e
            epoch = (k - 1) * cfg.epochs_per_round + e + 1
            losses.append(fit_head(model, opt, x, y, epoch=epoch, batch_size=cfg.batch_size,
                                   balance=cfg.balance, seed=cfg.seed, info=info,
                                   guard=guard, freeze_bn=cfg.freeze_bn))
        guard.check(k, {"loss": losses[-1]})
        m = update_transition(m, rescaled, prev_unl, cfg.alpha)                  # f, g
        truth = getattr(data, "hidden_truth", None)
        row: dict[str, Any] = {
            "epoch": k, "round": k, "pseudo_labelled": int(keep.size),
            "pseudo_fraction": keep.size / unl_rows.size, "loss": losses[-1],
            "M_mean": float(m.mean())}
        if truth is not None and keep.size:   # synthetic data only: pseudo-label accuracy
            row["pseudo_accuracy"] = float(np.mean(truth[unl_rows[keep]] == plabels))
        growth = (keep.size - prev_size) / unl_rows.size
        prev_size = keep.size
        done = (k == cfg.max_rounds or keep.size == unl_rows.size
                or (k > 1 and growth < cfg.min_growth))
        history.append(row)
        runlog.append(row)
        metrics = {}
        if done:
            def probs_of(rows: np.ndarray) -> np.ndarray:
                return head_probs(head, emb[pos[rows]], dev)

            metrics = split_metrics(data, probs_of, m)
        if info.is_main:
            save_checkpoint(ckpt_path, {
                "stage": STAGE, "preset": src["preset"], "model_config": src["model_config"],
                "config": cfg_dict, "round": k, "epoch": k * cfg.epochs_per_round,
                "done": done, "state": {"encoder": encoder.state_dict(),
                                        "predictor": head.state_dict()},
                "optimizer": opt.state_dict(), "transition": torch.from_numpy(m),
                "transition_m0": torch.from_numpy(m0), "history": history,
                "phrase_ids": list(data.space.ids), "library_hash": data.space.hash,
                "data_summary": summarize(data), "head": "resatt",
                "classifier_source": str(cfg.classifier), "metrics": metrics,
                "stop_reason": _reason(k, cfg, keep.size, unl_rows.size, growth) if done
                else ""})
        distributed.barrier(info)
        if on_round is not None:
            on_round(k)
        if done:
            break
    doc = load_checkpoint(ckpt_path, stages=(STAGE,))
    return _summary(doc, ckpt_path)


def _reason(k: int, cfg: CoascentConfig, size: int, total: int, growth: float) -> str:
    if size == total:
        return "every unlabelled phrase is pseudo-labelled"
    if k == cfg.max_rounds:
        return f"max_rounds ({cfg.max_rounds}) reached"
    return f"D_u' grew by {growth:.4f} < min_growth {cfg.min_growth}"


def _summary(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    return {"checkpoint": str(path), "rounds": int(doc["round"]),
            "stop_reason": doc.get("stop_reason", ""), "metrics": doc.get("metrics", {}),
            "history": doc.get("history", [])}


def run(cfg: CoascentConfig) -> dict[str, Any]:
    """``python -m training coascent``."""
    return co_ascent(load_prepared(cfg.data), cfg)
