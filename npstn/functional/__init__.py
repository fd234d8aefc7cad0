"""Pure functions, one forward/backward pair per op: the math of the spatial transformer
and of every layer.

Contract (names, argument names and defaults as torch.nn.functional where torch has the op)::

    affine_grid(theta, size, align_corners=False, backend=None) -> grid
    affine_grid_backward(grad_grid, size, align_corners=False, backend=None) -> grad_theta
    grid_sample(input, grid, mode="bilinear", padding_mode="zeros",
                align_corners=False, backend=None) -> output
    grid_sample_backward(grad_output, input, grid, mode="bilinear",
                padding_mode="zeros", align_corners=False, backend=None)
                -> (grad_input, grad_grid)

    linear(input, weight, bias=None) -> output
    conv2d(input, weight, bias=None, stride=1, padding=0) -> output
    max_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False) -> output
    avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None) -> output
    relu(input) -> output
    cross_entropy(input, target, reduction="mean") -> loss

plus the attention, projective and thin-plate-spline grid generators.

The backward rule (one for every op)
------------------------------------
``<op>_backward(grad_output, <the forward's array inputs>, <the forward's
keyword arguments>)`` returns the gradients of the loss with respect to the
forward's array inputs, in order: one array, or a tuple when there are
several; None for an optional input that was None (``bias=None``). Integer
inputs (``cross_entropy``'s target) get no gradient. For
``cross_entropy_backward`` the first argument is the upstream gradient of
the loss (a scalar for "mean" and "sum"). A backward may accept optional
saved state from its forward for speed (``max_pool2d``'s ``indices``,
``conv2d``'s ``cols``, ``cross_entropy``'s ``log_p``); without it, it
recomputes what it needs. ``affine_grid_backward(grad_grid, size, ...)``
keeps torch's layout (theta is the only array input).

Every op takes ``backend=None`` and chooses with
:func:`npstn._backend.resolve_backend`: an explicit backend wins, else a
device array input means "cuda", else the process default. "numpy" is the
readable specification, "cpu" the Numba kernels (or BLAS), "cuda" the
``@cuda.jit`` kernels; with "cuda", NumPy inputs are copied to the device and
the results back, device inputs give device results.
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
