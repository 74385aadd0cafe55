"""The Dance panels drawn headless into a recording layout (tools/render_panel_mock.py), in both
editors, before and after choreographing; the phrase list's rows; registration round trip; and
the docs mock (docs/ui_panel.txt) naming every control the panels draw now."""

from __future__ import annotations

import pytest

bpy = pytest.importorskip("bpy")

import ui_support as U  # noqa: E402

from blender_m2d.core.errors import M2DError  # noqa: E402

MOCK = U.load_mock_tool()


@pytest.fixture(scope="module")
def addon():
    import blender_m2d

    U.fresh_scene()
    blender_m2d.register()
    yield blender_m2d
    blender_m2d.unregister()
    U.fresh_scene()


@pytest.fixture(scope="module")
def danced(addon):
    from blender_m2d import rigs

    scene = U.fresh_scene()
    ob = rigs.build_test_armature("mixamo", name="Dancer", with_mesh=False)
    scene.m2d.armature = ob
    scene.m2d.song_path = str(U.SHORT_SONG)
    assert bpy.ops.m2d.choreograph() == {"FINISHED"}
    return scene


def _panels():
    from blender_m2d import panels

    return panels


def _ops(rec) -> list[str]:
    return [op for op, _ in rec.operators()]


def _props(rec) -> list[str]:
    return [c[2][1] for c in rec.calls("prop")]


def test_register_unregister_round_trip():
    import blender_m2d

    U.fresh_scene()
    blender_m2d.register()
    try:
        assert hasattr(bpy.types.Scene, "m2d") and hasattr(bpy.types.WindowManager, "m2d_job")
        assert "choreograph" in dir(bpy.ops.m2d)
    finally:
        blender_m2d.unregister()
    assert not hasattr(bpy.types.Scene, "m2d")
    assert not hasattr(bpy.types, "M2D_PT_view3d_main")
    blender_m2d.register()
    blender_m2d.unregister()


def test_preferences_give_the_defaults_when_enabled_as_an_addon(tmp_path):
    """Enabled the way Blender enables it, the add-on's preferences supply the library, model
    and device when the scene leaves them empty."""
    import addon_utils

    from blender_m2d import operators, preferences

    U.fresh_scene()
    addon_utils.enable("blender_m2d", default_set=True, persistent=False)
    try:
        prefs = preferences.get_prefs(bpy.context)
        assert prefs is not None and prefs.device == "AUTO"
        assert operators.library_dir(bpy.context) == preferences.BUNDLED_LIBRARY
        prefs.library_dir = str(tmp_path / "studio_lib")
        prefs.model_dir = str(tmp_path / "studio_model")
        prefs.device = "CPU"
        s = bpy.context.scene.m2d
        assert operators.library_dir(bpy.context) == tmp_path / "studio_lib"
        assert operators.device_of(bpy.context) == "cpu"
        with pytest.raises(M2DError, match="preferences does not exist"):
            operators.model_file(bpy.context)
        s.library_path, s.device = str(tmp_path / "scene_lib"), "GPU"
        assert operators.library_dir(bpy.context) == tmp_path / "scene_lib"
        assert operators.device_of(bpy.context) == "cuda"
        s.use_model = False
        assert operators.model_file(bpy.context) is None
    finally:
        addon_utils.disable("blender_m2d", default_set=True)
    assert not hasattr(bpy.types.Scene, "m2d")


def test_panels_live_in_the_dance_tab_of_both_sidebars(addon):
    p = _panels()
    spaces = {}
    for cls in p.PANELS:
        registered = getattr(bpy.types, cls.__name__)
        assert registered.bl_region_type == "UI" and registered.bl_category == "Dance"
        spaces.setdefault(cls.bl_space_type, []).append(cls.bl_label)
    assert spaces == {"VIEW_3D": ["Music to Dance", "Phrases", "Quality & Export"],
                      "NLA_EDITOR": ["Music to Dance", "Phrases", "Quality & Export"]}


def test_setup_panel_before_choreographing(addon):
    p = _panels()
    U.fresh_scene()
    rec = MOCK.draw_panel(p.M2D_PT_view3d_main, bpy.context)
    assert _props(rec)[:7] == ["armature", "song_path", "library_path", "use_model",
                               "model_path", "device", "rig"]
    assert _ops(rec) == ["m2d.use_active_armature", "m2d.choreograph"]
    assert not bpy.ops.m2d.choreograph.poll()
    assert "Choose the armature to animate (Dance panel > Armature)" in rec.texts()
    assert "Library: bundled" in rec.texts()
    rec = MOCK.draw_panel(p.M2D_PT_view3d_phrases, bpy.context)
    assert rec.calls("template_list") == [] and rec.texts() == [
        "Choreograph a song to list its phrases"]


def test_phrases_panel_lists_rows_with_ranked_swaps_and_locks(danced):
    p = _panels()
    s = danced.m2d
    from blender_m2d import operators

    plan = operators.plan_of(s)
    s.active_phrase = 1
    rec = MOCK.draw_panel(p.M2D_PT_view3d_phrases, bpy.context)
    (tl,) = rec.calls("template_list")
    assert tl[2][:6] == ("M2D_UL_phrases", "", s, "phrases", s, "active_phrase")
    ops = rec.operators()
    swaps = [props for op, props in ops if op == "m2d.swap"]
    assert [sw["phrase_id"] for sw in swaps] == [c.phrase_id for c in plan.phrases[1].candidates]
    assert all(sw["index"] == 1 for sw in swaps)
    assert ("m2d.jump_to_phrase", {"index": 1}) in ops and ("m2d.play_phrase", {"index": 1}) in ops
    assert ("m2d.toggle_lock", {"index": 1}) in ops
    assert "m2d.rechoreograph_unlocked" in _ops(rec)
    labels = rec.texts()
    assert any(t.startswith("1. ") for t in labels) and any(t.startswith("2. ") for t in labels)
    assert any(t.startswith("Beat hit ") for t in labels)


def test_each_list_row_has_a_ranked_dropdown_and_a_lock(danced):
    p = _panels()
    s = danced.m2d
    for i, item in enumerate(s.phrases):
        rec = MOCK.RecordingLayout()
        p.M2D_UL_phrases.draw_item(None, bpy.context, rec, s, item, 0, s, "active_phrase", i)
        (menu,) = rec.calls("operator_menu_enum")
        assert menu[2] == ("m2d.swap", "candidate")
        assert menu[3]["text"].startswith(f"{item.rank}. {item.phrase_id}")
        assert f"{item.score:.2f}" in menu[3]["text"]
        assert rec.operators() == [("m2d.swap", {"index": i}), ("m2d.toggle_lock", {"index": i})]
        from blender_m2d import operators

        class Probe:
            index = i

        items = operators.swap_items(Probe, bpy.context)
        ids = [it[0] for it in items]
        assert item.phrase_id in ids and len(set(it[3] for it in items)) == len(items)


def test_quality_panel_shows_readouts_and_export(danced):
    p = _panels()
    rec = MOCK.draw_panel(p.M2D_PT_view3d_quality, bpy.context)
    assert _ops(rec) == ["m2d.play_song", "m2d.export_fbx", "m2d.export_gltf",
                         "m2d.save_labels", "m2d.remove_dance"]
    texts = rec.texts()
    assert any(t.startswith("Song beat hit ") and "%" in t for t in texts)
    assert any(t.startswith("Worst seam jump ") and "cm" in t for t in texts)


def test_nla_editor_panels_draw_the_same_controls(danced):
    p = _panels()
    for a, b in ((p.M2D_PT_view3d_main, p.M2D_PT_nla_main),
                 (p.M2D_PT_view3d_phrases, p.M2D_PT_nla_phrases),
                 (p.M2D_PT_view3d_quality, p.M2D_PT_nla_quality)):
        ra, rb = MOCK.draw_panel(a, bpy.context), MOCK.draw_panel(b, bpy.context)
        assert rb.operators() == ra.operators() and _props(rb) == _props(ra)


def test_error_state_is_drawn_as_an_alert(danced):
    p = _panels()
    st = bpy.context.window_manager.m2d_job
    st.error = "song.mp3: cannot decode this file"
    try:
        rec = MOCK.draw_panel(p.M2D_PT_view3d_main, bpy.context)
    finally:
        st.error = ""
    assert ("layout.box", "set:alert", (True,), {}) in rec.log
    assert any("cannot decode" in t for t in rec.texts())


def test_docs_mock_names_every_control_the_panels_draw(danced):
    """docs/ui_panel.txt is regenerated by tools/render_panel_mock.py; this fails when a control
    was added to or renamed in the panels without regenerating it."""
    text = (U.REPO / "docs" / "ui_panel.txt").read_text()
    p = _panels()
    for cls in (p.M2D_PT_view3d_main, p.M2D_PT_view3d_phrases, p.M2D_PT_view3d_quality):
        rec = MOCK.draw_panel(cls, bpy.context)
        for kind, props, _args, kw in _walk(rec):
            if kind == "operator" and kw.get("text") is None:
                assert MOCK._op_label(props.idname) in text, props.idname
        for c in rec.calls("prop"):
            data, name = c[2][:2]
            label = c[3].get("text", data.bl_rna.properties[name].name)
            if label:
                assert label in text, name
    png = U.REPO / "docs" / "ui_panel.png"
    assert png.is_file() and png.stat().st_size > 10_000


def _walk(rec):
    for kind, obj, args, kw in rec.items:
        if kind == "layout":
            yield from _walk(obj)
        else:
            yield kind, obj, args, kw


def test_a_song_without_a_clear_beat_is_danced_with_a_warning_row(danced, tmp_path):
    """The fixture song's clear beat draws no warning; a noise "song" is still choreographed
    (a warning, not an error), its low beat confidence reaches Scene.m2d from the plan, and the
    main panel draws the warning in a red box; the quality panel shows the number. Runs last:
    it replaces the module's danced scene."""
    import numpy as np
    import soundfile as sf

    from blender_m2d import operators, rigs
    from blender_m2d.core.analysis import LOW_BEAT_CONFIDENCE

    p = _panels()
    s = danced.m2d
    clear = operators.plan_of(s).song["beat_confidence"]
    assert s.song_beat_confidence == pytest.approx(clear) and clear >= LOW_BEAT_CONFIDENCE
    main = MOCK.draw_panel(p.M2D_PT_view3d_main, bpy.context)
    assert not any("clear beat" in t for t in main.texts())
    quality = MOCK.draw_panel(p.M2D_PT_view3d_quality, bpy.context)
    assert f"Beat confidence {clear:.2f}" in quality.texts()

    noise = tmp_path / "room_noise.wav"
    sf.write(noise, 0.1 * np.random.default_rng(1).normal(size=12 * 22050), 22050)
    scene = U.fresh_scene()
    scene.m2d.armature = rigs.build_test_armature("mixamo", name="Dancer", with_mesh=False)
    scene.m2d.song_path = str(noise)
    assert bpy.ops.m2d.choreograph() == {"FINISHED"}
    s = scene.m2d
    plan = operators.plan_of(s)
    assert len(plan.phrases) >= 2 and not bpy.context.window_manager.m2d_job.error
    low = plan.song["beat_confidence"]
    assert low < LOW_BEAT_CONFIDENCE and s.song_beat_confidence == pytest.approx(low)
    main = MOCK.draw_panel(p.M2D_PT_view3d_main, bpy.context)
    warning = (f"No clear beat found in room_noise.wav (confidence {low:.2f}): the dance "
               "follows an estimated grid")
    assert warning in " ".join(main.texts())
    assert ("layout.box", "set:alert", (True,), {}) in main.log
    assert main.texts() == MOCK.draw_panel(p.M2D_PT_nla_main, bpy.context).texts()
    quality = MOCK.draw_panel(p.M2D_PT_view3d_quality, bpy.context)
    assert f"Beat confidence {low:.2f}" in quality.texts()
    # a plan stored before the measure existed (no confidence) draws no warning
    s.song_beat_confidence = -1.0
    main = MOCK.draw_panel(p.M2D_PT_view3d_main, bpy.context)
    assert not any("clear beat" in t for t in main.texts())
