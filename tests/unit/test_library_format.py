"""The dance library format: write, load, hash, bad input, scale (bpy-free)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blender_m2d.core import library as L
from blender_m2d.core.errors import M2DError
from blender_m2d.core.library import (
    PhraseMotion,
    load_library,
    synthetic_records,
    write_library,
    write_synthetic_library,
)
from blender_m2d.core.phrasing import FEATURE_NAMES
from blender_m2d.core.skeleton import CANON_JOINTS


@pytest.fixture
def small_lib(tmp_path: Path) -> Path:
    return write_synthetic_library(tmp_path / "lib", 6, n_frames=12)


def _doc(lib: Path) -> dict:
    return json.loads((lib / "library.json").read_text())


def _rewrite(lib: Path, doc: dict) -> None:
    (lib / "library.json").write_text(json.dumps(doc))


def test_written_library_loads_back_with_the_same_phrases_and_motion(tmp_path):
    recs = synthetic_records(5, n_frames=20, seed=3)
    out = write_library(tmp_path / "lib", recs, fps=30.0, feature_names=FEATURE_NAMES)
    lib = load_library(out)
    assert lib.ids == tuple(r.phrase.id for r in recs)
    assert len(lib) == 5 and lib.fps == 30.0
    for i, r in enumerate(recs):
        p = lib.phrases[i]
        assert lib.index_of(p.id) == i
        assert (p.source, p.take, p.style, p.tags) == (r.phrase.source, r.phrase.take,
                                                      r.phrase.style, r.phrase.tags)
        np.testing.assert_allclose(p.beats_s, r.phrase.beats_s, atol=1e-4)
        np.testing.assert_allclose(p.features, r.phrase.features, rtol=1e-5, atol=1e-9)
        m = lib.motion(p.id)
        assert m.positions.dtype == np.float32 and m.rotations.dtype == np.float32
        assert m.positions.shape == (20, len(CANON_JOINTS), 3)
        # float16 joints relative to a float32 root: sub-millimetre
        assert np.abs(m.positions - r.motion.positions).max() < 1e-3
        np.testing.assert_allclose(np.linalg.norm(m.rotations, axis=-1), 1.0, atol=1e-6)
    assert lib.motion(2).n_frames == lib.motion(lib.ids[2]).n_frames


def test_hash_is_stable_and_changes_with_the_motion(tmp_path):
    recs = synthetic_records(4, n_frames=10, seed=1)
    a = load_library(write_library(tmp_path / "a", recs, fps=30.0, feature_names=FEATURE_NAMES,
                                   name="x"))
    b = load_library(write_library(tmp_path / "b", recs, fps=30.0, feature_names=FEATURE_NAMES,
                                   name="x"))
    assert a.hash == load_library(tmp_path / "a").hash
    assert a.hash == b.hash                      # same content, other folder
    recs[1].motion.positions[3, 5, 0] += 0.05
    c = load_library(write_library(tmp_path / "c", recs, fps=30.0, feature_names=FEATURE_NAMES,
                                   name="x"))
    assert c.hash != b.hash


def test_verify_detects_a_corrupted_motion_file(small_lib):
    lib = load_library(small_lib)
    lib.verify()
    raw = bytearray((small_lib / "motion/joints.npy").read_bytes())
    raw[-3] ^= 0xFF
    (small_lib / "motion/joints.npy").write_bytes(bytes(raw))
    with pytest.raises(M2DError, match="corrupt"):
        load_library(small_lib).verify()


def test_library_json_path_or_folder_both_open(small_lib):
    assert load_library(small_lib / "library.json").ids == load_library(small_lib).ids


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(format_version=99), "newer"),
    (lambda d: d.update(format="m2d-plan"), "not a m2d-library"),
    (lambda d: d.update(fps="thirty"), "fps"),
    (lambda d: d["skeleton"]["joints"].reverse(), "skeleton"),
    (lambda d: d["phrases"][1].update(id=d["phrases"][0]["id"]), "duplicate"),
    (lambda d: d["phrases"][0].update(n_frames=3), "motion_offset|cover"),
    (lambda d: d["phrases"][2].update(beats_s=["x"]), "beats_s"),
    (lambda d: d["phrases"][2].update(features=[1.0]), "features"),
    (lambda d: d["phrases"][0].update(tempo_bpm=-5), "tempo_bpm"),
    (lambda d: d["phrases"][0].update(frame_end=-1), "frame_end"),
    (lambda d: d["motion"]["files"]["root"].update(path="../../etc/passwd"), "escapes"),
    (lambda d: d["motion"]["files"]["root"].update(path="/etc/passwd"), "invalid relative"),
    (lambda d: d["motion"]["files"]["joints"].update(shape=[1, 2, 3]), "shape"),
    (lambda d: d.update(phrases="none"), "must be a list"),
    (lambda d: d["motion"].update(frames=1), "frames"),
])
def test_malformed_library_json_raises_a_clear_error(small_lib, mutate, match):
    doc = _doc(small_lib)
    mutate(doc)
    _rewrite(small_lib, doc)
    with pytest.raises(M2DError, match=match) as err:
        load_library(small_lib)
    assert "library" in str(err.value) or str(small_lib) in str(err.value)


def test_missing_or_non_library_folders_raise(tmp_path, small_lib):
    with pytest.raises(M2DError, match="no such"):
        load_library(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(M2DError, match="not a dance library"):
        load_library(tmp_path / "empty")
    (small_lib / "library.json").write_text("{ not json")
    with pytest.raises(M2DError, match="not a valid"):
        load_library(small_lib)


def test_missing_motion_file_raises(small_lib):
    os.remove(small_lib / "motion" / "rotations.npy")
    with pytest.raises(M2DError, match="missing"):
        load_library(small_lib)


def test_pickled_motion_arrays_are_refused(small_lib):
    obj = np.empty(3, dtype=object)
    np.save(small_lib / "motion" / "root.npy", obj, allow_pickle=True)
    with pytest.raises(M2DError):
        load_library(small_lib)


def test_unknown_phrase_id_raises(small_lib):
    lib = load_library(small_lib)
    with pytest.raises(M2DError, match="no phrase"):
        lib.index_of("nope")
    with pytest.raises(M2DError, match="out of range"):
        lib.motion(99)


def test_failed_write_leaves_the_existing_library_untouched(small_lib, monkeypatch):
    before = load_library(small_lib).hash
    calls = {"n": 0}
    real_save = np.save

    def failing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(L.np, "save", failing_save)
    with pytest.raises(M2DError, match="nothing was changed"):
        write_library(small_lib, synthetic_records(3, n_frames=5), fps=30.0,
                      feature_names=FEATURE_NAMES)
    monkeypatch.undo()
    assert load_library(small_lib).hash == before
    leftovers = [p.name for p in small_lib.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_unwritable_output_folder_raises_m2d_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(M2DError):
        write_library(blocker / "lib", synthetic_records(2, n_frames=4), fps=30.0,
                      feature_names=FEATURE_NAMES)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_library_json_loads_or_raises_m2d_error(tmp_path_factory, data):
    """Random edits to values anywhere in library.json never give another exception type."""
    src = write_synthetic_library(tmp_path_factory.mktemp("fz") / "lib", 3, n_frames=6)
    doc = _doc(src)
    junk = st.one_of(st.none(), st.booleans(), st.integers(-3, 10 ** 6),
                     st.floats(allow_nan=False), st.text(max_size=5),
                     st.lists(st.integers(-2, 5), max_size=4), st.dictionaries(
                         st.text(max_size=3), st.integers(), max_size=2))
    for _ in range(data.draw(st.integers(1, 3))):
        node, path = doc, []
        while isinstance(node, (dict, list)) and node and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(sorted(node) if isinstance(node, dict)
                                            else list(range(len(node)))))
            path.append(key)
            if not isinstance(node[key], (dict, list)):
                break
            node = node[key]
        if not path:
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        parent[path[-1]] = data.draw(junk)
    _rewrite(src, doc)
    try:
        lib = load_library(src)
    except M2DError:
        return
    for pid in lib.ids:
        lib.motion(pid)


def test_ten_thousand_phrase_library_loads(tmp_path):
    """Loads and indexes 10,000 phrases; the < 1 s goal is timed in benchmarks/bench_library.py."""
    out = write_synthetic_library(tmp_path / "big", 10_000, n_frames=4)
    lib = load_library(out)
    assert len(lib) == 10_000
    assert lib.index_of(lib.ids[-1]) == 9_999
    assert lib.motion(lib.ids[-1]).n_frames == 4
    shutil.rmtree(out)


def test_transformed_motion_moves_points_and_rotations_together():
    rec = synthetic_records(1, n_frames=5)[0]
    m = rec.motion
    t = m.transformed(np.pi / 2, (1.0, 2.0, 0.0))
    p = m.positions[2, 6]
    np.testing.assert_allclose(t.positions[2, 6], (-p[1] + 1.0, p[0] + 2.0, p[2]), atol=1e-5)
    assert abs(t.facing_yaw(0) - (m.facing_yaw(0) + np.pi / 2)) < 1e-5
    n = t.normalized()
    assert abs(n.facing_yaw(0)) < 1e-5
    np.testing.assert_allclose(n.positions[0, 0, :2], 0.0, atol=1e-5)
    assert isinstance(n, PhraseMotion)
