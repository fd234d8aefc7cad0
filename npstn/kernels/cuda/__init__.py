"""CUDA kernels: @cuda.jit, a thread per output element (or the CUDA simulator)."""
