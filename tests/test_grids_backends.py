"""Grid generators across backends: cpu and cuda agree with the numpy specification.

The cuda backend runs on a GPU when there is one, else in Numba's CUDA
simulator (tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1), where every thread
is a Python thread: shapes stay tiny and examples few.

Tolerances. Every backend forms the same float64 expressions (base-grid
coordinates are float64) and rounds once into the output dtype; only the
order of the backward sums differs. So float64 results agree to 1e-12
(relative and absolute), float32 ones to a couple of float32 ulps
(rtol = atol = 1e-6).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npstn.functional as F
from npstn.stn.transforms import get_transform
from npstn.testing import gradcheck
from npstn.testing import strategies as sn

from test_grids import GENERATORS, _fwd_bwd, _horizon_theta, _thetas

TOL = {np.dtype(np.float64): dict(rtol=1e-12, atol=1e-12), np.dtype(np.float32): dict(rtol=1e-6, atol=1e-6)}


def _cuda():
    from numba import cuda

    return cuda


# ---------------------------------------------------------------------------
# Agreement with the numpy specification, forward and backward
# ---------------------------------------------------------------------------

def _agree(name, backend, size, theta, up, align_corners, k):
    fwd_ref, bwd_ref = _fwd_bwd(name, size, align_corners, "numpy", k)
    fwd, bwd = _fwd_bwd(name, size, align_corners, backend, k)
    tol = TOL[theta.dtype]
    grid, grad = fwd(theta), bwd(up, theta)
    assert isinstance(grid, np.ndarray) and isinstance(grad, np.ndarray)
    assert grid.dtype == theta.dtype and grad.dtype == theta.dtype
    assert grad.shape == theta.shape
    np.testing.assert_allclose(grid, fwd_ref(theta), **tol)
    np.testing.assert_allclose(grad, bwd_ref(up, theta), **tol)


@pytest.mark.parametrize("name", GENERATORS)
@given(size=sn.transform_sizes(max_batch=4, max_hw=9), data=st.data(), align_corners=st.booleans(),
       dtype=sn.dtypes())
def test_cpu_agrees_with_numpy(name, size, data, align_corners, dtype):
    k = data.draw(st.sampled_from([4, 9, 16])) if name == "tps" else 16
    theta = data.draw(_thetas(name, size[0], dtype=dtype, k=k))
    up = data.draw(sn.float_arrays((size[0], size[2], size[3], 2), dtype=dtype))
    _agree(name, "cpu", size, theta, up, align_corners, k)


@pytest.mark.parametrize("name", GENERATORS)
@settings(max_examples=8)
@given(size=sn.transform_sizes(max_batch=2, max_hw=4), data=st.data(), align_corners=st.booleans(),
       dtype=sn.dtypes())
def test_cuda_agrees_with_numpy(name, size, data, align_corners, dtype):
    k = data.draw(st.sampled_from([4, 9])) if name == "tps" else 16
    theta = data.draw(_thetas(name, size[0], dtype=dtype, k=k))
    up = data.draw(sn.float_arrays((size[0], size[2], size[3], 2), dtype=dtype))
    _agree(name, "cuda", size, theta, up, align_corners, k)


@pytest.mark.parametrize("backend", ["cpu", "cuda"])
def test_larger_grids_agree(backend):
    """One bigger case per generator (several blocks on the GPU, long reductions)."""
    rng = np.random.default_rng(11)
    size = (2, 1, 17, 23) if backend == "cuda" else (5, 1, 33, 47)
    for name in GENERATORS:
        for dtype in (np.float64, np.float32):
            theta = {
                "affine": np.eye(2, 3) + rng.uniform(-0.3, 0.3, (size[0], 2, 3)),
                "attention": rng.uniform(-1, 1, (size[0], 3)),
                "projective": np.array(F.PROJECTIVE_IDENTITY) + rng.uniform(-0.2, 0.2, (size[0], 8)),
                "tps": F.tps_control_points(16) + rng.uniform(-0.2, 0.2, (size[0], 16, 2)),
            }[name].astype(dtype)
            up = rng.standard_normal((size[0], size[2], size[3], 2)).astype(dtype)
            fwd_ref, bwd_ref = _fwd_bwd(name, size, False, "numpy")
            fwd, bwd = _fwd_bwd(name, size, False, backend)
            tol = dict(TOL[np.dtype(dtype)])
            np.testing.assert_allclose(fwd(theta), fwd_ref(theta), **tol)
            # sums of ~1e3 terms of size ~1: absolute error scales with the count
            tol["atol"] *= size[2] * size[3]
            np.testing.assert_allclose(bwd(up, theta), bwd_ref(up, theta), **tol)


@pytest.mark.parametrize("backend", ["cpu", "cuda"])
def test_projective_horizon_agrees(backend):
    theta, size = _horizon_theta()
    up = np.random.default_rng(2).standard_normal((2, 3, 3, 2))
    for dtype in (np.float64, np.float32):
        t, g = theta.astype(dtype), up.astype(dtype)
        if dtype == np.float32:  # 1 - 1e-9 rounds to 1 in float32: put the zero on the grid exactly
            t[1, 7] = 1.0
        for ac in (True, False):
            np.testing.assert_allclose(F.projective_grid(t, size, ac, backend),
                                       F.projective_grid(t, size, ac, "numpy"), **TOL[np.dtype(dtype)])
            np.testing.assert_allclose(F.projective_grid_backward(g, t, size, ac, backend),
                                       F.projective_grid_backward(g, t, size, ac, "numpy"), **TOL[np.dtype(dtype)])


def test_far_constant_is_shared():
    from npstn.functional.projective import PROJECTIVE_FAR
    from npstn.kernels.cpu import grids as cpu_grids
    from npstn.kernels.cuda import grids as cuda_grids

    assert cpu_grids.PROJECTIVE_FAR == cuda_grids.PROJECTIVE_FAR == PROJECTIVE_FAR


# ---------------------------------------------------------------------------
# Finite differences on the compiled backends
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", GENERATORS)
@settings(max_examples=8)
@given(size=sn.transform_sizes(max_batch=2, max_hw=3), data=st.data(), align_corners=st.booleans())
def test_cuda_backward_matches_finite_differences(name, size, data, align_corners):
    theta = data.draw(_thetas(name, size[0], k=4))
    fwd, bwd = _fwd_bwd(name, size, align_corners, "cuda", k=4)
    # few elements (each costs two simulated launches) plus one random direction
    gradcheck(fwd, [theta], backward=bwd, max_elements=6, seed=data.draw(st.integers(0, 2**16)))


# ---------------------------------------------------------------------------
# Device arrays stay on the device
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", GENERATORS)
def test_device_arrays_in_device_arrays_out(name):
    cuda = _cuda()
    rng = np.random.default_rng(4)
    size = (2, 1, 3, 2)
    theta = {
        "affine": np.eye(2, 3) + 0.1 * rng.standard_normal((2, 2, 3)),
        "attention": np.array([[1.0, 0.1, -0.2], [0.5, 0.0, 0.3]]),
        "projective": np.array(F.PROJECTIVE_IDENTITY) + 0.05 * rng.standard_normal((2, 8)),
        "tps": F.tps_control_points(4) + 0.1 * rng.standard_normal((2, 4, 2)),
    }[name].astype(np.float32)
    up = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    fwd, bwd = _fwd_bwd(name, size, False, "cuda", k=4)
    fwd_ref, bwd_ref = _fwd_bwd(name, size, False, "numpy", k=4)
    d_grid = fwd(cuda.to_device(theta))
    d_grad = bwd(cuda.to_device(up), cuda.to_device(theta))
    for d in (d_grid, d_grad):
        assert not isinstance(d, np.ndarray) and hasattr(d, "copy_to_host")
        assert d.dtype == np.float32
    np.testing.assert_allclose(d_grid.copy_to_host(), fwd_ref(theta), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d_grad.copy_to_host(), bwd_ref(up, theta), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", GENERATORS)
def test_transform_interface_on_device(name):
    cuda = _cuda()
    t = get_transform(name)
    size = (2, 1, 2, 3)
    theta = np.tile(t.identity(np.float64), (2, 1))
    d_grid = t.grid(cuda.to_device(theta), size, backend="cuda")
    assert hasattr(d_grid, "copy_to_host")
    np.testing.assert_allclose(d_grid.copy_to_host(), t.base_grid(size), atol=1e-12)
    up = np.random.default_rng(0).standard_normal((2, 2, 3, 2))
    d_grad = t.grid_backward(cuda.to_device(up), cuda.to_device(theta), size, backend="cuda")
    assert hasattr(d_grad, "copy_to_host") and d_grad.shape == (2, t.num_params)
    np.testing.assert_allclose(d_grad.copy_to_host(), t.grid_backward(up, theta, size, backend="numpy"),
                               **TOL[np.dtype(np.float64)])


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_device_array_with_host_backend_is_a_clear_error(backend):
    cuda = _cuda()
    d = cuda.to_device(np.eye(2, 3)[None])
    with pytest.raises(TypeError, match="theta is a CUDA device array but backend="):
        F.affine_grid(d, (1, 1, 2, 2), backend=backend)
    d_up = cuda.to_device(np.zeros((1, 2, 2, 2)))
    with pytest.raises(TypeError, match="grad_grid is a CUDA device array"):
        F.affine_grid_backward(d_up, (1, 1, 2, 2), backend=backend)


def test_non_contiguous_inputs():
    rng = np.random.default_rng(9)
    theta = rng.standard_normal((2, 3, 4))[:, :, :3][:, :2]  # a strided (2, 2, 3) view
    size = (2, 1, 3, 5)
    up = rng.standard_normal((2, 5, 3, 2)).transpose(0, 2, 1, 3)  # (2, 3, 5, 2), not contiguous
    for backend in ("cpu", "cuda"):
        np.testing.assert_allclose(F.affine_grid(theta, size, backend=backend),
                                   F.affine_grid(theta, size, backend="numpy"), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(F.affine_grid_backward(up, size, backend=backend),
                                   F.affine_grid_backward(up, size, backend="numpy"), rtol=1e-12, atol=1e-12)
