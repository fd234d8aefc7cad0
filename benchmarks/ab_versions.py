"""Is this version of npstn slower than an older one? Both in ONE process, interleaved.

Timing two checkouts one after the other on a shared machine measures the
machine as much as the code: on the 2-core VM two runs of the same benchmark
differ by 10-40%. This script imports the old version under another name
(its ``npstn`` package copied to a temporary folder as ``npstn_old``, with
its imports rewritten) beside the current one, and times the same calls of
both alternately, A B B A, so that drift of the machine falls on both
equally. It reports median milliseconds and the ratio new / old:

* one SGD step (forward, loss, backward, momentum update) of FCN, ST-FCN
  (affine, tps), CNN and ST-CNN, batch 256, on random inputs, the models
  built as training builds them (``needs_input_grad = False``);
* ``affine_grid`` + ``grid_sample`` (fwd) and with both backwards (fwd+bwd)
  on the shapes of ``npstn bench sampler``;
* the CPU sampler kernels alone (``npstn.kernels.cpu.grid_sample.forward`` /
  ``backward``), without the public functions' checks.

Usage (from the repository root; OLD is a checkout of the older commit,
e.g. ``git worktree add /tmp/old 2b38c33``)::

    python benchmarks/ab_versions.py --old-src /tmp/old [--reps 10] [--only kernel] [--json out.json]

Both versions must share Numba, NumPy and the thread count (they do: one
process). Results go into benchmarks/RESULTS.md with the date and machine.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def import_old(old_src: Path, where: Path):
    """Copy ``old_src/npstn`` to ``where/npstn_old`` with its imports rewritten, and import it."""
    src = old_src / "npstn"
    if not (src / "__init__.py").is_file():
        raise SystemExit(f"ab_versions: --old-src {old_src}: no npstn package there (give a checkout's root)")
    dst = where / "npstn_old"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    for path in dst.rglob("*.py"):
        text = path.read_text()
        text = re.sub(r"(?m)^(\s*)import npstn$", r"\1import npstn_old as npstn", text)
        text = re.sub(r"\bfrom npstn([ .])", r"from npstn_old\1", text)
        text = re.sub(r"\bimport npstn\.", "import npstn_old.", text)
        text = re.sub(r"\"npstn\.", "\"npstn_old.", text)
        path.write_text(text)
    sys.path.insert(0, str(where))
    import npstn_old

    return npstn_old


def abba(fa, fb, reps: int) -> tuple[float, float]:
    """Median ms of fa and fb, called alternately A B B A ... ``reps`` times each."""
    ta, tb = [], []
    for r in range(reps):
        for f in ((fa, fb) if r % 2 == 0 else (fb, fa)):
            t0 = time.perf_counter()
            f()
            (ta if f is fa else tb).append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ta), statistics.median(tb)


MODELS = [("fcn", None, "rts"), ("st-fcn", "affine", "rts"), ("st-fcn", "tps", "rts"), ("cnn", None, "r"),
          ("cnn", None, "rts"), ("st-cnn", "affine", "rts")]
SHAPES = [((256, 1, 28, 28), (28, 28)), ((256, 1, 42, 42), (42, 42)), ((256, 1, 60, 60), (28, 28)),
          ((32, 32, 64, 64), (64, 64)), ((16, 3, 224, 224), (224, 224))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old-src", type=Path, required=True, help="root of a checkout of the older version")
    p.add_argument("--reps", type=int, default=10, help="timed calls of each version per case (default 10; "
                   "the CNNs half, the sampler 4x)")
    p.add_argument("--json", type=Path, default=None, help="write the results here too")
    p.add_argument("--only", default=None, metavar="WORDS",
                   help="comma list: time only the cases whose name contains one of these words "
                   "(e.g. 'kernel' or 'step,sampler fwd')")
    args = p.parse_args(argv)
    only = [w.strip() for w in args.only.split(",")] if args.only else None

    def wanted(case: str) -> bool:
        return only is None or any(w in case for w in only)

    import npstn
    import npstn.functional as Fn
    from npstn.bench.train import _npstn_step as step_new
    from npstn.kernels.cpu import grid_sample as Kn
    from npstn.models import build_model as build_new

    tmp = Path(tempfile.mkdtemp(prefix="npstn-ab-"))
    try:
        old = import_old(args.old_src, tmp)
        import npstn_old.functional as Fo
        from npstn_old.bench.train import _npstn_step as step_old
        from npstn_old.kernels.cpu import grid_sample as Ko
        from npstn_old.models import build_model as build_old

        rows = []
        rng = np.random.default_rng(0)
        print(f"# new: {Path(npstn.__file__).parent}  old: {args.old_src}  reps {args.reps}", flush=True)
        print("| case | old ms | new ms | new / old |\n|---|---:|---:|---:|", flush=True)

        def report(case, a, b):
            rows.append({"case": case, "old_ms": a, "new_ms": b, "new/old": b / a})
            print(f"| {case} | {a:.3f} | {b:.3f} | {b / a:.3f} |", flush=True)

        for name, tr, dist in MODELS:
            if not wanted(f"step {name.upper()}{' ' + tr if tr else ''} {dist.upper()}"):
                continue
            side = 42 if dist == "rts" else 28
            batches = [(rng.random((256, 1, side, side), dtype=np.float32), rng.integers(0, 10, 256))
                       for _ in range(4)]
            models = build_old(name, tr or "affine", dist, seed=0), build_new(name, tr or "affine", dist, seed=0)
            for m in models:
                m.needs_input_grad = False  # as training builds them (npstn.train.loop.build_run_model)
            so = step_old(models[0], batches, 0.9, [])
            sn = step_new(models[1], batches, 0.9, [])
            for _ in range(2):  # compile, warm up
                so()
                sn()
            reps = args.reps if "cnn" not in name else max(4, args.reps // 2)
            report(f"step {name.upper()}{' ' + tr if tr else ''} {dist.upper()}", *abba(so, sn, reps))

        for shape, (ho, wo) in SHAPES:
            n, c = shape[:2]
            size = (n, c, ho, wo)
            x = rng.random(shape, dtype=np.float32)
            theta = np.tile(np.array([[0.9, 0.1, 0.05], [-0.1, 0.9, 0.02]], np.float32), (n, 1, 1))
            g = rng.random(size, dtype=np.float32)
            grid = Fn.affine_grid(theta, size)

            def fwd(F):
                return lambda: F.grid_sample(x, F.affine_grid(theta, size))

            def fb(F, new):
                def run():
                    gr = F.affine_grid(theta, size)
                    F.grid_sample(x, gr)
                    _, gg = F.grid_sample_backward(g, x, gr)
                    if new:
                        F.affine_grid_backward(gg, theta, size=size)
                    else:
                        F.affine_grid_backward(gg, size=size)
                return run

            cases = [("sampler fwd", fwd(Fo), fwd(Fn)), ("sampler fwd+bwd", fb(Fo, False), fb(Fn, True)),
                     ("kernel fwd", lambda: Ko.forward(x, grid, "bilinear", "zeros", False),
                      lambda: Kn.forward(x, grid, "bilinear", "zeros", False)),
                     ("kernel bwd", lambda: Ko.backward(g, x, grid, "bilinear", "zeros", False),
                      lambda: Kn.backward(g, x, grid, "bilinear", "zeros", False))]
            for what, a, b in cases:
                if not wanted(f"{what} {shape}->{ho}x{wo}"):
                    continue
                a()
                b()
                report(f"{what} {shape}->{ho}x{wo}", *abba(a, b, 4 * args.reps))
        if args.json:
            args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "old_src": str(args.old_src),
                                             "old_version": getattr(old, "__version__", None),
                                             "reps": args.reps, "rows": rows}, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
