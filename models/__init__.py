"""The paper's networks in PyTorch (never imports bpy): encoder E, decoders D1-D3, predictor P,
their presets and the ONNX export of E+P. See docs/training.md."""

from __future__ import annotations

from .config import INPUT_SIZE, PRESETS, SEQ_LEN, ModelConfig, get_preset
from .decoders import MelDecoder, SeqDecoder
from .encoder import Encoder
from .networks import (
    ClassifierNet,
    PretrainLossWeights,
    PretrainNet,
    ScoringNet,
    count_parameters,
    parameter_table,
)
from .predictor import PlainHead, Predictor, ResAtt

__all__ = [
    "INPUT_SIZE", "PRESETS", "SEQ_LEN", "ClassifierNet", "Encoder", "MelDecoder", "ModelConfig",
    "PlainHead", "Predictor", "PretrainLossWeights", "PretrainNet", "ResAtt", "ScoringNet",
    "SeqDecoder", "count_parameters", "get_preset", "parameter_table",
]
