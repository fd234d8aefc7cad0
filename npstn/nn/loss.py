"""Cross-entropy loss over class logits, fused with log-softmax (as in torch).

For one sample with logits z (K,) and integer label y,

    log p_k = z_k - logsumexp(z),   logsumexp(z) = m + log sum_j exp(z_j - m),  m = max_j z_j
    loss    = -log p_y = logsumexp(z) - z_y

Subtracting the row maximum m keeps every exp() in (0, 1], so large logits
cannot overflow. The derivative of the loss with respect to the logits is

    d loss / d z_k = softmax(z)_k - [k == y]

and with ``reduction="mean"`` (the default) over a batch of N samples,

    L = (1/N) sum_n loss_n,     dL/dZ = (softmax(Z) - onehot(y)) / N.

``backward(grad)`` multiplies by the upstream gradient ``grad`` (1.0 when the
loss is the end of the chain).

Device logits (a model moved with ``.to("cuda")``) run the kernels of
:mod:`npstn.kernels.cuda.loss`: log_p stays on the device for the backward,
and only the scalar loss is copied back (``forward`` returns it as a NumPy
scalar of the logits' dtype; ``reduction="none"`` returns the device array
of per-sample losses). Labels may be host or device integer arrays.
"""
from __future__ import annotations

import numpy as np

from npstn._checks import check_float_array, shape_str
from npstn._device import is_device_array, to_host
from npstn.nn.module import Module

__all__ = ["CrossEntropyLoss"]

_REDUCTIONS = ("mean", "sum", "none")


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable log-softmax along ``axis`` (keeps the dtype)."""
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


class CrossEntropyLoss(Module):
    """Softmax cross-entropy between logits and integer class labels.

    Parameters
    ----------
    reduction : "mean" (default), "sum" or "none", as in torch.

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

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"CrossEntropyLoss: reduction must be one of {_REDUCTIONS}, got {reduction!r}"
            )
        self.reduction = reduction
        self._log_p = None  # (N, K) log-softmax, cached by forward
        self._labels = None

    def forward(self, logits: np.ndarray, labels: np.ndarray):
        check_float_array("CrossEntropyLoss logits", logits, 2, what="(N, K)")
        if not (hasattr(labels, "shape") and hasattr(labels, "dtype")):
            labels = np.asarray(labels)
        if not (np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_):
            raise TypeError(
                f"CrossEntropyLoss labels must be integer class indices, got dtype "
                f"{labels.dtype} (convert with .astype(np.int64))"
            )
        n, k = logits.shape
        if labels.shape != (n,):
            raise ValueError(
                f"CrossEntropyLoss labels must have shape (N,) = ({n},) to match logits of "
                f"shape {shape_str(logits.shape)}, got shape {shape_str(labels.shape)}"
            )
        if n == 0 or k == 0:
            raise ValueError(
                f"CrossEntropyLoss logits must be non-empty (N >= 1, K >= 1), got shape "
                f"{shape_str(logits.shape)}"
            )
        if is_device_array(logits) or is_device_array(labels):
            return self._forward_cuda(logits, labels)
        lo, hi = labels.min(), labels.max()
        if lo < 0 or hi >= k:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"CrossEntropyLoss labels must lie in [0, K) = [0, {k}) for logits of shape "
                f"{shape_str(logits.shape)}, got label {int(bad)}"
            )
        labels = labels.astype(np.int64, copy=False)
        log_p = log_softmax(logits, axis=1)
        losses = -log_p[np.arange(n), labels]  # (N,)
        self._log_p, self._labels = log_p, labels
        if self.reduction == "none":
            return losses
        if self.reduction == "sum":
            return losses.sum()
        return losses.mean()

    def backward(self, grad=1.0) -> np.ndarray:
        if self._log_p is None:
            raise RuntimeError(
                "CrossEntropyLoss.backward called before forward: call forward(logits, labels) first"
            )
        n = self._log_p.shape[0]
        dtype = self._log_p.dtype
        if is_device_array(self._log_p):
            return self._backward_cuda(grad)
        grad = np.asarray(grad, dtype=dtype)
        want = (n,) if self.reduction == "none" else ()
        if grad.shape != want:
            raise ValueError(
                f"CrossEntropyLoss.backward: grad must have the loss's shape {shape_str(want)} "
                f"(reduction={self.reduction!r}), got {shape_str(grad.shape)}"
            )
        d = np.exp(self._log_p)  # softmax, (N, K)
        d[np.arange(n), self._labels] -= 1
        if self.reduction == "none":
            return d * grad[:, None]
        if self.reduction == "mean":
            grad = grad / dtype.type(n)
        return d * grad

    # -- the GPU path ----------------------------------------------------------------
    def _forward_cuda(self, logits, labels):
        from npstn.kernels.cuda import loss as _kc

        if not is_device_array(logits):
            raise TypeError(
                "CrossEntropyLoss: labels are a CUDA device array but logits are a NumPy array; "
                "put both on the same device"
            )
        n, k = logits.shape
        log_p, losses, d_labels, total, bad = _kc.cross_entropy_forward(logits, labels)
        if bad:
            raise ValueError(
                f"CrossEntropyLoss labels must lie in [0, K) = [0, {k}) for logits of shape "
                f"{shape_str(logits.shape)}, got {bad} label(s) outside that range"
            )
        self._log_p, self._labels = log_p, d_labels
        t = np.dtype(logits.dtype).type
        if self.reduction == "none":
            return losses
        if self.reduction == "sum":
            return t(total)
        return t(total / n)

    def _backward_cuda(self, grad):
        from npstn.kernels.cuda import loss as _kc

        n = self._log_p.shape[0]
        dtype = np.dtype(self._log_p.dtype)
        want = (n,) if self.reduction == "none" else ()
        got = tuple(grad.shape) if is_device_array(grad) else np.shape(grad)
        if got != want:
            raise ValueError(
                f"CrossEntropyLoss.backward: grad must have the loss's shape {shape_str(want)} "
                f"(reduction={self.reduction!r}), got {shape_str(got)}"
            )
        if self.reduction == "none":
            if is_device_array(grad) and np.dtype(grad.dtype) != dtype:
                grad = to_host(grad)
            return _kc.cross_entropy_backward(self._log_p, self._labels, row_scale=grad)
        g = np.asarray(to_host(grad), dtype=dtype)
        if self.reduction == "mean":
            g = g / dtype.type(n)
        return _kc.cross_entropy_backward(self._log_p, self._labels, scale=g[()])

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"
