"""The whole pipeline on a synthetic dataset whose labels follow a known rule
(training/synthetic.py): stage 2 learns it, and co-ascent uses the unlabelled songs' sequences
to beat stage 2 alone -- and stops doing so when those sequences are shuffled.

The co-ascent gain needs a reasonably trained encoder (8 tiny-preset epochs over ~1,500
phrases: about 40 s on an idle 2-core CPU, far longer on a busy one), so those tests are
``slow``; the default run keeps a cheap check that stage 2 learns the rule.

Task: K = 16 dance phrases in 4 styles. Style -> comb spacing of the mel image, member -> pulse
period and loudness. 40 % of phrases are "faded" (style visible, member not). Songs follow
"next = successor member of the same style" 90 % of the time. Only 40 songs are labelled;
120 unlabelled songs carry the sequence rule. M0 (style prior) cannot tell members apart;
the M learned by co-ascent can.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from training.checkpoint import load_checkpoint
from training.classify import train_classifier
from training.coascent import co_ascent
from training.config import ClassifyConfig, CoascentConfig, EvaluateConfig, ExportConfig
from training.data import UNLABELLED, write_prepared_from
from training.evaluate import run as evaluate
from training.export import export_checkpoint
from training.pretrain import train_encoder
from training.synthetic import SyntheticSpec, make_dataset

SPEC = SyntheticSpec(noise=0.05, p_faded=0.4, train_songs=40, test_songs=30,
                     unlabelled_songs=120, p_successor=0.9, p_switch=0.03, seed=1)


def test_a_cheaply_pretrained_pipeline_already_learns_the_rule(tmp_path):
    from training.config import PretrainConfig

    data = make_dataset(replace(SPEC, unlabelled_songs=60))
    net, _ = train_encoder(data, PretrainConfig(out=str(tmp_path / "pre"), preset="tiny",
                                                epochs=4, max_steps_per_epoch=10, lr=1e-3,
                                                progress=False, seed=1))
    s2 = train_classifier(data, ClassifyConfig(out=str(tmp_path / "cls"), epochs=200,
                                               progress=False, seed=1,
                                               allow_empty_classes=True), encoder=net.encoder)
    top1 = s2["metrics"]["test"]["raw"]["top1"]
    print(f"\ncheap stage 2 test top-1 {top1:.3f} (chance {1 / SPEC.k:.3f})")
    assert top1 >= 3 / SPEC.k


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from training.config import PretrainConfig

    root = tmp_path_factory.mktemp("pipeline")
    data = make_dataset(SPEC)
    train_encoder(data, PretrainConfig(out=str(root / "pre"), preset="tiny", epochs=8, lr=1e-3,
                                       progress=False, seed=1))
    s2 = train_classifier(data, ClassifyConfig(encoder=str(root / "pre"), out=str(root / "cls"),
                                               epochs=200, progress=False, seed=1,
                                               allow_empty_classes=True))
    co = co_ascent(data, CoascentConfig(classifier=str(root / "cls"), out=str(root / "co"),
                                        progress=False, seed=1))
    return {"root": root, "data": data, "s2": s2["metrics"]["test"],
            "co": co["metrics"]["test"], "co_summary": co}


def _top1(m: dict, variant: str) -> float:
    return m[variant]["top1"]


@pytest.mark.slow
def test_stage_2_learns_the_rule_well_above_chance(run):
    s2 = run["s2"]
    chance = 1 / SPEC.k
    print(f"\nstage 2 test top-1: raw {_top1(s2, 'raw'):.3f}, with M0 "
          f"{_top1(s2, 'with_M'):.3f} (chance {chance:.3f})")
    assert _top1(s2, "raw") >= 0.35 > 5 * chance
    assert s2["raw"]["top5"] >= 0.75


@pytest.mark.slow
def test_co_ascent_uses_unlabelled_songs_to_beat_stage_2(run):
    s2, co = run["s2"], run["co"]
    best_s2 = max(_top1(s2, "raw"), _top1(s2, "with_M"))
    print(f"\ntop-1 with M (greedy Eq. 6): stage 2 {best_s2:.3f} -> co-ascent "
          f"{_top1(co, 'with_M'):.3f}; given the true previous phrase: "
          f"{_top1(s2, 'with_M_true_prev'):.3f} -> {_top1(co, 'with_M_true_prev'):.3f}; "
          f"MRR {s2['with_M']['mrr']:.3f} -> {co['with_M']['mrr']:.3f}")
    assert _top1(co, "with_M") >= best_s2 + 0.04
    assert _top1(co, "with_M_true_prev") >= _top1(s2, "with_M_true_prev") + 0.10
    assert co["with_M"]["mrr"] > max(s2["raw"]["mrr"], s2["with_M"]["mrr"])


@pytest.mark.slow
def test_the_learned_transition_matrix_found_the_successor_rule(run):
    doc = load_checkpoint(run["root"] / "co", stages=("coascent",))
    m, m0 = doc["transition"].numpy(), doc["transition_m0"].numpy()
    k, ps = SPEC.k, SPEC.per_style
    succ = np.array([(i // ps) * ps + (i % ps + 1) % ps for i in range(k)])
    hits = float(np.mean(m.argmax(axis=1) == succ))
    print(f"\nrows of M* whose best next phrase is the true successor: {hits:.2f}")
    assert hits >= 0.75
    assert np.all(m0[np.arange(k), succ] == 1.0)        # M0: successor = any same-style phrase
    assert run["co_summary"]["history"][-1]["pseudo_labelled"] > 0


@pytest.mark.slow
def test_without_the_unlabelled_sequences_co_ascent_gains_nothing(run, tmp_path):
    """Control: the same unlabelled phrases in a shuffled order (no sequence rule)."""
    data = run["data"]
    u = data.indices(UNLABELLED)
    perm = u[np.random.default_rng(0).permutation(u.size)]
    shuffled = replace(data, mel=data.mel.copy())
    shuffled.mel[u] = data.mel[perm]
    co = co_ascent(shuffled, CoascentConfig(classifier=str(run["root"] / "cls"),
                                            out=str(tmp_path / "co"), progress=False, seed=1))
    ctrl = co["metrics"]["test"]
    print(f"\ncontrol (shuffled unlabelled order): with M {_top1(ctrl, 'with_M'):.3f}, true "
          f"previous {_top1(ctrl, 'with_M_true_prev'):.3f}")
    assert _top1(ctrl, "with_M_true_prev") <= _top1(run["co"], "with_M_true_prev") - 0.10


@pytest.mark.slow
def test_exported_onnx_model_scores_like_the_checkpoint(run, tmp_path):
    prepared = write_prepared_from(tmp_path / "prepared", run["data"])
    ev_ckpt = evaluate(EvaluateConfig(data=str(prepared), checkpoint=str(run["root"] / "co"),
                                      out=str(tmp_path / "a.json")))
    exp = export_checkpoint(ExportConfig(checkpoint=str(run["root"] / "co"),
                                         out=str(tmp_path / "model")))
    assert exp["parity_max_abs_diff"] < 1e-4
    ev_onnx = evaluate(EvaluateConfig(data=str(prepared), checkpoint=str(tmp_path / "model"),
                                      out=str(tmp_path / "b.json")))
    for variant in ("raw", "with_M", "with_M_true_prev"):
        assert ev_onnx[variant] == pytest.approx(ev_ckpt[variant], abs=1e-6)
    assert ev_onnx["raw"]["top1"] > ev_onnx["frequency_baseline"]["raw"]["top1"]
