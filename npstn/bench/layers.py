"""Where a training step's time goes: per layer and pass, with the convolutions' GFLOP/s
against this machine's sgemm rate (``npstn bench train --profile``).

:func:`profile_step` runs the training step of a model exactly as training
runs it (through its own ``Sequential``s, so a ReLU + MaxPool2d pair runs
fused as ``MaxPool2d.relu_forward``) with every layer method timed by a
wrapper set on the layer's *class* for the duration (an instance attribute
would turn the fusion off), and returns the median time of each (layer,
pass). :func:`sgemm_rate` is the yardstick: a 2048^3 float32 matrix product
through NumPy's BLAS on the same threads. A convolution's flop count is
2 * N * O * C * kh * kw * H_out * W_out per product (the forward has one;
the backward two, dL/dW and dL/dx, or one when ``needs_input_grad`` is
False).
"""
from __future__ import annotations

import functools
import time
from collections import defaultdict

import numpy as np

__all__ = ["sgemm_rate", "conv_gflop", "profile_step", "format_profile"]


def sgemm_rate(n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of an n x n x n float32 product (median of ``reps``)."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    a @ b
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / float(np.median(ts)) / 1e9


def conv_gflop(conv, x_shape) -> tuple[float, float]:
    """(forward, backward) GFLOP of one call of the Conv2d ``conv`` on ``x_shape``."""
    n, c = x_shape[:2]
    kh, kw = conv.kernel_size
    _, o, ho, wo = conv.output_shape(tuple(x_shape))
    one = 2 * n * o * c * kh * kw * ho * wo / 1e9
    return one, one * (2 if getattr(conv, "needs_input_grad", True) else 1)


def profile_step(model, x, y, repeats: int = 5, lr: float = 0.01, momentum: float = 0.9) -> dict:
    """Time ``repeats`` training steps of ``model`` on (x, y) after one warm-up step.

    Returns {"step_ms": median step, "rows": [{layer, kind, pass, ms, gflop,
    gflops}, ...]} in call order; a SpatialTransformer's rows include its
    localisation network's, which have rows of their own.
    """
    from npstn import nn
    from npstn.stn import SpatialTransformer

    names = {id(m): (name or "model") for name, m in model.named_modules()}
    times = defaultdict(list)
    shapes = {}
    saved = []

    def wrap(cls, meth):
        f = cls.__dict__[meth]

        @functools.wraps(f)
        def timed(self, arg):
            t0 = time.perf_counter()
            out = f(self, arg)
            times[(names.get(id(self), "?"), type(self).__name__, meth)].append(time.perf_counter() - t0)
            if meth == "forward" and isinstance(self, nn.Conv2d):
                shapes[id(self)] = tuple(arg.shape)
            return out

        saved.append((cls, meth, f))
        setattr(cls, meth, timed)

    classes = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Linear, SpatialTransformer)
    loss_fn = nn.CrossEntropyLoss()
    opt = nn.SGD(model.parameters(), lr=lr, momentum=momentum)
    try:
        for cls in classes:
            for meth in ("forward", "relu_forward", "backward"):
                if meth in cls.__dict__:
                    wrap(cls, meth)

        def step():
            loss_fn(model(x), y)
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()

        step()
        times.clear()
        steps = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            steps.append(time.perf_counter() - t0)
    finally:
        for cls, meth, f in reversed(saved):
            setattr(cls, meth, f)
    modules = dict(model.named_modules())
    rows = []
    for (name, kind, meth), ts in times.items():
        ms = 1e3 * float(np.median(ts))
        row = {"layer": name, "kind": kind, "pass": meth, "ms": ms}
        if kind == "Conv2d":
            fwd, bwd = conv_gflop(modules[name], shapes[id(modules[name])])
            row["gflop"] = fwd if meth == "forward" else bwd
            row["gflops"] = row["gflop"] / ms * 1e3
        rows.append(row)
    return {"step_ms": 1e3 * float(np.median(steps)), "rows": rows}


def format_profile(prof: dict, sgemm: float, title: str) -> str:
    """A markdown table of :func:`profile_step`'s rows, the convolutions' GFLOP/s and their
    share of the sgemm rate, and a summary line for all convolutions together."""
    lines = [f"# {title}: step {prof['step_ms']:.1f} ms (median); sgemm 2048^3 {sgemm:.0f} GFLOP/s",
             "| layer | kind | pass | ms | share of step | GFLOP | GFLOP/s | of sgemm |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    layered = conv_ms = conv_gf = 0.0
    for r in prof["rows"]:
        if r["kind"] != "SpatialTransformer":
            layered += r["ms"]
        share = f"{100 * r['ms'] / prof['step_ms']:.0f}%"
        if "gflops" in r:
            conv_ms += r["ms"]
            conv_gf += r["gflop"]
            extra = f"{r['gflop']:.2f} | {r['gflops']:.0f} | {100 * r['gflops'] / sgemm:.0f}%"
        else:
            extra = " | | "
        kind = r["kind"] + (" (incl. localisation)" if r["kind"] == "SpatialTransformer" else "")
        lines.append(f"| {r['layer']} | {kind} | {r['pass']} | {r['ms']:.1f} | {share} | {extra} |")
    lines.append(f"| (rest: loss, SGD, Python) | | | {prof['step_ms'] - layered:.1f} | "
                 f"{100 * (prof['step_ms'] - layered) / prof['step_ms']:.0f}% | | | |")
    if conv_ms:
        rate = conv_gf / conv_ms * 1e3
        lines.append(f"# convolutions, forward + backward: {conv_gf:.1f} GFLOP in {conv_ms:.0f} ms = "
                     f"{rate:.0f} GFLOP/s, {100 * rate / sgemm:.0f}% of sgemm "
                     f"({100 * conv_ms / prof['step_ms']:.0f}% of the step)")
    return "\n".join(lines)
