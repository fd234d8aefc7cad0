"""The projection layer of the 3D transformer: a volume summed over depth into an image."""
from __future__ import annotations

from npstn import functional as F
from npstn._device import is_device_array
from npstn.nn.module import Module, layer_backend, layer_grad

__all__ = ["Project"]


class Project(Module):
    """Sum over depth, (N, C, D, H, W) -> (N, C, H, W): :func:`npstn.functional.project`.

    The paper's 3D spatial transformer (appendix A.3) turns a volume, then
    projects it to 2D for a 2D classifier. Backward: the output's gradient
    copied to every depth slice (:func:`npstn.functional.project_backward`).
    ``reduction="mean"`` divides by D (the mean over depth). No parameters.
    """

    def __init__(self, reduction: str = "sum", *, backend: str | None = None):
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"Project: reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction = reduction
        self.backend = backend
        self._x = None

    def forward(self, x):
        self._x = x
        return F.project(x, self.reduction, backend=layer_backend(self.backend, x))

    def backward(self, grad_out):
        if self._x is None:
            raise RuntimeError("Project.backward called before forward: call forward(x) first")
        x = self._x
        n, c, _, h, w = x.shape
        grad_out = layer_grad("Project", grad_out, is_device_array(x), (n, c, h, w), x.dtype)
        return F.project_backward(grad_out, x, self.reduction, backend=layer_backend(self.backend, x))

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
