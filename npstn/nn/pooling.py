"""2-D max and average pooling with torch's exact semantics.

Output size (per spatial dim; H shown, W alike), as torch computes it::

    H_out = floor((H + 2 pad - k + (s - 1 if ceil_mode else 0)) / s) + 1
    if ceil_mode and (H_out - 1) * s >= H + pad:   # last window would start in the
        H_out -= 1                                 # right padding: drop it

Window of output row oh: rows [oh*s - pad, oh*s - pad + k). Torch requires
pad <= k // 2, and the padded input must hold at least one window.

Max pooling (padding counts as -inf)::

    forward:   y[n,c,oh,ow] = max over the window of x[n,c,ih,iw]
    backward:  dL/dx[n,c,ih,iw] = sum of dL/dy[n,c,oh,ow] over the windows whose
               argmax is (ih, iw)

The argmax is the *first* maximum in row-major scan order of the window, as in
torch, so ties resolve the same way (a sub-gradient choice).

Average pooling::

    forward:   y[n,c,oh,ow] = (1 / D) * sum over the window of x[n,c,ih,iw]
    backward:  dL/dx[n,c,ih,iw] = sum over windows containing (ih, iw) of dL/dy[n,c,oh,ow] / D

where the divisor D is ``divisor_override`` if given; else, with
``count_include_pad`` (the default), the window's area clipped to the padded
input (smaller for the last ceil_mode window); else the number of real
input pixels in the window.

The loops are Numba kernels in :mod:`npstn.kernels.cpu.pool`, parallel over
the N*C planes (serially for small inputs, see PARALLEL_MIN_SIZE). A device
array input (a model moved with ``.to("cuda")``) runs the CUDA kernels of
:mod:`npstn.kernels.cuda.pool` instead (same semantics, ceil_mode included)
and the output and input gradient stay on the device.
"""
from __future__ import annotations

import numpy as np

from npstn._checks import check_float_array, pair, shape_str
from npstn._device import device_grad, is_device_array
from npstn.kernels.cpu import pool as _k
from npstn.nn.module import Module

__all__ = ["MaxPool2d", "AvgPool2d"]


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """Torch's pooling output length along one dimension (may be < 1 for a too-small input)."""
    out = (size + 2 * padding - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


class _Pool2d(Module):
    """Shared argument handling and shape logic of MaxPool2d and AvgPool2d."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = bool(ceil_mode)
        self._k = pair(kernel_size, f"{name}: kernel_size")
        self._s = pair(self.stride, f"{name}: stride")
        self._p = pair(padding, f"{name}: padding")
        if min(self._k) < 1:
            raise ValueError(f"{name}: kernel_size must be positive, got {kernel_size!r}")
        if min(self._s) < 1:
            raise ValueError(f"{name}: stride must be positive, got {stride!r}")
        if min(self._p) < 0:
            raise ValueError(f"{name}: padding must be non-negative, got {padding!r}")
        if self._p[0] > self._k[0] // 2 or self._p[1] > self._k[1] // 2:
            raise ValueError(
                f"{name}: padding should be at most half of kernel_size, got padding={padding!r} "
                f"and kernel_size={kernel_size!r} (torch requires padding <= kernel_size // 2)"
            )
        self._in_shape = None  # shape of the last forward's input
        self._out_shape = None
        self._dtype = None
        self._on_device = False  # whether the last forward's input was a device array

    def _planes(self, x: np.ndarray):
        """Validate x and view it as (P, H, W) planes; return (planes, out_shape)."""
        name = type(self).__name__
        check_float_array(f"{name} input", x)
        if x.ndim not in (3, 4):
            raise ValueError(
                f"{name} input must have 4 dimensions (N, C, H, W) (or 3 for one unbatched "
                f"image (C, H, W)), got shape {shape_str(x.shape)}"
            )
        H, W = x.shape[-2:]
        if H < 1 or W < 1:
            raise ValueError(f"{name} input must have H, W >= 1, got shape {shape_str(x.shape)}")
        (kh, kw), (sh, sw), (ph, pw) = self._k, self._s, self._p
        out_h = pool_output_size(H, kh, sh, ph, self.ceil_mode)
        out_w = pool_output_size(W, kw, sw, pw, self.ceil_mode)
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"{name}: kernel_size={self.kernel_size!r} is larger than the padded input: input "
                f"of shape {shape_str(x.shape)} with padding={self.padding!r} is "
                f"{H + 2 * ph}x{W + 2 * pw} padded, and the output size would be "
                f"{out_h}x{out_w}; use a smaller kernel or a larger input"
            )
        lead = tuple(x.shape[:-2])
        if is_device_array(x):
            if not x.is_c_contiguous():
                raise ValueError(f"{name}: device input of shape {shape_str(x.shape)} must be C-contiguous")
            planes = x.reshape(int(x.size) // (H * W), H, W)
        else:
            planes = np.ascontiguousarray(x).reshape(-1, H, W)
        self._in_shape, self._dtype = x.shape, x.dtype
        self._out_shape = (*lead, out_h, out_w)
        self._on_device = is_device_array(x)
        return planes, self._out_shape

    def _grad_planes(self, grad_out) -> np.ndarray:
        name = type(self).__name__
        if self._in_shape is None:
            raise RuntimeError(f"{name}.backward called before forward: call forward(x) first")
        if self._on_device:
            g = device_grad(f"{name}.backward", grad_out, self._out_shape, self._dtype)
            out_h, out_w = self._out_shape[-2:]
            return g.reshape(int(g.size) // (out_h * out_w), out_h, out_w)
        grad_out = np.asarray(grad_out, dtype=self._dtype)
        if grad_out.shape != self._out_shape:
            raise ValueError(
                f"{name}.backward: grad_out must have the output's shape "
                f"{shape_str(self._out_shape)}, got {shape_str(grad_out.shape)}"
            )
        return np.ascontiguousarray(grad_out).reshape(-1, *self._out_shape[-2:])

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

    Shapes
    ------
    input  : (N, C, H, W)  (or (C, H, W))
    output : (N, C, H_out, W_out), the input's dtype; see the module doc for H_out
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self._argmax = None  # (P, H_out, W_out) flat index into each H*W plane

    def forward(self, x: np.ndarray) -> np.ndarray:
        planes, out_shape = self._planes(x)
        (kh, kw), (sh, sw), (ph, pw) = self._k, self._s, self._p
        if self._on_device:
            from npstn.kernels.cuda import pool as _kc

            out, self._argmax = _kc.max_pool2d_forward(planes, kh, kw, sh, sw, ph, pw, *out_shape[-2:])
            return out.reshape(*out_shape)
        out, self._argmax = _k.max_pool2d_forward(planes, kh, kw, sh, sw, ph, pw, *out_shape[-2:])
        return out.reshape(out_shape)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        g = self._grad_planes(grad_out)
        H, W = self._in_shape[-2:]
        if self._on_device:
            from npstn.kernels.cuda import pool as _kc

            (kh, kw), (sh, sw), (ph, pw) = self._k, self._s, self._p
            grad_in = _kc.max_pool2d_backward(g, self._argmax, H, W, kh, kw, sh, sw, ph, pw)
            return grad_in.reshape(*self._in_shape)
        return _k.max_pool2d_backward(g, self._argmax, H, W).reshape(self._in_shape)


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

    Shapes
    ------
    input  : (N, C, H, W)  (or (C, H, W))
    output : (N, C, H_out, W_out), the input's dtype; see the module doc for H_out
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode)
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
        (kh, kw), (sh, sw), (ph, pw) = self._k, self._s, self._p
        return kh, kw, sh, sw, ph, pw

    def forward(self, x: np.ndarray) -> np.ndarray:
        planes, out_shape = self._planes(x)
        if self._on_device:
            from npstn.kernels.cuda import pool as _kc

            out = _kc.avg_pool2d_forward(planes, *self._args(), *out_shape[-2:],
                                         self.count_include_pad, int(self.divisor_override or 0))
            return out.reshape(*out_shape)
        out = _k.avg_pool2d_forward(planes, *self._args(), *out_shape[-2:],
                                    self.count_include_pad, int(self.divisor_override or 0))
        return out.reshape(out_shape)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        g = self._grad_planes(grad_out)
        H, W = self._in_shape[-2:]
        if self._on_device:
            from npstn.kernels.cuda import pool as _kc

            grad_in = _kc.avg_pool2d_backward(g, *self._args(), H, W, self.count_include_pad,
                                              int(self.divisor_override or 0))
            return grad_in.reshape(*self._in_shape)
        grad_in = _k.avg_pool2d_backward(g, *self._args(), H, W,
                                         self.count_include_pad, int(self.divisor_override or 0))
        return grad_in.reshape(self._in_shape)

    def extra_repr(self) -> str:
        extra = f", count_include_pad={self.count_include_pad}"
        if self.divisor_override is not None:
            extra += f", divisor_override={self.divisor_override}"
        return super().extra_repr() + extra
