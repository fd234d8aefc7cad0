"""Numba CPU kernels for the rectifier (forward and backward), element-wise and in parallel.

The equations are those of :mod:`npstn.functional.activation`, whose NumPy
expressions are the specification; these kernels compute the same values
(bit for bit: a selection, no arithmetic) in one pass over the data, where
NumPy's ``np.where(x > 0, g, 0)`` makes a boolean mask first::

    relu:          y = x if x >= 0 or x is NaN else 0      (np.maximum(x, 0))
    relu_backward: dL/dx = dL/dy if x > 0 else 0           (0 at x = 0 and at NaN)

Nothing here validates its arguments; the functional ops do.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["relu_forward", "relu_backward"]

#: arrays with fewer elements run serially (starting the thread pool costs more)
PARALLEL_MIN_SIZE = 1 << 16


@njit(parallel=True, cache=True)
def _relu_parallel(x, out):
    for k in prange(x.size):
        v = x[k]
        out[k] = v if (v >= 0 or v != v) else 0


@njit(cache=True)
def _relu_serial(x, out):
    for k in range(x.size):
        v = x[k]
        out[k] = v if (v >= 0 or v != v) else 0


@njit(parallel=True, cache=True)
def _relu_backward_parallel(x, g, out):
    for k in prange(x.size):
        out[k] = g[k] if x[k] > 0 else 0


@njit(cache=True)
def _relu_backward_serial(x, g, out):
    for k in range(x.size):
        out[k] = g[k] if x[k] > 0 else 0


def relu_forward(x):
    """max(x, 0) of a host array (any shape) -> a new C-contiguous array of x's dtype."""
    xf = np.ascontiguousarray(x)
    out = np.empty(xf.shape, xf.dtype)
    run = _relu_parallel if xf.size >= PARALLEL_MIN_SIZE else _relu_serial
    run(xf.reshape(-1), out.reshape(-1))
    return out


def relu_backward(x, g):
    """grad_output ``g`` where x > 0, else 0; x and g of one shape and dtype."""
    xf, gf = np.ascontiguousarray(x), np.ascontiguousarray(g)
    out = np.empty(xf.shape, gf.dtype)
    run = _relu_backward_parallel if xf.size >= PARALLEL_MIN_SIZE else _relu_backward_serial
    run(xf.reshape(-1), gf.reshape(-1), out.reshape(-1))
    return out
