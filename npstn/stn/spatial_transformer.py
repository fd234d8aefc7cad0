"""The spatial transformer module (Jaderberg et al. 2015, section 3).

Given an input feature map U (N, C, H, W), a spatial transformer

1. regresses the transformation parameters with a localisation network,
   theta = f_loc(U)                                   (N, P);
2. maps the regular output grid G through T_theta (the grid generator),
   (x^s_i, y^s_i) = T_theta(G_i)                      grid (N, H', W', 2);
3. samples U at those points (eq. 3, bilinear kernel eq. 5),
   V = grid_sample(U, grid)                           (N, C, H', W').

With a volume transform (``"affine3d"``, the paper's appendix) the same
three steps act on volumes U (N, C, D, H, W): the grid is (N, D', H', W', 3)
and the sampler trilinear, V (N, C, D', H', W').

Backward (no autodiff; each step is a hand-derived backward of its own):

    dL/dgrid          from grid_sample_backward (eq. 6-7)
    dL/dtheta        = transform.grid_backward(dL/dgrid)
    dL/dU (sampler)  from grid_sample_backward (eq. 6)
    dL/dU (loc. net) = f_loc.backward(dL/dtheta)
    dL/dU            = the sum of both paths.

On the GPU (input a device array, the module moved with ``.to("cuda")``)
every step stays on the device: the localisation network's layers run their
CUDA kernels, the grid generator and sampler run with backend "cuda"
whatever ``backend`` says (data on the device decide), and the two input
gradients are added by a device kernel.
"""
from __future__ import annotations

import numpy as np

from npstn._checks import check_float_array, check_same_dtype, shape_str
from npstn._device import is_device_array
import npstn.functional as F
from npstn.nn.module import Module, passes_on_input_grad
from npstn.stn.transforms import Transform, get_transform

__all__ = ["SpatialTransformer"]


def _last_linear(module: Module):
    from npstn.nn.linear import Linear

    last = None
    for m in module.modules():
        if isinstance(m, Linear):
            last = m
    return last


class SpatialTransformer(Module):
    """A differentiable module that warps its input by a transformation it predicts.

    Parameters
    ----------
    localization : Module
        Maps U (N, C, H, W) to theta (N, P), P = ``transform.num_params``. Its
        last :class:`~npstn.nn.Linear` (the regression layer) is initialised to
        output the identity transform: zero weight, identity bias (the paper's
        initialisation), unless ``init_identity=False``.
    transform : str or Transform
        ``"affine"`` (P=6), ``"attention"`` (P=3), ``"projective"`` (P=8),
        ``"tps"`` (P=32, 16 control points), ``"affine3d"`` (P=12, on volumes
        (N, C, D, H, W)) or a :class:`Transform` instance.
    output_size : (H', W'), (D', H', W') for volumes, or None
        Size of V; None keeps the input's spatial size. Smaller down-samples,
        larger over-samples.
    mode, padding_mode, align_corners :
        Passed to :func:`npstn.functional.grid_sample` (torch's meanings).
    loc_lr_mult : float or None
        If given, the learning-rate multiplier of every localisation parameter
        (the paper trains localisation networks at a reduced rate).
    return_theta : bool
        If True, ``forward`` returns ``(V, theta)`` so theta can be fed to later
        layers, and ``backward`` takes ``(grad_V, grad_theta)`` (``grad_theta``
        may be None).
    backend : str or None
        Backend for the grid generator and sampler (None: the process default).

    Attributes
    ----------
    theta : np.ndarray (N, P)
        The parameters predicted by the last forward call.
    grid : np.ndarray (N, H', W', 2), or (N, D', H', W', 3) for volumes
        The sampling grid T_theta(G) of the last forward call.
    needs_input_grad : bool
        True (default). False when U is data (the transformer is a network's
        first layer): ``backward`` then returns None, the sampler skips eq. 6
        and the localisation network its own input gradient; dL/dtheta and
        every parameter gradient are unchanged, bit for bit.
    """

    def __init__(self, localization: Module, transform="affine", output_size=None, *,
                 mode: str = "bilinear", padding_mode: str = "zeros", align_corners: bool = False,
                 loc_lr_mult: float | None = None, return_theta: bool = False,
                 init_identity: bool = True, backend: str | None = None):
        super().__init__()
        if not isinstance(localization, Module):
            raise TypeError(
                f"SpatialTransformer: localization must be an npstn.nn.Module, got {type(localization).__name__}"
            )
        self.localization = localization
        self.transform: Transform = get_transform(transform)
        dims = self.transform.spatial_dims
        if output_size is not None:
            if (not isinstance(output_size, (tuple, list)) or len(output_size) != dims
                    or not all(isinstance(v, (int, np.integer)) and v > 0 for v in output_size)):
                want = "(D_out, H_out, W_out)" if dims == 3 else "(H_out, W_out)"
                raise ValueError(
                    f"SpatialTransformer: output_size must be None or {want} of positive ints for the "
                    f"{self.transform.name!r} transform, got {output_size!r}"
                )
            output_size = tuple(int(v) for v in output_size)
        self.output_size = output_size
        self.mode = mode
        self.padding_mode = padding_mode
        self.align_corners = bool(align_corners)
        self.return_theta = bool(return_theta)
        self.backend = backend
        if loc_lr_mult is not None:
            for p in localization.parameters():
                p.lr_mult = float(loc_lr_mult)
        if init_identity:
            self.init_identity()
        self.theta = None
        self.grid = None
        self._x = None

    def init_identity(self) -> None:
        """Zero the regression layer's weight and set its bias to the identity parameters."""
        reg = _last_linear(self.localization)
        P = self.transform.num_params
        if reg is None or reg.weight.data.shape[0] != P:
            got = "no Linear layer" if reg is None else f"a last Linear with {reg.weight.data.shape[0]} outputs"
            raise ValueError(
                f"SpatialTransformer: the localization network must end in a Linear regression layer "
                f"with {P} outputs for the {self.transform.name!r} transform, found {got} "
                "(or pass init_identity=False to keep your own initialisation)"
            )
        reg.weight.data[...] = 0
        if getattr(reg, "bias", None) is None:
            raise ValueError("SpatialTransformer: the regression Linear needs bias=True to regress the identity")
        reg.bias.data[...] = self.transform.identity(dtype=reg.bias.data.dtype)

    def _out_size(self, x):
        n, c = x.shape[0], x.shape[1]
        spatial = self.output_size if self.output_size is not None else tuple(x.shape[2:])
        return (n, c, *spatial)

    def forward(self, x):
        if self.transform.spatial_dims == 3:
            check_float_array("input", x, 5, what=f"(N, C, D, H, W) for the {self.transform.name!r} transform")
        else:
            check_float_array("input", x, 4, what="(N, C, H, W)")
        theta = self.localization(x)
        P = self.transform.num_params
        if theta.ndim != 2 or theta.shape != (x.shape[0], P):
            raise ValueError(
                f"SpatialTransformer: the localization network returned shape {shape_str(theta.shape)}, "
                f"expected (N, {P}) = {shape_str((x.shape[0], P))} for the {self.transform.name!r} transform"
            )
        check_same_dtype("input", x, "theta", theta)
        size = self._out_size(x)
        backend = "cuda" if is_device_array(x) else self.backend
        grid = self.transform.grid(theta, size, align_corners=self.align_corners, backend=backend)
        out = F.grid_sample(x, grid, mode=self.mode, padding_mode=self.padding_mode,
                          align_corners=self.align_corners, backend=backend)
        self._x, self.theta, self.grid = x, theta, grid
        return (out, theta) if self.return_theta else out

    needs_input_grad = passes_on_input_grad(lambda self: [self.localization],
                                            "See the class docstring; the localisation network is told too.")

    def backward(self, grad_output):
        # BEGIN SOLUTION task5
        if self._x is None:
            raise RuntimeError("SpatialTransformer.backward called before forward")
        grad_theta_extra = None
        if self.return_theta:
            grad_output, grad_theta_extra = grad_output
        x, theta, grid = self._x, self.theta, self.grid
        if is_device_array(x):
            return self._backward_cuda(grad_output, grad_theta_extra)
        needs = self.needs_input_grad  # False: U is data, no dL/dU (eq. 6 skipped)
        grad_x, grad_grid = F.grid_sample_backward(
            grad_output, x, grid, mode=self.mode, padding_mode=self.padding_mode,
            align_corners=self.align_corners, backend=self.backend, needs_input_grad=needs)
        grad_theta = self.transform.grid_backward(
            grad_grid, theta, self._out_size(x), align_corners=self.align_corners, backend=self.backend)
        if grad_theta_extra is not None:
            grad_theta = grad_theta + grad_theta_extra
        grad_x_loc = self.localization.backward(grad_theta)
        return grad_x + grad_x_loc if needs else None
        # END SOLUTION

    def _backward_cuda(self, grad_output, grad_theta_extra):
        """The same chain on the device (backend "cuda"); sums with a device kernel."""
        # BEGIN SOLUTION task5
        from npstn._device import to_device
        from npstn.kernels.cuda.elementwise import add

        x, theta, grid = self._x, self.theta, self.grid
        grad_output = to_device(grad_output)
        needs = self.needs_input_grad
        grad_x, grad_grid = F.grid_sample_backward(
            grad_output, x, grid, mode=self.mode, padding_mode=self.padding_mode,
            align_corners=self.align_corners, backend="cuda", needs_input_grad=needs)
        grad_theta = self.transform.grid_backward(
            grad_grid, theta, self._out_size(x), align_corners=self.align_corners, backend="cuda")
        if grad_theta_extra is not None:
            grad_theta = add(grad_theta, to_device(grad_theta_extra))
        grad_x_loc = self.localization.backward(grad_theta)
        return add(grad_x, grad_x_loc) if needs else None
        # END SOLUTION

    def extra_repr(self) -> str:
        return (f"transform={self.transform.name!r}, output_size={self.output_size}, mode={self.mode!r}, "
                f"padding_mode={self.padding_mode!r}, align_corners={self.align_corners}")
