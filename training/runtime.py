"""Shared run machinery: seeds, precision, batching, NaN guard, CSV/JSONL logs, progress bars."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blender_m2d.core.errors import M2DError
from blender_m2d.core.fileio import write_json_atomic

from .data import PhraseData

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, epoch, rank): resuming replays the same order."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7919 + rank)


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 autocast on CUDA when supported (fp16 otherwise); no autocast on the CPU."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 autocast."""
    return torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)


class NanGuard:
    """Counts non-finite losses on the device without a sync per step; :meth:`check` raises
    an :class:`M2DError` naming the stage, epoch and loss when one was seen."""

    def __init__(self, device: torch.device, stage: str, out: str | Path) -> None:
        self.bad = torch.zeros((), device=device)
        self.stage, self.out = stage, str(out)

    def update(self, loss: torch.Tensor) -> None:
        self.bad += (~torch.isfinite(loss.detach())).float()

    def check(self, epoch: int, losses: dict[str, float] | None = None) -> None:
        if float(self.bad) > 0:
            detail = "" if not losses else " (" + ", ".join(
                f"{k}={v:.4g}" for k, v in losses.items()) + ")"
            raise M2DError(
                f"{self.stage}: the loss became NaN/inf in epoch {epoch}{detail}. The last "
                f"good checkpoint is kept. Check the data for NaNs or lower the learning rate",
                path=self.out)


def shard_batches(n: int, batch_size: int, gen: torch.Generator, *, rank: int = 0,
                  world: int = 1, weights: torch.Tensor | None = None, drop_last: bool = False,
                  max_batches: int = 0) -> list[torch.Tensor]:
    """This rank's batches (positions 0..n-1) for one epoch.

    Without ``weights``: a random permutation, split across ranks. With ``weights``: ``n``
    draws with replacement in proportion to ``weights`` (class balance), split across ranks.
    """
    if weights is not None:
        order = torch.multinomial(weights.double(), n, replacement=True, generator=gen)
    else:
        order = torch.randperm(n, generator=gen)
    per_rank = n // world if world > 1 else n
    order = order[rank * per_rank:(rank + 1) * per_rank] if world > 1 else order
    batches = list(torch.split(order, batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size and len(batches) > 1:
        batches = batches[:-1]
    if max_batches:
        batches = batches[:max_batches]
    return batches


def balanced_weights(labels: np.ndarray) -> torch.Tensor:
    """Spec 8 #25: weight 1/n_c for every sample of class c."""
    counts = np.bincount(labels)
    return torch.as_tensor(1.0 / counts[labels], dtype=torch.float64)


class PhraseBatches(torch.utils.data.Dataset):
    """Map-style dataset whose items are whole batches: ``ds[list_of_rows]`` -> dict of tensors
    (mel (B, 1, 128, 128) float32, melody (B, 128), rhythm (B, 128), label (B,)). Rows are
    read from the memory-mapped arrays in sorted order."""

    def __init__(self, data: PhraseData, rows: np.ndarray, *, with_targets: bool = True) -> None:
        self.data, self.rows, self.with_targets = data, np.asarray(rows), with_targets

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: Any) -> dict[str, torch.Tensor]:
        pos = np.asarray(positions, dtype=np.int64)
        rows = self.rows[pos]
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        d = self.data
        out = {"mel": torch.from_numpy(
            np.asarray(d.mel[sorted_rows], dtype=np.float32)[inv][:, None]),
            "label": torch.from_numpy(d.label[rows])}
        if self.with_targets:
            out["melody"] = torch.from_numpy(np.asarray(d.melody[sorted_rows],
                                                        dtype=np.float32)[inv])
            out["rhythm"] = torch.from_numpy(np.asarray(d.rhythm[sorted_rows],
                                                        dtype=np.float32)[inv])
        return out


def loader(ds: PhraseBatches, batches: list[torch.Tensor], workers: int,
           pin: bool) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(ds, sampler=[b.tolist() for b in batches],
                                       batch_size=None, num_workers=workers, pin_memory=pin,
                                       persistent_workers=False)


def progress(it: Iterable, *, enabled: bool, desc: str, total: int | None = None) -> Iterator:
    if not enabled:
        yield from it
        return
    from tqdm import tqdm

    yield from tqdm(it, desc=desc, total=total, leave=False, dynamic_ncols=True)


class RunLog:
    """``log.jsonl`` (one JSON object per epoch) and ``log.csv`` beside the checkpoint.

    On resume, rows of epochs after the checkpoint's are dropped (they will be redone)."""

    def __init__(self, out: Path, *, keep_until_epoch: int, enabled: bool = True) -> None:
        self.jsonl, self.csv = out / "log.jsonl", out / "log.csv"
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []
        if not enabled:
            return
        if self.jsonl.is_file():
            for line in self.jsonl.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    row = json.loads(line)
                    if row.get("epoch", 0) <= keep_until_epoch:
                        self.rows.append(row)
        self._rewrite()

    def _rewrite(self) -> None:
        text = "".join(json.dumps(r) + "\n" for r in self.rows)
        tmp = self.jsonl.with_suffix(".jsonl.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.jsonl)
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        tmp = self.csv.with_suffix(".csv.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.csv)

    def append(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
                 for k, v in row.items()}
        self.rows.append(clean)
        self._rewrite()


def save_run_config(out: Path, step: str, cfg_dict: dict[str, Any]) -> None:
    write_json_atomic(out / "config.json", {"step": step, "config": cfg_dict})


def prepare_out(out: str | Path, *, is_main: bool) -> Path:
    p = Path(out)
    if is_main:
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise M2DError(f"cannot create the output folder ({err.strerror})", path=p) from err
    return p
