"""ONNX export of E+P: parity with torch (dynamic batch), the sidecar, and load-time checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from blender_m2d.core.errors import M2DError
from blender_m2d.core.inference import load_scorer
from models import Encoder, Predictor, ScoringNet, get_preset
from models.export_onnx import export_model, export_onnx_bytes, parity_check

K = 6
IDS = [f"phrase_{i}" for i in range(K)]
LIB_HASH = "f" * 64


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, ScoringNet]:
    torch.manual_seed(0)
    cfg = get_preset("tiny", n_classes=K)
    enc, pred = Encoder(cfg).eval(), Predictor(cfg).eval()
    m = np.full((K, K), 0.5, np.float32)
    np.fill_diagonal(m, 1.0)
    out = tmp_path_factory.mktemp("onnx") / "model"
    res = export_model(enc, pred, out, cfg=cfg, phrase_ids=IDS, library_hash=LIB_HASH,
                       transition=m, training={"data": {"phrases": 0}},
                       metrics={"test": {"raw": {"top1": 0.5}}})
    print(f"\nONNX parity (tiny preset): max abs diff {res.max_abs_diff:.3g}, "
          f"{res.onnx_bytes / 1e6:.2f} MB")
    assert res.max_abs_diff < 1e-4
    return out, ScoringNet(enc, pred).eval()


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def _edit_sidecar(folder: Path, **changes) -> None:
    doc = json.loads((folder / "model.json").read_text())
    doc.update(changes)
    (folder / "model.json").write_text(json.dumps(doc))


def test_onnx_matches_torch_on_random_input_at_several_batch_sizes(exported):
    folder, net = exported
    scorer = load_scorer(folder, device="cpu")
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for b in (1, 3, 17):
        x = torch.rand(b, 128, 128, generator=gen)
        probs, emb = scorer.score(x.numpy(), return_embedding=True)
        with torch.no_grad():
            ref_p, ref_u = net(x[:, None])
        assert probs.shape == (b, K) and emb.shape == (b, 64)
        worst = max(worst, np.abs(probs - ref_p.numpy()).max(), np.abs(emb - ref_u.numpy()).max())
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    print(f"\ntorch vs onnxruntime max abs diff: {worst:.3g}")
    assert worst < 1e-4


def test_scorer_exposes_ids_transition_and_providers(exported):
    folder, _ = exported
    s = load_scorer(folder / "model.onnx")
    assert s.phrase_ids == tuple(IDS)
    assert s.transition.shape == (K, K) and s.transition.dtype == np.float32
    assert s.transition.min() >= 0.01 and s.transition.max() <= 1.0
    assert s.providers_used[-1] == "CPUExecutionProvider"
    assert s.sidecar["preset"] == "tiny" and s.sidecar["metrics"]["test"]["raw"]["top1"] == 0.5
    assert s.embed(np.zeros((2, 128, 128), np.float32)).shape == (2, 64)
    with pytest.raises(ValueError, match="shape"):
        s.score(np.zeros((2, 64, 128), np.float32))


def test_sidecar_records_the_contract(exported):
    folder, _ = exported
    doc = json.loads((folder / "model.json").read_text())
    assert doc["format"] == "m2d-model" and doc["format_version"] == 1
    assert doc["n_classes"] == K and doc["library"]["phrase_ids"] == IDS
    assert doc["library"]["hash"] == LIB_HASH
    assert doc["onnx"]["opset"] >= 17 and doc["onnx"]["parity_max_abs_diff"] < 1e-4
    assert doc["features"]["sample_rate"] == 22050 and doc["features"]["axes"] == ["time", "mel"]
    assert np.asarray(doc["transition"]).shape == (K, K)


def test_library_must_match_ids_order_and_hash(exported):
    folder, _ = exported
    ok = SimpleNamespace(ids=tuple(IDS), hash=LIB_HASH, path="lib")
    load_scorer(folder, ok)
    with pytest.raises(M2DError, match="another dance library") as err:
        load_scorer(folder, SimpleNamespace(ids=(*IDS[:-1], "x"), hash=LIB_HASH,
                                            path="lib"))
    assert "model.json" in str(err.value)
    with pytest.raises(M2DError, match="another order"):
        load_scorer(folder, SimpleNamespace(ids=tuple(reversed(IDS)), hash=LIB_HASH, path="l"))
    with pytest.raises(M2DError, match="library changed"):
        load_scorer(folder, SimpleNamespace(ids=tuple(IDS), hash="0" * 64, path="lib"))


def test_onnx_from_another_export_is_refused(exported, tmp_path):
    folder = _copy(exported[0], tmp_path)
    data = bytearray((folder / "model.onnx").read_bytes())
    data[-1] ^= 1
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(M2DError, match="does not belong to this sidecar") as err:
        load_scorer(folder)
    assert "model.onnx" in str(err.value)


def test_sidecar_with_wrong_k_or_features_is_refused(exported, tmp_path):
    folder = _copy(exported[0], tmp_path)
    _edit_sidecar(folder, n_classes=K + 1)
    with pytest.raises(M2DError, match="phrase_ids"):
        load_scorer(folder)
    folder2 = _copy(exported[0], tmp_path / "b")
    doc = json.loads((folder2 / "model.json").read_text())
    doc["features"]["hop_length"] = 256
    (folder2 / "model.json").write_text(json.dumps(doc))
    with pytest.raises(M2DError, match="different audio features"):
        load_scorer(folder2)


def test_k_mismatch_between_graph_and_sidecar_is_refused(exported, tmp_path):
    folder = _copy(exported[0], tmp_path)
    doc = json.loads((folder / "model.json").read_text())
    doc["n_classes"] = K - 1
    doc["library"]["phrase_ids"] = IDS[:-1]
    doc["transition"] = np.ones((K - 1, K - 1)).tolist()
    (folder / "model.json").write_text(json.dumps(doc))
    with pytest.raises(M2DError, match=f"K={K}"):
        load_scorer(folder)


def test_missing_or_corrupt_files_name_the_file(exported, tmp_path):
    folder = _copy(exported[0], tmp_path)
    (folder / "model.json").unlink()
    with pytest.raises(M2DError, match=r"model\.json"):
        load_scorer(folder)
    with pytest.raises(M2DError, match="model file not found"):
        load_scorer(tmp_path / "nowhere")
    folder2 = _copy(exported[0], tmp_path / "b")
    _edit_sidecar(folder2, transition=[[2.0] * K] * K)
    with pytest.raises(M2DError, match="transition"):
        load_scorer(folder2)


def test_cuda_request_without_cuda_is_a_clear_error(exported):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(M2DError, match="cuda"):
        load_scorer(exported[0], device="cuda")


def test_export_is_atomic_when_parity_fails(exported, tmp_path, monkeypatch):
    import models.export_onnx as ex

    out = _copy(exported[0], tmp_path)
    before = (out / "model.onnx").read_bytes()
    monkeypatch.setattr(ex, "parity_check", lambda *a, **k: 1.0)
    cfg = get_preset("tiny", n_classes=K)
    with pytest.raises(AssertionError, match="differ"):
        ex.export_model(Encoder(cfg), Predictor(cfg), out, cfg=cfg, phrase_ids=IDS,
                        library_hash=LIB_HASH, transition=np.ones((K, K)))
    assert (out / "model.onnx").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_parity_helper_reports_a_small_difference():
    cfg = get_preset("tiny", n_classes=3)
    data, net = export_onnx_bytes(Encoder(cfg), Predictor(cfg))
    assert parity_check(data, net, batch_sizes=(2,)) < 1e-4


@pytest.mark.gpu
def test_exported_model_runs_on_cuda_execution_provider(exported):
    folder, net = exported
    scorer = load_scorer(folder, device="cuda")
    assert scorer.providers_used[0] == "CUDAExecutionProvider"
    x = np.random.default_rng(0).random((8, 128, 128), dtype=np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)[:, None])[0].numpy()
    np.testing.assert_allclose(scorer.score(x), ref, atol=1e-3)
