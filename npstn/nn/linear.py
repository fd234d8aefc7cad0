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
All three products are single BLAS calls (``@``). On the GPU (input and
parameters device arrays, after ``module.to("cuda")``) they are the tiled
GEMM of :mod:`npstn.kernels.cuda.matmul` (bias added in its epilogue) and
dL/db a column-sum kernel; nothing is copied to the host.

Initialisation is torch's default: weight and bias both U(-1/sqrt(in),
1/sqrt(in)) (see :mod:`npstn.nn.init`).
"""
from __future__ import annotations

import numpy as np

from npstn._checks import check_bool, check_float_array, check_same_dtype, shape_str
from npstn._device import check_module_device, device_grad, is_device_array
from npstn.nn import init
from npstn.nn.module import Module, Parameter

__all__ = ["Linear"]


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

    Shapes
    ------
    input  : (*, in_features)      e.g. (N, in_features)
    output : (*, out_features)
    weight : (out_features, in_features)
    bias   : (out_features,)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 rng=None, dtype=np.float32):
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
        self._x2d = None  # the flattened input, cached by forward for backward
        self._in_shape = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array("Linear input", x)
        if is_device_array(x):
            return self._forward_cuda(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear input must have shape (*, in_features) = (*, {self.in_features}), "
                f"got shape {shape_str(x.shape)}"
            )
        check_same_dtype("Linear input", x, "Linear.weight", self.weight.data)
        check_module_device("Linear", x, (self.weight, self.bias))
        x2d = x.reshape(-1, self.in_features)
        y = x2d @ self.weight.data.T  # (M, out)
        if self.bias is not None:
            y += self.bias.data
        self._x2d, self._in_shape = x2d, x.shape
        return y.reshape(*x.shape[:-1], self.out_features)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._x2d is None:
            raise RuntimeError("Linear.backward called before forward: call forward(x) first")
        want = (*self._in_shape[:-1], self.out_features)
        if is_device_array(self._x2d):
            return self._backward_cuda(grad_out, want)
        grad_out = np.asarray(grad_out, dtype=self._x2d.dtype)
        if grad_out.shape != want:
            raise ValueError(
                f"Linear.backward: grad_out must have the output's shape {shape_str(want)}, "
                f"got {shape_str(grad_out.shape)}"
            )
        g2d = grad_out.reshape(-1, self.out_features)  # (M, out)
        self.weight.grad += g2d.T @ self._x2d  # (out, in)
        if self.bias is not None:
            self.bias.grad += g2d.sum(axis=0)  # (out,)
        grad_in = g2d @ self.weight.data  # (M, in)
        return grad_in.reshape(self._in_shape)

    # -- the GPU path: device arrays in, device arrays out ------------------------
    def _forward_cuda(self, x):
        from npstn.kernels.cuda import matmul

        shape = tuple(x.shape)
        if len(shape) < 1 or shape[-1] != self.in_features:
            raise ValueError(
                f"Linear input must have shape (*, in_features) = (*, {self.in_features}), "
                f"got shape {shape_str(shape)}"
            )
        check_same_dtype("Linear input", x, "Linear.weight", self.weight.data)
        check_module_device("Linear", x, (self.weight, self.bias))
        rows = int(x.size) // self.in_features
        x2d = x.reshape(rows, self.in_features)
        y = matmul.gemm(x2d, self.weight.data, trans_b=True,  # X W^T + b
                        bias=None if self.bias is None else self.bias.data)
        self._x2d, self._in_shape = x2d, tuple(x.shape)
        return y.reshape(*shape[:-1], self.out_features)

    def _backward_cuda(self, grad_out, want):
        from npstn.kernels.cuda import matmul

        g = device_grad("Linear.backward", grad_out, want, self._x2d.dtype)
        g2d = g.reshape(self._x2d.shape[0], self.out_features)  # (M, out)
        matmul.gemm(g2d, self._x2d, trans_a=True, out=self.weight.grad, accumulate=True)  # += G^T X
        if self.bias is not None:
            matmul.sum_axis(g2d, 0, out=self.bias.grad, accumulate=True)  # += sum_n G[n, :]
        grad_in = matmul.gemm(g2d, self.weight.data)  # G W
        return grad_in.reshape(*self._in_shape)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
