"""Stage-1 decoders (spec sections 4.2, 4.3): D1 reconstructs the mel from u, D2 the melody and
D3 the rhythm from f_t. Only used in pre-training; discarded afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import INPUT_SIZE, SEQ_LEN, ModelConfig

# (kernel, stride, padding) of D1 layers 1..8: 4x4/1 p0, then alternately 4x4/2 p1 and 3x3/1 p1.
_D1_GEOMETRY = ((4, 1, 0), (4, 2, 1), (4, 2, 1), (4, 2, 1), (3, 1, 1), (4, 2, 1), (3, 1, 1),
                (4, 2, 1))


class MelDecoder(nn.Module):
    """D1: u (B, D) -> mel (B, 1, 128, 128). 8 transposed convs, BN + ReLU on all but the last;
    linear output (regresses the [0, 1] mel directly)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        chans = (cfg.embed_dim, *cfg.d1_channels, 1)
        layers: list[nn.Module] = []
        for i, (k, s, p) in enumerate(_D1_GEOMETRY):
            layers.append(nn.ConvTranspose2d(chans[i], chans[i + 1], k, stride=s, padding=p))
            if i < len(_D1_GEOMETRY) - 1:
                layers += [nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)
        _dcgan_init(self)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        out = self.net(u[:, :, None, None])            # (B, D, 1, 1) -> (B, 1, 128, 128)
        assert out.shape[2:] == (INPUT_SIZE, INPUT_SIZE)
        return out


class SeqDecoder(nn.Module):
    """D2 / D3: f_t (B, D, 4) -> (B, 128). Five ConvTranspose1d(k=2, s=2) + ReLU, then a 1x1
    Conv1d. D3's sigmoid is not part of the module: train it with ``BCEWithLogitsLoss``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        chans = (cfg.embed_dim, *cfg.seq_channels)
        layers: list[nn.Module] = []
        for i in range(len(cfg.seq_channels)):
            layers += [nn.ConvTranspose1d(chans[i], chans[i + 1], 2, stride=2),
                       nn.ReLU(inplace=True)]
        layers.append(nn.Conv1d(chans[-1], 1, 1))
        self.net = nn.Sequential(*layers)
        _dcgan_init(self)

    def forward(self, f_t: torch.Tensor) -> torch.Tensor:
        out = self.net(f_t)                            # (B, D, 4) -> (B, 1, 128)
        assert out.shape[1:] == (1, SEQ_LEN)
        return out[:, 0]


def _dcgan_init(module: nn.Module) -> None:
    """Spec 8 #22: decoders N(0, 0.02) as in DCGAN (BN weight N(1, 0.02), biases 0)."""
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose2d | nn.ConvTranspose1d | nn.Conv1d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
