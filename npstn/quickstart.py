"""The Quickstart's main job: an ST-FCN against an FCN on RTS-distorted MNIST.

Both models see the same budget, the same data stream and the same short
schedule; the spatial transformer's advantage shows after a few minutes on a
2-core laptop. The full paper protocol (150k steps at lr 0.01) is
``npstn train`` / ``npstn reproduce``; this short schedule uses a larger
learning rate (0.1, dropped 10x for the last quarter) because at the paper's
0.01 neither model gets far in ~1k steps; the localisation network learns at
0.1x that rate (the setting the figures in README.md were measured with).

Writes ``runs/quickstart/{fcn,st-fcn}/`` (config, CSV log, checkpoints,
metrics.json) and the ST-FCN's pictures in ``runs/quickstart/st-fcn/viz/``.
"""
from __future__ import annotations

import time
from pathlib import Path

from npstn.train import TrainConfig, load_data, train
from npstn.utils.io import atomic_write_json
from npstn.viz import viz_run

PAPER_RTS = {"fcn": 5.2, "st-fcn": 0.8}  # test error %, Table 1, after 150k steps


def run_quickstart(out="runs/quickstart", steps: int = 1500, seed: int = 0, data_dir=None,
                   progress: bool = True, data=None) -> dict:
    """Train FCN and ST-FCN (affine) on RTS for ``steps`` steps; return their metrics."""
    out = Path(out)
    if data is None:
        data = load_data("rts", data_dir)  # fetch + verify MNIST once, build the fixed test set
    results = {}
    t0 = time.perf_counter()
    for model in ("fcn", "st-fcn"):
        cfg = TrainConfig(model=model, transform="affine", distortion="rts", steps=steps, lr=0.1,
                          lr_drops=(0.75,), loc_lr_mult=0.1, seed=seed, eval_every=max(1, steps // 5),
                          data_dir=data_dir, out=str(out / model))
        print(f"\n== {cfg.describe()}: {steps} steps of {cfg.batch_size} ==", flush=True)
        # resume=True: a rerun after an interruption continues where it stopped
        results[model] = train(cfg, resume=True, progress=progress, data=data)
    pictures = viz_run(out / "st-fcn", test_data=data[1])
    wall = time.perf_counter() - t0
    print(f"\nRTS test error after {steps} steps ({wall / 60:.1f} min in all):")
    print(f"  {'model':<8}{'npstn':>8}{'paper (150k steps)':>22}")
    for model, m in results.items():
        print(f"  {model.upper():<8}{m['test_error_percent']:>7.2f}%{PAPER_RTS[model]:>21.1f}%")
    print("pictures: " + ", ".join(str(p) for p in pictures))
    summary = {m: r["test_error_percent"] for m, r in results.items()}
    atomic_write_json(out / "summary.json", {"steps": steps, "test_error_percent": summary,
                                             "wall_seconds": wall})
    return results
