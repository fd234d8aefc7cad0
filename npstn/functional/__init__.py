"""Pure functions, one forward/backward pair per op: the maths of the spatial transformer.

Contract (shapes and names as torch.nn.functional where torch has the op;
docs/DESIGN.md "The functional contract")::

    affine_grid(theta, size, align_corners=False, backend=None) -> grid
    grid_sample(input, grid, mode="bilinear", padding_mode="zeros",
                align_corners=False, backend=None) -> output
    attention_grid(theta, size, ...), projective_grid(theta, size, ..., eps=...),
    tps_grid(theta, size, ...) -> grid

One rule for every backward (docs/DESIGN.md "Backward: one rule")::

    <op>_backward(grad_output, <the forward's array inputs>, <the forward's keyword arguments>)
        -> the gradients with respect to the array inputs, in order (a tuple when several)

    grid_sample_backward(grad_output, input, grid, mode=..., padding_mode=...,
                         align_corners=False, backend=None) -> (grad_input, grad_grid)
    affine_grid_backward(grad_grid, theta, size, align_corners=False, backend=None) -> grad_theta
    attention_grid_backward(grad_grid, theta, size, ...) -> grad_theta
    projective_grid_backward(grad_grid, theta, size, ..., eps=...) -> grad_theta
    tps_grid_backward(grad_grid, theta, size, ...) -> grad_theta

The upstream gradient is named after the forward's output: ``grad_grid`` for
the grid generators, ``grad_output`` for ops that return an image. The
affine and thin-plate-spline grids are linear in theta, so their backward
never reads theta: it may be left out, and the older forms
``affine_grid_backward(grad_grid, size, align_corners=False, backend=None)``
and ``tps_grid_backward(grad_grid, size, num_control_points=16, ...)`` keep
working.

``backend=None`` means the inputs' location (a device array: "cuda"), else
the process-wide default (:func:`npstn._backend.resolve_backend`). Each op's
NumPy code is its readable specification; the scalar formulas it shares with
the cpu and cuda kernels are in :mod:`npstn.kernels.formulas`.
"""
from npstn.functional.grid_sample import *  # noqa: F401,F403
from npstn.functional.affine import *  # noqa: F401,F403
from npstn.functional.attention import *  # noqa: F401,F403
from npstn.functional.projective import *  # noqa: F401,F403
from npstn.functional.tps import *  # noqa: F401,F403
