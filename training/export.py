"""``python -m training export``: a classify/co-ascent checkpoint -> model.onnx + model.json.

The sidecar carries the library's phrase ids (class order) and hash, the transition matrix
(M* after co-ascent, M0 after stage 2), the feature parameters, a training-data summary and the
metrics (the checkpoint's own val/test metrics, or an ``evaluate`` report given with
``--metrics``). The export refuses to finish if onnxruntime and torch disagree by more than 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blender_m2d.core.errors import M2DError
from models import ModelConfig
from models.export_onnx import export_model

from .classify import load_classifier
from .config import ExportConfig


def export_checkpoint(cfg: ExportConfig, *, training_extra: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
    enc, head, m, doc = load_classifier(cfg.checkpoint)
    if doc.get("head", "resatt") != "resatt":
        raise M2DError("only checkpoints with the Res-Att predictor P can be exported (this one "
                       "has the ablation's plain head)", path=doc["_path"])
    if not doc.get("done", False):
        raise M2DError(f"the checkpoint is from an unfinished run (epoch {doc.get('epoch')}); "
                       f"finish or resume the run first", path=doc["_path"])
    metrics = dict(doc.get("metrics") or {})
    if cfg.metrics:
        p = Path(cfg.metrics)
        try:
            metrics = {"evaluate": json.loads(p.read_text(encoding="utf-8"))}
        except (OSError, json.JSONDecodeError) as err:
            raise M2DError(f"cannot read the metrics JSON ({err})", path=p) from err
    training = {"stage": doc["stage"], "data": doc.get("data_summary", {}),
                "config": doc.get("config", {}), "encoder": doc.get("encoder_source", ""),
                "classifier": doc.get("classifier_source", ""),
                "note": cfg.data_note, **(training_extra or {})}
    mcfg = ModelConfig.from_dict(doc["model_config"])
    res = export_model(enc, head, cfg.out, cfg=mcfg, phrase_ids=doc["phrase_ids"],
                       library_hash=doc["library_hash"], transition=m, training=training,
                       metrics=metrics, opset=cfg.opset)
    return {"onnx": str(res.onnx_path), "sidecar": str(res.sidecar_path),
            "onnx_bytes": res.onnx_bytes, "parity_max_abs_diff": res.max_abs_diff,
            "opset": res.opset, "seconds": round(res.seconds, 2)}


def run(cfg: ExportConfig) -> dict[str, Any]:
    return export_checkpoint(cfg)
