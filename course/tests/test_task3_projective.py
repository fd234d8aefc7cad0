"""Task 3: the projective grid's backward, by the quotient rule (notebook 03, section 1)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import npstn.functional as F
from npstn.testing import gradcheck
from npstn.testing import strategies as sn

pytestmark = pytest.mark.task3


@given(size=sn.transform_sizes(), align_corners=st.booleans(), data=st.data())
def test_projective_grid_backward_matches_finite_differences(size, align_corners, data):
    theta = data.draw(sn.projective_thetas(n=size[0]), label="theta")
    gradcheck(lambda t: F.projective_grid(t, size, align_corners, backend="numpy"), theta,
              backward=lambda g, t: F.projective_grid_backward(g, t, size, align_corners, backend="numpy"))


def test_projective_with_g_h_zero_is_the_affine_backward_in_float32():
    rng = np.random.default_rng(2)
    theta = np.concatenate([rng.standard_normal((2, 6)), np.zeros((2, 2))], axis=1).astype(np.float32)
    size = (2, 1, 4, 3)
    gamma = rng.standard_normal((2, 4, 3, 2)).astype(np.float32)
    got = F.projective_grid_backward(gamma, theta, size, backend="numpy")
    assert got.shape == (2, 8) and got.dtype == np.float32
    # with g = h = 0, w = 1: the first six entries are the affine map's gradient Gamma^T B
    base = F.base_grid(size)[0].reshape(-1, 2)
    b = np.concatenate([base, np.ones((len(base), 1))], axis=1)
    want = np.einsum("nir,ik->nrk", gamma.reshape(2, -1, 2).astype(np.float64), b).reshape(2, 6)
    np.testing.assert_allclose(got[:, :6], want, rtol=1e-5, atol=1e-5)
