"""Check a hand-written backward against central finite differences.

For an op y = f(x_1, ..., x_k) and a *random* upstream gradient g (never all
ones, which hides transposition bugs), the scalar L = <g, f(x)> has

    dL/dx_j[i] ~= (L(x_j + eps e_i) - L(x_j - eps e_i)) / (2 eps)

and the analytic backward must give the same numbers. Small tensors are
checked element by element; for large ones a random subset of elements plus
the directional derivative along a random unit direction d,

    <dL/dx_j, d> ~= (L(x_j + eps d) - L(x_j - eps d)) / (2 eps),

which exercises every element at once. Everything runs in float64.

Two entry points:

* ``gradcheck(module, x)``: a :class:`npstn.nn.Module`; checks the gradient
  with respect to the input and every Parameter.
* ``gradcheck(func, inputs, backward=...)``: a pure function
  ``func(*inputs) -> y`` with ``backward(g, *inputs) -> grads`` (one gradient
  per input, ``None`` for inputs that are not differentiable).

On failure a :class:`GradcheckError` names the tensor, the worst element's
index, the analytic and numeric values and the tolerance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

__all__ = ["gradcheck", "GradcheckError", "GradcheckResult", "TensorReport"]


class GradcheckError(AssertionError):
    """Raised when an analytic gradient disagrees with finite differences."""


@dataclass
class TensorReport:
    """How one tensor's analytic gradient compared with the numeric one."""

    name: str
    shape: tuple
    checked: int  # elements checked one by one
    directional: bool  # whether a random-direction check was also made
    max_abs_err: float
    worst_index: tuple | None
    worst_analytic: float
    worst_numeric: float
    ok: bool


@dataclass
class GradcheckResult:
    ok: bool
    reports: list[TensorReport] = field(default_factory=list)

    @property
    def max_abs_err(self) -> float:
        return max((r.max_abs_err for r in self.reports), default=0.0)

    def __bool__(self) -> bool:  # ``assert gradcheck(...)`` reads naturally
        return self.ok

    def summary(self) -> str:
        lines = []
        for r in self.reports:
            mark = "ok  " if r.ok else "FAIL"
            how = f"{r.checked} elements" + (" + random direction" if r.directional else "")
            lines.append(
                f"{mark} {r.name:<24} shape={r.shape} checked {how}; "
                f"max |analytic - numeric| = {r.max_abs_err:.3e}"
                + ("" if r.ok or r.worst_index is None else
                   f" at {r.worst_index}: analytic {r.worst_analytic:.8g} vs numeric {r.worst_numeric:.8g}")
            )
        return "\n".join(lines)


def _as64(x):
    return np.array(x, dtype=np.float64, copy=True)


def gradcheck(
    func,
    inputs,
    backward: Callable | None = None,
    *,
    wrt: Sequence[int] | None = None,
    params: bool = True,
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-4,
    max_elements: int = 64,
    seed: int = 0,
    raise_exception: bool = True,
) -> GradcheckResult:
    """Compare analytic gradients with central differences in float64.

    Parameters
    ----------
    func : Module or callable
        A Module (its ``forward``/``backward`` and Parameters are used; it is
        cast to float64 in place with ``module.double()``) or a function of
        ``inputs`` returning one array.
    inputs : array or sequence of arrays
        Arguments of ``func``; arrays are copied to float64. Non-float
        arguments (labels, ints) are passed through unchanged.
    backward : callable, required for a function
        ``backward(grad_out, *inputs)`` returning one gradient per input
        (a single array when there is one input); ``None`` for inputs that
        have no gradient.
    wrt : indices of the inputs to check; default every float input.
    params : for a Module, also check every Parameter (default True).
    eps : finite-difference step.
    atol, rtol : an element passes when |a - n| <= atol + rtol * |n|.
    max_elements : tensors up to this size are checked element by element;
        larger ones at ``max_elements`` random elements plus one random
        direction.
    seed : seeds the upstream gradient, the element subset and the direction.
    raise_exception : raise :class:`GradcheckError` on failure (default), or
        return the result with ``ok=False``.
    """
    from npstn.nn.module import Module  # local: testing must not import-cycle nn

    rng = np.random.default_rng(seed)
    is_module = isinstance(func, Module)
    single = not isinstance(inputs, (tuple, list))
    args = [inputs] if single else list(inputs)
    args = [
        _as64(a) if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating) else a
        for a in args
    ]
    float_idx = [
        i for i, a in enumerate(args)
        if isinstance(a, np.ndarray) and a.dtype == np.float64
    ]
    wrt = float_idx if wrt is None else list(wrt)

    if is_module:
        func.double()
        forward = lambda *a: func.forward(*a)  # noqa: E731
    else:
        if backward is None:
            raise TypeError("gradcheck: a function needs backward=...; a Module brings its own")
        forward = func

    # analytic pass
    out = np.asarray(forward(*args))
    g = rng.standard_normal(out.shape)
    if is_module:
        func.zero_grad()
        grads = func.backward(g)
    else:
        grads = backward(g, *args)
    if not isinstance(grads, (tuple, list)):
        grads = [grads]
    grads = list(grads)

    def loss() -> float:
        return float(np.sum(np.asarray(forward(*args), dtype=np.float64) * g))

    targets = []  # (name, array that is perturbed in place, analytic grad)
    for i in wrt:
        if i >= len(grads) or grads[i] is None:
            raise ValueError(f"gradcheck: backward returned no gradient for input {i}")
        targets.append((f"input[{i}]" if not single else "input", args[i], np.array(grads[i], dtype=np.float64)))
    if is_module and params:
        for name, p in func.named_parameters():
            targets.append((name, p.data, p.grad.copy()))

    result = GradcheckResult(ok=True)
    for name, arr, ana in targets:
        if ana.shape != arr.shape:
            raise ValueError(
                f"gradcheck: gradient of {name} has shape {ana.shape}, expected {arr.shape}"
            )
        flat = arr.reshape(-1)  # a view: perturbations land in the real tensor
        if not np.shares_memory(flat, arr):
            raise ValueError(f"gradcheck: {name} must be contiguous")
        n = flat.size
        if n <= max_elements:
            idx = np.arange(n)
        else:
            idx = rng.choice(n, size=max_elements, replace=False)
        ana_flat = ana.reshape(-1)
        # (excess over tolerance, abs error, index, analytic, numeric) of the worst check
        worst = (-np.inf, 0.0, None, 0.0, 0.0)
        max_err = 0.0

        def record(where, a, num):
            nonlocal worst, max_err
            err = abs(a - num)
            max_err = max(max_err, err)
            excess = err - (atol + rtol * abs(num))
            if excess > worst[0]:
                worst = (excess, err, where, a, num)

        for k in idx:
            orig = flat[k]
            flat[k] = orig + eps
            lp = loss()
            flat[k] = orig - eps
            lm = loss()
            flat[k] = orig
            record(tuple(int(v) for v in np.unravel_index(k, arr.shape)), float(ana_flat[k]),
                   (lp - lm) / (2 * eps))
        directional = n > max_elements
        if directional:
            d = rng.standard_normal(n)
            d /= np.linalg.norm(d)
            orig = flat.copy()
            flat[:] = orig + eps * d
            lp = loss()
            flat[:] = orig - eps * d
            lm = loss()
            flat[:] = orig
            record(("random direction",), float(ana_flat @ d), (lp - lm) / (2 * eps))
        ok = bool(worst[0] <= 0)
        rep = TensorReport(
            name=name,
            shape=tuple(arr.shape),
            checked=len(idx),
            directional=directional,
            max_abs_err=float(max_err),
            worst_index=worst[2],
            worst_analytic=float(worst[3]),
            worst_numeric=float(worst[4]),
            ok=ok,
        )
        result.reports.append(rep)
        result.ok &= ok

    if not result.ok and raise_exception:
        raise GradcheckError(
            f"gradcheck failed (atol={atol}, rtol={rtol}, eps={eps}):\n" + result.summary()
        )
    return result
