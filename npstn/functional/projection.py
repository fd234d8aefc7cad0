"""The projection of a volume onto an image: the sum over depth, and its backward.

The paper's 3D transformer (appendix; docs/PAPER.md "Spatial transformers in
3D") turns a volume and then *projects* it to 2D, so that a 2D classifier
can read it. The projection is the sum along the depth axis::

    forward:   V[n, c, h, w] = sum_l U[n, c, l, h, w]          (N, C, D, H, W) -> (N, C, H, W)
    backward:  dL/dU[n, c, l, h, w] = dL/dV[n, c, h, w]         (the gradient copied to every slice)

(``torch.sum(input, dim=2)`` in torch); ``reduction="mean"`` divides both by
D (``torch.mean(input, dim=2)``), which keeps a projection in the volume's
range of values. Backends: "numpy" and "cpu" are the
same NumPy expression; "cuda" the kernels of :mod:`npstn.kernels.cuda.projection`.
"""
from __future__ import annotations

import numpy as np

from npstn._checks import check_float_array, shape_str
from npstn._device import device_args, is_device_array, results_for
from npstn.functional._layer_common import dispatch, upstream_grad

__all__ = ["project", "project_backward"]


REDUCTIONS = ("sum", "mean")


def _scale(name: str, reduction, input):
    """The factor of the projection: 1 for "sum", 1/D for "mean", in the input's dtype."""
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"{name}: reduction must be 'sum' or 'mean', got {reduction!r}")
    return np.dtype(input.dtype).type(1.0 if reduction == "sum" else 1.0 / input.shape[2])


def project(input, reduction="sum", *, backend=None):
    """The sum (or mean) over depth: input (N, C, D, H, W) -> output (N, C, H, W), input's dtype."""
    check_float_array("project: input", input, 5, what="(N, C, D, H, W)")
    scale = _scale("project", reduction, input)
    if dispatch("project", backend, input) == "cuda":
        from npstn.kernels.cuda.projection import project_forward

        (x,), back = device_args(input)
        _contiguous(x)
        return results_for(back, project_forward(x, scale))
    out = np.asarray(input).sum(axis=2)
    return out if reduction == "sum" else out * scale


def project_backward(grad_output, input, reduction="sum", *, backend=None):
    """dL/dinput (N, C, D, H, W): grad_output (N, C, H, W) copied to every depth slice (divided by D for
    ``reduction="mean"``)."""
    check_float_array("project_backward: input", input, 5, what="(N, C, D, H, W)")
    scale = _scale("project_backward", reduction, input)
    n, c, _, h, w = input.shape
    grad_output = upstream_grad("project_backward", grad_output, (n, c, h, w), input.dtype)
    if dispatch("project_backward", backend, grad_output, input) == "cuda":
        from npstn.kernels.cuda.projection import project_backward as kernel

        (g,), _ = device_args(grad_output)
        back = not (is_device_array(grad_output) or is_device_array(input))  # host in, host out
        return results_for(back, kernel(g, int(input.shape[2]), scale))
    g = grad_output if reduction == "sum" else grad_output * scale
    return np.ascontiguousarray(np.broadcast_to(g[:, :, None], tuple(input.shape)))


def _contiguous(x):
    if is_device_array(x) and not x.is_c_contiguous():
        raise ValueError(f"project: device input of shape {shape_str(x.shape)} must be C-contiguous")
