"""MNIST addition (the paper's Table 4): data, models, the specialisation measure, the picture.

Synthetic digits throughout (fast, no MNIST needed); one test at the end reads
real MNIST when NPSTN_DATA_DIR is set.
"""
import json
import os
import warnings

import numpy as np
import pytest

import npstn.data.addition as DA
import npstn.data.distorted as DD
from npstn import nn
from npstn.addition import (
    PAPER_TABLE4,
    centring_shares,
    channel_energy_shares,
    ink_centroids,
    window_centres,
    specialisation_index,
    specialisation_report,
)
from npstn.data import ADDITION_TEST_SEED, TEST_SEED, AdditionMNIST, addition_test_set, distort
from npstn.data.distortions import GENERATOR_VERSION
from test_train import synthetic_digits  # noqa: E402  (the tests' shared synthetic digits)
from npstn.models import (
    ADDITION_BUDGET,
    ADDITION_MODELS,
    AdditionSpec,
    addition_budget,
    addition_model_spec,
    addition_parameter_table,
    build_addition_model,
    build_model,
    format_addition_parameter_table,
)


def _copy_rng(rng):
    other = np.random.default_rng()
    other.bit_generator.state = rng.bit_generator.state
    return other


# --------------------------------------------------------------------------- training pairs


def test_batch_is_two_independent_rts_digits_and_their_sum():
    images, labels = synthetic_digits(50, 0)
    data = AdditionMNIST(images=images, labels=labels)
    assert (data.num_classes, data.image_size, data.channels) == (19, 42, 2)
    assert data.digit_distortion == "rts" and not hasattr(data, "distortion")
    rng = np.random.default_rng(7)
    replay = _copy_rng(rng)
    x, y = data.sample_batch(12, rng)
    assert x.shape == (12, 2, 42, 42) and x.dtype == np.float32
    assert y.shape == (12,) and y.dtype == np.int64
    assert x.min() >= 0.0 and x.max() <= 1.0
    # the documented draw order: first digits, second digits, then each one's RTS distortion
    ia = replay.integers(0, 50, size=12)
    ib = replay.integers(0, 50, size=12)
    pixels = images.astype(np.float32) / 255
    xa = distort(pixels[ia], "rts", replay)
    xb = distort(pixels[ib], "rts", replay)
    np.testing.assert_array_equal(x[:, 0], xa[:, 0])  # channel 0: only the first digits' draws
    np.testing.assert_array_equal(x[:, 1], xb[:, 0])  # channel 1: only the second digits' draws
    np.testing.assert_array_equal(y, labels[ia] + labels[ib])
    assert not np.array_equal(ia, ib)  # two separate draws, not one digit twice
    # the generator is left where the replay is: nothing else was drawn
    assert rng.bit_generator.state == replay.bit_generator.state


def test_same_generator_state_same_batch():
    images, labels = synthetic_digits(40, 1)
    data = AdditionMNIST(images=images, labels=labels)
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    a = data.sample_batch(6, rng)
    b = data.sample_batch(6, rng)
    rng.bit_generator.state = state
    a2 = data.sample_batch(6, rng)
    np.testing.assert_array_equal(a[0], a2[0])
    np.testing.assert_array_equal(a[1], a2[1])
    assert not np.array_equal(a[0], b[0])  # fresh pairs every batch
    # without an rng, the dataset's own (seeded) generator
    c = AdditionMNIST(images=images, labels=labels, seed=5).sample_batch(4)
    d = AdditionMNIST(images=images, labels=labels, seed=5).sample_batch(4)
    np.testing.assert_array_equal(c[0], d[0])


def test_sums_cover_the_19_classes():
    images, labels = synthetic_digits(30, 2)
    _, y = AdditionMNIST(images=images, labels=labels).sample_batch(400, np.random.default_rng(0))
    assert set(np.unique(y)) == set(range(19))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=2.5), ValueError, "batch_size"),
])
def test_bad_batch_size(kwargs, error, match):
    images, labels = synthetic_digits(10, 0)
    with pytest.raises(error, match=match):
        AdditionMNIST(images=images, labels=labels).sample_batch(**kwargs)


def test_bad_digits_are_explained():
    images, labels = synthetic_digits(10, 0)
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        AdditionMNIST(images=images, labels=labels + 5)
    with pytest.raises(ValueError, match="both images= and labels="):
        AdditionMNIST(images=images)


# --------------------------------------------------------------------------- the test set


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty disk cache (via XDG_CACHE_HOME) and an empty in-process memo."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    DD.clear_test_set_memo()
    yield tmp_path / "npstn" / "distorted"
    DD.clear_test_set_memo()


def test_test_set_is_fixed_cached_and_read_only(cache):
    assert ADDITION_TEST_SEED == TEST_SEED + 1
    images, labels = synthetic_digits(30, 3)
    x, y, digits = addition_test_set(images=images, labels=labels, return_digits=True)
    assert x.shape == (30, 2, 42, 42) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, digits.sum(axis=1))
    # every test digit appears once in each channel
    np.testing.assert_array_equal(np.sort(digits[:, 0]), np.sort(labels))
    np.testing.assert_array_equal(np.sort(digits[:, 1]), np.sort(labels))
    assert not np.array_equal(digits[:, 0], digits[:, 1])
    for a in (x, y, digits):
        assert not a.flags.writeable
    with pytest.raises(ValueError):
        x[0, 0, 0, 0] = 1.0
    # the documented recipe, from the seed alone
    rng = np.random.default_rng(ADDITION_TEST_SEED)
    ia, ib = rng.permutation(30), rng.permutation(30)
    pixels = images.astype(np.float32) / 255
    np.testing.assert_array_equal(x[:, 0], distort(pixels[ia], "rts", rng)[:, 0])
    np.testing.assert_array_equal(x[:, 1], distort(pixels[ib], "rts", rng)[:, 0])
    # one file in the distorted test sets' cache, with both generator versions in its name
    files = list(cache.glob("addition-*.npz"))
    assert len(files) == 1
    assert files[0].name.startswith(f"addition-rts-{ADDITION_TEST_SEED}-v{GENERATOR_VERSION}-a{DA.ADDITION_VERSION}-")
    assert addition_test_set(images=images, labels=labels)[0] is x  # memoised
    DD.clear_test_set_memo()
    x2, y2 = addition_test_set(images=images, labels=labels)  # from disk
    assert x2 is not x and not x2.flags.writeable
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
    # another seed gives other pairs
    assert not np.array_equal(addition_test_set(seed=1, images=images, labels=labels)[0], x)


@pytest.mark.parametrize("damage", ["garbage", "other-seed", "wrong-sums"])
def test_bad_cache_is_regenerated(cache, damage):
    images, labels = synthetic_digits(12, 4)
    x, y = addition_test_set(images=images, labels=labels)
    (path,) = cache.glob("addition-*.npz")
    if damage == "garbage":
        path.write_bytes(b"not an npz file")
    else:
        with np.load(path) as f:
            arrays = dict(f)
        if damage == "other-seed":
            arrays["seed"] = np.array(123)
        else:
            arrays["y"] = (arrays["y"] + 1) % 19
        np.savez(path, **arrays)
    DD.clear_test_set_memo()
    with pytest.warns(UserWarning, match="regenerating"):
        x2, y2 = addition_test_set(images=images, labels=labels)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
    DD.clear_test_set_memo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten: now read back cleanly
        addition_test_set(images=images, labels=labels)


def test_test_set_default_source_and_no_cache(tmp_path, monkeypatch):
    """Without preloaded digits the MNIST test split is read and the name carries no fingerprint."""
    DD.clear_test_set_memo()
    images, labels = synthetic_digits(20, 5)
    asked = []

    def fake_split(split, data_dir):
        asked.append((split, data_dir))
        return images.astype(np.float32) / 255, labels

    monkeypatch.setattr(DA, "_load_split", fake_split)
    x, y = addition_test_set("somewhere", cache=False, cache_dir=tmp_path / "none")
    assert asked == [("test", "somewhere")] and x.shape == (20, 2, 42, 42)
    assert not (tmp_path / "none").exists()
    DD.clear_test_set_memo()
    addition_test_set(cache_dir=tmp_path / "c")
    assert [p.name for p in (tmp_path / "c").iterdir()] == [
        f"addition-rts-{ADDITION_TEST_SEED}-v{GENERATOR_VERSION}-a{DA.ADDITION_VERSION}.npz"]
    DD.clear_test_set_memo()
    with pytest.raises(ValueError, match="seed"):
        addition_test_set(seed=-1, images=images, labels=labels)
    assert DA.addition_test_set.__test__ is False


# --------------------------------------------------------------------------- models


def _anchor_by_hand():
    # CNN, 64 filters, 2 channels, 42x42: conv9 -> 34, pool -> 17, conv7 -> 11, pool -> 6
    return (64 * 2 * 81 + 64) + (64 * 64 * 49 + 64) + (64 * 6 * 6 * 19 + 19)


def test_parameter_table_matches_every_model_to_the_budget():
    rows = addition_parameter_table()
    assert [r["label"] for r in rows] == [
        "FCN", "CNN", "ST-FCN affine", "ST-FCN projective", "ST-FCN tps",
        "2xST-FCN affine", "2xST-FCN projective", "2xST-FCN tps"]
    for r in rows:
        assert r["target"] == ADDITION_BUDGET == 400_000
        assert abs(r["params"] / ADDITION_BUDGET - 1) < 0.02, r
        model = build_addition_model(r["model"], r["transform"] or "affine", transformers=max(1, r["transformers"]))
        assert model.num_parameters() == r["params"]  # the closed form and the modules agree
        assert model.spec.width == r["width"]
    # the FCN by hand: 3528 -> h -> h -> 19
    h = rows[0]["width"]
    assert rows[0]["params"] == 3528 * h + h + h * h + h + h * 19 + 19
    # the default leaves the 2xST-FCN a real classifier (the reason for the default: docs/training.md)
    assert min(r["width"] for r in rows if r["transformers"] == 2) >= 64
    text = format_addition_parameter_table()
    assert "400,000 (npstn's default)" not in text and "budget (npstn's default) = 400,000" in text
    assert "2xST-FCN tps" in text and text.count("\n| ") == 1 + 8  # header and rows
    # Table 1's anchor, the 64-filter CNN on two channels, as a budget: every model moves to it,
    # and the CNN is exactly it
    anchor = _anchor_by_hand()
    assert anchor == 254995
    for r in addition_parameter_table(budget=anchor):
        assert r["target"] == anchor and abs(r["params"] / anchor - 1) < 0.02
        if r["model"] == "cnn":
            assert r["params"] == anchor and r["width"] == 64
    # another input size has no default budget but its own anchor CNN
    small = addition_model_spec("fcn", input_size=28)
    assert small.target == (64 * 2 * 81 + 64) + (64 * 64 * 49 + 64) + (64 * 2 * 2 * 19 + 19)
    # the one rule behind the targets and the table's caption
    assert addition_budget(42) == (ADDITION_BUDGET, "default")
    assert addition_budget(42, anchor) == (anchor, "given")
    assert addition_budget(28) == (small.target, "cnn")
    assert addition_budget(8) == (None, "none")  # no CNN fits: width= must be given
    assert "= CNN with 64 filters = " in format_addition_parameter_table(input_size=28)
    assert "(npstn's default)" not in format_addition_parameter_table(budget=anchor)
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="budget must be a positive int"):
            addition_budget(42, bad)


def test_two_transformer_model_structure():
    model = build_addition_model("st-fcn", "tps", transformers=2, seed=0)
    spec = model.spec
    assert isinstance(spec, AdditionSpec)
    assert (spec.task, spec.transformers, spec.channels, spec.num_classes) == ("addition", 2, 2, 19)
    assert spec.to_dict()["task"] == "addition" and spec.to_dict()["transformers"] == 2
    st0, st1 = model.transformers
    assert st0 is not st1 and st0.localization is not st1.localization
    for st in (st0, st1):
        assert st.localization[1].in_features == 2 * 42 * 42  # sees both channels
        assert [m.out_features for m in st.localization if isinstance(m, nn.Linear)] == [32, 32, 32, 32]
    assert not np.array_equal(st0.localization[1].weight.data, st1.localization[1].weight.data)
    assert model.classifier[1].in_features == 4 * 21 * 21  # two 2-channel outputs, pooled
    x = AdditionMNIST(images=synthetic_digits(10, 0)[0], labels=synthetic_digits(10, 0)[1]).sample_batch(
        3, np.random.default_rng(0))[0]
    logits = model(x)
    assert logits.shape == (3, 19) and logits.dtype == np.float32
    # untrained STs are the identity: each passes both channels through
    np.testing.assert_allclose(st0(x), x, atol=1e-5)
    one = build_addition_model("st-fcn", "affine", seed=0)
    assert len(one.transformers) == 1 and one.spec.transformers == 1
    assert one.classifier[1].in_features == 2 * 21 * 21
    fcn = build_addition_model("fcn", transformers=1)
    assert fcn.transformers == () and fcn.spec.transformers == 0 and fcn(x).shape == (3, 19)
    cnn = build_addition_model("cnn")
    assert cnn.classifier[0].in_channels == 2 and cnn(x).shape == (3, 19)


def test_build_model_task_addition_is_build_addition_model():
    a = build_model("st-fcn", "projective", "rts", task="addition", transformers=2, seed=4, loc_lr_mult=0.1)
    b = build_addition_model("st-fcn", "projective", transformers=2, seed=4, loc_lr_mult=0.1)
    assert a.spec == b.spec
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert all(p.lr_mult == 0.1 for st in a.transformers for p in st.localization.parameters())
    assert build_model("cnn", distortion=None, task="addition").spec.model == "cnn"
    # Table 1 is untouched
    t1 = build_model("st-fcn", "affine", "rts")
    assert t1.spec.num_classes == 10 and t1.spec.channels == 1 and not hasattr(t1.spec, "task")
    assert len(t1.transformers) == 1
    assert t1.extra_repr() == f"model='st-fcn', transform='affine', input=42x42, width={t1.spec.width}, " \
                              f"params={t1.spec.params}"
    assert a.extra_repr().startswith("model='st-fcn', task='addition', transformers=2, "
                                     "transform='projective', input=2x42x42, ")


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="st-cnn"), "unknown addition model"),
    (dict(name="fcn", transformers=2), "needs an ST model"),
    (dict(name="st-fcn", transformers=3), "transformers must be 1 or 2"),
    (dict(name="st-fcn", transform="spline"), "unknown transform"),
    (dict(name="cnn", input_size=16), "too small"),
    (dict(name="fcn", input_size=16), "give width= or budget="),
    (dict(name="fcn", input_size=15, width=4), "even"),
    (dict(name="fcn", budget=0), "budget"),
    (dict(name="fcn", distortion="r"), "RTS"),
    (dict(name="fcn", channels=1), "channels=2"),
    (dict(name="fcn", num_classes=10), "num_classes=19"),
    (dict(name="fcn", task="segmentation"), "unknown task"),
])
def test_bad_addition_arguments_are_explained(kwargs, match):
    kwargs.setdefault("task", "addition")
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)


def test_table1_rejects_addition_arguments():
    with pytest.raises(ValueError, match="task='addition'"):
        build_model("st-fcn", transformers=2)
    with pytest.raises(ValueError, match="task='addition'"):
        build_model("fcn", budget=1000)


def _generic(st, rng, bias):
    """Give an ST an input-dependent, non-identity transform (sample points off the pixel kinks)."""
    reg = st.localization[-1]
    reg.weight.data[...] = 0.02 * rng.standard_normal(reg.weight.data.shape)
    reg.bias.data[...] = bias


@pytest.mark.parametrize("transform", ["affine", "projective", "tps"])
def test_gradients_through_both_transformers(transform):
    """The whole 2xST-FCN (both STs, Parallel, pool, classifier) against finite differences, float64."""
    from npstn.testing import gradcheck
    from npstn.stn.transforms import get_transform

    model = build_addition_model("st-fcn", transform, transformers=2, input_size=8, width=8, seed=0).double()
    rng = np.random.default_rng(1)
    ident = get_transform(transform).identity(dtype=np.float64)
    for k, st in enumerate(model.transformers):
        _generic(st, rng, ident * (0.9 - 0.07 * k) + 0.03 * (k + 1) * rng.standard_normal(ident.shape))
    x = rng.random((2, 2, 8, 8))
    gradcheck(model, x, max_elements=12, atol=1e-5, rtol=1e-3)
    # and both localisation networks really receive gradient
    model.zero_grad()
    model.backward(rng.standard_normal(model.forward(x).shape))
    for st in model.transformers:
        assert np.abs(st.localization[1].weight.grad).sum() > 0


# --------------------------------------------------------------------------- specialisation


def _two_blob_input(n=3, size=16, seed=0):
    """Channel 0 ink only in the left half, channel 1 only in the right half, away from the middle."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 2, size, size), dtype=np.float32)
    x[:, 0, 3:12, 1:size // 2 - 3] = rng.random((n, 9, size // 2 - 4))
    x[:, 1, 4:13, size // 2 + 3:size - 1] = rng.random((n, 9, size // 2 - 4))
    return x


def _fixed(st, theta):
    reg = st.localization[-1]
    reg.weight.data[...] = 0.0
    reg.bias.data[...] = np.asarray(theta, dtype=reg.bias.data.dtype).ravel()


def test_shares_of_transformers_that_each_look_at_one_half():
    model = build_addition_model("st-fcn", "affine", transformers=2, input_size=16, width=4, seed=0)
    left, right = [[0.5, 0, -0.5], [0, 1, 0]], [[0.5, 0, 0.5], [0, 1, 0]]
    st0, st1 = model.transformers
    x = _two_blob_input()
    _fixed(st0, left)
    _fixed(st1, right)
    m = channel_energy_shares(model, x)
    np.testing.assert_allclose(m, [[1, 0], [0, 1]], atol=1e-12)
    assert specialisation_index(m) == pytest.approx(1.0)
    _fixed(st0, right)
    _fixed(st1, left)
    m = channel_energy_shares(model, x)
    np.testing.assert_allclose(m, [[0, 1], [1, 0]], atol=1e-12)
    assert specialisation_index(m) == pytest.approx(-1.0)
    per = channel_energy_shares(model, x, per_sample=True)
    assert per.shape == (3, 2, 2)
    np.testing.assert_allclose(per, np.broadcast_to([[0, 1], [1, 0]], (3, 2, 2)), atol=1e-12)


def test_shares_of_standardised_inputs_count_only_ink():
    """On standardised inputs a black pixel is -mean/std: given that background, the shares are the
    raw-pixel ones (padding and background are not energy); without it the grey dilutes them."""
    model = build_addition_model("st-fcn", "affine", transformers=2, input_size=16, width=4, seed=0)
    st0, st1 = model.transformers
    _fixed(st0, [[0.5, 0, -0.5], [0, 1, 0]])
    _fixed(st1, [[0.5, 0, 0.5], [0, 1, 0]])
    x = _two_blob_input()
    mean, std = 0.13, 0.31
    xs = ((x - mean) / std).astype(np.float32)
    m = channel_energy_shares(model, xs, background=-mean / std)
    np.testing.assert_allclose(m, [[1, 0], [0, 1]], atol=1e-6)
    grey = channel_energy_shares(model, xs)
    assert grey[0, 1] > 0.05 and grey[1, 0] > 0.05
    report = specialisation_report(model, xs, background=-mean / std)
    assert report["specialisation"] == pytest.approx(1.0, abs=1e-6)
    # zoomed out past the canvas and shifted: the padding is black too, so the shares are the raw pixels'
    _fixed(st0, [[2.0, 0.3, 0.4], [-0.2, 1.7, -0.3]])
    np.testing.assert_allclose(channel_energy_shares(model, xs, background=-mean / std),
                               channel_energy_shares(model, x), rtol=1e-5)
    with pytest.raises(ValueError, match="background"):
        channel_energy_shares(model, xs, background=float("nan"))


def test_ink_centroids_in_grid_coordinates():
    x = np.zeros((2, 2, 4, 6), dtype=np.float32)
    x[0, 0, 1, 2] = 1.0                       # one pixel: column 2 of 6, row 1 of 4
    x[0, 1, 3, 0] = x[0, 1, 3, 5] = 0.5       # two pixels: the middle of the bottom row
    x[1, 0] = 0.3                             # uniform: the centre; channel 1 of image 1 is empty
    c = ink_centroids(x)
    np.testing.assert_allclose(c[0, 0], [5 / 6 - 1, 3 / 4 - 1])
    np.testing.assert_allclose(c[0, 1], [0.0, 7 / 4 - 1], atol=1e-12)
    np.testing.assert_allclose(c[1, 0], [0.0, 0.0], atol=1e-12)
    assert np.isnan(c[1, 1]).all()
    # a grey background: only what lies above it is ink
    np.testing.assert_allclose(ink_centroids(x * 2 - 0.4, background=-0.4), c, equal_nan=True)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ink_centroids(x[0])


def test_centring_shares_follow_the_windows_not_the_ink():
    """Each transformer frames one blob; centring sees it (s = +-1) whatever each output shows."""
    model = build_addition_model("st-fcn", "affine", transformers=2, input_size=16, width=4, seed=0)
    st0, st1 = model.transformers
    x = _two_blob_input()
    _fixed(st0, [[0.5, 0, -0.5], [0, 1, 0]])   # the left half: channel 0's blob
    _fixed(st1, [[0.5, 0, 0.5], [0, 1, 0]])
    c = window_centres(model, x)
    np.testing.assert_allclose(c, np.broadcast_to([[-0.5, 0.0], [0.5, 0.0]], (3, 2, 2)), atol=1e-6)
    a = centring_shares(model, x)
    np.testing.assert_allclose(a, [[1, 0], [0, 1]])
    assert specialisation_index(a) == 1.0
    # windows centred on the blobs but zoomed out to show both: the energy rows are mixed, centring is not
    _fixed(st0, [[1.2, 0, -0.5], [0, 1.2, 0]])
    _fixed(st1, [[1.2, 0, 0.5], [0, 1.2, 0]])
    energy = channel_energy_shares(model, x)
    assert abs(specialisation_index(energy)) < 0.5
    np.testing.assert_allclose(centring_shares(model, x), [[1, 0], [0, 1]])
    # swapped, per sample, and both at the identity (s = 0 exactly)
    _fixed(st0, [[1.2, 0, 0.5], [0, 1.2, 0]])
    _fixed(st1, [[1.2, 0, -0.5], [0, 1.2, 0]])
    np.testing.assert_allclose(centring_shares(model, x, per_sample=True),
                               np.broadcast_to([[0, 1], [1, 0]], (3, 2, 2)))
    ident = build_addition_model("st-fcn", "tps", transformers=2, input_size=16, width=4, seed=0)
    a = centring_shares(ident, x)
    assert specialisation_index(a) == 0.0 and np.allclose(a.sum(axis=1), 1.0)
    # an image with an empty channel is left out; all of them: NaN
    x2 = np.concatenate([x, x[:1]])
    x2[-1, 1] = 0
    per = centring_shares(model, x2, per_sample=True)
    assert np.isnan(per[-1]).all() and np.isfinite(per[:-1]).all()
    np.testing.assert_allclose(centring_shares(model, x2), [[0, 1], [1, 0]])
    assert np.isnan(centring_shares(model, np.zeros_like(x))).all()
    report = specialisation_report(model, x)
    json.dumps(report)
    assert report["specialisation"] == -1.0 and report["centring_shares"] == [[0.0, 1.0], [1.0, 0.0]]
    assert report["energy_specialisation"] == pytest.approx(specialisation_index(channel_energy_shares(model, x)))


def test_window_centres_of_every_transform_at_the_identity_are_the_canvas_centre():
    for t in ("affine", "projective", "tps", "attention"):
        model = build_addition_model("st-fcn", t, transformers=2, input_size=16, width=4, seed=0)
        np.testing.assert_allclose(window_centres(model, _two_blob_input()), 0.0, atol=1e-6)


def test_identity_transformers_see_the_inputs_own_mix():
    """Untrained STs (the identity) both report the input's channel energy shares: no specialisation."""
    model = build_addition_model("st-fcn", "tps", transformers=2, input_size=16, width=4, seed=0)
    x = _two_blob_input(n=4, seed=1)
    x[:, 1] *= 0.5
    e = np.square(x.astype(np.float64)).sum(axis=(0, 2, 3))
    m = channel_energy_shares(model, x)
    np.testing.assert_allclose(m, np.stack([e / e.sum()] * 2), rtol=1e-5)
    assert specialisation_index(m) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(channel_energy_shares(model, x, per_sample=True).sum(axis=-1), 1.0, rtol=1e-6)
    # one transformer given directly, and a model with a single one
    np.testing.assert_allclose(channel_energy_shares(model.transformers[0], x), m[:1], rtol=1e-6)
    one = build_addition_model("st-fcn", "affine", input_size=16, width=4)
    assert channel_energy_shares(one, x).shape == (1, 2)
    report = specialisation_report(model, x)
    json.dumps(report)
    assert report["specialisation"] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(report["channel_shares"], m)
    assert specialisation_report(one, x)["specialisation"] is None


def test_shares_edge_cases():
    model = build_addition_model("st-fcn", "affine", transformers=2, input_size=16, width=4, seed=0)
    zero = np.zeros((2, 2, 16, 16), dtype=np.float32)
    assert np.isnan(channel_energy_shares(model, zero)).all()
    assert specialisation_report(model, zero) == {
        "centring_shares": [[None, None], [None, None]], "specialisation": None,
        "channel_shares": [[None, None], [None, None]], "energy_specialisation": None}
    with pytest.raises(ValueError, match="spatial transformers"):
        channel_energy_shares(build_addition_model("fcn"), zero)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        channel_energy_shares(model, zero[0])
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, 2\)"):
        specialisation_index(np.ones((1, 2)))
    np.testing.assert_allclose(specialisation_index(np.array([[[1, 0], [0, 1]], [[0.5, 0.5], [0.5, 0.5]]])),
                               [1.0, 0.0])


def test_paper_table4():
    labels = {build_addition_model(m, t or "affine", transformers=max(1, n)).spec.label
              for (m, t, n) in PAPER_TABLE4}
    assert labels == {r["label"] for r in addition_parameter_table()}
    assert PAPER_TABLE4[("st-fcn", "tps", 2)] == 5.8


# --------------------------------------------------------------------------- picture and training


def test_plot_addition_writes_a_png(tmp_path):
    from npstn.viz import plot_addition

    images, labels = synthetic_digits(20, 6)
    x, y, d = addition_test_set(images=images, labels=labels, cache=False, return_digits=True)
    model = build_addition_model("st-fcn", "affine", transformers=2, seed=0)
    _generic(model.transformers[0], np.random.default_rng(0), [0.6, 0.1, -0.3, -0.1, 0.6, 0.2])
    training = model.training
    path = plot_addition(model, x[:3], tmp_path / "viz" / "addition.png", labels=y[:3], digits=d[:3],
                         title="2xST-FCN")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and model.training == training
    fcn = build_addition_model("fcn")
    assert plot_addition(fcn, x[:2], tmp_path / "fcn.png").stat().st_size > 0
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        plot_addition(model, x[:2, :1], tmp_path / "bad.png")
    DD.clear_test_set_memo()


def test_plotting_keeps_the_backend_of_a_session_that_already_uses_pyplot():
    """In a notebook (%matplotlib inline) npstn.viz must not switch pyplot to Agg: every later
    figure of the notebook would stop showing. A fresh process (the CLI) still gets Agg."""
    import subprocess
    import sys

    code = ("import sys, matplotlib\n"
            "if sys.argv[1] == 'user':\n"
            "    matplotlib.use('svg'); import matplotlib.pyplot\n"
            "from npstn.viz import _pyplot\n"
            "_pyplot(); print(matplotlib.get_backend().lower())\n")
    for who, backend in (("user", "svg"), ("cli", "agg")):
        out = subprocess.run([sys.executable, "-c", code, who], capture_output=True, text=True, check=True,
                             env={k: v for k, v in os.environ.items() if k != "MPLBACKEND"})
        assert out.stdout.split() == [backend], (who, out.stdout, out.stderr)


@pytest.mark.parametrize("name,transformers", [("st-fcn", 2), ("fcn", 1)])
def test_a_few_sgd_steps_lower_the_loss(name, transformers):
    images, labels = synthetic_digits(60, 7)
    data = AdditionMNIST(images=images, labels=labels)
    x, y = data.sample_batch(32, np.random.default_rng(0))
    model = build_addition_model(name, "affine", transformers=transformers, seed=0, loc_lr_mult=0.1)
    opt = nn.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(10):
        opt.zero_grad()
        losses.append(float(loss_fn(model(x), y)))
        model.backward(loss_fn.backward())
        opt.step()
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.96 * losses[0], losses  # ln 19 = 2.94 at the start


# --------------------------------------------------------------------------- real MNIST


@pytest.mark.skipif(not os.environ.get("NPSTN_DATA_DIR"), reason="needs NPSTN_DATA_DIR (real MNIST)")
def test_real_mnist_pairs():
    data = AdditionMNIST()
    assert len(data) == 60000
    x, y = data.sample_batch(32, np.random.default_rng(0))
    assert x.shape == (32, 2, 42, 42) and set(np.unique(y)) <= set(range(19))
    ink = x.sum(axis=(2, 3))
    assert (ink > 5).all()  # a digit in each channel of every pair
