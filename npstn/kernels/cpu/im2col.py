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

The chunked convolution of the cpu backend (:mod:`npstn.functional.conv`)
uses the ``*_chunk`` kernels: images [n0, n1) of the batch, in *grains* of
``grain`` images (the last may be short), one block per grain in a flat
buffer, block q at offset q * rows * grain * L. Block q is the column matrix
of its ``count`` images alone, with the image index innermost::

    block_q[(c, i, j), (oy, ox, m)] = x[n_q + m, c, oy*sh + i - ph, ox*sw + j - pw]

    block_q.shape == (C * kh * kw, L * count)      (grain_view(buf, q, ...))

so that a run of output pixels (oy, ox_lo..ox_hi) of all the grain's
images is one contiguous run of memory, copied from a transposed copy of
the grain's input, (C, H, W, count) (``xt``), instead of count short runs;
col2im_chunk adds back through the same transposed layout. The product
blocks (O, L * count) have the same column order.

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


# -- the chunked layout: grain blocks with the image index innermost --------------------

@njit(cache=True, inline="always")
def _grain_of(k, n0, n1, grain, size):
    """Grain ``k`` of the chunk [n0, n1): (its first image, its image count, the offset
    of its block in a grain-blocked buffer whose blocks hold ``size`` values per image)."""
    first = n0 + k * grain
    return first, min(grain, n1 - first), k * grain * size


@njit(parallel=True, cache=True)
def _im2col_chunk_kernel(x, n0, n1, grain, kh, kw, sh, sw, ph, pw, h_out, w_out, xt, buf):
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    xf = x.reshape(-1)  # C-contiguous: flat offsets
    plane_len, in_plane = h_out * w_out, height * width
    rows = channels * kh * kw
    n_grains = (n1 - n0 + grain - 1) // grain
    # 1. each grain's images, image index innermost: xt block k = (C, H, W, count)
    for task in prange(n_grains * channels):
        k, c = task // channels, task % channels
        first, count, xblock = _grain_of(k, n0, n1, grain, channels * in_plane)
        dst = xblock + c * in_plane * count
        for m in range(count):
            src = ((first + m) * channels + c) * in_plane
            for t in range(in_plane):
                xt[dst + t * count + m] = xf[src + t]
    # 2. one task per (grain, row (c, i, j)): that row of the block, from runs of xt
    for task in prange(n_grains * rows):
        k, row = task // rows, task % rows
        c, i, j = row // (kh * kw), (row // kw) % kh, row % kw
        first, count, block = _grain_of(k, n0, n1, grain, rows * plane_len)
        xbase = k * grain * channels * in_plane + c * in_plane * count
        oy_lo, oy_hi = _valid_range(i, sh, ph, height, h_out)
        ox_lo, ox_hi = _valid_range(j, sw, pw, width, w_out)
        for oy in range(h_out):
            d = block + row * count * plane_len + oy * w_out * count  # column (oy, ox, m)
            if oy < oy_lo or oy >= oy_hi:  # the whole output row reads padding
                for t in range(w_out * count):
                    buf[d + t] = 0
                continue
            for t in range(ox_lo * count):
                buf[d + t] = 0
            s = xbase + ((oy * sh + i - ph) * width + j - pw) * count  # xt at ix = ox*sw + j - pw
            if sw == 1:  # one contiguous run
                for t in range(ox_lo * count, ox_hi * count):
                    buf[d + t] = xt[s + t]
            else:
                for ox in range(ox_lo, ox_hi):
                    for m in range(count):
                        buf[d + ox * count + m] = xt[s + ox * sw * count + m]
            for t in range(ox_hi * count, w_out * count):
                buf[d + t] = 0


@njit(parallel=True, cache=True)
def _col2im_chunk_kernel(buf, n0, n1, grain, kh, kw, sh, sw, ph, pw, h_out, w_out, gxt, grad_x):
    channels, height, width = grad_x.shape[1], grad_x.shape[2], grad_x.shape[3]
    gf = grad_x.reshape(-1)  # C-contiguous: flat offsets
    plane_len, in_plane = h_out * w_out, height * width
    rows = channels * kh * kw
    n_grains = (n1 - n0 + grain - 1) // grain
    # one task per (grain, channel): it owns the planes (n, c) of the grain's images: no races
    for task in prange(n_grains * channels):
        k, c = task // channels, task % channels
        first, count, block = _grain_of(k, n0, n1, grain, rows * plane_len)
        base = k * grain * channels * in_plane + c * in_plane * count  # gxt: (H, W, count)
        for t in range(in_plane * count):
            gxt[base + t] = 0
        for i in range(kh):
            oy_lo, oy_hi = _valid_range(i, sh, ph, height, h_out)
            for j in range(kw):
                ox_lo, ox_hi = _valid_range(j, sw, pw, width, w_out)
                row = (c * kh + i) * kw + j
                for oy in range(oy_lo, oy_hi):
                    s = block + row * count * plane_len + oy * w_out * count
                    d = base + ((oy * sh + i - ph) * width + j - pw) * count
                    if sw == 1:  # one contiguous run
                        for t in range(ox_lo * count, ox_hi * count):
                            gxt[d + t] += buf[s + t]
                    else:
                        for ox in range(ox_lo, ox_hi):
                            for m in range(count):
                                gxt[d + ox * sw * count + m] += buf[s + ox * count + m]
        for m in range(count):  # back to NCHW
            dst = ((first + m) * channels + c) * in_plane
            for t in range(in_plane):
                gf[dst + t] = gxt[base + t * count + m]


@njit(parallel=True, cache=True)
def _cols_to_nchw_chunk_kernel(buf, bias, n0, n1, grain, out):
    n_out, plane_len = out.shape[1], out.shape[2]
    n_grains = (n1 - n0 + grain - 1) // grain
    for task in prange(n_grains * n_out):
        k, o = task // n_out, task % n_out
        first, count, block = _grain_of(k, n0, n1, grain, n_out * plane_len)
        src = block + o * count * plane_len
        b = bias[o]
        for m in range(count):
            for t in range(plane_len):
                out[first + m, o, t] = buf[src + t * count + m] + b


@njit(parallel=True, cache=True)
def _nchw_to_cols_chunk_kernel(g, n0, n1, grain, buf):
    n_out, plane_len = g.shape[1], g.shape[2]
    n_grains = (n1 - n0 + grain - 1) // grain
    for task in prange(n_grains * n_out):
        k, o = task // n_out, task % n_out
        first, count, block = _grain_of(k, n0, n1, grain, n_out * plane_len)
        dst = block + o * count * plane_len
        for m in range(count):
            for t in range(plane_len):
                buf[dst + t * count + m] = g[first + m, o, t]


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


# ---------------------------------------------------------------------------
# Grain-blocked chunks (the chunked convolution of npstn.functional.conv)
# ---------------------------------------------------------------------------

def grain_view(buf, q, rows, grain, plane_len, count):
    """Block ``q`` of a grain-blocked buffer: a C-contiguous (rows, count*plane_len) view,
    columns (oy, ox, m) for image m of the grain."""
    start = q * rows * grain * plane_len
    return buf[start:start + rows * count * plane_len].reshape(rows, count * plane_len)


def im2col_chunk(x, n0, n1, grain, kh, kw, sh, sw, ph, pw, buf, xt):
    """im2col of images [n0, n1) of C-contiguous x into the 1-D ``buf``, grain-blocked:
    block q (images n0 + q*grain ...) is the column matrix of those images alone,
    (C*kh*kw, count*L), columns (oy, ox, m), read back with :func:`grain_view`.
    ``xt``: scratch of at least (n1 - n0)*C*H*W values (rounded up to whole grains)."""
    h_out, w_out = conv_out_size(x.shape[2], kh, sh, ph), conv_out_size(x.shape[3], kw, sw, pw)
    _im2col_chunk_kernel(x, n0, n1, grain, kh, kw, sh, sw, ph, pw, h_out, w_out, xt, buf)


def col2im_chunk(buf, n0, n1, grain, kh, kw, sh, sw, ph, pw, grad_x, gxt):
    """Adjoint of :func:`im2col_chunk`: writes grad_x[n0:n1] (every element) from ``buf``;
    ``gxt`` scratch as ``xt`` there."""
    h_out = conv_out_size(grad_x.shape[2], kh, sh, ph)
    w_out = conv_out_size(grad_x.shape[3], kw, sw, pw)
    _col2im_chunk_kernel(buf, n0, n1, grain, kh, kw, sh, sw, ph, pw, h_out, w_out, gxt, grad_x)


def cols_to_nchw_chunk(buf, bias, n0, n1, grain, out):
    """out[n0:n1] = the grain-blocked (O, count*L) products in ``buf`` + bias[o]; out (N, O, L)."""
    _cols_to_nchw_chunk_kernel(buf, bias, n0, n1, grain, out)


def nchw_to_cols_chunk(g, n0, n1, grain, buf):
    """g[n0:n1] (of a C-contiguous (N, O, L)) into ``buf``, grain-blocked (O, count*L) blocks."""
    _nchw_to_cols_chunk_kernel(g, n0, n1, grain, buf)
