"""DistributedDataParallel from torchrun's environment, and a no-op without it.

``torchrun --nproc_per_node=8 -m training pretrain ...`` (or multi-node with ``--nnodes`` and a
rendezvous) sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; a plain ``python -m training ...`` runs
with world size 1 and no process group. NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from blender_m2d.core.errors import M2DError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when present (cuda:LOCAL_RANK), else CPU."""
    if pref not in ("auto", "cpu", "cuda") and not pref.startswith("cuda:"):
        raise M2DError(f"device must be auto, cpu or cuda, got {pref!r}")
    if pref == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device(pref if pref.startswith("cuda:") else f"cuda:{local_rank}")
    if pref.startswith("cuda"):
        raise M2DError("device 'cuda' asked for but torch sees no CUDA device")
    return torch.device("cpu")


def init(pref: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun; world size 1 otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(pref, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, device)


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP-wrap ``model`` when distributed (parameters must already be on ``info.device``)."""
    if not info.enabled:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """Rank 0's boolean on every rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.broadcast(t, 0)
    return bool(t.item())


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
