"""Parameter initialisation, following torch.nn's defaults.

torch initialises ``Linear`` and ``Conv2d`` weights with
``kaiming_uniform_(a=sqrt(5))``, which reduces to U(-1/sqrt(fan_in),
1/sqrt(fan_in)), and their biases with the same bound. ``fan_in`` is
``in_features`` for Linear and ``in_channels * kh * kw`` for Conv2d.
"""
from __future__ import annotations

import math

import numpy as np

_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed the generator that layer constructors draw their initial weights from."""
    global _rng
    _rng = np.random.default_rng(seed)


def get_rng(rng=None) -> np.random.Generator:
    """``rng`` if given (a Generator or an int seed), else the module-level generator."""
    if rng is None:
        return _rng
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def uniform_fan_in(shape, fan_in: int, rng=None, dtype=np.float32) -> np.ndarray:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's default for Linear/Conv weights and biases."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return get_rng(rng).uniform(-bound, bound, size=shape).astype(dtype)
