"""The Table 1 CNN and ST-CNN steps before and after the chunked convolution (issue 15),
and PyTorch's, all three in ONE process, interleaved round by round.

    python benchmarks/ab_cnn.py --old-src /tmp/before --repeats 8      # /tmp/before: a checkout of main

For each distortion (RTS: 42x42 canvas, R: 28x28) and model (CNN, ST-CNN
affine) it builds the model with the old npstn (imported as ``npstn_old``,
see ab_versions.py), the current one (``needs_input_grad = False``, as
training sets it) and the PyTorch twin (:func:`npstn.bench.torch_models.to_torch`,
the same weights), and times one SGD step (batch 256, float32, lr 0.01,
momentum 0.9) of each, in turn, ``--repeats`` rounds after ``--warmup``;
the order alternates every round. Prints medians and the ratios
torch/old, torch/new and old/new (> 1: the second is faster).
"""
from __future__ import annotations

import npstn  # noqa: F401  (first: OpenBLAS's thread timeout before NumPy loads it)

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--old-src", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--distortions", default="rts,r")
    p.add_argument("--models", default="cnn,st-cnn")
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import numba
    import torch
    import torch.nn.functional as TF

    from ab_versions import import_old
    from npstn import nn
    from npstn.bench.common import cpu_model, run_interleaved
    from npstn.bench.torch_models import sgd_param_groups, to_torch
    from npstn.models import build_model

    old = import_old(a.old_src, Path(tempfile.mkdtemp()))
    from npstn_old.models import build_model as build_old  # noqa: E402
    torch.set_num_threads(numba.get_num_threads())
    print(f"# {cpu_model()}, {os.cpu_count()} cores, numba {numba.__version__} ({numba.get_num_threads()} "
          f"threads), torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    rng = np.random.default_rng(0)
    rows = []
    for dist in a.distortions.split(","):
        for name in a.models.split(","):
            new_m = build_model(name, "affine", dist, seed=0)
            new_m.needs_input_grad = False
            old_m = build_old(name, "affine", dist, seed=0)
            tm, mults = to_torch(new_m, "cpu")
            side = new_m.spec.input_size
            x = rng.random((256, 1, side, side), dtype=np.float32)
            y = rng.integers(0, 10, 256)
            tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

            def npstn_step(model, lib):
                loss = lib.nn.CrossEntropyLoss()
                opt = lib.nn.SGD(model.parameters(), lr=0.01, momentum=0.9)

                def step():
                    loss(model(x), y)
                    opt.zero_grad()
                    model.backward(loss.backward())
                    opt.step()
                return step

            topt = torch.optim.SGD(sgd_param_groups(mults, 0.01), lr=0.01, momentum=0.9)

            def torch_step():
                loss = TF.cross_entropy(tm(tx), ty)
                topt.zero_grad()
                loss.backward()
                topt.step()

            import npstn as new_lib
            res = run_interleaved({"old": npstn_step(old_m, old), "new": npstn_step(new_m, new_lib),
                                   "torch": torch_step}, a.repeats, a.warmup)
            o, n, t = (res[k]["median_ms"] for k in ("old", "new", "torch"))
            rows.append((dist.upper(), name.upper(), o, n, t))
            print(f"| {dist.upper()} | {name.upper()} | {o:.1f} | {n:.1f} | {t:.1f} | {t / o:.2f} | "
                  f"{t / n:.2f} | {o / n:.2f} |", flush=True)
    return rows


if __name__ == "__main__":
    print("| distortion | model | before ms | after ms | torch ms | torch/before | torch/after | before/after |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    main()
