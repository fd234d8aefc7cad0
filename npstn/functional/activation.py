"""The rectifier, element-wise, and the softmax along one axis, each with its backward.

Shapes: input any shape; output and gradient the same shape and dtype::

    forward:   y = max(x, 0)            (NaN stays NaN, as in torch)
    backward:  dL/dx = dL/dy * [x > 0]

The derivative at x = 0 is a sub-gradient choice; like torch we take 0 (and
0 at NaN).

Backends: "numpy", the NumPy expressions (the specification); "cpu", the
one-pass Numba kernels of :mod:`npstn.kernels.cpu.elementwise` (the same
values, bit for bit); "cuda", the element-wise kernels of
:mod:`npstn.kernels.cuda.elementwise`.

The softmax along ``dim`` (any shape; output and gradient the same shape and
dtype), with y the output and g = dL/dy::

    forward:   y_k = exp(x_k - m) / sum_j exp(x_j - m),   m = max_j x_j
    backward:  dL/dx_k = y_k (g_k - sum_j g_j y_j)

Subtracting the maximum keeps every exp() in (0, 1]. The softmax is the
vectorised NumPy on every backend (for "cuda" the values go to the host and
back): npstn uses it on small arrays (class probabilities), where a kernel
would buy nothing.
"""
from __future__ import annotations

import numpy as np

from npstn._checks import check_float_array, shape_str
from npstn._device import device_args, is_device_array, results_for, to_device, to_host
from npstn.functional._layer_common import dispatch, upstream_grad
from npstn.kernels.cpu import elementwise as _cpu

__all__ = ["relu", "relu_backward", "softmax", "softmax_backward"]


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


def _check_dim(name, x, dim):
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not -x.ndim <= dim < x.ndim:
        raise ValueError(f"{name}: dim must be an int in [{-x.ndim}, {x.ndim}) for an input of shape "
                         f"{shape_str(x.shape)}, got {dim!r}")
    return int(dim)


def softmax(input, dim=-1, *, backend=None):
    """exp(input) normalised to sum 1 along ``dim``, like ``torch.nn.functional.softmax(input, dim)``.

    input: any shape with at least one axis, float32/float64; the output has its shape and dtype.
    """
    check_float_array("softmax: input", input)
    dim = _check_dim("softmax", input, dim)
    backend = dispatch("softmax", backend, input)
    x = to_host(input)
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    y = e / e.sum(axis=dim, keepdims=True)
    return to_device(y) if backend == "cuda" and is_device_array(input) else y


def softmax_backward(grad_output, input, dim=-1, *, backend=None, output=None):
    """dL/dinput = y * (g - sum_dim(g * y)) for ``y = softmax(input, dim)``, g = grad_output.

    ``output``: the forward's result, if saved (else it is computed again). Input's shape and dtype.
    """
    check_float_array("softmax_backward: input", input)
    dim = _check_dim("softmax_backward", input, dim)
    grad_output = upstream_grad("softmax_backward", grad_output, input.shape, input.dtype)
    backend = dispatch("softmax_backward", backend, grad_output, input, output)
    y = softmax(to_host(input), dim) if output is None else to_host(output)
    if tuple(y.shape) != tuple(input.shape):
        raise ValueError(f"softmax_backward: output must have the input's shape {shape_str(input.shape)}, "
                         f"got {shape_str(y.shape)}")
    g = to_host(grad_output)
    gx = (y * (g - (g * y).sum(axis=dim, keepdims=True))).astype(input.dtype, copy=False)
    return to_device(gx) if backend == "cuda" and is_device_array(input) else gx
