"""Table 5 study: the co-localisation loss with one free crop per image (no localisation network).

The localisation network shares its weights across images, so when its crops
drift (docs/colocalisation.md) one cannot tell whether the loss has no path
to the digits or the network cannot follow it. This probe removes the
network: every image n has its own crop theta_n = (s, t_x, t_y), moved by SGD
with momentum on the paper's loss (alpha = 1), every image in every step, s
held fixed (unless --learn-scale, or annealed). It asks where the crops go from a given start:

    --start centre            every crop at the canvas centre (npstn's start)
    --start truth --noise P   each crop at its digit, shifted by N(0, P px) per axis
    --start truth --radial P  ... shifted by exactly P px in a random direction
    --frozen K                the first K images' crops stay at their digits
                              (the rest move: does one crop find its digit when
                              the others are right?)
    --init-scale S --anneal A,B   s = S until step A, then linearly to 28/84 at B
    --encoder-shift P         the encoder trained on digits shifted by up to P px
                              (a descriptor that cares less where the ink sits)
    --anchor-only             each crop moved only as its pairs' anchor (the other
                              image held fixed: the loss's backward with stop_partner)
    --anchor-only --full-from K   ... for steps 1 to K-1, the paper's full gradient
                              from step K on (does the full gradient keep and
                              complete what the anchor-only phase gained?)

Each step: crops V_n = sampler(I_n, attention_grid(theta_n)), random crops
R_n (uniform 28x28 windows, drawn afresh), descriptors e = enc(V), r =
enc(R) (npstn's cached 32-filter encoder, calibrated as in ``npstn
colocalise``), L = the paper's loss (mean over ordered pairs), and

    theta_n <- theta_n + v_n,   v_n <- 0.9 v_n - lr * N * dL/dtheta_n

(N * dL/dtheta_n: the mean over pairs makes each image's share O(1/N)).
A crop counts as localised when the 28x28 box at its centre has IoU > 0.5
with the digit's box (with s fixed at 28/84 that is the crop's own box).

    python benchmarks/table5_study/free_crops.py --start centre [--digit 3] [--clutter] \
        [--lr 5e-4] [--steps 100] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:  # the checkout's npstn, as the other benchmark scripts
    sys.path.insert(0, str(HERE.parents[1]))


def crop_loss_and_grad(x, theta, encoder, random_theta, margin: float = 1.0, anchor_only: bool = False):
    """(L, dL/dtheta) of the paper's loss for crops ``theta`` (N, 3) of canvases ``x`` (N, 1, H, W).

    ``random_theta`` (N, 3) places the random crops R_n (data: no gradient).
    The chain: attention grid -> sampler -> (encoder -> loss: ``npstn colocalise``'s
    own ``crop_loss``), each op's own backward in reverse. The encoder's weights
    receive no update. ``anchor_only``: the loss's backward with the other image
    of each pair held fixed (``stop_partner``: each crop moved only as its pairs' anchor).
    """
    from npstn import functional as F
    from npstn.colocalisation import DIGIT_SIZE, crop_loss

    size = (len(x), x.shape[1], DIGIT_SIZE, DIGIT_SIZE)
    grid = F.attention_grid(theta, size)
    loss, g_crops = crop_loss(encoder, x, F.grid_sample(x, grid), random_theta, margin, stop_partner=anchor_only)
    _, g_grid = F.grid_sample_backward(g_crops, x, grid)
    return loss, F.attention_grid_backward(g_grid, theta, size)


def start_thetas(boxes, start, *, noise=0.0, radial=None, frozen=0, init_scale=None, seed=1, canvas=84):
    """Initial crops (N, 3): the centre, or the true boxes shifted (``noise`` px per axis or ``radial`` px)."""
    from npstn.colocalisation import DIGIT_SIZE, box_to_theta

    n = len(boxes)
    s0 = DIGIT_SIZE / canvas if init_scale is None else float(init_scale)
    if start == "centre":
        return np.tile([s0, 0.0, 0.0], (n, 1))
    theta = box_to_theta(boxes, canvas)
    theta[:, 0] = s0
    rng = np.random.default_rng(seed)
    px = 2.0 / canvas  # one pixel in normalised coordinates
    if radial is not None:
        ang = rng.uniform(0, 2 * np.pi, n)
        shift = radial * px * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    else:
        shift = rng.normal(0.0, noise * px, (n, 2))
    theta[frozen:, 1:] += shift[frozen:]
    return theta


def shifted_digits(shift: int, data_dir=None, seed: int = 0):
    """MNIST's training digits, each moved by a uniform whole-pixel (dx, dy) in [-shift, shift]^2 within
    its 28x28 frame (zero fill; ink that leaves the frame is lost): the training set of an encoder whose
    descriptor changes little when a crop holds the digit off-centre or in part."""
    from npstn.data.distorted import _load_split

    x, y = _load_split("train", data_dir)
    n, size = len(x), x.shape[-1]
    padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift)))
    off = np.random.default_rng(seed).integers(0, 2 * shift + 1, size=(n, 2))
    out = np.empty_like(x)
    for oy in range(2 * shift + 1):
        for ox in range(2 * shift + 1):
            k = np.flatnonzero((off[:, 0] == oy) & (off[:, 1] == ox))
            out[k] = padded[k, oy:oy + size, ox:ox + size]
    return out, y


def run(args) -> dict:
    from npstn.colocalisation import (CANVAS, DIGIT_SIZE, _random_crops, annealed_scale, box_iou,
                                      colocalisation_set, mnist_encoder, theta_to_box)

    x, boxes = colocalisation_set(args.digit, args.clutter, data_dir=args.data_dir)
    x = x.astype(np.float64)
    if args.encoder_shift:
        digits, labels = shifted_digits(args.encoder_shift, args.data_dir)
        enc, info = mnist_encoder(data_dir=args.data_dir, progress=False, digits=digits, labels=labels)
        info = {**info, "trained_on": f"MNIST training digits shifted by up to {args.encoder_shift} px per axis"}
    else:
        enc, info = mnist_encoder(data_dir=args.data_dir, progress=False)
    enc.eval()
    for p in enc.parameters():
        p.data = p.data.astype(np.float64)
    n = len(x)
    theta = start_thetas(boxes, args.start, noise=args.noise, radial=args.radial, frozen=args.frozen,
                         init_scale=args.init_scale)
    s_end = DIGIT_SIZE / CANVAS
    movers = np.arange(args.frozen, n)

    def measure():
        centred = theta.copy()
        centred[:, 0] = s_end
        iou = box_iou(theta_to_box(centred, CANVAS), boxes)[movers]
        return round(float((iou > 0.5).mean() * 100), 1), round(float(iou.mean()), 4)

    rng = np.random.default_rng(args.seed)
    vel = np.zeros_like(theta)
    pct, miou = measure()
    history = [{"step": 0, "localised_percent": pct, "mean_iou": miou, "loss": None}]
    for step in range(1, args.steps + 1):
        if args.anneal is not None:
            theta[:, 0] = annealed_scale(step, args.init_scale, args.anneal, CANVAS)
        anchor_only = args.anchor_only and (args.full_from is None or step < args.full_from)
        loss, g = crop_loss_and_grad(x, theta, enc, _random_crops(n, rng, CANVAS, x.dtype), args.margin,
                                     anchor_only)
        g *= n
        g[:args.frozen] = 0
        if not args.learn_scale or args.anneal is not None:
            g[:, 0] = 0  # s fixed (or set by the schedule)
        vel = args.momentum * vel - args.lr * g
        theta += vel
        if step % args.eval_every == 0 or step == args.steps:
            pct, miou = measure()
            history.append({"step": step, "localised_percent": pct, "mean_iou": miou, "loss": round(loss, 4)})
            print(f"  step {step}: loss {loss:.3f}, localised {pct:.0f}%, mean IoU {miou:.3f}", flush=True)
    return {"localised_percent": history[-1]["localised_percent"], "mean_iou": history[-1]["mean_iou"],
            "initial_localised_percent": history[0]["localised_percent"],
            "initial_mean_iou": history[0]["mean_iou"], "movers": int(len(movers)), "history": history,
            "encoder": info, "settings": {k: v for k, v in vars(args).items() if k != "json"}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--start", choices=("centre", "truth"), default="centre")
    p.add_argument("--noise", type=float, default=0.0, help="px per axis around the truth (--start truth)")
    p.add_argument("--radial", type=float, default=None, help="px from the truth, random direction")
    p.add_argument("--frozen", type=int, default=0, help="the first K crops stay at their digits")
    p.add_argument("--init-scale", type=float, default=None, help="s at the start (default 28/84)")
    p.add_argument("--learn-scale", action="store_true", help="s moves too (default: fixed)")
    p.add_argument("--anneal", type=lambda v: tuple(int(a) for a in v.split(",")), default=None,
                   metavar="A,B", help="s from --init-scale to 28/84 between steps A and B")
    p.add_argument("--encoder-shift", type=int, default=0, metavar="PX",
                   help="train the encoder on digits shifted by up to PX px per axis (default: plain MNIST)")
    p.add_argument("--anchor-only", action="store_true",
                   help="stop the gradient at the other image of each pair (stop_partner)")
    p.add_argument("--full-from", type=int, default=None, metavar="K",
                   help="with --anchor-only: the full gradient from step K on")
    p.add_argument("--digit", type=int, default=3)
    p.add_argument("--clutter", action="store_true")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--margin", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="the random crops")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.anneal is not None and args.init_scale is None:
        p.error("--anneal needs --init-scale")
    for name in ("steps", "eval_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("noise", "radial", "frozen", "lr", "margin", "encoder_shift"):
        v = getattr(args, name)
        if v is not None and not v >= 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {v}")
    if args.encoder_shift > 27:
        p.error("--encoder-shift must be at most 27 (px within the 28x28 frame)")
    if args.full_from is not None and not args.anchor_only:
        p.error("--full-from ends the anchor-only phase: it needs --anchor-only")
    if args.full_from is not None and args.full_from < 1:
        p.error(f"--full-from must be at least 1, got {args.full_from}")
    if args.frozen and args.start != "truth":
        p.error("--frozen holds crops at their digits: it needs --start truth")
    m = run(args)
    m["study"] = {"command": "python benchmarks/table5_study/free_crops.py "
                             + " ".join(sys.argv[1:] if argv is None else argv)}
    print(f"{m['movers']} moving crops: localised {m['initial_localised_percent']:.0f}% -> "
          f"{m['localised_percent']:.0f}%, mean IoU {m['initial_mean_iou']:.3f} -> {m['mean_iou']:.3f}")
    if args.json is not None:
        from npstn.utils.io import atomic_write_json

        atomic_write_json(args.json, m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
