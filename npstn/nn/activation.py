"""Parameter-free layers: ReLU, Softmax, Flatten, Dropout.

ReLU is the layer around :func:`npstn.functional.relu` (y = max(x, 0); its
equations, with the sub-gradient at 0, are in :mod:`npstn.functional.activation`).
Softmax(dim) is the layer around :func:`npstn.functional.softmax` (its forward
and backward are in the same module).

Flatten(start_dim=1, end_dim=-1) is a reshape, so its backward is the inverse
reshape: (N, C, H, W) -> (N, C*H*W) and back.

Dropout(p), inverted dropout as in torch. In training mode each element is
kept with probability 1 - p and the survivors are scaled so that the
expectation is unchanged::

    m ~ Bernoulli(1 - p)  (one draw per element, a new mask each forward)
    forward:   y = x * m / (1 - p)
    backward:  dL/dx = dL/dy * m / (1 - p)

In evaluation mode (``module.eval()``) dropout is the identity.

Device arrays (after ``model.to("cuda")``) stay on the device: ReLU runs
the element-wise kernels of :mod:`npstn.kernels.cuda.elementwise`, Flatten
reshapes the (contiguous) device array, and Dropout draws its mask on the
host from the same generator as on the CPU (so both devices drop the same
elements) and uploads it, one host-to-device copy per training forward.
"""
from __future__ import annotations

import numpy as np

from npstn import functional as F
from npstn._backend import resolve_backend
from npstn._checks import check_float_array, shape_str
from npstn._device import is_device_array, to_device
from npstn.nn import init
from npstn.nn.module import Module, layer_backend, layer_grad

__all__ = ["ReLU", "Softmax", "Flatten", "Dropout"]


class ReLU(Module):
    """y = max(x, 0), element-wise (NaN stays NaN, as in torch).

    Parameters
    ----------
    backend : {"numpy", "cpu", "cuda"} or None, of :func:`npstn.functional.relu`

    Shapes: input any shape; output the same shape and dtype.
    """

    def __init__(self, *, backend=None):
        super().__init__()
        if backend is not None:
            resolve_backend(backend)  # validates the name now rather than at the first call
        self.backend = backend
        self._x = None  # the input, cached by forward ([x > 0] is read in the backward)

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array("ReLU input", x)
        self._x = x
        return F.relu(x, backend=layer_backend(self.backend, x))

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._x is None:
            raise RuntimeError("ReLU.backward called before forward: call forward(x) first")
        x = self._x
        grad_out = layer_grad("ReLU", grad_out, is_device_array(x), x.shape, x.dtype)
        return F.relu_backward(grad_out, x, backend=layer_backend(self.backend, x))


class Softmax(Module):
    """exp(x) normalised to sum 1 along ``dim``, like ``torch.nn.Softmax(dim)``.

    Shapes: input any shape with ``dim`` among its axes; output the same shape and dtype.
    """

    def __init__(self, dim: int = -1):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise ValueError(f"Softmax: dim must be an int, got {dim!r}")
        self.dim = int(dim)
        self._x = self._y = None  # the input and output, cached by forward for the backward

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array("Softmax input", x)
        self._x = x
        self._y = F.softmax(x, self.dim)
        return self._y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._x is None:
            raise RuntimeError("Softmax.backward called before forward: call forward(x) first")
        x = self._x
        grad_out = layer_grad("Softmax", grad_out, is_device_array(x), x.shape, x.dtype)
        return F.softmax_backward(grad_out, x, self.dim, output=self._y)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Flatten(Module):
    """Merge dims ``start_dim..end_dim`` into one, like ``torch.nn.Flatten``.

    Shapes: (N, C, H, W) -> (N, C*H*W) with the defaults start_dim=1, end_dim=-1.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        for name, v in (("start_dim", start_dim), ("end_dim", end_dim)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise TypeError(f"Flatten: {name} must be an int, got {v!r}")
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)
        self._in_shape = None
        self._dtype = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array("Flatten input", x)
        nd = max(x.ndim, 1)  # torch treats a 0-d tensor like a 1-d one here
        s = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        e = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not (0 <= s < nd and 0 <= e < nd):
            raise ValueError(
                f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}) is out of range "
                f"for an input of shape {shape_str(x.shape)} ({x.ndim} dims)"
            )
        if s > e:
            raise ValueError(
                f"Flatten: start_dim={self.start_dim} comes after end_dim={self.end_dim} "
                f"for an input of shape {shape_str(x.shape)}"
            )
        self._in_shape, self._dtype = x.shape, x.dtype
        shape = x.shape if x.ndim else (1,)
        merged = int(np.prod(shape[s:e + 1], dtype=np.int64))
        return x.reshape(*shape[:s], merged, *shape[e + 1:])

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._in_shape is None:
            raise RuntimeError("Flatten.backward called before forward: call forward(x) first")
        if is_device_array(grad_out):  # a reshape of the contiguous device array
            if np.dtype(grad_out.dtype) != np.dtype(self._dtype):
                raise TypeError(f"Flatten.backward: grad_out has dtype {grad_out.dtype}, "
                                f"expected {np.dtype(self._dtype)}")
            if int(grad_out.size) != int(np.prod(self._in_shape, dtype=np.int64)):
                raise ValueError(
                    f"Flatten.backward: grad_out of shape {shape_str(grad_out.shape)} cannot be "
                    f"reshaped to the input's shape {shape_str(self._in_shape)}"
                )
            return grad_out.reshape(*self._in_shape)
        grad_out = np.asarray(grad_out, dtype=self._dtype)
        if grad_out.size != int(np.prod(self._in_shape, dtype=np.int64)):
            raise ValueError(
                f"Flatten.backward: grad_out of shape {shape_str(grad_out.shape)} cannot be "
                f"reshaped to the input's shape {shape_str(self._in_shape)}"
            )
        return grad_out.reshape(self._in_shape)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """Inverted dropout: zero each element with probability ``p`` while training.

    Parameters
    ----------
    p : float in [0, 1)
        Probability of zeroing an element.
    rng : numpy Generator, int seed or None
        Source of the masks. None draws from the generator that
        :func:`npstn.nn.init.manual_seed` seeds (looked up at every forward).

    Shapes: input any shape; output the same shape and dtype.
    """

    def __init__(self, p: float = 0.5, rng=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
            raise TypeError(f"Dropout: p must be a float in [0, 1), got {p!r}")
        if not (0.0 <= float(p) < 1.0):
            raise ValueError(
                f"Dropout: p must be in [0, 1), got p={p} (p is the probability of "
                "zeroing an element; p=1 would zero everything)"
            )
        self.p = float(p)
        self._rng = None if rng is None else init.get_rng(rng)
        self._scaled_mask = None  # m / (1 - p) in the input's dtype; None in eval mode
        self._in_shape = None
        self._dtype = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_float_array("Dropout input", x)
        self._in_shape, self._dtype = x.shape, x.dtype
        if not self.training or self.p == 0.0:
            self._scaled_mask = None
            return x
        rng = self._rng if self._rng is not None else init.get_rng(None)
        keep = rng.random(x.shape) >= self.p  # P(keep) = 1 - p
        self._scaled_mask = keep.astype(x.dtype) / x.dtype.type(1.0 - self.p)
        if is_device_array(x):
            from npstn.kernels.cuda.elementwise import mul

            self._scaled_mask = to_device(self._scaled_mask)
            return mul(x, self._scaled_mask)
        return x * self._scaled_mask

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._in_shape is None:
            raise RuntimeError("Dropout.backward called before forward: call forward(x) first")
        on_device = is_device_array(grad_out) or is_device_array(self._scaled_mask)
        grad_out = layer_grad("Dropout", grad_out, on_device, self._in_shape, self._dtype)
        if on_device and self._scaled_mask is not None:
            from npstn.kernels.cuda.elementwise import mul

            return mul(grad_out, self._scaled_mask)
        if self._scaled_mask is None:  # eval mode or p == 0: the identity
            return grad_out
        return grad_out * self._scaled_mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
