"""The choreography report (blender_m2d.report): HTML structure, the inlined timeline PNG, the
metrics and phrases tables, without Blender (a synthetic placed plan)."""

from __future__ import annotations

import base64
import io
import itertools
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from blender_m2d import report
from blender_m2d.core.metrics import count_hits
from blender_m2d.core.plan import Plan


def _plan(metrics: bool = True, weird_id: str = "60_01_00") -> Plan:
    beats = [round(0.5 * k, 3) for k in range(1, 40)]
    phrases = []
    bounds = [0.0, 6.5, 13.0, 20.0]
    ids = [weird_id, "60_02_00", "05_03_01"]
    for i, (s, e) in enumerate(itertools.pairwise(bounds)):
        cands = [{"phrase_id": ids[i], "score": 0.5, "prob": 0.4},
                 {"phrase_id": "alt<b>", "score": 0.3, "prob": 0.3}]
        if i == 1:          # chosen phrase ranked second
            cands = cands[::-1]
        if i == 2:          # chosen phrase not among the candidates (a swap)
            cands = [{"phrase_id": "other", "score": 0.9, "prob": 0.9}]
        phrases.append({"index": i, "music_start_s": s, "music_end_s": e, "phrase_id": ids[i],
                        "frame_start": 1 + round(s * 30), "frame_end": 1 + round(e * 30),
                        "n_music_beats": 12, "locked": i == 2, "candidates": cands,
                        "warp": {"rate_min": 0.9, "rate_max": 1.1, "anchored_beats": 10,
                                 "dance_beats": 11, "hold_s": 0.0}})
    dance = [0.52, 1.0, 1.71, 2.49, 3.3, 7.0, 9.55, 15.0, 19.48]
    m = {}
    if metrics:
        m = {"beats": {"song": {"n_dance": 9, "n_music": 39, "n_hits": 7,
                                "beat_coverage": 0.2308, "beat_hit_rate": 0.7778,
                                "music_hit_rate": 0.1795, "beat_overlap": 0.1707},
                       "clips_30s": {"pooled": {"n_dance": 9, "n_music": 39, "n_hits": 7,
                                                "beat_coverage": 0.2308,
                                                "beat_hit_rate": 0.7778,
                                                "music_hit_rate": 0.1795,
                                                "beat_overlap": 0.1707},
                                     "per_clip_mean": {"beat_coverage": 0.2308,
                                                       "beat_hit_rate": 0.7778,
                                                       "music_hit_rate": 0.1795,
                                                       "beat_overlap": 0.1707},
                                     "n_clips": 1},
                       "dance_beats_s": dance},
             "seams": {"max_root_jump_cm": 0.12, "max_root_gap_cm": 0.0,
                       "per_seam": [{"index": 1, "root_jump_cm": 0.12, "root_gap_cm": 0.0},
                                    {"index": 2, "root_jump_cm": 0.05, "root_gap_cm": 0.0}]},
             "feet": {"seam_zones": {"mean_cm_s": 3.2, "max_cm_s": 40.0, "contact_steps": 50},
                      "crossfades_only": {"mean_cm_s": 4.0, "max_cm_s": 40.0,
                                          "contact_steps": 10}, "contact_m": 0.05},
             "evaluation": "numpy NLA evaluation"}
    return Plan.from_json({
        "format": "m2d.plan", "format_version": 1,
        "song": {"path": "nowhere/song.ogg", "duration_s": 20.0, "tempo_bpm": 120.0,
                 "n_beats": len(beats)},
        "library": {"path": "lib", "hash": "x", "n_phrases": 70},
        "scorer": {"kind": "baseline", "path": None, "providers": []},
        "decoding": {"method": "greedy"}, "fps": 30.0, "frame_start": 1,
        "crossfade_frames": 10, "beats_s": beats, "phrases": phrases, "metrics": m,
        "placement": {"feet": "lock", "root": "hermite",
                      "beat_sync": {"canonical_before": {"beat_hit_rate": 0.5},
                                    "canonical_after": {"beat_hit_rate": 0.8}}},
        "timings_s": {"analysis": 1.0}})


class _Tables(HTMLParser):
    """Collects element ids, the <img id=timeline> src and the text of each table by id."""

    def __init__(self):
        super().__init__()
        self.ids, self.img_src, self.tables, self._cur = [], None, {}, None
        self.rows: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img" and a.get("id") == "timeline":
            self.img_src = a.get("src")
        if tag == "table":
            self._cur = a.get("id")
            self.tables[self._cur] = ""
            self.rows[self._cur] = 0
        if tag == "tr" and self._cur:
            self.rows[self._cur] += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._cur = None

    def handle_data(self, data):
        if self._cur:
            self.tables[self._cur] += data + " "


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    sr = 8000
    t = np.arange(20 * sr) / sr
    y = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * t) > 0)).astype(np.float32)
    path = report.write_report(out / "r.html", _plan(weird_id="a<b>&c"), y=y, sr=sr,
                               png_path=out / "timeline.png")
    return path.read_text(encoding="utf-8"), out


def test_html_has_timeline_png_and_tables(page):
    text, out = page
    p = _Tables()
    p.feed(text)
    assert {"timeline", "metrics", "seams", "phrases"} <= set(p.ids)
    assert p.img_src.startswith("data:image/png;base64,")
    png = base64.b64decode(p.img_src.split(",", 1)[1])
    assert png == (out / "timeline.png").read_bytes()
    from PIL import Image

    im = Image.open(io.BytesIO(png))
    im.load()
    assert im.format == "PNG" and im.width >= 1200 and im.height >= 300
    px = np.asarray(im.convert("RGB"), dtype=np.int16)
    assert (px.std(axis=(0, 1)) > 10).all()            # a drawn picture, not a blank canvas
    # the four beat metrics with the song's values and the paper's row
    metrics = p.tables["metrics"]
    for name in ("Beat coverage", "Beat hit rate", "Music hit rate", "Beat overlap"):
        assert name in metrics
    assert "77.8%" in metrics and "0.171" in metrics and "63.2%" in metrics
    assert "9 / 39 / 7" in metrics
    assert "before beat sync" in text and "50.0%" in metrics
    assert "0.12 cm" in p.tables["seams"] and "3.20" in p.tables["seams"]
    # one row per phrase (+ header), the ranks, escaping
    assert p.rows["phrases"] == 1 + 3
    ph = p.tables["phrases"]
    assert "a<b>&c" in ph and "alt<b>" in ph           # shown as text ...
    assert "a&lt;b&gt;&amp;c" in text and "a<b>&c" not in text and "alt<b>" not in text


def test_ranks_and_hits():
    plan = _plan()
    assert [report.candidate_rank(ph) for ph in plan.phrases] == [1, 2, None]
    rng = np.random.default_rng(0)
    for _ in range(20):
        d = np.sort(rng.uniform(0, 10, rng.integers(0, 30)))
        m = np.sort(rng.uniform(0, 10, rng.integers(0, 30)))
        assert report.hit_mask(d, m).sum() == count_hits(d, m)


def test_report_without_metrics_or_audio(tmp_path):
    path = report.write_report(tmp_path / "r.html", _plan(metrics=False))
    text = path.read_text(encoding="utf-8")
    assert re.search(r'<table id="metrics">.*not measured', text, re.S)
    assert "waveform is left out" in text
    assert 'id="timeline"' in text


def test_song_path_is_found_next_to_the_plan(tmp_path):
    plan = _plan()
    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere" / "song.ogg").write_bytes(b"x")
    assert report.song_path_of(plan, tmp_path / "PLAN.json") == tmp_path / "nowhere" / "song.ogg"
    assert report.song_path_of(plan, None) is None
