"""Quality on every song of ../shared/data/music with the bundled library (slow: ~2 min).

Each song is analysed, scored with the baseline (or the bundled model when it matches), decoded
and placed on a Mixamo test rig; then the same plan is placed again as a plain linear crossfade
(no foot handling, linear root mix) for the foot-skate comparison. Metrics come from the
evaluated animation. The table is printed (``pytest -s``) and written to
``out/quality/choreography.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from test_choreograph import LIBRARY, fresh_scene  # noqa: E402

from blender_m2d import nla  # noqa: E402
from blender_m2d.commands.choreograph import BUNDLED_MODEL  # noqa: E402
from blender_m2d.core import placement as P  # noqa: E402
from blender_m2d.core.choreography import ChoreographyOptions, choreograph  # noqa: E402
from blender_m2d.core.library import load_library  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MUSIC = REPO.parent / "shared" / "data" / "music"


def _target_rig(ob):
    from blender_m2d import retarget

    return retarget.target_rig(ob, retarget.resolve_bone_map(ob, "mixamo"))[0]


@pytest.fixture(scope="module")
def results():
    if not MUSIC.is_dir():
        pytest.skip("../shared/data/music is not present")
    if not (LIBRARY / "library.json").is_file():
        pytest.skip("the bundled library is not built")
    library = load_library(LIBRARY)
    scorer = None
    if BUNDLED_MODEL.is_file():
        from blender_m2d.core.errors import M2DError
        from blender_m2d.core.inference import load_scorer

        try:
            scorer = load_scorer(BUNDLED_MODEL, library, device="cpu")
        except M2DError:
            scorer = None
    rows = {}
    for song in sorted(MUSIC.glob("*.ogg")):
        scene, ob = fresh_scene()
        opts = ChoreographyOptions(target_bone_lengths=nla.rig_bone_lengths(ob, "mixamo"),
                                   target_rig=_target_rig(ob))
        res = choreograph(song, library, scorer=scorer, options=opts)
        applied = nla.apply_plan(ob, res.plan, library, rig="mixamo", scene=scene, sound=False,
                                 markers=False)
        ours = applied.plan.metrics
        pos = np.nan_to_num(np.asarray(applied.positions, dtype=np.float64))
        joint_speed = np.linalg.norm(np.diff(pos, axis=0), axis=2) * res.plan.fps
        scene, ob = fresh_scene()
        plain = nla.apply_plan(ob, res.plan, library, rig="mixamo", scene=scene, sound=False,
                               markers=False,
                               options=P.PlacementOptions(feet="none", root="linear")
                               ).plan.metrics
        b = ours["beats"]["song"]
        rows[song.name] = {
            "duration_s": res.plan.song["duration_s"], "phrases": len(res.plan.phrases),
            "scorer": res.plan.scorer["kind"],
            "beat_hit_rate": b["beat_hit_rate"], "beat_overlap": b["beat_overlap"],
            "beat_coverage": b["beat_coverage"], "music_hit_rate": b["music_hit_rate"],
            "n_dance": b["n_dance"], "n_music": b["n_music"], "n_hits": b["n_hits"],
            "max_root_jump_cm": ours["seams"]["max_root_jump_cm"],
            "max_root_gap_cm": ours["seams"]["max_root_gap_cm"],
            "skate_cm_s": ours["feet"]["seam_zones"]["mean_cm_s"],
            "skate_plain_cm_s": plain["feet"]["seam_zones"]["mean_cm_s"],
            "p99_joint_speed_m_s": float(np.percentile(joint_speed, 99)),
        }
    pooled = {k: sum(r[k] for r in rows.values()) for k in ("n_dance", "n_music", "n_hits")}
    summary = {"pooled_beat_hit_rate": pooled["n_hits"] / max(pooled["n_dance"], 1),
               "pooled_beat_overlap": pooled["n_hits"] / max(
                   pooled["n_music"] + pooled["n_dance"] - pooled["n_hits"], 1)}
    print("\nsong                                   BHR    overlap cover  jump cm skate  plain "
          " p99 m/s")
    for name, r in rows.items():
        print(f"{name:<38} {r['beat_hit_rate']:.3f}  {r['beat_overlap']:.3f}   "
              f"{r['beat_coverage']:.3f}  {r['max_root_jump_cm']:.2f}    "
              f"{r['skate_cm_s']:.1f}   {r['skate_plain_cm_s']:.1f}   "
              f"{r['p99_joint_speed_m_s']:.2f}")
    print(f"pooled: BHR {summary['pooled_beat_hit_rate']:.3f}, overlap "
          f"{summary['pooled_beat_overlap']:.3f}")
    out = REPO / "out" / "quality"
    out.mkdir(parents=True, exist_ok=True)
    (out / "choreography.json").write_text(json.dumps({"songs": rows, **summary}, indent=1))
    return rows


@pytest.mark.slow
def test_seams_are_continuous_on_every_song(results):
    for name, r in results.items():
        assert r["max_root_jump_cm"] < 1.0, name
        assert r["max_root_gap_cm"] < 1.0, name


@pytest.mark.slow
def test_foot_skate_at_most_half_of_plain_crossfades_on_every_song(results):
    for name, r in results.items():
        if r["phrases"] > 1:
            assert r["skate_cm_s"] <= 0.5 * r["skate_plain_cm_s"], name


@pytest.mark.slow
def test_beat_targets_on_every_song(results):
    for name, r in results.items():
        assert r["beat_hit_rate"] >= 0.8, (name, r["beat_hit_rate"])
        assert r["beat_overlap"] >= 0.55, (name, r["beat_overlap"])
