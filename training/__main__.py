"""``python -m training <step> [--field value ...]`` (also under ``torchrun``).

Steps: prepare, pretrain, classify, coascent, evaluate, export, ablation, bundled. Each step's
flags are the fields of its config dataclass (training/config.py); ``--config run.json`` loads
values from a file (flags win). The step prints a JSON summary on stdout; a user error prints
``error: <message>`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys

from blender_m2d.core.errors import M2DError

from . import config as C

STEPS = {
    "prepare": ("prepare", C.PrepareConfig,
                "compute features for a dataset (cached, parallel, resumable)"),
    "pretrain": ("pretrain", C.PretrainConfig,
                 "stage 1: self-supervised pre-training of the encoder (E + D1/D2/D3)"),
    "classify": ("classify", C.ClassifyConfig,
                 "stage 2: frozen E, train the predictor P with cross-entropy (+ Balance)"),
    "coascent": ("coascent", C.CoascentConfig,
                 "stage 3: co-ascent on unlabelled songs (pseudo-labels + transition matrix)"),
    "evaluate": ("evaluate", C.EvaluateConfig,
                 "Top-1/5/10 and MRR on a split, raw and with the transition matrix"),
    "export": ("export", C.ExportConfig, "write model.onnx + model.json from a checkpoint"),
    "ablation": ("ablation", C.AblationConfig, "groups I-V of the paper's Table 1"),
    "bundled": ("bundled", C.BundledConfig,
                "build the teacher-labelled dataset and train/export the bundled model"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="step", metavar="STEP", required=True)
    for name, (_, cls, help_) in STEPS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        C.add_config_arguments(p, cls)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    module_name, cls, _ = STEPS[args.step]
    try:
        module = importlib.import_module(f"training.{module_name}")
        result = module.run(C.config_from_args(cls, args))
    except M2DError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (the last checkpoint is kept; run the same command to resume)",
              file=sys.stderr)
        return 130
    if rank == 0:
        print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
