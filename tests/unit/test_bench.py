"""``m2d bench``: result-line parsing, the adapters for older scripts, ratios/goals, the
Markdown file, and a real run of a tiny benchmark folder (subprocess, timeout, failure)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from blender_m2d.commands import bench


def test_bench_json_line_wins_and_derives_ratio_and_pass():
    doc = {"rows": [
        {"metric": "t", "value": 2.0, "unit": "s", "baseline": "old", "baseline_value": 8.0,
         "better": "lower", "goal": "<= 3"},
        {"metric": "rate", "value": 0.5, "baseline": "random", "baseline_value": 0.25,
         "better": "higher", "goal": ">= 0.8"},
        {"metric": "skate", "value": 4.0, "baseline": "plain", "baseline_value": 10.0,
         "goal_ratio": ">= 2"},
        {"metric": "gpu", "value": None, "device": "cuda", "goal": "< 1"},
    ]}
    out = "noise\n{\"bench\": \"x\", \"a\": 1}\nBENCH_JSON " + json.dumps(doc) + "\ntail\n"
    res = bench.parse_output("mine", out)
    assert res["name"] == "mine"
    r = {x["metric"]: x for x in res["rows"]}
    assert r["t"]["ratio"] == pytest.approx(4.0) and r["t"]["pass"] is True
    assert r["rate"]["ratio"] == pytest.approx(2.0) and r["rate"]["pass"] is False
    assert r["skate"]["ratio"] == pytest.approx(2.5) and r["skate"]["pass"] is True
    assert r["gpu"]["pass"] is None


def test_legacy_lines_go_through_adapters():
    analysis = {"machine": "x86_64", "song_s": 180.0, "crepe_best_s": 1.5,
                "realtime_x_best": 120.0, "realtime_x_median": 90.0, "pyin_coarse_s": 15.0,
                "cold": {"import_s": 0.1, "first_s": 2.5, "second_s": 2.0}}
    res = bench.parse_output("analysis", "table\n\n" + json.dumps(analysis) + "\n")
    rows = {r["metric"]: r for r in res["rows"]}
    speed = rows["song analysis speed, best run"]
    assert speed["value"] == 120.0 and speed["pass"] is True and speed["ratio"] == 120.0
    assert any(r.get("baseline_value") == 15.0 and r["ratio"] == pytest.approx(10.0)
               for r in res["rows"])
    ui = {"swap_ms_median": 1470.0, "choreograph_s": 8.9, "rechoreograph_s_median": 3.7,
          "target_swap_ms": 50.0, "target_rechoreograph_s": 1.0}
    res = bench.parse_output("ui", "x\nBENCH_UI " + json.dumps(ui) + "\n")
    rows = {r["metric"]: r for r in res["rows"]}
    assert rows["swap one phrase (operator), median"]["pass"] is False
    assert rows["swap one phrase (operator), median"]["baseline_value"] == pytest.approx(8900)
    models = {"presets": [{"preset": "small", "K": 70, "params": {"E+P": 1.6e6},
                           "onnx_mb": 6.5, "parity_max_abs_diff": 1e-7, "torch_cpu_s": 0.4,
                           "ort_cpu_s": 0.08, "ort_cuda_s": "no GPU"}],
              "training": {"pretrain_small_cpu_samples_per_s": 10.0,
                           "pretrain_paper_gpu_amp_samples_per_s": "no GPU"}}
    res = bench.parse_output("models", "| table |\nBENCH " + json.dumps(models) + "\n")
    rows = {r["metric"]: r for r in res["rows"]}
    ort = rows["whole-song scoring latency, onnxruntime CPU, small (K=70)"]
    assert ort["value"] == pytest.approx(80) and ort["ratio"] == pytest.approx(5)
    cuda = [r for r in res["rows"] if r["device"] == "cuda"]
    assert len(cuda) == 2 and all(r["value"] is None and r["note"] == "no GPU" for r in cuda)
    soak = {"bench": "soak", "songs": 50, "rss_end_mb": 520.0, "rss_after_warmup_mb": 500.0,
            "rss_growth_after_warmup": 0.04, "steady_state_leaks": {},
            "teardown_leaks": {"texts": 1}, "s_per_song": 1.5}
    rows = {r["metric"]: r for r in bench.parse_output("soak", json.dumps(soak))["rows"]}
    assert rows["resident memory after song 50 (one Blender process)"]["pass"] is True
    assert rows["datablock kinds that grow from song to song"]["pass"] is True
    assert rows["datablocks left after remove_plan"]["pass"] is False
    res = bench.parse_output("unknown", json.dumps({"a_b": 3, "s": "text"}))
    assert [r["metric"] for r in res["rows"]] == ["a b"]
    assert bench.parse_output("x", "no json here\n") is None


def test_markdown_names_machine_commit_and_gpu_state():
    o = bench.Outcome(name="demo", script="benchmarks/bench_demo.py",
                      command=["py", "bench_demo.py"], wall_s=3.0,
                      result=bench.normalise({"name": "demo", "rows": [
                          {"metric": "speed", "value": 2.0, "baseline": "real time",
                           "baseline_value": 1.0, "better": "higher", "goal": ">= 1"},
                          {"metric": "cuda latency", "value": None, "device": "cuda"}],
                          "tables": [{"title": "t", "columns": ["a", "b"], "rows": [[1, 2]]}],
                          "notes": ["a note"]}))
    bad = bench.Outcome(name="broken", script="b.py", command=[], status="timeout",
                        message="timed out after 5 s")
    machine = bench.machine_info()
    machine["gpu"] = None
    md = bench.render_markdown([o, bad], machine=machine,
                               git={"commit": "abc123", "dirty": True, "changed_files": 2,
                                    "branch": "main"},
                               started="2025-01-01 00:00", total_s=60.0, load=("1", "2"),
                               argv=[], quick=False)
    assert "`abc123` **dirty**" in md and machine["cpu"] in md
    assert "| GPU | no GPU" in md and "| no GPU |" in md
    assert "**pass**" in md and "timeout" in md and "a note" in md and "| 1 | 2 |" in md


def _ns(**kw):
    base = dict(only=[], skip=[], quick=False, list=False, out=None, timeout=None, budget=60,
                bench_dir=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_runner_runs_scripts_with_timeout_and_failures(tmp_path, monkeypatch):
    d = tmp_path / "benchmarks"
    d.mkdir()
    (d / "bench_good.py").write_text(
        "import json, sys\nprint('hello')\nquick = '--quick' in sys.argv\n"
        "print('BENCH_JSON ' + json.dumps({'rows': [{'metric': 'q', 'value': float(quick)}]}))\n")
    (d / "bench_fail.py").write_text("import sys\nprint('boom')\nsys.exit(3)\n")
    (d / "bench_miss.py").write_text(
        "import sys\nprint('BENCH_JSON {\"rows\": [{\"metric\": \"m\", \"value\": 2, "
        "\"goal\": \"< 1\"}]}')\nsys.exit(1)\n")
    (d / "bench_slow.py").write_text("import time\ntime.sleep(30)\n")
    monkeypatch.setattr(bench, "OUT", tmp_path / "out")
    monkeypatch.setattr(bench, "SPECS", {"slow": bench.Spec(timeout_s=2)})
    md = tmp_path / "b.md"
    rc = bench.run(_ns(bench_dir=str(d), out=str(md), quick=True))
    assert rc == 1
    text = md.read_text()
    assert "| good | q | 1 |" in text
    assert "exit status 3" in text and "timed out after 2 s" in text
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    status = {b["name"]: b["status"] for b in results["benchmarks"]}
    assert status == {"fail": "failed", "good": "ok", "miss": "reported, exit 1",
                      "slow": "timeout"}
    assert "| miss | m | 2 |" in text and "**MISS**" in text
    assert (tmp_path / "out" / "logs" / "fail.log").read_text().count("boom") == 1
    assert bench.run(_ns(bench_dir=str(d), out=str(md), only=["good"])) == 0
    with pytest.raises(Exception, match="no benchmark named"):
        bench.run(_ns(bench_dir=str(d), only=["nope"]))


def test_every_benchmark_script_is_known_or_runnable():
    scripts = bench.discover(bench.BENCH_DIR)
    assert {"analysis", "quality", "fbx_metrics"} <= set(scripts)
    for name, path in scripts.items():
        assert isinstance(bench.spec_of(name, Path(path)), bench.Spec)
