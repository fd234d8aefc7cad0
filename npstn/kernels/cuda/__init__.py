"""CUDA kernels: @cuda.jit, a thread per output element (or the CUDA simulator).

One concept per module: ``grid_sample`` and ``grids`` (the spatial
transformer), ``matmul`` (tiled GEMM, bias-gradient sums), ``im2col``
(Conv2d's column layout), ``pool`` (max/avg pooling), ``elementwise`` (ReLU,
fill, add, SGD/Adam updates, finiteness), ``loss`` (softmax cross-entropy,
argmax, accuracy) and ``concat`` (Parallel's concatenation), with shared
helpers in ``common``.
"""
import numpy as _np

# numba-cuda (0.30 and earlier at least) registers an overload for np.row_stack
# whenever NumPy >= 2.0, when its CUDA target first compiles a kernel; NumPy 2.5
# removed row_stack (an alias of vstack), so every first launch failed with
# "module 'numpy' has no attribute 'row_stack'" (seen on an H200 with numba 0.68,
# numpy 2.5.2; benchmarks/RESULTS.md). Restoring the alias for numba-cuda's sake
# is harmless: it is the very function NumPy deprecated it in favour of.
if not hasattr(_np, "row_stack"):
    _np.row_stack = _np.vstack
