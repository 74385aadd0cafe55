"""``m2d bench``: run every ``benchmarks/bench_*.py`` and write ``docs/benchmarks.md``.

Each script runs in its own process, one after another, with a timeout; its result line
(``BENCH_JSON {...}``, see ``benchmarks/README.md``; older scripts' own JSON lines go through a
small adapter here) becomes rows of figure / baseline / ratio / goal / pass. The Markdown file
names the machine, the git commit (``dirty`` when the tree had uncommitted changes) and the
date. Only a full run writes ``docs/benchmarks.md``; ``--only``/``--quick`` runs write
``out/bench/benchmarks.md``. Needs a source checkout (the ``benchmarks/`` folder).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAME = "bench"
HELP = "run the benchmarks (speed, memory, quality) and write docs/benchmarks.md"

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "benchmarks"
DOC = REPO / "docs" / "benchmarks.md"
OUT = REPO / "out" / "bench"
MARK = "BENCH_JSON "
DEFAULT_TIMEOUT_S = 600
DEFAULT_BUDGET_S = 19 * 60


@dataclass(frozen=True)
class Spec:
    """How the runner calls one script: arguments for a full and a quick run, timeout."""

    args: tuple[str, ...] = ()
    quick: tuple[str, ...] = ("--quick",)
    timeout_s: int = DEFAULT_TIMEOUT_S
    order: int = 50


# Settings per known script (name = file name without ``bench_``). Full-run arguments are chosen
# so that the whole of ``make bench`` stays under 20 minutes on the 2-core development machine.
SPECS: dict[str, Spec] = {
    "analysis": Spec(timeout_s=480, order=10),
    "library": Spec(timeout_s=300, order=20),
    "choreograph": Spec(args=("--runs", "2"), quick=("--runs", "1", "--no-cold"),
                        timeout_s=240, order=30),
    "ui": Spec(args=("--swaps", "5", "--rechoreographs", "2"),
               quick=("--swaps", "3", "--rechoreographs", "1"), timeout_s=300, order=40),
    "models": Spec(timeout_s=300, order=50),
    "quality": Spec(timeout_s=420, order=60),
    "fbx_metrics": Spec(timeout_s=240, order=70),
    "soak": Spec(args=(), quick=("--songs", "10"), timeout_s=300, order=80),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this benchmark (repeat or comma-separate; names as in "
                        "--list)")
    parser.add_argument("--skip", action="append", default=[], metavar="NAME",
                        help="leave this benchmark out (repeat or comma-separate)")
    parser.add_argument("--quick", action="store_true",
                        help="each script's short settings (a smoke run, minutes)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--out", metavar="FILE.md",
                        help="Markdown to write (default docs/benchmarks.md for a full run, "
                        "out/bench/benchmarks.md otherwise)")
    parser.add_argument("--timeout", type=int, metavar="S",
                        help="per-benchmark timeout in seconds (default: per script)")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET_S, metavar="S",
                        help="total seconds for the run; a benchmark gets at most what is left "
                        f"(default {DEFAULT_BUDGET_S})")
    parser.add_argument("--bench-dir", metavar="DIR", default=str(BENCH_DIR),
                        help="folder with the bench_*.py scripts (default: the checkout's)")


# =========================================================================== discovery
def discover(bench_dir: Path) -> dict[str, Path]:
    """``{name: script}`` of ``bench_*.py`` in run order (known scripts first, by ``order``)."""
    found = {p.stem[len("bench_"):]: p for p in sorted(bench_dir.glob("bench_*.py"))}
    return dict(sorted(found.items(), key=lambda kv: (spec_of(kv[0], kv[1]).order, kv[0])))


def spec_of(name: str, script: Path) -> Spec:
    if name in SPECS:
        return SPECS[name]
    try:
        quick = ("--quick",) if "--quick" in script.read_text(errors="replace") else ()
    except OSError:
        quick = ()
    return Spec(quick=quick, order=90)


def _names(values: list[str]) -> list[str]:
    return [n.strip().removeprefix("bench_").removesuffix(".py")
            for v in values for n in v.split(",") if n.strip()]


# =========================================================================== parsing
def parse_output(name: str, stdout: str) -> dict | None:
    """The benchmark's result as ``{"name", "rows", "tables", "notes", "data"}``, or None."""
    lines = stdout.splitlines()
    for line in reversed(lines):
        if line.startswith(MARK):
            try:
                doc = json.loads(line[len(MARK):])
            except json.JSONDecodeError:
                return None
            if isinstance(doc, dict):
                doc.setdefault("name", name)
                return normalise(doc)
            return None
    legacy = _last_json_object(lines)
    if legacy is None:
        return None
    adapter = ADAPTERS.get(name, _generic)
    doc = adapter(legacy)
    doc.setdefault("name", name)
    doc.setdefault("data", legacy)
    return normalise(doc)


def _last_json_object(lines: list[str]) -> dict | None:
    """The last line that is a JSON object, optionally after one tag word (``BENCH_UI {...}``)."""
    for line in reversed(lines):
        text = line.strip()
        if not text.endswith("}"):
            continue
        m = re.match(r"^([A-Za-z_][\w.-]*:?\s+)?(\{.*\})$", text)
        if not m:
            continue
        try:
            doc = json.loads(m.group(2))
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            return doc
    return None


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


_GOAL_RE = re.compile(r"^\s*(<=|>=|<|>|==)\s*([-+0-9.eE]+)")


def goal_met(goal: str | None, value: float | None) -> bool | None:
    if not goal or value is None:
        return None
    m = _GOAL_RE.match(str(goal))
    if not m:
        return None
    op, target = m.group(1), float(m.group(2))
    return {"<=": value <= target, ">=": value >= target, "<": value < target,
            ">": value > target, "==": value == target}[op]


def normalise(doc: dict) -> dict:
    """Fill the derived keys of every row (ratio, pass) and make the lists present."""
    rows = []
    for r in doc.get("rows") or []:
        if not isinstance(r, dict) or "metric" not in r:
            continue
        r = dict(r)
        value, base = _num(r.get("value")), _num(r.get("baseline_value"))
        better = r.get("better", "lower")
        if _num(r.get("ratio")) is None and value is not None and base is not None:
            if better == "higher" and base != 0:
                r["ratio"] = value / base
            elif better != "higher" and value != 0:
                r["ratio"] = base / value
        if r.get("pass") is None:
            checks = [goal_met(r.get("goal"), value),
                      goal_met(r.get("goal_ratio"), _num(r.get("ratio")))]
            checks = [c for c in checks if c is not None]
            r["pass"] = all(checks) if checks else None
        rows.append(r)
    doc["rows"] = rows
    doc["tables"] = [t for t in doc.get("tables") or [] if isinstance(t, dict)]
    doc["notes"] = [str(n) for n in doc.get("notes") or []]
    return doc


def row(metric: str, value: Any, unit: str = "", *, baseline: str | None = None,
        baseline_value: Any = None, better: str = "lower", goal: str | None = None,
        goal_ratio: str | None = None, note: str = "", device: str = "cpu") -> dict:
    """One result row (see ``benchmarks/README.md``)."""
    out = {"metric": metric, "value": _num(value), "unit": unit, "better": better,
           "device": device}
    if baseline is not None:
        out["baseline"] = baseline
        out["baseline_value"] = _num(baseline_value)
    if goal:
        out["goal"] = goal
    if goal_ratio:
        out["goal_ratio"] = goal_ratio
    if note:
        out["note"] = note
    return out


# --------------------------------------------------------------------------- adapters
def _adapt_analysis(d: dict) -> dict:
    rows = []
    song = d.get("song_s")
    rows.append(row("song analysis speed, best run", d.get("realtime_x_best"), "x real time",
                    baseline="real time", baseline_value=1.0, better="higher", goal=">= 100",
                    note=f"{song} s Ogg song, one core, decode included"))
    rows.append(row("song analysis speed, median run", d.get("realtime_x_median"),
                    "x real time", baseline="real time", baseline_value=1.0, better="higher"))
    best = d.get("crepe_best_s")
    if "pyin_s" in d:
        rows.append(row("song analysis time (CREPE melody), best", best, "s",
                        baseline="same pipeline with librosa.pyin (23 ms hop)",
                        baseline_value=d["pyin_s"]))
    if "pyin_coarse_s" in d:
        rows.append(row("song analysis time (CREPE melody), best", best, "s",
                        baseline="same pipeline with pyin at 62.5 ms hop",
                        baseline_value=d["pyin_coarse_s"]))
    cold = d.get("cold") or {}
    if cold:
        numba = (d.get("librosa_numba_cold") or {}).get("empty_cache_s")
        rows.append(row("cold start: import + first analysis (fresh process)",
                        (cold.get("import_s") or 0) + (cold.get("first_s") or 0), "s",
                        baseline=("librosa numba beats + onsets alone, empty cache"
                                  if numba is not None else None),
                        baseline_value=numba))
    hour = d.get("hour_refused") or {}
    if hour:
        rows.append(row("peak RSS, 1-hour file (refused)", hour.get("peak_mb"), "MB",
                        note=str(hour.get("message", "")).rsplit(".wav: ", 1)[-1][-90:]))
    stream = d.get("hour_streamed") or {}
    if stream:
        rows.append(row("peak RSS, 1-hour file streamed by load_audio", stream.get("peak_mb"),
                        "MB", baseline="decoded samples alone", baseline_value=(
                            (stream.get("output_mb") or 0) + (stream.get("base_mb") or 0))))
    twenty = d.get("twenty_min") or {}
    if twenty:
        rows.append(row("peak RSS, 20-minute song analysed", twenty.get("peak_mb"), "MB",
                        note=f"{twenty.get('seconds')} s wall"))
    stages = d.get("stages_s") or {}
    tables = []
    if stages:
        tables.append({"title": "analysis stages (last warm run, s)",
                       "columns": list(stages), "rows": [list(stages.values())]})
    return {"rows": rows, "tables": tables}


def _adapt_library(d: dict) -> dict:
    rows = []
    b = d.get("build")
    if b:
        rows.append(row("library build speed (../shared/data/mocap, Blender import included)",
                        b.get("speed_ratio"), "x real time", baseline="real time",
                        baseline_value=1.0, better="higher", goal=">= 20",
                        note=f"{b.get('takes')} takes, {b.get('mocap_s')} s of mocap in "
                        f"{b.get('build_s')} s; {b.get('phrases')} phrases"))
    ld = d.get("load_10k")
    if ld:
        rows.append(row("load a 10,000-phrase library (median of 5)", ld.get("load_median_s"),
                        "s", baseline="first load (cold page cache)",
                        baseline_value=ld.get("load_first_s"), goal="< 1",
                        note=f"{ld.get('size_mb')} MB"))
        rows.append(row("motion() of one phrase", ld.get("motion_ms"), "ms"))
    for preset, r in (d.get("retarget") or {}).items():
        rows.append(row(f"retarget error, bundled library -> {preset} (max)", r.get("max_cm"),
                        "cm", goal="< 1", note=f"p99 {r.get('p99_cm')} cm; write "
                        f"{r.get('write_ms_per_100_frames')} ms/100 frames"))
    return {"rows": rows}


def _adapt_choreograph(d: dict) -> dict:
    dur = _num(d.get("duration_s"))
    rows = [row("warm choreography time per second of music", d.get("warm_s_per_s"), "s/s",
                baseline="real time (1 s per s)", baseline_value=1.0, goal="<= 0.02",
                note=f"{d.get('song')} ({dur} s, {d.get('phrases')} phrases, "
                f"{d.get('scorer')} scorer), song -> .blend"),
            row("warm choreography, median run", d.get("warm_median_s"), "s",
                baseline="first run in the process", baseline_value=d.get("first_run_s"))]
    if d.get("cold_s") is not None:
        rows.append(row("cold choreography (fresh process, imports included)", d.get("cold_s"),
                        "s", baseline="warm run", baseline_value=d.get("warm_s"),
                        goal="<= 10"))
    stages = d.get("stages_s") or {}
    tables = []
    if stages:
        tables.append({"title": "choreography stages (best warm run, s)",
                       "columns": list(stages), "rows": [list(stages.values())]})
    return {"rows": rows, "tables": tables}


def _adapt_ui(d: dict) -> dict:
    return {"rows": [
        row("swap one phrase (operator), median", d.get("swap_ms_median"), "ms",
            baseline="choreograph the song again", baseline_value=(
                _num(d.get("choreograph_s")) or 0) * 1000 or None,
            goal=f"<= {d.get('target_swap_ms', 50)}",
            note=f"{d.get('song')} ({d.get('duration_s')} s, {d.get('phrases')} phrases); "
            f"max {d.get('swap_ms_max')} ms"),
        row("re-choreograph unlocked (operator), median", d.get("rechoreograph_s_median"), "s",
            baseline="choreograph the song again", baseline_value=d.get("choreograph_s"),
            goal=f"<= {d.get('target_rechoreograph_s', 1)}",
            note=f"{d.get('locked')} phrases locked"),
        row("metrics of the whole song (evaluate_plan)", d.get("metrics_ms"), "ms"),
    ]}


def _adapt_models(d: dict) -> dict:
    rows = []
    for r in d.get("presets") or []:
        name = f"{r.get('preset')} (K={r.get('K')})"
        params = (r.get("params") or {}).get("E+P")
        note = (f"one song = 40 phrases; ONNX {_fmt(_num(r.get('onnx_mb')))} MB"
                + (f", {params / 1e6:.1f} M params" if _num(params) else "")
                + f"; parity max abs diff {r.get('parity_max_abs_diff')}")
        ort_s, torch_s = _num(r.get("ort_cpu_s")), _num(r.get("torch_cpu_s"))
        rows.append(row(f"whole-song scoring latency, onnxruntime CPU, {name}",
                        None if ort_s is None else ort_s * 1000, "ms", baseline="torch CPU",
                        baseline_value=None if torch_s is None else torch_s * 1000, note=note))
        cuda_s = _num(r.get("ort_cuda_s"))
        rows.append(row(f"whole-song scoring latency, onnxruntime CUDA, {name}",
                        None if cuda_s is None else cuda_s * 1000, "ms", device="cuda",
                        baseline="onnxruntime CPU" if cuda_s is not None else None,
                        baseline_value=None if ort_s is None else ort_s * 1000,
                        note="" if cuda_s is not None else "no GPU"))
    t = d.get("training") or {}
    if "pretrain_small_cpu_samples_per_s" in t:
        rows.append(row("pre-training throughput, small preset, CPU",
                        t["pretrain_small_cpu_samples_per_s"], "samples/s", better="higher",
                        note="batch 64, all losses, Adam"))
    if "classify_small_cpu_embed_samples_per_s" in t:
        rows.append(row("classification: embedding with frozen E, small, CPU",
                        t["classify_small_cpu_embed_samples_per_s"], "samples/s",
                        better="higher"))
    if "classify_small_cpu_predictor_samples_per_s" in t:
        rows.append(row("classification: predictor training, small, CPU",
                        t["classify_small_cpu_predictor_samples_per_s"], "samples/s",
                        better="higher"))
    gpu = _num(t.get("pretrain_paper_gpu_amp_samples_per_s"))
    rows.append(row("pre-training throughput, paper preset, GPU (bf16 autocast)", gpu,
                    "samples/s", better="higher", device="cuda",
                    note=str(t.get("gpu", "")) if gpu is not None else "no GPU"))
    return {"rows": rows}


def _adapt_soak(d: dict) -> dict:
    n = d.get("songs")
    steady = d.get("steady_state_leaks") or {}
    teardown = d.get("teardown_leaks") or {}
    return {"rows": [
        row(f"resident memory after song {n} (one Blender process)", d.get("rss_end_mb"), "MB",
            baseline="after the warm-up songs", baseline_value=d.get("rss_after_warmup_mb"),
            goal_ratio=">= 0.909",
            note=f"growth {100 * (_num(d.get('rss_growth_after_warmup')) or 0):+.1f} % "
            f"(limit +10 %); peak {d.get('rss_peak_mb')} MB; mode {d.get('mode')}"),
        row("datablock kinds that grow from song to song", len(steady), "", goal="== 0",
            note=", ".join(f"{k}: {v}" for k, v in steady.items())[:200]),
        row("datablocks left after remove_plan", sum(abs(int(v)) for v in teardown.values()),
            "", goal="== 0", note=", ".join(f"{k}: {v:+d}" for k, v in teardown.items())),
        row("seconds per song (choreograph + apply)", d.get("s_per_song"), "s",
            note=f"{n} songs, {d.get('music_s')} s of music in {d.get('total_s')} s"),
    ]}


def _generic(d: dict) -> dict:
    rows = []
    for k, v in d.items():
        if _num(v) is not None:
            rows.append(row(k.replace("_", " "), v))
    return {"rows": rows}


ADAPTERS = {"analysis": _adapt_analysis, "library": _adapt_library,
            "choreograph": _adapt_choreograph, "ui": _adapt_ui, "models": _adapt_models,
            "soak": _adapt_soak}


# =========================================================================== machine
def _run_text(cmd: list[str], cwd: Path = REPO, timeout: float = 20) -> str:
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return ""
    return p.stdout.strip() if p.returncode == 0 else ""


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def gpu_info() -> str | None:
    """``"NVIDIA H100 80GB HBM3, 81559 MiB"`` (one per line) or None without a CUDA GPU."""
    if shutil.which("nvidia-smi"):
        text = _run_text(["nvidia-smi", "--query-gpu=name,memory.total",
                          "--format=csv,noheader"])
        if text:
            return "; ".join(line.strip() for line in text.splitlines())
    return None


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 2**20, 1)
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except ImportError:
        providers = []
    return {
        "cpu": cpu, "cores": os.cpu_count(), "cores_usable": usable, "ram_gb": ram_gb,
        "os": platform.platform(), "python": platform.python_version(),
        "versions": {d: _version(d) for d in ("bpy", "numpy", "librosa", "onnxruntime",
                                               "torch")},
        "onnxruntime_providers": providers,
        "gpu": gpu_info(),
    }


def git_info(exclude: list[Path]) -> dict:
    commit = _run_text(["git", "rev-parse", "HEAD"])
    status = _run_text(["git", "status", "--porcelain"])
    skip = set()
    for p in exclude:
        with contextlib.suppress(ValueError):
            skip.add(Path(p).resolve().relative_to(REPO).as_posix())
    changed = [ln[3:].strip() for ln in status.splitlines() if ln[3:].strip() not in skip]
    return {"commit": commit or "unknown", "dirty": bool(changed), "changed_files": len(changed),
            "branch": _run_text(["git", "rev-parse", "--abbrev-ref", "HEAD"]) or "unknown"}


def _load() -> str:
    with contextlib.suppress(OSError, AttributeError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "n/a"


# =========================================================================== running
@dataclass
class Outcome:
    name: str
    script: str
    command: list[str]
    status: str = "ok"      # ok | reported, exit N | failed | timeout | no result | skipped
    wall_s: float = 0.0
    returncode: int | None = None
    result: dict | None = None
    message: str = ""
    log: str = ""
    extra: dict = field(default_factory=dict)


def run_one(name: str, script: Path, args: list[str], timeout_s: float, log_dir: Path) -> Outcome:
    """Run one script; its output goes live to ``log_dir/NAME.log``. The peak RSS of the script
    and its waited-for children comes from ``wait4`` (``peak_rss_mb`` in ``extra``)."""
    cmd = [sys.executable, str(script), *args]
    out = Outcome(name=name, script=script.relative_to(REPO).as_posix()
                  if script.is_relative_to(REPO) else str(script), command=cmd)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PYTHONUNBUFFERED": "1", "M2D_BENCH": "1"}
    log_path = log_dir / f"{name}.log"
    out.log = str(log_path)
    chunks: list[str] = []
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                start_new_session=True)

        def pump() -> None:
            for line in proc.stdout:
                chunks.append(line)
                log.write(line)
                log.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        status = ru = None
        while status is None:
            pid, st, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, ru = st, usage
                break
            if time.perf_counter() - t0 > max(timeout_s, 1):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)     # the script and its children only
                _, status, ru = os.wait4(proc.pid, 0)
                out.status = "timeout"
                out.message = f"timed out after {timeout_s:.0f} s"
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        reader.join(timeout=5)
        if reader.is_alive():       # children of the script still hold the pipe: end them
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            reader.join(timeout=5)
        proc.stdout.close()
    out.wall_s = time.perf_counter() - t0
    out.returncode = proc.returncode
    if ru is not None:
        out.extra["peak_rss_mb"] = round(ru.ru_maxrss / 1024, 1)     # KiB on Linux
        out.extra["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 1)
    stdout = "".join(chunks)
    if out.status != "timeout":
        out.result = parse_output(name, stdout)
        if proc.returncode != 0 and out.result is not None:
            # the script measured and reported, and says a criterion of its own failed
            out.status = f"reported, exit {proc.returncode}"
            out.message = "the script's own pass criteria failed; see its rows"
        elif proc.returncode != 0:
            out.status = "failed"
            tail = [ln for ln in stdout.strip().splitlines() if ln.strip()][-1:]
            out.message = f"exit status {proc.returncode}: {tail[0][-200:] if tail else ''}"
        elif out.result is None:
            out.status = "no result"
            out.message = "no BENCH_JSON (or JSON) result line in the output"
    return out


# =========================================================================== Markdown
def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.3g}" if a < 10 else f"{v:.2f}".rstrip("0").rstrip(".")
        return f"{v:.3g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _value_cell(r: dict, gpu: bool) -> str:
    if r.get("value") is None:
        if r.get("device") == "cuda" and not gpu:
            return "no GPU"
        return "—"
    unit = r.get("unit") or ""
    return f"{_fmt(r['value'])} {unit}".strip()


def _goal_cell(r: dict) -> str:
    parts = [str(r["goal"])] if r.get("goal") else []
    if r.get("goal_ratio"):
        parts.append(f"ratio {r['goal_ratio']}")
    return _fmt(", ".join(parts)) if parts else "—"


def _pass_cell(r: dict) -> str:
    p = r.get("pass")
    return "—" if p is None else ("**pass**" if p else "**MISS**")


def _ratio_cell(r: dict) -> str:
    x = _num(r.get("ratio"))
    return "—" if x is None else f"{_fmt(x)}x"


def render_markdown(outcomes: list[Outcome], *, machine: dict, git: dict, started: str,
                    total_s: float, load: tuple[str, str], argv: list[str], quick: bool,
                    readme: str = "../benchmarks/README.md", partial: bool = False) -> str:
    gpu = bool(machine.get("gpu"))
    v = machine["versions"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m blender_m2d bench`); do not edit by hand: every "
        "figure below comes from the run described here"
        + (" (a partial run: only some benchmarks, or their quick settings)"
           if partial else "") + ". How to read it: "
        f"[benchmarks/README.md]({readme}#how-to-read-the-benchmarks).",
        "",
        "| run | |",
        "|---|---|",
        f"| commit | `{git['commit']}`"
        + (f" **dirty** ({git['changed_files']} changed or untracked files; figures are of "
           "the working tree)" if git["dirty"] else " (clean tree)") + f", branch "
        f"`{git['branch']}` |",
        f"| date | {started} (UTC), {total_s / 60:.1f} min in all |",
        f"| command | `{' '.join(['m2d bench', *argv])}`" + (" (quick settings)" if quick
                                                              else "") + " |",
        f"| CPU | {machine['cpu']}, {machine['cores']} cores ({machine['cores_usable']} usable)"
        f", {machine['ram_gb']} GB RAM |",
        f"| GPU | {machine['gpu'] or 'no GPU (GPU rows say so)'} |",
        f"| OS | {machine['os']}, Python {machine['python']} |",
        f"| packages | bpy {v['bpy']}, numpy {v['numpy']}, librosa {v['librosa']}, "
        f"onnxruntime {v['onnxruntime']} ({', '.join(machine['onnxruntime_providers'])}), "
        f"torch {v['torch']} |",
        f"| load average (1/5/15 min) | {load[0]} at the start, {load[1]} at the end |",
        "",
        "## Summary",
        "",
        "Ratio > 1: the figure beats its baseline (see the README). Goals are the issues' "
        "targets.",
        "",
        "| benchmark | figure | value | baseline (same run) | baseline value | ratio | goal "
        "| pass |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        if o.result is None or not o.result["rows"]:
            lines.append(f"| {o.name} | **{o.status}**: {_fmt(o.message)} | | | | | | |")
            continue
        for r in o.result["rows"]:
            base = r.get("baseline")
            bval = r.get("baseline_value")
            bcell = "—" if bval is None else f"{_fmt(bval)} {r.get('unit') or ''}".strip()
            lines.append(
                f"| {o.name} | {_fmt(r['metric'])} | {_value_cell(r, gpu)} | "
                f"{_fmt(base) if base else '—'} | {bcell} | "
                f"{_ratio_cell(r)} | {_goal_cell(r)} | {_pass_cell(r)} |")
    lines += ["", "## Runs", "",
              "Peak RSS: the largest resident memory of the script or any of its child "
              "processes (`wait4`); CPU: user + system seconds of the whole process tree.", "",
              "| benchmark | script | status | wall | CPU | peak RSS | arguments |",
              "|---|---|---|---|---|---|---|"]
    for o in outcomes:
        args = " ".join(o.command[2:]) or "(none)"
        rss = o.extra.get("peak_rss_mb")
        cpu = o.extra.get("cpu_s")
        lines.append(f"| {o.name} | `{o.script}` | {o.status}"
                     f"{': ' + _fmt(o.message) if o.message and o.status != 'ok' else ''} | "
                     f"{o.wall_s:.0f} s | {'—' if cpu is None else f'{cpu:.0f} s'} | "
                     f"{'—' if rss is None else f'{rss:.0f} MB'} | `{args}` |")
    for o in outcomes:
        lines += ["", f"## {o.name}", ""]
        if o.result is None:
            lines.append(f"No result ({o.status}: {_fmt(o.message)}); see `{_rel(o.log)}`.")
            continue
        res = o.result
        if res["rows"]:
            lines += ["| figure | value | baseline | ratio | goal | pass | note |",
                      "|---|---|---|---|---|---|---|"]
            for r in res["rows"]:
                base = r.get("baseline")
                bval = r.get("baseline_value")
                btxt = "—" if not base else (
                    f"{_fmt(base)}: {_fmt(bval)} {r.get('unit') or ''}".strip()
                    if bval is not None else _fmt(base))
                lines.append(f"| {_fmt(r['metric'])} | {_value_cell(r, gpu)} | {btxt} | "
                             f"{_ratio_cell(r)} | {_goal_cell(r)} | {_pass_cell(r)} | "
                             f"{_fmt(r.get('note', ''))} |")
        for t in res["tables"]:
            cols = [str(c) for c in t.get("columns") or []]
            if not cols:
                continue
            lines += ["", f"**{_fmt(t.get('title', ''))}**", "",
                      "| " + " | ".join(_fmt(c) for c in cols) + " |",
                      "|" + "---|" * len(cols)]
            for cells in t.get("rows") or []:
                cells = list(cells) + [""] * (len(cols) - len(cells))
                lines.append("| " + " | ".join(_fmt(c) for c in cells[:len(cols)]) + " |")
            if t.get("note"):
                lines += ["", _fmt(t["note"])]
        if res["notes"]:
            lines.append("")
            lines += [f"* {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"


def _rel(path: str) -> str:
    with contextlib.suppress(ValueError):
        return Path(path).resolve().relative_to(REPO).as_posix()
    return path


# =========================================================================== command
def run(args: argparse.Namespace) -> int:
    from ..core.errors import M2DError
    from ..core.fileio import write_bytes_atomic, write_json_atomic

    bench_dir = Path(args.bench_dir)
    if not bench_dir.is_dir():
        raise M2DError("no benchmarks folder: m2d bench needs a source checkout of "
                       "blender_m2d (pass --bench-dir)", path=bench_dir)
    scripts = discover(bench_dir)
    only, skip = _names(args.only), _names(args.skip)
    unknown = [n for n in only + skip if n not in scripts]
    if unknown:
        raise M2DError(f"no benchmark named {unknown[0]!r}; known: {', '.join(scripts)}")
    chosen = {n: p for n, p in scripts.items() if (not only or n in only) and n not in skip}
    if args.list:
        for n, p in scripts.items():
            s = spec_of(n, p)
            a = s.quick if args.quick else s.args
            mark = "" if n in chosen else "  (not selected)"
            print(f"{n:<14} {p.name:<26} args: {' '.join(a) or '-':<36} timeout "
                  f"{args.timeout or s.timeout_s} s{mark}")
        return 0
    partial = bool(only or skip or args.quick)
    out_md = Path(args.out) if args.out else (OUT / "benchmarks.md" if partial else DOC)
    log_dir = OUT / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    out_md.parent.mkdir(parents=True, exist_ok=True)

    started = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M")
    git = git_info([out_md, OUT])
    machine = machine_info()
    load0 = _load()
    t_start = time.perf_counter()
    outcomes: list[Outcome] = []
    for n, p in chosen.items():
        s = spec_of(n, p)
        left = args.budget - (time.perf_counter() - t_start)
        if left < 30:
            outcomes.append(Outcome(name=n, script=p.name, command=[], status="skipped",
                                    message=f"the {args.budget} s budget was used up"))
            print(f"[bench] {n}: skipped (budget used up)", flush=True)
            continue
        timeout = min(args.timeout or s.timeout_s, left)
        arglist = list(s.quick if args.quick else s.args)
        print(f"[bench] {n}: {p.name} {' '.join(arglist)} (timeout {timeout:.0f} s)",
              flush=True)
        o = run_one(n, p, arglist, timeout, log_dir)
        outcomes.append(o)
        print(f"[bench] {n}: {o.status} in {o.wall_s:.1f} s"
              + (f" ({o.message})" if o.message else ""), flush=True)
    total = time.perf_counter() - t_start
    argv = sys.argv[2:] if sys.argv[1:2] == [NAME] else []
    md = render_markdown(outcomes, machine=machine, git=git, started=started, total_s=total,
                         load=(load0, _load()), argv=argv, quick=args.quick,
                         readme=Path(os.path.relpath(BENCH_DIR / "README.md",
                                                     out_md.resolve().parent)).as_posix(),
                         partial=partial)
    write_bytes_atomic(out_md, md.encode("utf-8"))
    write_json_atomic(OUT / "results.json", {
        "format": "m2d-bench-results", "format_version": 1, "started_utc": started,
        "total_s": round(total, 1), "git": git, "machine": machine,
        "benchmarks": [{"name": o.name, "script": o.script, "command": o.command,
                        "status": o.status, "message": o.message, "wall_s": round(o.wall_s, 1),
                        "returncode": o.returncode, **o.extra, "result": o.result}
                       for o in outcomes]})
    print(f"[bench] {len(outcomes)} benchmarks in {total / 60:.1f} min; wrote {out_md}")
    bad = [o.name for o in outcomes if o.result is None]
    if bad:
        print(f"[bench] no result from: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0
