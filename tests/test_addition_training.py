"""MNIST addition end to end: TrainConfig's task fields, training with the specialisation log,
exact resume, eval/viz, `npstn train --task addition` and `npstn reproduce table4` (synthetic digits)."""
import json

import numpy as np
import pytest

from npstn import train as T
from npstn.cli import main
from npstn.data import AdditionMNIST, addition_test_set
from npstn.train import TrainConfig, train
from npstn.utils.runfolder import RunFolderError
from test_train import synthetic_digits  # noqa: E402  (the tests' shared synthetic digits)


@pytest.fixture
def synthetic(monkeypatch):
    """npstn.train's addition loaders return pairs of synthetic digits (train 100, test 24)."""
    xtr, ytr = synthetic_digits(100, 0)
    xte, yte = synthetic_digits(24, 1)
    monkeypatch.setattr(T.data, "load_addition_source", lambda data_dir=None, backend=None:
                        AdditionMNIST(backend=backend, images=xtr, labels=ytr))
    monkeypatch.setattr(T.data, "load_addition_test_set", lambda data_dir=None:
                        addition_test_set(images=xte, labels=yte, cache=False))


def small(out, **kw) -> TrainConfig:
    base = dict(task="addition", model="st-fcn", transformers=2, transform="affine", steps=6, batch_size=8,
                eval_every=3, checkpoint_every=2, log_every=1, out=str(out))
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("kwargs, match", [
    (dict(task="addition", model="st-cnn"), "addition task's models"),
    (dict(task="addition", model="cnn", transformers=2), "needs the st-fcn"),
    (dict(task="addition", distortion="r"), "distortion must be 'rts'"),
    (dict(task="addition", train_set="fixed"), "train_set must be 'fresh'"),
    (dict(task="distortion", transformers=2), "belong to the addition task"),
    (dict(budget=1000), "belong to the addition task"),
    (dict(task="addition", transformers=3), "transformers must be 1 or 2"),
    (dict(task="addition", transformers=True), "transformers must be 1 or 2"),
    (dict(task="addition", budget=0), "budget must be"),
    (dict(task="table4"), "task must be one of"),
])
def test_bad_task_settings_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_old_configs_read_as_distortion_runs():
    cfg = TrainConfig.from_stored({"model": "fcn", "distortion": "r"})
    assert (cfg.task, cfg.transformers, cfg.budget) == ("distortion", 1, None)
    assert TrainConfig(task="addition", model="st-fcn", transformers=2).describe() == \
        "2xST-FCN (affine) on MNIST addition"
    assert TrainConfig(task="addition", model="fcn").describe() == "FCN on MNIST addition"


@pytest.mark.parametrize("kwargs, mult", [
    ({"task": "addition", "model": "st-fcn"}, T.ADDITION_LOC_LR_MULT),
    ({"task": "addition", "model": "st-fcn", "transformers": 2}, T.ADDITION_LOC_LR_MULT),
    ({"task": "addition", "model": "st-fcn", "loc_lr_mult": 1.0}, 1.0),  # given: kept
    ({"task": "addition", "model": "fcn"}, T.DEFAULT_LOC_LR_MULT),  # no localisation network
    ({"model": "st-fcn"}, T.DEFAULT_LOC_LR_MULT),  # Table 1
    ({"task": "mnist3d", "model": "st-fcn"}, T.DEFAULT_LOC_LR_MULT),
])
def test_the_localisation_lr_default_depends_on_the_task(kwargs, mult):
    cfg = TrainConfig(**kwargs)
    assert cfg.loc_lr_mult == mult
    assert cfg.to_dict()["loc_lr_mult"] == mult  # the resolved number is what a run folder records
    assert TrainConfig.from_stored(cfg.to_dict()).loc_lr_mult == mult
    assert T.ADDITION_LOC_LR_MULT == 0.1 and T.DEFAULT_LOC_LR_MULT == 1.0


def test_two_transformer_run_logs_specialisation_and_resumes_exactly(tmp_path, synthetic, monkeypatch):
    full = train(small(tmp_path / "full"), progress=False)
    assert full["config"]["task"] == "addition" and full["config"]["transformers"] == 2
    spec = full["specialisation"]
    assert [r["step"] for r in spec] == [3, 6]
    for r in spec:
        for shares, index in (("centring_shares", "specialisation"), ("channel_shares", "energy_specialisation")):
            m = np.array(r[shares], dtype=float)
            assert m.shape == (2, 2) and np.allclose(m.sum(axis=1), 1.0)
            assert -1.0 <= r[index] <= 1.0
    assert full["parameters"] == T.load_run(tmp_path / "full")[0].num_parameters()

    # interrupted after the first evaluation's checkpoint, then resumed: same weights, same log
    from test_train import _CrashAfter

    real = T.data.load_addition_source
    monkeypatch.setattr(T.data, "load_addition_source", lambda *a, **k: _CrashAfter(real(*a, **k), 4))
    with pytest.raises(KeyboardInterrupt):
        train(small(tmp_path / "cut"), progress=False)
    monkeypatch.setattr(T.data, "load_addition_source", real)
    resumed = train(small(tmp_path / "cut"), resume=True, progress=False)
    assert resumed["test_error_percent"] == full["test_error_percent"]
    assert resumed["specialisation"] == spec
    a = np.load(tmp_path / "full" / "model.npz")
    b = np.load(tmp_path / "cut" / "model.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_resume_refuses_another_number_of_transformers(tmp_path, synthetic):
    train(small(tmp_path / "r", steps=2), progress=False)
    with pytest.raises(RunFolderError, match="transformers: 2 -> 1"):
        train(small(tmp_path / "r", steps=2, transformers=1), resume=True, progress=False)


def test_fcn_run_has_no_transformers_to_measure(tmp_path, synthetic):
    m = train(small(tmp_path / "f", model="fcn", transformers=1), progress=False)
    assert m["specialisation"] == []
    assert m["model_spec"]["num_classes"] == 19 and m["model_spec"]["channels"] == 2


def test_cli_train_eval_viz(tmp_path, synthetic, capsys):
    run = tmp_path / "cli"
    assert main(["train", "--task", "addition", "--model", "st-fcn", "--transformers", "2", "--steps", "4",
                 "--batch-size", "8", "--eval-every", "2", "--out", str(run), "--quiet"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["task"], cfg["transformers"]) == ("addition", 2)
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "2xST-FCN (affine) on MNIST addition: test error" in out
    ev = json.loads((run / "eval.json").read_text())
    last = json.loads((run / "metrics.json").read_text())["specialisation"][-1]
    assert ev["specialisation"] == {k: v for k, v in last.items() if k != "step"}  # the final weights' record
    if ev["specialisation"]["specialisation"] is not None:
        assert "(centring)" in out
    assert main(["viz", str(run), "--n", "3"]) == 0
    names = sorted(p.name for p in (run / "viz").iterdir())
    assert names == ["curves.png", "specialisation.png", "transformations.png"]


@pytest.mark.parametrize("argv, needle", [
    (["train", "--task", "distortion", "--transformers", "2"], "belong to the addition task"),
    (["train", "--task", "addition", "--model", "st-cnn"], "addition task's models"),
    (["train", "--task", "addition", "--transformers", "3"], "--transformers"),
    (["train", "--task", "addition", "--budget", "-5"], "--budget"),
    (["reproduce", "table4", "--distortions", "r"], "--distortions"),
    (["reproduce", "table4", "--models", "st-cnn"], "--models"),
    (["reproduce", "table1", "--budget", "400000"], "--budget"),
    (["reproduce", "table4", "--budget", "0"], "--budget"),
])
def test_cli_bad_addition_options_exit_2(argv, needle, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0]


def test_reproduce_table4_grid_and_report(tmp_path, synthetic, capsys):
    from npstn.train import sweep_configs

    configs = sweep_configs(tmp_path, ["fcn", "cnn", "st-fcn"], ["affine", "projective", "tps"], ["r"], [0],
                            task="addition")
    labels = sorted(str(c.out).split("addition/")[1] for c in configs)
    assert labels == sorted(["fcn/seed0", "cnn/seed0", "st-fcn-affine/seed0", "st-fcn-projective/seed0",
                             "st-fcn-tps/seed0", "2xst-fcn-affine/seed0", "2xst-fcn-projective/seed0",
                             "2xst-fcn-tps/seed0"])
    assert all(c.distortion == "rts" and c.task == "addition" for c in configs)
    out = tmp_path / "t4"
    assert main(["reproduce", "table4", "--models", "fcn,st-fcn", "--transforms", "affine", "--seeds", "1",
                 "--steps", "2", "--batch-size", "8", "--out", str(out)]) == 0
    text = (out / "results.md").read_text()
    assert "MNIST addition" in text and "| 2xST-FCN affine |" in text and "| 9.0 |" in text
    assert (out / "results.png").is_file()
    assert main(["reproduce", "table4", "--report", "--out", str(out)]) == 0
    text = (out / "results.md").read_text()  # --report: every row of Table 4, the unmeasured ones owed
    assert "| CNN | owed (GPU) | 14.7 |  |" in text and "| 2xST-FCN tps | owed | 5.8 |  |" in text
    assert "| 2xST-FCN affine | owed" not in text and "RTS npstn" not in text
    # --budget reaches every run's configuration and model
    out2 = tmp_path / "t4b"
    assert main(["reproduce", "table4", "--models", "fcn", "--seeds", "1", "--steps", "1", "--batch-size", "4",
                 "--budget", "100000", "--out", str(out2)]) == 0
    metrics = json.loads(next(out2.rglob("metrics.json")).read_text())
    assert metrics["config"]["budget"] == 100000 and abs(metrics["parameters"] - 100000) < 2000


def test_cli_params_prints_the_addition_table(capsys):
    assert main(["params", "--task", "addition", "--budget", "400000"]) == 0
    out = capsys.readouterr().out
    assert "budget = 400,000" in out and "| 2xST-FCN affine | 2 | 90 units |" in out
    assert main(["params", "--budget", "400000"]) == 2
    assert "--budget belongs to --task addition" in capsys.readouterr().err
