"""Task 4, held back: every K, float32, and the cached matrix is read-only."""
import numpy as np
import pytest

import npstn.functional as F

pytestmark = pytest.mark.task4


@pytest.mark.parametrize("num_control_points", [25, 36])
def test_larger_grids_of_control_points_interpolate(num_control_points):
    k = int(num_control_points ** 0.5)
    np.testing.assert_allclose(F.tps_matrix(num_control_points, k, k, True), np.eye(num_control_points),
                               atol=1e-9)


def test_side_conditions_make_the_affine_part_exact_in_float32():
    c = F.tps_control_points(16, dtype=np.float32)
    moved = (c @ np.array([[0.9, 0.2], [-0.1, 1.1]], dtype=np.float32).T + 0.05)[None]
    size = (1, 1, 5, 7)
    aff = np.array([[[0.9, 0.2, 0.05], [-0.1, 1.1, 0.05]]], dtype=np.float32)
    got = F.tps_grid(moved, size, backend="numpy")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, F.affine_grid(aff, size, backend="numpy"), atol=1e-5)
    assert not F.tps_matrix(16, 5, 7).flags.writeable
