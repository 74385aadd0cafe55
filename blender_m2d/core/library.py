"""The dance library on disk: ``library.json`` plus motion arrays that load without Blender.

A library is a folder::

    LIB/library.json             metadata: phrases, takes, skipped inputs, build info
    LIB/motion/root.npy          (N, 3)      float32  hip (root) position, metres
    LIB/motion/joints.npy        (N, J-1, 3) float16  joints 1..J-1 minus the root position
    LIB/motion/rotations.npy     (N, J, 4)   float16  canonical joint quaternions, w first

where N is the total number of frames of all phrases, concatenated in phrase order. The arrays
are plain ``.npy`` files, memory-mapped on load (``allow_pickle=False``), so opening a library of
10,000 phrases reads only the JSON. The format is documented in docs/formats.md ("Dance
library"); the coordinate and rotation conventions in :mod:`blender_m2d.core.retargeting`.

:func:`load_library` raises :class:`~blender_m2d.core.errors.M2DError` on anything wrong and never
follows a path out of the library folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import rigmath as rm
from .errors import M2DError
from .fileio import atomic_directory, read_json, recover_replaced_directory, safe_child
from .skeleton import CANON_JOINTS, CANON_PARENTS

log = logging.getLogger(__name__)

LIBRARY_FORMAT = "m2d-library"
LIBRARY_VERSION = 1
LIBRARY_FILE = "library.json"
MOTION_FILES = {
    "root": ("motion/root.npy", "float32", 3),
    "joints": ("motion/joints.npy", "float16", None),
    "rotations": ("motion/rotations.npy", "float16", 4),
}
STYLES = ("urban", "jazz", "hip-hop", "popping", "k-pop", "locking", "breaking", "acgn")
"""The paper's eight dance styles; any other lower-case word (``"salsa"``, ``"modern"``) is
allowed too."""


# --- data classes --------------------------------------------------------------------------------

@dataclass(frozen=True)
class DancePhrase:
    """One dance phrase of the library (metadata only; motion via :meth:`Library.motion`).

    ``frame_start``/``frame_end`` are 0-based frame indices of the source take at its own frame
    rate, ``frame_end`` inclusive; ``n_frames`` counts frames at the library's fps;
    ``beats_s`` are dance beats in seconds from the phrase start (first and last are the phrase
    boundaries); ``features`` follow :data:`blender_m2d.core.phrasing.FEATURE_NAMES`.
    """

    id: str
    source: str
    take: str
    frame_start: int
    frame_end: int
    n_frames: int
    duration_s: float
    beats_s: np.ndarray
    tempo_bpm: float
    root_displacement_m: np.ndarray
    style: str
    tags: tuple[str, ...]
    features: np.ndarray

    @property
    def n_beats(self) -> int:
        """Beat intervals in the phrase (at least 6)."""
        return max(int(self.beats_s.size) - 1, 0)


@dataclass(frozen=True)
class PhraseMotion:
    """Canonical motion of one phrase.

    positions : (F, J, 3) float32, world joint positions in metres, Blender axes (+Z up, the
        character facing -Y at the take start).
    rotations : (F, J, 4) float32, canonical joint orientations (identity = T-pose facing -Y),
        quaternion w first, sign-continuous over frames.

    A world rigid transform (yaw ``a`` about +Z, then translation ``t``) applies as
    ``p' = Rz(a) p + t`` and ``q' = qz(a) * q`` (:meth:`transformed`).
    """

    fps: float
    positions: np.ndarray
    rotations: np.ndarray

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def duration_s(self) -> float:
        return (self.n_frames - 1) / self.fps

    def transformed(self, yaw_rad: float, translation_m: Sequence[float] = (0.0, 0.0, 0.0)
                    ) -> PhraseMotion:
        """This motion rotated by ``yaw_rad`` about +Z (through the origin), then translated."""
        rz = rm.yaw_matrix(yaw_rad)
        pos = self.positions.astype(np.float64) @ rz.T + np.asarray(translation_m, np.float64)
        rot = rm.quat_mul(rm.yaw_quat(yaw_rad), self.rotations.astype(np.float64))
        return PhraseMotion(self.fps, pos.astype(np.float32), rot.astype(np.float32))

    def facing_yaw(self, frame: int = 0) -> float:
        """Heading (radians about +Z) of the character's forward (-Y in the T-pose) at a frame."""
        fwd = rm.quat_to_matrix(self.rotations[frame, 0].astype(np.float64)) @ np.array(
            [0.0, -1.0, 0.0])
        return float(math.atan2(fwd[1], fwd[0]) + math.pi / 2)

    def normalized(self, frame: int = 0) -> PhraseMotion:
        """This motion moved so that at ``frame`` the hips are above the origin, facing -Y."""
        a = -self.facing_yaw(frame)
        moved = self.transformed(a)
        hip = moved.positions[frame, 0].astype(np.float64)
        return moved.transformed(0.0, (-hip[0], -hip[1], 0.0))


# --- the library ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Library:
    """A loaded dance library (see :func:`load_library`)."""

    path: Path
    fps: float
    phrases: tuple[DancePhrase, ...]
    ids: tuple[str, ...]
    hash: str
    feature_names: tuple[str, ...]
    takes: tuple[dict, ...]
    skipped: tuple[dict, ...]
    meta: dict
    _offsets: np.ndarray = field(repr=False)
    _arrays: dict = field(repr=False)
    _index: dict = field(repr=False)

    def __len__(self) -> int:
        return len(self.phrases)

    def index_of(self, phrase_id: str) -> int:
        """Position of ``phrase_id`` in :attr:`phrases` (the model's class index)."""
        try:
            return self._index[phrase_id]
        except KeyError:
            raise M2DError(f"no phrase {phrase_id!r} in this library", path=self.path) from None

    def motion(self, phrase_id: str | int) -> PhraseMotion:
        """Canonical motion of a phrase (by id or index), float32 arrays."""
        i = phrase_id if isinstance(phrase_id, (int, np.integer)) else self.index_of(phrase_id)
        if not 0 <= i < len(self.phrases):
            raise M2DError(f"phrase index {i} out of range", path=self.path)
        a, b = int(self._offsets[i]), int(self._offsets[i + 1])
        root = np.asarray(self._arrays["root"][a:b], dtype=np.float32)
        rel = np.asarray(self._arrays["joints"][a:b], dtype=np.float32)
        pos = np.empty((b - a, len(CANON_JOINTS), 3), dtype=np.float32)
        pos[:, 0] = root
        pos[:, 1:] = rel + root[:, None, :]
        rot = np.asarray(self._arrays["rotations"][a:b], dtype=np.float32)
        if not (np.isfinite(pos).all() and np.isfinite(rot).all()):
            raise M2DError(f"the motion of phrase {self.phrases[i].id!r} holds NaN or infinite "
                           "values: the motion files are damaged ('m2d library info --verify' "
                           "checks them); rebuild the library", path=self.path)
        rot /= np.maximum(np.linalg.norm(rot, axis=-1, keepdims=True), 1e-6)
        return PhraseMotion(self.fps, pos, rot)

    @property
    def total_duration_s(self) -> float:
        return float(sum(p.duration_s for p in self.phrases))

    def styles(self) -> dict[str, int]:
        """Phrase count per style."""
        return dict(Counter(p.style for p in self.phrases).most_common())

    def style_vectors(self) -> np.ndarray:
        """Standardised motion features [shape=(K, D)], the style descriptor of each phrase.

        Each feature of :data:`~blender_m2d.core.phrasing.FEATURE_NAMES` is z-scored over this
        library (mean 0, standard deviation 1; constant features become 0).
        """
        from .phrasing import standardize_features

        return standardize_features(np.stack([p.features for p in self.phrases]))

    def style_similarity(self) -> np.ndarray:
        """Style similarity [shape=(K, K)] in [0, 1] (1 on the diagonal), float32.

        A Gaussian kernel on the style vectors: ``exp(-|v_i - v_j|^2 / (2 sigma^2))`` with
        ``sigma`` the median pairwise distance. Used to initialise the transition matrix M0.
        Memory is O(K^2).
        """
        from .phrasing import style_similarity

        return style_similarity(self.style_vectors())

    def verify(self) -> None:
        """Re-hash the motion files against library.json; M2DError on any mismatch."""
        for key, spec in self.meta["motion"]["files"].items():
            p = safe_child(self.path, spec["path"])
            digest = _sha256_file(p)
            if digest != spec["sha256"]:
                raise M2DError(f"motion file {key!r} is corrupt (sha256 mismatch); rebuild "
                               "the library", path=p)

    def summary(self) -> dict[str, Any]:
        """Facts for ``m2d library info``."""
        tempi = np.array([p.tempo_bpm for p in self.phrases]) if self.phrases else np.zeros(1)
        beats = np.array([p.n_beats for p in self.phrases]) if self.phrases else np.zeros(1)
        durs = np.array([p.duration_s for p in self.phrases]) if self.phrases else np.zeros(1)
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return {
            "path": str(self.path), "name": self.meta.get("name", self.path.name),
            "format_version": self.meta["format_version"], "fps": self.fps,
            "phrases": len(self.phrases), "minutes": round(self.total_duration_s / 60.0, 2),
            "takes": len(self.takes), "skipped": len(self.skipped), "styles": self.styles(),
            "tempo_bpm": {"min": round(float(tempi.min()), 1),
                          "median": round(float(np.median(tempi)), 1),
                          "max": round(float(tempi.max()), 1)},
            "beats_per_phrase": {"min": int(beats.min()), "median": float(np.median(beats)),
                                 "max": int(beats.max())},
            "phrase_s": {"min": round(float(durs.min()), 2),
                         "median": round(float(np.median(durs)), 2),
                         "max": round(float(durs.max()), 2)},
            "size_bytes": int(size), "hash": self.hash,
        }


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- loading -------------------------------------------------------------------------------------

def _bad(reason: str, path: Path) -> M2DError:
    return M2DError(f"invalid dance library: {reason}", path=path)


def _num(v: Any, what: str, path: Path, *, lo: float = -math.inf, hi: float = math.inf
         ) -> float:
    try:
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) \
            and lo <= v <= hi
    except OverflowError:           # an integer too large for a float (JSON allows any length)
        ok = False
    if not ok:
        raise _bad(f"{what} must be a finite number in [{lo}, {hi}], got {v!r:.40}", path)
    return float(v)


def _int(v: Any, what: str, path: Path, *, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise _bad(f"{what} must be an integer >= {lo}, got {v!r}", path)
    return v


def _floats(v: Any, what: str, path: Path, *, n: int | None = None) -> np.ndarray:
    if not isinstance(v, list):
        raise _bad(f"{what} must be a list of numbers", path)
    try:
        arr = np.array(v, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise _bad(f"{what} must be a list of numbers", path) from None
    if arr.ndim != 1 or (n is not None and arr.size != n) or not np.all(np.isfinite(arr)):
        raise _bad(f"{what} must be {n if n is not None else 'a list of'} finite numbers",
                   path)
    return arr


def _open_array(root: Path, spec: Any, key: str, path: Path) -> np.ndarray:
    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str):
        raise _bad(f"motion file entry {key!r} is malformed", path)
    file = safe_child(root, spec["path"])
    if not file.is_file():
        raise M2DError(f"the library's motion file {spec['path']!r} is missing", path=root)
    try:
        arr = np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise M2DError(f"cannot read motion file ({err}); rebuild the library",
                       path=file) from err
    want_dtype = MOTION_FILES[key][1]
    if arr.dtype != np.dtype(want_dtype) or list(arr.shape) != spec.get("shape"):
        raise M2DError(f"motion file has dtype {arr.dtype} shape {list(arr.shape)}, "
                       f"library.json says {want_dtype} {spec.get('shape')}", path=file)
    return arr


def load_library(path: str | os.PathLike) -> Library:
    """Open a dance library folder (or its ``library.json``).

    Raises :class:`M2DError` naming the file on a missing or malformed file, a format version
    from the future, motion arrays that do not match the metadata, duplicate phrase ids, or paths
    that leave the folder. Motion is memory-mapped, not read.
    """
    p = Path(path)
    root = p.parent if p.name == LIBRARY_FILE or p.is_file() else p
    jpath = root / LIBRARY_FILE
    recover_replaced_directory(root)   # a rebuild killed between its two renames
    if not root.is_dir():
        raise M2DError("no such dance library folder", path=root)
    if not jpath.is_file():
        raise M2DError(f"not a dance library (no {LIBRARY_FILE}); build one with "
                       "'m2d library build'", path=root)
    raw = jpath.read_bytes()
    doc = read_json(jpath, kind=LIBRARY_FORMAT, max_version=LIBRARY_VERSION)
    fps = _num(doc.get("fps"), "fps", jpath, lo=1.0, hi=1000.0)
    skel = doc.get("skeleton")
    if not isinstance(skel, dict) or skel.get("joints") != list(CANON_JOINTS) \
            or skel.get("parents") != list(CANON_PARENTS):
        raise _bad("skeleton does not match this blender_m2d's canonical joints", jpath)
    motion = doc.get("motion")
    if not isinstance(motion, dict) or not isinstance(motion.get("files"), dict):
        raise _bad("missing 'motion' section", jpath)
    n_total = _int(motion.get("frames"), "motion.frames", jpath)
    arrays = {}
    for key in MOTION_FILES:
        arrays[key] = _open_array(root, motion["files"].get(key), key, jpath)
        if arrays[key].shape[0] != n_total:
            raise _bad(f"motion file {key!r} has {arrays[key].shape[0]} frames, "
                       f"expected {n_total}", jpath)
    if arrays["joints"].shape[1:] != (len(CANON_JOINTS) - 1, 3) or \
            arrays["rotations"].shape[1:] != (len(CANON_JOINTS), 4):
        raise _bad("motion arrays do not have one row per canonical joint", jpath)
    feature_names = doc.get("feature_names")
    if not isinstance(feature_names, list) or not all(isinstance(f, str) for f in feature_names):
        raise _bad("feature_names must be a list of strings", jpath)
    n_feat = len(feature_names)
    items = doc.get("phrases")
    if not isinstance(items, list):
        raise _bad("'phrases' must be a list", jpath)
    phrases, offsets, index = [], np.zeros(len(items) + 1, dtype=np.int64), {}
    pos = 0
    for i, d in enumerate(items):
        phrases.append(_phrase_from_json(d, i, n_feat, jpath))
        pid = phrases[-1].id
        if pid in index:
            raise _bad(f"duplicate phrase id {pid!r}", jpath)
        index[pid] = i
        off = _int(d.get("motion_offset"), f"phrase {pid!r} motion_offset", jpath)
        if off != pos:
            raise _bad(f"phrase {pid!r} motion_offset {off} != {pos} (phrases must be stored "
                       "in order)", jpath)
        pos += phrases[-1].n_frames
        offsets[i + 1] = pos
    if pos != n_total:
        raise _bad(f"phrases cover {pos} motion frames, the motion files hold {n_total}", jpath)
    takes = doc.get("takes", [])
    skipped = doc.get("skipped", [])
    if not isinstance(takes, list) or not isinstance(skipped, list):
        raise _bad("'takes' and 'skipped' must be lists", jpath)
    meta = {k: v for k, v in doc.items() if k != "phrases"}
    return Library(path=root, fps=fps, phrases=tuple(phrases), ids=tuple(index),
                   hash=hashlib.sha256(raw).hexdigest(), feature_names=tuple(feature_names),
                   takes=tuple(takes), skipped=tuple(skipped), meta=meta, _offsets=offsets,
                   _arrays=arrays, _index=index)


def _phrase_from_json(d: Any, i: int, n_feat: int, path: Path) -> DancePhrase:
    if not isinstance(d, dict):
        raise _bad(f"phrase #{i} is not an object", path)
    pid = d.get("id")
    if not isinstance(pid, str) or not pid or len(pid) > 200:
        raise _bad(f"phrase #{i} has no valid id", path)
    what = f"phrase {pid!r}"
    for key in ("source", "take", "style"):
        if not isinstance(d.get(key), str):
            raise _bad(f"{what}: {key!r} must be a string", path)
    tags = d.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _bad(f"{what}: tags must be a list of strings", path)
    n_frames = _int(d.get("n_frames"), f"{what} n_frames", path, lo=2)
    beats = _floats(d.get("beats_s"), f"{what} beats_s", path)
    fs = _int(d.get("frame_start"), f"{what} frame_start", path)
    fe = _int(d.get("frame_end"), f"{what} frame_end", path, lo=fs)
    return DancePhrase(
        id=pid, source=d["source"], take=d["take"], frame_start=fs, frame_end=fe,
        n_frames=n_frames, duration_s=_num(d.get("duration_s"), f"{what} duration_s", path,
                                           lo=0.0),
        beats_s=beats, tempo_bpm=_num(d.get("tempo_bpm"), f"{what} tempo_bpm", path, lo=0.0),
        root_displacement_m=_floats(d.get("root_displacement_m"), f"{what} root_displacement_m",
                                    path, n=3),
        style=d["style"], tags=tuple(tags),
        features=_floats(d.get("features"), f"{what} features", path, n=n_feat))


# --- writing -------------------------------------------------------------------------------------

@dataclass
class PhraseRecord:
    """A phrase ready to be written: metadata plus its canonical motion."""

    phrase: DancePhrase
    motion: PhraseMotion


def _round_list(a: Iterable[float], digits: int) -> list[float]:
    return [round(float(x), digits) for x in a]


def phrase_to_json(p: DancePhrase, motion_offset: int) -> dict:
    return {
        "id": p.id, "source": p.source, "take": p.take, "frame_start": int(p.frame_start),
        "frame_end": int(p.frame_end), "n_frames": int(p.n_frames),
        "duration_s": round(float(p.duration_s), 4), "beats_s": _round_list(p.beats_s, 4),
        "tempo_bpm": round(float(p.tempo_bpm), 2),
        "root_displacement_m": _round_list(p.root_displacement_m, 4), "style": p.style,
        "tags": list(p.tags), "features": [float(f"{x:.6g}") for x in p.features],
        "motion_offset": int(motion_offset),
    }


def _chmod_like_mkdir(path: Path) -> None:
    """Give the temporary folder (mkdtemp: 0700) the permissions a plain mkdir would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


def _dump(doc: dict, phrases: list[dict]) -> bytes:
    """JSON text with one phrase per line (readable, diff-friendly, fast to parse)."""
    head = json.dumps({k: v for k, v in doc.items()}, indent=1, ensure_ascii=False,
                      allow_nan=False)
    body = ",\n".join("  " + json.dumps(p, ensure_ascii=False, allow_nan=False,
                                         separators=(",", ":")) for p in phrases)
    text = head[:-2] + ',\n "phrases": [\n' + body + "\n ]\n}\n" if phrases else \
        head[:-2] + ',\n "phrases": []\n}\n'
    return text.encode("utf-8")


def write_library(out: str | os.PathLike, records: Sequence[PhraseRecord], *, fps: float,
                  feature_names: Sequence[str], takes: Sequence[dict] = (),
                  skipped: Sequence[dict] = (), build: dict | None = None,
                  name: str | None = None, extra: dict | None = None) -> Path:
    """Write a library folder atomically (temporary sibling, then rename).

    An existing library at ``out`` is replaced only once the new one is complete; on any error
    it is left untouched.
    """
    out = Path(out)
    ids = [r.phrase.id for r in records]
    if len(set(ids)) != len(ids):
        dup = [k for k, c in Counter(ids).items() if c > 1]
        raise M2DError(f"duplicate phrase ids: {', '.join(dup[:5])}", path=out)
    n_total = int(sum(r.motion.n_frames for r in records))
    n_j = len(CANON_JOINTS)
    root = np.empty((n_total, 3), np.float32)
    joints = np.empty((n_total, n_j - 1, 3), np.float16)
    rots = np.empty((n_total, n_j, 4), np.float16)
    phrases, pos = [], 0
    for r in records:
        m = r.motion
        if m.positions.shape != (m.n_frames, n_j, 3) or m.rotations.shape != (m.n_frames, n_j, 4):
            raise ValueError(f"phrase {r.phrase.id}: motion arrays have the wrong shape")
        if m.n_frames != r.phrase.n_frames:
            raise ValueError(f"phrase {r.phrase.id}: n_frames {r.phrase.n_frames} != motion "
                             f"{m.n_frames}")
        f = m.n_frames
        p64 = m.positions.astype(np.float64)
        root[pos:pos + f] = p64[:, 0]
        joints[pos:pos + f] = p64[:, 1:] - p64[:, :1]
        rots[pos:pos + f] = rm.quat_make_continuous(rm.quat_normalize(m.rotations), axis=0)
        phrases.append(phrase_to_json(r.phrase, pos))
        pos += f
    try:
        with atomic_directory(out) as tmp:
            _chmod_like_mkdir(tmp)
            (tmp / "motion").mkdir()
            files = {}
            for key, arr in (("root", root), ("joints", joints), ("rotations", rots)):
                rel = MOTION_FILES[key][0]
                np.save(tmp / rel, arr, allow_pickle=False)
                files[key] = {"path": rel, "dtype": str(arr.dtype), "shape": list(arr.shape),
                              "sha256": _sha256_file(tmp / rel)}
            doc = {
                "format": LIBRARY_FORMAT, "format_version": LIBRARY_VERSION,
                "name": name or out.name, "fps": float(fps),
                "coordinates": "metres; Blender axes, +Z up; each take starts at the origin facing "
                               "-Y; quaternions w-first, identity = canonical T-pose",
                "skeleton": {"joints": list(CANON_JOINTS), "parents": list(CANON_PARENTS)},
                "feature_names": list(feature_names),
                "motion": {"frames": n_total, "files": files},
                "takes": list(takes), "skipped": list(skipped), "build": build or {},
            }
            if extra:
                doc.update(extra)
            (tmp / LIBRARY_FILE).write_bytes(_dump(doc, phrases))
    except OSError as err:
        raise M2DError(f"cannot write the library ({err.strerror or err}); nothing was "
                       "changed", path=out) from err
    log.info("wrote %d phrases (%d frames) to %s", len(records), n_total, out)
    return out


# --- synthetic libraries (tests, benchmarks, examples) ----------------------------------------

def synthetic_records(n_phrases: int, *, n_frames: int = 8, fps: float = 30.0,
                      styles: Sequence[str] = ("salsa", "modern"), seed: int = 0,
                      feature_dim: int | None = None) -> list[PhraseRecord]:
    """Deterministic fake phrases (a swaying stick figure) for tests and benchmarks.

    Not dance: use a real library for anything that judges motion.
    """
    from .phrasing import FEATURE_NAMES
    from .retargeting import TPOSE_DIRECTION

    rng = np.random.default_rng(seed)
    d = len(FEATURE_NAMES) if feature_dim is None else feature_dim
    base = np.zeros((len(CANON_JOINTS), 3))
    base[0] = (0.0, 0.0, 0.95)
    for j in range(1, len(CANON_JOINTS)):
        base[j] = base[CANON_PARENTS[j]] + TPOSE_DIRECTION[CANON_PARENTS[j]] * 0.2
    t = np.arange(n_frames) / fps
    out = []
    for i in range(n_phrases):
        style = styles[i % len(styles)]
        phase = rng.uniform(0, 2 * np.pi)
        sway = 0.05 * np.sin(2 * np.pi * 2.0 * t + phase)
        pos = np.repeat(base[None], n_frames, 0)
        pos[:, :, 0] += sway[:, None]
        rot = np.zeros((n_frames, len(CANON_JOINTS), 4))
        rot[..., 0] = 1.0
        beats = np.linspace(0.0, t[-1], 7)
        feats = rng.normal(size=d) + (2.0 if style == styles[0] else -2.0)
        phrase = DancePhrase(
            id=f"syn_{i:06d}", source="synthetic", take=f"take_{i // 10:05d}",
            frame_start=i * n_frames, frame_end=i * n_frames + n_frames - 1, n_frames=n_frames,
            duration_s=float(t[-1]), beats_s=beats,
            tempo_bpm=float(60.0 / max(beats[1] - beats[0], 1e-3)),
            root_displacement_m=pos[-1, 0] - pos[0, 0], style=style, tags=("synthetic",),
            features=feats)
        out.append(PhraseRecord(phrase, PhraseMotion(fps, pos.astype(np.float32),
                                                     rot.astype(np.float32))))
    return out


def write_synthetic_library(out: str | os.PathLike, n_phrases: int, **kwargs: Any) -> Path:
    """Write :func:`synthetic_records` as a library folder (see there for the arguments)."""
    from .phrasing import FEATURE_NAMES

    recs = synthetic_records(n_phrases, **kwargs)
    return write_library(out, recs, fps=kwargs.get("fps", 30.0),
                         feature_names=FEATURE_NAMES[:recs[0].phrase.features.size]
                         if recs else FEATURE_NAMES,
                         name="synthetic", build={"tool": "write_synthetic_library"})
