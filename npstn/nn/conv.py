"""Conv2d: the layer around :func:`npstn.functional.conv2d` (im2col + one matrix product).

The equations, forward and backward side by side, are in
:mod:`npstn.functional.conv`. The layer holds the weight (O, C, kh, kw) and
bias (O,), caches its input and the column matrix of the forward, and calls
the functional pair; the column buffer is reused from one step to the next.
"""
from __future__ import annotations

import numpy as np

from npstn import functional as F
from npstn._backend import resolve_backend
from npstn._checks import check_bool, check_float_array, check_same_dtype, pair, shape_str
from npstn._device import check_module_device, device_grad, is_device_array
from npstn.kernels.cpu.im2col import conv_out_size
from npstn.nn.init import get_rng, uniform_fan_in
from npstn.nn.linear import _data
from npstn.nn.module import Module, Parameter, layer_backend

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
        Backend of :func:`npstn.functional.conv2d`. None (default) follows
        the process-wide backend at call time; "numpy" uses the vectorised
        NumPy reference of im2col/col2im, "cpu" the Numba kernels (both with
        NumPy's BLAS); "cuda" the CUDA kernels, copying NumPy arrays to the
        GPU and the results back. A *device array* input (the module moved
        with ``.to("cuda")``) runs everything on the GPU whatever the
        backend: im2col/col2im of :mod:`npstn.kernels.cuda.im2col` and the
        GEMM of :mod:`npstn.kernels.cuda.matmul`, output and gradients
        device arrays.

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
    backward(grad_out): grad_out like y -> grad_input like x (None when
        ``needs_input_grad`` is False); adds dL/dw and dL/db to ``weight.grad``
        and ``bias.grad``.

    Other attributes: ``needs_input_grad`` (default True; set it False on a
    layer whose input needs no gradient, such as a network's first layer on
    data: its backward then skips a third of its work and returns None) and
    ``chunk_size`` (images per chunk of the cpu backend; None: the default,
    see :mod:`npstn.functional.conv`; results do not depend on it) and
    ``keep_columns`` (default True: the cpu backend keeps the forward's
    columns for the backward, C*kh*kw x N*H_out*W_out values as the other
    backends do; False recomputes them chunk by chunk, in a chunk's memory).

    On the cpu backend the layer runs the chunked products of
    :mod:`npstn.functional.conv`: it keeps its input and a
    :class:`~npstn.functional.conv.ConvWorkspace` of buffers reused from
    step to step. On the other backends the forward caches the column matrix
    (C*kh*kw x N*H_out*W_out values) for the backward, which reuses that
    memory for its own column-shaped gradient, and the buffer is kept for
    the next ``forward`` of the same shape. Either way ``backward`` may be
    called once per ``forward`` (as in torch without ``retain_graph``).

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

        #: False: ``backward`` skips dL/dinput and returns None (a first layer, whose input is data)
        self.needs_input_grad = True
        #: images per chunk of the cpu backend's chunked products (None: the default size)
        self.chunk_size = None
        #: cpu: keep the forward's column matrix (chunk by chunk) for the backward instead of
        #: recomputing it (memory for speed; see npstn.functional.conv.ConvWorkspace)
        self.keep_columns = True
        self._cache = None  # (input, cols or None) of the last forward
        self._workspace = None  # cpu: a ConvWorkspace; else the column-matrix buffer

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
        return (n, self.out_channels, conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw))

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
        on_device = self._check_input(x)
        self.output_shape(tuple(x.shape))  # the layer's own message for a kernel that does not fit
        backend = layer_backend(self.backend, x)
        if resolve_backend(backend, x) == "cpu":
            # chunked: no column matrix of the whole batch; the backward recomputes each chunk's
            if not isinstance(self._workspace, F.ConvWorkspace):
                self._workspace = F.ConvWorkspace(keep_columns=self.keep_columns)
            self._workspace.keep_columns = self.keep_columns
            y = F.conv2d(x, self.weight.data, _data(self.bias), self.stride, self.padding,
                         backend="cpu", chunk_size=self.chunk_size, workspace=self._workspace)
            self._cache = (x, None)
            return y
        ws = self._workspace
        if ws is not None and (isinstance(ws, F.ConvWorkspace) or is_device_array(ws) != on_device):
            ws = None
        y, cols = F.conv2d(x, self.weight.data, _data(self.bias), self.stride, self.padding,
                           backend=backend, return_cols=True, cols_out=ws)
        self._workspace = cols  # reused by the next forward of the same shape
        self._cache = (x, cols)
        return y

    def backward(self, grad_out):
        if self._cache is None:
            raise RuntimeError(
                "Conv2d.backward called before forward (or twice after one forward: "
                "backward reuses the cached columns, so call forward again first)"
            )
        x, cols = self._cache
        want = self.output_shape(tuple(x.shape))
        if is_device_array(x):
            grad_out = device_grad("Conv2d.backward", grad_out, want, self.weight.data.dtype)
        else:
            check_float_array("Conv2d: grad_out", grad_out, 4, what="(N, O, H_out, W_out)")
            if tuple(grad_out.shape) != want:
                raise ValueError(
                    f"Conv2d: grad_out has shape {shape_str(grad_out.shape)} but the forward "
                    f"output had shape {shape_str(want)}"
                )
            check_same_dtype("Conv2d: grad_out", grad_out, "Conv2d.weight", self.weight.data)
        self._cache = None
        if cols is None:  # the forward ran the cpu backend's chunked products
            how = dict(backend="cpu", chunk_size=self.chunk_size, workspace=self._workspace)
        else:
            how = dict(backend=layer_backend(self.backend, x), cols=cols)
        grad_in, grad_w, grad_b = F.conv2d_backward(
            grad_out, x, self.weight.data, _data(self.bias), self.stride, self.padding,
            needs_input_grad=self.needs_input_grad, **how)
        self.weight.accumulate_grad(grad_w)
        if self.bias is not None:
            self.bias.accumulate_grad(grad_b)
        return grad_in

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.bias is None:
            s += ", bias=False"
        return s
