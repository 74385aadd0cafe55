"""Scene state of the Dance panel: one ``Scene.m2d`` (:class:`M2D_Settings`), saved in the
.blend with the choreography itself (``plan_json``) and the scorer's per-phrase probabilities
(``probs_data``), so a reopened file keeps its ranked dropdowns and can re-decode without
analysing the song again.

Job progress, status and the last error are *not* scene data: they live on the window manager
(``WindowManager.m2d_job``, :class:`M2D_JobState`), so starting, cancelling or failing a run
never changes the scene or its undo history.
"""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .core.bonemap import preset_names
from .core.editing import stable_number

DEVICE_ITEMS = (
    ("PREFS", "Default", "The device chosen in the add-on preferences", 0),
    ("AUTO", "Auto", "The GPU (CUDA) when onnxruntime has it, else the CPU", 1),
    ("CPU", "CPU", "Always the CPU", 2),
    ("GPU", "GPU", "CUDA; the run fails when onnxruntime cannot use it", 3),
)
METHOD_ITEMS = (
    ("greedy", "Greedy", "The paper's Eq. 6: best next phrase given the previous one", 1),
    ("viterbi", "Viterbi", "Best sequence over the whole song", 2),
)


def _rig_items():
    items = [("AUTO", "Auto-detect", "Recognise the rig's bone names", 1)]
    for name in preset_names():
        items.append((name, name, f"Bone names of the '{name}' preset", stable_number(name)))
    items.append(("FILE", "Bone Map File", "A bone-map JSON file", 2))
    return tuple(items)


RIG_ITEMS = _rig_items()


def _is_armature(self, obj) -> bool:
    return obj is not None and obj.type == "ARMATURE"


class M2D_Phrase(bpy.types.PropertyGroup):
    """One row of the phrase list (a mirror of the plan's phrase for drawing and sorting)."""

    index: IntProperty(name="Phrase", description="Music phrase index (0-based)")
    start_s: FloatProperty(name="Start", unit="TIME_ABSOLUTE", precision=2)
    end_s: FloatProperty(name="End", unit="TIME_ABSOLUTE", precision=2)
    frame_start: IntProperty(name="Start Frame")
    frame_end: IntProperty(name="End Frame")
    phrase_id: StringProperty(name="Dance Phrase", description="Placed library phrase")
    rank: IntProperty(name="Rank", description="Rank of the placed phrase (0: not ranked)")
    score: FloatProperty(name="Score", description="Decoder score of the placed phrase",
                         precision=3)
    prob: FloatProperty(name="Probability", description="Model probability", precision=3)
    locked: BoolProperty(name="Locked",
                         description="Keep this phrase when re-choreographing the rest")
    edited: BoolProperty(name="Edited", description="Swapped by hand")
    beat_hit: FloatProperty(name="Beat Hit", default=-1.0, precision=2,
                            description="Share of this phrase's dance beats on music beats "
                                        "(-1: not measured)")
    n_dance_beats: IntProperty(name="Dance Beats")
    seam_jump_cm: FloatProperty(name="Seam Jump", precision=1,
                                description="Root jump (cm) of the crossfade into this phrase")


class M2D_Settings(bpy.types.PropertyGroup):
    # ---- inputs
    armature: PointerProperty(name="Armature", type=bpy.types.Object, poll=_is_armature,
                              description="The character to make dance")
    song_path: StringProperty(name="Song", subtype="FILE_PATH",
                              description="Audio file (wav, ogg, flac, mp3 ...)")
    library_path: StringProperty(name="Library", subtype="DIR_PATH",
                                 description="Dance library folder; empty: the preferences' "
                                             "or the bundled one")
    model_path: StringProperty(name="Model", subtype="FILE_PATH",
                               description="model.onnx (model.json beside it) or its folder; "
                                           "empty: the preferences' or the bundled one")
    use_model: BoolProperty(name="Use Model", default=True,
                            description="Score with the trained model; off: the rhythm/energy "
                                        "baseline (no model needed)")
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="PREFS")
    rig: EnumProperty(name="Rig", items=RIG_ITEMS, default="AUTO",
                      description="Which bone plays which joint")
    bone_map_path: StringProperty(name="Bone Map", subtype="FILE_PATH",
                                  description="Bone-map JSON (when Rig is 'Bone Map File')")
    # ---- decoding options
    method: EnumProperty(name="Method", items=METHOD_ITEMS, default="greedy")
    no_repeat: BoolProperty(name="No Repeats", default=True,
                            description="Never place a phrase right after itself")
    styles: StringProperty(name="Styles",
                           description="Comma-separated dance styles to use (e.g. 'salsa'); "
                                       "empty: all")
    top_k: IntProperty(name="Alternatives", default=5, min=2, max=20,
                       description="Ranked alternatives offered per phrase")
    # ---- the choreography (saved in the .blend)
    phrases: CollectionProperty(type=M2D_Phrase)
    active_phrase: IntProperty(name="Active Phrase", default=0)
    plan_json: StringProperty(name="Plan", options={"HIDDEN"},
                              description="The choreography (PLAN.json)")
    probs_data: StringProperty(name="Scores", options={"HIDDEN"},
                               description="Scorer probabilities per phrase (compressed)")
    target: PointerProperty(name="Danced By", type=bpy.types.Object, poll=_is_armature,
                            description="The armature the choreography is placed on")
    library_used: StringProperty(name="Library Used", options={"HIDDEN"})
    bone_map_json: StringProperty(name="Bone Map Used", options={"HIDDEN"},
                                  description="Joint -> bone map the dance was retargeted with")
    model_used: StringProperty(name="Model Used", options={"HIDDEN"})
    device_used: StringProperty(name="Device Used",
                                description="What actually scored the song")
    song_beat_hit: FloatProperty(name="Beat Hit", default=-1.0, precision=2)
    song_beat_coverage: FloatProperty(name="Beat Coverage", default=-1.0, precision=2)
    song_max_seam_cm: FloatProperty(name="Worst Seam", default=-1.0, precision=1)
    song_beat_confidence: FloatProperty(
        name="Beat Confidence", default=-1.0, precision=2,
        description="How clearly the song has a beat, 0..1 (-1: unknown); below 0.2 the dance "
                    "follows an estimated beat grid")
    evaluation: StringProperty(name="Evaluation", options={"HIDDEN"})
    # ---- panel state
    show_setup: BoolProperty(name="Setup", default=True)
    show_options: BoolProperty(name="Options", default=False)
    include_all_labels: BoolProperty(
        name="All Phrases", default=False,
        description="Save every phrase as a label, not only the swapped and locked ones")

    @property
    def has_plan(self) -> bool:
        return bool(self.plan_json)


class M2D_JobState(bpy.types.PropertyGroup):
    """Runtime state of a running choreography (not saved, not undone)."""

    running: BoolProperty(name="Running")
    progress: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")
    status: StringProperty(name="Status")
    error: StringProperty(name="Error")
    info: StringProperty(name="Info")


classes = (M2D_Phrase, M2D_Settings, M2D_JobState)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.m2d = PointerProperty(type=M2D_Settings)
    bpy.types.WindowManager.m2d_job = PointerProperty(type=M2D_JobState)


def unregister() -> None:
    del bpy.types.WindowManager.m2d_job
    del bpy.types.Scene.m2d
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
