"""Atomic, self-describing checkpoints.

A checkpoint is a ``torch.save``'d dict of tensors and plain values only (loadable with
``torch.load(weights_only=True)``): ``format``/``format_version``, the ``stage`` that wrote it,
the model ``preset`` and ``model_config``, the run ``config``, ``epoch`` (completed), ``done``,
``state`` (module state dicts by name), optimizer/scheduler/scaler states, and stage outputs
(``phrase_ids``, ``library_hash``, ``transition``, ``metrics``, ``history``, ``data_summary``).
Writes go to a temporary sibling, are fsync'ed, then ``os.replace``'d: a kill leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blender_m2d.core.errors import M2DError
from models import ModelConfig

CHECKPOINT_FORMAT = "m2d-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus format keys) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(doc, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise M2DError(f"cannot write the checkpoint ({err.strerror or err}); the previous "
                       "checkpoint is kept", path=path) from err
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, *, stages: tuple[str, ...] | None = None,
                    preset: str | None = None, n_classes: int | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; every refusal is an :class:`M2DError` naming the file.

    Parameters
    ----------
    stages : tuple of str or None
        Accepted ``stage`` values (e.g. ``("classify", "coascent")``).
    preset : str or None
        Required model preset (a checkpoint of another preset is refused).
    n_classes : int or None
        Required K (a checkpoint for another library size is refused).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise M2DError("checkpoint not found", path=path)
    try:
        doc = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, KeyError, IndexError,
            UnicodeDecodeError, ValueError, TypeError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise M2DError(f"not a readable checkpoint ({first})", path=path) from err
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise M2DError("not a blender_m2d training checkpoint", path=path)
    if not isinstance(doc.get("format_version"), int) or doc["format_version"] > \
            CHECKPOINT_VERSION:
        raise M2DError(f"checkpoint format_version {doc.get('format_version')} is not supported",
                       path=path)
    if stages is not None and doc.get("stage") not in stages:
        raise M2DError(f"checkpoint is from stage {doc.get('stage')!r}, expected "
                       f"{' or '.join(stages)}", path=path)
    if preset and doc.get("preset") != preset:
        raise M2DError(f"checkpoint was trained with model preset {doc.get('preset')!r}, but "
                       f"this run uses preset {preset!r}; pass --preset {doc.get('preset')} or "
                       f"start from a matching checkpoint", path=path)
    if n_classes is not None and doc["model_config"]["n_classes"] != n_classes:
        raise M2DError(f"checkpoint predicts K={doc['model_config']['n_classes']} dance phrases "
                       f"but the data has K={n_classes} (another library?)", path=path)
    doc["_path"] = str(path)
    return doc


def model_config_of(doc: dict[str, Any]) -> ModelConfig:
    try:
        return ModelConfig.from_dict(doc["model_config"])
    except (KeyError, TypeError, ValueError) as err:
        raise M2DError(f"checkpoint has an invalid model_config ({err})",
                       path=doc.get("_path")) from err


def load_state(module: nn.Module, state: dict[str, torch.Tensor], *, name: str,
               path: str | None) -> None:
    """Strict ``load_state_dict`` with a user-facing error on a shape/key mismatch."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0][:300]
        raise M2DError(f"checkpoint's {name} weights do not fit this model ({first}); was it "
                       f"trained with another preset?", path=path) from err


def check_resumable(doc: dict[str, Any], config: dict[str, Any], *, ignore: set[str]) -> None:
    """A resumed run must use the config it was started with (except ``ignore`` keys)."""
    old = doc.get("config", {})
    diff = sorted(k for k in set(old) | set(config)
                  if k not in ignore and old.get(k) != config.get(k))
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in diff[:6])
        raise M2DError(f"cannot resume: the run was started with another config ({detail}). "
                       f"Use a new --out folder or --no-resume", path=doc.get("_path"))
