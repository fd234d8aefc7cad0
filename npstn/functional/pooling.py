"""2-D max and average pooling with torch's exact semantics, and their backwards.

Shapes: input (N, C, H, W) (or one unbatched image (C, H, W)) -> output
(N, C, H_out, W_out), the input's dtype. Per spatial dim (H shown, W alike),
with kernel k, stride s (default k) and padding pad <= k // 2, as torch::

    H_out = floor((H + 2 pad - k + (s - 1 if ceil_mode else 0)) / s) + 1
    if ceil_mode and (H_out - 1) * s >= H + pad:   # last window would start in the
        H_out -= 1                                 # right padding: drop it

The window of output row oh is rows [oh*s - pad, oh*s - pad + k), clipped to
the input (rows outside it are padding).

Max pooling (padding counts as -inf), forward and backward::

    y[n,c,oh,ow] = max over the window of x[n,c,ih,iw]
    dL/dx[n,c,ih,iw] = sum of dL/dy[n,c,oh,ow] over the windows whose argmax is (ih, iw)

ReLU then max pooling, fused (``relu_max_pool2d``: what ``ReLU()`` followed by
``MaxPool2d`` computes, in one pass over the input instead of three). relu is
monotone, so the maximum of relu(x) is relu of the maximum of x, and the
gradient reaches the argmax of x only where that maximum is positive::

    y[n,c,oh,ow] = max(0, max over the window of x[n,c,ih,iw])
    dL/dx[n,c,ih,iw] = sum of dL/dy[n,c,oh,ow] * [x[n,c,ih,iw] > 0]
                       over the windows whose argmax is (ih, iw)

The same values and gradients as ``max_pool2d(relu(x))`` and its chain of
backwards, bit for bit (the backward adds the same terms in the same order).

The argmax is the *first* maximum in row-major scan order of the window, as
in torch (ties resolve the same way: a sub-gradient choice); a NaN in the
window wins (the last NaN in scan order), so NaN propagates. ``indices``
(``return_indices=True``, torch's convention) holds the argmax as a flat
index ih * W + iw into each plane.

Average pooling, forward and backward::

    y[n,c,oh,ow] = (1 / D) * sum over the window of x[n,c,ih,iw]
    dL/dx[n,c,ih,iw] = sum over the windows containing (ih, iw) of dL/dy[n,c,oh,ow] / D

where the divisor D is ``divisor_override`` if given; else, with
``count_include_pad`` (the default), the window's area clipped to the padded
input (smaller for the last ceil_mode window); else the number of real input
pixels in the window. Sums are accumulated in float64.

Backends: "numpy", the vectorised specification below (windows gathered by
index arithmetic, no loop over pixels); "cpu", the Numba kernels of
:mod:`npstn.kernels.cpu.pool` (parallel over the N*C planes); "cuda", the
kernels of :mod:`npstn.kernels.cuda.pool`.
"""
from __future__ import annotations

import numpy as np

from npstn._checks import check_float_array, pair, shape_str
from npstn._device import device_args, is_device_array, results_for
from npstn.functional._layer_common import dispatch, upstream_grad
from npstn.functional.activation import relu, relu_backward
from npstn.kernels.cpu import pool as _k

__all__ = ["max_pool2d", "max_pool2d_backward", "relu_max_pool2d", "relu_max_pool2d_backward",
           "avg_pool2d", "avg_pool2d_backward", "pool_output_size", "pool_params"]


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """Torch's pooling output length along one dimension (may be < 1 for a too-small input)."""
    out = (size + 2 * padding - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pool_params(name: str, kernel_size, stride=None, padding=0):
    """Validated ((kh, kw), (sh, sw), (ph, pw)); stride None means kernel_size."""
    k = pair(kernel_size, f"{name}: kernel_size")
    s = k if stride is None else pair(stride, f"{name}: stride")
    p = pair(padding, f"{name}: padding")
    if min(k) < 1:
        raise ValueError(f"{name}: kernel_size must be positive, got {kernel_size!r}")
    if min(s) < 1:
        raise ValueError(f"{name}: stride must be positive, got {stride!r}")
    if min(p) < 0:
        raise ValueError(f"{name}: padding must be non-negative, got {padding!r}")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(
            f"{name}: padding should be at most half of kernel_size, got padding={padding!r} "
            f"and kernel_size={kernel_size!r} (torch requires padding <= kernel_size // 2)"
        )
    return k, s, p


def _geometry(name, input, kernel_size, stride, padding, ceil_mode):
    """Validate; return (kh, kw, sh, sw, ph, pw, out_h, out_w)."""
    (kh, kw), (sh, sw), (ph, pw) = pool_params(name, kernel_size, stride, padding)
    check_float_array(f"{name} input", input)
    if len(input.shape) not in (3, 4):
        raise ValueError(
            f"{name} input must have 4 dimensions (N, C, H, W) (or 3 for one unbatched "
            f"image (C, H, W)), got shape {shape_str(input.shape)}"
        )
    H, W = tuple(input.shape)[-2:]
    if H < 1 or W < 1:
        raise ValueError(f"{name} input must have H, W >= 1, got shape {shape_str(input.shape)}")
    out_h = pool_output_size(H, kh, sh, ph, ceil_mode)
    out_w = pool_output_size(W, kw, sw, pw, ceil_mode)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"{name}: kernel_size={kernel_size!r} is larger than the padded input: input "
            f"of shape {shape_str(input.shape)} with padding={padding!r} is "
            f"{H + 2 * ph}x{W + 2 * pw} padded, and the output size would be "
            f"{out_h}x{out_w}; use a smaller kernel or a larger input"
        )
    if is_device_array(input) and not input.is_c_contiguous():
        raise ValueError(f"{name}: device input of shape {shape_str(input.shape)} must be C-contiguous")
    return kh, kw, sh, sw, ph, pw, out_h, out_w


def _planes(a, h, w):
    """(..., h, w) -> (P, h, w) planes: a view of a contiguous (host or device) array."""
    if is_device_array(a):
        return a.reshape(int(a.size) // (h * w), h, w)
    return np.ascontiguousarray(a).reshape(-1, h, w)


# -- the NumPy specification -------------------------------------------------------------

def _windows(H, W, kh, kw, sh, sw, ph, pw, out_h, out_w):
    """Input coordinates of every window element, clipped into the input, and whether each
    lies inside it: (ih (out_h, 1, kh, 1), iw (1, out_w, 1, kw), valid (out_h, out_w, kh, kw))."""
    ih = np.arange(out_h)[:, None] * sh - ph + np.arange(kh)[None, :]  # (out_h, kh)
    iw = np.arange(out_w)[:, None] * sw - pw + np.arange(kw)[None, :]  # (out_w, kw)
    valid = (((ih >= 0) & (ih < H))[:, None, :, None] & ((iw >= 0) & (iw < W))[None, :, None, :])
    ih = np.clip(ih, 0, H - 1)[:, None, :, None]
    iw = np.clip(iw, 0, W - 1)[None, :, None, :]
    return ih, iw, valid


def _max_pool_numpy(x, kh, kw, sh, sw, ph, pw, out_h, out_w):
    """x (P, H, W) -> (out, indices), both (P, out_h, out_w)."""
    P, H, W = x.shape
    ih, iw, valid = _windows(H, W, kh, kw, sh, sw, ph, pw, out_h, out_w)
    K = kh * kw
    v = x[:, ih, iw].reshape(P, out_h, out_w, K)  # v[p, oh, ow, k]: window element k
    valid = valid.reshape(out_h, out_w, K)
    flat = np.broadcast_to(ih * W + iw, (out_h, out_w, kh, kw)).reshape(out_h, out_w, K)
    nan = np.isnan(v) & valid
    best = np.where(valid & ~nan, v, -np.inf).max(axis=-1, keepdims=True)
    first_best = np.argmax(valid & ~nan & (v == best), axis=-1)  # first maximum in scan order
    last_nan = K - 1 - np.argmax(nan[..., ::-1], axis=-1)
    k = np.where(nan.any(axis=-1), last_nan, first_best)  # (P, out_h, out_w)
    out = np.take_along_axis(v, k[..., None], axis=-1)[..., 0]
    indices = np.take_along_axis(np.broadcast_to(flat, v.shape), k[..., None], axis=-1)[..., 0]
    return out.astype(x.dtype, copy=False), indices.astype(np.int64, copy=False)


def _max_pool_backward_numpy(g, indices, H, W):
    """g, indices (P, out_h, out_w) -> grad_in (P, H, W): g added at each argmax."""
    P = g.shape[0]
    grad_in = np.zeros((P, H * W), dtype=g.dtype)
    planes = np.broadcast_to(np.arange(P)[:, None, None], g.shape)
    np.add.at(grad_in, (planes, indices), g)  # repeated indices add up
    return grad_in.reshape(P, H, W)


def _avg_divisors(H, W, kh, kw, sh, sw, ph, pw, out_h, out_w, count_include_pad, divisor):
    """D for every window, (out_h, out_w), float64; 0 where a window has no input pixel."""
    def axis(out, s, p, k, size):
        start = np.arange(out) * s - p
        inside = np.minimum(start + k, size) - np.maximum(start, 0)
        padded = np.minimum(start + k, size + p) - start
        return inside, padded

    in_h, pad_h = axis(out_h, sh, ph, kh, H)
    in_w, pad_w = axis(out_w, sw, pw, kw, W)
    real = np.outer(in_h, in_w).astype(np.float64)
    if divisor:
        d = np.full((out_h, out_w), float(divisor))
    elif count_include_pad:
        d = np.outer(pad_h, pad_w).astype(np.float64)
    else:
        d = real
    return np.where(real > 0, d, 0.0)


def _avg_pool_numpy(x, kh, kw, sh, sw, ph, pw, out_h, out_w, count_include_pad, divisor):
    P, H, W = x.shape
    ih, iw, valid = _windows(H, W, kh, kw, sh, sw, ph, pw, out_h, out_w)
    sums = np.where(valid, x[:, ih, iw], 0).sum(axis=(-2, -1), dtype=np.float64)  # (P, out_h, out_w)
    d = _avg_divisors(H, W, kh, kw, sh, sw, ph, pw, out_h, out_w, count_include_pad, divisor)
    out = np.divide(sums, d, out=np.zeros_like(sums), where=d > 0)  # all-padding windows give 0
    return out.astype(x.dtype)


def _avg_pool_backward_numpy(g, H, W, kh, kw, sh, sw, ph, pw, count_include_pad, divisor):
    P, out_h, out_w = g.shape
    d = _avg_divisors(H, W, kh, kw, sh, sw, ph, pw, out_h, out_w, count_include_pad, divisor)
    share = np.divide(g, d, out=np.zeros(g.shape), where=d > 0)  # float64, (P, out_h, out_w)
    grad_in = np.zeros((P, H, W))
    for i in range(kh):  # one kernel offset at a time: its windows hit distinct pixels
        ih = np.arange(out_h) * sh - ph + i
        rows = (ih >= 0) & (ih < H)
        for j in range(kw):
            iw = np.arange(out_w) * sw - pw + j
            cols = (iw >= 0) & (iw < W)
            grad_in[:, ih[rows][:, None], iw[cols][None, :]] += share[:, rows][:, :, cols]
    return grad_in.astype(g.dtype)


# -- max_pool2d --------------------------------------------------------------------------

def max_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, *,
               return_indices=False, backend=None):
    """Maximum over each window, like ``torch.nn.functional.max_pool2d`` (dilation 1).

    input (N, C, H, W) or (C, H, W) -> output (N, C, H_out, W_out), and with
    ``return_indices`` the argmax indices (int64, same shape; flat indices
    ih * W + iw, torch's convention), which ``max_pool2d_backward`` accepts.
    Equations in the module docstring.
    """
    kh, kw, sh, sw, ph, pw, out_h, out_w = _geometry("max_pool2d", input, kernel_size, stride,
                                                     padding, ceil_mode)
    H, W = tuple(input.shape)[-2:]
    out_shape = (*tuple(input.shape)[:-2], out_h, out_w)
    backend = dispatch("max_pool2d", backend, input)
    if backend == "cuda":
        from npstn.kernels.cuda import pool as _kc

        (x,), back = device_args(input)
        out, idx = _kc.max_pool2d_forward(_planes(x, H, W), kh, kw, sh, sw, ph, pw, out_h, out_w)
        out, idx = out.reshape(*out_shape), idx.reshape(*out_shape)
        out, idx = results_for(back, out, idx if return_indices else None)
    else:
        run = _max_pool_numpy if backend == "numpy" else _k.max_pool2d_forward
        out, idx = run(_planes(input, H, W), kh, kw, sh, sw, ph, pw, out_h, out_w)
        out, idx = out.reshape(out_shape), idx.reshape(out_shape)
    return (out, idx) if return_indices else out


def _max_backward_args(name, grad_output, input, kernel_size, stride, padding, ceil_mode, indices):
    """The checked arguments of a max-pool backward: (geometry, H, W, grad_output).

    ``indices`` (saved state), when given, must have the output's shape.
    """
    geo = _geometry(name, input, kernel_size, stride, padding, ceil_mode)
    out_h, out_w = geo[-2:]
    H, W = tuple(input.shape)[-2:]
    out_shape = (*tuple(input.shape)[:-2], out_h, out_w)
    grad_output = upstream_grad(name, grad_output, out_shape, input.dtype)
    if indices is not None and tuple(indices.shape) != out_shape:
        raise ValueError(f"{name}: indices must have the output's shape "
                         f"{shape_str(out_shape)}, got {shape_str(indices.shape)}")
    return geo, H, W, grad_output


def max_pool2d_backward(grad_output, input, kernel_size, stride=None, padding=0, ceil_mode=False,
                        *, indices=None, backend=None):
    """dL/dinput for ``max_pool2d(input, kernel_size, stride, padding, ceil_mode)``.

    grad_output (N, C, H_out, W_out) -> (N, C, H, W). ``indices``: the argmax
    ``max_pool2d(..., return_indices=True)`` returned for this input (saved
    state); None recomputes it. Equations in the module docstring.
    """
    (kh, kw, sh, sw, ph, pw, out_h, out_w), H, W, grad_output = _max_backward_args(
        "max_pool2d_backward", grad_output, input, kernel_size, stride, padding, ceil_mode, indices)
    backend = dispatch("max_pool2d_backward", backend, grad_output, input, indices)
    if indices is None:
        _, indices = max_pool2d(input, kernel_size, stride, padding, ceil_mode,
                                return_indices=True, backend=backend)
    if backend == "cuda":
        from npstn.kernels.cuda import pool as _kc

        (g, idx), back = device_args(grad_output, indices)
        back = back and not is_device_array(input)
        grad_in = _kc.max_pool2d_backward(_planes(g, out_h, out_w), _planes(idx, out_h, out_w),
                                          H, W, kh, kw, sh, sw, ph, pw)
        return results_for(back, grad_in.reshape(*input.shape))
    g, idx = _planes(grad_output, out_h, out_w), _planes(np.asarray(indices, np.int64), out_h, out_w)
    if backend == "numpy":
        return _max_pool_backward_numpy(g, idx, H, W).reshape(input.shape)
    return _k.max_pool2d_backward(g, idx, H, W).reshape(input.shape)


# -- relu_max_pool2d: relu then max pooling, fused ------------------------------------

def relu_max_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, *,
                    return_indices=False, backend=None):
    """``max_pool2d(relu(input), ...)`` in one pass: relu of each window's maximum.

    Shapes and arguments as :func:`max_pool2d`; ``indices`` (with
    ``return_indices``) are the argmax of ``input`` in each window, which
    :func:`relu_max_pool2d_backward` accepts. Equations in the module docstring.
    """
    kh, kw, sh, sw, ph, pw, out_h, out_w = _geometry("relu_max_pool2d", input, kernel_size, stride,
                                                     padding, ceil_mode)
    backend = dispatch("relu_max_pool2d", backend, input)
    if backend != "cpu":  # the specification: the two ops one after the other
        out, idx = max_pool2d(input, kernel_size, stride, padding, ceil_mode, return_indices=True,
                              backend=backend)
        out = relu(out, backend=backend)
    else:
        H, W = tuple(input.shape)[-2:]
        out_shape = (*tuple(input.shape)[:-2], out_h, out_w)
        out, idx = _k.max_pool2d_forward(_planes(input, H, W), kh, kw, sh, sw, ph, pw, out_h, out_w,
                                         relu=True)
        out, idx = out.reshape(out_shape), idx.reshape(out_shape)
    return (out, idx) if return_indices else out


def relu_max_pool2d_backward(grad_output, input, kernel_size, stride=None, padding=0,
                             ceil_mode=False, *, indices=None, backend=None):
    """dL/dinput for ``relu_max_pool2d(input, kernel_size, stride, padding, ceil_mode)``.

    grad_output (N, C, H_out, W_out) -> (N, C, H, W). ``indices``: the argmax
    ``relu_max_pool2d(..., return_indices=True)`` returned (saved state); None
    recomputes it. Equations in the module docstring.
    """
    (kh, kw, sh, sw, ph, pw, out_h, out_w), H, W, grad_output = _max_backward_args(
        "relu_max_pool2d_backward", grad_output, input, kernel_size, stride, padding, ceil_mode, indices)
    backend = dispatch("relu_max_pool2d_backward", backend, grad_output, input, indices)
    if backend != "cpu":  # the specification: the chain rule through the two ops
        pooled, idx = max_pool2d(input, kernel_size, stride, padding, ceil_mode,
                                 return_indices=True, backend=backend)
        g = relu_backward(grad_output, pooled, backend=backend)
        return max_pool2d_backward(g, input, kernel_size, stride, padding, ceil_mode,
                                   indices=idx if indices is None else indices, backend=backend)
    if indices is None:
        _, indices = relu_max_pool2d(input, kernel_size, stride, padding, ceil_mode,
                                     return_indices=True, backend=backend)
    g, idx = _planes(grad_output, out_h, out_w), _planes(np.asarray(indices, np.int64), out_h, out_w)
    return _k.max_pool2d_backward(g, idx, H, W, x=_planes(input, H, W)).reshape(input.shape)


# -- avg_pool2d --------------------------------------------------------------------------

def _divisor_arg(divisor_override) -> int:
    if divisor_override is None:
        return 0
    if (isinstance(divisor_override, bool) or not isinstance(divisor_override, (int, np.integer))
            or divisor_override < 1):
        raise ValueError(f"avg_pool2d: divisor_override must be None or a positive int, got "
                         f"{divisor_override!r}")
    return int(divisor_override)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, backend=None):
    """Mean over each window, like ``torch.nn.functional.avg_pool2d``.

    input (N, C, H, W) or (C, H, W) -> output (N, C, H_out, W_out), the
    input's dtype. Equations (and the divisor) in the module docstring.
    """
    kh, kw, sh, sw, ph, pw, out_h, out_w = _geometry("avg_pool2d", input, kernel_size, stride,
                                                     padding, ceil_mode)
    div, cip = _divisor_arg(divisor_override), bool(count_include_pad)
    H, W = tuple(input.shape)[-2:]
    out_shape = (*tuple(input.shape)[:-2], out_h, out_w)
    backend = dispatch("avg_pool2d", backend, input)
    if backend == "cuda":
        from npstn.kernels.cuda import pool as _kc

        (x,), back = device_args(input)
        out = _kc.avg_pool2d_forward(_planes(x, H, W), kh, kw, sh, sw, ph, pw, out_h, out_w, cip, div)
        return results_for(back, out.reshape(*out_shape))
    run = _avg_pool_numpy if backend == "numpy" else _k.avg_pool2d_forward
    return run(_planes(input, H, W), kh, kw, sh, sw, ph, pw, out_h, out_w, cip, div).reshape(out_shape)


def avg_pool2d_backward(grad_output, input, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, *, backend=None):
    """dL/dinput for ``avg_pool2d(input, ...)`` with the same arguments.

    grad_output (N, C, H_out, W_out) -> (N, C, H, W). Only input's shape and
    dtype are read. Equations in the module docstring.
    """
    kh, kw, sh, sw, ph, pw, out_h, out_w = _geometry("avg_pool2d_backward", input, kernel_size,
                                                     stride, padding, ceil_mode)
    div, cip = _divisor_arg(divisor_override), bool(count_include_pad)
    H, W = tuple(input.shape)[-2:]
    out_shape = (*tuple(input.shape)[:-2], out_h, out_w)
    grad_output = upstream_grad("avg_pool2d_backward", grad_output, out_shape, input.dtype)
    backend = dispatch("avg_pool2d_backward", backend, grad_output, input)
    if backend == "cuda":
        from npstn.kernels.cuda import pool as _kc

        (g,), back = device_args(grad_output)
        back = back and not is_device_array(input)
        grad_in = _kc.avg_pool2d_backward(_planes(g, out_h, out_w), kh, kw, sh, sw, ph, pw, H, W,
                                          cip, div)
        return results_for(back, grad_in.reshape(*input.shape))
    g = _planes(grad_output, out_h, out_w)
    if backend == "numpy":
        grad_in = _avg_pool_backward_numpy(g, H, W, kh, kw, sh, sw, ph, pw, cip, div)
    else:
        grad_in = _k.avg_pool2d_backward(g, kh, kw, sh, sw, ph, pw, H, W, cip, div)
    return grad_in.reshape(input.shape)
