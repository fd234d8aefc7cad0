"""Validation helpers for public boundaries.

Errors name the argument, what it got and what was wanted, so a user can fix
the call without reading the source.
"""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def shape_str(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def check_float_array(name: str, x, ndim: int | None = None, *, what: str = "") -> None:
    """Raise TypeError/ValueError unless ``x`` is a float32/float64 array of ``ndim`` dims.

    ``x`` may be a NumPy array or anything array-like with ``shape`` and
    ``dtype`` (a Numba CUDA device array, for instance). ``what`` describes the
    expected layout, e.g. ``"(N, C, H, W)"``.
    """
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    if np.dtype(x.dtype) not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float32 or float64, got dtype {np.dtype(x.dtype)}"
            " (convert with .astype(np.float32))"
        )
    if ndim is not None and len(x.shape) != ndim:
        want = what or f"{ndim} dimensions"
        raise ValueError(
            f"{name} must have {ndim} dimensions {want}, got shape {shape_str(x.shape)}"
        )


def check_same_dtype(name_a: str, a, name_b: str, b) -> None:
    if np.dtype(a.dtype) != np.dtype(b.dtype):
        raise TypeError(
            f"{name_a} has dtype {np.dtype(a.dtype)} but {name_b} has dtype "
            f"{np.dtype(b.dtype)}; they must match (use .astype or Module.to(dtype))"
        )


def pair(value, name: str) -> tuple[int, int]:
    """An int or a pair of ints -> (a, b), like torch's _pair; validated."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
    ):
        return int(value[0]), int(value[1])
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


#: The most sampling-grid points (N * H_out * W_out) a grid generator allocates.
MAX_GRID_POINTS = 2**31


def check_bool(name: str, value) -> None:
    """TypeError unless ``value`` is a bool (or NumPy bool): a string such as "False" is truthy,
    and an int is a likely slip for another argument, so neither is reinterpreted."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool (True or False), got {value!r}")


def check_grid_points(size, name: str = "size") -> None:
    """ValueError when ``size = (N, C, *spatial)`` asks for more than :data:`MAX_GRID_POINTS` points."""
    points = 1
    for s in (size[0], *size[2:]):
        points *= int(s)
    if points > MAX_GRID_POINTS:
        raise ValueError(
            f"{name} = {tuple(int(s) for s in size)} asks for {points:,} grid points "
            f"(N x spatial sizes), more than npstn allocates ({MAX_GRID_POINTS:,}); use smaller sizes"
        )
