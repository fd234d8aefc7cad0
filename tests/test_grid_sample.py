"""The sampler's NumPy specification: gradients, conventions, properties, torch, errors.

Cross-backend agreement (cpu, cuda) and the hostile-input policy on every
backend are in test_grid_sample_backends.py.
"""
import importlib
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npstn.functional import grid_sample, grid_sample_backward
from npstn.testing import gradcheck
from npstn.testing import strategies as nst

gs_module = importlib.import_module("npstn.functional.grid_sample")  # the name is shadowed by the function

MODES = ("bilinear", "nearest")
PADDINGS = ("zeros", "border", "reflection")
ALL_CONFIGS = list(itertools.product(MODES, PADDINGS, (False, True)))
CONFIG_IDS = [f"{m}-{p}-{'ac' if a else 'noac'}" for m, p, a in ALL_CONFIGS]


def close(actual, expected, dtype, what=""):
    """Agreement to float tolerance: ~1e-5 relative (float32) or ~1e-10 (float64) of the data's scale."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    tol = 1e-5 if np.dtype(dtype) == np.float32 else 1e-10
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=tol, atol=tol * scale,
                               err_msg=what)


def torch_grid_sample(x, grid, grad_output, mode, padding_mode, align_corners):
    """(output, grad_input, grad_grid) from torch's autograd."""
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(grid, requires_grad=True)
    out = torch.nn.functional.grid_sample(tx, tg, mode=mode, padding_mode=padding_mode,
                                          align_corners=align_corners)
    out.backward(torch.tensor(grad_output))
    return out.detach().numpy(), tx.grad.numpy(), tg.grad.numpy()


def random_case(seed, dtype, shape=(2, 3, 5, 6), out_hw=(4, 7), align_corners=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.uniform(-1.6, 1.6, size=(shape[0], *out_hw, 2))
    g = nst.move_off_kinks(g, shape[2:], align_corners).astype(dtype)
    go = rng.standard_normal((*shape[:2], *out_hw)).astype(dtype)
    return x, g, go


# ----------------------------------------------------------------------------
# Equality with torch
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode,padding_mode,align_corners", ALL_CONFIGS, ids=CONFIG_IDS)
def test_matches_torch_every_configuration(mode, padding_mode, align_corners, dtype):
    x, g, go = random_case(7, dtype, align_corners=align_corners)
    kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    t_out, t_gi, t_gg = torch_grid_sample(x, g, go, **kw)
    out = grid_sample(x, g, backend="numpy", **kw)
    gi, gg = grid_sample_backward(go, x, g, backend="numpy", **kw)
    assert out.dtype == gi.dtype == gg.dtype == np.dtype(dtype)
    close(out, t_out, dtype, "output")
    close(gi, t_gi, dtype, "grad_input")
    close(gg, t_gg, dtype, "grad_grid")


@given(nst.grid_sample_cases(dtype=nst.dtypes()))
def test_matches_torch_on_drawn_cases(case):
    dtype = case.input.dtype
    t_out, t_gi, t_gg = torch_grid_sample(case.input, case.grid, case.grad_output, **case.kwargs)
    close(grid_sample(case.input, case.grid, backend="numpy", **case.kwargs), t_out, dtype, "output")
    gi, gg = grid_sample_backward(case.grad_output, case.input, case.grid, backend="numpy", **case.kwargs)
    close(gi, t_gi, dtype, "grad_input")
    close(gg, t_gg, dtype, "grad_grid")


@st.composite
def dyadic_kink_cases(draw):
    """Cases on the kinks whose sizes make pixel <-> normalised exact in float64.

    W/2 (align_corners=False) or (W - 1)/2 (True) must be a power of two, so that
    (x + 1) * scale - 1/2 is exact however it is evaluated (torch's CPU build may
    fuse the multiply-add; exact values make that irrelevant).
    """
    align = draw(st.booleans())
    sizes = [1, 2, 3, 5] if align else [1, 2, 4, 8]
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.sampled_from(sizes)), draw(st.sampled_from(sizes))
    configs = nst.sampler_configs(max_batch=1).map(
        lambda cfg: nst.SamplerConfig((n, c, h, w), cfg.output_size, cfg.mode, cfg.padding_mode, align))
    return draw(nst.grid_sample_cases(configs=configs, grids="on_kinks"))


@given(dyadic_kink_cases())
def test_matches_torch_exactly_on_kinks(case):
    """Points exactly on integer / half-integer pixel positions: torch's sub-gradients, to rounding."""
    t_out, t_gi, t_gg = torch_grid_sample(case.input, case.grid, case.grad_output, **case.kwargs)
    close(grid_sample(case.input, case.grid, backend="numpy", **case.kwargs), t_out, np.float64)
    gi, gg = grid_sample_backward(case.grad_output, case.input, case.grid, backend="numpy", **case.kwargs)
    close(gi, t_gi, np.float64, "grad_input")
    close(gg, t_gg, np.float64, "grad_grid")


# ----------------------------------------------------------------------------
# Finite differences (float64, kink-free grids)
# ----------------------------------------------------------------------------

def _gradcheck_sampler(case, backend):
    kw = case.kwargs

    def f(x, g):
        return grid_sample(x, g, backend=backend, **kw)

    def df(gout, x, g):
        return grid_sample_backward(gout, x, g, backend=backend, **kw)

    gradcheck(f, [case.input, case.grid], backward=df, eps=1e-6, atol=1e-6, rtol=1e-4)


@given(nst.grid_sample_cases())
def test_gradcheck_numpy(case):
    _gradcheck_sampler(case, "numpy")


@settings(max_examples=15)
@given(nst.grid_sample_cases())
def test_gradcheck_cpu(case):
    _gradcheck_sampler(case, "cpu")


@given(nst.grid_sample_cases(configs=nst.sampler_configs(modes=("nearest",))))
def test_nearest_grid_gradient_is_zero(case):
    _, gg = grid_sample_backward(case.grad_output, case.input, case.grid, backend="numpy", **case.kwargs)
    assert np.all(gg == 0)


# ----------------------------------------------------------------------------
# The sub-gradient convention at the kinks, pinned
# ----------------------------------------------------------------------------

def _integer_grid(h, w, align_corners):
    """A (1, H + 2, W + 2, 2) grid on every integer pixel position from -1 to W (and -1 to H)."""
    px, py = np.meshgrid(np.arange(-1, w + 1), np.arange(-1, h + 1))
    g = np.stack([nst.pixel_to_normalized(px, w, align_corners),
                  nst.pixel_to_normalized(py, h, align_corners)], axis=-1)[None]
    # the normalised values are dyadic: unnormalising gives the integers back exactly
    assert np.array_equal(nst.normalized_to_pixel(g[0, ..., 0], w, align_corners), px)
    assert np.array_equal(nst.normalized_to_pixel(g[0, ..., 1], h, align_corners), py)
    return g, px, py


@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("align_corners", [False, True])
def test_subgradient_at_integer_positions_is_right_derivative(padding_mode, align_corners):
    """At x^s exactly an integer: x0 = floor(x^s) = x^s, so dL/dx^s = U[x0 + 1] - U[x0] (one-sided, from
    the right), as torch; at the border/reflection clip edges 0 and W - 1 the derivative is 0."""
    # sizes that make pixel <-> normalised exact: W = 8 (W/2 = 4) or W - 1 = 4 with align_corners
    h = w = 5 if align_corners else 8
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, h, w))
    g, px, py = _integer_grid(h, w, align_corners)
    go = rng.standard_normal((1, 2, *px.shape))
    kw = dict(mode="bilinear", padding_mode=padding_mode, align_corners=align_corners)
    gi, gg = grid_sample_backward(go, x, g, backend="numpy", **kw)

    _, t_gi, t_gg = torch_grid_sample(x, g, go, **kw)
    close(gg, t_gg, np.float64, "grad_grid vs torch at integer positions")
    close(gi, t_gi, np.float64, "grad_input vs torch at integer positions")

    # one-sided difference from the right: exact for a piecewise-linear function
    step = 2.0 ** -20
    base = grid_sample(x, g, backend="numpy", **kw)
    for axis, p, size in ((0, px, w), (1, py, h)):
        g_step = g.copy()
        g_step[..., axis] += step
        right = ((grid_sample(x, g_step, backend="numpy", **kw) - base) * go).sum(axis=1) / step
        ours = gg[..., axis]
        if padding_mode == "zeros":
            np.testing.assert_allclose(ours, right, rtol=1e-6, atol=1e-6)
            continue
        # border/reflection: the right derivative strictly inside the image, 0 on the clip edges
        inside = ((p > 0) & (p < size - 1))[None]
        on_edge = ((p == 0) | (p == size - 1))[None]
        np.testing.assert_allclose(ours[inside], right[inside], rtol=1e-6, atol=1e-6)
        assert np.all(ours[on_edge] == 0)
        if padding_mode == "border":
            assert np.all(ours[~inside] == 0)  # clipped points do not move


def test_subgradient_example_by_hand():
    """One row U = [1, 4, 9], x^s = 1 exactly (align_corners=True): dV/dx^s = U[2] - U[1] = 5."""
    x = np.array([[[[1.0, 4.0, 9.0]]]])
    g = np.array([[[[0.0, 0.0]]]])  # x = 0 -> x^s = 1 with align_corners=True, W = 3
    out = grid_sample(x, g, align_corners=True, backend="numpy")
    assert out[0, 0, 0, 0] == 4.0
    _, gg = grid_sample_backward(np.ones((1, 1, 1, 1)), x, g, align_corners=True, backend="numpy")
    # d x^s / d x = (W - 1) / 2 = 1
    assert gg[0, 0, 0, 0] == 5.0
    assert gg[0, 0, 0, 1] == 0.0  # H = 1: y^s = 0 always; the south neighbour is outside (zeros)


def test_nearest_rounds_half_to_even():
    """Ties go to the even pixel (C's nearbyint), like torch: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0."""
    w = 8
    x = np.arange(w, dtype=np.float64).reshape(1, 1, 1, w) + 10  # value = 10 + column
    px = np.array([-0.5, 0.5, 1.5, 2.5, 3.5, 6.5, 7.5])
    g = np.zeros((1, 1, len(px), 2))
    g[..., 0] = nst.pixel_to_normalized(px, w, False)
    out = grid_sample(x, g, mode="nearest", backend="numpy")[0, 0, 0]
    expected_cols = np.array([0, 0, 2, 2, 4, 6, 8])  # 7.5 -> 8 is outside: zeros padding reads 0
    expected = np.where(expected_cols < w, expected_cols + 10.0, 0.0)
    np.testing.assert_array_equal(out, expected)
    t_out, _, _ = torch_grid_sample(x, g, np.ones((1, 1, 1, len(px))), "nearest", "zeros", False)
    np.testing.assert_array_equal(out, t_out[0, 0, 0])


def test_matches_the_paper_equations_zeros_padding():
    """Eq. 3 + 5 (sum over *all* pixels of U * max(0, 1-|x-m|) max(0, 1-|y-n|)) and eq. 6/7, literally."""
    rng = np.random.default_rng(11)
    n_, c_, h, w = 1, 2, 4, 5
    x = rng.standard_normal((n_, c_, h, w))
    g = nst.move_off_kinks(rng.uniform(-1.3, 1.3, (n_, 3, 3, 2)), (h, w), False)
    go = rng.standard_normal((n_, c_, 3, 3))
    xs = nst.normalized_to_pixel(g[..., 0], w, False)[0]
    ys = nst.normalized_to_pixel(g[..., 1], h, False)[0]
    m = np.arange(w)[None, None, None, :]
    n = np.arange(h)[None, None, :, None]
    kx = np.maximum(0, 1 - np.abs(xs[..., None, None] - m))  # (3, 3, 1, W)
    ky = np.maximum(0, 1 - np.abs(ys[..., None, None] - n))  # (3, 3, H, 1)
    v = np.einsum("chw,ijhw->cij", x[0], kx * ky)  # eq. 3
    np.testing.assert_allclose(grid_sample(x, g, backend="numpy")[0], v, rtol=1e-12, atol=1e-12)
    # eq. 7: sign(m - x) inside the support
    dkx = np.where(np.abs(m - xs[..., None, None]) >= 1, 0.0, np.where(m >= xs[..., None, None], 1.0, -1.0))
    dky = np.where(np.abs(n - ys[..., None, None]) >= 1, 0.0, np.where(n >= ys[..., None, None], 1.0, -1.0))
    dv_dxs = np.einsum("chw,ijhw->cij", x[0], dkx * ky)
    dv_dys = np.einsum("chw,ijhw->cij", x[0], kx * dky)
    gi, gg = grid_sample_backward(go, x, g, backend="numpy")
    np.testing.assert_allclose(gg[0, ..., 0], (go[0] * dv_dxs).sum(0) * (w / 2), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gg[0, ..., 1], (go[0] * dv_dys).sum(0) * (h / 2), rtol=1e-12, atol=1e-12)
    # eq. 6: dV/dU is the sampling kernel itself
    np.testing.assert_allclose(gi[0], np.einsum("cij,ijhw->chw", go[0], kx * ky), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------
# Algebraic properties (hold at the kinks too)
# ----------------------------------------------------------------------------

@given(nst.grid_sample_cases(grids="on_kinks"))
def test_adjoint_identity_even_at_kinks(case):
    """<grid_sample(x, g), y> == <x, grad_input(y, g)>: the backward is the transpose of the forward."""
    x, g, y = case.input, case.grid, case.grad_output
    lhs = np.sum(grid_sample(x, g, backend="numpy", **case.kwargs) * y)
    gi, _ = grid_sample_backward(y, x, g, backend="numpy", **case.kwargs)
    rhs = np.sum(x * gi)
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, np.abs(x).sum() * np.abs(y).max())


@given(nst.grid_sample_cases(grids="on_kinks"), st.floats(-3, 3), st.floats(-3, 3))
def test_linear_in_the_image(case, a, b):
    x, g = case.input, case.grid
    z = np.flip(x, axis=-1).copy()
    lhs = grid_sample(a * x + b * z, g, backend="numpy", **case.kwargs)
    rhs = a * grid_sample(x, g, backend="numpy", **case.kwargs) + b * grid_sample(z, g, backend="numpy", **case.kwargs)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-11)


def _identity_grid(n, h, w, align_corners, shift_x=0, shift_y=0):
    px, py = np.meshgrid(np.arange(w) + shift_x, np.arange(h) + shift_y)
    g = np.stack([nst.pixel_to_normalized(px, w, align_corners),
                  nst.pixel_to_normalized(py, h, align_corners)], axis=-1)
    return np.broadcast_to(g, (n, h, w, 2)).copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode,padding_mode,align_corners", ALL_CONFIGS, ids=CONFIG_IDS)
def test_identity_grid_reproduces_the_input(mode, padding_mode, align_corners, dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 5, 7)).astype(dtype)
    g = _identity_grid(2, 5, 7, align_corners).astype(dtype)
    out = grid_sample(x, g, mode=mode, padding_mode=padding_mode, align_corners=align_corners, backend="numpy")
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out, x, rtol=tol, atol=tol)


@pytest.mark.parametrize("mode,padding_mode,align_corners", ALL_CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("shift", [(1, 0), (0, -2), (3, 1), (-1, -1)])
def test_integer_translation_shifts_exactly(mode, padding_mode, align_corners, shift):
    """Sampling at pixel (j + sx, i + sy) reads U[i + sy, j + sx] exactly (W = 8, H = 4: dyadic grids)."""
    h, w = (5, 9) if align_corners else (4, 8)
    sx, sy = shift
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 2, h, w))
    g = _identity_grid(1, h, w, align_corners, sx, sy)
    out = grid_sample(x, g, mode=mode, padding_mode=padding_mode, align_corners=align_corners, backend="numpy")
    rows = np.arange(h) + sy
    cols = np.arange(w) + sx
    inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
    expected = x[:, :, np.clip(rows, 0, h - 1)][:, :, :, np.clip(cols, 0, w - 1)]
    np.testing.assert_array_equal(out[..., inside], expected[..., inside])
    if padding_mode == "zeros":
        assert np.all(out[..., ~inside] == 0)
    elif padding_mode == "border":
        np.testing.assert_array_equal(out, expected)  # clipped indices are the edge pixels
    else:  # reflection: mirrored pixels, e.g. column -1 reads column 0 (align False) or 1 (align True)
        def mirror(i, size):
            if align_corners:
                period = 2 * (size - 1)
                i = np.abs(i) % period
                return np.where(i > size - 1, period - i, i)
            i = np.where(i < 0, -1 - i, i) % (2 * size)
            return np.where(i >= size, 2 * size - 1 - i, i)
        np.testing.assert_array_equal(out, x[:, :, mirror(rows, h)][:, :, :, mirror(cols, w)])


# ----------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------

@given(nst.grid_sample_cases())
def test_kink_free_grids_keep_their_margin(case):
    h, w = case.input.shape[2:]
    for axis, size in ((0, w), (1, h)):
        if case.config.align_corners and size == 1:
            continue
        p = nst.normalized_to_pixel(case.grid[..., axis], size, case.config.align_corners)
        dist = np.abs(2 * p - np.round(2 * p)) / 2  # distance to the nearest multiple of 1/2
        assert dist.min() >= 0.9e-3


@given(nst.hostile_grids((2, 3, 4, 2), dtype=nst.dtypes()))
def test_hostile_grids_hold_hostile_values(g):
    assert np.any(~np.isfinite(g) | (np.abs(g) >= 1e29))


def test_coord_limit_in_sync_with_kernels():
    from npstn.kernels.cpu import grid_sample as cpu_kernels

    assert gs_module.COORD_LIMIT == cpu_kernels.COORD_LIMIT == 2.0 ** 22


# ----------------------------------------------------------------------------
# Clear errors
# ----------------------------------------------------------------------------

X = np.zeros((2, 3, 4, 5))
G = np.zeros((2, 6, 7, 2))
GO = np.zeros((2, 3, 6, 7))


@pytest.mark.parametrize(
    "args,kwargs,exc,match",
    [
        ((X[0], G), {}, ValueError, r"input must have 4 dimensions \(N, C, H, W\), got shape \(3, 4, 5\)"),
        ((X, G[0]), {}, ValueError, r"grid must have 4 dimensions"),
        ((X, np.zeros((2, 6, 7, 3))), {}, ValueError, r"grid must have shape \(N, H_out, W_out, 2\).*\(2, 6, 7, 3\)"),
        ((X.astype(np.int64), G), {}, TypeError, r"input must be float32 or float64, got dtype int64"),
        ((X, G.astype(np.float16)), {}, TypeError, r"grid must be float32 or float64"),
        ((X.astype(np.float32), G), {}, TypeError, r"input has dtype float32 but grid has dtype float64"),
        ((X, np.zeros((3, 6, 7, 2))), {}, ValueError, r"same batch size.*\(2, 3, 4, 5\).*\(3, 6, 7, 2\)"),
        ((np.zeros((2, 0, 4, 5)), G), {}, ValueError, r"input .* nonzero sizes, got shape \(2, 0, 4, 5\)"),
        ((X, np.zeros((2, 0, 7, 2))), {}, ValueError, r"grid .* nonzero sizes"),
        ((X, G), {"mode": "bicubic"}, ValueError, r"mode must be one of 'bilinear', 'nearest', got 'bicubic'"),
        ((X, G), {"padding_mode": "wrap"}, ValueError, r"padding_mode must be one of .*'reflection', got 'wrap'"),
        ((X, G), {"align_corners": "yes"}, TypeError, r"align_corners must be a bool"),
        ((X, G), {"backend": "tpu"}, ValueError, r"unknown backend 'tpu'"),
        (([[1.0]], G), {}, TypeError, r"input must be an array, got list"),
    ],
)
def test_forward_errors(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        grid_sample(*args, **kwargs)


@pytest.mark.parametrize(
    "gout,exc,match",
    [
        (np.zeros((2, 3, 6, 6)), ValueError, r"grad_output must have shape \(N, C, H_out, W_out\) = \(2, 3, 6, 7\).*got shape \(2, 3, 6, 6\)"),
        (np.zeros((2, 3, 6, 7), np.float32), TypeError, r"grad_output has dtype float32 but input has dtype float64"),
        (np.zeros((3, 6, 7)), ValueError, r"grad_output must have 4 dimensions"),
    ],
)
def test_backward_errors(gout, exc, match):
    with pytest.raises(exc, match=match):
        grid_sample_backward(gout, X, G)


def test_backward_validates_like_forward():
    with pytest.raises(ValueError, match="mode must be one of"):
        grid_sample_backward(GO, X, G, mode="area")
