"""Process-wide choice of compute backend.

Every public op takes ``backend=None``; None means the process-wide default,
set with :func:`set_backend` or the ``NPSTN_BACKEND`` environment variable:

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


def resolve_backend(backend: str | None) -> str:
    """Turn a per-call ``backend=`` argument (None = default) into a backend name."""
    if backend is None:
        return get_backend()
    return _check_name(backend, "backend")
