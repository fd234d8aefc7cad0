"""Hypothesis strategies for shapes and float arrays.

Values are drawn well inside a range where float64 central differences are
accurate; sizes default small so that element-by-element gradient checks stay
cheap, and include the awkward edges (batch 1, 1x1 maps, odd sizes).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = ["shapes", "nchw_shapes", "float_arrays", "arrays_of_shape", "dtypes"]


def dtypes() -> st.SearchStrategy:
    """float32 or float64."""
    return st.sampled_from([np.dtype(np.float32), np.dtype(np.float64)])


def shapes(min_dims: int = 1, max_dims: int = 4, min_side: int = 1, max_side: int = 5):
    """Array shapes (tuples of ints)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


@st.composite
def nchw_shapes(draw, max_batch: int = 3, max_channels: int = 3, min_hw: int = 1, max_hw: int = 7):
    """(N, C, H, W) with every side drawn independently (odd, 1, non-square included)."""
    n = draw(st.integers(1, max_batch))
    c = draw(st.integers(1, max_channels))
    h = draw(st.integers(min_hw, max_hw))
    w = draw(st.integers(min_hw, max_hw))
    return (n, c, h, w)


def arrays_of_shape(shape, dtype=np.float64, low: float = -2.0, high: float = 2.0):
    """Arrays of a fixed shape with finite values in [low, high]."""
    return hnp.arrays(
        np.dtype(dtype),
        shape,
        elements=st.floats(low, high, allow_nan=False, allow_infinity=False, width=64 if np.dtype(dtype) == np.float64 else 32),
    )


@st.composite
def float_arrays(draw, shape=None, dtype=np.float64, low: float = -2.0, high: float = 2.0):
    """Float arrays; ``shape`` may be a tuple or a strategy of tuples.

    Elements are drawn from a seeded normal generator scaled into [low, high]
    rather than element by element: faster, and free of the many exact ties
    (e.g. all zeros) that element-wise shrinking produces and that put max-pool
    and ReLU checks on their kinks.
    """
    if shape is None:
        shape = shapes()
    if isinstance(shape, st.SearchStrategy):
        shape = draw(shape)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=shape)
    return x.astype(dtype)
