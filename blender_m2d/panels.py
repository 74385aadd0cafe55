"""The Dance sidebar tab (3D viewport and NLA editor, ``N`` panel): drawing only.

One main panel (setup, Choreograph/progress/Cancel, messages) with two sub-panels (the phrase
list with its ranked dropdowns, locks and readouts; song quality, export and labels), the same
in both editors. The draw functions take a layout and a context, so tests and
``tools/render_panel_mock.py`` can draw them into a recording layout.
"""

from __future__ import annotations

import bpy

from .core.analysis import beat_warning
from .core.errors import M2DError
from .operators import (
    _fmt_time,
    choreograph_blocker,
    current_job,
    library_dir,
    model_file,
    plan_of,
    settings,
    swap_items,
)
from .preferences import BUNDLED_LIBRARY

CATEGORY = "Dance"


def _pct(x: float) -> str:
    return "-" if x < 0 else f"{x:.0%}"


def _cm(x: float) -> str:
    return "-" if x < 0 else f"{x:.1f} cm"


# =========================================================================== phrase list
class M2D_UL_phrases(bpy.types.UIList):
    """Rows: number and time, ranked dropdown (chosen phrase, rank, score), lock."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname,
                  index=0, flt_flag=0):
        row = layout.row(align=True)
        mark = "*" if item.edited else " "
        row.label(text=f"{item.index + 1:>2}{mark} {_fmt_time(item.start_s)}")
        rank = f"{item.rank}. " if item.rank else "-. "
        op = row.operator_menu_enum("m2d.swap", "candidate",
                                    text=f"{rank}{item.phrase_id}  {item.score:.2f}")
        if op is not None:
            op.index = item.index
        hit = "" if item.beat_hit < 0 else f"{item.beat_hit:.0%}"
        row.label(text=hit)
        op = row.operator("m2d.toggle_lock", text="",
                          icon="LOCKED" if item.locked else "UNLOCKED",
                          emboss=False, depress=item.locked)
        if op is not None:
            op.index = item.index


# =========================================================================== draw functions
def draw_setup(layout, context) -> None:
    s = settings(context)
    col = layout.column(align=False)
    row = col.row(align=True)
    row.prop(s, "armature")
    row.operator("m2d.use_active_armature", text="", icon="EYEDROPPER")
    col.prop(s, "song_path")
    col.prop(s, "library_path")
    try:
        lib = library_dir(context)
    except M2DError:
        lib = None
    if not s.library_path and lib is not None:
        where = "bundled" if lib == BUNDLED_LIBRARY else str(lib)
        col.label(text=f"Library: {where}", icon="BLANK1")
    row = col.row(align=True)
    row.prop(s, "use_model", text="")
    sub = row.row(align=True)
    sub.active = s.use_model
    sub.prop(s, "model_path")
    if s.use_model and not s.model_path:
        try:
            model = model_file(context)
        except M2DError:
            model = None
        col.label(text="Model: bundled" if model else "Model: none found, baseline scoring",
                  icon="BLANK1")
    row = col.row(align=True)
    row.prop(s, "device")
    if s.device_used:
        col.label(text=f"Used: {s.device_used}", icon="BLANK1")
    col.prop(s, "rig")
    if s.rig == "FILE":
        col.prop(s, "bone_map_path")
    box = layout.box()
    box.prop(s, "show_options", text="Options",
             icon="TRIA_DOWN" if s.show_options else "TRIA_RIGHT", emboss=False)
    if s.show_options:
        box.prop(s, "method")
        box.prop(s, "no_repeat")
        box.prop(s, "styles")
        box.prop(s, "top_k")


def draw_run(layout, context) -> None:
    st = context.window_manager.m2d_job
    job = current_job()
    if job is not None or st.running:
        row = layout.row(align=True)
        row.progress(factor=st.progress, type="BAR",
                     text=f"{st.status or 'working'} {st.progress:.0%}")
        row.operator("m2d.cancel", text="", icon="CANCEL")
    else:
        row = layout.row()
        row.scale_y = 1.5
        row.operator("m2d.choreograph", icon="PLAY_SOUND")
        why = choreograph_blocker(context)
        if why:
            layout.label(text=why, icon="INFO")
    if st.error:
        box = layout.box()
        box.alert = True
        for i, line in enumerate(_wrap(st.error, 48)):
            box.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
    elif st.info:
        for i, line in enumerate(_wrap(st.info, 52)):
            layout.label(text=line, icon="INFO" if i == 0 else "BLANK1")
    draw_beat_warning(layout, context)


def draw_beat_warning(layout, context) -> None:
    """A warning row when the choreographed song has no clear beat (a low beat confidence):
    the dance then follows an estimated beat grid. Nothing for a clear or unknown beat."""
    s = settings(context)
    if not s.plan_json or s.song_beat_confidence < 0:
        return
    if not beat_warning("", s.song_beat_confidence):
        return
    try:
        plan = plan_of(s)
    except M2DError:
        plan = None
    song = (plan.song.get("path") if plan is not None else None) or s.song_path
    warning = beat_warning(song, s.song_beat_confidence)
    box = layout.box()
    box.alert = True
    for i, line in enumerate(_wrap(warning[0].upper() + warning[1:], 48)):
        box.label(text=line, icon="ERROR" if i == 0 else "BLANK1")


def _wrap(text: str, width: int) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    if cur:
        lines.append(cur)
    return lines or [""]


def draw_phrases(layout, context) -> None:
    s = settings(context)
    if not s.plan_json:
        layout.label(text="Choreograph a song to list its phrases", icon="INFO")
        return
    layout.template_list("M2D_UL_phrases", "", s, "phrases", s, "active_phrase", rows=6)
    if 0 <= s.active_phrase < len(s.phrases):
        draw_active_phrase(layout, context, s.phrases[s.active_phrase])
    row = layout.row(align=True)
    row.operator("m2d.rechoreograph_unlocked", icon="FILE_REFRESH")
    n_locked = sum(1 for p in s.phrases if p.locked)
    layout.label(text=f"{n_locked} locked, {len(s.phrases) - n_locked} re-decoded "
                      f"({s.method})", icon="BLANK1")


def draw_active_phrase(layout, context, item) -> None:
    box = layout.box()
    head = box.row(align=True)
    head.label(text=f"Phrase {item.index + 1}: {_fmt_time(item.start_s)}-"
                    f"{_fmt_time(item.end_s)}  (frames {item.frame_start}-{item.frame_end})")
    op = head.operator("m2d.jump_to_phrase", text="", icon="TIME")
    op.index = item.index
    op = head.operator("m2d.play_phrase", text="", icon="PLAY")
    op.index = item.index
    op = head.operator("m2d.toggle_lock", text="", icon="LOCKED" if item.locked else "UNLOCKED",
                       depress=item.locked)
    op.index = item.index
    hit = "-" if item.beat_hit < 0 else f"{item.beat_hit:.0%} of {item.n_dance_beats}"
    seam = "-" if item.index == 0 else f"{item.seam_jump_cm:.1f} cm"
    box.label(text=f"Beat hit {hit}   Seam jump in {seam}")
    col = box.column(align=True)
    col.label(text="Ranked alternatives (score):")

    class _Probe:  # swap_items reads .index only
        index = item.index

    for pid, label, _desc, _num in swap_items(_Probe, context):
        if pid == "NONE":
            col.label(text=label)
            continue
        row = col.row(align=True)
        chosen = pid == item.phrase_id
        op = row.operator("m2d.swap", text=label, icon="CHECKMARK" if chosen else "BLANK1",
                          depress=chosen)
        op.index = item.index
        op.phrase_id = pid


def draw_quality_export(layout, context) -> None:
    s = settings(context)
    if not s.plan_json:
        layout.label(text="Nothing to export yet", icon="INFO")
        return
    col = layout.column(align=True)
    col.label(text=f"Song beat hit {_pct(s.song_beat_hit)}   coverage "
                   f"{_pct(s.song_beat_coverage)}", icon="SOUND")
    col.label(text=f"Worst seam jump {_cm(s.song_max_seam_cm)}", icon="IPO_EASE_IN_OUT")
    try:
        plan = plan_of(s)
    except M2DError:
        plan = None
    if plan is not None:
        tempo = plan.song.get("tempo_bpm", 0) or 0
        col.label(text=f"{len(plan.phrases)} phrases, {plan.song.get('duration_s', 0):.0f} s, "
                       f"{tempo:.0f} bpm, {plan.fps:g} fps", icon="BLANK1")
    if s.song_beat_confidence >= 0:
        col.label(text=f"Beat confidence {s.song_beat_confidence:.2f}",
                  icon="ERROR" if beat_warning(s.song_path, s.song_beat_confidence)
                  else "BLANK1")
    row = layout.row(align=True)
    row.operator("m2d.play_song", icon="PLAY")
    row = layout.row(align=True)
    row.operator("m2d.export_fbx", icon="EXPORT")
    row.operator("m2d.export_gltf", icon="EXPORT")
    row = layout.row(align=True)
    row.operator("m2d.save_labels", icon="BOOKMARKS")
    row.prop(s, "include_all_labels", text="All")
    layout.operator("m2d.remove_dance", icon="TRASH")


# =========================================================================== panels
class _Base:
    bl_region_type = "UI"
    bl_category = CATEGORY


def _make_panels(space: str, tag: str) -> tuple[type, ...]:
    main_id = f"M2D_PT_{tag}_main"

    def main_draw(self, context):
        draw_setup(self.layout, context)
        draw_run(self.layout, context)

    def phrases_draw(self, context):
        draw_phrases(self.layout, context)

    def quality_draw(self, context):
        draw_quality_export(self.layout, context)

    main = type(main_id, (_Base, bpy.types.Panel), {
        "bl_space_type": space, "bl_label": "Music to Dance", "draw": main_draw,
        "__doc__": "Choreograph a song on an armature"})
    phrases = type(f"M2D_PT_{tag}_phrases", (_Base, bpy.types.Panel), {
        "bl_space_type": space, "bl_label": "Phrases", "bl_parent_id": main_id,
        "draw": phrases_draw, "__doc__": "Swap, lock and re-choreograph phrases"})
    quality = type(f"M2D_PT_{tag}_quality", (_Base, bpy.types.Panel), {
        "bl_space_type": space, "bl_label": "Quality & Export", "bl_parent_id": main_id,
        "bl_options": {"DEFAULT_CLOSED"} if tag == "nla" else set(),
        "draw": quality_draw, "__doc__": "Beat and seam readouts, export, labels"})
    return main, phrases, quality


PANELS = _make_panels("VIEW_3D", "view3d") + _make_panels("NLA_EDITOR", "nla")
M2D_PT_view3d_main, M2D_PT_view3d_phrases, M2D_PT_view3d_quality = PANELS[:3]
M2D_PT_nla_main, M2D_PT_nla_phrases, M2D_PT_nla_quality = PANELS[3:]

classes = (M2D_UL_phrases, *PANELS)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
