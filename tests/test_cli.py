"""The `npstn` command: train, eval, viz, params, sweep (on synthetic digits, no MNIST)."""
import json

import numpy as np
import pytest

from npstn import train as T
from npstn.cli import main
from npstn.data import DistortedMNIST, test_set

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_digits(n: int, seed: int):
    """n 28x28 uint8 images: class k is a bright bar at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = (rng.random((n, 28, 28)) * 40).astype(np.uint8)
    for i, k in enumerate(y):
        x[i, 5 + 2 * k:8 + 2 * k, 6:22] = 230
    return x, y.astype(np.int64)


@pytest.fixture(autouse=True)
def synthetic(monkeypatch):
    """Every command here reads synthetic digits instead of MNIST."""
    xtr, ytr = synthetic_digits(60, 0)
    xte, yte = synthetic_digits(30, 1)
    monkeypatch.setattr(T.data, "load_train_source", lambda distortion, data_dir=None, backend=None:
                        DistortedMNIST(distortion, backend=backend, images=xtr, labels=ytr))
    monkeypatch.setattr(T.data, "load_test_set", lambda distortion, data_dir=None:
                        test_set(distortion, images=xte, labels=yte, cache=False))


def _train(out, *extra):
    return main(["train", "--model", "st-fcn", "--distortion", "rts", "--steps", "6", "--batch-size", "8",
                 "--eval-every", "3", "--checkpoint-every", "3", "--out", str(out), "--quiet", *extra])


def test_train_eval_viz_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, "--momentum", "0.5", "--loc-lr-mult", "0.3", "--seed", "2") == 0
    assert "test error" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["status"] == "finished"
    assert metrics["config"]["momentum"] == 0.5 and metrics["config"]["loc_lr_mult"] == 0.3
    assert metrics["config"]["seed"] == 2
    assert (run / "log.csv").read_text().startswith("step,loss,train_accuracy,lr,test_error_percent")
    with np.load(run / "checkpoint.npz") as f:
        assert json.loads(str(f["state.json"]))["step"] == 6

    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"test error {metrics['test_error_percent']:.2f}%" in out
    assert json.loads((run / "eval.json").read_text())["test_error_percent"] == metrics["test_error_percent"]

    assert main(["viz", str(run), "--n", "4"]) == 0
    for name in ("transformations.png", "curves.png"):
        assert (run / "viz" / name).read_bytes()[:8] == PNG_MAGIC, name


def test_viz_of_a_model_without_transformer(tmp_path):
    run = tmp_path / "cnn"
    assert main(["train", "--model", "cnn", "--distortion", "r", "--steps", "2", "--batch-size", "4",
                 "--out", str(run), "--quiet"]) == 0
    assert main(["viz", str(run), "--n", "3", "--out", str(tmp_path / "pics")]) == 0
    assert (tmp_path / "pics" / "transformations.png").read_bytes()[:8] == PNG_MAGIC


def test_resume_takes_the_settings_from_the_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run) == 0
    before = (run / "metrics.json").read_text()
    assert main(["train", "--resume", "--out", str(run), "--quiet"]) == 0  # nothing else given
    after = json.loads((run / "metrics.json").read_text())
    assert after["test_error_percent"] == json.loads(before)["test_error_percent"]
    assert after["config"]["steps"] == 6


def test_train_refuses_to_overwrite_a_run(tmp_path, capsys):
    assert _train(tmp_path) == 0
    assert _train(tmp_path) == 2
    assert "--resume" in capsys.readouterr().err


def test_diverging_run_exits_nonzero_with_a_clear_message(tmp_path, capsys):
    rc = main(["train", "--model", "fcn", "--distortion", "r", "--steps", "20", "--batch-size", "8",
               "--lr", "1e6", "--checkpoint-every", "1", "--out", str(tmp_path), "--quiet"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "diverged at step" in err and "last good checkpoint" in err and "--lr" in err
    assert (tmp_path / "checkpoint.npz").is_file() and (tmp_path / "diverged.json").is_file()


def test_params_prints_the_table(capsys):
    assert main(["params", "--distortion", "tc"]) == 0
    out = capsys.readouterr().out
    assert "60x60" in out and "ST-CNN" in out and "| FCN |" in out


def test_sweep_runs_the_grid_then_skips_finished_runs(tmp_path, capsys):
    args = ["sweep", "--models", "fcn,st-fcn", "--transforms", "affine,attention", "--distortions", "r",
            "--seeds", "2", "--steps", "2", "--batch-size", "4", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count(": finished:") == 6  # fcn x 2 seeds + st-fcn x 2 transforms x 2 seeds
    assert (tmp_path / "r" / "st-fcn-attention" / "seed1" / "metrics.json").is_file()
    table = (tmp_path / "results.md").read_text()
    assert "| FCN |" in table and "| ST-FCN attention |" in table and "(2)" in table
    # again, in a 2-process pool: every run is already finished, so each is skipped
    assert main(args + ["--jobs", "2"]) == 0
    assert capsys.readouterr().out.count(": skipped:") == 6
    assert (tmp_path / "results.md").read_text() == table


def test_sweep_with_dask_needs_dask(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("dask") is not None:
        pytest.skip("dask is installed")
    rc = main(["sweep", "--steps", "1", "--out", str(tmp_path), "--dask", "tcp://127.0.0.1:1"])
    assert rc == 2
    assert "pip install" in capsys.readouterr().err


def test_reproduce_report_redraws_table_and_figure_from_run_folders(synthetic, tmp_path, capsys):
    out = tmp_path / "t1"
    assert main(["reproduce", "table1", "--models", "fcn", "--distortions", "rts", "--seeds", "1",
                 "--steps", "3", "--batch-size", "4", "--out", str(out)]) == 0
    for f in ("results.md", "results.png", "results.json"):
        (out / f).unlink()
    capsys.readouterr()
    assert main(["reproduce", "table1", "--report", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| FCN |" in printed and "| ST-CNN affine | owed (GPU) |" in printed  # every cell of Table 1
    assert all((out / f).is_file() for f in ("results.md", "results.png", "results.json"))
    assert main(["reproduce", "table1", "--report", "--out", str(tmp_path / "empty")]) == 2
    assert "no finished runs" in capsys.readouterr().err
