"""CPU kernels of the sampler (bilinear / nearest ``grid_sample``): Numba ``@njit``.

The math, the conventions and the readable vectorised specification are in
:mod:`npstn.functional.grid_sample`; this module computes the same numbers
point by point:

* ``forward``: ``prange`` over the N * H_out output rows; each output
  point finds its source coordinate once and loops over the channels.
* ``backward``: race-free without atomics, in one of two ways.

  - N >= the number of threads: one pass, ``prange`` over the batch. Image n
    owns ``grad_input[n]``; each of its points writes its own
    ``grad_grid[n, h, w]`` (a sum over channels) and scatters its
    ``grad_output`` into ``grad_input[n]``.
  - Smaller batches (one image would use one thread): two passes.
    1. ``prange`` over the output rows: each point writes its ``grad_grid``
       entry and records its neighbour index and weights in small per-point
       arrays.
    2. ``prange`` over the N * C (image, channel) planes: each plane owns
       ``grad_input[n, c]`` and scatters every point's ``grad_output`` into
       it with the recorded weights. (A single one-channel image scatters on
       one thread; that is also the cheapest case.)

  No two threads ever add into the same element, so neither way needs
  atomics or per-thread copies, and the result does not depend on the
  thread count.

The small scalar helpers :func:`pad_coordinate` and :func:`round_half_even`
are plain Python functions compiled with ``@njit``; the CUDA backend compiles
the very same Python source (``.py_func``) as device functions, so the
padding logic exists once.

Precision: the unnormalisation x^s = (x + 1) * scale - shift is computed in
the grid's dtype (float32 stays float32, in the order torch's CPU kernel
writes it, and as the NumPy specification computes it), so the unnormalised
x^s -- whose integer part decides the neighbours and the one-sided
sub-gradient -- is the specification's, bit for bit (reflection, done in
float64 here and in the dtype there, is exact for all but a rare last-bit
case in float32). The typed constants
(1, scale, shift) come from the host, because Numba types Python float
literals as float64. The rest (reflection, weights, sums over channels) runs
in float64 and is rounded once into the output dtype.

Nothing here validates its arguments; :mod:`npstn.functional.grid_sample`
does that before dispatching.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

__all__ = ["forward", "backward", "MODE_CODES", "PADDING_CODES", "COORD_LIMIT"]

# Integer codes the kernels branch on (strings cannot cross into @njit cheaply).
BILINEAR, NEAREST = 0, 1
ZEROS, BORDER, REFLECTION = 0, 1, 2
MODE_CODES = {"bilinear": BILINEAR, "nearest": NEAREST}
PADDING_CODES = {"zeros": ZEROS, "border": BORDER, "reflection": REFLECTION}

# Pixel coordinates are clamped to +-COORD_LIMIT before padding (npstn's
# policy for huge grid values such as 1e30; keep in sync with
# npstn.functional.grid_sample.COORD_LIMIT -- a test checks). 2**22 is far
# outside any image yet small enough that float32 arithmetic on it is exact.
COORD_LIMIT = 4194304.0


# ----------------------------------------------------------------------------
# Scalar helpers (also compiled for CUDA from their .py_func)
# ----------------------------------------------------------------------------

@njit(cache=True)
def pad_coordinate(p, size, padding_mode, align_corners):
    """Apply the padding mode to one pixel coordinate p (finite or +-inf, never NaN).

    Returns ``(x^s, d x^s / d p)`` in float64: the coordinate the neighbours
    are taken around, and the derivative of the padding (1, -1 or 0).
    """
    d = 1.0
    # Far points (1e30, or inf from float32 overflow) -> +-COORD_LIMIT, derivative 0.
    if p > COORD_LIMIT:
        p = COORD_LIMIT
        d = 0.0
    elif p < -COORD_LIMIT:
        p = -COORD_LIMIT
        d = 0.0
    if padding_mode == REFLECTION:
        # Mirror at the edges low and low + span; the pattern repeats every 2 * span.
        if align_corners:
            low = 0.0
            twice_span = 2.0 * (size - 1)
        else:
            low = -0.5
            twice_span = 2.0 * size
        if twice_span == 0.0:  # one pixel with align_corners=True: always pixel 0
            return 0.0, 0.0
        t = p - low
        extra = abs(t) % twice_span  # both >= 0: an exact fmod
        reflected = twice_span - extra
        flip = extra > reflected
        p = (reflected if flip else extra) + low
        if flip != (t < 0.0):
            d = -d
    if padding_mode != ZEROS:
        # Clip to [0, size - 1]; the edges themselves count as outside (derivative 0).
        if p <= 0.0:
            p = 0.0
            d = 0.0
        elif p >= size - 1.0:
            p = size - 1.0
            d = 0.0
    return p, d


@njit(cache=True)
def round_half_even(x):
    """Round to the nearest integer, ties to even (C's nearbyint, NumPy's rint), as a float."""
    f = math.floor(x)
    r = x - f
    if r > 0.5 or (r == 0.5 and f % 2.0 != 0.0):
        f += 1.0
    return f


# ----------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _forward_kernel(inp, grid, out, one, scale_x, scale_y, shift, mode, padding_mode, align_corners):
    n_batch, n_chan, h_in, w_in = inp.shape
    h_out, w_out = grid.shape[1], grid.shape[2]
    for row in prange(n_batch * h_out):  # one output row (n, h) per task
        n = row // h_out
        h = row % h_out
        for w in range(w_out):
            gx = grid[n, h, w, 0]
            gy = grid[n, h, w, 1]
            if not (math.isfinite(gx) and math.isfinite(gy)):
                for c in range(n_chan):  # npstn policy: a NaN/inf point samples 0
                    out[n, c, h, w] = 0.0
                continue
            # unnormalise in the grid dtype (torch's order), then pad
            ix, _ = pad_coordinate((gx + one) * scale_x - shift, w_in, padding_mode, align_corners)
            iy, _ = pad_coordinate((gy + one) * scale_y - shift, h_in, padding_mode, align_corners)
            if mode == NEAREST:
                xn = int(round_half_even(ix))
                yn = int(round_half_even(iy))
                inside = xn >= 0 and xn < w_in and yn >= 0 and yn < h_in
                for c in range(n_chan):
                    out[n, c, h, w] = inp[n, c, yn, xn] if inside else 0.0
                continue
            x0f = math.floor(ix)
            y0f = math.floor(iy)
            fx = ix - x0f  # weight of the east neighbour
            fy = iy - y0f  # weight of the south neighbour
            w_nw = (1.0 - fy) * (1.0 - fx)
            w_ne = (1.0 - fy) * fx
            w_sw = fy * (1.0 - fx)
            w_se = fy * fx
            x0 = int(x0f)
            y0 = int(y0f)
            x0_in = x0 >= 0 and x0 < w_in
            x1_in = x0 + 1 >= 0 and x0 + 1 < w_in
            y0_in = y0 >= 0 and y0 < h_in
            y1_in = y0 + 1 >= 0 and y0 + 1 < h_in
            for c in range(n_chan):
                v = 0.0
                if y0_in and x0_in:
                    v += inp[n, c, y0, x0] * w_nw
                if y0_in and x1_in:
                    v += inp[n, c, y0, x0 + 1] * w_ne
                if y1_in and x0_in:
                    v += inp[n, c, y0 + 1, x0] * w_sw
                if y1_in and x1_in:
                    v += inp[n, c, y0 + 1, x0 + 1] * w_se
                out[n, c, h, w] = v


@njit(cache=True, inline="always")
def _backward_point(grad_output, inp, grid, grad_grid, n, h, w, one, scale_x, scale_y, shift,
                    mode, padding_mode, align_corners):
    """Backward of output point (n, h, w), except the scatter into grad_input.

    Writes ``grad_grid[n, h, w]`` (eq. 7 summed over channels, times the
    padding and unnormalisation derivatives) and returns ``(valid, x0, y0,
    fx, fy)``: whether the point is finite, its north-west neighbour (or its
    nearest pixel) and its fractional offsets, for :func:`_scatter_point`.
    """
    n_chan, h_in, w_in = inp.shape[1], inp.shape[2], inp.shape[3]
    gx = grid[n, h, w, 0]
    gy = grid[n, h, w, 1]
    grad_grid[n, h, w, 0] = 0.0
    grad_grid[n, h, w, 1] = 0.0
    if not (math.isfinite(gx) and math.isfinite(gy)):
        return False, 0, 0, 0.0, 0.0  # zero gradient, no contribution to grad_input
    ix, dx = pad_coordinate((gx + one) * scale_x - shift, w_in, padding_mode, align_corners)
    iy, dy = pad_coordinate((gy + one) * scale_y - shift, h_in, padding_mode, align_corners)
    if mode == NEAREST:  # piecewise constant: grad_grid stays 0
        return True, int(round_half_even(ix)), int(round_half_even(iy)), 0.0, 0.0
    x0f = math.floor(ix)
    y0f = math.floor(iy)
    fx = ix - x0f
    fy = iy - y0f
    x0 = int(x0f)
    y0 = int(y0f)
    x0_in = x0 >= 0 and x0 < w_in
    x1_in = x0 + 1 >= 0 and x0 + 1 < w_in
    y0_in = y0 >= 0 and y0 < h_in
    y1_in = y0 + 1 >= 0 and y0 + 1 < h_in
    gix = 0.0  # dL/dx^s (eq. 7), summed over channels
    giy = 0.0
    for c in range(n_chan):
        go = grad_output[n, c, h, w]
        nw = inp[n, c, y0, x0] if (y0_in and x0_in) else 0.0
        ne = inp[n, c, y0, x0 + 1] if (y0_in and x1_in) else 0.0
        sw = inp[n, c, y0 + 1, x0] if (y1_in and x0_in) else 0.0
        se = inp[n, c, y0 + 1, x0 + 1] if (y1_in and x1_in) else 0.0
        gix += ((ne - nw) * (1.0 - fy) + (se - sw) * fy) * go
        giy += ((sw - nw) * (1.0 - fx) + (se - ne) * fx) * go
    # chain rule through padding and unnormalisation
    grad_grid[n, h, w, 0] = gix * (dx * scale_x)
    grad_grid[n, h, w, 1] = giy * (dy * scale_y)
    return True, x0, y0, fx, fy


@njit(cache=True, inline="always")
def _scatter_point(grad_input, n, c, x0, y0, fx, fy, go, mode):
    """grad_input[n, c] += go * (the point's sampling weights) (eq. 6); outside pixels get nothing."""
    h_in, w_in = grad_input.shape[2], grad_input.shape[3]
    if mode == NEAREST:
        if x0 >= 0 and x0 < w_in and y0 >= 0 and y0 < h_in:
            grad_input[n, c, y0, x0] += go
        return
    x0_in = x0 >= 0 and x0 < w_in
    x1_in = x0 + 1 >= 0 and x0 + 1 < w_in
    y0_in = y0 >= 0 and y0 < h_in
    y1_in = y0 + 1 >= 0 and y0 + 1 < h_in
    if y0_in and x0_in:
        grad_input[n, c, y0, x0] += (1.0 - fy) * (1.0 - fx) * go
    if y0_in and x1_in:
        grad_input[n, c, y0, x0 + 1] += (1.0 - fy) * fx * go
    if y1_in and x0_in:
        grad_input[n, c, y0 + 1, x0] += fy * (1.0 - fx) * go
    if y1_in and x1_in:
        grad_input[n, c, y0 + 1, x0 + 1] += fy * fx * go


@njit(parallel=True, cache=True)
def _backward_by_image_kernel(grad_output, inp, grid, grad_input, grad_grid,
                              one, scale_x, scale_y, shift, mode, padding_mode, align_corners):
    """One pass, parallel over the batch: image n owns grad_input[n] (for N >= threads)."""
    n_chan = inp.shape[1]
    h_out, w_out = grid.shape[1], grid.shape[2]
    for n in prange(inp.shape[0]):
        for h in range(h_out):
            for w in range(w_out):
                valid, x0, y0, fx, fy = _backward_point(grad_output, inp, grid, grad_grid, n, h, w, one,
                                                        scale_x, scale_y, shift, mode, padding_mode,
                                                        align_corners)
                if valid:
                    for c in range(n_chan):
                        _scatter_point(grad_input, n, c, x0, y0, fx, fy, grad_output[n, c, h, w], mode)


@njit(parallel=True, cache=True)
def _backward_points_kernel(grad_output, inp, grid, grad_grid, xs, ys, fxs, fys, valid,
                            one, scale_x, scale_y, shift, mode, padding_mode, align_corners):
    """Split pass 1, parallel over output rows: grad_grid, and each point's neighbours for pass 2."""
    h_out, w_out = grid.shape[1], grid.shape[2]
    for row in prange(inp.shape[0] * h_out):
        n = row // h_out
        h = row % h_out
        for w in range(w_out):
            t = row * w_out + w  # flat index of the point (n, h, w)
            valid[t], xs[t], ys[t], fxs[t], fys[t] = _backward_point(
                grad_output, inp, grid, grad_grid, n, h, w, one, scale_x, scale_y, shift, mode,
                padding_mode, align_corners)


@njit(parallel=True, cache=True)
def _backward_scatter_kernel(grad_output, grad_input, xs, ys, fxs, fys, valid, mode):
    """Split pass 2, parallel over (n, c) planes: each plane gathers its own contributions."""
    n_chan = grad_input.shape[1]
    h_out, w_out = grad_output.shape[2], grad_output.shape[3]
    for q in prange(grad_input.shape[0] * n_chan):
        n = q // n_chan
        c = q % n_chan
        for h in range(h_out):
            for w in range(w_out):
                t = (n * h_out + h) * w_out + w
                if valid[t]:
                    _scatter_point(grad_input, n, c, xs[t], ys[t], fxs[t], fys[t], grad_output[n, c, h, w], mode)


# ----------------------------------------------------------------------------
# Host wrappers
# ----------------------------------------------------------------------------

def unnormalize_constants(dtype, h_in: int, w_in: int, align_corners: bool):
    """(one, scale_x, scale_y, shift) in ``dtype`` for x^s = (x + one) * scale - shift."""
    t = np.dtype(dtype).type
    if align_corners:
        return t(1), t((w_in - 1) / 2), t((h_in - 1) / 2), t(0)
    return t(1), t(w_in / 2), t(h_in / 2), t(0.5)


def forward(input, grid, mode: str, padding_mode: str, align_corners: bool) -> np.ndarray:
    """Sampled output (N, C, H_out, W_out) for validated NumPy ``input`` and ``grid``."""
    inp = np.ascontiguousarray(input)
    grd = np.ascontiguousarray(grid)
    n_batch, n_chan, h_in, w_in = inp.shape
    out = np.empty((n_batch, n_chan, grd.shape[1], grd.shape[2]), dtype=inp.dtype)
    one, sx, sy, shift = unnormalize_constants(inp.dtype, h_in, w_in, align_corners)
    _forward_kernel(inp, grd, out, one, sx, sy, shift, MODE_CODES[mode],
                    PADDING_CODES[padding_mode], bool(align_corners))
    return out


def backward(grad_output, input, grid, mode: str, padding_mode: str, align_corners: bool, split=None):
    """(grad_input, grad_grid) for validated NumPy arrays.

    ``split``: None chooses -- one pass parallel over the batch when N is at
    least the number of Numba threads, else the two-pass split (parallel over
    output rows, then over (n, c) planes). True/False force a strategy (tests
    use this to cover both). Both are race-free and give identical results.
    """
    gout = np.ascontiguousarray(grad_output)
    inp = np.ascontiguousarray(input)
    grd = np.ascontiguousarray(grid)
    n_batch, n_chan, h_in, w_in = inp.shape
    grad_input = np.zeros_like(inp)
    grad_grid = np.empty_like(grd)
    one, sx, sy, shift = unnormalize_constants(inp.dtype, h_in, w_in, align_corners)
    mode_code = MODE_CODES[mode]
    pad_code = PADDING_CODES[padding_mode]
    align = bool(align_corners)
    if split is None:
        split = n_batch < numba.get_num_threads()
    if not split:
        _backward_by_image_kernel(gout, inp, grd, grad_input, grad_grid, one, sx, sy, shift,
                                  mode_code, pad_code, align)
        return grad_input, grad_grid
    # per-point scratch shared by the two passes (every entry pass 2 reads is written by pass 1)
    n_total = n_batch * grd.shape[1] * grd.shape[2]
    xs = np.empty(n_total, dtype=np.int64)
    ys = np.empty(n_total, dtype=np.int64)
    fxs = np.empty(n_total, dtype=np.float64)
    fys = np.empty(n_total, dtype=np.float64)
    valid = np.empty(n_total, dtype=np.bool_)
    _backward_points_kernel(gout, inp, grd, grad_grid, xs, ys, fxs, fys, valid, one, sx, sy, shift,
                            mode_code, pad_code, align)
    _backward_scatter_kernel(gout, grad_input, xs, ys, fxs, fys, valid, mode_code)
    return grad_input, grad_grid
