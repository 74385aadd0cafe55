"""``prepare`` on the documented dataset format with real audio, through blender_m2d.core."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from blender_m2d.core.errors import M2DError
from training import prepare as prep
from training.config import PrepareConfig
from training.data import TEST, TRAIN, UNLABELLED, load_prepared

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "fixtures" / "audio"


def _click_song(path: Path, seconds: float = 12.0, bpm: float = 120.0) -> None:
    sr = 22050
    t = np.arange(int(seconds * sr)) / sr
    y = 0.2 * np.sin(2 * np.pi * 330 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.25 * t))
    for beat in np.arange(0, seconds, 60 / bpm):
        i = int(beat * sr)
        y[i:i + 400] += np.hanning(800)[400:] * 0.8
    sf.write(path, y.astype(np.float32), sr)


@pytest.fixture()
def dataset(tmp_path) -> Path:
    songs = tmp_path / "songs"
    songs.mkdir()
    shutil.copy(FIXTURES / "music_10s.ogg", songs / "rock.ogg")
    shutil.copy(FIXTURES / "music_5s.wav", songs / "brahms.wav")
    (tmp_path / "unl").mkdir()
    _click_song(tmp_path / "unl" / "clicks.wav")
    shutil.copy(FIXTURES / "music_10s.ogg", tmp_path / "unl" / "copy_of_rock.ogg")
    (tmp_path / "phrases.csv").write_text("id,style\nstep,a\nspin,a\nhop,b\n")
    (tmp_path / "labels.csv").write_text(
        "song,start_s,end_s,phrase_id,split\n"
        "rock.ogg,0,4,step,train\nrock.ogg,4,8.5,spin,train\nbrahms.wav,0,5,hop,test\n")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "format": "m2d-dataset", "format_version": 1, "phrases": "phrases.csv",
        "labels": "labels.csv", "songs_dir": "songs", "unlabelled_dir": "unl"}))
    return tmp_path / "dataset.json"


def test_prepare_computes_features_in_parallel_then_resumes_from_its_cache(
        dataset, tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    res = prep.prepare(PrepareConfig(dataset=str(dataset), out=str(out), workers=2,
                                     progress=False))
    data = load_prepared(out)
    assert data.mel.shape[1:] == (128, 128) and data.mel.dtype == np.float16
    assert float(np.min(data.mel)) >= 0.0 and float(np.max(data.mel)) <= 1.0
    assert set(np.unique(np.asarray(data.rhythm))) <= {0, 1}
    assert data.indices(TRAIN).size == 2 and data.indices(TEST).size == 1
    assert list(data.label[:3]) == [2, 0, 1]      # songs sorted: brahms.wav, rock.ogg
    assert data.indices(UNLABELLED).size >= 1          # the click song, analysed into phrases
    assert res["skipped_songs"] == 0
    assert data.summary["unlabelled_duplicates_dropped"] == 1   # copy of a labelled song
    assert data.prev[data.indices(TRAIN)[1]] == data.indices(TRAIN)[0]
    assert len(list((out / "cache").glob("*.npz"))) == 4

    calls = []
    monkeypatch.setattr(prep, "featurise_song", lambda t: calls.append(t))
    prep.prepare(PrepareConfig(dataset=str(dataset), out=str(out), workers=1,
                               progress=False))
    assert calls == []                                  # everything came from the cache
    again = load_prepared(out)
    np.testing.assert_array_equal(np.asarray(again.mel), np.asarray(data.mel))


def test_labelled_interval_past_the_song_end_names_the_line(dataset, tmp_path):
    labels = dataset.parent / "labels.csv"
    labels.write_text("song,start_s,end_s,phrase_id\nbrahms.wav,0,3,hop\nbrahms.wav,3,9,hop\n")
    with pytest.raises(M2DError, match=r"labels\.csv line 3: 3\.00-9\.00 s is past the end"):
        prep.prepare(PrepareConfig(dataset=str(dataset), out=str(tmp_path / "p"), workers=1,
                                   unlabelled=False, progress=False))
    assert not (tmp_path / "p" / "prepared.json").exists()


def test_missing_songs_fail_before_any_work(dataset, tmp_path):
    (dataset.parent / "songs" / "rock.ogg").unlink()
    with pytest.raises(M2DError, match=r"line 2: song 'rock\.ogg' not found"):
        prep.prepare(PrepareConfig(dataset=str(dataset), out=str(tmp_path / "p"),
                                   progress=False))
    assert not (tmp_path / "p").exists()
