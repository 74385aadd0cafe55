"""Stage 1: self-supervised pre-training of E with D1 (mel), D2 (melody), D3 (rhythm).

Loss Eq. 4 with beta = (1, 1, 10), Adam lr 1e-4, x0.1 every 50 epochs, 200 epochs (spec 5.1).
Data: the unlabelled songs plus the labelled train split's music (spec 8 #17); a fraction of
songs is held out for a validation loss. Checkpoint ``<out>/checkpoint.pt`` after every epoch.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blender_m2d.core.errors import M2DError
from models import ModelConfig, PretrainLossWeights, PretrainNet, get_preset

from . import distributed
from .checkpoint import (
    CHECKPOINT_NAME,
    check_resumable,
    load_checkpoint,
    load_state,
    save_checkpoint,
)
from .config import PretrainConfig, to_dict
from .data import TRAIN, UNLABELLED, PhraseData, load_prepared, summarize
from .runtime import (
    NanGuard,
    PhraseBatches,
    RunLog,
    amp_dtype,
    autocast,
    epoch_generator,
    grad_scaler,
    loader,
    prepare_out,
    progress,
    save_run_config,
    seed_everything,
    shard_batches,
)

log = logging.getLogger(__name__)
STAGE = "pretrain"
RESUME_IGNORES = {"epochs", "workers", "progress", "resume", "device", "data", "out"}


def pretrain_rows(data: PhraseData, cfg: PretrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): unlabelled (+ labelled train split) phrases, with
    ``val_fraction`` of their songs held out (chosen by a hash of the song name)."""
    splits = (UNLABELLED, TRAIN) if cfg.use_labelled else (UNLABELLED,)
    rows = data.indices(*splits)
    if rows.size == 0:
        raise ValueError("no phrases to pre-train on")
    song_ids = np.unique(data.song[rows])
    held = [s for s in song_ids
            if int(hashlib.sha256(data.songs[s].encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            < cfg.val_fraction]
    if len(held) == len(song_ids):
        held = held[:-1]
    is_val = np.isin(data.song[rows], held)
    return rows[~is_val], rows[is_val]


def preset_config(name: str, k: int) -> ModelConfig:
    """:func:`models.get_preset` with a user-facing error for an unknown name."""
    try:
        return get_preset(name, n_classes=k)
    except ValueError as err:
        raise M2DError(str(err)) from err


def build_model(cfg: PretrainConfig, k: int) -> PretrainNet:
    mcfg = preset_config(cfg.preset, k)
    return PretrainNet(mcfg, PretrainLossWeights(cfg.w_mel, cfg.w_melody, cfg.w_rhythm))


def _state(net: PretrainNet) -> dict[str, Any]:
    return {"encoder": net.encoder.state_dict(), "d1": net.d1.state_dict(),
            "d2": net.d2.state_dict(), "d3": net.d3.state_dict()}


def train_encoder(data: PhraseData, cfg: PretrainConfig, *,
                  on_epoch: Callable[[int], None] | None = None) -> tuple[PretrainNet, dict]:
    """Run stage 1 to ``cfg.epochs`` (resuming from ``<out>/checkpoint.pt`` when allowed).

    Returns the (unwrapped) network and a summary with losses and samples/s.
    ``on_epoch(epoch)`` is called after each epoch's checkpoint is written.
    """
    info = distributed.init(cfg.device)
    out = prepare_out(cfg.out, is_main=info.is_main)
    seed_everything(cfg.seed)
    k = data.space.k
    net = build_model(cfg, k)
    net.to(info.device)
    cuda = info.device.type == "cuda"
    if cuda and cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    if cuda:  # fixed 128x128 inputs: let cuDNN pick its fastest kernels
        torch.backends.cudnn.benchmark = True
    # fused Adam on CUDA: +29 % stage-1 samples/s for the paper preset on an H200
    # (docs/training.md, "GPU throughput"); built after the move so its state lives there too
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                           fused=cuda)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_epochs, gamma=cfg.gamma)
    dtype = amp_dtype(info.device, cfg.amp)
    scaler = grad_scaler(dtype)
    start_epoch, history = 0, []
    ckpt_path = out / CHECKPOINT_NAME
    cfg_dict = to_dict(cfg)
    if cfg.resume and ckpt_path.is_file():
        doc = load_checkpoint(ckpt_path, stages=(STAGE,), preset=cfg.preset, n_classes=k)
        check_resumable(doc, cfg_dict, ignore=RESUME_IGNORES)
        for name in ("encoder", "d1", "d2", "d3"):
            load_state(getattr(net, name), doc["state"][name], name=name, path=doc["_path"])
        opt.load_state_dict(doc["optimizer"])
        sched.load_state_dict(doc["scheduler"])
        scaler.load_state_dict(doc["scaler"])
        start_epoch, history = int(doc["epoch"]), list(doc.get("history", []))
        log.info("resuming %s from epoch %d", ckpt_path, start_epoch)
    model = distributed.wrap(net, info)
    if info.is_main:
        save_run_config(out, STAGE, cfg_dict)
    runlog = RunLog(out, keep_until_epoch=start_epoch, enabled=info.is_main)
    train_rows, val_rows = pretrain_rows(data, cfg)
    ds_train = PhraseBatches(data, train_rows)
    ds_val = PhraseBatches(data, val_rows)
    guard = NanGuard(info.device, STAGE, out)
    pin = info.device.type == "cuda"
    summary: dict[str, Any] = {"train_phrases": int(train_rows.size),
                               "val_phrases": int(val_rows.size)}
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        model.train()
        batches = shard_batches(len(ds_train), cfg.batch_size,
                                epoch_generator(cfg.seed, epoch, info.rank), rank=info.rank,
                                world=info.world, drop_last=True,
                                max_batches=cfg.max_steps_per_epoch)
        sums = torch.zeros(4, device=info.device)
        n_seen = 0
        t0 = time.perf_counter()
        it = loader(ds_train, batches, cfg.workers, pin)
        for batch in progress(it, enabled=cfg.progress and info.is_main,
                              desc=f"pretrain {epoch}/{cfg.epochs}", total=len(batches)):
            mel, melody, rhythm = _to_device(batch, info.device, cfg.channels_last)
            with autocast(info.device, dtype):
                _, losses = model(mel, melody, rhythm)
            loss = losses["total"]
            guard.update(loss)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sums += torch.stack([losses[n].detach().float()
                                 for n in ("total", "mel", "melody", "rhythm")]) * len(mel)
            n_seen += len(mel)
        if info.device.type == "cuda":
            torch.cuda.synchronize(info.device)
        seconds = time.perf_counter() - t0
        sched.step()
        counts = distributed.all_reduce_sum(
            torch.tensor([float(n_seen)], device=info.device), info)
        sums = distributed.all_reduce_sum(sums, info)
        means = (sums / counts.clamp(min=1)).tolist()
        row = {"epoch": epoch, "loss": means[0], "l_mel": means[1], "l_melody": means[2],
               "l_rhythm": means[3], "lr": opt.param_groups[0]["lr"],
               "samples_per_s": float(counts.item()) / max(seconds, 1e-9), "seconds": seconds}
        guard.update(distributed.all_reduce_sum(guard.bad.clone(), info))
        guard.check(epoch, {"loss": means[0]})
        if val_rows.size:
            row["val_loss"] = _val_loss(net, ds_val, cfg, info, dtype)
        history.append(row)
        if info.is_main:
            runlog.append(row)
            save_checkpoint(ckpt_path, {
                "stage": STAGE, "preset": cfg.preset, "model_config": net.cfg.to_dict(),
                "config": cfg_dict, "epoch": epoch, "done": epoch == cfg.epochs,
                "state": _state(net), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                "history": history, "phrase_ids": list(data.space.ids),
                "library_hash": data.space.hash, "data_summary": summarize(data)})
        distributed.barrier(info)
        if on_epoch is not None:
            on_epoch(epoch)
    if history:
        summary.update({k: v for k, v in history[-1].items()})
    net.cpu()
    return net, summary


def _to_device(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mel = batch["mel"].to(device, non_blocking=True)
    if device.type == "cuda" and channels_last:
        mel = mel.contiguous(memory_format=torch.channels_last)
    return (mel, batch["melody"].to(device, non_blocking=True),
            batch["rhythm"].to(device, non_blocking=True))


@torch.no_grad()
def _val_loss(net: PretrainNet, ds: PhraseBatches, cfg: PretrainConfig,
              info: distributed.DistInfo, dtype: torch.dtype | None) -> float:
    net.eval()
    total, n = 0.0, 0
    batches = list(torch.split(torch.arange(len(ds)), cfg.batch_size))
    for batch in loader(ds, batches, 0, False):
        mel, melody, rhythm = _to_device(batch, info.device, cfg.channels_last)
        with autocast(info.device, dtype):
            _, losses = net(mel, melody, rhythm)
        total += float(losses["total"]) * len(mel)
        n += len(mel)
    net.train()
    return total / max(n, 1)


def run(cfg: PretrainConfig) -> dict[str, Any]:
    """``python -m training pretrain``."""
    data = load_prepared(cfg.data)
    _, summary = train_encoder(data, cfg)
    summary["checkpoint"] = str(Path(cfg.out) / CHECKPOINT_NAME)
    return summary
