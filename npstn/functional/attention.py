"""The attention grid generator (paper eq. 2): isotropic scale plus translation.

A constrained affine transform that crops, translates and scales::

    A_theta = [[s, 0, t_x],
               [0, s, t_y]]                                           (eq. 2)

so each target point G_i = (x_i^t, y_i^t) maps to

    x_i^s = s x_i^t + t_x,        y_i^s = s y_i^t + t_y.

Shapes: theta (N, 3) = (s, t_x, t_y) -> grid (N, H_out, W_out, 2).

Backward, with G = dL/dgrid::

    dL/ds   = sum_i G[i, 0] x_i^t + G[i, 1] y_i^t
    dL/dt_x = sum_i G[i, 0]
    dL/dt_y = sum_i G[i, 1]

The grid equals ``affine_grid`` of [[s, 0, t_x], [0, s, t_y]] exactly
(same base grid, same ``align_corners`` convention).
"""
from __future__ import annotations

import numpy as np

from npstn._backend import resolve_backend
from npstn._checks import check_bool
from npstn.functional.affine import (
    _as_array,
    _base_xy,
    _check_grad_grid,
    _check_params,
    _check_size,
    _check_theta_for_backward,
    _kernels,
)

__all__ = ["attention_grid", "attention_grid_backward"]


def attention_grid(theta, size, align_corners: bool = False, backend: str | None = None):
    """Sampling grid of the attention transform (eq. 2).

    Parameters
    ----------
    theta : array (N, 3), float32 or float64
        (s, t_x, t_y) per batch element.
    size : (N, C, H_out, W_out)

    Returns
    -------
    grid : array (N, H_out, W_out, 2), theta's dtype
        ``grid[n, i, j] = (s x_j^t + t_x, s y_i^t + t_y)``.
    """
    check_bool("align_corners", align_corners)
    backend = resolve_backend(backend, theta)
    _check_params("theta", theta, (3,), "(N, 3) = (s, t_x, t_y)", backend)
    _, _, h, w = _check_size(size, theta.shape[0])
    xs, ys = _base_xy(h, w, bool(align_corners))
    if backend == "numpy":
        return _attention_grid_numpy(theta, xs, ys)
    return _kernels(backend).attention_grid(_as_array(theta), xs, ys)


def attention_grid_backward(grad_grid, theta, size, align_corners: bool = False,
                            backend: str | None = None):
    """dL/dtheta (N, 3) = (dL/ds, dL/dt_x, dL/dt_y) from G = dL/dgrid (N, H_out, W_out, 2).

    The grid is linear in theta, so theta's values are not needed; it is taken
    (and validated) by the package's rule for every backward,
    ``op_backward(grad_output, <inputs>, <keyword arguments>)``.
    The result has grad_grid's dtype.
    """
    check_bool("align_corners", align_corners)
    backend = resolve_backend(backend, grad_grid, theta)
    size = _check_size(size)
    _check_grad_grid(grad_grid, size, backend)
    _check_theta_for_backward(theta, (3,), "(N, 3) = (s, t_x, t_y)", grad_grid, size, backend)
    _, _, h, w = size
    xs, ys = _base_xy(h, w, bool(align_corners))
    if backend == "numpy":
        return _attention_grid_backward_numpy(grad_grid, xs, ys)
    return _kernels(backend).attention_grid_backward(_as_array(grad_grid), xs, ys)


# ----------------------------------------------------------------------------
# The NumPy specification (float64 inside, cast to the input dtype)
# ----------------------------------------------------------------------------

def _attention_grid_numpy(theta, xs, ys):
    t = theta.astype(np.float64)
    s, tx, ty = t[:, 0, None, None], t[:, 1, None, None], t[:, 2, None, None]
    n, h, w = t.shape[0], ys.shape[0], xs.shape[0]
    grid = np.empty((n, h, w, 2))
    grid[..., 0] = s * xs[None, None, :] + tx  # x^s = s x^t + t_x
    grid[..., 1] = s * ys[None, :, None] + ty  # y^s = s y^t + t_y
    return grid.astype(theta.dtype)


def _attention_grid_backward_numpy(grad_grid, xs, ys):
    g = grad_grid.astype(np.float64)
    gx, gy = g[..., 0], g[..., 1]  # (N, H, W) each
    grad = np.empty((g.shape[0], 3))
    grad[:, 0] = (gx * xs[None, None, :]).sum(axis=(1, 2)) + (gy * ys[None, :, None]).sum(axis=(1, 2))
    grad[:, 1] = gx.sum(axis=(1, 2))
    grad[:, 2] = gy.sum(axis=(1, 2))
    return grad.astype(grad_grid.dtype)
