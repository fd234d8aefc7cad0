"""Linear: gradients, torch parity, init, dtypes, errors."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from npstn.nn import Linear, init
from npstn.testing import gradcheck
from npstn.testing import strategies as sn

torch = pytest.importorskip("torch")


@given(sn.linear_configs(), st.data())
def test_gradcheck_input_and_parameters(cfg, data):
    x = data.draw(sn.float_arrays(cfg.input_shape))
    m = Linear(cfg.in_features, cfg.out_features, bias=cfg.bias, rng=0)
    res = gradcheck(m, x)
    assert [r.name for r in res.reports] == ["input", "weight"] + (["bias"] if cfg.bias else [])


@given(sn.linear_configs(), st.data())
def test_matches_torch_float64(cfg, data):
    x = data.draw(sn.float_arrays(cfg.input_shape))
    seed = data.draw(st.integers(0, 2**31 - 1))
    m = Linear(cfg.in_features, cfg.out_features, bias=cfg.bias, rng=seed, dtype=np.float64)
    y = m(x)
    g = np.random.default_rng(seed).standard_normal(y.shape)
    gx = m.backward(g)

    t = torch.nn.Linear(cfg.in_features, cfg.out_features, bias=cfg.bias, dtype=torch.float64)
    with torch.no_grad():
        t.weight.copy_(torch.tensor(m.weight.data))
        if cfg.bias:
            t.bias.copy_(torch.tensor(m.bias.data))
    xt = torch.tensor(x, requires_grad=True)
    yt = t(xt)
    yt.backward(torch.tensor(g))
    assert y.shape == tuple(yt.shape) == (*cfg.input_shape[:-1], cfg.out_features)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.weight.grad, t.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    if cfg.bias:
        np.testing.assert_allclose(m.bias.grad, t.bias.grad.numpy(), rtol=1e-10, atol=1e-12)


@given(sn.linear_configs(), st.data())
def test_float32_is_preserved(cfg, data):
    x = data.draw(sn.float_arrays(cfg.input_shape, dtype=np.float32))
    m = Linear(cfg.in_features, cfg.out_features, bias=cfg.bias, rng=0)
    assert m.weight.dtype == np.float32
    y = m(x)
    gx = m.backward(np.ones(y.shape, dtype=np.float32))
    assert y.dtype == gx.dtype == m.weight.grad.dtype == np.float32
    ref = x.astype(np.float64) @ m.weight.data.T.astype(np.float64)
    if cfg.bias:
        assert m.bias.grad.dtype == np.float32
        ref = ref + m.bias.data
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_init_is_torch_default_and_seeded():
    m = Linear(50, 40, rng=7)
    bound = 1 / math.sqrt(50)
    assert m.weight.shape == (40, 50) and m.bias.shape == (40,)
    assert np.abs(m.weight.data).max() <= bound and np.abs(m.bias.data).max() <= bound
    assert np.abs(m.weight.data).max() > 0.9 * bound  # spread over the whole interval
    np.testing.assert_array_equal(m.weight.data, Linear(50, 40, rng=7).weight.data)
    init.manual_seed(3)
    a = Linear(5, 4)
    init.manual_seed(3)
    np.testing.assert_array_equal(a.weight.data, Linear(5, 4).weight.data)


def test_no_bias_and_state_dict():
    m = Linear(3, 2, bias=False, rng=0)
    assert m.bias is None and len(m.parameters()) == 1
    assert list(m.state_dict()) == ["weight"]
    assert list(Linear(3, 2, rng=0).state_dict()) == ["weight", "bias"]
    assert repr(m) == "Linear(in_features=3, out_features=2, bias=False)"


def test_backward_accumulates_parameter_grads():
    rng = np.random.default_rng(0)
    m = Linear(4, 3, rng=0, dtype=np.float64)
    x = rng.standard_normal((5, 4))
    g = rng.standard_normal((5, 3))
    m(x)
    m.backward(g)
    w1, b1 = m.weight.grad.copy(), m.bias.grad.copy()
    m.backward(g)
    np.testing.assert_allclose(m.weight.grad, 2 * w1)
    np.testing.assert_allclose(m.bias.grad, 2 * b1)
    m.zero_grad()
    assert not m.weight.grad.any()


def test_errors_name_argument_and_shapes():
    m = Linear(4, 3, rng=0)
    with pytest.raises(RuntimeError, match="Linear.backward called before forward"):
        m.backward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"Linear input must have shape \(\*, in_features\) = \(\*, 4\), got shape \(2, 5\)"):
        m(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        m(np.float32(1.0) * np.ones((), np.float32))
    with pytest.raises(TypeError, match="Linear input must be float32 or float64, got dtype int64"):
        m(np.zeros((2, 4), np.int64))
    with pytest.raises(TypeError, match="Linear input has dtype float64 but Linear.weight has dtype float32"):
        m(np.zeros((2, 4), np.float64))
    m(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"grad_out must have the output's shape \(2, 3\), got \(2, 4\)"):
        m.backward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="in_features must be at least 1, got 0"):
        Linear(0, 3)
    with pytest.raises(TypeError, match="out_features must be an int"):
        Linear(3, 2.0)


@pytest.mark.parametrize("backend", ["numpy", "cpu", "cuda"])
def test_no_input_grad_keeps_weight_and_bias_gradients(backend):
    """needs_input_grad=False (a first layer): dL/dX is None, dL/dW and dL/db bit for bit."""
    import npstn.functional as F

    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 5, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    g = rng.standard_normal((2, 5, 3))
    full = F.linear_backward(g, x, w, b, backend=backend)
    gx, gw, gb = F.linear_backward(g, x, w, b, backend=backend, needs_input_grad=False)
    assert gx is None and full[0].shape == x.shape
    np.testing.assert_array_equal(gw, full[1])
    np.testing.assert_array_equal(gb, full[2])
    m, ref = Linear(4, 3, rng=0, dtype=np.float64), Linear(4, 3, rng=0, dtype=np.float64)
    m.needs_input_grad = False
    m(x), ref(x)
    assert m.backward(g) is None and ref.backward(g).shape == x.shape
    np.testing.assert_array_equal(m.weight.grad, ref.weight.grad)
    with pytest.raises(TypeError, match="needs_input_grad"):
        F.linear_backward(g, x, w, b, needs_input_grad=0)
