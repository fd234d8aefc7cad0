"""Table 5 study: the co-localisation loss when every crop sits at its digit's true box, shifted.

Training runs of npstn's recipe end in one of three states (docs/colocalisation.md):
crops on their digits (localised, final loss about 0.1-0.3), crops on their digits
but offset the same way for every image (digits 2 and 4: IoU 0.4-0.5, final loss
about 0.09), or crops away from the digits (loss about 1, the margin). Whether the
offset state is a failure of the optimiser or a minimum of the objective can be
read off the loss itself, with no training: place every crop at its digit's true
28x28 box shifted by (dx, dy) pixels, and measure the paper's loss

    L = mean over ordered pairs (n, m) of max(0, ||e_n - e_m||^2 - ||e_n - r_n||^2 + alpha)

over the same random batches and random crops R(I_n) at every shift (common
random numbers, so differences between shifts are not sampling noise). If the
loss is lowest at (0, 0), the objective prefers the true boxes and an offset end
state is the optimiser's; if it is lower at some shift, the objective itself
prefers the offset crops.

    python benchmarks/table5_study/loss_landscape.py --digits 0,1,...,9 [--clutter] \
        [--shifts=-12,-8,-4,0,4,8,12] [--batches 200] [--layer-weights W1,W2,W3] [--normalise] [--probabilities W] [--blur SIGMA] [--encoder-shift K] [--json OUT.json]

Prints, per digit, the loss at (0, 0), the shift with the lowest loss and its
loss, and the loss along dy at dx = 0 (the offsets seen in training are in t_y), with the
mean squared distances between the crops of a pair and from each crop to its random crop.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def landscape(digit: int, clutter: bool, shifts, batches: int, batch_size: int, margin: float, seed: int,
              data_dir=None, layer_weights=None, normalise: bool = False, data=None, encoder=None,
              probabilities: float = 0.0, blur: float = 0.0) -> dict:
    """The loss at every shift (dx, dy) in ``shifts`` x ``shifts`` of all crops from their true boxes.

    ``data`` (x, boxes) and ``encoder`` (enc, info) default to ``npstn colocalise``'s set and
    encoder for (digit, clutter). Returns the loss at the truth, the lowest one and its shift,
    and per shift the loss and the mean squared distances within pairs and to the random crops.
    """
    from npstn import functional as F
    from npstn.colocalisation import (DIGIT_SIZE, ColocaliseConfig, _random_crops, box_to_theta, colocalisation_set,
                                      encoder_for)

    cfg = ColocaliseConfig(digit=digit, clutter=clutter, data_dir=data_dir)
    if data is None:
        data = colocalisation_set(digit, clutter, images=cfg.images, seed=cfg.data_seed, data_dir=data_dir)
    x, boxes = data
    if blur > 0:  # every canvas blurred by a Gaussian of ``blur`` canvas pixels (the crops are crops of it)
        from scipy.ndimage import gaussian_filter

        x = gaussian_filter(x, sigma=(0, 0, blur, blur)).astype(x.dtype)
    enc, info = encoder_for(cfg, progress=False) if encoder is None else encoder
    enc = enc.with_probabilities(probabilities)  # the class probabilities beside the layers
    enc.eval()
    if layer_weights is not None:  # weigh the descriptor's parts (each calibrated to mean squared norm 1)
        enc = enc.with_layer_weights(layer_weights)
    n, canvas = len(x), x.shape[-1]
    rng = np.random.default_rng(seed)
    # the batches and each batch's random crops, shared by every shift
    idx = np.stack([rng.choice(n, size=batch_size, replace=False) for _ in range(batches)])
    rand_theta = [_random_crops(batch_size, rng, canvas, np.float32) for _ in range(batches)]  # as training draws

    def describe(crops):
        d = enc(crops).astype(np.float64)
        if normalise:  # unit length, times sqrt(3): the mean squared norm of the calibrated three-part descriptor
            d = np.sqrt(3.0) * d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        return d

    def descriptors(theta):
        return describe(F.grid_sample(x, F.attention_grid(theta.astype(np.float32), (n, 1, DIGIT_SIZE, DIGIT_SIZE))))

    rd = []
    for k in range(batches):
        xb = x[idx[k]]
        rc = F.grid_sample(xb, F.attention_grid(rand_theta[k], (batch_size, 1, DIGIT_SIZE, DIGIT_SIZE)))
        rd.append(describe(rc))
    r = np.stack(rd)
    table, parts = {}, {}
    for dy in shifts:
        for dx in shifts:
            theta = box_to_theta(boxes + np.array([dx, dy, dx, dy], dtype=np.float64), canvas)
            e = descriptors(theta)
            losses, pos, neg = [], [], []
            for k in range(batches):
                eb = e[idx[k]]
                losses.append(float(F.colocalisation_loss(eb, r[k], margin=margin)))
                d2 = ((eb[:, None, :] - eb[None, :, :]) ** 2).sum(-1)
                pos.append(d2.sum() / (batch_size * (batch_size - 1)))  # mean ||e_n - e_m||^2, n != m
                neg.append(((eb - r[k]) ** 2).sum(-1).mean())  # mean ||e_n - r_n||^2
            table[(dx, dy)] = float(np.mean(losses))
            parts[(dx, dy)] = (float(np.mean(pos)), float(np.mean(neg)))
    best = min(table, key=table.get)
    return {"digit": digit, "variant": "TC" if clutter else "T", "loss_at_truth": table[(0, 0)],
            "best_shift": list(best), "best_loss": table[best],
            "loss": [{"dx": dx, "dy": dy, "loss": v, "mean_pair_distance": parts[(dx, dy)][0],
                      "mean_random_distance": parts[(dx, dy)][1]} for (dx, dy), v in sorted(table.items())],
            "encoder": {k: info[k] for k in ("path", "sha256", "test_error_percent", "shift") if k in info}}


def shifted_encoder(k: int, data_dir=None):
    """(encoder, info): ``npstn colocalise --encoder-shift k``'s encoder (trained on digits moved by up
    to k px per axis; cached like the plain one)."""
    from npstn.colocalisation import ColocaliseConfig, encoder_for

    enc, info = encoder_for(ColocaliseConfig(encoder_shift=k, data_dir=data_dir), progress=False)
    print(f"encoder trained on digits moved by up to {k} px: test error {info['test_error_percent']:.2f}% "
          "on the plain test digits", flush=True)
    return enc, info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9")
    p.add_argument("--clutter", action="store_true", help="TC instead of T")
    p.add_argument("--shifts", default="-12,-8,-4,0,4,8,12", help="pixel shifts, along each axis")
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--margin", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layer-weights", type=lambda v: tuple(float(a) for a in v.split(",")), default=None,
                   metavar="W1,W2,W3", help="multiply the descriptor's three parts (block 1, block 2, logits) by these")
    p.add_argument("--probabilities", type=float, default=0.0, metavar="W",
                   help="append W times the encoder's class probabilities (ColocaliseConfig.probabilities)")
    p.add_argument("--normalise", action="store_true", help="scale each descriptor to length sqrt(3)")
    p.add_argument("--blur", type=float, default=0.0, metavar="SIGMA",
                   help="blur every canvas by a Gaussian of SIGMA pixels before cropping (0: none)")
    p.add_argument("--encoder-shift", type=int, default=0, metavar="K",
                   help="use `npstn colocalise --encoder-shift K`'s encoder, trained on digits each moved by up "
                        "to K px per axis (cached like the plain one; 0: the plain encoder)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    shifts = [int(v) for v in args.shifts.split(",")]
    if 0 not in shifts:
        p.error("--shifts must include 0")
    from npstn.utils.io import atomic_write_json

    try:
        encoder = shifted_encoder(args.encoder_shift, args.data_dir) if args.encoder_shift else None
    except ValueError as e:  # ColocaliseConfig's check of --encoder-shift
        p.error(f"--encoder-shift: {e}")
    out = []
    for d in (int(v) for v in args.digits.split(",")):
        res = landscape(d, args.clutter, shifts, args.batches, args.batch_size, args.margin, args.seed,
                        args.data_dir, args.layer_weights, args.normalise, probabilities=args.probabilities,
                        blur=args.blur, encoder=encoder)
        along = {row["dy"]: (row["loss"], row["mean_pair_distance"], row["mean_random_distance"])
                 for row in res["loss"] if row["dx"] == 0}
        print(f"digit {d} on {res['variant']}: loss at the true boxes {res['loss_at_truth']:.3f}; lowest "
              f"{res['best_loss']:.3f} at (dx, dy) = {tuple(res['best_shift'])}; along dy (dx = 0): "
              + ", ".join(f"{dy:+d}: {v[0]:.3f}" for dy, v in sorted(along.items()))
              + "\n  mean ||e_n - e_m||^2 / ||e_n - r_n||^2 along dy: "
              + ", ".join(f"{dy:+d}: {v[1]:.2f}/{v[2]:.2f}" for dy, v in sorted(along.items())), flush=True)
        out.append(res)
    if args.json is not None:
        atomic_write_json(args.json, {"command": "python benchmarks/table5_study/loss_landscape.py "
                                      + " ".join(sys.argv[1:] if argv is None else argv),
                                      "results": out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
