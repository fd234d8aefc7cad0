"""Pure functions, one forward/backward pair per op: the maths of the spatial transformer
and of every layer.

Contract (names, argument names and defaults as torch.nn.functional where torch has the op;
docs/DESIGN.md "The functional contract")::

    affine_grid(theta, size, align_corners=False, backend=None) -> grid
    grid_sample(input, grid, mode="bilinear", padding_mode="zeros",
                align_corners=False, backend=None) -> output
        (both dispatch on rank, as in torch: theta (N, 3, 4) with a 5-D size, and
        volumes (N, C, D, H, W) with grids (N, D_out, H_out, W_out, 3), sampled
        trilinearly ("bilinear") or by nearest voxel)
    attention_grid(theta, size, ...), projective_grid(theta, size, ..., eps=...),
    tps_grid(theta, size, ...) -> grid

    linear(input, weight, bias=None) -> output
    conv2d(input, weight, bias=None, stride=1, padding=0) -> output
    max_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False) -> output
    avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None) -> output
    relu(input) -> output
    relu_max_pool2d(input, kernel_size, ...) -> output   (max_pool2d(relu(input)), fused)
    project(input) -> output                 (the sum over depth: (N, C, D, H, W) -> (N, C, H, W))
    cross_entropy(input, target, reduction="mean") -> loss
    colocalisation_loss(embeddings, random_embeddings, margin=1.0, reduction="mean") -> loss

One rule for every backward (docs/DESIGN.md "Backward: one rule")::

    <op>_backward(grad_output, <the forward's array inputs>, <the forward's keyword arguments>)
        -> the gradients with respect to the array inputs, in order (a tuple when several;
           None for an optional input that was None, such as bias=None)

    grid_sample_backward(grad_output, input, grid, mode=..., padding_mode=...,
                         align_corners=False, backend=None) -> (grad_input, grad_grid)
    affine_grid_backward(grad_grid, theta, size, align_corners=False, backend=None) -> grad_theta
    attention_grid_backward(grad_grid, theta, size, ...) -> grad_theta
    projective_grid_backward(grad_grid, theta, size, ..., eps=...) -> grad_theta
    tps_grid_backward(grad_grid, theta, size, ...) -> grad_theta
    linear_backward(grad_output, input, weight, bias=None) -> (grad_input, grad_weight, grad_bias)
    conv2d_backward(grad_output, input, weight, bias=None, stride=1, padding=0) -> (...)
        (grad_input None with needs_input_grad=False)
    max_pool2d_backward(grad_output, input, kernel_size, ...) -> grad_input
    relu_backward(grad_output, input) -> grad_input
    relu_max_pool2d_backward(grad_output, input, kernel_size, ...) -> grad_input
    project_backward(grad_output, input) -> grad_input
    cross_entropy_backward(grad_loss, input, target) -> grad_input
    colocalisation_loss_backward(grad_loss, embeddings, random_embeddings, margin=1.0, ...)
        -> (grad_embeddings, grad_random_embeddings)

The upstream gradient is named after the forward's output: ``grad_grid`` for
the grid generators, ``grad_output`` for ops that return an array; for
``cross_entropy_backward`` it is the upstream gradient of the loss (a scalar
for "mean" and "sum"). Integer inputs (``cross_entropy``'s target) get no
gradient. A backward may accept optional saved state from its forward for
speed (``max_pool2d``'s ``indices``, ``conv2d``'s ``cols`` or ``workspace``,
``cross_entropy``'s ``log_p``); without it, it recomputes what it needs. The
affine and thin-plate-spline grids are linear in theta, so their backward
never reads theta: it may be left out, and the older forms
``affine_grid_backward(grad_grid, size, align_corners=False, backend=None)``
and ``tps_grid_backward(grad_grid, size, num_control_points=16, ...)`` keep
working.

Every op takes ``backend=None`` and chooses with
:func:`npstn._backend.resolve_backend`: an explicit backend wins, else a
device array input means "cuda", else the process default. "numpy" is the
readable specification, "cpu" the Numba kernels (or BLAS), "cuda" the
``@cuda.jit`` kernels; with "cuda", NumPy inputs are copied to the device and
the results back, device inputs give device results. The scalar formulas the
sampler and the grids share between NumPy, cpu and cuda are in
:mod:`npstn.kernels.formulas`.
"""
from npstn.functional.grid_sample import *  # noqa: F401,F403
from npstn.functional.affine import *  # noqa: F401,F403
from npstn.functional.attention import *  # noqa: F401,F403
from npstn.functional.projective import *  # noqa: F401,F403
from npstn.functional.tps import *  # noqa: F401,F403
from npstn.functional.linear import *  # noqa: F401,F403
from npstn.functional.conv import *  # noqa: F401,F403
from npstn.functional.pooling import *  # noqa: F401,F403
from npstn.functional.activation import *  # noqa: F401,F403
from npstn.functional.loss import *  # noqa: F401,F403
from npstn.functional.colocalisation import *  # noqa: F401,F403
from npstn.functional.projection import *  # noqa: F401,F403
