"""Table 5 study: the co-localisation loss with the gradient stopped at the other image of each pair.

The paper's loss (docs/colocalisation.md) sums, over ordered pairs (n, m),

    max(0, ||e_n - e_m||^2 - ||e_n - r_n||^2 + alpha)

and its full gradient moves both crops of a pair: the anchor n (pulled
toward e_m, pushed from its random crop r_n) and the other image m (pulled
toward e_n). The second pull makes every crop move toward every other crop,
which is how the crops collapse onto empty canvas, where all crops look alike.
Siamese networks avoid the same collapse with a stop-gradient (SimSiam, Chen
and He 2021). This probe moves each crop only as the anchor, e_m held fixed:

    dL/de_n = 2 g sum_m a_nm ((e_n - e_m) - (e_n - r_n)) = 2 g (A_n r_n - sum_m a_nm e_m)

with a_nm = 1[h_nm > 0], A_n = sum_m a_nm and g = 1 / (N (N - 1)) (the loss's
mean). The forward (the loss value) is the paper's, unchanged.

    python benchmarks/table5_study/stop_gradient.py --digit 3 [--clutter] [--lr 0.001] \
        [--steps 500] [--fixed-scale] [--json OUT.json]

It runs ``npstn colocalise``'s training (npstn.colocalisation.colocalise, the
defaults otherwise) with this backward and prints the localised share.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np


def anchor_only_backward(grad_output, embeddings, random_embeddings, *, margin=1.0, reduction="mean",
                         backend=None):
    """(dL/de, dL/dr) of the co-localisation loss with the other image of each pair held fixed.

    embeddings, random_embeddings (N, D); the random crops receive no gradient
    (zeros: they are data). Equation in the module docstring.
    """
    from npstn.functional.colocalisation import _check, colocalisation_hinges

    _check("anchor_only_backward", embeddings, random_embeddings, margin, reduction, backend)
    h = colocalisation_hinges(embeddings, random_embeddings, margin)
    n = h.shape[0]
    a = (h > 0).astype(np.float64)
    scale = 2.0 * float(grad_output) / (n * (n - 1) if reduction == "mean" else 1)
    e = np.asarray(embeddings, dtype=np.float64)
    r = np.asarray(random_embeddings, dtype=np.float64)
    grad_e = scale * (a.sum(axis=1)[:, None] * r - a @ e)
    return grad_e.astype(embeddings.dtype), np.zeros_like(random_embeddings)


@contextlib.contextmanager
def stop_gradient_at_partner():
    """Within the block, npstn's co-localisation training uses :func:`anchor_only_backward`."""
    from npstn import functional as F

    saved = F.colocalisation_loss_backward
    F.colocalisation_loss_backward = anchor_only_backward
    try:
        yield
    finally:
        F.colocalisation_loss_backward = saved


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--digit", type=int, default=3)
    p.add_argument("--clutter", action="store_true", help="TC instead of T")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--fixed-scale", action="store_true", help="s stays at 28/84 (learn t_x, t_y only)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", type=Path, default=None, help="write the metrics here")
    args = p.parse_args(argv)
    from npstn.colocalisation import ColocaliseConfig, colocalise
    from npstn.utils.io import atomic_write_json

    cfg = ColocaliseConfig(digit=args.digit, clutter=args.clutter, lr=args.lr, steps=args.steps,
                           learn_scale=not args.fixed_scale, data_dir=args.data_dir)
    with stop_gradient_at_partner():
        m = colocalise(cfg, progress=False)
    m["study"] = {"backward": "anchor_only (stop-gradient at the other image of each pair)",
                  "command": "python benchmarks/table5_study/stop_gradient.py " + " ".join(sys.argv[1:] if argv is None
                                                                                      else argv)}
    hist = ", ".join(f"{h['step']}: {h['localised_percent']:.0f}%" for h in m["history"][::4])
    print(f"digit {args.digit} on {cfg.variant}, lr {args.lr:g}, s {'fixed' if args.fixed_scale else 'learnt'}: "
          f"{m['localised_percent']:.0f}% localised (start {m['initial_localised_percent']:.0f}%), "
          f"mean IoU {m['initial_mean_iou']:.3f} -> {m['mean_iou']:.3f}, "
          f"final mean theta {[round(v, 3) for v in m['final_theta_mean']]}\n  history: {hist}")
    if args.json is not None:
        atomic_write_json(args.json, m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
