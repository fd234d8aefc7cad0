"""Numba CPU kernels for 2-D max and average pooling (forward and backward).

Every kernel works on a stack of P = N*C independent planes, shape (P, H, W).
The arithmetic lives in per-plane functions (``_max_plane`` ...); a driver
runs one over all planes, either with ``prange`` (each plane is read and
written by exactly one thread, so the backward scatters need no atomics) or
serially. The public functions pick the parallel driver for inputs of at
least ``PARALLEL_MIN_SIZE`` elements: below that, starting the thread pool
costs more than it saves (and a serial call is also immune to an
oversubscribed machine, which matters for the thousands of tiny calls a
gradient check makes).

Window of output pixel (oh, ow), as in torch's CPU kernels::

    h_start = oh * stride_h - pad_h          (may be negative: left padding)
    h_end   = h_start + kernel_h             (exclusive)

Max pooling pads with -inf, so only the part of the window inside the input
counts. Average pooling divides by

    * ``divisor`` when it is positive (torch's ``divisor_override``);
    * else, with ``count_include_pad``, the window area clipped to the
      *padded* input, min(h_end, H + pad_h) - h_start (times the same for w);
      a ceil_mode window hanging past the right padding is thus smaller;
    * else the number of real input pixels in the window.

Nothing here validates its arguments; :mod:`npstn.functional.pooling` does.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = [
    "max_pool2d_forward",
    "max_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "PARALLEL_MIN_SIZE",
]

#: inputs (N*C*H*W elements) at least this large run in parallel over planes
PARALLEL_MIN_SIZE = 1 << 15


@njit(cache=True, inline="always")
def _window(o, stride, pad, kernel, size):
    """Window of output index ``o`` along one axis: (start, end) clipped to the
    input, then the unclipped start and the end clipped only to the padded
    input (these two give the include-pad divisor)."""
    start = o * stride - pad
    end_padded = min(start + kernel, size + pad)
    return max(start, 0), min(start + kernel, size), start, end_padded


@njit(cache=True, inline="always")
def _avg_divisor(h0, h1, w0, w1, hs, he, ws, we, count_include_pad, divisor):
    if divisor > 0:
        return divisor
    if count_include_pad:
        return (he - hs) * (we - ws)
    return (h1 - h0) * (w1 - w0)


# -- per-plane arithmetic ------------------------------------------------------------

@njit(cache=True, inline="always")
def _better(v, best):
    """Whether window element v replaces the running maximum: strictly greater (so the
    first maximum in scan order wins, like torch), or NaN (so NaN propagates)."""
    return (v > best) | (v != v)


@njit(cache=True)
def _max_plane(x, out, arg, kh, kw, sh, sw, ph, pw, relu):
    """x (H, W) -> out, arg (H_out, W_out): the window maxima and their flat
    indices ih * W + iw (see ``_better``); with ``relu``, out = relu(maximum), which
    equals the maximum of relu(x) (relu is monotone).

    A window without NaN takes the fast path, plain ``>`` comparisons (the
    first maximum in scan order still wins); only a window holding a NaN is
    scanned again with ``_better``, whose NaN test in every comparison costs
    several times more."""
    H, W = x.shape
    out_h, out_w = out.shape
    for oh in range(out_h):
        h0, h1, _, _ = _window(oh, sh, ph, kh, H)
        for ow in range(out_w):
            w0, w1, _, _ = _window(ow, sw, pw, kw, W)
            i = h0 * W + w0
            if kh == 2 and kw == 2 and h1 - h0 == 2 and w1 - w0 == 2:
                # the common 2x2 window, unrolled, the two rows compared pairwise
                a, b, c, d = x[h0, w0], x[h0, w0 + 1], x[h0 + 1, w0], x[h0 + 1, w0 + 1]
                nan = (a != a) | (b != b) | (c != c) | (d != d)
                top, top_i = (b, i + 1) if b > a else (a, i)
                bottom, bottom_i = (d, i + W + 1) if d > c else (c, i + W)
                best, best_i = (bottom, bottom_i) if bottom > top else (top, top_i)
            else:
                best, best_i = x[h0, w0], i
                nan = best != best
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        v = x[ih, iw]
                        nan |= v != v
                        if v > best:
                            best = v
                            best_i = ih * W + iw
            if nan:  # NaN propagates: the last NaN in scan order wins
                best, best_i = x[h0, w0], i
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        v = x[ih, iw]
                        if _better(v, best):
                            best = v
                            best_i = ih * W + iw
            out[oh, ow] = best
            if relu and not ((best >= 0) | (best != best)):  # relu as np.maximum(v, 0): NaN stays
                out[oh, ow] = 0
            arg[oh, ow] = best_i


@njit(cache=True)
def _max_plane_backward(g, arg, grad_in):
    """Route each output gradient to its window's argmax: grad_in[arg] += g.
    grad_in is the plane flattened to (H * W,) and must start at zero."""
    out_h, out_w = g.shape
    for oh in range(out_h):
        for ow in range(out_w):
            grad_in[arg[oh, ow]] += g[oh, ow]


@njit(cache=True)
def _relu_max_plane_backward(g, arg, x, grad_in):
    """The same for out = relu(maximum): only where the maximum x[arg] > 0 (relu's
    derivative, 0 at 0 and at NaN). x and grad_in flattened to (H * W,)."""
    out_h, out_w = g.shape
    for oh in range(out_h):
        for ow in range(out_w):
            k = arg[oh, ow]
            if x[k] > 0:
                grad_in[k] += g[oh, ow]


@njit(cache=True)
def _avg_plane(x, out, kh, kw, sh, sw, ph, pw, count_include_pad, divisor):
    """x (H, W) -> out (H_out, W_out): window sums (accumulated in float64)
    over the divisor described in the module doc."""
    H, W = x.shape
    out_h, out_w = out.shape
    for oh in range(out_h):
        h0, h1, hs, he = _window(oh, sh, ph, kh, H)
        for ow in range(out_w):
            w0, w1, ws, we = _window(ow, sw, pw, kw, W)
            if h0 >= h1 or w0 >= w1:
                out[oh, ow] = 0  # window entirely in padding (torch)
                continue
            s = 0.0
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    s += x[ih, iw]
            out[oh, ow] = s / _avg_divisor(h0, h1, w0, w1, hs, he, ws, we,
                                           count_include_pad, divisor)


@njit(cache=True)
def _avg_plane_backward(g, grad_in, kh, kw, sh, sw, ph, pw, count_include_pad, divisor):
    """Spread each output gradient evenly, g / divisor, over its window's input
    pixels. grad_in (H, W) must start at zero."""
    H, W = grad_in.shape
    out_h, out_w = g.shape
    for oh in range(out_h):
        h0, h1, hs, he = _window(oh, sh, ph, kh, H)
        for ow in range(out_w):
            w0, w1, ws, we = _window(ow, sw, pw, kw, W)
            if h0 >= h1 or w0 >= w1:
                continue
            share = g[oh, ow] / _avg_divisor(h0, h1, w0, w1, hs, he, ws, we,
                                             count_include_pad, divisor)
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    grad_in[ih, iw] += share


# -- drivers: one per-plane function over all P planes, in parallel or serially ----

@njit(parallel=True, cache=True)
def _max_forward_parallel(x, out, arg, kh, kw, sh, sw, ph, pw, relu):
    for p in prange(x.shape[0]):
        _max_plane(x[p], out[p], arg[p], kh, kw, sh, sw, ph, pw, relu)


@njit(cache=True)
def _max_forward_serial(x, out, arg, kh, kw, sh, sw, ph, pw, relu):
    for p in range(x.shape[0]):
        _max_plane(x[p], out[p], arg[p], kh, kw, sh, sw, ph, pw, relu)


@njit(parallel=True, cache=True)
def _max_backward_parallel(g, arg, grad_in):
    for p in prange(g.shape[0]):
        _max_plane_backward(g[p], arg[p], grad_in[p])


@njit(cache=True)
def _max_backward_serial(g, arg, grad_in):
    for p in range(g.shape[0]):
        _max_plane_backward(g[p], arg[p], grad_in[p])


@njit(parallel=True, cache=True)
def _relu_max_backward_parallel(g, arg, x, grad_in):
    for p in prange(g.shape[0]):
        _relu_max_plane_backward(g[p], arg[p], x[p], grad_in[p])


@njit(cache=True)
def _relu_max_backward_serial(g, arg, x, grad_in):
    for p in range(g.shape[0]):
        _relu_max_plane_backward(g[p], arg[p], x[p], grad_in[p])


@njit(parallel=True, cache=True)
def _avg_forward_parallel(x, out, kh, kw, sh, sw, ph, pw, count_include_pad, divisor):
    for p in prange(x.shape[0]):
        _avg_plane(x[p], out[p], kh, kw, sh, sw, ph, pw, count_include_pad, divisor)


@njit(cache=True)
def _avg_forward_serial(x, out, kh, kw, sh, sw, ph, pw, count_include_pad, divisor):
    for p in range(x.shape[0]):
        _avg_plane(x[p], out[p], kh, kw, sh, sw, ph, pw, count_include_pad, divisor)


@njit(parallel=True, cache=True)
def _avg_backward_parallel(g, grad_in, kh, kw, sh, sw, ph, pw, count_include_pad, divisor):
    for p in prange(g.shape[0]):
        _avg_plane_backward(g[p], grad_in[p], kh, kw, sh, sw, ph, pw, count_include_pad, divisor)


@njit(cache=True)
def _avg_backward_serial(g, grad_in, kh, kw, sh, sw, ph, pw, count_include_pad, divisor):
    for p in range(g.shape[0]):
        _avg_plane_backward(g[p], grad_in[p], kh, kw, sh, sw, ph, pw, count_include_pad, divisor)


# -- public entry points ------------------------------------------------------------

def _parallel(n_elements: int, parallel) -> bool:
    return n_elements >= PARALLEL_MIN_SIZE if parallel is None else bool(parallel)


def max_pool2d_forward(x, kh, kw, sh, sw, ph, pw, out_h, out_w, parallel=None, relu=False):
    """x (P, H, W) C-contiguous -> (out (P, out_h, out_w), argmax (P, out_h, out_w) int64).

    ``argmax`` holds flat indices ih * W + iw into each plane. ``parallel``:
    None picks by size, True/False forces the driver. ``relu``: out is
    relu(maximum) = maximum of relu(x) (the fused relu + max pool).
    """
    P = x.shape[0]
    out = np.empty((P, out_h, out_w), dtype=x.dtype)
    arg = np.empty((P, out_h, out_w), dtype=np.int64)
    run = _max_forward_parallel if _parallel(x.size, parallel) else _max_forward_serial
    run(x, out, arg, kh, kw, sh, sw, ph, pw, bool(relu))
    return out, arg


def max_pool2d_backward(grad_out, arg, H, W, parallel=None, x=None):
    """grad_out, arg (P, out_h, out_w) -> grad_in (P, H, W): each output's
    gradient added at its argmax. With the input ``x`` (P, H, W) given: the
    backward of the fused relu + max pool, which adds it only where x[argmax] > 0."""
    P = grad_out.shape[0]
    grad_in = np.zeros((P, H * W), dtype=grad_out.dtype)
    par = _parallel(grad_in.size, parallel)
    if x is None:
        (_max_backward_parallel if par else _max_backward_serial)(grad_out, arg, grad_in)
    else:
        run = _relu_max_backward_parallel if par else _relu_max_backward_serial
        run(grad_out, arg, np.ascontiguousarray(x).reshape(P, H * W), grad_in)
    return grad_in.reshape(P, H, W)


def avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw, out_h, out_w, count_include_pad, divisor,
                       parallel=None):
    """x (P, H, W) C-contiguous -> window means (P, out_h, out_w). ``divisor`` > 0
    overrides the divisor (torch's divisor_override); 0 means none."""
    P = x.shape[0]
    out = np.empty((P, out_h, out_w), dtype=x.dtype)
    run = _avg_forward_parallel if _parallel(x.size, parallel) else _avg_forward_serial
    run(x, out, kh, kw, sh, sw, ph, pw, bool(count_include_pad), int(divisor))
    return out


def avg_pool2d_backward(grad_out, kh, kw, sh, sw, ph, pw, H, W, count_include_pad, divisor,
                        parallel=None):
    """grad_out (P, out_h, out_w) -> grad_in (P, H, W)."""
    P = grad_out.shape[0]
    grad_in = np.zeros((P, H, W), dtype=grad_out.dtype)
    run = _avg_backward_parallel if _parallel(grad_in.size, parallel) else _avg_backward_serial
    run(grad_out, grad_in, kh, kw, sh, sw, ph, pw, bool(count_include_pad), int(divisor))
    return grad_in
