"""Rigs and scenes as animators have them: placing a plan (``nla.apply_plan``) on an armature
with missing bones, a non-uniform scale, a connected hips bone, its own animation, or with a plan
that does not fit. Each is refused with a clear message and nothing of the user's changes; an
accepted plan leaves every user track, strip, action and F-curve value as it was, and
``remove_plan`` takes everything of ours away again."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from hazards import FIXTURES  # noqa: E402
from scenes import fresh_scene, user_scene  # noqa: E402
from snapshot import assert_same, datablock_counts, scene_state  # noqa: E402

from blender_m2d import nla, rigs  # noqa: E402
from blender_m2d.core.errors import M2DError  # noqa: E402

pytestmark = pytest.mark.blender
SONG = FIXTURES / "audio" / "music_10s.ogg"


@pytest.fixture(scope="module")
def plan(bundled_library):
    from blender_m2d.core.choreography import choreograph

    return choreograph(SONG, bundled_library).plan


def _refused_apply(refused, ob, plan, library, pattern, **kw):
    before = scene_state()
    err = refused(lambda: nla.apply_plan(ob, plan, library, **kw), pattern)
    assert_same(before, scene_state(), "the scene")
    return err


def _stub_armature(bones: dict):
    arm = bpy.data.armatures.new("Stub")
    ob = bpy.data.objects.new("Stub", arm)
    bpy.context.scene.collection.objects.link(ob)
    bpy.context.view_layer.objects.active = ob
    bpy.ops.object.mode_set(mode="EDIT")
    for name, (head, tail) in bones.items():
        b = arm.edit_bones.new(name)
        b.head, b.tail = head, tail
    bpy.ops.object.mode_set(mode="OBJECT")
    return ob


def test_armature_missing_most_bones(plan, bundled_library, refused):
    fresh_scene()
    ob = _stub_armature({"Hips": ((0, 0, 1), (0, 0, 1.1)), "Spine": ((0, 0, 1.1), (0, 0, 1.3))})
    _refused_apply(refused, ob, plan, bundled_library,
                   r"^cannot recognise the skeleton of armature 'Stub': no preset fits\. Closest "
                   r"is '\w+', which lacks .*LeftHand.*Pass --rig PRESET or --bone-map MAP\.json")


def test_explicit_preset_naming_missing_bones(plan, bundled_library, refused):
    fresh_scene()
    ob = rigs.build_test_armature("rigify_def", name="Rigified", with_mesh=False)
    err = _refused_apply(refused, ob, plan, bundled_library, r"armature 'Rigified'",
                         rig="mixamo")
    assert "bones missing" in err.reason and "LeftHand -> 'LeftHand'" in err.reason


def test_a_mesh_instead_of_an_armature(plan, bundled_library, refused):
    fresh_scene()
    ob = bpy.data.objects.new("Cube", bpy.data.meshes.new("Cube"))
    bpy.context.scene.collection.objects.link(ob)
    _refused_apply(refused, ob, plan, bundled_library, r"^'Cube' is not an armature$")


def test_connected_hips_bone(plan, bundled_library, refused):
    fresh_scene()
    ob = rigs.build_test_armature("unreal", name="UE", with_mesh=False)
    bpy.context.view_layer.objects.active = ob
    bpy.ops.object.mode_set(mode="EDIT")
    ob.data.edit_bones["pelvis"].use_connect = True
    bpy.ops.object.mode_set(mode="OBJECT")
    _refused_apply(refused, ob, plan, bundled_library,
                   r"^the hips bone 'pelvis' is connected to its parent, so it cannot move; "
                   r"disconnect it to play root motion$")


@pytest.mark.parametrize("scale", [(1.0, 1.0, 2.0), (1.0, 3.0, 1.0)])
def test_non_uniform_scale(plan, bundled_library, scale):
    fresh_scene()
    ob = rigs.build_test_armature("mixamo", name="Stretched", with_mesh=False)
    ob.scale = scale
    before = scene_state()
    try:
        applied = nla.apply_plan(ob, plan, bundled_library)
    except M2DError as err:
        assert "scale" in str(err)
        assert_same(before, scene_state(), "the scene")
        return
    assert any("scale" in w for w in applied.warnings), applied.warnings


def test_uniform_scale_is_fine(plan, bundled_library, note):
    fresh_scene()
    ob = rigs.build_test_armature("mixamo", name="Big", with_mesh=False)
    ob.scale = (2.0, 2.0, 2.0)
    applied = nla.apply_plan(ob, plan, bundled_library)
    from blender_m2d.core.skeleton import JOINT_INDEX as J

    shin = np.linalg.norm(applied.positions[:, J["LeftLowerLeg"]]
                          - applied.positions[:, J["LeftFoot"]], axis=1)
    assert np.ptp(shin) < 1e-3 and not applied.warnings
    note("no error: the dance plays at twice the size, bones keep their length")


def _user_part(state: dict) -> dict:
    """The user's own data in a scene_state: everything except what blender_m2d adds."""
    objs = {}
    for name, st in state["objects"].items():
        st = dict(st)
        st.pop("pose", None)                   # the evaluated pose follows our tracks
        if st.get("anim"):
            anim = dict(st["anim"])
            anim["tracks"] = tuple(t for t in anim["tracks"] if not t[0].startswith("m2d "))
            st["anim"] = anim
        objs[name] = st
    return {
        "objects": objs,
        "actions": {k: v for k, v in state["actions"].items() if not k.startswith("m2d ")},
        "strips": tuple(s for s in state["strips"] if not s[0].startswith("m2d ")),
        "markers": tuple(m for m in state["markers"] if not m[0].startswith("m2d ")),
        "texts": state["texts"], "fps": state["fps"], "active": state["active"],
    }


def test_user_animation_is_kept_value_for_value(plan, bundled_library, note):
    _scene, ob = user_scene()
    before = scene_state()
    applied = nla.apply_plan(ob, plan, bundled_library)
    after = scene_state()
    assert_same(_user_part(before), _user_part(after), "the user's data")
    tracks = [t[0] for t in after["objects"]["Hero"]["anim"]["tracks"]]
    assert tracks == ["Hero walk", "m2d A", "m2d B"]
    assert any("active action 'Hero|Idle'" in w for w in applied.warnings)
    nla.remove_plan(ob)
    removed = scene_state()
    assert_same(_user_part(before), _user_part(removed), "the user's data after remove_plan")
    assert not any(a.startswith("m2d ") for a in removed["actions"])
    note("no error: user tracks/actions/F-curves/markers/strips identical after apply and "
         f"after remove; warning: {applied.warnings[0]}")


def test_remove_plan_restores_the_pose(plan, bundled_library):
    scene, ob = user_scene()
    before = scene_state()
    nla.apply_plan(ob, plan, bundled_library)
    scene.frame_set(200)
    scene.frame_set(before["frames"][2])
    nla.remove_plan(ob)
    after = scene_state()
    assert_same(before["objects"]["Hero"]["pose"], after["objects"]["Hero"]["pose"],
                "Hero's pose after remove_plan")


def test_remove_plan_leaves_no_datablocks(plan, bundled_library):
    _scene, ob = user_scene()
    before = datablock_counts()
    nla.apply_plan(ob, plan, bundled_library)
    nla.remove_plan(ob)
    assert datablock_counts() == before


def test_failed_reapply_keeps_the_existing_choreography(plan, bundled_library, refused,
                                                        monkeypatch):
    from blender_m2d import compat

    _scene, ob = user_scene()
    nla.apply_plan(ob, plan, bundled_library)
    real = compat.new_action
    calls = []

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise M2DError("simulated failure while writing the second phrase")
        return real(*args, **kw)

    monkeypatch.setattr(compat, "new_action", flaky)
    _refused_apply(refused, ob, plan, bundled_library, r"^simulated failure")
    assert len(calls) == 2


STEPS = ["validate", "placement", "write_actions", "align_channels", "nla",
         "sound_markers"]


@pytest.mark.parametrize("stop", STEPS)
def test_apply_interrupted_at_any_step_changes_nothing(plan, bundled_library, stop, note):
    """A cancel (an exception from the progress callback) mid-way through placing."""
    from blender_m2d.core.choreography import ChoreographyOptions, choreograph
    from blender_m2d.core.decode import DecodeOptions

    _scene, ob = user_scene()
    nla.apply_plan(ob, plan, bundled_library)             # an existing choreography
    other = choreograph(SONG, bundled_library, options=ChoreographyOptions(
        decode=DecodeOptions(seed=3, variety=0.5))).plan
    assert other.phrase_ids != plan.phrase_ids
    before = scene_state()

    def progress(x, name):
        if name == stop:
            raise KeyboardInterrupt(f"cancelled at {name}")

    with pytest.raises(KeyboardInterrupt):
        nla.apply_plan(ob, other, bundled_library, progress=progress)
    assert_same(before, scene_state(), f"the scene after a cancel at {stop!r}")
    nla.apply_plan(ob, other, bundled_library)             # and the next run works
    note("no error: the interrupt propagates, the scene and the previous choreography are "
         "unchanged, the next apply works")


def test_plan_made_for_another_library(plan, bundled_library, refused, tmp_path):
    from blender_m2d.core.library import load_library

    lib_dir = shutil.copytree(bundled_library.path, tmp_path / "lib")
    doc = (lib_dir / "library.json").read_text().replace('"cmu-dance (bundled)"', '"edited"')
    (lib_dir / "library.json").write_text(doc)
    _scene, ob = user_scene()
    _refused_apply(refused, ob, plan, load_library(lib_dir), r"the plan was made with another "
                   r"dance library \(hash mismatch\); use the library it names or choreograph "
                   r"again$")


def test_plan_made_for_another_frame_rate(plan, bundled_library, refused):
    scene, ob = user_scene()
    scene.render.fps = 24
    _refused_apply(refused, ob, plan, bundled_library, r"^the plan was made for 30 fps but the "
                   r"scene runs at 24 fps; choreograph again for this scene$")


def test_song_deleted_after_planning(plan, bundled_library, refused, tmp_path):
    song = shutil.copy(SONG, tmp_path / "song.ogg")
    moved = dataclasses.replace(plan, song={**plan.song, "path": str(song)})
    song.unlink()
    _scene, ob = user_scene()
    _refused_apply(refused, ob, moved, bundled_library, r"song\.ogg: the song file is missing$")


def test_plan_naming_a_phrase_the_library_lacks(plan, bundled_library, refused):
    ph = dataclasses.replace(plan.phrases[0], phrase_id="not_in_library")
    bad = dataclasses.replace(plan, phrases=(ph, *plan.phrases[1:]),
                              library={**plan.library, "hash": ""})
    _scene, ob = user_scene()
    _refused_apply(refused, ob, bad, bundled_library, r"^the dance library has no phrase "
                   r"'not_in_library' used by the plan$")
