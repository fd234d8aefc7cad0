"""CUDA kernels of softmax cross-entropy and of classification accuracy: Numba ``@cuda.jit``.

For logits Z (N, K) and integer labels y (N,) (:class:`npstn.nn.CrossEntropyLoss`)::

    m_n        = max_k Z[n, k]
    log_p[n,k] = (Z[n,k] - m_n) - log sum_j exp(Z[n,j] - m_n)      (stable log-softmax)
    loss_n     = -log_p[n, y_n]
    dL/dZ[n,k] = (exp(log_p[n,k]) - [k == y_n]) * s_n

with s_n = grad / N ("mean"), grad ("sum") or grad[n] ("none").

* ``cross_entropy_forward``: ONE block; each thread takes rows n = tid,
  tid + T, ..., writes log_p and loss_n (row arithmetic in float64, stored in
  the logits' dtype), and the block sums the losses (and counts labels
  outside [0, K)) with a shared-memory tree into a 2-element float64 array.
  The host reads that array back: the scalar loss is the only copy per step.
  A label outside [0, K) is never used as an index: its row gets loss NaN,
  zero gradient, and the host wrapper raises ValueError.
* ``cross_entropy_backward``: one thread per (n, k).
* ``argmax_rows``: one thread per row, the index of the first maximum (a NaN
  counts as the maximum, as ``np.argmax``).
* ``count_correct``: ONE block counting rows whose argmax equals the label;
  returns a Python int (one 8-byte copy).
"""
from __future__ import annotations

import math

import numpy as np
from numba import config as _numba_config
from numba import cuda, float64, int64

from npstn.kernels.cuda.common import cuda_module, is_device_array, launch_config

__all__ = ["cross_entropy_forward", "labels_on_device", "cross_entropy_backward", "argmax_rows", "count_correct",
           "BLOCK"]

#: Threads of the one-block reductions (a power of two).
BLOCK = 8 if _numba_config.ENABLE_CUDASIM else 256


@cuda.jit(device=True, inline=True)
def _row_argmax(z, n):
    if z.shape[1] == 0:  # no classes: no prediction (-1), nothing read
        return -1
    best = z[n, 0]
    best_k = 0
    for k in range(1, z.shape[1]):
        if math.isnan(best):
            break
        v = z[n, k]
        if v > best or math.isnan(v):
            best = v
            best_k = k
    return best_k


@cuda.jit
def _ce_forward_kernel(logits, labels, log_p, losses, stats):
    s_loss = cuda.shared.array(BLOCK, float64)
    s_bad = cuda.shared.array(BLOCK, float64)
    tid = cuda.threadIdx.x
    n_rows = logits.shape[0]
    n_cls = logits.shape[1]
    acc_loss = 0.0
    acc_bad = 0.0
    if n_cls == 0:  # nothing to read (the layer refuses K = 0 before launching)
        n_rows = 0
    for n in range(tid, n_rows, BLOCK):
        m = float64(logits[n, 0])
        for k in range(1, n_cls):
            v = float64(logits[n, k])
            if v > m or math.isnan(v):
                m = v
        s = 0.0
        for k in range(n_cls):
            s += math.exp(float64(logits[n, k]) - m)
        lse = math.log(s)
        for k in range(n_cls):
            log_p[n, k] = (float64(logits[n, k]) - m) - lse
        y = labels[n]
        if y >= 0 and y < n_cls:
            losses[n] = -log_p[n, y]
            acc_loss += losses[n]
        else:
            losses[n] = math.nan
            acc_bad += 1.0
    s_loss[tid] = acc_loss
    s_bad[tid] = acc_bad
    cuda.syncthreads()
    step = BLOCK // 2
    while step > 0:
        if tid < step:
            s_loss[tid] += s_loss[tid + step]
            s_bad[tid] += s_bad[tid + step]
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        stats[0] = s_loss[0]
        stats[1] = s_bad[0]


@cuda.jit
def _ce_backward_kernel(log_p, labels, scale, row_scale, per_row, grad):
    t = cuda.grid(1)
    n_rows = log_p.shape[0]
    n_cls = log_p.shape[1]
    if t >= n_rows * n_cls:
        return
    n = t // n_cls
    k = t % n_cls
    y = labels[n]
    if y < 0 or y >= n_cls:
        grad[n, k] = 0
        return
    d = math.exp(float64(log_p[n, k]))
    if k == y:
        d -= 1.0
    if per_row:
        grad[n, k] = d * row_scale[n]
    else:
        grad[n, k] = d * scale


@cuda.jit
def _argmax_kernel(z, out):
    n = cuda.grid(1)
    if n < z.shape[0]:
        out[n] = _row_argmax(z, n)


@cuda.jit
def _count_correct_kernel(z, labels, count):
    buf = cuda.shared.array(BLOCK, int64)
    tid = cuda.threadIdx.x
    c = 0
    for n in range(tid, z.shape[0], BLOCK):
        if _row_argmax(z, n) == labels[n]:
            c += 1
    buf[tid] = c
    cuda.syncthreads()
    step = BLOCK // 2
    while step > 0:
        if tid < step:
            buf[tid] += buf[tid + step]
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        count[0] = buf[0]


def labels_on_device(labels):
    """Labels as a device array (int64 when they came from the host)."""
    if is_device_array(labels):
        return labels
    return cuda_module().to_device(np.ascontiguousarray(np.asarray(labels).astype(np.int64, copy=False)))


def cross_entropy_forward(logits, labels):
    """Device logits (N, K) and labels (N,) (host or device) ->
    (log_p (N, K), losses (N,), labels on the device, loss sum (float), bad-label count (int)).

    The two scalars come back in one copy of a 2-element array.
    """
    cu = cuda_module()
    d_labels = labels_on_device(labels)
    n, k = logits.shape
    log_p = cu.device_array((n, k), dtype=logits.dtype)
    losses = cu.device_array((n,), dtype=logits.dtype)
    stats = cu.device_array(2, dtype=np.float64)
    _ce_forward_kernel[1, BLOCK](logits, d_labels, log_p, losses, stats)
    host = stats.copy_to_host()
    return log_p, losses, d_labels, float(host[0]), int(host[1])


def cross_entropy_backward(log_p, labels, scale=None, row_scale=None):
    """dL/dZ (N, K) on the device: (exp(log_p) - onehot) * scale, or * row_scale[n]
    (a (N,) array, host or device) when ``row_scale`` is given."""
    cu = cuda_module()
    n, k = log_p.shape
    grad = cu.device_array((n, k), dtype=log_p.dtype)
    t = np.dtype(log_p.dtype).type
    per_row = row_scale is not None
    if per_row:
        rs = row_scale if is_device_array(row_scale) else cu.to_device(
            np.ascontiguousarray(row_scale, dtype=log_p.dtype))
        sc = t(0)
    else:
        rs = _unused(cu, log_p.dtype)  # a 1-element stand-in, never read
        sc = t(scale)
    if n * k:
        blocks, threads = launch_config(n * k)
        _ce_backward_kernel[blocks, threads](log_p, labels, sc, rs, per_row, grad)
    return grad


def argmax_rows(logits):
    """Device (N, K) -> device int64 (N,): the first maximum of each row."""
    cu = cuda_module()
    out = cu.device_array((logits.shape[0],), dtype=np.int64)
    if logits.shape[0]:
        blocks, threads = launch_config(logits.shape[0])
        _argmax_kernel[blocks, threads](logits, out)
    return out


def count_correct(logits, labels) -> int:
    """How many rows of device logits (N, K) have their argmax equal to the label (host or device)."""
    cu = cuda_module()
    d_labels = labels_on_device(labels)
    count = cu.device_array(1, dtype=np.int64)
    _count_correct_kernel[1, BLOCK](logits, d_labels, count)
    return int(count.copy_to_host()[0])


_UNUSED: dict = {}


def _unused(cu, dtype):
    d = _UNUSED.get(np.dtype(dtype))
    if d is None:
        d = _UNUSED[np.dtype(dtype)] = cu.to_device(np.zeros(1, dtype=dtype))
    return d
