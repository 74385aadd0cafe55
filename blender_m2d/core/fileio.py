"""Safe file I/O shared by every writer and loader of files we own.

* writes are atomic: data goes to a temporary sibling, then ``os.replace`` moves it into place,
  so a crash or a kill never leaves a half-written file or folder;
* loaders of our versioned JSON formats check ``format`` and ``format_version`` and raise
  :class:`~blender_m2d.core.errors.M2DError` naming the file on anything unexpected;
* paths read from a file we load can never escape the folder that holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import M2DError


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
"""The process umask, read once at import (os.umask can only be read by setting it)."""


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise M2DError("the output folder does not exist", path=parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as err:
        raise M2DError(f"cannot write here ({err.strerror})", path=path) from err
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise M2DError(f"cannot write the file ({err.strerror})", path=path) from err
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> Path:
    """Serialise ``obj`` (numpy arrays and scalars allowed) to ``path`` atomically."""
    text = json.dumps(obj, indent=indent, default=_json_default, ensure_ascii=False,
                      allow_nan=False)
    return write_bytes_atomic(path, (text + "\n").encode("utf-8"))


def read_json(path: str | os.PathLike, *, kind: str, max_version: int,
              max_bytes: int = 512 * 1024 * 1024) -> dict:
    """Load one of our versioned JSON files.

    The file must be an object with ``"format": kind`` and an integer ``"format_version"``
    between 1 and ``max_version``; anything else raises :class:`M2DError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise M2DError(f"no such {kind} file", path=path)
    if not path.is_file():
        raise M2DError(f"expected a {kind} file, found a folder", path=path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise M2DError(f"{kind} file is too large ({size} bytes)", path=path)
        raw = path.read_bytes()
    except PermissionError as err:
        raise M2DError("cannot read the file (permission denied)", path=path) from err
    except OSError as err:
        raise M2DError(f"cannot read the file ({err.strerror})", path=path) from err
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, and
        # ValueError itself for integers over Python's 4300-digit limit
        raise M2DError(f"not a valid {kind} JSON file ({err})", path=path) from err
    if not isinstance(doc, dict):
        raise M2DError(f"not a {kind} file: the top level is not a JSON object", path=path)
    if doc.get("format") != kind:
        raise M2DError(f"not a {kind} file (format is {doc.get('format')!r})", path=path)
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise M2DError(f"{kind} file has no valid format_version", path=path)
    if version > max_version:
        raise M2DError(
            f"{kind} format_version {version} is newer than this blender_m2d supports "
            f"({max_version}); update the add-on", path=path)
    return doc


def safe_child(root: str | os.PathLike, relative: str) -> Path:
    """Resolve ``relative`` (read from a file inside ``root``) without escaping ``root``."""
    root_p = Path(root).resolve()
    if not isinstance(relative, str) or not relative or os.path.isabs(relative):
        raise M2DError(f"invalid relative path {relative!r}", path=root)
    candidate = (root_p / relative).resolve()
    if candidate != root_p and root_p not in candidate.parents:
        raise M2DError(f"path {relative!r} escapes the folder", path=root)
    return candidate


def recover_replaced_directory(final: str | os.PathLike) -> bool:
    """Finish a folder replacement that a kill interrupted between its two renames.

    :func:`atomic_directory` moves an existing ``final`` aside to ``.NAME.old-PID`` and then
    moves the new folder in. A process killed between those renames leaves no ``final``; this
    moves the newest ``.NAME.old-*`` sibling back. Returns True if it restored one.
    """
    final = Path(final)
    if final.exists() or not final.parent.is_dir():
        return False
    olds = sorted((p for p in final.parent.glob(f".{final.name}.old-*") if p.is_dir()),
                  key=lambda p: p.stat().st_mtime)
    if not olds:
        return False
    os.replace(olds[-1], final)
    return True


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it to ``final`` only on success.

    On any exception the temporary folder is removed and an existing ``final`` is untouched.
    An existing ``final`` is replaced (moved aside, then deleted) only after the new one is
    complete.
    """
    final = Path(final)
    parent = final.parent if str(final.parent) else Path(".")
    if not parent.is_dir():
        raise M2DError("the output's parent folder does not exist", path=parent)
    recover_replaced_directory(final)
    if final.exists() and not overwrite:
        raise M2DError("already exists (pass overwrite to replace it)", path=final)
    if final.exists() and not final.is_dir():
        raise M2DError("exists and is not a folder", path=final)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=parent))
    except OSError as err:
        raise M2DError(f"cannot write here ({err.strerror})", path=final) from err
    try:
        yield tmp
        old = None
        if final.exists():
            old = parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
