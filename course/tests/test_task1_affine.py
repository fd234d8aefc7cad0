"""Task 1: the affine grid's backward, dL/dtheta = Gamma^T B (notebook 01, section 3)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import npstn.functional as F
from npstn.testing import gradcheck
from npstn.testing import strategies as sn

pytestmark = pytest.mark.task1


@given(size=sn.transform_sizes(), align_corners=st.booleans(), data=st.data())
def test_affine_grid_backward_matches_finite_differences(size, align_corners, data):
    theta = data.draw(sn.affine_thetas(n=size[0]), label="theta")
    gradcheck(lambda t: F.affine_grid(t, size, align_corners, backend="numpy"), theta,
              backward=lambda g, t: F.affine_grid_backward(g, t, size, align_corners, backend="numpy"))


@given(size=sn.transform_sizes(max_hw=9), align_corners=st.booleans(), data=st.data())
def test_affine_grid_backward_is_the_transpose(size, align_corners, data):
    """<affine_grid(theta), Gamma> == <theta, affine_grid_backward(Gamma)> for every theta and Gamma."""
    theta = data.draw(sn.affine_thetas(n=size[0], mode="random"), label="theta")
    gamma = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).standard_normal((size[0], *size[2:], 2))
    lhs = np.sum(F.affine_grid(theta, size, align_corners, backend="numpy") * gamma)
    rhs = np.sum(theta * F.affine_grid_backward(gamma, theta, size, align_corners, backend="numpy"))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_affine_grid_backward_shape_and_dtype(dtype):
    size = (2, 1, 3, 5)
    g = np.random.default_rng(0).standard_normal((2, 3, 5, 2)).astype(dtype)
    out = F.affine_grid_backward(g, size, backend="numpy")
    assert out.shape == (2, 2, 3) and out.dtype == dtype
