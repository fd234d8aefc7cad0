"""CPU kernels of the sampler (bilinear / nearest ``grid_sample``): Numba ``@njit``.

The maths, the conventions and the readable vectorised specification are in
:mod:`npstn.functional.grid_sample`; every formula (unnormalisation, far
clamp, padding, nearest, the bilinear weights, eq. 5 and eq. 7) is the one
function of :mod:`npstn.kernels.formulas` that the specification also calls,
compiled here on scalars and inlined. This module only decides the order in
which points and channels are visited, as fast as we could make it on a CPU.

Map of this file (in the order of the source)
---------------------------------------------
====================  ==========================================================
``_locate``           phase 1, shared by forward and backward: where each point
                      of a tile reads (offset, inside-mask, weights, and for
                      the backward fx, fy and d x^s / d x)
``_visit_channels``   THE channel iterator: calls a phase-2 function on blocks
                      of CHANNEL_BLOCK channels, then on the 3, 2 or 1 left
``_sample_channels``  phase 2 of the forward (eq. 4, 5) on one channel block
``_backward_channels``  phase 2 of the backward on one channel block: eq. 7
                      (always) and eq. 6's scatter (when ``scatter``)
``_scatter_plane``    eq. 6 alone on one (image, channel) plane (split pass 2)
``_tile``             THE tile iterator's step: item -> (image, first point, length)
``_run_tile``         one tile: ``_locate``, then ``_visit_channels``
``_make_*``           the kernels: a ``prange`` (or serial) loop over blocks of
                      tiles or images that calls ``_run_tile``
``forward``,          host wrappers: constants, serial/parallel choice, the
``backward``          backward's strategy (by image, split, or grid only)
====================  ==========================================================

Two phases, tile by tile
------------------------
The output points of one image are processed in *tiles* of up to
``TILE_POINTS`` consecutive points (whole images when they are small).
For each tile, :func:`_run_tile`:

1. **locates** the points (:func:`_locate`, once per point, for all
   channels): ``formulas.source_coordinate`` (unnormalise, clamp far
   points, pad), the floor, and a small scratch buffer recording where the
   point reads and with which weights::

       off  = y0 * W + x0                                the north-west neighbour
       mask = which of the four neighbours are inside    (bits NW, NE, SW, SE)
       wts  = formulas.bilinear_weights(fx, fy)          eq. 5

   For bilinear sampling with 'zeros' padding this loop has no branches (a
   NaN/inf point and the far clamp are selects), and the scratch is
   allocated inside the kernel, so the compiler knows it overlaps nothing:
   it vectorises the loop (8 float32 points per instruction with AVX2).

2. **visits the channels** (:func:`_visit_channels`) with the pass's
   phase-2 function: walk the tile's points once per block of
   ``CHANNEL_BLOCK`` channels; each point's scratch is loaded once for the
   block, then each channel reads its four neighbours. A point whose four
   neighbours are all inside (``mask == ALL``, the common case) reads them
   with no checks; the others, in a band along the image border, read 0 for
   the neighbours outside.

Why this order: walking all the channels of one point before the next point
(the obvious loop) strides through memory by a whole plane per step. With
planes a power of two in size (64 x 64 floats = 16 KiB), every channel of a
pixel then falls into the same cache set, and a 32-channel forward ran 2x
slower than plane by plane. Blocks of 4 channels keep that conflict small
while loading each point's scratch a quarter as often (another 1.4x for 32
channels).

Specialisation without copies (PyTorch's ``ApplyGridSample<mode, padding>``)
---------------------------------------------------------------------------
Numba compiles a function once per *literal* argument value, and once per
function passed as an argument. So:

* ``mode``, ``padding``, ``scatter``, ``for_backward`` and the channel
  block size ``cb`` reach the helpers as literals: ``if padding == ZEROS:``
  and ``if mode == NEAREST:`` are decided when a kernel is compiled, and the
  channel loops, of a literal length, are unrolled;
* ``_visit_channels`` and ``_run_tile`` take the phase-2 function itself
  as an argument, so one iterator serves the forward and both backward
  passes;
* each ``_make_*`` factory closes over (mode, padding, parallel) as
  constants and compiles one kernel per combination, on first use (cached
  on disk).

The bilinear/zeros kernels thus have no run-time branch on the mode or the
padding. Inside a pass the only branch per point is ``mask == ALL``.

* Weights are computed and applied in the input's dtype (float32 stays
  float32, as in the NumPy specification): the forward reproduces the
  specification bit for bit, for every mode and padding (tests check).
* Arrays are addressed through flat C-order offsets: a point's four
  neighbours in an input plane are ``i, i + 1, i + W, i + W + 1`` with
  ``i = y0 * W + x0``, and the same pixel of the next channel is
  ``i + H * W``. The interior path indexes with unsigned integers: Numba
  then skips its negative-index wraparound fix-up (three more instructions
  on every access).

Parallelism (two cores in mind; the same idiom as the grid generators)
----------------------------------------------------------------------
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
       scratch for all points, and compute ``grad_grid`` (eq. 7 only);
    2. ``prange`` over the N * C (image, channel) planes: each plane owns
       ``grad_input[n, c]`` and scatters every point's ``grad_output`` into
       it with the recorded weights (eq. 6 only).

  No two threads ever add into the same element, so neither way needs
  atomics or per-thread copies. Both add every pixel's contributions in the
  same order (point by point, NW, NE, SW, SE), so they give the same bits,
  whatever the thread count.

Precision: typed constants (one, the scales, the shift, the far limit, the
sizes) come from the host, because Numba types Python float literals as
float64. The channel sums of the coordinate gradient (eq. 7) accumulate in
float64 and are rounded once into grad_grid.

Nothing here validates its arguments; :mod:`npstn.functional.grid_sample`
does that before dispatching.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from npstn.kernels import formulas as fm
from npstn.kernels.formulas import COORD_LIMIT, MODE_CODES, NEAREST, PADDING_CODES

__all__ = ["forward", "backward", "MODE_CODES", "PADDING_CODES", "COORD_LIMIT", "PARALLEL_MIN_WORK",
           "TILE_POINTS", "unnormalize_constants"]

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
# Phase 1, shared by forward and backward: where each point reads
# ----------------------------------------------------------------------------

@njit(cache=True)
def _locate(g, n, h_in, w_in, geo, mode, padding, align_corners, off, mask, wts, fxy, dxy, for_backward):
    """Locate ``n`` consecutive output points whose flat grid values are ``g`` (x, y, x, y, ...).

    ``geo = (one, scale_x, scale_y, shift, limit, size_x, size_y)`` in the
    grid dtype (see :func:`unnormalize_constants`). For point w it writes

    * ``off[w]``: the plane offset y0 * W + x0 of its north-west neighbour
      (bilinear) or of its nearest pixel (nearest, ties to even);
    * ``mask[w]``: which neighbours are inside the image (bits NW, NE, SW,
      SE; nearest uses NW for its one pixel); 0 for a NaN/inf point, which
      samples 0 and gets no gradient (npstn's policy: like the
      specification, such a point is computed at (0, 0) and masked out);
    * ``wts[:, w]``: the bilinear weights (eq. 5) in the grid dtype;
    * ``fxy[:, w]`` = (fx, fy) and ``dxy[:, w]`` = (d x^s / d x, d y^s / d y)
      for the backward (eq. 7 and the chain rule through the far clamp, the
      padding and the unnormalisation), only if ``for_backward``.
    """
    one, scale_x, scale_y, shift, limit, size_x, size_y = geo
    zero = one - one
    for w in range(n):
        gx = g[2 * w]
        gy = g[2 * w + 1]
        valid = fm.isfinite(gx) & fm.isfinite(gy)
        gx = gx if valid else zero
        gy = gy if valid else zero
        ix, dx = fm.source_coordinate(gx, one, scale_x, shift, limit, size_x, padding, align_corners)
        iy, dy = fm.source_coordinate(gy, one, scale_y, shift, limit, size_y, padding, align_corners)
        if for_backward:
            dxy[0, w] = dx
            dxy[1, w] = dy
        if mode == NEAREST:
            xn = int(fm.round_half_even(ix, one))
            yn = int(fm.round_half_even(iy, one))
            inside = valid and xn >= 0 and xn < w_in and yn >= 0 and yn < h_in
            off[w] = yn * w_in + xn if inside else 0
            mask[w] = NW if inside else 0
            continue
        x0f = fm.floor(ix)
        y0f = fm.floor(iy)
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
        wts[0, w], wts[1, w], wts[2, w], wts[3, w] = fm.bilinear_weights(fx, fy, one)
        if for_backward:
            fxy[0, w] = fx
            fxy[1, w] = fy


# ----------------------------------------------------------------------------
# Phase 2: the channel iterator and what it runs on each block of channels
# ----------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _visit_channels(visit, q0, n_chan, mode, scatter, args):
    """``visit(q, cb, mode, scatter, args)`` on the channel planes q0 .. q0 + n_chan - 1, cb at a time.

    Blocks of CHANNEL_BLOCK, then one block of the 3, 2 or 1 left. Each
    block size is a literal, so ``visit`` is compiled (and its channel loop
    unrolled) once per size.
    """
    c = 0
    while c + CHANNEL_BLOCK <= n_chan:
        visit(q0 + c, CHANNEL_BLOCK, mode, scatter, args)
        c += CHANNEL_BLOCK
    rest = n_chan - c
    if rest == 3:
        visit(q0 + c, 3, mode, scatter, args)
    elif rest == 2:
        visit(q0 + c, 2, mode, scatter, args)
    elif rest == 1:
        visit(q0 + c, 1, mode, scatter, args)


# The phase-2 functions take the (image, channel) plane q of the block's
# first channel, the block size cb, the literals mode and scatter, and
# ``args = (src, dst_or_gin, gout, p0, n, plane_in, plane_out, w_in, off,
# mask, wts, fxy, acc, one)``: the flat arrays, the tile's first point p0
# and length n, the plane sizes, and the tile's scratch. Offsets are
# unsigned in the hot paths.

@njit(cache=True)
def _sample_channels(q, cb, mode, scatter, args):
    """Forward (eq. 4, 5) of the tile's located points in channels q .. q + cb - 1: dst from src."""
    src, dst, _, p0, n, plane_in, plane_out, w_in, off, mask, wts, _, _, one = args
    zero = one - one
    u1 = np.uint64(1)
    uw = np.uint64(w_in)
    step_in = np.uint64(plane_in)
    step_out = np.uint64(plane_out)
    in0 = q * plane_in
    out0 = q * plane_out + p0
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
                dst[o] = fm.bilinear_interpolate(src[i], src[i + u1], src[i + uw], src[i + uw + u1],
                                                 w_nw, w_ne, w_sw, w_se)
                i += step_in
                o += step_out
        else:  # near the border (or outside, or NaN/inf: m == 0): neighbours outside read 0
            i = in0 + np.int64(off[w])  # may point before the plane: only inside neighbours are read
            w_nw = wts[0, w]
            w_ne = wts[1, w]
            w_sw = wts[2, w]
            w_se = wts[3, w]
            for c in range(cb):
                nw = src[i] if m & NW else zero
                ne = src[i + 1] if m & NE else zero
                sw = src[i + w_in] if m & SW else zero
                se = src[i + w_in + 1] if m & SE else zero
                dst[o] = fm.bilinear_interpolate(nw, ne, sw, se, w_nw, w_ne, w_sw, w_se)
                i += plane_in
                o += step_out


@njit(cache=True)
def _backward_channels(q, cb, mode, scatter, args):
    """Backward of the tile's located points in channels q .. q + cb - 1, in one loop.

    Adds these channels' terms of dL/dx^s, dL/dy^s (eq. 7) to ``acc[:, w]``
    (float64) and, when ``scatter``, scatters G = grad_output into
    grad_input (flat ``gin``) with the forward's weights (eq. 6). Neighbours
    outside the image read 0 and receive nothing. Nearest sampling has no
    coordinate gradient: it only scatters.
    """
    # BEGIN SOLUTION task2: the compiled kernel is left out of the student repository; use backend="numpy"
    src, gin, gout, p0, n, plane_in, plane_out, w_in, off, mask, wts, fxy, acc, one = args
    zero = one - one
    u1 = np.uint64(1)
    uw = np.uint64(w_in)
    step_in = np.uint64(plane_in)
    step_out = np.uint64(plane_out)
    in0 = q * plane_in
    out0 = q * plane_out + p0
    for w in range(n):
        m = mask[w]
        if m == 0:  # outside, or NaN/inf: no gradient anywhere
            continue
        o = np.uint64(out0 + w)
        if mode == NEAREST:  # route G to the nearest pixel; no coordinate gradient
            if scatter:
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
                # read the four neighbours before the scatter writes: the compiler cannot tell that
                # gin and src never overlap, and loads issued after those stores ran 3-8% slower
                nw = src[i]
                ne = src[i + u1]
                sw = src[i + uw]
                se = src[i + uw + u1]
                if scatter:
                    gin[i] += w_nw * go
                    gin[i + u1] += w_ne * go
                    gin[i + uw] += w_sw * go
                    gin[i + uw + u1] += w_se * go
                dx, dy = fm.bilinear_coordinate_gradient(nw, ne, sw, se, fx, fy, one)
                gx += dx * go
                gy += dy * go
                i += step_in
                o += step_out
        else:
            i = in0 + np.int64(off[w])
            for c in range(cb):
                go = gout[o]
                nw = ne = sw = se = zero
                if m & NW:
                    nw = src[i]
                    if scatter:
                        gin[i] += w_nw * go
                if m & NE:
                    ne = src[i + 1]
                    if scatter:
                        gin[i + 1] += w_ne * go
                if m & SW:
                    sw = src[i + w_in]
                    if scatter:
                        gin[i + w_in] += w_sw * go
                if m & SE:
                    se = src[i + w_in + 1]
                    if scatter:
                        gin[i + w_in + 1] += w_se * go
                dx, dy = fm.bilinear_coordinate_gradient(nw, ne, sw, se, fx, fy, one)
                gx += dx * go
                gy += dy * go
                i += plane_in
                o += step_out
        acc[0, w] += gx
        acc[1, w] += gy
    # END SOLUTION


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


# ----------------------------------------------------------------------------
# The tile iterator, and the kernels built on it (one per mode, padding and driver)
# ----------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _tiling(points: int, tile_points: int):
    """(tiles per image, points per tile): equal tiles of at most ``tile_points``."""
    tiles = (points + tile_points - 1) // tile_points
    return tiles, (points + tiles - 1) // tiles


@njit(cache=True, inline="always")
def _tile(item, tiles, tile, plane_out):
    """Item ``item`` of the (image, tile) pairs: (image n, its first point p0, its length k)."""
    n = item // tiles
    p0 = (item - n * tiles) * tile
    return n, p0, min(tile, plane_out - p0)


@njit(cache=True, inline="always")
def _run_tile(visit, scatter, n, p0, k, n_chan, h_in, w_in, plane_in, plane_out, grd, geo, mode, padding,
              align_corners, src, dst, gout, off, mask, wts, fxy, dxy, acc, for_backward):
    """One tile of image n (points p0 .. p0 + k - 1): locate its points, then visit every channel block."""
    t0 = n * plane_out + p0  # the tile's first point in the whole grid
    _locate(grd[2 * t0:2 * (t0 + k)], k, h_in, w_in, geo, mode, padding, align_corners, off, mask, wts, fxy, dxy,
            for_backward)
    _visit_channels(visit, n * n_chan, n_chan, mode, scatter,
                    (src, dst, gout, p0, k, plane_in, plane_out, w_in, off, mask, wts, fxy, acc, geo[0]))


@njit(cache=True, inline="always")
def _store_grad_grid(ggrid, n, acc, dxy):
    """grad_grid of ``n`` points (flat x, y, x, y, ...): the channel sums times d x^s / d x, rounded once."""
    for w in range(n):
        ggrid[2 * w] = acc[0, w] * dxy[0, w]
        ggrid[2 * w + 1] = acc[1, w] * dxy[1, w]


def _make_forward(mode, padding, parallel):
    """Forward: prange over ``n_blocks`` blocks of (image, tile) pairs; per tile, locate and sample."""
    MODE, PADDING, PARALLEL = mode, padding, parallel  # compile-time constants of this kernel

    @njit(parallel=parallel, cache=True)
    def kernel(inp, grid, out, geo, align_corners, tile_points, n_blocks):
        PARALLEL  # noqa: B018 (a closure variable, so part of the cache key: see _KERNELS)
        n_batch, n_chan, h_in, w_in = inp.shape
        plane_in = h_in * w_in
        plane_out = grid.shape[1] * grid.shape[2]
        src = inp.reshape(inp.size)  # flat views; offsets computed by hand
        dst = out.reshape(out.size)
        grd = grid.reshape(grid.size)
        tiles, tile = _tiling(plane_out, tile_points)
        n_items = n_batch * tiles
        per_block = (n_items + n_blocks - 1) // n_blocks
        for b in prange(n_blocks):
            off = np.empty(tile, dtype=np.int32)  # the tile's scratch, once per block
            mask = np.empty(tile, dtype=np.uint8)
            wts = np.empty((4, tile), dtype=inp.dtype)
            for item in range(b * per_block, min(n_items, (b + 1) * per_block)):
                n, p0, k = _tile(item, tiles, tile, plane_out)
                _run_tile(_sample_channels, False, n, p0, k, n_chan, h_in, w_in, plane_in, plane_out, grd, geo,
                          MODE, PADDING, align_corners, src, dst, dst, off, mask, wts, wts, wts, wts, False)

    return kernel


def _make_backward_by_image(mode, padding, parallel, scatter=True):
    """One-pass backward: prange over ``n_blocks`` blocks of whole images.

    Image n belongs to one block, so its thread owns grad_input[n]: it zeroes
    it and scatters into it without races. Per tile: locate, then per
    channel block scatter eq. 6 and gather eq. 7 in one loop, then store the
    tile's grad_grid. Not ``scatter`` (the backward without grad_input,
    kind "grid_only"): eq. 7 alone, and ``grad_input`` is not touched.
    """
    MODE, PADDING, PARALLEL, SCATTER = mode, padding, parallel, scatter

    @njit(parallel=parallel, cache=True)
    def kernel(grad_output, inp, grid, grad_input, grad_grid, geo, align_corners, tile_points, n_blocks):
        PARALLEL  # noqa: B018 (a closure variable, so part of the cache key: see _KERNELS)
        n_batch, n_chan, h_in, w_in = inp.shape
        plane_in = h_in * w_in
        plane_out = grid.shape[1] * grid.shape[2]
        src = inp.reshape(inp.size)
        gin = grad_input.reshape(grad_input.size)
        gout = grad_output.reshape(grad_output.size)
        grd = grid.reshape(grid.size)
        ggrd = grad_grid.reshape(grad_grid.size)
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
                if SCATTER:
                    gin[n * n_chan * plane_in:(n + 1) * n_chan * plane_in] = 0  # grad_input[n]: ours
                for item in range(n * tiles, (n + 1) * tiles):
                    _, p0, k = _tile(item, tiles, tile, plane_out)
                    acc[:, :k] = 0.0
                    _run_tile(_backward_channels, SCATTER, n, p0, k, n_chan, h_in, w_in, plane_in, plane_out, grd,
                              geo, MODE, PADDING, align_corners, src, gin, gout, off, mask, wts, fxy, dxy, acc, True)
                    t0 = n * plane_out + p0
                    _store_grad_grid(ggrd[2 * t0:2 * (t0 + k)], k, acc, dxy)

    return kernel


def _make_backward_points(mode, padding, parallel):
    """Split pass 1: prange over blocks of (image, tile) pairs; grad_grid (eq. 7), and every point's scratch.

    ``off``, ``mask`` (N, H_out * W_out) and ``wts`` (N, 4, H_out * W_out)
    keep every point's phase-1 results for the scatter pass.
    """
    MODE, PADDING, PARALLEL = mode, padding, parallel

    @njit(parallel=parallel, cache=True)
    def kernel(grad_output, inp, grid, grad_grid, off, mask, wts, geo, align_corners, tile_points, n_blocks):
        PARALLEL  # noqa: B018 (a closure variable, so part of the cache key: see _KERNELS)
        n_batch, n_chan, h_in, w_in = inp.shape
        plane_in = h_in * w_in
        plane_out = grid.shape[1] * grid.shape[2]
        src = inp.reshape(inp.size)
        gout = grad_output.reshape(grad_output.size)
        grd = grid.reshape(grid.size)
        ggrd = grad_grid.reshape(grad_grid.size)
        tiles, tile = _tiling(plane_out, tile_points)
        n_items = n_batch * tiles
        per_block = (n_items + n_blocks - 1) // n_blocks
        for b in prange(n_blocks):
            fxy = np.empty((2, tile), dtype=inp.dtype)
            dxy = np.empty((2, tile), dtype=inp.dtype)
            acc = np.empty((2, tile), dtype=np.float64)
            nowhere = np.empty(0, dtype=inp.dtype)  # no scatter in this pass (the input may be read-only)
            for item in range(b * per_block, min(n_items, (b + 1) * per_block)):
                n, p0, k = _tile(item, tiles, tile, plane_out)
                acc[:, :k] = 0.0
                _run_tile(_backward_channels, False, n, p0, k, n_chan, h_in, w_in, plane_in, plane_out, grd, geo,
                          MODE, PADDING, align_corners, src, nowhere, gout, off[n, p0:p0 + k], mask[n, p0:p0 + k],
                          wts[n, :, p0:p0 + k], fxy, dxy, acc, True)
                t0 = n * plane_out + p0
                _store_grad_grid(ggrd[2 * t0:2 * (t0 + k)], k, acc, dxy)

    return kernel


def _make_backward_scatter(mode, parallel):
    """Split pass 2: prange over the N * C (image, channel) planes; each zeroes and fills its own (eq. 6)."""
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
_FACTORIES = {"forward": _make_forward, "by_image": _make_backward_by_image, "points": _make_backward_points,
              "grid_only": lambda mode, padding, parallel: _make_backward_by_image(mode, padding, parallel, False)}


def _kernel(kind: str, mode: int, padding: int, parallel: bool):
    """The compiled kernel ``kind`` for (mode, padding) and the parallel or serial driver."""
    key = (kind, mode, padding, parallel)
    k = _KERNELS.get(key)
    if k is None:
        if kind == "scatter":  # does not depend on the padding
            k = _make_backward_scatter(mode, parallel)
        else:
            k = _FACTORIES[kind](mode, padding, parallel)
        _KERNELS[key] = k
    return k


# ----------------------------------------------------------------------------
# Host wrappers
# ----------------------------------------------------------------------------

def unnormalize_constants(dtype, h_in: int, w_in: int, align_corners: bool):
    """(one, scale_x, scale_y, shift) in ``dtype`` for x^s = (x + one) * scale - shift (both axes)."""
    one, scale_x, shift = fm.unnormalize_constants(dtype, w_in, align_corners)
    _, scale_y, _ = fm.unnormalize_constants(dtype, h_in, align_corners)
    return one, scale_x, scale_y, shift


def _geometry(dtype, h_in: int, w_in: int, align_corners: bool):
    """``geo`` of :func:`_locate`: (one, scale_x, scale_y, shift, limit, size_x, size_y) in ``dtype``."""
    t = np.dtype(dtype).type
    return (*unnormalize_constants(dtype, h_in, w_in, align_corners), t(COORD_LIMIT), t(w_in), t(h_in))


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
    par = _use_parallel(n_batch * max(n_chan, 2) * h_out * w_out, parallel)
    kernel = _kernel("forward", MODE_CODES[mode], PADDING_CODES[padding_mode], par)
    blocks = _n_blocks(n_batch * _n_tiles(h_out * w_out, tile_points), par)
    with numba.parallel_chunksize(1):  # blocks go one at a time to whichever thread is free
        kernel(inp, grd, out, _geometry(inp.dtype, h_in, w_in, align_corners), bool(align_corners),
               int(tile_points), blocks)
    return out


def backward(grad_output, input, grid, mode: str, padding_mode: str, align_corners: bool, split=None,
             parallel=None, tile_points: int = TILE_POINTS, needs_input_grad: bool = True):
    """(grad_input, grad_grid) for validated NumPy arrays.

    ``needs_input_grad=False``: grad_input is None and eq. 6 is skipped
    (the one-pass kernel without its scatter, kind "grid_only"; ``split``
    is then moot).

    ``split``: None chooses -- one pass over blocks of whole images when the
    batch divides evenly among the Numba threads or has at least
    ``CHUNKS_PER_THREAD`` images per thread, else the two-pass split
    (parallel over tiles, then over (n, c) planes), which keeps every thread
    busy for small batches. ``parallel``: None chooses by size; True/False
    force the parallel or the serial kernels (the serial ones run one pass
    unless ``split=True``). All combinations give the same results (tests
    check); ``tile_points`` as in :func:`forward`.
    """
    # BEGIN SOLUTION task2: the compiled kernel is left out of the student repository; use backend="numpy"
    gout = np.ascontiguousarray(grad_output)
    inp = np.ascontiguousarray(input)
    grd = np.ascontiguousarray(grid)
    n_batch, n_chan, h_in, w_in = inp.shape
    h_out, w_out = grd.shape[1], grd.shape[2]
    grad_grid = np.empty_like(grd)
    geo = _geometry(inp.dtype, h_in, w_in, align_corners)
    mode_code = MODE_CODES[mode]
    pad_code = PADDING_CODES[padding_mode]
    align = bool(align_corners)
    tile_points = int(tile_points)
    par = _use_parallel(n_batch * max(n_chan, 2) * h_out * w_out, parallel)
    if not needs_input_grad:  # the kernel touches no grad_input: an empty array stands in
        with numba.parallel_chunksize(1):
            _kernel("grid_only", mode_code, pad_code, par)(gout, inp, grd, np.empty((0, 0, 0, 0), inp.dtype),
                                                           grad_grid, geo, align, tile_points, _n_blocks(n_batch, par))
        return None, grad_grid
    grad_input = np.empty_like(inp)  # zeroed inside the kernels, by the thread that owns each part
    if split is None:
        threads = numba.get_num_threads()
        split = par and not (n_batch % threads == 0 or n_batch >= CHUNKS_PER_THREAD * threads)
    with numba.parallel_chunksize(1):  # blocks go one at a time to whichever thread is free
        if not split:
            kernel = _kernel("by_image", mode_code, pad_code, par)
            kernel(gout, inp, grd, grad_input, grad_grid, geo, align, tile_points, _n_blocks(n_batch, par))
            return grad_input, grad_grid
        # every point's phase-1 scratch, kept from pass 1 for pass 2
        points = h_out * w_out
        off = np.empty((n_batch, points), dtype=np.int32)
        mask = np.empty((n_batch, points), dtype=np.uint8)
        wts = np.empty((n_batch, 4, points), dtype=inp.dtype)
        kernel = _kernel("points", mode_code, pad_code, par)
        kernel(gout, inp, grd, grad_grid, off, mask, wts, geo, align, tile_points,
               _n_blocks(n_batch * _n_tiles(points, tile_points), par))
        _kernel("scatter", mode_code, -1, par)(gout, grad_input, off, mask, wts)
    return grad_input, grad_grid
    # END SOLUTION
