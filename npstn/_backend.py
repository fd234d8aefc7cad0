"""Which backend computes an op: the one dispatch rule of npstn.

Every public op takes ``backend=None`` and asks :func:`resolve_backend`,
passing its array arguments. The rule, in order:

1. an explicit ``backend=`` argument wins;
2. else, if any array argument is a device array (a Numba CUDA array), "cuda";
3. else the process-wide default, set with :func:`set_backend` or the
   ``NPSTN_BACKEND`` environment variable.

The backends:

* ``"numpy"`` -- vectorised NumPy, the readable specification;
* ``"cpu"``   -- Numba ``@njit(parallel=True, cache=True)`` kernels (default);
* ``"cuda"``  -- Numba ``@cuda.jit`` kernels (a GPU, or the CUDA simulator
  with ``NUMBA_ENABLE_CUDASIM=1``).
"""
from __future__ import annotations

import os

BACKENDS = ("numpy", "cpu", "cuda")
_DEFAULT = "cpu"
_current: str | None = None


def _check_name(name, where: str) -> str:
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(
            f"{where}: unknown backend {name!r}; expected one of {', '.join(BACKENDS)}"
        )
    return name.lower()


def get_backend() -> str:
    """The process-wide default backend (``NPSTN_BACKEND`` or ``"cpu"``)."""
    global _current
    if _current is None:
        env = os.environ.get("NPSTN_BACKEND")
        _current = _check_name(env, "NPSTN_BACKEND") if env else _DEFAULT
    return _current


def set_backend(name: str) -> None:
    """Set the process-wide default backend: ``"numpy"``, ``"cpu"`` or ``"cuda"``."""
    global _current
    _current = _check_name(name, "set_backend")


def resolve_backend(backend: str | None, *arrays) -> str:
    """The backend an op runs on: explicit ``backend``, else "cuda" if any of ``arrays``
    is a device array, else the process-wide default (see the module doc)."""
    if backend is not None:
        return _check_name(backend, "backend")
    if arrays:
        from npstn._device import is_device_array

        if any(is_device_array(a) for a in arrays):
            return "cuda"
    return get_backend()
