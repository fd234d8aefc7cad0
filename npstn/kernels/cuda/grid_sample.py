"""CUDA kernels of the sampler (bilinear / nearest ``grid_sample``): Numba ``@cuda.jit``.

One thread per output point (n, h, w), looping over the channels:

* forward: the thread finds the point's source coordinate once and writes
  ``out[n, :, h, w]``;
* backward: the thread writes its own ``grad_grid[n, h, w]`` directly (a sum
  over channels; nobody else writes it) and scatters ``grad_output`` into
  ``grad_input`` with ``cuda.atomic.add``, because neighbouring points share
  input pixels. (Atomic float additions make the order of the sum, hence the
  last bits of ``grad_input``, vary from run to run; float64 atomics need a
  GPU of compute capability 6.0 or newer.)

The math and conventions are in :mod:`npstn.functional.grid_sample`. The
padding helpers are compiled from the same Python source as the CPU
backend's (:mod:`npstn.kernels.cpu.grid_sample`), so the two cannot drift
apart. As there, the unnormalisation runs in the grid's dtype (typed
constants are passed in from the host) and the rest in float64.

Host wrappers accept NumPy arrays (copied to the device; results copied
back) or device arrays (results stay on the device as device arrays). Under
``NUMBA_ENABLE_CUDASIM=1`` the kernels run in Numba's CUDA simulator.
"""
from __future__ import annotations

import math

from numba import cuda

from npstn.kernels.cpu import grid_sample as _cpu
from npstn.kernels.cuda.common import cuda_module, launch_config, to_device

__all__ = ["forward", "backward"]

NEAREST = _cpu.NEAREST

pad_coordinate = cuda.jit(device=True)(_cpu.pad_coordinate.py_func)
round_half_even = cuda.jit(device=True)(_cpu.round_half_even.py_func)


# ----------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------

@cuda.jit
def _forward_kernel(inp, grid, out, one, scale_x, scale_y, shift, mode, padding_mode, align_corners):
    t = cuda.grid(1)
    n_chan, h_in, w_in = inp.shape[1], inp.shape[2], inp.shape[3]
    h_out, w_out = grid.shape[1], grid.shape[2]
    n_pts = h_out * w_out
    if t >= grid.shape[0] * n_pts:
        return
    n = t // n_pts
    h = (t % n_pts) // w_out
    w = t % w_out
    gx = grid[n, h, w, 0]
    gy = grid[n, h, w, 1]
    if not (math.isfinite(gx) and math.isfinite(gy)):
        for c in range(n_chan):  # npstn policy: a NaN/inf point samples 0
            out[n, c, h, w] = 0.0
        return
    ix, dx = pad_coordinate((gx + one) * scale_x - shift, w_in, padding_mode, align_corners)
    iy, dy = pad_coordinate((gy + one) * scale_y - shift, h_in, padding_mode, align_corners)
    if mode == NEAREST:
        xn = int(round_half_even(ix))
        yn = int(round_half_even(iy))
        inside = xn >= 0 and xn < w_in and yn >= 0 and yn < h_in
        for c in range(n_chan):
            if inside:
                out[n, c, h, w] = inp[n, c, yn, xn]
            else:
                out[n, c, h, w] = 0.0
        return
    x0f = math.floor(ix)
    y0f = math.floor(iy)
    fx = ix - x0f
    fy = iy - y0f
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


@cuda.jit
def _backward_kernel(grad_output, inp, grid, grad_input, grad_grid, one, scale_x, scale_y, shift,
                     mode, padding_mode, align_corners):
    t = cuda.grid(1)
    n_chan, h_in, w_in = inp.shape[1], inp.shape[2], inp.shape[3]
    h_out, w_out = grid.shape[1], grid.shape[2]
    n_pts = h_out * w_out
    if t >= grid.shape[0] * n_pts:
        return
    n = t // n_pts
    h = (t % n_pts) // w_out
    w = t % w_out
    gx = grid[n, h, w, 0]
    gy = grid[n, h, w, 1]
    grad_grid[n, h, w, 0] = 0.0
    grad_grid[n, h, w, 1] = 0.0
    if not (math.isfinite(gx) and math.isfinite(gy)):
        return  # zero gradient, no contribution to grad_input
    ix, dx = pad_coordinate((gx + one) * scale_x - shift, w_in, padding_mode, align_corners)
    iy, dy = pad_coordinate((gy + one) * scale_y - shift, h_in, padding_mode, align_corners)
    if mode == NEAREST:
        xn = int(round_half_even(ix))
        yn = int(round_half_even(iy))
        if xn >= 0 and xn < w_in and yn >= 0 and yn < h_in:
            for c in range(n_chan):
                cuda.atomic.add(grad_input, (n, c, yn, xn), grad_output[n, c, h, w])
        return
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
    gix = 0.0
    giy = 0.0
    for c in range(n_chan):
        go = grad_output[n, c, h, w]
        nw = 0.0
        ne = 0.0
        sw = 0.0
        se = 0.0
        if y0_in and x0_in:
            nw = inp[n, c, y0, x0]
            cuda.atomic.add(grad_input, (n, c, y0, x0), (1.0 - fy) * (1.0 - fx) * go)
        if y0_in and x1_in:
            ne = inp[n, c, y0, x0 + 1]
            cuda.atomic.add(grad_input, (n, c, y0, x0 + 1), (1.0 - fy) * fx * go)
        if y1_in and x0_in:
            sw = inp[n, c, y0 + 1, x0]
            cuda.atomic.add(grad_input, (n, c, y0 + 1, x0), fy * (1.0 - fx) * go)
        if y1_in and x1_in:
            se = inp[n, c, y0 + 1, x0 + 1]
            cuda.atomic.add(grad_input, (n, c, y0 + 1, x0 + 1), fy * fx * go)
        gix += ((ne - nw) * (1.0 - fy) + (se - sw) * fy) * go
        giy += ((sw - nw) * (1.0 - fx) + (se - ne) * fx) * go
    grad_grid[n, h, w, 0] = gix * (dx * scale_x)
    grad_grid[n, h, w, 1] = giy * (dy * scale_y)


@cuda.jit
def _zero_kernel(arr):
    """arr[...] = 0 for a 4-D array, one thread per element."""
    t = cuda.grid(1)
    d1, d2, d3 = arr.shape[1], arr.shape[2], arr.shape[3]
    if t >= arr.shape[0] * d1 * d2 * d3:
        return
    arr[t // (d1 * d2 * d3), (t // (d2 * d3)) % d1, (t // d3) % d2, t % d3] = 0.0


# ----------------------------------------------------------------------------
# Host wrappers
# ----------------------------------------------------------------------------

def forward(input, grid, mode: str, padding_mode: str, align_corners: bool):
    """Sampled output (N, C, H_out, W_out); a device array if an argument was one."""
    cu = cuda_module()
    d_inp, inp_host = to_device(input)
    d_grid, grid_host = to_device(grid)
    n_batch, n_chan, h_in, w_in = d_inp.shape
    h_out, w_out = d_grid.shape[1], d_grid.shape[2]
    out = cu.device_array((n_batch, n_chan, h_out, w_out), dtype=d_inp.dtype)
    one, sx, sy, shift = _cpu.unnormalize_constants(d_inp.dtype, h_in, w_in, align_corners)
    blocks, threads = launch_config(n_batch * h_out * w_out)
    _forward_kernel[blocks, threads](d_inp, d_grid, out, one, sx, sy, shift, _cpu.MODE_CODES[mode],
                                     _cpu.PADDING_CODES[padding_mode], bool(align_corners))
    return out.copy_to_host() if (inp_host and grid_host) else out


def backward(grad_output, input, grid, mode: str, padding_mode: str, align_corners: bool):
    """(grad_input, grad_grid); device arrays if an argument was one."""
    cu = cuda_module()
    d_gout, gout_host = to_device(grad_output)
    d_inp, inp_host = to_device(input)
    d_grid, grid_host = to_device(grid)
    n_batch, n_chan, h_in, w_in = d_inp.shape
    h_out, w_out = d_grid.shape[1], d_grid.shape[2]
    grad_input = cu.device_array(d_inp.shape, dtype=d_inp.dtype)
    grad_grid = cu.device_array(d_grid.shape, dtype=d_grid.dtype)
    blocks, threads = launch_config(n_batch * n_chan * h_in * w_in)
    _zero_kernel[blocks, threads](grad_input)
    one, sx, sy, shift = _cpu.unnormalize_constants(d_inp.dtype, h_in, w_in, align_corners)
    blocks, threads = launch_config(n_batch * h_out * w_out)
    _backward_kernel[blocks, threads](d_gout, d_inp, d_grid, grad_input, grad_grid, one, sx, sy, shift,
                                      _cpu.MODE_CODES[mode], _cpu.PADDING_CODES[padding_mode],
                                      bool(align_corners))
    if gout_host and inp_host and grid_host:
        return grad_input.copy_to_host(), grad_grid.copy_to_host()
    return grad_input, grad_grid
