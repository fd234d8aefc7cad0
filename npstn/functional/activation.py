"""The rectifier, element-wise, and its backward.

Shapes: input any shape; output and gradient the same shape and dtype::

    forward:   y = max(x, 0)            (NaN stays NaN, as in torch)
    backward:  dL/dx = dL/dy * [x > 0]

The derivative at x = 0 is a sub-gradient choice; like torch we take 0 (and
0 at NaN).

Backends: "numpy", the NumPy expressions (the specification); "cpu", the
one-pass Numba kernels of :mod:`npstn.kernels.cpu.elementwise` (the same
values, bit for bit); "cuda", the element-wise kernels of
:mod:`npstn.kernels.cuda.elementwise`.
"""
from __future__ import annotations

import numpy as np

from npstn._checks import check_float_array, shape_str
from npstn._device import device_args, is_device_array, results_for
from npstn.functional._layer_common import dispatch, upstream_grad
from npstn.kernels.cpu import elementwise as _cpu

__all__ = ["relu", "relu_backward"]


def relu(input, *, backend=None):
    """max(input, 0), element-wise, like ``torch.nn.functional.relu``."""
    check_float_array("relu: input", input)
    backend = dispatch("relu", backend, input)
    if backend == "cpu" and isinstance(input, np.ndarray):
        return _cpu.relu_forward(input)
    if backend == "cuda":
        from npstn.kernels.cuda.elementwise import relu_forward

        (x,), back = device_args(input)
        _contiguous(x)
        return results_for(back, relu_forward(x))
    return np.maximum(input, 0)


def relu_backward(grad_output, input, *, backend=None):
    """dL/dinput = grad_output * [input > 0] for ``relu(input)``; input's shape and dtype."""
    check_float_array("relu_backward: input", input)
    grad_output = upstream_grad("relu_backward", grad_output, input.shape, input.dtype)
    backend = dispatch("relu_backward", backend, grad_output, input)
    if backend == "cpu" and isinstance(input, np.ndarray) and isinstance(grad_output, np.ndarray):
        return _cpu.relu_backward(input, grad_output)
    if backend == "cuda":
        from npstn.kernels.cuda.elementwise import relu_backward as kernel

        (x, g), back = device_args(input, grad_output)
        _contiguous(x)
        return results_for(back, kernel(x, g))
    return np.where(input > 0, grad_output, grad_output.dtype.type(0))


def _contiguous(x):
    if is_device_array(x) and not x.is_c_contiguous():
        raise ValueError(f"relu: device input of shape {shape_str(x.shape)} must be C-contiguous")
