"""Bad input through the Dance panel: the operator reports the problem (``bpy.ops`` raises it as
``RuntimeError``), the panel shows it, and the scene, including a choreography already in it,
does not change. Also: Cancel, a real ONNX model with the device actually used, a GPU request
where onnxruntime has no CUDA."""

from __future__ import annotations

import pytest

bpy = pytest.importorskip("bpy")

import ui_support as U  # noqa: E402


@pytest.fixture(scope="module")
def addon():
    import blender_m2d

    U.fresh_scene()
    blender_m2d.register()
    yield blender_m2d
    blender_m2d.unregister()
    U.fresh_scene()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    pytest.importorskip("torch")
    from blender_m2d.preferences import BUNDLED_LIBRARY

    return U.make_models(tmp_path_factory.mktemp("models"), BUNDLED_LIBRARY)


@pytest.fixture()
def scene(addon):
    """A scene that already dances to the short fixture song."""
    from blender_m2d import rigs

    scene = U.fresh_scene()
    ob = rigs.build_test_armature("mixamo", name="Dancer", with_mesh=False)
    scene.m2d.armature = ob
    scene.m2d.song_path = str(U.SHORT_SONG)
    assert bpy.ops.m2d.choreograph() == {"FINISHED"}
    bpy.context.window_manager.m2d_job.error = ""
    return scene


def _error_in_panel(context) -> str:
    from blender_m2d import panels

    mock = U.load_mock_tool()
    rec = mock.draw_panel(panels.M2D_PT_view3d_main, context)
    return " ".join(t for t in rec.texts())


def _assert_refused(scene, match: str, **kwargs):
    before = U.snapshot(scene)
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.m2d.choreograph(**kwargs)
    assert U.snapshot(scene) == before
    return before


def test_no_armature_chosen_disables_choreograph_and_says_why(addon):
    scene = U.fresh_scene()
    scene.m2d.song_path = str(U.SHORT_SONG)
    before = U.snapshot(scene)
    assert not bpy.ops.m2d.choreograph.poll()
    with pytest.raises(RuntimeError, match="Choose the armature"):
        bpy.ops.m2d.choreograph()
    assert U.snapshot(scene) == before
    assert "Choose the armature to animate" in _error_in_panel(bpy.context)


def test_audio_that_fails_to_load_is_reported_and_changes_nothing(scene):
    scene.m2d.song_path = str(U.CORRUPT_SONG)
    _assert_refused(scene, "corrupt.mp3")
    err = bpy.context.window_manager.m2d_job.error
    assert "corrupt.mp3" in err
    assert "corrupt.mp3" in _error_in_panel(bpy.context)
    scene.m2d.song_path = "/no/such/song.wav"
    _assert_refused(scene, "does not exist")


def test_incompatible_rig_is_reported_and_changes_nothing(scene):
    arm = bpy.data.armatures.new("Blob")
    ob = bpy.data.objects.new("Blob", arm)
    scene.collection.objects.link(ob)
    bpy.context.view_layer.objects.active = ob
    bpy.ops.object.mode_set(mode="EDIT")
    for name, head, tail in (("a", (0, 0, 0), (0, 0, 1)), ("b", (0, 0, 1), (0, 0, 2))):
        b = arm.edit_bones.new(name)
        b.head, b.tail = head, tail
    bpy.ops.object.mode_set(mode="OBJECT")
    scene.m2d.armature = ob
    _assert_refused(scene, "Blob")
    assert "Blob" in bpy.context.window_manager.m2d_job.error


def test_model_for_another_library_is_reported_and_changes_nothing(scene, models):
    _good, other = models
    scene.m2d.model_path = str(other / "model.onnx")
    scene.m2d.device = "CPU"
    _assert_refused(scene, "library")
    scene.m2d.model_path = "/no/such/model.onnx"
    _assert_refused(scene, "does not exist")


def test_gpu_without_cuda_is_reported(scene, models):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    good, _ = models
    scene.m2d.model_path = str(good)
    scene.m2d.device = "GPU"
    _assert_refused(scene, "cuda")


def test_model_scores_and_the_device_used_is_shown(scene, models):
    from blender_m2d import operators

    good, _ = models
    s = scene.m2d
    s.model_path = str(good)
    s.device = "CPU"
    assert bpy.ops.m2d.choreograph() == {"FINISHED"}
    plan = operators.plan_of(s)
    assert plan.scorer["kind"] == "model"
    assert s.device_used == "CPUExecutionProvider"
    assert "Used: CPUExecutionProvider" in _error_in_panel(bpy.context)
    alt = plan.phrases[1].candidates[1].phrase_id
    assert bpy.ops.m2d.swap(index=1, phrase_id=alt) == {"FINISHED"}
    assert bpy.ops.m2d.rechoreograph_unlocked() == {"FINISHED"}   # the model's matrix
    assert operators.plan_of(s).phrases[1].phrase_id == alt


def test_cancel_leaves_the_scene_unchanged(scene, tmp_path):
    from blender_m2d import operators, panels

    scene.m2d.song_path = str(U.excerpt(tmp_path / "song_20s.wav", 20.0))
    before = U.snapshot(scene)
    job = operators.start_job(bpy.context)
    assert bpy.context.window_manager.m2d_job.running
    assert not bpy.ops.m2d.choreograph.poll()            # one run at a time
    rec = U.load_mock_tool().draw_panel(panels.M2D_PT_view3d_main, bpy.context)
    assert rec.calls("progress") and ("m2d.cancel", {}) in rec.operators()
    assert "m2d.choreograph" not in [op for op, _ in rec.operators()]
    assert bpy.ops.m2d.cancel() == {"FINISHED"}
    assert U.pump(job, bpy.context) == operators.CANCELLED
    assert U.snapshot(scene) == before
    st = bpy.context.window_manager.m2d_job
    assert not st.running and "cancelled" in st.info
    assert operators.current_job() is None and bpy.ops.m2d.choreograph.poll()


def test_a_finished_result_is_dropped_when_cancel_came_first(scene):
    """Cancel pressed after the worker finished but before the result was applied."""
    from blender_m2d import operators

    before = U.snapshot(scene)
    job = operators.start_job(bpy.context)
    job.thread.join(timeout=300)
    job.request_cancel()
    assert U.pump(job, bpy.context) == operators.CANCELLED
    assert U.snapshot(scene) == before


def test_armature_removed_during_the_run_changes_nothing(scene):
    from blender_m2d import operators, rigs

    other = rigs.build_test_armature("mixamo", name="Gone", with_mesh=False)
    scene.m2d.armature = other
    job = operators.start_job(bpy.context)
    scene.m2d.armature = None
    bpy.data.objects.remove(other)
    before = U.snapshot(scene)
    assert U.pump(job, bpy.context) == operators.FAILED
    assert "removed" in bpy.context.window_manager.m2d_job.error
    assert U.snapshot(scene) == before
