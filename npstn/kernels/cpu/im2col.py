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


@njit(parallel=True, cache=True)
def _im2col_kernel(x, kh, kw, sh, sw, ph, pw, h_out, w_out, cols):
    n_batch, channels, height, width = x.shape
    plane_len = h_out * w_out
    for plane in prange(n_batch * channels):
        n = plane // channels
        c = plane % channels
        for i in range(kh):
            oy_lo, oy_hi = _valid_range(i, sh, ph, height, h_out)
            for j in range(kw):
                ox_lo, ox_hi = _valid_range(j, sw, pw, width, w_out)
                row = (c * kh + i) * kw + j
                for oy in range(h_out):
                    base = n * plane_len + oy * w_out
                    if oy < oy_lo or oy >= oy_hi:  # the whole output row reads padding
                        for ox in range(w_out):
                            cols[row, base + ox] = 0
                        continue
                    iy = oy * sh + i - ph
                    for ox in range(ox_lo):
                        cols[row, base + ox] = 0
                    for ox in range(ox_lo, ox_hi):
                        cols[row, base + ox] = x[n, c, iy, ox * sw + j - pw]
                    for ox in range(ox_hi, w_out):
                        cols[row, base + ox] = 0


@njit(parallel=True, cache=True)
def _col2im_kernel(cols, kh, kw, sh, sw, ph, pw, h_out, w_out, grad_x):
    n_batch, channels, height, width = grad_x.shape
    plane_len = h_out * w_out
    for plane in prange(n_batch * channels):  # one thread owns one (n, c) plane: no races
        n = plane // channels
        c = plane % channels
        for iy in range(height):
            for ix in range(width):
                grad_x[n, c, iy, ix] = 0
        for i in range(kh):
            oy_lo, oy_hi = _valid_range(i, sh, ph, height, h_out)
            for j in range(kw):
                ox_lo, ox_hi = _valid_range(j, sw, pw, width, w_out)
                row = (c * kh + i) * kw + j
                for oy in range(oy_lo, oy_hi):
                    iy = oy * sh + i - ph
                    base = n * plane_len + oy * w_out
                    for ox in range(ox_lo, ox_hi):
                        grad_x[n, c, iy, ox * sw + j - pw] += cols[row, base + ox]


@njit(parallel=True, cache=True)
def _cols_to_nchw_kernel(y, bias, out):
    n_batch, n_out, plane_len = out.shape
    for n in prange(n_batch):
        for o in range(n_out):
            b = bias[o]
            src = n * plane_len
            for k in range(plane_len):
                out[n, o, k] = y[o, src + k] + b


@njit(parallel=True, cache=True)
def _nchw_to_cols_kernel(g, out):
    n_batch, n_out, plane_len = g.shape
    for o in prange(n_out):
        for n in range(n_batch):
            dst = n * plane_len
            for k in range(plane_len):
                out[o, dst + k] = g[n, o, k]


def im2col(x, kh, kw, sh, sw, ph, pw, out=None):
    """Numba im2col: C-contiguous (N, C, H, W) -> cols (C*kh*kw, N*H_out*W_out).

    ``out``, if given, must be a C-contiguous array of that shape and of
    ``x``'s dtype; it is overwritten (every element) and returned.
    """
    n, c, h, w = x.shape
    h_out, w_out = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    if out is None:
        out = np.empty((c * kh * kw, n * h_out * w_out), dtype=x.dtype)
    _im2col_kernel(x, kh, kw, sh, sw, ph, pw, h_out, w_out, out)
    return out


def col2im(cols, x_shape, kh, kw, sh, sw, ph, pw):
    """Numba col2im, the adjoint of :func:`im2col`: -> (N, C, H, W) of ``cols.dtype``."""
    n, c, h, w = x_shape
    h_out, w_out = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    grad_x = np.empty((n, c, h, w), dtype=cols.dtype)
    _col2im_kernel(cols, kh, kw, sh, sw, ph, pw, h_out, w_out, grad_x)
    return grad_x


def cols_to_nchw(y, bias, n):
    """(O, N*L) -> new C-contiguous (N, O, L), plus ``bias[o]`` (``bias`` may be None)."""
    o, l = y.shape[0], (y.shape[1] // n if n else 0)
    out = np.empty((n, o, l), dtype=y.dtype)
    if bias is None:
        bias = np.zeros(o, dtype=y.dtype)
    _cols_to_nchw_kernel(y, bias, out)
    return out


def nchw_to_cols(g):
    """C-contiguous (N, O, L) -> new (O, N*L)."""
    n, o, l = g.shape
    out = np.empty((o, n * l), dtype=g.dtype)
    _nchw_to_cols_kernel(g, out)
    return out
