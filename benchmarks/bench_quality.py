"""Choreography quality against baselines on the same songs (issue #8).

    .venv/bin/python benchmarks/bench_quality.py [--quick] [--songs A.ogg B.ogg ...]

Songs: ``data/songs/*`` and ``../shared/data/music/*`` when present, deduplicated by content
(``--quick``: the bundled ``kevin_macleod_vibe_ace.ogg`` only). Every song is analysed once;
then, with the bundled dance library:

Phrase choice (time warp + beat sync, root continuity + foot lock for all):

* ``random phrase``: a uniformly random library phrase per music phrase (seeded per song);
* ``most frequent phrase``: every music phrase scored with the same prior, the frequency with
  which the rhythm/energy matcher picks each library phrase on the *other* songs (these picks
  are the bundled model's training labels, so this is the classic majority-class baseline);
  decoded greedily with the style transition matrix and no immediate repeats, so it alternates
  the most frequent phrases;
* ``rhythm/energy matcher`` (``core.baseline``), greedy (paper Eq. 6) and Viterbi;
* ``model greedy`` / ``model Viterbi``: the bundled ONNX model
  (``blender_m2d/assets/model/model.onnx``) when it exists and matches the library.

Time warp (the default scorer: the model when bundled, else the matcher; greedy):

* ``no time warp``: each dance phrase plays at its captured speed from the start of its music
  phrase (cut at the end, or holding its last pose);
* ``beat warp, no beat sync``: the beat-anchored warp (``placement.fit_warp``) alone;
* ``beat warp + beat sync``: the product's default (``core.beatsync`` refinement).

Seams (the default plan): root continuity (each phrase turned and moved so its root and heading
continue the previous one's at the crossfade middle, Hermite root path over the crossfade) on or
off, and foot lock on or off (``PlacementOptions.feet``); plus the plain crossfade (aligned
roots, linear root mix, no foot lock). "Root continuity off" keeps every phrase where the library
has it: the alignment is undone with the yaw and translation ``place_all`` records (there is no
placement option for it).

Every variant is placed with ``core.placement`` on the canonical skeleton (body normalised to
the median leg length of the phrases used) and blended exactly like the NLA recipe
(``placement.blend_placed``); the metrics are ``nla.measure`` (the paper's four beat metrics with
the supplement's dance-beat detector, foot skate) and ``core.metrics.seam_root_metrics``, the same
functions the product runs on the evaluated armature. Beat metrics are pooled over all songs
(counts summed) and averaged over 30 s clips. Prints a table and one ``BENCH_JSON`` line.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SONG_DIRS = [REPO / "data" / "songs", REPO.parent / "shared" / "data" / "music"]
QUICK_SONG = REPO / "data" / "songs" / "kevin_macleod_vibe_ace.ogg"
AUDIO = (".ogg", ".wav", ".flac", ".mp3")

from blender_m2d.core import metrics as M  # noqa: E402
from blender_m2d.core import placement as P  # noqa: E402
from blender_m2d.core.errors import M2DError  # noqa: E402

log = logging.getLogger("bench_quality")

GOAL_HIT_RATE = 0.8          # issue #5 targets (tests/blender/test_choreograph_quality.py)
GOAL_OVERLAP = 0.55
GOAL_ROOT_JUMP_CM = 1.0


# =========================================================================== songs
def find_songs(paths: list[str] | None, quick: bool) -> list[Path]:
    if paths:
        files = [Path(p) for p in paths]
    elif quick:
        files = [QUICK_SONG]
    else:
        files = [f for d in SONG_DIRS if d.is_dir() for f in sorted(d.iterdir())
                 if f.suffix.lower() in AUDIO]
    seen, out = set(), []
    for f in files:
        h = hashlib.sha256(f.read_bytes()).hexdigest()
        if h not in seen:
            seen.add(h)
            out.append(f)
    return out


# =========================================================================== placing
def identity_warp(ph, dance_duration_s: float) -> dict:
    """Warp summary that plays the dance phrase at its captured speed from the music phrase
    start (holding its last pose if it runs out)."""
    s, e = ph.music_start_s, ph.music_end_s
    used = min(e - s, dance_duration_s)
    anchors = [[s, 0.0], [s + used, used]]
    if s + used < e - 1e-6:
        anchors.append([e, used])
    return P.Warp(np.asarray(anchors), dance_duration_s).summary()


def without_warp(plan, library):
    phrases = []
    for ph in plan.phrases:
        dur = float(library.phrases[library.index_of(ph.phrase_id)].duration_s)
        phrases.append(dataclasses.replace(ph, warp=identity_warp(ph, dur)))
    return dataclasses.replace(plan, phrases=tuple(phrases))


def place(plan, library, *, root: str, feet: str):
    """Placed motions of ``plan``; ``root``: hermite | linear | off (library positions)."""
    from blender_m2d import nla

    if root != "off":
        opts = P.PlacementOptions(root=root, feet=feet)
        placed, _ = nla.place_plan(plan, library, options=opts)
        return placed
    opts = P.PlacementOptions(root="linear", feet="none")
    placed, _ = nla.place_plan(plan, library, options=opts)
    prev = None
    for pm in placed:
        # undo the alignment: p = Rz(-a) (p' - t), q = qz(-a) q'
        inv_yaw = -float(pm.yaw)
        t = np.asarray(pm.translation, dtype=np.float64)
        pos = P.qrot(P.qz(inv_yaw), pm.positions - t[None, None, :])
        rot = P.qmul(P.qz(inv_yaw), pm.rotations)
        ref = None
        if prev is not None:
            k = pm.frame_start - prev.frame_start
            if 0 <= k < prev.n_frames:
                ref = prev.rotations[k]
        pm.positions, pm.rotations = pos, P.make_continuous(rot, ref)
        pm.yaw, pm.translation = 0.0, np.zeros(3)
        prev = pm
    if feet == "lock" and len(placed) > 1:
        P.lock_feet(placed, fps=plan.fps, options=P.PlacementOptions(root="linear", feet=feet))
    return placed


def evaluate(plan, library, *, root: str = "hermite", feet: str = "lock") -> dict:
    """Beat, seam and foot metrics of ``plan`` placed with the given seam handling."""
    from blender_m2d import nla
    from blender_m2d.core.skeleton import ROOT

    placed = place(plan, library, root=root, feet=feet)
    pos, _ = P.blend_placed(placed, xf_frames=plan.crossfade_frames,
                            frame_first=plan.frame_start, frame_last=plan.frame_end)
    out = nla.measure(pos, plan)
    seams = []
    for i in range(1, len(placed)):
        a, b = placed[i - 1], placed[i]
        f0, f1 = b.frame_start, a.frame_end
        mid = (f0 + f1) // 2
        seams.append(M.seam_root_metrics(
            pos[:, ROOT], frame0=plan.frame_start, seam=M.Seam(i, f0, f1), fps=plan.fps,
            root_a_mid=a.positions[mid - a.frame_start, 0],
            root_b_mid=b.positions[mid - b.frame_start, 0]))
    out["seams"] = {"max_root_jump_cm": max((s["root_jump_cm"] for s in seams), default=0.0),
                    "max_root_gap_cm": max((s["root_gap_cm"] for s in seams), default=0.0),
                    "n_seams": len(seams)}
    return out


# =========================================================================== variants
@dataclasses.dataclass
class Song:
    path: Path
    audio: object
    analysis: object
    base: object                 # Choreography of the matcher (greedy)
    model_scores: tuple | None = None


def make(song: Song, library, probs, transition, info, *, method="greedy", beat_sync=True):
    from blender_m2d.core.choreography import ChoreographyOptions, make_plan
    from blender_m2d.core.decode import DecodeOptions
    from blender_m2d.core.editing import phrase_beats

    plan0 = song.base.plan
    intervals = [(p.music_start_s, p.music_end_s) for p in plan0.phrases]
    pbeats = [phrase_beats(plan0.beats_s, s, e) for s, e in intervals]
    opts = ChoreographyOptions(decode=DecodeOptions(method=method), beat_sync=beat_sync,
                               fit_prior=info.get("kind") == "model")
    return make_plan(song=dict(plan0.song), intervals_s=intervals, phrase_beats_s=pbeats,
                     beats_s=np.asarray(plan0.beats_s), library=library, probs=probs,
                     transition=transition, scorer_info=info, options=opts)


def random_probs(song: Song, k: int) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(song.path.name.encode()))
    n = len(song.base.plan.phrases)
    return rng.random((n, k)) + 1e-3


def frequency_probs(song: Song, counts: Counter, ids: list[str]) -> np.ndarray:
    freq = np.array([counts.get(pid, 0) for pid in ids], dtype=np.float64) + 0.01
    freq /= freq.sum()
    return np.tile(freq, (len(song.base.plan.phrases), 1))


# =========================================================================== aggregation
def aggregate(per_song: dict[str, dict]) -> dict:
    n_d = sum(m["beats"]["song"]["n_dance"] for m in per_song.values())
    n_m = sum(m["beats"]["song"]["n_music"] for m in per_song.values())
    n_h = sum(m["beats"]["song"]["n_hits"] for m in per_song.values())
    pooled = M.BeatMetrics(n_d, n_m, n_h).to_json()
    clips = sum(m["beats"]["clips_30s"]["n_clips"] for m in per_song.values())
    per_clip = {}
    for key in ("beat_coverage", "beat_hit_rate", "music_hit_rate", "beat_overlap"):
        per_clip[key] = round(sum(m["beats"]["clips_30s"]["per_clip_mean"][key]
                                  * m["beats"]["clips_30s"]["n_clips"]
                                  for m in per_song.values()) / max(clips, 1), 4)
    steps = sum(m["feet"]["seam_zones"]["contact_steps"] for m in per_song.values())
    skate = sum(m["feet"]["seam_zones"]["mean_cm_s"] * m["feet"]["seam_zones"]["contact_steps"]
                for m in per_song.values()) / max(steps, 1)
    return {"pooled": pooled, "per_clip_mean": per_clip, "n_clips": clips,
            "max_root_jump_cm": max(m["seams"]["max_root_jump_cm"] for m in per_song.values()),
            "max_root_gap_cm": max(m["seams"]["max_root_gap_cm"] for m in per_song.values()),
            "skate_cm_s": round(skate, 3), "contact_steps": steps}


# =========================================================================== main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the bundled 61 s song only")
    ap.add_argument("--songs", nargs="+", help="songs to use instead of the default set")
    ap.add_argument("--json", metavar="OUT.json", help="also write all per-song metrics here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    t_all = time.perf_counter()

    from blender_m2d.commands.choreograph import BUNDLED_LIBRARY, BUNDLED_MODEL
    from blender_m2d.core.analysis import analyze_song
    from blender_m2d.core.audio import load_audio
    from blender_m2d.core.choreography import choreograph, score_phrases
    from blender_m2d.core.library import load_library

    library = load_library(BUNDLED_LIBRARY)
    ids = list(library.ids)
    scorer, model_note = None, "no bundled model (blender_m2d/assets/model/model.onnx)"
    if BUNDLED_MODEL.is_file():
        from blender_m2d.core.inference import load_scorer

        try:
            scorer = load_scorer(BUNDLED_MODEL, library, device="cpu")
            model_note = "bundled model"
        except M2DError as err:
            model_note = f"bundled model not usable: {err}"
    notes = []

    # ---- pass 1: analysis + the matcher's plan for every song
    songs: list[Song] = []
    t_an = time.perf_counter()
    for path in find_songs(args.songs, args.quick):
        try:
            audio = load_audio(path)
            analysis = analyze_song(audio)
            base = choreograph(audio, library, analysis=analysis)
        except M2DError as err:
            notes.append(f"skipped {path.name}: {err}")
            continue
        s = Song(path, audio, analysis, base)
        if scorer is not None:
            s.model_scores = score_phrases(audio, analysis, library, scorer)
        songs.append(s)
    t_an = time.perf_counter() - t_an
    if not songs:
        print("no usable songs", file=sys.stderr)
        return 1
    music_s = sum(float(s.base.plan.song["duration_s"]) for s in songs)

    # matcher picks over the songs: the majority-class prior (leave the song itself out)
    picks = {s.path.name: Counter(s.base.plan.phrase_ids) for s in songs}
    total_picks = sum(picks.values(), Counter())

    variants: dict[str, dict] = {}     # name -> {"family", "per_song": {song: metrics}, "s"}
    cache: dict[tuple, tuple] = {}     # the same plan placed the same way is measured once

    def record(name: str, family: str, song: Song, plan, **place_kw) -> None:
        t0 = time.perf_counter()
        key = (id(plan), tuple(sorted(place_kw.items())))
        if key not in cache or cache[key][0] is not plan:
            cache[key] = (plan, evaluate(plan, library, **place_kw))   # keeps the plan alive
        m = cache[key][1]
        v = variants.setdefault(name, {"family": family, "per_song": {}, "s": 0.0,
                                       "phrases": {}})
        v["per_song"][song.path.name] = m
        v["phrases"][song.path.name] = list(plan.phrase_ids)
        v["s"] += time.perf_counter() - t0

    default_name = "model greedy" if scorer is not None else "rhythm/energy matcher, greedy"
    for s in songs:
        base_plan = s.base.plan
        probs_b, trans_b = s.base.probs, s.base.transition
        info_b = dict(base_plan.scorer)
        # phrase choice
        others = total_picks - picks[s.path.name] if len(songs) > 1 else total_picks
        record("random phrase", "choice", s,
               make(s, library, random_probs(s, len(ids)), np.ones((len(ids),) * 2),
                    {"kind": "random", "path": None, "providers": []}))
        record("most frequent phrase", "choice", s,
               make(s, library, frequency_probs(s, others, ids), trans_b,
                    {"kind": "most-frequent", "path": None, "providers": []}))
        record("rhythm/energy matcher, greedy", "choice", s, base_plan)
        record("rhythm/energy matcher, Viterbi", "choice", s,
               make(s, library, probs_b, trans_b, info_b, method="viterbi"))
        default_plan = base_plan
        default_src = (probs_b, trans_b, info_b)
        if s.model_scores is not None:
            pm, tm, im = s.model_scores
            default_plan = make(s, library, pm, tm, im)
            record("model greedy", "choice", s, default_plan)
            record("model Viterbi", "choice", s, make(s, library, pm, tm, im, method="viterbi"))
            default_src = (pm, tm, im)
        # time warp
        unsynced = make(s, library, *default_src, beat_sync=False)
        record("no time warp (captured speed)", "warp", s, without_warp(unsynced, library))
        record("beat warp, no beat sync", "warp", s, unsynced)
        record("beat warp + beat sync (default)", "warp", s, default_plan)
        # seams
        record("root continuity + foot lock (default)", "seams", s, default_plan)
        record("root continuity, no foot lock", "seams", s, default_plan, feet="none")
        record("plain crossfade (aligned roots, linear mix, no foot lock)", "seams", s,
               default_plan, root="linear", feet="none")
        record("no root continuity, foot lock", "seams", s, default_plan, root="off",
               feet="lock")
        record("no root continuity, no foot lock", "seams", s, default_plan, root="off",
               feet="none")
    agg = {name: aggregate(v["per_song"]) for name, v in variants.items()}

    # ---- table for humans
    cols = ["variant", "N_d", "N_m", "N_h", "coverage", "hit rate", "music hit", "overlap",
            "clip hit", "clip overlap", "max jump cm", "max gap cm", "skate cm/s", "s"]
    table_rows = []
    for name, v in variants.items():
        a = agg[name]
        p, c = a["pooled"], a["per_clip_mean"]
        table_rows.append([name, p["n_dance"], p["n_music"], p["n_hits"],
                           round(p["beat_coverage"], 3), round(p["beat_hit_rate"], 3),
                           round(p["music_hit_rate"], 3), round(p["beat_overlap"], 3),
                           round(c["beat_hit_rate"], 3), round(c["beat_overlap"], 3),
                           round(a["max_root_jump_cm"], 2), round(a["max_root_gap_cm"], 2),
                           round(a["skate_cm_s"], 2), round(v["s"], 1)])
    print(f"{len(songs)} songs, {music_s:.0f} s of music, analysed in {t_an:.1f} s; library "
          f"K={len(ids)}; {model_note}")
    w = [max(len(str(r[i])) for r in [cols, *table_rows]) for i in range(len(cols))]
    for r in [cols, *table_rows]:
        print("  ".join(str(x).ljust(w[i]) if i == 0 else str(x).rjust(w[i])
                        for i, x in enumerate(r)))

    def pooled(name, key):
        return agg[name]["pooled"][key] if name in agg else None

    dflt = default_name
    rows = [
        {"metric": f"beat hit rate, {dflt} (pooled over songs)", "value":
         pooled(dflt, "beat_hit_rate"), "unit": "", "better": "higher",
         "baseline": "random phrase", "baseline_value": pooled("random phrase",
                                                               "beat_hit_rate"),
         "goal": f">= {GOAL_HIT_RATE}", "note": f"{len(songs)} songs, {music_s:.0f} s"},
        {"metric": f"beat overlap, {dflt} (pooled)", "value": pooled(dflt, "beat_overlap"),
         "unit": "", "better": "higher", "baseline": "random phrase",
         "baseline_value": pooled("random phrase", "beat_overlap"),
         "goal": f">= {GOAL_OVERLAP}"},
        {"metric": f"music hit rate, {dflt} (pooled)", "value": pooled(dflt, "music_hit_rate"),
         "unit": "", "better": "higher", "baseline": "most frequent phrase",
         "baseline_value": pooled("most frequent phrase", "music_hit_rate")},
        {"metric": "beat overlap with time warp + beat sync (pooled)",
         "value": pooled("beat warp + beat sync (default)", "beat_overlap"), "unit": "",
         "better": "higher", "baseline": "no time warp",
         "baseline_value": pooled("no time warp (captured speed)", "beat_overlap")},
        {"metric": "max root jump at seams, root continuity + foot lock",
         "value": agg["root continuity + foot lock (default)"]["max_root_jump_cm"],
         "unit": "cm", "better": "lower", "baseline": "no root continuity",
         "baseline_value": agg["no root continuity, no foot lock"]["max_root_jump_cm"],
         "goal": f"< {GOAL_ROOT_JUMP_CM}"},
        {"metric": "foot skate in seam zones, foot lock",
         "value": agg["root continuity + foot lock (default)"]["skate_cm_s"], "unit": "cm/s",
         "better": "lower", "baseline": "plain crossfade",
         "baseline_value": agg["plain crossfade (aligned roots, linear mix, no foot lock)"][
             "skate_cm_s"], "goal_ratio": ">= 2",
         "note": "goal: at most half the plain crossfade's skate"},
    ]
    if scorer is not None:
        rows.append({"metric": "beat overlap, model greedy (pooled)",
                     "value": pooled("model greedy", "beat_overlap"), "unit": "",
                     "better": "higher", "baseline": "rhythm/energy matcher, greedy",
                     "baseline_value": pooled("rhythm/energy matcher, greedy", "beat_overlap")})
    else:
        rows.append({"metric": "model greedy / model Viterbi", "value": None, "unit": "",
                     "note": model_note})
    per_song_rows = []
    for s in songs:
        m = variants[dflt]["per_song"][s.path.name]
        b = m["beats"]["song"]
        per_song_rows.append([s.path.name, round(float(s.base.plan.song["duration_s"]), 1),
                              len(s.base.plan.phrases), b["n_dance"], b["n_music"],
                              round(b["beat_coverage"], 3), round(b["beat_hit_rate"], 3),
                              round(b["music_hit_rate"], 3), round(b["beat_overlap"], 3),
                              round(m["seams"]["max_root_jump_cm"], 2),
                              round(m["feet"]["seam_zones"]["mean_cm_s"], 2)])
    families = {"choice": "phrase choice (time warp + beat sync, root continuity + foot lock)",
                "warp": f"time warp ({dflt})", "seams": f"seam handling ({dflt}, same plan)"}
    tables = []
    for fam, title in families.items():
        tables.append({"title": f"Quality: {title}", "columns": cols,
                       "rows": [r for r, (n, v) in zip(table_rows, variants.items())
                                if v["family"] == fam]})
    tables.append({"title": f"Per song: {dflt}", "columns": [
        "song", "s", "phrases", "N_d", "N_m", "coverage", "hit rate", "music hit", "overlap",
        "max jump cm", "skate cm/s"], "rows": per_song_rows})
    notes = [
        f"{len(songs)} songs ({music_s:.0f} s of music, deduplicated by content): "
        + ", ".join(s.path.name for s in songs) + f"; dance library K = {len(ids)}; "
        f"{model_note}.",
        "Beat metrics: the paper's four (spec 6.3, ±0.1 s one-to-one), N_d/N_m/N_h and the "
        "pooled ratios summed over all songs; 'clip' columns average the ratios over 30 s clips. "
        "Dance beats: the supplement's detector on the placed animation (canonical skeleton, "
        "blended like the NLA; numbers on a Blender rig differ by a few beats).",
        "Seams: max root jump = largest extra root step a crossfade adds (cm); max root gap = "
        "the two phrases' roots apart at a crossfade middle (cm); skate = mean horizontal speed "
        "of planted feet in the seam zones (cm/s), pooled over contact steps.",
        "most frequent phrase: the matcher's pick frequencies on the other songs (its training "
        "labels) as one prior for every phrase"
        + (" (only one song here: its own picks)" if len(songs) == 1 else "")
        + "; random phrase: seeded uniform choice.",
        "s = seconds spent placing and measuring the variant on all songs (analysis, "
        "decoding and beat sync not included; 0 = the same plan placed the same way as an "
        "earlier row, measured once).", *notes]
    data = {"songs": [s.path.name for s in songs], "music_s": round(music_s, 2),
            "analysis_s": round(t_an, 2), "model": model_note,
            "variants": {n: {"family": v["family"], "aggregate": agg[n], "seconds": round(
                v["s"], 2)} for n, v in variants.items()},
            "total_s": round(time.perf_counter() - t_all, 1)}
    if args.json:
        from blender_m2d.core.fileio import write_json_atomic

        write_json_atomic(args.json, {**data, "per_song": {
            n: v["per_song"] for n, v in variants.items()},
            "phrases": {n: v["phrases"] for n, v in variants.items()}})
    print(f"total {data['total_s']} s")
    print("BENCH_JSON " + json.dumps({"name": "quality", "rows": rows, "tables": tables,
                                      "notes": notes, "data": data}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
