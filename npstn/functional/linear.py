"""The fully connected map y = x W^T + b, and its backward.

Shapes (torch's): input X (*, in_features), weight W (out_features,
in_features), bias b (out_features,) or None, output Y (*, out_features).
Leading dimensions are flattened into one batch axis of M rows for the
products and restored afterwards.

    forward                          backward, given G = dL/dY (M, out)
    Y = X W^T + b        (M, out)    dL/dX = G W              (M, in)
                                     dL/dW = G^T X            (out, in)   summed over the rows
                                     dL/db = sum_m G[m, :]    (out,)

Backends: "numpy" and "cpu" are the same three BLAS products (``@``);
"cuda" is the tiled GEMM of :mod:`npstn.kernels.cuda.matmul` (the bias added
in its epilogue) and a column-sum kernel for dL/db.
"""
from __future__ import annotations

from npstn._checks import check_bool, check_float_array, check_same_dtype, shape_str
from npstn._device import device_args, results_for
from npstn.functional._layer_common import check_bias, dispatch, upstream_grad

__all__ = ["linear", "linear_backward"]


def _check(input, weight, bias):
    check_float_array("linear: input", input)
    check_float_array("linear: weight", weight, 2, what="(out_features, in_features)")
    check_same_dtype("linear: input", input, "linear: weight", weight)
    if len(input.shape) < 1 or tuple(input.shape)[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input must have shape (*, in_features) = (*, {weight.shape[1]}) for a "
            f"weight of shape {shape_str(weight.shape)}, got shape {shape_str(input.shape)}"
        )
    check_bias("linear", bias, weight)


def _out_shape(input, weight):
    return (*tuple(input.shape)[:-1], int(weight.shape[0]))


def linear(input, weight, bias=None, *, backend=None):
    """y = input @ weight.T + bias, like ``torch.nn.functional.linear``.

    input (*, in_features), weight (out_features, in_features), bias
    (out_features,) or None -> (*, out_features), input's dtype. Equations in
    the module docstring.
    """
    _check(input, weight, bias)
    backend = dispatch("linear", backend, input, weight, bias)
    if backend == "cuda":
        return _linear_cuda(input, weight, bias)
    x2d = input.reshape(-1, weight.shape[1])
    y = x2d @ weight.T  # (M, out)
    if bias is not None:
        y += bias
    return y.reshape(_out_shape(input, weight))


def linear_backward(grad_output, input, weight, bias=None, *, backend=None, needs_input_grad=True):
    """(dL/dinput, dL/dweight, dL/dbias) for ``linear(input, weight, bias)``; dL/dbias is
    None when bias is None, dL/dinput None when ``needs_input_grad`` is False
    (a first layer, whose input is data: one product of three skipped).

    grad_output (*, out_features) -> shapes of input, weight and bias. The
    equations are in the module docstring.
    """
    _check(input, weight, bias)
    grad_output = upstream_grad("linear_backward", grad_output, _out_shape(input, weight), input.dtype)
    check_bool("linear_backward: needs_input_grad", needs_input_grad)
    backend = dispatch("linear_backward", backend, grad_output, input, weight, bias)
    if backend == "cuda":
        return _linear_backward_cuda(grad_output, input, weight, bias, needs_input_grad)
    out_f, in_f = weight.shape
    g2d = grad_output.reshape(-1, out_f)  # (M, out)
    x2d = input.reshape(-1, in_f)  # (M, in)
    grad_weight = g2d.T @ x2d  # (out, in)
    grad_bias = None if bias is None else g2d.sum(axis=0)  # (out,)
    grad_input = (g2d @ weight).reshape(input.shape) if needs_input_grad else None  # (M, in) -> input's shape
    return grad_input, grad_weight, grad_bias


# -- cuda: the same products on the device ---------------------------------------------

def _linear_cuda(input, weight, bias):
    from npstn.kernels.cuda import matmul

    (x, w, b), back = device_args(input, weight, bias)
    _check_contiguous(x)
    out_f, in_f = w.shape
    x2d = x.reshape(int(x.size) // in_f, in_f)
    y = matmul.gemm(x2d, w, trans_b=True, bias=b)  # X W^T + b
    return results_for(back, y.reshape(*_out_shape(x, w)))


def _linear_backward_cuda(grad_output, input, weight, bias, needs_input_grad):
    from npstn.kernels.cuda import matmul

    (g, x, w, b), back = device_args(grad_output, input, weight, bias)
    _check_contiguous(x)
    out_f, in_f = w.shape
    rows = int(x.size) // in_f
    g2d, x2d = g.reshape(rows, out_f), x.reshape(rows, in_f)
    grad_weight = matmul.gemm(g2d, x2d, trans_a=True)  # G^T X
    grad_bias = None if b is None else matmul.sum_axis(g2d, 0)  # sum_m G[m, :]
    grad_input = matmul.gemm(g2d, w).reshape(*x.shape) if needs_input_grad else None  # G W
    return results_for(back, grad_input, grad_weight, grad_bias)


def _check_contiguous(*arrays):
    for a in arrays:
        if not a.is_c_contiguous():
            raise ValueError(f"linear: device array of shape {shape_str(a.shape)} must be C-contiguous")
