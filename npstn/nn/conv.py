"""Conv2d: 2-D convolution as im2col + one matrix product, with its backward.

Notation (torch's): input x (N, C, H, W), weight w (O, C, kh, kw), bias b (O,),
stride (sh, sw), zero padding (ph, pw). Like torch (and every deep-learning
library) the "convolution" is a cross-correlation, the kernel is not flipped::

    y[n, o, oy, ox] = b[o] + sum_{c, i, j} w[o, c, i, j] * xpad[n, c, oy*sh + i, ox*sw + j]

    H_out = floor((H + 2*ph - kh) / sh) + 1,   W_out likewise,

where xpad is x with ph zero rows above and below and pw zero columns left
and right.

Forward. ``im2col`` (:mod:`npstn.kernels.cpu.im2col`) copies every receptive
field into a column, cols (C*kh*kw, N*H_out*W_out), so that with
W2 = w.reshape(O, C*kh*kw) the whole batch is one BLAS product::

    Y = W2 @ cols                       (O, N*H_out*W_out)
    y = Y reshaped to (N, O, H_out, W_out), plus b[o]

Backward. With G = dL/dy rearranged the same way, G (O, N*H_out*W_out)::

    dL/dW2   = G @ cols^T               (O, C*kh*kw)   -> reshaped to w's shape
    dL/db    = G summed over its columns          (O,)
    dL/dcols = W2^T @ G                 (C*kh*kw, N*H_out*W_out)
    dL/dx    = col2im(dL/dcols)         (N, C, H, W)

``col2im`` is the adjoint of ``im2col``: it adds each column entry back onto
the input pixel it was copied from (pixels in several receptive fields collect
several contributions; entries that came from the padding are dropped).
"""
from __future__ import annotations

import numpy as np

from npstn._backend import resolve_backend
from npstn._checks import check_bool, check_float_array, check_same_dtype, pair, shape_str
from npstn._device import check_module_device, device_grad, is_device_array
from npstn.kernels.cpu import im2col as _k
from npstn.nn.init import get_rng, uniform_fan_in
from npstn.nn.module import Module, Parameter

__all__ = ["Conv2d"]


def _positive_int(value, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"Conv2d: {name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"Conv2d: {name} must be a positive int, got {value}")
    return int(value)


class Conv2d(Module):
    """2-D convolution (cross-correlation) over NCHW input, like ``torch.nn.Conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
        C and O.
    kernel_size : int or (kh, kw)
    stride : int or (sh, sw), default 1; positive.
    padding : int or (ph, pw), default 0; zero padding added on both sides.
    bias : bool, default True.
    rng : numpy Generator or int seed for the initial weights; default the
        generator of :func:`npstn.nn.init.manual_seed`.
    backend : {"numpy", "cpu", "cuda"} or None
        How im2col/col2im run. None (default) follows the process-wide
        backend at call time; "numpy" uses the vectorised NumPy reference,
        "cpu" the Numba kernels; "cuda" runs the Numba CPU kernels on NumPy
        arrays. The matrix products are NumPy's BLAS. A *device array*
        input (the module moved with ``.to("cuda")``) runs everything on
        the GPU whatever the backend: im2col/col2im of
        :mod:`npstn.kernels.cuda.im2col` and the GEMM of
        :mod:`npstn.kernels.cuda.matmul`, output and gradients device arrays.

    Attributes
    ----------
    weight : Parameter (out_channels, in_channels, kh, kw)
    bias : Parameter (out_channels,) or None
        Both initialised from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
        fan_in = in_channels * kh * kw, torch's default. float32; use
        ``module.double()`` for float64.

    Shapes
    ------
    forward(x): x (N, in_channels, H, W) -> y (N, out_channels, H_out, W_out),
        H_out = floor((H + 2*ph - kh)/sh) + 1, W_out likewise; x's dtype
        must equal the weight's, and y has it.
    backward(grad_out): grad_out like y -> grad_input like x; adds dL/dw and
        dL/db to ``weight.grad`` and ``bias.grad``.

    The forward pass caches the column matrix (C*kh*kw x N*H_out*W_out
    values) for the backward pass, which then reuses that memory for its own
    column-shaped gradient; so ``backward`` may be called once per
    ``forward`` (as in torch without ``retain_graph``), and the buffer is kept
    for the next ``forward`` of the same shape.

    Equations: see the module docstring of :mod:`npstn.nn.conv`.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 bias=True, rng=None, *, backend=None):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "Conv2d: kernel_size")
        self.stride = pair(stride, "Conv2d: stride")
        self.padding = pair(padding, "Conv2d: padding")
        check_bool("Conv2d: bias", bias)
        if min(self.kernel_size) < 1:
            raise ValueError(f"Conv2d: kernel_size must be positive, got {self.kernel_size}")
        if min(self.stride) < 1:
            raise ValueError(f"Conv2d: stride must be positive, got {self.stride}")
        if min(self.padding) < 0:
            raise ValueError(f"Conv2d: padding must be non-negative, got {self.padding}")
        if backend is not None:
            resolve_backend(backend)  # validates the name now rather than at the first call
        self.backend = backend

        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        rng = get_rng(rng)  # one generator for both draws, even from an int seed
        self.weight = Parameter(
            uniform_fan_in((self.out_channels, self.in_channels, kh, kw), fan_in, rng)
        )
        self.bias = Parameter(uniform_fan_in((self.out_channels,), fan_in, rng)) if bias else None

        self._cache = None  # (input shape, cols, backend) of the last forward
        self._workspace = None  # column-matrix buffer reused across calls

    # -- shapes ----------------------------------------------------------------
    def output_shape(self, input_shape) -> tuple[int, int, int, int]:
        """(N, O, H_out, W_out) for an input of shape ``input_shape`` (validated)."""
        n, c, h, w = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(
                f"Conv2d: kernel_size {shape_str(self.kernel_size)} is larger than the padded "
                f"input {shape_str((h + 2 * ph, w + 2 * pw))} (input shape "
                f"{shape_str(input_shape)}, padding {shape_str(self.padding)}); use a "
                "smaller kernel_size, more padding or a larger input"
            )
        return (n, self.out_channels, _k.conv_out_size(h, kh, sh, ph), _k.conv_out_size(w, kw, sw, pw))

    def _check_input(self, x):
        check_float_array("Conv2d: input", x, 4, what="(N, C, H, W)")
        if not isinstance(x, np.ndarray) and not is_device_array(x):
            raise TypeError(f"Conv2d: input must be a NumPy array, got {type(x).__name__}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"Conv2d: input has {x.shape[1]} channels (shape {shape_str(x.shape)}) but "
                f"in_channels={self.in_channels}; expected shape (N, {self.in_channels}, H, W)"
            )
        check_same_dtype("Conv2d: input", x, "Conv2d.weight", self.weight.data)
        return check_module_device("Conv2d", x, (self.weight, self.bias))

    # -- forward / backward ----------------------------------------------------
    def forward(self, x):
        if self._check_input(x):
            return self._forward_cuda(x)
        n, o, h_out, w_out = self.output_shape(x.shape)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        w2 = self.weight.data.reshape(o, -1)  # (O, C*kh*kw), a view
        b = None if self.bias is None else self.bias.data
        backend = resolve_backend(self.backend)

        if backend == "numpy":
            cols = _k.im2col_numpy(x, kh, kw, sh, sw, ph, pw)
            y = _k.cols_to_nchw_numpy(w2 @ cols, b, n)
        else:
            x = np.ascontiguousarray(x)
            cols = _k.im2col(x, kh, kw, sh, sw, ph, pw, out=self._take_workspace(x, h_out * w_out))
            y = _k.cols_to_nchw(w2 @ cols, b, n)  # (O, N*L) -> (N, O, L), + bias

        self._cache = (x.shape, cols, backend)
        return y.reshape(n, o, h_out, w_out)

    def backward(self, grad_out):
        if self._cache is None:
            raise RuntimeError(
                "Conv2d.backward called before forward (or twice after one forward: "
                "backward reuses the cached columns, so call forward again first)"
            )
        x_shape, cols, backend = self._cache
        if backend == "device":
            return self._backward_cuda(grad_out)
        want = self.output_shape(x_shape)
        check_float_array("Conv2d: grad_out", grad_out, 4, what="(N, O, H_out, W_out)")
        if tuple(grad_out.shape) != want:
            raise ValueError(
                f"Conv2d: grad_out has shape {shape_str(grad_out.shape)} but the forward "
                f"output had shape {shape_str(want)}"
            )
        check_same_dtype("Conv2d: grad_out", grad_out, "Conv2d.weight", self.weight.data)
        self._cache = None
        n, o, h_out, w_out = want
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        w2 = self.weight.data.reshape(o, -1)
        g3 = np.ascontiguousarray(grad_out).reshape(n, o, h_out * w_out)

        # G: dL/dy as (O, N*L), the layout of Y = W2 @ cols
        g = _k.nchw_to_cols_numpy(g3) if backend == "numpy" else _k.nchw_to_cols(g3)
        # dL/dW2 = G cols^T, computed as (cols G^T)^T: the same sums, but with the
        # long (C*kh*kw)-row side first OpenBLAS splits the work evenly over its threads
        self.weight.grad += (cols @ g.T).T.reshape(self.weight.shape)
        if self.bias is not None:
            self.bias.grad += g.sum(axis=1)  # dL/db[o] = sum over n, oy, ox
        # dL/dcols = W2^T G, written over the cached cols (no longer needed)
        grad_cols = np.matmul(w2.T, g, out=cols)
        if backend == "numpy":
            return _k.col2im_numpy(grad_cols, x_shape, kh, kw, sh, sw, ph, pw)
        return _k.col2im(grad_cols, x_shape, kh, kw, sh, sw, ph, pw)

    # -- the GPU path: device arrays in, device arrays out ------------------------
    def _forward_cuda(self, x):
        """Y = W2 cols (+ b) with cols = im2col(x), all on the device."""
        from npstn.kernels.cuda import im2col as _kc
        from npstn.kernels.cuda import matmul

        n, o, h_out, w_out = self.output_shape(tuple(x.shape))
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        w2 = self.weight.data.reshape(o, self.weight.data.size // o)  # (O, C*kh*kw), a view
        cols = _kc.im2col(x, kh, kw, sh, sw, ph, pw, out=getattr(self, "_device_workspace", None))
        self._device_workspace = cols  # reused by the next forward of the same shape
        y = _kc.cols_to_nchw(matmul.gemm(w2, cols), None if self.bias is None else self.bias.data, n)
        self._cache = (tuple(x.shape), cols, "device")
        return y.reshape(n, o, h_out, w_out)

    def _backward_cuda(self, grad_out):
        """dW2 += G cols^T, db += row sums of G, dx = col2im(W2^T G), all on the device."""
        from npstn.kernels.cuda import im2col as _kc
        from npstn.kernels.cuda import matmul

        x_shape, cols, _ = self._cache
        want = self.output_shape(x_shape)
        g4 = device_grad("Conv2d.backward", grad_out, want, self.weight.data.dtype)
        self._cache = None
        n, o, h_out, w_out = want
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        w2 = self.weight.data.reshape(o, self.weight.data.size // o)
        g = _kc.nchw_to_cols(g4.reshape(n, o, h_out * w_out))  # (O, N*L)
        gw2 = self.weight.grad.reshape(o, self.weight.grad.size // o)  # a view of the grad
        matmul.gemm(g, cols, trans_b=True, out=gw2, accumulate=True)  # += G cols^T
        if self.bias is not None:
            matmul.sum_axis(g, 1, out=self.bias.grad, accumulate=True)  # += sum over n, oy, ox
        grad_cols = matmul.gemm(w2, g, trans_a=True, out=cols)  # W2^T G over the cached cols
        return _kc.col2im(grad_cols, x_shape, kh, kw, sh, sw, ph, pw)

    def _take_workspace(self, x, plane_len):
        """The reusable column buffer if it fits this call, else a new one."""
        kh, kw = self.kernel_size
        shape = (self.in_channels * kh * kw, x.shape[0] * plane_len)
        ws = self._workspace
        if ws is None or ws.shape != shape or ws.dtype != x.dtype:
            ws = np.empty(shape, dtype=x.dtype)
            self._workspace = ws
        return ws

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.bias is None:
            s += ", bias=False"
        return s
