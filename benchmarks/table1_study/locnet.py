"""Can a different localisation network learn to turn RTS digits upright? The ST-FCN with another loc net.

Usage (``NPSTN_DATA_DIR`` pointing at MNIST)::

    python benchmarks/table1_study/locnet.py VARIANT --out RUN [--steps 30000] [--threads 1]

The cause study's item 7 found that npstn's RTS ST-FCN (the paper's
localisation network: three fully connected layers of 32 units on the
42x42 canvas) removes the translation and most of the scale but little of
the rotation; item 8 that upright digits would bring the ST-FCN to the
paper's 0.8%. Is the rotation out of this localisation network's reach?
Train the same ST-FCN (the same classifier of 244 units, protocol and
seed as the standardised 30k-step run) with another localisation network:

* ``conv``: the paper's ST-CNN localisation network (2x2 max-pool, conv 20
  5x5, ReLU, 2x2 max-pool, conv 20 5x5, ReLU, FC 20, ReLU, FC 6), whose
  convolutions see a digit's strokes alike wherever the digit lies; about
  20k parameters against the FC network's 59k, so the model is smaller.
* ``wide``: the paper's FC localisation network with 128 units a layer in
  place of 32 (260k parameters: the model is twice the budget).

Either is a diagnostic, not a Table 1 cell: the paper's ST-FCN has the FC
network of 32 units. The regression layer starts at the identity, as
always. After training, the script runs ``study.py errors`` on the run (the
share of the rotation and scale the transformer undoes) with the same
model, and writes it to ``RUN/errors.json``; ``locnet.json`` records the
variant and the parameter count (``metrics.json``'s ``model_spec`` describes
the standard ST-FCN, whose classifier the run shares).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
from pathlib import Path

import npstn  # noqa: F401  (sets the BLAS spin default before NumPy work)
from npstn import models as M
from npstn import nn
from npstn import train as T
from npstn.stn import SpatialTransformer
from npstn.train import loop
from npstn.utils.io import atomic_write_json
from npstn.utils.threads import set_num_threads

HERE = Path(__file__).resolve().parent
SIZE = 42  # the RTS canvas


def _wide_fcn(d_in: int, p: int, hidden: int = 128):
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, p))


VARIANTS = {
    "conv": lambda p: M._loc_cnn(SIZE, 1, p),
    "wide": lambda p: _wide_fcn(SIZE * SIZE, p),
}


@contextlib.contextmanager
def localisation(variant: str):
    """Within the block, every ST-FCN npstn's training builds (or loads) has the ``variant`` loc net."""
    saved = loop.build_run_model

    def build(config, seed=None):
        model = saved(config, seed=seed)
        st = model.transformer
        p = st.transform.num_params
        if seed is not None:
            nn.init.manual_seed(int(seed) + 1)  # the new loc net's own stream; the classifier is unchanged
        model.transformer = SpatialTransformer(VARIANTS[variant](p), st.transform, output_size=None,
                                               loc_lr_mult=config.loc_lr_mult, backend=config.backend)
        return model

    loop.build_run_model = build
    try:
        yield
    finally:
        loop.build_run_model = saved


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variant", choices=sorted(VARIANTS))
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--steps", type=int, default=30000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    if args.steps < 3:
        p.error("--steps: at least 3 (the learning rate drops after a third and two thirds)")
    set_num_threads(args.threads)
    config = T.TrainConfig(distortion="rts", model="st-fcn", transform="affine", seed=args.seed,
                           steps=args.steps, eval_every=max(1, args.steps // 30), out=args.out)
    with localisation(args.variant):
        result = T.train(config, resume=args.resume)
        model, _ = T.load_run(args.out)
        spec = importlib.util.spec_from_file_location("_table1_study", HERE / "study.py")
        study = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(study)
        err = study.errors(args.out)
    loc = model.transformer.localization
    atomic_write_json(Path(args.out) / "locnet.json",
                      {"variant": args.variant, "localisation": repr(loc),
                       "localisation_parameters": int(sum(q.data.size for q in loc.parameters())),
                       "parameters": int(model.num_parameters()),
                       "script": "benchmarks/table1_study/locnet.py"})
    atomic_write_json(Path(args.out) / "errors.json", err)
    print(json.dumps({"variant": args.variant, "test_error_percent": result["test_error_percent"],
                      "rotation_undone": err.get("rotation_undone"), "scale_undone": err.get("scale_undone")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
