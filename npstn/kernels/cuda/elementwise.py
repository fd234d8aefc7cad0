"""Element-wise CUDA kernels: fill, add, multiply, ReLU, optimiser updates, finiteness.

Every kernel runs one thread per element of flat (1-D) views of C-contiguous
device arrays; threads past the end return at once, so any size is safe.

ReLU (:class:`npstn.nn.ReLU`)::

    forward:   y = max(x, 0)                    (NaN stays NaN, as np.maximum)
    backward:  dL/dx = dL/dy * [x > 0]          (0 at x = 0 and at NaN)

SGD (:class:`npstn.nn.SGD`, torch's rule), with g = grad + wd * p::

    b <- g                                   on the first step (``first``)
    b <- momentum * b + (1 - dampening) * g  afterwards
    d  = g + momentum * b  (nesterov)   or   b   (momentum > 0)   or   g
    p <- p - lr * lr_mult * d

Adam (:class:`npstn.nn.Adam`), with g as above and c1 = 1 - b1^t, c2 = 1 - b2^t::

    m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
    p <- p - (lr * lr_mult / c1) * m / (sqrt(v / c2) + eps)

The scalars are passed in the arrays' dtype (as NumPy does with Python
scalars), so a float32 update runs in float32 like the host one; results
agree with the host to rounding (a GPU may fuse a multiply-add).

``all_finite`` checks many arrays with one flag on the device and one read
of that flag: the training loop's NaN guard without copying parameters back.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from npstn.kernels.cuda.common import cuda_module, launch_config

__all__ = ["flat", "fill", "add", "add_", "mul", "relu_forward", "relu_backward", "sgd_step",
           "adam_step", "all_finite"]


def flat(a):
    """A 1-D view of a C-contiguous device array (no copy)."""
    if len(a.shape) != 1:
        if not a.is_c_contiguous():
            raise ValueError(
                f"expected a C-contiguous device array, got shape {tuple(a.shape)} with strides "
                f"{tuple(a.strides)}; make a contiguous copy first"
            )
        return a.reshape(int(a.size))
    return a


@cuda.jit
def _fill_kernel(a, value):
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] = value


@cuda.jit
def _add_kernel(a, b, out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = a[i] + b[i]


@cuda.jit
def _mul_kernel(a, b, out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = a[i] * b[i]


@cuda.jit
def _relu_forward_kernel(x, y):
    i = cuda.grid(1)
    if i < y.shape[0]:
        v = x[i]
        if v > 0 or math.isnan(v):
            y[i] = v
        else:
            y[i] = 0


@cuda.jit
def _relu_backward_kernel(x, g, out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        if x[i] > 0:
            out[i] = g[i]
        else:
            out[i] = 0


@cuda.jit
def _sgd_kernel(p, grad, buf, lr, momentum, one_minus_dampening, weight_decay,
                use_wd, use_momentum, nesterov, first):
    i = cuda.grid(1)
    if i >= p.shape[0]:
        return
    g = grad[i]
    if use_wd:
        g = g + weight_decay * p[i]
    if use_momentum:
        if first:
            b = g
        else:
            b = momentum * buf[i]
            b = b + one_minus_dampening * g
        buf[i] = b
        if nesterov:
            g = g + momentum * b
        else:
            g = b
    p[i] = p[i] - lr * g


@cuda.jit
def _adam_kernel(p, grad, m, v, step_size, b1, one_minus_b1, b2, one_minus_b2, c2, eps,
                 weight_decay, use_wd):
    i = cuda.grid(1)
    if i >= p.shape[0]:
        return
    g = grad[i]
    if use_wd:
        g = g + weight_decay * p[i]
    mi = b1 * m[i]
    mi = mi + one_minus_b1 * g
    vi = b2 * v[i]
    vi = vi + one_minus_b2 * g * g
    m[i] = mi
    v[i] = vi
    p[i] = p[i] - step_size * mi / (math.sqrt(vi / c2) + eps)


@cuda.jit
def _finite_kernel(a, flag):
    i = cuda.grid(1)
    if i < a.shape[0]:
        if not math.isfinite(a[i]):
            flag[0] = 1  # every writer writes the same value: no race on the result


def _launch(kernel, n, *args):
    if n > 0:
        blocks, threads = launch_config(n)
        kernel[blocks, threads](*args)


def fill(a, value) -> None:
    """a[...] = value, in place, for a C-contiguous device array of any shape."""
    fa = flat(a)
    _launch(_fill_kernel, fa.shape[0], fa, np.dtype(a.dtype).type(value))


def _binary(kernel, a, b, name):
    if tuple(a.shape) != tuple(b.shape) or np.dtype(a.dtype) != np.dtype(b.dtype):
        raise ValueError(f"{name}: operands differ: {tuple(a.shape)} {a.dtype} and "
                         f"{tuple(b.shape)} {b.dtype}")
    out = cuda_module().device_array(a.shape, dtype=a.dtype)
    _launch(kernel, int(a.size), flat(a), flat(b), flat(out))
    return out


def add(a, b):
    """a + b for two device arrays of one shape and dtype (a new device array)."""
    return _binary(_add_kernel, a, b, "add")


def add_(a, b) -> None:
    """a += b in place, for two C-contiguous device arrays of one shape and dtype
    (how layers add a functional backward's parameter gradient to ``Parameter.grad``)."""
    if tuple(a.shape) != tuple(b.shape) or np.dtype(a.dtype) != np.dtype(b.dtype):
        raise ValueError(f"add_: operands differ: {tuple(a.shape)} {a.dtype} and "
                         f"{tuple(b.shape)} {b.dtype}")
    fa = flat(a)
    _launch(_add_kernel, fa.shape[0], fa, flat(b), fa)


def mul(a, b):
    """a * b element-wise (a new device array)."""
    return _binary(_mul_kernel, a, b, "mul")


def relu_forward(x):
    """max(x, 0) as a new device array of x's shape (NaN stays NaN)."""
    y = cuda_module().device_array(x.shape, dtype=x.dtype)
    _launch(_relu_forward_kernel, int(x.size), flat(x), flat(y))
    return y


def relu_backward(x, grad_out):
    """grad_out * [x > 0] as a new device array."""
    return _binary(_relu_backward_kernel, x, grad_out, "relu_backward")


def sgd_step(p, grad, buf, lr: float, momentum: float, dampening: float, weight_decay: float,
             nesterov: bool, first: bool) -> None:
    """One SGD update of device arrays ``p`` in place (and ``buf``, the momentum buffer).

    ``lr`` already includes the parameter's lr_mult. ``buf`` may be None when
    momentum is 0. See the module docstring for the equations.
    """
    t = np.dtype(p.dtype).type
    fp, fg = flat(p), flat(grad)
    use_m = momentum != 0.0
    fb = flat(buf) if use_m else fg  # unused without momentum
    _launch(_sgd_kernel, fp.shape[0], fp, fg, fb, t(lr), t(momentum), t(1.0 - dampening),
            t(weight_decay), bool(weight_decay), use_m, bool(nesterov), bool(first))


def adam_step(p, grad, m, v, step_size: float, betas, c2: float, eps: float,
              weight_decay: float) -> None:
    """One Adam update in place; ``step_size`` = lr * lr_mult / (1 - b1^t), ``c2`` = 1 - b2^t."""
    t = np.dtype(p.dtype).type
    b1, b2 = betas
    fp = flat(p)
    _launch(_adam_kernel, fp.shape[0], fp, flat(grad), flat(m), flat(v), t(step_size), t(b1),
            t(1.0 - b1), t(b2), t(1.0 - b2), t(c2), t(eps), t(weight_decay), bool(weight_decay))


def all_finite(arrays) -> bool:
    """True when every element of every device array is finite (one flag read back)."""
    cu = cuda_module()
    flag = cu.device_array(1, dtype=np.int32)
    _launch(_fill_kernel, 1, flag, np.int32(0))  # zeroed on the device: no upload
    for a in arrays:
        fa = flat(a)
        _launch(_finite_kernel, fa.shape[0], fa, flag)
    return int(flag.copy_to_host()[0]) == 0
