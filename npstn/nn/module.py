"""The module protocol: Parameter, Module, Sequential.

There is no autodiff. A Module's ``forward(x)`` computes its output and caches
whatever its ``backward(grad_out)`` needs; ``backward`` *accumulates* the
gradient of the loss with respect to each of the module's Parameters into
``Parameter.grad`` and *returns* the gradient with respect to the module's
input. Calling a module calls ``forward``.

Names, attributes and state-dict keys follow ``torch.nn`` (``"0.weight"``,
``"loc.2.bias"``...), so code and intuition move across.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np

from npstn._checks import FLOAT_DTYPES, check_bool, shape_str
from npstn._device import check_device, device_grad, device_of, is_device_array, to_device, to_host


def layer_backend(backend, x):
    """The backend a layer passes to its functional op: "cuda" when its input ``x`` is a
    device array (a model moved with ``.to("cuda")`` computes on the GPU whatever
    its ``backend`` says), else the layer's ``backend`` (None: decided by the op)."""
    return "cuda" if is_device_array(x) else backend


def layer_grad(name: str, grad_out, on_device: bool, shape, dtype):
    """A layer's upstream gradient checked against its forward output's ``shape`` and ``dtype``.

    ``on_device``: whether the forward ran on the GPU; then the gradient is
    made a device array (:func:`npstn._device.device_grad`), else a host one
    cast with ``np.asarray(grad_out, dtype)``. ``name`` is the layer's, for
    the error messages.
    """
    if on_device:
        return device_grad(f"{name}.backward", grad_out, shape, dtype)
    grad_out = np.asarray(grad_out, dtype=dtype)
    if grad_out.shape != tuple(shape):
        raise ValueError(
            f"{name}.backward: grad_out must have the output's shape {shape_str(shape)}, "
            f"got {shape_str(grad_out.shape)}"
        )
    return grad_out


def passes_on_input_grad(told, doc: str) -> property:
    """A ``needs_input_grad`` property for a module that tells others: setting it (a bool) also
    sets it on each module of ``told(self)`` (a container's first learnable layer or its branches,
    a transformer's localisation network). Reads the value last set (default True)."""
    def get(self) -> bool:
        return self.__dict__.get("_needs_input_grad", True)

    def set_(self, value) -> None:
        check_bool(f"{type(self).__name__}.needs_input_grad", value)
        object.__setattr__(self, "_needs_input_grad", bool(value))
        for m in told(self):
            m.needs_input_grad = bool(value)

    return property(get, set_, doc=doc)


class Parameter:
    """A trainable array with its gradient.

    Attributes
    ----------
    data : np.ndarray, or a Numba CUDA device array after ``module.to("cuda")``
        The value (float32 or float64).
    grad : np.ndarray (or a device array, beside ``data``)
        Same shape and dtype as ``data``; ``backward`` accumulates into it and
        ``Module.zero_grad`` resets it.
    lr_mult : float
        Learning-rate multiplier the optimisers apply to this parameter (the
        paper trains localisation networks at a fraction of the base rate).
    """

    __slots__ = ("data", "grad", "lr_mult")

    def __init__(self, data, lr_mult: float = 1.0):
        data = np.asarray(data)
        if data.dtype not in FLOAT_DTYPES:
            data = data.astype(np.float32)
        self.data = np.ascontiguousarray(data)
        self.grad = np.zeros_like(self.data)
        self.lr_mult = float(lr_mult)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self) -> str:
        """"cuda" when ``data`` is a device array, else "cpu"."""
        return device_of(self.data)

    def to(self, device: str) -> "Parameter":
        """Move ``data`` and ``grad`` to ``device`` ("cpu" or "cuda") in place; returns self."""
        device = check_device(device, "Parameter.to")
        move = to_device if device == "cuda" else to_host
        self.data = move(self.data)
        self.grad = move(self.grad)
        return self

    def accumulate_grad(self, grad) -> None:
        """``grad += grad_contribution`` in place, on the host or the device (where ``grad`` lives).

        Layers add the parameter gradients their functional backward returns
        with this, so that ``backward`` accumulates as in torch.
        """
        if is_device_array(self.grad):
            from npstn.kernels.cuda.elementwise import add_

            add_(self.grad, grad)
            return
        self.grad += grad

    def zero_grad(self) -> None:
        if is_device_array(self.grad):
            from npstn.kernels.cuda.elementwise import fill

            fill(self.grad, 0)
            return
        self.grad[...] = 0

    def __repr__(self) -> str:
        extra = f", lr_mult={self.lr_mult}" if self.lr_mult != 1.0 else ""
        if self.device != "cpu":
            extra += f", device={self.device!r}"
        return f"Parameter(shape={shape_str(self.data.shape)}, dtype={self.data.dtype}{extra})"


class Module:
    """Base class of every layer and network.

    Subclasses set Parameters and sub-Modules as attributes (they are
    registered in assignment order) and implement ``forward`` and ``backward``.

    Device: ``to("cuda")`` / ``cuda()`` moves every Parameter (data and grad)
    to the GPU as Numba device arrays, ``to("cpu")`` / ``cpu()`` back to NumPy
    (see :mod:`npstn._device`). A module on the GPU takes and returns device
    arrays; ``state_dict`` always returns host copies.
    """

    #: where a module without parameters was last moved ("cpu" or "cuda")
    _device = "cpu"

    #: False: the module's input needs no gradient (it is data), so ``backward``
    #: may skip dL/dinput and return None. Linear, Conv2d, SpatialTransformer,
    #: Sequential, Parallel and the paper's models do (containers pass it on to
    #: their first learnable layer); the others compute it anyway.
    needs_input_grad = True

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration -------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}.__init__ must call super().__init__() "
                "before assigning attributes"
            )
        params, modules = self.__dict__["_parameters"], self.__dict__["_modules"]
        params.pop(name, None)
        modules.pop(name, None)
        if isinstance(value, Parameter):
            params[name] = value
        elif isinstance(value, Module):
            modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def add_module(self, name: str, module: "Module") -> None:
        if not isinstance(module, Module):
            raise TypeError(f"add_module: {name} must be a Module, got {type(module).__name__}")
        setattr(self, name, module)

    # -- the protocol --------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def backward(self, grad_out):
        raise NotImplementedError(f"{type(self).__name__}.backward is not implemented")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- traversal -----------------------------------------------------------
    def children(self) -> Iterator["Module"]:
        yield from self._modules.values()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        seen = set()
        for mod_name, m in self.named_modules(prefix):
            for name, p in m._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return int(sum(p.data.size for p in self.parameters()))

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    # -- modes -----------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        check_bool("train: mode", mode)
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    # -- dtype and device --------------------------------------------------------
    def to(self, dtype=None, *, device=None) -> "Module":
        """Cast and/or move every parameter (and its grad) in place; returns self.

        Like torch: ``to(np.float64)`` casts, ``to("cuda")`` / ``to("cpu")``
        moves (a string argument is a device), ``to(device="cuda",
        dtype=np.float32)`` does both.
        """
        if isinstance(dtype, str) and dtype.lower().split(":")[0] in ("cpu", "cuda", "gpu"):
            if device is not None:
                raise TypeError("Module.to: give the device once")
            dtype, device = None, dtype
        if device is not None:
            device = check_device(device, "Module.to")
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype not in FLOAT_DTYPES:
                raise TypeError(f"Module.to: dtype must be float32 or float64, got {dtype}")
            for p in self.parameters():
                if is_device_array(p.data):  # cast on the host (rare), then back
                    p.data = to_device(to_host(p.data).astype(dtype))
                    p.grad = to_device(to_host(p.grad).astype(dtype))
                else:
                    p.data = p.data.astype(dtype)
                    p.grad = p.grad.astype(dtype)
        if device is not None:
            for p in self.parameters():
                p.to(device)
            for m in self.modules():
                object.__setattr__(m, "_device", device)
        return self

    def cuda(self) -> "Module":
        """Move every parameter to the GPU (``to("cuda")``)."""
        return self.to(device="cuda")

    def cpu(self) -> "Module":
        """Move every parameter to host memory as NumPy arrays (``to("cpu")``)."""
        return self.to(device="cpu")

    @property
    def device(self) -> str:
        """Where the parameters are: "cpu" or "cuda" (for a module without
        parameters, where ``to`` last moved it)."""
        for p in self.parameters():
            return p.device
        return self._device

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    # -- state -----------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter, keyed like torch (``"features.0.weight"``).

        Always host NumPy arrays, also for a module on the GPU.
        """
        return OrderedDict(
            (n, p.data.copy_to_host() if is_device_array(p.data) else p.data.copy())
            for n, p in self.named_parameters()
        )

    def load_state_dict(self, state, strict: bool = True) -> None:
        """Copy arrays from ``state`` into the parameters (dtype of the parameter kept).

        With ``strict`` (the default) the keys must match exactly; shapes must
        always match. Raises KeyError / ValueError naming the offending keys.
        The values may be host or device arrays; each parameter stays where it
        is (a module on the GPU gets the values copied to the GPU).
        """
        own = OrderedDict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(
                f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        for name, p in own.items():
            if name not in state:
                continue
            value = np.asarray(to_host(state[name]))
            if value.shape != tuple(p.data.shape):
                raise ValueError(
                    f"load_state_dict: {name} has shape {shape_str(value.shape)} in the "
                    f"state dict but the module expects {shape_str(p.data.shape)}"
                )
            if is_device_array(p.data):
                p.data.copy_to_device(np.ascontiguousarray(value, dtype=p.data.dtype))
            else:
                p.data[...] = value.astype(p.data.dtype, copy=False)

    # -- display ---------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        if self._modules:
            for name, m in self._modules.items():
                sub = repr(m).replace("\n", "\n  ")
                lines.append(f"  ({name}): {sub}")
            return "\n".join(lines) + "\n)"
        return lines[0] + ")"


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse.

    ``Sequential(Linear(4, 8), ReLU(), Linear(8, 2))``; children are named
    ``"0"``, ``"1"``, ... as in torch.

    A ``ReLU()`` directly followed by a ``MaxPool2d`` runs as one fused op,
    :func:`npstn.functional.relu_max_pool2d` (``MaxPool2d.relu_forward``):
    the same output and gradients, bit for bit, in one pass over the
    feature map instead of three, and without the ReLU's full-size output
    and gradient. ``fuse = False`` on the Sequential turns this off.
    """

    #: run ReLU + MaxPool2d pairs fused (see the class docstring)
    fuse = True

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(
                    f"Sequential: argument {i} must be a Module, got {type(m).__name__}"
                )
            self.add_module(str(i), m)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, idx):
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            return Sequential(*mods[idx])
        return mods[idx]

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        mods = list(self._modules.values())
        fused, i = [], 0
        while i < len(mods):
            if self.fuse and i + 1 < len(mods) and _fusable(mods[i], mods[i + 1]):
                mods[i]._x = None  # the ReLU itself did not run: its backward must not either
                x = mods[i + 1].relu_forward(x)
                fused.append(i + 1)
                i += 2
            else:
                x = mods[i](x)
                i += 1
        object.__setattr__(self, "_fused", fused)
        return x

    needs_input_grad = passes_on_input_grad(
        lambda self: [] if (i := self._first_learnable()) is None else [self[i]],
        "False: ``backward`` returns None and stops at the first learnable module, which is told to "
        "skip its own input gradient (the modules before it have nothing to learn).")

    def _first_learnable(self):
        """The index of the first module with parameters, or None."""
        for i, m in enumerate(self._modules.values()):
            if m.parameters():
                return i
        return None

    def backward(self, grad_out):
        mods = list(self._modules.values())
        fused = set(getattr(self, "_fused", ()))
        needs = self.needs_input_grad
        stop = 0 if needs else self._first_learnable()
        if stop is None:  # nothing to learn and no input gradient wanted
            return None
        i = len(mods) - 1
        while i >= stop:
            grad_out = mods[i].backward(grad_out)  # a fused pool: dL/d(the ReLU's input)
            i -= 2 if i in fused else 1
        return grad_out if needs else None


def _fusable(relu, pool) -> bool:
    """A plain ReLU then a plain MaxPool2d, neither with a patched forward, on one backend."""
    from npstn.nn.activation import ReLU
    from npstn.nn.pooling import MaxPool2d

    return (type(relu) is ReLU and type(pool) is MaxPool2d and "forward" not in vars(relu)
            and "forward" not in vars(pool) and relu.backend == pool.backend)


class Parallel(Module):
    """Run several modules on the same input and concatenate their outputs along ``dim``.

    With ``dim=1`` (channels, the default) this puts N spatial transformers
    side by side, as in the paper's 2xST-FCN for MNIST addition. Backward
    splits the incoming gradient into each branch's slice and sums the
    branches' input gradients (the input fans out, so its gradients add).
    """

    def __init__(self, *modules: Module, dim: int = 1):
        super().__init__()
        if not modules:
            raise ValueError("Parallel needs at least one module")
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Parallel: argument {i} must be a Module, got {type(m).__name__}")
            self.add_module(str(i), m)
        self.dim = int(dim)
        self._sizes = None

    def forward(self, x):
        outs = [m(x) for m in self._modules.values()]
        if is_device_array(outs[0]):  # concatenated by a device kernel
            from npstn.kernels.cuda.concat import concatenate

            self._sizes = [int(o.shape[self.dim % len(o.shape)]) for o in outs]
            return concatenate(outs, self.dim)
        self._sizes = [o.shape[self.dim] for o in outs]
        return np.concatenate(outs, axis=self.dim)

    needs_input_grad = passes_on_input_grad(lambda self: self._modules.values(),
                                            "False: every branch is told so, and ``backward`` returns None.")

    def backward(self, grad_out):
        if self._sizes is None:
            raise RuntimeError("Parallel.backward called before forward")
        needs = self.needs_input_grad
        if is_device_array(grad_out):  # split and summed by device kernels
            from npstn.kernels.cuda.concat import split
            from npstn.kernels.cuda.elementwise import add

            total = None
            for m, g in zip(self._modules.values(), split(grad_out, self._sizes, self.dim)):
                gi = m.backward(g)
                if needs:
                    total = gi if total is None else add(total, gi)
            return total
        splits = np.cumsum(self._sizes)[:-1]
        grads = np.split(grad_out, splits, axis=self.dim)
        total = None
        for m, g in zip(self._modules.values(), grads):
            gi = m.backward(np.ascontiguousarray(g))
            if needs:
                total = gi if total is None else total + gi
        return total
