"""A production-like Blender scene for "nothing of the user's changes" checks (bpy).

:func:`user_scene` builds what an animator's file typically holds before they choreograph: a
character (Mixamo-named armature with a skinned mesh) that already has an active action of its
own, an NLA track with a pushed-down action, an unused action kept with a fake user, a prop
mesh, a timeline marker, a sound strip on the sequencer and a custom frame range at 30 fps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
USER_SOUND = REPO / "data" / "fixtures" / "audio" / "music_5s.wav"


def fresh_scene(fps: int = 30):
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = fps, 1.0
    return scene


def _keyed_action(name: str, bones: list[str], *, seed: int, n: int = 24):
    from blender_m2d import compat

    rng = np.random.default_rng(seed)
    action, slot = compat.new_action(name, slot_name="User")
    for b in bones:
        for i in range(4):
            fc = compat.ensure_fcurve(action, slot, f'pose.bones["{b}"].rotation_quaternion', i,
                                      group=b)
            fc.keyframe_points.add(n)
            co = np.empty(2 * n, np.float32)
            co[0::2] = np.arange(1, n + 1)
            co[1::2] = (1.0 if i == 0 else 0.0) + rng.normal(0, 0.05, n)
            fc.keyframe_points.foreach_set("co", co)
            fc.update()
    return action, slot


def user_scene(*, preset: str = "mixamo", name: str = "Hero", animated: bool = True,
               sound: bool = True):
    """Build the animator's scene; returns ``(scene, armature object)``."""
    import bpy

    from blender_m2d import compat, rigs

    scene = fresh_scene()
    scene.frame_start, scene.frame_end, scene.frame_current = 10, 420, 37
    ob = rigs.build_test_armature(preset, name=name, with_mesh=True)
    prop = bpy.data.objects.new("Prop", bpy.data.meshes.new("PropMesh"))
    scene.collection.objects.link(prop)
    if animated:
        bones = [pb.name for pb in ob.pose.bones][:6]
        idle, idle_slot = _keyed_action("Hero|Idle", bones, seed=1)
        walk, _ = _keyed_action("Hero|Walk", bones, seed=2)
        spare, _ = _keyed_action("Hero|Spare", bones, seed=3)
        spare.use_fake_user = True
        ad = ob.animation_data_create()
        track = ad.nla_tracks.new()
        track.name = "Hero walk"
        strip = track.strips.new("Walk", 40, walk)
        compat.assign_action(strip, walk)
        strip.blend_in = 3.0
        compat.assign_action(ad, idle, idle_slot)
    scene.timeline_markers.new("user: hit", frame=55)
    if sound:
        se = scene.sequence_editor_create()
        strips = se.strips if hasattr(se, "strips") else se.sequences
        strips.new_sound("user VO", str(USER_SOUND), 3, 12)
    bpy.context.view_layer.objects.active = ob
    return scene, ob
