"""How many threads npstn's two parallel engines use: Numba's kernels and NumPy's BLAS.

A training step alternates small matrix products (NumPy -> OpenBLAS, with
its own thread pool) with Numba's parallel kernels (sampler, pooling,
im2col). Both pools synchronise at the end of every call, so each call waits
for its slowest thread. On a quiet machine two threads per pool are faster
than one (RTS ST-FCN step on 2 cores: 13-14 ms with 2, 18 ms with 1). On a
machine that is busier than it has cores, a thread that the scheduler has
parked holds up the whole call: on the 2-core development machine at load
average 3 an FCN step at batch 32 took 64 ms with two BLAS threads and
1.2 ms with one. :func:`set_num_threads` sets both pools at once, which is
what ``npstn train --threads N`` and friends call; :func:`machine_busy` is
the check behind the hint they print.

OpenBLAS is reached through its own ``openblas_set_num_threads`` (or the
``scipy_openblas`` name NumPy's wheels use), found among the libraries this
process has loaded, or through threadpoolctl where that is installed. Other
BLAS libraries (MKL, Accelerate) keep their own settings (their usual
environment variables, e.g. ``MKL_NUM_THREADS``, still work).
"""
from __future__ import annotations

import ctypes
import os

__all__ = ["set_num_threads", "get_num_threads", "blas_threads", "set_blas_threads", "machine_busy"]

_OPENBLAS_PREFIXES = ("scipy_openblas", "openblas")
_OPENBLAS_SUFFIXES = ("64_", "")


def _openblas_functions(kind: str) -> list:
    """The ``*_{kind}_num_threads`` functions of every OpenBLAS loaded in this process (Linux)."""
    import numpy  # noqa: F401  (make sure NumPy's BLAS is loaded before looking for it)

    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                path = parts[-1] if len(parts) >= 6 else ""
                if "openblas" in os.path.basename(path).lower() and os.path.isfile(path):
                    libs.add(path)
    except OSError:
        return []
    found = []
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)  # already loaded: this returns the same library
        except OSError:
            continue
        fn = None
        for prefix in _OPENBLAS_PREFIXES:
            for suffix in _OPENBLAS_SUFFIXES:
                fn = getattr(lib, f"{prefix}_{kind}_num_threads{suffix}", None)
                if fn is not None:
                    break
            if fn is not None:
                break
        if fn is not None:
            found.append(fn)
    return found


def blas_threads() -> int | None:
    """Threads NumPy's BLAS uses for a matrix product, where that can be asked (else None)."""
    try:
        import threadpoolctl

        info = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
        if info:
            return int(info[0]["num_threads"])
    except Exception:
        pass
    for fn in _openblas_functions("get"):
        try:
            fn.restype = ctypes.c_int
            return int(fn())
        except Exception:
            continue
    return None


def set_blas_threads(n: int) -> bool:
    """Ask NumPy's BLAS to use ``n`` threads; True where that could be done."""
    n = int(n)
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(limits=n, user_api="blas")
        return True
    except Exception:
        pass
    done = False
    for fn in _openblas_functions("set"):
        try:
            fn.argtypes = [ctypes.c_int]
            fn.restype = None
            fn(n)
            done = True
        except Exception:
            continue
    return done


def set_num_threads(n: int) -> int:
    """Use ``n`` threads for Numba's kernels and NumPy's BLAS; returns the number applied.

    ``n`` is clipped to [1, NUMBA_NUM_THREADS] (Numba cannot start more
    threads than it was launched with; that is the core count unless the
    ``NUMBA_NUM_THREADS`` environment variable says otherwise).
    """
    import numba

    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"set_num_threads: n must be an integer, got {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be at least 1, got {n}")
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    set_blas_threads(n)
    return n


def get_num_threads() -> int:
    """Threads Numba's parallel kernels use now."""
    import numba

    return numba.get_num_threads()


def machine_busy() -> tuple[bool, float, int]:
    """(busy, 1-minute load average, cores): busy when the load exceeds the cores available.

    ``(False, nan, cores)`` where the load average cannot be read.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return False, float("nan"), cores
    return load > cores + 0.5, load, cores
