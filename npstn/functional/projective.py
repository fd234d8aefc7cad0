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

Backward, with G = dL/dgrid and q = G_x x^s + G_y y^s at each point::

    dL/da = sum G_x x^t / w    dL/db = sum G_x y^t / w    dL/dc = sum G_x / w
    dL/dd = sum G_y x^t / w    dL/de = sum G_y y^t / w    dL/df = sum G_y / w
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
from npstn._checks import check_bool, check_same_dtype
from npstn.functional.affine import (
    _as_array,
    _base_xy,
    _check_grad_grid,
    _check_params,
    _check_size,
    _kernels,
)

__all__ = [
    "projective_grid",
    "projective_grid_backward",
    "PROJECTIVE_IDENTITY",
    "PROJECTIVE_FAR",
    "PROJECTIVE_EPS",
]

#: The identity homography's 8 parameters (a, b, c, d, e, f, g, h).
PROJECTIVE_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
#: Magnitude of the coordinates given to points whose denominator |w| < eps.
PROJECTIVE_FAR = 1e6
#: Default threshold on |w| below which a point is sent "to infinity".
PROJECTIVE_EPS = 1e-6

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
    backend = resolve_backend(backend)
    _check_params("theta", theta, (8,), _LAYOUT, backend)
    _, _, h, w = _check_size(size, theta.shape[0])
    eps = _check_eps(eps)
    xs, ys = _base_xy(h, w, bool(align_corners))
    if backend == "numpy":
        return _projective_grid_numpy(theta, xs, ys, eps)
    return _kernels(backend).projective_grid(_as_array(theta), xs, ys, eps)


def projective_grid_backward(grad_grid, theta, size, align_corners: bool = False,
                             backend: str | None = None, eps: float = PROJECTIVE_EPS):
    """dL/dtheta (N, 8) from G = dL/dgrid (N, H_out, W_out, 2); 0 from points with |w| < eps.

    The result has grad_grid's dtype (which must equal theta's).
    """
    check_bool("align_corners", align_corners)
    backend = resolve_backend(backend)
    _check_params("theta", theta, (8,), _LAYOUT, backend)
    size = _check_size(size, theta.shape[0])
    _check_grad_grid(grad_grid, size, backend)
    check_same_dtype("grad_grid", grad_grid, "theta", theta)
    eps = _check_eps(eps)
    _, _, h, w = size
    xs, ys = _base_xy(h, w, bool(align_corners))
    if backend == "numpy":
        return _projective_grid_backward_numpy(grad_grid, theta, xs, ys, eps)
    return _kernels(backend).projective_grid_backward(_as_array(grad_grid), _as_array(theta), xs, ys, eps)


# ----------------------------------------------------------------------------
# The NumPy specification (float64 inside, cast to the input dtype)
# ----------------------------------------------------------------------------

def _homogeneous_uvw(theta, xs, ys):
    """u, v, w of every target point, each (N, H_out, W_out) in float64."""
    t = theta.astype(np.float64)[:, :, None, None]  # (N, 8, 1, 1)
    x, y = xs[None, None, :], ys[None, :, None]
    a, b, c, d, e, f, g, h = (t[:, k] for k in range(8))
    u = a * x + b * y + c
    v = d * x + e * y + f
    w = g * x + h * y + 1.0
    return u, v, w


def _projective_grid_numpy(theta, xs, ys, eps):
    u, v, w = _homogeneous_uvw(theta, xs, ys)
    far = np.abs(w) < eps  # on the horizon: send the point out of range
    safe_w = np.where(far, 1.0, w)
    grid = np.stack([u / safe_w, v / safe_w], axis=-1)
    sign_w = np.copysign(1.0, w)
    grid[..., 0] = np.where(far, PROJECTIVE_FAR * np.copysign(1.0, u) * sign_w, grid[..., 0])
    grid[..., 1] = np.where(far, PROJECTIVE_FAR * np.copysign(1.0, v) * sign_w, grid[..., 1])
    return grid.astype(theta.dtype)


def _projective_grid_backward_numpy(grad_grid, theta, xs, ys, eps):
    u, v, w = _homogeneous_uvw(theta, xs, ys)
    far = np.abs(w) < eps
    inv_w = np.where(far, 0.0, 1.0 / np.where(far, 1.0, w))  # 0 kills far points' gradient
    g = grad_grid.astype(np.float64)
    gx, gy = g[..., 0] * inv_w, g[..., 1] * inv_w  # G_x / w, G_y / w
    x, y = xs[None, None, :], ys[None, :, None]
    # q / w = (G_x x^s + G_y y^s) / w = (G_x u + G_y v) / w^2
    q = (gx * u + gy * v) * inv_w
    terms = [gx * x, gx * y, gx, gy * x, gy * y, gy, -q * x, -q * y]
    grad = np.stack([np.broadcast_to(t, gx.shape).sum(axis=(1, 2)) for t in terms], axis=1)
    return grad.astype(grad_grid.dtype)
