"""CrossEntropyLoss: the layer around :func:`npstn.functional.cross_entropy` (fused with
log-softmax, as in torch).

The equations, forward and backward side by side, for each reduction, are in
:mod:`npstn.functional.loss`. The layer caches the logits, the labels and the
log-softmax of its forward, and ``backward(grad=1.0)`` multiplies by the
upstream gradient ``grad`` (1.0 when the loss is the end of the chain).

Device logits (a model moved with ``.to("cuda")``) run the kernels of
:mod:`npstn.kernels.cuda.loss`: log_p stays on the device for the backward,
and only the scalar loss is copied back (``forward`` returns it as a NumPy
scalar of the logits' dtype; ``reduction="none"`` returns the device array
of per-sample losses). Labels may be host or device integer arrays.
"""
from __future__ import annotations

import numpy as np

from npstn import functional as F
from npstn._backend import resolve_backend
from npstn._device import is_device_array
from npstn.functional.loss import log_softmax  # noqa: F401  (its home before the functional op)
from npstn.nn.module import Module, layer_backend

__all__ = ["CrossEntropyLoss"]

_REDUCTIONS = ("mean", "sum", "none")


class CrossEntropyLoss(Module):
    """Softmax cross-entropy between logits and integer class labels.

    Parameters
    ----------
    reduction : "mean" (default), "sum" or "none", as in torch.
    backend : {"numpy", "cpu", "cuda"} or None, of :func:`npstn.functional.cross_entropy`

    Shapes
    ------
    forward(logits, labels):
        logits : (N, K) float32/float64, unnormalised class scores
        labels : (N,) integers in [0, K)
        returns the loss: a scalar of the logits' dtype ("mean"/"sum"), or (N,) ("none")
    backward(grad=1.0):
        grad   : scalar ("mean"/"sum") or (N,) ("none"), upstream gradient of the loss
        returns dL/dlogits, (N, K), the logits' dtype
    """

    def __init__(self, reduction: str = "mean", *, backend=None):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"CrossEntropyLoss: reduction must be one of {_REDUCTIONS}, got {reduction!r}"
            )
        self.reduction = reduction
        if backend is not None:
            resolve_backend(backend)  # validates the name now rather than at the first call
        self.backend = backend
        self._logits = self._labels = None
        self._log_p = None  # (N, K) log-softmax, cached by forward

    def forward(self, logits: np.ndarray, labels: np.ndarray):
        if is_device_array(logits) and not is_device_array(labels) and hasattr(labels, "dtype") \
                and np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_:
            from npstn.kernels.cuda.loss import labels_on_device

            labels = labels_on_device(labels)  # once, for the forward and the backward
        loss, log_p = F.cross_entropy(logits, labels, reduction=self.reduction,
                                      backend=layer_backend(self.backend, logits), return_log_p=True)
        self._logits, self._labels, self._log_p = logits, labels, log_p
        return loss

    def backward(self, grad=1.0) -> np.ndarray:
        if self._log_p is None:
            raise RuntimeError(
                "CrossEntropyLoss.backward called before forward: call forward(logits, labels) first"
            )
        return F.cross_entropy_backward(grad, self._logits, self._labels, reduction=self.reduction,
                                        backend=layer_backend(self.backend, self._logits),
                                        log_p=self._log_p)

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"
