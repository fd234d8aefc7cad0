"""Pure functions, one forward/backward pair per op: the math of the spatial transformer.

Contract (shapes and names as torch.nn.functional where torch has the op)::

    affine_grid(theta, size, align_corners=False, backend=None) -> grid
    affine_grid_backward(grad_grid, size, align_corners=False, backend=None) -> grad_theta
    grid_sample(input, grid, mode="bilinear", padding_mode="zeros",
                align_corners=False, backend=None) -> output
    grid_sample_backward(grad_output, input, grid, mode="bilinear",
                padding_mode="zeros", align_corners=False, backend=None)
                -> (grad_input, grad_grid)

plus the attention, projective and thin-plate-spline grid generators.
"""
from npstn.functional.grid_sample import *  # noqa: F401,F403
from npstn.functional.affine import *  # noqa: F401,F403
from npstn.functional.attention import *  # noqa: F401,F403
from npstn.functional.projective import *  # noqa: F401,F403
from npstn.functional.tps import *  # noqa: F401,F403
