"""Benchmark: one training step of FCN, CNN, ST-FCN and ST-CNN, and the full run it implies.

A thin wrapper: the benchmark lives in :mod:`npstn.bench.train` (also run
as ``npstn bench train``), whose docstring says what is timed and how::

    python benchmarks/bench_train.py                     # RTS, batch 256, cpu, all models
    python benchmarks/bench_train.py --models fcn,st-fcn --repeats 10 --json -
"""
from __future__ import annotations

import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the checkout's own npstn (found without installing; and never an older installed copy)
if os.path.isdir(os.path.join(_REPO, "npstn")) and _REPO not in sys.path:
    sys.path.insert(0, _REPO)
import npstn.bench.train as _bench  # noqa: E402


def main(argv=None) -> int:
    """Run the benchmark with command-line arguments ``argv`` (default: sys.argv[1:]); returns 0."""
    return _bench.main(argv, prog="python benchmarks/bench_train.py")


if __name__ == "__main__":
    sys.exit(main())
