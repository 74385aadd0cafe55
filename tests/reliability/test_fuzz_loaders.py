"""Fuzzing every loader of a file blender_m2d writes: any input loads or raises M2DError.

Each loader gets a valid file the product wrote, then hypothesis edits it the way people and
broken disks do: a value replaced by any JSON value (NaN, Infinity, huge integers, strings,
nested lists/objects), a key deleted or added, a list emptied or doubled, the text truncated or
a byte flipped. The loader must either return a result or raise exactly
:class:`~blender_m2d.core.errors.M2DError`; anything else (KeyError, OverflowError, ...) is a
bug that would show a traceback to an animator.

Runs are derandomised (the same examples every run) so a failure is reproducible; set
``M2D_FUZZ_EXAMPLES`` to search longer.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hazards import FIXTURES, tiny_model
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from blender_m2d.core.errors import M2DError

EXAMPLES = int(os.environ.get("M2D_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
"""No shrinking: the minimal inputs are pinned below (MINIMAL), and shrinking a failure of a
known bug would cost minutes on every run."""
FUZZ_NOTE = f"no error: {EXAMPLES} mutated files, each loaded or raised M2DError"

# ------------------------------------------------------------------------- strategies

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.integers(),
    st.integers(-(2 ** 80), 2 ** 80), st.sampled_from([10 ** 400, -(10 ** 400)]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e308, 1e-320]),
    st.text(max_size=12), st.sampled_from(["", "NaN", "../x", "/etc/passwd", "model.onnx"]))
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    st.text(max_size=6), c, max_size=4), max_leaves=8)
SAFE_TEXT = st.text(alphabet=st.characters(blacklist_characters="/\\."), max_size=12)
SAFE_SCALARS = st.one_of(SCALARS.filter(lambda v: not isinstance(v, str)), SAFE_TEXT)
SAFE_VALUES = st.recursive(SAFE_SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    SAFE_TEXT, c, max_size=4), max_leaves=8)
"""Without path-like strings: a dataset manifest may name any folder on disk (it is the
studio's own file), and '/' as the unlabelled folder would make the loader walk the whole
file system; path handling of manifests is covered by the bad-input cases instead."""


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:6]):           # the first few items of long lists
            out += _paths(v, (*prefix, i))
        if len(doc) > 6:
            out += _paths(doc[-1], (*prefix, len(doc) - 1))
    return out


def _get(doc, path):
    for k in path:
        doc = doc[k]
    return doc


@st.composite
def mutated(draw, doc: dict, values=VALUES) -> str:
    """The JSON text of ``doc`` after 1-3 structural edits, or a byte-level edit of it."""
    doc = copy.deepcopy(doc)
    if draw(st.integers(0, 9)) == 0:               # byte level
        text = json.dumps(doc)
        i = draw(st.integers(0, max(len(text) - 1, 0)))
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "digits", "deep"]))
        if kind == "truncate":
            return text[:i]
        if kind == "flip":
            return text[:i] + chr((ord(text[i]) + draw(st.integers(1, 90))) % 127) + text[i + 1:]
        if kind == "insert":
            return text[:i] + draw(st.text(max_size=5)) + text[i:]
        if kind == "deep":                         # nesting deeper than the recursion limit
            return text[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
        return text.replace("1", "1" * 5000, 1)    # an integer over Python's 4300 digits
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        shallow = [q for q in paths if len(q) <= 2]     # half the edits hit top-level fields
        path = draw(st.sampled_from(shallow if draw(st.booleans()) else paths))
        op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "empty",
                                   "double", "wrap"]))
        if not path:
            if op in ("replace", "wrap"):
                doc = draw(values) if op == "replace" else [doc]
                if not isinstance(doc, dict):
                    return json.dumps(doc)
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        target = parent[key]
        if op == "replace":
            parent[key] = draw(values)
        elif op == "delete" and isinstance(parent, dict):
            del parent[key]
        elif op == "add" and isinstance(target, dict):
            target[draw(st.text(max_size=6))] = draw(values)
        elif op == "empty" and isinstance(target, (list, dict, str)):
            parent[key] = type(target)()
        elif op == "double" and isinstance(target, list):
            parent[key] = target + target
        elif op == "wrap":
            parent[key] = [target]
    return json.dumps(doc, allow_nan=True)


def _check(load, path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    try:
        load(path)
    except M2DError:
        pass


# ------------------------------------------------------------------------- subjects

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def library_dir(work) -> Path:
    from blender_m2d.core.library import write_synthetic_library

    return write_synthetic_library(work / "lib", 6, n_frames=10)


@pytest.fixture(scope="module")
def library_doc(library_dir) -> dict:
    return json.loads((library_dir / "library.json").read_text())


@pytest.fixture(scope="module")
def analysis_doc(work) -> dict:
    from blender_m2d.core.analysis import analyze_song

    r = analyze_song(FIXTURES / "audio" / "music_10s.ogg")
    return r.to_json()


@pytest.fixture(scope="module")
def plan_doc(work) -> dict:
    from blender_m2d.core.choreography import choreograph
    from blender_m2d.core.library import load_library

    lib = load_library(Path(__file__).resolve().parents[2] / "blender_m2d/assets/library")
    return choreograph(FIXTURES / "audio" / "music_10s.ogg", lib).plan.to_json()


@pytest.fixture(scope="module")
def model_dir(work, library_dir) -> Path:
    from blender_m2d.core.library import load_library

    lib = load_library(library_dir)
    return tiny_model(work / "model", phrase_ids=lib.ids, library_hash=lib.hash)


@pytest.fixture(scope="module")
def dataset_dir(work) -> Path:
    root = work / "dataset"
    (root / "songs").mkdir(parents=True)
    for name in ("a.wav", "b.wav"):
        shutil.copy(FIXTURES / "audio" / "music_5s.wav", root / "songs" / name)
    (root / "unl").mkdir()
    shutil.copy(FIXTURES / "audio" / "music_5s.wav", root / "unl" / "x.wav")
    (root / "phrases.csv").write_text("id,style,style_vector\nwave,pop,1 0\nspin,pop,0.9 0.1\n"
                                      "jump,rock,0 1\n")
    (root / "labels.csv").write_text("song,start_s,end_s,phrase_id,split\n"
                                     "a.wav,0,2,wave,train\na.wav,2,4,spin,train\n"
                                     "b.wav,0,3.5,jump,test\n")
    doc = {"format": "m2d-dataset", "format_version": 1, "phrases": "phrases.csv",
           "labels": "labels.csv", "songs_dir": "songs", "unlabelled_dir": "unl",
           "split": {"test_fraction": 0.1, "val_fraction": 0.0, "seed": 0}}
    (root / "dataset.json").write_text(json.dumps(doc))
    return root


@pytest.fixture(scope="module")
def prepared_dir(work) -> Path:
    from training.data import write_prepared_from
    from training.synthetic import SyntheticSpec, make_dataset

    data = make_dataset(SyntheticSpec(n_styles=2, per_style=2, train_songs=2, test_songs=1,
                                      unlabelled_songs=1, phrases_per_song=3))
    return write_prepared_from(work / "prepared", data)


# ------------------------------------------------------------------------- the tests

def test_valid_files_load(library_dir, model_dir, dataset_dir, prepared_dir, plan_doc,
                          analysis_doc, work):
    """The unmutated subjects are valid (else the fuzz would test nothing)."""
    from blender_m2d.core.analysis import SongAnalysis
    from blender_m2d.core.inference import load_scorer
    from blender_m2d.core.library import load_library
    from blender_m2d.core.plan import Plan
    from training.data import load_dataset, load_prepared

    lib = load_library(library_dir)
    load_scorer(model_dir, library=lib, warmup=False)
    load_dataset(dataset_dir / "dataset.json")
    load_prepared(prepared_dir)
    (work / "p.json").write_text(json.dumps(plan_doc))
    Plan.load(work / "p.json")
    (work / "a.json").write_text(json.dumps(analysis_doc))
    SongAnalysis.load(work / "a.json")


def test_fuzz_library_json(library_dir, library_doc, note):
    from blender_m2d.core.library import load_library

    original = (library_dir / "library.json").read_bytes()

    @FUZZ
    @given(text=mutated(library_doc))
    def run(text):
        _check(load_library, library_dir / "library.json", text)

    try:
        run()
        note(FUZZ_NOTE)
    finally:
        (library_dir / "library.json").write_bytes(original)


def test_fuzz_plan_json(work, plan_doc, note):
    from blender_m2d.core.plan import Plan

    @FUZZ
    @given(text=mutated(plan_doc))
    def run(text):
        _check(Plan.load, work / "PLAN.json", text)

    run()
    note(FUZZ_NOTE)


def test_fuzz_song_analysis_json(work, analysis_doc, note):
    from blender_m2d.core.analysis import SongAnalysis

    @FUZZ
    @given(text=mutated(analysis_doc))
    def run(text):
        _check(SongAnalysis.load, work / "analysis.json", text)

    run()
    note(FUZZ_NOTE)


def test_fuzz_model_sidecar(model_dir, library_dir, note):
    from blender_m2d.core.inference import load_scorer
    from blender_m2d.core.library import load_library

    lib = load_library(library_dir)
    sidecar = model_dir / "model.json"
    doc = json.loads(sidecar.read_text())
    original = sidecar.read_bytes()

    @FUZZ
    @given(text=mutated(doc))
    def run(text):
        _check(lambda p: load_scorer(model_dir, library=lib, warmup=False), sidecar, text)

    try:
        run()
        note(FUZZ_NOTE)
    finally:
        sidecar.write_bytes(original)


def test_fuzz_dataset_manifest(dataset_dir, note):
    from training.data import load_dataset

    path = dataset_dir / "dataset.json"
    doc = json.loads(path.read_text())
    original = path.read_bytes()

    @FUZZ
    @given(text=mutated(doc, SAFE_VALUES))
    def run(text):
        _check(load_dataset, path, text)

    try:
        run()
        note(FUZZ_NOTE)
    finally:
        path.write_bytes(original)


def test_fuzz_prepared_manifest(prepared_dir, note):
    from training.data import load_prepared

    path = prepared_dir / "prepared.json"
    doc = json.loads(path.read_text())
    original = path.read_bytes()

    @FUZZ
    @given(text=mutated(doc, SAFE_VALUES))
    def run(text):
        _check(load_prepared, path, text)

    try:
        run()
        note(FUZZ_NOTE)
    finally:
        path.write_bytes(original)


def test_fuzz_bone_map(work, note):
    from blender_m2d.core.bonemap import load_bone_map

    doc = {"format": "m2d-bonemap", "format_version": 1,
           "bones": {"Hips": "pelvis", "Spine": "spine_01", "LeftFoot": "foot_l@tail"}}

    @FUZZ
    @given(text=mutated(doc))
    def run(text):
        _check(load_bone_map, work / "map.json", text)

    run()
    note(FUZZ_NOTE)


# ------------------------------------------------------------------------- minimal cases
# The smallest inputs the fuzzing found per bug, pinned so they are checked on every run (the
# derandomised fuzz above may need more examples to hit a rare one).

def _set(*path_value):
    *path, value = path_value

    def edit(doc):
        node = doc
        for k in path[:-1]:
            node = node[k]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return json.dumps(doc, allow_nan=True)

    return edit


_DELETE = object()
_HUGE = 10 ** 400          # a JSON integer no float can hold
_INF = float("inf")        # written as Infinity, which Python's json reads


def _sidecar_transition_huge(doc):
    doc["transition"][0][0] = _HUGE
    return json.dumps(doc)


MINIMAL = [
    pytest.param("plan", _set("timings_s", None), id="plan-timings-null"),
    pytest.param("plan", _set("timings_s", [1]), id="plan-timings-list"),
    pytest.param("plan", _set("metrics", [1, 2]), id="plan-metrics-list"),
    pytest.param("plan", _set("frame_start", _INF), id="plan-frame-start-inf"),
    pytest.param("plan", _set("phrases", 0, "music_start_s", _HUGE),
                 id="plan-start-huge-int"),
    pytest.param("plan", _set("fps", "thirty"), id="plan-fps-text"),
    pytest.param("plan", _set("phrases", _DELETE), id="plan-no-phrases"),
    pytest.param("analysis", _set("duration_s", _HUGE), id="analysis-duration-huge-int"),
    pytest.param("analysis", _set("phrases", 0, "index", _INF), id="analysis-index-inf"),
    pytest.param("sidecar", _sidecar_transition_huge,
                 id="sidecar-transition-huge-int"),
    pytest.param("sidecar", _set("n_classes", _HUGE), id="sidecar-k-huge"),
    pytest.param("sidecar", _set("library", "phrase_ids", [1, 2]), id="sidecar-ids-not-text"),
    pytest.param("dataset", _set("split", []), id="dataset-split-list"),
    pytest.param("dataset", _set("split", "test_fraction", "a tenth"),
                 id="dataset-fraction-text"),
    pytest.param("dataset", _set("split", "seed", {}), id="dataset-seed-obj"),
    pytest.param("dataset", _set("unlabelled_dir", 5),
                 id="dataset-unlabelled-int"),
    pytest.param("dataset", _set("labels", "nope.csv"), id="dataset-labels-missing"),
    pytest.param("prepared", _set("n_phrases", _DELETE),
                 id="prepared-no-n-phrases"),
    pytest.param("prepared", _set("arrays", _DELETE),
                 id="prepared-no-arrays"),
    pytest.param("prepared", _set("songs", 3), id="prepared-songs-int"),
    pytest.param("prepared", _set("summary", [1]),
                 id="prepared-summary-list"),
    pytest.param("prepared", _set("arrays", "../../.."), id="prepared-arrays-escape"),
    pytest.param("library", _set("fps", _HUGE), id="library-fps-huge"),
    pytest.param("library", _set("phrases", 0, "n_frames", _INF), id="library-frames-inf"),
    pytest.param("library", _set("phrases", 0, "beats_s", [0, _HUGE]), id="library-beat-huge"),
    pytest.param("library", _set("phrases", 0, "duration_s", -_HUGE), id="library-dur-huge"),
    pytest.param("library", lambda d: json.dumps(d).replace("1", "1" * 5000, 1),
                 id="library-5000-digit-int"),
    pytest.param("library", lambda d: json.dumps(d)[:-1] + ', "x": ' + "[" * 100_000
                 + "]" * 100_000 + "}", id="library-deep-nesting"),
    pytest.param("bonemap", lambda d: '{"Hips": "a", "n": ' + "9" * 5000 + "}",
                 id="bonemap-5000-digit-int"),
]


@pytest.fixture(scope="module")
def subjects(work, library_dir, model_dir, dataset_dir, prepared_dir, plan_doc, analysis_doc):
    from blender_m2d.core.analysis import SongAnalysis
    from blender_m2d.core.bonemap import load_bone_map
    from blender_m2d.core.inference import load_scorer
    from blender_m2d.core.library import load_library
    from blender_m2d.core.plan import Plan
    from training.data import load_dataset, load_prepared

    lib = load_library(library_dir)

    def doc(p):
        return json.loads(Path(p).read_text())

    return {
        "plan": (work / "PLAN.json", plan_doc, Plan.load),
        "analysis": (work / "analysis.json", analysis_doc, SongAnalysis.load),
        "sidecar": (model_dir / "model.json", doc(model_dir / "model.json"),
                    lambda p: load_scorer(model_dir, library=lib, warmup=False)),
        "dataset": (dataset_dir / "dataset.json", doc(dataset_dir / "dataset.json"),
                    load_dataset),
        "prepared": (prepared_dir / "prepared.json", doc(prepared_dir / "prepared.json"),
                     load_prepared),
        "library": (library_dir / "library.json", doc(library_dir / "library.json"),
                    load_library),
        "bonemap": (work / "map.json", {}, load_bone_map),
    }


@pytest.mark.parametrize(("subject", "edit"), MINIMAL)
def test_minimal_bad_file_raises_m2derror(subjects, refused, subject, edit):
    path, doc, load = subjects[subject]
    original = path.read_bytes() if path.exists() else None
    try:
        path.write_text(edit(copy.deepcopy(doc)), encoding="utf-8")
        refused(lambda: load(path), r".")
    finally:
        if original is not None:
            path.write_bytes(original)
