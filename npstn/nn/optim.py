"""Optimisers and learning-rate schedules, with torch.optim's update rules.

Each Parameter may carry ``lr_mult``: its effective learning rate is
``lr * lr_mult`` (the paper trains localisation networks at a fraction of the
base rate). Optimiser state (momentum buffers, Adam moments, step counts)
round-trips through ``state_dict`` / ``load_state_dict`` so a resumed run
continues exactly where it stopped.

State lives where its parameter lives: for a parameter on the GPU (a model
moved with ``.to("cuda")``) the buffers are device arrays and ``step`` runs
the fused update kernels of :mod:`npstn.kernels.cuda.elementwise`; a buffer
left on the other device (the model moved after the optimiser was built, or
state loaded from a checkpoint) moves at the next ``step``. ``state_dict``
always returns host copies, so checkpoints stay NumPy ``.npz`` files.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from npstn._device import is_device_array, to_device, to_host
from npstn.nn.module import Parameter

__all__ = ["Optimizer", "SGD", "Adam", "StepLR", "MultiStepLR", "drop_fractions", "drop_milestones"]


def _host_copy(a):
    """A host NumPy copy of a host or device array."""
    return a.copy_to_host() if is_device_array(a) else a.copy()


def _like_param(a, p):
    """``a`` (or None) moved to the device of parameter ``p`` if it is not there yet."""
    if a is None or is_device_array(a) == is_device_array(p.data):
        return a
    return to_device(a) if is_device_array(p.data) else to_host(a)


def _zeros_like(a):
    """Zeros of a's shape and dtype, on a's device."""
    if is_device_array(a):
        from npstn.kernels.cuda.common import cuda_module
        from npstn.kernels.cuda.elementwise import fill

        z = cuda_module().device_array(a.shape, dtype=a.dtype)
        fill(z, 0)
        return z
    return np.zeros_like(a)


class Optimizer:
    """Base class: holds the parameter list and the base learning rate ``lr``."""

    def __init__(self, params: Iterable[Parameter], lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"optimizer params[{i}] must be an npstn.nn.Parameter, got {type(p).__name__}"
                    " (pass model.parameters())"
                )
        if not (isinstance(lr, (int, float)) and lr >= 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
        self.lr = float(lr)

    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()

    def step(self) -> None:
        raise NotImplementedError

    # state: a flat dict of arrays and scalars, so it can live in an .npz
    def state_dict(self) -> dict:
        return {"lr": np.float64(self.lr)}

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, exactly as ``torch.optim.SGD``.

    With g = grad + weight_decay * p and buffer b (b = g on the first step)::

        b <- momentum * b + (1 - dampening) * g
        d  = g + momentum * b   (nesterov)   or   d = b
        p <- p - lr * lr_mult * d
    """

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, lr)
        if momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum needs momentum > 0 and dampening = 0")
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)
        self._buf: list[np.ndarray | None] = [None] * len(self.params)

    def step(self) -> None:
        for i, p in enumerate(self.params):
            self._buf[i] = _like_param(self._buf[i], p)
            if is_device_array(p.data):
                self._step_cuda(i, p)
                continue
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.momentum:
                buf = self._buf[i]
                if buf is None:
                    buf = self._buf[i] = g.copy()
                else:
                    buf *= self.momentum
                    buf += (1.0 - self.dampening) * g
                g = g + self.momentum * buf if self.nesterov else buf
            p.data -= (self.lr * p.lr_mult) * g

    def _step_cuda(self, i: int, p: Parameter) -> None:
        """The same update, fused into one kernel over the device arrays."""
        from npstn.kernels.cuda.elementwise import sgd_step

        first = False
        if self.momentum and self._buf[i] is None:
            from npstn.kernels.cuda.common import cuda_module

            self._buf[i] = cuda_module().device_array(p.data.shape, dtype=p.data.dtype)
            first = True  # the kernel writes b = g
        sgd_step(p.data, p.grad, self._buf[i], self.lr * p.lr_mult, self.momentum,
                 self.dampening, self.weight_decay, self.nesterov, first)

    def state_dict(self) -> dict:
        state = super().state_dict()
        for i, b in enumerate(self._buf):
            if b is not None:
                state[f"momentum_buffer.{i}"] = _host_copy(b)
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._buf = [None] * len(self.params)
        for i, p in enumerate(self.params):
            key = f"momentum_buffer.{i}"
            if key in state:
                b = np.asarray(state[key])
                if b.shape != p.data.shape:
                    raise ValueError(f"SGD.load_state_dict: {key} has shape {b.shape}, parameter has {p.data.shape}")
                self._buf[i] = _like_param(b.astype(p.data.dtype, copy=True), p)


class Adam(Optimizer):
    """Adam, exactly as ``torch.optim.Adam`` (L2 weight decay added to the gradient).

    With g = grad + weight_decay * p and step count t::

        m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
        p <- p - lr * lr_mult * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError("eps and weight_decay must be >= 0")
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.t = 0
        self._m = [_zeros_like(p.data) for p in self.params]
        self._v = [_zeros_like(p.data) for p in self.params]

    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        for i, p in enumerate(self.params):
            self._m[i] = _like_param(self._m[i], p)
            self._v[i] = _like_param(self._v[i], p)
        for p, m, v in zip(self.params, self._m, self._v):
            if is_device_array(p.data):
                from npstn.kernels.cuda.elementwise import adam_step

                adam_step(p.data, p.grad, m, v, (self.lr * p.lr_mult) / c1, self.betas, c2,
                          self.eps, self.weight_decay)
                continue
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * g * g
            denom = np.sqrt(v / c2) + self.eps
            p.data -= ((self.lr * p.lr_mult) / c1) * m / denom

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["t"] = np.int64(self.t)
        for i, (m, v) in enumerate(zip(self._m, self._v)):
            state[f"exp_avg.{i}"] = _host_copy(m)
            state[f"exp_avg_sq.{i}"] = _host_copy(v)
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.t = int(state["t"])
        for i, p in enumerate(self.params):
            self._m[i] = _like_param(np.asarray(state[f"exp_avg.{i}"]).astype(p.data.dtype, copy=True), p)
            self._v[i] = _like_param(np.asarray(state[f"exp_avg_sq.{i}"]).astype(p.data.dtype, copy=True), p)


def drop_fractions(fractions) -> tuple:
    """``fractions`` of a run after which the rate drops, as a tuple of floats, each in (0, 1)."""
    fractions = tuple(float(f) for f in fractions)
    if not all(0 < f < 1 for f in fractions):
        raise ValueError(f"lr_drops must be fractions of the run in (0, 1), got {fractions}")
    return fractions


def drop_milestones(fractions, steps: int) -> list[int]:
    """The steps after which the rate drops, for ``fractions`` of a run of ``steps`` (the
    :class:`MultiStepLR` milestones; for (1/3, 2/3) of 150k steps: 50k and 100k)."""
    return sorted({m for m in (int(round(f * steps)) for f in fractions) if 0 < m < steps})


class MultiStepLR:
    """Multiply the optimiser's learning rate by ``gamma`` at each milestone (``torch.optim.lr_scheduler.MultiStepLR``).

    Call ``step()`` once per training step (or epoch); after ``k`` calls the
    rate is ``base_lr * gamma ** (number of milestones <= k)``. The paper's
    MNIST schedule is ``MultiStepLR(opt, [50_000, 100_000], 0.1)``.
    """

    def __init__(self, optimizer: Optimizer, milestones, gamma: float = 0.1):
        milestones = sorted(int(m) for m in milestones)
        if any(m <= 0 for m in milestones):
            raise ValueError(f"milestones must be positive, got {milestones}")
        self.optimizer = optimizer
        self.milestones = milestones
        self.gamma = float(gamma)
        self.base_lr = optimizer.lr
        self.last_step = 0

    def lr_at(self, step: int) -> float:
        k = sum(1 for m in self.milestones if m <= step)
        return self.base_lr * self.gamma ** k

    def step(self) -> None:
        self.last_step += 1
        self.optimizer.lr = self.lr_at(self.last_step)

    def get_last_lr(self) -> float:
        return self.optimizer.lr

    def state_dict(self) -> dict:
        return {"base_lr": np.float64(self.base_lr), "last_step": np.int64(self.last_step)}

    def load_state_dict(self, state: dict) -> None:
        self.base_lr = float(state["base_lr"])
        self.last_step = int(state["last_step"])
        self.optimizer.lr = self.lr_at(self.last_step)


class StepLR(MultiStepLR):
    """Multiply the learning rate by ``gamma`` every ``step_size`` steps (``torch.optim.lr_scheduler.StepLR``)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if int(step_size) <= 0:
            raise ValueError(f"step_size must be a positive int, got {step_size}")
        super().__init__(optimizer, [], gamma)
        self.step_size = int(step_size)

    def lr_at(self, step: int) -> float:
        return self.base_lr * self.gamma ** (step // self.step_size)
