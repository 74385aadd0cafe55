"""Shared pieces of the Dance-panel tests (tests/blender/test_ui_*.py): registering the add-on
the way Blender does (``blender_m2d.register()``), a short real song, scene snapshots for
"nothing changed" checks, pumping a choreography job by hand (timers never fire headless), tiny
ONNX models, and the recording layout from ``tools/render_panel_mock.py``."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SONG_SRC = REPO / "data" / "songs" / "kevin_macleod_vibe_ace.ogg"
SHORT_SONG = REPO / "data" / "fixtures" / "audio" / "music_10s.ogg"
CORRUPT_SONG = REPO / "data" / "fixtures" / "audio" / "corrupt.mp3"


def load_mock_tool():
    path = REPO / "tools" / "render_panel_mock.py"
    spec = importlib.util.spec_from_file_location("render_panel_mock", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("render_panel_mock", mod)
    spec.loader.exec_module(mod)
    return sys.modules["render_panel_mock"]


def excerpt(dst: Path, seconds: float = 24.0, src: Path = SONG_SRC) -> Path:
    """The first ``seconds`` of a real song as a WAV file."""
    import soundfile as sf

    y, sr = sf.read(str(src), frames=int(seconds * 44100), dtype="float32", always_2d=True)
    sf.write(str(dst), y, sr)
    return dst


def fresh_scene():
    """An empty scene (the add-on stays registered)."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


def snapshot(scene) -> dict:
    """Everything a choreography run could change in a scene, as plain data."""
    import bpy

    objs = {}
    for ob in scene.objects:
        ad = ob.animation_data
        tracks = []
        if ad is not None:
            for tr in ad.nla_tracks:
                tracks.append((tr.name, tuple((s.name, s.action.name if s.action else None,
                                               round(s.frame_start, 3), round(s.frame_end, 3),
                                               round(s.blend_in, 3), round(s.blend_out, 3))
                                              for s in tr.strips)))
        objs[ob.name] = (ob.type, tuple(tracks),
                         ad.action.name if ad is not None and ad.action else None)
    se = scene.sequence_editor
    strips = tuple(sorted((s.name, s.channel, s.frame_start) for s in se.strips)) if se else ()
    s = scene.m2d
    return {
        "objects": objs,
        "actions": tuple(sorted(a.name for a in bpy.data.actions)),
        "sounds": tuple(sorted(x.name for x in bpy.data.sounds)),
        "strips": strips,
        "markers": tuple(sorted((m.name, m.frame) for m in scene.timeline_markers)),
        "frames": (scene.frame_start, scene.frame_end, scene.frame_current),
        "plan": hashlib.sha1(s.plan_json.encode()).hexdigest(),
        "probs": hashlib.sha1(s.probs_data.encode()).hexdigest(),
        "rows": tuple((r.index, r.phrase_id, r.locked) for r in s.phrases),
        "target": s.target.name if s.target else None,
    }


def pump(job, context, timeout_s: float = 300.0) -> str:
    """Call the job's poll (what the modal operator does on timer events) until it ends."""
    from blender_m2d import operators

    t0 = time.perf_counter()
    while (state := job.poll(context)) == operators.RUNNING:
        if time.perf_counter() - t0 > timeout_s:
            job.request_cancel()
            raise TimeoutError("choreography job did not finish")
        time.sleep(0.02)
    return state


def pose_quats(ob, frames) -> np.ndarray:
    """Depsgraph-evaluated local quaternions [shape=(F, B, 4)] of every pose bone."""
    import bpy

    scene = bpy.context.scene
    keep = scene.frame_current
    out = np.zeros((len(frames), len(ob.pose.bones), 4))
    try:
        for i, f in enumerate(frames):
            scene.frame_set(int(f))
            ev = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
            for j, pb in enumerate(ev.pose.bones):
                out[i, j] = pb.matrix_basis.to_quaternion()
    finally:
        scene.frame_set(keep)
    return out


def pose_heads(ob, frames) -> np.ndarray:
    """Depsgraph-evaluated world head positions [shape=(F, B, 3)] of every pose bone."""
    import bpy

    scene = bpy.context.scene
    keep = scene.frame_current
    out = np.zeros((len(frames), len(ob.pose.bones), 3))
    try:
        for i, f in enumerate(frames):
            scene.frame_set(int(f))
            ev = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
            mw = np.array(ev.matrix_world)
            for j, pb in enumerate(ev.pose.bones):
                out[i, j] = mw[:3, :3] @ np.array(pb.head) + mw[:3, 3]
    finally:
        scene.frame_set(keep)
    return out


MODEL_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    sys.path.insert(0, sys.argv[1])
    from blender_m2d.core.baseline import library_transition
    from blender_m2d.core.library import load_library
    from models import Encoder, Predictor, get_preset
    from models.export_onnx import export_model

    torch.manual_seed(0)
    lib = load_library(sys.argv[2])
    for out, ids, lib_hash, m in (
            (sys.argv[3], list(lib.ids), lib.hash, library_transition(lib)),
            (sys.argv[4], [f"other_{i}" for i in range(6)], "0" * 64,
             np.full((6, 6), 0.5, np.float32))):
        cfg = get_preset("tiny", n_classes=len(ids))
        export_model(Encoder(cfg).eval(), Predictor(cfg).eval(), out, cfg=cfg, phrase_ids=ids,
                     library_hash=lib_hash, transition=np.asarray(m, np.float32))
    print("ok")
""")


def make_models(tmp: Path, library_dir: Path) -> tuple[Path, Path]:
    """Untrained tiny ONNX models: one for ``library_dir`` and one for another library (made in
    a separate process: torch stays out of the Blender process)."""
    script = tmp / "make_models.py"
    script.write_text(MODEL_SCRIPT)
    good, other = tmp / "model_ok", tmp / "model_other"
    proc = subprocess.run([sys.executable, str(script), str(REPO), str(library_dir), str(good),
                           str(other)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout + proc.stderr)
    return good, other
