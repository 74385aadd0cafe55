"""Read a BVH file's header and count its frames without Blender.

The library builder checks every BVH this way before importing anything, so a truncated file, an
unknown skeleton or a bone map that names missing joints is reported up front. The motion itself
is imported with Blender's own BVH importer (:mod:`blender_m2d.blender_io`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import M2DError


@dataclass(frozen=True)
class BvhHeader:
    """Skeleton and frame facts of a BVH file.

    ``joints``/``parents``: ROOT and JOINT names in file order, parent index (-1 for roots);
    ``root_offset``: the ROOT's OFFSET in file units and axes (BVH: +Y up);
    ``frames_declared``/``frames_complete``: the ``Frames:`` value and the number of complete
    frame lines present; ``partial_line``: a trailing incomplete frame line exists.
    """

    joints: tuple[str, ...]
    parents: tuple[int, ...]
    has_end_site: tuple[bool, ...]
    root_offset: tuple[float, float, float]
    n_channels: int
    frames_declared: int
    frames_complete: int
    partial_line: bool
    frame_time_s: float
    frames_nonfinite: int = 0
    """Complete frame lines holding a NaN or infinite value (Blender imports them as zeros)."""
    first_nonfinite: int = -1
    """0-based index of the first such frame (-1: none)."""

    @property
    def fps(self) -> float:
        """Frame rate from ``Frame Time`` (rounded to an integer when within 0.01 of one)."""
        fps = 1.0 / self.frame_time_s
        return float(round(fps)) if abs(fps - round(fps)) < 0.01 else fps

    @property
    def truncated(self) -> bool:
        return self.frames_complete < self.frames_declared


def read_bvh_header(path: str | os.PathLike) -> BvhHeader:
    """Parse ``path``'s hierarchy and motion header; :class:`M2DError` if it is not a BVH."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise M2DError("no such BVH file", path=path) from err
    except OSError as err:
        raise M2DError(f"cannot read the file ({err.strerror})", path=path) from err
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    lines = text.splitlines()
    if not lines or lines[0].strip().upper() != "HIERARCHY":
        raise M2DError("not a BVH file (it does not start with HIERARCHY)", path=path)
    joints, parents, end_site = [], [], []
    stack: list[int] = []
    pending: int | None = None
    in_end = 0
    root_offset = (0.0, 0.0, 0.0)
    n_channels = 0
    i = 1
    motion_at = None
    while i < len(lines):
        tok = lines[i].split()
        i += 1
        if not tok:
            continue
        key = tok[0].upper()
        if key in ("ROOT", "JOINT"):
            if len(tok) < 2:
                raise M2DError(f"line {i}: {tok[0]} without a name", path=path)
            joints.append(" ".join(tok[1:]))
            parents.append(stack[-1] if stack else -1)
            end_site.append(False)
            pending = len(joints) - 1
        elif key == "END":
            in_end += 1
            if stack:
                end_site[stack[-1]] = True
            pending = None
        elif key == "{":
            if pending is not None:
                stack.append(pending)
                pending = None
            elif in_end:
                in_end += 1
        elif key == "}":
            if in_end:
                in_end -= 1
                if in_end == 1:
                    in_end = 0
            elif stack:
                stack.pop()
        elif key == "OFFSET" and not in_end and len(joints) == 1 and len(stack) == 1:
            try:
                root_offset = tuple(float(v) for v in tok[1:4])
            except ValueError:
                raise M2DError(f"line {i}: bad OFFSET", path=path) from None
        elif key == "CHANNELS":
            try:
                n_channels += int(tok[1])
            except (IndexError, ValueError):
                raise M2DError(f"line {i}: bad CHANNELS line", path=path) from None
        elif key == "MOTION":
            motion_at = i
            break
    if not joints:
        raise M2DError("BVH file has no ROOT joint", path=path)
    if motion_at is None or motion_at + 1 >= len(lines):
        raise M2DError("BVH file has no MOTION section (truncated?)", path=path)
    frames_declared, frame_time = None, None
    j = motion_at
    while j < len(lines) and (frames_declared is None or frame_time is None):
        low = lines[j].strip().lower()
        j += 1
        if low.startswith("frames:"):
            try:
                frames_declared = int(low.split(":", 1)[1])
            except ValueError:
                raise M2DError(f"line {j}: bad 'Frames:' value", path=path) from None
        elif low.startswith("frame time:"):
            try:
                frame_time = float(low.split(":", 1)[1])
            except ValueError:
                raise M2DError(f"line {j}: bad 'Frame Time:' value", path=path) from None
        elif low:
            break
    if frames_declared is None or frame_time is None or not math.isfinite(frame_time) \
            or frame_time <= 0:
        raise M2DError("BVH file lacks valid 'Frames:' / 'Frame Time:' lines", path=path)
    complete, partial = 0, False
    nonfinite, first_nonfinite = 0, -1
    for line in lines[j:]:
        tokens = line.split()
        n = len(tokens)
        if n == 0:
            continue
        if n == n_channels:
            if partial:
                break
            if ("n" in line or "N" in line) and not _all_finite(tokens):   # nan, inf
                nonfinite += 1
                first_nonfinite = complete if first_nonfinite < 0 else first_nonfinite
            complete += 1
        else:
            partial = True
            break
    return BvhHeader(tuple(joints), tuple(parents), tuple(end_site), root_offset, n_channels,
                     frames_declared, complete, partial, frame_time, nonfinite, first_nonfinite)


def _all_finite(tokens: list[str]) -> bool:
    try:
        return all(math.isfinite(float(t)) for t in tokens)
    except ValueError:
        return False
