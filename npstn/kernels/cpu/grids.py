"""CPU kernels of the grid generators: Numba ``@njit(parallel=True, cache=True)``.

Each generator has a forward kernel (theta -> grid, ``prange`` over output
rows (n, i), one output point after another along the row) and a backward
kernel (grad_grid -> grad_theta, ``prange`` over batch elements, each
accumulating its parameters' sums over all output points). The math is in
:mod:`npstn.functional` (affine, attention, projective, tps); these kernels
compute exactly the same expressions.

Precision: the base-grid coordinates xs (W_out,), ys (H_out,) come in as
float64, so every product and every sum is formed in float64 and rounded once
when stored in the output, whose dtype is the input's (float32 or float64).

The host wrappers (``affine_grid`` ...) take validated, C-contiguous NumPy
arrays, allocate the output and launch; the public functions in
:mod:`npstn.functional` do the validation.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# Kept in sync with npstn.functional.projective.PROJECTIVE_FAR (a test checks).
PROJECTIVE_FAR = 1e6


# ----------------------------------------------------------------------------
# Affine (eq. 1): x^s = t00 x^t + t01 y^t + t02, y^s = t10 x^t + t11 y^t + t12
# ----------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _affine_grid_kernel(theta, xs, ys, grid):
    n_batch, h, w = grid.shape[0], grid.shape[1], grid.shape[2]
    for row in prange(n_batch * h):
        n, i = row // h, row % h
        y = ys[i]
        for j in range(w):
            x = xs[j]
            grid[n, i, j, 0] = theta[n, 0, 0] * x + theta[n, 0, 1] * y + theta[n, 0, 2]
            grid[n, i, j, 1] = theta[n, 1, 0] * x + theta[n, 1, 1] * y + theta[n, 1, 2]


@njit(parallel=True, cache=True)
def _affine_grid_backward_kernel(grad_grid, xs, ys, grad_theta):
    # dL/dtheta[n, r, :] = sum_ij G[n, i, j, r] * (x_j^t, y_i^t, 1)
    n_batch, h, w = grad_grid.shape[0], grad_grid.shape[1], grad_grid.shape[2]
    for n in prange(n_batch):
        acc = np.zeros((2, 3))  # float64 accumulators
        for i in range(h):
            y = ys[i]
            for j in range(w):
                x = xs[j]
                for r in range(2):
                    g = grad_grid[n, i, j, r]
                    acc[r, 0] += g * x
                    acc[r, 1] += g * y
                    acc[r, 2] += g
        for r in range(2):
            for k in range(3):
                grad_theta[n, r, k] = acc[r, k]


def affine_grid(theta, xs, ys):
    """theta (N, 2, 3) -> grid (N, H_out, W_out, 2), theta's dtype."""
    grid = np.empty((theta.shape[0], ys.shape[0], xs.shape[0], 2), dtype=theta.dtype)
    _affine_grid_kernel(theta, xs, ys, grid)
    return grid


def affine_grid_backward(grad_grid, xs, ys):
    """grad_grid (N, H_out, W_out, 2) -> grad_theta (N, 2, 3), grad_grid's dtype."""
    grad_theta = np.empty((grad_grid.shape[0], 2, 3), dtype=grad_grid.dtype)
    _affine_grid_backward_kernel(grad_grid, xs, ys, grad_theta)
    return grad_theta


# ----------------------------------------------------------------------------
# Attention (eq. 2): x^s = s x^t + t_x, y^s = s y^t + t_y
# ----------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _attention_grid_kernel(theta, xs, ys, grid):
    n_batch, h, w = grid.shape[0], grid.shape[1], grid.shape[2]
    for row in prange(n_batch * h):
        n, i = row // h, row % h
        s, tx, ty = theta[n, 0], theta[n, 1], theta[n, 2]
        for j in range(w):
            grid[n, i, j, 0] = s * xs[j] + tx
            grid[n, i, j, 1] = s * ys[i] + ty


@njit(parallel=True, cache=True)
def _attention_grid_backward_kernel(grad_grid, xs, ys, grad_theta):
    # dL/ds = sum G_x x^t + G_y y^t;  dL/dt_x = sum G_x;  dL/dt_y = sum G_y
    n_batch, h, w = grad_grid.shape[0], grad_grid.shape[1], grad_grid.shape[2]
    for n in prange(n_batch):
        ds = 0.0
        dtx = 0.0
        dty = 0.0
        for i in range(h):
            for j in range(w):
                gx = grad_grid[n, i, j, 0]
                gy = grad_grid[n, i, j, 1]
                ds += gx * xs[j] + gy * ys[i]
                dtx += gx
                dty += gy
        grad_theta[n, 0] = ds
        grad_theta[n, 1] = dtx
        grad_theta[n, 2] = dty


def attention_grid(theta, xs, ys):
    """theta (N, 3) = (s, t_x, t_y) -> grid (N, H_out, W_out, 2)."""
    grid = np.empty((theta.shape[0], ys.shape[0], xs.shape[0], 2), dtype=theta.dtype)
    _attention_grid_kernel(theta, xs, ys, grid)
    return grid


def attention_grid_backward(grad_grid, xs, ys):
    """grad_grid (N, H_out, W_out, 2) -> grad_theta (N, 3)."""
    grad_theta = np.empty((grad_grid.shape[0], 3), dtype=grad_grid.dtype)
    _attention_grid_backward_kernel(grad_grid, xs, ys, grad_theta)
    return grad_theta


# ----------------------------------------------------------------------------
# Projective: x^s = u / w, y^s = v / w with
#   u = a x + b y + c,  v = d x + e y + f,  w = g x + h y + 1
# ----------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _projective_grid_kernel(theta, xs, ys, eps, grid):
    n_batch, h, w = grid.shape[0], grid.shape[1], grid.shape[2]
    for row in prange(n_batch * h):
        n, i = row // h, row % h
        y = ys[i]
        for j in range(w):
            x = xs[j]
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


@njit(parallel=True, cache=True)
def _projective_grid_backward_kernel(grad_grid, theta, xs, ys, eps, grad_theta):
    # dL/d(a, b, c) = sum G_x (x, y, 1) / w;  dL/d(d, e, f) = sum G_y (x, y, 1) / w
    # dL/d(g, h) = -sum (G_x x^s + G_y y^s) (x, y) / w;  far points contribute 0
    n_batch, h, w = grad_grid.shape[0], grad_grid.shape[1], grad_grid.shape[2]
    for n in prange(n_batch):
        acc = np.zeros(8)
        for i in range(h):
            y = ys[i]
            for j in range(w):
                x = xs[j]
                den = theta[n, 6] * x + theta[n, 7] * y + 1.0
                if abs(den) < eps:
                    continue
                u = theta[n, 0] * x + theta[n, 1] * y + theta[n, 2]
                v = theta[n, 3] * x + theta[n, 4] * y + theta[n, 5]
                x_src = u / den
                y_src = v / den
                gx = grad_grid[n, i, j, 0] / den
                gy = grad_grid[n, i, j, 1] / den
                q = gx * x_src + gy * y_src
                acc[0] += gx * x
                acc[1] += gx * y
                acc[2] += gx
                acc[3] += gy * x
                acc[4] += gy * y
                acc[5] += gy
                acc[6] -= q * x
                acc[7] -= q * y
        for k in range(8):
            grad_theta[n, k] = acc[k]


def projective_grid(theta, xs, ys, eps):
    """theta (N, 8) -> grid (N, H_out, W_out, 2)."""
    grid = np.empty((theta.shape[0], ys.shape[0], xs.shape[0], 2), dtype=theta.dtype)
    _projective_grid_kernel(theta, xs, ys, float(eps), grid)
    return grid


def projective_grid_backward(grad_grid, theta, xs, ys, eps):
    """grad_grid (N, H_out, W_out, 2), theta (N, 8) -> grad_theta (N, 8)."""
    grad_theta = np.empty((grad_grid.shape[0], 8), dtype=grad_grid.dtype)
    _projective_grid_backward_kernel(grad_grid, theta, xs, ys, float(eps), grad_theta)
    return grad_theta


# ----------------------------------------------------------------------------
# Thin-plate spline: grid[n] = M theta[n], M (H_out * W_out, K) fixed
# ----------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _tps_grid_kernel(m, theta, grid):
    # grid (N, P, 2) with P = H_out * W_out: grid[n, i, c] = sum_p M[i, p] theta[n, p, c]
    n_batch, n_points, k_total = grid.shape[0], m.shape[0], m.shape[1]
    for t in prange(n_batch * n_points):
        n, i = t // n_points, t % n_points
        ax = 0.0
        ay = 0.0
        for p in range(k_total):
            ax += m[i, p] * theta[n, p, 0]
            ay += m[i, p] * theta[n, p, 1]
        grid[n, i, 0] = ax
        grid[n, i, 1] = ay


@njit(parallel=True, cache=True)
def _tps_grid_backward_kernel(m, grad_grid, grad_theta):
    # grad_theta[n, p, c] = sum_i M[i, p] G[n, i, c]    (grad_grid viewed as (N, P, 2))
    n_batch, n_points, k_total = grad_grid.shape[0], m.shape[0], m.shape[1]
    for t in prange(n_batch * k_total):
        n, p = t // k_total, t % k_total
        ax = 0.0
        ay = 0.0
        for i in range(n_points):
            ax += m[i, p] * grad_grid[n, i, 0]
            ay += m[i, p] * grad_grid[n, i, 1]
        grad_theta[n, p, 0] = ax
        grad_theta[n, p, 1] = ay


def tps_grid(theta, m, h, w):
    """theta (N, K, 2), M (H_out * W_out, K) float64 -> grid (N, H_out, W_out, 2)."""
    grid = np.empty((theta.shape[0], h * w, 2), dtype=theta.dtype)
    _tps_grid_kernel(m, theta, grid)
    return grid.reshape(theta.shape[0], h, w, 2)


def tps_grid_backward(grad_grid, m):
    """grad_grid (N, H_out, W_out, 2), M (H_out * W_out, K) -> grad_theta (N, K, 2)."""
    n = grad_grid.shape[0]
    grad_theta = np.empty((n, m.shape[1], 2), dtype=grad_grid.dtype)
    _tps_grid_backward_kernel(m, grad_grid.reshape(n, -1, 2), grad_theta)
    return grad_theta
