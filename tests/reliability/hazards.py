"""Real hazards for the bad-input suite: unreadable files and read-only folders (also when the
tests run as root), a genuinely full file system, generated songs, a tiny ONNX scorer, and a
child process that can be SIGKILLed at a chosen moment.

* :func:`unprivileged` enforces file permissions: as root (CI containers) it switches the
  *effective* uid/gid to ``nobody`` for the body, so ``chmod 000`` and read-only folders refuse
  access exactly as they do for an animator; otherwise it does nothing.
* :func:`world_dir` is a folder ``nobody`` can traverse (pytest's ``tmp_path`` lives under a
  0700 folder).
* :func:`full_disk` mounts a tiny tmpfs and fills it, so writes fail with a real ``ENOSPC``
  from the kernel (skips when mounting is not allowed).
* :func:`click_song` writes a steady-beat song (kick, hat and a melody) of any length, rate and
  channel count.
* :func:`tiny_model` writes ``model.onnx`` + ``model.json`` for a library with ``onnx.helper``
  (no torch): a real graph onnxruntime runs, and a sidecar in the documented format.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "data" / "fixtures"
NOBODY = 65534


# ---------------------------------------------------------------------------- permissions

def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@contextlib.contextmanager
def unprivileged() -> Iterator[None]:
    """File permissions apply inside the body, even for root (effective uid -> nobody)."""
    if not running_as_root():
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@contextlib.contextmanager
def world_dir(prefix: str = "m2d-rel-") -> Iterator[Path]:
    """A fresh folder under the system temp dir that every user can enter (mode 0777)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o777)
    try:
        yield d
    finally:
        for p in [d, *d.rglob("*")]:
            with contextlib.suppress(OSError):
                p.chmod(0o777 if p.is_dir() else 0o666)
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------- full disk

@contextlib.contextmanager
def full_disk(tmp_path: Path, size_kb: int = 512) -> Iterator[Path]:
    """A folder on a ``size_kb`` tmpfs that is completely full (writes raise ENOSPC).

    Yields the folder; ``folder / "filler"`` holds the space. Files may be created before the
    fill with :func:`fill`: call ``fill(folder)`` after staging them.
    """
    if sys.platform != "linux" or not running_as_root() or shutil.which("mount") is None:
        pytest.skip("a real full disk needs a tmpfs mount (Linux, root)")
    mnt = tmp_path / "tinyfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0777", "m2dfull",
                        str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    try:
        yield mnt
    finally:
        for _ in range(10):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:   # Blender may still hold a handle of a failed write: detach lazily
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def fill(folder: Path) -> None:
    """Write ``folder / "filler"`` until the file system refuses (ENOSPC)."""
    chunk = b"\0" * 4096
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            os.write(fd, chunk)
    except OSError as err:
        assert err.errno == errno.ENOSPC, err
    finally:
        os.close(fd)
    # the last few bytes too (a 1-byte write must fail as well)
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0")
    except OSError as err:
        assert err.errno == errno.ENOSPC, err
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- audio

def click_song(path: Path, seconds: float = 12.0, *, sr: int = 44100, channels: int = 1,
               bpm: float = 120.0, seed: int = 0, subtype: str | None = None) -> Path:
    """A song with a steady beat: kick on every beat, hats between, a stepwise melody."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    y = np.zeros(n, np.float32)
    beat = 60.0 / bpm
    kick_t = np.arange(int(0.12 * sr)) / sr
    kick = (np.sin(2 * np.pi * (50 + 120 * np.exp(-kick_t * 40)) * kick_t)
            * np.exp(-kick_t * 25)).astype(np.float32)
    hat = (rng.normal(size=int(0.03 * sr)) * np.exp(-np.arange(int(0.03 * sr)) / (0.005 * sr))
           * 0.2).astype(np.float32)
    k = 0
    while k * beat < seconds:
        i = int(k * beat * sr)
        y[i:i + kick.size] += kick[: n - i] * (1.0 if k % 4 == 0 else 0.7)
        j = int((k + 0.5) * beat * sr)
        if j < n:
            y[j:j + hat.size] += hat[: n - j]
        k += 1
    notes = 220.0 * 2 ** (rng.integers(0, 12, size=int(seconds / beat) + 2) / 12)
    f0 = notes[(t / beat).astype(int)]
    y += (0.15 * np.sin(2 * np.pi * np.cumsum(f0) / sr)).astype(np.float32)
    y /= max(1.0, float(np.abs(y).max()) / 0.9)
    data = np.repeat(y[:, None], channels, axis=1) if channels > 1 else y
    if channels > 1:   # make the channels differ a little (a real multichannel mix)
        data = data * np.linspace(1.0, 0.6, channels, dtype=np.float32)[None, :]
    sf.write(str(path), data, sr, subtype=subtype)
    return path


# ---------------------------------------------------------------------------- ONNX scorer

def tiny_model(out_dir: Path, *, phrase_ids, library_hash: str, k: int | None = None,
               embedding_dim: int = 8, seed: int = 0) -> Path:
    """``out_dir/model.onnx`` + ``model.json``: mel -> mean over time -> linear -> softmax.

    ``k`` (default ``len(phrase_ids)``) sets the graph's output size, so a model whose outputs
    disagree with its sidecar can be made on purpose.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from blender_m2d.core import inference

    ids = list(phrase_ids)
    k_graph = len(ids) if k is None else k
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (128, k_graph)).astype(np.float32), "W")
    we = numpy_helper.from_array(rng.normal(0, 0.1, (128, embedding_dim)).astype(np.float32),
                                 "WE")
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    shape = numpy_helper.from_array(np.array([-1, 128], np.int64), "shape")
    nodes = [
        helper.make_node("ReduceMean", ["mel", "axes"], ["pooled"], keepdims=0),   # B,1,128
        helper.make_node("Reshape", ["pooled", "shape"], ["flat"]),                 # B,128
        helper.make_node("MatMul", ["flat", "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["flat", "WE"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "m2d_tiny",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["B", 1, 128, 128])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["B", k_graph]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["B", embedding_dim])],
        initializer=[w, we, axes, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.onnx").write_bytes(data)
    kk = len(ids)
    m = np.clip(rng.uniform(0.05, 1.0, (kk, kk)), inference.TRANSITION_MIN, 1.0)
    doc = {"format": inference.SIDECAR_FORMAT, "format_version": inference.SIDECAR_VERSION,
           "preset": "tiny-test", "model_config": {}, "n_classes": kk,
           "embedding_dim": embedding_dim,
           "onnx": {"file": "model.onnx", "sha256": hashlib.sha256(data).hexdigest(),
                    "bytes": len(data), "opset": 18, "input": inference.INPUT_NAME,
                    "outputs": list(inference.OUTPUT_NAMES)},
           "library": {"phrase_ids": ids, "hash": library_hash},
           "features": inference.feature_params(),
           "transition": np.round(m, 5).tolist(), "training": {}, "metrics": {}}
    (out_dir / "model.json").write_text(json.dumps(doc))
    return out_dir


# ---------------------------------------------------------------------------- kill

def run_until(cmd: list[str], marker: Path, *, timeout_s: float = 120.0,
              env: dict | None = None, cwd: Path = REPO) -> subprocess.Popen:
    """Start ``cmd`` and return once ``marker`` exists (the child reached the moment to kill)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while not marker.exists():
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"child exited ({proc.returncode}) before {marker.name}:\n"
                                 f"{out[-3000:]}")
        if time.monotonic() - t0 > timeout_s:
            proc.kill()
            raise AssertionError(f"child did not reach {marker.name} in {timeout_s} s")
        time.sleep(0.01)
    return proc


def kill9(proc: subprocess.Popen) -> None:
    proc.kill()           # SIGKILL: no cleanup handlers, no finally blocks
    proc.wait(timeout=30)
    if proc.stdout:
        proc.stdout.close()
