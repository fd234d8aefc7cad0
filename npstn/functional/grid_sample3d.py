r"""The sampler on volumes: trilinear / nearest sampling of (N, C, D, H, W) inputs.

The paper's appendix (docs/PAPER.md "Spatial transformers in 3D") extends
the sampler to volumes: the kernel of eq. 3 gets a third factor,

    V_i^c = sum_l sum_n sum_m U_lnm^c k(x_i^s - m) k(y_i^s - n) k(z_i^s - l),

and with the bilinear kernel k(d) = max(0, 1 - |d|) only the eight
neighbours of the point contribute (trilinear interpolation; torch calls the
mode "bilinear" on volumes too). This module is the readable NumPy
specification of :func:`npstn.functional.grid_sample` and
:func:`npstn.functional.grid_sample_backward` on 5-D inputs, which dispatch
here on the input's rank; the ``cpu`` and ``cuda`` kernels reproduce it.

Everything is the 2D sampler's (:mod:`npstn.functional.grid_sample`) with one
more axis: the grid's last axis is (x, y, z), z the depth, unnormalised with
the input's depth D exactly as x with W and y with H
(:func:`npstn.kernels.formulas.source_coordinate` per axis: unnormalise,
clamp far points, pad). With x0, y0, z0 the floors and fx, fy, fz the
fractional parts, the eight neighbours are the NW, NE, SW, SE neighbours of
the slice z0 ("top", t) and of the slice z0 + 1 ("bottom", b)::

    V = (1-fz) [ (1-fy)(1-fx) U_tnw + (1-fy) fx U_tne + fy (1-fx) U_tsw + fy fx U_tse ]
      +   fz   [ (1-fy)(1-fx) U_bnw + (1-fy) fx U_bne + fy (1-fx) U_bsw + fy fx U_bse ]

(:func:`npstn.kernels.formulas.trilinear_weights`, ``trilinear_interpolate``).

Backward, with G = dL/dV:

* eq. 6: grad_input scatters G with the eight weights;
* eq. 7 in 3D (:func:`npstn.kernels.formulas.trilinear_coordinate_gradient`)::

      dV/dx^s = (1-fz) [eq. 7's x term of the top slice] + fz [... of the bottom slice]
      dV/dy^s = (1-fz) [eq. 7's y term of the top slice] + fz [... of the bottom slice]
      dV/dz^s = V_bottom - V_top      (the bilinear values of the two slices)

  summed over channels with G, then times the padding's and the
  unnormalisation's derivative (D/2 or (D - 1)/2 for z).

Nearest (eq. 4): the pixel at (round(z^s), round(y^s), round(x^s)), ties to
even; zero grid gradient. Sub-gradients at kinks, padding, align_corners and
the hostile-grid policy (a NaN/inf in any of x, y, z: the point samples 0,
gets zero gradient and adds nothing to grad_input; far coordinates clamped
to +-COORD_LIMIT) are the 2D sampler's, axis by axis.

Shapes: input (N, C, D, H, W), grid (N, D_out, H_out, W_out, 3) ->
output (N, C, D_out, H_out, W_out), all in the input's dtype.
"""
from __future__ import annotations

import numpy as np

from npstn.kernels import formulas as fm

__all__: list = []  # reached through npstn.functional.grid_sample / grid_sample_backward

# the eight neighbours' offsets (dz, dy, dx), in the order of the formulas
CORNERS = ((0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1))


def _source_points(input, grid, padding_mode: str, align_corners: bool):
    """(x^s, y^s, z^s, their derivatives, valid), each (N, D_out, H_out, W_out).

    ``valid`` marks points whose x, y and z are all finite; the others are
    computed at (0, 0, 0) and masked out by the callers.
    """
    from npstn.functional.grid_sample import source_index

    d_in, h_in, w_in = input.shape[2:]
    valid = fm.isfinite(grid).all(axis=-1)
    g = np.where(valid[..., None], grid, 0).astype(grid.dtype, copy=False)
    with np.errstate(over="ignore"):  # float32 * scale may overflow to inf: clamp_far handles it
        xs, dxs = source_index(g[..., 0], w_in, padding_mode, align_corners)
        ys, dys = source_index(g[..., 1], h_in, padding_mode, align_corners)
        zs, dzs = source_index(g[..., 2], d_in, padding_mode, align_corners)
    return (xs, ys, zs), (dxs, dys, dzs), valid


def _gather(input, zi, yi, xi, valid):
    """U[n, :, zi, yi, xi] for every output point: (N, C, D_out, H_out, W_out); 0 outside the volume."""
    n_batch, n_chan, d_in, h_in, w_in = input.shape
    inside = valid & (xi >= 0) & (xi < w_in) & (yi >= 0) & (yi < h_in) & (zi >= 0) & (zi < d_in)
    flat = np.where(inside, (zi * h_in + yi) * w_in + xi, 0).reshape(n_batch, 1, -1)
    vals = np.take_along_axis(input.reshape(n_batch, n_chan, -1), flat, axis=2)
    return np.where(inside[:, None], vals.reshape(n_batch, n_chan, *zi.shape[1:]), 0)


def _scatter_add(grad_input, zi, yi, xi, valid, values):
    """grad_input[n, c, zi, yi, xi] += values[n, c] for every output point inside the volume."""
    n_batch, n_chan, d_in, h_in, w_in = grad_input.shape
    inside = valid & (xi >= 0) & (xi < w_in) & (yi >= 0) & (yi < h_in) & (zi >= 0) & (zi < d_in)
    flat = np.where(inside, (zi * h_in + yi) * w_in + xi, 0)[:, None]
    contrib = np.where(inside[:, None], values, 0)
    planes = grad_input.reshape(n_batch, n_chan, -1)  # a view: grad_input is contiguous
    n_idx = np.arange(n_batch)[:, None, None, None, None]
    c_idx = np.arange(n_chan)[None, :, None, None, None]
    np.add.at(planes, (n_idx, c_idx, flat), contrib)


def _corners(coords):
    """(x0, y0, z0) as int64 and (fx, fy, fz) broadcast over channels, (N, 1, D_out, H_out, W_out)."""
    floors = [fm.floor(c) for c in coords]
    fracs = [(c - f)[:, None] for c, f in zip(coords, floors)]
    return [f.astype(np.int64) for f in floors], fracs


def _neighbours(input, x0, y0, z0, valid):
    """U at the eight neighbours (top NW, NE, SW, SE, bottom NW, NE, SW, SE); 0 outside."""
    return [_gather(input, z0 + dz, y0 + dy, x0 + dx, valid) for dz, dy, dx in CORNERS]


def _nearest(coords):
    one = coords[0].dtype.type(1)
    return [fm.round_half_even(c, one).astype(np.int64) for c in coords]


def grid_sample3d_numpy(input, grid, mode, padding_mode, align_corners):
    """The forward on validated 5-D arrays (see the module docstring)."""
    input = np.asarray(input)
    grid = np.asarray(grid)
    coords, _, valid = _source_points(input, grid, padding_mode, align_corners)
    if mode == "nearest":  # eq. 4
        xn, yn, zn = _nearest(coords)
        return _gather(input, zn, yn, xn, valid)
    (x0, y0, z0), (fx, fy, fz) = _corners(coords)
    weights = fm.trilinear_weights(fx, fy, fz, input.dtype.type(1))
    return fm.trilinear_interpolate(*_neighbours(input, x0, y0, z0, valid), *weights)


def grid_sample3d_backward_numpy(grad_output, input, grid, mode, padding_mode, align_corners,
                                 needs_input_grad=True):
    """(grad_input, grad_grid) on validated 5-D arrays (see the module docstring); grad_input
    None when ``needs_input_grad`` is False (eq. 6 skipped)."""
    grad_output = np.asarray(grad_output)
    input = np.asarray(input)
    grid = np.asarray(grid)
    coords, derivs, valid = _source_points(input, grid, padding_mode, align_corners)
    grad_input = np.zeros(input.shape, dtype=input.dtype) if needs_input_grad else None
    grad_grid = np.zeros(grid.shape, dtype=grid.dtype)
    if mode == "nearest":  # route G to the nearest pixel; no grid gradient
        if needs_input_grad:
            xn, yn, zn = _nearest(coords)
            _scatter_add(grad_input, zn, yn, xn, valid, grad_output)
        return grad_input, grad_grid
    one = input.dtype.type(1)
    (x0, y0, z0), (fx, fy, fz) = _corners(coords)
    if needs_input_grad:  # eq. 6: scatter G with the forward's eight weights
        for (dz, dy, dx), weight in zip(CORNERS, fm.trilinear_weights(fx, fy, fz, one)):
            _scatter_add(grad_input, z0 + dz, y0 + dy, x0 + dx, valid, weight * grad_output)
    # eq. 7 in 3D, summed over channels, then the chain rule through padding and unnormalisation
    dv = fm.trilinear_coordinate_gradient(*_neighbours(input, x0, y0, z0, valid), fx, fy, fz, one)
    for axis in range(3):
        grad_grid[..., axis] = np.where(valid, (dv[axis] * grad_output).sum(axis=1) * derivs[axis], 0)
    return grad_input, grad_grid
