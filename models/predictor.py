"""Predictor P (spec section 4.4): Linear + 3 Res-Att blocks + Linear to K logits.

The Res-Att block is the supplementary's Fig. 2 read literally (ambiguity C): FC+BN+ReLU (512 ->
1024), FC+BN+ReLU (1024 -> 512), then an SE gate (512 -> 16 -> 512, ReLU / sigmoid) multiplied
onto the FC output. ``identity_skip`` adds the block input (off by default, as drawn).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


class ResAtt(nn.Module):
    """One Res-Att block: ``y = h * sigmoid(W2 relu(W1 h))`` with ``h = MLP(x)``."""

    def __init__(self, width: int, expand: int, squeeze: int, identity_skip: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(width, expand), nn.BatchNorm1d(expand), nn.ReLU(inplace=True),
            nn.Linear(expand, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True))
        self.gate = nn.Sequential(
            nn.Linear(width, squeeze), nn.ReLU(inplace=True),
            nn.Linear(squeeze, width), nn.Sigmoid())
        self.identity_skip = identity_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)                               # (B, width)
        y = h * self.gate(h)                           # channel-wise gating
        return x + y if self.identity_skip else y


class Predictor(nn.Module):
    """P: u (B, D) -> logits (B, K). Softmax is applied by the caller / the exported graph."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.inp = nn.Linear(cfg.embed_dim, cfg.hidden)          # Layer_1 (no activation)
        self.blocks = nn.Sequential(*[
            ResAtt(cfg.hidden, cfg.resatt_expand, cfg.resatt_squeeze, cfg.identity_skip)
            for _ in range(cfg.n_resatt)])                       # Layer_2..Layer_4
        self.out = nn.Linear(cfg.hidden, cfg.n_classes)          # Output

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(u)))


class PlainHead(nn.Module):
    """The head of ablation groups I and II ("Attention" off): the predictor's first and last
    layers with a ReLU between them, no Res-Att blocks."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cfg.embed_dim, cfg.hidden), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.hidden, cfg.n_classes))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.net(u)
