"""Table 5 study: the co-localisation loss of finished runs' crops, beside the loss at the true boxes.

A run whose crops end off its digits failed either because the optimiser did not
reach the true boxes (their loss is lower) or because the objective prefers the
crops it found (theirs is lower). This script measures both on the whole set,
with no training: for each digit, the loss over all ordered pairs of the 100
images (the paper's hinge, with the recipe's descriptor: the encoder's layers
and its class probabilities) of

* the crops at the true 28x28 boxes, and
* the crops of each finished run (its model.npz),

each against the same random crops R(I_n) (``--draws`` sets of them, averaged).
It also answers a practical question: if several runs (seeds) of a digit are
made, does keeping the one with the lowest loss (no labels needed) keep the one
that localises best?

    python benchmarks/table5_study/loss_of_runs.py --runs runs/table5-r2 runs/table5-r2-seed1 \
        runs/table5-r2-seed2 [--variant T] [--digits 0,...,9] [--draws 10] [--json OUT.json]

Each RUN folder holds ``<variant>/digit<d>/`` run folders of ``npstn reproduce table5``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def losses(digit: int, variant: str, runs, draws: int = 10, seed: int = 123, data_dir=None) -> dict:
    """{"truth": L at the true boxes, "runs": [{"run", "loss", "localised_percent", "mean_iou"}]}."""
    from npstn import colocalisation as C
    from npstn import functional as F
    from npstn import nn

    cfg = C.ColocaliseConfig(digit=digit, clutter=(variant == "TC"), data_dir=data_dir)
    x, boxes = C.colocalisation_set(digit, cfg.clutter, images=cfg.images, seed=cfg.data_seed, data_dir=data_dir)
    canvas, n = x.shape[-1], len(x)
    enc, _ = C.encoder_for(cfg, progress=False)
    enc = enc.with_probabilities(cfg.probabilities)
    enc.eval()

    def describe(theta):
        return enc(F.grid_sample(x, F.attention_grid(theta.astype(np.float32), (n, 1, C.DIGIT_SIZE, C.DIGIT_SIZE))))

    rng = np.random.default_rng(seed)
    rand = [describe(C._random_crops(n, rng, canvas, np.float32)).astype(np.float64) for _ in range(draws)]

    def loss(e):
        e = e.astype(np.float64)
        return float(np.mean([float(F.colocalisation_loss(e, r, margin=cfg.margin)) for r in rand]))

    out = {"digit": digit, "variant": variant, "truth": loss(describe(C.box_to_theta(boxes, canvas))), "runs": []}
    for run in runs:
        folder = Path(run) / variant / f"digit{digit}"
        m = json.loads((folder / "metrics.json").read_text())
        rc = m["config"]
        st = C.build_transformer(canvas, rc.get("init_scale"), rc.get("seed", 0), rc.get("bounded"))
        st.load_state_dict(nn.load(folder / "model.npz"))
        st.eval()
        out["runs"].append({"run": str(folder), "loss": loss(enc(st(x))), "localised_percent": m["localised_percent"],
                            "mean_iou": m["mean_iou"]})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="folders of `npstn reproduce table5` runs (one per seed)")
    p.add_argument("--variant", choices=("T", "TC"), default="T")
    p.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9")
    p.add_argument("--draws", type=int, default=10, help="sets of random crops R(I_n) the loss is averaged over")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from npstn.utils.io import atomic_write_json

    results, picked, mean, best = [], 0.0, 0.0, 0.0
    for d in (int(v) for v in args.digits.split(",")):
        r = losses(d, args.variant, args.runs, args.draws, data_dir=args.data_dir)
        results.append(r)
        low = min(r["runs"], key=lambda q: q["loss"])
        picked += low["localised_percent"]
        mean += float(np.mean([q["localised_percent"] for q in r["runs"]]))
        best += max(q["localised_percent"] for q in r["runs"])
        below = [q for q in r["runs"] if q["loss"] < r["truth"]]
        print(f"digit {d} on {args.variant}: loss at the true boxes {r['truth']:.3f}; runs (loss, localised %): "
              + ", ".join(f"{q['loss']:.3f} {q['localised_percent']:.0f}%" for q in r["runs"])
              + f"; lowest-loss run {low['localised_percent']:.0f}%"
              + (f"; {len(below)} run(s) below the truth's loss" if below else ""), flush=True)
    summary = {"images_localised_lowest_loss_run": picked, "images_localised_mean_run": mean,
               "images_localised_best_run": best}
    print(f"images localised (of {100 * len(results)}): keeping each digit's lowest-loss run {picked:.0f}, "
          f"the runs' mean {mean:.1f}, the best run (by the labels) {best:.0f}")
    if args.json is not None:
        atomic_write_json(args.json, {"command": "python benchmarks/table5_study/loss_of_runs.py "
                                      + " ".join(sys.argv[1:] if argv is None else argv),
                                      "summary": summary, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
