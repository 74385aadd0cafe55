"""Models that do not belong: tampered ONNX bytes, a sidecar for another library or another K,
a missing sidecar, features computed differently. ``load_scorer`` refuses each with a message
naming the file, with real onnxruntime sessions; the model files are never modified."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest
from hazards import FIXTURES, tiny_model

from blender_m2d.core.inference import load_scorer
from blender_m2d.core.library import load_library, write_synthetic_library


@pytest.fixture()
def lib(synth_library):
    return load_library(synth_library)


@pytest.fixture()
def model(tmp_path, lib):
    return tiny_model(tmp_path / "model", phrase_ids=lib.ids, library_hash=lib.hash)


def _sidecar(model_dir, fn):
    path = model_dir / "model.json"
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def test_a_matching_model_scores(model, lib, note):
    scorer = load_scorer(model, library=lib)
    probs = scorer.score(np.random.default_rng(0).random((3, 128, 128), np.float32))
    assert probs.shape == (3, 8) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    note(f"no error: providers {list(scorer.providers_used)}")


def test_tampered_onnx_bytes(model, lib, refused):
    data = bytearray((model / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model / "model.onnx").write_bytes(bytes(data))
    refused(lambda: load_scorer(model, library=lib), r"model\.onnx: model\.onnx does not belong "
            r"to this sidecar \(its sha256 differs from the one recorded in model\.json\); copy "
            r"both files from the same export$", model)


def test_tampered_onnx_with_a_matching_hash(model, lib, refused):
    """Someone edits the graph bytes and the recorded hash: onnxruntime's own check refuses."""
    data = (model / "model.onnx").read_bytes()[:-64] + b"\x00" * 64
    (model / "model.onnx").write_bytes(data)
    _sidecar(model, lambda d: d["onnx"].update(sha256=hashlib.sha256(data).hexdigest()))
    refused(lambda: load_scorer(model, library=lib), r"model\.onnx: onnxruntime cannot load the "
            r"model \(", model)


def test_sidecar_for_another_library(tmp_path, model, refused):
    other = load_library(write_synthetic_library(tmp_path / "other", 8, seed=1, n_frames=10,
                                                 styles=("jazz",)))
    _sidecar(model, lambda d: d["library"].update(phrase_ids=[f"x_{i}" for i in range(8)]))
    refused(lambda: load_scorer(model, library=other), r"model\.json: the model was trained for "
            r"another dance library \(8 model phrase\(s\) missing from the library .*Retrain or "
            r"export the model for this library$", model)


def test_library_edited_since_training(model, synth_library, refused):
    doc = json.loads((synth_library / "library.json").read_text())
    doc["name"] = "renamed"
    (synth_library / "library.json").write_text(json.dumps(doc))
    refused(lambda: load_scorer(model, library=load_library(synth_library)),
            r"model\.json: the dance library changed since the model was trained \(library hash "
            r"\w+\.\.\., model expects \w+\.\.\.\); library: .*Retrain the model or restore the "
            r"library$", model)


def test_same_phrases_in_another_order(model, lib, refused):
    _sidecar(model, lambda d: d["library"].update(phrase_ids=d["library"]["phrase_ids"][::-1]))
    refused(lambda: load_scorer(model, library=lib), r"same phrases in another order \(class 0: "
            r"model 'syn_000007', library 'syn_000000'\)", model)


def test_wrong_k(tmp_path, lib, refused):
    """A graph with K=5 outputs under a sidecar (and library) of K=8."""
    model = tiny_model(tmp_path / "k5", phrase_ids=lib.ids, library_hash=lib.hash, k=5)
    refused(lambda: load_scorer(model, library=lib), r"model\.onnx: model outputs K=5, D=8 but "
            r"the sidecar says K=8, D=8$", model)


def test_sidecar_k_disagrees_with_its_phrase_list(model, lib, refused):
    _sidecar(model, lambda d: d.update(n_classes=9))
    refused(lambda: load_scorer(model, library=lib), r"model\.json: model sidecar is invalid: "
            r"'library\.phrase_ids' has 8 entries but n_classes is 9$", model)


def test_missing_sidecar(model, lib, refused):
    (model / "model.json").unlink()
    refused(lambda: load_scorer(model, library=lib), r"model\.json: no such m2d-model file$",
            model)


def test_missing_onnx(model, lib, refused):
    (model / "model.onnx").unlink()
    refused(lambda: load_scorer(model / "model.json", library=lib), r"model\.onnx: model file "
            r"not found \(model\.onnx and model\.json must be side by side\)$", model)


def test_sidecar_from_the_future(model, lib, refused):
    _sidecar(model, lambda d: d.update(format_version=7))
    refused(lambda: load_scorer(model, library=lib), r"model\.json: m2d-model format_version 7 is "
            r"newer than this blender_m2d supports \(1\); update the add-on$", model)


def test_model_trained_on_other_features(model, lib, refused):
    _sidecar(model, lambda d: d["features"].update(sample_rate=44100))
    refused(lambda: load_scorer(model, library=lib), r"model\.json: the model was trained on "
            r"different audio features \(sample_rate: model 44100 vs here 22050\)$", model)


def test_transition_matrix_out_of_range(model, lib, refused):
    def edit(d):
        d["transition"][0][1] = 7.5
    _sidecar(model, edit)
    refused(lambda: load_scorer(model, library=lib), r"model\.json: model sidecar is invalid: "
            r"'transition' values must lie in \[0\.01, 1\]$", model)


def test_cuda_requested_without_cuda(model, lib, refused):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    refused(lambda: load_scorer(model, library=lib, device="cuda"), r"model\.json: device 'cuda' "
            r"was asked for but this onnxruntime has no CUDA provider", model)


def test_onnx_that_is_a_pickle_is_refused_without_running_it(model, lib, refused, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    data = pickle.dumps(Payload())
    (model / "model.onnx").write_bytes(data)
    _sidecar(model, lambda d: d["onnx"].update(sha256=hashlib.sha256(data).hexdigest()))
    refused(lambda: load_scorer(model, library=lib), r"onnxruntime cannot load the model", model)
    assert not marker.exists()


def test_external_data_outside_the_model_folder(model, lib, refused, tmp_path):
    """ONNX initializers may live in external files; one pointing out of the model folder
    must not be read."""
    import onnx
    from onnx import TensorProto

    m = onnx.load_from_string((model / "model.onnx").read_bytes())
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(128 * 8, np.float32).tobytes())
    w = next(t for t in m.graph.initializer if t.name == "W")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../secret.bin"), ("offset", "0"), ("length", str(128 * 8 * 4))):
        e = w.external_data.add()
        e.key, e.value = k, v
    data = m.SerializeToString()
    (model / "model.onnx").write_bytes(data)
    _sidecar(model, lambda d: d["onnx"].update(sha256=hashlib.sha256(data).hexdigest()))
    refused(lambda: load_scorer(model, library=lib), r"onnxruntime cannot load the model .*"
            r"External data path", model)


def test_choreograph_with_a_model_for_another_library(tmp_path, model, bundled_library,
                                                      refused):
    """The scorer check inside choreograph() (a scorer loaded without a library)."""
    from blender_m2d.core.choreography import choreograph

    scorer = load_scorer(model)
    refused(lambda: choreograph(FIXTURES / "audio" / "music_10s.ogg", bundled_library,
                                scorer=scorer),
            r"^the model was trained for another dance library \(its phrase ids differ\); pass "
            r"the matching --library or leave out --model to use the baseline$", model)
