"""Run folders: one owner at a time (.npstn.lock), stale locks, stale temp files, never a foreign file
overwritten, the configuration compared before any weights are read (npstn.utils.runfolder, npstn.train)."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from npstn import nn
from npstn import train as T
from npstn.cli import main
from npstn.data import DistortedMNIST, test_set
from npstn.train import TrainConfig, train
from npstn.utils import runfolder as R
from test_train import synthetic_digits


@pytest.fixture(autouse=True)
def synthetic(monkeypatch):
    xtr, ytr = synthetic_digits(60, 0)
    xte, yte = synthetic_digits(20, 1)
    monkeypatch.setattr(T.data, "load_train_source", lambda distortion, data_dir=None, backend=None:
                        DistortedMNIST(distortion, backend=backend, images=xtr, labels=ytr))
    monkeypatch.setattr(T.data, "load_test_set", lambda distortion, data_dir=None:
                        test_set(distortion, images=xte, labels=yte, cache=False))


def small(out, **kw) -> TrainConfig:
    base = dict(model="fcn", distortion="rts", steps=4, batch_size=4, eval_every=2, checkpoint_every=2,
                log_every=1, out=str(out))
    base.update(kw)
    return TrainConfig(**base)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_is_exclusive_and_released_on_exceptions(tmp_path):
    with R.lock_run(tmp_path / "run"):
        info = json.loads((tmp_path / "run" / R.LOCK).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        with pytest.raises(R.RunFolderBusy, match=f"in use by process {os.getpid()}"):
            with R.lock_run(tmp_path / "run"):
                pass
    assert not (tmp_path / "run" / R.LOCK).exists()
    with pytest.raises(ZeroDivisionError), R.lock_run(tmp_path / "run"):
        1 / 0
    assert not (tmp_path / "run" / R.LOCK).exists()


def test_train_refuses_a_folder_another_process_holds(tmp_path, capsys):
    run = tmp_path / "run"
    with R.lock_run(run):  # as a second `npstn train` would find it
        rc = main(["train", "--model", "fcn", "--steps", "2", "--batch-size", "4", "--out", str(run), "--quiet",
                       "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "is in use by process" in err and err.count("\n") == 1
    assert sorted(p.name for p in run.iterdir()) == []  # nothing written by the refused run


def test_live_lock_of_another_process_is_respected(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / R.LOCK).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(R.RunFolderBusy, match=f"process {sleeper.pid}"):
            train(small(tmp_path), progress=False)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert (tmp_path / R.LOCK).exists()  # not ours: left in place


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    (tmp_path / R.LOCK).write_text(json.dumps({"pid": _dead_pid(), "host": "elsewhere.example"}))
    with pytest.raises(R.RunFolderBusy, match="elsewhere.example"):
        train(small(tmp_path), progress=False)


def test_stale_lock_and_temp_files_are_cleaned_up(tmp_path, capsys):
    pid = _dead_pid()
    (tmp_path / R.LOCK).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    stale = [tmp_path / ".checkpoint.npz.ab_12cd3.tmp", tmp_path / ".log.csv.zzzzzzzz.tmp"]
    keep = [tmp_path / ".mine.abcdefgh.tmp", tmp_path / "notes.tmp", tmp_path / ".checkpoint.npz.x.tmp"]
    for p in stale + keep:
        p.write_text("x")
    m = train(small(tmp_path), resume=True, progress=False)
    assert m["status"] == "finished"
    assert f"left by process {pid}" in capsys.readouterr().err
    assert not any(p.exists() for p in stale)
    assert all(p.read_text() == "x" for p in keep)  # not npstn's temp-file pattern: untouched
    assert not (tmp_path / R.LOCK).exists()


@pytest.mark.parametrize("name", R.NPSTN_FILES)
def test_any_file_npstn_writes_blocks_a_fresh_run(tmp_path, name):
    p = tmp_path / name
    if name == "viz":
        p.mkdir()
        (p / "mine.png").write_bytes(b"user")
    else:
        p.write_bytes(b"the user's own file")
    with pytest.raises(FileExistsError, match=name):
        train(small(tmp_path), progress=False)
    assert (p / "mine.png" if name == "viz" else p).read_bytes() in (b"user", b"the user's own file")


def test_resume_refuses_a_foreign_config_json(tmp_path):
    (tmp_path / "config.json").write_text('{"learning_rate": 3}')
    with pytest.raises(R.RunFolderError, match="not an npstn run configuration"):
        train(small(tmp_path), resume=True, progress=False)
    assert (tmp_path / "config.json").read_text() == '{"learning_rate": 3}'


def test_resume_of_a_finished_run_without_checkpoint_reports_it(tmp_path):
    m = train(small(tmp_path), progress=False)
    (tmp_path / "checkpoint.npz").unlink()
    log = (tmp_path / "log.csv").read_bytes()
    again = train(small(tmp_path), resume=True, progress=False)
    assert again == m and (tmp_path / "log.csv").read_bytes() == log
    # another configuration: refused, the log untouched
    with pytest.raises(R.RunFolderError, match="different run"):
        train(small(tmp_path, steps=6), resume=True, progress=False)
    (tmp_path / "metrics.json").unlink()
    with pytest.raises(R.RunFolderError, match="no checkpoint.npz"):
        train(small(tmp_path), resume=True, progress=False)
    assert (tmp_path / "log.csv").read_bytes() == log


@pytest.mark.parametrize("change, shown", [(dict(model="cnn"), "model: 'fcn' -> 'cnn'"),
                                           (dict(width=7), "width: None -> 7")])
def test_resume_compares_the_configuration_before_loading_weights(tmp_path, monkeypatch, change, shown):
    train(small(tmp_path, steps=2), progress=False)
    monkeypatch.setattr(T.loop, "load_checkpoint", lambda *a: pytest.fail("weights loaded before the check"))
    with pytest.raises(R.RunFolderError, match="this folder holds a different run") as ei:
        train(small(tmp_path, steps=2, **change), resume=True, progress=False)
    assert shown in str(ei.value)


def test_damaged_npz_files_are_named(tmp_path):
    train(small(tmp_path), progress=False)
    for name in ("checkpoint.npz", "model.npz"):
        blob = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(blob[: len(blob) // 2])
        with pytest.raises(R.RunFolderError, match=name):
            T.read_npz(tmp_path / name)
        flipped = bytearray(blob)
        flipped[len(blob) // 2] ^= 0x10
        (tmp_path / name).write_bytes(bytes(flipped))
        with pytest.raises(R.RunFolderError, match=name):
            T.read_npz(tmp_path / name)
        (tmp_path / name).write_bytes(blob)
    np.testing.assert_equal(sorted(T.read_npz(tmp_path / "model.npz")), sorted(nn.load(tmp_path / "model.npz")))
