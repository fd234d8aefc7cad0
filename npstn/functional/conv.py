"""2-D convolution (cross-correlation, as in torch) as im2col + one matrix product, and its backward.

Notation (torch's): input x (N, C, H, W), weight w (O, C, kh, kw), bias b (O,)
or None, stride (sh, sw), zero padding (ph, pw). The kernel is not flipped::

    y[n, o, oy, ox] = b[o] + sum_{c, i, j} w[o, c, i, j] * xpad[n, c, oy*sh + i, ox*sw + j]

    H_out = floor((H + 2*ph - kh) / sh) + 1,   W_out likewise,

where xpad is x with ph zero rows above and below and pw zero columns left
and right. With cols = im2col(x) (C*kh*kw, N*H_out*W_out), one column per
receptive field (:mod:`npstn.kernels.cpu.im2col`), and W2 = w.reshape(O,
C*kh*kw), forward and backward side by side, G = dL/dy laid out as (O,
N*H_out*W_out)::

    forward                               backward
    Y = W2 @ cols      (O, N*H_out*W_out) dL/dW2   = G @ cols^T        (O, C*kh*kw)
    y = Y as (N, O, H_out, W_out) + b[o]  dL/db    = G summed over its columns  (O,)
                                          dL/dcols = W2^T @ G          (C*kh*kw, N*H_out*W_out)
                                          dL/dx    = col2im(dL/dcols)  (N, C, H, W)

``col2im`` is the adjoint of ``im2col``: it adds each column entry back onto
the input pixel it was copied from (entries from the padding are dropped).

Backends: "numpy" uses the vectorised im2col/col2im specification
(``im2col_numpy``), "cpu" the Numba kernels (both with NumPy's BLAS for the
products), "cuda" the kernels of :mod:`npstn.kernels.cuda.im2col` and the
GEMM of :mod:`npstn.kernels.cuda.matmul`.

Chunks (the "cpu" backend). The column matrix of a whole batch is large
(the Table 1 CNN's second layer: 3136 x 30976 floats, 390 MB at batch 256),
and writing it out and reading it back costs as much as a good part of the
products. So the cpu backend runs the equations above one *chunk* of images
at a time, through buffers reused from call to call (a ``workspace``), in
three nested levels::

    batch  = chunks of ``chunk_size`` images   (im2col, col2im, layout moves: Numba, parallel)
    chunk  = grains of ``grain`` images        (one GEMM per grain and product)
    grain  = conv2d_grain(C*kh*kw, H_out*W_out) images (GRAIN_COLUMNS, GRAIN_VALUES)

For grain q (images n_q .. n_q + count - 1), cols_q is the column matrix of
those images alone (C*kh*kw, count*L), G_q and Y_q likewise (O, count*L)::

    Y_q = W2 @ cols_q           dL/dW2 += G_q @ cols_q^T       (grain by grain, in order)
                                dL/dcols_q = W2^T @ G_q          (only if needs_input_grad)

The grain depends only on the layer's geometry, never on ``chunk_size``
(chunks are whole numbers of grains), so the sums of dL/dW2 are formed in
the same order whatever the chunk size: results are bit-for-bit independent
of it (tests check float64). The backward either recomputes each chunk's
columns, in one chunk's memory (the default of the functions), or, with
``ConvWorkspace(keep_columns=True)`` (the Conv2d layer's default), reads the
columns the forward wrote for the same input into a whole-batch buffer:
one im2col per step instead of two, for the memory the unchunked path takes
anyway. Either gives the same values. dL/db is the sum of grad_output over
n, oy, ox, formed from grad_output itself.

``needs_input_grad=False`` (the first layer of a network, whose input is
data) skips dL/dcols and col2im, a third of that layer's backward, and
returns None for dL/dx, as torch leaves ``x.grad`` None.

Saved state (all backends). ``conv2d(..., return_cols=True)`` also returns
the column matrix of the whole batch; ``conv2d_backward(..., cols=cols)``
then reuses it instead of running im2col again, and may overwrite it with
dL/dcols (so pass it once). ``cols_out`` lets the forward write the columns
into a buffer it reuses. These run the unchunked equations (as the numpy
and cuda backends always do).
"""
from __future__ import annotations

import numpy as np

from npstn._checks import check_float_array, check_same_dtype, pair, shape_str
from npstn._device import device_args, results_for
from npstn.functional._layer_common import check_bias, dispatch, upstream_grad
from npstn.kernels.cpu import im2col as _k

__all__ = ["conv2d", "conv2d_backward", "conv2d_output_shape", "conv2d_grain", "ConvWorkspace"]

#: a reduction grain holds at least this many output columns (images x H_out*W_out) ...
GRAIN_COLUMNS = 4096
#: ... and, for layers with few rows C*kh*kw, about this many column-matrix values:
#: enough for the GEMMs to run near the machine's rate
GRAIN_VALUES = 1 << 19
#: default chunk: as many whole grains as keep its column matrix near this size
#: (a few chunks fit the last-level cache), at least one grain
CHUNK_BYTES = 8 << 20


def conv2d_grain(rows: int, plane_len: int) -> int:
    """Images per reduction grain for a column matrix of ``rows`` = C*kh*kw rows and
    output planes of ``plane_len`` = H_out*W_out pixels: max(ceil(GRAIN_COLUMNS /
    plane_len), floor(GRAIN_VALUES / (rows * plane_len))), at least 1. It depends on
    the layer's geometry only, never on the batch or the chunk size."""
    plane_len, rows = max(int(plane_len), 1), max(int(rows), 1)
    return max(1, -(-GRAIN_COLUMNS // plane_len), GRAIN_VALUES // (rows * plane_len))


def _chunk_images(n, rows, plane_len, grain, itemsize, chunk_size):
    """Images per chunk: ``chunk_size`` (or the CHUNK_BYTES default) rounded up to whole grains."""
    if chunk_size is None:
        per_grain = rows * grain * plane_len * itemsize
        chunk = grain * max(1, CHUNK_BYTES // max(per_grain, 1))
    else:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"conv2d: chunk_size must be a positive int or None, got {chunk_size!r}")
        chunk = -(-int(chunk_size) // grain) * grain
    return max(grain, min(chunk, -(-max(n, 1) // grain) * grain))


class ConvWorkspace:
    """Buffers the chunked convolution reuses from call to call (one per layer).

    ``buffer(name, size, dtype)`` returns a 1-D array of at least ``size``
    elements, allocated only when the last one was smaller or of another
    dtype; its contents are scratch.

    ``keep_columns=True``: the forward writes every chunk's columns into one
    buffer of the whole batch's (grain-blocked) instead of reusing one
    chunk's, and the next backward for the *same* input array (``is``)
    reads them instead of running im2col again, then overwrites them with
    dL/dcols (once: a second backward recomputes). Memory for speed, as the
    unchunked path's ``cols``; the values are the same either way.
    """

    def __init__(self, keep_columns: bool = False):
        self._buffers = {}
        self.keep_columns = bool(keep_columns)
        self._kept = None  # (input, geometry) whose columns the "columns" buffer holds

    def buffer(self, name, size, dtype):
        buf = self._buffers.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = np.empty(max(int(size), 1), dtype=dtype)
            self._buffers[name] = buf
        return buf

    def nbytes(self) -> int:
        return sum(b.nbytes for b in self._buffers.values())


def _grains(n0, n1, grain):
    """(q, count) of each grain of the chunk [n0, n1)."""
    return [(q, min(grain, n1 - n0 - q * grain)) for q in range(-(-(n1 - n0) // grain))]


def conv2d_output_shape(input_shape, weight_shape, stride=1, padding=0) -> tuple[int, int, int, int]:
    """(N, O, H_out, W_out) of ``conv2d`` for these shapes; ValueError if the kernel does not fit."""
    n, _, h, w = input_shape
    o, _, kh, kw = weight_shape
    (sh, sw), (ph, pw) = pair(stride, "conv2d: stride"), pair(padding, "conv2d: padding")
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise ValueError(
            f"conv2d: kernel_size {shape_str((kh, kw))} is larger than the padded input "
            f"{shape_str((h + 2 * ph, w + 2 * pw))} (input shape {shape_str(input_shape)}, padding "
            f"{shape_str((ph, pw))}); use a smaller kernel_size, more padding or a larger input"
        )
    return int(n), int(o), _k.conv_out_size(h, kh, sh, ph), _k.conv_out_size(w, kw, sw, pw)


def _check(input, weight, bias, stride, padding):
    check_float_array("conv2d: input", input, 4, what="(N, C, H, W)")
    check_float_array("conv2d: weight", weight, 4, what="(O, C, kh, kw)")
    check_same_dtype("conv2d: input", input, "conv2d: weight", weight)
    if input.shape[1] != weight.shape[1]:
        raise ValueError(
            f"conv2d: input has {input.shape[1]} channels (shape {shape_str(input.shape)}) but the "
            f"weight of shape {shape_str(weight.shape)} expects {weight.shape[1]}"
        )
    check_bias("conv2d", bias, weight)
    stride, padding = pair(stride, "conv2d: stride"), pair(padding, "conv2d: padding")
    if min(stride) < 1:
        raise ValueError(f"conv2d: stride must be positive, got {stride}")
    if min(padding) < 0:
        raise ValueError(f"conv2d: padding must be non-negative, got {padding}")
    shape = conv2d_output_shape(tuple(input.shape), tuple(weight.shape), stride, padding)
    return stride, padding, shape


def conv2d(input, weight, bias=None, stride=1, padding=0, *, backend=None,
           return_cols=False, cols_out=None, chunk_size=None, workspace=None):
    """Convolution of NCHW ``input`` with ``weight``, like ``torch.nn.functional.conv2d``.

    input (N, C, H, W), weight (O, C, kh, kw), bias (O,) or None; stride and
    padding an int or a pair -> (N, O, H_out, W_out), the input's dtype.
    ``return_cols``: also return the column matrix (for ``conv2d_backward``'s
    ``cols``); ``cols_out``: a (C*kh*kw, N*H_out*W_out) buffer of the input's
    dtype (and device) to write it into, used when its shape fits.
    ``chunk_size`` (images, rounded up to whole grains; None: about
    CHUNK_BYTES of columns) and ``workspace`` (a :class:`ConvWorkspace`) steer
    the cpu backend's chunked products; the result does not depend on them.
    Equations in the module docstring.
    """
    (sh, sw), (ph, pw), (n, o, h_out, w_out) = _check(input, weight, bias, stride, padding)
    kh, kw = weight.shape[2:]
    backend = dispatch("conv2d", backend, input, weight, bias)
    if backend == "cpu" and not return_cols and cols_out is None:
        return _conv2d_chunked(np.ascontiguousarray(input), weight, bias, sh, sw, ph, pw,
                               (n, o, h_out, w_out), chunk_size, workspace)
    if backend == "cuda":
        y, cols, back = _conv2d_cuda(input, weight, bias, sh, sw, ph, pw, (n, o, h_out, w_out),
                                     cols_out)
        if back:  # host arrays in: host arrays out
            y, cols = results_for(True, y, cols if return_cols else None)
    else:
        w2 = weight.reshape(o, -1)  # (O, C*kh*kw), a view
        if backend == "numpy":
            cols = _k.im2col_numpy(input, kh, kw, sh, sw, ph, pw)
            y = _k.cols_to_nchw_numpy(w2 @ cols, bias, n)
        else:
            x = np.ascontiguousarray(input)
            shape = (x.shape[1] * kh * kw, n * h_out * w_out)
            if cols_out is None or cols_out.shape != shape or cols_out.dtype != x.dtype:
                cols_out = np.empty(shape, dtype=x.dtype)
            cols = _k.im2col(x, kh, kw, sh, sw, ph, pw, out=cols_out)
            y = _k.cols_to_nchw(w2 @ cols, bias, n)  # (O, N*L) -> (N, O, L), + bias
        y = y.reshape(n, o, h_out, w_out)
    return (y, cols) if return_cols else y


def conv2d_backward(grad_output, input, weight, bias=None, stride=1, padding=0, *, backend=None,
                    cols=None, needs_input_grad=True, chunk_size=None, workspace=None):
    """(dL/dinput, dL/dweight, dL/dbias) for ``conv2d(input, weight, bias, stride, padding)``;
    dL/dbias is None when bias is None.

    grad_output (N, O, H_out, W_out) -> shapes of input, weight, bias.
    ``cols``: the column matrix ``conv2d(..., return_cols=True)`` returned
    for this input, reused and possibly overwritten (saved state, for speed); None
    recomputes it (chunk by chunk on the cpu backend). ``needs_input_grad``:
    False skips dL/dinput (returned as None). ``chunk_size`` and
    ``workspace`` as for :func:`conv2d`. Equations in the module docstring.
    """
    (sh, sw), (ph, pw), want = _check(input, weight, bias, stride, padding)
    grad_output = upstream_grad("conv2d_backward", grad_output, want, input.dtype)
    n, o, h_out, w_out = want
    kh, kw = weight.shape[2:]
    needs_input_grad = bool(needs_input_grad)
    backend = dispatch("conv2d_backward", backend, grad_output, input, weight, bias)
    if backend == "cpu" and cols is None:
        return _conv2d_backward_chunked(grad_output, np.ascontiguousarray(input), weight, bias,
                                        sh, sw, ph, pw, want, needs_input_grad, chunk_size, workspace)
    if backend == "cuda":
        return _conv2d_backward_cuda(grad_output, input, weight, bias, sh, sw, ph, pw, want, cols,
                                     needs_input_grad)
    numpy = backend == "numpy"
    if cols is None:
        cols = (_k.im2col_numpy(input, kh, kw, sh, sw, ph, pw) if numpy
                else _k.im2col(np.ascontiguousarray(input), kh, kw, sh, sw, ph, pw))
    w2 = weight.reshape(o, -1)
    g3 = np.ascontiguousarray(grad_output).reshape(n, o, h_out * w_out)
    # G: dL/dy as (O, N*L), the layout of Y = W2 @ cols
    g = _k.nchw_to_cols_numpy(g3) if numpy else _k.nchw_to_cols(g3)
    # dL/dW2 = G cols^T, computed as (cols G^T)^T: the same sums, but with the
    # long (C*kh*kw)-row side first OpenBLAS splits the work evenly over its threads
    grad_weight = (cols @ g.T).T.reshape(weight.shape)
    grad_bias = None if bias is None else g.sum(axis=1)  # dL/db[o] = sum over n, oy, ox
    if not needs_input_grad:
        return None, grad_weight, grad_bias
    # dL/dcols = W2^T G, written over cols (no longer needed)
    grad_cols = np.matmul(w2.T, g, out=cols)
    x_shape = tuple(input.shape)
    grad_input = (_k.col2im_numpy(grad_cols, x_shape, kh, kw, sh, sw, ph, pw) if numpy
                  else _k.col2im(grad_cols, x_shape, kh, kw, sh, sw, ph, pw))
    return grad_input, grad_weight, grad_bias


# -- cpu: the same equations, chunk by chunk ---------------------------------------------

def _plan(n, rows, plane_len, dtype, chunk_size):
    grain = conv2d_grain(rows, plane_len)
    chunk = _chunk_images(n, rows, plane_len, grain, np.dtype(dtype).itemsize, chunk_size)
    return grain, chunk


def _columns_key(x, weight, sh, sw, ph, pw, grain):
    """What the forward's kept columns depend on besides the input itself: the backward reuses
    them only when its key (and its input object) match the forward's."""
    return tuple(x.shape), weight.shape[1:], sh, sw, ph, pw, grain, x.dtype


def _conv2d_chunked(x, weight, bias, sh, sw, ph, pw, out_shape, chunk_size, workspace):
    """Forward on the cpu backend, chunk by chunk: Y_q = W2 @ cols_q for each grain q."""
    n, o, h_out, w_out = out_shape
    c, kh, kw = weight.shape[1:]
    rows, plane_len, dtype = c * kh * kw, h_out * w_out, x.dtype
    grain, chunk = _plan(n, rows, plane_len, dtype, chunk_size)
    ws = ConvWorkspace() if workspace is None else workspace
    key = _columns_key(x, weight, sh, sw, ph, pw, grain)
    ws._kept = None
    if ws.keep_columns:  # the whole batch's grain blocks, one after the other
        cols = ws.buffer("columns", rows * (-(-n // grain) * grain) * plane_len, dtype)
    else:
        cols = ws.buffer("cols", rows * chunk * plane_len, dtype)
    ybuf = ws.buffer("y", o * chunk * plane_len, dtype)
    xt = ws.buffer("x", chunk * (x.size // max(n, 1)), dtype)
    w2 = np.ascontiguousarray(weight.reshape(o, rows))
    b = np.zeros(o, dtype) if bias is None else np.ascontiguousarray(bias)
    y = np.empty((n, o, plane_len), dtype)
    for n0 in range(0, n, chunk):
        n1 = min(n, n0 + chunk)
        cols_c = cols[n0 * rows * plane_len:] if ws.keep_columns else cols  # n0: whole grains
        _k.im2col_chunk(x, n0, n1, grain, kh, kw, sh, sw, ph, pw, cols_c, xt)
        for q, count in _grains(n0, n1, grain):
            np.matmul(w2, _k.grain_view(cols_c, q, rows, grain, plane_len, count),
                      out=_k.grain_view(ybuf, q, o, grain, plane_len, count))
        _k.cols_to_nchw_chunk(ybuf, b, n0, n1, grain, y)  # + bias, into NCHW
    if ws.keep_columns:
        ws._kept = (x, key)
    return y.reshape(out_shape)


def _conv2d_backward_chunked(grad_output, x, weight, bias, sh, sw, ph, pw, out_shape,
                             needs_input_grad, chunk_size, workspace):
    """Backward on the cpu backend, chunk by chunk (equations in the module docstring)."""
    n, o, h_out, w_out = out_shape
    c, kh, kw = weight.shape[1:]
    rows, plane_len, dtype = c * kh * kw, h_out * w_out, x.dtype
    grain, chunk = _plan(n, rows, plane_len, dtype, chunk_size)
    ws = ConvWorkspace() if workspace is None else workspace
    key = _columns_key(x, weight, sh, sw, ph, pw, grain)
    kept = ws._kept is not None and ws._kept[0] is x and ws._kept[1] == key
    ws._kept = None  # the columns are overwritten below (or were not this input's)
    if kept:
        cols = ws.buffer("columns", 0, dtype)
    else:
        cols = ws.buffer("cols", rows * chunk * plane_len, dtype)
    gbuf = ws.buffer("y", o * chunk * plane_len, dtype)
    xt = ws.buffer("x", chunk * (x.size // max(n, 1)), dtype)
    part = ws.buffer("grad_weight", o * rows, dtype)[:o * rows].reshape(o, rows)
    w2 = np.ascontiguousarray(weight.reshape(o, rows))
    g3 = np.ascontiguousarray(grad_output).reshape(n, o, plane_len)
    grad_w2 = np.zeros((o, rows), dtype)
    grad_input = np.empty(x.shape, dtype) if needs_input_grad else None
    for n0 in range(0, n, chunk):
        n1 = min(n, n0 + chunk)
        if kept:  # the forward's columns of these images
            cols_c = cols[n0 * rows * plane_len:]
        else:
            cols_c = cols
            _k.im2col_chunk(x, n0, n1, grain, kh, kw, sh, sw, ph, pw, cols_c, xt)
        _k.nchw_to_cols_chunk(g3, n0, n1, grain, gbuf)
        for q, count in _grains(n0, n1, grain):
            cols_q = _k.grain_view(cols_c, q, rows, grain, plane_len, count)
            g_q = _k.grain_view(gbuf, q, o, grain, plane_len, count)
            # dL/dW2 += G_q cols_q^T, one grain at a time, in order
            np.add(grad_w2, np.matmul(g_q, cols_q.T, out=part), out=grad_w2)
            if needs_input_grad:  # dL/dcols_q = W2^T G_q, over cols_q (no longer needed)
                np.matmul(w2.T, g_q, out=cols_q)
        if needs_input_grad:
            _k.col2im_chunk(cols_c, n0, n1, grain, kh, kw, sh, sw, ph, pw, grad_input, xt)
    grad_weight = grad_w2.reshape(weight.shape)
    grad_bias = None if bias is None else g3.sum(axis=2).sum(axis=0)  # dL/db[o]: over n, oy, ox
    return grad_input, grad_weight, grad_bias


# -- cuda: the same steps on the device ------------------------------------------------

def _conv2d_cuda(input, weight, bias, sh, sw, ph, pw, out_shape, cols_out):
    from npstn.kernels.cuda import im2col as _kc
    from npstn.kernels.cuda import matmul

    (x, w, b), back = device_args(input, weight, bias)
    if not x.is_c_contiguous():
        raise ValueError(f"conv2d: device input of shape {shape_str(x.shape)} must be C-contiguous")
    n, o, h_out, w_out = out_shape
    kh, kw = w.shape[2:]
    w2 = w.reshape(o, int(w.size) // o)  # (O, C*kh*kw), a view
    cols = _kc.im2col(x, kh, kw, sh, sw, ph, pw, out=None if back else cols_out)
    y = _kc.cols_to_nchw(matmul.gemm(w2, cols), b, n).reshape(n, o, h_out, w_out)
    return y, cols, back


def _conv2d_backward_cuda(grad_output, input, weight, bias, sh, sw, ph, pw, out_shape, cols,
                          needs_input_grad=True):
    from npstn.kernels.cuda import im2col as _kc
    from npstn.kernels.cuda import matmul

    (g4, x, w, b, cols), back = device_args(grad_output, input, weight, bias, cols)
    n, o, h_out, w_out = out_shape
    kh, kw = w.shape[2:]
    if cols is None:
        if not x.is_c_contiguous():
            raise ValueError(f"conv2d_backward: device input of shape {shape_str(x.shape)} "
                             "must be C-contiguous")
        cols = _kc.im2col(x, kh, kw, sh, sw, ph, pw)
    w2 = w.reshape(o, int(w.size) // o)
    g = _kc.nchw_to_cols(g4.reshape(n, o, h_out * w_out))  # (O, N*L)
    grad_weight = matmul.gemm(g, cols, trans_b=True).reshape(*w.shape)  # G cols^T
    grad_bias = None if b is None else matmul.sum_axis(g, 1)  # sum over n, oy, ox
    if not needs_input_grad:
        _, grad_weight, grad_bias = results_for(back, None, grad_weight, grad_bias)
        return None, grad_weight, grad_bias
    grad_cols = matmul.gemm(w2, g, trans_a=True, out=cols)  # W2^T G over the cols
    grad_input = _kc.col2im(grad_cols, tuple(x.shape), kh, kw, sh, sw, ph, pw)
    return results_for(back, grad_input, grad_weight, grad_bias)
