"""Task 2, held back (ships only with the solutions): kinks, clip edges, hostile grids."""
import numpy as np
import pytest
from hypothesis import given

import npstn.functional as F
from npstn.testing import strategies as sn
from npstn.testing.strategies import pixel_to_normalized

pytestmark = pytest.mark.task2


def _line(x_pix, img, padding_mode="zeros"):
    h, w = img.shape[2:]
    g = np.array([[[[pixel_to_normalized(x_pix, w, False), pixel_to_normalized(1.25, h, False)]]]])
    v = F.grid_sample(img, g, padding_mode=padding_mode, backend="numpy")
    _, gg = F.grid_sample_backward(np.ones_like(v), img, g, padding_mode=padding_mode, backend="numpy")
    return v[0, 0, 0, 0], gg[0, 0, 0, 0] / (w / 2)


@pytest.mark.parametrize("x0", [0.0, 1.0, 2.0, 3.0])
def test_at_a_kink_the_right_one_sided_derivative(x0):
    img = np.random.default_rng(int(x0)).uniform(0, 1, (1, 1, 4, 8))
    v0, d = _line(x0, img)
    h = 2.0 ** -20
    v1, _ = _line(x0 + h, img)
    np.testing.assert_allclose(d, (v1 - v0) / h, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("x_edge", [0.0, 7.0, -2.0, 9.5])
def test_border_clip_edges_get_zero_gradient(x_edge):
    img = np.random.default_rng(5).uniform(0, 1, (1, 1, 4, 8))
    _, d = _line(x_edge, img, "border")
    assert d == 0.0


@given(case=sn.grid_sample_cases(configs=sn.sampler_configs(max_batch=2, max_channels=2, max_side=5,
                                                            max_out_side=4), grids="hostile"))
def test_hostile_grids_give_finite_gradients_and_nan_points_nothing(case):
    kw = dict(case.kwargs, backend="numpy")
    gi, gg = F.grid_sample_backward(case.grad_output, case.input, case.grid, **kw)
    assert np.isfinite(gi).all() and np.isfinite(gg).all()
    bad = ~np.isfinite(case.grid).all(axis=-1)
    assert np.all(gg[bad] == 0)
    keep = np.where(bad[:, None], 0.0, case.grad_output)  # NaN/inf points add nothing to grad_input
    gi_keep, _ = F.grid_sample_backward(keep, case.input, case.grid, **kw)
    np.testing.assert_allclose(gi, gi_keep, rtol=1e-12, atol=1e-12)
