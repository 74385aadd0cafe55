"""Untrusted files: loading a library, plan, model, dataset or checkpoint never executes code
from it, and paths inside a library never leave its folder.

Two layers: a static scan of every module we ship or train with (no unpickling of data, no
``torch.load`` without ``weights_only=True``, no ``allow_pickle=True``, no eval/exec, no custom
onnxruntime op libraries), and real malicious files whose payload would create a marker file if
it ever ran.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hazards import REPO, tiny_model

from blender_m2d.core.library import load_library

PACKAGES = ("blender_m2d", "models", "training")


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


UNSAFE_CALLS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "cPickle.loads",
    "marshal.load", "marshal.loads", "shelve.open", "dill.load", "dill.loads", "joblib.load",
    "yaml.load", "yaml.unsafe_load", "eval", "exec", "compile",
    "torch.jit.load", "torch.package.PackageImporter",
}


def _scan(source: str, label: str) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(source, filename=label)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{label}:{node.lineno}"
        if name in UNSAFE_CALLS or name.endswith(".register_custom_ops_library"):
            problems.append(f"{where}: {name}(...)")
        if name.endswith("torch.load"):
            wo = _kw(node, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                problems.append(f"{where}: torch.load without weights_only=True")
        if name in ("np.load", "numpy.load"):
            ap = _kw(node, "allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                problems.append(f"{where}: np.load with allow_pickle={ast.unparse(ap)}")
    return problems


def test_no_code_executing_loader_in_our_sources(note):
    problems = []
    for path in _sources():
        problems += _scan(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert not problems, "code-executing loaders:\n  " + "\n  ".join(problems)
    note(f"no finding in {len(_sources())} modules of {', '.join(PACKAGES)}")


def test_the_scan_finds_what_it_looks_for(note):
    """The static scan is not vacuous: it flags each unsafe pattern and sees our real loaders."""
    bad = ("import pickle, torch, numpy as np\n"
           "pickle.loads(b'')\ntorch.load('x')\ntorch.load('x', weights_only=False)\n"
           "np.load('x', allow_pickle=True)\neval('1')\nsess.register_custom_ops_library('x')\n")
    assert len(_scan(bad, "bad.py")) == 6
    text = "\n".join(p.read_text(encoding="utf-8") for p in _sources())
    assert "torch.load(" in text and "weights_only=True" in text
    assert "np.load(" in text and "allow_pickle=False" in text
    note("the scanner flags all 6 planted unsafe calls")


def _payload(marker: Path):
    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    return Payload()


def test_pickled_motion_array_is_refused_without_running_it(synth_library, tmp_path, refused):
    marker = tmp_path / "pwned"
    arr = np.empty(96, dtype=object)
    arr[:] = [_payload(marker)] * 96
    np.save(synth_library / "motion" / "root.npy", arr.reshape(96, 1), allow_pickle=True)
    doc = json.loads((synth_library / "library.json").read_text())
    doc["motion"]["files"]["root"].update(dtype="object", shape=[96, 1])
    (synth_library / "library.json").write_text(json.dumps(doc))
    refused(lambda: load_library(synth_library), r"root\.npy: cannot read motion file \(.*"
            r"(allow_pickle|Python objects).*\); rebuild the library$", synth_library)
    assert not marker.exists()


def test_prepared_similarity_array_with_a_pickle_is_refused(tmp_path, note):
    """training.data.load_prepared reads similarity.npy with numpy's default allow_pickle=False."""
    from blender_m2d.core.errors import M2DError
    from training.data import load_prepared, write_prepared_from
    from training.synthetic import SyntheticSpec, make_dataset

    data = make_dataset(SyntheticSpec(n_styles=2, per_style=2, train_songs=2, test_songs=1,
                                      unlabelled_songs=1, phrases_per_song=3))
    out = write_prepared_from(tmp_path / "prep", data)
    arrays = next(p for p in out.iterdir() if p.is_dir())
    marker = tmp_path / "pwned"
    arr = np.empty((4, 4), dtype=object)
    arr[:] = _payload(marker)
    np.save(arrays / "similarity.npy", arr, allow_pickle=True)
    with pytest.raises((M2DError, ValueError)) as err:
        load_prepared(out)
    assert not marker.exists()
    note(f"refused ({type(err.value).__name__}: {err.value}); the payload did not run")


def test_sidecar_cannot_point_the_loader_at_another_onnx_file(tmp_path, synth_library, note):
    """model.json's ``onnx.file`` is informative: the loader opens model.onnx beside it."""
    from blender_m2d.core.inference import load_scorer

    lib = load_library(synth_library)
    model = tiny_model(tmp_path / "model", phrase_ids=lib.ids, library_hash=lib.hash)
    (tmp_path / "evil.onnx").write_bytes(b"not read")
    path = model / "model.json"
    doc = json.loads(path.read_text())
    doc["onnx"]["file"] = "../evil.onnx"
    path.write_text(json.dumps(doc))
    scorer = load_scorer(model, library=lib, warmup=False)
    assert scorer.onnx_path == model / "model.onnx"
    assert doc["onnx"]["sha256"] == hashlib.sha256((model / "model.onnx").read_bytes()
                                                   ).hexdigest()
    note("no error: 'onnx.file': '../evil.onnx' is ignored, model.onnx beside model.json is "
         "loaded")


def test_plan_strings_are_data(tmp_path, bundled_library, note):
    """A plan with code-looking strings loads as plain strings (nothing is evaluated)."""
    from hazards import FIXTURES

    from blender_m2d.core.choreography import choreograph
    from blender_m2d.core.plan import Plan

    plan = choreograph(FIXTURES / "audio" / "music_10s.ogg", bundled_library).plan
    doc = plan.to_json()
    marker = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    doc["song"]["path"] = code
    doc["phrases"][0]["phrase_id"] = code
    (tmp_path / "PLAN.json").write_text(json.dumps(doc))
    loaded = Plan.load(tmp_path / "PLAN.json")
    assert loaded.phrases[0].phrase_id == code and not marker.exists()
    note("no error: code-looking strings load as strings, nothing runs")
