"""Fully connected layer: ``Linear(in_features, out_features, bias=True)``.

For an input row x (in_features,), weight W (out, in) and bias b (out,),

    forward:   y = x W^T + b                       y: (out,)

and for a batch X (N, in) the rows stack: Y = X W^T + b  (N, out). Given the
upstream gradient G = dL/dY (N, out), the chain rule gives

    backward:  dL/dX = G W                         (N, in)
               dL/dW = G^T X                       (out, in)   summed over the batch
               dL/db = sum_n G[n, :]               (out,)

Leading dimensions beyond the batch, ``(*, in_features)``, are flattened into
one batch axis for the matrix products and restored afterwards, as in torch.
The layer caches its input and calls the functional pair
:func:`npstn.functional.linear` / :func:`~npstn.functional.linear_backward`
(BLAS on the host; on the GPU, after ``module.to("cuda")``, the tiled GEMM of
:mod:`npstn.kernels.cuda.matmul`, with nothing copied to the host).

Initialisation is torch's default: weight and bias both U(-1/sqrt(in),
1/sqrt(in)) (see :mod:`npstn.nn.init`).
"""
from __future__ import annotations

import numpy as np

from npstn import functional as F
from npstn._backend import resolve_backend
from npstn._checks import check_bool, check_float_array, check_same_dtype, shape_str
from npstn._device import check_module_device, is_device_array
from npstn.nn import init
from npstn.nn.module import Module, Parameter, layer_backend, layer_grad

__all__ = ["Linear"]


def _data(p):
    """A Parameter's array, or None for an absent one (bias=False)."""
    return None if p is None else p.data


def _positive_int(value, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"Linear: {name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"Linear: {name} must be at least 1, got {value}")
    return int(value)


class Linear(Module):
    """y = x W^T + b.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of each input and output row.
    bias : bool
        Whether to add a learnable bias (default True).
    rng : numpy Generator, int seed or None
        Source of the initial weights; None uses :func:`npstn.nn.init.manual_seed`'s
        generator.
    dtype : float32 (default) or float64.
    backend : {"numpy", "cpu", "cuda"} or None
        Backend of :func:`npstn.functional.linear` (None: the input's
        device, else the process default; see :mod:`npstn._backend`).

    Shapes
    ------
    input  : (*, in_features)      e.g. (N, in_features)
    output : (*, out_features)
    weight : (out_features, in_features)
    bias   : (out_features,)

    ``needs_input_grad`` (default True; set it False on a first layer, whose
    input is data): ``backward`` then skips dL/dX = G W and returns None.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 rng=None, dtype=np.float32, *, backend=None):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        check_bool("Linear: bias", bias)
        rng = init.get_rng(rng)
        self.weight = Parameter(init.uniform_fan_in(
            (self.out_features, self.in_features), self.in_features, rng, dtype))
        if bias:
            self.bias = Parameter(init.uniform_fan_in(
                (self.out_features,), self.in_features, rng, dtype))
        else:
            self.bias = None
        if backend is not None:
            resolve_backend(backend)  # validates the name now rather than at the first call
        self.backend = backend
        self._x = None  # the input, cached by forward for backward

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array("Linear input", x)
        if len(x.shape) < 1 or tuple(x.shape)[-1] != self.in_features:
            raise ValueError(
                f"Linear input must have shape (*, in_features) = (*, {self.in_features}), "
                f"got shape {shape_str(x.shape)}"
            )
        check_same_dtype("Linear input", x, "Linear.weight", self.weight.data)
        check_module_device("Linear", x, (self.weight, self.bias))
        self._x = x
        return F.linear(x, self.weight.data, _data(self.bias), backend=layer_backend(self.backend, x))

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._x is None:
            raise RuntimeError("Linear.backward called before forward: call forward(x) first")
        want = (*tuple(self._x.shape)[:-1], self.out_features)
        grad_out = layer_grad("Linear", grad_out, is_device_array(self._x), want, self._x.dtype)
        grad_in, grad_w, grad_b = F.linear_backward(grad_out, self._x, self.weight.data,
                                                    _data(self.bias),
                                                    backend=layer_backend(self.backend, self._x),
                                                    needs_input_grad=bool(self.needs_input_grad))
        self.weight.accumulate_grad(grad_w)
        if self.bias is not None:
            self.bias.accumulate_grad(grad_b)
        return grad_in

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
