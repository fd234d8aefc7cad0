"""The thin-plate-spline (TPS) grid generator.

Control points. K = k * k points c_p on a regular k x k grid over [-1, 1]^2 in
the *output* frame (``tps_control_points(K)``; k >= 2, default K = 16, the
paper's 4 x 4), ordered row by row: c_{i k + j} = (x_j, y_i) with
x_j = y_j = linspace(-1, 1, k)[j].

Parameters. theta (N, K, 2): where each control point lands in the *input*
frame, theta[n, p] = T_theta(c_p). The identity transform is theta = c.

The spline. T_theta(x) = a_0 + a_x x + a_y y + sum_p beta_p phi(|x - c_p|), one
such function per output coordinate, with the radial basis phi(r) = r^2 log r^2
(phi(0) = 0). (phi and beta, not the paper's U and w: U is the input map, w the
homography's denominator.) Its coefficients solve the standard TPS system::

    [ Phi  Q ] [beta]   [theta]        Phi[p, q] = phi(|c_p - c_q|)     (K, K)
    [ Q^T  0 ] [ a  ] = [  0  ]        Q[p] = (1, x_p, y_p)             (K, 3)

(interpolation T(c_p) = theta_p, plus the side conditions sum beta = 0,
sum beta c = 0 that make the bending energy finite). The (K+3, K+3) matrix
Lambda = [[Phi, Q], [Q^T, 0]] is invertible because phi is conditionally
positive definite and the control points are not collinear (Q has rank 3).
With A(G_i) = (phi(|G_i - c_1|), ..., phi(|G_i - c_K|), 1, x_i^t, y_i^t) for
each target point::

    grid[n, i] = A(G_i) Lambda^{-1}[:, :K] theta[n] = (M theta[n])_i,
    M = A Lambda^{-1}[:, :K]           shape (H_out * W_out, K)

The grid is linear in theta with a matrix M that depends only on
(K, H_out, W_out, align_corners); it is built once and cached
(``tps_matrix``; read-only). The backward pass is the transpose::

    dL/dtheta[n] = M^T Gamma[n]   Gamma = dL/dgrid reshaped (H_out * W_out, 2)

Properties (tested): theta = c gives the base grid; theta = affinely moved
control points gives exactly that affine grid (the spline's affine part
reproduces it with w = 0); and the grid passes through theta_p wherever a
target point coincides with c_p.

Scaling phi by a constant (r^2 log r, as some write it) changes beta but not the
spline, so the choice of phi's constant does not matter.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from npstn._backend import resolve_backend
from npstn._checks import check_bool, check_float_array, shape_str
from npstn.functional.affine import (
    _as_array,
    _base_xy,
    _check_grad_grid,
    _check_params,
    _check_size,
    _check_theta_for_backward,
    _kernels,
    _theta_optional,
)
from npstn.kernels import formulas as fm

__all__ = ["tps_grid", "tps_grid_backward", "tps_control_points", "tps_matrix"]


def _check_num_control_points(num_control_points) -> int:
    """K must be a perfect square k * k with k >= 2 (4, 9, 16, 25, ...)."""
    if not isinstance(num_control_points, (int, np.integer)) or isinstance(num_control_points, (bool, np.bool_)):
        raise TypeError(
            f"num_control_points must be an int (a perfect square >= 4), got {num_control_points!r}"
        )
    k_total = int(num_control_points)
    if k_total < 4 or not _is_square_ge4(k_total):
        raise ValueError(
            "num_control_points must be a perfect square >= 4 (4, 9, 16, 25, ...: a k x k grid "
            f"with k >= 2), got {num_control_points!r}"
        )
    return k_total


@functools.lru_cache(maxsize=None)
def _control_points(num_control_points: int) -> np.ndarray:
    k = math.isqrt(num_control_points)
    lin = np.linspace(-1.0, 1.0, k)
    pts = np.empty((k, k, 2))
    pts[..., 0] = lin[None, :]  # x varies along a row
    pts[..., 1] = lin[:, None]  # y down the rows
    pts = pts.reshape(num_control_points, 2)
    pts.flags.writeable = False
    return pts


def tps_control_points(num_control_points: int = 16, dtype=np.float64) -> np.ndarray:
    """The K control points c (K, 2) = (x, y), a regular sqrt(K) x sqrt(K) grid over [-1, 1]^2.

    Ordered row by row: c[i * k + j] = (linspace(-1, 1, k)[j], linspace(-1, 1, k)[i]).
    These are also the identity parameters of :func:`tps_grid`. Returns a new array.
    """
    k_total = _check_num_control_points(num_control_points)
    return _control_points(k_total).astype(dtype, copy=True)


def _tps_system_rows(points: np.ndarray, ctrl: np.ndarray) -> np.ndarray:
    """A(points) (P, K + 3): (phi(|x - c_1|), ..., phi(|x - c_K|), 1, x, y) per point."""
    r2 = ((points[:, None, :] - ctrl[None, :, :]) ** 2).sum(-1)
    return np.concatenate([fm.tps_radial_basis(r2), np.ones((len(points), 1)), points], axis=1)


@functools.lru_cache(maxsize=None)
def _tps_coefficients(num_control_points: int) -> np.ndarray:
    """Lambda^{-1}[:, :K] (K + 3, K): maps theta (K, 2) to the coefficients [beta; a] (K + 3, 2)."""
    # BEGIN SOLUTION task4
    ctrl = _control_points(num_control_points)
    k_total = num_control_points
    lmat = np.zeros((k_total + 3, k_total + 3))
    rows = _tps_system_rows(ctrl, ctrl)  # (K, K + 3) = [K_mat, P]
    lmat[:k_total, :] = rows
    lmat[k_total:, :k_total] = rows[:, k_total:].T  # P^T
    rhs = np.zeros((k_total + 3, k_total))
    rhs[:k_total] = np.eye(k_total)
    return np.linalg.solve(lmat, rhs)
    # END SOLUTION


@functools.lru_cache(maxsize=64)
def _tps_matrix_cached(num_control_points: int, h: int, w: int, align_corners: bool) -> np.ndarray:
    xs, ys = _base_xy(h, w, align_corners)
    pts = np.empty((h, w, 2))
    pts[..., 0] = xs[None, :]
    pts[..., 1] = ys[:, None]
    rows = _tps_system_rows(pts.reshape(h * w, 2), _control_points(num_control_points))
    m = rows @ _tps_coefficients(num_control_points)  # (H*W, K)
    m = np.ascontiguousarray(m)
    m.flags.writeable = False
    return m


def tps_matrix(num_control_points: int, height: int, width: int, align_corners: bool = False) -> np.ndarray:
    """M (H_out * W_out, K), float64, read-only and cached: grid[n].reshape(-1, 2) = M @ theta[n].

    Row i * W_out + j belongs to the target point (x_j^t, y_i^t) of the base
    grid (the same coordinates as :func:`npstn.functional.affine_grid`).
    """
    k_total = _check_num_control_points(num_control_points)
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    return _tps_matrix_cached(k_total, int(height), int(width), bool(align_corners))


def _check_tps_theta(theta, backend) -> int:
    """theta must be (N, K, 2) with K a perfect square >= 4; returns K."""
    check_float_array("theta", theta, 3, what="(N, K, 2)")
    n, k_total, last = theta.shape
    if last != 2 or n < 1 or not _is_square_ge4(k_total):
        raise ValueError(
            "theta must have shape (N, K, 2) with N >= 1 and K a perfect square >= 4 "
            f"(4, 9, 16, ...), got shape {shape_str(theta.shape)}"
        )
    _check_params("theta", theta, (k_total, 2), "(N, K, 2)", backend)
    return int(k_total)


def _is_square_ge4(k_total: int) -> bool:
    k = math.isqrt(int(k_total))
    return k >= 2 and k * k == k_total


def tps_grid(theta, size, align_corners: bool = False, backend: str | None = None):
    """Sampling grid of the thin-plate spline through the control points' targets theta.

    Parameters
    ----------
    theta : array (N, K, 2), float32 or float64
        theta[n, p] = (x^s, y^s) where control point c_p lands in the input;
        K (a perfect square >= 4) is read from the shape.
    size : (N, C, H_out, W_out)

    Returns
    -------
    grid : array (N, H_out, W_out, 2), theta's dtype; grid[n].reshape(-1, 2) = M @ theta[n].
    """
    check_bool("align_corners", align_corners)
    backend = resolve_backend(backend, theta)
    k_total = _check_tps_theta(theta, backend)
    n, _, h, w = _check_size(size, theta.shape[0])
    m = tps_matrix(k_total, h, w, align_corners)
    if backend == "numpy":
        return _tps_grid_numpy(theta, m, h, w)
    return _kernels(backend).tps_grid(_as_array(theta), m, h, w)


def tps_grid_backward(grad_grid, theta, size=None, align_corners: bool = False, backend: str | None = None,
                      num_control_points: int | None = None):
    """dL/dtheta (N, K, 2) = M^T Gamma[n] from Gamma = dL/dgrid (N, H_out, W_out, 2).

    Two call forms, one result (the grid is linear in theta, so theta's
    values are never read; only K matters):

    * ``tps_grid_backward(grad_grid, theta, size, align_corners=False, backend=None)``,
      the package's rule for every backward (docs/DESIGN.md "Backward"); K is
      theta's K;
    * ``tps_grid_backward(grad_grid, size, num_control_points=16, align_corners=False, backend=None)``,
      theta left out and K given instead.

    The result has grad_grid's dtype.
    """
    if isinstance(theta, (tuple, list)) and size is not None and not isinstance(size, (tuple, list)):
        # (grad_grid, size, num_control_points, ...) positionally: K sits in the size slot
        if num_control_points is not None:
            raise TypeError("tps_grid_backward: num_control_points given twice")
        theta, size, num_control_points = None, theta, size
    elif isinstance(theta, (tuple, list)):
        theta, size, align_corners, backend = _theta_optional("tps_grid_backward", theta, size, align_corners,
                                                              backend)
    check_bool("align_corners", align_corners)
    backend = resolve_backend(backend, grad_grid, theta)
    size = _check_size(size)
    _check_grad_grid(grad_grid, size, backend)
    if theta is None:
        k_total = _check_num_control_points(16 if num_control_points is None else num_control_points)
    else:
        k_total = _check_tps_theta(theta, backend)
        _check_theta_for_backward(theta, (k_total, 2), "(N, K, 2)", grad_grid, size, backend)
        if num_control_points is not None and _check_num_control_points(num_control_points) != k_total:
            raise ValueError(
                f"num_control_points = {num_control_points} does not match theta, which has K = {k_total} "
                "control points; leave num_control_points out when theta is given"
            )
    _, _, h, w = size
    m = tps_matrix(k_total, h, w, align_corners)
    if backend == "numpy":
        return _tps_grid_backward_numpy(grad_grid, m)
    return _kernels(backend).tps_grid_backward(_as_array(grad_grid), m)


# ----------------------------------------------------------------------------
# The NumPy specification (float64 inside, cast to the input dtype)
# ----------------------------------------------------------------------------

def _tps_grid_numpy(theta, m, h, w):
    # grid[n, i, c] = sum_p M[i, p] theta[n, p, c]
    grid = np.einsum("ip,npc->nic", m, theta.astype(np.float64))
    return grid.reshape(theta.shape[0], h, w, 2).astype(theta.dtype)


def _tps_grid_backward_numpy(grad_grid, m):
    # dL/dtheta[n, p, c] = sum_i M[i, p] Gamma[n, i, c]
    n = grad_grid.shape[0]
    g = grad_grid.astype(np.float64).reshape(n, -1, 2)
    return np.einsum("ip,nic->npc", m, g).astype(grad_grid.dtype)

