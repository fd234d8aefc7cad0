"""The affine grid generator (paper eq. 1) and its backward pass.

The output map's pixels lie on a regular grid G = {G_i}, G_i = (x_i^t, y_i^t),
in normalised coordinates (-1 = left/top edge, +1 = right/bottom edge). The
affine transform T_theta maps each target point to the source point where the
input is sampled::

    [x_i^s]              [x_i^t]     [theta_11 theta_12 theta_13] [x_i^t]
    [y_i^s] = A_theta    [y_i^t]  =  [theta_21 theta_22 theta_23] [y_i^t]     (eq. 1)
                         [  1  ]                                  [  1  ]

Shapes: theta (N, 2, 3) -> grid (N, H_out, W_out, 2), last axis (x^s, y^s).
Volumes (the paper's appendix A.3, as torch): theta (N, 3, 4) with a 5-D
size (N, C, D_out, H_out, W_out) -> grid (N, D_out, H_out, W_out, 3), last
axis (x^s, y^s, z^s) = A_theta (x^t, y^t, z^t, 1); the backward is again the
transpose, dL/dtheta[n, r, k] = sum_i G[n, i, r] B_i[k] with
B_i = (x^t, y^t, z^t, 1).

The grid is *linear* in theta. Writing B_i = (x_i^t, y_i^t, 1) for the
homogeneous target coordinates, grid[n, i, r] = sum_k theta[n, r, k] B_i[k],
so with Gamma = dL/dgrid (``grad_grid``; G stays the target grid) the
backward pass is the transpose::

    dL/dtheta[n, r, k] = sum_i Gamma[n, i, r] * B_i[k]

(x^t-weighted, y^t-weighted and plain sums of each output coordinate's
gradient). Both match ``torch.nn.functional.affine_grid`` and its autograd.

The base grid follows torch exactly: with ``align_corners=False`` pixel
centres sit at x_j^t = (2j + 1)/W - 1; with ``align_corners=True`` at
x_j^t = 2j/(W - 1) - 1 (``linspace(-1, 1, W)``); a side of length 1 gives the
single coordinate 0 either way (torch's convention).

This module also holds the validation and dispatch helpers the other grid
generators (attention, projective, thin-plate spline) share.
"""
from __future__ import annotations

import numpy as np

from npstn._backend import resolve_backend
from npstn._checks import check_bool, check_float_array, check_grid_points, check_same_dtype, shape_str
from npstn._device import is_device_array

__all__ = ["affine_grid", "affine_grid_backward", "base_grid"]


# ----------------------------------------------------------------------------
# Shared helpers (used by attention.py, projective.py and tps.py too)
# ----------------------------------------------------------------------------

def _check_size(size, batch: int | None = None, batch_from: str = "theta") -> tuple[int, int, int, int]:
    """Validate ``size = (N, C, H_out, W_out)``: four positive ints, N == batch."""
    ok = isinstance(size, (tuple, list)) and len(size) == 4 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) for s in size
    )
    if not ok:
        raise TypeError(f"size must be a tuple of 4 ints (N, C, H_out, W_out), got {size!r}")
    n, c, h, w = (int(s) for s in size)
    if min(n, c, h, w) < 1:
        raise ValueError(f"size must hold positive ints (N, C, H_out, W_out), got {tuple(size)!r}")
    check_grid_points((n, c, h, w))
    if batch is not None and n != batch:
        raise ValueError(
            f"size[0] = {n} (the batch size N) does not match {batch_from}, whose batch size is {batch}"
        )
    return n, c, h, w


def _check_size_nd(size, batch: int | None = None, batch_from: str = "theta") -> tuple:
    """Validate the affine generator's ``size``: (N, C, H_out, W_out) or (N, C, D_out, H_out, W_out)."""
    if isinstance(size, (tuple, list)) and len(size) == 5:
        ok = all(isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) for s in size)
        if not ok:
            raise TypeError(f"size must be a tuple of 5 ints (N, C, D_out, H_out, W_out), got {size!r}")
        dims = tuple(int(s) for s in size)
        if min(dims) < 1:
            raise ValueError(f"size must hold positive ints (N, C, D_out, H_out, W_out), got {tuple(size)!r}")
        check_grid_points(dims)
        if batch is not None and dims[0] != batch:
            raise ValueError(
                f"size[0] = {dims[0]} (the batch size N) does not match {batch_from}, whose batch size is {batch}"
            )
        return dims
    if not (isinstance(size, (tuple, list)) and len(size) == 4):
        raise TypeError(
            "size must be a tuple of 4 ints (N, C, H_out, W_out) or of 5 ints (N, C, D_out, H_out, W_out), "
            f"got {size!r}"
        )
    return _check_size(size, batch, batch_from)


def _check_theta_rank(theta, size) -> None:
    """A 2D theta (N, 2, 3) with a 5-D size, or a 3D theta (N, 3, 4) with a 4-D size: say which goes with which."""
    shape = tuple(getattr(theta, "shape", ()))
    if len(size) == 5 and shape[1:] == (2, 3):
        raise ValueError(
            f"theta has shape {shape_str(shape)}, a 2D transform (N, 2, 3), but size={tuple(size)} is 5-D "
            "(N, C, D_out, H_out, W_out): volumes need theta of shape (N, 3, 4), or give a 4-D size"
        )
    if len(size) == 4 and shape[1:] == (3, 4):
        raise ValueError(
            f"theta has shape {shape_str(shape)}, a 3D transform (N, 3, 4), but size={tuple(size)} is 4-D "
            "(N, C, H_out, W_out): images need theta of shape (N, 2, 3), or give a 5-D size"
        )


def _check_params(name: str, x, tail: tuple, layout: str, backend: str) -> None:
    """x must be a float32/float64 array of shape (N, *tail); layout names it, e.g. "(N, 2, 3)"."""
    check_float_array(name, x, len(tail) + 1, what=layout)
    if tuple(x.shape[1:]) != tuple(tail) or x.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape {layout} = (N, {', '.join(str(t) for t in tail)}) with N >= 1, "
            f"got shape {shape_str(x.shape)}"
        )
    _check_location(name, x, backend)


def _check_location(name: str, x, backend: str) -> None:
    if backend != "cuda" and is_device_array(x):
        raise TypeError(
            f"{name} is a CUDA device array but backend={backend!r}; use backend='cuda' "
            f"or copy it to the host with .copy_to_host()"
        )


def _check_grad_grid(grad_grid, size: tuple, backend: str) -> None:
    layout = "(N, D_out, H_out, W_out, 3)" if len(size) == 5 else "(N, H_out, W_out, 2)"
    check_float_array("grad_grid", grad_grid, len(size), what=layout)
    want = (size[0], *size[2:], len(size) - 2)
    if tuple(grad_grid.shape) != want:
        raise ValueError(
            f"grad_grid must have shape {layout} = {shape_str(want)} for size={tuple(size)}, "
            f"got shape {shape_str(grad_grid.shape)}"
        )
    _check_location("grad_grid", grad_grid, backend)


def _theta_optional(op: str, theta, size, align_corners, backend):
    """The two call forms of a linear generator's backward -> (theta or None, size, align_corners, backend).

    ``op_backward(grad_grid, theta, size, align_corners=False, backend=None)``
    is the package's rule. A generator linear in theta does not need theta's
    values, so ``op_backward(grad_grid, size, align_corners=False,
    backend=None)`` (theta left out, the older form) works too: then the
    arguments after ``size`` arrive one slot early and are moved back here.
    """
    if not isinstance(theta, (tuple, list)):
        return theta, size, align_corners, backend
    if size is None:  # (grad_grid, size, align_corners=..., backend=...)
        return None, theta, align_corners, backend
    # (grad_grid, size, align_corners[, backend]) positionally: size holds align_corners
    if isinstance(align_corners, str):  # ... and align_corners the backend
        if backend is not None:
            raise TypeError(f"{op}: backend given twice ({align_corners!r} and {backend!r})")
        return None, theta, size, align_corners
    if align_corners:
        raise TypeError(f"{op}: align_corners given twice (positionally as {size!r} and as a keyword)")
    return None, theta, size, backend


def _check_theta_for_backward(theta, tail: tuple, layout: str, grad_grid, size: tuple, backend: str) -> None:
    """theta, when given to a backward: its layout, its batch (that of size) and grad_grid's dtype."""
    _check_params("theta", theta, tail, layout, backend)
    _check_size(size, theta.shape[0])
    check_same_dtype("grad_grid", grad_grid, "theta", theta)


def _base_xy(h: int, w: int, align_corners: bool) -> tuple[np.ndarray, np.ndarray]:
    """Target coordinates along each axis, float64: xs (W_out,) and ys (H_out,)."""
    return _linspace_from_neg_one(w, align_corners), _linspace_from_neg_one(h, align_corners)


def _linspace_from_neg_one(steps: int, align_corners: bool) -> np.ndarray:
    """torch's base-grid coordinates along one axis of ``steps`` pixels (float64)."""
    if steps <= 1:
        return np.zeros(1)  # torch: a unit-size side maps to 0 for both settings
    i = np.arange(steps, dtype=np.float64)
    if align_corners:
        return 2.0 * i / (steps - 1) - 1.0  # corner pixel centres at -1 and +1
    return (2.0 * i + 1.0) / steps - 1.0  # pixel centres; -1, +1 are the outer edges


def _kernels(backend: str):
    """The kernel module of a compiled backend, imported on first use."""
    if backend == "cpu":
        from npstn.kernels.cpu import grids
    else:
        from npstn.kernels.cuda import grids
    return grids


def _as_array(x):
    """NumPy arrays contiguous (Numba compiles one specialisation per layout)."""
    return np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x


# ----------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------

def base_grid(size, align_corners: bool = False, dtype=np.float64) -> np.ndarray:
    """The regular target grid G, shape (N, H_out, W_out, 2): the identity transform's grid.

    ``grid[n, i, j] = (x_j^t, y_i^t)`` with the coordinates of
    :func:`affine_grid` (torch's convention for ``align_corners``). A 5-D
    ``size`` (N, C, D_out, H_out, W_out) gives the volume's grid
    (N, D_out, H_out, W_out, 3), ``grid[n, l, i, j] = (x_j^t, y_i^t, z_l^t)``.
    """
    if isinstance(size, (tuple, list)) and len(size) == 5:
        n, _, d, h, w = _check_size_nd(size)
        xs, ys = _base_xy(h, w, bool(align_corners))
        zs = _linspace_from_neg_one(d, bool(align_corners))
        grid = np.empty((n, d, h, w, 3), dtype=np.float64)
        grid[..., 0] = xs[None, None, None, :]
        grid[..., 1] = ys[None, None, :, None]
        grid[..., 2] = zs[None, :, None, None]
        return grid.astype(dtype, copy=False)
    n, _, h, w = _check_size(size)
    xs, ys = _base_xy(h, w, bool(align_corners))
    grid = np.empty((n, h, w, 2), dtype=np.float64)
    grid[..., 0] = xs[None, None, :]
    grid[..., 1] = ys[None, :, None]
    return grid.astype(dtype, copy=False)


def affine_grid(theta, size, align_corners: bool = False, backend: str | None = None):
    """Sampling grid of the affine transform T_theta (eq. 1).

    Parameters
    ----------
    theta : array (N, 2, 3), float32 or float64; (N, 3, 4) for volumes
        A_theta for each batch element (NumPy, or a CUDA device array with
        ``backend="cuda"``).
    size : (N, C, H_out, W_out), or (N, C, D_out, H_out, W_out) for volumes
        Size of the output map (C is ignored, as in torch).
    align_corners : bool
        torch's meaning (see the module docstring).

    Returns
    -------
    grid : array (N, H_out, W_out, 2), theta's dtype
        ``grid[n, i, j] = A_theta[n] @ (x_j^t, y_i^t, 1)``; equals
        ``torch.nn.functional.affine_grid``. Volumes: (N, D_out, H_out, W_out, 3),
        ``grid[n, l, i, j] = A_theta[n] @ (x_j^t, y_i^t, z_l^t, 1)``.
    """
    check_bool("align_corners", align_corners)
    backend = resolve_backend(backend, theta)
    if isinstance(size, (tuple, list)) and len(size) == 5:  # volumes: theta (N, 3, 4)
        _check_theta_rank(theta, size)
        _check_params("theta", theta, (3, 4), "(N, 3, 4)", backend)
        _, _, d, h, w = _check_size_nd(size, theta.shape[0])
        xs, ys = _base_xy(h, w, bool(align_corners))
        zs = _linspace_from_neg_one(d, bool(align_corners))
        if backend == "numpy":
            return _affine_grid3d_numpy(theta, xs, ys, zs)
        return _kernels(backend).affine_grid3d(_as_array(theta), xs, ys, zs)
    _check_size_nd(size)  # a size of the wrong length names both layouts
    _check_theta_rank(theta, size)
    _check_params("theta", theta, (2, 3), "(N, 2, 3)", backend)
    n, _, h, w = _check_size(size, theta.shape[0])
    xs, ys = _base_xy(h, w, bool(align_corners))
    if backend == "numpy":
        return _affine_grid_numpy(theta, xs, ys)
    return _kernels(backend).affine_grid(_as_array(theta), xs, ys)


def affine_grid_backward(grad_grid, theta, size=None, align_corners: bool = False, backend: str | None = None):
    """Gradient of the loss with respect to theta, given Gamma = dL/dgrid (``grad_grid``).

    dL/dtheta[n, r, k] = sum_{i,j} Gamma[n, i, j, r] * B_ij[k], with
    B_ij = (x_j^t, y_i^t, 1): the transpose of the (linear) forward map.

    Two call forms, one result (the grid is linear in theta, so theta's
    values are never read):

    * ``affine_grid_backward(grad_grid, theta, size, align_corners=False, backend=None)``,
      the package's rule for every backward (docs/DESIGN.md "Backward");
    * ``affine_grid_backward(grad_grid, size, align_corners=False, backend=None)``,
      theta left out.

    Parameters
    ----------
    grad_grid : array (N, H_out, W_out, 2)
    theta : array (N, 2, 3), optional; checked against grad_grid (batch, dtype)
    size : (N, C, H_out, W_out), as given to :func:`affine_grid`

    Returns
    -------
    grad_theta : array (N, 2, 3), grad_grid's dtype
    """
    theta, size, align_corners, backend = _theta_optional("affine_grid_backward", theta, size, align_corners,
                                                          backend)
    check_bool("align_corners", align_corners)
    backend = resolve_backend(backend, grad_grid, theta)
    size = _check_size_nd(size)
    _check_grad_grid(grad_grid, size, backend)
    if len(size) == 5:  # volumes: grad_theta (N, 3, 4)
        if theta is not None:
            _check_theta_rank(theta, size)
            _check_params("theta", theta, (3, 4), "(N, 3, 4)", backend)
            _check_size_nd(size, theta.shape[0])
            check_same_dtype("grad_grid", grad_grid, "theta", theta)
        _, _, d, h, w = size
        xs, ys = _base_xy(h, w, bool(align_corners))
        zs = _linspace_from_neg_one(d, bool(align_corners))
        if backend == "numpy":
            return _affine_grid3d_backward_numpy(grad_grid, xs, ys, zs)
        return _kernels(backend).affine_grid3d_backward(_as_array(grad_grid), xs, ys, zs)
    if theta is not None:
        _check_theta_for_backward(theta, (2, 3), "(N, 2, 3)", grad_grid, size, backend)
    _, _, h, w = size
    xs, ys = _base_xy(h, w, bool(align_corners))
    if backend == "numpy":
        return _affine_grid_backward_numpy(grad_grid, xs, ys)
    return _kernels(backend).affine_grid_backward(_as_array(grad_grid), xs, ys)


# ----------------------------------------------------------------------------
# The NumPy specification
# ----------------------------------------------------------------------------

def _homogeneous(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """B (H_out, W_out, 3): B[i, j] = (x_j^t, y_i^t, 1)."""
    h, w = ys.shape[0], xs.shape[0]
    b = np.ones((h, w, 3))
    b[..., 0] = xs[None, :]
    b[..., 1] = ys[:, None]
    return b


def _affine_grid_numpy(theta, xs, ys):
    # grid[n, i, j, r] = sum_k theta[n, r, k] * B[i, j, k]   (computed in float64)
    b = _homogeneous(xs, ys)
    grid = np.einsum("ijk,nrk->nijr", b, theta.astype(np.float64))
    return grid.astype(theta.dtype)


def _affine_grid_backward_numpy(grad_grid, xs, ys):
    # BEGIN SOLUTION task1
    # dL/dtheta[n, r, k] = sum_{i,j} Gamma[n, i, j, r] * B[i, j, k]
    b = _homogeneous(xs, ys)
    grad_theta = np.einsum("nijr,ijk->nrk", grad_grid.astype(np.float64), b)
    return grad_theta.astype(grad_grid.dtype)
    # END SOLUTION



# Volumes (the paper's appendix, docs/PAPER.md "Spatial transformers in 3D"): theta (N, 3, 4),
# B_lij = (x_j^t, y_i^t, z_l^t, 1); grid[n, l, i, j, r] = sum_k theta[n, r, k] B_lij[k], and the
# backward is again the transpose, dL/dtheta[n, r, k] = sum_lij G[n, l, i, j, r] B_lij[k].

def _homogeneous3d(xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> np.ndarray:
    """B (D_out, H_out, W_out, 4): B[l, i, j] = (x_j^t, y_i^t, z_l^t, 1)."""
    b = np.ones((zs.shape[0], ys.shape[0], xs.shape[0], 4))
    b[..., 0] = xs[None, None, :]
    b[..., 1] = ys[None, :, None]
    b[..., 2] = zs[:, None, None]
    return b


def _affine_grid3d_numpy(theta, xs, ys, zs):
    grid = np.einsum("lijk,nrk->nlijr", _homogeneous3d(xs, ys, zs), theta.astype(np.float64))
    return grid.astype(theta.dtype)


def _affine_grid3d_backward_numpy(grad_grid, xs, ys, zs):
    grad_theta = np.einsum("nlijr,lijk->nrk", grad_grid.astype(np.float64), _homogeneous3d(xs, ys, zs))
    return grad_theta.astype(grad_grid.dtype)
