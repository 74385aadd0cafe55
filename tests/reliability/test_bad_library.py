"""Damaged, edited, future and huge dance libraries: ``load_library`` refuses each with a message
naming the file and never reads outside the library folder; the library is not modified."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from blender_m2d.core.library import load_library, write_synthetic_library


def _edit(lib_dir, fn):
    path = lib_dir / "library.json"
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))
    return doc


def test_missing_motion_file(synth_library, refused):
    (synth_library / "motion" / "rotations.npy").unlink()
    refused(lambda: load_library(synth_library), r"lib: the library's motion file "
            r"'motion/rotations\.npy' is missing$", synth_library)


def test_missing_library_json(synth_library, refused):
    (synth_library / "library.json").unlink()
    refused(lambda: load_library(synth_library), r"lib: not a dance library \(no library\.json\);"
            r" build one with 'm2d library build'$", synth_library)


def test_missing_folder(tmp_path, refused):
    refused(lambda: load_library(tmp_path / "nolib"), r"nolib: no such dance library folder$",
            tmp_path)


def test_library_json_is_not_json(synth_library, refused):
    (synth_library / "library.json").write_text('{"format": "m2d-library", "format_v')
    refused(lambda: load_library(synth_library), r"library\.json: not a valid m2d-library JSON "
            r"file", synth_library)


def test_version_from_the_future(synth_library, refused):
    _edit(synth_library, lambda d: d.update(format_version=2))
    refused(lambda: load_library(synth_library), r"library\.json: m2d-library format_version 2 "
            r"is newer than this blender_m2d supports \(1\); update the add-on$", synth_library)


def test_another_format(synth_library, refused):
    _edit(synth_library, lambda d: d.update(format="m2d.plan"))
    refused(lambda: load_library(synth_library), r"library\.json: not a m2d-library file "
            r"\(format is 'm2d\.plan'\)$", synth_library)


def test_edited_phrase_length_no_longer_tiles_the_motion(synth_library, refused):
    _edit(synth_library, lambda d: d["phrases"][3].update(n_frames=20))
    refused(lambda: load_library(synth_library), r"invalid dance library: phrase 'syn_000004' "
            r"motion_offset 48 != 56", synth_library)


def test_edited_duplicate_phrase_id(synth_library, refused):
    _edit(synth_library, lambda d: d["phrases"][5].update(id="syn_000001"))
    refused(lambda: load_library(synth_library), r"invalid dance library: duplicate phrase id "
            r"'syn_000001'$", synth_library)


def test_edited_non_finite_beat(synth_library, refused):
    path = synth_library / "library.json"
    text = path.read_text()
    first = json.loads(text)["phrases"][0]["beats_s"][1]
    path.write_text(text.replace(f"{first}", "NaN", 1))
    refused(lambda: load_library(synth_library), r"invalid dance library: .*beats_s must be a "
            r"list of finite numbers", synth_library)


def test_edited_metadata_changes_the_library_hash(synth_library, note):
    """A harmless edit still loads, but as another library (models and plans then refuse it)."""
    before = load_library(synth_library).hash
    _edit(synth_library, lambda d: d.update(name="renamed by hand"))
    after = load_library(synth_library)
    assert after.hash != before and len(after) == 8
    note("no error: loads, with a new hash (models/plans made for the old one are refused)")


def test_motion_array_with_wrong_shape(synth_library, refused):
    np.save(synth_library / "motion" / "root.npy", np.zeros((5, 3), np.float32))
    refused(lambda: load_library(synth_library), r"root\.npy: motion file has dtype float32 "
            r"shape \[5, 3\], library\.json says float32 \[96, 3\]$", synth_library)


def test_truncated_motion_file(synth_library, refused):
    f = synth_library / "motion" / "joints.npy"
    f.write_bytes(f.read_bytes()[:200])
    refused(lambda: load_library(synth_library), r"joints\.npy: cannot read motion file \(.*\); "
            r"rebuild the library$", synth_library)


def test_corrupted_motion_bytes_fail_verification(synth_library, refused):
    f = synth_library / "motion" / "root.npy"
    data = bytearray(f.read_bytes())
    data[-8:] = b"\x00\x00\xc0\x7f" * 2        # two float32 NaNs at the end
    f.write_bytes(bytes(data))
    lib = load_library(synth_library)           # memory-mapped: loads without reading
    refused(lib.verify, r"root\.npy: motion file 'root' is corrupt \(sha256 mismatch\); rebuild "
            r"the library$", synth_library)


@pytest.mark.parametrize("where", ["../outside/root.npy", "motion/../../outside/root.npy"])
def test_motion_path_escaping_the_folder(tmp_path, synth_library, refused, where):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.replace(synth_library / "motion" / "root.npy", outside / "root.npy")
    _edit(synth_library, lambda d: d["motion"]["files"]["root"].update(path=where))
    refused(lambda: load_library(synth_library), rf"lib: path '{where}' escapes the folder$",
            synth_library, outside)


def test_absolute_motion_path(synth_library, refused):
    _edit(synth_library, lambda d: d["motion"]["files"]["root"].update(path="/etc/passwd"))
    refused(lambda: load_library(synth_library), r"lib: invalid relative path '/etc/passwd'$",
            synth_library)


def test_symlinked_motion_file_pointing_outside(tmp_path, synth_library, refused):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.replace(synth_library / "motion" / "root.npy", outside / "root.npy")
    os.symlink(outside / "root.npy", synth_library / "motion" / "root.npy")
    refused(lambda: load_library(synth_library), r"lib: path 'motion/root\.npy' escapes the "
            r"folder$", synth_library, outside)


def test_ten_thousand_phrases_load_fast(tmp_path, note):
    t0 = time.perf_counter()
    write_synthetic_library(tmp_path / "big", 10_000, n_frames=8)
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    lib = load_library(tmp_path / "big")
    t_load = time.perf_counter() - t0
    lib.verify()
    assert len(lib) == 10_000 and lib.ids[-1] == "syn_009999"
    assert lib.index_of("syn_009999") == 9999
    m = lib.motion("syn_009999")
    assert m.positions.shape == (8, 21, 3) and np.isfinite(m.positions).all()
    assert t_load < 5.0, f"loading 10,000 phrases took {t_load:.1f} s"
    note(f"no error: written in {t_write:.1f} s, loaded in {t_load:.2f} s (memory-mapped)")


@pytest.mark.slow
def test_ten_thousand_phrases_choreograph_in_bounded_time_and_memory(tmp_path):
    """K = 10,000 with the baseline scorer, in a child process (its own peak RSS)."""
    import subprocess
    import sys

    from hazards import FIXTURES, REPO

    write_synthetic_library(tmp_path / "big", 10_000, n_frames=8)
    code = (
        "import resource, sys, time\n"
        "from blender_m2d.core.library import load_library\n"
        "from blender_m2d.core.choreography import choreograph\n"
        "lib = load_library(sys.argv[1]); t0 = time.perf_counter()\n"
        "ch = choreograph(sys.argv[2], lib)\n"
        "print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big"),
                        str(FIXTURES / "audio" / "music_10s.ogg")], capture_output=True,
                       text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    seconds, peak_kb = r.stdout.split()[-2:]
    assert float(seconds) < 60 and int(peak_kb) < 4_000_000, r.stdout


def test_nan_motion_with_valid_shape_is_refused_before_anything_is_placed(tmp_path, refused,
                                                                          bundled_library_dir):
    """Bit rot or tampering that keeps the array shape (not caught by the loader, which only
    memory-maps): used to crash apply_plan with numpy's LinAlgError."""
    import shutil

    from hazards import FIXTURES

    from blender_m2d.core.choreography import choreograph

    lib_dir = shutil.copytree(bundled_library_dir, tmp_path / "lib")
    root = np.load(lib_dir / "motion" / "root.npy", mmap_mode="r+")
    root[:] = np.nan
    root.flush()
    del root
    lib = load_library(lib_dir)
    refused(lambda: choreograph(FIXTURES / "audio" / "music_10s.ogg", lib),
            r"lib: the motion of phrase '[^']+' holds NaN or infinite values: the motion files "
            r"are damaged \('m2d library info --verify' checks them\); rebuild the library$",
            lib_dir)
