"""The projective (homography) grid generator, 8 parameters.

theta = (a, b, c, d, e, f, g, h) are the entries of the 3x3 homography with
its last entry fixed to 1 (npstn's choice of the paper's 8 parameters)::

    H_theta = [[a, b, c],
               [d, e, f],
               [g, h, 1]]

Each target point G_i = (x^t, y^t) maps through homogeneous coordinates::

    u = a x^t + b y^t + c,   v = d x^t + e y^t + f,   w = g x^t + h y^t + 1
    x^s = u / w,             y^s = v / w

Identity: (1, 0, 0, 0, 1, 0, 0, 0). With g = h = 0 it is the affine map
[[a, b, c], [d, e, f]] (eq. 1).

Backward, with Gamma = dL/dgrid (``grad_grid``) and q = Gamma_x x^s + Gamma_y y^s
at each point::

    dL/da = sum Gamma_x x^t / w    dL/db = sum Gamma_x y^t / w    dL/dc = sum Gamma_x / w
    dL/dd = sum Gamma_y x^t / w    dL/de = sum Gamma_y y^t / w    dL/df = sum Gamma_y / w
    dL/dg = -sum q x^t / w     dL/dh = -sum q y^t / w

The horizon (npstn's policy)
----------------------------
Where |w| < ``eps`` (default 1e-6) the point lies on, or numerically at, the
line the homography sends to infinity. There the grid holds the finite value
``x^s = +-PROJECTIVE_FAR`` (1e6), ``y^s = +-PROJECTIVE_FAR`` with the sign of
the limit of u/w (sign(u) * sign(w), signs of zeros as ``copysign`` reads
them), and the gradient of those points is 0. 1e6 is far outside [-1, 1]
(the sampler's support ends at most one pixel beyond the edges) yet exactly
representable in float32 and small enough that the sampler's pixel indices
stay far from int64 overflow: with 'zeros' padding the point samples 0, with
'border' padding it samples the edge pixel in the direction the ray escapes,
which is also what points just outside the eps band (|u/w| ~ |u|/eps ~ 1e6)
sample, so the output does not jump at the band's edge. Points with w <= -eps
("behind the camera") follow the formula like any other.
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
from npstn.kernels import formulas as fm
from npstn.kernels.formulas import PROJECTIVE_EPS, PROJECTIVE_FAR

__all__ = [
    "projective_grid",
    "projective_grid_backward",
    "PROJECTIVE_IDENTITY",
    "PROJECTIVE_FAR",
    "PROJECTIVE_EPS",
]

#: The identity homography's 8 parameters (a, b, c, d, e, f, g, h).
PROJECTIVE_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
# PROJECTIVE_FAR (the horizon's coordinate) and PROJECTIVE_EPS (the default
# eps) live with the formulas, in npstn.kernels.formulas, and are re-exported here.

_LAYOUT = "(N, 8) = (a, b, c, d, e, f, g, h)"


def _check_eps(eps) -> float:
    eps = float(eps)
    if not eps >= 0.0:
        raise ValueError(f"eps must be a non-negative float, got {eps!r}")
    return eps


def projective_grid(theta, size, align_corners: bool = False, backend: str | None = None,
                    eps: float = PROJECTIVE_EPS):
    """Sampling grid of the homography [[a, b, c], [d, e, f], [g, h, 1]].

    Parameters
    ----------
    theta : array (N, 8), float32 or float64
    size : (N, C, H_out, W_out)
    eps : points with |g x^t + h y^t + 1| < eps get +-PROJECTIVE_FAR
        (see the module docstring).

    Returns
    -------
    grid : array (N, H_out, W_out, 2), theta's dtype; x^s = u/w, y^s = v/w.
    """
    check_bool("align_corners", align_corners)
    backend = resolve_backend(backend, theta)
    _check_params("theta", theta, (8,), _LAYOUT, backend)
    _, _, h, w = _check_size(size, theta.shape[0])
    eps = _check_eps(eps)
    xs, ys = _base_xy(h, w, bool(align_corners))
    if backend == "numpy":
        return _projective_grid_numpy(theta, xs, ys, eps)
    return _kernels(backend).projective_grid(_as_array(theta), xs, ys, eps)


def projective_grid_backward(grad_grid, theta, size, align_corners: bool = False,
                             backend: str | None = None, eps: float = PROJECTIVE_EPS):
    """dL/dtheta (N, 8) from Gamma = dL/dgrid (N, H_out, W_out, 2); 0 from points with |w| < eps.

    The result has grad_grid's dtype (which must equal theta's).
    """
    check_bool("align_corners", align_corners)
    backend = resolve_backend(backend, grad_grid, theta)
    size = _check_size(size)
    _check_grad_grid(grad_grid, size, backend)
    _check_theta_for_backward(theta, (8,), _LAYOUT, grad_grid, size, backend)
    eps = _check_eps(eps)
    _, _, h, w = size
    xs, ys = _base_xy(h, w, bool(align_corners))
    if backend == "numpy":
        return _projective_grid_backward_numpy(grad_grid, theta, xs, ys, eps)
    return _kernels(backend).projective_grid_backward(_as_array(grad_grid), _as_array(theta), xs, ys, eps)


# ----------------------------------------------------------------------------
# The NumPy specification: the formulas of npstn.kernels.formulas on whole arrays
# (float64 inside, cast to the input dtype)
# ----------------------------------------------------------------------------

def _homogeneous_uvw(theta, xs, ys):
    """u, v, w of every target point, each (N, H_out, W_out) in float64 (formulas.homography)."""
    t = theta.astype(np.float64)[:, :, None, None]  # (N, 8, 1, 1)
    return fm.homography(*(t[:, k] for k in range(8)), xs[None, None, :], ys[None, :, None])


def _projective_grid_numpy(theta, xs, ys, eps):
    u, v, w = _homogeneous_uvw(theta, xs, ys)
    x_s, y_s, _ = fm.projective_point(u, v, w, eps)  # far points on the horizon
    return np.stack([x_s, y_s], axis=-1).astype(theta.dtype)


def _projective_grid_backward_numpy(grad_grid, theta, xs, ys, eps):
    # BEGIN SOLUTION task3
    u, v, w = _homogeneous_uvw(theta, xs, ys)
    _, _, inv_w = fm.projective_point(u, v, w, eps)  # 1/w = 0 kills far points' gradient
    g = grad_grid.astype(np.float64)
    terms = fm.projective_gradient(g[..., 0], g[..., 1], u, v, inv_w, xs[None, None, :], ys[None, :, None])
    grad = np.stack([np.broadcast_to(t, u.shape).sum(axis=(1, 2)) for t in terms], axis=1)
    return grad.astype(grad_grid.dtype)
    # END SOLUTION
