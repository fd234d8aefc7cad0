"""Spatial transformers in 3D: the 5-D affine_grid and grid_sample (trilinear / nearest).

Gradient checks, backend agreement, dtypes and devices run for both ops in
tests/test_ops.py (rows "grid_sample3d" and "affine_grid3d" of
tests/op_table.py). Here: torch parity in every configuration, the
relation to the 2D sampler, metamorphic properties, the hostile-grid policy
on every backend, the cpu kernels' drivers (serial, parallel, split, tiles)
and the errors for bad arguments.
"""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npstn.functional as F
from npstn.testing import gradcheck
from npstn.testing import strategies as nst

MODES = ("bilinear", "nearest")
PADDINGS = ("zeros", "border", "reflection")
ALL_CONFIGS = list(itertools.product(MODES, PADDINGS, (False, True)))
CONFIG_IDS = [f"{m}-{p}-{'ac' if a else 'noac'}" for m, p, a in ALL_CONFIGS]
VOLUME_CONFIGS = nst.sampler_configs(max_batch=2, max_channels=3, max_side=5, max_out_side=4, spatial_dims=3)


def close(actual, expected, dtype, what=""):
    """~1e-5 relative (float32) or ~1e-10 (float64) of the data's scale."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    tol = 1e-5 if np.dtype(dtype) == np.float32 else 1e-10
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=tol, atol=tol * scale,
                               err_msg=what)


def random_case(seed, dtype, shape=(2, 3, 4, 5, 6), out_dhw=(3, 4, 5), align_corners=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.uniform(-1.6, 1.6, size=(shape[0], *out_dhw, 3))
    g = nst.move_off_kinks(g, shape[2:], align_corners).astype(dtype)
    go = rng.standard_normal((*shape[:2], *out_dhw)).astype(dtype)
    return x, g, go


def torch_grid_sample(x, grid, grad_output, mode, padding_mode, align_corners):
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(grid, requires_grad=True)
    out = torch.nn.functional.grid_sample(tx, tg, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    out.backward(torch.tensor(grad_output))
    return out.detach().numpy(), tx.grad.numpy(), tg.grad.numpy()


# ----------------------------------------------------------------------------
# torch parity
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode,padding_mode,align_corners", ALL_CONFIGS, ids=CONFIG_IDS)
def test_matches_torch_every_configuration(mode, padding_mode, align_corners, dtype):
    x, g, go = random_case(0, dtype, align_corners=align_corners)
    kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    t_out, t_gi, t_gg = torch_grid_sample(x, g, go, **kw)
    for backend in ("numpy", "cpu"):
        out = F.grid_sample(x, g, backend=backend, **kw)
        gi, gg = F.grid_sample_backward(go, x, g, backend=backend, **kw)
        assert out.dtype == gi.dtype == gg.dtype == dtype
        close(out, t_out, dtype, f"{backend} output")
        close(gi, t_gi, dtype, f"{backend} grad_input")
        close(gg, t_gg, dtype, f"{backend} grad_grid")


@settings(max_examples=10)
@given(nst.grid_sample_cases(dtype=nst.dtypes(), configs=VOLUME_CONFIGS))
def test_matches_torch_on_drawn_volumes(case):
    """Drawn shapes (depth 1, 1x1x1, odd sizes), points outside the volume, both dtypes."""
    t_out, t_gi, t_gg = torch_grid_sample(case.input, case.grid, case.grad_output, **case.kwargs)
    out = F.grid_sample(case.input, case.grid, backend="cpu", **case.kwargs)
    gi, gg = F.grid_sample_backward(case.grad_output, case.input, case.grid, backend="cpu", **case.kwargs)
    dt = case.input.dtype
    close(out, t_out, dt, "output")
    close(gi, t_gi, dt, "grad_input")
    close(gg, t_gg, dt, "grad_grid")
    _check_grid_only(case, "cpu", gg)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_matches_torch(align_corners, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    theta = rng.uniform(-1.5, 1.5, (2, 3, 4)).astype(dtype)
    size = (2, 3, 4, 5, 6)
    tt = torch.tensor(theta, requires_grad=True)
    t_grid = torch.nn.functional.affine_grid(tt, list(size), align_corners=align_corners)
    gg = rng.standard_normal(t_grid.shape).astype(dtype)
    t_grid.backward(torch.tensor(gg))
    for backend in ("numpy", "cpu"):
        grid = F.affine_grid(theta, size, align_corners=align_corners, backend=backend)
        assert grid.shape == (2, 4, 5, 6, 3) and grid.dtype == dtype
        close(grid, t_grid.detach().numpy(), dtype, f"{backend} grid")
        gt = F.affine_grid_backward(gg, theta, size, align_corners=align_corners, backend=backend)
        assert gt.shape == (2, 3, 4) and gt.dtype == dtype
        close(gt, tt.grad.numpy(), dtype, f"{backend} grad_theta")
        # the older call form (theta left out) gives the same
        np.testing.assert_array_equal(F.affine_grid_backward(gg, size, align_corners=align_corners,
                                                             backend=backend), gt)


# ----------------------------------------------------------------------------
# The 3D sampler generalises the 2D one; metamorphic properties
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode,padding_mode,align_corners", ALL_CONFIGS, ids=CONFIG_IDS)
def test_depth_one_at_z_zero_is_the_2d_sampler(mode, padding_mode, align_corners):
    """A volume of depth 1 sampled at z = 0 (the slice's centre, either align_corners) is the 2D sampler."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5, 6))
    g2 = nst.move_off_kinks(rng.uniform(-1.6, 1.6, (2, 4, 7, 2)), (5, 6), align_corners)
    go = rng.standard_normal((2, 3, 4, 7))
    g3 = np.concatenate([g2, np.zeros((2, 4, 7, 1))], axis=-1)[:, None]  # (N, 1, H_out, W_out, 3)
    kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    for backend in ("numpy", "cpu"):
        out3 = F.grid_sample(x[:, :, None], g3, backend=backend, **kw)
        np.testing.assert_allclose(out3[:, :, 0], F.grid_sample(x, g2, backend="numpy", **kw), rtol=0, atol=1e-14)
        gi3, gg3 = F.grid_sample_backward(go[:, :, None], x[:, :, None], g3, backend=backend, **kw)
        gi2, gg2 = F.grid_sample_backward(go, x, g2, backend="numpy", **kw)
        np.testing.assert_allclose(gi3[:, :, 0], gi2, rtol=0, atol=1e-13)
        np.testing.assert_allclose(gg3[:, 0, ..., :2], gg2, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("mode,padding_mode,align_corners", ALL_CONFIGS, ids=CONFIG_IDS)
def test_identity_transform_reproduces_the_volume(mode, padding_mode, align_corners):
    x = np.random.default_rng(4).standard_normal((2, 2, 3, 4, 5))
    theta = np.tile(np.eye(3, 4), (2, 1, 1))
    for backend in ("numpy", "cpu"):
        grid = F.affine_grid(theta, x.shape, align_corners=align_corners, backend=backend)
        out = F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners,
                            backend=backend)
        np.testing.assert_allclose(out, x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shift", [(1, 0, 0), (0, -1, 2), (-2, 1, -1)])
def test_integer_translation_shifts_exactly(shift):
    """Translating by whole voxels (align_corners=True: 2/(size - 1) per voxel) shifts the volume."""
    x = np.random.default_rng(5).standard_normal((1, 2, 4, 5, 6))
    sx, sy, sz = shift
    theta = np.eye(3, 4)[None].copy()
    theta[0, :, 3] = [2 * sx / 5, 2 * sy / 4, 2 * sz / 3]
    grid = F.affine_grid(theta, x.shape, align_corners=True, backend="numpy")
    out = F.grid_sample(x, grid, padding_mode="zeros", align_corners=True, backend="cpu")
    expected = np.zeros_like(x)
    d, h, w = x.shape[2:]
    src = x[:, :, max(sz, 0):d + min(sz, 0), max(sy, 0):h + min(sy, 0), max(sx, 0):w + min(sx, 0)]
    expected[:, :, max(-sz, 0):d + min(-sz, 0), max(-sy, 0):h + min(-sy, 0), max(-sx, 0):w + min(-sx, 0)] = src
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


@settings(max_examples=10)
@given(nst.grid_sample_cases(configs=VOLUME_CONFIGS, grids="on_kinks"))
def test_adjoint_identity_even_at_kinks(case):
    """<grid_sample(x, g), y> = <x, grad_input(y, g)>, exactly linear even on voxel positions."""
    for backend in ("numpy", "cpu"):
        out = F.grid_sample(case.input, case.grid, backend=backend, **case.kwargs)
        gi, _ = F.grid_sample_backward(case.grad_output, case.input, case.grid, backend=backend, **case.kwargs)
        lhs = float(np.sum(out * case.grad_output))
        rhs = float(np.sum(case.input * gi))
        assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def test_trilinear_example_by_hand():
    """One point at fractional position (0.25, 0.5, 0.75) in a 2x2x2 volume: eq. 5 with three factors."""
    u = np.arange(8.0).reshape(1, 1, 2, 2, 2)  # U[z, y, x] = 4z + 2y + x
    # align_corners=True: x^s = (x + 1) / 2 for a side of 2
    g = np.array([0.25, 0.5, 0.75]) * 2 - 1
    out = F.grid_sample(u, g.reshape(1, 1, 1, 1, 3), align_corners=True, backend="numpy")
    assert out.shape == (1, 1, 1, 1, 1)
    assert out[0, 0, 0, 0, 0] == pytest.approx(4 * 0.75 + 2 * 0.5 + 0.25)  # linear data: exact
    _, gg = F.grid_sample_backward(np.ones((1, 1, 1, 1, 1)), u, g.reshape(1, 1, 1, 1, 3), align_corners=True,
                                   backend="numpy")
    # dV/dx^s = 1, dV/dy^s = 2, dV/dz^s = 4, times d x^s / d x = 1/2
    np.testing.assert_allclose(gg.ravel(), [0.5, 1.0, 2.0])


# ----------------------------------------------------------------------------
# Hostile grids on every backend
# ----------------------------------------------------------------------------

def _check_grid_only(case, backend, full_grad_grid):
    """needs_input_grad=False: grad_input None, grad_grid the full backward's, bit for bit."""
    gi, gg = F.grid_sample_backward(case.grad_output, case.input, case.grid, backend=backend,
                                    needs_input_grad=False, **case.kwargs)
    assert gi is None
    np.testing.assert_array_equal(gg, full_grad_grid)


def _hostile_check(case, backend):
    out = F.grid_sample(case.input, case.grid, backend=backend, **case.kwargs)
    gi, gg = F.grid_sample_backward(case.grad_output, case.input, case.grid, backend=backend, **case.kwargs)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(gi)) and np.all(np.isfinite(gg))
    _check_grid_only(case, backend, gg)
    bad = ~np.isfinite(case.grid).all(axis=-1)  # NaN/inf points: 0, zero gradient
    assert np.all(out.transpose(0, 2, 3, 4, 1)[bad] == 0)
    assert np.all(gg[bad] == 0)
    return out, gi, gg


@settings(max_examples=15)
@given(nst.grid_sample_cases(dtype=nst.dtypes(), configs=VOLUME_CONFIGS, grids="hostile"))
def test_hostile_grids_numpy_and_cpu(case):
    ref = _hostile_check(case, "numpy")
    got = _hostile_check(case, "cpu")
    for a, b in zip(got, ref):
        close(a, b, case.input.dtype, "cpu vs numpy on a hostile grid")


@settings(max_examples=3, deadline=None)
@given(nst.grid_sample_cases(configs=nst.sampler_configs(max_batch=1, max_channels=1, max_side=3, max_out_side=2,
                                                         spatial_dims=3), grids="hostile"))
def test_hostile_grids_cuda(case):
    cuda = pytest.importorskip("numba.cuda")
    if not cuda.is_available():  # pragma: no cover - conftest enables the simulator
        pytest.skip("no CUDA GPU and no CUDA simulator")
    ref = _hostile_check(case, "numpy")
    got = _hostile_check(case, "cuda")
    for a, b in zip(got, ref):
        close(a, b, case.input.dtype, "cuda vs numpy on a hostile grid")


# ----------------------------------------------------------------------------
# The cpu kernels' drivers: serial, parallel, split, tiles -- the same bits
# ----------------------------------------------------------------------------

@settings(max_examples=12)
@given(nst.grid_sample_cases(configs=VOLUME_CONFIGS), st.sampled_from([1, 7, 64]))
def test_cpu_drivers_agree_bit_for_bit(case, tile_points):
    """Serial and parallel kernels, any tile size: the same bits (float64; float32 runs in test_ops)."""
    from npstn.kernels.cpu import grid_sample3d as k

    args = (case.input, case.grid, case.config.mode, case.config.padding_mode, case.config.align_corners)
    ref = F.grid_sample(case.input, case.grid, backend="numpy", **case.kwargs)
    for parallel in (False, True):
        # the forward reproduces the NumPy specification bit for bit
        np.testing.assert_array_equal(k.forward(*args, parallel=parallel, tile_points=tile_points), ref)
    base = k.backward(case.grad_output, *args, parallel=False)
    got = k.backward(case.grad_output, *args, parallel=True, tile_points=tile_points)
    for a, b in zip(got, base):
        np.testing.assert_array_equal(a, b)


def test_large_call_takes_the_parallel_kernels():
    """A call above PARALLEL_MIN_WORK (the parallel kernels, chosen by size) agrees with the specification."""
    from npstn.kernels.cpu import grid_sample3d as k

    x, g, go = random_case(6, np.float64, shape=(3, 2, 6, 7, 8), out_dhw=(16, 16, 24))
    assert 3 * 2 * 16 * 16 * 24 >= k.PARALLEL_MIN_WORK
    close(F.grid_sample(x, g, backend="cpu"), F.grid_sample(x, g, backend="numpy"), np.float64)
    for a, b in zip(F.grid_sample_backward(go, x, g, backend="cpu"),
                    F.grid_sample_backward(go, x, g, backend="numpy")):
        close(a, b, np.float64)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_affine_grid3d_backward_and_grid_sample3d_backward_numpy_match_finite_differences(backend):
    """theta -> affine_grid -> grid_sample, checked end to end in float64 (the 3D transformer's chain):
    on "numpy" through grid_sample3d_backward_numpy and the affine grid's NumPy backward, on "cpu"
    through the kernels' affine_grid3d_backward and the trilinear backward kernel."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 2, 3, 4, 5))
    theta = np.eye(3, 4)[None] + rng.uniform(-0.2, 0.2, (1, 3, 4))
    size = (1, 2, 2, 3, 3)

    def forward(x, theta):
        return F.grid_sample(x, F.affine_grid(theta, size, backend=backend), backend=backend)

    def backward(g, x, theta):
        grid = F.affine_grid(theta, size, backend=backend)
        gi, gg = F.grid_sample_backward(g, x, grid, backend=backend)
        return [gi, F.affine_grid_backward(gg, theta, size, backend=backend)]

    assert gradcheck(forward, [x, theta], backward=backward, eps=1e-6, atol=1e-6, rtol=1e-4)


# ----------------------------------------------------------------------------
# Clear errors
# ----------------------------------------------------------------------------

X5 = np.zeros((2, 3, 4, 5, 6))
G5 = np.zeros((2, 2, 3, 4, 3))


@pytest.mark.parametrize(
    "args,exc,match",
    [
        ((X5, np.zeros((2, 3, 4, 2))), ValueError,
         r"grid must have 5 dimensions \(N, D_out, H_out, W_out, 3\) for a 5-D input.*got shape \(2, 3, 4, 2\)"),
        ((np.zeros((2, 3, 5, 6)), G5), ValueError,
         r"grid must have 4 dimensions \(N, H_out, W_out, 2\) for a 4-D input.*got shape \(2, 2, 3, 4, 3\)"),
        ((X5, np.zeros((2, 2, 3, 4, 2))), ValueError,
         r"grid must have shape \(N, D_out, H_out, W_out, 3\) with the last axis \(x, y, z\).*\(2, 2, 3, 4, 2\)"),
        ((np.zeros((2, 3, 4, 5, 6, 7)), G5), ValueError, r"input must have 4 dimensions.*or 5 dimensions"),
        ((X5, np.zeros((3, 2, 3, 4, 3))), ValueError, r"same batch size.*\(2, 3, 4, 5, 6\).*\(3, 2, 3, 4, 3\)"),
        ((X5.astype(np.float32), G5), TypeError, r"input has dtype float32 but grid has dtype float64"),
    ],
)
def test_sampler_errors_name_the_argument(args, exc, match):
    with pytest.raises(exc, match=match):
        F.grid_sample(*args)


def test_backward_errors_name_grad_output():
    with pytest.raises(ValueError, match=r"grad_output must have shape \(N, C, D_out, H_out, W_out\) = "
                                         r"\(2, 3, 2, 3, 4\).*got shape \(2, 3, 2, 3, 5\)"):
        F.grid_sample_backward(np.zeros((2, 3, 2, 3, 5)), X5, G5)
    with pytest.raises(ValueError, match=r"grad_output must have 5 dimensions"):
        F.grid_sample_backward(np.zeros((2, 3, 2, 3)), X5, G5)


@pytest.mark.parametrize(
    "theta,size,exc,match",
    [
        (np.zeros((2, 2, 3)), (2, 1, 3, 4, 5), ValueError, r"theta has shape \(2, 2, 3\), a 2D transform.*\(N, 3, 4\)"),
        (np.zeros((2, 3, 4)), (2, 1, 4, 5), ValueError, r"theta has shape \(2, 3, 4\), a 3D transform.*\(N, 2, 3\)"),
        (np.zeros((2, 3, 3)), (2, 1, 3, 4, 5), ValueError, r"theta must have shape \(N, 3, 4\).*got shape \(2, 3, 3\)"),
        (np.zeros((2, 3, 4)), (3, 1, 3, 4, 5), ValueError, r"size\[0\] = 3 .* batch size is 2"),
        (np.zeros((2, 3, 4)), (2, 1, 0, 4, 5), ValueError, r"size must hold positive ints \(N, C, D_out"),
        (np.zeros((2, 3, 4)), (2, 1, 3, 4, 5, 6), TypeError, r"size must be a tuple of 4 ints.*or of 5 ints"),
        (np.zeros((2, 3, 4)), (2, 1, 3, 4.0, 5), TypeError, r"size must be a tuple of 5 ints"),
    ],
)
def test_affine_grid_errors(theta, size, exc, match):
    with pytest.raises(exc, match=match):
        F.affine_grid(theta, size)


def test_affine_grid_backward_errors():
    with pytest.raises(ValueError, match=r"grad_grid must have shape \(N, D_out, H_out, W_out, 3\) = "
                                         r"\(2, 3, 4, 5, 3\).*got shape \(2, 3, 4, 5, 2\)"):
        F.affine_grid_backward(np.zeros((2, 3, 4, 5, 2)), (2, 1, 3, 4, 5))
    with pytest.raises(ValueError, match=r"grad_grid must have 5 dimensions"):
        F.affine_grid_backward(np.zeros((2, 4, 5, 2)), (2, 1, 3, 4, 5))
    with pytest.raises(ValueError, match=r"theta has shape \(2, 2, 3\), a 2D transform"):
        F.affine_grid_backward(np.zeros((2, 3, 4, 5, 3)), np.zeros((2, 2, 3)), (2, 1, 3, 4, 5))
