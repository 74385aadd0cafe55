"""Outputs that cannot be written: a read-only folder (also as root, see hazards.unprivileged), an
existing file or folder, a genuinely full file system (a 512 KB tmpfs, ENOSPC from the kernel).
Every writer refuses with a message naming the output, keeps what was there byte for byte and
leaves no temporary file behind; an existing output is replaced only by a complete new one."""

from __future__ import annotations

import json
import shutil

import pytest
from hazards import FIXTURES, fill, full_disk, unprivileged, world_dir
from snapshot import file_tree, leftovers

from blender_m2d.core.fileio import write_json_atomic
from blender_m2d.core.library import load_library, synthetic_records, write_library
from blender_m2d.core.phrasing import FEATURE_NAMES

SONG = FIXTURES / "audio" / "music_10s.ogg"


@pytest.fixture(scope="module")
def plan(bundled_library):
    from blender_m2d.core.choreography import choreograph

    return choreograph(SONG, bundled_library).plan


def _as_nobody(fn):
    def run():
        with unprivileged():
            return fn()
    return run


def _records(n=6):
    return synthetic_records(n, n_frames=10)


# ----------------------------------------------------------------------- read-only folder

def test_plan_into_a_read_only_folder(plan, refused):
    with world_dir() as d:
        d.chmod(0o555)
        refused(_as_nobody(lambda: plan.save(d / "PLAN.json")), r"PLAN\.json: cannot write here "
                r"\(Permission denied\)$", d)


def test_library_into_a_read_only_folder(refused):
    with world_dir() as d:
        d.chmod(0o555)
        refused(_as_nobody(lambda: write_library(d / "lib", _records(), fps=30,
                                                 feature_names=FEATURE_NAMES)),
                r"lib: cannot write here \(Permission denied\)$", d)


def test_existing_library_in_a_read_only_folder_is_kept(refused):
    with world_dir() as d:
        write_library(d / "lib", _records(4), fps=30, feature_names=FEATURE_NAMES)
        d.chmod(0o555)
        refused(_as_nobody(lambda: write_library(d / "lib", _records(6), fps=30,
                                                 feature_names=FEATURE_NAMES)),
                r"lib: cannot write here \(Permission denied\)$", d)
        assert len(load_library(d / "lib")) == 4


# ----------------------------------------------------------------------- existing outputs

def test_existing_plan_is_replaced_whole(plan, tmp_path, note):
    out = tmp_path / "PLAN.json"
    out.write_text('{"old": true}')
    plan.save(out)
    assert json.loads(out.read_text())["format"] == "m2d.plan"
    assert leftovers(tmp_path) == ["PLAN.json"]
    note("no error: replaced atomically (temporary sibling + rename)")


def test_library_over_a_folder_of_other_files_is_refused(tmp_path, refused):
    pytest.importorskip("bpy")
    from blender_m2d.library_build import build_library

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.txt").write_text("precious")
    refused(lambda: build_library([FIXTURES / "bvh" / "modern_005_02_f100_4s.bvh"], docs),
            r"docs: exists and is not a dance library; refusing to replace it \(choose an empty "
            r"or new folder\)$", tmp_path)


def test_library_over_an_existing_file_is_refused(tmp_path, refused):
    (tmp_path / "lib").write_text("a file")
    refused(lambda: write_library(tmp_path / "lib", _records(), fps=30,
                                  feature_names=FEATURE_NAMES),
            r"lib: exists and is not a folder$", tmp_path)


# ----------------------------------------------------------------------- full disk

def test_plan_on_a_full_disk_keeps_the_old_plan(plan, tmp_path, refused):
    with full_disk(tmp_path) as disk:
        write_json_atomic(disk / "PLAN.json", {"format": "m2d.plan", "old": True})
        fill(disk)
        refused(lambda: plan.save(disk / "PLAN.json"), r"PLAN\.json: cannot write the file "
                r"\(No space left on device\)$", disk)
        assert leftovers(disk) == ["PLAN.json", "filler"]


def test_library_on_a_full_disk_keeps_the_old_library(tmp_path, refused):
    with full_disk(tmp_path, size_kb=1024) as disk:
        write_library(disk / "lib", _records(4), fps=30, feature_names=FEATURE_NAMES)
        fill(disk)
        refused(lambda: write_library(disk / "lib", _records(40), fps=30,
                                      feature_names=FEATURE_NAMES),
                r"lib: (cannot write the library \(No space left on device\); nothing was "
                r"changed|cannot write here \(No space left on device\))$", disk)
        assert leftovers(disk) == ["filler", "lib"]
        assert len(load_library(disk / "lib")) == 4
        (disk / "filler").unlink()                      # space again: the next run works
        write_library(disk / "lib", _records(40), fps=30, feature_names=FEATURE_NAMES)
        assert len(load_library(disk / "lib")) == 40


def test_song_analysis_on_a_full_disk(tmp_path, refused):
    from blender_m2d.core.analysis import analyze_song

    result = analyze_song(SONG)
    with full_disk(tmp_path) as disk:
        fill(disk)
        refused(lambda: result.save(disk / "song.json"), r"song\.json: cannot (write the file|"
                r"write here) \(No space left on device\)$", disk)
        assert leftovers(disk) == ["filler"]


def test_full_disk_simulated_at_our_writer_boundary(plan, tmp_path, refused, monkeypatch):
    """Where no tmpfs can be mounted: fsync of our writer fails like a full disk would."""
    import errno
    import os

    out = tmp_path / "PLAN.json"
    out.write_text("old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    refused(lambda: plan.save(out), r"PLAN\.json: cannot write the file \(No space left on "
            r"device\)$", tmp_path)
    assert leftovers(tmp_path) == ["PLAN.json"]


# ----------------------------------------------------------------------- Blender outputs

@pytest.fixture()
def dancing(plan, bundled_library):
    pytest.importorskip("bpy")
    from scenes import user_scene

    from blender_m2d import nla

    _scene, ob = user_scene()
    nla.apply_plan(ob, plan, bundled_library)
    return ob


@pytest.mark.blender
@pytest.mark.parametrize("kind", ["blend", "fbx", "glb"])
def test_blender_outputs_on_a_full_disk(dancing, tmp_path, refused, kind):
    from snapshot import assert_same, scene_state

    from blender_m2d import export

    write = {"blend": export.save_blend,
             "fbx": lambda p: export.export_fbx(dancing, p),
             "glb": lambda p: export.export_glb(dancing, p)}[kind]
    with full_disk(tmp_path) as disk:
        (disk / f"old.{kind}").write_bytes(b"the previous export")
        fill(disk)
        before = scene_state()
        refused(lambda: write(disk / f"old.{kind}"), rf"old\.{kind}: (cannot save the \.blend "
                rf"file|the (FBX|glTF) exporter failed) \(.*No space left on device\)$", disk)
        assert leftovers(disk) == ["filler", f"old.{kind}"]
        assert_same(before, scene_state(), "the scene")


@pytest.mark.blender
def test_cli_outputs_into_a_read_only_folder_fail_before_any_work(refused):
    import argparse

    from blender_m2d.commands import choreograph as cmd

    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    with world_dir() as d:
        shutil.copy(SONG, d / "song.ogg")
        d.chmod(0o555)
        args = parser.parse_args([str(d / "song.ogg"), "--out", str(d / "dance.blend"),
                                  "--plan", str(d / "PLAN.json")])
        before = file_tree(d)
        refused(_as_nobody(lambda: cmd.run_pipeline(args.song, args=args, out_blend=args.out,
                                                     plan_path=args.plan)),
                r"dance\.blend: cannot write here \(Permission denied\)$", d)
        assert file_tree(d) == before
