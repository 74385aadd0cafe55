"""Pack a prepared training folder small enough to travel to a GPU machine, and unpack it there.

The GPU machine this project is sometimes lent takes at most 64 MiB with each call, and a
prepared folder's ``mel.npy`` (float16, 32 KiB per phrase) is larger than that for a few
thousand phrases. ``pack`` stores the mel spectrograms as 8-bit (``round(mel * 255)``; the
features are in [0, 1], so the error is at most 1/510 of their range) and xz-compresses the
folder; ``unpack`` restores a prepared folder with a float16 ``mel.npy``. Every other array and
``prepared.json`` travel unchanged. Only the GPU run sees the 8-bit mel; evaluation happens on
the original features (docs/training.md, "The bundled model").

    .venv/bin/python tools/pack_prepared.py pack runs/bundled/prepared gpu/prepared.tar.xz
    python3 tools/pack_prepared.py unpack gpu/prepared.tar.xz runs/bundled/prepared
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

import numpy as np

SCALE = 255.0


def pack(prepared: Path, out: Path) -> int:
    doc = json.loads((prepared / "prepared.json").read_text(encoding="utf-8"))
    arrays = prepared / doc["arrays"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w:xz", preset=6) as tar:
        tar.add(prepared / "prepared.json", arcname="prepared.json")
        for f in sorted(arrays.glob("*.npy")):
            if f.name == "mel.npy":
                mel = np.load(f, mmap_mode="r")
                q = np.empty(mel.shape, np.uint8)
                for i in range(0, mel.shape[0], 256):
                    block = np.asarray(mel[i:i + 256], np.float32)
                    q[i:i + 256] = np.clip(np.rint(block * SCALE), 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                np.save(buf, q)
                info = tarfile.TarInfo(f"{doc['arrays']}/mel_u8.npy")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
            else:
                tar.add(f, arcname=f"{doc['arrays']}/{f.name}")
    tmp.replace(out)
    return out.stat().st_size


def unpack(archive: Path, prepared: Path) -> Path:
    prepared.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:xz") as tar:
        tar.extractall(prepared, filter="data")
    doc = json.loads((prepared / "prepared.json").read_text(encoding="utf-8"))
    arrays = prepared / doc["arrays"]
    q = np.load(arrays / "mel_u8.npy")
    np.save(arrays / "mel.npy", (q.astype(np.float32) / SCALE).astype(np.float16))
    (arrays / "mel_u8.npy").unlink()
    return prepared


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("pack", "unpack"))
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    a = ap.parse_args()
    if a.action == "pack":
        print(f"{a.dst}: {pack(a.src, a.dst) / 2**20:.1f} MiB")
    else:
        print(f"unpacked into {unpack(a.src, a.dst)}")


if __name__ == "__main__":
    main()
