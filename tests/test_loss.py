"""CrossEntropyLoss: gradients, torch parity, stability, errors."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from npstn.nn import CrossEntropyLoss
from npstn.testing import gradcheck
from npstn.testing import strategies as sn

torch = pytest.importorskip("torch")
F = torch.nn.functional

reductions = st.sampled_from(["mean", "sum", "none"])


def torch_ce(logits, labels, g, reduction="mean"):
    zt = torch.tensor(logits, requires_grad=True)
    lt = F.cross_entropy(zt, torch.tensor(labels.astype(np.int64)), reduction=reduction)
    lt.backward(torch.tensor(g, dtype=zt.dtype))
    return lt.detach().numpy(), zt.grad.numpy()


@given(sn.logits_and_labels(), reductions)
def test_gradcheck(batch, reduction):
    logits, labels = batch
    gradcheck(CrossEntropyLoss(reduction), (logits, labels))


@given(sn.logits_and_labels(), reductions, st.integers(0, 2**31 - 1))
def test_matches_torch_float64(batch, reduction, seed):
    logits, labels = batch
    m = CrossEntropyLoss(reduction)
    loss = m(logits, labels)
    g = np.random.default_rng(seed).standard_normal(np.shape(loss))
    grad = m.backward(g)
    loss_t, grad_t = torch_ce(logits, labels, g, reduction)
    assert np.shape(loss) == loss_t.shape
    np.testing.assert_allclose(loss, loss_t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, grad_t, rtol=1e-10, atol=1e-12)


@given(sn.logits_and_labels(dtype=np.float32))
def test_float32_is_preserved_and_matches_torch(batch):
    logits, labels = batch
    m = CrossEntropyLoss()
    loss = m(logits, labels)
    grad = m.backward()
    assert np.asarray(loss).dtype == np.float32 and np.ndim(loss) == 0
    assert grad.dtype == np.float32 and grad.shape == logits.shape
    loss_t, grad_t = torch_ce(logits, labels, 1.0)
    np.testing.assert_allclose(loss, loss_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, grad_t, rtol=1e-5, atol=1e-6)


@given(sn.logits_and_labels())
def test_default_backward_is_softmax_minus_onehot_over_n(batch):
    logits, labels = batch
    n, k = logits.shape
    m = CrossEntropyLoss()
    m(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    want = (p - np.eye(k)[labels]) / n
    np.testing.assert_allclose(m.backward(), want, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(m.backward(2.5), 2.5 * want, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(m.backward().sum(axis=1), 0, atol=1e-14)  # rows of a softmax Jacobian


@given(sn.logits_and_labels(), st.floats(-1e4, 1e4))
def test_row_shift_invariance(batch, c):
    logits, labels = batch
    m = CrossEntropyLoss()
    loss, grad = m(logits, labels), m.backward()
    np.testing.assert_allclose(m(logits + c, labels), loss, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(m.backward(), grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_stay_finite_and_match_torch(dtype):
    logits = np.array([[1000.0, -1000.0, 0.0], [-800.0, -900.0, -1000.0], [1e4, 1e4, 1e4]], dtype)
    labels = np.array([1, 0, 2])
    m = CrossEntropyLoss()
    loss, grad = m(logits, labels), m.backward()
    assert np.isfinite(loss) and np.isfinite(grad).all()
    loss_t, grad_t = torch_ce(logits, labels, 1.0)
    np.testing.assert_allclose(loss, loss_t, rtol=1e-6)
    np.testing.assert_allclose(grad, grad_t, rtol=1e-6, atol=1e-7)


def test_errors_name_argument_and_shapes():
    m = CrossEntropyLoss()
    z = np.zeros((3, 4))
    with pytest.raises(RuntimeError, match="CrossEntropyLoss.backward called before forward"):
        m.backward()
    with pytest.raises(TypeError, match="labels must be integer class indices, got dtype float64"):
        m(z, np.zeros(3))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, K\) = \[0, 4\) for logits of shape \(3, 4\), got label 4"):
        m(z, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"got label -1"):
        m(z, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) = \(3,\) to match logits of shape \(3, 4\), got shape \(2\)"):
        m(z, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"logits must have 2 dimensions \(N, K\), got shape \(4\)"):
        m(np.zeros(4), np.array([1]))
    with pytest.raises(TypeError, match="logits must be float32 or float64, got dtype int64"):
        m(np.zeros((3, 4), np.int64), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        CrossEntropyLoss("avg")
    none = CrossEntropyLoss("none")
    none(z, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"grad must have the loss's shape \(3\) \(reduction='none'\), got \(\)"):
        none.backward()
    m(z, [0, 1, 2])  # a list of ints is accepted
    assert m.parameters() == []
