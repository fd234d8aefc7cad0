"""Shared helpers for the CUDA backend.

Public functions accept NumPy arrays (copied to the device and the result
copied back) or Numba device arrays (kept on the device; the result is a
device array too). Under ``NUMBA_ENABLE_CUDASIM=1`` the same code runs in
Numba's CUDA simulator, which is how CI tests these kernels without a GPU.
"""
from __future__ import annotations

import numpy as np

from npstn._device import is_device_array  # noqa: F401  (the one definition; re-exported here)

THREADS_PER_BLOCK = 256


def cuda_module():
    """Import numba.cuda lazily, with an actionable error when it is unusable."""
    try:
        from numba import cuda
    except Exception as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            "the 'cuda' backend needs numba's CUDA support (pip install 'npstn[cuda]'); "
            f"importing numba.cuda failed: {exc}"
        ) from exc
    if not cuda.is_available():
        raise RuntimeError(
            "the 'cuda' backend found no usable CUDA GPU; use backend='cpu', or set "
            "NUMBA_ENABLE_CUDASIM=1 (before numba is imported) to run the kernels in "
            "Numba's CUDA simulator"
        )
    return cuda


def to_device(x):
    """(device array, was_on_host) for a NumPy or device array."""
    cuda = cuda_module()
    if is_device_array(x):
        return x, False
    return cuda.to_device(np.ascontiguousarray(x)), True


def launch_config(n_threads: int) -> tuple[int, int]:
    """(blocks, threads per block) covering ``n_threads``; small launches get small blocks.

    Small blocks matter little on a GPU but a lot in the CUDA simulator, which
    runs every thread of a block as a Python thread.
    """
    threads = max(1, min(THREADS_PER_BLOCK, int(n_threads)))
    return (int(n_threads) + threads - 1) // threads, threads


def blocks_for(n: int, threads: int = THREADS_PER_BLOCK) -> int:
    return max(1, (int(n) + threads - 1) // threads)
