"""CUDA kernels of the projection (the sum over depth, :mod:`npstn.functional.projection`).

One thread per output element: the forward sums its column of D voxels (in
the input's dtype, slice after slice), the backward copies its gradient
element into the D voxels of its column. No two threads write one element.
"""
from __future__ import annotations

from numba import cuda

from npstn.kernels.cuda.common import cuda_module, launch_config


@cuda.jit(device=True)
def _column(t, n_chan, h, w):
    """The (n, c, i, j) of output element t (C order): the column of D voxels thread t owns."""
    return t // (w * h * n_chan), (t // (w * h)) % n_chan, (t // w) % h, t % w


@cuda.jit
def _forward_kernel(x, scale, out):
    t = cuda.grid(1)
    n_batch, n_chan, depth, h, w = x.shape
    if t >= n_batch * n_chan * h * w:
        return
    n, c, i, j = _column(t, n_chan, h, w)
    acc = x[n, c, 0, i, j]
    for l in range(1, depth):  # noqa: E741
        acc += x[n, c, l, i, j]
    out[n, c, i, j] = acc * scale


@cuda.jit
def _backward_kernel(g, scale, grad_input):
    t = cuda.grid(1)
    n_batch, n_chan, depth, h, w = grad_input.shape
    if t >= n_batch * n_chan * h * w:
        return
    n, c, i, j = _column(t, n_chan, h, w)
    v = g[n, c, i, j] * scale
    for l in range(depth):  # noqa: E741
        grad_input[n, c, l, i, j] = v


def project_forward(x, scale):
    """Device input (N, C, D, H, W) -> device output (N, C, H, W): the depth sum times ``scale``."""
    cu = cuda_module()
    n, c, _, h, w = x.shape
    out = cu.device_array((n, c, h, w), dtype=x.dtype)
    blocks, threads = launch_config(n * c * h * w)
    _forward_kernel[blocks, threads](x, scale, out)
    return out


def project_backward(g, depth: int, scale):
    """Device gradient (N, C, H, W) -> device gradient of the input (N, C, depth, H, W), times ``scale``."""
    cu = cuda_module()
    n, c, h, w = g.shape
    grad_input = cu.device_array((n, c, depth, h, w), dtype=g.dtype)
    blocks, threads = launch_config(n * c * h * w)
    _backward_kernel[blocks, threads](g, scale, grad_input)
    return grad_input
