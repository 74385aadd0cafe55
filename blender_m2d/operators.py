"""Operators of the Dance panel: thin wrappers that read ``Scene.m2d``, call the headless
engine (:mod:`blender_m2d.core.choreography`, :mod:`blender_m2d.core.editing`,
:mod:`blender_m2d.nla`, :mod:`blender_m2d.export`) and report.

Choreograph runs analysis and scoring on a worker thread that touches no bpy data
(:class:`ChoreographJob`); the modal operator polls it on window-manager timer events and applies
the result on the main thread, so Cancel (or Esc) leaves the scene exactly as it was. In
background mode (``blender -b``, the bpy module) there is no event loop, so the operator waits
for the same job in ``execute``; tests can also drive a job by hand with :func:`start_job` and
:meth:`ChoreographJob.poll`.

Every operator that edits the scene has ``{'REGISTER', 'UNDO'}`` and changes the scene in one
go, so each edit is one undo step. Only :class:`~blender_m2d.core.errors.M2DError` is caught and
reported; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from pathlib import Path

import bpy
from bpy.app.handlers import persistent
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ExportHelper

from .core import editing
from .core.errors import M2DError
from .preferences import BUNDLED_LIBRARY, BUNDLED_MODEL, get_prefs

log = logging.getLogger(__name__)

RUNNING, FINISHED, CANCELLED, FAILED = "RUNNING", "FINISHED", "CANCELLED", "FAILED"
DEVICES = {"AUTO": "auto", "CPU": "cpu", "GPU": "cuda"}


# =========================================================================== resolution
def settings(context):
    return context.scene.m2d


def job_state(context):
    return context.window_manager.m2d_job


def _abspath(path: str) -> str:
    return os.path.normpath(bpy.path.abspath(path)) if path else ""


def armature_of(context):
    """The armature to animate: the panel's choice, else the active object if it is one."""
    s = settings(context)
    if s.armature is not None:
        return s.armature
    ob = getattr(context, "active_object", None)
    return ob if ob is not None and ob.type == "ARMATURE" else None


def library_dir(context) -> Path:
    s = settings(context)
    prefs = get_prefs(context)
    for cand in (s.library_path, prefs.library_dir if prefs else ""):
        if cand:
            return Path(_abspath(cand))
    return BUNDLED_LIBRARY


def model_file(context) -> Path | None:
    """The model to score with, or None for the baseline. M2DError for a chosen model that
    does not exist."""
    s = settings(context)
    if not s.use_model:
        return None
    if s.model_path:
        p = Path(_abspath(s.model_path))
        if not p.exists():
            raise M2DError("the model file does not exist", path=p)
        return p
    prefs = get_prefs(context)
    if prefs and prefs.model_dir:
        p = Path(_abspath(prefs.model_dir))
        if not p.exists():
            raise M2DError("the model folder in the add-on preferences does not exist", path=p)
        return p
    if (BUNDLED_MODEL / "model.onnx").is_file():
        return BUNDLED_MODEL
    return None


def device_of(context) -> str:
    s = settings(context)
    choice = s.device
    if choice == "PREFS":
        prefs = get_prefs(context)
        choice = prefs.device if prefs else "AUTO"
    return DEVICES.get(choice, "auto")


def rig_of(context):
    """The bone-map argument for :func:`blender_m2d.retarget.resolve_bone_map`."""
    s = settings(context)
    if s.rig == "AUTO":
        return None
    if s.rig == "FILE":
        if not s.bone_map_path:
            raise M2DError("choose the bone-map file (Rig: Bone Map File)")
        return _abspath(s.bone_map_path)
    return s.rig


def styles_of(context) -> tuple[str, ...] | None:
    styles = tuple(x.strip() for x in settings(context).styles.split(",") if x.strip())
    return styles or None


# =========================================================================== caches
_LOCK = threading.Lock()
_LIBRARIES: dict[str, tuple[float, object]] = {}
_SCORERS: dict[tuple, object] = {}
_TRANSITIONS: dict[tuple, object] = {}
_PLANS: OrderedDict[str, object] = OrderedDict()


def get_library(path: str | os.PathLike):
    """A loaded dance library, cached while its ``library.json`` is unchanged."""
    from .core.library import load_library

    path = Path(path)
    key = str(path.resolve())
    spec = path / "library.json" if path.is_dir() else path
    try:
        mtime = spec.stat().st_mtime_ns
    except OSError:
        mtime = -1
    with _LOCK:
        hit = _LIBRARIES.get(key)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    lib = load_library(path)
    with _LOCK:
        _LIBRARIES[key] = (mtime, lib)
    return lib


def get_scorer(path: str | os.PathLike, library, device: str):
    """A verified ONNX scorer for ``library``, cached per file, device and library (safe to
    call from the worker thread)."""
    from .core.inference import load_scorer

    model, lib = _model_key(path, library)
    key = (*model, device, lib)
    with _LOCK:
        hit = _SCORERS.get(key)
    if hit is not None:
        return hit
    scorer = load_scorer(path, library, device=device)
    with _LOCK:
        _SCORERS[key] = scorer
    return scorer


def _cached_scorer(path: str | os.PathLike, library):
    """A scorer of this model file and library already loaded for any device (what the
    transition matrix needs; loading another session for it costs tens of ms), or None."""
    model, lib = _model_key(path, library)
    with _LOCK:
        for key, scorer in _SCORERS.items():
            if key[:2] == model and key[3] == lib:
                return scorer
    return None


def _model_key(path: str | os.PathLike, library) -> tuple[tuple[str, int], str]:
    """((resolved ONNX file, its mtime in ns or -1), library hash): what a cached scorer in
    ``_SCORERS`` (keyed ``(file, mtime, device, library hash)``) was loaded from."""
    from .core.inference import resolve_model_paths

    onnx, _ = resolve_model_paths(path)
    try:
        mtime = onnx.stat().st_mtime_ns
    except OSError:
        mtime = -1
    return (str(onnx.resolve()), mtime), str(library.hash)


def plan_of(s):
    """The scene's stored choreography as a Plan (parsed once per stored text), or None."""
    from .core.plan import Plan

    text = s.plan_json
    if not text:
        return None
    key = hashlib.sha1(text.encode("utf-8")).hexdigest()
    plan = _PLANS.get(key)
    if plan is None:
        try:
            doc = json.loads(text)
        except ValueError as err:
            raise M2DError("the stored choreography is damaged; choreograph again") from err
        plan = Plan.from_json(doc)
        _PLANS[key] = plan
        while len(_PLANS) > 16:
            _PLANS.popitem(last=False)
    else:
        _PLANS.move_to_end(key)
    return plan


def probs_of(s):
    return editing.decode_array(s.probs_data) if s.probs_data else None


def transition_of(context, plan, library):
    """The transition matrix the plan was decoded with: the model's, or the baseline's."""
    s = settings(context)
    if plan.scorer.get("kind") == "model":
        if not s.model_used:
            raise M2DError("the model this choreography was made with is unknown; choreograph "
                           "again")
        key = ("model", s.model_used, str(library.hash))
        if key not in _TRANSITIONS:
            scorer = _cached_scorer(s.model_used, library) or \
                get_scorer(s.model_used, library, "cpu")
            _TRANSITIONS[key] = scorer.transition
    else:
        from .core.baseline import library_transition

        key = ("baseline", str(library.hash))
        if key not in _TRANSITIONS:
            _TRANSITIONS[key] = library_transition(library)
    return _TRANSITIONS[key]


def clear_caches() -> None:
    with _LOCK:
        _LIBRARIES.clear()
        _SCORERS.clear()
    _TRANSITIONS.clear()
    _PLANS.clear()


# =========================================================================== scene state
def _fmt_time(t: float) -> str:
    return f"{int(t // 60)}:{t % 60:05.2f}"


def store_plan(context, plan, *, probs=None, edited: set[int] | None = None,
               keep_edited: bool = True) -> None:
    """Write ``plan`` (and ``probs``) into ``Scene.m2d`` and mirror it in the phrase rows."""
    s = settings(context)
    text = json.dumps(plan.to_json(), separators=(",", ":"))
    s.plan_json = text
    key = hashlib.sha1(text.encode("utf-8")).hexdigest()
    _PLANS[key] = plan
    _PLANS.move_to_end(key)
    while len(_PLANS) > 16:          # the same bound as plan_of: one entry per edit otherwise
        _PLANS.popitem(last=False)
    if probs is not None:
        s.probs_data = editing.encode_array(probs)
    old_edited = {r.index for r in s.phrases if r.edited} if keep_edited else set()
    edited = old_edited | (edited or set())
    if len(s.phrases) != len(plan.phrases):
        s.phrases.clear()
        for _ in plan.phrases:
            s.phrases.add()
    readouts = editing.phrase_readouts(plan)
    for row, ph, ro in zip(s.phrases, plan.phrases, readouts):
        rank = next((r for r, c in enumerate(ph.candidates, start=1)
                     if c.phrase_id == ph.phrase_id), 0)
        cand = ph.candidates[rank - 1] if rank else None
        row.name = f"{ph.index + 1} {ph.phrase_id}"
        row.index = ph.index
        row.start_s, row.end_s = ph.music_start_s, ph.music_end_s
        row.frame_start, row.frame_end = ph.frame_start, ph.frame_end
        row.phrase_id = ph.phrase_id
        row.rank = rank
        row.score = cand.score if cand else 0.0
        row.prob = cand.prob if cand else 0.0
        row.locked = ph.locked
        row.edited = ph.index in edited
        row.beat_hit = ro["beat_hit"]
        row.n_dance_beats = ro["n_dance"]
        row.seam_jump_cm = ro["seam_jump_cm"]
    song = editing.song_readouts(plan)
    s.song_beat_hit = song["beat_hit"]
    s.song_beat_coverage = song["beat_coverage"]
    s.song_max_seam_cm = song["max_seam_jump_cm"]
    s.song_beat_confidence = song["beat_confidence"]
    s.evaluation = str((plan.metrics or {}).get("evaluation", ""))
    s.active_phrase = min(max(s.active_phrase, 0), max(len(s.phrases) - 1, 0))


def current(context):
    """``(armature, AppliedPlan, library)`` of the scene's choreography; M2DError when it
    cannot be edited (no plan, armature gone, library missing)."""
    from .nla import AppliedPlan

    s = settings(context)
    plan = plan_of(s)
    if plan is None:
        raise M2DError("there is no choreography in this scene yet; press Choreograph")
    ob = s.target
    if ob is None or ob.name not in context.scene.objects:
        raise M2DError("the armature that dances this choreography is gone; choreograph again")
    if not s.library_used:
        raise M2DError("the dance library of this choreography is unknown; choreograph again")
    library = get_library(s.library_used)
    bone_map = json.loads(s.bone_map_json or "{}")
    if not bone_map:
        from .retarget import resolve_bone_map

        bone_map = resolve_bone_map(ob, rig_of(context))
    return ob, AppliedPlan(plan=plan, bone_map=bone_map), library


def _set_error(context, message: str) -> None:
    st = job_state(context)
    st.error = message
    st.info = ""


def _set_info(context, message: str) -> None:
    st = job_state(context)
    st.info = message
    st.error = ""


def _redraw(context) -> None:
    screen = getattr(context, "screen", None)
    for area in screen.areas if screen else ():
        if area.type in {"VIEW_3D", "NLA_EDITOR"}:
            area.tag_redraw()


# =========================================================================== the job
class ChoreographJob:
    """One choreography run: inputs gathered on the main thread, analysis and scoring on a
    worker thread (no bpy), result applied on the main thread by :meth:`poll`."""

    def __init__(self, *, scene, armature, song: str, library, library_path: str,
                 model: str | None, device: str, bone_map: dict, options) -> None:
        self.scene_name = scene.name
        self.armature_name = armature.name
        self.song = song
        self.library = library
        self.library_path = library_path
        self.model = model
        self.device = device
        self.bone_map = bone_map
        self.options = options
        self.queue: queue.Queue = queue.Queue()
        self.cancel_event = threading.Event()
        self.progress = 0.0
        self.status = "starting"
        self.state = RUNNING
        self.message = ""
        self.started = time.perf_counter()
        self.thread = threading.Thread(target=self._run, name="m2d-choreograph", daemon=True)

    # ---- worker thread: no bpy in here
    def _progress(self, lo: float, hi: float):
        def report(x: float, what: str) -> None:
            self.progress = lo + (hi - lo) * min(max(float(x), 0.0), 1.0)
            self.status = what
            if self.cancel_event.is_set():
                raise M2DError("cancelled")
        return report

    def _run(self) -> None:
        from .core.analysis import MAX_SONG_S, analyze_song
        from .core.audio import load_audio
        from .core.choreography import choreograph

        try:
            scorer = None
            if self.model:
                self._progress(0.0, 0.05)(0.0, "loading the model")
                scorer = get_scorer(self.model, self.library, self.device)
            self._progress(0.05, 0.1)(0.0, "loading the song")
            audio = load_audio(self.song, max_duration_s=MAX_SONG_S)
            self._progress(0.1, 0.1)(0.0, "analysing the song")
            analysis = analyze_song(audio, progress=self._progress(0.1, 0.8),
                                    cancel=self.cancel_event)
            ch = choreograph(audio, self.library, scorer=scorer, options=self.options,
                             progress=self._progress(0.8, 0.9), cancel=self.cancel_event,
                             analysis=analysis)
            used = list(getattr(scorer, "providers_used", [])) if scorer else []
            self.queue.put(("done", (ch.plan, ch.probs, used)))
        except M2DError as err:
            if self.cancel_event.is_set():
                self.queue.put(("cancelled", None))
            else:
                self.queue.put(("error", str(err)))
        except Exception as err:  # a bug: keep the traceback in the console, tell the user
            log.exception("choreography worker failed")
            self.queue.put(("crash", f"{type(err).__name__}: {err}"))

    # ---- main thread
    def start(self) -> ChoreographJob:
        self.thread.start()
        return self

    def request_cancel(self) -> None:
        self.cancel_event.set()

    def poll(self, context) -> str:
        """Drain the worker's messages; apply a finished result. Returns the job state."""
        if self.state != RUNNING:
            return self.state
        st = job_state(context)
        st.progress = self.progress
        st.status = self.status
        try:
            kind, value = self.queue.get_nowait()
        except queue.Empty:
            if self.cancel_event.is_set() and not self.thread.is_alive():
                kind, value = "cancelled", None
            else:
                return RUNNING
        if self.cancel_event.is_set():
            kind = "cancelled"
        if kind == "done":
            try:
                st.status = "placing the dance on the armature"
                self._apply(context, *value)
                self.state = FINISHED
            except M2DError as err:
                self.state, self.message = FAILED, str(err)
        elif kind == "cancelled":
            self.state, self.message = CANCELLED, "Choreography cancelled; nothing was changed"
        elif kind == "crash":
            self.state, self.message = FAILED, f"Internal error ({value}); see the console"
        else:
            self.state, self.message = FAILED, str(value)
        _finish_job(context, self)
        return self.state

    def _apply(self, context, plan, probs, providers) -> None:
        from . import nla

        # look both up by name: an undo or file load during the run replaces the Python
        # objects the job started with
        scene = bpy.data.scenes.get(self.scene_name)
        ob = bpy.data.objects.get(self.armature_name)
        alive = (scene is not None and ob is not None and ob.type == "ARMATURE"
                 and ob.name in scene.objects)
        if not alive:
            raise M2DError(f"the armature '{self.armature_name}' was removed or renamed during "
                           "the run; nothing was changed")
        applied = nla.apply_plan(ob, plan, self.library, rig=self.bone_map, scene=scene,
                                 sound=True, markers=True, evaluate=True)
        s = scene.m2d
        s.target = ob
        s.library_used = self.library_path
        s.model_used = str(self.model or "")
        s.device_used = ", ".join(providers) if providers else "baseline (no model)"
        s.bone_map_json = json.dumps(applied.bone_map)
        s.phrases.clear()
        s.active_phrase = 0
        store_plan(context, applied.plan, probs=probs, keep_edited=False)
        seconds = time.perf_counter() - self.started
        song = editing.song_readouts(applied.plan)
        hit = f", beat hit {song['beat_hit']:.0%}" if song["beat_hit"] >= 0 else ""
        self.message = (f"Placed {len(plan.phrases)} phrases on '{ob.name}' in {seconds:.1f} s"
                        f"{hit}")
        for w in applied.warnings:
            log.warning(w)


_JOB: ChoreographJob | None = None


def current_job() -> ChoreographJob | None:
    return _JOB


def _finish_job(context, job: ChoreographJob) -> None:
    global _JOB
    st = job_state(context)
    st.running = False
    st.progress = 1.0 if job.state == FINISHED else 0.0
    st.status = ""
    if job.state == FINISHED:
        _set_info(context, job.message)
    elif job.state == CANCELLED:
        _set_info(context, job.message)
    else:
        _set_error(context, job.message)
    if _JOB is job:
        _JOB = None
    try:
        context.window_manager.progress_end()
    except (AttributeError, RuntimeError):
        pass


def _body_option(ob, bone_map: dict) -> dict:
    """``target_bone_lengths`` and ``target_rig`` for ChoreographyOptions: the beat sync
    composes the dance on the armature's own body, as ``m2d choreograph`` does. Read on the
    main thread (bpy data), before any worker starts."""
    from . import nla, retarget

    return {"target_bone_lengths": nla.rig_bone_lengths(ob, bone_map),
            "target_rig": retarget.target_rig(ob, bone_map)[0]}


def start_job(context) -> ChoreographJob:
    """Validate the panel's inputs on the main thread and start the worker. M2DError for
    anything the user must fix (the scene is not touched)."""
    global _JOB
    from .core.choreography import ChoreographyOptions
    from .core.decode import DecodeOptions
    from .nla import scene_fps
    from .retarget import resolve_bone_map

    if _JOB is not None and _JOB.thread.is_alive():
        raise M2DError("a choreography is already running; wait or cancel it")
    s = settings(context)
    ob = armature_of(context)
    if ob is None:
        raise M2DError("choose the armature to animate (Dance panel > Armature)")
    if not s.song_path:
        raise M2DError("choose a song (Dance panel > Song)")
    song = _abspath(s.song_path)
    if not os.path.isfile(song):
        raise M2DError("the song file does not exist", path=song)
    bone_map = resolve_bone_map(ob, rig_of(context))
    lib_dir = library_dir(context)
    library = get_library(lib_dir)
    model = model_file(context)
    device = device_of(context)
    scene = context.scene
    options = ChoreographyOptions(
        decode=DecodeOptions(method=s.method, no_repeat=s.no_repeat, styles=styles_of(context),
                             top_k=s.top_k),
        fps=scene_fps(scene), frame_start=int(scene.frame_start),
        **_body_option(ob, bone_map))
    if options.decode.styles:
        from .core.decode import style_mask

        style_mask([p.style for p in library.phrases], options.decode.styles)
    job = ChoreographJob(scene=scene, armature=ob, song=song, library=library,
                         library_path=str(lib_dir), model=str(model) if model else None,
                         device=device, bone_map=bone_map, options=options)
    st = job_state(context)
    st.running, st.progress, st.status, st.error, st.info = True, 0.0, "starting", "", ""
    _JOB = job.start()
    return job


# =========================================================================== operators
def choreograph_blocker(context) -> str:
    """Why Choreograph cannot run now ("" when it can); shown by the poll and the panel."""
    if _JOB is not None:
        return "A choreography is already running"
    if armature_of(context) is None:
        return "Choose the armature to animate (Dance panel > Armature)"
    if not settings(context).song_path:
        return "Choose a song (Dance panel > Song)"
    return ""


def _poll_plan(cls, context) -> bool:
    s = settings(context)
    if _JOB is not None:
        cls.poll_message_set("Wait for the running choreography (or cancel it)")
        return False
    if not s.plan_json:
        cls.poll_message_set("Choreograph a song first")
        return False
    if s.target is None:
        cls.poll_message_set("The armature of this choreography is gone; choreograph again")
        return False
    return True


class M2D_OT_choreograph(bpy.types.Operator):
    """Analyse the song, score every library phrase and place the dance on the armature"""

    bl_idname = "m2d.choreograph"
    bl_label = "Choreograph"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012 (Blender idiom)

    _timer = None
    _job = None

    @classmethod
    def poll(cls, context):
        why = choreograph_blocker(context)
        if why:
            cls.poll_message_set(why)
            return False
        return True

    def execute(self, context):
        try:
            job = start_job(context)
        except M2DError as err:
            _set_error(context, str(err))
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self._job = job
        wm = context.window_manager
        if bpy.app.background or context.window is None:
            while job.poll(context) == RUNNING:       # no event loop: wait here
                time.sleep(0.02)
            return self._result(job)
        wm.progress_begin(0, 100)
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = self._job
        if event.type == "ESC" and event.value == "PRESS":
            job.request_cancel()
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        state = job.poll(context)
        context.window_manager.progress_update(int(job.progress * 100))
        _redraw(context)
        if state == RUNNING:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        return self._result(job)

    def _result(self, job):
        if job.state == FINISHED:
            self.report({"INFO"}, job.message)
            return {"FINISHED"}
        if job.state == CANCELLED:
            self.report({"WARNING"}, job.message)
            return {"CANCELLED"}
        self.report({"ERROR"}, job.message)
        return {"CANCELLED"}


class M2D_OT_cancel(bpy.types.Operator):
    """Stop the running choreography; the scene stays as it was"""

    bl_idname = "m2d.cancel"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}  # noqa: RUF012 (Blender idiom)

    @classmethod
    def poll(cls, context):
        if _JOB is None:
            cls.poll_message_set("Nothing is running")
            return False
        return True

    def execute(self, context):
        _JOB.request_cancel()
        job_state(context).status = "cancelling"
        return {"FINISHED"}


_SWAP_ITEMS: dict[int, list] = {}
_NO_ITEMS = [("NONE", "No alternatives", "Choreograph a song first", 0)]


def swap_items(self, context):
    """Ranked alternatives of phrase ``self.index`` (kept referenced per index: Blender keeps
    pointers to these strings)."""
    if context is None:
        return _NO_ITEMS
    try:
        plan = plan_of(context.scene.m2d)
    except M2DError:
        plan = None
    index = int(getattr(self, "index", 0))
    if plan is None or not 0 <= index < len(plan.phrases):
        return _NO_ITEMS
    items = editing.ranked_choices(plan, index)
    _SWAP_ITEMS[index] = items
    return items


def swap_phrase(context, index: int, phrase_id: str) -> str:
    """Swap phrase ``index`` (0-based) for ``phrase_id`` on the NLA and in the stored plan;
    the swapped phrase is locked. Returns a one-line summary."""
    from . import nla

    ob, applied, library = current(context)
    plan = applied.plan
    if not 0 <= index < len(plan.phrases):
        raise M2DError(f"there is no phrase {index + 1} (the song has {len(plan.phrases)})")
    if phrase_id not in set(library.ids):
        raise M2DError(f"the dance library has no phrase {phrase_id!r}")
    old = plan.phrases[index].phrase_id
    if old == phrase_id:
        return f"Phrase {index + 1} already is {phrase_id}"
    new = nla.replace_phrase(ob, applied, index, phrase_id, library, scene=context.scene,
                             evaluate=True)
    s = settings(context)
    probs = probs_of(s)
    out = editing.rerank_after(new.plan, index, library, probs,
                               transition_of(context, new.plan, library) if probs is not None
                               else None,
                               styles=(new.plan.decoding or {}).get("styles"))
    store_plan(context, out, edited={index})
    return f"Phrase {index + 1}: {old} -> {phrase_id} (locked)"


class M2D_OT_swap(bpy.types.Operator):
    """Place another ranked dance phrase on this music phrase (it gets locked)"""

    bl_idname = "m2d.swap"
    bl_label = "Swap Phrase"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012 (Blender idiom)

    index: IntProperty(name="Phrase", description="Music phrase (0-based)", min=0)
    candidate: EnumProperty(name="Alternative", items=swap_items,
                            description="Ranked alternatives with their scores")
    phrase_id: StringProperty(name="Phrase Id", options={"SKIP_SAVE"},
                              description="Library phrase id (overrides Alternative)")

    @classmethod
    def poll(cls, context):
        return _poll_plan(cls, context)

    def execute(self, context):
        pid = self.phrase_id or self.candidate
        if not pid or pid == "NONE":
            self.report({"ERROR"}, "No alternative chosen")
            return {"CANCELLED"}
        try:
            msg = swap_phrase(context, self.index, pid)
        except M2DError as err:
            _set_error(context, str(err))
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        settings(context).active_phrase = self.index
        _set_info(context, msg)
        self.report({"INFO"}, msg)
        return {"FINISHED"}


class M2D_OT_toggle_lock(bpy.types.Operator):
    """Lock (keep) or unlock this phrase for Re-choreograph Unlocked"""

    bl_idname = "m2d.toggle_lock"
    bl_label = "Lock Phrase"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012 (Blender idiom)

    index: IntProperty(name="Phrase", min=0)

    @classmethod
    def poll(cls, context):
        return _poll_plan(cls, context)

    def execute(self, context):
        import dataclasses

        s = settings(context)
        try:
            plan = plan_of(s)
            if not 0 <= self.index < len(plan.phrases):
                raise M2DError(f"there is no phrase {self.index + 1}")
        except M2DError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        ph = plan.phrases[self.index]
        plan = plan.with_phrase(self.index, dataclasses.replace(ph, locked=not ph.locked))
        store_plan(context, plan)
        state = "locked" if not ph.locked else "unlocked"
        _set_info(context, f"Phrase {self.index + 1} {state}")
        return {"FINISHED"}


def rechoreograph_unlocked(context) -> str:
    """Re-decode the unlocked phrases with the transition matrix around the locked ones and
    re-place the dance; returns a summary."""
    from . import nla
    from .core.decode import DecodeOptions

    ob, applied, library = current(context)
    s = settings(context)
    plan = applied.plan
    probs = probs_of(s)
    if probs is None:
        raise M2DError("this choreography has no stored phrase scores; choreograph again")
    transition = transition_of(context, plan, library)
    locks = {p.index: p.phrase_id for p in plan.phrases if p.locked}
    dopt = DecodeOptions(method=s.method, no_repeat=s.no_repeat, styles=styles_of(context),
                         top_k=s.top_k)
    new = editing.redecode(plan, library, probs, transition, locks=locks, decode_options=dopt,
                           **_body_option(ob, applied.bone_map))
    changed = editing.changed_phrases(plan, new)
    if not changed:
        import dataclasses

        kept = dataclasses.replace(new, metrics=plan.metrics, armature=plan.armature,
                                   timings_s=plan.timings_s)
        store_plan(context, kept)
        return f"No phrase changed ({len(locks)} locked)"
    import dataclasses

    # phrases whose dance or timing changed; the others (locked or not) keep their place
    moved = [i for i, (a, b) in enumerate(zip(plan.phrases, new.phrases))
             if a.phrase_id != b.phrase_id or a.warp != b.warp
             or (a.frame_start, a.frame_end) != (b.frame_start, b.frame_end)]
    out = None
    if len(new.phrases) == len(plan.phrases) and moved:
        local = dataclasses.replace(new, metrics=plan.metrics, armature=plan.armature,
                                    timings_s=plan.timings_s)
        out = nla.replace_phrases(ob, applied, local, moved, library, scene=context.scene,
                                  evaluate=True)
        if out is not None:
            for i in moved:
                nla._rename_phrase_marker(context.scene, i, new.phrases[i].phrase_id)
    if out is None:
        out = nla.apply_plan(ob, new, library, rig=applied.bone_map, scene=context.scene,
                             sound=False, markers=True, evaluate=True)
    store_plan(context, out.plan)
    return (f"Re-choreographed: {len(changed)} phrase(s) changed, {len(locks)} locked kept")


class M2D_OT_rechoreograph_unlocked(bpy.types.Operator):
    """Keep the locked phrases and decode the others again with the transition matrix"""

    bl_idname = "m2d.rechoreograph_unlocked"
    bl_label = "Re-choreograph Unlocked"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012 (Blender idiom)

    @classmethod
    def poll(cls, context):
        return _poll_plan(cls, context)

    def execute(self, context):
        try:
            msg = rechoreograph_unlocked(context)
        except M2DError as err:
            _set_error(context, str(err))
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        _set_info(context, msg)
        self.report({"INFO"}, msg)
        return {"FINISHED"}


def _music_frame(plan, index: int) -> int:
    return round(plan.frame_start + plan.phrases[index].music_start_s * plan.fps)


class M2D_OT_jump_to_phrase(bpy.types.Operator):
    """Go to the start of this phrase"""

    bl_idname = "m2d.jump_to_phrase"
    bl_label = "Jump to Phrase"
    bl_options = {"REGISTER"}  # noqa: RUF012 (Blender idiom)

    index: IntProperty(name="Phrase", min=0)

    @classmethod
    def poll(cls, context):
        if not settings(context).plan_json:
            cls.poll_message_set("Choreograph a song first")
            return False
        return True

    def execute(self, context):
        s = settings(context)
        try:
            plan = plan_of(s)
            if not 0 <= self.index < len(plan.phrases):
                raise M2DError(f"there is no phrase {self.index + 1}")
        except M2DError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        context.scene.frame_set(_music_frame(plan, self.index))
        s.active_phrase = self.index
        return {"FINISHED"}


class M2D_OT_play_phrase(bpy.types.Operator):
    """Play this phrase in a loop (sets the preview range); run again to stop"""

    bl_idname = "m2d.play_phrase"
    bl_label = "Play Phrase"
    bl_options = {"REGISTER"}  # noqa: RUF012 (Blender idiom)

    index: IntProperty(name="Phrase", min=0)

    @classmethod
    def poll(cls, context):
        return M2D_OT_jump_to_phrase.poll(context)

    def execute(self, context):
        s = settings(context)
        scene = context.scene
        screen = getattr(context, "screen", None)
        playing = bool(screen and screen.is_animation_playing)
        if playing and not bpy.app.background:
            bpy.ops.screen.animation_cancel(restore_frame=False)
            return {"FINISHED"}
        try:
            plan = plan_of(s)
            if not 0 <= self.index < len(plan.phrases):
                raise M2DError(f"there is no phrase {self.index + 1}")
        except M2DError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        ph = plan.phrases[self.index]
        scene.use_preview_range = True
        scene.frame_preview_start = max(ph.frame_start, scene.frame_start)
        scene.frame_preview_end = ph.frame_end
        scene.frame_set(_music_frame(plan, self.index))
        s.active_phrase = self.index
        if not bpy.app.background and screen is not None:
            bpy.ops.screen.animation_play()
        return {"FINISHED"}


class M2D_OT_play_song(bpy.types.Operator):
    """Play the whole song from the start (clears the preview range)"""

    bl_idname = "m2d.play_song"
    bl_label = "Play Song"
    bl_options = {"REGISTER"}  # noqa: RUF012 (Blender idiom)

    @classmethod
    def poll(cls, context):
        return M2D_OT_jump_to_phrase.poll(context)

    def execute(self, context):
        scene = context.scene
        screen = getattr(context, "screen", None)
        if screen is not None and screen.is_animation_playing and not bpy.app.background:
            bpy.ops.screen.animation_cancel(restore_frame=False)
            return {"FINISHED"}
        scene.use_preview_range = False
        scene.frame_set(scene.frame_start)
        if not bpy.app.background and screen is not None:
            bpy.ops.screen.animation_play()
        return {"FINISHED"}


class _ExportBase:
    @classmethod
    def poll(cls, context):
        return _poll_plan(cls, context)

    def _export(self, context, fn, what: str):
        try:
            ob, _, _ = current(context)
            path = fn(ob, self.filepath)
        except M2DError as err:
            _set_error(context, str(err))
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        msg = f"Exported {what} to {path}"
        _set_info(context, msg)
        self.report({"INFO"}, msg)
        return {"FINISHED"}


class M2D_OT_export_fbx(_ExportBase, bpy.types.Operator, ExportHelper):
    """Export the armature with the baked dance to FBX (Unity, Unreal)"""

    bl_idname = "m2d.export_fbx"
    bl_label = "Export FBX"
    bl_options = {"REGISTER"}  # noqa: RUF012 (Blender idiom)

    filename_ext = ".fbx"
    filter_glob: StringProperty(default="*.fbx", options={"HIDDEN"})

    def execute(self, context):
        from .export import export_fbx

        return self._export(context, export_fbx, "FBX")


class M2D_OT_export_gltf(_ExportBase, bpy.types.Operator, ExportHelper):
    """Export the armature with the baked dance to binary glTF (.glb)"""

    bl_idname = "m2d.export_gltf"
    bl_label = "Export glTF"
    bl_options = {"REGISTER"}  # noqa: RUF012 (Blender idiom)

    filename_ext = ".glb"
    filter_glob: StringProperty(default="*.glb", options={"HIDDEN"})

    def execute(self, context):
        from .export import export_glb

        return self._export(context, export_glb, "glTF")


class M2D_OT_save_labels(bpy.types.Operator):
    """Save the swapped and locked phrases as labelled pairs in a training dataset folder, so
    the choreographers' choices can retrain the model"""

    bl_idname = "m2d.save_labels"
    bl_label = "Save Edits as Labels"
    bl_options = {"REGISTER"}  # noqa: RUF012 (Blender idiom)

    directory: StringProperty(name="Dataset Folder", subtype="DIR_PATH")
    filter_folder: BoolProperty(default=True, options={"HIDDEN"})
    include_all: BoolProperty(name="All Phrases", default=False,
                              description="Every phrase, not only the swapped and locked ones")

    @classmethod
    def poll(cls, context):
        if not settings(context).plan_json:
            cls.poll_message_set("Choreograph a song first")
            return False
        return True

    def invoke(self, context, event):
        self.include_all = settings(context).include_all_labels
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        from .core import labels

        s = settings(context)
        try:
            if not self.directory:
                raise M2DError("choose the dataset folder")
            plan = plan_of(s)
            library = get_library(s.library_used)
            picked = None if self.include_all else [
                r.index for r in s.phrases if r.locked or r.edited]
            rows = labels.rows_from_plan(plan, picked)
            res = labels.save_labels(_abspath(self.directory), song_path=plan.song["path"],
                                     library_path=s.library_used, library_hash=library.hash,
                                     rows=rows)
        except M2DError as err:
            _set_error(context, str(err))
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        msg = (f"Saved {res['rows']} labelled phrase(s) of '{res['song']}' to {res['labels']} "
               f"({res['total']} in the dataset)")
        _set_info(context, msg)
        self.report({"INFO"}, msg)
        return {"FINISHED"}


class M2D_OT_remove_dance(bpy.types.Operator):
    """Remove the dance (tracks, actions, song strip, markers) and the stored choreography"""

    bl_idname = "m2d.remove_dance"
    bl_label = "Remove Dance"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012 (Blender idiom)

    @classmethod
    def poll(cls, context):
        return _poll_plan(cls, context)

    def execute(self, context):
        from . import nla

        s = settings(context)
        nla.remove_plan(s.target, context.scene)
        s.plan_json = ""
        s.probs_data = ""
        s.phrases.clear()
        s.song_beat_hit = s.song_beat_coverage = s.song_max_seam_cm = -1.0
        s.song_beat_confidence = -1.0
        _set_info(context, "Dance removed")
        return {"FINISHED"}


class M2D_OT_use_active_armature(bpy.types.Operator):
    """Use the active object as the armature to animate"""

    bl_idname = "m2d.use_active_armature"
    bl_label = "Use Active"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012 (Blender idiom)

    @classmethod
    def poll(cls, context):
        ob = getattr(context, "active_object", None)
        if ob is None or ob.type != "ARMATURE":
            cls.poll_message_set("Make an armature the active object")
            return False
        return True

    def execute(self, context):
        settings(context).armature = context.active_object
        return {"FINISHED"}


@persistent
def _on_load(_dummy=None) -> None:
    """A file load ends any run and resets the runtime state."""
    global _JOB
    if _JOB is not None:
        _JOB.request_cancel()
        _JOB = None
    for wm in bpy.data.window_managers:
        st = getattr(wm, "m2d_job", None)
        if st is not None:
            st.running, st.progress, st.status = False, 0.0, ""


classes = (M2D_OT_choreograph, M2D_OT_cancel, M2D_OT_swap, M2D_OT_toggle_lock,
           M2D_OT_rechoreograph_unlocked, M2D_OT_jump_to_phrase, M2D_OT_play_phrase,
           M2D_OT_play_song, M2D_OT_export_fbx, M2D_OT_export_gltf, M2D_OT_save_labels,
           M2D_OT_remove_dance, M2D_OT_use_active_armature)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    if _on_load not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(_on_load)


def unregister() -> None:
    global _JOB
    if _JOB is not None:
        _JOB.request_cancel()
        _JOB = None
    if _on_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
    clear_caches()
