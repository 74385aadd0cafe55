"""The studio dataset format: loading, splits, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blender_m2d.core.errors import M2DError
from training.data import (
    TEST,
    TRAIN,
    UNLABELLED,
    PhraseData,
    PreparedWriter,
    check_classes,
    load_dataset,
    load_prepared,
    write_prepared_from,
)
from training.synthetic import SyntheticSpec, make_dataset


def _dataset(root: Path, labels: str, *, phrases: str | None = None, **extra) -> Path:
    (root / "songs").mkdir(parents=True, exist_ok=True)
    for name in ("a.wav", "b.wav", "c.wav"):
        (root / "songs" / name).write_bytes(b"RIFF")
    (root / "unl").mkdir(exist_ok=True)
    (root / "unl" / "x.ogg").write_bytes(b"OggS")
    (root / "phrases.csv").write_text(phrases or (
        "id,style,style_vector\nwave,pop,1 0\nspin,pop,0.9 0.1\njump,rock,0 1\n"))
    (root / "labels.csv").write_text(labels)
    doc = {"format": "m2d-dataset", "format_version": 1, "phrases": "phrases.csv",
           "labels": "labels.csv", "songs_dir": "songs", "unlabelled_dir": "unl", **extra}
    (root / "dataset.json").write_text(json.dumps(doc))
    return root / "dataset.json"


GOOD = ("song,start_s,end_s,phrase_id,split\n"
        "a.wav,0,4,wave,train\na.wav,4,8,spin,train\nb.wav,0,3.5,jump,test\n")


def test_a_phrase_list_dataset_loads_with_styles_and_splits(tmp_path):
    spec = load_dataset(_dataset(tmp_path, GOOD))
    assert spec.phrases.ids == ("wave", "spin", "jump")
    assert spec.phrases.similarity.shape == (3, 3)
    assert spec.phrases.similarity[0, 1] > 0.9 > spec.phrases.similarity[0, 2]
    assert [r.label for r in spec.labels] == [0, 1, 2]
    assert [r.split for r in spec.labels] == ["train", "train", "test"]
    assert [p.name for p in spec.unlabelled] == ["x.ogg"]
    assert spec.unlabelled_name(spec.unlabelled[0]) == "unlabelled/unl/x.ogg"


def test_missing_split_is_assigned_per_song(tmp_path):
    labels = "song,start_s,end_s,phrase_id\n" + "".join(
        f"{s},{i * 4},{i * 4 + 4},wave\n" for s in ("a.wav", "b.wav", "c.wav") for i in range(3))
    spec = load_dataset(_dataset(tmp_path, labels, split={"test_fraction": 0.5, "seed": 3}))
    per_song = {}
    for r in spec.labels:
        per_song.setdefault(r.song, set()).add(r.split)
    assert all(len(v) == 1 for v in per_song.values())


@pytest.mark.parametrize("labels, message", [
    ("song,start_s,end_s,phrase_id\nmissing.wav,0,4,wave\n",
     "line 2: song 'missing.wav' not found"),
    ("song,start_s,end_s,phrase_id\na.wav,0,4,moonwalk\n",
     "line 2: unknown dance phrase id 'moonwalk'"),
    ("song,start_s,end_s,phrase_id\na.wav,4,2,wave\n", "line 2: need 0 <= start_s < end_s"),
    ("song,start_s,end_s,phrase_id\na.wav,zero,2,wave\n", "line 2: start_s/end_s must be numbers"),
    ("song,start_s,end_s,phrase_id,split\na.wav,0,2,wave,dev\n", "split must be one of"),
    ("song,start_s,end_s,phrase_id\na.wav,0,4,wave\na.wav,3,6,spin\n", "lines 2 and 3"),
    ("song,start_s,end_s,phrase_id,split\na.wav,0,4,wave,train\na.wav,4,6,spin,test\n",
     "several splits"),
    ("song,start_s,phrase_id\na.wav,0,wave\n", "missing column"),
    ("song,start_s,end_s,phrase_id\n../songs/a.wav,0,4,wave\n", None),
    ("song,start_s,end_s,phrase_id\n/etc/passwd,0,4,wave\n", "invalid relative path"),
])
def test_bad_labels_name_the_file_line_and_item(tmp_path, labels, message):
    path = _dataset(tmp_path, labels)
    if message is None:  # a path that stays inside the songs folder is fine
        load_dataset(path)
        return
    with pytest.raises(M2DError, match=message) as err:
        load_dataset(path)
    assert "labels.csv" in str(err.value)


def test_bad_phrase_lists_are_refused(tmp_path):
    with pytest.raises(M2DError, match="duplicate phrase id 'wave'"):
        load_dataset(_dataset(tmp_path, GOOD, phrases="id\nwave\nwave\n"))
    with pytest.raises(M2DError, match="style vectors have different lengths"):
        load_dataset(_dataset(tmp_path, GOOD,
                              phrases="id,style_vector\nwave,1 0\nspin,1\njump,0 1\n"))
    with pytest.raises(M2DError, match="exactly one of 'library'"):
        load_dataset(_dataset(tmp_path, GOOD, library="lib"))


def test_empty_classes_are_refused_unless_allowed():
    data = make_dataset(SyntheticSpec(train_songs=1, test_songs=1, unlabelled_songs=1))
    rows = data.indices(TRAIN)
    with pytest.raises(M2DError, match="have no labelled training example: 's"):
        check_classes(data, rows, allow_empty=False, where="data")
    check_classes(data, rows, allow_empty=True, where="data")
    with pytest.raises(M2DError, match="split 'train' is empty"):
        check_classes(data, rows[:0], allow_empty=True, where="data")


def test_prepared_folder_round_trips_and_keeps_adjacency(tmp_path):
    data = make_dataset(SyntheticSpec(train_songs=2, test_songs=1, unlabelled_songs=2))
    write_prepared_from(tmp_path / "prep", data)
    back = load_prepared(tmp_path / "prep")
    assert isinstance(back, PhraseData) and len(back) == len(data)
    np.testing.assert_array_equal(np.asarray(back.mel), data.mel)
    np.testing.assert_array_equal(back.label, data.label)
    assert back.space.ids == data.space.ids and back.space.hash == data.space.hash
    assert list(back.prev[:3]) == [-1, 0, 1]
    assert back.indices(UNLABELLED).size == 16 and back.indices(TEST).size == 8


def test_an_interrupted_prepared_write_keeps_the_previous_version(tmp_path):
    data = make_dataset(SyntheticSpec(train_songs=1, test_songs=1, unlabelled_songs=1))
    out = tmp_path / "prep"
    write_prepared_from(out, data)
    before = (out / "prepared.json").read_text()
    w = PreparedWriter(out, len(data))
    w.add(data.mel[:3], data.melody[:3], data.rhythm[:3])
    w.abort()                                  # e.g. killed / failed mid-way
    assert (out / "prepared.json").read_text() == before
    assert len(load_prepared(out)) == len(data)
    assert len(list(out.glob("arrays-*"))) == 1


def test_prepared_data_with_missing_arrays_is_refused(tmp_path):
    data = make_dataset(SyntheticSpec(train_songs=1, test_songs=1, unlabelled_songs=1))
    out = write_prepared_from(tmp_path / "prep", data)
    next(out.glob("arrays-*/mel.npy")).unlink()
    with pytest.raises(M2DError, match="incomplete"):
        load_prepared(out)
