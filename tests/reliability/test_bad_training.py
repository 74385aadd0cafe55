"""Long trainings meet real failures: SIGKILL in the middle of an epoch and while a checkpoint is
being written, corrupted and malicious checkpoints, a dataset whose songs are missing, a full
disk. The last good checkpoint always survives, loading never runs code from the file, and the
same command resumes to the result of an uninterrupted run."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from hazards import FIXTURES, REPO, fill, full_disk, kill9, run_until  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from snapshot import file_tree, leftovers  # noqa: E402

from blender_m2d.core.errors import M2DError  # noqa: E402
from training import checkpoint as ck  # noqa: E402

FAST = ["--preset", "tiny", "--no-progress", "--device", "cpu", "--batch-size", "2",
        "--max-steps-per-epoch", "2", "--val-fraction", "0", "--epochs", "3"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from training.data import write_prepared_from
    from training.synthetic import SyntheticSpec, make_dataset

    data = make_dataset(SyntheticSpec(n_styles=2, per_style=2, train_songs=4, test_songs=1,
                                      unlabelled_songs=2, phrases_per_song=6, seed=7))
    return write_prepared_from(tmp_path_factory.mktemp("train") / "prepared", data)


@pytest.fixture(scope="module")
def checkpoint(prepared, tmp_path_factory) -> Path:
    """A real pretrain checkpoint (1 epoch of the tiny preset)."""
    from training.config import PretrainConfig
    from training.data import load_prepared
    from training.pretrain import train_encoder

    out = tmp_path_factory.mktemp("ckpt")
    train_encoder(load_prepared(prepared), PretrainConfig(
        out=str(out), preset="tiny", epochs=1, batch_size=8, max_steps_per_epoch=2,
        progress=False, val_fraction=0.0, device="cpu"))
    return out / "checkpoint.pt"


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, dst))


# ----------------------------------------------------------------------- checkpoints

def test_truncated_checkpoint(checkpoint, tmp_path, refused):
    bad = _copy(checkpoint, tmp_path / "run" / "checkpoint.pt")
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    refused(lambda: ck.load_checkpoint(bad), r"checkpoint\.pt: not a readable checkpoint \(",
            bad.parent)


_CKPT_BUG = ("bug: training/checkpoint.py load_checkpoint: the except clause catches only "
             "UnpicklingError/RuntimeError/EOFError/OSError, and its message formatting "
             "str(err).splitlines()[0] raises IndexError for an exception with an empty message "
             "(EOFError() from random bytes); torch.load on damaged files also raises "
             "UnicodeDecodeError, KeyError, IndexError")


@pytest.mark.parametrize("content", [b"", b"hello world\n" * 100], ids=["empty", "text"])
def test_checkpoint_that_is_not_a_checkpoint(tmp_path, refused, content):
    """An empty file (EOFError with no message) and a text file (KeyError from the unpickler)."""
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(content)
    refused(lambda: ck.load_checkpoint(bad), r"checkpoint\.pt: not a readable checkpoint",
            tmp_path)


def test_checkpoint_of_zeros(tmp_path, refused):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"\0" * 4096)
    refused(lambda: ck.load_checkpoint(bad), r"checkpoint\.pt: not a readable checkpoint \(",
            tmp_path)


def test_checkpoint_with_a_code_payload_is_refused_without_running_it(tmp_path, refused):
    """A checkpoint is a pickle inside a zip: torch.load(weights_only=True) must refuse it."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    bad = tmp_path / "checkpoint.pt"
    torch.save({"format": "m2d-checkpoint", "format_version": 1, "evil": Payload()}, bad)
    refused(lambda: ck.load_checkpoint(bad), r"checkpoint\.pt: not a readable checkpoint "
            r"\(Weights only load failed", tmp_path)
    assert not marker.exists()


def test_plain_pickle_with_a_code_payload(tmp_path, refused):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(pickle.dumps(Payload()))
    refused(lambda: ck.load_checkpoint(bad), r"checkpoint\.pt: not a readable checkpoint",
            tmp_path)
    assert not marker.exists()


def test_checkpoint_from_the_future(checkpoint, tmp_path, refused):
    doc = torch.load(checkpoint, weights_only=True)
    doc["format_version"] = 2
    bad = tmp_path / "checkpoint.pt"
    torch.save(doc, bad)
    refused(lambda: ck.load_checkpoint(bad), r"checkpoint\.pt: checkpoint format_version 2 is "
            r"not supported$", tmp_path)


def test_checkpoint_for_another_library_size(checkpoint, refused):
    refused(lambda: ck.load_checkpoint(checkpoint, n_classes=70), r"checkpoint\.pt: checkpoint "
            r"predicts K=4 dance phrases but the data has K=70 \(another library\?\)$",
            checkpoint.parent)


def test_checkpoint_of_another_preset(checkpoint, refused):
    refused(lambda: ck.load_checkpoint(checkpoint, preset="paper"), r"checkpoint was trained "
            r"with model preset 'tiny', but this run uses preset 'paper'", checkpoint.parent)


@settings(max_examples=25, derandomize=True, deadline=None, database=None,
          phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_checkpoint_bytes(checkpoint, tmp_path_factory, data):
    """Any damage to the zip/pickle bytes: loads (weights only) or M2DError."""
    raw = bytearray(checkpoint.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    bad = tmp_path_factory.mktemp("fz") / "checkpoint.pt"
    bad.write_bytes(bytes(raw))
    try:
        ck.load_checkpoint(bad)
    except M2DError:
        pass


def test_checkpoint_on_a_full_disk_keeps_the_last_good_one(checkpoint, tmp_path, refused):
    doc = torch.load(checkpoint, weights_only=True)
    with full_disk(tmp_path, size_kb=2048) as disk:
        _copy(checkpoint, disk / "checkpoint.pt")
        fill(disk)
        try:
            refused(lambda: ck.save_checkpoint(disk / "checkpoint.pt", doc),
                    r"checkpoint\.pt: .*No space left on device", disk)
        finally:
            assert leftovers(disk) == ["checkpoint.pt", "filler"]
            assert ck.load_checkpoint(disk / "checkpoint.pt")["epoch"] == 1


# ----------------------------------------------------------------------- kills

KILL_WRITE = textwrap.dedent("""
    import sys, time, pathlib, torch
    from training import checkpoint as ck
    out, marker = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    real = torch.save
    def slow_save(obj, f, *a, **kw):
        real(obj, f, *a, **kw)
        f.flush()
        f.seek(f.tell() // 2)
        f.truncate()              # half of the new checkpoint is on disk ...
        marker.touch()
        time.sleep(600)           # ... when the process is killed
    torch.save = slow_save
    doc = torch.load(out, weights_only=True)
    doc["epoch"] = 99
    ck.save_checkpoint(out, doc)
""")


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(checkpoint, tmp_path, note):
    run = tmp_path / "run"
    target = _copy(checkpoint, run / "checkpoint.pt")
    before = file_tree(target)
    script = tmp_path / "kill_write.py"
    script.write_text(KILL_WRITE)
    proc = run_until([sys.executable, str(script), str(target), str(tmp_path / "mid-write")],
                     tmp_path / "mid-write")
    kill9(proc)
    assert file_tree(target) == before                          # byte for byte
    stale = [n for n in leftovers(run) if n != "checkpoint.pt"]
    assert all(n.startswith(".checkpoint.pt.") and n.endswith(".tmp") for n in stale), stale
    assert ck.load_checkpoint(run)["epoch"] == 1
    doc = torch.load(target, weights_only=True)                 # the next write works
    doc["epoch"] = 2
    ck.save_checkpoint(target, doc)
    assert ck.load_checkpoint(run)["epoch"] == 2
    note(f"no error: previous checkpoint intact; hidden temp file left by SIGKILL: {stale}")


KILL_EPOCH = textwrap.dedent("""
    import sys, time, pathlib
    import training.pretrain as P
    marker, kill_epoch = pathlib.Path(sys.argv[1]), int(sys.argv[2])
    real, calls = P.loader, []
    def loader(ds, batches, workers, pin):
        calls.append(1)
        it = real(ds, batches, workers, pin)
        if len(calls) != kill_epoch:
            return it
        def gen():
            for i, batch in enumerate(it):
                if i == 1:                 # one optimizer step into the epoch
                    marker.touch()
                    time.sleep(600)
                yield batch
        return gen()
    P.loader = loader
    from training.__main__ import main
    sys.exit(main(sys.argv[3:]))
""")


def _train(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=600)


def _tensors(doc, prefix=""):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _tensors(v, f"{prefix}.{k}")
    elif torch.is_tensor(doc):
        yield prefix, doc


def test_training_killed_mid_epoch_resumes_to_the_uninterrupted_result(prepared, tmp_path,
                                                                        note):
    args = ["pretrain", "--data", str(prepared), *FAST]
    ref = _train([*args, "--out", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr[-2000:]
    script = tmp_path / "kill_epoch.py"
    script.write_text(KILL_EPOCH)
    cut = tmp_path / "cut"
    proc = run_until([sys.executable, str(script), str(tmp_path / "mid-epoch"), "2", *args,
                      "--out", str(cut)], tmp_path / "mid-epoch", timeout_s=300)
    kill9(proc)
    assert ck.load_checkpoint(cut, stages=("pretrain",))["epoch"] == 1   # epoch 2 lost, 1 kept
    resumed = _train([*args, "--out", str(cut)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr
    a = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    b = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3 and b["done"]
    ta, tb = dict(_tensors(a["state"])), dict(_tensors(b["state"]))
    assert ta.keys() == tb.keys()
    for name in ta:
        torch.testing.assert_close(ta[name], tb[name], msg=name, rtol=0, atol=0)
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]
    note("no error: resumed from epoch 1; weights and losses identical to an uninterrupted run")


# ----------------------------------------------------------------------- datasets

def _dataset(root: Path, songs: tuple[str, ...], labels: str) -> Path:
    (root / "songs").mkdir(parents=True)
    for name in songs:
        shutil.copy(FIXTURES / "audio" / "music_5s.wav", root / "songs" / name)
    (root / "phrases.csv").write_text("id,style\nwave,pop\nspin,pop\njump,rock\n")
    (root / "labels.csv").write_text(labels)
    (root / "dataset.json").write_text(json.dumps({
        "format": "m2d-dataset", "format_version": 1, "phrases": "phrases.csv",
        "labels": "labels.csv", "songs_dir": "songs"}))
    return root / "dataset.json"


def test_dataset_with_a_missing_song(tmp_path, refused):
    from training.data import load_dataset

    ds = _dataset(tmp_path / "ds", ("a.wav",), "song,start_s,end_s,phrase_id\n"
                  "a.wav,0,2,wave\nlost/b.wav,0,2,spin\n")
    refused(lambda: load_dataset(ds), r"labels\.csv: line 3: song 'lost/b\.wav' not found "
            r"\(looked for .*lost/b\.wav\)$", tmp_path)


def test_dataset_song_path_escaping_the_songs_folder(tmp_path, refused):
    from training.data import load_dataset

    ds = _dataset(tmp_path / "ds", ("a.wav",), "song,start_s,end_s,phrase_id\n"
                  "../../etc/passwd,0,2,wave\n")
    refused(lambda: load_dataset(ds), r"labels\.csv: line 2: song '\.\./\.\./etc/passwd': path "
            r"'\.\./\.\./etc/passwd' escapes the folder$", tmp_path)


def test_prepare_with_a_song_emptied_after_validation(tmp_path, refused):
    """The dataset validates, then a song is truncated to 0 bytes (a failed sync): prepare
    names it and writes no prepared folder."""
    from training.config import PrepareConfig
    from training.prepare import run as prepare

    ds = _dataset(tmp_path / "ds", ("a.wav", "b.wav"), "song,start_s,end_s,phrase_id\n"
                  "a.wav,0,2,wave\nb.wav,0,2,spin\n")
    (tmp_path / "ds" / "songs" / "b.wav").write_bytes(b"")
    refused(lambda: prepare(PrepareConfig(dataset=str(ds), out=str(tmp_path / "prep"),
                                          workers=1, progress=False)),
            r"b\.wav", tmp_path / "ds")
    assert not (tmp_path / "prep" / "prepared.json").exists()


def test_prepared_folder_missing_an_array(prepared, tmp_path, refused):
    from training.data import load_prepared

    copy = Path(shutil.copytree(prepared, tmp_path / "prep"))
    arrays = next(p for p in copy.iterdir() if p.is_dir())
    (arrays / "mel.npy").unlink()
    refused(lambda: load_prepared(copy), r"prep: prepared data is incomplete \(mel\.npy "
            r"missing\); run prepare again$", copy)


def test_zip_bomb_like_checkpoint_member_is_not_a_crash(checkpoint, tmp_path, refused):
    """A checkpoint zip whose data.pkl is replaced by garbage."""
    bad = tmp_path / "checkpoint.pt"
    with zipfile.ZipFile(checkpoint) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = b"\x80\x02" + b"\xff" * 100
            zout.writestr(item, data)
    refused(lambda: ck.load_checkpoint(bad), r"checkpoint\.pt: not a readable checkpoint",
            tmp_path)
