"""npstn.kernels.formulas: each formula written once, the same numbers on arrays (NumPy) and scalars (Numba).

The NumPy specification calls the formulas on whole arrays, the cpu kernels
compile them on scalars: a formula must compute the same bits both ways, in
float32 and float64, for every padding mode, at kinks, edges and far points.
"""
import inspect
import pathlib
import re

import numpy as np
import pytest
from numba import njit

import npstn
from npstn.kernels import formulas as fm

DTYPES = [np.float32, np.float64]


def _coordinates(dtype, rng):
    """Normalised coordinates: random, exact kinks and halves, far and huge values."""
    base = np.concatenate([rng.uniform(-3, 3, 200), np.arange(-20, 21) / 8, [1e30, -1e30, 3e38, -3e38, 0.0, -0.0]])
    return base.astype(dtype)


@njit
def _source_scalar(xs, one, scale, shift, limit, size, padding, align_corners, out_p, out_d):
    for i in range(xs.size):
        out_p[i], out_d[i] = fm.source_coordinate(xs[i], one, scale, shift, limit, size, padding, align_corners)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [1, 2, 5, 64])
def test_source_coordinate_same_bits_on_arrays_and_scalars(dtype, padding, align_corners, size):
    rng = np.random.default_rng(size)
    xs = _coordinates(dtype, rng)
    t = np.dtype(dtype).type
    one, scale, shift = fm.unnormalize_constants(dtype, size, align_corners)
    args = (one, scale, shift, t(fm.COORD_LIMIT), t(size), fm.PADDING_CODES[padding], align_corners)
    with np.errstate(over="ignore"):
        p, d = fm.source_coordinate(xs, *args)
    assert p.dtype == dtype and d.dtype == dtype
    sp, sd = np.empty_like(xs), np.empty_like(xs)
    _source_scalar(xs, *args, sp, sd)
    np.testing.assert_array_equal(sp, p)
    np.testing.assert_array_equal(sd, d)
    assert np.all(np.abs(p) <= fm.COORD_LIMIT)
    if padding != "zeros":
        assert np.all((p >= 0) & (p <= size - 1))


@njit
def _bilinear_scalar(ix, iy, u, one, out_v, out_dx, out_dy):
    for i in range(ix.size):
        x0 = fm.floor(ix[i])
        y0 = fm.floor(iy[i])
        w = fm.bilinear_weights(ix[i] - x0, iy[i] - y0, one)
        out_v[i] = fm.bilinear_interpolate(u[0, i], u[1, i], u[2, i], u[3, i], w[0], w[1], w[2], w[3])
        out_dx[i], out_dy[i] = fm.bilinear_coordinate_gradient(u[0, i], u[1, i], u[2, i], u[3, i], ix[i] - x0,
                                                               iy[i] - y0, one)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bilinear_formulas_same_bits_on_arrays_and_scalars(dtype):
    rng = np.random.default_rng(3)
    ix = rng.uniform(-2, 9, 300).astype(dtype)
    iy = np.concatenate([rng.uniform(-2, 9, 290), np.arange(10)]).astype(dtype)
    u = rng.standard_normal((4, 300)).astype(dtype)
    one = np.dtype(dtype).type(1)
    x0, y0 = fm.floor(ix), fm.floor(iy)
    w = fm.bilinear_weights(ix - x0, iy - y0, one)
    v = fm.bilinear_interpolate(*u, *w)
    dx, dy = fm.bilinear_coordinate_gradient(*u, ix - x0, iy - y0, one)
    assert v.dtype == dx.dtype == dy.dtype == dtype
    sv, sdx, sdy = np.empty_like(ix), np.empty_like(ix), np.empty_like(ix)
    _bilinear_scalar(ix, iy, u, one, sv, sdx, sdy)
    np.testing.assert_array_equal(sv, v)
    np.testing.assert_array_equal(sdx, dx)
    np.testing.assert_array_equal(sdy, dy)
    # the weights sum to one, and eq. 7 is the derivative of eq. 5 (linear in fx between kinks)
    np.testing.assert_allclose(np.sum(w, axis=0), 1, rtol=1e-6)
    h, u64, fy = 1e-3, u.astype(np.float64), np.float64(iy - y0)
    fd = (fm.bilinear_interpolate(*u64, *fm.bilinear_weights(0.25 + h, fy, 1.0))
          - fm.bilinear_interpolate(*u64, *fm.bilinear_weights(0.25, fy, 1.0))) / h
    an, _ = fm.bilinear_coordinate_gradient(*u64, 0.25, fy, 1.0)
    np.testing.assert_allclose(fd, an, rtol=1e-6, atol=1e-9)


@njit
def _round_scalar(x, one, out):
    for i in range(x.size):
        out[i] = fm.round_half_even(x[i], one)


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_half_even_is_rint(dtype):
    x = np.concatenate([np.arange(-40, 41) / 4, np.random.default_rng(0).uniform(-100, 100, 100)]).astype(dtype)
    one = np.dtype(dtype).type(1)
    np.testing.assert_array_equal(fm.round_half_even(x, one), np.rint(x))
    out = np.empty_like(x)
    _round_scalar(x, one, out)
    np.testing.assert_array_equal(out, np.rint(x))


def test_projective_formulas_and_tps_basis():
    rng = np.random.default_rng(1)
    theta = rng.standard_normal(8)
    theta[6:] *= 0.2  # w = g x + h y + 1 stays away from 0 on [-1, 1]^2
    x, y = rng.uniform(-1, 1, 50), rng.uniform(-1, 1, 50)
    u, v, w = fm.homography(*theta, x, y)
    w[:3] = [0.0, -0.0, 1e-9]  # on the horizon
    xs, ys, inv_w = fm.projective_point(u, v, w, fm.PROJECTIVE_EPS)
    np.testing.assert_array_equal(np.abs(xs[:3]), fm.PROJECTIVE_FAR)
    np.testing.assert_array_equal(inv_w[:3], 0.0)
    np.testing.assert_allclose(xs[3:], u[3:] / w[3:])
    # the gradient terms against a finite difference of x^s, y^s in each parameter
    g = rng.standard_normal((2, 50))
    terms = fm.projective_gradient(g[0], g[1], *fm.homography(*theta, x, y)[:2], 1 / fm.homography(*theta, x, y)[2],
                                   x, y)
    for k in range(8):
        dt = np.zeros(8)
        dt[k] = 1e-6
        up = fm.projective_point(*fm.homography(*(theta + dt), x, y), 0.0)
        dn = fm.projective_point(*fm.homography(*(theta - dt), x, y), 0.0)
        fd = (g[0] * (up[0] - dn[0]) + g[1] * (up[1] - dn[1])) / 2e-6
        np.testing.assert_allclose(terms[k], fd, rtol=1e-5, atol=1e-6)
    r2 = np.array([0.0, 0.25, 1.0, 4.0])
    np.testing.assert_array_equal(fm.tps_radial_basis(r2), [0.0, 0.25 * np.log(0.25), 0.0, 4 * np.log(4.0)])


def test_constants_have_one_home():
    """COORD_LIMIT and PROJECTIVE_FAR are defined in formulas.py only; everyone else imports them."""
    root = pathlib.Path(npstn.__file__).parent
    for name in ("COORD_LIMIT", "PROJECTIVE_FAR", "PROJECTIVE_EPS"):
        defined = re.compile(rf"^{name}\s*=", re.MULTILINE)
        homes = [p.relative_to(root).as_posix() for p in root.rglob("*.py") if defined.search(p.read_text())]
        assert homes == ["kernels/formulas.py"], (name, homes)


def test_the_sampler_gradient_is_written_once():
    """Eq. 7's four-neighbour form appears in formulas.py; the specification and both kernels call it."""
    import importlib

    eq7 = "(se - sw) * fy"
    assert eq7 in inspect.getsource(fm)
    for module in ("npstn.functional.grid_sample", "npstn.kernels.cpu.grid_sample", "npstn.kernels.cuda.grid_sample"):
        src = inspect.getsource(importlib.import_module(module))
        assert "bilinear_coordinate_gradient(" in src, module
        assert eq7 not in src and "(u_se - u_sw)" not in src, module


def test_cuda_kernels_call_twins_of_the_formulas():
    """The CUDA kernels call ``cuda_formulas``: for each formula a twin with the same code and its own
    function object, whose globals bind the other formulas to their twins. (With one object for
    both targets, numba-cuda inlined the cpu's compiled formula into the CUDA kernels of any process
    that had run the cpu backend first, and they failed to compile: found on an H200.)"""
    import importlib

    names = [n for n, v in vars(fm).items()
             if callable(v) and getattr(fm.cuda_formulas, n, None) is not None and n in fm.__all__]
    twins = [n for n in names if getattr(fm.cuda_formulas, n) is not getattr(fm, n)]
    assert {"source_coordinate", "bilinear_weights", "trilinear_coordinate_gradient", "homography",
            "tps_radial_basis"} <= set(twins)
    for n in twins:
        twin, fn = getattr(fm.cuda_formulas, n), getattr(fm, n)
        assert twin.__code__ is fn.__code__ and twin.__doc__ == fn.__doc__, n
        for called in fn.__code__.co_names:  # a formula calling another formula reaches its twin
            if called in twins:
                assert twin.__globals__[called] is getattr(fm.cuda_formulas, called), (n, called)
    # the primitives and constants are shared, not copied
    assert fm.cuda_formulas.floor is fm.floor and fm.cuda_formulas.COORD_LIMIT == fm.COORD_LIMIT
    # the same numbers in Python (the CUDA simulator runs the twins as Python)
    args = (np.float32(0.3), np.float32(1), np.float32(2.5), np.float32(0.5), np.float32(fm.COORD_LIMIT),
            np.float32(5), fm.REFLECTION, False)
    assert fm.cuda_formulas.source_coordinate(*args) == fm.source_coordinate(*args)
    for module in ("npstn.kernels.cuda.grid_sample", "npstn.kernels.cuda.grid_sample3d", "npstn.kernels.cuda.grids"):
        assert importlib.import_module(module).fm is fm.cuda_formulas, module
