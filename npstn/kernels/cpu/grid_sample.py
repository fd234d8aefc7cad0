"""CPU kernels of the sampler (bilinear / nearest ``grid_sample``): Numba ``@njit``.

The math, the conventions and the readable vectorised specification are in
:mod:`npstn.functional.grid_sample`; this module computes the same numbers,
point by point, as fast as we could make them on a CPU. The forward and the
backward pass share their first phase and sit side by side below.

Two phases, tile by tile
------------------------
The output points of one image are processed in *tiles* of up to
``TILE_POINTS`` consecutive points (whole images when they are small).
For each tile:

1. **Locate** (:func:`_locate`, once per point, for all channels): unnormalise
   the grid coordinates, clamp far points, pad, take the floor, and record
   in a small scratch buffer where the point reads and with which weights::

       x^s = (x + 1) * scale - shift                     grid dtype, torch's order
       x^s = clamp(x^s, +-COORD_LIMIT)                   npstn's far-point policy
       x0 = floor(x^s); fx = x^s - x0                    (the same for y)
       off  = y0 * W + x0                                the north-west neighbour
       mask = which of the four neighbours are inside    (bits NW, NE, SW, SE)
       wts  = (1-fy)(1-fx), (1-fy)fx, fy(1-fx), fy fx    eq. 5

   For bilinear sampling with 'zeros' padding this loop has no branches (a
   NaN/inf point and the clamp are selects), and the scratch is allocated
   inside the kernel, so the compiler knows it overlaps nothing: it
   vectorises the loop (8 float32 points per instruction with AVX2).

2. **Sample** (:func:`_sample`) or, in the backward, **scatter and gather**
   (:func:`_backward_channels`): walk the tile's points once per block of
   ``CHANNEL_BLOCK`` channels; each point's scratch is loaded once for the
   block, then each channel reads its four neighbours. A point whose four
   neighbours are all inside (``mask == ALL``, the common case) reads them
   with no checks; the others, in a band along the image border, skip the
   neighbours outside.

Why this order: walking all the channels of one point before the next point
(the obvious loop) strides through memory by a whole plane per step. With
planes a power of two in size (64 x 64 floats = 16 KiB), every channel of a
pixel then falls into the same cache set, and a 32-channel forward ran 2x
slower than plane by plane. Blocks of 4 channels keep that conflict small
while loading each point's scratch a quarter as often (another 1.4x for 32
channels).

Specialised kernels
-------------------
The kernel bodies are written once, in the factories ``_make_*``; each
factory call compiles a separate kernel for one (mode, padding_mode) pair
and one driver (parallel ``prange`` or a plain serial loop). Inside a body,
``MODE`` and ``PADDING`` are closure constants, and it passes them on to the
helpers. Numba types a constant argument as a literal and compiles a
helper once per literal value, so ``if padding == ZEROS:`` and the channel
block size are fixed when the kernel is compiled: the bilinear/zeros kernel
has no run-time branch on the mode or the padding, and its channel loops
are unrolled. (The channel blocks are 4, then 3, 2 or 1 for what is left.)
Kernels are compiled on first use, then cached on disk.

* The weights are computed and applied in the input's dtype (float32 stays
  float32, as in the NumPy specification, and the forward reproduces it bit
  for bit). Which neighbours a point takes, and so which one-sided
  sub-gradient it gets at a kink, depends only on x^s, which is the
  specification's value bit for bit.
* Arrays are addressed through flat C-order offsets: a point's four
  neighbours in an input plane are ``i, i + 1, i + W, i + W + 1`` with
  ``i = y0 * W + x0``, and the same pixel of the next channel is
  ``i + H * W``. The interior path indexes with unsigned integers: Numba
  then skips its negative-index wraparound fix-up (three more instructions
  on every access).
* 'border' and 'reflection' pad the coordinate with :func:`pad_coordinate`
  (in float64, exact, then rounded to the grid dtype once; the
  specification reflects in the grid dtype, which can differ in the last bit
  in rare float32 cases); 'nearest' reads one pixel (ties to even).

Parallelism (two cores in mind)
-------------------------------
* Calls with fewer than ``PARALLEL_MIN_WORK`` output elements run the serial
  kernels: starting the thread pool costs more than it saves there (and a
  serial call is immune to an oversubscribed machine, which matters for the
  thousands of tiny calls a gradient check makes).
* ``forward``: ``prange`` over blocks of tiles, ``CHUNKS_PER_THREAD`` blocks
  per thread, handed out one at a time (``numba.parallel_chunksize(1)``) to
  whichever thread is free: on a busy machine a descheduled thread does not
  hold the others back. Each block allocates its scratch once.
* ``backward``: race-free without atomics, in one of two ways.

  - By image (when the batch divides evenly among the threads, or has at
    least ``CHUNKS_PER_THREAD`` images per thread, so the remainder costs
    little): one pass, ``prange`` over blocks of whole images. Image n
    belongs to one block, so its thread owns ``grad_input[n]``: it zeroes it
    just before scattering into it (while it goes into cache), and per
    block of channels one loop both scatters eq. 6 into it and gathers
    eq. 7's coordinate gradient.
  - Split, otherwise (e.g. one image, or 3 images on 2 threads):
    1. ``prange`` over blocks of tiles: locate every point, keeping the
       scratch for all points, and compute ``grad_grid``;
    2. ``prange`` over the N * C (image, channel) planes: each plane owns
       ``grad_input[n, c]`` and scatters every point's ``grad_output`` into
       it with the recorded weights.

  No two threads ever add into the same element, so neither way needs
  atomics or per-thread copies. Both add every pixel's contributions in the
  same order (point by point, NW, NE, SW, SE), so they give the same bits,
  whatever the thread count.

Precision: the unnormalisation is computed in the grid's dtype, in the order
torch's CPU kernel writes it and the NumPy specification computes it. The
typed constants (1, scale, shift, the far limit) come from the host, because
Numba types Python float literals as float64. The channel sums of the
coordinate gradient (eq. 7) accumulate in float64 and are rounded once into
grad_grid.

The scalar helpers :func:`pad_coordinate` and :func:`round_half_even` are
plain Python functions compiled with ``@njit``; the CUDA backend compiles the
very same Python source (``.py_func``) as device functions, so the padding
logic exists once.

Nothing here validates its arguments; :mod:`npstn.functional.grid_sample`
does that before dispatching.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

__all__ = ["forward", "backward", "MODE_CODES", "PADDING_CODES", "COORD_LIMIT", "PARALLEL_MIN_WORK",
           "TILE_POINTS"]

# Integer codes of the modes (strings cannot cross into @njit cheaply).
BILINEAR, NEAREST = 0, 1
ZEROS, BORDER, REFLECTION = 0, 1, 2
MODE_CODES = {"bilinear": BILINEAR, "nearest": NEAREST}
PADDING_CODES = {"zeros": ZEROS, "border": BORDER, "reflection": REFLECTION}

# Pixel coordinates are clamped to +-COORD_LIMIT before padding (npstn's
# policy for huge grid values such as 1e30; keep in sync with
# npstn.functional.grid_sample.COORD_LIMIT -- a test checks). 2**22 is far
# outside any image yet small enough that float32 arithmetic on it is exact.
COORD_LIMIT = 4194304.0

#: calls with fewer output elements (N * C * H_out * W_out, counting at least
#: two channels: the grid) run the serial kernels
PARALLEL_MIN_WORK = 1 << 15

#: parallel loops are cut into about this many blocks per thread
CHUNKS_PER_THREAD = 8

#: channels handled together in the inner loops (their point scratch is loaded once)
CHANNEL_BLOCK = 4

#: at most this many output points per tile (the scratch of a tile, about
#: 50 bytes a point in the backward, stays in the L2 cache)
TILE_POINTS = 2048

# Which of a point's four neighbours lie inside the image: bits of ``mask``.
NW, NE, SW, SE = 1, 2, 4, 8
ALL = NW | NE | SW | SE


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


@njit(cache=True, inline="always")
def _source_coordinate(g, size, one, scale, shift, limit, padding, align_corners):
    """Normalised coordinate g (finite) -> (x^s, d x^s / d g), both in g's dtype.

    ``padding`` is a compile-time constant in every caller, so only one of
    the two branches is compiled.
    """
    p = (g + one) * scale - shift  # the grid dtype, torch's order of operations
    if padding == ZEROS:
        # Only the far-point clamp, written as min/max and a select (no
        # branch, so the loop around it vectorises). A clamped point is
        # outside the image anyway; the clamp keeps the integer neighbour
        # indices from overflowing. float32 overflow (p = inf) lands here too.
        d = scale if abs(p) <= limit else scale - scale
        return min(max(p, -limit), limit), d
    q, d = pad_coordinate(p, size, padding, align_corners)  # float64 (exact for border)
    return type(one)(q), type(one)(d * scale)  # back to the grid dtype (Numba: type(x)(v) casts)


# ----------------------------------------------------------------------------
# Phase 1, shared by forward and backward: where each point reads
# ----------------------------------------------------------------------------

@njit(cache=True)
def _locate(g, n, h_in, w_in, one, scale_x, scale_y, shift, limit, mode, padding, align_corners,
            off, mask, wts, fxy, dxy, for_backward):
    """Locate ``n`` consecutive output points whose flat grid values are ``g`` (x, y, x, y, ...).

    For point w it writes

    * ``off[w]``: the plane offset y0 * W + x0 of its north-west neighbour
      (bilinear) or of its nearest pixel (nearest, ties to even);
    * ``mask[w]``: which neighbours are inside the image (bits NW, NE, SW,
      SE; nearest uses NW for its one pixel); 0 for a NaN/inf point, which
      samples 0 and gets no gradient (npstn's policy: like the
      specification, such a point is computed at (0, 0) and masked out);
    * ``wts[:, w]``: the bilinear weights (1-fy)(1-fx), (1-fy)fx, fy(1-fx),
      fy fx in the grid dtype (eq. 5);
    * ``fxy[:, w]`` = (fx, fy) and ``dxy[:, w]`` = (d x^s / d x, d y^s / d y)
      for the backward (eq. 7 and the chain rule through the far clamp, the
      padding and the unnormalisation), only if ``for_backward``.

    ``mode``, ``padding`` and ``for_backward`` are compile-time constants in
    every caller.
    """
    zero = one - one
    for w in range(n):
        gx = g[2 * w]
        gy = g[2 * w + 1]
        valid = np.isfinite(gx) & np.isfinite(gy)
        gx = gx if valid else zero
        gy = gy if valid else zero
        ix, dx = _source_coordinate(gx, w_in, one, scale_x, shift, limit, padding, align_corners)
        iy, dy = _source_coordinate(gy, h_in, one, scale_y, shift, limit, padding, align_corners)
        if for_backward:
            dxy[0, w] = dx
            dxy[1, w] = dy
        if mode == NEAREST:
            xn = int(round_half_even(ix))
            yn = int(round_half_even(iy))
            inside = valid and xn >= 0 and xn < w_in and yn >= 0 and yn < h_in
            off[w] = yn * w_in + xn if inside else 0
            mask[w] = NW if inside else 0
            continue
        x0f = np.floor(ix)  # np.floor keeps the dtype (math.floor would return an int)
        y0f = np.floor(iy)
        fx = ix - x0f  # exact
        fy = iy - y0f
        x0 = np.int32(x0f)  # |x0| <= 2**22; int32 converts 8 at a time
        y0 = np.int32(y0f)
        off[w] = y0 * w_in + x0
        x0_in = (x0 >= 0) & (x0 < w_in)
        x1_in = (x0 >= -1) & (x0 < w_in - 1)
        y0_in = (y0 >= 0) & (y0 < h_in)
        y1_in = (y0 >= -1) & (y0 < h_in - 1)
        m = ((np.uint8(y0_in & x0_in) * NW) | (np.uint8(y0_in & x1_in) * NE)
             | (np.uint8(y1_in & x0_in) * SW) | (np.uint8(y1_in & x1_in) * SE))
        mask[w] = m if valid else 0
        wts[0, w] = (one - fy) * (one - fx)
        wts[1, w] = (one - fy) * fx
        wts[2, w] = fy * (one - fx)
        wts[3, w] = fy * fx
        if for_backward:
            fxy[0, w] = fx
            fxy[1, w] = fy


# ----------------------------------------------------------------------------
# Phase 2: forward (eq. 3-5) and backward (eq. 6, 7), a block of channels at a time
# ----------------------------------------------------------------------------
#
# These take the flat arrays, the offset ``in0`` of the block's first input
# plane, ``out0`` of the tile's first point in its first output plane, and
# ``cb``, the number of channels in the block (a literal: see the module
# docstring). Offsets are unsigned in the hot paths.

@njit(cache=True)
def _sample(src, dst, in0, out0, cb, plane_in, plane_out, n, w_in, off, mask, wts, zero, mode):
    """Forward of ``n`` located points in ``cb`` channels: dst (flat output) from src (flat input)."""
    u1 = np.uint64(1)
    uw = np.uint64(w_in)
    step_in = np.uint64(plane_in)
    step_out = np.uint64(plane_out)
    for w in range(n):
        m = mask[w]
        o = np.uint64(out0 + w)
        if mode == NEAREST:  # eq. 4: copy one pixel
            i = np.uint64(in0 + off[w])  # off = 0 when m == 0
            for c in range(cb):
                dst[o] = src[i] if m else zero
                i += step_in
                o += step_out
        elif m == ALL:  # the common case: all four neighbours inside, no checks
            i = np.uint64(in0 + off[w])
            w_nw = wts[0, w]
            w_ne = wts[1, w]
            w_sw = wts[2, w]
            w_se = wts[3, w]
            for c in range(cb):
                dst[o] = src[i] * w_nw + src[i + u1] * w_ne + src[i + uw] * w_sw + src[i + uw + u1] * w_se
                i += step_in
                o += step_out
        else:  # near the border (or NaN): neighbours outside read 0, i.e. are skipped
            i = in0 + np.int64(off[w])  # may point before the plane: only inside neighbours are read
            for c in range(cb):
                v = zero
                if m & NW:
                    v += src[i] * wts[0, w]
                if m & NE:
                    v += src[i + 1] * wts[1, w]
                if m & SW:
                    v += src[i + w_in] * wts[2, w]
                if m & SE:
                    v += src[i + w_in + 1] * wts[3, w]
                dst[o] = v
                i += plane_in
                o += step_out


@njit(cache=True)
def _backward_channels(src, gin, gout, in0, out0, cb, plane_in, plane_out, n, w_in, off, mask, wts, fxy, acc,
                       one, zero, mode):
    """Backward of ``n`` located points in ``cb`` channels, in one loop.

    Scatters G = grad_output into grad_input (flat ``gin``) with the
    forward's weights (eq. 6) and adds these channels' terms of dL/dx^s,
    dL/dy^s (eq. 7) to ``acc[:, w]`` (float64). Neighbours outside the image
    read 0 and receive nothing.
    """
    u1 = np.uint64(1)
    uw = np.uint64(w_in)
    step_in = np.uint64(plane_in)
    step_out = np.uint64(plane_out)
    for w in range(n):
        m = mask[w]
        if m == 0:  # outside, or NaN/inf: no gradient anywhere
            continue
        o = np.uint64(out0 + w)
        if mode == NEAREST:  # route G to the nearest pixel; no coordinate gradient
            i = np.uint64(in0 + off[w])
            for c in range(cb):
                gin[i] += gout[o]
                i += step_in
                o += step_out
            continue
        w_nw = wts[0, w]
        w_ne = wts[1, w]
        w_sw = wts[2, w]
        w_se = wts[3, w]
        fx = fxy[0, w]
        fy = fxy[1, w]
        gx = 0.0  # this block's part of dL/dx^s, dL/dy^s (eq. 7), float64
        gy = 0.0
        if m == ALL:  # the common case, no checks
            i = np.uint64(in0 + off[w])
            for c in range(cb):
                go = gout[o]
                nw = src[i]
                ne = src[i + u1]
                sw = src[i + uw]
                se = src[i + uw + u1]
                gin[i] += w_nw * go
                gin[i + u1] += w_ne * go
                gin[i + uw] += w_sw * go
                gin[i + uw + u1] += w_se * go
                gx += ((ne - nw) * (one - fy) + (se - sw) * fy) * go
                gy += ((sw - nw) * (one - fx) + (se - ne) * fx) * go
                i += step_in
                o += step_out
        else:
            i = in0 + np.int64(off[w])
            for c in range(cb):
                go = gout[o]
                nw = ne = sw = se = zero
                if m & NW:
                    nw = src[i]
                    gin[i] += w_nw * go
                if m & NE:
                    ne = src[i + 1]
                    gin[i + 1] += w_ne * go
                if m & SW:
                    sw = src[i + w_in]
                    gin[i + w_in] += w_sw * go
                if m & SE:
                    se = src[i + w_in + 1]
                    gin[i + w_in + 1] += w_se * go
                gx += ((ne - nw) * (one - fy) + (se - sw) * fy) * go
                gy += ((sw - nw) * (one - fx) + (se - ne) * fx) * go
                i += plane_in
                o += step_out
        acc[0, w] += gx
        acc[1, w] += gy


@njit(cache=True)
def _coords_channels(src, gout, in0, out0, cb, plane_in, plane_out, n, w_in, off, mask, fxy, acc, one, zero):
    """eq. 7 only (split pass 1): add ``cb`` channels' terms of dL/dx^s, dL/dy^s to ``acc``."""
    u1 = np.uint64(1)
    uw = np.uint64(w_in)
    step_in = np.uint64(plane_in)
    step_out = np.uint64(plane_out)
    for w in range(n):
        m = mask[w]
        if m == 0:
            continue
        o = np.uint64(out0 + w)
        fx = fxy[0, w]
        fy = fxy[1, w]
        gx = 0.0
        gy = 0.0
        if m == ALL:
            i = np.uint64(in0 + off[w])
            for c in range(cb):
                go = gout[o]
                nw = src[i]
                ne = src[i + u1]
                sw = src[i + uw]
                se = src[i + uw + u1]
                gx += ((ne - nw) * (one - fy) + (se - sw) * fy) * go
                gy += ((sw - nw) * (one - fx) + (se - ne) * fx) * go
                i += step_in
                o += step_out
        else:
            i = in0 + np.int64(off[w])
            for c in range(cb):
                go = gout[o]
                nw = src[i] if m & NW else zero
                ne = src[i + 1] if m & NE else zero
                sw = src[i + w_in] if m & SW else zero
                se = src[i + w_in + 1] if m & SE else zero
                gx += ((ne - nw) * (one - fy) + (se - sw) * fy) * go
                gy += ((sw - nw) * (one - fx) + (se - ne) * fx) * go
                i += plane_in
                o += step_out
        acc[0, w] += gx
        acc[1, w] += gy


@njit(cache=True, inline="always")
def _forward_tile(src, dst, q0, n_chan, p0, n, plane_in, plane_out, w_in, off, mask, wts, zero, mode):
    """Sample ``n`` located points (the tile from point p0) in all channels of one image.

    ``q0`` is the image's first (image, channel) plane. Channels go in
    blocks of CHANNEL_BLOCK, then one block of the 3, 2 or 1 left: each
    block size is a compile-time constant of its own copy of :func:`_sample`
    (Numba compiles a function once per literal argument), so its channel
    loop is unrolled.
    """
    c = 0
    while c + CHANNEL_BLOCK <= n_chan:
        q = q0 + c
        _sample(src, dst, q * plane_in, q * plane_out + p0, CHANNEL_BLOCK, plane_in, plane_out, n, w_in, off, mask,
                wts, zero, mode)
        c += CHANNEL_BLOCK
    q = q0 + c
    if n_chan - c == 3:
        _sample(src, dst, q * plane_in, q * plane_out + p0, 3, plane_in, plane_out, n, w_in, off, mask, wts, zero,
                mode)
    elif n_chan - c == 2:
        _sample(src, dst, q * plane_in, q * plane_out + p0, 2, plane_in, plane_out, n, w_in, off, mask, wts, zero,
                mode)
    elif n_chan - c == 1:
        _sample(src, dst, q * plane_in, q * plane_out + p0, 1, plane_in, plane_out, n, w_in, off, mask, wts, zero,
                mode)


@njit(cache=True, inline="always")
def _backward_tile(src, gin, gout, q0, n_chan, p0, n, plane_in, plane_out, w_in, off, mask, wts, fxy, acc, one,
                   zero, mode):
    """:func:`_backward_channels` for all channels of one image, blocked as in :func:`_forward_tile`."""
    c = 0
    while c + CHANNEL_BLOCK <= n_chan:
        q = q0 + c
        _backward_channels(src, gin, gout, q * plane_in, q * plane_out + p0, CHANNEL_BLOCK, plane_in, plane_out, n,
                           w_in, off, mask, wts, fxy, acc, one, zero, mode)
        c += CHANNEL_BLOCK
    q = q0 + c
    if n_chan - c == 3:
        _backward_channels(src, gin, gout, q * plane_in, q * plane_out + p0, 3, plane_in, plane_out, n, w_in, off,
                           mask, wts, fxy, acc, one, zero, mode)
    elif n_chan - c == 2:
        _backward_channels(src, gin, gout, q * plane_in, q * plane_out + p0, 2, plane_in, plane_out, n, w_in, off,
                           mask, wts, fxy, acc, one, zero, mode)
    elif n_chan - c == 1:
        _backward_channels(src, gin, gout, q * plane_in, q * plane_out + p0, 1, plane_in, plane_out, n, w_in, off,
                           mask, wts, fxy, acc, one, zero, mode)


@njit(cache=True, inline="always")
def _coords_tile(src, gout, q0, n_chan, p0, n, plane_in, plane_out, w_in, off, mask, fxy, acc, one, zero):
    """:func:`_coords_channels` for all channels of one image, blocked as in :func:`_forward_tile`."""
    c = 0
    while c + CHANNEL_BLOCK <= n_chan:
        q = q0 + c
        _coords_channels(src, gout, q * plane_in, q * plane_out + p0, CHANNEL_BLOCK, plane_in, plane_out, n, w_in,
                         off, mask, fxy, acc, one, zero)
        c += CHANNEL_BLOCK
    q = q0 + c
    if n_chan - c == 3:
        _coords_channels(src, gout, q * plane_in, q * plane_out + p0, 3, plane_in, plane_out, n, w_in, off, mask,
                         fxy, acc, one, zero)
    elif n_chan - c == 2:
        _coords_channels(src, gout, q * plane_in, q * plane_out + p0, 2, plane_in, plane_out, n, w_in, off, mask,
                         fxy, acc, one, zero)
    elif n_chan - c == 1:
        _coords_channels(src, gout, q * plane_in, q * plane_out + p0, 1, plane_in, plane_out, n, w_in, off, mask,
                         fxy, acc, one, zero)


@njit(cache=True)
def _scatter_plane(grad_plane, gout, n, w_in, off, mask, wts, mode):
    """eq. 6 only (split pass 2): ``grad_plane`` += G with each point's weights."""
    u1 = np.uint64(1)
    uw = np.uint64(w_in)
    for w in range(n):
        m = mask[w]
        if m == 0:
            continue
        go = gout[w]
        if mode == NEAREST:
            grad_plane[off[w]] += go
        elif m == ALL:
            i = np.uint64(off[w])
            grad_plane[i] += wts[0, w] * go
            grad_plane[i + u1] += wts[1, w] * go
            grad_plane[i + uw] += wts[2, w] * go
            grad_plane[i + uw + u1] += wts[3, w] * go
        else:
            i = np.int64(off[w])
            if m & NW:
                grad_plane[i] += wts[0, w] * go
            if m & NE:
                grad_plane[i + 1] += wts[1, w] * go
            if m & SW:
                grad_plane[i + w_in] += wts[2, w] * go
            if m & SE:
                grad_plane[i + w_in + 1] += wts[3, w] * go


@njit(cache=True)
def _store_grad_grid(ggrid, n, acc, dxy):
    """grad_grid of ``n`` points (flat x, y, x, y, ...): the channel sums times d x^s / d x, rounded once."""
    for w in range(n):
        ggrid[2 * w] = acc[0, w] * dxy[0, w]
        ggrid[2 * w + 1] = acc[1, w] * dxy[1, w]


# ----------------------------------------------------------------------------
# The kernels (one per mode, padding and driver, from these factories)
# ----------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _tiling(points: int, tile_points: int):
    """(tiles per image, points per tile): equal tiles of at most ``tile_points``."""
    tiles = (points + tile_points - 1) // tile_points
    return tiles, (points + tiles - 1) // tiles


def _make_forward(mode, padding, parallel):
    """Forward kernel: prange over ``n_blocks`` blocks of (image, tile) pairs.

    Per tile: locate its points, then sample them in every channel plane.
    """
    MODE, PADDING, PARALLEL = mode, padding, parallel  # compile-time constants of this kernel

    @njit(parallel=parallel, cache=True)
    def kernel(inp, grid, out, one, scale_x, scale_y, shift, limit, align_corners, tile_points, n_blocks):
        PARALLEL  # noqa: B018 (a closure variable, so part of the cache key: see _KERNELS)
        n_batch, n_chan, h_in, w_in = inp.shape
        plane_in = h_in * w_in
        plane_out = grid.shape[1] * grid.shape[2]
        src = inp.reshape(inp.size)  # flat views; offsets computed by hand
        dst = out.reshape(out.size)
        grd = grid.reshape(grid.size)
        zero = one - one
        tiles, tile = _tiling(plane_out, tile_points)
        n_items = n_batch * tiles
        per_block = (n_items + n_blocks - 1) // n_blocks
        for b in prange(n_blocks):
            off = np.empty(tile, dtype=np.int32)  # the tile's scratch, once per block
            mask = np.empty(tile, dtype=np.uint8)
            wts = np.empty((4, tile), dtype=inp.dtype)
            for item in range(b * per_block, min(n_items, (b + 1) * per_block)):
                n = item // tiles
                p0 = (item - n * tiles) * tile  # the tile's first point in image n
                k = min(tile, plane_out - p0)  # its length
                t0 = n * plane_out + p0  # ... as a point of the whole grid
                _locate(grd[2 * t0:2 * (t0 + k)], k, h_in, w_in, one, scale_x, scale_y, shift, limit, MODE,
                        PADDING, align_corners, off, mask, wts, wts, wts, False)
                _forward_tile(src, dst, n * n_chan, n_chan, p0, k, plane_in, plane_out, w_in, off, mask, wts, zero,
                              MODE)

    return kernel


def _make_backward_by_image(mode, padding, parallel):
    """One-pass backward: prange over ``n_blocks`` blocks of whole images.

    Image n belongs to one block, so its thread owns grad_input[n]: it zeroes
    it and scatters into it without races. Per tile: locate its points, then
    per channel plane scatter eq. 6 and gather eq. 7 in one loop, then store
    the tile's grad_grid.
    """
    MODE, PADDING, PARALLEL = mode, padding, parallel

    @njit(parallel=parallel, cache=True)
    def kernel(grad_output, inp, grid, grad_input, grad_grid, one, scale_x, scale_y, shift, limit,
               align_corners, tile_points, n_blocks):
        PARALLEL  # noqa: B018 (a closure variable, so part of the cache key: see _KERNELS)
        n_batch, n_chan, h_in, w_in = inp.shape
        plane_in = h_in * w_in
        plane_out = grid.shape[1] * grid.shape[2]
        src = inp.reshape(inp.size)
        gin = grad_input.reshape(grad_input.size)
        gout = grad_output.reshape(grad_output.size)
        grd = grid.reshape(grid.size)
        ggrd = grad_grid.reshape(grad_grid.size)
        zero = one - one
        tiles, tile = _tiling(plane_out, tile_points)
        per_block = (n_batch + n_blocks - 1) // n_blocks
        for b in prange(n_blocks):
            off = np.empty(tile, dtype=np.int32)
            mask = np.empty(tile, dtype=np.uint8)
            wts = np.empty((4, tile), dtype=inp.dtype)
            fxy = np.empty((2, tile), dtype=inp.dtype)
            dxy = np.empty((2, tile), dtype=inp.dtype)
            acc = np.empty((2, tile), dtype=np.float64)
            for n in range(b * per_block, min(n_batch, (b + 1) * per_block)):
                gin[n * n_chan * plane_in:(n + 1) * n_chan * plane_in] = 0  # grad_input[n]: ours
                for p0 in range(0, plane_out, tile):
                    k = min(tile, plane_out - p0)
                    t0 = n * plane_out + p0
                    _locate(grd[2 * t0:2 * (t0 + k)], k, h_in, w_in, one, scale_x, scale_y, shift, limit, MODE,
                            PADDING, align_corners, off, mask, wts, fxy, dxy, True)
                    acc[:, :k] = 0.0
                    _backward_tile(src, gin, gout, n * n_chan, n_chan, p0, k, plane_in, plane_out, w_in, off, mask,
                                   wts, fxy, acc, one, zero, MODE)
                    _store_grad_grid(ggrd[2 * t0:2 * (t0 + k)], k, acc, dxy)

    return kernel


def _make_backward_points(mode, padding, parallel):
    """Split pass 1: prange over blocks of (image, tile) pairs; grad_grid, and the scratch of every point.

    ``off``, ``mask`` (N, H_out * W_out) and ``wts`` (N, 4, H_out * W_out)
    keep every point's phase-1 results for the scatter pass.
    """
    MODE, PADDING, PARALLEL = mode, padding, parallel

    @njit(parallel=parallel, cache=True)
    def kernel(grad_output, inp, grid, grad_grid, off, mask, wts, one, scale_x, scale_y, shift, limit,
               align_corners, tile_points, n_blocks):
        PARALLEL  # noqa: B018 (a closure variable, so part of the cache key: see _KERNELS)
        n_batch, n_chan, h_in, w_in = inp.shape
        plane_in = h_in * w_in
        plane_out = grid.shape[1] * grid.shape[2]
        src = inp.reshape(inp.size)
        gout = grad_output.reshape(grad_output.size)
        grd = grid.reshape(grid.size)
        ggrd = grad_grid.reshape(grad_grid.size)
        zero = one - one
        tiles, tile = _tiling(plane_out, tile_points)
        n_items = n_batch * tiles
        per_block = (n_items + n_blocks - 1) // n_blocks
        for b in prange(n_blocks):
            fxy = np.empty((2, tile), dtype=inp.dtype)
            dxy = np.empty((2, tile), dtype=inp.dtype)
            acc = np.empty((2, tile), dtype=np.float64)
            for item in range(b * per_block, min(n_items, (b + 1) * per_block)):
                n = item // tiles
                p0 = (item - n * tiles) * tile
                k = min(tile, plane_out - p0)
                t0 = n * plane_out + p0
                t_off = off[n, p0:p0 + k]  # this tile's part of the kept scratch
                t_mask = mask[n, p0:p0 + k]
                t_wts = wts[n, :, p0:p0 + k]
                _locate(grd[2 * t0:2 * (t0 + k)], k, h_in, w_in, one, scale_x, scale_y, shift, limit, MODE,
                        PADDING, align_corners, t_off, t_mask, t_wts, fxy, dxy, True)
                acc[:, :k] = 0.0
                if MODE != NEAREST:
                    _coords_tile(src, gout, n * n_chan, n_chan, p0, k, plane_in, plane_out, w_in, t_off, t_mask, fxy,
                                 acc, one, zero)
                _store_grad_grid(ggrd[2 * t0:2 * (t0 + k)], k, acc, dxy)

    return kernel


def _make_backward_scatter(mode, parallel):
    """Split pass 2: prange over the N * C (image, channel) planes; each zeroes and fills its own."""
    MODE, PARALLEL = mode, parallel

    @njit(parallel=parallel, cache=True)
    def kernel(grad_output, grad_input, off, mask, wts):
        PARALLEL  # noqa: B018 (a closure variable, so part of the cache key: see _KERNELS)
        n_batch, n_chan, h_in, w_in = grad_input.shape
        plane_in = h_in * w_in
        plane_out = grad_output.shape[2] * grad_output.shape[3]
        gin = grad_input.reshape(grad_input.size)
        gout = grad_output.reshape(grad_output.size)
        for q in prange(n_batch * n_chan):  # plane q = (n, c)
            n = q // n_chan
            grad_plane = gin[q * plane_in:(q + 1) * plane_in]
            grad_plane[:] = 0
            _scatter_plane(grad_plane, gout[q * plane_out:(q + 1) * plane_out], plane_out, w_in, off[n], mask[n],
                           wts[n], MODE)

    return kernel


# Numba's on-disk cache tells closures apart by their bytecode and the values
# of their closure variables, not by their compile options: every kernel
# body names PARALLEL, else the serial and the parallel kernel of a
# (mode, padding) pair would share a cache entry.
_KERNELS: dict = {}


def _kernel(kind: str, mode: int, padding: int, parallel: bool):
    """The compiled kernel ``kind`` for (mode, padding) and the parallel or serial driver."""
    key = (kind, mode, padding, parallel)
    k = _KERNELS.get(key)
    if k is None:
        if kind == "forward":
            k = _make_forward(mode, padding, parallel)
        elif kind == "by_image":
            k = _make_backward_by_image(mode, padding, parallel)
        elif kind == "points":
            k = _make_backward_points(mode, padding, parallel)
        else:  # "scatter" does not depend on the padding
            k = _make_backward_scatter(mode, parallel)
        _KERNELS[key] = k
    return k


# ----------------------------------------------------------------------------
# Host wrappers
# ----------------------------------------------------------------------------

def unnormalize_constants(dtype, h_in: int, w_in: int, align_corners: bool):
    """(one, scale_x, scale_y, shift) in ``dtype`` for x^s = (x + one) * scale - shift."""
    t = np.dtype(dtype).type
    if align_corners:
        return t(1), t((w_in - 1) / 2), t((h_in - 1) / 2), t(0)
    return t(1), t(w_in / 2), t(h_in / 2), t(0.5)


def _use_parallel(work: int, parallel) -> bool:
    return work >= PARALLEL_MIN_WORK if parallel is None else bool(parallel)


def _n_blocks(items: int, parallel: bool) -> int:
    """How many prange blocks to cut ``items`` (tiles or images) into: a few per thread."""
    if not parallel:
        return 1
    return max(1, min(items, CHUNKS_PER_THREAD * numba.get_num_threads()))


def _n_tiles(points: int, tile_points: int) -> int:
    return (points + tile_points - 1) // tile_points


def forward(input, grid, mode: str, padding_mode: str, align_corners: bool, parallel=None,
            tile_points: int = TILE_POINTS) -> np.ndarray:
    """Sampled output (N, C, H_out, W_out) for validated NumPy ``input`` and ``grid``.

    ``parallel``: None chooses by size (``PARALLEL_MIN_WORK``); True/False
    force the parallel or the serial kernel. ``tile_points``: the most
    output points per tile (tests use small tiles to cover tile edges).
    """
    inp = np.ascontiguousarray(input)
    grd = np.ascontiguousarray(grid)
    n_batch, n_chan, h_in, w_in = inp.shape
    h_out, w_out = grd.shape[1], grd.shape[2]
    out = np.empty((n_batch, n_chan, h_out, w_out), dtype=inp.dtype)
    one, sx, sy, shift = unnormalize_constants(inp.dtype, h_in, w_in, align_corners)
    par = _use_parallel(n_batch * max(n_chan, 2) * h_out * w_out, parallel)
    kernel = _kernel("forward", MODE_CODES[mode], PADDING_CODES[padding_mode], par)
    blocks = _n_blocks(n_batch * _n_tiles(h_out * w_out, tile_points), par)
    with numba.parallel_chunksize(1):  # blocks go one at a time to whichever thread is free
        kernel(inp, grd, out, one, sx, sy, shift, inp.dtype.type(COORD_LIMIT), bool(align_corners),
               int(tile_points), blocks)
    return out


def backward(grad_output, input, grid, mode: str, padding_mode: str, align_corners: bool, split=None,
             parallel=None, tile_points: int = TILE_POINTS):
    """(grad_input, grad_grid) for validated NumPy arrays.

    ``split``: None chooses -- one pass over blocks of whole images when the
    batch divides evenly among the Numba threads or has at least
    ``CHUNKS_PER_THREAD`` images per thread, else the two-pass split
    (parallel over tiles, then over (n, c) planes), which keeps every thread
    busy for small batches. ``parallel``: None chooses by size; True/False
    force the parallel or the serial kernels (the serial ones run one pass
    unless ``split=True``). All combinations give the same results (tests
    check); ``tile_points`` as in :func:`forward`.
    """
    gout = np.ascontiguousarray(grad_output)
    inp = np.ascontiguousarray(input)
    grd = np.ascontiguousarray(grid)
    n_batch, n_chan, h_in, w_in = inp.shape
    h_out, w_out = grd.shape[1], grd.shape[2]
    grad_input = np.empty_like(inp)  # zeroed inside the kernels, by the thread that owns each part
    grad_grid = np.empty_like(grd)
    one, sx, sy, shift = unnormalize_constants(inp.dtype, h_in, w_in, align_corners)
    limit = inp.dtype.type(COORD_LIMIT)
    mode_code = MODE_CODES[mode]
    pad_code = PADDING_CODES[padding_mode]
    align = bool(align_corners)
    tile_points = int(tile_points)
    par = _use_parallel(n_batch * max(n_chan, 2) * h_out * w_out, parallel)
    if split is None:
        threads = numba.get_num_threads()
        split = par and not (n_batch % threads == 0 or n_batch >= CHUNKS_PER_THREAD * threads)
    with numba.parallel_chunksize(1):  # blocks go one at a time to whichever thread is free
        if not split:
            kernel = _kernel("by_image", mode_code, pad_code, par)
            kernel(gout, inp, grd, grad_input, grad_grid, one, sx, sy, shift, limit, align, tile_points,
                   _n_blocks(n_batch, par))
            return grad_input, grad_grid
        # every point's phase-1 scratch, kept from pass 1 for pass 2
        points = h_out * w_out
        off = np.empty((n_batch, points), dtype=np.int32)
        mask = np.empty((n_batch, points), dtype=np.uint8)
        wts = np.empty((n_batch, 4, points), dtype=inp.dtype)
        kernel = _kernel("points", mode_code, pad_code, par)
        kernel(gout, inp, grd, grad_grid, off, mask, wts, one, sx, sy, shift, limit, align, tile_points,
               _n_blocks(n_batch * _n_tiles(points, tile_points), par))
        _kernel("scatter", mode_code, -1, par)(gout, grad_input, off, mask, wts)
    return grad_input, grad_grid
