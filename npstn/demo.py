"""A small end-to-end demo of the hand-written layers: an MLP learns three interleaved spirals.

Every gradient here comes from the layers' own backward passes (no autodiff):
``loss.backward()`` gives dL/dlogits, ``model.backward`` pushes it through
Linear and ReLU, and SGD applies the accumulated ``Parameter.grad``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from npstn import nn


def spirals(n_per_class: int, classes: int = 3, noise: float = 0.15, seed: int = 0):
    """Points on ``classes`` interleaved spiral arms in 2D: X (N, 2) float32, y (N,) int64."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(classes):
        r = np.linspace(0.05, 1.0, n_per_class)
        t = np.linspace(k * 2 * np.pi / classes, k * 2 * np.pi / classes + 3.5, n_per_class)
        t = t + rng.normal(0, noise, n_per_class)
        xs.append(np.stack([r * np.cos(t), r * np.sin(t)], axis=1))
        ys.append(np.full(n_per_class, k))
    X = np.concatenate(xs).astype(np.float32)
    y = np.concatenate(ys).astype(np.int64)
    perm = rng.permutation(len(y))
    return X[perm], y[perm]


def build_mlp(hidden: int = 64, classes: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Linear(2, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def accuracy(model, X, y) -> float:
    model.eval()
    pred = model(X).argmax(axis=1)
    model.train()
    return float((pred == y).mean())


def run_demo(steps: int = 1500, batch_size: int = 128, seed: int = 0, out: str | Path = "runs/demo",
             plot: bool = True, progress: bool = True) -> dict:
    """Train the MLP on spirals; write ``model.npz`` and ``demo.png`` to ``out``; return metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    nn.init.manual_seed(seed)
    X, y = spirals(600, seed=seed)
    Xte, yte = spirals(300, seed=seed + 1)
    model = build_mlp()
    loss_fn = nn.CrossEntropyLoss()
    opt = nn.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = nn.MultiStepLR(opt, [steps * 2 // 3], 0.1)
    rng = np.random.default_rng(seed)
    losses = []
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc="demo: MLP on spirals", disable=not progress, unit="step")
    for step in bar:
        idx = rng.integers(0, len(y), batch_size)
        logits = model(X[idx])
        loss = loss_fn(logits, y[idx])
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        sched.step()
        losses.append(float(loss))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    wall = time.perf_counter() - t0
    metrics = {
        "steps": steps,
        "final_loss": float(np.mean(losses[-50:])),
        "train_accuracy": accuracy(model, X, y),
        "test_accuracy": accuracy(model, Xte, yte),
        "wall_seconds": wall,
        "parameters": model.num_parameters(),
    }
    nn.save(model, out / "model.npz")
    if plot:
        _plot(model, Xte, yte, losses, out / "demo.png")
    return metrics


def _plot(model, X, y, losses, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from npstn.utils.io import atomic_open

    g = np.linspace(-1.2, 1.2, 200, dtype=np.float32)
    gx, gy = np.meshgrid(g, g)
    model.eval()
    zz = model(np.stack([gx.ravel(), gy.ravel()], 1)).argmax(1).reshape(gx.shape)
    model.train()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.5))
    a.contourf(gx, gy, zz, levels=[-0.5, 0.5, 1.5, 2.5], alpha=0.3, cmap="brg")
    a.scatter(X[:, 0], X[:, 1], c=y, s=6, cmap="brg")
    a.set_title("decision regions (test points)")
    a.set_aspect("equal")
    k = 25
    smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
    b.plot(smooth)
    b.set_yscale("log")
    b.set_xlabel("step")
    b.set_title("training loss (moving average)")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
