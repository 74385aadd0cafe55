"""One frozen config dataclass per step; the CLI is derived from it, and every run saves it.

Values resolve as: dataclass defaults < ``--config run.json`` < ``--field value`` flags. Defaults
are the paper's where it gives them (spec section 5) and the spec's section-8 defaults elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from blender_m2d.core.errors import M2DError


@dataclass(frozen=True)
class RuntimeConfig:
    """Settings shared by the training steps (device, precision, seeds, logging)."""

    device: str = "auto"          # auto | cpu | cuda (torchrun picks cuda:LOCAL_RANK)
    amp: bool = True              # bf16/fp16 autocast, CUDA only
    channels_last: bool = True    # CUDA only
    seed: int = 0
    workers: int = 0              # DataLoader worker processes
    progress: bool = True         # tqdm bars (rank 0)
    resume: bool = True           # continue from <out>/checkpoint.pt when present


def runtime_of(cfg: RuntimeConfig) -> dict[str, Any]:
    """``cfg``'s :class:`RuntimeConfig` fields, to pass on to the steps a driver runs."""
    return {f.name: getattr(cfg, f.name) for f in fields(RuntimeConfig)}


@dataclass(frozen=True)
class PrepareConfig:
    dataset: str = ""             # dataset.json (docs/formats.md "Training dataset")
    out: str = ""                 # prepared folder; default <dataset folder>/prepared
    workers: int = 2              # songs analysed in parallel (processes)
    unlabelled: bool = True       # also prepare the unlabelled songs
    max_unlabelled: int = 0       # at most this many unlabelled songs, spread evenly (0 = all)
    progress: bool = True


@dataclass(frozen=True)
class PretrainConfig(RuntimeConfig):
    data: str = ""                # prepared folder
    out: str = "runs/pretrain"
    preset: str = "paper"
    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-4
    beta1: float = 0.9            # Adam betas
    beta2: float = 0.999
    step_epochs: int = 50         # StepLR: x gamma every step_epochs
    gamma: float = 0.1
    w_mel: float = 1.0            # Eq. 4 weights
    w_melody: float = 1.0
    w_rhythm: float = 10.0
    use_labelled: bool = True     # add the labelled train split's music (spec 8 #17)
    val_fraction: float = 0.01    # of songs, held out for the validation loss
    max_steps_per_epoch: int = 0  # 0 = a full pass


@dataclass(frozen=True)
class ClassifyConfig(RuntimeConfig):
    data: str = ""
    encoder: str = ""             # pretrain checkpoint; "" = random init (ablation group I)
    out: str = "runs/classify"
    preset: str = ""              # "" = the encoder checkpoint's preset
    epochs: int = 500
    batch_size: int = 256
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    balance: bool = True          # class-balanced sampling ("Balance", group IV)
    head: str = "resatt"          # resatt (P) | plain (groups I/II)
    finetune_encoder: bool = False  # train E end to end (groups I/II); else E frozen, u cached
    allow_empty_classes: bool = False


@dataclass(frozen=True)
class CoascentConfig(RuntimeConfig):
    data: str = ""
    classifier: str = ""          # classify checkpoint (stage 2)
    out: str = "runs/coascent"
    tau: float = 0.9              # pseudo-label confidence threshold
    alpha: float = 0.5            # momentum of M
    lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    epochs_per_round: int = 5     # pseudo-labels refreshed every 5 epochs
    max_rounds: int = 20
    min_growth: float = 0.005     # stop when D_u' grows by less than this fraction
    balance: bool = True
    freeze_bn: bool = True        # P's BatchNorm statistics stay those of stage 2
    include_test_songs: bool = False  # never: test songs stay unseen (kept for experiments)


@dataclass(frozen=True)
class EvaluateConfig(RuntimeConfig):
    data: str = ""
    checkpoint: str = ""          # classify/coascent checkpoint, or a model folder (ONNX)
    split: str = "test"           # train | val | test
    out: str = ""                 # JSON report; default <checkpoint folder>/eval-<split>.json


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: str = ""          # classify or coascent checkpoint
    out: str = "runs/model"       # folder that receives model.onnx + model.json
    opset: int = 18
    metrics: str = ""             # optional eval JSON to copy into the sidecar
    data_note: str = ""           # free text added to the sidecar's training summary


@dataclass(frozen=True)
class AblationConfig(RuntimeConfig):
    data: str = ""
    out: str = "runs/ablation"
    preset: str = "small"
    groups: str = "I,II,III,IV,V"
    pretrain_epochs: int = 200
    finetune_epochs: int = 50     # groups I/II (end to end, SGD)
    classify_epochs: int = 500
    coascent_rounds: int = 20
    coascent_lr: float = 1e-5
    max_steps_per_epoch: int = 0
    allow_empty_classes: bool = False


@dataclass(frozen=True)
class BundledConfig(RuntimeConfig):
    """The model shipped in blender_m2d/assets/model (docs/training.md, "The bundled model")."""

    library: str = "blender_m2d/assets/library"
    music: str = "../shared/data/music,data/songs"   # comma-separated folders (teacher-labelled)
    test_songs: str = "kevin_macleod_vibe_ace,sectoid_escape_from_chaosland"  # held out (stems)
    unlabelled_songs: str = ""    # songs of `music` used without their teacher labels (stems)
    corpus: str = "corpus"        # extra music (python -m training.fetch_corpus); "" = none
    corpus_seed_songs: int = 1000  # corpus songs labelled by the teacher (all that remain)
    corpus_unlabelled_songs: int = 16  # corpus songs used without labels (spread evenly)
    corpus_test_songs: int = 10   # corpus songs held out for evaluation (spread evenly)
    corpus_val_songs: int = 6     # corpus songs for model selection in stage 2 (spread evenly)
    teacher: str = "argmax"       # "argmax" (per phrase) or "greedy" (the choreographer's Eq. 6)
    stage: str = "all"            # "data" (dataset + features), "train" (from them), "all"
    work: str = "runs/bundled"
    out: str = "blender_m2d/assets/model"
    preset: str = "small"
    pretrain_epochs: int = 40
    pretrain_lr: float = 1e-3     # 10x the paper's: ~1e3 phrases instead of ~3e5
    classify_epochs: int = 500
    balance: bool = False         # the teacher's label distribution is kept (see docs)
    coascent_rounds: int = 20
    prepare_workers: int = 2


def _field_type(cls: type, name: str) -> Any:
    hints = typing.get_type_hints(cls)
    return hints[name]


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--name`` flag per field of ``cls`` (bools get ``--name/--no-name``)."""
    parser.add_argument("--config", type=Path, help="JSON file with field values (flags win)")
    for f in fields(cls):
        t = _field_type(cls, f.name)
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        help_ = f"default: {default!r}"
        if t is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_)
        else:
            conv = {int: int, float: float}.get(t, str)
            parser.add_argument(flag, dest=f.name, type=conv, default=argparse.SUPPRESS,
                                help=help_)


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Build ``cls`` from defaults, ``args.config`` (JSON) and the flags actually given."""
    values: dict[str, Any] = {}
    cfg_path = getattr(args, "config", None)
    if cfg_path:
        values.update(load_config_file(cls, cfg_path))
    names = {f.name for f in fields(cls)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return cls(**values)


def load_config_file(cls: type, path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise M2DError("config file not found", path=p) from err
    except (OSError, json.JSONDecodeError) as err:
        raise M2DError(f"cannot read the config file ({err})", path=p) from err
    if isinstance(doc, dict) and isinstance(doc.get("config"), dict):
        doc = doc["config"]  # a run's saved config.json
    if not isinstance(doc, dict):
        raise M2DError("a config file must hold a JSON object", path=p)
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(doc) - set(names))
    if unknown:
        raise M2DError(f"unknown config keys for this step: {', '.join(unknown)}", path=p)
    out = {}
    for k, v in doc.items():
        t = _field_type(cls, k)
        ok = (isinstance(v, bool) if t is bool else
              isinstance(v, int | float) and not isinstance(v, bool) if t is float else
              isinstance(v, int) and not isinstance(v, bool) if t is int else isinstance(v, str))
        if not ok:
            raise M2DError(f"config key {k!r} must be {t.__name__}, got {v!r}", path=p)
        out[k] = float(v) if t is float else v
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def with_changes(cfg: Any, **changes: Any) -> Any:
    return dataclasses.replace(cfg, **changes)


__all__ = [
    "AblationConfig", "BundledConfig", "ClassifyConfig", "CoascentConfig", "EvaluateConfig",
    "ExportConfig", "PrepareConfig", "PretrainConfig", "RuntimeConfig", "add_config_arguments",
    "config_from_args", "load_config_file", "to_dict", "with_changes",
]
