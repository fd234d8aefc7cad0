"""Benchmarks that ship with npstn, so any install can run them: ``npstn bench NAME [options]``.

* ``sampler`` (:mod:`npstn.bench.sampler`): affine grid + bilinear sampling,
  forward and forward+backward, per backend, beside PyTorch;
* ``train`` (:mod:`npstn.bench.train`): one training step of FCN, CNN, ST-FCN
  and ST-CNN, the ST's overhead, the projected 150k-step run, beside the same
  networks in PyTorch.

Each prints a Markdown table and writes JSON (the machine, the command, every
median, minimum and quartile). ``benchmarks/bench_*.py`` in the repository
are thin wrappers around the same ``main(argv)``. PyTorch is optional and
imported only inside the benchmarks. Nothing here imports NumPy, Numba or
PyTorch before a benchmark has set its OpenMP wait policy.
"""
from __future__ import annotations

import importlib
import sys

__all__ = ["BENCHMARKS", "main"]

#: name -> (module, one-line description)
BENCHMARKS = {
    "sampler": ("npstn.bench.sampler", "affine grid + bilinear sampling, forward and backward, vs PyTorch"),
    "train": ("npstn.bench.train", "one training step of FCN/CNN/ST-FCN/ST-CNN, vs the same nets in PyTorch"),
}


def main(argv=None) -> int:
    """``main(["train", "--repeats", "5"])``: run one benchmark by name; returns its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        print("usage: npstn bench {" + ",".join(BENCHMARKS) + "} [options]   (options: npstn bench NAME --help)")
        for name, (_, what) in BENCHMARKS.items():
            print(f"  {name:<8} {what}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"npstn bench: unknown benchmark {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(BENCHMARKS[argv[0]][0])
    return int(module.main(argv[1:], prog=f"npstn bench {argv[0]}") or 0)
