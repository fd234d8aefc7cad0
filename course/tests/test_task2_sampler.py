"""Task 2: the sampler's backward, eq. 6 (the image) and eq. 7 (the grid) (notebook 02, sections 3-4)."""
import numpy as np
import pytest
from hypothesis import given

import npstn.functional as F
from npstn.testing import gradcheck
from npstn.testing import strategies as sn

pytestmark = pytest.mark.task2

BILINEAR = sn.sampler_configs(max_batch=2, max_channels=2, max_side=5, max_out_side=4, modes=("bilinear",))


@given(case=sn.grid_sample_cases(configs=BILINEAR))
def test_grid_sample_backward_matches_finite_differences(case):
    """Both gradients, every padding mode and align_corners, on grids kept off the kinks."""
    kw = dict(case.kwargs, backend="numpy")
    gradcheck(lambda u, g: F.grid_sample(u, g, **kw), [case.input, case.grid],
              backward=lambda go, u, g: F.grid_sample_backward(go, u, g, **kw))


@given(case=sn.grid_sample_cases(configs=sn.sampler_configs(max_batch=2, max_channels=2, max_side=5,
                                                            max_out_side=4), grids="on_kinks"))
def test_grad_input_is_the_adjoint_even_on_kinks(case):
    """<grid_sample(U, grid), Y> == <U, grad_input(Y)>: eq. 6 is the transpose of sampling."""
    kw = dict(case.kwargs, backend="numpy")
    lhs = np.sum(F.grid_sample(case.input, case.grid, **kw) * case.grad_output)
    grad_input, _ = F.grid_sample_backward(case.grad_output, case.input, case.grid, **kw)
    np.testing.assert_allclose(lhs, np.sum(case.input * grad_input), rtol=1e-10, atol=1e-10)


def test_nearest_has_zero_grid_gradient_and_routes_the_image_gradient():
    rng = np.random.default_rng(0)
    u = rng.standard_normal((1, 2, 4, 5))
    grid = rng.uniform(-1, 1, (1, 3, 3, 2))
    go = rng.standard_normal((1, 2, 3, 3))
    gi, gg = F.grid_sample_backward(go, u, grid, mode="nearest", backend="numpy")
    assert np.all(gg == 0)
    np.testing.assert_allclose(np.sum(F.grid_sample(u, grid, mode="nearest", backend="numpy") * go),
                               np.sum(u * gi), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grid_sample_backward_shapes_and_dtypes(dtype):
    rng = np.random.default_rng(1)
    u = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    grid = rng.uniform(-1, 1, (2, 6, 7, 2)).astype(dtype)
    go = rng.standard_normal((2, 3, 6, 7)).astype(dtype)
    gi, gg = F.grid_sample_backward(go, u, grid, backend="numpy")
    assert gi.shape == u.shape and gg.shape == grid.shape
    assert gi.dtype == dtype and gg.dtype == dtype
