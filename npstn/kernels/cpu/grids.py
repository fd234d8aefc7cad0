"""CPU kernels of the grid generators: Numba ``@njit(cache=True)``, serial or ``prange``.

Each generator has a forward kernel (theta -> grid, ``prange`` over output
rows (n, i), one output point after another along the row) and a backward
kernel (grad_grid -> grad_theta, ``prange`` over batch elements, each
accumulating its parameters' sums over all output points).

Serial and parallel: the sampler's idiom (:mod:`npstn.kernels.cpu.grid_sample`).
Every kernel is compiled twice from one body, by the factory
:func:`_make_kernels`: with ``prange`` and as plain loops. :func:`_launch`
runs calls with fewer than ``PARALLEL_MIN_POINTS`` grid points on the serial
copy (starting the thread pool costs more than it saves there, and a serial
call is immune to an oversubscribed machine) and hands the rows (or images)
of larger ones out in chunks to whichever thread is free. The math is in
:mod:`npstn.functional` (affine, attention, projective, tps); these kernels
compute exactly the same expressions (the projective ones call the very
functions of :mod:`npstn.kernels.formulas` that the specification calls).

Precision: the base-grid coordinates xs (W_out,), ys (H_out,) come in as
float64, so every product and every sum is formed in float64 and rounded once
when stored in the output, whose dtype is the input's (float32 or float64).

The host wrappers (``affine_grid`` ...) take validated, C-contiguous NumPy
arrays, allocate the output and launch; the public functions in
:mod:`npstn.functional` do the validation.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from npstn.kernels import formulas as fm
from npstn.kernels.formulas import PROJECTIVE_FAR  # noqa: F401 (re-exported: the horizon's coordinate)


# ----------------------------------------------------------------------------
# Affine (eq. 1), attention (eq. 2) and projective kernels, serial and parallel
# ----------------------------------------------------------------------------

#
# The affine generator runs on every spatial-transformer step, so its kernels
# get the care the sampler's do (the other generators keep the plain form):
# theta's six numbers are read once per row instead of once per point, rows
# are written through flat views (no wraparound checks, so the row loop
# vectorises), and the backward's sums are vectorised.

#: calls with fewer grid points (N * H_out * W_out) run the serial kernels
PARALLEL_MIN_POINTS = 1 << 15
#: the threshold's older name, from when only the affine kernels had a serial copy
AFFINE_PARALLEL_MIN_POINTS = PARALLEL_MIN_POINTS


def _make_kernels(parallel: bool) -> dict:
    """Every generator's kernels, compiled with ``prange`` (parallel) or as plain loops (serial).

    The affine backward may reassociate its float64 sums, which lets the
    compiler vectorise them; the order of a float64 sum is not part of the
    contract (only its float64 accuracy is). The kernels name PARALLEL, a
    closure variable, so that Numba's disk cache (which tells closures apart
    by their bytecode and closure values, not by their options) keeps the
    serial and the parallel ones apart.
    """
    PARALLEL = parallel

    @njit(parallel=parallel, cache=True)
    def affine_grid(theta, xs, ys, grid):
        # grid[n, i, j] = (t00 x_j + t01 y_i + t02, t10 x_j + t11 y_i + t12), summed in that order
        PARALLEL  # noqa: B018 (part of the cache key)
        n_batch, h, w = grid.shape[0], grid.shape[1], grid.shape[2]
        flat = grid.reshape(grid.size)
        for row in prange(n_batch * h):
            n, i = row // h, row % h
            y = ys[i]
            t00, t01, t02 = theta[n, 0, 0], theta[n, 0, 1], theta[n, 0, 2]
            t10, t11, t12 = theta[n, 1, 0], theta[n, 1, 1], theta[n, 1, 2]
            t01y = t01 * y  # the same product the per-point expression forms
            t11y = t11 * y
            out = flat[2 * w * row:2 * w * (row + 1)]  # this row: x, y, x, y, ...
            for j in range(w):
                x = xs[j]
                out[2 * j] = t00 * x + t01y + t02
                out[2 * j + 1] = t10 * x + t11y + t12

    @njit(parallel=parallel, cache=True, fastmath={"reassoc"})
    def affine_grid_backward(grad_grid, xs, ys, grad_theta):
        # BEGIN SOLUTION task1: the compiled kernel is left out of the student repository; use backend="numpy"
        # dL/dtheta[n, r, :] = sum_ij G[n, i, j, r] * (x_j^t, y_i^t, 1)
        PARALLEL  # noqa: B018 (part of the cache key)
        n_batch, h, w = grad_grid.shape[0], grad_grid.shape[1], grad_grid.shape[2]
        flat = grad_grid.reshape(grad_grid.size)
        for n in prange(n_batch):
            gxx = gxy = gx1 = 0.0  # float64 accumulators: sum G_x x, G_x y, G_x; then the same for G_y
            gyx = gyy = gy1 = 0.0
            for i in range(h):
                y = ys[i]
                g = flat[2 * w * (n * h + i):2 * w * (n * h + i + 1)]  # row i of image n
                for j in range(w):
                    x = xs[j]
                    gx = g[2 * j]
                    gy = g[2 * j + 1]
                    gxx += gx * x
                    gxy += gx * y
                    gx1 += gx
                    gyx += gy * x
                    gyy += gy * y
                    gy1 += gy
            grad_theta[n, 0, 0] = gxx
            grad_theta[n, 0, 1] = gxy
            grad_theta[n, 0, 2] = gx1
            grad_theta[n, 1, 0] = gyx
            grad_theta[n, 1, 1] = gyy
            grad_theta[n, 1, 2] = gy1
        # END SOLUTION

    # Volumes: grid[n, l, i, j] = theta[n] @ (x_j, y_i, z_l, 1), theta (N, 3, 4)

    @njit(parallel=parallel, cache=True)
    def affine_grid3d(theta, xs, ys, zs, grid):
        PARALLEL  # noqa: B018 (part of the cache key)
        n_batch, d, h, w = grid.shape[0], grid.shape[1], grid.shape[2], grid.shape[3]
        flat = grid.reshape(grid.size)
        for row in prange(n_batch * d * h):  # row (n, l, i)
            n = row // (d * h)
            l = (row // h) % d  # noqa: E741
            i = row % h
            y = ys[i]
            z = zs[l]
            c0 = theta[n, 0, 1] * y + theta[n, 0, 2] * z + theta[n, 0, 3]
            c1 = theta[n, 1, 1] * y + theta[n, 1, 2] * z + theta[n, 1, 3]
            c2 = theta[n, 2, 1] * y + theta[n, 2, 2] * z + theta[n, 2, 3]
            t0, t1, t2 = theta[n, 0, 0], theta[n, 1, 0], theta[n, 2, 0]
            out = flat[3 * w * row:3 * w * (row + 1)]
            for j in range(w):
                x = xs[j]
                out[3 * j] = t0 * x + c0
                out[3 * j + 1] = t1 * x + c1
                out[3 * j + 2] = t2 * x + c2

    @njit(parallel=parallel, cache=True, fastmath={"reassoc"})
    def affine_grid3d_backward(grad_grid, xs, ys, zs, grad_theta):
        # dL/dtheta[n, r, :] = sum_lij G[n, l, i, j, r] * (x_j, y_i, z_l, 1), float64 sums
        PARALLEL  # noqa: B018 (part of the cache key)
        n_batch, d, h, w = grad_grid.shape[0], grad_grid.shape[1], grad_grid.shape[2], grad_grid.shape[3]
        flat = grad_grid.reshape(grad_grid.size)
        for n in prange(n_batch):
            acc = np.zeros((3, 4))
            for l in range(d):  # noqa: E741
                z = zs[l]
                for i in range(h):
                    y = ys[i]
                    row = (n * d + l) * h + i
                    g = flat[3 * w * row:3 * w * (row + 1)]
                    for r in range(3):
                        sx = 0.0
                        s1 = 0.0
                        for j in range(w):
                            gr = g[3 * j + r]
                            sx += gr * xs[j]
                            s1 += gr
                        acc[r, 0] += sx
                        acc[r, 1] += s1 * y
                        acc[r, 2] += s1 * z
                        acc[r, 3] += s1
            for r in range(3):
                for k in range(4):
                    grad_theta[n, r, k] = acc[r, k]

    # Attention (eq. 2): x^s = s x^t + t_x, y^s = s y^t + t_y

    @njit(parallel=parallel, cache=True)
    def attention_grid(theta, xs, ys, grid):
        PARALLEL  # noqa: B018 (part of the cache key)
        n_batch, h, w = grid.shape[0], grid.shape[1], grid.shape[2]
        for row in prange(n_batch * h):
            n, i = row // h, row % h
            s, tx, ty = theta[n, 0], theta[n, 1], theta[n, 2]
            for j in range(w):
                grid[n, i, j, 0] = s * xs[j] + tx
                grid[n, i, j, 1] = s * ys[i] + ty

    @njit(parallel=parallel, cache=True)
    def attention_grid_backward(grad_grid, xs, ys, grad_theta):
        # dL/ds = sum G_x x^t + G_y y^t;  dL/dt_x = sum G_x;  dL/dt_y = sum G_y
        PARALLEL  # noqa: B018 (part of the cache key)
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

    # Projective: formulas.homography and formulas.projective_point (with the
    # horizon policy) at every point; the backward sums formulas.projective_gradient

    @njit(parallel=parallel, cache=True)
    def projective_grid(theta, xs, ys, eps, grid):
        PARALLEL  # noqa: B018 (part of the cache key)
        n_batch, h, w = grid.shape[0], grid.shape[1], grid.shape[2]
        for row in prange(n_batch * h):
            n, i = row // h, row % h
            a, b, c, d, e, f, g, hh = (theta[n, 0], theta[n, 1], theta[n, 2], theta[n, 3], theta[n, 4],
                                       theta[n, 5], theta[n, 6], theta[n, 7])
            y = ys[i]
            for j in range(w):
                u, v, den = fm.homography(a, b, c, d, e, f, g, hh, xs[j], y)
                grid[n, i, j, 0], grid[n, i, j, 1], _ = fm.projective_point(u, v, den, eps)

    @njit(parallel=parallel, cache=True)
    def projective_grid_backward(grad_grid, theta, xs, ys, eps, grad_theta):
        # BEGIN SOLUTION task3: the compiled kernel is left out of the student repository; use backend="numpy"
        PARALLEL  # noqa: B018 (part of the cache key)
        n_batch, h, w = grad_grid.shape[0], grad_grid.shape[1], grad_grid.shape[2]
        for n in prange(n_batch):
            a, b, c, d, e, f, g, hh = (theta[n, 0], theta[n, 1], theta[n, 2], theta[n, 3], theta[n, 4],
                                       theta[n, 5], theta[n, 6], theta[n, 7])
            acc = np.zeros(8)
            for i in range(h):
                y = ys[i]
                for j in range(w):
                    x = xs[j]
                    u, v, den = fm.homography(a, b, c, d, e, f, g, hh, x, y)
                    _, _, inv_w = fm.projective_point(u, v, den, eps)
                    terms = fm.projective_gradient(grad_grid[n, i, j, 0], grad_grid[n, i, j, 1], u, v, inv_w,
                                                   x, y)
                    for k in range(8):
                        acc[k] += terms[k]
            for k in range(8):
                grad_theta[n, k] = acc[k]
        # END SOLUTION

    # The thin-plate spline's layout moves around its two BLAS products (below): rows[2n + c, i] of a
    # (2N, P) float64 matrix is the point i's coordinate c of image n. One thread per image.
    @njit(parallel=parallel, cache=True)
    def tps_rows_to_grid(rows, grid):
        """grid (N, P, 2) = rows (2N, P) interleaved, rounded once to grid's dtype."""
        PARALLEL  # noqa: B018 (part of the cache key)
        n_batch, n_pts = grid.shape[0], grid.shape[1]
        for n in prange(n_batch):
            for i in range(n_pts):
                grid[n, i, 0] = rows[2 * n, i]
                grid[n, i, 1] = rows[2 * n + 1, i]

    @njit(parallel=parallel, cache=True)
    def tps_grid_to_rows(grad_grid, rows):
        """rows (2N, P) float64 = grad_grid (N, P, 2) de-interleaved."""
        PARALLEL  # noqa: B018 (part of the cache key)
        n_batch, n_pts = grad_grid.shape[0], grad_grid.shape[1]
        for n in prange(n_batch):
            for i in range(n_pts):
                rows[2 * n, i] = grad_grid[n, i, 0]
                rows[2 * n + 1, i] = grad_grid[n, i, 1]

    return {"tps_rows_to_grid": tps_rows_to_grid, "tps_grid_to_rows": tps_grid_to_rows,
            "affine_grid": affine_grid, "affine_grid_backward": affine_grid_backward,
            "affine_grid3d": affine_grid3d, "affine_grid3d_backward": affine_grid3d_backward,
            "attention_grid": attention_grid, "attention_grid_backward": attention_grid_backward,
            "projective_grid": projective_grid, "projective_grid_backward": projective_grid_backward}


_PARALLEL = _make_kernels(True)
_SERIAL = _make_kernels(False)
# the names the tests use for the affine pair
_affine_grid_kernel, _affine_grid_backward_kernel = _PARALLEL["affine_grid"], _PARALLEL["affine_grid_backward"]
_affine_grid_serial, _affine_grid_backward_serial = _SERIAL["affine_grid"], _SERIAL["affine_grid_backward"]


def _chunk(iterations: int) -> int:
    """prange chunk size: about 8 chunks per thread, handed out to whichever thread is free."""
    return max(1, iterations // (8 * numba.get_num_threads()))


def _launch(name: str, points: int, items: int, *args) -> None:
    """Run kernel ``name`` on ``args``: serially below PARALLEL_MIN_POINTS grid points, else over
    ``items`` parallel iterations (rows or images) in chunks."""
    if points < PARALLEL_MIN_POINTS:
        _SERIAL[name](*args)
    else:
        with numba.parallel_chunksize(_chunk(items)):
            _PARALLEL[name](*args)


def _empty_grid(theta, xs, ys):
    return np.empty((theta.shape[0], ys.shape[0], xs.shape[0], 2), dtype=theta.dtype)


def affine_grid(theta, xs, ys):
    """theta (N, 2, 3) -> grid (N, H_out, W_out, 2), theta's dtype."""
    grid = _empty_grid(theta, xs, ys)
    _launch("affine_grid", grid.size // 2, grid.shape[0] * grid.shape[1], theta, xs, ys, grid)
    return grid


def affine_grid_backward(grad_grid, xs, ys):
    """grad_grid (N, H_out, W_out, 2) -> grad_theta (N, 2, 3), grad_grid's dtype."""
    # BEGIN SOLUTION task1: the compiled kernel is left out of the student repository; use backend="numpy"
    grad_theta = np.empty((grad_grid.shape[0], 2, 3), dtype=grad_grid.dtype)
    _launch("affine_grid_backward", grad_grid.size // 2, grad_grid.shape[0], grad_grid, xs, ys, grad_theta)
    return grad_theta
    # END SOLUTION


def affine_grid3d(theta, xs, ys, zs):
    """theta (N, 3, 4) -> grid (N, D_out, H_out, W_out, 3), theta's dtype."""
    grid = np.empty((theta.shape[0], zs.shape[0], ys.shape[0], xs.shape[0], 3), dtype=theta.dtype)
    _launch("affine_grid3d", grid.size // 3, grid.shape[0] * grid.shape[1] * grid.shape[2], theta, xs, ys, zs, grid)
    return grid


def affine_grid3d_backward(grad_grid, xs, ys, zs):
    """grad_grid (N, D_out, H_out, W_out, 3) -> grad_theta (N, 3, 4), grad_grid's dtype."""
    grad_theta = np.empty((grad_grid.shape[0], 3, 4), dtype=grad_grid.dtype)
    _launch("affine_grid3d_backward", grad_grid.size // 3, grad_grid.shape[0], grad_grid, xs, ys, zs, grad_theta)
    return grad_theta


def attention_grid(theta, xs, ys):
    """theta (N, 3) = (s, t_x, t_y) -> grid (N, H_out, W_out, 2)."""
    grid = _empty_grid(theta, xs, ys)
    _launch("attention_grid", grid.size // 2, grid.shape[0] * grid.shape[1], theta, xs, ys, grid)
    return grid


def attention_grid_backward(grad_grid, xs, ys):
    """grad_grid (N, H_out, W_out, 2) -> grad_theta (N, 3)."""
    grad_theta = np.empty((grad_grid.shape[0], 3), dtype=grad_grid.dtype)
    _launch("attention_grid_backward", grad_grid.size // 2, grad_grid.shape[0], grad_grid, xs, ys, grad_theta)
    return grad_theta


def projective_grid(theta, xs, ys, eps):
    """theta (N, 8) -> grid (N, H_out, W_out, 2)."""
    grid = _empty_grid(theta, xs, ys)
    _launch("projective_grid", grid.size // 2, grid.shape[0] * grid.shape[1], theta, xs, ys, float(eps), grid)
    return grid


def projective_grid_backward(grad_grid, theta, xs, ys, eps):
    """grad_grid (N, H_out, W_out, 2), theta (N, 8) -> grad_theta (N, 8)."""
    # BEGIN SOLUTION task3: the compiled kernel is left out of the student repository; use backend="numpy"
    grad_theta = np.empty((grad_grid.shape[0], 8), dtype=grad_grid.dtype)
    _launch("projective_grid_backward", grad_grid.size // 2, grad_grid.shape[0], grad_grid, theta, xs, ys,
            float(eps), grad_theta)
    return grad_theta
    # END SOLUTION


# ----------------------------------------------------------------------------
# Thin-plate spline: grid[n] = M theta[n], M (H_out * W_out, K) fixed
# ----------------------------------------------------------------------------

# Both directions are matrix products with the fixed M, so they go to BLAS
# (in float64, rounded once to the output dtype, like the other generators),
# each as ONE product over the batch:
#
#   forward:  R = Theta @ M^T   (2N x K times K x P), Theta's row 2n + c = theta[n][:, c]
#   backward: R = G @ M         (2N x P times P x K), G's row 2n + c = Gamma[n][:, c]
#
# R's row 2n + c holds image n's coordinate c at every point, so the
# (N, P, 2) grid and the rows of G are interleavings of whole rows: the
# kernels tps_rows_to_grid / tps_grid_to_rows do them, one thread per image,
# the rounding to the output dtype included. Earlier forms: N products
# M^T @ G[n] (N tiny threaded BLAS calls), then one product with its layout
# changed by NumPy transposes and copies, which run on one thread and were
# most of the TPS transformer's time on the H200 machine's 16 cores
# (benchmarks/RESULTS.md, "The second real GPU").

def tps_grid(theta, m, h, w):
    """theta (N, K, 2), M (H_out * W_out, K) float64 -> grid (N, H_out, W_out, 2), theta's dtype.

    grid[n, i, c] = sum_p M[i, p] theta[n, p, c], for all n at once: (2N, K) @ (K, P).
    """
    n, k, _ = theta.shape
    rows = theta.astype(np.float64).transpose(0, 2, 1).reshape(2 * n, k)  # (2N, K): small
    prod = rows @ m.T  # (2N, P), float64
    grid = np.empty((n, h * w, 2), dtype=theta.dtype)
    _launch("tps_rows_to_grid", n * h * w, n, prod, grid)
    return grid.reshape(n, h, w, 2)


def tps_grid_backward(grad_grid, m):
    """grad_grid (N, H_out, W_out, 2), M (H_out * W_out, K) -> grad_theta (N, K, 2), grad_grid's dtype.

    grad_theta[n, p, c] = sum_i M[i, p] G[n, i, c], for all n at once: (2N, P) @ (P, K).
    """
    n = grad_grid.shape[0]
    g = grad_grid.reshape(n, -1, 2)
    rows = np.empty((2 * n, g.shape[1]))  # float64
    _launch("tps_grid_to_rows", g.shape[1] * n, n, g, rows)
    grad = (rows @ m).reshape(n, 2, m.shape[1]).transpose(0, 2, 1)  # (N, K, 2), float64: small
    return np.ascontiguousarray(grad, dtype=grad_grid.dtype)
