"""Export E+P as one ONNX graph with its JSON sidecar, and check onnxruntime against torch.

Graph: input ``mel`` (B, 1, 128, 128) float32 with a dynamic batch -> ``probs`` (B, K) softmax
and ``embedding`` (B, D). The sidecar format and its reader live in
:mod:`blender_m2d.core.inference` (torch-free); this module writes it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from blender_m2d.core import inference
from blender_m2d.core.fileio import atomic_directory, write_bytes_atomic, write_json_atomic

from .config import INPUT_SIZE, ModelConfig
from .networks import ScoringNet

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
PARITY_ATOL = 1e-4


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote and measured."""

    onnx_path: Path
    sidecar_path: Path
    onnx_bytes: int
    max_abs_diff: float
    opset: int
    seconds: float


def export_onnx_bytes(encoder: nn.Module, predictor: nn.Module, *,
                      opset: int = DEFAULT_OPSET) -> tuple[bytes, ScoringNet]:
    """Serialise ``ScoringNet(encoder, predictor)`` (a CPU float32 eval copy) to ONNX bytes."""
    if opset < 17:
        raise ValueError("opset must be >= 17")
    net = ScoringNet(copy.deepcopy(encoder), copy.deepcopy(predictor)).float().cpu().eval()
    net = net.to(memory_format=torch.contiguous_format)
    example = torch.rand(2, 1, INPUT_SIZE, INPUT_SIZE)
    batch = torch.export.Dim("batch", min=1, max=65536)
    chatty = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in chatty]
    for lg in chatty:  # "torchvision is not installed", optimizer pass reports
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                net, (example,), None, input_names=[inference.INPUT_NAME],
                output_names=list(inference.OUTPUT_NAMES), opset_version=opset, dynamo=True,
                external_data=False, dynamic_shapes={"mel": {0: batch}}, verbose=False)
    finally:
        for lg, level in zip(chatty, levels):
            lg.setLevel(level)
    proto = program.model_proto
    return proto.SerializeToString(), net


def parity_check(onnx_bytes: bytes, net: nn.Module, *, batch_sizes: tuple[int, ...] = (1, 5),
                 seed: int = 0, providers: list[str] | None = None) -> float:
    """Max abs difference between torch and onnxruntime over both outputs and ``batch_sizes``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=providers or ["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b in batch_sizes:
        x = torch.rand(b, 1, INPUT_SIZE, INPUT_SIZE, generator=gen)
        with torch.no_grad():
            ref = [t.numpy() for t in net(x)]
        got = sess.run(list(inference.OUTPUT_NAMES), {inference.INPUT_NAME: x.numpy()})
        for r, g in zip(ref, got):
            if r.shape != g.shape:
                raise AssertionError(f"ONNX output shape {g.shape} != torch {r.shape}")
            worst = max(worst, float(np.max(np.abs(r - g))))
    return worst


def build_sidecar(onnx_bytes: bytes, *, cfg: ModelConfig, phrase_ids: list[str] | tuple[str, ...],
                  library_hash: str, transition: np.ndarray, opset: int, max_abs_diff: float,
                  training: dict[str, Any] | None = None,
                  metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``model.json`` document (docs/formats.md, "Model sidecar")."""
    k = cfg.n_classes
    if len(phrase_ids) != k:
        raise ValueError(f"{len(phrase_ids)} phrase ids for a model with K={k}")
    m = np.asarray(transition, dtype=np.float32)
    if m.shape != (k, k):
        raise ValueError(f"transition matrix has shape {m.shape}, expected ({k}, {k})")
    m = np.clip(m, inference.TRANSITION_MIN, 1.0)
    return {
        "format": inference.SIDECAR_FORMAT,
        "format_version": inference.SIDECAR_VERSION,
        "preset": cfg.preset,
        "model_config": cfg.to_dict(),
        "n_classes": k,
        "embedding_dim": cfg.embed_dim,
        "onnx": {"file": "model.onnx", "sha256": inference.sha256_bytes(onnx_bytes),
                 "bytes": len(onnx_bytes), "opset": opset, "input": inference.INPUT_NAME,
                 "outputs": list(inference.OUTPUT_NAMES),
                 "parity_max_abs_diff": max_abs_diff, "torch_version": torch.__version__},
        "library": {"phrase_ids": list(phrase_ids), "hash": library_hash},
        "features": inference.feature_params(),
        "transition": np.round(m.astype(np.float64), 5).tolist(),
        "training": training or {},
        "metrics": metrics or {},
    }


def export_model(encoder: nn.Module, predictor: nn.Module, out_dir: str | Path, *,
                 cfg: ModelConfig, phrase_ids: list[str] | tuple[str, ...], library_hash: str,
                 transition: np.ndarray, training: dict[str, Any] | None = None,
                 metrics: dict[str, Any] | None = None, opset: int = DEFAULT_OPSET,
                 atol: float = PARITY_ATOL) -> ExportResult:
    """Write ``out_dir/model.onnx`` + ``out_dir/model.json`` atomically (the whole folder).

    The parity check runs before anything is moved into place; a difference above ``atol``
    raises ``AssertionError`` and leaves ``out_dir`` as it was.
    """
    t0 = time.perf_counter()
    data, net = export_onnx_bytes(encoder, predictor, opset=opset)
    diff = parity_check(data, net)
    if not diff <= atol:
        raise AssertionError(f"ONNX and torch outputs differ by {diff:.3g} > {atol}")
    doc = build_sidecar(data, cfg=cfg, phrase_ids=phrase_ids, library_hash=library_hash,
                        transition=transition, opset=opset, max_abs_diff=diff,
                        training=training, metrics=metrics)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out_dir) as tmp:
        write_bytes_atomic(tmp / "model.onnx", data)
        write_json_atomic(tmp / "model.json", doc)
        for f in ("model.onnx", "model.json"):
            (tmp / f).chmod(0o644)
        tmp.chmod(0o755)
    seconds = time.perf_counter() - t0
    log.info("exported %s (%.1f MB, parity %.2g, %.1f s)", out_dir, len(data) / 1e6, diff,
             seconds)
    return ExportResult(out_dir / "model.onnx", out_dir / "model.json", len(data), diff, opset,
                        seconds)
