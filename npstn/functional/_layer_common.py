"""Shared by the layer ops: checking the upstream gradient and the bias, and the dispatch with
its location check."""
from __future__ import annotations

import numpy as np

from npstn._backend import resolve_backend
from npstn._checks import check_same_dtype, shape_str
from npstn._device import is_device_array


def upstream_grad(name: str, grad_output, shape, dtype, arg: str = "grad_output"):
    """``grad_output`` as the op's output would be: a host array cast to ``dtype`` (as
    ``np.asarray(grad_output, dtype)``), or a device array that already has ``dtype``;
    ValueError unless its shape is ``shape``."""
    if is_device_array(grad_output):
        if np.dtype(grad_output.dtype) != np.dtype(dtype):
            raise TypeError(f"{name}: {arg} has dtype {np.dtype(grad_output.dtype)}, "
                            f"expected the output's {np.dtype(dtype)}")
        if not grad_output.is_c_contiguous():
            raise ValueError(f"{name}: device {arg} of shape {shape_str(grad_output.shape)} "
                             "must be C-contiguous")
    else:
        grad_output = np.asarray(grad_output, dtype=dtype)
    if tuple(grad_output.shape) != tuple(shape):
        raise ValueError(f"{name}: {arg} must have the output's shape {shape_str(shape)}, "
                         f"got {shape_str(grad_output.shape)}")
    return grad_output


def dispatch(name: str, backend, *arrays) -> str:
    """:func:`npstn._backend.resolve_backend` for a layer op, plus a TypeError when a host
    backend ("numpy", "cpu") was asked for explicitly but an array lives on the GPU.

    One pass over ``arrays`` (the hot path of every layer call): NumPy arrays
    are recognised by type, and at most one device array goes on to the rule.
    """
    device = [a for a in arrays if a is not None and not isinstance(a, np.ndarray)
              and is_device_array(a)]
    backend = resolve_backend(backend, *device[:1])
    if device and backend != "cuda":
        raise TypeError(
            f"{name}: an argument is a CUDA device array but backend={backend!r}; use "
            "backend='cuda' (or None), or copy it to the host with .copy_to_host()"
        )
    return backend


def check_bias(name: str, bias, weight) -> None:
    """A layer op's optional bias: None, or (O,) of the weight's dtype, O = weight.shape[0]."""
    if bias is None:
        return
    check_same_dtype(f"{name}: bias", bias, f"{name}: weight", weight)
    if tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"{name}: bias must have shape ({weight.shape[0]},), got {shape_str(bias.shape)}")
