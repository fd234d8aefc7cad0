r"""The sampler: bilinear / nearest sampling of a feature map at a grid of points.

This is the third part of a spatial transformer (paper Sec. 3.3, eq. 3-7;
docs/PAPER.md "The sampler"), and this module's NumPy code is the readable
specification that the ``cpu`` and ``cuda`` kernels reproduce. Each scalar
formula below (unnormalisation, far clamp, padding, nearest, the bilinear
weights, eq. 5, eq. 7) is one function of :mod:`npstn.kernels.formulas`,
which this module calls on whole arrays and the kernels compile. It matches ``torch.nn.functional.grid_sample``
(forward and autograd backward) for every mode, padding mode and
``align_corners``.

Notation (the paper's)
----------------------
U is the input feature map, ``input`` of shape (N, C, H, W); V is the output,
shape (N, C, H_out, W_out). Output point i of image n reads the *normalised*
source coordinates ``grid[n, h, w] = (x_i^s, y_i^s)``, -1 = left/top edge,
+1 = right/bottom edge (notebook 01's x^s). In pixels they are written
(xp_i, yp_i) below (notebook 02's hatted x^s), with pixel m centred at xp = m.

Unnormalisation (pixels from normalised), computed in the grid's dtype in
this order of operations (the order of torch's CPU kernel)::

    align_corners=False:  xp = (x^s + 1) * (W / 2) - 1/2     -1 -> -0.5, +1 -> W - 0.5
                                                            (the outer edges of the corner pixels)
    align_corners=True:   xp = (x^s + 1) * ((W - 1) / 2)     -1 -> 0,    +1 -> W - 1
                                                            (the centres of the corner pixels)

and likewise yp with H. So d xp / d x^s = W/2 (or (W - 1)/2).

Padding (what is read outside the image):

* ``"zeros"``: neighbours outside the image read 0;
* ``"border"``: xp is clipped to [0, W - 1] first (edge pixels extend);
* ``"reflection"``: xp is mirrored at the image edges (-0.5 and W - 0.5 for
  align_corners=False, 0 and W - 1 for True) until it lands inside, then
  clipped to [0, W - 1].

Forward (eq. 3): V_i^c = sum_n sum_m U_nm^c k(x_i^s - m) k(y_i^s - n).

* bilinear (eq. 5): k(d) = max(0, 1 - |d|). Only the four neighbours of the
  point contribute: with x0 = floor(xp), y0 = floor(yp) and the fractional
  parts fx = xp - x0, fy = yp - y0::

      V_i^c = (1-fy)(1-fx) U[y0, x0] + (1-fy) fx U[y0, x0+1]
            +   fy  (1-fx) U[y0+1, x0] +   fy  fx U[y0+1, x0+1]

  (the north-west, north-east, south-west and south-east neighbours).
* nearest (eq. 4): V_i^c = U^c[round(yp), round(xp)], where round is
  round-half-to-even (C's nearbyint, as torch; the paper writes
  floor(x + 0.5), which differs only at exact ties).

Backward. With dV = dL/dV (``grad_output``):

* eq. 6, the image: dV_i/dU_nm = k(x_i^s - m) k(y_i^s - n), the same weights,
  so ``grad_input`` scatters dV_i^c to the four neighbours with the bilinear
  weights (or to the nearest pixel); neighbours outside the image get nothing.
* eq. 7, the coordinates::

      dL/dxp_i = sum_c dV_i^c [ (1-fy) (U[y0, x0+1] - U[y0, x0]) + fy (U[y0+1, x0+1] - U[y0+1, x0]) ]
      dL/dyp_i = sum_c dV_i^c [ (1-fx) (U[y0+1, x0] - U[y0, x0]) + fx (U[y0+1, x0+1] - U[y0, x0+1]) ]

  (out-of-image neighbours read 0), then the chain rule through padding and
  unnormalisation: grad_grid = dL/dxp * (padding derivative) * W/2.
  The padding derivative is 1 for 'zeros'; for 'border' 1 strictly inside
  (0, W - 1) and 0 elsewhere; for 'reflection' +1 or -1 (mirrored stretches)
  strictly inside, 0 where the final clip is active.
  Nearest sampling is piecewise constant: its grid gradient is 0.

Sub-gradients at the kinks (PyTorch's conventions, pinned by tests):

* At an exact integer xp the bilinear kernel has a kink. We use
  x0 = floor(xp) = xp, so fx = 0 and dL/dxp = U[x0 + 1] - U[x0] (times the
  y weights): the one-sided derivative *from the right*. (Eq. 7's case split,
  read literally, would give U[x0] alone there, which is the left derivative
  only when U[x0 - 1] = 0, and in general neither one-sided derivative.) The same holds for yp.
* The clip of ``border``/``reflection`` has derivative 1 strictly inside
  (0, W - 1) and 0 at and beyond the edges: a point exactly on the edge pixel
  gets zero coordinate gradient.
* Reflection multiplies the gradient by -1 on mirrored stretches.
* Which side of a kink a point is on is decided by the computed xp. At
  positions that are exactly representable (e.g. dyadic grids) every
  implementation agrees. A coordinate that is an integer only up to its last
  bit (e.g. an identity grid computed in floating point) can land on either
  side depending on rounding: torch's CPU build fuses the multiply-add of the
  unnormalisation (an FMA), torch's CUDA kernel uses another formula, and
  npstn rounds the product and the difference separately. The forward values
  agree to rounding; the coordinate gradient at such points may be the left
  instead of the right one-sided derivative.

Hostile grids (npstn's policy, not torch's; see docs/DESIGN.md "Errors"):

* a NaN or +-inf coordinate (either x or y) makes the point sample 0 in every
  padding mode, with zero grid gradient and no contribution to grad_input;
* pixel coordinates beyond +-COORD_LIMIT = 2**22 (for instance from a grid
  value of 1e30, or float32 overflow) are clamped to +-COORD_LIMIT with zero
  derivative before padding, so integer indices never overflow: such a point
  reads 0 under ``zeros``, the edge pixel under ``border``, and an in-range
  pixel under ``reflection``. Every other output is finite for finite input.

Shapes: input (N, C, H, W), grid (N, H_out, W_out, 2) with the same dtype
(float32 or float64) -> output (N, C, H_out, W_out) in that dtype.

Volumes: the same functions take 5-D inputs (N, C, D, H, W) with grids
(N, D_out, H_out, W_out, 3) of (x, y, z), and sample them trilinearly
("bilinear", torch's name) or by nearest voxel; their specification is
:mod:`npstn.functional.grid_sample3d`.
"""
from __future__ import annotations

import numpy as np

from npstn._backend import resolve_backend
from npstn._checks import check_bool, check_float_array, check_same_dtype, shape_str
from npstn._device import is_device_array
from npstn.functional.grid_sample3d import grid_sample3d_backward_numpy, grid_sample3d_numpy
from npstn.kernels import formulas as fm
from npstn.kernels.formulas import COORD_LIMIT

__all__ = ["grid_sample", "grid_sample_backward"]

MODES = ("bilinear", "nearest")
PADDING_MODES = ("zeros", "border", "reflection")


# ----------------------------------------------------------------------------
# Public functions: validation and backend dispatch
# ----------------------------------------------------------------------------

def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False, backend=None):
    """Sample ``input`` at the points of ``grid`` (the sampler, paper eq. 3-5).

    Parameters
    ----------
    input : array (N, C, H, W), float32 or float64
        The feature map U; or a volume (N, C, D, H, W) (the paper's appendix A.3).
    grid : array (N, H_out, W_out, 2), the dtype of ``input``
        Source coordinates (x, y), normalised: -1 is the left/top edge, +1 the
        right/bottom edge (see ``align_corners``). Values outside [-1, 1] read
        the padding; NaN/inf points read 0 (npstn's policy). For a volume,
        (N, D_out, H_out, W_out, 3) of (x, y, z).
    mode : "bilinear" (eq. 5; trilinear on volumes) or "nearest" (eq. 4, ties round half to even)
    padding_mode : "zeros", "border" or "reflection"
    align_corners : bool
        False (default): -1 and +1 are the outer edges of the corner pixels.
        True: they are the centres of the corner pixels. As in PyTorch.
    backend : "numpy", "cpu", "cuda" or None: the input's location (a device
        array means "cuda"), else the process-wide default (docs/DESIGN.md "Dispatch")

    Returns
    -------
    output : array (N, C, H_out, W_out) (volumes: (N, C, D_out, H_out, W_out))
        in the input's dtype (a device array with backend="cuda" when an
        argument was one).

    Matches ``torch.nn.functional.grid_sample``; the module docstring has the
    equations, the unnormalisation formulas and the sub-gradient conventions.
    """
    backend = resolve_backend(backend, input, grid)
    volume = _check_args(input, grid, mode, padding_mode, align_corners, backend)
    if backend == "numpy":
        spec = grid_sample3d_numpy if volume else _grid_sample_numpy
        return spec(input, grid, mode, padding_mode, bool(align_corners))
    return _kernels(backend, volume).forward(input, grid, mode, padding_mode, bool(align_corners))


def grid_sample_backward(grad_output, input, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False, backend=None, needs_input_grad=True):
    """Gradients of :func:`grid_sample` (paper eq. 6 and 7).

    Parameters
    ----------
    grad_output : array (N, C, H_out, W_out) (volumes: (N, C, D_out, H_out, W_out)),
        the dtype of ``input``: dL/dV, the upstream gradient.
    input, grid, mode, padding_mode, align_corners, backend
        As in :func:`grid_sample`.
    needs_input_grad : bool
        False skips eq. 6 (the scatter into ``grad_input``, about a third of the
        work) and returns None for it: for a sampler that reads data, such
        as a spatial transformer on a network's input (torch's
        ``output_mask``). ``grad_grid`` is the same, bit for bit.

    Returns
    -------
    (grad_input, grad_grid) : arrays shaped like ``input`` (N, C, H, W) and
        ``grid`` (N, H_out, W_out, 2), in their dtype; grad_input is None
        when ``needs_input_grad`` is False.

    At the kinks of the bilinear kernel (a source coordinate exactly on an
    integer pixel position) the coordinate gradient is the one-sided
    derivative from the right, as in PyTorch (x0 = floor(xp), weights from
    xp - x0); at the clip edges of ``border``/``reflection`` it is 0;
    ``nearest`` has zero grid gradient; NaN/inf points get zero gradient and
    add nothing to ``grad_input``.
    """
    backend = resolve_backend(backend, grad_output, input, grid)
    volume = _check_args(input, grid, mode, padding_mode, align_corners, backend)
    _check_grad_output(grad_output, input, grid, backend)
    check_bool("needs_input_grad", needs_input_grad)
    if backend == "numpy":
        spec = grid_sample3d_backward_numpy if volume else _grid_sample_backward_numpy
        return spec(grad_output, input, grid, mode, padding_mode, bool(align_corners), bool(needs_input_grad))
    return _kernels(backend, volume).backward(grad_output, input, grid, mode, padding_mode, bool(align_corners),
                                              needs_input_grad=bool(needs_input_grad))


def _kernels(backend: str, volume: bool):
    """The kernel module of a compiled backend for 4-D (images) or 5-D (volumes) inputs."""
    if backend == "cpu":
        if volume:
            from npstn.kernels.cpu import grid_sample3d as kernels
        else:
            from npstn.kernels.cpu import grid_sample as kernels
    elif volume:
        from npstn.kernels.cuda import grid_sample3d as kernels
    else:
        from npstn.kernels.cuda import grid_sample as kernels
    return kernels


def _check_location(name: str, x, backend: str) -> None:
    if backend != "cuda" and is_device_array(x):
        raise TypeError(
            f"{name} is a CUDA device array but backend={backend!r}; use backend='cuda' "
            f"or copy it to the host with .copy_to_host()"
        )


# The layouts of the two ranks: 4-D images, 5-D volumes (the same functions dispatch on rank, as torch)
_LAYOUTS = {
    4: dict(input="(N, C, H, W)", grid="(N, H_out, W_out, 2)", out="(N, C, H_out, W_out)", coords="(x, y)"),
    5: dict(input="(N, C, D, H, W)", grid="(N, D_out, H_out, W_out, 3)", out="(N, C, D_out, H_out, W_out)",
            coords="(x, y, z)"),
}


def _check_args(input, grid, mode, padding_mode, align_corners, backend: str) -> bool:
    """Validate the sampler's arguments; True for volumes (5-D input), False for images (4-D)."""
    check_float_array("input", input, what="(N, C, H, W) or (N, C, D, H, W)")
    if len(input.shape) not in _LAYOUTS:
        raise ValueError(
            f"input must have 4 dimensions (N, C, H, W), got shape {shape_str(input.shape)}; "
            "or 5 dimensions (N, C, D, H, W) for volumes"
        )
    rank = len(input.shape)
    lay = _LAYOUTS[rank]
    check_float_array("grid", grid, what=lay["grid"])
    if len(grid.shape) != rank:
        raise ValueError(
            f"grid must have {rank} dimensions {lay['grid']} for a {rank}-D input {lay['input']}, "
            f"got shape {shape_str(grid.shape)} (input has shape {shape_str(input.shape)})"
        )
    if tuple(grid.shape)[rank - 1] != rank - 2:  # (the simulator's shapes take no negative index)
        raise ValueError(
            f"grid must have shape {lay['grid']} with the last axis {lay['coords']}, "
            f"got shape {shape_str(grid.shape)}"
        )
    check_same_dtype("input", input, "grid", grid)
    if input.shape[0] != grid.shape[0]:
        raise ValueError(
            f"input and grid must have the same batch size N: input has shape "
            f"{shape_str(input.shape)} {lay['input']}, grid has shape {shape_str(grid.shape)} "
            f"{lay['grid']}"
        )
    if min(input.shape) < 1:
        raise ValueError(f"input {lay['input']} must have nonzero sizes, got shape {shape_str(input.shape)}")
    if min(grid.shape) < 1:
        raise ValueError(
            f"grid {lay['grid']} must have nonzero sizes, got shape {shape_str(grid.shape)}"
        )
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(
            f"padding_mode must be one of {', '.join(map(repr, PADDING_MODES))}, got {padding_mode!r}"
        )
    if not isinstance(align_corners, (bool, np.bool_)):
        raise TypeError(f"align_corners must be a bool, got {align_corners!r}")
    _check_location("input", input, backend)
    _check_location("grid", grid, backend)
    return rank == 5


def _check_grad_output(grad_output, input, grid, backend: str) -> None:
    rank = len(input.shape)
    lay = _LAYOUTS[rank]
    check_float_array("grad_output", grad_output, rank, what=lay["out"])
    want = (input.shape[0], input.shape[1], *tuple(grid.shape)[1:rank - 1])
    if tuple(grad_output.shape) != want:
        raise ValueError(
            f"grad_output must have shape {lay['out']} = {shape_str(want)} for input of shape "
            f"{shape_str(input.shape)} and grid of shape {shape_str(grid.shape)}, "
            f"got shape {shape_str(grad_output.shape)}"
        )
    check_same_dtype("grad_output", grad_output, "input", input)
    _check_location("grad_output", grad_output, backend)


# ----------------------------------------------------------------------------
# Source coordinates: the formulas of npstn.kernels.formulas, on whole arrays
# ----------------------------------------------------------------------------

def source_index(coord, size: int, padding_mode: str, align_corners: bool):
    """xp (pixels, after padding) and d xp / d coord for normalised coordinates (finite).

    :func:`npstn.kernels.formulas.source_coordinate` on an array: unnormalise,
    clamp far points to +-COORD_LIMIT, pad. Computed in coord's dtype.
    """
    t = coord.dtype.type
    one, scale, shift = fm.unnormalize_constants(coord.dtype, size, align_corners)
    return fm.source_coordinate(coord, one, scale, shift, t(COORD_LIMIT), t(size),
                                fm.PADDING_CODES[padding_mode], align_corners)


def _source_points(input, grid, padding_mode: str, align_corners: bool):
    """(xp, yp, dxp/dx^s, dyp/dy^s, valid), each (N, H_out, W_out).

    ``valid`` marks points whose x and y are both finite; the others are
    computed at (0, 0) and masked out by the callers.
    """
    h_in, w_in = input.shape[2], input.shape[3]
    valid = fm.isfinite(grid).all(axis=-1)
    g = np.where(valid[..., None], grid, 0).astype(grid.dtype, copy=False)
    with np.errstate(over="ignore"):  # float32 * scale may overflow to inf: clamp_far handles it
        xs, dxs = source_index(g[..., 0], w_in, padding_mode, align_corners)
        ys, dys = source_index(g[..., 1], h_in, padding_mode, align_corners)
    return xs, ys, dxs, dys, valid


def _nearest(xs, ys):
    """Integer indices of the nearest pixel (eq. 4, ties to even)."""
    one = xs.dtype.type(1)
    return fm.round_half_even(xs, one).astype(np.int64), fm.round_half_even(ys, one).astype(np.int64)


def _corners(xs, ys):
    """(x0, y0, fx, fy): the north-west neighbour (int64) and the fractional parts, (N, 1, H_out, W_out)."""
    x0f, y0f = fm.floor(xs), fm.floor(ys)
    fx, fy = (xs - x0f)[:, None], (ys - y0f)[:, None]  # broadcast over the channels
    return x0f.astype(np.int64), y0f.astype(np.int64), fx, fy


# ----------------------------------------------------------------------------
# Gather / scatter at integer pixel positions, reading 0 outside the image
# ----------------------------------------------------------------------------

def _inside(yi, xi, valid, h_in: int, w_in: int):
    return valid & (xi >= 0) & (xi < w_in) & (yi >= 0) & (yi < h_in)


def _gather(input, yi, xi, valid):
    """U[n, :, yi, xi] for every output point: (N, C, H_out, W_out); 0 outside the image."""
    n_batch, n_chan, h_in, w_in = input.shape
    inside = _inside(yi, xi, valid, h_in, w_in)
    flat = np.where(inside, yi * w_in + xi, 0).reshape(n_batch, 1, -1)
    vals = np.take_along_axis(input.reshape(n_batch, n_chan, h_in * w_in), flat, axis=2)
    return np.where(inside[:, None], vals.reshape(n_batch, n_chan, *yi.shape[1:]), 0)


def _scatter_add(grad_input, yi, xi, valid, values):
    """grad_input[n, c, yi, xi] += values[n, c] for every output point inside the image."""
    n_batch, n_chan, h_in, w_in = grad_input.shape
    inside = _inside(yi, xi, valid, h_in, w_in)
    flat = np.where(inside, yi * w_in + xi, 0)[:, None]  # (N, 1, H_out, W_out)
    contrib = np.where(inside[:, None], values, 0)
    planes = grad_input.reshape(n_batch, n_chan, h_in * w_in)  # a view: grad_input is contiguous
    n_idx = np.arange(n_batch)[:, None, None, None]
    c_idx = np.arange(n_chan)[None, :, None, None]
    np.add.at(planes, (n_idx, c_idx, flat), contrib)


# ----------------------------------------------------------------------------
# NumPy forward and backward, side by side
# ----------------------------------------------------------------------------

def _neighbours(input, x0, y0, valid):
    """U at the NW, NE, SW, SE neighbours of every point, each (N, C, H_out, W_out); 0 outside."""
    return (_gather(input, y0, x0, valid), _gather(input, y0, x0 + 1, valid),
            _gather(input, y0 + 1, x0, valid), _gather(input, y0 + 1, x0 + 1, valid))


def _grid_sample_numpy(input, grid, mode, padding_mode, align_corners):
    input = np.asarray(input)
    grid = np.asarray(grid)
    xs, ys, _, _, valid = _source_points(input, grid, padding_mode, align_corners)
    if mode == "nearest":  # eq. 4
        xn, yn = _nearest(xs, ys)
        return _gather(input, yn, xn, valid)
    # eq. 5: the four neighbours and their weights
    x0, y0, fx, fy = _corners(xs, ys)
    weights = fm.bilinear_weights(fx, fy, input.dtype.type(1))
    return fm.bilinear_interpolate(*_neighbours(input, x0, y0, valid), *weights)


def _grid_sample_backward_numpy(grad_output, input, grid, mode, padding_mode, align_corners,
                                needs_input_grad=True):
    # BEGIN SOLUTION task2
    grad_output = np.asarray(grad_output)
    input = np.asarray(input)
    grid = np.asarray(grid)
    xs, ys, dxs, dys, valid = _source_points(input, grid, padding_mode, align_corners)
    grad_input = np.zeros(input.shape, dtype=input.dtype) if needs_input_grad else None
    grad_grid = np.zeros(grid.shape, dtype=grid.dtype)
    if mode == "nearest":  # grad_input: route G to the nearest pixel; grad_grid: 0
        if needs_input_grad:
            xn, yn = _nearest(xs, ys)
            _scatter_add(grad_input, yn, xn, valid, grad_output)
        return grad_input, grad_grid

    one = input.dtype.type(1)
    x0, y0, fx, fy = _corners(xs, ys)
    if needs_input_grad:  # eq. 6: scatter G with the forward's weights
        for (dy, dx), weight in zip(((0, 0), (0, 1), (1, 0), (1, 1)), fm.bilinear_weights(fx, fy, one)):
            _scatter_add(grad_input, y0 + dy, x0 + dx, valid, weight * grad_output)
    # eq. 7: derivative w.r.t. the pixel coordinates, summed over channels ...
    dv_dx, dv_dy = fm.bilinear_coordinate_gradient(*_neighbours(input, x0, y0, valid), fx, fy, one)
    # ... then the chain rule through padding and unnormalisation
    grad_grid[..., 0] = np.where(valid, (dv_dx * grad_output).sum(axis=1) * dxs, 0)
    grad_grid[..., 1] = np.where(valid, (dv_dy * grad_output).sum(axis=1) * dys, 0)
    return grad_input, grad_grid
    # END SOLUTION
