"""One config dataclass for every network of the paper, and its named presets.

``paper`` is the supplementary material's sizes (spec section 4): a ResNet-50 encoder
(bottlenecks 3-4-6-3, planes 64-128-256-512, expansion 4), Conv_6 2048->512, a 512-d embedding,
the 8-layer DCGAN-like mel decoder, the 5-layer 1-D melody/rhythm decoders and the predictor
Linear + 3 Res-Att + Linear. ``small`` keeps every layer type and the input/output shapes but
narrows and shortens it so that it trains on a CPU and ships as a few-MB ONNX file (the bundled
model). ``tiny`` is for tests and smoke runs.

The input is always one 128x128 mel "image" with axes (time, mel), so ``f_t`` is (D, 4) and ``u``
is D-dimensional for every preset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

INPUT_SIZE = 128
"""Height (time) and width (mel bands) of the encoder input."""
SEQ_LEN = 128
"""Length of the melody and rhythm targets."""


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of E, D1, D2/D3 and P. Everything but ``n_classes`` comes from the preset.

    Attributes
    ----------
    preset : str
        Name of the preset this config came from (checked when a checkpoint is loaded).
    n_classes : int
        K, the number of dance phrases in the library (the predictor's output size).
    stem_channels : int
        Conv_1 filters (64 in the paper).
    blocks : tuple of int
        Bottleneck blocks in Conv_2..Conv_5 (3, 4, 6, 3 = ResNet-50).
    planes : tuple of int
        Bottleneck planes in Conv_2..Conv_5; output channels are ``planes * expansion``.
    expansion : int
        Bottleneck expansion (4).
    embed_dim : int
        Channels of f_t and size of u (512). Conv_6 maps ``planes[-1] * expansion`` -> this.
    d1_channels : tuple of int
        Output channels of D1 layers 1-7 (layer 8 always outputs 1 channel).
    seq_channels : tuple of int
        Output channels of D2/D3 layers 1-5 (then a 1x1 Conv1d to 1 channel).
    hidden : int
        Predictor width (Layer_1 output and each Res-Att block's output; 512).
    resatt_expand : int
        Width of the first FC inside a Res-Att block (1024).
    resatt_squeeze : int
        Width of the SE squeeze FC inside a Res-Att block (16 = 512 / 32).
    n_resatt : int
        Number of Res-Att blocks (3).
    identity_skip : bool
        Add the block input to the gated output (y = x + h*s). Off in the paper's figure.
    """

    preset: str = "paper"
    n_classes: int = 1101
    stem_channels: int = 64
    blocks: tuple[int, ...] = (3, 4, 6, 3)
    planes: tuple[int, ...] = (64, 128, 256, 512)
    expansion: int = 4
    embed_dim: int = 512
    d1_channels: tuple[int, ...] = (512, 512, 256, 256, 128, 128, 64)
    seq_channels: tuple[int, ...] = (512, 256, 128, 64, 32)
    hidden: int = 512
    resatt_expand: int = 1024
    resatt_squeeze: int = 16
    n_resatt: int = 3
    identity_skip: bool = False

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        if len(self.blocks) != 4 or len(self.planes) != 4:
            raise ValueError("blocks and planes need 4 entries (Conv_2..Conv_5)")
        if len(self.d1_channels) != 7:
            raise ValueError("d1_channels needs 7 entries (D1 layers 1-7)")
        if len(self.seq_channels) != 5:
            raise ValueError("seq_channels needs 5 entries (D2/D3 layers 1-5)")

    @property
    def trunk_channels(self) -> int:
        """Channels out of Conv_5 (2048 for ResNet-50)."""
        return self.planes[-1] * self.expansion

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    "small": ModelConfig(
        preset="small", stem_channels=16, blocks=(1, 1, 2, 1), planes=(16, 32, 64, 128),
        embed_dim=256, d1_channels=(128, 128, 64, 64, 32, 32, 16),
        seq_channels=(128, 64, 32, 16, 8), hidden=256, resatt_expand=512, resatt_squeeze=8),
    "tiny": ModelConfig(
        preset="tiny", stem_channels=8, blocks=(1, 1, 1, 1), planes=(8, 16, 16, 32),
        embed_dim=64, d1_channels=(32, 32, 16, 16, 8, 8, 8), seq_channels=(32, 16, 16, 8, 8),
        hidden=64, resatt_expand=128, resatt_squeeze=4),
}
"""Named presets; ``n_classes`` is set per dataset with :func:`get_preset`."""


def get_preset(name: str, *, n_classes: int, **overrides: Any) -> ModelConfig:
    """The preset ``name`` for a library of ``n_classes`` dance phrases.

    Raises ``ValueError`` for an unknown name (the CLI turns it into a user error).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], n_classes=n_classes, **overrides)


__all__ = ["INPUT_SIZE", "PRESETS", "SEQ_LEN", "ModelConfig", "get_preset"]
