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
mean). The forward (the loss value) is the paper's, unchanged. The backward
is npstn's own (``npstn.functional.colocalisation_loss_backward(...,
stop_partner=True)``, ``ColocaliseConfig.stop_partner``).

    python benchmarks/table5_study/stop_gradient.py --digit 3 [--clutter] [--lr 0.001] \
        [--steps 500] [--fixed-scale | --init-scale S --anneal FA,FB] [--lr-drops F1,F2] \
        [--lr-scale-power P] [--probabilities W] [--margin A] [--layer-weights W1,W2,W3] [--seed S] \
        [--optimizer sgd|adam] [--json OUT.json]

``--init-scale S --anneal FA,FB``: s is not learnt but set by a schedule (S until
the fraction FA of the run, then linearly to 28/84 at FB:
``ColocaliseConfig.scale_anneal``), so that at the start every crop takes in
its digit (S = 1: the whole canvas).

It runs ``npstn colocalise``'s training (npstn.colocalisation.colocalise, the
defaults otherwise) with this backward (or, ``--full-gradient``, the paper's)
and prints the localised share.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path



def main(argv=None) -> int:
    from npstn.colocalisation import OPTIMIZERS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--digit", type=int, default=3)
    p.add_argument("--clutter", action="store_true", help="TC instead of T")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                   help="SGD with momentum 0.9, or Adam (ColocaliseConfig.optimizer)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--fixed-scale", action="store_true", help="s stays at 28/84 (learn t_x, t_y only)")
    p.add_argument("--init-scale", type=float, default=None, help="s at the start (default 28/84)")
    p.add_argument("--anneal", type=lambda v: tuple(float(a) for a in v.split(",")), default=None,
                   metavar="FA,FB", help="s from --init-scale to 28/84 between fractions FA and FB of the run "
                                         "(not learnt)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr-drops", type=lambda v: tuple(float(a) for a in v.split(",")), default=(),
                   metavar="F1,F2", help="fractions of the run after which the rate drops 10x (default none)")
    p.add_argument("--full-gradient", action="store_true",
                   help="the paper's full backward instead (for the same schedule without the stop-gradient)")
    p.add_argument("--lr-scale-power", type=float, default=0.0, metavar="P",
                   help="with --anneal: each step's gradient times (s / init_scale) ** P (ColocaliseConfig."
                        "lr_scale_power)")
    p.add_argument("--probabilities", type=float, default=0.0, metavar="W",
                   help="append W times the encoder's class probabilities to the descriptor "
                        "(ColocaliseConfig.probabilities)")
    p.add_argument("--margin", type=float, default=1.0,
                   help="alpha of the hinge (the paper: 1; the descriptor's scale is npstn's: each layer's part "
                        "has mean squared norm 1)")
    p.add_argument("--layer-weights", type=lambda v: tuple(float(a) for a in v.split(",")), default=None,
                   metavar="W1,W2,W3", help="multiply the descriptor's three parts (block 1, block 2, logits; each "
                                            "calibrated to mean squared norm 1) by these (default 1,1,1)")
    p.add_argument("--seed", type=int, default=0, help="the localisation network's initial weights and the batch "
                                                        "stream (ColocaliseConfig.seed)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", type=Path, default=None, help="write the metrics here")
    args = p.parse_args(argv)
    if args.anneal is not None and (args.init_scale is None or args.fixed_scale):
        p.error("--anneal needs --init-scale (and sets s itself: not with --fixed-scale)")
    from npstn.colocalisation import ColocaliseConfig, colocalise
    from npstn.utils.io import atomic_write_json

    try:
        cfg = ColocaliseConfig(digit=args.digit, clutter=args.clutter, lr=args.lr, steps=args.steps,
                               batch_size=args.batch_size, lr_drops=args.lr_drops, init_scale=args.init_scale,
                               learn_scale=not (args.fixed_scale or args.anneal is not None),
                               scale_anneal=args.anneal, stop_partner=not args.full_gradient, margin=args.margin,
                               lr_scale_power=args.lr_scale_power, seed=args.seed,
                               probabilities=args.probabilities, optimizer=args.optimizer,
                               data_dir=args.data_dir)
    except ValueError as e:
        p.error(str(e))
    encoder = None
    if args.layer_weights is not None:
        from npstn.colocalisation import encoder_for

        enc, info = encoder_for(cfg, progress=False)
        try:
            enc = enc.with_layer_weights(args.layer_weights)
        except ValueError as e:
            p.error(f"--layer-weights: {e}")
        encoder = (enc, {**info, "layer_weights": list(args.layer_weights)})
    m = colocalise(cfg, progress=False, encoder=encoder)
    m["study"] = {"backward": "the paper's full gradient" if args.full_gradient else
                  "anchor_only (stop-gradient at the other image of each pair)",
                  "command": "python benchmarks/table5_study/stop_gradient.py " + " ".join(sys.argv[1:] if argv is None
                                                                                      else argv)}
    hist = ", ".join(f"{h['step']}: {h['localised_percent']:.0f}%" for h in m["history"][::4])
    how_s = "annealed" if args.anneal else "fixed" if args.fixed_scale else "learnt"
    print(f"digit {args.digit} on {cfg.variant}, lr {args.lr:g}, margin {args.margin:g}, s {how_s}: "
          f"{m['localised_percent']:.0f}% localised (start {m['initial_localised_percent']:.0f}%), "
          f"mean IoU {m['initial_mean_iou']:.3f} -> {m['mean_iou']:.3f}, "
          f"final mean theta {[round(v, 3) for v in m['final_theta_mean']]}, crops' centres against the digits' "
          f"(correlation x, y) {m['tracking_correlation']}\n  history: {hist}")
    if args.json is not None:
        atomic_write_json(args.json, m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
