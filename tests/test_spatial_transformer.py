"""The SpatialTransformer module: identity init, gradients along both paths, composition."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from npstn import nn
from npstn.stn import SpatialTransformer
from npstn.testing import gradcheck
from npstn.testing.strategies import float_arrays

TRANSFORMS = {"affine": 6, "attention": 3, "projective": 8, "tps": 32}


def loc_net(c, h, w, p, hidden=5):
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, p))


def perturb_regression(st_module, scale, seed):
    """Move the regression layer off the identity so theta depends on the input."""
    rng = np.random.default_rng(seed)
    reg = st_module.localization[-1]
    reg.weight.data[...] = scale * rng.standard_normal(reg.weight.data.shape)
    reg.bias.data[...] += scale * rng.standard_normal(reg.bias.data.shape)


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_initialisation_returns_the_input(transform, align_corners):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(np.float32)
    m = SpatialTransformer(loc_net(3, 5, 7, TRANSFORMS[transform]), transform, align_corners=align_corners)
    out = m(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, x, atol=2e-5)
    reg = m.localization[-1]
    assert np.all(reg.weight.data == 0)
    np.testing.assert_allclose(m.theta[0], m.transform.identity(), atol=0)


@settings(max_examples=12)
@given(
    transform=st.sampled_from(sorted(TRANSFORMS)),
    n=st.integers(1, 2),
    c=st.integers(1, 2),
    hw=st.tuples(st.integers(2, 5), st.integers(2, 5)),
    out=st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(1, 4))),
    align_corners=st.booleans(),
    padding_mode=st.sampled_from(["zeros", "border"]),
    seed=st.integers(0, 2**16),
)
def test_gradients_wrt_input_and_every_parameter(transform, n, c, hw, out, align_corners, padding_mode, seed):
    h, w = hw
    nn.init.manual_seed(seed)
    m = SpatialTransformer(loc_net(c, h, w, TRANSFORMS[transform]), transform, out,
                           align_corners=align_corners, padding_mode=padding_mode, backend="numpy")
    perturb_regression(m, 0.05, seed)
    x = np.random.default_rng(seed).uniform(-1, 1, (n, c, h, w))
    gradcheck(m, x, atol=1e-5, rtol=1e-4)


def test_both_paths_contribute_to_the_input_gradient():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 1, 4, 4))
    m = SpatialTransformer(loc_net(1, 4, 4, 6), "affine").double()
    perturb_regression(m, 0.1, 1)
    g = rng.standard_normal((1, 1, 4, 4))
    m(x)
    total = m.backward(g)
    m.zero_grad()
    m(x)
    from npstn.functional import grid_sample_backward
    sampler_only, _ = grid_sample_backward(g, x, m.grid)
    assert not np.allclose(total, sampler_only)  # the localisation path adds its share


def test_return_theta_feeds_theta_forward():
    rng = np.random.default_rng(2)
    m = SpatialTransformer(loc_net(1, 3, 3, 6), "affine", return_theta=True).double()
    perturb_regression(m, 0.1, 2)
    x = rng.standard_normal((2, 1, 3, 3))
    w = rng.standard_normal(6)

    def f(x):
        v, theta = m(x)
        return np.concatenate([v.reshape(2, -1), theta * w], axis=1)

    def b(g, x):
        gv = g[:, :9].reshape(2, 1, 3, 3)
        return m.backward((gv, g[:, 9:] * w))

    gradcheck(f, x, backward=b)


def test_parallel_and_series_composition():
    rng = np.random.default_rng(3)
    a = SpatialTransformer(loc_net(1, 4, 4, 6), "affine", (3, 3))
    b = SpatialTransformer(loc_net(1, 4, 4, 3), "attention", (3, 3))
    par = nn.Parallel(a, b)
    s2 = SpatialTransformer(loc_net(2, 3, 3, 32), "tps")
    net = nn.Sequential(par, s2, nn.Flatten(), nn.Linear(18, 4)).double()
    for m in (a, b, s2):
        perturb_regression(m, 0.05, 3)
    x = rng.standard_normal((2, 1, 4, 4))
    assert net(x).shape == (2, 4)
    gradcheck(net, x, atol=1e-5)


def test_loc_lr_mult_and_backend_agreement():
    nn.init.manual_seed(0)
    m = SpatialTransformer(loc_net(1, 6, 6, 6), "affine", (4, 5), loc_lr_mult=0.1)
    assert all(p.lr_mult == 0.1 for p in m.localization.parameters())
    perturb_regression(m, 0.1, 0)
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6)).astype(np.float32)
    g = np.random.default_rng(1).standard_normal((3, 1, 4, 5)).astype(np.float32)
    results = {}
    for backend in ("numpy", "cpu"):
        m.backend = backend
        m.zero_grad()
        out = m(x)
        gx = m.backward(g)
        results[backend] = (out, gx, [p.grad.copy() for p in m.parameters()])
    for a, b in zip(results["numpy"][:2], results["cpu"][:2]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(results["numpy"][2], results["cpu"][2]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bad_configurations_are_explained():
    with pytest.raises(ValueError, match="6 outputs.*'affine'"):
        SpatialTransformer(loc_net(1, 4, 4, 5), "affine")
    with pytest.raises(ValueError, match="no Linear"):
        SpatialTransformer(nn.Sequential(nn.Flatten()), "affine")
    with pytest.raises(ValueError, match="output_size"):
        SpatialTransformer(loc_net(1, 4, 4, 6), "affine", output_size=(0, 3))
    with pytest.raises(ValueError, match="affine"):
        SpatialTransformer(loc_net(1, 4, 4, 6), "rotation")
    m = SpatialTransformer(loc_net(1, 4, 4, 6), "affine")
    with pytest.raises(ValueError, match=r"4 dimensions"):
        m(np.zeros((4, 4), np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        SpatialTransformer(loc_net(1, 4, 4, 6), "affine").backward(np.zeros((1, 1, 4, 4)))
