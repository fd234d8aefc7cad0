"""Hypothesis strategies for the sampler: configurations, sampling grids, hostile grids.

Bilinear sampling is only piecewise smooth in the grid coordinates. In pixel
space (x^s = (x + 1) * W/2 - 1/2, or (x + 1) * (W - 1)/2 with
``align_corners=True``) every kink of ``grid_sample`` lies on a multiple of
1/2:

* integers: the bilinear kernel max(0, 1 - |x^s - m|) (eq. 5), the image
  edges of ``zeros`` padding, the clip edges 0 and W - 1 of
  ``border``/``reflection``, the reflection edges with ``align_corners=True``;
* half-integers: the rounding of ``nearest`` and the reflection edges -1/2,
  W - 1/2 with ``align_corners=False``.

Reflection maps that lattice onto itself, so a point at least ``margin``
pixels from every multiple of 1/2 is at least that far from every kink, in
every mode and padding. :func:`kink_free_grids` draws such points (including
points outside the image, so that padding matters); central finite
differences with a step well below the margin are then exact up to rounding.
:func:`grids_on_kinks` does the opposite, for tests that must hold *at* the
kinks (adjointness, linearity), and :func:`hostile_grids` mixes in NaN, inf
and huge coordinates.

Example::

    from hypothesis import given
    from npstn.testing import strategies as nst

    @given(nst.grid_sample_cases())
    def test_my_sampler(case):
        out = my_sampler(case.input, case.grid, **case.kwargs)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from npstn.testing.strategies.arrays import float_arrays, nchw_shapes

__all__ = [
    "SAMPLING_MODES",
    "SAMPLING_PADDING_MODES",
    "SamplerConfig",
    "sampler_configs",
    "normalized_to_pixel",
    "pixel_to_normalized",
    "move_off_kinks",
    "kink_free_grids",
    "grids_on_kinks",
    "hostile_grids",
    "HOSTILE_VALUES",
    "GridSampleCase",
    "grid_sample_cases",
]

SAMPLING_MODES = ("bilinear", "nearest")
SAMPLING_PADDING_MODES = ("zeros", "border", "reflection")
# NaN and inf must sample 0 with zero gradient; huge finite values follow the padding mode.
HOSTILE_VALUES = (np.nan, np.inf, -np.inf, 1e30, -1e30, "max", "-max")


@dataclass(frozen=True)
class SamplerConfig:
    """One ``grid_sample`` configuration: shapes and options."""

    input_shape: tuple  # (N, C, H, W), or (N, C, D, H, W) for volumes
    output_size: tuple  # (H_out, W_out), or (D_out, H_out, W_out)
    mode: str
    padding_mode: str
    align_corners: bool

    @property
    def grid_shape(self) -> tuple:
        return (self.input_shape[0], *self.output_size, len(self.output_size))

    @property
    def output_shape(self) -> tuple:
        return (*self.input_shape[:2], *self.output_size)

    @property
    def kwargs(self) -> dict:
        """mode, padding_mode and align_corners, to pass on with ``**``."""
        return dict(mode=self.mode, padding_mode=self.padding_mode, align_corners=self.align_corners)


@st.composite
def sampler_configs(
    draw,
    max_batch: int = 3,
    max_channels: int = 3,
    max_side: int = 7,
    max_out_side: int = 6,
    modes=SAMPLING_MODES,
    padding_modes=SAMPLING_PADDING_MODES,
    align_corners=(False, True),
    spatial_dims: int = 2,
):
    """:class:`SamplerConfig` s: batch 1 included, 1x1 and odd maps, output
    sizes independent of the input's (so both down- and up-sampling).

    ``spatial_dims=3`` draws volumes: inputs (N, C, D, H, W) (depth 1
    included) and output sizes (D_out, H_out, W_out)."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 (images) or 3 (volumes), got {spatial_dims!r}")
    if spatial_dims == 2:
        shape = draw(nchw_shapes(max_batch=max_batch, max_channels=max_channels, min_hw=1, max_hw=max_side))
    else:
        shape = (draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels)),
                 *(draw(st.integers(1, max_side)) for _ in range(3)))
    out_size = tuple(draw(st.integers(1, max_out_side)) for _ in range(spatial_dims))
    return SamplerConfig(
        input_shape=shape,
        output_size=out_size,
        mode=draw(st.sampled_from(tuple(modes))),
        padding_mode=draw(st.sampled_from(tuple(padding_modes))),
        align_corners=draw(st.sampled_from(tuple(align_corners))),
    )


def normalized_to_pixel(g, size: int, align_corners: bool):
    """Pixel coordinate x^s of normalised coordinates g along an axis of ``size`` pixels (float64)."""
    g = np.asarray(g, dtype=np.float64)
    if align_corners:
        return (g + 1) * ((size - 1) / 2)
    return (g + 1) * (size / 2) - 0.5


def pixel_to_normalized(p, size: int, align_corners: bool):
    """Inverse of :func:`normalized_to_pixel` (for align_corners=True and size 1, every g maps to 0: returns 0)."""
    p = np.asarray(p, dtype=np.float64)
    if align_corners:
        if size == 1:
            return np.zeros_like(p)
        return p / ((size - 1) / 2) - 1
    return (p + 0.5) / (size / 2) - 1


def move_off_kinks(grid, input_hw, align_corners: bool, margin: float = 1e-3):
    """Move every point of ``grid`` (N, H_out, W_out, 2) at least ``margin`` pixels off the kinks.

    Each pixel coordinate x^s lies in a half-pixel cell [k/2, (k + 1)/2); its
    position in the cell is squeezed linearly into [margin, 1/2 - margin].
    ``input_hw = (H, W)``, or (D, H, W) for volume grids (N, D_out, H_out,
    W_out, 3). Returns a float64 copy. (With ``align_corners=True``
    and a side of 1 pixel the coordinate has no effect and is left alone.)
    """
    if not 0 < margin < 0.25:
        raise ValueError(f"margin must be in (0, 0.25) pixels, got {margin}")
    g = np.array(grid, dtype=np.float64, copy=True)
    for axis, size in enumerate(tuple(input_hw)[::-1]):  # x along W, y along H, z along D
        if align_corners and size == 1:
            continue
        q = 2 * normalized_to_pixel(g[..., axis], size, align_corners)  # in half pixels
        cell = np.floor(q)
        frac = q - cell
        m = 2 * margin
        q = cell + m + frac * (1 - 2 * m)
        g[..., axis] = pixel_to_normalized(q / 2, size, align_corners)
    return g


def _dtype(draw, dtype):
    return np.dtype(draw(dtype) if isinstance(dtype, st.SearchStrategy) else dtype)


@st.composite
def kink_free_grids(draw, grid_shape, input_hw, align_corners: bool = False, low: float = -1.5,
                    high: float = 1.5, margin: float = 1e-3, dtype=np.float64):
    """Grids (N, H_out, W_out, 2) whose points are >= ``margin`` px from every kink.

    Coordinates are drawn uniformly in [low, high] (normalised; the default
    reaches half an image beyond each edge, so every padding mode is
    exercised) and then moved off the kinks with :func:`move_off_kinks`.
    """
    seed = draw(st.integers(0, 2**32 - 1))
    g = np.random.default_rng(seed).uniform(low, high, size=grid_shape)
    return move_off_kinks(g, input_hw, align_corners, margin).astype(_dtype(draw, dtype))


@st.composite
def grids_on_kinks(draw, grid_shape, input_hw, align_corners: bool = False, low: float = -1.5,
                   high: float = 1.5, dtype=np.float64):
    """Grids with many points *exactly* on kinks: integer and half-integer pixel positions.

    A random fraction of the coordinates is snapped to the nearest multiple
    of 1/2 pixel (image edges, clip edges and reflection edges included);
    the rest stay where they were drawn.
    """
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    g = rng.uniform(low, high, size=grid_shape)
    frac = draw(st.sampled_from([0.3, 0.7, 1.0]))
    for axis, size in enumerate(tuple(input_hw)[::-1]):  # x along W, y along H, z along D
        p = normalized_to_pixel(g[..., axis], size, align_corners)
        snapped = pixel_to_normalized(np.round(2 * p) / 2, size, align_corners)
        snap = rng.random(p.shape) < frac
        g[..., axis] = np.where(snap, snapped, g[..., axis])
    return g.astype(_dtype(draw, dtype))


@st.composite
def hostile_grids(draw, grid_shape, dtype=np.float64, low: float = -1.5, high: float = 1.5):
    """Grids mixing ordinary points with NaN, +-inf and huge finite coordinates.

    The hostile values are those of :data:`HOSTILE_VALUES` ("max" is the
    dtype's largest finite value); a drawn fraction of the coordinates (at
    least one) is replaced, sometimes only x or only y of a point.
    """
    dt = _dtype(draw, dtype)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    g = rng.uniform(low, high, size=grid_shape)
    big = float(np.finfo(dt).max)
    values = np.array([{"max": big, "-max": -big}.get(v, v) for v in HOSTILE_VALUES], dtype=np.float64)
    frac = draw(st.sampled_from([0.1, 0.5, 1.0]))
    mask = rng.random(grid_shape) < frac
    mask.flat[rng.integers(mask.size)] = True
    g[mask] = rng.choice(values, size=int(mask.sum()))
    return g.astype(dt)


@dataclass
class GridSampleCase:
    """Arguments of one ``grid_sample`` / ``grid_sample_backward`` call."""

    config: SamplerConfig
    input: np.ndarray
    grid: np.ndarray
    grad_output: np.ndarray

    @property
    def kwargs(self) -> dict:
        return self.config.kwargs


@st.composite
def grid_sample_cases(draw, dtype=np.float64, configs=None, grids: str = "kink_free",
                      low: float = -1.5, high: float = 1.5, margin: float = 1e-3):
    """A :class:`GridSampleCase`: a config, an input, a grid and a random upstream gradient.

    ``dtype``: a dtype or a strategy of dtypes. ``configs``: a strategy of
    :class:`SamplerConfig` (default :func:`sampler_configs`). ``grids``:
    ``"kink_free"`` (default; for finite differences and cross-checks),
    ``"on_kinks"`` or ``"hostile"``.
    """
    cfg = draw(configs if configs is not None else sampler_configs())
    dt = _dtype(draw, dtype)
    spatial = tuple(cfg.input_shape[2:])  # (H, W) or (D, H, W)
    if grids == "kink_free":
        grid = draw(kink_free_grids(cfg.grid_shape, spatial, cfg.align_corners, low, high, margin, dt))
    elif grids == "on_kinks":
        grid = draw(grids_on_kinks(cfg.grid_shape, spatial, cfg.align_corners, low, high, dt))
    elif grids == "hostile":
        grid = draw(hostile_grids(cfg.grid_shape, dt, low, high))
    else:
        raise ValueError(f"grids must be 'kink_free', 'on_kinks' or 'hostile', got {grids!r}")
    x = draw(float_arrays(cfg.input_shape, dtype=dt))
    g_out = draw(float_arrays(cfg.output_shape, dtype=dt))
    return GridSampleCase(config=cfg, input=x, grid=grid, grad_output=g_out)
