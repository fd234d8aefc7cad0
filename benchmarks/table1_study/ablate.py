"""What each part of the RTS distortion costs the ST-FCN: train on RTS with some of its parameters fixed.

Usage (``NPSTN_DATA_DIR`` pointing at MNIST)::

    python benchmarks/table1_study/ablate.py VARIANT --out RUN [--model st-fcn] [--steps 30000] [--threads 1]

The cause study's item 7 found that npstn's RTS ST-FCNs remove the
translation and most of the scale but little or none of the rotation, so
that their classifiers must be robust to +-45 degrees. How much does that
cost? Train the same model, with the same protocol, on RTS digits whose
rotation (and scale) are fixed, tested on the test set's own digits and
draws with the same parameters fixed:

* ``upright``: angle 0 (scale U[0.7, 1.2] and the position as in RTS);
* ``translated``: angle 0 and scale 1 (the position only).

The other parameters are drawn exactly as RTS draws them (the same calls,
in the same order, on the same generator), then the fixed ones are
overwritten, so a run sees the same digits at the same positions as its
RTS twin (``translated`` moves the few that would now cross the edge). If the upright ST-FCN ends far below the RTS one, a transformer
that undid the rotation would be worth that much; if not, rotation is not
what stands between npstn's 1.2 and the paper's 0.8.

Defaults are the study's compressed schedule (30k steps, lr 0.01 divided
by 10 after 10k and 20k, evaluations every 1000 steps) and npstn's
training defaults (standardised inputs, momentum 0.9, batch 256). The run
folder is an ordinary npstn run (``metrics.json`` with the configuration,
``--resume`` to continue); the variant is recorded in ``ablation.json``
beside it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import npstn  # noqa: F401  (sets the BLAS spin default before NumPy work)
from npstn import train as T
from npstn.data import distortions as D
from npstn.data.distorted import TEST_SEED, DigitSource, _load_split
from npstn.utils.io import atomic_write_json
from npstn.utils.threads import set_num_threads

VARIANTS = {
    "upright": {"angle": 0.0},
    "translated": {"angle": 0.0, "scale": 1.0},
}
SIZE = D.canvas_size("rts")


def _params(n: int, rng: np.random.Generator, fixed: dict) -> dict:
    """RTS parameters drawn as RTS draws them, then ``fixed`` overwritten.

    An offset drawn for a smaller digit may no longer fit one made larger
    (scale fixed at 1 where 0.7 was drawn): it is clipped to the new room,
    so the ink stays inside the canvas as in RTS. Angle 0 only ever widens
    the room, so ``upright`` keeps every position as drawn.
    """
    params = D._draw_rts(n, rng, SIZE)
    for k, v in fixed.items():
        params[k] = np.full(n, v, dtype=np.float64)
    room = D.rts_room(params["angle"], params["scale"], SIZE)[:, None]
    params["offset"] = np.clip(params["offset"], -room, room)
    return params


class FixedRTS(DigitSource):
    """The RTS training stream with some distortion parameters fixed (see :data:`VARIANTS`)."""

    def __init__(self, fixed: dict, data_dir=None, seed: int = 0):
        super().__init__(data_dir, seed=seed)
        self.fixed = dict(fixed)
        self.distortion = "rts"
        self.image_size = SIZE

    def _draw(self, batch_size: int, rng: np.random.Generator):
        idx = rng.integers(0, len(self), size=batch_size)
        x = D.render(self.images[idx], "rts", _params(batch_size, rng, self.fixed))
        return x, self.labels[idx]


def test_set(fixed: dict, data_dir=None):
    """The 10k test digits with the test set's own RTS draws (seed ``TEST_SEED``), ``fixed`` overwritten."""
    images, labels = _load_split("test", data_dir)
    params = _params(len(images), np.random.default_rng(TEST_SEED), fixed)
    return D.render(images, "rts", params), labels


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variant", choices=sorted(VARIANTS))
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--model", default="st-fcn", choices=("fcn", "st-fcn"))
    p.add_argument("--steps", type=int, default=30000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    if args.steps < 3:
        p.error("--steps: at least 3 (the learning rate drops after a third and two thirds)")
    set_num_threads(args.threads)  # Numba's kernels and NumPy's BLAS both (BLAS alone would take every core)
    config = T.TrainConfig(distortion="rts", model=args.model, transform="affine", seed=args.seed,
                           steps=args.steps, eval_every=max(1, args.steps // 30), out=args.out)
    fixed = VARIANTS[args.variant]
    source = FixedRTS(fixed, seed=args.seed)
    result = T.train(config, resume=args.resume, data=(source, test_set(fixed)))
    atomic_write_json(Path(args.out) / "ablation.json",
                      {"variant": args.variant, "fixed": fixed, "script": "benchmarks/table1_study/ablate.py"})
    print(json.dumps({"variant": args.variant, "test_error_percent": result["test_error_percent"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
