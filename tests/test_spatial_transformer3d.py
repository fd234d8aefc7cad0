"""The 3D spatial transformer: the affine3d transform, SpatialTransformer on volumes, Project."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from npstn import nn
import npstn.functional as F
from npstn.stn import Affine3DTransform, SpatialTransformer, get_transform
from npstn.testing import gradcheck


def loc_net(c, d, h, w, hidden=5):
    return nn.Sequential(nn.Flatten(), nn.Linear(c * d * h * w, hidden), nn.ReLU(), nn.Linear(hidden, 12))


@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_initialisation_returns_the_volume(align_corners):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    m = SpatialTransformer(loc_net(3, 4, 5, 6), "affine3d", align_corners=align_corners)
    out = m(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, x, atol=2e-5)
    assert np.all(m.localization[-1].weight.data == 0)
    np.testing.assert_array_equal(m.theta[0], np.eye(3, 4, dtype=np.float32).ravel())
    assert m.grid.shape == (2, 4, 5, 6, 3)


def test_transform_registry_and_identity():
    t = get_transform("affine3d")
    assert isinstance(t, Affine3DTransform) and t.num_params == 12 and t.spatial_dims == 3
    theta = t.identity(np.float64)[None]
    np.testing.assert_allclose(t.grid(theta, (1, 1, 2, 3, 4)), F.base_grid((1, 1, 2, 3, 4)), atol=1e-15)


@settings(max_examples=6)
@given(n=st.integers(1, 2), dhw=st.tuples(st.integers(1, 3), st.integers(2, 3), st.integers(2, 3)),
       out=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3))),
       align_corners=st.booleans(), seed=st.integers(0, 2**16))
def test_gradients_wrt_input_and_every_parameter(n, dhw, out, align_corners, seed):
    d, h, w = dhw
    nn.init.manual_seed(seed)
    m = SpatialTransformer(loc_net(2, d, h, w), "affine3d", out, align_corners=align_corners, backend="numpy")
    rng = np.random.default_rng(seed)
    reg = m.localization[-1]  # off the identity, so theta depends on the input
    reg.weight.data[...] = 0.05 * rng.standard_normal(reg.weight.data.shape)
    reg.bias.data[...] += 0.05 * rng.standard_normal(reg.bias.data.shape)
    m.to(np.float64)
    x = rng.uniform(-1, 1, (n, 2, d, h, w))
    assert gradcheck(m, x, atol=1e-5, rtol=1e-4)


def test_transformer_then_projection_then_classifier_gradcheck():
    """The mnist3d ST model's chain: ST(affine3d) -> Project -> Linear, checked end to end."""
    nn.init.manual_seed(3)
    st_module = SpatialTransformer(loc_net(1, 3, 4, 4), "affine3d", backend="cpu")
    rng = np.random.default_rng(3)
    st_module.localization[-1].weight.data[...] = 0.05 * rng.standard_normal((12, 5))
    model = nn.Sequential(st_module, nn.Project(), nn.Flatten(), nn.Linear(16, 3))
    model.to(np.float64)
    assert gradcheck(model, rng.uniform(-1, 1, (2, 1, 3, 4, 4)), atol=1e-5, rtol=1e-4)


def test_project_layer():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5, 6))
    layer = nn.Project()
    out = layer(x)
    np.testing.assert_allclose(out, x.sum(axis=2))
    g = rng.standard_normal(out.shape)
    gi = layer.backward(g)
    assert gi.shape == x.shape and gi.flags.c_contiguous
    np.testing.assert_array_equal(gi, np.broadcast_to(g[:, :, None], x.shape))
    assert gradcheck(layer, x)
    assert list(layer.parameters()) == []
    mean = nn.Project("mean")
    np.testing.assert_allclose(mean(x), x.mean(axis=2), rtol=1e-14)
    np.testing.assert_allclose(mean.backward(g), gi / 4, rtol=1e-15)
    assert gradcheck(mean, x)


def test_errors_name_the_argument():
    m = SpatialTransformer(loc_net(1, 2, 3, 3), "affine3d")
    with pytest.raises(ValueError, match=r"input must have 5 dimensions \(N, C, D, H, W\)"):
        m(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"output_size must be None or \(D_out, H_out, W_out\)"):
        SpatialTransformer(loc_net(1, 2, 3, 3), "affine3d", (3, 3))
    with pytest.raises(ValueError, match=r"project: input must have 5 dimensions"):
        F.project(np.zeros((1, 2, 3, 4)))
    with pytest.raises(ValueError, match=r"project_backward: grad_output must have the output's shape "
                                         r"\(1, 2, 4, 5\)"):
        F.project_backward(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 3, 4, 5)))
    with pytest.raises(ValueError, match=r"reduction must be 'sum' or 'mean', got 'max'"):
        F.project(np.zeros((1, 2, 3, 4, 5)), "max")
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Project().backward(np.zeros((1, 1, 2, 2)))
