"""Training loop, checkpoints, exact resume, divergence detection (npstn.train).

Everything here trains on tiny synthetic "digits" (no MNIST needed), except
the one integration test at the bottom, which runs only when NPSTN_DATA_DIR
points at real MNIST: ``pytest -k integration``.
"""
import json
import os

import numpy as np
import pytest

from npstn import nn
from npstn import train as T
from npstn.data import DistortedMNIST, test_set
from npstn.train import TrainConfig, TrainingDiverged, evaluate, train


def synthetic_digits(n: int, seed: int):
    """n 28x28 uint8 images: class k is a bright bar at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = (rng.random((n, 28, 28)) * 40).astype(np.uint8)
    for i, k in enumerate(y):
        r = 5 + 2 * k
        x[i, r:r + 3, 6:22] = 230
        x[i, 8:20, 4 + 2 * k] = 200
    return x, y.astype(np.int64)


@pytest.fixture
def synthetic(monkeypatch):
    """Make npstn.train load synthetic digits instead of MNIST (train 100, test 40)."""
    xtr, ytr = synthetic_digits(100, 0)
    xte, yte = synthetic_digits(40, 1)
    monkeypatch.setattr(T.data, "load_train_source", lambda distortion, data_dir=None, backend=None:
                        DistortedMNIST(distortion, backend=backend, images=xtr, labels=ytr))
    monkeypatch.setattr(T.data, "load_test_set", lambda distortion, data_dir=None:
                        test_set(distortion, images=xte, labels=yte, cache=False))


def small(out, **kw) -> TrainConfig:
    base = dict(model="st-fcn", transform="affine", distortion="rts", steps=8, batch_size=8,
                eval_every=4, checkpoint_every=2, log_every=1, out=str(out))
    base.update(kw)
    return TrainConfig(**base)


# ---------------------------------------------------------------------------- config and helpers
def test_default_config_is_the_papers_protocol():
    c = TrainConfig()
    assert (c.steps, c.batch_size, c.lr, c.weight_decay) == (150_000, 256, 0.01, 0.0)
    assert c.milestones == [50_000, 100_000] and c.lr_gamma == 0.1
    assert TrainConfig(steps=3000).milestones == [1000, 2000]
    assert TrainConfig(lr_drops=()).milestones == []


@pytest.mark.parametrize("kwargs", [dict(model="mlp"), dict(distortion="x"), dict(steps=0),
                                    dict(lr=float("nan")), dict(lr_drops=(1.5,)), dict(eval_every=0)])
def test_bad_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        TrainConfig(**kwargs)


def test_config_round_trips_through_json():
    c = small("x", momentum=0.5, lr_drops=(0.5,))
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


class _Fixed(nn.Module):
    """Predicts class = the first pixel's value (as an int)."""

    def forward(self, x):
        k = x[:, 0, 0, 0].astype(int)
        return np.eye(10, dtype=np.float32)[k]


def test_evaluate_counts_errors_in_batches():
    x = np.zeros((10, 1, 2, 2), np.float32)
    x[:, 0, 0, 0] = np.arange(10) % 3
    y = np.arange(10) % 3
    y[:4] = 9  # four wrong
    model = _Fixed()
    assert evaluate(model, x, y, batch_size=3) == pytest.approx(40.0)
    assert model.training  # the mode is restored


# ---------------------------------------------------------------------------- a run's outputs
def test_run_folder_has_config_log_checkpoint_metrics(synthetic, tmp_path):
    out = tmp_path / "run"
    m = train(small(out), progress=False)
    for name in ("config.json", "log.csv", "checkpoint.npz", "model.npz", "metrics.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(m))
    assert 0 <= m["test_error_percent"] <= 100 and m["steps"] == 8 and m["wall_seconds"] > 0
    assert m["parameters"] == m["model_spec"]["params"] > 0
    assert m["config"]["model"] == "st-fcn" and [e["step"] for e in m["evals"]] == [4, 8]
    rows = T.read_log(out / "log.csv")
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert [r["test_error_percent"] is not None for r in rows] == [False] * 3 + [True] + [False] * 3 + [True]
    assert all(np.isfinite(r["loss"]) and 0 <= r["train_accuracy"] <= 1 for r in rows)
    # lr drops 10x after 1/3 and 2/3 of the run (steps 3 and 5 of 8)
    assert [r["lr"] for r in rows] == pytest.approx([0.01] * 3 + [0.001] * 2 + [0.0001] * 3)
    model, config = T.load_run(out)
    assert config == small(out)
    weights = nn.load(out / "model.npz")
    assert all(np.array_equal(p, weights[k]) for k, p in model.state_dict().items())


def test_existing_run_is_not_overwritten(synthetic, tmp_path):
    train(small(tmp_path, steps=2), progress=False)
    with pytest.raises(FileExistsError, match="resume"):
        train(small(tmp_path, steps=2), progress=False)


class _CrashAfter:
    """A training source that raises KeyboardInterrupt on its n-th batch (a simulated crash)."""

    def __init__(self, source, n):
        self.source, self.n, self.calls = source, n, 0

    def sample_batch(self, batch_size, rng):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.source.sample_batch(batch_size, rng)


@pytest.mark.parametrize("model,distortion", [("st-fcn", "rts"), ("st-cnn", "r")])
def test_resume_gives_exactly_the_uninterrupted_weights(synthetic, tmp_path, monkeypatch, model, distortion):
    cfg = dict(model=model, distortion=distortion, steps=10, checkpoint_every=3, eval_every=5)
    train(small(tmp_path / "a", **cfg), progress=False)

    real = T.data.load_train_source
    monkeypatch.setattr(T.data, "load_train_source", lambda *a, **k: _CrashAfter(real(*a, **k), 8))
    with pytest.raises(KeyboardInterrupt):  # dies during step 8; the last checkpoint is step 6
        train(small(tmp_path / "b", **cfg), progress=False)
    assert not (tmp_path / "b" / "metrics.json").exists()
    monkeypatch.setattr(T.data, "load_train_source", real)
    train(small(tmp_path / "b", **cfg), progress=False, resume=True)

    a, b = nn.load(tmp_path / "a" / "model.npz"), nn.load(tmp_path / "b" / "model.npz")
    assert list(a) == list(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    ra, rb = T.read_log(tmp_path / "a" / "log.csv"), T.read_log(tmp_path / "b" / "log.csv")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
    assert strip(ra) == strip(rb)
    ma, mb = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert ma["test_error_percent"] == mb["test_error_percent"] and ma["evals"] == mb["evals"]


def test_resume_refuses_a_changed_configuration(synthetic, tmp_path):
    train(small(tmp_path, steps=4), progress=False)
    with pytest.raises(ValueError, match="lr: 0.01 -> 0.02"):
        train(small(tmp_path, steps=4, lr=0.02), progress=False, resume=True)


def test_resume_of_a_finished_run_changes_nothing(synthetic, tmp_path):
    m1 = train(small(tmp_path, steps=4), progress=False)
    m2 = train(small(tmp_path, steps=4), progress=False, resume=True)
    assert m1["test_error_percent"] == m2["test_error_percent"]
    assert [r["step"] for r in T.read_log(tmp_path / "log.csv")] == [1, 2, 3, 4]


class _NaNAt:
    """A training source whose n-th batch is all NaN (poisons the loss)."""

    def __init__(self, source, n):
        self.source, self.n, self.calls = source, n, 0

    def sample_batch(self, batch_size, rng):
        self.calls += 1
        x, y = self.source.sample_batch(batch_size, rng)
        return (np.full_like(x, np.nan) if self.calls == self.n else x), y


@pytest.mark.parametrize("model,what", [
    ("fcn", "the training loss is nan"),
    # the ST maps a NaN theta to zeros (npstn's sampler policy), so the loss can stay finite
    # while the localisation weights turn NaN: caught by the parameter check
    ("st-fcn", "(the training loss is nan|a parameter became NaN)"),
])
def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(synthetic, tmp_path, monkeypatch, model, what):
    real = T.data.prepare_data  # the NaN comes in the 5th training batch, whatever prepares the data

    def nan_at_5(*a, **k):
        source, test, norm = real(*a, **k)
        return _NaNAt(source, 5), test, norm

    monkeypatch.setattr(T.data, "prepare_data", nan_at_5)
    with pytest.raises(TrainingDiverged, match=rf"diverged at step 5: {what}.*step 4\)"):
        train(small(tmp_path, model=model, steps=8, checkpoint_every=2), progress=False)
    with np.load(tmp_path / "checkpoint.npz") as f:
        assert json.loads(str(f["state.json"]))["step"] == 4
        assert all(np.isfinite(f[k]).all() for k in f.files if k.startswith("model/"))
    record = json.loads((tmp_path / "diverged.json").read_text())
    assert record["step"] == 5 and record["checkpoint_step"] == 4 and "--lr" in record["message"]
    assert not (tmp_path / "metrics.json").exists()


def test_exploding_loss_stops_the_run(synthetic, tmp_path):
    with pytest.raises(TrainingDiverged, match="diverged at step"):
        train(small(tmp_path, model="fcn", lr=1e6, steps=20, checkpoint_every=1), progress=False)
    assert (tmp_path / "checkpoint.npz").is_file()


# ---------------------------------------------------------------------------- sweeps
def test_results_table_reports_mean_and_paper():
    def r(model, t, d, err, seed):
        c = TrainConfig(model=model, transform=t, distortion=d, seed=seed, steps=100).to_dict()
        return {"config": c, "status": "finished", "test_error_percent": err}

    text = T.results_table([r("fcn", "affine", "rts", 10.0, 0), r("fcn", "affine", "rts", 12.0, 1),
                            r("st-fcn", "tps", "rts", 3.0, 0)])
    assert "| FCN | 11.00 +- 1.00 (2) | 5.2 |" in text
    assert "| ST-FCN tps | 3.00 (1) | 0.8 |" in text
    assert "Best published replications" not in text  # none on RTS
    assert "3.8 (a Caffe replication)" in T.results_table([r("fcn", "affine", "r", 3.0, 0)])
    # complete: every cell of the paper's Table 1, the unmeasured ones owed (the CNN rows to a GPU)
    full = T.results_table([r("fcn", "affine", "rts", 10.0, 0)], complete=True)
    head = "| model | R npstn | R paper | RTS npstn | RTS paper | P npstn | P paper | E npstn | E paper | TC npstn | TC paper |"
    assert head in full
    assert "| FCN | owed | 2.1 | 10.00 (1) | 5.2 | owed | 3.1 | owed | 3.2 | owed | 13.2 |" in full
    assert "| ST-CNN tps | owed (GPU) | 0.7 | owed (GPU) | 0.5 | owed (GPU) | 0.8 | owed (GPU) | 1.1 |  |  |" in full
    assert full.count("\n| ") == 1 + 8  # the header and the paper's eight rows
    assert "owed" not in T.results_table([r("fcn", "affine", "rts", 10.0, 0)])


def test_reproduce_regenerates_table_and_figure_from_run_folders(synthetic, tmp_path):
    configs = T.sweep_configs(tmp_path / "sweep", ["fcn", "st-fcn"], ["affine"], ["rts"], [0],
                              steps=4, batch_size=8, eval_every=2)
    results = T.run_sweep(configs, tmp_path / "sweep", progress=False)
    assert [r["status"] for r in results] == ["finished", "finished"]
    assert (tmp_path / "sweep" / "results.png").stat().st_size > 1000
    again = T.collect_results(tmp_path / "sweep")
    assert T.results_table(again) == T.results_table(results)
    assert {r["metrics"]["config"]["model"] for r in again} == {"fcn", "st-fcn"}
    from npstn.viz import plot_table1

    png = plot_table1(again, tmp_path / "t1.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- integration (real MNIST)
#: Steps of the integration test. In short RTS runs (batch 256, lr 0.01, momentum 0.9,
#: loc_lr_mult 1) the ST-FCN's localisation "clicks" after ~600 steps; at 1000 steps the
#: ST-FCN's test error is about 40% against the FCN's 64%, at 2000 steps 10% against 38%.
INTEGRATION_STEPS = 1000


@pytest.mark.skipif(not os.environ.get("NPSTN_DATA_DIR"),
                    reason="integration test: set NPSTN_DATA_DIR to a folder with the MNIST files")
def test_integration_mnist_st_fcn_beats_fcn_on_rts(tmp_path):
    """INTEGRATION: on real RTS MNIST, at the same short budget, ST-FCN (affine) < FCN in test error.

    About a minute and a half on 2 cores: 1000 steps of each model, tested on
    the first 2000 digits of the fixed RTS test set.
    """
    common = dict(distortion="rts", steps=INTEGRATION_STEPS, batch_size=256, lr=0.01, lr_drops=(),
                  momentum=0.9, loc_lr_mult=1.0, seed=0, eval_every=10**9, checkpoint_every=10**9)
    x, y = T.load_test_set("rts")
    subset = (x[:2000], y[:2000])
    errs = {}
    for model in ("fcn", "st-fcn"):
        cfg = TrainConfig(model=model, out=str(tmp_path / model), **common)
        errs[model] = train(cfg, progress=False, data=(T.load_train_source("rts"), subset))["test_error_percent"]
    print(f"integration, RTS test error % after {INTEGRATION_STEPS} steps: {errs}")
    assert errs["st-fcn"] < errs["fcn"], errs


# ---------------------------------------------------------------------------- study knobs (issue 10)
@pytest.mark.parametrize("kwargs", [dict(input_norm="zscore"), dict(train_set="frozen")])
def test_bad_study_knobs_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        TrainConfig(**kwargs)


def test_fixed_train_set_distorts_each_digit_once_and_repeats_it():
    xtr, ytr = synthetic_digits(30, 0)
    source = DistortedMNIST("rts", images=xtr, labels=ytr)
    fixed = T.FixedTrainSet(source, seed=3)
    assert fixed.x.shape == (30, 1, 42, 42) and len(fixed) == 30
    np.testing.assert_array_equal(fixed.y, ytr)
    again = T.FixedTrainSet(source, seed=3)
    np.testing.assert_array_equal(fixed.x, again.x)  # the same seed, the same fixed set
    assert not np.array_equal(T.FixedTrainSet(source, seed=4).x, fixed.x)
    xb, yb = fixed.sample_batch(64, np.random.default_rng(0))
    # every image of a batch is one of the fixed set's, with its own label
    for img, lab in zip(xb, yb):
        hits = np.flatnonzero((fixed.x == img).all(axis=(1, 2, 3)))
        assert hits.size and (fixed.y[hits] == lab).all()


def test_standardized_source_has_zero_mean_and_unit_std():
    xtr, ytr = synthetic_digits(50, 0)
    src = T.StandardizedSource(DistortedMNIST("r", images=xtr, labels=ytr))
    x, _ = src.sample_batch(2048, np.random.default_rng(1))
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    assert x.dtype == np.float32


@pytest.mark.parametrize("kw", [dict(input_norm="standardize"), dict(train_set="fixed")])
def test_study_knobs_train_resume_exactly_and_evaluate(synthetic, tmp_path, monkeypatch, kw):
    full = train(small(tmp_path / "full", model="fcn", **kw), progress=False)
    c = small(tmp_path / "cut", model="fcn", **kw)
    real = T.data.prepare_data

    def crashing(*a, **k):
        source, test, norm = real(*a, **k)
        return _CrashAfter(source, 6), test, norm

    monkeypatch.setattr(T.data, "prepare_data", crashing)
    with pytest.raises(KeyboardInterrupt):  # dies during step 6; the last checkpoint is step 4
        train(c, progress=False)
    monkeypatch.setattr(T.data, "prepare_data", real)
    resumed = train(c, resume=True, progress=False)
    assert resumed["test_error_percent"] == full["test_error_percent"]
    a, b = nn.load(tmp_path / "full" / "model.npz"), nn.load(tmp_path / "cut" / "model.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    norm = T.run_input_norm(tmp_path / "full")
    assert (norm is None) == (c.input_norm == "none")
    if norm is not None:
        assert full["input_norm_stats"] == norm and norm["std"] > 0
        # eval reads the run's own standardisation: the recorded error comes back
        model, config = T.load_run(tmp_path / "full")
        x, y = T.data.load_test_set(config.distortion)
        assert evaluate(model, T.standardize(x, norm), y) == full["test_error_percent"]
        # the pictures feed the model standardised digits and draw V back in pixel units
        from npstn.viz import viz_run

        paths = viz_run(tmp_path / "full", n=4, test_data=(x, y))
        assert paths[0].name == "transformations.png" and paths[0].stat().st_size > 1000


def test_configs_that_predate_a_field_resume_with_what_they_were_trained_with(synthetic, tmp_path):
    # a run from before input_norm and train_set existed: raw pixels, fresh data
    c = small(tmp_path / "old", model="fcn", input_norm="none")
    train(c, progress=False)
    stored = json.loads((tmp_path / "old" / "metrics.json").read_text())["config"]
    for k in ("input_norm", "train_set"):
        stored.pop(k)
    assert T._stored(stored, "train_set") == "fresh" and T._stored(stored, "input_norm") == "none"
    assert T.DEFAULT_INPUT_NORM == "standardize" != T._stored(stored, "input_norm")  # not today's default
    T._check_resume_config(stored, c, tmp_path / "old")  # no difference reported
    assert T.TrainConfig.from_stored(stored) == c
    with pytest.raises(ValueError, match="input_norm: 'none' -> 'standardize'"):
        T._check_resume_config(stored, small(tmp_path / "old", model="fcn"), tmp_path)
    with pytest.raises(ValueError, match="train_set"):
        T._check_resume_config(stored, small(tmp_path / "old", model="fcn", input_norm="none", train_set="fixed"),
                               tmp_path)


@pytest.mark.parametrize("task", ["distortion", "addition", "mnist3d"])
def test_a_run_on_the_gpu_distorts_its_batches_on_the_cpu(monkeypatch, task):
    """--backend cuda trains on the device but draws its batches with the cpu backend (on an H200 the
    cuda kernels took 30.9 ms per RTS batch on host arrays, the cpu's 2.1); other backends keep theirs."""
    seen = []
    for name in ("load_train_source", "load_addition_source", "load_mnist3d_source"):
        monkeypatch.setattr(T.data, name, lambda *a, backend=None, **k: seen.append(backend) or "stream")
    monkeypatch.setattr(T.data, "load_test_set", lambda *a, **k: "test")
    monkeypatch.setattr(T.data, "load_addition_test_set", lambda *a, **k: "test")
    monkeypatch.setattr(T.data, "load_mnist3d_test_set", lambda *a, **k: "test")
    for backend, expected in (("cuda", "cpu"), ("cpu", "cpu"), ("numpy", "numpy"), (None, None)):
        seen.clear()
        assert T.data.load_data("rts", None, backend, task=task) == ("stream", "test")
        assert seen == [expected], (backend, seen)
