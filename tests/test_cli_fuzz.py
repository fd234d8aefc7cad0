"""Every subcommand of `npstn`, driven with bad arguments and damaged run folders.

Each case must end with exit status 2, one line on stderr naming the argument
or the file, no traceback, and every file of the run folder unchanged (its
SHA-256 digests compared before and after). Most cases run in-process through
``npstn.cli.main``; a few run ``python -m npstn`` to show that no traceback
reaches a real terminal. Training reads synthetic digits (no MNIST needed).
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npstn import train as T
from npstn.cli import main
from npstn.data import DistortedMNIST, test_set
from test_train import synthetic_digits

BUSY_HINT = "this machine is busy"


def _install_synthetic(mp):
    xtr, ytr = synthetic_digits(40, 0)
    xte, yte = synthetic_digits(20, 1)
    mp.setattr(T.data, "load_train_source", lambda distortion, data_dir=None, backend=None:
               DistortedMNIST(distortion, backend=backend, images=xtr, labels=ytr))
    mp.setattr(T.data, "load_test_set", lambda distortion, data_dir=None:
               test_set(distortion, images=xte, labels=yte, cache=False))


@pytest.fixture(autouse=True)
def synthetic(monkeypatch):
    _install_synthetic(monkeypatch)


TRAIN = ["--model", "fcn", "--distortion", "rts", "--steps", "4", "--batch-size", "4", "--eval-every", "2",
         "--checkpoint-every", "2", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished FCN run (4 steps), trained once for the module; tests damage copies of it."""
    run = tmp_path_factory.mktemp("fuzz") / "run"
    with pytest.MonkeyPatch.context() as mp:
        _install_synthetic(mp)
        assert main(["train", *TRAIN, "--out", str(run)]) == 0
    return run


@pytest.fixture
def run(finished_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst)
    return dst


def hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(argv, capsys, *, names=None) -> str:
    """Run ``npstn ARGV``: exit 2, one line on stderr (beside the busy-machine hint), no traceback."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and BUSY_HINT not in line]
    assert rc == 2, (argv, rc, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1, (argv, err)
    assert lines[0].startswith("npstn"), err
    for name in names or ():
        assert name in lines[0], (name, lines[0])
    return lines[0]


# ------------------------------------------------------------------------ bad values, every option
POS_INT = ["0", "-1", "abc", "1.5", "", "1e3", "0x10"]
SEED = ["-1", "x", "2.0", str(2**64)]
NONNEG_FLOAT = ["-0.1", "nan", "inf", "-inf", "abc", ""]
POS_FLOAT = ["0", "-1", "nan", "inf", "x"]
FRACTIONS = ["1.5", "0", "1", "0.3,abc", "-0.2", "nan"]

# (command prefix, option, bad values); RUN stands for a run folder
OPTIONS = [
    *[(["train"], o, POS_INT) for o in ("--steps", "--batch-size", "--eval-every", "--checkpoint-every",
                                         "--log-every", "--width", "--threads")],
    (["train"], "--seed", SEED),
    *[(["train"], o, NONNEG_FLOAT) for o in ("--lr", "--momentum", "--loc-lr-mult", "--weight-decay")],
    (["train"], "--max-loss", POS_FLOAT),
    (["train"], "--lr-drops", FRACTIONS),
    (["train"], "--model", ["mlp", ""]),
    (["train"], "--backend", ["tpu"]),
    (["eval", "RUN"], "--batch-size", POS_INT),
    (["viz", "RUN"], "--n", POS_INT + ["101", "-3"]),
    *[(["sweep"], o, POS_INT) for o in ("--seeds", "--jobs", "--threads", "--steps", "--batch-size")],
    (["sweep"], "--seed-start", SEED),
    (["sweep"], "--lr", NONNEG_FLOAT),
    (["sweep"], "--models", ["mlp", "fcn,,x", ","]),
    (["sweep"], "--transforms", ["warp"]),
    (["sweep"], "--distortions", ["q", ""]),
    *[(["reproduce", "table1"], o, POS_INT) for o in ("--seeds", "--jobs", "--steps")],
    (["reproduce", "table1"], "--distortions", ["zz"]),
    *[(["colocalise", "--digit", "3"], o, ["0", "1.5"]) for o in ("--steps", "--encoder-steps", "--threads")],
    (["colocalise"], "--digit", ["10", "-1", "x"]),
    (["colocalise", "--digit", "3"], "--batch-size", ["1", "abc"]),
    (["colocalise", "--digit", "3"], "--images", ["1", "10001"]),
    (["colocalise", "--digit", "3"], "--lr", ["-0.1", "nan"]),
    (["colocalise", "--digit", "3"], "--seed", ["-1"]),
    (["colocalise", "--digit", "3"], "--optimizer", ["rmsprop", ""]),
    (["colocalise", "--digit", "3"], "--encoder-shift", ["-1", "15", "2.5"]),
    (["reproduce", "table5"], "--encoder-shift", ["15", "x"]),
    *[(["reproduce", "table5"], o, ["0"]) for o in ("--steps", "--encoder-steps", "--batch-size")],
    (["reproduce", "table5"], "--batch-size", ["1"]),
    (["reproduce", "table5"], "--digits", ["10", ","]),
    (["reproduce", "table5"], "--variants", ["tt", "t,x"]),
    (["reproduce", "table5"], "--lr", ["inf"]),
    (["reproduce", "table5"], "--optimizer", ["adagrad"]),
    *[(["demo"], o, POS_INT) for o in ("--steps",)],
    (["demo"], "--seed", SEED),
    *[(["quickstart"], o, POS_INT) for o in ("--steps", "--threads")],
    (["quickstart"], "--seed", SEED),
    *[(["bench", "sampler"], o, POS_INT) for o in ("--repeats",)],
    (["bench", "sampler"], "--warmup", ["-1", "x"]),
    (["bench", "sampler"], "--shapes", ["9", "a", "-1"]),
    (["bench", "sampler"], "--backends", ["tpu"]),
    *[(["bench", "train"], o, POS_INT) for o in ("--batch-size", "--repeats", "--threads", "--data-batches",
                                                 "--schedule-steps")],
    (["bench", "train"], "--seed", SEED),
    (["bench", "train"], "--models", ["resnet"]),
    (["data"], "--import", ["no-such-archive.tar", ""]),
    (["data"], "--pack", ["", "-"]),
    (["course", "grade", "."], "--task", ["0", "7", "x", "", "1.5"]),
    (["course", "grade", "."], "--examples", POS_INT + ["100000"]),
    (["course", "grade", "."], "--fail-under", NONNEG_FLOAT),
]
CASES = [(cmd, opt, v) for cmd, opt, vals in OPTIONS for v in vals]
HUGE = [(["train"], "--steps", "1000000000"), (["train"], "--batch-size", "100000"),
        (["eval", "RUN"], "--batch-size", "100000"), (["sweep"], "--seeds", "100000"),
        (["sweep"], "--jobs", "100000"), (["train"], "--width", "100000000")]


@pytest.mark.parametrize("cmd, option, value", CASES + HUGE,
                         ids=[f"{' '.join(c)}{o}={v!r}" for c, o, v in CASES + HUGE])
def test_bad_option_value(cmd, option, value, run, capsys, tmp_path):
    before = hashes(run)
    argv = [run if a == "RUN" else a for a in cmd] + [f"{option}={value}"]
    if cmd[0] in ("sweep", "reproduce", "demo", "quickstart", "colocalise"):
        argv += ["--out", tmp_path / "o"]
    line = refused(argv, capsys, names=[option] if option not in ("--model", "--backend") else None)
    assert "Traceback" not in line
    assert hashes(run) == before
    assert not (tmp_path / "o").exists()


def test_absurd_width_is_refused_before_allocation(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(T.loop, "build_model", lambda *a, **k: pytest.fail("model built"))
    line = refused(["train", *TRAIN, "--width", "100000", "--out", tmp_path / "w"], capsys)
    assert "--width 100000" in line and "parameters" in line
    assert not (tmp_path / "w").exists()


# ------------------------------------------------------------------------ paths
@pytest.fixture
def afile(tmp_path):
    p = tmp_path / "afile"
    p.write_text("mine")
    return p


def test_colocalise_without_a_digit(tmp_path, capsys):
    refused(["colocalise", "--out", tmp_path / "o"], capsys, names=["--digit"])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("cmd", [["train", *TRAIN], ["demo", "--steps", "1"], ["quickstart", "--steps", "1"],
                                 ["sweep", "--steps", "1"], ["reproduce", "table1", "--steps", "1"],
                                 ["viz", "RUN"], ["colocalise", "--digit", "1", "--steps", "1"],
                                 ["reproduce", "table5", "--steps", "1"]])
@pytest.mark.parametrize("where", ["file", "inside-file"])
def test_out_pointing_at_or_inside_a_file(cmd, where, afile, run, capsys):
    out = afile if where == "file" else afile / "sub" / "x"
    before = hashes(run)
    refused([run if a == "RUN" else a for a in cmd] + ["--out", out], capsys, names=["--out", "afile"])
    assert afile.read_text() == "mine" and hashes(run) == before


@pytest.mark.parametrize("cmd", [["train", *TRAIN, "--out", "OUT"], ["eval", "RUN"], ["quickstart"], ["data"],
                                 ["sweep", "--out", "OUT"], ["bench", "train"]])
@pytest.mark.parametrize("what", ["missing", "file", "empty"])
def test_data_dir_that_is_not_a_folder(cmd, what, afile, run, tmp_path, capsys):
    d = {"missing": tmp_path / "no-such-dir", "file": afile, "empty": ""}[what]
    argv = [run if a == "RUN" else tmp_path / "o" if a == "OUT" else a for a in cmd]
    refused(argv + ["--data-dir", d], capsys, names=["--data-dir"])


@pytest.mark.parametrize("cmd", ["eval", "viz"])
@pytest.mark.parametrize("what", ["missing", "file", "empty-folder", "foreign-config"])
def test_run_dir_that_is_not_a_run(cmd, what, afile, tmp_path, capsys):
    d = {"missing": tmp_path / "nope", "file": afile, "empty-folder": tmp_path / "empty",
         "foreign-config": tmp_path / "foreign"}[what]
    if what == "empty-folder":
        d.mkdir()
    if what == "foreign-config":
        d.mkdir()
        (d / "config.json").write_text('{"optimizer": "adam"}')
    before = hashes(tmp_path)
    refused([cmd, d], capsys)
    assert hashes(tmp_path) == before


@pytest.mark.parametrize("content, shown", [("{not json", "not valid JSON"), ('{"a": 1}', "expected a JSON list"),
                                            ('[{"model": "mlp"}]', "item 0"), ('[{"nope": 1}]', "item 0"),
                                            ('[1, 2]', "expected a JSON list")])
def test_bad_sweep_grid_file(content, shown, tmp_path, capsys):
    grid = tmp_path / "grid.json"
    grid.write_text(content)
    line = refused(["sweep", "--grid", grid, "--out", tmp_path / "o"], capsys, names=["--grid", shown])
    assert str(grid) in line


@pytest.mark.parametrize("option, value", [("--json", "DIR"), ("--json", "FILE/x.json"), ("--data-dir", "FILE")])
def test_bench_paths(option, value, afile, tmp_path, capsys):
    value = value.replace("DIR", str(tmp_path)).replace("FILE", str(afile))
    refused(["bench", "train", option, value], capsys, names=[option])


# ------------------------------------------------------------------------ damaged run folders
def _flip(path: Path, at: float):
    blob = bytearray(path.read_bytes())
    blob[min(len(blob) - 1, int(at * len(blob)))] ^= 0x5A
    path.write_bytes(bytes(blob))


def _cut(path: Path, at: float):
    blob = path.read_bytes()
    path.write_bytes(blob[: int(at * len(blob))])


DAMAGES = {"truncated": _cut, "bit-flipped": _flip}


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.sampled_from(["model.npz", "checkpoint.npz"]), how=st.sampled_from(sorted(DAMAGES)),
       at=st.floats(0.0, 0.999), cmd=st.sampled_from(["eval", "eval --checkpoint", "viz", "resume"]))
def test_damaged_weights_are_named(finished_run, tmp_path_factory, capsys, name, how, at, cmd):
    run = tmp_path_factory.mktemp("dmg") / "run"
    shutil.copytree(finished_run, run)
    DAMAGES[how](run / name, at)
    before = hashes(run)
    argv = {"eval": ["eval", run], "eval --checkpoint": ["eval", run, "--checkpoint"], "viz": ["viz", run],
            "resume": ["train", "--resume", "--out", run, "--quiet", "--threads", "1"]}[cmd]
    uses = {"eval": "model.npz", "viz": "model.npz", "eval --checkpoint": "checkpoint.npz",
            "resume": "checkpoint.npz"}[cmd]
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if uses == name:  # the damaged file is read: refused, naming it (a flip that leaves it valid is fine)
        if rc != 0:
            refused(argv, capsys, names=[name])
            assert hashes(run) == before
    elif cmd == "resume":  # resuming the complete run from its good checkpoint rewrites the outputs
        assert rc == 0, err
        T.read_npz(run / "model.npz")
    else:  # eval/viz read only the other file; they add eval.json or viz/, nothing else changes
        assert rc == 0, err
        after = hashes(run)
        assert {k: v for k, v in after.items() if k in before} == before


@pytest.mark.parametrize("content", ["", "{trunc", "[1, 2]", "\x00\xff", '{"model": 3}'])
def test_damaged_config_is_reported_with_its_path(content, run, capsys):
    (run / "config.json").write_text(content, errors="surrogateescape")
    before = hashes(run)
    for argv in (["eval", run], ["viz", run], ["train", "--resume", "--out", run, "--quiet", "--threads", "1"]):
        refused(argv, capsys, names=["config.json"])
        assert hashes(run) == before


@pytest.mark.parametrize("content", ["", "{trunc", "[1, 2]"])
def test_damaged_metrics_json(content, run, capsys):
    """metrics.json is an output: eval and viz do not need it; resuming the finished run rewrites it."""
    (run / "metrics.json").write_text(content)
    for argv in (["eval", run], ["viz", run], ["train", "--resume", "--out", run, "--quiet", "--threads", "1"]):
        assert main([str(a) for a in argv]) == 0
        assert "Traceback" not in capsys.readouterr().err
    assert json.loads((run / "metrics.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("change", [["--model", "st-fcn"], ["--model", "cnn"], ["--width", "9"],
                                    ["--steps", "8"], ["--lr", "0.5"], ["--distortion", "r"]])
def test_resume_with_another_configuration(change, run, capsys):
    before = hashes(run)
    refused(["train", *TRAIN, "--out", run, "--resume", *change], capsys, names=["different run"])
    assert hashes(run) == before


def test_resume_of_a_finished_run_without_checkpoint(run, capsys):
    (run / "checkpoint.npz").unlink()
    before = hashes(run)
    assert main(["train", *TRAIN, "--out", str(run), "--resume"]) == 0  # re-reports the finished metrics
    assert "already finished" not in capsys.readouterr().err
    assert hashes(run) == before
    (run / "metrics.json").unlink()
    before = hashes(run)
    refused(["train", *TRAIN, "--out", run, "--resume"], capsys, names=["no checkpoint.npz"])
    assert hashes(run) == before


@pytest.mark.parametrize("name", ["config.json", "model.npz", "log.csv", "eval.json", "diverged.json"])
def test_users_own_file_is_never_overwritten(name, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("my own notes")
    refused(["train", *TRAIN, "--out", out], capsys, names=[name])
    assert (out / name).read_text() == "my own notes" and sorted(os.listdir(out)) == [name]


# ------------------------------------------------------------------------ through a real process
def _npstn(*args, env=None, code=None):
    cmd = [sys.executable, "-c", code, *map(str, args)] if code else [sys.executable, "-m", "npstn", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NUMBA_DISABLE_JIT": "0", **(env or {})})


@pytest.mark.parametrize("args", [["eval", "RUN", "--batch-size", "-1"], ["eval", "RUN", "--batch-size", "0"],
                                  ["viz", "RUN", "--n", "-3"], ["train", "--out", "FILE"],
                                  ["eval", "RUN-DAMAGED"]])
def test_no_traceback_in_a_real_process(args, run, afile):
    _cut(run / "model.npz", 0.5) if "RUN-DAMAGED" in args else None
    args = [run if a.startswith("RUN") else afile if a == "FILE" else a for a in args]
    p = _npstn(*args)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_main_command_without_network_or_mnist_says_where_to_put_the_files(tmp_path):
    """The README's `npstn train` on a machine with no network and no MNIST: exit 2, where to put the files."""
    code = ("import sys, npstn.data.mnist as m; m.MNIST_MIRRORS = (); m._npm_executable = lambda: None; "
            "from npstn.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "NPSTN_DATA_DIR": ""}
    p = _npstn("train", "--model", "fcn", "--steps", "2", "--out", tmp_path / "run", "--quiet", env=env, code=code)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert str(tmp_path / "cache" / "npstn" / "mnist") in p.stderr and "NPSTN_DATA_DIR" in p.stderr
    assert "train-images-idx3-ubyte" in p.stderr
