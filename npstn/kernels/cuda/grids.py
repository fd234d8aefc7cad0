"""CUDA kernels of the grid generators: Numba ``@cuda.jit``.

Forward kernels run one thread per output point (n, i, j) and write its
(x^s, y^s). Backward kernels run one thread per (n, parameter): the thread
loops over all H_out * W_out points and accumulates that parameter's sum. A
grid has few parameters per batch element and the loops are short (a grid is
at most a few thousand points), so this simple scheme is correct, free of
atomics and races, and fast enough next to sampling; a block-wide tree
reduction would be the next step if it ever shows in a profile.

The math is in :mod:`npstn.functional` (affine, attention, projective, tps).
As on the CPU, base-grid coordinates are float64, so all arithmetic is in
float64 and the result is rounded once into the output's dtype.

Host wrappers accept NumPy arrays (copied to the device, result copied back)
or device arrays (result left on the device as a device array). The base-grid
coordinates and TPS matrices are uploaded once per shape and cached on the
device (``_const``).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from npstn.kernels.cuda.common import cuda_module, launch_config, to_device

# Kept in sync with npstn.functional.projective.PROJECTIVE_FAR (a test checks).
PROJECTIVE_FAR = 1e6


def _finish(out, on_host: bool):
    return out.copy_to_host() if on_host else out


# Base-grid coordinates and TPS matrices are constants of a layer's shape: keep
# their device copies, so a training step uploads them once, not per call (an
# upload from pageable memory also waits for the kernels queued before it).
_CONST_CACHE: dict = {}
_CONST_CACHE_MAX = 256
_CONST_BYTES_KEY_MAX = 1 << 16  # small arrays are keyed by value, larger read-only ones by identity


def _const(cu, a):
    """A cached device copy of the constant host array ``a`` (float64 coordinates or M)."""
    a = np.ascontiguousarray(a)
    if a.nbytes <= _CONST_BYTES_KEY_MAX:
        key = ("value", a.shape, a.dtype.str, a.tobytes())
    elif not a.flags.writeable:  # e.g. the cached, read-only TPS matrix
        key = ("id", id(a))
    else:
        return cu.to_device(a)
    hit = _CONST_CACHE.get(key)
    if hit is not None and (key[0] == "value" or hit[0] is a):
        return hit[1]
    if len(_CONST_CACHE) >= _CONST_CACHE_MAX:
        _CONST_CACHE.clear()
    d = cu.to_device(a)
    _CONST_CACHE[key] = (a, d)  # the host array is kept alive, so its id stays unique
    return d


# ----------------------------------------------------------------------------
# Affine (eq. 1)
# ----------------------------------------------------------------------------

@cuda.jit
def _affine_grid_kernel(theta, xs, ys, grid):
    t = cuda.grid(1)
    n_batch, h, w = grid.shape[0], grid.shape[1], grid.shape[2]
    if t >= n_batch * h * w:
        return
    n = t // (h * w)
    i = (t // w) % h
    j = t % w
    x = xs[j]
    y = ys[i]
    grid[n, i, j, 0] = theta[n, 0, 0] * x + theta[n, 0, 1] * y + theta[n, 0, 2]
    grid[n, i, j, 1] = theta[n, 1, 0] * x + theta[n, 1, 1] * y + theta[n, 1, 2]


@cuda.jit
def _affine_grid_backward_kernel(grad_grid, xs, ys, grad_theta):
    # thread (n, r, k): dL/dtheta[n, r, k] = sum_ij G[n, i, j, r] * B_ij[k], B = (x, y, 1)
    t = cuda.grid(1)
    n_batch, h, w = grad_grid.shape[0], grad_grid.shape[1], grad_grid.shape[2]
    if t >= n_batch * 6:
        return
    n = t // 6
    r = (t // 3) % 2
    k = t % 3
    acc = 0.0
    for i in range(h):
        for j in range(w):
            if k == 0:
                b = xs[j]
            elif k == 1:
                b = ys[i]
            else:
                b = 1.0
            acc += grad_grid[n, i, j, r] * b
    grad_theta[n, r, k] = acc


def affine_grid(theta, xs, ys):
    """theta (N, 2, 3) -> grid (N, H_out, W_out, 2), on the device if theta is."""
    cu = cuda_module()
    d_theta, on_host = to_device(theta)
    grid = cu.device_array((theta.shape[0], ys.shape[0], xs.shape[0], 2), dtype=theta.dtype)
    blocks, threads = launch_config(grid.size // 2)
    _affine_grid_kernel[blocks, threads](d_theta, _const(cu, xs), _const(cu, ys), grid)
    return _finish(grid, on_host)


def affine_grid_backward(grad_grid, xs, ys):
    """grad_grid (N, H_out, W_out, 2) -> grad_theta (N, 2, 3)."""
    cu = cuda_module()
    d_grad, on_host = to_device(grad_grid)
    grad_theta = cu.device_array((grad_grid.shape[0], 2, 3), dtype=grad_grid.dtype)
    blocks, threads = launch_config(grad_grid.shape[0] * 6)
    _affine_grid_backward_kernel[blocks, threads](d_grad, _const(cu, xs), _const(cu, ys), grad_theta)
    return _finish(grad_theta, on_host)


# ----------------------------------------------------------------------------
# Attention (eq. 2)
# ----------------------------------------------------------------------------

@cuda.jit
def _attention_grid_kernel(theta, xs, ys, grid):
    t = cuda.grid(1)
    n_batch, h, w = grid.shape[0], grid.shape[1], grid.shape[2]
    if t >= n_batch * h * w:
        return
    n = t // (h * w)
    i = (t // w) % h
    j = t % w
    grid[n, i, j, 0] = theta[n, 0] * xs[j] + theta[n, 1]
    grid[n, i, j, 1] = theta[n, 0] * ys[i] + theta[n, 2]


@cuda.jit
def _attention_grid_backward_kernel(grad_grid, xs, ys, grad_theta):
    # thread (n, k): k = 0 -> dL/ds, 1 -> dL/dt_x, 2 -> dL/dt_y
    t = cuda.grid(1)
    n_batch, h, w = grad_grid.shape[0], grad_grid.shape[1], grad_grid.shape[2]
    if t >= n_batch * 3:
        return
    n = t // 3
    k = t % 3
    acc = 0.0
    for i in range(h):
        for j in range(w):
            gx = grad_grid[n, i, j, 0]
            gy = grad_grid[n, i, j, 1]
            if k == 0:
                acc += gx * xs[j] + gy * ys[i]
            elif k == 1:
                acc += gx
            else:
                acc += gy
    grad_theta[n, k] = acc


def attention_grid(theta, xs, ys):
    """theta (N, 3) -> grid (N, H_out, W_out, 2)."""
    cu = cuda_module()
    d_theta, on_host = to_device(theta)
    grid = cu.device_array((theta.shape[0], ys.shape[0], xs.shape[0], 2), dtype=theta.dtype)
    blocks, threads = launch_config(grid.size // 2)
    _attention_grid_kernel[blocks, threads](d_theta, _const(cu, xs), _const(cu, ys), grid)
    return _finish(grid, on_host)


def attention_grid_backward(grad_grid, xs, ys):
    """grad_grid (N, H_out, W_out, 2) -> grad_theta (N, 3)."""
    cu = cuda_module()
    d_grad, on_host = to_device(grad_grid)
    grad_theta = cu.device_array((grad_grid.shape[0], 3), dtype=grad_grid.dtype)
    blocks, threads = launch_config(grad_grid.shape[0] * 3)
    _attention_grid_backward_kernel[blocks, threads](d_grad, _const(cu, xs), _const(cu, ys), grad_theta)
    return _finish(grad_theta, on_host)


# ----------------------------------------------------------------------------
# Projective: x^s = u / w, y^s = v / w
# ----------------------------------------------------------------------------

@cuda.jit
def _projective_grid_kernel(theta, xs, ys, eps, grid):
    t = cuda.grid(1)
    n_batch, h, w = grid.shape[0], grid.shape[1], grid.shape[2]
    if t >= n_batch * h * w:
        return
    n = t // (h * w)
    i = (t // w) % h
    j = t % w
    x = xs[j]
    y = ys[i]
    u = theta[n, 0] * x + theta[n, 1] * y + theta[n, 2]
    v = theta[n, 3] * x + theta[n, 4] * y + theta[n, 5]
    den = theta[n, 6] * x + theta[n, 7] * y + 1.0
    if abs(den) < eps:  # on the horizon: far outside, in the limit's direction
        sign_w = math.copysign(1.0, den)
        grid[n, i, j, 0] = PROJECTIVE_FAR * math.copysign(1.0, u) * sign_w
        grid[n, i, j, 1] = PROJECTIVE_FAR * math.copysign(1.0, v) * sign_w
    else:
        grid[n, i, j, 0] = u / den
        grid[n, i, j, 1] = v / den


@cuda.jit
def _projective_grid_backward_kernel(grad_grid, theta, xs, ys, eps, grad_theta):
    # thread (n, k), k indexing (a, b, c, d, e, f, g, h), b = (x^t, y^t, 1)[k % 3]:
    #   k < 6:  dL/dtheta_k = sum G_r b / w, r = k // 3 (the x^s or the y^s row)
    #   k >= 6: dL/dtheta_k = -sum (G_x x^s + G_y y^s) b / w
    t = cuda.grid(1)
    n_batch, h, w = grad_grid.shape[0], grad_grid.shape[1], grad_grid.shape[2]
    if t >= n_batch * 8:
        return
    n = t // 8
    k = t % 8
    acc = 0.0
    for i in range(h):
        y = ys[i]
        for j in range(w):
            x = xs[j]
            den = theta[n, 6] * x + theta[n, 7] * y + 1.0
            if abs(den) < eps:
                continue
            if k % 3 == 0:  # a, d, g
                b = x
            elif k % 3 == 1:  # b, e, h
                b = y
            else:  # c, f
                b = 1.0
            if k < 6:
                acc += grad_grid[n, i, j, k // 3] * b / den
            else:
                u = theta[n, 0] * x + theta[n, 1] * y + theta[n, 2]
                v = theta[n, 3] * x + theta[n, 4] * y + theta[n, 5]
                q = (grad_grid[n, i, j, 0] * (u / den) + grad_grid[n, i, j, 1] * (v / den)) / den
                acc -= q * b
    grad_theta[n, k] = acc


def projective_grid(theta, xs, ys, eps):
    """theta (N, 8) -> grid (N, H_out, W_out, 2)."""
    cu = cuda_module()
    d_theta, on_host = to_device(theta)
    grid = cu.device_array((theta.shape[0], ys.shape[0], xs.shape[0], 2), dtype=theta.dtype)
    blocks, threads = launch_config(grid.size // 2)
    _projective_grid_kernel[blocks, threads](d_theta, _const(cu, xs), _const(cu, ys), float(eps), grid)
    return _finish(grid, on_host)


def projective_grid_backward(grad_grid, theta, xs, ys, eps):
    """grad_grid (N, H_out, W_out, 2), theta (N, 8) -> grad_theta (N, 8)."""
    cu = cuda_module()
    d_grad, on_host = to_device(grad_grid)
    d_theta, _ = to_device(theta)
    grad_theta = cu.device_array((grad_grid.shape[0], 8), dtype=grad_grid.dtype)
    blocks, threads = launch_config(grad_grid.shape[0] * 8)
    _projective_grid_backward_kernel[blocks, threads](
        d_grad, d_theta, _const(cu, xs), _const(cu, ys), float(eps), grad_theta
    )
    return _finish(grad_theta, on_host)


# ----------------------------------------------------------------------------
# Thin-plate spline: grid[n] = M theta[n], M (H_out * W_out, K)
# ----------------------------------------------------------------------------

@cuda.jit
def _tps_grid_kernel(m, theta, grid):
    # thread (n, i, j): grid[n, i, j, c] = sum_p M[i * W + j, p] theta[n, p, c]
    t = cuda.grid(1)
    n_batch, h, w = grid.shape[0], grid.shape[1], grid.shape[2]
    if t >= n_batch * h * w:
        return
    n = t // (h * w)
    point = t % (h * w)
    ax = 0.0
    ay = 0.0
    for p in range(m.shape[1]):
        ax += m[point, p] * theta[n, p, 0]
        ay += m[point, p] * theta[n, p, 1]
    grid[n, point // w, point % w, 0] = ax
    grid[n, point // w, point % w, 1] = ay


@cuda.jit
def _tps_grid_backward_kernel(m, grad_grid, grad_theta):
    # thread (n, p): grad_theta[n, p, c] = sum_ij M[i * W + j, p] G[n, i, j, c]
    t = cuda.grid(1)
    n_batch, h, w = grad_grid.shape[0], grad_grid.shape[1], grad_grid.shape[2]
    k_total = m.shape[1]
    if t >= n_batch * k_total:
        return
    n = t // k_total
    p = t % k_total
    ax = 0.0
    ay = 0.0
    for i in range(h):
        for j in range(w):
            mij = m[i * w + j, p]
            ax += mij * grad_grid[n, i, j, 0]
            ay += mij * grad_grid[n, i, j, 1]
    grad_theta[n, p, 0] = ax
    grad_theta[n, p, 1] = ay


def tps_grid(theta, m, h, w):
    """theta (N, K, 2), M (H_out * W_out, K) float64 -> grid (N, H_out, W_out, 2)."""
    cu = cuda_module()
    d_theta, on_host = to_device(theta)
    grid = cu.device_array((theta.shape[0], h, w, 2), dtype=theta.dtype)
    blocks, threads = launch_config(theta.shape[0] * h * w)
    _tps_grid_kernel[blocks, threads](_const(cu, m), d_theta, grid)
    return _finish(grid, on_host)


def tps_grid_backward(grad_grid, m):
    """grad_grid (N, H_out, W_out, 2), M (H_out * W_out, K) -> grad_theta (N, K, 2)."""
    cu = cuda_module()
    d_grad, on_host = to_device(grad_grid)
    grad_theta = cu.device_array((grad_grid.shape[0], m.shape[1], 2), dtype=grad_grid.dtype)
    blocks, threads = launch_config(grad_grid.shape[0] * m.shape[1])
    _tps_grid_backward_kernel[blocks, threads](_const(cu, m), d_grad, grad_theta)
    return _finish(grad_theta, on_host)
