"""Model benchmarks: parameters, ONNX size, whole-song latency (torch vs onnxruntime), and
training throughput.

    .venv/bin/python benchmarks/bench_models.py            # all presets, CPU (+ GPU when present)
    .venv/bin/python benchmarks/bench_models.py --presets small --quick

Prints a markdown table and one JSON line (``BENCH {...}``). Rows that need a GPU say "no GPU"
when torch/onnxruntime see no CUDA device. Latency = one song of 40 phrases, (40, 1, 128, 128)
float32 in, probabilities out; median of ``--repeats`` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import Encoder, Predictor, PretrainNet, get_preset, parameter_table
from models.export_onnx import export_onnx_bytes, parity_check

SONG_PHRASES = 40


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ort_session(data: bytes, provider: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    providers = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider"
                              else [])
    s = ort.InferenceSession(data, sess_options=opts, providers=providers)
    return s if s.get_providers()[0] == provider else None


def bench_preset(name: str, k: int, repeats: int) -> dict:
    cfg = get_preset(name, n_classes=k)
    torch.manual_seed(0)
    enc, pred = Encoder(cfg).eval(), Predictor(cfg).eval()
    data, net = export_onnx_bytes(enc, pred)
    diff = parity_check(data, net, batch_sizes=(1, SONG_PHRASES))
    x = torch.rand(SONG_PHRASES, 1, 128, 128)
    xn = x.numpy()
    with torch.no_grad():
        t_torch = median_time(lambda: net(x), repeats)
    s_cpu = ort_session(data, "CPUExecutionProvider")
    t_ort = median_time(lambda: s_cpu.run(None, {"mel": xn}), repeats)
    row = {"preset": name, "K": k, "params": parameter_table(cfg), "onnx_mb": len(data) / 1e6,
           "parity_max_abs_diff": diff, "torch_cpu_s": t_torch, "ort_cpu_s": t_ort,
           "ort_speedup_vs_torch": t_torch / t_ort}
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        s_gpu = ort_session(data, "CUDAExecutionProvider")
        if s_gpu is not None:
            t_gpu = median_time(lambda: s_gpu.run(None, {"mel": xn}), repeats)
            row.update(ort_cuda_s=t_gpu, ort_cuda_speedup_vs_cpu=t_ort / t_gpu)
    row.setdefault("ort_cuda_s", "no GPU")
    return row


def pretrain_throughput(name: str, device: torch.device, batch: int, steps: int,
                        amp: bool) -> float:
    cfg = get_preset(name, n_classes=100)
    net = PretrainNet(cfg).to(device).train()
    dtype = torch.bfloat16 if amp and device.type == "cuda" else None
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    opt = torch.optim.Adam(net.parameters(), 1e-4, fused=device.type == "cuda")
    mel = torch.rand(batch, 1, 128, 128, device=device)
    if device.type == "cuda":
        mel = mel.contiguous(memory_format=torch.channels_last)
    melody = torch.rand(batch, 128, device=device)
    rhythm = (torch.rand(batch, 128, device=device) > 0.8).float()

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            _, losses = net(mel, melody, rhythm)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()

    for _ in range(8 if device.type == "cuda" else 2):  # cuDNN autotuning on CUDA
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t)


def classify_throughput(name: str, device: torch.device, steps: int) -> dict:
    """Stage 2 = embedding the data once with frozen E, then training P on the embeddings."""
    cfg = get_preset(name, n_classes=1101 if name == "paper" else 200)
    enc = Encoder(cfg).to(device).eval()
    x = torch.rand(64, 1, 128, 128, device=device)
    with torch.no_grad():
        t_emb = median_time(lambda: enc(x), max(steps // 4, 2))
    pred = Predictor(cfg).to(device).train()
    opt = torch.optim.SGD(pred.parameters(), 1e-2, momentum=0.9, weight_decay=5e-4)
    u = torch.rand(256, cfg.embed_dim, device=device)
    y = torch.randint(0, cfg.n_classes, (256,), device=device)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(pred(u), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_p = median_time(step, steps)
    return {"embed_samples_per_s": 64 / t_emb, "predictor_samples_per_s": 256 / t_p}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small,paper")
    ap.add_argument("--k", type=int, default=0, help="K for tiny/small (default: the bundled "
                    "library's size, else 200); the paper preset always uses 1101")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer training steps")
    args = ap.parse_args(argv)
    k_small = args.k or _bundled_k() or 200
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    rows = [bench_preset(p, 1101 if p == "paper" else k_small, args.repeats) for p in presets]
    steps = 3 if args.quick else 10
    cpu = torch.device("cpu")
    train = {"pretrain_small_cpu_samples_per_s": pretrain_throughput("small", cpu, 64, steps,
                                                                       False),
             **{f"classify_small_cpu_{k}": v
                for k, v in classify_throughput("small", cpu, steps).items()}}
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        train["pretrain_paper_gpu_amp_samples_per_s"] = pretrain_throughput(
            "paper", gpu, 256, 60, True)
        train["pretrain_paper_gpu_amp_batch512_samples_per_s"] = pretrain_throughput(
            "paper", gpu, 512, 40, True)
        train["gpu"] = torch.cuda.get_device_name(0)
        train.update({f"classify_paper_gpu_{k}": v
                      for k, v in classify_throughput("paper", gpu, 30).items()})
    else:
        train["pretrain_paper_gpu_amp_samples_per_s"] = "no GPU"
        train["pretrain_paper_gpu_amp_batch512_samples_per_s"] = "no GPU"
    print(f"CPU threads: {torch.get_num_threads()} (os.cpu_count {os.cpu_count()})\n")
    print("| preset | K | E+P params | ONNX MB | torch CPU 40 phrases | ORT CPU 40 phrases | "
          "ORT/torch | ORT CUDA | parity max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cuda = (f"{r['ort_cuda_s'] * 1000:.1f} ms ({r['ort_cuda_speedup_vs_cpu']:.1f}x CPU)"
                if isinstance(r["ort_cuda_s"], float) else r["ort_cuda_s"])
        print(f"| {r['preset']} | {r['K']} | {r['params']['E+P'] / 1e6:.2f} M | "
              f"{r['onnx_mb']:.1f} | {r['torch_cpu_s'] * 1000:.0f} ms | "
              f"{r['ort_cpu_s'] * 1000:.0f} ms | {r['ort_speedup_vs_torch']:.2f}x | {cuda} | "
              f"{r['parity_max_abs_diff']:.1e} |")
    print()
    for key, v in train.items():
        print(f"- {key}: {v:.0f}" if isinstance(v, float) else f"- {key}: {v}")
    print("BENCH " + json.dumps({"presets": rows, "training": train}))
    return 0


def _bundled_k() -> int | None:
    p = Path(__file__).resolve().parents[1] / "blender_m2d" / "assets" / "library" / \
        "library.json"
    if not p.is_file():
        return None
    try:
        return len(json.loads(p.read_text())["phrases"])
    except (KeyError, ValueError):
        return None


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        sys.exit(main())
