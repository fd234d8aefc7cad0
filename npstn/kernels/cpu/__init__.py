"""CPU kernels: @njit(parallel=True, cache=True)."""
