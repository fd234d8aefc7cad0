"""CUDA kernels: @cuda.jit, a thread per output element (or the CUDA simulator).

One concept per module: ``grid_sample`` and ``grids`` (the spatial
transformer), ``matmul`` (tiled GEMM, bias-gradient sums), ``im2col``
(Conv2d's column layout), ``pool`` (max/avg pooling), ``elementwise`` (ReLU,
fill, add, SGD/Adam updates, finiteness), ``loss`` (softmax cross-entropy,
argmax, accuracy) and ``concat`` (Parallel's concatenation), with shared
helpers in ``common``.
"""
