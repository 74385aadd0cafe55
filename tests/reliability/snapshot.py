"""Snapshots for "nothing changed" assertions: files byte for byte, Blender scenes value for value.

``file_tree(path)`` maps every file and folder under ``path`` (hidden temporary files included)
to its type, size, permission bits and sha256, so a leftover ``.x.tmp`` or a half-written file
shows up as a difference. ``scene_state()`` turns everything a choreography could touch in the
current Blender file into plain, comparable Python data: the datablock names of every ID
collection, each object's transform, pose channels, animation data (active action and slot,
NLA tracks and all strip settings), every action's F-curves with their exact key coordinates,
handles and interpolation, the sequencer strips, timeline markers, frame range and fps.
``diff(a, b)`` lists the paths where two snapshots differ (readable assertion messages).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------- files


def file_tree(path: str | os.PathLike) -> dict[str, tuple]:
    """``{relative path: (kind, size, mode, sha256)}`` of ``path`` and everything below it.

    A missing ``path`` gives ``{}``; a file gives one entry ``"."``.
    """
    root = Path(path)
    out: dict[str, tuple] = {}
    if not root.exists() and not root.is_symlink():
        return out
    items = [root] if not root.is_dir() else [root, *sorted(root.rglob("*"))]
    for p in items:
        rel = "." if p == root else p.relative_to(root).as_posix()
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            out[rel] = ("file", st.st_size, stat.S_IMODE(st.st_mode),
                        hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def leftovers(folder: str | os.PathLike, keep: set[str] = frozenset()) -> list[str]:
    """Names in ``folder`` other than ``keep`` (temporary siblings an atomic writer left)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name not in keep)


# --------------------------------------------------------------------------------------- bpy

ID_COLLECTIONS = ("actions", "armatures", "objects", "meshes", "materials", "sounds", "texts",
                  "collections", "scenes", "images", "node_groups", "cameras", "lights",
                  "worlds")


def _vec(v) -> tuple:
    return tuple(float(x) for x in v)


def _mat(m) -> tuple:
    return tuple(_vec(row) for row in m)


def _fcurves_of_action(action) -> dict:
    """Every F-curve of every slot/layer of ``action`` (or the legacy list on 4.2)."""
    curves = {}
    groups = []
    if hasattr(action, "layers") and len(getattr(action, "layers", ())):
        for li, layer in enumerate(action.layers):
            for si, strip in enumerate(layer.strips):
                for bag in getattr(strip, "channelbags", ()):
                    slot = getattr(bag, "slot", None)
                    sid = getattr(slot, "identifier", "?")
                    groups.append(((li, si, sid), bag.fcurves))
    elif hasattr(action, "fcurves"):
        groups.append((("legacy",), action.fcurves))
    for key, fcs in groups:
        for fc in fcs:
            kps = fc.keyframe_points
            n = len(kps)
            co = [0.0] * (2 * n)
            hl = [0.0] * (2 * n)
            hr = [0.0] * (2 * n)
            interp = [0] * n
            if n:
                kps.foreach_get("co", co)
                kps.foreach_get("handle_left", hl)
                kps.foreach_get("handle_right", hr)
                kps.foreach_get("interpolation", interp)
            curves[(*key, fc.data_path, fc.array_index)] = (
                tuple(co), tuple(hl), tuple(hr), tuple(interp), fc.extrapolation, fc.mute,
                len(fc.modifiers))
    return curves


def action_state(action) -> dict:
    slots = tuple((s.identifier, s.target_id_type) for s in getattr(action, "slots", ()))
    props = {k: repr(action[k]) for k in action.keys()}
    return {"users": action.users, "fake_user": action.use_fake_user, "slots": slots,
            "props": props, "frame_range": _vec(action.frame_range),
            "curves": _fcurves_of_action(action)}


def _strip_state(s) -> tuple:
    slot = getattr(s, "action_slot", None)
    return (s.name, s.action.name if s.action else None,
            getattr(slot, "identifier", None), s.frame_start, s.frame_end,
            s.action_frame_start, s.action_frame_end, s.blend_in, s.blend_out,
            s.blend_type, s.extrapolation, s.influence, s.use_auto_blend, s.mute, s.scale,
            s.repeat, s.use_reverse)


def _anim_state(ad) -> Any:
    if ad is None:
        return None
    slot = getattr(ad, "action_slot", None)
    return {
        "action": ad.action.name if ad.action else None,
        "slot": getattr(slot, "identifier", None),
        "use_nla": ad.use_nla,
        "tracks": tuple((tr.name, tr.mute, tr.is_solo, tr.lock,
                         tuple(_strip_state(s) for s in tr.strips)) for tr in ad.nla_tracks),
        "drivers": len(ad.drivers),
    }


def _safe(getter):
    try:
        return getter()
    except RuntimeError:        # not in the view layer
        return None


def object_state(ob) -> dict:
    st = {"type": ob.type, "data": ob.data.name if ob.data else None,
          "parent": ob.parent.name if ob.parent else None,
          "matrix_world": _mat(ob.matrix_world), "location": _vec(ob.location),
          "selected": _safe(ob.select_get), "hidden": _safe(ob.hide_get), "mode": ob.mode,
          "rotation": _vec(ob.rotation_euler), "scale": _vec(ob.scale),
          "anim": _anim_state(ob.animation_data),
          "props": {k: repr(ob[k]) for k in ob.keys() if not k.startswith("_")}}
    if ob.type == "ARMATURE":
        st["bones"] = tuple((b.name, b.parent.name if b.parent else None, _vec(b.head_local),
                             _vec(b.tail_local), b.use_connect) for b in ob.data.bones)
        st["pose"] = tuple((pb.name, pb.rotation_mode, _vec(pb.location),
                            _vec(pb.rotation_quaternion), _vec(pb.rotation_euler),
                            _vec(pb.scale)) for pb in ob.pose.bones)
    return st


def scene_state(scene=None) -> dict:
    """Everything a choreography could change in the open Blender file, as plain data."""
    import bpy

    scene = scene or bpy.context.scene
    # pose channels of animated bones are whatever the last evaluation left: evaluate the
    # current frame first so two snapshots compare data, not evaluation history
    scene.frame_set(scene.frame_current, subframe=scene.frame_subframe)
    se = scene.sequence_editor
    strips = ()
    if se is not None:
        seq = se.strips if hasattr(se, "strips") else se.sequences
        strips = tuple(sorted((s.name, s.type, s.channel, s.frame_start, s.frame_final_end,
                               getattr(getattr(s, "sound", None), "filepath", None))
                              for s in seq))
    return {
        "ids": {name: tuple(sorted(i.name for i in getattr(bpy.data, name)))
                for name in ID_COLLECTIONS},
        "objects": {ob.name: object_state(ob) for ob in bpy.data.objects},
        "actions": {a.name: action_state(a) for a in bpy.data.actions},
        "sounds": tuple(sorted((s.name, s.filepath, s.users) for s in bpy.data.sounds)),
        "texts": tuple(sorted((t.name, hashlib.sha256(t.as_string().encode()).hexdigest())
                              for t in bpy.data.texts)),
        "strips": strips,
        "markers": tuple(sorted((m.name, m.frame) for m in scene.timeline_markers)),
        "frames": (scene.frame_start, scene.frame_end, scene.frame_current),
        "fps": (scene.render.fps, scene.render.fps_base),
        "active": bpy.context.view_layer.objects.active.name
        if bpy.context.view_layer.objects.active else None,
        "mode": bpy.context.mode,
    }


def datablock_counts() -> dict[str, int]:
    import bpy

    return {name: len(getattr(bpy.data, name)) for name in ID_COLLECTIONS}


# --------------------------------------------------------------------------------------- diff


def diff(a: Any, b: Any, path: str = "", out: list[str] | None = None, limit: int = 12
         ) -> list[str]:
    """Paths (``objects.Dancer.anim.tracks``) where ``a`` and ``b`` differ, at most ``limit``."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=repr):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: {'added' if k not in a else 'removed'}")
            else:
                diff(a[k], b[k], f"{path}.{k}", out, limit)
    elif a != b:
        ra, rb = repr(a), repr(b)
        out.append(f"{path}: {ra[:160]} -> {rb[:160]}")
    return out


def assert_same(before: Any, after: Any, what: str = "state") -> None:
    d = diff(before, after)
    assert not d, f"{what} changed:\n  " + "\n  ".join(d)
