"""Numba kernels: ``cpu`` (@njit, parallel over prange) and ``cuda`` (@cuda.jit).

Nothing here validates its arguments: the public functions in
:mod:`npstn.functional` and :mod:`npstn.nn` do that before dispatching.
"""
