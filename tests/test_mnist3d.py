"""3D MNIST (appendix A.3): the volume generator, the models, training, eval/viz and the CLI
(synthetic digits, tiny volumes)."""
import json

import numpy as np
import pytest

from npstn import train as T
from npstn.cli import main
from npstn.data.mnist3d import MNIST3D, mnist3d_test_set, random_poses, render_volumes, rotation_matrices
from npstn.models import build_mnist3d_model, build_model, mnist3d_model_spec
from npstn.train import TrainConfig
from test_train import synthetic_digits  # noqa: E402  (the tests' shared synthetic digits)

S = 8  # volumes of 8^3 voxels keep these tests fast


@pytest.fixture
def synthetic(monkeypatch):
    """npstn.train's 3D-MNIST loaders render synthetic digits (train 100, test 20)."""
    xtr, ytr = synthetic_digits(100, 0)
    xte, yte = synthetic_digits(20, 1)
    monkeypatch.setattr(T.data, "load_mnist3d_source", lambda data_dir=None, backend=None, volume_size=28:
                        MNIST3D(size=volume_size, backend=backend, images=xtr, labels=ytr))
    monkeypatch.setattr(T.data, "load_mnist3d_test_set", lambda data_dir=None, volume_size=28:
                        mnist3d_test_set(size=volume_size, images=xte, labels=yte))


def test_rotations_are_rotations():
    r = rotation_matrices(np.random.default_rng(0).uniform(-3, 3, (5, 3)))
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)


def test_untouched_volume_projects_to_the_digit():
    """Identity pose: every depth slice of the slab is the digit, so the mean over depth is the digit
    times the slab's share of the depth (1/2), up to the one-voxel ramp of its faces."""
    digits, _ = synthetic_digits(3, 0)
    d = digits.astype(np.float32) / 255
    theta = np.tile(np.eye(3, 4), (3, 1, 1))
    v = render_volumes(d, theta, size=28)
    assert v.shape == (3, 1, 28, 28, 28) and v.dtype == np.float32
    assert v.min() >= 0 and v.max() <= 1
    np.testing.assert_allclose(v[:, 0, 14], d, atol=1e-6)  # a slice inside the slab: the digit itself
    assert np.all(v[:, 0, 0] == 0) and np.all(v[:, 0, -1] == 0)  # outside the slab: empty
    np.testing.assert_allclose(v.mean(axis=2)[:, 0], 0.5 * d, atol=1e-6)


def test_batches_are_drawn_from_the_generator_alone():
    x, y = synthetic_digits(30, 0)
    data = MNIST3D(size=S, images=x, labels=y)
    a = data.sample_batch(4, np.random.default_rng(5))
    b = data.sample_batch(4, np.random.default_rng(5))
    c = data.sample_batch(4, np.random.default_rng(6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == (4, 1, S, S, S) and not np.array_equal(a[0], c[0])
    theta = random_poses(100, np.random.default_rng(0), max_angle=30, max_shift=0.1)
    assert np.all(np.abs(theta[:, :, 3]) <= 0.1)
    # the test set: the first n digits, rendered in chunks of 256, the same every call
    xt, yt = mnist3d_test_set(size=4, n=300, images=np.repeat(x, 10, axis=0), labels=np.repeat(y, 10))
    assert xt.shape == (300, 1, 4, 4, 4) and np.array_equal(yt, np.repeat(y, 10)[:300])
    np.testing.assert_array_equal(xt, mnist3d_test_set(size=4, n=300, images=np.repeat(x, 10, axis=0),
                                                       labels=np.repeat(y, 10))[0])
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        data.sample_batch(0)
    with pytest.raises(ValueError, match="size must be an int >= 2"):
        MNIST3D(size=1, images=x, labels=y)


def test_models_share_the_parameter_budget():
    st, fcn = mnist3d_model_spec("st-fcn"), mnist3d_model_spec("fcn")
    assert st.width == 128 and st.params == st.target
    assert abs(fcn.params / st.params - 1) < 0.01 and fcn.width > st.width
    model = build_mnist3d_model("st-fcn", input_size=S, seed=0)
    assert model.num_parameters() == mnist3d_model_spec("st-fcn", input_size=S).params
    assert build_model("fcn", task="mnist3d", input_size=S).num_parameters() == \
        mnist3d_model_spec("fcn", input_size=S).params
    x = np.random.default_rng(0).random((2, 1, S, S, S), dtype=np.float32)
    out = model(x)
    assert out.shape == (2, 10)
    # identity-initialised: the transformer passes the volume through, so the classifier reads its projection
    np.testing.assert_allclose(model.transformer.theta, np.tile(np.eye(3, 4).ravel(), (2, 1)), atol=0)
    np.testing.assert_allclose(out, model.classifier(x.mean(axis=2)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unknown 3D-MNIST model"):
        mnist3d_model_spec("cnn")


@pytest.mark.parametrize("kwargs, match", [
    (dict(task="mnist3d", model="cnn"), "mnist3d task's models"),
    (dict(task="mnist3d", transform="tps"), "transform must be 'affine'"),
    (dict(task="mnist3d", distortion="r"), "leave distortion"),
    (dict(task="mnist3d", transformers=2), "one 3D transformer"),
    (dict(task="mnist3d", volume_size=1), "volume_size must be an int >= 2"),
    (dict(volume_size=20), "volume_size belongs to the mnist3d task"),
])
def test_bad_mnist3d_settings_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_train_eval_viz_end_to_end(tmp_path, synthetic):
    """`npstn train --task mnist3d` (the ST-FCN), then eval and viz of the run."""
    rc = main(["train", "--task", "mnist3d", "--model", "st-fcn", "--volume-size", str(S), "--steps", "4",
               "--batch-size", "8", "--eval-every", "2", "--input-norm", "none", "--out", str(tmp_path / "st"),
               "--quiet"])
    assert rc == 0
    cfg = TrainConfig.from_stored(json.loads((tmp_path / "st" / "config.json").read_text()))
    assert (cfg.task, cfg.volume_size, cfg.describe()) == ("mnist3d", S, f"ST-FCN (affine3d) on 3D MNIST ({S}^3)")
    m = json.loads((tmp_path / "st" / "metrics.json").read_text())
    assert m["steps"] == 4 and 0 <= m["test_error_percent"] <= 100
    model, config = T.load_run(tmp_path / "st")
    assert config == cfg and model.transformer is not None and model.transformer.transform.name == "affine3d"
    assert main(["eval", str(tmp_path / "st")]) == 0
    assert main(["viz", str(tmp_path / "st"), "--n", "3"]) == 0
    assert (tmp_path / "st" / "viz" / "transformations.png").stat().st_size > 1000
