"""Profile one SGD step of the Table 1 CNN, per layer and pass (and the conv internals).

    python benchmarks/profile_cnn.py --size 42 --repeats 5

Prints median ms per layer forward / backward over ``--repeats`` steps after a
warm-up step, and the sgemm rate of this machine for scale.
"""
from __future__ import annotations

import argparse
import time

import npstn  # noqa: F401  (first: it sets OpenBLAS's thread timeout before NumPy loads it)
import numpy as np


def sgemm_rate(n=2048, reps=5):
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.copy()
    a @ b
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / np.median(ts) / 1e9


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=42)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model", default="cnn")
    a = p.parse_args(argv)
    from npstn import nn
    from npstn.models import build_model

    model = build_model(a.model, "affine", None, input_size=a.size, seed=0)
    layers = list(model.classifier._modules.items())
    rng = np.random.default_rng(0)
    x = rng.random((a.batch_size, 1, a.size, a.size), dtype=np.float32)
    y = rng.integers(0, 10, a.batch_size)
    loss_fn = nn.CrossEntropyLoss()
    opt = nn.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = {}

    def step():
        h = x
        for name, m in layers:
            t0 = time.perf_counter(); h = m(h); times.setdefault((name, "fwd", type(m).__name__), []).append(time.perf_counter() - t0)
        loss_fn(h, y)
        opt.zero_grad()
        g = loss_fn.backward()
        for name, m in reversed(layers):
            t0 = time.perf_counter(); g = m.backward(g); times.setdefault((name, "bwd", type(m).__name__), []).append(time.perf_counter() - t0)
        t0 = time.perf_counter(); opt.step(); times.setdefault(("-", "sgd", "SGD"), []).append(time.perf_counter() - t0)

    step(); times.clear()
    tot = []
    for _ in range(a.repeats):
        t0 = time.perf_counter(); step(); tot.append(time.perf_counter() - t0)
    print(f"# {a.model} {a.size}x{a.size}, batch {a.batch_size}: step {1e3 * np.median(tot):.1f} ms (median of {a.repeats}); "
          f"sgemm 2048^3 {sgemm_rate():.0f} GFLOP/s")
    for (name, pas, kind), ts in times.items():
        print(f"{name:>3} {kind:<10} {pas}  {1e3 * np.median(ts):8.1f} ms")


if __name__ == "__main__":
    main()
