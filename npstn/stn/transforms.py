"""Transforms T_theta behind one interface, for the SpatialTransformer module.

A localisation network regresses a flat parameter vector theta (N, P) per
batch element; a :class:`Transform` turns it into a sampling grid and maps the
grid's gradient back to the flat vector::

    grid       = T.grid(theta, size)                  theta (N, P) -> (N, H_out, W_out, 2)
    grad_theta = T.grid_backward(G, theta, size)      G = dL/dgrid -> (N, P)
    theta_0    = T.identity()                         (P,): grid(theta_0) = the base grid G

``size = (N, C, H_out, W_out)`` as in ``torch.nn.functional.affine_grid``;
for the volume transform (``spatial_dims = 3``) ``size = (N, C, D_out,
H_out, W_out)`` and grids are (N, D_out, H_out, W_out, 3).
Each subclass is a thin reshaping wrapper around a pair of functions in
:mod:`npstn.functional`; see there for the equations and backends.

=============================  ======  ==============================================
transform                      P       flat layout
=============================  ======  ==============================================
``AffineTransform``            6       A_theta (2, 3) row-major (eq. 1)
``Affine3DTransform``          12      A_theta (3, 4) row-major (volumes, 3D eq. 1)
``AttentionTransform``         3       (s, t_x, t_y) (eq. 2)
``ProjectiveTransform``        8       (a, b, c, d, e, f, g, h) of [[a b c][d e f][g h 1]]
``TPSTransform(K=16)``         2K      control-point targets (K, 2) row-major:
                                       (x_1, y_1, x_2, y_2, ...)
=============================  ======  ==============================================

:func:`get_transform` builds one from a name ("affine", "attention",
"projective", "tps", "affine3d") or passes a Transform instance through.
"""
from __future__ import annotations

import numpy as np

from npstn._checks import check_float_array, check_same_dtype, shape_str
from npstn.functional.affine import _check_size, _check_size_nd, affine_grid, affine_grid_backward, base_grid
from npstn.functional.attention import attention_grid, attention_grid_backward
from npstn.functional.projective import (
    PROJECTIVE_EPS,
    PROJECTIVE_IDENTITY,
    projective_grid,
    projective_grid_backward,
)
from npstn.functional.tps import _check_num_control_points, tps_control_points, tps_grid, tps_grid_backward

__all__ = [
    "Transform",
    "AffineTransform",
    "Affine3DTransform",
    "AttentionTransform",
    "ProjectiveTransform",
    "TPSTransform",
    "get_transform",
    "TRANSFORMS",
]


class Transform:
    """A grid generator T_theta with a flat parameter vector of length ``num_params``.

    Subclasses set ``name`` and ``num_params`` and implement
    :meth:`identity`, :meth:`_grid` and :meth:`_grid_backward`; the public
    methods validate the flat theta (N, P) and the size first.
    """

    name: str = ""
    num_params: int = 0
    #: 2: images (N, C, H, W), grids (N, H_out, W_out, 2); 3: volumes (N, C, D, H, W), grids (..., 3)
    spatial_dims: int = 2

    # -- the interface --------------------------------------------------------
    def identity(self, dtype=np.float32) -> np.ndarray:
        """theta_0 (P,) with T_theta0 the identity: ``grid(theta_0[None], size)`` is the base grid."""
        raise NotImplementedError

    def grid(self, theta, size, align_corners: bool = False, backend: str | None = None):
        """theta (N, P) -> sampling grid (N, H_out, W_out, 2), theta's dtype."""
        self._check_theta(theta)
        return self._grid(theta, size, bool(align_corners), backend)

    def grid_backward(self, grad_grid, theta, size, align_corners: bool = False,
                      backend: str | None = None):
        """G = dL/dgrid (N, H_out, W_out, 2) and theta (N, P) -> dL/dtheta (N, P), theta's dtype."""
        self._check_theta(theta)
        if self.spatial_dims == 3:
            _check_size_nd(size, theta.shape[0])
            if len(size) != 5:
                raise ValueError(f"size must be (N, C, D_out, H_out, W_out) for the {self.name} transform, "
                                 f"got {tuple(size)!r}")
            check_float_array("grad_grid", grad_grid, 5, what="(N, D_out, H_out, W_out, 3)")
        else:
            _check_size(size, theta.shape[0])
            check_float_array("grad_grid", grad_grid, 4, what="(N, H_out, W_out, 2)")
        check_same_dtype("grad_grid", grad_grid, "theta", theta)
        return self._grid_backward(grad_grid, theta, size, bool(align_corners), backend)

    # -- helpers --------------------------------------------------------------
    def _check_theta(self, theta) -> None:
        check_float_array("theta", theta, 2, what=f"(N, {self.num_params})")
        if theta.shape[1] != self.num_params or theta.shape[0] < 1:
            raise ValueError(
                f"theta for the {self.name} transform must have shape (N, {self.num_params}), "
                f"got shape {shape_str(theta.shape)}"
            )

    def _grid(self, theta, size, align_corners, backend):
        raise NotImplementedError

    def _grid_backward(self, grad_grid, theta, size, align_corners, backend):
        raise NotImplementedError

    def base_grid(self, size, align_corners: bool = False, dtype=np.float64) -> np.ndarray:
        """The identity's grid G (N, H_out, W_out, 2) (the same for every transform)."""
        return base_grid(size, align_corners, dtype)

    def _config(self) -> tuple:
        return (type(self).__name__, self.num_params)

    def __eq__(self, other) -> bool:
        return isinstance(other, Transform) and self._config() == other._config()

    def __hash__(self) -> int:
        return hash(self._config())

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AffineTransform(Transform):
    """x^s = A_theta (x^t, y^t, 1) with A_theta (2, 3) = theta.reshape(2, 3) (eq. 1); P = 6."""

    name = "affine"
    num_params = 6

    def identity(self, dtype=np.float32) -> np.ndarray:
        return np.array([1, 0, 0, 0, 1, 0], dtype=dtype)

    def _grid(self, theta, size, align_corners, backend):
        return affine_grid(theta.reshape(theta.shape[0], 2, 3), size, align_corners, backend)

    def _grid_backward(self, grad_grid, theta, size, align_corners, backend):
        grad = affine_grid_backward(grad_grid, theta.reshape(theta.shape[0], 2, 3), size, align_corners,
                                    backend)  # (N, 2, 3)
        return grad.reshape(theta.shape[0], 6)


class Affine3DTransform(Transform):
    """The 3D affine transform of volumes: (x^s, y^s, z^s) = A_theta (x^t, y^t, z^t, 1), A_theta (3, 4) =
    theta.reshape(3, 4) (the paper's appendix, docs/PAPER.md "Spatial transformers in 3D"); P = 12.

    Sizes are 5-D, (N, C, D_out, H_out, W_out), and grids (N, D_out, H_out, W_out, 3).
    """

    name = "affine3d"
    num_params = 12
    spatial_dims = 3

    def identity(self, dtype=np.float32) -> np.ndarray:
        return np.eye(3, 4, dtype=dtype).reshape(12)

    def grid(self, theta, size, align_corners: bool = False, backend: str | None = None):
        """theta (N, 12) -> sampling grid (N, D_out, H_out, W_out, 3), theta's dtype."""
        self._check_theta(theta)
        if not (isinstance(size, (tuple, list)) and len(size) == 5):
            raise ValueError(f"size must be (N, C, D_out, H_out, W_out) for the affine3d transform, got {size!r}")
        return self._grid(theta, size, bool(align_corners), backend)

    def _grid(self, theta, size, align_corners, backend):
        return affine_grid(theta.reshape(theta.shape[0], 3, 4), size, align_corners, backend)

    def _grid_backward(self, grad_grid, theta, size, align_corners, backend):
        grad = affine_grid_backward(grad_grid, theta.reshape(theta.shape[0], 3, 4), size, align_corners,
                                    backend)  # (N, 3, 4)
        return grad.reshape(theta.shape[0], 12)


class AttentionTransform(Transform):
    """x^s = s x^t + t_x, y^s = s y^t + t_y with theta = (s, t_x, t_y) (eq. 2); P = 3."""

    name = "attention"
    num_params = 3

    def identity(self, dtype=np.float32) -> np.ndarray:
        return np.array([1, 0, 0], dtype=dtype)

    def _grid(self, theta, size, align_corners, backend):
        return attention_grid(theta, size, align_corners, backend)

    def _grid_backward(self, grad_grid, theta, size, align_corners, backend):
        return attention_grid_backward(grad_grid, theta, size, align_corners, backend)


class ProjectiveTransform(Transform):
    """Homography [[a, b, c], [d, e, f], [g, h, 1]], theta = (a, ..., h); P = 8.

    x^s = (a x^t + b y^t + c) / w, y^s = (d x^t + e y^t + f) / w,
    w = g x^t + h y^t + 1; points with |w| < eps are sent far out of range
    with zero gradient (see :mod:`npstn.functional.projective`).
    """

    name = "projective"
    num_params = 8

    def __init__(self, eps: float = PROJECTIVE_EPS):
        self.eps = float(eps)

    def identity(self, dtype=np.float32) -> np.ndarray:
        return np.array(PROJECTIVE_IDENTITY, dtype=dtype)

    def _grid(self, theta, size, align_corners, backend):
        return projective_grid(theta, size, align_corners, backend, eps=self.eps)

    def _grid_backward(self, grad_grid, theta, size, align_corners, backend):
        return projective_grid_backward(grad_grid, theta, size, align_corners, backend, eps=self.eps)

    def _config(self) -> tuple:
        return super()._config() + (self.eps,)

    def __repr__(self) -> str:
        return f"ProjectiveTransform(eps={self.eps:g})"


class TPSTransform(Transform):
    """Thin-plate spline through K control points (a sqrt(K) x sqrt(K) grid); P = 2K.

    The flat theta is theta (N, K, 2).reshape(N, 2K): (x_1, y_1, x_2, y_2, ...),
    the input-frame positions of the control points
    :func:`npstn.functional.tps_control_points` (which are the identity).
    """

    name = "tps"

    def __init__(self, num_control_points: int = 16):
        self.num_control_points = _check_num_control_points(num_control_points)
        self.num_params = 2 * self.num_control_points

    def identity(self, dtype=np.float32) -> np.ndarray:
        return tps_control_points(self.num_control_points, dtype=dtype).reshape(-1)

    def _grid(self, theta, size, align_corners, backend):
        k = self.num_control_points
        return tps_grid(theta.reshape(theta.shape[0], k, 2), size, align_corners, backend)

    def _grid_backward(self, grad_grid, theta, size, align_corners, backend):
        k = self.num_control_points
        grad = tps_grid_backward(grad_grid, theta.reshape(theta.shape[0], k, 2), size, align_corners, backend)
        return grad.reshape(theta.shape[0], self.num_params)  # (N, K, 2) -> (N, 2K)

    def __repr__(self) -> str:
        return f"TPSTransform(num_control_points={self.num_control_points})"


#: name -> Transform class, for :func:`get_transform`.
TRANSFORMS = {
    "affine": AffineTransform,
    "attention": AttentionTransform,
    "projective": ProjectiveTransform,
    "tps": TPSTransform,
    "affine3d": Affine3DTransform,
}


def get_transform(spec) -> Transform:
    """A Transform from a name ("affine", "attention", "projective", "tps", "affine3d") or an instance.

    Names are case-insensitive and build the default configuration (TPS: 16
    control points); pass an instance, e.g. ``TPSTransform(9)``, for others.
    """
    if isinstance(spec, Transform):
        return spec
    if isinstance(spec, str) and spec.lower() in TRANSFORMS:
        return TRANSFORMS[spec.lower()]()
    raise ValueError(
        f"unknown transform {spec!r}; expected one of {', '.join(repr(k) for k in TRANSFORMS)} "
        "or a Transform instance"
    )
