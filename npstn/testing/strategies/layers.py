"""Hypothesis strategies for layer configurations: pooling, linear, classification.

Every configuration drawn is *valid* for torch (so a test can compare against
it), yet reaches the awkward corners: batch 1, 1x1 maps, a kernel exactly as
large as the padded input, stride larger than the kernel, odd and non-square
sizes, the ``ceil_mode`` rule that drops a last window starting in the right
padding, and both the int and the pair forms of ``kernel_size`` & co.

Example::

    from hypothesis import given, strategies as st
    from npstn.nn import MaxPool2d
    from npstn.testing import gradcheck, strategies as sn

    @given(sn.pool_configs(), st.data())
    def test_my_pool(cfg, data):
        x = data.draw(sn.untied_arrays(cfg.shape))
        gradcheck(MaxPool2d(**cfg.kwargs()), x)
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st

__all__ = [
    "PoolConfig",
    "pool_configs",
    "LinearConfig",
    "linear_configs",
    "logits_and_labels",
    "dropout_probs",
    "untied_arrays",
]


class PoolConfig(NamedTuple):
    """Input shape and arguments of a MaxPool2d / AvgPool2d (torch's names)."""

    shape: tuple  # (N, C, H, W)
    kernel_size: int | tuple
    stride: int | tuple | None  # None means "= kernel_size"
    padding: int | tuple
    ceil_mode: bool

    def kwargs(self) -> dict:
        """Keyword arguments for ``MaxPool2d(**cfg.kwargs())`` (or torch's)."""
        return dict(kernel_size=self.kernel_size, stride=self.stride,
                    padding=self.padding, ceil_mode=self.ceil_mode)


@st.composite
def pool_configs(draw, max_batch: int = 2, max_channels: int = 2, max_hw: int = 7,
                 max_kernel: int = 4, max_stride: int = 4, ceil_mode=None,
                 padding: bool = True) -> PoolConfig:
    """Valid pooling configurations (torch accepts every one).

    ``ceil_mode``: None draws it, True/False fixes it. ``padding=False`` keeps
    padding at 0. The input side is at least ``kernel - 2 * padding`` (one
    window fits) and is often exactly that (kernel == padded input).
    """
    square = draw(st.booleans())  # int arguments, or (h, w) pairs
    dims = 1 if square else 2
    k = [draw(st.integers(1, max_kernel)) for _ in range(dims)]
    p = [draw(st.integers(0, ki // 2)) if padding else 0 for ki in k]
    if draw(st.integers(0, 3)) == 0:
        s = None  # torch's default: stride = kernel_size
    else:
        s = [draw(st.integers(1, max_stride)) for _ in range(dims)]
    if square:
        k, p, s = k * 2, p * 2, (None if s is None else s * 2)
    sides = []
    for ki, pi in zip(k, p):
        lo = max(1, ki - 2 * pi)
        hi = max(lo, max_hw)
        sides.append(draw(st.one_of(st.just(lo), st.integers(lo, hi))))
    n = draw(st.integers(1, max_batch))
    c = draw(st.integers(1, max_channels))
    cm = draw(st.booleans()) if ceil_mode is None else bool(ceil_mode)

    def arg(v):
        return None if v is None else (v[0] if square else tuple(v))

    return PoolConfig((n, c, *sides), arg(k), arg(s), arg(p), cm)


class LinearConfig(NamedTuple):
    """Arguments of a Linear layer and the shape of an input for it."""

    in_features: int
    out_features: int
    bias: bool
    input_shape: tuple  # (*, in_features)


@st.composite
def linear_configs(draw, max_batch: int = 4, max_features: int = 6) -> LinearConfig:
    """Linear configurations; inputs are mostly (N, in) with N >= 1, sometimes
    unbatched (in,) or with two leading dims (A, B, in)."""
    fin = draw(st.integers(1, max_features))
    fout = draw(st.integers(1, max_features))
    bias = draw(st.booleans())
    lead = draw(st.one_of(
        st.tuples(st.integers(1, max_batch)),
        st.just(()),
        st.tuples(st.integers(1, 3), st.integers(1, 3)),
    ))
    return LinearConfig(fin, fout, bias, (*lead, fin))


@st.composite
def logits_and_labels(draw, max_batch: int = 5, max_classes: int = 6, dtype=np.float64,
                      scale: float = 3.0):
    """(logits (N, K) in [-scale, scale], labels (N,) integers in [0, K)).

    Labels come in a drawn integer dtype (int64, int32 or uint8); K may be 1.
    """
    n = draw(st.integers(1, max_batch))
    k = draw(st.integers(1, max_classes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    label_dtype = draw(st.sampled_from([np.int64, np.int32, np.uint8]))
    logits = rng.uniform(-scale, scale, size=(n, k)).astype(dtype)
    labels = rng.integers(0, k, size=n).astype(label_dtype)
    return logits, labels


def dropout_probs(max_p: float = 0.9) -> st.SearchStrategy:
    """Dropout probabilities in [0, max_p], 0 included."""
    return st.one_of(st.just(0.0), st.floats(0.0, max_p, allow_nan=False))


@st.composite
def untied_arrays(draw, shape, dtype=np.float64, low: float = -2.0, high: float = 2.0):
    """Arrays of ``shape`` in [low, high) whose values are all distinct and at
    least (high - low) / (2 * size) apart.

    Max pooling and sorting-like ops are smooth only away from ties; with
    this separation, central differences with a small step never cross one.
    """
    if isinstance(shape, st.SearchStrategy):
        shape = draw(shape)
    size = int(np.prod(shape, dtype=np.int64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # a random order of the slots 0..size-1, each jittered inside its slot's first half
    u = (rng.permutation(size) + rng.uniform(0.0, 0.5, size)) / max(size, 1)
    return (low + (high - low) * u).reshape(shape).astype(dtype)
