"""Stage 2: supervised dance-phrase classification (spec 5.2).

E comes from a stage-1 checkpoint and is frozen (eval mode, BN statistics frozen), so the
embeddings u are computed once; P (Linear + 3 Res-Att + Linear) is trained on them with
cross-entropy, SGD lr 1e-2, momentum 0.9, weight decay 5e-4, cosine decay over 500 epochs,
batch 256, and class-balanced sampling ("Balance"). The best epoch on the val split (when the
data has one) is kept. ``--finetune-encoder`` with ``--head plain`` trains E end to end
instead (ablation groups I and II; ``--encoder ""`` = random init, group I).

The checkpoint also carries M0, the initial transition matrix (spec 8 #27).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from blender_m2d.core.errors import M2DError
from models import ClassifierNet, Encoder, ModelConfig, PlainHead, Predictor

from . import distributed
from .checkpoint import (
    CHECKPOINT_NAME,
    check_resumable,
    load_checkpoint,
    load_state,
    model_config_of,
    save_checkpoint,
)
from .config import ClassifyConfig, RuntimeConfig, to_dict
from .data import TEST, TRAIN, VAL, PhraseData, check_classes, load_prepared, summarize
from .evaluate import evaluate_rows, frequency_baseline
from .pretrain import preset_config
from .runtime import (
    NanGuard,
    PhraseBatches,
    RunLog,
    amp_dtype,
    autocast,
    balanced_weights,
    epoch_generator,
    loader,
    prepare_out,
    progress,
    save_run_config,
    seed_everything,
    shard_batches,
)
from .transition import initial_transition, subset_prev

log = logging.getLogger(__name__)
STAGE = "classify"
RESUME_IGNORES = {"epochs", "workers", "progress", "resume", "device", "data", "out"}
SAVE_EVERY = 10


# --------------------------------------------------------------------------------------------
# building blocks shared with co-ascent, evaluation and the ablation
# --------------------------------------------------------------------------------------------

def load_encoder(path: str, *, preset: str = "", k: int) -> tuple[Encoder, dict[str, Any]]:
    """The encoder of a stage-1 (or later) checkpoint, for a data set with K classes."""
    doc = load_checkpoint(path, stages=("pretrain", "classify", "coascent"), preset=preset or None)
    mcfg = model_config_of(doc)
    enc = Encoder(ModelConfig.from_dict({**mcfg.to_dict(), "n_classes": k}))
    load_state(enc, doc["state"]["encoder"], name="encoder", path=doc["_path"])
    return enc, doc


def make_head(mcfg: ModelConfig, kind: str) -> nn.Module:
    if kind == "resatt":
        return Predictor(mcfg)
    if kind == "plain":
        return PlainHead(mcfg)
    raise M2DError(f"head must be 'resatt' or 'plain', got {kind!r}")


@torch.no_grad()
def embed(encoder: Encoder, data: PhraseData, rows: np.ndarray, *, device: torch.device,
          batch_size: int = 256, amp: bool = True, channels_last: bool = True,
          show: bool = False) -> np.ndarray:
    """u for ``rows`` with E in eval mode: (n, D) float32."""
    encoder = encoder.to(device).eval()
    dtype = amp_dtype(device, amp)
    if device.type == "cuda" and channels_last:
        encoder.to(memory_format=torch.channels_last)
    out = np.zeros((rows.size, encoder.cfg.embed_dim), np.float32)
    ds = PhraseBatches(data, rows, with_targets=False)
    batches = list(torch.split(torch.arange(rows.size), batch_size))
    pos = 0
    for batch in progress(loader(ds, batches, 0, device.type == "cuda"), enabled=show,
                          desc="embedding", total=len(batches)):
        mel = batch["mel"].to(device, non_blocking=True)
        if device.type == "cuda" and channels_last:
            mel = mel.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            _, u = encoder(mel)
        out[pos:pos + len(mel)] = u.float().cpu().numpy()
        pos += len(mel)
    return out


@torch.no_grad()
def head_probs(head: nn.Module, emb: np.ndarray, device: torch.device,
               batch_size: int = 4096) -> np.ndarray:
    head = head.to(device).eval()
    x = torch.from_numpy(emb)
    parts = [torch.softmax(head(x[i:i + batch_size].to(device)).float(), -1).cpu()
             for i in range(0, len(x), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, 0), np.float32)


def fit_head(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
             epoch: int, batch_size: int, balance: bool, seed: int,
             info: distributed.DistInfo, guard: NanGuard, freeze_bn: bool = False) -> float:
    """One epoch of cross-entropy on cached embeddings (``x`` (n, D), ``y`` (n,) on device).
    ``balance``: samples drawn with weight 1/n_c (with replacement), epoch size n.
    ``freeze_bn``: BatchNorm layers keep their running statistics (eval mode)."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    weights = balanced_weights(y.cpu().numpy()) if balance else None
    batches = shard_batches(len(y), batch_size, epoch_generator(seed, epoch, info.rank),
                            rank=info.rank, world=info.world, weights=weights)
    total = torch.zeros((), device=x.device)
    n = 0
    for b in batches:
        if len(b) < 2:
            continue  # BatchNorm1d needs 2 samples
        b = b.to(x.device)
        loss = F.cross_entropy(model(x[b]).float(), y[b])             # Eq. 5
        guard.update(loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach() * len(b)
        n += len(b)
    return float(total) / max(n, 1)


def sgd(params: Any, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def m0_for(data: PhraseData) -> np.ndarray:
    """M0 from the dance-style similarity and the labelled train songs' transitions."""
    rows = data.indices(TRAIN)
    return initial_transition(data.space.similarity, data.space.k, data.label[rows],
                              subset_prev(data.prev, rows))


def split_metrics(data: PhraseData, probs_of: Callable[[np.ndarray], np.ndarray],
                  transition: np.ndarray) -> dict[str, Any]:
    """Val/test metrics (and the frequency baseline on test) of a probability function."""
    out: dict[str, Any] = {}
    for name, code in (("val", VAL), ("test", TEST)):
        rows = data.indices(code)
        if rows.size:
            out[name] = evaluate_rows(data, rows, probs_of(rows), transition)
            if name == "test":
                out["frequency_baseline_test"] = frequency_baseline(data, rows)
    return out


# --------------------------------------------------------------------------------------------
# stage 2
# --------------------------------------------------------------------------------------------

def train_classifier(data: PhraseData, cfg: ClassifyConfig, *,
                     encoder: Encoder | None = None,
                     on_epoch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run stage 2 and write ``<out>/checkpoint.pt``; returns a summary with metrics.

    ``encoder`` overrides ``cfg.encoder`` (an in-memory stage-1 encoder, e.g. in the ablation).
    """
    info = distributed.init(cfg.device)
    out = prepare_out(cfg.out, is_main=info.is_main)
    seed_everything(cfg.seed)
    k = data.space.k
    train_rows = data.indices(TRAIN)
    check_classes(data, train_rows, allow_empty=cfg.allow_empty_classes, where=str(data.path or
                                                                                  "data"))
    enc_source = cfg.encoder or "random init"
    if encoder is None and cfg.encoder:
        encoder, _ = load_encoder(cfg.encoder, preset=cfg.preset, k=k)
    elif encoder is None:
        if not cfg.preset:
            raise M2DError("without --encoder (random init, ablation group I) give --preset")
        encoder = Encoder(preset_config(cfg.preset, k))
    else:
        encoder = copy.deepcopy(encoder)
        enc_source = "in-memory"
    mcfg = ModelConfig.from_dict({**encoder.cfg.to_dict(), "n_classes": k})
    if cfg.preset and mcfg.preset != cfg.preset:
        raise M2DError(f"the encoder was trained with preset {mcfg.preset!r} but --preset is "
                       f"{cfg.preset!r}", path=cfg.encoder or None)
    head = make_head(mcfg, cfg.head)
    m0 = m0_for(data)
    cfg_dict = to_dict(cfg)
    ckpt_path = out / CHECKPOINT_NAME
    resume_doc = None
    if cfg.resume and ckpt_path.is_file():
        resume_doc = load_checkpoint(ckpt_path, stages=(STAGE,), preset=mcfg.preset,
                                     n_classes=k)
        check_resumable(resume_doc, cfg_dict, ignore=RESUME_IGNORES)
        load_state(encoder, resume_doc["state"]["encoder"], name="encoder",
                   path=resume_doc["_path"])
        load_state(head, resume_doc["state"]["predictor"], name="predictor",
                   path=resume_doc["_path"])
    if info.is_main:
        save_run_config(out, STAGE, cfg_dict)
    trainer = _train_finetune if cfg.finetune_encoder else _train_frozen
    result = trainer(data, cfg, encoder, head, info=info, out=out, resume_doc=resume_doc,
                     on_epoch=on_epoch,
                     extra={"preset": mcfg.preset, "model_config": mcfg.to_dict(),
                            "config": cfg_dict, "phrase_ids": list(data.space.ids),
                            "library_hash": data.space.hash,
                            "transition": torch.from_numpy(m0),
                            "data_summary": summarize(data),
                            "encoder_source": str(enc_source), "head": cfg.head})
    return result


def _save(ckpt_path: Path, info: distributed.DistInfo, **payload: Any) -> None:
    if info.is_main:
        save_checkpoint(ckpt_path, {"stage": STAGE, **payload})


def _train_frozen(data: PhraseData, cfg: ClassifyConfig, encoder: Encoder, head: nn.Module, *,
                  info: distributed.DistInfo, out: Path, resume_doc: dict | None,
                  on_epoch: Callable[[int], None] | None, extra: dict[str, Any]
                  ) -> dict[str, Any]:
    dev = info.device
    train_rows, val_rows = data.indices(TRAIN), data.indices(VAL)
    emb_all_rows = np.sort(np.concatenate([train_rows, val_rows, data.indices(TEST)]))
    emb = embed(encoder, data, emb_all_rows, device=dev, amp=cfg.amp,
                channels_last=cfg.channels_last, show=cfg.progress and info.is_main)
    where = {r: i for i, r in enumerate(emb_all_rows)}

    def emb_of(rows: np.ndarray) -> np.ndarray:
        return emb[[where[r] for r in rows]]

    x = torch.from_numpy(emb_of(train_rows)).to(dev)
    y = torch.from_numpy(data.label[train_rows]).to(dev)
    head.to(dev)
    model = distributed.wrap(head, info)
    opt = sgd(head.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    start, history = 0, []
    best = {"epoch": 0, "val_top1": -1.0, "state": None}
    if resume_doc is not None:
        opt.load_state_dict(resume_doc["optimizer"])
        sched.load_state_dict(resume_doc["scheduler"])
        start, history = int(resume_doc["epoch"]), list(resume_doc.get("history", []))
        best = dict(resume_doc.get("best", best))
    runlog = RunLog(out, keep_until_epoch=start, enabled=info.is_main)
    guard = NanGuard(dev, STAGE, out)
    m0 = extra["transition"].numpy()

    def probs_of(rows: np.ndarray) -> np.ndarray:
        return head_probs(head, emb_of(rows), dev)

    ckpt_path = out / CHECKPOINT_NAME
    for epoch in progress(range(start + 1, cfg.epochs + 1), enabled=cfg.progress and
                          info.is_main, desc="classify", total=cfg.epochs - start):
        loss = fit_head(model, opt, x, y, epoch=epoch, batch_size=cfg.batch_size,
                        balance=cfg.balance, seed=cfg.seed, info=info, guard=guard)
        sched.step()
        guard.check(epoch, {"loss": loss})
        row: dict[str, Any] = {"epoch": epoch, "loss": loss, "lr": opt.param_groups[0]["lr"]}
        last = epoch == cfg.epochs
        if val_rows.size and (epoch % SAVE_EVERY == 0 or last):
            top1 = evaluate_rows(data, val_rows, probs_of(val_rows), None)["raw"]["top1"]
            row["val_top1"] = top1
            if top1 > best["val_top1"]:
                best = {"epoch": epoch, "val_top1": top1,
                        "state": copy.deepcopy(head.state_dict())}
        history.append(row)
        runlog.append(row)
        if epoch % SAVE_EVERY == 0 or last:
            done = last
            if done and best["state"] is not None:
                head.load_state_dict(best["state"])
            metrics = split_metrics(data, probs_of, m0) if done else {}
            _save(ckpt_path, info, **extra, epoch=epoch, done=done,
                  state={"encoder": encoder.state_dict(), "predictor": head.state_dict()},
                  optimizer=opt.state_dict(), scheduler=sched.state_dict(), history=history,
                  best=best, metrics=metrics)
        if on_epoch is not None:
            on_epoch(epoch)
    doc = load_checkpoint(ckpt_path, stages=(STAGE,)) if info.is_main else {}
    return {"checkpoint": str(ckpt_path), "metrics": doc.get("metrics", {}),
            "best_epoch": best["epoch"], "epochs": cfg.epochs}


def _train_finetune(data: PhraseData, cfg: ClassifyConfig, encoder: Encoder, head: nn.Module,
                    *, info: distributed.DistInfo, out: Path, resume_doc: dict | None,
                    on_epoch: Callable[[int], None] | None, extra: dict[str, Any]
                    ) -> dict[str, Any]:
    """Groups I/II: E + head trained end to end on mel batches (SGD, cosine, no freezing)."""
    dev = info.device
    net = ClassifierNet(encoder.cfg, plain_head=cfg.head == "plain")
    net.encoder, net.head = encoder, head
    net.to(dev)
    if dev.type == "cuda" and cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    model = distributed.wrap(net, info)
    opt = sgd(net.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    dtype = amp_dtype(dev, cfg.amp)
    start, history = 0, []
    if resume_doc is not None:
        opt.load_state_dict(resume_doc["optimizer"])
        sched.load_state_dict(resume_doc["scheduler"])
        start, history = int(resume_doc["epoch"]), list(resume_doc.get("history", []))
    runlog = RunLog(out, keep_until_epoch=start, enabled=info.is_main)
    guard = NanGuard(dev, STAGE, out)
    train_rows = data.indices(TRAIN)
    ds = PhraseBatches(data, train_rows, with_targets=False)
    weights = balanced_weights(data.label[train_rows]) if cfg.balance else None
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    ckpt_path = out / CHECKPOINT_NAME
    m0 = extra["transition"].numpy()

    def probs_of(rows: np.ndarray) -> np.ndarray:
        return head_probs(net.head, embed(net.encoder, data, rows, device=dev, amp=cfg.amp,
                                          channels_last=cfg.channels_last), dev)

    for epoch in range(start + 1, cfg.epochs + 1):
        net.train()
        batches = shard_batches(len(ds), cfg.batch_size, epoch_generator(cfg.seed, epoch,
                                                                         info.rank),
                                rank=info.rank, world=info.world, weights=weights)
        total, n = 0.0, 0
        for batch in progress(loader(ds, batches, cfg.workers, dev.type == "cuda"),
                              enabled=cfg.progress and info.is_main,
                              desc=f"finetune {epoch}/{cfg.epochs}", total=len(batches)):
            if len(batch["label"]) < 2:
                continue
            mel = batch["mel"].to(dev, non_blocking=True)
            if dev.type == "cuda" and cfg.channels_last:
                mel = mel.contiguous(memory_format=torch.channels_last)
            with autocast(dev, dtype):
                _, loss = model(mel, batch["label"].to(dev))
            guard.update(loss)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total += float(loss.detach()) * len(mel)
            n += len(mel)
        sched.step()
        guard.check(epoch, {"loss": total / max(n, 1)})
        row = {"epoch": epoch, "loss": total / max(n, 1), "lr": opt.param_groups[0]["lr"]}
        history.append(row)
        runlog.append(row)
        last = epoch == cfg.epochs
        metrics = split_metrics(data, probs_of, m0) if last else {}
        _save(ckpt_path, info, **extra, epoch=epoch, done=last,
              state={"encoder": net.encoder.state_dict(), "predictor": net.head.state_dict()},
              optimizer=opt.state_dict(), scheduler=sched.state_dict(), history=history,
              metrics=metrics)
        if on_epoch is not None:
            on_epoch(epoch)
    net.cpu()
    doc = load_checkpoint(ckpt_path, stages=(STAGE,)) if info.is_main else {}
    return {"checkpoint": str(ckpt_path), "metrics": doc.get("metrics", {}),
            "epochs": cfg.epochs}


def load_classifier(path: str | Path, k: int | None = None
                    ) -> tuple[Encoder, nn.Module, np.ndarray, dict[str, Any]]:
    """(E, head, M, checkpoint doc) of a classify or co-ascent checkpoint."""
    doc = load_checkpoint(path, stages=("classify", "coascent"), n_classes=k)
    mcfg = model_config_of(doc)
    enc = Encoder(mcfg)
    head = make_head(mcfg, doc.get("head", "resatt"))
    load_state(enc, doc["state"]["encoder"], name="encoder", path=doc["_path"])
    load_state(head, doc["state"]["predictor"], name="predictor", path=doc["_path"])
    return enc, head, doc["transition"].numpy().astype(np.float32), doc


def predict_probs_from_checkpoint(path: str | Path, data: PhraseData, rows: np.ndarray,
                                  cfg: RuntimeConfig) -> tuple[np.ndarray, np.ndarray]:
    enc, head, m, doc = load_classifier(path, data.space.k)
    if tuple(doc["phrase_ids"]) != data.space.ids or doc["library_hash"] != data.space.hash:
        raise M2DError("the checkpoint was trained for another dance library than this "
                       "prepared data's", path=doc["_path"])
    dev = distributed.pick_device(cfg.device)
    emb = embed(enc, data, rows, device=dev, amp=cfg.amp, channels_last=cfg.channels_last)
    return head_probs(head, emb, dev), m


def run(cfg: ClassifyConfig) -> dict[str, Any]:
    """``python -m training classify``."""
    return train_classifier(load_prepared(cfg.data), cfg)
