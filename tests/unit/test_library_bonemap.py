"""Bone-map presets and validation (bpy-free)."""

from __future__ import annotations

import json

import pytest

from blender_m2d.core.bonemap import (
    PRESET_SIGNATURES,
    PRESETS,
    BoneMapError,
    bone_map_for,
    detect_preset,
    load_bone_map,
    preset_map,
    split_ref,
    validate_bone_map,
)
from blender_m2d.core.bvh import read_bvh_header
from blender_m2d.core.errors import M2DError
from blender_m2d.core.skeleton import CANON_JOINTS, CANON_PARENTS


def _rig(preset: str, prefix: str = "") -> tuple[list[str], dict[str, str | None]]:
    """Bone names and parents of a minimal rig following a preset (first candidates)."""
    names, parents = [], {}
    for j, joint in enumerate(CANON_JOINTS):
        bone, tail = split_ref(PRESETS[preset][joint][0])
        if tail:
            continue
        names.append(prefix + bone)
        p = CANON_PARENTS[j]
        parents[prefix + bone] = (prefix + split_ref(PRESETS[preset][CANON_JOINTS[p]][0])[0]
                                  if p >= 0 else None)
    for sig in PRESET_SIGNATURES[preset]:
        if prefix + sig not in names:
            names.append(prefix + sig)
            parents[prefix + sig] = names[0]
    return names, parents


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_is_detected_on_its_own_rig(preset):
    names, parents = _rig(preset)
    role = "target" if any(split_ref(c)[1] for c in PRESETS[preset]["LeftToes"][:1]) \
        else "source"
    assert detect_preset(names, role=role) == preset
    mapping, label = bone_map_for(names, None, parents=parents, role=role)
    assert label == preset
    assert set(mapping) <= set(CANON_JOINTS)


def test_mixamo_bones_with_any_prefix_are_recognised():
    for prefix in ("mixamorig:", "mixamorig1:", "Character_01:"):
        names, parents = _rig("mixamo", prefix)
        mapping, label = bone_map_for(names, None, parents=parents, role="target")
        assert label == "mixamo"
        assert mapping["LeftHand"] == prefix + "LeftHand"


def test_shared_data_skeletons_are_recognised(fixtures_dir):
    salsa = read_bvh_header(fixtures_dir / "bvh" / "salsa_60_01_f600_4s.bvh")
    modern = read_bvh_header(fixtures_dir / "bvh" / "modern_005_02_f100_4s.bvh")
    assert detect_preset(salsa.joints) == "cmu_cgspeed"
    assert detect_preset(modern.joints) == "cc_base"
    mapping, _ = preset_map("cmu_cgspeed", salsa.joints)
    assert mapping["LeftToes"] == "lFoot@tail"        # the salsa rig has no toe joint
    assert len(modern.joints) == 100 and modern.root_offset[1] == pytest.approx(105.214226)


def test_missing_bones_are_all_named_with_close_matches():
    names, _parents = _rig("mixamo", "mixamorig:")
    names = [n.replace("LeftHand", "LeftHandd") if n.endswith("LeftHand") else n
             for n in names if not n.endswith("RightFoot")]
    with pytest.raises(BoneMapError) as err:
        bone_map_for(names, "mixamo", role="target", rig_label="armature 'Hero'")
    msg = str(err.value)
    assert "armature 'Hero'" in msg
    assert "LeftHand" in msg and "mixamorig:LeftHandd" in msg      # named + close match
    assert "RightFoot" in msg


def test_unknown_skeleton_error_names_the_closest_preset_and_its_missing_bones():
    names = ["root", "pelvis_bone", "spine_a", "leg_l", "leg_r"]
    with pytest.raises(M2DError) as err:
        bone_map_for(names, None, rig_label="'odd.bvh'")
    msg = str(err.value)
    assert "cannot recognise" in msg and "--rig" in msg and "--bone-map" in msg


def test_custom_map_extra_missing_and_duplicate_entries_are_all_reported():
    names, parents = _rig("canonical")
    mapping = {j: j for j in CANON_JOINTS}
    mapping["Tail"] = "Tail"                        # extra
    del mapping["Head"]                             # required joint absent
    mapping["LeftHand"] = "NoSuchBone"              # missing from the rig
    mapping["RightHand"] = "LeftLowerArm"           # used twice
    with pytest.raises(BoneMapError) as err:
        validate_bone_map(mapping, names, parents=parents, role="target")
    msg = str(err.value)
    for needle in ("'Tail'", "Head", "NoSuchBone", "LeftLowerArm", "more than one joint"):
        assert needle in msg


def test_hierarchy_mismatch_is_reported():
    names, parents = _rig("canonical")
    parents["LeftLowerArm"] = "Hips"                 # forearm not below the upper arm
    with pytest.raises(BoneMapError, match=r"LeftLowerArm.*not below"):
        bone_map_for(names, "canonical", parents=parents, role="target")


def test_optional_target_joints_may_be_absent_but_not_for_sources():
    names, parents = _rig("canonical")
    names = [n for n in names if n not in ("LeftToes", "RightToes", "Neck")]
    parents["Head"] = "Chest"
    mapping, _ = bone_map_for(names, "canonical", parents=parents, role="target")
    assert "Neck" not in mapping and mapping["Head"] == "Head"
    with pytest.raises(BoneMapError, match="Neck"):
        bone_map_for(names, "canonical", parents=parents, role="source")


def test_bone_map_json_files(tmp_path):
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"Hips": "pelvis"}))
    assert load_bone_map(plain) == {"Hips": "pelvis"}
    versioned = tmp_path / "v.json"
    versioned.write_text(json.dumps({"format": "m2d-bonemap", "format_version": 1,
                                     "bones": {"Head": "head"}}))
    assert load_bone_map(versioned) == {"Head": "head"}
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(M2DError, match="joint name"):
        load_bone_map(bad)
    future = tmp_path / "f.json"
    future.write_text(json.dumps({"format": "m2d-bonemap", "format_version": 7, "bones": {}}))
    with pytest.raises(M2DError, match="format_version"):
        load_bone_map(future)
    with pytest.raises(M2DError, match="no such"):
        load_bone_map(tmp_path / "missing.json")


def test_unknown_preset_name_lists_the_presets():
    with pytest.raises(M2DError, match="mixamo"):
        preset_map("nonsense", ["Hips"])


def test_truncated_bvh_header_is_detected(fixtures_dir):
    hdr = read_bvh_header(fixtures_dir / "bvh" / "truncated_salsa_60_01.bvh")
    assert hdr.frames_declared == 120 and hdr.frames_complete == 40
    assert hdr.truncated and hdr.partial_line
    ok = read_bvh_header(fixtures_dir / "bvh" / "salsa_60_01_f600_4s.bvh")
    assert not ok.truncated and ok.frames_complete == 240 and ok.fps == 60.0


def test_non_bvh_file_is_refused(tmp_path):
    p = tmp_path / "x.bvh"
    p.write_text("hello")
    with pytest.raises(M2DError, match="not a BVH"):
        read_bvh_header(p)
