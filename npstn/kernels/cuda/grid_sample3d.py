"""CUDA kernels of the sampler on volumes (trilinear / nearest ``grid_sample``, 5-D): ``@cuda.jit``.

The 2D kernels' scheme (:mod:`npstn.kernels.cuda.grid_sample`) with one more
axis: one thread per output point (n, l, i, j), looping over the channels.
The forward writes ``out[n, :, l, i, j]``; the backward writes its own
``grad_grid[n, l, i, j]`` (a channel sum, nobody else writes it) and
scatters ``grad_output`` into ``grad_input`` with ``cuda.atomic.add``,
because neighbouring points share voxels (so the last bits of
``grad_input`` may vary from run to run; float64 atomics need compute
capability 6.0 or newer).

The maths is in :mod:`npstn.functional.grid_sample3d`; every formula is the
:mod:`npstn.kernels.formulas` function the NumPy specification and the cpu
kernels call, compiled here as a device function. Arithmetic runs in the
input's dtype with typed constants from the host; eq. 7's channel sums in
float64. Host wrappers accept NumPy arrays (copied; results copied back)
or device arrays (results stay on the device).
"""
from __future__ import annotations

from numba import cuda

from npstn.kernels.formulas import cuda_formulas as fm
from npstn.kernels.cpu.grid_sample3d import _geometry
from npstn.kernels.cuda.common import cuda_module, launch_config, to_device
from npstn.kernels.formulas import MODE_CODES, NEAREST, PADDING_CODES

__all__ = ["forward", "backward"]


@cuda.jit(device=True)
def _point(t, grid, geo, padding_mode, align_corners):
    """Output point t = (n, l, i, j) in C order: (n, l, i, j, valid, x^s, y^s, z^s, and their derivatives)."""
    d_out, h_out, w_out = grid.shape[1], grid.shape[2], grid.shape[3]
    j = t % w_out
    i = (t // w_out) % h_out
    l = (t // (w_out * h_out)) % d_out  # noqa: E741
    n = t // (w_out * h_out * d_out)
    one, scale_x, scale_y, scale_z, shift, limit, size_x, size_y, size_z = geo
    gx = grid[n, l, i, j, 0]
    gy = grid[n, l, i, j, 1]
    gz = grid[n, l, i, j, 2]
    valid = fm.isfinite(gx) and fm.isfinite(gy) and fm.isfinite(gz)
    if not valid:  # npstn's policy: a NaN/inf point samples 0 and gets no gradient
        gx = one - one
        gy = one - one
        gz = one - one
    ix, dx = fm.source_coordinate(gx, one, scale_x, shift, limit, size_x, padding_mode, align_corners)
    iy, dy = fm.source_coordinate(gy, one, scale_y, shift, limit, size_y, padding_mode, align_corners)
    iz, dz = fm.source_coordinate(gz, one, scale_z, shift, limit, size_z, padding_mode, align_corners)
    return n, l, i, j, valid, ix, iy, iz, dx, dy, dz


@cuda.jit(device=True)
def _read(inp, n, c, z, y, x, ok, zero):
    """inp[n, c, z, y, x] if ok (the neighbour is inside), else 0."""
    return inp[n, c, z, y, x] if ok else zero


@cuda.jit
def _forward_kernel(inp, grid, out, geo, mode, padding_mode, align_corners):
    t = cuda.grid(1)
    n_chan, d_in, h_in, w_in = inp.shape[1], inp.shape[2], inp.shape[3], inp.shape[4]
    if t >= grid.shape[0] * grid.shape[1] * grid.shape[2] * grid.shape[3]:
        return
    one = geo[0]
    zero = one - one
    n, l, i, j, valid, ix, iy, iz, dx, dy, dz = _point(t, grid, geo, padding_mode, align_corners)
    if mode == NEAREST:  # eq. 4
        xn = int(fm.round_half_even(ix, one))
        yn = int(fm.round_half_even(iy, one))
        zn = int(fm.round_half_even(iz, one))
        inside = valid and 0 <= xn < w_in and 0 <= yn < h_in and 0 <= zn < d_in
        for c in range(n_chan):
            out[n, c, l, i, j] = inp[n, c, zn, yn, xn] if inside else zero
        return
    x0f = fm.floor(ix)
    y0f = fm.floor(iy)
    z0f = fm.floor(iz)
    w0, w1, w2, w3, w4, w5, w6, w7 = fm.trilinear_weights(ix - x0f, iy - y0f, iz - z0f, one)
    x0 = int(x0f)
    y0 = int(y0f)
    z0 = int(z0f)
    x0_in = valid and 0 <= x0 < w_in
    x1_in = valid and 0 <= x0 + 1 < w_in
    y0_in = 0 <= y0 < h_in
    y1_in = 0 <= y0 + 1 < h_in
    z0_in = 0 <= z0 < d_in
    z1_in = 0 <= z0 + 1 < d_in
    for c in range(n_chan):  # eq. 5 in 3D; neighbours outside read 0
        out[n, c, l, i, j] = fm.trilinear_interpolate(
            _read(inp, n, c, z0, y0, x0, z0_in and y0_in and x0_in, zero),
            _read(inp, n, c, z0, y0, x0 + 1, z0_in and y0_in and x1_in, zero),
            _read(inp, n, c, z0, y0 + 1, x0, z0_in and y1_in and x0_in, zero),
            _read(inp, n, c, z0, y0 + 1, x0 + 1, z0_in and y1_in and x1_in, zero),
            _read(inp, n, c, z0 + 1, y0, x0, z1_in and y0_in and x0_in, zero),
            _read(inp, n, c, z0 + 1, y0, x0 + 1, z1_in and y0_in and x1_in, zero),
            _read(inp, n, c, z0 + 1, y0 + 1, x0, z1_in and y1_in and x0_in, zero),
            _read(inp, n, c, z0 + 1, y0 + 1, x0 + 1, z1_in and y1_in and x1_in, zero),
            w0, w1, w2, w3, w4, w5, w6, w7)


@cuda.jit(device=True)
def _scatter_read(inp, grad_input, n, c, z, y, x, ok, weight, go, zero, scatter):
    """eq. 6 for one neighbour (atomic add of weight * G if it is inside and ``scatter``); returns its
    value (0 outside)."""
    if not ok:
        return zero
    if scatter:
        cuda.atomic.add(grad_input, (n, c, z, y, x), weight * go)
    return inp[n, c, z, y, x]


@cuda.jit
def _backward_kernel(grad_output, inp, grid, grad_input, grad_grid, geo, mode, padding_mode, align_corners, scatter):
    t = cuda.grid(1)
    n_chan, d_in, h_in, w_in = inp.shape[1], inp.shape[2], inp.shape[3], inp.shape[4]
    if t >= grid.shape[0] * grid.shape[1] * grid.shape[2] * grid.shape[3]:
        return
    one = geo[0]
    zero = one - one
    n, l, i, j, valid, ix, iy, iz, dx, dy, dz = _point(t, grid, geo, padding_mode, align_corners)
    grad_grid[n, l, i, j, 0] = zero
    grad_grid[n, l, i, j, 1] = zero
    grad_grid[n, l, i, j, 2] = zero
    if not valid:
        return  # zero gradient, no contribution to grad_input
    if mode == NEAREST:  # route G to the nearest voxel; no coordinate gradient
        xn = int(fm.round_half_even(ix, one))
        yn = int(fm.round_half_even(iy, one))
        zn = int(fm.round_half_even(iz, one))
        if scatter and 0 <= xn < w_in and 0 <= yn < h_in and 0 <= zn < d_in:
            for c in range(n_chan):
                cuda.atomic.add(grad_input, (n, c, zn, yn, xn), grad_output[n, c, l, i, j])
        return
    x0f = fm.floor(ix)
    y0f = fm.floor(iy)
    z0f = fm.floor(iz)
    fx = ix - x0f
    fy = iy - y0f
    fz = iz - z0f
    w0, w1, w2, w3, w4, w5, w6, w7 = fm.trilinear_weights(fx, fy, fz, one)
    x0 = int(x0f)
    y0 = int(y0f)
    z0 = int(z0f)
    x0_in = 0 <= x0 < w_in
    x1_in = 0 <= x0 + 1 < w_in
    y0_in = 0 <= y0 < h_in
    y1_in = 0 <= y0 + 1 < h_in
    z0_in = 0 <= z0 < d_in
    z1_in = 0 <= z0 + 1 < d_in
    gix = 0.0  # eq. 7's channel sums, float64
    giy = 0.0
    giz = 0.0
    for c in range(n_chan):
        go = grad_output[n, c, l, i, j]
        v0 = _scatter_read(inp, grad_input, n, c, z0, y0, x0, z0_in and y0_in and x0_in, w0, go, zero, scatter)
        v1 = _scatter_read(inp, grad_input, n, c, z0, y0, x0 + 1, z0_in and y0_in and x1_in, w1, go, zero, scatter)
        v2 = _scatter_read(inp, grad_input, n, c, z0, y0 + 1, x0, z0_in and y1_in and x0_in, w2, go, zero, scatter)
        v3 = _scatter_read(inp, grad_input, n, c, z0, y0 + 1, x0 + 1, z0_in and y1_in and x1_in, w3, go, zero, scatter)
        v4 = _scatter_read(inp, grad_input, n, c, z0 + 1, y0, x0, z1_in and y0_in and x0_in, w4, go, zero, scatter)
        v5 = _scatter_read(inp, grad_input, n, c, z0 + 1, y0, x0 + 1, z1_in and y0_in and x1_in, w5, go, zero, scatter)
        v6 = _scatter_read(inp, grad_input, n, c, z0 + 1, y0 + 1, x0, z1_in and y1_in and x0_in, w6, go, zero, scatter)
        v7 = _scatter_read(inp, grad_input, n, c, z0 + 1, y0 + 1, x0 + 1, z1_in and y1_in and x1_in, w7, go,
                           zero, scatter)
        ddx, ddy, ddz = fm.trilinear_coordinate_gradient(v0, v1, v2, v3, v4, v5, v6, v7, fx, fy, fz, one)
        gix += ddx * go
        giy += ddy * go
        giz += ddz * go
    grad_grid[n, l, i, j, 0] = gix * dx
    grad_grid[n, l, i, j, 1] = giy * dy
    grad_grid[n, l, i, j, 2] = giz * dz


@cuda.jit
def _zero_kernel(arr):
    """arr[...] = 0 for a 5-D array, one thread per element."""
    t = cuda.grid(1)
    d1, d2, d3, d4 = arr.shape[1], arr.shape[2], arr.shape[3], arr.shape[4]
    if t >= arr.shape[0] * d1 * d2 * d3 * d4:
        return
    arr[t // (d1 * d2 * d3 * d4), (t // (d2 * d3 * d4)) % d1, (t // (d3 * d4)) % d2, (t // d4) % d3, t % d4] = 0.0


def forward(input, grid, mode: str, padding_mode: str, align_corners: bool):
    """Sampled output (N, C, D_out, H_out, W_out); a device array if an argument was one."""
    cu = cuda_module()
    d_inp, inp_host = to_device(input)
    d_grid, grid_host = to_device(grid)
    n_batch, n_chan, d_in, h_in, w_in = d_inp.shape
    out_dhw = tuple(d_grid.shape[1:4])
    out = cu.device_array((n_batch, n_chan, *out_dhw), dtype=d_inp.dtype)
    blocks, threads = launch_config(n_batch * out_dhw[0] * out_dhw[1] * out_dhw[2])
    _forward_kernel[blocks, threads](d_inp, d_grid, out, _geometry(d_inp.dtype, d_in, h_in, w_in, align_corners),
                                     MODE_CODES[mode], PADDING_CODES[padding_mode], bool(align_corners))
    return out.copy_to_host() if (inp_host and grid_host) else out


def backward(grad_output, input, grid, mode: str, padding_mode: str, align_corners: bool,
             needs_input_grad: bool = True):
    """(grad_input, grad_grid); device arrays if an argument was one. ``needs_input_grad=False``: no
    scatter (eq. 6), grad_input None."""
    cu = cuda_module()
    d_gout, gout_host = to_device(grad_output)
    d_inp, inp_host = to_device(input)
    d_grid, grid_host = to_device(grid)
    n_batch, n_chan, d_in, h_in, w_in = d_inp.shape
    grad_grid = cu.device_array(d_grid.shape, dtype=d_grid.dtype)
    grad_input = d_inp  # stands in, unwritten, when there is no scatter
    if needs_input_grad:
        grad_input = cu.device_array(d_inp.shape, dtype=d_inp.dtype)
        blocks, threads = launch_config(n_batch * n_chan * d_in * h_in * w_in)
        _zero_kernel[blocks, threads](grad_input)
    blocks, threads = launch_config(d_grid.shape[0] * d_grid.shape[1] * d_grid.shape[2] * d_grid.shape[3])
    _backward_kernel[blocks, threads](d_gout, d_inp, d_grid, grad_input, grad_grid,
                                      _geometry(d_inp.dtype, d_in, h_in, w_in, align_corners), MODE_CODES[mode],
                                      PADDING_CODES[padding_mode], bool(align_corners), bool(needs_input_grad))
    if not needs_input_grad:
        grad_input = None
    if gout_host and inp_host and grid_host:
        return (None if grad_input is None else grad_input.copy_to_host()), grad_grid.copy_to_host()
    return grad_input, grad_grid
