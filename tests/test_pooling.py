"""MaxPool2d and AvgPool2d: shapes, gradients, torch parity, errors."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from npstn.nn import AvgPool2d, MaxPool2d
from npstn.testing import gradcheck
from npstn.testing import strategies as sn

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def torch_formula(size, k, s, p, ceil_mode):
    """torch's documented output size, written out independently of npstn."""
    frac = (size + 2 * p - k) / s
    out = (math.ceil(frac) if ceil_mode else math.floor(frac)) + 1
    if ceil_mode and (out - 1) * s >= size + p:  # last window must start inside input or left pad
        out -= 1
    return out


def torch_pool(kind, x, cfg, g, **extra):
    """torch's output and input gradient for upstream gradient g."""
    xt = torch.tensor(x, requires_grad=True)
    fn = F.max_pool2d if kind == "max" else F.avg_pool2d
    yt = fn(xt, **cfg.kwargs(), **extra)
    yt.backward(torch.tensor(g))
    return yt.detach().numpy(), xt.grad.numpy()


avg_extras = st.fixed_dictionaries({
    "count_include_pad": st.booleans(),
    "divisor_override": st.one_of(st.none(), st.integers(1, 5)),
})


# -- output shape ------------------------------------------------------------

@given(sn.pool_configs(max_hw=9, max_kernel=5, max_stride=5))
def test_output_shape_is_torch_formula(cfg):
    x = np.zeros(cfg.shape)
    k, p = _pair(cfg.kernel_size), _pair(cfg.padding)
    s = k if cfg.stride is None else _pair(cfg.stride)
    want = (*cfg.shape[:2], *(torch_formula(cfg.shape[2 + i], k[i], s[i], p[i], cfg.ceil_mode)
                              for i in range(2)))
    for cls in (MaxPool2d, AvgPool2d):
        assert cls(**cfg.kwargs())(x).shape == want
    assert tuple(F.max_pool2d(torch.tensor(x), **cfg.kwargs()).shape) == want


def test_ceil_mode_drops_window_starting_in_right_padding():
    # H=5, k=2, s=2, p=1: ceil gives 4 windows, but the 4th would start at row 5 = H + p - 1 + 1
    x = np.zeros((1, 1, 5, 5))
    assert MaxPool2d(2, 2, 1, ceil_mode=True)(x).shape == (1, 1, 3, 3)
    assert MaxPool2d(2, 2, 0, ceil_mode=True)(x).shape == (1, 1, 3, 3)
    assert MaxPool2d(2, 2, 0, ceil_mode=False)(x).shape == (1, 1, 2, 2)


# -- gradients ---------------------------------------------------------------

@given(sn.pool_configs(), st.data())
def test_max_pool_gradcheck(cfg, data):
    x = data.draw(sn.untied_arrays(cfg.shape))  # distinct values: FD never crosses a tie
    gradcheck(MaxPool2d(**cfg.kwargs()), x)


@given(sn.pool_configs(), avg_extras, st.data())
def test_avg_pool_gradcheck(cfg, extra, data):
    x = data.draw(sn.float_arrays(cfg.shape))
    gradcheck(AvgPool2d(**cfg.kwargs(), **extra), x)


# -- torch parity ------------------------------------------------------------

@given(sn.pool_configs(), st.data())
def test_max_pool_matches_torch_float64(cfg, data):
    x = data.draw(sn.float_arrays(cfg.shape))
    m = MaxPool2d(**cfg.kwargs())
    y = m(x)
    g = np.random.default_rng(0).standard_normal(y.shape)
    y_t, gx_t = torch_pool("max", x, cfg, g)
    np.testing.assert_allclose(y, y_t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.backward(g), gx_t, rtol=1e-10, atol=1e-12)


@given(sn.pool_configs(), st.integers(0, 2**31 - 1))
def test_max_pool_ties_route_like_torch(cfg, seed):
    """Many exact ties (values from {0, 1, 2}): the gradient goes to the first
    maximum in scan order of each window, exactly as torch's sub-gradient."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=cfg.shape).astype(np.float64)
    m = MaxPool2d(**cfg.kwargs())
    y = m(x)
    g = rng.standard_normal(y.shape)
    y_t, gx_t = torch_pool("max", x, cfg, g)
    np.testing.assert_array_equal(y, y_t)
    np.testing.assert_allclose(m.backward(g), gx_t, rtol=1e-12, atol=1e-12)


@given(sn.pool_configs(), avg_extras, st.data())
def test_avg_pool_matches_torch_float64(cfg, extra, data):
    x = data.draw(sn.float_arrays(cfg.shape))
    m = AvgPool2d(**cfg.kwargs(), **extra)
    y = m(x)
    g = np.random.default_rng(1).standard_normal(y.shape)
    y_t, gx_t = torch_pool("avg", x, cfg, g, **extra)
    np.testing.assert_allclose(y, y_t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.backward(g), gx_t, rtol=1e-10, atol=1e-12)


@given(sn.pool_configs(), st.sampled_from(["max", "avg"]), st.data())
def test_float32_is_preserved_and_matches_torch(cfg, kind, data):
    x = data.draw(sn.float_arrays(cfg.shape, dtype=np.float32))
    m = (MaxPool2d if kind == "max" else AvgPool2d)(**cfg.kwargs())
    y = m(x)
    g = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
    gx = m.backward(g)
    assert y.dtype == np.float32 and gx.dtype == np.float32
    y_t, gx_t = torch_pool(kind, x, cfg, g)
    np.testing.assert_allclose(y, y_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, gx_t, rtol=1e-5, atol=1e-6)


def test_unbatched_chw_input_matches_torch():
    x = np.random.default_rng(3).standard_normal((2, 5, 4))
    for cls, tcls in ((MaxPool2d, torch.nn.MaxPool2d), (AvgPool2d, torch.nn.AvgPool2d)):
        m = cls(3, 2, 1, ceil_mode=True)
        y = m(x)
        xt = torch.tensor(x, requires_grad=True)
        yt = tcls(3, 2, 1, ceil_mode=True)(xt)
        g = np.ones(y.shape)
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(m.backward(g), xt.grad.numpy(), rtol=1e-12)


def test_max_pool_propagates_nan_like_torch():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y = MaxPool2d(2)(x)
    y_t = F.max_pool2d(torch.tensor(x), 2).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_t))
    np.testing.assert_array_equal(y[~np.isnan(y)], y_t[~np.isnan(y_t)])


def test_avg_pool_divisor_examples():
    # 3x3 input, k=2, s=2, p=1: every window has 1, 2 or 4 real pixels out of 4
    x = np.ones((1, 1, 3, 3))
    np.testing.assert_allclose(AvgPool2d(2, 2, 1)(x)[0, 0], [[0.25, 0.5], [0.5, 1.0]])
    np.testing.assert_allclose(AvgPool2d(2, 2, 1, count_include_pad=False)(x)[0, 0], np.ones((2, 2)))
    # ceil_mode: the last window hangs past the input (no padding): divided by its clipped size
    x = np.ones((1, 1, 3, 3))
    np.testing.assert_allclose(AvgPool2d(2, 2, 0, ceil_mode=True)(x)[0, 0], np.ones((2, 2)))


# -- module behaviour and errors ------------------------------------------------

def test_backward_accumulates_nothing_and_is_repeatable():
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 6))
    m = MaxPool2d(2)
    y = m(x)
    g = np.random.default_rng(5).standard_normal(y.shape)
    np.testing.assert_array_equal(m.backward(g), m.backward(g))
    assert m.parameters() == []


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_bad_inputs_raise_with_helpful_messages(cls):
    m = cls(2)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        m.backward(np.zeros((1, 1, 1, 1)))
    with pytest.raises(ValueError, match=r"input must have 4 dimensions \(N, C, H, W\).*got shape \(4, 4\)"):
        m(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 1, 4, 4\)"):
        m(np.zeros((1, 1, 1, 4, 4)))
    with pytest.raises(TypeError, match="input must be float32 or float64, got dtype int64"):
        m(np.zeros((1, 1, 4, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"kernel_size=5 is larger than the padded input.*\(1, 2, 2, 8\).*padding=1.*4x10"):
        cls(5, padding=1)(np.zeros((1, 2, 2, 8)))
    with pytest.raises(ValueError, match=r"padding should be at most half of kernel_size.*padding=2.*kernel_size=3"):
        cls(3, padding=2)
    with pytest.raises(ValueError, match="kernel_size must be positive"):
        cls(0)
    with pytest.raises(ValueError, match="stride must be positive"):
        cls(2, stride=(1, 0))
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair of ints"):
        cls(2.5)
    y = m(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"grad_out must have the output's shape \(1, 1, 2, 2\), got \(1, 1, 2, 3\)"):
        m.backward(np.zeros((1, 1, 2, 3)))
    assert y.shape == (1, 1, 2, 2)


def test_torch_rejects_what_we_reject():
    x = torch.zeros(1, 2, 2, 8)
    with pytest.raises(RuntimeError):
        F.max_pool2d(x, 5, padding=1)
    with pytest.raises(RuntimeError):
        F.max_pool2d(x, 3, padding=2)


def test_repr():
    assert repr(MaxPool2d(2)) == "MaxPool2d(kernel_size=2, stride=2, padding=0, ceil_mode=False)"
    assert "count_include_pad=False" in repr(AvgPool2d(3, 1, 1, count_include_pad=False))


# -- the parallel and serial drivers -------------------------------------------------

@given(sn.pool_configs(), st.sampled_from(["max", "avg"]), st.data())
def test_parallel_and_serial_kernels_agree_exactly(cfg, kind, data):
    from npstn.kernels.cpu import pool as kernels

    m = (MaxPool2d if kind == "max" else AvgPool2d)(**cfg.kwargs())
    x = data.draw(sn.float_arrays(cfg.shape))
    y = m(x)
    g = np.random.default_rng(6).standard_normal(y.shape)
    planes, gp = x.reshape(-1, *x.shape[2:]), g.reshape(-1, *y.shape[2:])
    (kh, kw), (sh, sw), (ph, pw) = m._k, m._s, m._p
    H, W = x.shape[2:]
    res = []
    for parallel in (False, True):
        if kind == "max":
            out, arg = kernels.max_pool2d_forward(planes, kh, kw, sh, sw, ph, pw, *y.shape[2:],
                                                  parallel=parallel)
            gin = kernels.max_pool2d_backward(gp, arg, H, W, parallel=parallel)
        else:
            out = kernels.avg_pool2d_forward(planes, kh, kw, sh, sw, ph, pw, *y.shape[2:],
                                             True, 0, parallel=parallel)
            gin = kernels.avg_pool2d_backward(gp, kh, kw, sh, sw, ph, pw, H, W, True, 0,
                                              parallel=parallel)
        res.append((out, gin))
    np.testing.assert_array_equal(res[0][0], res[1][0])
    np.testing.assert_array_equal(res[0][1], res[1][1])


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_mnist_sized_batch_matches_torch(cls):
    """A (64, 8, 14, 14) float32 batch: large enough for the parallel drivers."""
    from npstn.kernels.cpu.pool import PARALLEL_MIN_SIZE

    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 8, 14, 14)).astype(np.float32)
    assert x.size >= PARALLEL_MIN_SIZE
    m = cls(3, 2, 1, ceil_mode=True)
    y = m(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = m.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(F, "max_pool2d" if cls is MaxPool2d else "avg_pool2d")(xt, 3, 2, 1, ceil_mode=True)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_sequential_fuses_relu_max_pool_with_identical_results():
    from npstn.nn import Conv2d, MaxPool2d, ReLU, Sequential

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 9, 9))
    x[0, 0, 0, 0] = np.nan  # NaN propagates the same way
    runs = []
    for fuse in (True, False):
        net = Sequential(Conv2d(2, 3, 2, rng=0), ReLU(), MaxPool2d(2, ceil_mode=True)).double()
        net.fuse = fuse
        y = net(x)
        assert net[2]._relu == fuse
        g = rng.standard_normal(y.shape) if not runs else runs[0][2]
        gx = net.backward(g)
        runs.append((y, gx, g, net[0].weight.grad))
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a, b)
