"""Bone maps: which bone of a rig plays which joint of the canonical skeleton.

A bone map is a plain ``dict`` from canonical joint name (:data:`~.skeleton.CANON_JOINTS`) to a
bone name of the rig. For *source* takes a joint may also name a bone's tail with ``"Bone@tail"``
(the salsa skeleton has no toe joint; its foot bone ends at the toes).

Presets cover the rigs studios use: the shared data's two mocap skeletons (``cc_base`` for CMU
subject 5 via iClone, ``cmu_cgspeed`` for the CMU salsa takes), the classic CMU BVH skeleton
(``cmu_bvh``), ``mixamo`` (any ``prefix:``), ``rigify_metarig`` / ``rigify_def`` and
``unreal`` (UE4/UE5 mannequin). A custom map is a JSON file (see docs/library.md).

Everything here is bpy-free: validation works on bone names and parent links, so it runs before
any import or retargeting work starts and names every problem at once.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import M2DError
from .skeleton import CANON_JOINTS, CANON_PARENTS

BONEMAP_FORMAT = "m2d-bonemap"
BONEMAP_VERSION = 1
TAIL_SUFFIX = "@tail"

class BoneMapError(M2DError):
    """A bone map does not fit a rig (still an :class:`M2DError` for operators and the CLI)."""


OPTIONAL_TARGET_JOINTS = frozenset(
    {"Neck", "LeftShoulder", "RightShoulder", "LeftToes", "RightToes"})
"""Joints a *target* rig may lack; every joint is required for a *source* take."""


def _sided(center: Mapping[str, tuple[str, ...]], left: Mapping[str, tuple[str, ...]],
           right: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    out = dict(center)
    for part, names in left.items():
        out["Left" + part] = names
    for part, names in right.items():
        out["Right" + part] = names
    assert set(out) == set(CANON_JOINTS), sorted(set(CANON_JOINTS) ^ set(out))
    return out


def _lr(fmt_left: str, fmt_right: str, parts: Mapping[str, str | tuple[str, ...]]):
    left, right = {}, {}
    for part, names in parts.items():
        names = (names,) if isinstance(names, str) else names
        left[part] = tuple(fmt_left.format(n) for n in names)
        right[part] = tuple(fmt_right.format(n) for n in names)
    return left, right


_LIMBS = ("Shoulder", "UpperArm", "LowerArm", "Hand", "UpperLeg", "LowerLeg", "Foot", "Toes")

PRESETS: dict[str, dict[str, tuple[str, ...]]] = {}
"""Preset name -> canonical joint -> candidate bone names (the first one present is used)."""
PRESET_SIGNATURES: dict[str, tuple[str, ...]] = {}
"""Bones that must exist for a preset to be auto-detected (tells near-identical rigs apart)."""
PRESET_DESCRIPTIONS: dict[str, str] = {}
PREFIXED_PRESETS = frozenset({"mixamo"})
"""Presets whose bone names may carry any ``prefix:`` (``mixamorig:``, ``mixamorig1:``)."""


def _add(name: str, description: str, center, left, right, signature=()) -> None:
    PRESETS[name] = _sided(center, left, right)
    PRESET_SIGNATURES[name] = tuple(signature)
    PRESET_DESCRIPTIONS[name] = description


_add("cc_base", "Reallusion CC/iClone 'CC_Base_*' (CMU subject 5 in ../shared/data)",
     {"Hips": ("CC_Base_Hip",), "Spine": ("CC_Base_Waist",), "Chest": ("CC_Base_Spine02",),
      "Neck": ("CC_Base_NeckTwist01",), "Head": ("CC_Base_Head",)},
     *_lr("CC_Base_L_{}", "CC_Base_R_{}", dict(zip(_LIMBS, (
         "Clavicle", "Upperarm", "Forearm", "Hand", "Thigh", "Calf", "Foot", "ToeBase"))))[:2],
     signature=("CC_Base_Hip",))
_add("cmu_cgspeed", "CMU BVH, cgspeed 'Daz-friendly' skeleton (hip/abdomen/lShldr; CMU salsa)",
     {"Hips": ("hip",), "Spine": ("abdomen",), "Chest": ("chest",), "Neck": ("neck",),
      "Head": ("head",)},
     *_lr("l{}", "r{}", dict(zip(_LIMBS, (
         "Collar", "Shldr", "ForeArm", "Hand", "Thigh", "Shin", "Foot",
         ("Toe", "Foot_end", "Foot" + TAIL_SUFFIX))))),
     signature=("abdomen",))
_add("cmu_bvh", "CMU BVH, original ASF-derived names (Hips/LHipJoint/LeftUpLeg/Spine1)",
     {"Hips": ("Hips",), "Spine": ("Spine", "LowerBack"), "Chest": ("Spine1",),
      "Neck": ("Neck",), "Head": ("Head",)},
     *_lr("Left{}", "Right{}", dict(zip(_LIMBS, (
         "Shoulder", "Arm", "ForeArm", "Hand", "UpLeg", "Leg", "Foot", "ToeBase")))),
     signature=("LHipJoint",))
_add("mixamo", "Adobe Mixamo (mixamorig:Hips ..., any 'prefix:')",
     {"Hips": ("Hips",), "Spine": ("Spine",), "Chest": ("Spine2", "Spine1"),
      "Neck": ("Neck",), "Head": ("Head",)},
     *_lr("Left{}", "Right{}", dict(zip(_LIMBS, (
         "Shoulder", "Arm", "ForeArm", "Hand", "UpLeg", "Leg", "Foot", "ToeBase")))),
     signature=("Spine2",))
_add("rigify_metarig", "Blender Rigify human metarig (spine, upper_arm.L, thigh.L ...)",
     {"Hips": ("spine",), "Spine": ("spine.001",), "Chest": ("spine.003",),
      "Neck": ("spine.004",), "Head": ("spine.006",)},
     *_lr("{}.L", "{}.R", dict(zip(_LIMBS, (
         "shoulder", "upper_arm", "forearm", "hand", "thigh", "shin", "foot", "toe")))),
     signature=("spine.006",))
_add("rigify_def", "Blender Rigify generated deform bones (DEF-spine, DEF-upper_arm.L ...)",
     {"Hips": ("DEF-spine",), "Spine": ("DEF-spine.001",), "Chest": ("DEF-spine.003",),
      "Neck": ("DEF-spine.004",), "Head": ("DEF-spine.006",)},
     *_lr("DEF-{}.L", "DEF-{}.R", dict(zip(_LIMBS, (
         "shoulder", "upper_arm", "forearm", "hand", "thigh", "shin", "foot", "toe")))),
     signature=("DEF-spine.006",))
_add("unreal", "Unreal Engine 4/5 mannequin (pelvis, spine_01, upperarm_l ...)",
     {"Hips": ("pelvis",), "Spine": ("spine_01",), "Chest": ("spine_05", "spine_03"),
      "Neck": ("neck_01",), "Head": ("head",)},
     *_lr("{}_l", "{}_r", dict(zip(_LIMBS, (
         "clavicle", "upperarm", "lowerarm", "hand", "thigh", "calf", "foot", "ball")))),
     signature=("pelvis", "spine_01"))
_add("canonical", "blender_m2d's own joint names (Hips, LeftUpperArm ...)",
     {j: (j,) for j in ("Hips", "Spine", "Chest", "Neck", "Head")},
     {p: ("Left" + p,) for p in _LIMBS}, {p: ("Right" + p,) for p in _LIMBS},
     signature=("LeftUpperArm",))

PRESET_ALIASES = {"cmu": "cmu_bvh", "rigify": "rigify_def", "metarig": "rigify_metarig",
                  "ue": "unreal", "ue4": "unreal", "ue5": "unreal", "iclone": "cc_base",
                  "cgspeed": "cmu_cgspeed", "salsa": "cmu_cgspeed"}


def preset_names() -> tuple[str, ...]:
    return tuple(PRESETS)


def split_ref(ref: str) -> tuple[str, bool]:
    """``"Bone@tail"`` -> ``("Bone", True)``; ``"Bone"`` -> ``("Bone", False)``."""
    if ref.endswith(TAIL_SUFFIX):
        return ref[: -len(TAIL_SUFFIX)], True
    return ref, False


def _strip_prefix(name: str) -> str:
    return name.split(":", 1)[1] if ":" in name else name


def _prefixes(bone_names: Iterable[str]) -> list[str]:
    seen = {}
    for n in bone_names:
        if ":" in n:
            p = n.split(":", 1)[0] + ":"
            seen[p] = seen.get(p, 0) + 1
    return ["", *sorted(seen, key=lambda p: -seen[p])]


def preset_map(preset: str, bone_names: Iterable[str], *, role: str = "source"
               ) -> tuple[dict[str, str], list[str]]:
    """Resolve a preset against a rig's bones: (map, joints that could not be resolved).

    Candidate names are tried in order; ``Bone@tail`` candidates are only used for sources.
    """
    preset = PRESET_ALIASES.get(preset, preset)
    if preset not in PRESETS:
        raise M2DError(f"unknown rig preset {preset!r}; choose one of "
                       f"{', '.join(PRESETS)} or pass a bone-map JSON file")
    names = set(bone_names)
    best: tuple[int, dict[str, str], list[str]] | None = None
    prefixes = _prefixes(names) if preset in PREFIXED_PRESETS else [""]
    for prefix in prefixes:
        mapping, missing = {}, []
        for joint in CANON_JOINTS:
            for cand in PRESETS[preset][joint]:
                bone, tail = split_ref(cand)
                if tail and role != "source":
                    continue
                if prefix + bone in names:
                    mapping[joint] = prefix + cand
                    break
            else:
                missing.append(joint)
        if best is None or len(mapping) > best[0]:
            best = (len(mapping), mapping, missing)
    return best[1], best[2]


def detect_preset(bone_names: Iterable[str], *, role: str = "source") -> str | None:
    """The preset that maps every required joint of this rig, or None.

    Presets whose signature bones are absent are not considered; among the rest the one mapping
    the most joints wins.
    """
    names = set(bone_names)
    stripped = {_strip_prefix(n) for n in names}
    best, best_n = None, -1
    for preset in PRESETS:
        pool = stripped if preset in PREFIXED_PRESETS else names
        if not all(s in pool for s in PRESET_SIGNATURES[preset]):
            continue
        mapping, missing = preset_map(preset, names, role=role)
        required_missing = [j for j in missing
                            if role == "source" or j not in OPTIONAL_TARGET_JOINTS]
        if not required_missing and len(mapping) > best_n:
            best, best_n = preset, len(mapping)
    return best


def closest_preset(bone_names: Iterable[str], *, role: str = "source") -> tuple[str, list[str]]:
    """The preset mapping the most joints, with the joints it misses (for error messages)."""
    names = list(bone_names)
    scored = []
    for preset in PRESETS:
        mapping, missing = preset_map(preset, names, role=role)
        scored.append((len(mapping), preset, missing))
    scored.sort(key=lambda s: -s[0])
    return scored[0][1], scored[0][2]


def load_bone_map(path: str | os.PathLike) -> dict[str, str]:
    """Read a custom bone map JSON file.

    Either ``{"format": "m2d-bonemap", "format_version": 1, "bones": {joint: bone}}`` or a plain
    ``{joint: bone}`` object. Keys are checked later by :func:`validate_bone_map`.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise M2DError("no such bone-map file", path=path) from err
    except (OSError, ValueError, RecursionError) as err:  # ValueError: JSONDecodeError,
        # UnicodeDecodeError, integers over Python's 4300-digit limit
        raise M2DError(f"not a valid bone-map JSON file ({err})", path=path) from err
    if isinstance(doc, dict) and "format" in doc:
        if doc.get("format") != BONEMAP_FORMAT:
            raise M2DError(f"not a bone map (format is {doc.get('format')!r})", path=path)
        version = doc.get("format_version")
        if not isinstance(version, int) or not 1 <= version <= BONEMAP_VERSION:
            raise M2DError(f"unsupported bone-map format_version {version!r}", path=path)
        doc = doc.get("bones")
    if not isinstance(doc, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise M2DError("a bone map must be a JSON object of joint name -> bone name "
                       "strings", path=path)
    return dict(doc)


def validate_bone_map(mapping: Mapping[str, str], bone_names: Iterable[str], *,
                      parents: Mapping[str, str | None] | None = None, role: str = "source",
                      rig_label: str = "the rig", path: str | os.PathLike | None = None,
                      ) -> dict[str, str]:
    """Check a bone map against a rig and return it, or raise one :class:`M2DError` naming
    every problem: joints that are not canonical (extra), required joints the map lacks,
    bones the rig lacks (with close matches), bones used twice, and joints whose bones are not
    ancestors of their canonical children's bones (when ``parents`` is given).
    """
    names = list(bone_names)
    name_set = set(names)
    problems: list[str] = []
    extra = [k for k in mapping if k not in CANON_JOINTS]
    if extra:
        problems.append("not canonical joints (extra): " + ", ".join(map(repr, extra))
                        + f" (canonical joints: {', '.join(CANON_JOINTS)})")
    required = [j for j in CANON_JOINTS
                if role == "source" or j not in OPTIONAL_TARGET_JOINTS]
    absent = [j for j in required if j not in mapping]
    if absent:
        problems.append("joints with no bone: " + ", ".join(absent))
    missing, used = [], {}
    for joint, ref in mapping.items():
        if joint not in CANON_JOINTS:
            continue
        if not isinstance(ref, str) or not ref:
            missing.append(f"{joint} -> {ref!r}")
            continue
        bone, tail = split_ref(ref)
        if tail and role != "source":
            missing.append(f"{joint} -> {ref!r} (a bone tail can only be used for source takes)")
            continue
        if bone not in name_set:
            close = difflib.get_close_matches(bone, names, n=2, cutoff=0.6)
            hint = f" (close: {', '.join(map(repr, close))})" if close else ""
            missing.append(f"{joint} -> {bone!r}{hint}")
            continue
        if not tail:
            used.setdefault(bone, []).append(joint)
    if missing:
        problems.append(f"bones missing from {rig_label}: " + "; ".join(missing))
    dupes = [f"{b!r} ({', '.join(js)})" for b, js in used.items() if len(js) > 1]
    if dupes:
        problems.append("bones used for more than one joint: " + ", ".join(dupes))
    if parents is not None and not problems:
        problems += _hierarchy_problems(mapping, parents)
    if problems:
        raise BoneMapError(f"bone map does not fit {rig_label}: " + " | ".join(problems),
                           path=path)
    return {j: mapping[j] for j in CANON_JOINTS if j in mapping}


def _ancestors(bone: str, parents: Mapping[str, str | None]) -> list[str]:
    out, seen = [], set()
    p = parents.get(bone)
    while p is not None and p not in seen:
        out.append(p)
        seen.add(p)
        p = parents.get(p)
    return out


def _hierarchy_problems(mapping: Mapping[str, str], parents: Mapping[str, str | None]
                        ) -> list[str]:
    problems = []
    for i, joint in enumerate(CANON_JOINTS):
        if joint not in mapping:
            continue
        p = CANON_PARENTS[i]
        while p >= 0 and CANON_JOINTS[p] not in mapping:
            p = CANON_PARENTS[p]
        if p < 0:
            continue
        child, child_tail = split_ref(mapping[joint])
        parent = split_ref(mapping[CANON_JOINTS[p]])[0]
        if child_tail:
            ok = child == parent or parent in _ancestors(child, parents)
        else:
            ok = parent in _ancestors(child, parents)
        if not ok:
            problems.append(f"{joint} bone {child!r} is not below {CANON_JOINTS[p]} bone "
                            f"{parent!r} in the rig's hierarchy")
    return problems


def _prefix_of(mapping: Mapping[str, str], preset: str) -> str:
    if preset not in PREFIXED_PRESETS:
        return ""
    for joint, ref in mapping.items():
        bone = split_ref(ref)[0]
        want = split_ref(PRESETS[preset][joint][0])[0]
        if bone.endswith(want) and bone != want:
            return bone[: -len(want)]
    return ""


def _missing_report(preset: str, mapping: Mapping[str, str], missing: Iterable[str],
                    names: list[str], role: str) -> list[str]:
    """``"Joint -> 'expected' (close: 'x')"`` for every required joint a preset cannot map."""
    prefix = _prefix_of(mapping, preset)
    out = []
    for joint in missing:
        if role != "source" and joint in OPTIONAL_TARGET_JOINTS:
            continue
        cands = [prefix + c for c in PRESETS[preset][joint]
                 if role == "source" or not split_ref(c)[1]]
        close = []
        for c in cands:
            close += [m for m in difflib.get_close_matches(split_ref(c)[0], names, n=2,
                                                          cutoff=0.8) if m not in close]
        hint = f" (close: {', '.join(map(repr, close[:2]))})" if close else ""
        out.append(f"{joint} -> {' or '.join(map(repr, cands))}{hint}")
    return out


def bone_map_for(bone_names: Iterable[str], rig: str | Mapping[str, str] | None, *,
                 parents: Mapping[str, str | None] | None = None, role: str = "source",
                 rig_label: str = "the rig", path: str | os.PathLike | None = None,
                 ) -> tuple[dict[str, str], str]:
    """Pick and validate the bone map of a rig: (map, description).

    ``rig`` is a preset name, a path to a bone-map JSON file, a dict, or None to auto-detect a
    preset. Raises :class:`M2DError` naming every missing bone when nothing fits.
    """
    names = list(bone_names)
    if rig is None:
        preset = detect_preset(names, role=role)
        if preset is None:
            best, missing = closest_preset(names, role=role)
            mapping, _ = preset_map(best, names, role=role)
            wanted = _missing_report(best, mapping, missing, names, role)
            raise BoneMapError(
                f"cannot recognise the skeleton of {rig_label}: no preset fits. Closest is "
                f"{best!r}, which lacks {'; '.join(wanted) or 'its signature bones'}. Pass "
                f"--rig PRESET or --bone-map MAP.json (presets: {', '.join(PRESETS)})",
                path=path)
        mapping, _ = preset_map(preset, names, role=role)
        label = preset
    elif isinstance(rig, Mapping):
        mapping, label = dict(rig), "custom map"
    elif isinstance(rig, str) and (rig.lower().endswith(".json") or os.sep in rig):
        mapping, label = load_bone_map(rig), f"bone map {Path(rig).name}"
    else:
        label = PRESET_ALIASES.get(rig, rig)
        mapping, missing = preset_map(rig, names, role=role)
        report = _missing_report(label, mapping, missing, names, role)
        if report:
            raise BoneMapError(f"bone map does not fit {rig_label} ({label}): bones missing: "
                               + "; ".join(report), path=path)
    return validate_bone_map(mapping, names, parents=parents, role=role,
                             rig_label=f"{rig_label} ({label})", path=path), label
