"""Distorted MNIST: the five distortions' geometry, determinism, datasets and the test-set cache.

Everything but the last test runs on synthetic digits; the integration test
at the end reads real MNIST when NPSTN_DATA_DIR is set.
"""
import os
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npstn.data import distorted as DD
from npstn.data import distortions as D
from npstn.data import (
    DISTORTIONS,
    DistortedMNIST,
    canvas_size,
    distort,
    homography_from_points,
)
from npstn.data.distortions import PARAM_NAMES, render, rts_room

SIZES = {"r": 28, "rts": 42, "p": 28, "e": 28, "tc": 60}


def digits(n, seed=0):
    """Synthetic 'digits': random strokes of ink in the central 20x20 box, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), np.float32)
    x[:, 4:24, 4:24] = rng.random((n, 20, 20)) * (rng.random((n, 20, 20)) < 0.3)
    return x


def square(n):
    """A full-ink 20x20 square, the MNIST normalisation box."""
    x = np.zeros((n, 28, 28), np.float32)
    x[:, 4:24, 4:24] = 1.0
    return x


def border_max(x):
    """The largest value on the outermost ring of pixels of each image of x (N, 1, S, S)."""
    x = x[:, 0]
    return np.max(np.concatenate([x[:, 0, :], x[:, -1, :], x[:, :, 0], x[:, :, -1]], axis=1), axis=1)


# --------------------------------------------------------------------------- API


def test_names_and_canvas_sizes():
    assert DISTORTIONS == ("r", "rts", "p", "e", "tc")
    assert {d: canvas_size(d) for d in DISTORTIONS} == SIZES
    assert canvas_size("RTS") == 42
    with pytest.raises(ValueError, match="'r', 'rts', 'p', 'e', 'tc'"):
        canvas_size("rotate")
    with pytest.raises(ValueError, match="unknown distortion"):
        distort(digits(2), "x", np.random.default_rng(0))


@pytest.mark.parametrize("name", DISTORTIONS)
def test_shapes_dtypes_range(name):
    s = SIZES[name]
    x = distort(digits(7), name, np.random.default_rng(0))
    assert x.shape == (7, 1, s, s) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.2
    # float64 and (N, 1, 28, 28) inputs are accepted; no images give no outputs
    x64 = distort(digits(7).astype(np.float64)[:, None], name, np.random.default_rng(0))
    np.testing.assert_allclose(x64, x, atol=1e-6)
    assert distort(digits(0), name, np.random.default_rng(0)).shape == (0, 1, s, s)


def test_bad_inputs_say_what_to_do():
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="/ 255"):
        distort((digits(2) * 255).astype(np.uint8), "r", rng)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        distort(digits(2) * 3, "r", rng)
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        distort(np.zeros((2, 32, 32), np.float32), "r", rng)
    with pytest.raises(TypeError, match="default_rng"):
        distort(digits(2), "r", rng=np.random.RandomState(0))
    with pytest.raises(ValueError, match="lack"):
        render(digits(2), "rts", {"angle": np.zeros(2)})
    with pytest.raises(ValueError, match="one row per image"):
        render(digits(2), "r", {"angle": np.zeros(3)})


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", DISTORTIONS)
def test_same_seed_same_images_different_seed_different(name):
    im = digits(9)
    a = distort(im, name, np.random.default_rng(42))
    b = distort(im, name, np.random.default_rng(42))
    c = distort(im, name, np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # an int seed is a shortcut for default_rng(seed); the chunk size changes nothing
    np.testing.assert_array_equal(distort(im, name, 42, chunk_size=4), a)


@pytest.mark.parametrize("name", DISTORTIONS)
def test_render_redoes_distort_from_its_params(name):
    im = digits(6)
    x, params = distort(im, name, np.random.default_rng(1), return_params=True)
    assert set(PARAM_NAMES[name]) <= set(params)
    np.testing.assert_array_equal(render(im, name, params), x)


@pytest.mark.parametrize("name", ["r", "rts", "p", "e"])
def test_numpy_and_cpu_backends_agree(name):
    im = digits(5)
    a = distort(im, name, np.random.default_rng(3), backend="numpy")
    b = distort(im, name, np.random.default_rng(3), backend="cpu")
    np.testing.assert_allclose(a, b, atol=1e-5)


# --------------------------------------------------------------------------- parameter ranges


def test_r_angles_cover_minus_90_to_90():
    _, p = distort(np.zeros((2000, 28, 28), np.float32), "r", np.random.default_rng(0), return_params=True)
    a = p["angle"]
    assert a.min() >= -90.0 and a.max() <= 90.0
    assert a.min() < -89.0 and a.max() > 89.0
    assert abs(a.mean()) < 3.0  # uniform: mean 0, sd of the mean 52/sqrt(2000) = 1.2


def test_rts_ranges_and_offsets():
    _, p = distort(np.zeros((2000, 28, 28), np.float32), "rts", np.random.default_rng(0), return_params=True)
    a, s, t = p["angle"], p["scale"], p["offset"]
    assert a.min() >= -45.0 and a.max() <= 45.0 and a.min() < -44.0 and a.max() > 44.0
    assert s.min() >= 0.7 and s.max() <= 1.2 and s.min() < 0.71 and s.max() > 1.19
    room = rts_room(a, s, 42)
    assert (room > 0).all()
    assert (np.abs(t) <= room[:, None] + 1e-12).all()
    # uniform in [-room, room]: the offsets reach near the bound, both ways, on both axes
    u = t / room[:, None]
    assert (u.min(0) < -0.99).all() and (u.max(0) > 0.99).all()
    # the paper's extremes: a small upright digit can move 13 px, a big tilted one still moves
    assert rts_room(0.0, 0.7) == pytest.approx(20.5 - 10.5 * 0.7)
    assert rts_room(45.0, 1.2) > 2.5


@pytest.mark.parametrize("name,key,std", [("p", "corner_offset", 5.0), ("e", "control_offset", 1.5)])
def test_p_e_scale_range_and_offset_spread(name, key, std):
    _, p = distort(np.zeros((1500, 28, 28), np.float32), name, np.random.default_rng(0), return_params=True)
    s = p["scale"]
    assert s.min() >= 0.75 and s.max() <= 1.0 and s.min() < 0.76 and s.max() > 0.99
    off = p[key]
    assert off.shape == (1500, 4 if name == "p" else 16, 2)
    assert off.std() == pytest.approx(std, rel=0.05)  # P's redraws of folds trim the tails a hair
    assert abs(off.mean()) < 0.05 * std


def test_p_never_folds():
    _, p = distort(np.zeros((3000, 28, 28), np.float32), "p", np.random.default_rng(0), return_params=True)
    quads = D._moved_corners(p["scale"], p["corner_offset"])
    assert D._convex(quads, 0.0).all()


def test_tc_params_in_range_and_never_its_own_image():
    n = 300
    _, p = distort(digits(n), "tc", np.random.default_rng(0), return_params=True)
    pos, idx, crop, where = p["position"], p["clutter_index"], p["clutter_crop"], p["clutter_position"]
    assert pos.min() == 0 and pos.max() == 32  # 60 - 28, both ends reached in 600 draws
    assert crop.min() == 0 and crop.max() == 22 and where.min() == 0 and where.max() == 54
    assert idx.shape == (n, 6) and idx.min() >= 0 and idx.max() < n
    assert (idx != np.arange(n)[:, None]).all()
    # with two images, each crops only the other one
    _, p2 = distort(digits(2), "tc", np.random.default_rng(0), return_params=True)
    np.testing.assert_array_equal(p2["clutter_index"], [[1] * 6, [0] * 6])


# --------------------------------------------------------------------------- geometry


def test_r_plus_90_is_np_rot90_counterclockwise():
    im = np.random.default_rng(0).random((3, 28, 28)).astype(np.float32)
    plus = render(im, "r", {"angle": np.full(3, 90.0)})[:, 0]
    minus = render(im, "r", {"angle": np.full(3, -90.0)})[:, 0]
    np.testing.assert_allclose(plus, np.rot90(im, 1, axes=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(minus, np.rot90(im, -1, axes=(1, 2)), atol=1e-5)
    # on screen (row 0 at the top): a stroke on the right turns to the top
    bar = np.zeros((1, 28, 28), np.float32)
    bar[0, 13:15, 18:26] = 1.0  # right of centre
    out = render(bar, "r", {"angle": np.array([90.0])})[0, 0]
    rows, cols = np.nonzero(out > 0.5)
    assert rows.max() < 14 and cols.min() >= 12 and cols.max() <= 15  # above centre


def test_rts_identity_and_placement():
    im = digits(2)
    # angle 0, scale 1, offset 0: the digit in the middle of the 42x42 canvas
    out = render(im, "rts", {"angle": np.zeros(2), "scale": np.ones(2), "offset": np.zeros((2, 2))})
    np.testing.assert_allclose(out[:, 0, 7:35, 7:35], im, atol=1e-5)
    assert out[:, 0].sum() == pytest.approx(im.sum(), rel=1e-5)
    # a whole-pixel offset (x=+5, y=-3) moves it right 5 and up 3
    out = render(im, "rts", {"angle": np.zeros(2), "scale": np.ones(2), "offset": np.tile([5.0, -3.0], (2, 1))})
    np.testing.assert_allclose(out[:, 0, 4:32, 12:40], im, atol=1e-5)
    # scale 1.2 makes the ink 1.44x as much
    out = render(square(1), "rts", {"angle": [0.0], "scale": [1.2], "offset": [[0.0, 0.0]]})
    assert out.sum() == pytest.approx(400 * 1.44, rel=0.01)


def test_rts_digit_stays_inside_the_canvas():
    n = 1500
    x, p = distort(square(n), "rts", np.random.default_rng(7), return_params=True)
    assert border_max(x).max() <= 1e-5  # the outermost ring of pixels never gets ink
    mass = x.sum(axis=(1, 2, 3)) / (400.0 * p["scale"] ** 2)
    assert mass.min() > 0.97 and mass.max() < 1.03  # nothing clipped (bilinear resampling error only)
    # the worst cases by construction: biggest, most tilted, pushed into each corner
    room = rts_room(45.0, 1.2)
    corners = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], float) * room
    x = render(square(4), "rts", {"angle": np.full(4, 45.0), "scale": np.full(4, 1.2), "offset": corners})
    assert border_max(x).max() <= 1e-5
    assert x.sum(axis=(1, 2, 3)) / (400 * 1.44) == pytest.approx(np.ones(4), abs=0.03)


def test_homography_from_points():
    src = np.array([[[-1, -1], [1, -1], [1, 1], [-1, 1]]], float)
    np.testing.assert_allclose(homography_from_points(src, src)[0], [1, 0, 0, 0, 1, 0, 0, 0], atol=1e-12)
    rng = np.random.default_rng(0)
    a = src + rng.normal(0, 0.2, (5, 4, 2))
    b = src + rng.normal(0, 0.2, (5, 4, 2))
    t = homography_from_points(a, b)
    h = np.concatenate([t, np.ones((5, 1))], 1).reshape(5, 3, 3)
    mapped = np.einsum("nij,nkj->nki", h, np.concatenate([a, np.ones((5, 4, 1))], -1))
    np.testing.assert_allclose(mapped[..., :2] / mapped[..., 2:], b, atol=1e-10)
    with pytest.raises(ValueError, match="degenerate"):
        homography_from_points(np.zeros((1, 4, 2)), src)


def test_p_and_e_without_offsets_at_scale_1_are_the_identity():
    im = digits(3)
    p = render(im, "p", {"scale": np.ones(3), "corner_offset": np.zeros((3, 4, 2))})
    e = render(im, "e", {"scale": np.ones(3), "control_offset": np.zeros((3, 16, 2))})
    np.testing.assert_allclose(p[:, 0], im, atol=1e-5)
    np.testing.assert_allclose(e[:, 0], im, atol=1e-5)


def test_p_and_e_without_offsets_are_a_plain_scaling():
    im = digits(3)
    s = np.array([0.75, 0.8, 0.95])
    p = render(im, "p", {"scale": s, "corner_offset": np.zeros((3, 4, 2))})
    e = render(im, "e", {"scale": s, "control_offset": np.zeros((3, 16, 2))})
    rts = render(im, "rts", {"angle": np.zeros(3), "scale": s, "offset": np.zeros((3, 2))})[:, :, 7:35, 7:35]
    np.testing.assert_allclose(p, rts, atol=1e-5)
    np.testing.assert_allclose(e, rts, atol=1e-5)
    assert p.sum() == pytest.approx((im.sum(axis=(1, 2)) * s**2).sum(), rel=0.02)


def test_p_moves_the_corners_where_it_says():
    # A corner pixel of the frame, moved by whole pixels at scale 1, lands where its corner went.
    im = np.zeros((1, 28, 28), np.float32)
    im[0, 0, 0] = 1.0  # the top-left pixel, whose outer corner is the frame corner (-1, -1)
    off = np.zeros((1, 4, 2))
    off[0, 0] = [3.0, 2.0]  # top-left corner moved 3 px right, 2 px down
    out = render(im, "p", {"scale": np.ones(1), "corner_offset": off})[0, 0]
    r, c = np.unravel_index(out.argmax(), out.shape)
    assert (r, c) == (2, 3)


def test_e_control_point_offsets_move_the_digit():
    # All 16 control points moved by the same whole-pixel offset: a translation (TPS reproduces affine maps).
    im = digits(2)
    off = np.zeros((2, 16, 2))
    off[..., 0] = -2.0  # T(c) = c - 2 px: output x reads the source 2 px left, so the digit moves right 2 px
    out = render(im, "e", {"scale": np.ones(2), "control_offset": off})[:, 0]
    np.testing.assert_allclose(out[:, :, 2:], im[:, :, :-2], atol=1e-5)


def test_tc_digit_plus_clutter_clipped():
    n = 40
    im = np.full((n, 28, 28), 0.6, np.float32)
    pool = np.full((5, 28, 28), 0.7, np.float32)
    x, p = distort(im, "tc", np.random.default_rng(0), pool=pool, return_params=True)
    assert x.shape == (n, 1, 60, 60) and x.max() == 1.0  # 0.6 + 0.7 clipped to 1
    # rebuild each canvas by hand from the parameters
    for i in range(n):
        want = np.zeros((60, 60))
        x0, y0 = p["position"][i]
        want[y0:y0 + 28, x0:x0 + 28] += im[i]
        for k in range(6):
            j, (cx, cy), (px, py) = p["clutter_index"][i, k], p["clutter_crop"][i, k], p["clutter_position"][i, k]
            want[py:py + 6, px:px + 6] += pool[j, cy:cy + 6, cx:cx + 6]
        np.testing.assert_allclose(x[i, 0], np.minimum(want, 1.0), atol=1e-6)
    # an empty pool adds nothing: the digit alone, copied exactly
    x, p = distort(digits(4), "tc", np.random.default_rng(1), pool=np.zeros((3, 28, 28), np.float32),
                   return_params=True)
    for i in range(4):
        x0, y0 = p["position"][i]
        np.testing.assert_array_equal(x[i, 0, y0:y0 + 28, x0:x0 + 28], digits(4)[i])
        assert x[i].sum() == pytest.approx(digits(4)[i].sum(), rel=1e-5)


@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(DISTORTIONS))
def test_any_seed_gives_valid_images(seed, name):
    x = distort(digits(3, seed % 7), name, np.random.default_rng(seed))
    assert x.shape == (3, 1, SIZES[name], SIZES[name])
    assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0


# --------------------------------------------------------------------------- datasets


def labelled(n=50, seed=0):
    return (digits(n, seed) * 255).astype(np.uint8), np.arange(n) % 10


def test_distorted_mnist_from_arrays():
    images, labels = labelled()
    ds = DistortedMNIST("rts", images=images, labels=labels)
    assert len(ds) == 50 and ds.image_size == 42 and ds.num_classes == 10
    assert ds.images.dtype == np.float32 and ds.images.max() <= 1.0 and ds.labels.dtype == np.int64
    x, y = ds.sample_batch(16, np.random.default_rng(0))
    assert x.shape == (16, 1, 42, 42) and x.dtype == np.float32 and y.shape == (16,) and y.dtype == np.int64
    with pytest.raises(ValueError, match="labels"):
        DistortedMNIST("r", images=images, labels=labels[:10])
    with pytest.raises(ValueError, match="both"):
        DistortedMNIST("r", images=images)


@pytest.mark.parametrize("name", DISTORTIONS)
def test_sample_batch_reproducible_from_rng_state(name):
    images, labels = labelled()
    ds = DistortedMNIST(name, images=images, labels=labels)
    rng = np.random.default_rng(5)
    rng.random(3)  # some earlier use of the generator
    state = rng.bit_generator.state
    first = [ds.sample_batch(8, rng) for _ in range(3)]
    again = np.random.default_rng(0)
    again.bit_generator.state = state  # as a resumed checkpoint would
    for (x1, y1), (x2, y2) in zip(first, [ds.sample_batch(8, again) for _ in range(3)]):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(first[0][0], first[1][0])  # fresh distortions every batch
    # the labels are those of the digits drawn: indices come first from the generator
    replay = np.random.default_rng(0)
    replay.bit_generator.state = state
    np.testing.assert_array_equal(first[0][1], labels[replay.integers(0, 50, size=8)])
    # without an rng, the dataset's own generator (seeded) is used
    a = DistortedMNIST(name, images=images, labels=labels, seed=3).sample_batch(8)
    b = DistortedMNIST(name, images=images, labels=labels, seed=3).sample_batch(8)
    np.testing.assert_array_equal(a[0], b[0])


# --------------------------------------------------------------------------- the test set


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty disk cache (via XDG_CACHE_HOME) and an empty in-process memo."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    DD.clear_test_set_memo()
    yield tmp_path / "npstn" / "distorted"
    DD.clear_test_set_memo()


def test_test_set_identical_across_calls_and_the_disk_cache(cache):
    images, labels = labelled(30)
    assert DD.distorted_cache_dir() == cache
    x, y = DD.test_set("rts", images=images, labels=labels)
    assert x.shape == (30, 1, 42, 42) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)
    assert not x.flags.writeable  # shared by every caller
    files = list(cache.glob("rts-*.npz"))
    assert len(files) == 1 and files[0].name.startswith(f"rts-{DD.TEST_SEED}-v{D.GENERATOR_VERSION}-")
    assert DD.test_set("rts", images=images, labels=labels)[0] is x  # memoised
    DD.clear_test_set_memo()
    x2, y2 = DD.test_set("rts", images=images, labels=labels)  # from disk
    assert x2 is not x
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
    # it is the fixed-seed distortion of the images, whoever asks
    np.testing.assert_array_equal(x, distort(images.astype(np.float32) / 255, "rts", DD.TEST_SEED))
    # another seed, or other images, give another set
    assert not np.array_equal(DD.test_set("rts", seed=1, images=images, labels=labels)[0], x)
    other = labelled(30, seed=1)
    assert not np.array_equal(DD.test_set("rts", images=other[0], labels=other[1])[0], x)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other-seed"])
def test_corrupt_test_set_cache_is_regenerated(cache, damage):
    images, labels = labelled(20)
    x, _ = DD.test_set("p", images=images, labels=labels)
    (path,) = cache.glob("p-*.npz")
    if damage == "garbage":
        path.write_bytes(b"not an npz file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # a well-formed file with the wrong contents
        with np.load(path) as f:
            arrays = dict(f)
        arrays["seed"] = np.array(123)
        np.savez(path, **arrays)
    DD.clear_test_set_memo()
    with pytest.warns(UserWarning, match="regenerating"):
        x2, _ = DD.test_set("p", images=images, labels=labels)
    np.testing.assert_array_equal(x2, x)
    DD.clear_test_set_memo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten: now read back cleanly
        np.testing.assert_array_equal(DD.test_set("p", images=images, labels=labels)[0], x)


def test_test_set_without_a_writable_cache(tmp_path):
    DD.clear_test_set_memo()
    images, labels = labelled(10)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not write"):
        x, _ = DD.test_set("e", images=images, labels=labels, cache_dir=blocker / "sub")
    assert x.shape == (10, 1, 28, 28)
    DD.clear_test_set_memo()
    DD.test_set("e", images=images, labels=labels, cache=False, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()
    DD.clear_test_set_memo()


def test_test_set_is_not_collected_as_a_test():
    assert DD.test_set.__test__ is False


# --------------------------------------------------------------------------- real MNIST


@pytest.mark.skipif(not os.environ.get("NPSTN_DATA_DIR"), reason="needs NPSTN_DATA_DIR (real MNIST)")
def test_real_mnist_batches_and_test_set(cache):
    ds = DistortedMNIST("rts")
    assert len(ds) == 60000 and ds.images.dtype == np.float32
    rng = np.random.default_rng(0)
    for name in DISTORTIONS:
        d = DistortedMNIST(name, images=ds.images, labels=ds.labels)
        x, y = d.sample_batch(32, rng)
        s = SIZES[name]
        assert x.shape == (32, 1, s, s) and x.dtype == np.float32 and y.shape == (32,)
        assert x.min() >= 0.0 and x.max() <= 1.0 and set(np.unique(y)) <= set(range(10))
        ink = x.sum(axis=(1, 2, 3))
        assert (ink > 5).all()  # every image still holds a digit (a thin "1" scaled by 0.7 keeps ~15)
    x, y = DD.test_set("r")
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,) and y[:3].tolist() == [7, 2, 1]
    assert (cache / f"r-{DD.TEST_SEED}-v{D.GENERATOR_VERSION}.npz").is_file()
