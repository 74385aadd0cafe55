"""core.labels: an animator's swaps become rows of the training dataset that training reads."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from blender_m2d.core.errors import M2DError
from blender_m2d.core.labels import LabelRow, rows_from_plan, save_labels
from blender_m2d.core.library import load_library, write_synthetic_library
from blender_m2d.core.plan import Candidate, PlacedPhrase, Plan


def _plan(ids: list[str]) -> Plan:
    phrases = tuple(
        PlacedPhrase(index=i, music_start_s=2.0 * i, music_end_s=2.0 * i + 2.0, phrase_id=pid,
                     candidates=(Candidate(pid, 0.5, 0.4),), frame_start=1 + 60 * i,
                     frame_end=70 + 60 * i)
        for i, pid in enumerate(ids))
    return Plan(song={"path": "x", "duration_s": 2.0 * len(ids)}, library={}, scorer={},
                decoding={}, fps=30.0, frame_start=1, crossfade_frames=9, beats_s=(),
                phrases=phrases)


@pytest.fixture()
def library(tmp_path):
    return write_synthetic_library(tmp_path / "lib", 6)


@pytest.fixture()
def song(tmp_path):
    path = tmp_path / "in" / "my song.wav"
    path.parent.mkdir()
    sf.write(path, np.zeros(2205, np.float32), 22050)
    return path


def test_saved_labels_load_as_a_training_dataset(tmp_path, library, song):
    data = pytest.importorskip("training.data")
    lib = load_library(library)
    plan = _plan([lib.ids[0], lib.ids[3], lib.ids[1]])
    res = save_labels(tmp_path / "ds", song_path=song, library_path=library,
                      library_hash=lib.hash, rows=rows_from_plan(plan, [2, 0]))
    assert res["rows"] == 2 and res["replaced"] == 0
    spec = data.load_dataset(tmp_path / "ds")
    assert [(r.song, r.start_s, r.end_s, r.phrase_id) for r in spec.labels] == [
        ("my song.wav", 0.0, 2.0, lib.ids[0]), ("my song.wav", 4.0, 6.0, lib.ids[1])]
    assert spec.labels[0].label == 0 and spec.labels[1].label == 1
    assert (tmp_path / "ds" / "songs" / "my song.wav").read_bytes() == song.read_bytes()


def test_saving_the_same_song_again_replaces_its_rows(tmp_path, library, song):
    lib = load_library(library)
    kw = dict(song_path=song, library_path=library, library_hash=lib.hash)
    save_labels(tmp_path / "ds", rows=[LabelRow(0.0, 2.0, lib.ids[0])], **kw)
    other = tmp_path / "other.wav"
    sf.write(other, np.ones(2205, np.float32) * 0.1, 22050)
    save_labels(tmp_path / "ds", song_path=other, library_path=library, library_hash=lib.hash,
                rows=[LabelRow(1.0, 3.0, lib.ids[2])])
    res = save_labels(tmp_path / "ds", rows=[LabelRow(0.0, 2.0, lib.ids[4]),
                                             LabelRow(2.0, 4.0, lib.ids[5])], **kw)
    assert res["replaced"] == 1 and res["total"] == 3
    with open(tmp_path / "ds" / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["song"], r["phrase_id"]) for r in rows] == [
        ("other.wav", lib.ids[2]), ("my song.wav", lib.ids[4]), ("my song.wav", lib.ids[5])]
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["format"] == "m2d-dataset"


def test_a_different_song_with_the_same_name_gets_its_own_copy(tmp_path, library, song):
    lib = load_library(library)
    save_labels(tmp_path / "ds", song_path=song, library_path=library, library_hash=lib.hash,
                rows=[LabelRow(0.0, 1.0, lib.ids[0])])
    twin = tmp_path / "elsewhere" / "my song.wav"
    twin.parent.mkdir()
    sf.write(twin, np.ones(2205, np.float32) * 0.2, 22050)
    res = save_labels(tmp_path / "ds", song_path=twin, library_path=library,
                      library_hash=lib.hash, rows=[LabelRow(0.0, 1.0, lib.ids[1])])
    assert res["song"] != "my song.wav" and res["song"].startswith("my song-")


def test_dataset_of_another_library_is_refused_and_left_alone(tmp_path, library, song):
    lib = load_library(library)
    save_labels(tmp_path / "ds", song_path=song, library_path=library, library_hash=lib.hash,
                rows=[LabelRow(0.0, 1.0, lib.ids[0])])
    before = (tmp_path / "ds" / "labels.csv").read_bytes()
    other = write_synthetic_library(tmp_path / "lib2", 4, seed=3)
    with pytest.raises(M2DError, match="another dance library"):
        save_labels(tmp_path / "ds", song_path=song, library_path=other,
                    library_hash=load_library(other).hash, rows=[LabelRow(0.0, 1.0, "x")])
    assert (tmp_path / "ds" / "labels.csv").read_bytes() == before


def test_nothing_to_save_and_overlaps_are_errors(tmp_path, library, song):
    lib = load_library(library)
    kw = dict(song_path=song, library_path=library, library_hash=lib.hash)
    with pytest.raises(M2DError, match="no phrases"):
        save_labels(tmp_path / "ds", rows=[], **kw)
    with pytest.raises(M2DError, match="overlap"):
        save_labels(tmp_path / "ds", rows=[LabelRow(0.0, 2.0, lib.ids[0]),
                                           LabelRow(1.0, 3.0, lib.ids[1])], **kw)
    assert not (tmp_path / "ds").exists()
