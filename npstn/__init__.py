"""npstn: Spatial Transformer Networks from scratch in NumPy and Numba.

Every forward pass has a hand-derived backward pass beside it; property tests
check each one against finite differences. See README.md.
"""
import os as _os
import sys as _sys

__version__ = "0.1.0"

# OpenBLAS's worker threads spin for ~2^28 cycles after every matmul before
# they sleep. A training step alternates small matmuls with Numba's parallel
# kernels, so on a machine with few cores those spinning threads take the
# cores Numba's threads need: on 2 cores the RTS ST-FCN step went from 25 ms
# to 13 ms, ST-CNN from 315 ms to 114 ms and the CNN from 985 ms to 783 ms
# with a short spin (benchmarks/RESULTS.md). OpenBLAS reads the setting once,
# when NumPy loads it, so it can only be given here, and only when npstn is
# imported before NumPy (as the ``npstn`` command does). A value set in the
# environment always wins. It changes timing only, never a result.
if "numpy" not in _sys.modules:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from npstn._backend import BACKENDS, get_backend, set_backend  # noqa: E402

__all__ = ["__version__", "BACKENDS", "get_backend", "set_backend"]
