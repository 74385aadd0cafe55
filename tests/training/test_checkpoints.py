"""Checkpoints: atomic writes, self-description, refusal of foreign checkpoints, resume after a
kill (bit-identical to an uninterrupted run), and NaN losses."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from blender_m2d.core.errors import M2DError
from training import checkpoint as ck
from training.classify import train_classifier
from training.coascent import co_ascent
from training.config import ClassifyConfig, CoascentConfig, PretrainConfig
from training.pretrain import train_encoder
from training.synthetic import SyntheticSpec, make_dataset


class Killed(Exception):
    """Stands in for SIGKILL at an epoch boundary."""


@pytest.fixture(scope="module")
def data():
    return make_dataset(SyntheticSpec(train_songs=6, test_songs=2, unlabelled_songs=6,
                                      phrases_per_song=6, seed=3))


def _pre(out: Path, **kw) -> PretrainConfig:
    base = {"out": str(out), "preset": "tiny", "epochs": 2, "batch_size": 16,
            "max_steps_per_epoch": 2, "progress": False, "val_fraction": 0.0}
    base.update(kw)
    return PretrainConfig(**base)


def _kill_after(n: int):
    def hook(epoch: int) -> None:
        if epoch == n:
            raise Killed
    return hook


def test_checkpoint_is_self_describing_and_loads_weights_only(data, tmp_path):
    train_encoder(data, _pre(tmp_path, epochs=1))
    doc = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert doc["format"] == "m2d-checkpoint" and doc["stage"] == "pretrain"
    assert doc["preset"] == "tiny" and doc["model_config"]["embed_dim"] == 64
    assert doc["config"]["epochs"] == 1 and doc["epoch"] == 1 and doc["done"] is True
    assert {"encoder", "d1", "d2", "d3"} <= set(doc["state"])
    assert (tmp_path / "config.json").is_file() and (tmp_path / "log.csv").is_file()


def test_pretrain_resumes_after_a_kill_and_matches_an_uninterrupted_run(data, tmp_path):
    full, _ = train_encoder(data, _pre(tmp_path / "full"))
    with pytest.raises(Killed):
        train_encoder(data, _pre(tmp_path / "cut"), on_epoch=_kill_after(1))
    assert ck.load_checkpoint(tmp_path / "cut", stages=("pretrain",))["epoch"] == 1
    resumed, _ = train_encoder(data, _pre(tmp_path / "cut"))
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    rows = (tmp_path / "cut" / "log.jsonl").read_text().splitlines()
    assert len(rows) == 2


def test_classify_and_coascent_resume_after_a_kill(data, tmp_path):
    train_encoder(data, _pre(tmp_path / "pre", epochs=1))
    ccfg = ClassifyConfig(encoder=str(tmp_path / "pre"), out=str(tmp_path / "cls"), epochs=20,
                          progress=False, allow_empty_classes=True)
    with pytest.raises(Killed):
        train_classifier(data, ccfg, on_epoch=_kill_after(15))
    assert ck.load_checkpoint(tmp_path / "cls", stages=("classify",))["epoch"] == 10
    res = train_classifier(data, ccfg)
    ref = train_classifier(data, replace(ccfg, out=str(tmp_path / "cls_ref")))
    assert res["metrics"]["test"] == ref["metrics"]["test"]
    co = CoascentConfig(classifier=str(tmp_path / "cls"), out=str(tmp_path / "co"),
                        max_rounds=3, min_growth=-1.0, progress=False)
    with pytest.raises(Killed):
        co_ascent(data, co, on_round=_kill_after(2))
    assert ck.load_checkpoint(tmp_path / "co", stages=("coascent",))["round"] == 2
    assert co_ascent(data, co)["rounds"] == 3


def test_resume_with_another_config_is_refused(data, tmp_path):
    train_encoder(data, _pre(tmp_path, epochs=1))
    with pytest.raises(M2DError, match=r"cannot resume.*lr"):
        train_encoder(data, _pre(tmp_path, epochs=2, lr=1e-3))


def test_checkpoint_of_another_preset_or_stage_is_refused(data, tmp_path):
    train_encoder(data, _pre(tmp_path / "pre", epochs=1))
    with pytest.raises(M2DError, match=r"preset 'tiny'.*uses preset 'small'") as err:
        train_encoder(data, _pre(tmp_path / "pre", preset="small", epochs=1))
    assert "checkpoint.pt" in str(err.value)
    with pytest.raises(M2DError, match="preset 'tiny'"):
        train_classifier(data, ClassifyConfig(encoder=str(tmp_path / "pre"), preset="small",
                                              out=str(tmp_path / "c"), progress=False,
                                              allow_empty_classes=True))
    with pytest.raises(M2DError, match="stage 'pretrain'"):
        co_ascent(data, CoascentConfig(classifier=str(tmp_path / "pre"),
                                       out=str(tmp_path / "co"), progress=False))


def test_garbage_and_missing_checkpoints_are_clear_errors(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(M2DError, match="not a readable checkpoint"):
        ck.load_checkpoint(tmp_path)
    with pytest.raises(M2DError, match="checkpoint not found"):
        ck.load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(M2DError, match="not a blender_m2d training checkpoint"):
        ck.load_checkpoint(tmp_path / "other.pt")


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ck.save_checkpoint(path, {"stage": "pretrain", "epoch": 1})

    def broken(obj, fh, *a, **k):
        fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(M2DError, match="cannot write the checkpoint"):
        ck.save_checkpoint(path, {"stage": "pretrain", "epoch": 2})
    monkeypatch.undo()
    assert ck.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_nan_loss_is_a_clear_error_and_writes_no_checkpoint(data, tmp_path):
    bad = replace(data, mel=data.mel.copy())
    bad.mel[:] = np.nan
    with pytest.raises(M2DError, match=r"pretrain: the loss became NaN/inf in epoch 1"):
        train_encoder(bad, _pre(tmp_path))
    assert not (tmp_path / "checkpoint.pt").exists()


def test_nan_in_stage_2_keeps_the_last_good_checkpoint(data, tmp_path):
    train_encoder(data, _pre(tmp_path / "pre", epochs=1))
    with pytest.raises(M2DError, match="classify: the loss became NaN/inf"):
        train_classifier(data, ClassifyConfig(encoder=str(tmp_path / "pre"), lr=1e30,
                                              out=str(tmp_path / "cls"), epochs=30,
                                              progress=False, allow_empty_classes=True))
