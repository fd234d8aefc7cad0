"""Task 5: SpatialTransformer.backward, dL/dU = sampler path + localisation path (notebook 04)."""
import numpy as np
import pytest

from npstn.testing import gradcheck

import _standins

pytestmark = pytest.mark.task5


@pytest.mark.parametrize("seed", range(4))
def test_the_whole_transformer_matches_finite_differences(monkeypatch, seed):
    """Input and every localisation parameter, through stand-in sampler and transform."""
    _standins.patch(monkeypatch)
    rng = np.random.default_rng(seed)
    st = _standins.make_st(rng)
    gradcheck(st, rng.standard_normal((2, 2, 4, 5)))


def test_the_input_gradient_is_the_sum_of_both_paths(monkeypatch):
    _standins.patch(monkeypatch)
    rng = np.random.default_rng(7)
    st = _standins.make_st(rng)
    u = rng.standard_normal((3, 2, 4, 5))
    go = rng.standard_normal((3, 2, 4, 5))
    st(u)
    st.zero_grad()
    total = st.backward(go)
    sampler_path, grad_grid = _standins.sample_backward(go, u, st.grid)
    grad_theta = st.transform.grid_backward(grad_grid, st.theta, u.shape)
    loc_path = st.localization.backward(grad_theta)
    np.testing.assert_allclose(total, sampler_path + loc_path, rtol=1e-10, atol=1e-12)
    assert np.abs(loc_path).max() > 1e-3  # the localisation path is not negligible here


def test_return_theta_adds_the_theta_gradient(monkeypatch):
    """With return_theta=True, backward((dL/dV, dL/dtheta)) adds dL/dtheta before the localisation network."""
    _standins.patch(monkeypatch)
    rng = np.random.default_rng(3)
    st = _standins.make_st(rng, return_theta=True)
    u = rng.standard_normal((2, 2, 4, 5))
    go, gt = rng.standard_normal((2, 2, 4, 5)), rng.standard_normal((2, 2))
    st(u)
    st.zero_grad()
    with_theta = st.backward((go, gt))
    st(u)
    without = st.backward((go, None))
    st(u)
    st.localization(u)  # the localisation network's cache for u
    extra = st.localization.backward(gt)
    np.testing.assert_allclose(with_theta, without + extra, rtol=1e-10, atol=1e-12)
