"""Profile one SGD step of the Table 1 CNN (or ST-CNN), per layer and pass.

    python benchmarks/profile_cnn.py --distortion rts --repeats 5          # CNN, 42x42
    python benchmarks/profile_cnn.py --distortion r --model st-cnn --no-fuse
    PYTHONPATH=/tmp/before python benchmarks/profile_cnn.py               # an older checkout

The same tables as ``npstn bench train --profile`` (:mod:`npstn.bench.layers`),
for one model on random inputs, batch 256; the model is built as training
builds it (``needs_input_grad = False`` where the version has it).
"""
from __future__ import annotations

import npstn  # noqa: F401  (first: it sets OpenBLAS's thread timeout before NumPy loads it)

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--distortion", default="rts", choices=["rts", "r"],
                   help="rts: 42x42 canvas (the ST-CNN then pools 2x2 before its classifier); r: 28x28")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model", default="cnn", choices=["cnn", "st-cnn"])
    p.add_argument("--no-fuse", action="store_true", help="run ReLU and MaxPool2d separately")
    a = p.parse_args(argv)
    from npstn import nn
    from npstn.models import build_model

    try:
        from npstn.bench.layers import format_profile, profile_step, sgemm_rate
    except ImportError:  # an older checkout: this checkout's copy
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "npstn" / "bench"))
        from layers import format_profile, profile_step, sgemm_rate

    model = build_model(a.model, "affine", a.distortion, seed=0)
    model.needs_input_grad = False  # as training does (an attribute without effect before issue 15)
    for m in model.modules():
        if isinstance(m, nn.Sequential):
            m.fuse = not a.no_fuse
    side = model.spec.input_size
    rng = np.random.default_rng(0)
    x = rng.random((a.batch_size, 1, side, side), dtype=np.float32)
    y = rng.integers(0, 10, a.batch_size)
    prof = profile_step(model, x, y, a.repeats)
    print(f"# npstn from {os.path.dirname(npstn.__file__)}")
    print(format_profile(prof, sgemm_rate(), f"{a.model} {side}x{side}, batch {a.batch_size}, "
                                             f"fuse={not a.no_fuse}"))


if __name__ == "__main__":
    main()
