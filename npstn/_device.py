"""Where arrays live: the host ("cpu", NumPy arrays) or the GPU ("cuda", Numba device arrays).

A *device* is where data sit; a *backend* (:mod:`npstn._backend`) is how an
op computes. The two meet in one rule (:func:`npstn._backend.resolve_backend`):
an op runs its CUDA kernels when its input is a device array (or when asked
for ``backend="cuda"``, copying host arrays to the device and the results
back), and its NumPy/Numba-CPU code otherwise.

* ``"cpu"``: NumPy arrays in host memory (the default; every backend accepts them).
* ``"cuda"``: Numba CUDA device arrays (``numba.cuda.to_device``), on the
  current GPU, or in Numba's CUDA simulator when ``NUMBA_ENABLE_CUDASIM=1``.

``module.to("cuda")`` / ``module.cuda()`` moves every Parameter (data and
grad) to the GPU, ``module.to("cpu")`` / ``module.cpu()`` back, as in torch.
Nothing here imports ``numba.cuda`` until an array actually moves.
"""
from __future__ import annotations

import numpy as np

__all__ = ["DEVICES", "check_device", "is_device_array", "device_of", "to_host", "to_device",
           "check_module_device", "device_grad", "device_args", "results_for"]

DEVICES = ("cpu", "cuda")


def check_device(device, where: str = "device") -> str:
    """Normalise a device name: "cpu" or "cuda" ("cuda:0" and "gpu" mean "cuda")."""
    name = str(device).lower() if isinstance(device, str) else None
    if name in ("cuda:0", "gpu"):
        name = "cuda"
    if name not in DEVICES:
        raise ValueError(f"{where}: unknown device {device!r}; expected 'cpu' or 'cuda'")
    return name


def is_device_array(x) -> bool:
    """True for a Numba CUDA device array (real or simulated), without importing numba.cuda."""
    return not isinstance(x, np.ndarray) and hasattr(x, "copy_to_host") and hasattr(x, "shape")


def device_of(x) -> str:
    """"cuda" for a device array, else "cpu"."""
    return "cuda" if is_device_array(x) else "cpu"


def to_host(x) -> np.ndarray:
    """A NumPy array with x's values: a copy from the device, or x itself if on the host."""
    return x.copy_to_host() if is_device_array(x) else x


def to_device(x):
    """A device array with x's values: a copy of a host array, or x itself if on the device."""
    if is_device_array(x):
        return x
    from npstn.kernels.cuda.common import cuda_module

    return cuda_module().to_device(np.ascontiguousarray(x))


def check_module_device(name: str, x, params) -> bool:
    """True when ``x`` is a device array; TypeError if x and ``params`` live on different devices.

    ``params``: the layer's Parameters (None entries are skipped).
    """
    on_device = is_device_array(x)
    for p in params:
        if p is None:
            continue
        if is_device_array(p.data) != on_device:
            if on_device:
                raise TypeError(
                    f"{name}: the input is a CUDA device array but the parameters are NumPy arrays "
                    "on the host; move the model with model.to('cuda') (or copy the input to the "
                    "host with .copy_to_host())"
                )
            raise TypeError(
                f"{name}: the parameters are on the GPU (the model was moved with .to('cuda')) "
                "but the input is a NumPy array; copy it to the device with "
                "numba.cuda.to_device(x) (or move the model back with model.to('cpu'))"
            )
    if on_device and not x.is_c_contiguous():
        raise ValueError(f"{name}: device input of shape {tuple(x.shape)} must be C-contiguous")
    return on_device


def device_grad(name: str, grad, shape, dtype):
    """A gradient for a device-side backward: on the device, of ``shape`` and ``dtype``.

    A host array is copied to the device (after casting like the host paths'
    ``np.asarray(grad, dtype)``); a device array must already have the dtype.
    """
    if not is_device_array(grad):
        grad = to_device(np.asarray(grad, dtype=dtype))
    elif np.dtype(grad.dtype) != np.dtype(dtype):
        raise TypeError(f"{name}: grad_out has dtype {np.dtype(grad.dtype)}, expected {np.dtype(dtype)}")
    elif not grad.is_c_contiguous():
        raise ValueError(f"{name}: device grad_out of shape {tuple(grad.shape)} must be C-contiguous")
    if tuple(grad.shape) != tuple(shape):
        raise ValueError(
            f"{name}: grad_out must have the output's shape {tuple(int(s) for s in shape)}, "
            f"got {tuple(int(s) for s in grad.shape)}"
        )
    return grad


def device_args(*arrays):
    """The arrays of a "cuda" op on the device, and whether its results go back to the host.

    Returns ``(on_device, back)``: ``on_device`` lists each array as a device
    array (a host array copied, a device array as it is, None kept as None);
    ``back`` is True when none of them was a device array, so the op copies
    its results back with :func:`results_for` (host arrays in, host arrays
    out; device arrays in, device arrays out).
    """
    back = not any(is_device_array(a) for a in arrays if a is not None)
    return [None if a is None else to_device(a) for a in arrays], back


def results_for(back: bool, *outs):
    """``outs`` copied to the host when ``back`` (None entries kept); one value or a tuple."""
    if back:
        outs = tuple(None if o is None or not is_device_array(o) else o.copy_to_host() for o in outs)
    return outs[0] if len(outs) == 1 else outs
