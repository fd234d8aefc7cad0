"""The Module protocol: registration, traversal, modes, dtype, state dicts."""
import numpy as np
import pytest

from npstn.nn import Module, Parameter, Sequential
from npstn.testing import GradcheckError, gradcheck


class Scale(Module):
    """y = w * x (+ b): a minimal layer with a hand-written backward."""

    def __init__(self, n, bias=True):
        super().__init__()
        self.weight = Parameter(np.linspace(0.5, 1.5, n))
        if bias:
            self.bias = Parameter(np.zeros(n))

    def forward(self, x):
        self.x = x
        y = x * self.weight.data
        return y + self.bias.data if hasattr(self, "bias") else y

    def backward(self, g):
        self.weight.grad += (g * self.x).sum(axis=0)
        if hasattr(self, "bias"):
            self.bias.grad += g.sum(axis=0)
        return g * self.weight.data


class Buggy(Scale):
    def backward(self, g):
        super().backward(g)
        return g  # forgets the weight: gradcheck must catch it


def test_registration_order_and_torch_style_keys():
    net = Sequential(Scale(3), Sequential(Scale(3, bias=False), Scale(3)))
    assert list(net.state_dict()) == ["0.weight", "0.bias", "1.0.weight", "1.1.weight", "1.1.bias"]
    assert len(net.parameters()) == 5
    assert net.num_parameters() == 15
    assert len(list(net.modules())) == 5


def test_shared_parameter_counted_once():
    a = Scale(2)
    b = Scale(2)
    b.weight = a.weight
    net = Sequential(a, b)
    assert len(net.parameters()) == 3


def test_train_eval_propagates():
    net = Sequential(Scale(2), Sequential(Scale(2)))
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_to_dtype_casts_params_and_grads():
    net = Sequential(Scale(2)).float()
    assert all(p.data.dtype == np.float32 and p.grad.dtype == np.float32 for p in net.parameters())
    net.double()
    assert all(p.data.dtype == np.float64 for p in net.parameters())
    with pytest.raises(TypeError, match="float32 or float64"):
        net.to(np.int32)


def test_state_dict_roundtrip_and_errors():
    a, b = Scale(3), Scale(3)
    a.weight.data[:] = [1.0, 2.0, 3.0]
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(b.weight.data, [1.0, 2.0, 3.0])
    sd = a.state_dict()
    sd["weight"][:] = 0  # a copy: the module is untouched
    assert a.weight.data[0] == 1.0
    with pytest.raises(KeyError, match="missing keys \\['bias'\\]"):
        b.load_state_dict({"weight": np.zeros(3)})
    b.load_state_dict({"weight": np.zeros(3)}, strict=False)
    with pytest.raises(ValueError, match=r"weight has shape \(4\).*expects \(3\)"):
        b.load_state_dict({"weight": np.zeros(4), "bias": np.zeros(3)})


def test_sequential_backward_runs_in_reverse_and_gradchecks():
    net = Sequential(Scale(4), Scale(4))
    x = np.random.default_rng(0).standard_normal((5, 4))
    res = gradcheck(net, x)
    assert res.ok and len(res.reports) == 5


def test_gradcheck_catches_a_wrong_backward():
    x = np.random.default_rng(1).standard_normal((2, 3))
    with pytest.raises(GradcheckError, match="input"):
        gradcheck(Buggy(3), x)


def test_sequential_rejects_non_modules():
    with pytest.raises(TypeError, match="argument 1 must be a Module"):
        Sequential(Scale(2), lambda x: x)


def test_module_without_super_init_is_explained():
    class Bad(Module):
        def __init__(self):
            self.w = Parameter(np.zeros(2))

    with pytest.raises(RuntimeError, match="super\\(\\).__init__"):
        Bad()


def test_sequential_without_input_grad_stops_at_its_first_learnable_layer():
    """Flatten and MaxPool before the first Linear have nothing to learn: skipped, and backward
    returns None; the Linear is told to skip dL/dX; the parameter gradients do not change."""
    from npstn.nn import Flatten, Linear, MaxPool2d, Parallel, ReLU

    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((3, 2, 4, 4)), rng.standard_normal((3, 5))

    def build():
        return Sequential(MaxPool2d(2), Flatten(), Linear(8, 6, rng=1, dtype=np.float64), ReLU(),
                          Linear(6, 5, rng=2, dtype=np.float64))

    ref, seq = build(), build()
    ref(x)
    assert ref.backward(g).shape == x.shape
    seq.needs_input_grad = False
    assert not seq.needs_input_grad and not seq[2].needs_input_grad and seq[4].needs_input_grad
    seq(x)
    seq[0].backward = seq[1].backward = None  # never called
    assert seq.backward(g) is None
    for a, b in zip(seq.parameters(), ref.parameters()):
        np.testing.assert_array_equal(a.grad, b.grad)
    empty = Sequential(Flatten())  # nothing to learn, no gradient wanted: nothing to do
    empty.needs_input_grad = False
    empty(x)
    assert empty.backward(np.ones((3, 32))) is None
    # Parallel tells every branch and returns None; its branches' gradients are unchanged
    par, par_ref = (Parallel(build(), build(), dim=1) for _ in range(2))
    par.needs_input_grad = False
    assert all(not b.needs_input_grad for b in par.children())
    par(x), par_ref(x)
    g2 = rng.standard_normal((3, 10))
    assert par.backward(g2) is None and par_ref.backward(g2).shape == x.shape
    for a, b in zip(par.parameters(), par_ref.parameters()):
        np.testing.assert_array_equal(a.grad, b.grad)
