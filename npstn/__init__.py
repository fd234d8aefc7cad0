"""npstn: Spatial Transformer Networks from scratch in NumPy and Numba.

Every forward pass has a hand-derived backward pass beside it; property tests
check each one against finite differences. See README.md.
"""
__version__ = "0.1.0"

from npstn._backend import BACKENDS, get_backend, set_backend  # noqa: E402

__all__ = ["__version__", "BACKENDS", "get_backend", "set_backend"]
