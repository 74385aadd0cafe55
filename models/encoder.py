"""Encoder E: the supplementary's ResNet-50 variant on a 1x128x128 mel image (spec section 4.1).

Input ``(B, 1, 128, 128)`` with axes (time, mel). Output ``f_t`` (B, D, 4): the temporal feature
(Conv_6 then average over the mel axis, keeping 4 time steps) and ``u`` (B, D): the music
embedding (average of f_t over time). D = 512 for the paper preset.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import INPUT_SIZE, ModelConfig


class Bottleneck(nn.Module):
    """Standard ResNet bottleneck (1x1 -> 3x3/stride -> 1x1, expansion 4, projection shortcut)."""

    def __init__(self, in_ch: int, planes: int, stride: int, expansion: int) -> None:
        super().__init__()
        out_ch = planes * expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class Encoder(nn.Module):
    """E: Conv_1 + MaxPool + Conv_2..Conv_5 (bottleneck stages) + Conv_6 (1x1 -> D) + pooling."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Sequential(                                   # Conv_1 + MaxPool
            nn.Conv2d(1, cfg.stem_channels, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(cfg.stem_channels), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1))
        stages = []
        in_ch = cfg.stem_channels
        for i, (n, planes) in enumerate(zip(cfg.blocks, cfg.planes)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(in_ch, planes, stride if j == 0 else 1, cfg.expansion))
                in_ch = planes * cfg.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)                         # Conv_2..Conv_5
        self.conv6 = nn.Conv2d(in_ch, cfg.embed_dim, 1)             # ambiguity A: 2048 -> 512
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, 1, 128, 128) -> ``(f_t (B, D, 4), u (B, D))``."""
        assert x.shape[1:] == (1, INPUT_SIZE, INPUT_SIZE), \
            f"encoder input must be (B, 1, {INPUT_SIZE}, {INPUT_SIZE}), got {tuple(x.shape)}"
        h = self.stages(self.stem(x))                  # (B, C5, 4, 4)
        h = self.conv6(h)                              # (B, D, 4, 4), axes (time, mel)
        f_t = h.mean(dim=3)                            # AdaptiveAvgPool2d((None, 1)) -> (B, D, 4)
        u = f_t.mean(dim=2)                            # AdaptiveAvgPool2d((1, None)) -> (B, D)
        return f_t, u
