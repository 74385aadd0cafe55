"""``m2d choreograph SONG --out OUT.blend``: a song in, a dancing armature out (headless).

The song is analysed into music phrases, every library phrase is scored for every music phrase
(the ONNX model when one matches the library, else the rhythm/energy baseline), the decoder
picks the sequence, and the phrases are placed on the armature's NLA with crossfades
(:mod:`blender_m2d.nla`). Outputs (.blend, .fbx, .glb, PLAN.json, preview .png) are written to
temporary siblings and moved into place only when every one of them succeeded.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAME = "choreograph"
HELP = "choreograph a song onto an armature's NLA and save .blend / .fbx / .glb / PLAN.json"

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parents[1]
BUNDLED_LIBRARY = PACKAGE / "assets" / "library"
BUNDLED_MODEL = PACKAGE / "assets" / "model" / "model.onnx"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("song", metavar="SONG", help="audio file (wav, ogg, flac, mp3, ...)")
    add_common_arguments(parser)
    parser.add_argument("--out", required=True, metavar="OUT.blend", help="the .blend to write")
    parser.add_argument("--fbx", metavar="OUT.fbx", help="also export FBX")
    parser.add_argument("--glb", metavar="OUT.glb", help="also export binary glTF")
    parser.add_argument("--plan", metavar="PLAN.json", help="also write the plan")
    parser.add_argument("--preview", metavar="OUT.png", help="also draw a preview picture")
    parser.add_argument("--blend", metavar="IN.blend",
                        help="choreograph onto an armature in this file (default: a new scene "
                        "with a test rig)")
    parser.add_argument("--armature", metavar="NAME",
                        help="armature object in --blend (default: the only armature)")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--library", metavar="LIB", help="dance library folder "
                        "(default: the bundled library)")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--model", metavar="MODEL.onnx", help="trained model (its model.json must "
                   "match the library); default: the bundled model if it matches, else the "
                   "baseline")
    g.add_argument("--baseline", action="store_true",
                   help="score with the rhythm/energy baseline even if a model is available")
    parser.add_argument("--rig", metavar="PRESET", default=None,
                        help="bone-map preset of the armature (mixamo, rigify, unreal, "
                        "canonical, ...) or a bone-map JSON; for a new scene also the test "
                        "rig to build (default mixamo)")
    parser.add_argument("--seed", type=int, default=0,
                        help="0: the best-scoring dance; N > 0: a different plausible dance "
                        "per seed (scores perturbed with Gumbel noise)")
    parser.add_argument("--variety", type=float, default=0.3,
                        help="noise scale used with --seed N > 0 (default 0.3)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="onnxruntime device (default auto: CUDA if available)")
    parser.add_argument("--decoder", choices=("greedy", "viterbi"), default="greedy",
                        help="greedy = the paper's Eq. 6 (default); viterbi = best whole path")
    parser.add_argument("--allow-repeats", action="store_true",
                        help="allow a dance phrase to follow itself")
    parser.add_argument("--recent", type=int, default=None, metavar="N",
                        help="variety: a dance phrase used among the last N music phrases is "
                        "penalised (default 4; 0 = the paper's plain decoder)")
    parser.add_argument("--recent-penalty", type=float, default=None, metavar="X",
                        help="log-score charged per recent use (default 0.5)")
    parser.add_argument("--styles", metavar="S1,S2", help="only use phrases of these styles")
    parser.add_argument("--lock", action="append", default=[], metavar="N=ID",
                        help="keep dance phrase ID on music phrase N (1-based; repeat)")
    parser.add_argument("--top-k", type=int, default=5, help="alternatives kept per phrase")
    parser.add_argument("--fps", type=float, default=30.0,
                        help="scene frame rate for a new scene (default 30)")
    parser.add_argument("--crossfade", type=float, default=0.3, metavar="S",
                        help="crossfade length in seconds (default 0.3)")
    parser.add_argument("--feet", choices=("lock", "none"), default="lock",
                        help="foot handling in crossfades (default lock)")


# =========================================================================== outputs
class Outputs:
    """Temporary siblings for every output; :meth:`commit` moves them all into place."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []

    def temp(self, final: str | os.PathLike) -> Path:
        from ..export import check_writable

        final = check_writable(final)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}",
                                   dir=final.parent if str(final.parent) else ".")
        os.close(fd)
        os.unlink(tmp)
        self.pending.append((Path(tmp), final))
        return Path(tmp)

    def commit(self) -> list[Path]:
        mode = 0o666 & ~_umask()
        for tmp, final in self.pending:
            os.chmod(tmp, mode)                 # temp files are created private (0600)
            os.replace(tmp, final)
        done = [final for _, final in self.pending]
        self.pending = []
        return done

    def abort(self) -> None:
        for tmp, _ in self.pending:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self.pending = []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# =========================================================================== pipeline
@dataclass
class Result:
    plan: Any
    applied: Any
    files: list[Path] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)


def load_library_arg(path: str | None):
    from ..core.errors import M2DError
    from ..core.library import load_library

    lib_path = Path(path) if path else BUNDLED_LIBRARY
    if not path and not (lib_path / "library.json").is_file():
        raise M2DError("no bundled dance library in this installation; pass --library LIB",
                       path=lib_path)
    return load_library(lib_path)


def load_scorer_arg(args, library):
    """The scorer the arguments ask for, or None for the baseline."""
    from ..core.errors import M2DError
    from ..core.inference import load_scorer

    if getattr(args, "baseline", False):
        return None
    if args.model:
        return load_scorer(args.model, library, device=args.device)
    if not BUNDLED_MODEL.is_file():
        log.info("no bundled model; scoring with the rhythm/energy baseline")
        return None
    try:
        return load_scorer(BUNDLED_MODEL, library, device=args.device)
    except M2DError as err:
        if Path(library.path).resolve() == BUNDLED_LIBRARY.resolve():
            raise
        log.info("the bundled model does not match this library (%s); using the baseline", err)
        return None


def options_from_args(args, fps: float):
    from ..core.choreography import ChoreographyOptions
    from ..core.decode import RECENT, RECENT_PENALTY, DecodeOptions
    from ..core.errors import M2DError
    from ..core.placement import PlacementOptions

    locks = {}
    for spec in args.lock or []:
        n, sep, pid = spec.partition("=")
        if not sep or not n.strip().isdigit() or not pid.strip() or int(n) < 1:
            raise M2DError(f"--lock expects N=PHRASE_ID with N >= 1, got {spec!r}")
        locks[int(n) - 1] = pid.strip()
    styles = tuple(s.strip() for s in args.styles.split(",") if s.strip()) \
        if args.styles else None
    recent = getattr(args, "recent", None)
    recent = RECENT if recent is None else recent
    penalty = getattr(args, "recent_penalty", None)
    penalty = RECENT_PENALTY if penalty is None else penalty
    if recent < 0 or not penalty >= 0 or penalty == float("inf"):
        raise M2DError(f"--recent must be >= 0 and --recent-penalty finite and >= 0, got "
                       f"{recent} and {penalty}")
    dec = DecodeOptions(method=args.decoder, no_repeat=not args.allow_repeats, styles=styles,
                        top_k=args.top_k, seed=args.seed,
                        variety=args.variety if args.seed else 0.0, recent=recent,
                        recent_penalty=penalty)
    place = PlacementOptions(crossfade_s=args.crossfade, feet=args.feet)
    return ChoreographyOptions(decode=dec, placement=place, fps=fps, locks=locks)


def prepare_scene(*, blend: str | None, armature: str | None, rig: str | None, fps: float):
    """Open ``blend`` (or start an empty scene with a test rig); return (armature, rig)."""
    import bpy

    from ..core.errors import M2DError

    if blend:
        if not os.path.isfile(blend):
            raise M2DError("no such .blend file", path=blend)
        bpy.ops.wm.open_mainfile(filepath=os.fspath(blend))
        arms = [ob for ob in bpy.context.scene.objects if ob.type == "ARMATURE"]
        if armature:
            ob = bpy.data.objects.get(armature)
            if ob is None or ob.type != "ARMATURE":
                raise M2DError(f"no armature named {armature!r} (armatures: "
                               f"{', '.join(a.name for a in arms) or 'none'})", path=blend)
        elif len(arms) == 1:
            ob = arms[0]
        else:
            raise M2DError(f"the file has {len(arms)} armatures; pick one with --armature "
                           f"({', '.join(a.name for a in arms)})", path=blend)
        return ob, rig
    from .. import rigs

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = round(fps), round(fps) / fps
    preset = rig or "mixamo"
    ob = rigs.build_test_armature(preset, name="Dancer")
    return ob, preset


def _target_rig(armature_ob, rig):
    """The armature's retarget target (what the beat sync composes the dance on)."""
    from .. import retarget

    return retarget.target_rig(armature_ob, retarget.resolve_bone_map(armature_ob, rig))[0]


def run_pipeline(song: str, *, args, out_blend: str | os.PathLike | None,
                 fbx: str | os.PathLike | None = None, glb: str | os.PathLike | None = None,
                 plan_path: str | os.PathLike | None = None,
                 preview_path: str | os.PathLike | None = None,
                 outputs: Outputs | None = None) -> Result:
    """Everything ``m2d choreograph`` does; outputs go through ``outputs`` (committed by the
    caller, or here when ``outputs`` is None)."""
    import bpy

    from .. import export, nla
    from ..core.choreography import Timer, choreograph
    from ..core.errors import M2DError

    timer = Timer()
    own = outputs is None
    outputs = outputs or Outputs()
    try:
        # claim every output first: a read-only folder fails before any work
        tmp_blend = outputs.temp(out_blend) if out_blend else None
        tmp_fbx = outputs.temp(fbx) if fbx else None
        tmp_glb = outputs.temp(glb) if glb else None
        tmp_plan = outputs.temp(plan_path) if plan_path else None
        tmp_prev = outputs.temp(preview_path) if preview_path else None
        if not os.path.isfile(song):
            raise M2DError("no such song file", path=song)
        with timer("load_library"):
            library = load_library_arg(args.library)
        with timer("load_model"):
            scorer = load_scorer_arg(args, library)
        with timer("scene"):
            ob, rig = prepare_scene(blend=getattr(args, "blend", None),
                                    armature=getattr(args, "armature", None), rig=args.rig,
                                    fps=args.fps)
            scene = bpy.context.scene
            fps = scene.render.fps / scene.render.fps_base
            # the armature's bones are checked here, before the song is analysed
            lengths = nla.rig_bone_lengths(ob, rig)
            target = _target_rig(ob, rig)
        options = dataclasses.replace(options_from_args(args, fps),
                                      target_bone_lengths=lengths, target_rig=target)
        result = choreograph(song, library, scorer=scorer, options=options, timer=timer)
        t0 = time.perf_counter()
        applied = nla.apply_plan(ob, result.plan, library, rig=rig, scene=scene)
        timer.timings["apply"] = round(time.perf_counter() - t0, 4)
        plan = applied.plan
        text = bpy.data.texts.get("m2d PLAN.json") or bpy.data.texts.new("m2d PLAN.json")
        text.from_string(json.dumps(plan.to_json(), indent=1))
        if tmp_blend is not None:
            with timer("save_blend"):
                export.save_blend(tmp_blend)
        if tmp_fbx is not None:
            with timer("export_fbx"):
                export.export_fbx(ob, tmp_fbx)
        if tmp_glb is not None:
            with timer("export_glb"):
                export.export_glb(ob, tmp_glb)
        if tmp_prev is not None:
            from ..preview import render_preview

            with timer("preview"):
                render_preview(tmp_prev, applied.positions, plan)
        timings = {**plan.timings_s, **timer.timings}
        plan = dataclasses.replace(plan, timings_s=timings)
        applied.plan = plan
        if tmp_plan is not None:
            plan.save(tmp_plan)
        files = outputs.commit() if own else []
        return Result(plan=plan, applied=applied, files=files, timings_s=timings)
    except BaseException:
        if own:
            outputs.abort()
        raise


def summary_lines(result: Result) -> list[str]:
    plan = result.plan
    m = plan.metrics
    b = m.get("beats", {}).get("song", {})
    seams = m.get("seams", {})
    feet = m.get("feet", {}).get("seam_zones", {})
    dur = plan.song.get("duration_s", 0.0)
    confidence = plan.song.get("beat_confidence")
    beat = "" if confidence is None else f" (beat confidence {confidence:.2f})"
    lines = [
        f"{Path(plan.song['path']).name}: {dur:.1f} s, {plan.song.get('tempo_bpm', 0):.0f} bpm"
        f"{beat}, {len(plan.phrases)} phrases, scorer {plan.scorer['kind']}, decoder "
        f"{plan.decoding['method']}",
        f"beats: hit rate {b.get('beat_hit_rate', 0):.1%}, overlap "
        f"{b.get('beat_overlap', 0):.3f}, coverage {b.get('beat_coverage', 0):.1%}, music hit "
        f"rate {b.get('music_hit_rate', 0):.1%}",
        f"seams: max root jump {seams.get('max_root_jump_cm', 0):.2f} cm, max root gap "
        f"{seams.get('max_root_gap_cm', 0):.2f} cm; foot skate at seams "
        f"{feet.get('mean_cm_s', 0):.2f} cm/s",
        "phrases: " + " ".join(p.phrase_id for p in plan.phrases),
    ]
    t = result.timings_s
    total = sum(v for k, v in t.items() if k in STAGES)
    lines.append("time: " + ", ".join(f"{k} {t[k]:.2f}s" for k in STAGES if k in t)
                 + f" (sum {total:.2f} s, {total / max(dur, 1e-6):.3f} s per s of music)")
    for f in result.files:
        lines.append(f"wrote {f}")
    return lines


STAGES = ("load_library", "load_model", "scene", "load_audio", "analysis", "music_descriptors",
          "dance_descriptors", "features", "scoring", "decode", "warp", "beat_sync", "apply",
          "save_blend", "export_fbx", "export_glb", "preview")


def run(args: argparse.Namespace) -> int:
    result = run_pipeline(args.song, args=args, out_blend=args.out, fbx=args.fbx, glb=args.glb,
                          plan_path=args.plan, preview_path=args.preview)
    for line in summary_lines(result):
        print(line)
    for w in warnings_of(result):
        print(f"warning: {w}")
    return 0


def warnings_of(result: Result) -> list[str]:
    """What the run should warn about at the end: a song without a clear beat (also logged
    when it was analysed), then the placement's warnings."""
    from ..core.analysis import beat_warning

    song = result.plan.song
    beat = beat_warning(song.get("path"), song.get("beat_confidence"))
    return ([beat] if beat else []) + list(result.applied.warnings)
