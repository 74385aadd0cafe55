"""The ONNX scorer: music phrases' mel images -> probabilities over the library's dance phrases.

A trained model is two files side by side: ``model.onnx`` (encoder E + predictor P, input
``mel`` (B, 1, 128, 128) float32, outputs ``probs`` (B, K) softmax and ``embedding`` (B, D)) and
``model.json``, the sidecar (format ``m2d-model``, see docs/formats.md "Model sidecar"): the
library's phrase ids in class order and its hash, the feature parameters, the transition matrix
M (K, K), a summary of the training data and the metrics. :func:`load_scorer` checks that the
sidecar, the ONNX file and the library agree and refuses a mismatch with an
:class:`~blender_m2d.core.errors.M2DError` naming the files.

No torch, no bpy: onnxruntime is imported when a scorer is loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import timebase
from .errors import M2DError
from .fileio import read_json

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "m2d-model"
SIDECAR_VERSION = 1
INPUT_NAME = "mel"
OUTPUT_NAMES = ("probs", "embedding")
TRANSITION_MIN = 0.01
"""Entries of M are clipped to [TRANSITION_MIN, 1] (paper section 5.3)."""


def feature_params() -> dict[str, Any]:
    """Feature settings this blender_m2d computes; a model must have been trained with them."""
    return {"sample_rate": timebase.SAMPLE_RATE, "hop_length": timebase.HOP_LENGTH,
            "n_fft": timebase.N_FFT, "n_mels": timebase.N_MELS,
            "input_shape": [1, 128, 128], "axes": ["time", "mel"]}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resolve_model_paths(model_path: str | os.PathLike) -> tuple[Path, Path]:
    """``(model.onnx, model.json)`` for a model folder, an ``.onnx`` or a ``.json`` path."""
    p = Path(model_path)
    if p.is_dir():
        return p / "model.onnx", p / "model.json"
    if p.suffix == ".json":
        return p.with_suffix(".onnx"), p
    return p, p.with_suffix(".json")


def _check_sidecar_fields(doc: dict, sidecar: Path) -> None:
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise M2DError(f"model sidecar is invalid: {what}", path=sidecar)

    k = doc.get("n_classes")
    need(isinstance(k, int) and k >= 2, "'n_classes' must be an integer >= 2")
    d = doc.get("embedding_dim")
    need(isinstance(d, int) and d >= 1, "'embedding_dim' must be a positive integer")
    lib = doc.get("library")
    need(isinstance(lib, dict), "'library' must be an object")
    ids = lib.get("phrase_ids")
    need(isinstance(ids, list) and all(isinstance(i, str) for i in ids),
         "'library.phrase_ids' must be a list of strings")
    need(len(ids) == k, f"'library.phrase_ids' has {len(ids)} entries but n_classes is {k}")
    need(len(set(ids)) == len(ids), "'library.phrase_ids' has duplicates")
    need(isinstance(lib.get("hash"), str), "'library.hash' must be a string")
    onnx = doc.get("onnx")
    need(isinstance(onnx, dict) and isinstance(onnx.get("sha256"), str),
         "'onnx.sha256' is missing")
    need(isinstance(doc.get("features"), dict), "'features' must be an object")


def _transition_from(doc: dict, sidecar: Path) -> np.ndarray:
    k = doc["n_classes"]
    try:
        m = np.asarray(doc.get("transition"), dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as err:
        raise M2DError("model sidecar is invalid: 'transition' is not a numeric matrix",
                       path=sidecar) from err
    if m.shape != (k, k):
        raise M2DError(f"model sidecar is invalid: 'transition' has shape {m.shape}, "
                       f"expected ({k}, {k})", path=sidecar)
    if not np.all(np.isfinite(m)) or m.min() < TRANSITION_MIN - 1e-6 or m.max() > 1 + 1e-6:
        raise M2DError(f"model sidecar is invalid: 'transition' values must lie in "
                       f"[{TRANSITION_MIN}, 1]", path=sidecar)
    return np.clip(m, TRANSITION_MIN, 1.0)


def check_library(phrase_ids: Sequence[str], library_hash: str, library: Any, *,
                  sidecar: Path, library_path: str | None = None) -> None:
    """Refuse a library whose phrase ids (in class order) or hash differ from the sidecar's."""
    lib_ids = tuple(library.ids)
    where = library_path or getattr(library, "path", None)
    ids = tuple(phrase_ids)
    if lib_ids != ids:
        missing = [i for i in ids if i not in set(lib_ids)]
        extra = [i for i in lib_ids if i not in set(ids)]
        if missing or extra:
            detail = (f"{len(missing)} model phrase(s) missing from the library "
                      f"(e.g. {missing[:3]}), {len(extra)} library phrase(s) unknown to the model "
                      f"(e.g. {extra[:3]})")
        else:
            first = next(i for i, (a, b) in enumerate(zip(ids, lib_ids)) if a != b)
            detail = (f"same phrases in another order (class {first}: model {ids[first]!r}, "
                      f"library {lib_ids[first]!r})")
        raise M2DError(f"the model was trained for another dance library ({detail}); "
                       f"library: {where}. Retrain or export the model for this library",
                       path=sidecar)
    if str(library.hash) != library_hash:
        raise M2DError(f"the dance library changed since the model was trained (library hash "
                       f"{str(library.hash)[:12]}..., model expects {library_hash[:12]}...); "
                       f"library: {where}. Retrain the model or restore the library",
                       path=sidecar)


def _providers(device: str, sidecar: Path) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise M2DError("device 'cuda' was asked for but this onnxruntime has no CUDA provider "
                       f"(available: {', '.join(available)}); use device 'auto' or 'cpu'",
                       path=sidecar)
    return ["CPUExecutionProvider"]


class Scorer:
    """A loaded, verified model. Build it with :func:`load_scorer`; reuse it for every song.

    Attributes
    ----------
    phrase_ids : tuple of str
        The library's phrase ids in class order (column j of ``score`` is ``phrase_ids[j]``).
    transition : np.ndarray [shape=(K, K), float32, values in [0.01, 1]]
        M(i -> j): how well dance phrase j follows dance phrase i (paper Eq. 6).
    providers_used : tuple of str
        The execution providers onnxruntime actually uses, best first.
    embedding_dim : int
        D, the size of the music embedding u.
    sidecar : dict
        The whole sidecar document (preset, features, training summary, metrics, ...).
    """

    def __init__(self, session: Any, sidecar: dict, onnx_path: Path, sidecar_path: Path) -> None:
        self._session = session
        self.sidecar = sidecar
        self.onnx_path = onnx_path
        self.sidecar_path = sidecar_path
        self.phrase_ids: tuple[str, ...] = tuple(sidecar["library"]["phrase_ids"])
        self.library_hash: str = sidecar["library"]["hash"]
        self.transition: np.ndarray = _transition_from(sidecar, sidecar_path)
        self.embedding_dim: int = int(sidecar["embedding_dim"])
        self.providers_used: tuple[str, ...] = tuple(session.get_providers())

    @property
    def n_classes(self) -> int:
        return len(self.phrase_ids)

    def score(self, mel: np.ndarray, *, return_embedding: bool = False, batch_size: int = 64
              ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Class probabilities for music phrases.

        Parameters
        ----------
        mel : np.ndarray [shape=(P, 128, 128) or (P, 1, 128, 128), float32 in [0, 1]]
            Per-phrase mel images, axes (time, mel), from ``core.features.phrase_features``.
        return_embedding : bool
            Also return the embeddings u [shape=(P, D)].
        batch_size : int
            Phrases per onnxruntime call (bounds memory on long songs).

        Returns
        -------
        probs : np.ndarray [shape=(P, K), float32]
            Softmax over the library's dance phrases (rows sum to 1).
        """
        x = np.asarray(mel, dtype=np.float32)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1:] != (1, 128, 128):
            raise ValueError(f"mel must have shape (P, 128, 128), got {np.shape(mel)}")
        probs = np.zeros((x.shape[0], self.n_classes), np.float32)
        emb = np.zeros((x.shape[0], self.embedding_dim), np.float32)
        for i in range(0, x.shape[0], max(1, batch_size)):
            chunk = np.ascontiguousarray(x[i:i + batch_size])
            p, u = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: chunk})
            probs[i:i + len(chunk)] = p
            emb[i:i + len(chunk)] = u
        return (probs, emb) if return_embedding else probs

    def embed(self, mel: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        """The music embeddings u [shape=(P, D)] of ``mel`` (see :meth:`score`)."""
        return self.score(mel, return_embedding=True, batch_size=batch_size)[1]


def load_scorer(model_path: str | os.PathLike, library: Any = None, *, device: str = "auto",
                warmup: bool = True) -> Scorer:
    """Load and verify a model (``model.onnx`` + ``model.json``).

    Parameters
    ----------
    model_path : path
        The model folder, its ``model.onnx`` or its ``model.json``.
    library : Library, path or None
        The dance library the scorer will be used with (an object with ``.ids`` and ``.hash``,
        or a path given to ``core.library.load_library``). When given, its phrase ids (in class
        order) and hash must equal the sidecar's.
    device : {"auto", "cpu", "cuda"}
        ``auto`` uses CUDA when onnxruntime has it, else the CPU; ``cuda`` fails unless CUDA is
        actually used.
    warmup : bool
        Run one zero input through the session so the first real call is not slower.

    Raises
    ------
    M2DError
        Missing or unreadable files; sidecar, ONNX and library that do not belong together;
        features computed differently from this blender_m2d; CUDA asked for but not used.
    """
    onnx_path, sidecar_path = resolve_model_paths(model_path)
    if not onnx_path.is_file():
        raise M2DError("model file not found (model.onnx and model.json must be side by side)",
                       path=onnx_path)
    doc = read_json(sidecar_path, kind=SIDECAR_FORMAT, max_version=SIDECAR_VERSION)
    _check_sidecar_fields(doc, sidecar_path)
    try:
        onnx_bytes = onnx_path.read_bytes()
    except OSError as err:
        raise M2DError(f"cannot read the model ({err.strerror})", path=onnx_path) from err
    if sha256_bytes(onnx_bytes) != doc["onnx"]["sha256"]:
        raise M2DError(f"model.onnx does not belong to this sidecar (its sha256 differs from "
                       f"the one recorded in {sidecar_path.name}); copy both files from the same "
                       f"export", path=onnx_path)
    ours, theirs = feature_params(), doc["features"]
    diff = {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: model {a!r} vs here {b!r}" for k, (a, b) in diff.items())
        raise M2DError(f"the model was trained on different audio features ({detail})",
                       path=sidecar_path)
    if library is not None:
        lib_path = None
        if isinstance(library, str | os.PathLike):
            from .library import load_library

            lib_path = os.fspath(library)
            library = load_library(library)
        check_library(doc["library"]["phrase_ids"], doc["library"]["hash"], library,
                      sidecar=sidecar_path, library_path=lib_path)
    transition = _transition_from(doc, sidecar_path)
    del transition  # validated here so a bad sidecar fails before the session is built

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        opts.intra_op_num_threads = int(threads)
    providers = _providers(device, sidecar_path)
    try:
        session = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types for corrupt graphs
        raise M2DError(f"onnxruntime cannot load the model ({err})", path=onnx_path) from err
    used = session.get_providers()
    if device == "cuda" and used[0] != "CUDAExecutionProvider":
        raise M2DError(f"device 'cuda' was asked for but onnxruntime fell back to {used[0]} "
                       f"(is the CUDA runtime installed?)", path=onnx_path)
    _check_session(session, doc, onnx_path)
    scorer = Scorer(session, doc, onnx_path, sidecar_path)
    if warmup:
        scorer.score(np.zeros((1, 128, 128), np.float32))
    log.info("loaded model %s (K=%d, providers %s)", onnx_path, scorer.n_classes,
             ", ".join(used))
    return scorer


def _check_session(session: Any, doc: dict, onnx_path: Path) -> None:
    """The graph's inputs/outputs must be the ones the sidecar describes."""
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if list(inputs) != [INPUT_NAME]:
        raise M2DError(f"model input must be '{INPUT_NAME}', found {list(inputs)}",
                       path=onnx_path)
    if list(inputs[INPUT_NAME][1:]) != [1, 128, 128]:
        raise M2DError(f"model input shape {inputs[INPUT_NAME]} is not (B, 1, 128, 128)",
                       path=onnx_path)
    if set(outputs) != set(OUTPUT_NAMES):
        raise M2DError(f"model outputs must be {list(OUTPUT_NAMES)}, found {list(outputs)}",
                       path=onnx_path)
    k, d = outputs["probs"][-1], outputs["embedding"][-1]
    if k != doc["n_classes"] or d != doc["embedding_dim"]:
        raise M2DError(f"model outputs K={k}, D={d} but the sidecar says "
                       f"K={doc['n_classes']}, D={doc['embedding_dim']}", path=onnx_path)
