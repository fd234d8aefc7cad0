"""CUDA kernels for 2-D max and average pooling (forward and backward): Numba ``@cuda.jit``.

Semantics are those of the CPU kernels (:mod:`npstn.kernels.cpu.pool`) and
torch, on a stack of P = N*C planes (P, H, W). Output (oh, ow) reads the
window rows [oh*sh - ph, oh*sh - ph + kh) clipped to the input (likewise
columns); :func:`npstn.functional.pooling.pool_output_size` fixes out_h, out_w,
ceil_mode included, before these run.

* max forward, one thread per output: the first maximum in row-major scan
  order of the window (strictly greater replaces; a NaN wins), and its flat
  index ih * W + iw (int64) for the backward;

      y[p, oh, ow] = max_{(ih, iw) in window} x[p, ih, iw]

* max backward, one thread per *input* pixel: the sum of the output
  gradients whose argmax is this pixel, over the outputs whose window
  contains it (in row-major output order, the CPU kernel's order), so no
  atomics:  dL/dx[p, ih, iw] = sum_{(oh, ow): arg = ih*W + iw} dL/dy[p, oh, ow]
* avg forward, one thread per output: window sum (float64) / D;
* avg backward, one thread per input pixel:
  dL/dx[p, ih, iw] = sum over windows containing (ih, iw) of dL/dy[p, oh, ow] / D,

with the divisor D of the CPU kernels (divisor_override, else the window
clipped to the padded input with count_include_pad, else the real pixels).
A pixel (ih, iw) lies in the window of oh iff oh*sh - ph <= ih < oh*sh - ph + kh,
i.e. ceil((ih + ph - kh + 1) / sh) <= oh <= floor((ih + ph) / sh); the loops
are clipped to [0, out_h). No thread reads or writes outside its arrays, and
the argmax is never used as an index.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from npstn.kernels.cuda.common import cuda_module, launch_config

__all__ = ["max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward"]


@cuda.jit(device=True, inline=True)
def _out_range(i, stride, pad, kernel, out_size):
    """Outputs o in [lo, hi) whose window contains input index i."""
    a = i + pad - kernel + 1  # o * stride >= a
    lo = -((-a) // stride)  # ceil(a / stride), also for negative a
    hi = (i + pad) // stride + 1
    if lo < 0:
        lo = 0
    if hi > out_size:
        hi = out_size
    return lo, hi


@cuda.jit(device=True, inline=True)
def _imin(a, b):
    return a if a < b else b


@cuda.jit(device=True, inline=True)
def _divisor(h0, h1, w0, w1, hs, he, ws, we, count_include_pad, divisor):
    if divisor > 0:
        return divisor
    if count_include_pad:
        return (he - hs) * (we - ws)
    return (h1 - h0) * (w1 - w0)


@cuda.jit(device=True, inline=True)
def _unflatten(t, rows, cols):
    """Flat thread index t -> (plane, row, col) of a (planes, rows, cols) array."""
    return t // (rows * cols), (t // cols) % rows, t % cols


@cuda.jit(device=True, inline=True)
def _clip(start, kernel, size):
    """The window [start, start + kernel) clipped to the input's [0, size): (lo, hi)."""
    lo = start if start > 0 else 0
    hi = start + kernel
    return lo, (hi if hi < size else size)


@cuda.jit
def _max_forward_kernel(x, out, arg, kh, kw, sh, sw, ph, pw):
    t = cuda.grid(1)
    n_planes, out_h, out_w = out.shape
    if t >= n_planes * out_h * out_w:
        return
    p, oh, ow = _unflatten(t, out_h, out_w)
    H = x.shape[1]
    W = x.shape[2]
    hs = oh * sh - ph
    ws = ow * sw - pw
    h0, h1 = _clip(hs, kh, H)
    w0, w1 = _clip(ws, kw, W)
    best = -np.inf
    best_i = h0 * W + w0
    for ih in range(h0, h1):
        for iw in range(w0, w1):
            v = x[p, ih, iw]
            if v > best or math.isnan(v):
                best = v
                best_i = ih * W + iw
    out[p, oh, ow] = best
    arg[p, oh, ow] = best_i


@cuda.jit
def _max_backward_kernel(g, arg, kh, kw, sh, sw, ph, pw, grad_in):
    t = cuda.grid(1)
    n_planes, H, W = grad_in.shape
    if t >= n_planes * H * W:
        return
    p, ih, iw = _unflatten(t, H, W)
    out_h = g.shape[1]
    out_w = g.shape[2]
    me = ih * W + iw
    oh_lo, oh_hi = _out_range(ih, sh, ph, kh, out_h)
    ow_lo, ow_hi = _out_range(iw, sw, pw, kw, out_w)
    acc = 0.0
    for oh in range(oh_lo, oh_hi):
        for ow in range(ow_lo, ow_hi):
            if arg[p, oh, ow] == me:
                acc += g[p, oh, ow]
    grad_in[p, ih, iw] = acc


@cuda.jit
def _avg_forward_kernel(x, out, kh, kw, sh, sw, ph, pw, count_include_pad, divisor):
    t = cuda.grid(1)
    n_planes, out_h, out_w = out.shape
    if t >= n_planes * out_h * out_w:
        return
    p, oh, ow = _unflatten(t, out_h, out_w)
    H = x.shape[1]
    W = x.shape[2]
    hs = oh * sh - ph
    ws = ow * sw - pw
    he = _imin(hs + kh, H + ph)
    we = _imin(ws + kw, W + pw)
    h0, h1 = _clip(hs, kh, H)
    w0, w1 = _clip(ws, kw, W)
    if h0 >= h1 or w0 >= w1:
        out[p, oh, ow] = 0
        return
    s = 0.0
    for ih in range(h0, h1):
        for iw in range(w0, w1):
            s += x[p, ih, iw]
    out[p, oh, ow] = s / _divisor(h0, h1, w0, w1, hs, he, ws, we, count_include_pad, divisor)


@cuda.jit
def _avg_backward_kernel(g, kh, kw, sh, sw, ph, pw, count_include_pad, divisor, grad_in):
    t = cuda.grid(1)
    n_planes, H, W = grad_in.shape
    if t >= n_planes * H * W:
        return
    p, ih, iw = _unflatten(t, H, W)
    out_h = g.shape[1]
    out_w = g.shape[2]
    oh_lo, oh_hi = _out_range(ih, sh, ph, kh, out_h)
    ow_lo, ow_hi = _out_range(iw, sw, pw, kw, out_w)
    acc = 0.0
    for oh in range(oh_lo, oh_hi):
        hs = oh * sh - ph
        he = _imin(hs + kh, H + ph)
        h0, h1 = _clip(hs, kh, H)
        for ow in range(ow_lo, ow_hi):
            ws = ow * sw - pw
            we = _imin(ws + kw, W + pw)
            w0, w1 = _clip(ws, kw, W)
            acc += g[p, oh, ow] / _divisor(h0, h1, w0, w1, hs, he, ws, we,
                                           count_include_pad, divisor)
    grad_in[p, ih, iw] = acc


def _launch(kernel, n, *args):
    if n > 0:
        blocks, threads = launch_config(n)
        kernel[blocks, threads](*args)


def max_pool2d_forward(x, kh, kw, sh, sw, ph, pw, out_h, out_w):
    """Device planes (P, H, W) -> (out (P, out_h, out_w), argmax (P, out_h, out_w) int64), on the device."""
    cu = cuda_module()
    P = x.shape[0]
    out = cu.device_array((P, out_h, out_w), dtype=x.dtype)
    arg = cu.device_array((P, out_h, out_w), dtype=np.int64)
    _launch(_max_forward_kernel, P * out_h * out_w, x, out, arg, kh, kw, sh, sw, ph, pw)
    return out, arg


def max_pool2d_backward(grad_out, arg, H, W, kh, kw, sh, sw, ph, pw):
    """Device grad_out, argmax (P, out_h, out_w) -> device grad_in (P, H, W)."""
    cu = cuda_module()
    P = grad_out.shape[0]
    grad_in = cu.device_array((P, H, W), dtype=grad_out.dtype)
    _launch(_max_backward_kernel, P * H * W, grad_out, arg, kh, kw, sh, sw, ph, pw, grad_in)
    return grad_in


def avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw, out_h, out_w, count_include_pad, divisor):
    """Device planes (P, H, W) -> window means (P, out_h, out_w); ``divisor`` > 0 overrides D."""
    cu = cuda_module()
    P = x.shape[0]
    out = cu.device_array((P, out_h, out_w), dtype=x.dtype)
    _launch(_avg_forward_kernel, P * out_h * out_w, x, out, kh, kw, sh, sw, ph, pw,
            bool(count_include_pad), int(divisor))
    return out


def avg_pool2d_backward(grad_out, kh, kw, sh, sw, ph, pw, H, W, count_include_pad, divisor):
    """Device grad_out (P, out_h, out_w) -> device grad_in (P, H, W)."""
    cu = cuda_module()
    P = grad_out.shape[0]
    grad_in = cu.device_array((P, H, W), dtype=grad_out.dtype)
    _launch(_avg_backward_kernel, P * H * W, grad_out, kh, kw, sh, sw, ph, pw,
            bool(count_include_pad), int(divisor), grad_in)
    return grad_in
