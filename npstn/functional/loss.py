"""Cross-entropy over class logits, fused with log-softmax (as in torch), and its backward.

Shapes: input (the logits) Z (N, K), float32/float64; target (N,) integer
class indices in [0, K). For one sample with logits z and label y::

    log p_k = z_k - logsumexp(z),   logsumexp(z) = m + log sum_j exp(z_j - m),  m = max_j z_j
    loss    = -log p_y = logsumexp(z) - z_y

Subtracting the row maximum m keeps every exp() in (0, 1], so large logits
cannot overflow. Forward and backward side by side, for reduction "mean"
(the default), "sum" and "none", g the upstream gradient of the loss::

    forward                              backward (dL/dZ, (N, K))
    mean:  L = (1/N) sum_n loss_n        g (softmax(Z) - onehot(y)) / N     g a scalar
    sum:   L = sum_n loss_n              g (softmax(Z) - onehot(y))         g a scalar
    none:  L_n = loss_n          (N,)    g[n] (softmax(Z) - onehot(y))[n]   g (N,)

The integer target gets no gradient: ``cross_entropy_backward`` returns
dL/dinput alone.

Backends: "numpy" and "cpu" are the same vectorised NumPy; "cuda" runs the
kernels of :mod:`npstn.kernels.cuda.loss` (one block per call; only the
summed loss and a count of bad labels come back to the host). On the
device, a "mean" or "sum" loss is returned as a NumPy scalar of the logits'
dtype and "none" as a device array.

Saved state: ``cross_entropy(..., return_log_p=True)`` also returns the
log-softmax (N, K), which ``cross_entropy_backward(..., log_p=...)`` reuses.
"""
from __future__ import annotations

import numpy as np

from npstn._checks import check_float_array, shape_str
from npstn.functional._layer_common import dispatch
from npstn._device import device_args, is_device_array, to_host

__all__ = ["cross_entropy", "cross_entropy_backward", "log_softmax"]

_REDUCTIONS = ("mean", "sum", "none")


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable log-softmax along ``axis`` (keeps the dtype)."""
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _check(name, input, target, reduction):
    """Validate; return target (a host array is made an ndarray)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    check_float_array(f"{name} logits", input, 2, what="(N, K)")
    if not (hasattr(target, "shape") and hasattr(target, "dtype")):
        target = np.asarray(target)
    if not (np.issubdtype(target.dtype, np.integer) and target.dtype != np.bool_):
        raise TypeError(
            f"{name} labels must be integer class indices, got dtype "
            f"{target.dtype} (convert with .astype(np.int64))"
        )
    n, k = input.shape
    if tuple(target.shape) != (n,):
        raise ValueError(
            f"{name} labels must have shape (N,) = ({n},) to match logits of "
            f"shape {shape_str(input.shape)}, got shape {shape_str(target.shape)}"
        )
    if n == 0 or k == 0:
        raise ValueError(
            f"{name} logits must be non-empty (N >= 1, K >= 1), got shape {shape_str(input.shape)}"
        )
    if is_device_array(target) and not is_device_array(input):
        raise TypeError(
            f"{name}: labels are a CUDA device array but logits are a NumPy array; "
            "put both on the same device"
        )
    return target


def _check_labels_host(name, target, k, logits_shape):
    lo, hi = target.min(), target.max()
    if lo < 0 or hi >= k:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{name} labels must lie in [0, K) = [0, {k}) for logits of shape "
            f"{shape_str(logits_shape)}, got label {int(bad)}"
        )


def cross_entropy(input, target, *, reduction="mean", backend=None, return_log_p=False):
    """Softmax cross-entropy between logits ``input`` (N, K) and integer labels ``target`` (N,),
    like ``torch.nn.functional.cross_entropy``.

    Returns the loss: a scalar of the logits' dtype ("mean", "sum") or (N,)
    ("none"); with ``return_log_p`` also the log-softmax (N, K) for
    ``cross_entropy_backward``. Equations in the module docstring.
    """
    name = "cross_entropy"
    target = _check(name, input, target, reduction)
    n, k = input.shape
    backend = dispatch("cross_entropy", backend, input, target)
    if backend == "cuda":
        from npstn.kernels.cuda import loss as _kc

        (z,), back = device_args(input)
        log_p, losses, _, total, bad = _kc.cross_entropy_forward(z, target)
        if bad:
            raise ValueError(
                f"{name} labels must lie in [0, K) = [0, {k}) for logits of shape "
                f"{shape_str(input.shape)}, got {bad} label(s) outside that range"
            )
        t = np.dtype(z.dtype).type
        if reduction == "none":
            loss = losses.copy_to_host() if back else losses
        else:
            loss = t(total) if reduction == "sum" else t(total / n)
        if return_log_p:
            return loss, (log_p.copy_to_host() if back else log_p)
        return loss
    _check_labels_host(name, target, k, input.shape)
    target = target.astype(np.int64, copy=False)
    log_p = log_softmax(input, axis=1)
    losses = -log_p[np.arange(n), target]  # (N,)
    loss = losses if reduction == "none" else losses.sum() if reduction == "sum" else losses.mean()
    return (loss, log_p) if return_log_p else loss


def cross_entropy_backward(grad_output, input, target, *, reduction="mean", backend=None,
                           log_p=None):
    """dL/dinput (N, K) for ``cross_entropy(input, target, reduction=...)``.

    ``grad_output``: the upstream gradient of the loss, a scalar ("mean",
    "sum"; 1.0 at the end of the chain) or (N,) ("none"). ``log_p``: the
    log-softmax ``cross_entropy(input, target, ..., return_log_p=True)``
    returned for these same arrays (saved state; its forward checked the
    labels); None recomputes it. Equations in the module docstring.
    """
    name = "cross_entropy_backward"
    target = _check(name, input, target, reduction)
    n, k = input.shape
    dtype = np.dtype(input.dtype)
    want = (n,) if reduction == "none" else ()
    got = tuple(grad_output.shape) if is_device_array(grad_output) else np.shape(grad_output)
    if got != want:
        raise ValueError(
            f"{name}: grad must have the loss's shape {shape_str(want)} "
            f"(reduction={reduction!r}), got {shape_str(got)}"
        )
    backend = dispatch("cross_entropy_backward", backend, grad_output, input, target, log_p)
    if backend == "cuda":
        from npstn.kernels.cuda import loss as _kc

        (z, lp), back = device_args(input, log_p)
        if lp is None:
            lp, _, labels, _, bad = _kc.cross_entropy_forward(z, target)
            if bad:
                raise ValueError(f"{name} labels must lie in [0, K) = [0, {k}), got {bad} "
                                 "label(s) outside that range")
        else:
            labels = _kc.labels_on_device(target)
        if reduction == "none":
            g = grad_output
            if is_device_array(g) and np.dtype(g.dtype) != dtype:
                g = to_host(g)
            grad = _kc.cross_entropy_backward(lp, labels, row_scale=g)
        else:
            g = np.asarray(to_host(grad_output), dtype=dtype)
            if reduction == "mean":
                g = g / dtype.type(n)
            grad = _kc.cross_entropy_backward(lp, labels, scale=g[()])
        return grad.copy_to_host() if back else grad
    if log_p is None:  # (a saved log_p comes from a forward that checked these labels)
        _check_labels_host(name, target, k, input.shape)
        log_p = log_softmax(input, axis=1)
    target = target.astype(np.int64, copy=False)
    grad = np.asarray(grad_output, dtype=dtype)
    d = np.exp(log_p)  # softmax, (N, K)
    d[np.arange(n), target] -= 1
    if reduction == "none":
        return d * grad[:, None]
    if reduction == "mean":
        grad = grad / dtype.type(n)
    return d * grad
