"""Profile one SGD step of the Table 1 CNN (or ST-CNN), per layer and pass.

    python benchmarks/profile_cnn.py --size 42 --repeats 5
    python benchmarks/profile_cnn.py --size 28 --model cnn --no-fuse

The step is the training step (``model.needs_input_grad = False``, as
training sets it), run through the model's own ``Sequential`` (so a ReLU +
MaxPool2d pair runs fused, as ``MaxPool2d.relu_forward``, unless
``--no-fuse``). Every layer method is timed by wrapping it on its class, so
the layers run exactly as in training. Prints the median ms per layer and
pass over ``--repeats`` steps after one warm-up step, the conv layers'
GFLOP/s, and the machine's sgemm rate (2048^3) for scale.
"""
from __future__ import annotations

import npstn  # noqa: F401  (first: it sets OpenBLAS's thread timeout before NumPy loads it)

import argparse
import functools
import time
from collections import defaultdict

import numpy as np


def sgemm_rate(n=2048, reps=5):
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.copy()
    a @ b
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / np.median(ts) / 1e9


def conv_gflop(conv, x_shape, needs_input_grad):
    """(forward, backward) GFLOP of one Conv2d call (2 per multiply-add)."""
    n, c, h, w = x_shape
    kh, kw = conv.kernel_size
    _, o, ho, wo = conv.output_shape(x_shape)
    one = 2 * n * o * c * kh * kw * ho * wo / 1e9
    return one, one * (2 if needs_input_grad else 1)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=42)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model", default="cnn", choices=["cnn", "st-cnn"])
    p.add_argument("--no-fuse", action="store_true", help="run ReLU and MaxPool2d separately")
    a = p.parse_args(argv)
    from npstn import nn
    from npstn.models import build_model

    model = build_model(a.model, "affine", None, input_size=a.size, seed=0)
    model.needs_input_grad = False  # as training does
    names = {}
    for name, m in model.named_modules():
        names[id(m)] = name or "model"
        if isinstance(m, nn.Sequential):
            m.fuse = not a.no_fuse
    times = defaultdict(list)
    shapes = {}

    def timed(cls, meth):
        f = getattr(cls, meth)

        @functools.wraps(f)
        def g(self, arg):
            t0 = time.perf_counter()
            out = f(self, arg)
            times[(names.get(id(self), "?"), type(self).__name__, meth)].append(time.perf_counter() - t0)
            if meth == "forward" and isinstance(self, nn.Conv2d):
                shapes[id(self)] = arg.shape
            return out
        setattr(cls, meth, g)

    for cls in (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Linear, nn.AvgPool2d):
        timed(cls, "forward")
        timed(cls, "backward")
    timed(nn.MaxPool2d, "relu_forward")
    rng = np.random.default_rng(0)
    x = rng.random((a.batch_size, 1, a.size, a.size), dtype=np.float32)
    y = rng.integers(0, 10, a.batch_size)
    loss_fn = nn.CrossEntropyLoss()
    opt = nn.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        loss_fn(model(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()

    step()
    times.clear()
    tot = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        step()
        tot.append(time.perf_counter() - t0)
    rate = sgemm_rate()
    step_ms = 1e3 * np.median(tot)
    print(f"# {a.model} {a.size}x{a.size}, batch {a.batch_size}, fuse={not a.no_fuse}: step {step_ms:.1f} ms "
          f"(median of {a.repeats}); sgemm 2048^3 {rate:.0f} GFLOP/s")
    print("| layer | kind | pass | ms | GFLOP/s |")
    print("|---|---|---|---:|---:|")
    layered = 0.0
    for (name, kind, meth), ts in times.items():
        ms = 1e3 * np.median(ts)
        layered += ms
        gf = ""
        if kind == "Conv2d":
            conv = dict(model.named_modules())[name]
            f, b = conv_gflop(conv, shapes[id(conv)], conv.needs_input_grad)
            gf = f"{(f if meth == 'forward' else b) / ms * 1e3:.0f}"
        print(f"| {name} | {kind} | {meth} | {ms:.1f} | {gf} |")
    print(f"| (rest: loss, SGD, Python) | | | {step_ms - layered:.1f} | |")


if __name__ == "__main__":
    main()
