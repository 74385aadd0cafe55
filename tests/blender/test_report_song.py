"""``m2d report`` on a bundled song end to end (choreograph, then the HTML report), opened in
headless Chromium when it is installed; and the independent metric check: beat metrics from an
exported FBX re-imported into Blender equal the plan's within 1 %."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bpy")

REPO = Path(__file__).resolve().parents[2]
SONG = REPO / "data" / "songs" / "kevin_macleod_vibe_ace.ogg"
SONG_10S = REPO / "data" / "fixtures" / "audio" / "music_10s.ogg"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    cmd = [sys.executable, "-m", "blender_m2d", "report", str(SONG), "--out",
           str(out / "report.html"), "--png", str(out / "timeline.png"), "--plan",
           str(out / "PLAN.json"), "--device", "cpu"]
    run = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return out


def test_report_of_a_bundled_song_has_timeline_and_metrics(made):
    from PIL import Image

    from blender_m2d.core.plan import Plan

    html = (made / "report.html").read_text(encoding="utf-8")
    plan = Plan.load(made / "PLAN.json")
    m = re.search(r'<img id="timeline"[^>]*src="data:image/png;base64,([^"]+)"', html)
    assert m, "no inline timeline image"
    png = base64.b64decode(m.group(1))
    assert png == (made / "timeline.png").read_bytes()
    im = Image.open(io.BytesIO(png))
    im.load()
    # overview + 3 rows of ~20 s for a 61 s song: wide and tall, with drawn content
    assert im.width >= 1200 and im.height >= 500
    assert np.asarray(im.convert("L")).std() > 20
    table = re.search(r'<table id="metrics">(.*?)</table>', html, re.S).group(1)
    song = plan.metrics["beats"]["song"]
    for name in ("Beat coverage", "Beat hit rate", "Music hit rate", "Beat overlap"):
        assert name in table
    assert f"{song['beat_hit_rate']:.1%}" in table
    assert f"{song['beat_overlap']:.3f}" in table
    assert f"{song['n_dance']} / {song['n_music']} / {song['n_hits']}" in table
    phrases = re.search(r'<table id="phrases">(.*?)</table>', html, re.S).group(1)
    assert phrases.count("<tr") == 1 + len(plan.phrases)
    for ph in plan.phrases:
        assert ph.phrase_id in phrases
    assert re.search(r'<table id="seams">', html)


def test_report_from_the_plan_file_is_the_same_page(made, tmp_path):
    from blender_m2d.cli import main

    assert main(["report", str(made / "PLAN.json"), "--out", str(tmp_path / "r.html")]) == 0
    a = (made / "report.html").read_text(encoding="utf-8")
    b = (tmp_path / "r.html").read_text(encoding="utf-8")
    strip = re.compile(r'<h2>Timings</h2>.*?</table>', re.S)   # the plan file has them too
    assert re.sub(strip, "", a).count("<tr") == re.sub(strip, "", b).count("<tr")
    assert re.search(r'<table id="metrics">.*?</table>', a, re.S).group(0) == \
        re.search(r'<table id="metrics">.*?</table>', b, re.S).group(0)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_opens_in_headless_chromium(made, tmp_path):
    """Chromium loads the page: the DOM has the timeline and the tables, the inlined image
    decodes to its real size, and a screenshot shows a drawn page."""
    page = tmp_path / "probe.html"
    probe = ("<script>window.addEventListener('load', () => {const i = document."
             "getElementById('timeline'); document.body.setAttribute('data-probe', "
             "JSON.stringify({w: i.naturalWidth, h: i.naturalHeight, rows: document."
             "querySelectorAll('#metrics tr').length}));});</script></body>")
    page.write_text((made / "report.html").read_text(encoding="utf-8").replace(
        "</body>", probe), encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=5000"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r"data-probe=\"([^\"]+)\"", dom.stdout)
    assert m, dom.stdout[:2000]
    probe_val = json.loads(m.group(1).replace("&quot;", '"'))
    from PIL import Image

    w, h = Image.open(made / "timeline.png").size
    assert (probe_val["w"], probe_val["h"]) == (w, h)
    assert probe_val["rows"] >= 6            # header + 4 metrics + counts
    shot = tmp_path / "shot.png"
    run = subprocess.run(["chromium", *flags, "--window-size=1400,1800",
                          f"--screenshot={shot}", (made / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert px.shape == (1800, 1400) and px.std() > 20


def test_fbx_reimport_beat_metrics_match_the_plan():
    """benchmarks/bench_fbx_metrics.py on the 10 s fixture song: within 1 %."""
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_fbx_metrics.py"),
                          "--song", str(SONG_10S), "--quick"], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=300)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    assert line, run.stdout[-2000:] + run.stderr[-3000:]
    res = json.loads(line[len("BENCH_JSON "):])
    assert run.returncode == 0, res["data"]
    assert res["data"]["ok"] and res["data"]["results"]["fbx"]["worst_rel_diff"] <= 0.01
    assert res["data"]["plan"]["n_dance"] > 0
