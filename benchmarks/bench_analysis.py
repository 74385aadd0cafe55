"""Benchmark of the song analysis (issue #3): speed on one core, cold start, memory.

    .venv/bin/python benchmarks/bench_analysis.py [--quick]

Everything runs pinned to one CPU with every thread pool at 1 (OMP/MKL/OpenBLAS, onnxruntime
intra-op). Measured in this one run and printed as a table plus one JSON line:

* warm speed: ``analyze_song`` on a 3-minute song (decode included), best and median of 5
  runs, as a multiple of real time;
* the same pipeline with ``librosa.pyin`` as the melody step (its default 23 ms hop, and at
  CREPE's 62.5 ms hop), and the speed-up of the CREPE pipeline over each;
* cold start in fresh processes: import, first analysis; and for comparison librosa's
  numba-compiled beat tracking + onsets with an empty numba cache (what the analysis used to
  pay before core.mir replaced those calls);
* memory: peak RSS of a 1-hour file (refused), of streaming it through ``load_audio`` without a
  limit, and of analysing a 20-minute song (the longest accepted).

The 3-minute song is the first 180 s of ``sectoid_escape_from_chaosland.ogg`` (../shared/data)
re-encoded as Ogg Vorbis 44.1 kHz stereo; without ../shared it loops the bundled
``sectoid_metal_madness.ogg``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "NUMBA_NUM_THREADS", "M2D_ORT_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data" / "music"

from blender_m2d.core.analysis import analyze_song  # noqa: E402
from blender_m2d.core.errors import M2DError  # noqa: E402


def make_song(tmp: Path, seconds: float) -> Path:
    """A real song cut/looped to ``seconds``, as 44.1 kHz stereo Ogg Vorbis."""
    src = SHARED / "sectoid_escape_from_chaosland.ogg"
    if not src.exists():
        src = REPO / "data" / "songs" / "sectoid_metal_madness.ogg"
    y, sr = sf.read(src, dtype="float32", always_2d=True)
    n = int(seconds * sr)
    y = np.concatenate([y] * int(np.ceil(n / len(y))))[:n]
    out = tmp / f"song_{int(seconds)}s.ogg"
    # in blocks: libsndfile's Vorbis encoder crashes on very large single writes
    with sf.SoundFile(out, "w", samplerate=sr, channels=y.shape[1], format="OGG",
                      subtype="VORBIS") as f:
        for i in range(0, len(y), 65536):
            f.write(y[i:i + 65536])
    return out


def make_long_wav(tmp: Path, seconds: float, name: str, sr: int) -> Path:
    """Mono 16-bit WAV of real music looped to ``seconds`` (written in blocks)."""
    songs = sorted(SHARED.glob("*.ogg")) or sorted((REPO / "data" / "songs").glob("*.ogg"))
    out = tmp / name
    total = int(seconds * sr)
    written = 0
    with sf.SoundFile(out, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        while written < total:
            for song in songs:
                from blender_m2d.core.audio import load_audio

                y = load_audio(song, sr=sr).y[: total - written]
                f.write(y)
                written += y.size
                if written >= total:
                    break
    return out


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def in_subprocess(code: str, env: dict | None = None, timeout: float = 900) -> dict:
    """Run ``code`` in a fresh one-core interpreter; it prints one JSON line last."""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO)
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-3000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


PRELUDE = f"""
import os, sys, time, json, resource
if hasattr(os, 'sched_setaffinity'):
    os.sched_setaffinity(0, {{sorted(os.sched_getaffinity(0))[-1]}})
sys.path.insert(0, {str(REPO)!r})
def rss_mb():
    # peak RSS of this process (VmHWM; ru_maxrss would include the parent's peak at fork)
    try:
        for line in open('/proc/self/status'):
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="skip pyin at 23 ms, the numba cold start and the 20-minute song")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    results: dict = {"machine": platform.processor() or platform.machine(),
                     "python": platform.python_version(), "cores_used": 1}
    rows: list[tuple[str, str]] = []

    with tempfile.TemporaryDirectory(prefix="m2d_bench_") as tmpdir:
        tmp = Path(tmpdir)
        song = make_song(tmp, 180.0)

        # ---- warm speed, CREPE pipeline
        analyze_song(song)  # warm-up: model session, caches
        times = []
        for _ in range(args.repeats):
            res, dt = timed(analyze_song, song)
            times.append(dt)
        best, median = min(times), statistics.median(times)
        stages = {k: round(v, 3) for k, v in res.timings_s.items()}
        results.update(song_s=round(res.duration_s, 2), crepe_best_s=round(best, 3),
                       crepe_median_s=round(median, 3),
                       realtime_x_best=round(res.duration_s / best, 1),
                       realtime_x_median=round(res.duration_s / median, 1), stages_s=stages)
        rows.append(("3-min song, CREPE pipeline (best / median of "
                     f"{args.repeats})", f"{best:.2f} s / {median:.2f} s = "
                     f"{res.duration_s / best:.0f}x / {res.duration_s / median:.0f}x real time"))
        rows.append(("  stages (last run)", ", ".join(f"{k} {v:.2f}" for k, v in stages.items())))

        # ---- pyin pipelines
        _, t_coarse = timed(analyze_song, song, melody="pyin-coarse")
        results.update(pyin_coarse_s=round(t_coarse, 2), speedup_vs_pyin_coarse=round(
            t_coarse / best, 1))
        rows.append(("same pipeline, pyin at 62.5 ms hop", f"{t_coarse:.1f} s -> CREPE is "
                                                           f"{t_coarse / best:.1f}x faster"))
        if not args.quick:
            _, t_pyin = timed(analyze_song, song, melody="pyin")
            results.update(pyin_s=round(t_pyin, 2), speedup_vs_pyin=round(t_pyin / best, 1))
            rows.append(("same pipeline, librosa.pyin defaults (23 ms hop)",
                         f"{t_pyin:.1f} s -> CREPE is {t_pyin / best:.1f}x faster"))

        # ---- cold start
        cold = in_subprocess(PRELUDE + f"""
t0 = time.perf_counter()
from blender_m2d.core.analysis import analyze_song
t1 = time.perf_counter()
r = analyze_song({str(song)!r})
t2 = time.perf_counter()
r = analyze_song({str(song)!r})
t3 = time.perf_counter()
print(json.dumps(dict(import_s=t1 - t0, first_s=t2 - t1, second_s=t3 - t2,
                      numba='numba' in sys.modules, librosa='librosa' in sys.modules)))
""")
        results["cold"] = {k: (round(v, 3) if isinstance(v, float) else v)
                           for k, v in cold.items()}
        rows.append(("cold start: import / first analysis / second",
                     f"{cold['import_s']:.2f} s / {cold['first_s']:.2f} s / "
                     f"{cold['second_s']:.2f} s (numba loaded: {cold['numba']}, "
                     f"librosa loaded: {cold['librosa']})"))
        if not args.quick:
            numba_dir = tmp / "numba_cache"
            code = PRELUDE + f"""
import numpy as np
t0 = time.perf_counter()
import librosa
from blender_m2d.core.analysis import mel_power_spectrogram
from blender_m2d.core.audio import load_audio
y = load_audio({str(song)!r}).y
S = librosa.power_to_db(mel_power_spectrogram(y).T)
t1 = time.perf_counter()
env = librosa.onset.onset_strength(S=S, sr=22050)
librosa.beat.beat_track(onset_envelope=env, sr=22050)
librosa.onset.onset_detect(onset_envelope=env, sr=22050)
t2 = time.perf_counter()
print(json.dumps(dict(librosa_beats_onsets_s=t2 - t1)))
"""
            first = in_subprocess(code, env={"NUMBA_CACHE_DIR": str(numba_dir)})
            again = in_subprocess(code, env={"NUMBA_CACHE_DIR": str(numba_dir)})
            results["librosa_numba_cold"] = {
                "empty_cache_s": round(first["librosa_beats_onsets_s"], 2),
                "warm_disk_cache_s": round(again["librosa_beats_onsets_s"], 2)}
            rows.append(("for comparison: librosa beats+onsets, fresh process",
                         f"{first['librosa_beats_onsets_s']:.1f} s (empty numba cache) / "
                         f"{again['librosa_beats_onsets_s']:.1f} s (cache on disk)"))

        # ---- memory: 1-hour file, streaming decode, 20-minute song
        hour = make_long_wav(tmp, 3600.0, "hour.wav", sr=8_000)
        mem = in_subprocess(PRELUDE + f"""
from blender_m2d.core.analysis import analyze_song
from blender_m2d.core.errors import M2DError
base = rss_mb()
t0 = time.perf_counter()
try:
    analyze_song({str(hour)!r})
    msg = 'analysed?!'
except M2DError as err:
    msg = str(err)
print(json.dumps(dict(base_mb=base, peak_mb=rss_mb(), seconds=time.perf_counter() - t0,
                      message=msg)))
""")
        results["hour_refused"] = {k: (round(v, 2) if isinstance(v, float) else v)
                                   for k, v in mem.items()}
        rows.append(("1-hour file through analyze_song",
                     f"refused in {mem['seconds']:.2f} s, peak RSS {mem['peak_mb']:.0f} MB "
                     f"(after imports {mem['base_mb']:.0f} MB): {mem['message'][-70:]}"))
        stream = in_subprocess(PRELUDE + f"""
from blender_m2d.core.audio import load_audio
base = rss_mb()
t0 = time.perf_counter()
a = load_audio({str(hour)!r})
print(json.dumps(dict(base_mb=base, peak_mb=rss_mb(), seconds=time.perf_counter() - t0,
                      output_mb=a.y.nbytes / 2**20)))
""")
        results["hour_streamed"] = {k: round(v, 2) for k, v in stream.items()}
        rows.append(("1-hour file streamed by load_audio (no limit)",
                     f"{stream['seconds']:.1f} s, peak RSS {stream['peak_mb']:.0f} MB = "
                     f"{stream['base_mb']:.0f} MB imports + {stream['output_mb']:.0f} MB output "
                     f"+ {stream['peak_mb'] - stream['base_mb'] - stream['output_mb']:.0f} MB"))
        if not args.quick:
            long_song = make_long_wav(tmp, 20 * 60.0 - 5, "twenty.wav", sr=22_050)
            twenty = in_subprocess(PRELUDE + f"""
from blender_m2d.core.analysis import analyze_song
base = rss_mb()
t0 = time.perf_counter()
r = analyze_song({str(long_song)!r})
print(json.dumps(dict(base_mb=base, peak_mb=rss_mb(), seconds=time.perf_counter() - t0,
                      phrases=len(r.phrases), duration_s=r.duration_s)))
""")
            results["twenty_min"] = {k: round(v, 2) for k, v in twenty.items()}
            speed = twenty["duration_s"] / twenty["seconds"]
            rows.append(("20-minute song (the limit)",
                         f"{twenty['seconds']:.1f} s ({speed:.0f}x real time), "
                         f"peak RSS {twenty['peak_mb']:.0f} MB, "
                         f"{twenty['phrases']:.0f} phrases"))

    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except M2DError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
