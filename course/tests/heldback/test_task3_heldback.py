"""Task 3, held back: the horizon (|w| < eps) contributes no gradient."""
import numpy as np
import pytest

import npstn.functional as F

pytestmark = pytest.mark.task3


def test_points_on_the_horizon_get_no_gradient():
    size = (1, 1, 1, 3)                          # target points x^t = -2/3, 0, 2/3 at y^t = 0
    theta = np.array([[1.0, 0, 0, 0, 1.0, 0, -1.5, 0]])  # w = 1 - 1.5 x^t: w = 0 at x^t = 2/3
    gamma = np.zeros((1, 1, 3, 2))
    gamma[0, 0, 2] = [1.0, -2.0]                 # only the point on the horizon has an upstream gradient
    np.testing.assert_array_equal(F.projective_grid_backward(gamma, theta, size, backend="numpy"), 0.0)
