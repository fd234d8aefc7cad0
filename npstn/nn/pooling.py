"""MaxPool2d and AvgPool2d: the layers around :func:`npstn.functional.max_pool2d` and
:func:`npstn.functional.avg_pool2d`, with torch's exact semantics.

The output size, the windows, the argmax and divisor conventions and the
equations (forward and backward side by side) are in
:mod:`npstn.functional.pooling`. A layer validates its arguments once,
caches its input (and MaxPool2d the argmax indices) and calls the functional
pair; ``backend`` chooses the NumPy specification, the Numba CPU kernels or
the CUDA kernels (a device array input, after ``model.to("cuda")``, runs on
the GPU and the output and input gradient stay there).
"""
from __future__ import annotations

import numpy as np

from npstn import functional as F
from npstn._backend import resolve_backend
from npstn._checks import check_float_array
from npstn._device import is_device_array
from npstn.functional.pooling import pool_output_size, pool_params  # noqa: F401  (pool_output_size: its old home)
from npstn.nn.module import Module, layer_backend, layer_grad

__all__ = ["MaxPool2d", "AvgPool2d"]


class _Pool2d(Module):
    """Shared argument handling of MaxPool2d and AvgPool2d."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, backend=None):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = bool(ceil_mode)
        self._k, self._s, self._p = pool_params(name, kernel_size, stride, padding)
        if backend is not None:
            resolve_backend(backend)  # validates the name now rather than at the first call
        self.backend = backend
        self._x = None  # the last forward's input
        self._out_shape = None

    def _args(self):
        """The functional op's positional arguments after the input."""
        return self.kernel_size, self.stride, self.padding, self.ceil_mode

    def _grad(self, grad_out):
        """grad_out checked against the forward's output (the layer's own messages)."""
        name = type(self).__name__
        if self._x is None:
            raise RuntimeError(f"{name}.backward called before forward: call forward(x) first")
        return layer_grad(name, grad_out, is_device_array(self._x), self._out_shape, self._x.dtype)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, ceil_mode={self.ceil_mode}")


class MaxPool2d(_Pool2d):
    """Maximum over each kernel_size window, like ``torch.nn.MaxPool2d`` (dilation 1).

    Parameters
    ----------
    kernel_size : int or (kh, kw)
    stride : int or (sh, sw); default kernel_size
    padding : int or (ph, pw), implicit -inf padding; at most kernel_size // 2
    ceil_mode : use ceil instead of floor for the output size
    backend : {"numpy", "cpu", "cuda"} or None, of :func:`npstn.functional.max_pool2d`

    Shapes
    ------
    input  : (N, C, H, W)  (or (C, H, W))
    output : (N, C, H_out, W_out), the input's dtype; H_out in :mod:`npstn.functional.pooling`
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, *, backend=None):
        super().__init__(kernel_size, stride, padding, ceil_mode, backend)
        self._indices = None  # the argmax of each window, saved for the backward
        self._relu = False  # whether the last forward was relu_forward (the fused op)

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array("MaxPool2d input", x)
        out, self._indices = F.max_pool2d(x, *self._args(), return_indices=True,
                                          backend=layer_backend(self.backend, x))
        self._x, self._out_shape, self._relu = x, tuple(out.shape), False
        return out

    def relu_forward(self, x: np.ndarray) -> np.ndarray:
        """This pool applied to relu(x), fused (:func:`npstn.functional.relu_max_pool2d`);
        the next ``backward`` then returns dL/dx through both. :class:`npstn.nn.Sequential`
        calls it for a ``ReLU()`` directly followed by this layer."""
        check_float_array("MaxPool2d input", x)
        out, self._indices = F.relu_max_pool2d(x, *self._args(), return_indices=True,
                                               backend=layer_backend(self.backend, x))
        self._x, self._out_shape, self._relu = x, tuple(out.shape), True
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        g = self._grad(grad_out)
        backward = F.relu_max_pool2d_backward if self._relu else F.max_pool2d_backward
        return backward(g, self._x, *self._args(), indices=self._indices,
                        backend=layer_backend(self.backend, self._x))


class AvgPool2d(_Pool2d):
    """Mean over each kernel_size window, like ``torch.nn.AvgPool2d``.

    Parameters
    ----------
    kernel_size : int or (kh, kw)
    stride : int or (sh, sw); default kernel_size
    padding : int or (ph, pw), implicit zero padding; at most kernel_size // 2
    ceil_mode : use ceil instead of floor for the output size
    count_include_pad : count the zero padding in the divisor (default True)
    divisor_override : if given, divide every window sum by this instead
    backend : {"numpy", "cpu", "cuda"} or None, of :func:`npstn.functional.avg_pool2d`

    Shapes
    ------
    input  : (N, C, H, W)  (or (C, H, W))
    output : (N, C, H_out, W_out), the input's dtype; H_out in :mod:`npstn.functional.pooling`
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None, *, backend=None):
        super().__init__(kernel_size, stride, padding, ceil_mode, backend)
        self.count_include_pad = bool(count_include_pad)
        if divisor_override is not None and (
            isinstance(divisor_override, bool)
            or not isinstance(divisor_override, (int, np.integer))
            or divisor_override < 1
        ):
            raise ValueError(
                f"AvgPool2d: divisor_override must be None or a positive int, got {divisor_override!r}"
            )
        self.divisor_override = divisor_override

    def _args(self):
        return (*super()._args(), self.count_include_pad, self.divisor_override)

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array("AvgPool2d input", x)
        out = F.avg_pool2d(x, *self._args(), backend=layer_backend(self.backend, x))
        self._x, self._out_shape = x, tuple(out.shape)
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        g = self._grad(grad_out)
        return F.avg_pool2d_backward(g, self._x, *self._args(),
                                     backend=layer_backend(self.backend, self._x))

    def extra_repr(self) -> str:
        extra = f", count_include_pad={self.count_include_pad}"
        if self.divisor_override is not None:
            extra += f", divisor_override={self.divisor_override}"
        return super().extra_repr() + extra
