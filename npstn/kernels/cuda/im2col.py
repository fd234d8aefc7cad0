"""CUDA im2col / col2im and the NCHW <-> column-matrix layouts of Conv2d: Numba ``@cuda.jit``.

The layouts are exactly those of the CPU kernels (:mod:`npstn.kernels.cpu.im2col`,
which has the full derivation)::

    cols[(c, i, j), (n, oy, ox)] = x[n, c, oy*sh + i - ph, ox*sw + j - pw]   (0 in the padding)
    cols.shape == (C*kh*kw, N*H_out*W_out),   row (c*kh + i)*kw + j,   column n*L + oy*W_out + ox

* ``im2col``: one thread per element of cols (writes along a row of cols are
  coalesced); reads outside x produce 0, nothing outside x is read.
* ``col2im``, the adjoint: one thread per *input* pixel (n, c, iy, ix)
  gathers every column entry that was copied from it,

      dx[n, c, iy, ix] = sum over (i, j) with oy = (iy + ph - i) / sh and
                         ox = (ix + pw - j) / sw integers in range of
                         dcols[(c, i, j), (n, oy, ox)],

  in the same (i, j) order as the CPU kernel, so no atomics are needed and
  the result is deterministic.
* ``cols_to_nchw``: (O, N*L) -> (N, O, L) plus bias[o];
  ``nchw_to_cols``: (N, O, L) -> (O, N*L). One thread per element.

Index arithmetic uses the arrays' int64 shapes. Arguments are device arrays;
:class:`npstn.nn.Conv2d` validates them.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from npstn.kernels.cpu.im2col import conv_out_size
from npstn.kernels.cuda.common import cuda_module, launch_config

__all__ = ["im2col", "col2im", "cols_to_nchw", "nchw_to_cols"]


@cuda.jit
def _im2col_kernel(x, kh, kw, sh, sw, ph, pw, h_out, w_out, cols):
    t = cuda.grid(1)
    n_rows = cols.shape[0]
    n_cols = cols.shape[1]
    if t >= n_rows * n_cols:
        return
    r = t // n_cols
    q = t % n_cols
    c = r // (kh * kw)
    i = (r // kw) % kh
    j = r % kw
    plane_len = h_out * w_out
    n = q // plane_len
    l = q % plane_len
    iy = (l // w_out) * sh + i - ph
    ix = (l % w_out) * sw + j - pw
    if iy >= 0 and iy < x.shape[2] and ix >= 0 and ix < x.shape[3]:
        cols[r, q] = x[n, c, iy, ix]
    else:
        cols[r, q] = 0


@cuda.jit
def _col2im_kernel(cols, kh, kw, sh, sw, ph, pw, h_out, w_out, grad_x):
    t = cuda.grid(1)
    n_batch, channels, height, width = grad_x.shape
    if t >= n_batch * channels * height * width:
        return
    n = t // (channels * height * width)
    c = (t // (height * width)) % channels
    iy = (t // width) % height
    ix = t % width
    plane_len = h_out * w_out
    acc = 0.0
    for i in range(kh):
        ry = iy + ph - i  # = oy * sh
        if ry < 0 or ry % sh != 0:
            continue
        oy = ry // sh
        if oy >= h_out:
            continue
        for j in range(kw):
            rx = ix + pw - j  # = ox * sw
            if rx < 0 or rx % sw != 0:
                continue
            ox = rx // sw
            if ox >= w_out:
                continue
            acc += cols[(c * kh + i) * kw + j, n * plane_len + oy * w_out + ox]
    grad_x[n, c, iy, ix] = acc


@cuda.jit
def _cols_to_nchw_kernel(y, bias, has_bias, out):
    t = cuda.grid(1)
    n_batch, n_out, plane_len = out.shape
    if t >= n_batch * n_out * plane_len:
        return
    n = t // (n_out * plane_len)
    o = (t // plane_len) % n_out
    k = t % plane_len
    if has_bias:
        out[n, o, k] = y[o, n * plane_len + k] + bias[o]
    else:
        out[n, o, k] = y[o, n * plane_len + k]


@cuda.jit
def _nchw_to_cols_kernel(g, out):
    t = cuda.grid(1)
    n_batch, n_out, plane_len = g.shape
    if t >= n_batch * n_out * plane_len:
        return
    o = t // (n_batch * plane_len)
    q = t % (n_batch * plane_len)
    out[o, q] = g[q // plane_len, o, q % plane_len]


def _launch(kernel, n, *args):
    if n > 0:
        blocks, threads = launch_config(n)
        kernel[blocks, threads](*args)


def im2col(x, kh, kw, sh, sw, ph, pw, out=None):
    """Device (N, C, H, W) -> device cols (C*kh*kw, N*H_out*W_out); ``out`` is reused if given."""
    cu = cuda_module()
    n, c, h, w = x.shape
    h_out, w_out = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    shape = (c * kh * kw, n * h_out * w_out)
    if out is None or tuple(out.shape) != shape or np.dtype(out.dtype) != np.dtype(x.dtype):
        out = cu.device_array(shape, dtype=x.dtype)
    _launch(_im2col_kernel, shape[0] * shape[1], x, kh, kw, sh, sw, ph, pw, h_out, w_out, out)
    return out


def col2im(cols, x_shape, kh, kw, sh, sw, ph, pw):
    """Adjoint of :func:`im2col`: device cols -> new device (N, C, H, W)."""
    cu = cuda_module()
    n, c, h, w = x_shape
    h_out, w_out = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    grad_x = cu.device_array((n, c, h, w), dtype=cols.dtype)
    _launch(_col2im_kernel, n * c * h * w, cols, kh, kw, sh, sw, ph, pw, h_out, w_out, grad_x)
    return grad_x


def cols_to_nchw(y, bias, n):
    """Device (O, N*L) -> new device (N, O, L), plus ``bias[o]`` (a device array or None)."""
    cu = cuda_module()
    o, l = y.shape[0], (y.shape[1] // n if n else 0)
    out = cu.device_array((n, o, l), dtype=y.dtype)
    has_bias = bias is not None
    b = bias if has_bias else _unused(cu, y.dtype)  # a 1-element stand-in, never read
    _launch(_cols_to_nchw_kernel, n * o * l, y, b, has_bias, out)
    return out


def nchw_to_cols(g):
    """Device (N, O, L) -> new device (O, N*L)."""
    cu = cuda_module()
    n, o, l = g.shape
    out = cu.device_array((o, n * l), dtype=g.dtype)
    _launch(_nchw_to_cols_kernel, n * o * l, g, out)
    return out


_UNUSED: dict = {}


def _unused(cu, dtype):
    d = _UNUSED.get(np.dtype(dtype))
    if d is None:
        d = _UNUSED[np.dtype(dtype)] = cu.to_device(np.zeros(1, dtype=dtype))
    return d
