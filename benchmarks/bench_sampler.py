"""Benchmark: affine grid + bilinear sampling, forward and forward+backward.

A thin wrapper: the benchmark lives in :mod:`npstn.bench.sampler` (also run
as ``npstn bench sampler``), whose docstring says what is timed and how::

    python benchmarks/bench_sampler.py                   # all shapes, numpy/cpu/cuda
    python benchmarks/bench_sampler.py --backends cpu --repeats 50 --json -
"""
from __future__ import annotations

import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the checkout's own npstn (found without installing; and never an older installed copy)
if os.path.isdir(os.path.join(_REPO, "npstn")) and _REPO not in sys.path:
    sys.path.insert(0, _REPO)
import npstn.bench.sampler as _bench  # noqa: E402


def main(argv=None) -> int:
    """Run the benchmark with command-line arguments ``argv`` (default: sys.argv[1:]); returns 0."""
    return _bench.main(argv, prog="python benchmarks/bench_sampler.py")


if __name__ == "__main__":
    sys.exit(main())
