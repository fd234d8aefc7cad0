"""CUDA kernels of the grid generators: Numba ``@cuda.jit``.

Forward kernels run one thread per output point (n, i, j) and write its
(x^s, y^s). Backward kernels run one thread per (n, parameter) (the
projective one: per n, for its 8 sums at once): the thread loops over all
H_out * W_out points and accumulates its sums. A
grid has few parameters per batch element and the loops are short (a grid is
at most a few thousand points), so this simple scheme is correct, free of
atomics and races, and fast enough next to sampling; a block-wide tree
reduction would be the next step if it ever shows in a profile.

The math is in :mod:`npstn.functional` (affine, attention, projective, tps);
the projective map and its derivative are the device-function versions of
:func:`npstn.kernels.formulas.homography`, ``projective_point`` and
``projective_gradient``, the functions the NumPy specification calls.
As on the CPU, base-grid coordinates are float64, so all arithmetic is in
float64 and the result is rounded once into the output's dtype.

Host wrappers accept NumPy arrays (copied to the device, result copied back)
or device arrays (result left on the device as a device array). The base-grid
coordinates and TPS matrices are uploaded once per shape and cached on the
device (``_const``).
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from npstn.kernels.formulas import cuda_formulas as fm
from npstn.kernels.cuda.common import cuda_module, launch_config, to_device
from npstn.kernels.formulas import PROJECTIVE_FAR  # noqa: F401 (re-exported: the horizon's coordinate)


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


def _generate(kernel, theta, xs, ys, *extra):
    """Launch a grid kernel ``kernel(theta, xs, ys, *extra, grid)``, one thread per output point."""
    cu = cuda_module()
    d_theta, on_host = to_device(theta)
    grid = cu.device_array((theta.shape[0], ys.shape[0], xs.shape[0], 2), dtype=theta.dtype)
    blocks, threads = launch_config(grid.size // 2)
    kernel[blocks, threads](d_theta, _const(cu, xs), _const(cu, ys), *extra, grid)
    return _finish(grid, on_host)


def _differentiate(kernel, grad_grid, xs, ys, tail: tuple, threads_per_n: int, *extra):
    """Launch ``kernel(grad_grid, *extra[:1], xs, ys, *extra[1:], grad_theta)``: grad_theta (N, *tail).

    ``threads_per_n`` threads per batch element (one per parameter, or one in all).
    """
    cu = cuda_module()
    d_grad, on_host = to_device(grad_grid)
    grad_theta = cu.device_array((grad_grid.shape[0], *tail), dtype=grad_grid.dtype)
    blocks, threads = launch_config(grad_grid.shape[0] * threads_per_n)
    kernel[blocks, threads](d_grad, *extra[:1], _const(cu, xs), _const(cu, ys), *extra[1:], grad_theta)
    return _finish(grad_theta, on_host)


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
    # BEGIN SOLUTION task1: the compiled kernel is left out of the student repository; use backend="numpy"
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
    # END SOLUTION


def affine_grid(theta, xs, ys):
    """theta (N, 2, 3) -> grid (N, H_out, W_out, 2), on the device if theta is."""
    return _generate(_affine_grid_kernel, theta, xs, ys)


def affine_grid_backward(grad_grid, xs, ys):
    """grad_grid (N, H_out, W_out, 2) -> grad_theta (N, 2, 3)."""
    # BEGIN SOLUTION task1: the compiled kernel is left out of the student repository; use backend="numpy"
    return _differentiate(_affine_grid_backward_kernel, grad_grid, xs, ys, (2, 3), 6)
    # END SOLUTION


# Volumes: theta (N, 3, 4), B = (x, y, z, 1)

@cuda.jit
def _affine_grid3d_kernel(theta, xs, ys, zs, grid):
    t = cuda.grid(1)
    n_batch, d, h, w = grid.shape[0], grid.shape[1], grid.shape[2], grid.shape[3]
    if t >= n_batch * d * h * w:
        return
    j = t % w
    i = (t // w) % h
    l = (t // (w * h)) % d  # noqa: E741
    n = t // (w * h * d)
    x = xs[j]
    y = ys[i]
    z = zs[l]
    for r in range(3):
        grid[n, l, i, j, r] = theta[n, r, 0] * x + theta[n, r, 1] * y + theta[n, r, 2] * z + theta[n, r, 3]


@cuda.jit
def _affine_grid3d_backward_kernel(grad_grid, xs, ys, zs, grad_theta):
    # thread (n, r, k): dL/dtheta[n, r, k] = sum_lij G[n, l, i, j, r] * B_lij[k], B = (x, y, z, 1)
    t = cuda.grid(1)
    n_batch, d, h, w = grad_grid.shape[0], grad_grid.shape[1], grad_grid.shape[2], grad_grid.shape[3]
    if t >= n_batch * 12:
        return
    n = t // 12
    r = (t // 4) % 3
    k = t % 4
    acc = 0.0
    for l in range(d):  # noqa: E741
        for i in range(h):
            for j in range(w):
                if k == 0:
                    b = xs[j]
                elif k == 1:
                    b = ys[i]
                elif k == 2:
                    b = zs[l]
                else:
                    b = 1.0
                acc += grad_grid[n, l, i, j, r] * b
    grad_theta[n, r, k] = acc


def affine_grid3d(theta, xs, ys, zs):
    """theta (N, 3, 4) -> grid (N, D_out, H_out, W_out, 3), on the device if theta is."""
    cu = cuda_module()
    d_theta, on_host = to_device(theta)
    grid = cu.device_array((theta.shape[0], zs.shape[0], ys.shape[0], xs.shape[0], 3), dtype=theta.dtype)
    blocks, threads = launch_config(grid.size // 3)
    _affine_grid3d_kernel[blocks, threads](d_theta, _const(cu, xs), _const(cu, ys), _const(cu, zs), grid)
    return _finish(grid, on_host)


def affine_grid3d_backward(grad_grid, xs, ys, zs):
    """grad_grid (N, D_out, H_out, W_out, 3) -> grad_theta (N, 3, 4)."""
    cu = cuda_module()
    d_grad, on_host = to_device(grad_grid)
    grad_theta = cu.device_array((grad_grid.shape[0], 3, 4), dtype=grad_grid.dtype)
    blocks, threads = launch_config(grad_grid.shape[0] * 12)
    _affine_grid3d_backward_kernel[blocks, threads](d_grad, _const(cu, xs), _const(cu, ys), _const(cu, zs),
                                                    grad_theta)
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
    return _generate(_attention_grid_kernel, theta, xs, ys)


def attention_grid_backward(grad_grid, xs, ys):
    """grad_grid (N, H_out, W_out, 2) -> grad_theta (N, 3)."""
    return _differentiate(_attention_grid_backward_kernel, grad_grid, xs, ys, (3,), 3)


# ----------------------------------------------------------------------------
# Projective: x^s = u / w, y^s = v / w
# ----------------------------------------------------------------------------

@cuda.jit
def _projective_grid_kernel(theta, xs, ys, eps, grid):
    # formulas.homography and formulas.projective_point (with the horizon policy), one thread per point
    t = cuda.grid(1)
    n_batch, h, w = grid.shape[0], grid.shape[1], grid.shape[2]
    if t >= n_batch * h * w:
        return
    n = t // (h * w)
    i = (t // w) % h
    j = t % w
    u, v, den = fm.homography(theta[n, 0], theta[n, 1], theta[n, 2], theta[n, 3], theta[n, 4], theta[n, 5],
                              theta[n, 6], theta[n, 7], xs[j], ys[i])
    grid[n, i, j, 0], grid[n, i, j, 1], _ = fm.projective_point(u, v, den, eps)


@cuda.jit
def _projective_grid_backward_kernel(grad_grid, theta, xs, ys, eps, grad_theta):
    # BEGIN SOLUTION task3: the compiled kernel is left out of the student repository; use backend="numpy"
    # thread n: the 8 sums over all points of formulas.projective_gradient (0 on the horizon)
    n = cuda.grid(1)
    n_batch, h, w = grad_grid.shape[0], grad_grid.shape[1], grad_grid.shape[2]
    if n >= n_batch:
        return
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for i in range(h):
        y = ys[i]
        for j in range(w):
            x = xs[j]
            u, v, den = fm.homography(theta[n, 0], theta[n, 1], theta[n, 2], theta[n, 3], theta[n, 4],
                                      theta[n, 5], theta[n, 6], theta[n, 7], x, y)
            _, _, inv_w = fm.projective_point(u, v, den, eps)
            t0, t1, t2, t3, t4, t5, t6, t7 = fm.projective_gradient(grad_grid[n, i, j, 0], grad_grid[n, i, j, 1],
                                                                    u, v, inv_w, x, y)
            s0 += t0
            s1 += t1
            s2 += t2
            s3 += t3
            s4 += t4
            s5 += t5
            s6 += t6
            s7 += t7
    grad_theta[n, 0] = s0
    grad_theta[n, 1] = s1
    grad_theta[n, 2] = s2
    grad_theta[n, 3] = s3
    grad_theta[n, 4] = s4
    grad_theta[n, 5] = s5
    grad_theta[n, 6] = s6
    grad_theta[n, 7] = s7
    # END SOLUTION


def projective_grid(theta, xs, ys, eps):
    """theta (N, 8) -> grid (N, H_out, W_out, 2)."""
    return _generate(_projective_grid_kernel, theta, xs, ys, float(eps))


def projective_grid_backward(grad_grid, theta, xs, ys, eps):
    """grad_grid (N, H_out, W_out, 2), theta (N, 8) -> grad_theta (N, 8)."""
    # BEGIN SOLUTION task3: the compiled kernel is left out of the student repository; use backend="numpy"
    d_theta, _ = to_device(theta)
    return _differentiate(_projective_grid_backward_kernel, grad_grid, xs, ys, (8,), 1, d_theta, float(eps))
    # END SOLUTION


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
