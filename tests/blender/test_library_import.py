"""Importing mocap takes with Blender and building libraries from them (bpy)."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from blender_m2d import blender_io  # noqa: E402
from blender_m2d.cli import main as cli_main  # noqa: E402
from blender_m2d.core.bonemap import split_ref  # noqa: E402
from blender_m2d.core.errors import M2DError  # noqa: E402
from blender_m2d.core.library import load_library  # noqa: E402
from blender_m2d.core.retargeting import leg_length  # noqa: E402
from blender_m2d.core.skeleton import CANON_JOINTS, JOINT_INDEX  # noqa: E402
from blender_m2d.library_build import build_library  # noqa: E402

FEET = [JOINT_INDEX[n] for n in ("LeftFoot", "RightFoot", "LeftToes", "RightToes")]


@pytest.fixture(autouse=True)
def empty_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield


@pytest.fixture
def bvh(fixtures_dir) -> Path:
    return fixtures_dir / "bvh"


def _import_raw(path: Path):
    bpy.ops.import_anim.bvh(filepath=str(path), global_scale=1.0, rotate_mode="NATIVE",
                            use_fps_scale=False, update_scene_fps=False,
                            update_scene_duration=False)
    return bpy.context.view_layer.objects.active


def _evaluated_points(ob, bone_map, frames):
    """World positions of the canonical joints as Blender's depsgraph shows them."""
    out = np.zeros((len(frames), len(CANON_JOINTS), 3))
    sc = bpy.context.scene
    for k, f in enumerate(frames):
        sc.frame_set(math.floor(f), subframe=float(f - math.floor(f)))
        ev = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
        for j, joint in enumerate(CANON_JOINTS):
            bone, tail = split_ref(bone_map[joint])
            pb = ev.pose.bones[bone]
            out[k, j] = np.array(ev.matrix_world @ (pb.tail if tail else pb.head))
    return out


@pytest.mark.parametrize("name", ["salsa_60_01_f600_4s.bvh", "modern_005_02_f100_4s.bvh"])
def test_fcurve_sampler_matches_the_depsgraph(bvh, name):
    ob = _import_raw(bvh / name)
    from blender_m2d.core.bonemap import bone_map_for

    mapping, _ = bone_map_for([b.name for b in ob.data.bones], None)
    frames = 1 + np.arange(0, 120) * 2.0 + 0.37          # subframes too
    bones = sorted({split_ref(r)[0] for r in mapping.values()})
    fast = blender_io.sample_fcurves(ob, bones, frames)
    slow = blender_io.sample_depsgraph(ob, bones, frames)
    for b in bones:
        np.testing.assert_allclose(fast[b], slow[b], atol=2e-4 * max(1.0, ob.dimensions.z))
    pos_f, rot_f, used = blender_io.canonical_arrays(ob, mapping, frames)
    pos_d, rot_d, used_d = blender_io.canonical_arrays(ob, mapping, frames, method="depsgraph")
    assert (used, used_d) == ("fcurves", "depsgraph")
    np.testing.assert_allclose(pos_f, pos_d, atol=1e-3 * max(1.0, ob.dimensions.z))
    np.testing.assert_allclose(rot_f, rot_d, atol=1e-4)


@pytest.mark.parametrize("name", ["salsa_60_01_f600_4s.bvh", "modern_005_02_f100_4s.bvh"])
def test_library_motion_is_what_blender_shows_after_import(bvh, name):
    take = blender_io.import_take(bvh / name, fps=30.0)
    assert not [o for o in bpy.data.objects] and not list(bpy.data.actions)   # cleaned up
    ob = _import_raw(bvh / name)
    frames = 1 + np.arange(take.positions.shape[0]) * (take.src_fps / take.fps)
    shown = take.normalize_points(_evaluated_points(ob, take.bone_map, frames))
    np.testing.assert_allclose(take.positions, shown, atol=1e-4)


def test_cmu_modern_take_is_lifted_by_its_root_offset_and_read_in_centimetres(bvh):
    take = blender_io.import_take(bvh / "modern_005_02_f100_4s.bvh")
    assert take.rig == "cc_base" and take.units == "cm" and take.root_offset_fix
    hips = take.positions[:, 0, 2]
    assert 0.8 < np.median(hips) < 1.1                    # an adult's hips, not 1 m too low
    feet = take.positions[:, FEET, 2].min(axis=1)
    assert abs(np.percentile(feet, 1)) < 1e-6 and feet.min() > -0.05
    assert 0.8 < leg_length(take.positions) < 1.1
    # the take starts at the origin facing -Y (left side towards +X)
    left = take.positions[0, JOINT_INDEX["LeftUpperLeg"]] - take.positions[0,
                                                                          JOINT_INDEX["RightUpperLeg"]]
    assert left[0] > 0 and abs(left[1]) < 0.5 * left[0]
    np.testing.assert_allclose(take.positions[0, 0, :2], 0.0, atol=1e-9)
    assert any("estimated from the motion" in n for n in take.notes)   # its legs' rest pose


def test_salsa_take_in_cgspeed_units_is_normalised_by_leg_length(bvh):
    take = blender_io.import_take(bvh / "salsa_61_01_f600_4s.bvh")
    assert take.rig == "cmu_cgspeed" and not take.root_offset_fix
    assert take.units == "normalised by leg length"
    assert leg_length(take.positions) == pytest.approx(0.86, rel=1e-6)
    assert take.positions.shape == (120, len(CANON_JOINTS), 3)          # 4 s at 30 fps
    q = take.rotations
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-9)
    assert np.all(np.sum(q[1:] * q[:-1], axis=-1) > 0)                  # sign-continuous


def _export_fbx(path: Path, *, kind: str, source: Path | None = None) -> Path:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    sc = bpy.context.scene
    if kind == "mesh":
        bpy.ops.mesh.primitive_cube_add()
        bpy.ops.export_scene.fbx(filepath=str(path), use_selection=True)
    elif kind == "still":
        _import_raw(source)
        ob = bpy.context.view_layer.objects.active
        ob.animation_data_clear()
        bpy.ops.export_scene.fbx(filepath=str(path), use_selection=True,
                                 object_types={"ARMATURE"}, bake_anim=False,
                                 add_leaf_bones=False)
    else:
        sc.render.fps = 60
        ob = _import_raw(source)
        sc.frame_start, sc.frame_end = 1, int(ob.animation_data.action.frame_range[1])
        bpy.ops.export_scene.fbx(filepath=str(path), use_selection=True,
                                 object_types={"ARMATURE"}, bake_anim=True,
                                 bake_anim_use_nla_strips=False,
                                 bake_anim_use_all_actions=False, add_leaf_bones=True,
                                 bake_anim_simplify_factor=0.0)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return path


def test_fbx_take_imports_like_its_bvh(tmp_path, bvh):
    fbx = _export_fbx(tmp_path / "salsa.fbx", kind="anim", source=bvh / "salsa_61_01_f600_4s.bvh")
    a = blender_io.import_take(bvh / "salsa_61_01_f600_4s.bvh")
    b = blender_io.import_take(fbx)
    assert b.fmt == "fbx" and b.src_fps == 60 and b.rig == "cmu_cgspeed"
    assert bpy.context.scene.render.fps == 24                      # the importer's change undone
    n = min(a.positions.shape[0], b.positions.shape[0])
    assert abs(a.positions.shape[0] - b.positions.shape[0]) <= 1
    assert b.bone_map["LeftToes"] == "lFoot_end"        # the exporter's leaf bone = end site
    np.testing.assert_allclose(a.positions[:n], b.positions[:n], atol=2e-3)


def _build(tmp_path, sources, **kw):
    return build_library([str(s) for s in sources], tmp_path / "lib", **kw)


def test_build_lists_every_bad_input_and_keeps_the_good_ones(tmp_path, bvh):
    src = tmp_path / "takes"
    src.mkdir()
    for name in ("modern_005_02_f100_4s.bvh", "salsa_61_01_f600_4s.bvh",
                 "salsa_60_01_f600_4s.bvh", "truncated_salsa_60_01.bvh"):
        shutil.copy(bvh / name, src / name)
    _export_fbx(src / "cube.fbx", kind="mesh")
    _export_fbx(src / "still.fbx", kind="still", source=bvh / "salsa_61_01_f600_4s.bvh")
    odd = (bvh / "salsa_61_01_f600_4s.bvh").read_text().replace("abdomen", "belly")
    (src / "odd_rig.bvh").write_text(odd)
    (src / "notes.txt").write_text("not a take")
    report = _build(tmp_path, [src, src / "notes.txt"], min_beats=5, style="test")
    lib = report.library
    assert {p.take for p in lib.phrases} == {"modern_005_02_f100_4s", "salsa_61_01_f600_4s"}
    reasons = {Path(s["source"]).name: s["reason"] for s in report.skipped}
    assert "truncated" in reasons["truncated_salsa_60_01.bvh"]
    assert "no armature" in reasons["cube.fbx"]
    assert "no animation" in reasons["still.fbx"]
    assert "shorter than 5 dance beats" in reasons["salsa_60_01_f600_4s.bvh"]
    assert "cannot recognise" in reasons["odd_rig.bvh"] and "abdomen" in reasons["odd_rig.bvh"]
    assert "unsupported" in reasons["notes.txt"]
    assert len(lib.skipped) == len(report.skipped)
    text = "\n".join(report.lines())
    assert "skipped 6 input(s)" in text and "truncated" in text
    assert not list(bpy.data.objects)                  # every import was removed again


def test_phrases_have_at_least_six_beats_by_default(tmp_path, bvh):
    report = _build(tmp_path, [bvh / "modern_005_02_f100_4s.bvh",
                               bvh / "salsa_61_01_f600_4s.bvh"])
    assert all(p.n_beats >= 6 for p in report.library.phrases)
    assert [p.take for p in report.library.phrases] == ["modern_005_02_f100_4s"]
    assert "shorter than 6 dance beats" in report.skipped[0]["reason"]
    with pytest.raises(M2DError, match="no usable dance phrase") as err:
        _build(tmp_path, [bvh / "salsa_61_01_f600_4s.bvh"])
    assert "6 beat marks (5 intervals)" in str(err.value)


def test_bone_map_naming_missing_bones_fails_before_any_import(tmp_path, bvh):
    bad = {j: j for j in CANON_JOINTS}
    bad_path = tmp_path / "map.json"
    bad_path.write_text(json.dumps(bad))
    with pytest.raises(M2DError) as err:
        _build(tmp_path, [bvh / "salsa_61_01_f600_4s.bvh", bvh / "modern_005_02_f100_4s.bvh"],
               rig=str(bad_path))
    msg = str(err.value)
    assert "nothing was imported" in msg
    for joint in CANON_JOINTS:                      # every missing bone is named
        assert f"'{joint}'" in msg
    assert "salsa_61_01_f600_4s.bvh" in msg and "modern_005_02_f100_4s.bvh" in msg
    assert not list(bpy.data.actions)
    with pytest.raises(M2DError, match="LeftHand -> 'CC_Base_L_Hand'"):
        _build(tmp_path, [bvh / "salsa_61_01_f600_4s.bvh"], rig="cc_base")


def test_unwritable_or_foreign_output_folders_fail_before_importing(tmp_path, bvh):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(M2DError, match="parent folder does not exist"):
        build_library([bvh / "salsa_61_01_f600_4s.bvh"], blocker / "lib")
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("precious")
    with pytest.raises(M2DError, match="not a dance library"):
        build_library([bvh / "salsa_61_01_f600_4s.bvh"], foreign)
    assert (foreign / "thesis.txt").read_text() == "precious"
    assert not list(bpy.data.objects) and not list(bpy.data.actions)   # nothing was imported
    with pytest.raises(M2DError, match="no such file"):
        build_library([tmp_path / "missing.bvh"], tmp_path / "lib")


def test_failed_rebuild_leaves_the_existing_library_intact(tmp_path, bvh):
    good = _build(tmp_path, [bvh / "modern_005_02_f100_4s.bvh"], min_beats=4)
    before = good.library.hash
    with pytest.raises(M2DError):
        _build(tmp_path, [bvh / "truncated_salsa_60_01.bvh"], min_beats=4)
    assert load_library(tmp_path / "lib").hash == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib"]


def test_cli_build_and_info(tmp_path, bvh, capsys):
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"modern_*": {"style": "modern", "tags": ["cmu"]}}))
    rc = cli_main(["library", "build", str(bvh / "modern_005_02_f100_4s.bvh"),
                   str(bvh / "truncated_salsa_60_01.bvh"), "--out", str(tmp_path / "L"),
                   "--min-beats", "4", "--meta", str(meta), "--rig", "cc_base"])
    out = capsys.readouterr().out
    assert rc == 0 and "1 phrases" in out and "truncated" in out
    rc = cli_main(["library", "info", str(tmp_path / "L"), "--verify", "--phrases"])
    out = capsys.readouterr().out
    assert rc == 0 and "K = 1" in out and "modern 1" in out and "motion verified" in out
    rc = cli_main(["library", "info", str(tmp_path / "L"), "--json"])
    assert json.loads(capsys.readouterr().out)["phrases"] == 1
    rc = cli_main(["library", "info", str(tmp_path / "nope")])
    assert rc == 2 and "no such dance library" in capsys.readouterr().err
    lib = load_library(tmp_path / "L")
    assert lib.phrases[0].tags == ("cmu",) and lib.meta["build"]["rig"] == "cc_base"


@pytest.mark.slow
def test_every_shipped_take_imports(shared_data):
    """Every BVH in ../shared/data/mocap imports into a plausible, grounded body."""
    files = sorted((shared_data / "mocap").rglob("*.bvh"))
    assert len(files) == 44
    for f in files:
        take = blender_io.import_take(f)
        p = take.positions
        assert np.all(np.isfinite(p)) and np.all(np.isfinite(take.rotations)), f.name
        assert 0.75 < leg_length(p) < 1.1, f.name
        assert 0.55 < np.median(p[:, 0, 2]) < 1.15, f.name
        feet = p[:, FEET, 2].min(axis=1)
        assert abs(np.percentile(feet, 1)) < 1e-6 and feet.min() > -0.1, f.name
        assert take.rig == ("cc_base" if f.name.startswith("005") else "cmu_cgspeed")
        assert p.shape[0] == math.floor(take.duration_s * 30 + 1e-6) + 1
    assert not list(bpy.data.objects)


@pytest.mark.slow
def test_building_the_shared_mocap_runs_at_least_20x_real_time(tmp_path, shared_data):
    t0 = time.perf_counter()
    report = build_library([shared_data / "mocap"], tmp_path / "lib")
    wall = time.perf_counter() - t0
    ratio = report.mocap_s / wall
    assert report.mocap_s > 900 and len(report.library) > 100
    assert ratio >= 20, f"{ratio:.1f}x real time"
