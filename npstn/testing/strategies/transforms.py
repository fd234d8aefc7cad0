"""Hypothesis strategies for grid generators: output sizes and transform parameters.

Parameters come in two flavours, mixed by default: *near identity* (what a
freshly initialised localisation network regresses: the identity plus small
noise) and *random* (anything in a box, e.g. reflections and large shears).
Arrays are drawn from a seeded generator rather than element by element (as
in :func:`npstn.testing.strategies.float_arrays`): faster, and free of
degenerate all-zero shrinks.

Projective parameters keep |g| + |h| <= ``max_perspective`` (default 0.5), so
the denominator w = g x^t + h y^t + 1 >= 0.5 over the whole base grid
(|x^t|, |y^t| <= 1): smooth, finite-difference friendly. Draw the horizon on
purpose in a dedicated test.

Example::

    from hypothesis import given
    from npstn.testing import strategies as sn

    @given(sn.transform_cases())
    def test_my_generator(case):
        transform, theta, size = case     # theta (N, P) float64
        ...
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from npstn.testing.strategies.arrays import nchw_shapes

__all__ = [
    "TRANSFORM_NAMES",
    "transform_sizes",
    "affine_thetas",
    "affine3d_thetas",
    "attention_thetas",
    "projective_thetas",
    "tps_thetas",
    "flat_thetas",
    "transform_instances",
    "transform_cases",
]

TRANSFORM_NAMES = ("affine", "attention", "projective", "tps")
_MODES = ("near_identity", "random")


def transform_sizes(max_batch: int = 3, max_channels: int = 3, min_hw: int = 1, max_hw: int = 6):
    """size = (N, C, H_out, W_out); H_out and W_out independent, so 1x1, odd and non-square occur."""
    return nchw_shapes(max_batch=max_batch, max_channels=max_channels, min_hw=min_hw, max_hw=max_hw)


def _batch(draw, n):
    return draw(st.integers(1, 3)) if n is None else int(n)


def _rng_and_mode(draw, mode):
    mode = draw(st.sampled_from(_MODES)) if mode is None else mode
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES} or None, got {mode!r}")
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1))), mode


def _near_or_wide(draw, identity, n, dtype, mode, noise: float, scale: float) -> np.ndarray:
    """theta (N, *identity.shape), float64: ``identity`` + U(-noise, noise) in mode
    "near_identity", else U(-scale, scale) entries. The one recipe of every
    strategy below (which draws the mode, the seed and N in this order)."""
    rng, mode = _rng_and_mode(draw, mode)
    n = _batch(draw, n)
    identity = np.asarray(identity, dtype=np.float64)
    shape = (n, *identity.shape)
    if mode == "near_identity":
        return identity + rng.uniform(-noise, noise, shape)
    return rng.uniform(-scale, scale, shape)


@st.composite
def affine_thetas(draw, n=None, dtype=np.float64, mode=None, noise: float = 0.1, scale: float = 2.0):
    """theta (N, 2, 3): identity + U(-noise, noise), or U(-scale, scale) entries."""
    return _near_or_wide(draw, np.eye(2, 3), n, dtype, mode, noise, scale).astype(dtype)


@st.composite
def affine3d_thetas(draw, n=None, dtype=np.float64, mode=None, noise: float = 0.1, scale: float = 2.0):
    """theta (N, 3, 4) of the 3D affine transform: identity + U(-noise, noise), or U(-scale, scale) entries."""
    return _near_or_wide(draw, np.eye(3, 4), n, dtype, mode, noise, scale).astype(dtype)


@st.composite
def attention_thetas(draw, n=None, dtype=np.float64, mode=None, noise: float = 0.1, scale: float = 2.0):
    """theta (N, 3) = (s, t_x, t_y): (1, 0, 0) + noise, or U(-scale, scale)."""
    return _near_or_wide(draw, [1.0, 0.0, 0.0], n, dtype, mode, noise, scale).astype(dtype)


@st.composite
def projective_thetas(draw, n=None, dtype=np.float64, mode=None, noise: float = 0.1,
                      scale: float = 2.0, max_perspective: float = 0.5):
    """theta (N, 8) = (a, ..., h) with |g| + |h| <= max_perspective (so w >= 1 - max_perspective)."""
    theta = _near_or_wide(draw, [1.0, 0, 0, 0, 1.0, 0, 0, 0], n, dtype, mode, noise, scale)
    gh = theta[:, 6:]
    l1 = np.abs(gh).sum(axis=1, keepdims=True)
    theta[:, 6:] = np.where(l1 > max_perspective, gh * (max_perspective / np.maximum(l1, 1e-300)), gh)
    return theta.astype(dtype)


@st.composite
def tps_thetas(draw, n=None, num_control_points: int = 16, dtype=np.float64, mode=None,
               noise: float = 0.1, scale: float = 1.5):
    """theta (N, K, 2): control points + U(-noise, noise), or U(-scale, scale) positions."""
    from npstn.functional.tps import tps_control_points

    return _near_or_wide(draw, tps_control_points(int(num_control_points)), n, dtype, mode, noise,
                         scale).astype(dtype)


@st.composite
def flat_thetas(draw, transform, n=None, dtype=np.float64, mode=None):
    """The flat theta (N, P) a localisation net would regress for ``transform`` (a name or instance)."""
    from npstn.stn.transforms import get_transform

    t = get_transform(transform)
    n = _batch(draw, n)
    if t.name == "affine":
        theta = draw(affine_thetas(n, dtype, mode))
    elif t.name == "attention":
        theta = draw(attention_thetas(n, dtype, mode))
    elif t.name == "projective":
        theta = draw(projective_thetas(n, dtype, mode))
    elif t.name == "tps":
        theta = draw(tps_thetas(n, t.num_control_points, dtype, mode))
    else:
        raise ValueError(f"flat_thetas knows no parameters for transform {t!r}")
    return theta.reshape(n, t.num_params)


def transform_instances(num_control_points=(4, 9, 16)) -> st.SearchStrategy:
    """Transform instances of every kind (TPS with each of ``num_control_points``)."""
    from npstn.stn.transforms import (
        AffineTransform,
        AttentionTransform,
        ProjectiveTransform,
        TPSTransform,
    )

    return st.one_of(
        st.just(AffineTransform()),
        st.just(AttentionTransform()),
        st.just(ProjectiveTransform()),
        st.sampled_from(tuple(num_control_points)).map(TPSTransform),
    )


@st.composite
def transform_cases(draw, transforms=None, dtype=np.float64, max_batch: int = 3, max_hw: int = 6):
    """(transform, theta (N, P), size (N, C, H_out, W_out)) with matching N."""
    transform = draw(transform_instances() if transforms is None else transforms)
    size = draw(transform_sizes(max_batch=max_batch, max_hw=max_hw))
    theta = draw(flat_thetas(transform, n=size[0], dtype=dtype))
    return transform, theta, size
