"""The bundled model's dataset builder (training/bundled.py) and the model it shipped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from blender_m2d.core.errors import M2DError
from training.bundled import STAGES, build_dataset, corpus_split, run, teacher_rows
from training.config import BundledConfig
from training.data import load_dataset

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "blender_m2d" / "assets" / "library"
MODEL = REPO / "blender_m2d" / "assets" / "model"
FIXTURES = REPO / "data" / "fixtures" / "audio"


def _corpus(tmp_path: Path, n: int) -> Path:
    root = tmp_path / "corpus"
    for i in range(n):
        d = root / ("pkg_a" if i % 2 else "pkg_b")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"track_{i:02d}.ogg").write_bytes(b"x%d" % i)
    (root / "pkg_a" / "copyright").write_text("GPL-2+")
    return root


def test_corpus_split_roles_are_disjoint_deterministic_and_spread(tmp_path):
    root = _corpus(tmp_path, 20)
    cfg = BundledConfig(corpus=str(root), corpus_test_songs=4, corpus_val_songs=2,
                        corpus_unlabelled_songs=5, corpus_seed_songs=1000)
    roles = corpus_split(cfg)
    assert {k: len(v) for k, v in roles.items()} == {"test": 4, "val": 2, "unlabelled": 5,
                                                     "seed": 9}
    everything = [p for v in roles.values() for p in v]
    assert len(set(everything)) == 20                       # disjoint and complete
    assert all(p.suffix == ".ogg" for p in everything)      # the copyright file is no song
    assert corpus_split(cfg) == roles                       # deterministic
    pool = sorted(everything)
    test_pos = sorted(pool.index(p) for p in roles["test"])
    assert test_pos[0] < 5 and test_pos[-1] >= 15            # spread over the sorted list
    assert {p.parent.name for p in roles["test"]} == {"pkg_a", "pkg_b"}
    few = corpus_split(BundledConfig(corpus=str(root), corpus_test_songs=1, corpus_val_songs=0,
                                     corpus_unlabelled_songs=0, corpus_seed_songs=3))
    assert len(few["seed"]) == 3 and not few["val"] and not few["unlabelled"]
    assert corpus_split(BundledConfig(corpus="")) == {"test": [], "val": [], "unlabelled": [],
                                                      "seed": []}


def test_teacher_argmax_labels_each_phrase_with_the_matchers_top_phrase():
    from blender_m2d.core.analysis import analyze_song
    from blender_m2d.core.audio import load_audio
    from blender_m2d.core.choreography import score_phrases
    from blender_m2d.core.library import load_library

    library = load_library(LIBRARY)
    song = FIXTURES / "music_10s.ogg"
    rows = teacher_rows(song, library, "argmax")
    audio = load_audio(song)
    analysis = analyze_song(audio)
    probs, _, _ = score_phrases(audio, analysis, library, None)
    assert [r[2] for r in rows] == [library.ids[int(j)] for j in probs.argmax(axis=1)]
    assert [(r[0], r[1]) for r in rows] == [(p.start_s, p.end_s) for p in analysis.phrases]
    with pytest.raises(M2DError, match="unknown teacher"):
        teacher_rows(song, library, "oracle")


def test_build_dataset_writes_a_valid_dataset_with_held_out_songs(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    shutil.copy2(FIXTURES / "music_10s.ogg", music / "song_a.ogg")
    shutil.copy2(FIXTURES / "music_5s.wav", music / "song_b.wav")
    shutil.copy2(FIXTURES / "music_10s.ogg", music / "song_a_copy.ogg")  # same content: dropped
    cfg = BundledConfig(library=str(LIBRARY), music=str(music), test_songs="song_b",
                        corpus="", work=str(tmp_path / "work"))
    dataset, summary = build_dataset(cfg)
    spec = load_dataset(dataset / "dataset.json")
    assert spec.labelled_songs() == ["song_a.ogg", "song_b.wav"]
    splits = {r.song: r.split for r in spec.labels}
    assert splits == {"song_a.ogg": "train", "song_b.wav": "test"}
    assert [s["song"] for s in summary["test_songs"]] == ["song_b.wav"]
    assert summary["teacher"] == "argmax" and summary["library_phrases"] == 70
    doc = json.loads((dataset / "dataset.json").read_text())
    assert "top-scored" in doc["label_source"]
    # the teacher's labels are cached per song, library and teacher
    assert len(list((tmp_path / "work" / "teacher").glob("*-argmax.json"))) == 2
    with pytest.raises(M2DError, match="not found"):
        build_dataset(BundledConfig(library=str(LIBRARY), music=str(music),
                                    test_songs="no_such_song", corpus="",
                                    work=str(tmp_path / "work2")))


def test_stages_need_their_inputs(tmp_path):
    assert STAGES == ("all", "data", "fit", "install")
    with pytest.raises(M2DError, match="unknown stage"):
        run(BundledConfig(stage="everything", work=str(tmp_path)))
    with pytest.raises(M2DError, match="run the 'data' stage first"):
        run(BundledConfig(stage="fit", work=str(tmp_path)))


@pytest.mark.skipif(not (MODEL / "model.onnx").is_file(), reason="no bundled model")
def test_bundled_model_matches_the_bundled_library_and_beat_its_baseline():
    from blender_m2d.core.inference import load_scorer
    from blender_m2d.core.library import load_library

    library = load_library(LIBRARY)
    scorer = load_scorer(MODEL, library, device="cpu")
    assert tuple(scorer.phrase_ids) == tuple(library.ids)
    rng = np.random.default_rng(0)
    probs = np.asarray(scorer.score(rng.random((3, 128, 128), dtype=np.float32)))
    assert probs.shape == (3, 70)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    side = json.loads((MODEL / "model.json").read_text())
    # the held-out evaluation recorded at installation (training/bundled.py install())
    m = side["metrics"]["evaluate"]
    assert m["split"] == "test" and m["n"] >= 100
    model, base = m["raw"], m["frequency_baseline"]["raw"]
    assert model["top1"] > base["top1"] and model["mrr"] > base["mrr"]
    assert "not from choreographers" in side["training"]["note"]
    assert (MODEL / "README.md").read_text().count("do not come from choreographers") == 1
