"""ReLU, Softmax, Flatten, Dropout: gradients, torch parity, modes, errors."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from npstn.nn import Dropout, Flatten, ReLU, Softmax, init
from npstn.testing import gradcheck
from npstn.testing import strategies as sn

torch = pytest.importorskip("torch")


def away_from_zero(x, margin=1e-3):
    """Push values off ReLU's kink so that central differences stay on one side."""
    return np.where(np.abs(x) < margin, np.copysign(margin, x) + x, x)


# -- ReLU ------------------------------------------------------------------------

@given(sn.float_arrays(sn.shapes(max_dims=4, max_side=4)))
def test_relu_gradcheck(x):
    gradcheck(ReLU(), away_from_zero(x))


@given(sn.float_arrays(sn.shapes(max_dims=4, max_side=4)), sn.dtypes(), st.booleans())
def test_relu_matches_torch(x, dtype, with_zeros):
    x = x.astype(dtype)
    if with_zeros:  # exact zeros: torch's sub-gradient there is 0, and ours
        x[..., ::2] = 0
    m = ReLU()
    y = m(x)
    g = np.random.default_rng(0).standard_normal(y.shape).astype(dtype)
    gx = m.backward(g)
    assert y.dtype == gx.dtype == dtype and y.shape == x.shape
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.relu(xt)
    yt.backward(torch.tensor(g))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(gx, xt.grad.numpy())


def test_relu_subgradient_at_zero_is_zero():
    m = ReLU()
    m(np.array([-1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(m.backward(np.array([5.0, 5.0, 5.0])), [0.0, 0.0, 5.0])


def test_relu_errors():
    m = ReLU()
    with pytest.raises(RuntimeError, match="ReLU.backward called before forward"):
        m.backward(np.zeros(3))
    with pytest.raises(TypeError, match="ReLU input must be float32 or float64, got dtype int32"):
        m(np.zeros(3, np.int32))
    m(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"grad_out must have the output's shape \(2, 3\), got \(3, 2\)"):
        m.backward(np.zeros((3, 2)))


# -- Softmax -----------------------------------------------------------------------

@given(sn.float_arrays(sn.shapes(min_dims=1, max_dims=4, max_side=4), low=-20, high=20), sn.dtypes(), st.data())
def test_softmax_matches_torch_and_gradcheck(x, dtype, data):
    dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
    gradcheck(Softmax(dim), x)
    x = x.astype(dtype)
    m = Softmax(dim)
    y = m(x)
    g = np.random.default_rng(0).standard_normal(y.shape).astype(dtype)
    gx = m.backward(g)
    assert y.dtype == gx.dtype == dtype and y.shape == gx.shape == x.shape
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.Softmax(dim)(xt)
    yt.backward(torch.tensor(g))
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(gx, xt.grad.numpy(), **tol)


def test_softmax_is_stable_for_large_logits_and_errors():
    y = Softmax(1)(np.array([[1000.0, 0.0, -1000.0]]))
    np.testing.assert_allclose(y, [[1.0, 0.0, 0.0]])
    m = Softmax(1)
    with pytest.raises(RuntimeError, match="Softmax.backward called before forward"):
        m.backward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"softmax: dim must be an int in \[-2, 2\)"):
        Softmax(2)(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="Softmax: dim must be an int"):
        Softmax(1.5)
    m(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"grad_out must have the output's shape \(2, 3\), got \(3, 2\)"):
        m.backward(np.zeros((3, 2)))


# -- Flatten -----------------------------------------------------------------------

@given(sn.float_arrays(sn.shapes(min_dims=2, max_dims=4, max_side=4)), st.data())
def test_flatten_matches_torch_and_gradcheck(x, data):
    nd = x.ndim
    start = data.draw(st.integers(-nd, nd - 1))
    end = data.draw(st.integers((start % nd) - nd, -1))  # end at or after start
    m = Flatten(start, end)
    y = m(x)
    want = torch.flatten(torch.tensor(x), start, end)
    assert y.shape == tuple(want.shape)
    np.testing.assert_array_equal(y, want.numpy())
    assert m.backward(y).shape == x.shape
    np.testing.assert_array_equal(m.backward(y), x)
    gradcheck(Flatten(start, end), x)


@given(sn.nchw_shapes(), sn.dtypes())
def test_flatten_default_is_nchw_to_n_chw(shape, dtype):
    x = np.ones(shape, dtype)
    m = Flatten()
    y = m(x)
    n, c, h, w = shape
    assert y.shape == (n, c * h * w) and y.dtype == dtype
    assert m.backward(y).dtype == dtype


def test_flatten_errors():
    with pytest.raises(RuntimeError, match="Flatten.backward called before forward"):
        Flatten().backward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"Flatten\(start_dim=1, end_dim=-1\) is out of range for an input of shape \(5\)"):
        Flatten()(np.zeros(5))
    with pytest.raises(ValueError, match=r"start_dim=2 comes after end_dim=1"):
        Flatten(2, 1)(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="Flatten input must be float32 or float64"):
        Flatten()(np.zeros((2, 3), np.uint8))
    with pytest.raises(TypeError, match="start_dim must be an int"):
        Flatten(1.0)
    m = Flatten()
    m(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"cannot be reshaped to the input's shape \(2, 3, 4\)"):
        m.backward(np.zeros((2, 11)))


# -- Dropout ------------------------------------------------------------------------

@given(sn.float_arrays(sn.shapes(max_side=6), low=0.5, high=2.0), sn.dropout_probs(), sn.dtypes(),
       st.integers(0, 2**31 - 1))
def test_dropout_train_forward_and_backward_use_one_mask(x, p, dtype, seed):
    x = x.astype(dtype)  # strictly positive: a zero in the output means "dropped"
    m = Dropout(p, rng=seed)
    y = m(x)
    assert y.dtype == dtype and y.shape == x.shape
    mask = (y != 0).astype(dtype)
    scale = dtype.type(1 / (1 - p))
    np.testing.assert_allclose(y, x * mask * scale, rtol=1e-6 if dtype == np.float32 else 1e-12)
    g = np.random.default_rng(seed).standard_normal(x.shape).astype(dtype)
    gx = m.backward(g)
    assert gx.dtype == dtype
    np.testing.assert_allclose(gx, mask * g * scale, rtol=1e-6 if dtype == np.float32 else 1e-12)


@given(sn.float_arrays(sn.shapes(max_side=5)), st.floats(0.05, 0.9), st.integers(0, 2**31 - 1))
def test_dropout_gradcheck_with_a_frozen_mask(x, p, seed):
    """Re-seeding the generator freezes the mask, making dropout a fixed linear map."""
    def f(x):
        return Dropout(p, rng=seed)(x)

    def backward(g, x):
        m = Dropout(p, rng=seed)
        m(x)
        return m.backward(g)

    gradcheck(f, x, backward=backward)


@given(sn.float_arrays(sn.shapes(max_side=5)), sn.dropout_probs())
def test_dropout_eval_mode_is_identity(x, p):
    m = Dropout(p, rng=0).eval()
    np.testing.assert_array_equal(m(x), x)
    g = np.random.default_rng(1).standard_normal(x.shape)
    np.testing.assert_array_equal(m.backward(g), g)
    m.train()
    if p > 0.5:
        assert (m(np.ones((100,))) == 0).any()


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_mask_statistics(p):
    n = 200_000
    y = Dropout(p, rng=12345)(np.ones(n))
    dropped = np.mean(y == 0)
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(dropped - p) < 6 * sigma
    assert abs(y.mean() - 1.0) < 6 * np.sqrt(p / (1 - p) / n)  # inverted dropout keeps the mean
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / (1 - p)])


def test_dropout_masks_are_fresh_and_reproducible():
    x = np.ones(1000)
    m = Dropout(0.5, rng=0)
    a, b = m(x), m(x)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, Dropout(0.5, rng=0)(x))
    init.manual_seed(9)
    c = Dropout(0.5)(x)
    init.manual_seed(9)
    np.testing.assert_array_equal(c, Dropout(0.5)(x))


def test_dropout_errors():
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\), got p=1"):
        Dropout(1.0)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\), got p=-0.1"):
        Dropout(-0.1)
    with pytest.raises(TypeError, match="p must be a float"):
        Dropout("0.5")
    with pytest.raises(RuntimeError, match="Dropout.backward called before forward"):
        Dropout().backward(np.zeros(3))
    with pytest.raises(TypeError, match="Dropout input must be float32 or float64, got dtype int64"):
        Dropout()(np.zeros(3, np.int64))
    m = Dropout(0.5, rng=0)
    m(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"grad_out must have the output's shape \(2, 3\), got \(6\)"):
        m.backward(np.ones(6))
    assert repr(m) == "Dropout(p=0.5)"
