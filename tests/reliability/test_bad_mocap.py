"""Bad mocap takes through ``build_library`` (what ``m2d library build`` runs): each take is
skipped or refused with a reason naming the file, an existing library at the output folder is
kept byte for byte, and nothing of the open Blender file changes (imports are removed again)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

from hazards import FIXTURES  # noqa: E402
from scenes import fresh_scene, user_scene  # noqa: E402
from snapshot import assert_same, scene_state  # noqa: E402

from blender_m2d.core.library import write_synthetic_library  # noqa: E402
from blender_m2d.library_build import build_library  # noqa: E402

pytestmark = pytest.mark.blender
BVH = FIXTURES / "bvh"
GOOD = BVH / "modern_005_02_f100_4s.bvh"


def _frames_at(lines: list[str]) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith("Frame Time")) + 1


def _edited_bvh(dst: Path, edit) -> Path:
    lines = GOOD.read_text().splitlines()
    dst.write_text("\n".join(edit(lines, _frames_at(lines))) + "\n")
    return dst


@pytest.fixture()
def studio(tmp_path):
    """The user's scene and an existing library at the output folder."""
    scene, _ = user_scene()
    out = write_synthetic_library(tmp_path / "lib", 4)
    return scene, out


def _refused_build(refused, studio, sources, pattern, **kw):
    scene, out = studio
    before = scene_state(scene)
    err = refused(lambda: build_library([str(s) for s in sources], out, **kw), pattern,
                  out.parent)
    assert_same(before, scene_state(scene), "the open Blender file")
    return err


def test_truncated_bvh(studio, refused):
    _refused_build(refused, studio, [BVH / "truncated_salsa_60_01.bvh"],
                   r"^no usable dance phrase in the given takes; skipped: "
                   r"truncated_salsa_60_01\.bvh: truncated BVH: declares 120 frames but holds "
                   r"40 complete frame lines and a partial one$")


def test_bvh_cut_in_its_hierarchy(studio, refused, tmp_path):
    src = tmp_path / "cut.bvh"
    src.write_text(GOOD.read_text()[:3000])
    _refused_build(refused, studio, [src], r"skipped: cut\.bvh: BVH file has no MOTION section "
                   r"\(truncated\?\)$")


def test_bvh_with_zero_frames(studio, refused, tmp_path):
    src = _edited_bvh(tmp_path / "zero.bvh",
                      lambda lines, m: [*lines[:m - 2], "Frames: 0", lines[m - 1]])
    _refused_build(refused, studio, [src], r"skipped: zero\.bvh: BVH holds fewer than 2 frames: "
                   r"no animation$")


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-inf"])
def test_bvh_with_non_finite_channels(studio, refused, tmp_path, bad):
    """Blender's importer turns NaN rotations into zeros (17 cm glitches inside a phrase), so
    the take is refused up front."""

    def edit(lines, m):
        for i in range(m + 49, m + 59):
            parts = lines[i].split()
            parts[5] = bad
            lines[i] = " ".join(parts)
        return lines

    src = _edited_bvh(tmp_path / "glitch.bvh", edit)
    _refused_build(refused, studio, [src], r"skipped: glitch\.bvh: BVH holds NaN or infinite "
                   r"values in 10 of 240 frames \(the first is frame 50\); fix or re-export the "
                   r"take$")


def test_non_finite_take_is_skipped_and_the_good_ones_kept(studio, tmp_path, note):
    scene, out = studio

    def edit(lines, m):
        parts = lines[m + 100].split()
        parts[7] = "nan"
        lines[m + 100] = " ".join(parts)
        return lines

    src = tmp_path / "takes"
    src.mkdir()
    shutil.copy(GOOD, src / "good.bvh")
    _edited_bvh(src / "glitch.bvh", edit)
    before = scene_state(scene)
    report = build_library([src], out, min_beats=4)
    assert {p.take for p in report.library.phrases} == {"good"}
    assert [s["source"] for s in report.skipped] == ["glitch.bvh"]
    assert "NaN or infinite values in 1 of 240 frames" in report.skipped[0]["reason"]
    assert_same(before, scene_state(scene), "the open Blender file")
    note(f"skipped: {report.skipped[0]['reason']}")


def test_not_a_bvh(studio, refused, tmp_path):
    src = tmp_path / "take.bvh"
    src.write_text("Motion capture session notes\n")
    _refused_build(refused, studio, [src], r"skipped: take\.bvh: not a BVH file \(it does not "
                   r"start with HIERARCHY\)$")


def test_unknown_bones_are_skipped_when_auto_detecting(studio, refused, tmp_path):
    text = GOOD.read_text()
    for i, name in enumerate(("CC_Base_Hip", "CC_Base_L_Thigh", "CC_Base_R_Thigh")):
        text = text.replace(name, f"bone_{i:02d}")
    src = tmp_path / "odd.bvh"
    src.write_text(text)
    err = _refused_build(refused, studio, [src], r"skipped: odd\.bvh: cannot recognise")
    assert "bone_00" not in err.reason or "CC_Base_Hip" in err.reason


def test_unknown_bones_with_an_explicit_rig_name_every_missing_bone(studio, refused):
    err = _refused_build(refused, studio, [GOOD], r"^the bone map does not fit these takes "
                         r"\(nothing was imported\):", rig="mixamo")
    for bone in ("'Hips'", "'LeftUpLeg'", "'RightHand'", "'Spine2'"):
        assert bone in err.reason


@pytest.fixture(scope="module")
def cube_fbx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fbx") / "set_dressing.fbx"
    fresh_scene()
    bpy.ops.mesh.primitive_cube_add()
    bpy.ops.export_scene.fbx(filepath=str(path), use_selection=False)
    fresh_scene()
    return path


def test_fbx_without_armature(studio, refused, cube_fbx):
    _refused_build(refused, studio, [cube_fbx], r"skipped: set_dressing\.fbx: FBX file has no "
                   r"armature$")


def test_fbx_that_is_not_an_fbx(studio, refused, tmp_path):
    src = tmp_path / "broken.fbx"
    src.write_bytes(b"Kaydara FBX Binary  \x00\x1a\x00" + b"\xff" * 200)
    _refused_build(refused, studio, [src], r"skipped: broken\.fbx: Blender's FBX importer "
                   r"failed")


def test_only_unsupported_files(studio, refused, tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "take.c3d").write_bytes(b"\x02\x50")
    _refused_build(refused, studio, [tmp_path / "clips"], r"^no \.bvh/\.fbx takes in the given "
                   r"sources$")
