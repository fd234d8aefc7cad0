"""CPU kernels of the sampler on volumes (trilinear / nearest ``grid_sample``, 5-D): Numba ``@njit``.

The maths and the readable specification are in
:mod:`npstn.functional.grid_sample3d`; every formula (unnormalisation, far
clamp, padding, nearest, the trilinear weights, eq. 5 and eq. 7 in 3D) is
the function of :mod:`npstn.kernels.formulas` that the specification calls,
compiled here on scalars and inlined. The structure is the 2D kernels'
(:mod:`npstn.kernels.cpu.grid_sample`), simplified:

Map of this file
----------------
==========================  ======================================================
``_locate``                 phase 1: where each point of a tile reads (flat offset
                            of its top-north-west neighbour, an 8-bit mask of the
                            neighbours inside the volume, the 8 weights, and for
                            the backward fx, fy, fz and d(x^s, y^s, z^s)/d(x, y, z))
``_sample_tile``            phase 2 of the forward (eq. 4, 5) on one tile, channel
                            after channel
``_backward_tile``          phase 2 of the backward on one tile, channel after
                            channel: eq. 6's scatter and eq. 7's gather
``_make_kernels``           the kernels, compiled with ``prange`` or as plain loops
``forward``, ``backward``   host wrappers: constants, serial or parallel
==========================  ======================================================

Tiles of up to ``TILE_POINTS`` consecutive output points of one volume are
located once, then each channel walks the tile's points: a channel's reads
stay within one input volume, which keeps the eight neighbours (two rows in
each of two slices) in few cache sets. A point whose eight neighbours are all
inside (``mask == ALL``, the common case) reads them with no checks.

Mode and padding are run-time arguments (one compiled kernel per dtype and
driver instead of one per combination): the branches on them are taken the
same way at every point, so they cost little next to the eight gathers.

Parallelism and the race-free backward (no atomics, no per-thread copies):

* ``forward``: ``prange`` over blocks of (volume, tile) items, handed out
  one at a time to whichever thread is free.
* ``backward``: ``prange`` over blocks of whole volumes (as torch's CPU
  kernel for volumes, which is parallel over the batch): volume n belongs to
  one thread, which zeroes ``grad_input[n]`` and, tile by tile and channel
  by channel, scatters eq. 6 into it while it gathers eq. 7. No two threads
  ever add into the same element, and every voxel's contributions are added
  in the same order (point by point, the eight neighbours in order), so the
  serial and the parallel kernels give the same bits. (A batch smaller than
  the thread count leaves threads idle; the 2D kernels' split into a
  points pass and a per-plane scatter pass would fix that, at twice the
  compile time.)

Calls with fewer than ``PARALLEL_MIN_WORK`` output elements run the serial
kernels (starting the thread pool costs more than it saves there).

Precision: typed constants come from the host (Numba types Python float
literals as float64); eq. 7's channel sums accumulate in float64 and are
rounded once into ``grad_grid``. Nothing here validates its arguments;
:mod:`npstn.functional.grid_sample` does that before dispatching.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from npstn.kernels import formulas as fm
from npstn.kernels.cpu.grid_sample import (  # the 2D sampler's tiling and serial/parallel choice, shared
    PARALLEL_MIN_WORK, _n_blocks, _n_tiles, _tile, _tiling, _use_parallel)
from npstn.kernels.formulas import COORD_LIMIT, MODE_CODES, NEAREST, PADDING_CODES

__all__ = ["forward", "backward", "PARALLEL_MIN_WORK", "TILE_POINTS"]

# Calls with fewer output elements than PARALLEL_MIN_WORK (N * C * D_out * H_out * W_out,
# counting at least three channels: the grid) run the serial kernels, as in 2D.
#: at most this many output points per tile (its scratch, about 60 bytes a point, stays in L2)
TILE_POINTS = 1024
#: every one of the eight neighbours inside: the bits of ``mask``, in the formulas' order
ALL = 255


# Every helper takes flat, C-contiguous 1-D arrays and base indices (never slices of another
# layout), so each is compiled once per dtype: compiling them is most of the first call's time.
# Scratch layout: off[b0 + p], mask[b0 + p], wts[8 (b0 + p) + j] for point p of a tile whose
# scratch starts at b0 (0 for a tile's own scratch; a base index lets a caller keep every point's);
# frac[3 p + a], deriv[3 p + a], acc[3 p + a] are always the tile's own.

@njit(cache=True)
def _source(g, one, scale, shift, limit, size, padding, align_corners):
    """:func:`formulas.source_coordinate` along one axis (one compiled copy serves x, y and z)."""
    return fm.source_coordinate(g, one, scale, shift, limit, size, padding, align_corners)


@njit(cache=True)
def _locate(grd, t0, k, dims, geo, mode, padding, align_corners, off, mask, wts, frac, deriv, b0, for_backward):
    """Locate the ``k`` output points t0 .. t0 + k - 1 of the flat grid ``grd`` (x, y, z, x, y, z, ...).

    ``dims = (D, H, W)`` of the input, ``geo = (one, scale_x, scale_y,
    scale_z, shift, limit, size_x, size_y, size_z)`` in the grid dtype. For
    point p it writes ``off[b0 + p]``, the flat offset (z0 H + y0) W + x0 of
    its top-north-west neighbour (of its nearest voxel for nearest; may lie
    outside the volume: only inside neighbours are read); ``mask[b0 + p]``,
    bit j set when neighbour j is inside (nearest: bit 0), 0 for a NaN/inf
    point; ``wts[8 (b0 + p) + j]``, the eight weights; and for the backward
    ``frac[3 p:3 p + 3] = (fx, fy, fz)`` and ``deriv[3 p:3 p + 3]``, the
    derivatives of (x^s, y^s, z^s) by (x, y, z).
    """
    d_in, h_in, w_in = dims
    one, scale_x, scale_y, scale_z, shift, limit, size_x, size_y, size_z = geo
    zero = one - one
    for p in range(k):
        t = 3 * (t0 + p)
        gx = grd[t]
        gy = grd[t + 1]
        gz = grd[t + 2]
        valid = fm.isfinite(gx) & fm.isfinite(gy) & fm.isfinite(gz)
        gx = gx if valid else zero
        gy = gy if valid else zero
        gz = gz if valid else zero
        ix, dx = _source(gx, one, scale_x, shift, limit, size_x, padding, align_corners)
        iy, dy = _source(gy, one, scale_y, shift, limit, size_y, padding, align_corners)
        iz, dz = _source(gz, one, scale_z, shift, limit, size_z, padding, align_corners)
        if for_backward:
            deriv[3 * p] = dx
            deriv[3 * p + 1] = dy
            deriv[3 * p + 2] = dz
        q = b0 + p
        if mode == NEAREST:
            xn = np.int64(fm.round_half_even(ix, one))
            yn = np.int64(fm.round_half_even(iy, one))
            zn = np.int64(fm.round_half_even(iz, one))
            inside = valid and 0 <= xn < w_in and 0 <= yn < h_in and 0 <= zn < d_in
            off[q] = (zn * h_in + yn) * w_in + xn if inside else 0
            mask[q] = 1 if inside else 0
            continue
        x0f = fm.floor(ix)
        y0f = fm.floor(iy)
        z0f = fm.floor(iz)
        fx = ix - x0f  # exact
        fy = iy - y0f
        fz = iz - z0f
        x0 = np.int64(x0f)  # |x0| <= COORD_LIMIT: no overflow
        y0 = np.int64(y0f)
        z0 = np.int64(z0f)
        off[q] = (z0 * h_in + y0) * w_in + x0
        x0_in = (x0 >= 0) & (x0 < w_in)
        x1_in = (x0 >= -1) & (x0 < w_in - 1)
        y0_in = (y0 >= 0) & (y0 < h_in)
        y1_in = (y0 >= -1) & (y0 < h_in - 1)
        z0_in = (z0 >= 0) & (z0 < d_in)
        z1_in = (z0 >= -1) & (z0 < d_in - 1)
        m = ((np.uint8(z0_in & y0_in & x0_in)) | (np.uint8(z0_in & y0_in & x1_in) << 1)
             | (np.uint8(z0_in & y1_in & x0_in) << 2) | (np.uint8(z0_in & y1_in & x1_in) << 3)
             | (np.uint8(z1_in & y0_in & x0_in) << 4) | (np.uint8(z1_in & y0_in & x1_in) << 5)
             | (np.uint8(z1_in & y1_in & x0_in) << 6) | (np.uint8(z1_in & y1_in & x1_in) << 7))
        mask[q] = m if valid else 0
        (wts[8 * q], wts[8 * q + 1], wts[8 * q + 2], wts[8 * q + 3], wts[8 * q + 4], wts[8 * q + 5],
         wts[8 * q + 6], wts[8 * q + 7]) = fm.trilinear_weights(fx, fy, fz, one)
        if for_backward:
            frac[3 * p] = fx
            frac[3 * p + 1] = fy
            frac[3 * p + 2] = fz


@njit(cache=True)
def _interpolate(v0, v1, v2, v3, v4, v5, v6, v7, wts, w):
    """:func:`formulas.trilinear_interpolate` of eight values with the weights wts[w:w + 8]."""
    return fm.trilinear_interpolate(v0, v1, v2, v3, v4, v5, v6, v7, wts[w], wts[w + 1], wts[w + 2], wts[w + 3],
                                    wts[w + 4], wts[w + 5], wts[w + 6], wts[w + 7])


@njit(cache=True)
def _sample_tile(src, dst, n_chan, vol_in, vol_out, q0, p0, k, dims, mode, off, mask, wts, b0, one):
    """Forward (eq. 4, 5) of a located tile: channels of volume n (planes q0 ..), points p0 .. p0 + k - 1."""
    zero = one - one
    _, h_in, w_in = dims
    hw = h_in * w_in
    for c in range(n_chan):
        in0 = (q0 + c) * vol_in
        out0 = (q0 + c) * vol_out + p0
        for p in range(k):
            q = b0 + p
            m = mask[q]
            if mode == NEAREST:  # eq. 4: copy one voxel
                dst[out0 + p] = src[in0 + off[q]] if m else zero
            elif m == ALL:  # all eight neighbours inside: no checks (unsigned offsets: no wraparound test)
                i = np.uint64(in0 + off[q])
                u1 = np.uint64(1)
                uw = np.uint64(w_in)
                uhw = np.uint64(hw)
                j = i + uhw
                dst[out0 + p] = _interpolate(src[i], src[i + u1], src[i + uw], src[i + uw + u1], src[j],
                                             src[j + u1], src[j + uw], src[j + uw + u1], wts, 8 * q)
            elif m == 0:  # outside, or NaN/inf: 0
                dst[out0 + p] = zero
            else:  # near the border: neighbours outside read 0
                i = in0 + off[q]
                j = i + hw
                dst[out0 + p] = _interpolate(
                    src[i] if m & 1 else zero, src[i + 1] if m & 2 else zero,
                    src[i + w_in] if m & 4 else zero, src[i + w_in + 1] if m & 8 else zero,
                    src[j] if m & 16 else zero, src[j + 1] if m & 32 else zero,
                    src[j + w_in] if m & 64 else zero, src[j + w_in + 1] if m & 128 else zero, wts, 8 * q)


@njit(cache=True)
def _backward_tile(src, gin, gout, n_chan, vol_in, vol_out, q0, p0, k, dims, mode, off, mask, wts, frac, acc, b0,
                   one, scatter, gather):
    """Backward of a located tile, channel after channel.

    When ``gather``: adds each channel's dL/d(x^s, y^s, z^s) terms (eq. 7 in
    3D, G times :func:`formulas.trilinear_coordinate_gradient`) to
    ``acc[3 p:3 p + 3]`` (float64). When ``scatter``: adds G times the
    forward's weights into ``gin`` (eq. 6). Neighbours outside read 0 and
    receive nothing; nearest only scatters.
    """
    zero = one - one
    _, h_in, w_in = dims
    hw = h_in * w_in
    o = (0, 1, w_in, w_in + 1, hw, hw + 1, hw + w_in, hw + w_in + 1)  # the eight neighbours' offsets
    for c in range(n_chan):
        in0 = (q0 + c) * vol_in
        out0 = (q0 + c) * vol_out + p0
        for p in range(k):
            q = b0 + p
            m = mask[q]
            if m == 0:  # outside, or NaN/inf: no gradient anywhere
                continue
            go = gout[out0 + p]
            i = in0 + off[q]
            if mode == NEAREST:
                if scatter:
                    gin[i] += go
                continue
            v0 = v1 = v2 = v3 = v4 = v5 = v6 = v7 = zero
            w = 8 * q
            if m == ALL:
                if gather:
                    v0, v1, v2, v3 = src[i], src[i + o[1]], src[i + o[2]], src[i + o[3]]
                    v4, v5, v6, v7 = src[i + o[4]], src[i + o[5]], src[i + o[6]], src[i + o[7]]
                if scatter:
                    for j in range(8):
                        gin[i + o[j]] += wts[w + j] * go
            else:
                if gather:
                    v0 = src[i] if m & 1 else zero
                    v1 = src[i + o[1]] if m & 2 else zero
                    v2 = src[i + o[2]] if m & 4 else zero
                    v3 = src[i + o[3]] if m & 8 else zero
                    v4 = src[i + o[4]] if m & 16 else zero
                    v5 = src[i + o[5]] if m & 32 else zero
                    v6 = src[i + o[6]] if m & 64 else zero
                    v7 = src[i + o[7]] if m & 128 else zero
                if scatter:
                    for j in range(8):
                        if m & (1 << j):
                            gin[i + o[j]] += wts[w + j] * go
            if gather:
                dx, dy, dz = fm.trilinear_coordinate_gradient(v0, v1, v2, v3, v4, v5, v6, v7, frac[3 * p],
                                                              frac[3 * p + 1], frac[3 * p + 2], one)
                acc[3 * p] += dx * go
                acc[3 * p + 1] += dy * go
                acc[3 * p + 2] += dz * go


@njit(cache=True, inline="always")
def _store_grad_grid(ggrd, t0, k, acc, deriv):
    """grad_grid of the points t0 .. t0 + k - 1: the channel sums times the coordinates' derivatives."""
    for a in range(3 * k):
        ggrd[3 * t0 + a] = acc[a] * deriv[a]


def _make_kernels(parallel: bool) -> dict:
    """The forward and the backward kernels, compiled with ``prange`` (parallel) or as plain loops.

    The kernels name PARALLEL, a closure variable, so that Numba's disk
    cache (which tells closures apart by bytecode and closure values, not by
    their options) keeps the serial and the parallel copies apart.
    """
    PARALLEL = parallel

    @njit(parallel=parallel, cache=True)
    def forward(inp, grid, out, geo, mode, padding, align_corners, tile_points, n_blocks):
        PARALLEL  # noqa: B018 (part of the cache key)
        n_batch, n_chan, d_in, h_in, w_in = inp.shape
        dims = (d_in, h_in, w_in)
        vol_in = d_in * h_in * w_in
        vol_out = grid.shape[1] * grid.shape[2] * grid.shape[3]
        src = inp.reshape(inp.size)
        dst = out.reshape(out.size)
        grd = grid.reshape(grid.size)
        tiles, tile = _tiling(vol_out, tile_points)
        n_items = n_batch * tiles
        per_block = (n_items + n_blocks - 1) // n_blocks
        for b in prange(n_blocks):
            off = np.empty(tile, dtype=np.int64)
            mask = np.empty(tile, dtype=np.uint8)
            wts = np.empty(8 * tile, dtype=inp.dtype)
            for item in range(b * per_block, min(n_items, (b + 1) * per_block)):
                n, p0, k = _tile(item, tiles, tile, vol_out)
                _locate(grd, n * vol_out + p0, k, dims, geo, mode, padding, align_corners, off, mask, wts, wts, wts,
                        0, False)
                _sample_tile(src, dst, n_chan, vol_in, vol_out, n * n_chan, p0, k, dims, mode, off, mask, wts, 0,
                             geo[0])

    @njit(parallel=parallel, cache=True)
    def backward_by_volume(grad_output, inp, grid, grad_input, grad_grid, geo, mode, padding, align_corners,
                           tile_points, n_blocks, scatter):
        PARALLEL  # noqa: B018 (part of the cache key)
        n_batch, n_chan, d_in, h_in, w_in = inp.shape
        dims = (d_in, h_in, w_in)
        vol_in = d_in * h_in * w_in
        vol_out = grid.shape[1] * grid.shape[2] * grid.shape[3]
        src = inp.reshape(inp.size)
        gin = grad_input.reshape(grad_input.size)
        gout = grad_output.reshape(grad_output.size)
        grd = grid.reshape(grid.size)
        ggrd = grad_grid.reshape(grad_grid.size)
        tiles, tile = _tiling(vol_out, tile_points)
        per_block = (n_batch + n_blocks - 1) // n_blocks
        for b in prange(n_blocks):
            off = np.empty(tile, dtype=np.int64)
            mask = np.empty(tile, dtype=np.uint8)
            wts = np.empty(8 * tile, dtype=inp.dtype)
            frac = np.empty(3 * tile, dtype=inp.dtype)
            deriv = np.empty(3 * tile, dtype=inp.dtype)
            acc = np.empty(3 * tile, dtype=np.float64)
            for n in range(b * per_block, min(n_batch, (b + 1) * per_block)):
                if scatter:
                    gin[n * n_chan * vol_in:(n + 1) * n_chan * vol_in] = 0  # grad_input[n]: this thread's
                for t in range(tiles):
                    p0 = t * tile
                    k = min(tile, vol_out - p0)
                    t0 = n * vol_out + p0
                    _locate(grd, t0, k, dims, geo, mode, padding, align_corners, off, mask, wts, frac, deriv, 0,
                            True)
                    acc[:3 * k] = 0.0
                    _backward_tile(src, gin, gout, n_chan, vol_in, vol_out, n * n_chan, p0, k, dims, mode, off,
                                   mask, wts, frac, acc, 0, geo[0], scatter, mode != NEAREST)
                    _store_grad_grid(ggrd, t0, k, acc, deriv)

    return {"forward": forward, "by_volume": backward_by_volume}


_KERNELS: dict = {}


def _kernels(parallel: bool) -> dict:
    """The serial or the parallel kernels, built on first use."""
    k = _KERNELS.get(parallel)
    if k is None:
        k = _KERNELS[parallel] = _make_kernels(parallel)
    return k


# ----------------------------------------------------------------------------
# Host wrappers
# ----------------------------------------------------------------------------

def _geometry(dtype, d_in: int, h_in: int, w_in: int, align_corners: bool):
    """``geo`` of :func:`_locate`: (one, scale_x, scale_y, scale_z, shift, limit, size_x, size_y, size_z)."""
    t = np.dtype(dtype).type
    one, scale_x, shift = fm.unnormalize_constants(dtype, w_in, align_corners)
    _, scale_y, _ = fm.unnormalize_constants(dtype, h_in, align_corners)
    _, scale_z, _ = fm.unnormalize_constants(dtype, d_in, align_corners)
    return one, scale_x, scale_y, scale_z, shift, t(COORD_LIMIT), t(w_in), t(h_in), t(d_in)


def forward(input, grid, mode: str, padding_mode: str, align_corners: bool, parallel=None,
            tile_points: int = TILE_POINTS) -> np.ndarray:
    """Sampled output (N, C, D_out, H_out, W_out) for validated NumPy ``input`` and ``grid``.

    ``parallel``: None chooses by size; True/False force the parallel or the
    serial kernel. ``tile_points``: the most output points per tile.
    """
    inp = np.ascontiguousarray(input)
    grd = np.ascontiguousarray(grid)
    n_batch, n_chan, d_in, h_in, w_in = inp.shape
    out_dhw = grd.shape[1:4]
    points = out_dhw[0] * out_dhw[1] * out_dhw[2]
    out = np.empty((n_batch, n_chan, *out_dhw), dtype=inp.dtype)
    par = _use_parallel(n_batch * max(n_chan, 3) * points, parallel)
    blocks = _n_blocks(n_batch * _n_tiles(points, tile_points), par)
    with numba.parallel_chunksize(1):  # blocks go one at a time to whichever thread is free
        _kernels(par)["forward"](inp, grd, out, _geometry(inp.dtype, d_in, h_in, w_in, align_corners),
                                 MODE_CODES[mode], PADDING_CODES[padding_mode], bool(align_corners),
                                 int(tile_points), blocks)
    return out


def backward(grad_output, input, grid, mode: str, padding_mode: str, align_corners: bool, parallel=None,
             tile_points: int = TILE_POINTS, needs_input_grad: bool = True):
    """(grad_input, grad_grid) for validated NumPy arrays: ``prange`` over blocks of whole volumes.

    ``parallel``: None chooses by size; True/False force the parallel or the
    serial kernel (the same bits either way: tests check).
    ``needs_input_grad=False``: no scatter (eq. 6); grad_input is None.
    """
    gout = np.ascontiguousarray(grad_output)
    inp = np.ascontiguousarray(input)
    grd = np.ascontiguousarray(grid)
    n_batch, n_chan, d_in, h_in, w_in = inp.shape
    points = grd.shape[1] * grd.shape[2] * grd.shape[3]
    # zeroed inside the kernel, by the thread that owns each volume; without it, an empty stand-in
    grad_input = np.empty_like(inp) if needs_input_grad else np.empty((0,) * 5, inp.dtype)
    grad_grid = np.empty_like(grd)
    par = _use_parallel(n_batch * max(n_chan, 3) * points, parallel)
    with numba.parallel_chunksize(1):
        _kernels(par)["by_volume"](gout, inp, grd, grad_input, grad_grid,
                                   _geometry(inp.dtype, d_in, h_in, w_in, align_corners), MODE_CODES[mode],
                                   PADDING_CODES[padding_mode], bool(align_corners), int(tile_points),
                                   _n_blocks(n_batch, par), bool(needs_input_grad))
    return (grad_input if needs_input_grad else None), grad_grid
