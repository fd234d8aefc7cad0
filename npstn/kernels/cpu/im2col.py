"""im2col / col2im: turn a convolution into one matrix product.

A 2-D convolution (cross-correlation, as in torch) of an input ``x`` of shape
(N, C, H, W) with ``kh x kw`` kernels, stride (sh, sw) and zero padding
(ph, pw) reads, for every output pixel (n, oy, ox), the ``C * kh * kw`` input
values

    x[n, c, oy*sh + i - ph, ox*sw + j - pw]      (0 where that is outside x)

for c < C, i < kh, j < kw. ``im2col`` lays those receptive fields out as the
columns of one matrix::

    cols[(c, i, j), (n, oy, ox)] = x[n, c, oy*sh + i - ph, ox*sw + j - pw]

    cols.shape == (C * kh * kw, N * H_out * W_out)     # row-major, C-contiguous

with the row index (c, i, j) in the order of ``weight.reshape(O, C*kh*kw)``
and the column index (n, oy, ox) in NCHW order. The whole batch then needs a
single BLAS matrix product, ``W2 @ cols`` of shape (O, N * H_out * W_out), for
the forward pass, and two for the backward pass.

``col2im`` is the adjoint (transpose) of ``im2col``: it scatters each column
entry back to the input pixel it was read from, *adding* where receptive
fields overlap and dropping entries that fell on the zero padding::

    <im2col(x), G> == <x, col2im(G)>      for every x and G.

Two implementations of each, which tests check against each other:

* ``im2col_numpy`` / ``col2im_numpy``: vectorised NumPy, the readable
  specification (``sliding_window_view`` on a zero-padded copy; a Python loop
  over the kh*kw kernel offsets, never over pixels).
* ``im2col`` / ``col2im``: Numba ``@njit(parallel=True, cache=True)`` kernels,
  parallel over the N*C input planes (each plane is read, or written, by one
  thread only, so ``col2im`` needs no atomics). Padding is handled by index
  ranges, without a padded copy.

``cols_to_nchw`` / ``nchw_to_cols`` move between the matrix layout (O, N*L)
of the products and the NCHW layout (N, O, L) of feature maps (L = H*W),
adding the bias on the way in the forward direction.

Nothing here validates its arguments; :func:`npstn.functional.conv2d` does that.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = [
    "conv_out_size",
    "im2col",
    "col2im",
    "cols_to_nchw",
    "nchw_to_cols",
    "im2col_numpy",
    "col2im_numpy",
    "cols_to_nchw_numpy",
    "nchw_to_cols_numpy",
    "grain_view",
    "im2col_chunk",
    "col2im_chunk",
    "cols_to_nchw_chunk",
    "nchw_to_cols_chunk",
]


def conv_out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """floor((size + 2*padding - kernel) / stride) + 1, torch's output size."""
    return (size + 2 * padding - kernel) // stride + 1


# ---------------------------------------------------------------------------
# NumPy reference (the specification)
# ---------------------------------------------------------------------------

def im2col_numpy(x, kh, kw, sh, sw, ph, pw):
    """(N, C, H, W) -> cols (C*kh*kw, N*H_out*W_out); see the module docstring."""
    n, c, h, w = x.shape
    h_out, w_out = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    # win[n, c, oy, ox, i, j] = xp[n, c, oy*sh + i, ox*sw + j]
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    win = win[:, :, ::sh, ::sw]
    assert win.shape[2:4] == (h_out, w_out)
    # rows (c, i, j), columns (n, oy, ox); np.array copies into a new, writable array
    return np.array(win.transpose(1, 4, 5, 0, 2, 3)).reshape(c * kh * kw, n * h_out * w_out)


def col2im_numpy(cols, x_shape, kh, kw, sh, sw, ph, pw):
    """Adjoint of :func:`im2col_numpy`: cols (C*kh*kw, N*H_out*W_out) -> (N, C, H, W)."""
    n, c, h, w = x_shape
    h_out, w_out = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    g = cols.reshape(c, kh, kw, n, h_out, w_out)
    gxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):  # loop over kernel offsets only; each adds a strided slice
        for j in range(kw):
            gxp[:, :, i:i + sh * (h_out - 1) + 1:sh, j:j + sw * (w_out - 1) + 1:sw] += (
                g[:, i, j].transpose(1, 0, 2, 3)
            )
    return np.ascontiguousarray(gxp[:, :, ph:ph + h, pw:pw + w])


def cols_to_nchw_numpy(y, bias, n):
    """(O, N*L) -> (N, O, L), plus ``bias[o]`` (``bias`` may be None)."""
    o, l = y.shape[0], (y.shape[1] // n if n else 0)
    out = y.reshape(o, n, l).transpose(1, 0, 2)
    if bias is not None:
        out = out + bias[:, None]
    return np.ascontiguousarray(out)


def nchw_to_cols_numpy(g):
    """(N, O, L) -> (O, N*L)."""
    n, o, l = g.shape
    return np.ascontiguousarray(g.transpose(1, 0, 2)).reshape(o, n * l)


# ---------------------------------------------------------------------------
# Numba kernels
# ---------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _valid_range(offset, stride, pad, size, out_size):
    """Output positions o in [lo, hi) with 0 <= o*stride + offset - pad < size.

    Outside that range the kernel tap ``offset`` lands on the zero padding.
    """
    # smallest o with o*stride >= pad - offset: ceil((pad - offset) / stride)
    lo = -((offset - pad) // stride)
    # largest o with o*stride <= size - 1 + pad - offset, plus one
    hi = (size - 1 + pad - offset) // stride + 1
    lo = min(max(lo, 0), out_size)
    hi = min(max(hi, lo), out_size)
    return lo, hi


@njit(cache=True, inline="always")
def _grain_block(n, n0, n1, grain, rows, plane_len):
    """Where image ``n`` of the chunk [n0, n1) sits in a grain-blocked buffer (see
    ``GRAINS``): (offset of its grain's block, that block's row length, the
    image's first column in the block)."""
    q = (n - n0) // grain
    first = n0 + q * grain
    count = min(grain, n1 - first)  # images in this grain (the last one may be short)
    return q * rows * grain * plane_len, count * plane_len, (n - first) * plane_len


@njit(parallel=True, cache=True)
def _im2col_kernel(x, n0, n1, grain, kh, kw, sh, sw, ph, pw, h_out, w_out, buf):
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    xf = x.reshape(-1)  # C-contiguous: flat offsets
    plane_len = h_out * w_out
    rows = channels * kh * kw
    n_grains = (n1 - n0 + grain - 1) // grain
    # one task per (grain, row): it writes that row of the grain's block, a contiguous run
    for task in prange(n_grains * rows):
        q = task // rows
        row = task % rows
        c = row // (kh * kw)
        i = (row // kw) % kh
        j = row % kw
        first = n0 + q * grain
        block, row_len, _ = _grain_block(first, n0, n1, grain, rows, plane_len)
        oy_lo, oy_hi = _valid_range(i, sh, ph, height, h_out)
        ox_lo, ox_hi = _valid_range(j, sw, pw, width, w_out)
        for m in range(row_len // max(plane_len, 1)):
            src_plane = ((first + m) * channels + c) * height * width
            for oy in range(h_out):
                dst = block + row * row_len + m * plane_len + oy * w_out
                if oy < oy_lo or oy >= oy_hi:  # the whole output row reads padding
                    for ox in range(w_out):
                        buf[dst + ox] = 0
                    continue
                src = src_plane + (oy * sh + i - ph) * width + j - pw
                for ox in range(ox_lo):
                    buf[dst + ox] = 0
                if sw == 1:  # a plain copy, which the compiler vectorises
                    for ox in range(ox_lo, ox_hi):
                        buf[dst + ox] = xf[src + ox]
                else:
                    for ox in range(ox_lo, ox_hi):
                        buf[dst + ox] = xf[src + ox * sw]
                for ox in range(ox_hi, w_out):
                    buf[dst + ox] = 0


@njit(parallel=True, cache=True)
def _col2im_kernel(buf, n0, n1, grain, kh, kw, sh, sw, ph, pw, h_out, w_out, grad_x):
    channels, height, width = grad_x.shape[1], grad_x.shape[2], grad_x.shape[3]
    gf = grad_x.reshape(-1)  # C-contiguous: flat offsets
    plane_len = h_out * w_out
    rows = channels * kh * kw
    for plane in prange((n1 - n0) * channels):  # one thread owns one (n, c) plane: no races
        n = n0 + plane // channels
        c = plane % channels
        block, row_len, col0 = _grain_block(n, n0, n1, grain, rows, plane_len)
        base = (n * channels + c) * height * width
        for k in range(height * width):
            gf[base + k] = 0
        for i in range(kh):
            oy_lo, oy_hi = _valid_range(i, sh, ph, height, h_out)
            for j in range(kw):
                ox_lo, ox_hi = _valid_range(j, sw, pw, width, w_out)
                row = (c * kh + i) * kw + j
                for oy in range(oy_lo, oy_hi):
                    src = block + row * row_len + col0 + oy * w_out
                    dst = base + (oy * sh + i - ph) * width + j - pw
                    if sw == 1:
                        for ox in range(ox_lo, ox_hi):
                            gf[dst + ox] += buf[src + ox]
                    else:
                        for ox in range(ox_lo, ox_hi):
                            gf[dst + ox * sw] += buf[src + ox]


@njit(parallel=True, cache=True)
def _cols_to_nchw_kernel(buf, bias, n0, n1, grain, out):
    n_out, plane_len = out.shape[1], out.shape[2]
    for plane in prange((n1 - n0) * n_out):
        n = n0 + plane // n_out
        o = plane % n_out
        block, row_len, col0 = _grain_block(n, n0, n1, grain, n_out, plane_len)
        src = block + o * row_len + col0
        b = bias[o]
        for k in range(plane_len):
            out[n, o, k] = buf[src + k] + b


@njit(parallel=True, cache=True)
def _nchw_to_cols_kernel(g, n0, n1, grain, buf):
    n_out, plane_len = g.shape[1], g.shape[2]
    for plane in prange((n1 - n0) * n_out):
        n = n0 + plane // n_out
        o = plane % n_out
        block, row_len, col0 = _grain_block(n, n0, n1, grain, n_out, plane_len)
        dst = block + o * row_len + col0
        for k in range(plane_len):
            buf[dst + k] = g[n, o, k]


def im2col(x, kh, kw, sh, sw, ph, pw, out=None):
    """Numba im2col: C-contiguous (N, C, H, W) -> cols (C*kh*kw, N*H_out*W_out).

    ``out``, if given, must be a C-contiguous array of that shape and of
    ``x``'s dtype; it is overwritten (every element) and returned.
    """
    n, c, h, w = x.shape
    h_out, w_out = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    if out is None:
        out = np.empty((c * kh * kw, n * h_out * w_out), dtype=x.dtype)
    # the whole batch is one grain: the grain-blocked layout is then (C*kh*kw, N*L)
    _im2col_kernel(np.ascontiguousarray(x), 0, n, max(n, 1), kh, kw, sh, sw, ph, pw, h_out, w_out, out.reshape(-1))
    return out


def col2im(cols, x_shape, kh, kw, sh, sw, ph, pw):
    """Numba col2im, the adjoint of :func:`im2col`: -> (N, C, H, W) of ``cols.dtype``."""
    n, c, h, w = x_shape
    h_out, w_out = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    grad_x = np.empty((n, c, h, w), dtype=cols.dtype)
    _col2im_kernel(np.ascontiguousarray(cols).reshape(-1), 0, n, max(n, 1), kh, kw, sh, sw, ph, pw,
                   h_out, w_out, grad_x)
    return grad_x


def cols_to_nchw(y, bias, n):
    """(O, N*L) -> new C-contiguous (N, O, L), plus ``bias[o]`` (``bias`` may be None)."""
    o, l = y.shape[0], (y.shape[1] // n if n else 0)
    out = np.empty((n, o, l), dtype=y.dtype)
    if bias is None:
        bias = np.zeros(o, dtype=y.dtype)
    _cols_to_nchw_kernel(np.ascontiguousarray(y).reshape(-1), bias, 0, n, max(n, 1), out)
    return out


def nchw_to_cols(g):
    """C-contiguous (N, O, L) -> new (O, N*L)."""
    n, o, l = g.shape
    out = np.empty((o, n * l), dtype=g.dtype)
    _nchw_to_cols_kernel(g, 0, n, max(n, 1), out.reshape(-1))
    return out


# ---------------------------------------------------------------------------
# Grain-blocked chunks (the chunked convolution of npstn.functional.conv)
# ---------------------------------------------------------------------------

def grain_view(buf, q, rows, grain, plane_len, count):
    """Block ``q`` of a grain-blocked buffer: a C-contiguous (rows, count*plane_len) view."""
    start = q * rows * grain * plane_len
    return buf[start:start + rows * count * plane_len].reshape(rows, count * plane_len)


def im2col_chunk(x, n0, n1, grain, kh, kw, sh, sw, ph, pw, buf):
    """im2col of images [n0, n1) of C-contiguous x into the 1-D ``buf``, grain-blocked:
    block q (images n0 + q*grain ...) is the column matrix of those images alone,
    (C*kh*kw, count*L), read back with :func:`grain_view`."""
    h_out, w_out = conv_out_size(x.shape[2], kh, sh, ph), conv_out_size(x.shape[3], kw, sw, pw)
    _im2col_kernel(x, n0, n1, grain, kh, kw, sh, sw, ph, pw, h_out, w_out, buf)


def col2im_chunk(buf, n0, n1, grain, kh, kw, sh, sw, ph, pw, grad_x):
    """Adjoint of :func:`im2col_chunk`: writes grad_x[n0:n1] (every element) from ``buf``."""
    h_out = conv_out_size(grad_x.shape[2], kh, sh, ph)
    w_out = conv_out_size(grad_x.shape[3], kw, sw, pw)
    _col2im_kernel(buf, n0, n1, grain, kh, kw, sh, sw, ph, pw, h_out, w_out, grad_x)


def cols_to_nchw_chunk(buf, bias, n0, n1, grain, out):
    """out[n0:n1] = the grain-blocked (O, count*L) products in ``buf`` + bias[o]; out (N, O, L)."""
    _cols_to_nchw_kernel(buf, bias, n0, n1, grain, out)


def nchw_to_cols_chunk(g, n0, n1, grain, buf):
    """g[n0:n1] (of a C-contiguous (N, O, L)) into ``buf``, grain-blocked (O, count*L) blocks."""
    _nchw_to_cols_kernel(g, n0, n1, grain, buf)
