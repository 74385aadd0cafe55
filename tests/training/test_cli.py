"""``python -m training <step>``: help for every step, the whole chain on a tiny prepared
dataset (pretrain -> classify -> coascent -> evaluate -> export -> evaluate the ONNX model),
and the ablation table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.__main__ import STEPS
from training.data import write_prepared_from
from training.synthetic import SyntheticSpec, make_dataset

REPO = Path(__file__).resolve().parents[2]
FAST = ["--preset", "tiny", "--no-progress"]


def _run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    data = make_dataset(SyntheticSpec(train_songs=8, test_songs=2, unlabelled_songs=4,
                                      phrases_per_song=6, seed=5))
    return write_prepared_from(tmp_path_factory.mktemp("cli") / "prepared", data)


def test_every_step_has_help():
    out = subprocess.run([sys.executable, "-m", "training", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    for step in STEPS:
        assert step in out
    for step in ("pretrain", "coascent", "bundled"):
        text = _run(step, "--help").stdout
        assert "--config" in text and "--seed" in text


@pytest.mark.slow
def test_the_whole_chain_runs_from_the_command_line(prepared, tmp_path):
    run = tmp_path / "run"
    _run("pretrain", "--data", str(prepared), "--out", str(run / "pre"), "--epochs", "1",
         "--max-steps-per-epoch", "2", "--batch-size", "16", *FAST)
    cfg = tmp_path / "cls.json"
    cfg.write_text(json.dumps({"epochs": 10, "allow_empty_classes": True}))
    _run("classify", "--config", str(cfg), "--data", str(prepared), "--encoder",
         str(run / "pre"), "--out", str(run / "cls"), "--no-progress")
    saved = json.loads((run / "cls" / "config.json").read_text())
    assert saved["config"]["epochs"] == 10 and saved["config"]["allow_empty_classes"]
    _run("coascent", "--data", str(prepared), "--classifier", str(run / "cls"), "--out",
         str(run / "co"), "--max-rounds", "2", "--no-progress")
    ev = json.loads(_run("evaluate", "--data", str(prepared), "--checkpoint",
                         str(run / "co")).stdout)
    assert {"raw", "with_M", "with_M_true_prev", "frequency_baseline"} <= set(ev)
    exp = json.loads(_run("export", "--checkpoint", str(run / "co"), "--out",
                          str(run / "model")).stdout)
    assert exp["parity_max_abs_diff"] < 1e-4
    ev_onnx = json.loads(_run("evaluate", "--data", str(prepared), "--checkpoint",
                              str(run / "model")).stdout)
    assert ev_onnx["source"] == "onnx"
    assert abs(ev_onnx["raw"]["top1"] - ev["raw"]["top1"]) < 1e-6
    sidecar = json.loads((run / "model" / "model.json").read_text())
    assert sidecar["training"]["stage"] == "coascent" and sidecar["metrics"]["test"]["n"] == 12


def test_user_errors_exit_2_with_one_line(prepared, tmp_path):
    proc = _run("pretrain", "--data", str(prepared), "--out", str(tmp_path), "--preset",
                "huge", ok=False)
    assert proc.returncode == 2 and "unknown model preset 'huge'" in proc.stderr
    proc = _run("classify", "--data", str(tmp_path / "none"), ok=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    proc = _run("export", "--checkpoint", str(tmp_path / "none.pt"), ok=False)
    assert proc.returncode == 2 and "checkpoint not found" in proc.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epochz": 3}))
    proc = _run("pretrain", "--config", str(bad), ok=False)
    assert proc.returncode == 2 and "unknown config keys" in proc.stderr


def test_ablation_writes_the_table_for_groups_i_to_v(prepared, tmp_path):
    out = tmp_path / "abl"
    _run("ablation", "--data", str(prepared), "--out", str(out), "--pretrain-epochs", "1",
         "--finetune-epochs", "1", "--classify-epochs", "10", "--coascent-rounds", "2",
         "--max-steps-per-epoch", "2", "--allow-empty-classes", *FAST)
    table = (out / "ablation.md").read_text()
    for g in ("| I |", "| II |", "| III |", "| IV |", "| V |", "frequency baseline"):
        assert g in table
    assert "ImageNet weights cannot be downloaded" in table
    report = json.loads((out / "ablation.json").read_text())
    assert set(report["groups"]) == {"I", "II", "III", "IV", "V"}
    assert all("top1" in r["raw"] for r in report["groups"].values())


@pytest.mark.slow
def test_torchrun_runs_the_same_steps_with_two_processes(prepared, tmp_path):
    """DistributedDataParallel on CPU (gloo): no code changes, world size from torchrun."""
    torchrun = Path(sys.executable).with_name("torchrun")
    common = ["--standalone", "--nproc_per_node", "2", "-m", "training"]

    def trun(*args: str) -> dict:
        proc = subprocess.run([str(torchrun), *common, *args], cwd=REPO, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout)

    pre = trun("pretrain", "--data", str(prepared), "--out", str(tmp_path / "pre"),
               "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "8", *FAST)
    assert pre["epoch"] == 1
    trun("classify", "--data", str(prepared), "--encoder", str(tmp_path / "pre"), "--out",
         str(tmp_path / "cls"), "--epochs", "10", "--allow-empty-classes", "--no-progress")
    co = trun("coascent", "--data", str(prepared), "--classifier", str(tmp_path / "cls"),
              "--out", str(tmp_path / "co"), "--max-rounds", "2", "--no-progress")
    assert co["rounds"] >= 1
