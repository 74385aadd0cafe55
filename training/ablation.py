"""``python -m training ablation``: groups I-V of the paper's Table 1 on a prepared dataset.

| group | encoder | head | balance | co-ascent |
|---|---|---|---|---|
| I   | random init (no ImageNet weights here), trained end to end | plain | no | no |
| II  | stage-1 weights, fine-tuned end to end | plain | no | no |
| III | stage-1 weights, frozen | Res-Att P | no | no |
| IV  | stage-1 weights, frozen | Res-Att P | yes | no |
| V   | stage-1 weights, frozen | Res-Att P | yes | yes (from IV) |

Every group is scored on the test split: Top-1/5/10 and MRR, raw and with the transition matrix
(M0 for I-IV, M* for V). Writes ``ablation.json`` and ``ablation.md`` in ``--out``; each group's
run folder resumes if the ablation is started again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from blender_m2d.core.errors import M2DError
from blender_m2d.core.fileio import write_bytes_atomic, write_json_atomic

from .classify import train_classifier
from .coascent import co_ascent
from .config import (
    AblationConfig,
    ClassifyConfig,
    CoascentConfig,
    PretrainConfig,
    runtime_of,
    to_dict,
)
from .data import PhraseData, load_prepared, summarize
from .pretrain import train_encoder

log = logging.getLogger(__name__)

GROUPS = {  # self-supervised, attention (frozen E + P), balance, co-ascent
    "I": (False, False, False, False),
    "II": (True, False, False, False),
    "III": (True, True, False, False),
    "IV": (True, True, True, False),
    "V": (True, True, True, True),
}
PAPER_TOP = {"I": (12.3, 20.5, 23.6), "II": (14.5, 19.3, 22.3), "III": (19.1, 23.7, 25.5),
             "IV": (19.3, 25.0, 27.2), "V": (19.8, 24.8, 26.8)}


def run_ablation(data: PhraseData, cfg: AblationConfig) -> dict[str, Any]:
    groups = [g.strip() for g in cfg.groups.split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        raise M2DError(f"unknown ablation group(s) {bad}; choose from {list(GROUPS)}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rt = runtime_of(cfg)
    enc_ckpt = ""
    results: dict[str, Any] = {}
    if any(GROUPS[g][0] for g in groups):
        pcfg = PretrainConfig(**rt, data=str(data.path or ""), out=str(out / "pretrain"),
                              preset=cfg.preset, epochs=cfg.pretrain_epochs,
                              max_steps_per_epoch=cfg.max_steps_per_epoch)
        _, psum = train_encoder(data, pcfg)
        enc_ckpt = str(out / "pretrain" / "checkpoint.pt")
        results["pretrain"] = {k: psum.get(k) for k in ("loss", "val_loss", "samples_per_s",
                                                        "epoch")}
    needs_iv = "V" in groups and "IV" not in groups
    for g in [*groups, *(["IV"] if needs_iv else [])]:
        if g == "V":
            continue
        ssl, att, bal, _ = GROUPS[g]
        ccfg = ClassifyConfig(
            **rt, data=str(data.path or ""), out=str(out / g), encoder=enc_ckpt if ssl else "",
            preset=cfg.preset, head="resatt" if att else "plain", finetune_encoder=not att,
            balance=bal, epochs=cfg.classify_epochs if att else cfg.finetune_epochs,
            allow_empty_classes=cfg.allow_empty_classes)
        log.info("ablation group %s", g)
        results[g] = train_classifier(data, ccfg)
    if "V" in groups:
        vcfg = CoascentConfig(**rt, data=str(data.path or ""), classifier=str(out / "IV"),
                              out=str(out / "V"), lr=cfg.coascent_lr,
                              max_rounds=cfg.coascent_rounds)
        results["V"] = co_ascent(data, vcfg)
    table = {g: _row(g, results[g]) for g in groups}
    base = next((r["metrics"].get("frequency_baseline_test") for r in results.values()
                 if isinstance(r, dict) and r.get("metrics")), None)
    report = {"config": to_dict(cfg), "data": summarize(data), "groups": table,
              "frequency_baseline_test": base, "chance_top1": 1.0 / data.space.k,
              "pretrain": results.get("pretrain")}
    write_json_atomic(out / "ablation.json", report)
    write_bytes_atomic(out / "ablation.md", markdown(report).encode("utf-8"))
    return report


def _row(g: str, res: dict[str, Any]) -> dict[str, Any]:
    test = res.get("metrics", {}).get("test", {})
    ssl, att, bal, co = GROUPS[g]
    return {"self_supervised": ssl, "attention": att, "balance": bal, "co_ascent": co,
            "n_test": test.get("n", 0), "raw": test.get("raw", {}),
            "with_M": test.get("with_M", {}), "checkpoint": res.get("checkpoint")}


def _pct(d: dict[str, Any], key: str) -> str:
    return f"{100 * d[key]:.1f}" if key in d else "-"


def markdown(report: dict[str, Any]) -> str:
    d = report["data"]
    lines = [
        "# Ablation (paper Table 1 groups)", "",
        f"Data: {d['K']} dance phrases, {d['train_phrases']} labelled train phrases "
        f"({d['train_songs']} songs), {d['test_phrases']} test phrases ({d['test_songs']} songs),"
        f" {d['unlabelled_phrases']} unlabelled phrases ({d['unlabelled_songs']} songs). "
        f"Preset `{report['config']['preset']}`. Group I starts from random weights "
        f"(ImageNet weights cannot be downloaded here).", "",
        "| Group | Self-Sup | Attention | Balance | Co-Ascent | Top-1 | Top-5 | Top-10 | MRR "
        "| Top-1 with M | Top-5 with M | Top-10 with M | MRR with M | paper Top-1/5/10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    yes = {True: "✓", False: "×"}
    for g, r in report["groups"].items():
        raw, wm = r["raw"], r["with_M"]
        paper = "/".join(f"{v:.1f}" for v in PAPER_TOP[g])
        lines.append(
            f"| {g} | {yes[r['self_supervised']]} | {yes[r['attention']]} | "
            f"{yes[r['balance']]} | {yes[r['co_ascent']]} | {_pct(raw, 'top1')} | "
            f"{_pct(raw, 'top5')} | {_pct(raw, 'top10')} | {_pct(raw, 'mrr')} | "
            f"{_pct(wm, 'top1')} | {_pct(wm, 'top5')} | {_pct(wm, 'top10')} | "
            f"{_pct(wm, 'mrr')} | {paper} |")
    base = report.get("frequency_baseline_test")
    if base and "raw" in base:
        b = base["raw"]
        lines.append(f"| frequency baseline | | | | | {_pct(b, 'top1')} | {_pct(b, 'top5')} | "
                     f"{_pct(b, 'top10')} | {_pct(b, 'mrr')} | | | | | |")
    lines += ["", f"Chance Top-1: {100 * report['chance_top1']:.1f} %. Percentages of the "
              f"test split's phrases; 'with M' = greedy left-to-right decoding with the "
              f"transition matrix (M0 for I-IV, M* for V), as in paper Eq. 6.", ""]
    return "\n".join(lines)


def run(cfg: AblationConfig) -> dict[str, Any]:
    report = run_ablation(load_prepared(cfg.data), cfg)
    return {"ablation_md": str(Path(cfg.out) / "ablation.md"),
            "groups": {g: {"raw": r["raw"], "with_M": r["with_M"]}
                       for g, r in report["groups"].items()}}
