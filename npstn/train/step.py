"""One training step and the test error: the heart of training, in a few lines.

There is no autodiff. A step is four calls, each a hand-written pass::

    logits = model(x)                     # forward; every layer caches what its backward needs
    loss = loss_fn(logits, y)             # mean softmax cross-entropy over the batch
    optimizer.zero_grad()                 # every Parameter.grad = 0
    model.backward(loss_fn.backward())    # dL/dlogits, back through every layer into .grad
    optimizer.step()                      # SGD with momentum on every Parameter

:func:`train_step` is exactly that; :func:`npstn.train.train` wraps it with
data, the learning-rate schedule, logging, checkpoints and divergence checks.
"""
from __future__ import annotations

import numpy as np

from npstn import nn

__all__ = ["train_step", "evaluate"]


def train_step(model: nn.Module, loss_fn: nn.CrossEntropyLoss, optimizer, x, y):
    """One SGD step on the batch ``(x, y)``; returns ``(loss, logits)``.

    ``x`` (N, C, H, W) images (host or device array), ``y`` (N,) int labels.
    The loss is the batch mean (a Python float); ``logits`` (N, K) are the
    forward pass's, for counting correct predictions.
    """
    logits = model(x)
    loss = float(loss_fn(logits, y))
    optimizer.zero_grad()
    model.backward(loss_fn.backward())
    optimizer.step()
    return loss, logits


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 250) -> float:
    """Test error in percent of ``model`` on images ``x`` (N, C, H, W) with labels ``y``.

    Runs in evaluation mode, ``batch_size`` images at a time; the model's
    training mode is restored afterwards.
    """
    if len(x) != len(y):
        raise ValueError(f"evaluate: {len(x)} images but {len(y)} labels")
    if len(y) == 0:
        raise ValueError("evaluate: the test set is empty")
    was_training = model.training
    model.eval()
    wrong = 0
    try:
        for i in range(0, len(y), batch_size):
            xb = np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)
            on_device = getattr(model, "device", "cpu") == "cuda"
            pred = _predict(model, xb) if on_device else model(xb).argmax(axis=1)
            wrong += int((pred != y[i:i + batch_size]).sum())
    finally:
        model.train(was_training)
    return 100.0 * wrong / len(y)



def _predict(model, xb: np.ndarray) -> np.ndarray:
    """Predicted classes of a model on the GPU: the batch goes up, N int64 labels come back."""
    from npstn._device import to_device
    from npstn.kernels.cuda.loss import argmax_rows

    return argmax_rows(model(to_device(xb))).copy_to_host()



def _count_correct(logits, y) -> int:
    """Rows of ``logits`` whose argmax is the label (a device kernel for device logits)."""
    from npstn._device import is_device_array

    if is_device_array(logits):
        from npstn.kernels.cuda.loss import count_correct

        return count_correct(logits, y)
    return int((logits.argmax(axis=1) == y).sum())



def _all_finite(model) -> bool:
    if getattr(model, "device", "cpu") == "cuda":  # one flag for all parameters, read back once
        from npstn.kernels.cuda.elementwise import all_finite

        return all_finite([p.data for p in model.parameters()])
    return all(np.isfinite(p.data).all() for p in model.parameters())
