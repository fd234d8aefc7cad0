"""Task 4: the thin-plate spline's linear system (notebook 03, section 2)."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import npstn.functional as F
from npstn.testing import gradcheck
from npstn.testing import strategies as sn

pytestmark = pytest.mark.task4


@pytest.mark.parametrize("num_control_points", [4, 9, 16])
def test_the_spline_interpolates_the_control_points(num_control_points):
    """With align_corners=True and a k x k output the target points ARE the control points: M = I."""
    k = math.isqrt(num_control_points)
    np.testing.assert_allclose(F.tps_matrix(num_control_points, k, k, True), np.eye(num_control_points),
                               atol=1e-10)


@given(size=sn.transform_sizes(max_hw=7), num_control_points=st.sampled_from([4, 9, 16]),
       align_corners=st.booleans(), data=st.data())
def test_identity_and_affine_motions_are_reproduced(size, num_control_points, align_corners, data):
    """theta = c gives the base grid; affinely moved control points give that affine grid (beta = 0)."""
    c = F.tps_control_points(num_control_points)
    theta_aff = data.draw(sn.affine_thetas(n=size[0], mode="random"), label="affine")
    moved = np.einsum("nrk,pk->npr", theta_aff[:, :, :2], c) + theta_aff[:, None, :, 2]
    np.testing.assert_allclose(F.tps_grid(np.broadcast_to(c, (size[0], *c.shape)).copy(), size, align_corners,
                                          backend="numpy"), F.base_grid(size, align_corners), atol=1e-9)
    np.testing.assert_allclose(F.tps_grid(moved, size, align_corners, backend="numpy"),
                               F.affine_grid(theta_aff, size, align_corners, backend="numpy"), atol=1e-9)


@given(size=sn.transform_sizes(), data=st.data())
def test_tps_grid_backward_matches_finite_differences(size, data):
    theta = data.draw(sn.tps_thetas(n=size[0], num_control_points=9), label="theta")
    gradcheck(lambda t: F.tps_grid(t, size, backend="numpy"), theta,
              backward=lambda g, t: F.tps_grid_backward(g, t, size, backend="numpy"))
