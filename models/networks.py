"""The composite networks each training stage runs, with their losses (nanoGPT style:
``forward(inputs, targets) -> (outputs, loss)``).

* :class:`PretrainNet` — stage 1: E + D1/D2/D3, loss Eq. 4.
* :class:`ClassifierNet` — E + a head (P, or the plain head of ablation groups I/II), loss Eq. 5.
* :class:`ScoringNet` — the exported graph: mel -> (softmax over K, embedding u).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .decoders import MelDecoder, SeqDecoder
from .encoder import Encoder
from .predictor import PlainHead, Predictor


@dataclass(frozen=True)
class PretrainLossWeights:
    """beta_1, beta_2, beta_3 of Eq. 4 (paper: 1, 1, 10)."""

    mel: float = 1.0
    melody: float = 1.0
    rhythm: float = 10.0


class PretrainNet(nn.Module):
    """E + D1 (mel from u) + D2 (melody from f_t) + D3 (rhythm logits from f_t)."""

    def __init__(self, cfg: ModelConfig, weights: PretrainLossWeights | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.weights = weights or PretrainLossWeights()
        self.encoder = Encoder(cfg)
        self.d1 = MelDecoder(cfg)
        self.d2 = SeqDecoder(cfg)
        self.d3 = SeqDecoder(cfg)

    def forward(self, mel: torch.Tensor, melody: torch.Tensor | None = None,
                rhythm: torch.Tensor | None = None
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """``mel`` (B, 1, 128, 128), ``melody`` (B, 128) in [0, 1], ``rhythm`` (B, 128) in {0, 1}.

        Returns the reconstructions ``{"mel", "melody", "rhythm_logits"}`` and, with targets,
        the losses ``{"total", "mel", "melody", "rhythm"}`` (element-mean L1 / BCE).
        """
        f_t, u = self.encoder(mel)
        out = {"mel": self.d1(u), "melody": self.d2(f_t), "rhythm_logits": self.d3(f_t)}
        if melody is None or rhythm is None:
            return out, None
        # losses in float32 even under autocast
        l_spe = F.l1_loss(out["mel"].float(), mel.float())                       # Eq. 1
        l_mld = F.l1_loss(out["melody"].float(), melody.float())                 # Eq. 2
        l_rym = F.binary_cross_entropy_with_logits(out["rhythm_logits"].float(),
                                                   rhythm.float())                # Eq. 3
        w = self.weights
        total = w.mel * l_spe + w.melody * l_mld + w.rhythm * l_rym              # Eq. 4
        return out, {"total": total, "mel": l_spe, "melody": l_mld, "rhythm": l_rym}


class ClassifierNet(nn.Module):
    """E + head -> logits (B, K). ``plain_head`` selects the ablation groups' head without
    Res-Att blocks."""

    def __init__(self, cfg: ModelConfig, *, plain_head: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.head: nn.Module = PlainHead(cfg) if plain_head else Predictor(cfg)

    def forward(self, mel: torch.Tensor, labels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        _, u = self.encoder(mel)
        logits = self.head(u)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels)  # Eq. 5
        return logits, loss


class ScoringNet(nn.Module):
    """The inference graph exported to ONNX: mel (B, 1, 128, 128) -> (probs (B, K), u (B, D))."""

    def __init__(self, encoder: Encoder, predictor: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, u = self.encoder(mel)
        return torch.softmax(self.predictor(u), dim=-1), u


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


def parameter_table(cfg: ModelConfig) -> dict[str, int]:
    """Parameters of E, D1, D2, D3, P and the exported E+P for ``cfg``."""
    net = PretrainNet(cfg)
    p = Predictor(cfg)
    e = count_parameters(net.encoder)
    return {"E": e, "D1": count_parameters(net.d1), "D2": count_parameters(net.d2),
            "D3": count_parameters(net.d3), "P": count_parameters(p),
            "E+P": e + count_parameters(p)}
