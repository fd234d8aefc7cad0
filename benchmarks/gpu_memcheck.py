"""The cuda kernels on awkward inputs, for compute-sanitizer (benchmarks/gpu_check.sh, step 4).

    compute-sanitizer --tool memcheck --error-exitcode 1 python benchmarks/gpu_memcheck.py

npstn's rule is that a kernel never touches memory out of bounds, whatever
the sampling points are. This script runs every sampler and grid kernel
(forward and backward, 2-D and 3-D, each mode, padding and corner
convention) on grids that hold the points most likely to break an index
computation: far outside the image (+-1e30, past int32), exactly on the
borders, NaN and +-inf, and ordinary random points; and the layers' cuda
kernels (conv2d, the pools, relu, linear, cross-entropy, the depth
projection) on odd shapes (stride 2, padding, ceil_mode, 1-pixel images).

Under compute-sanitizer, memcheck reports any out-of-bounds or misaligned
access. Without it, the script still checks that each cuda result equals
the cpu backend's (float64; NaN where both are NaN), so a run outside the
sanitizer is a correctness check on the device. Exit 0 all agree, 1 a
mismatch, 2 no usable GPU (or only the simulator, unless
``--allow-simulator``). One line per case; ``--quick`` runs a subset.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the checkout's own npstn (found without installing; and never an older installed copy)
if os.path.isdir(os.path.join(_REPO, "npstn")) and _REPO not in sys.path:
    sys.path.insert(0, _REPO)


def _awkward_grid(rng, n, h, w, dims):
    """(n, h, w, dims) sampling points: random, borders, far outside, NaN and inf."""
    g = rng.uniform(-1.5, 1.5, size=(n, h, w, dims))
    special = np.array([-1.0, 1.0, 0.0, 1e30, -1e30, 3e9, -3e9, np.nan, np.inf, -np.inf, 1.0 - 1e-16, -1.0 + 1e-16])
    flat = g.reshape(-1, dims)
    picks = rng.integers(0, len(special), size=flat.shape)
    where = rng.random(flat.shape) < 0.4
    flat[where] = special[picks[where]]
    return np.ascontiguousarray(flat.reshape(g.shape))


def _compare(name, got, want, failures):
    got = [np.asarray(x) for x in (got if isinstance(got, tuple) else (got,))]
    want = [np.asarray(x) for x in (want if isinstance(want, tuple) else (want,))]
    ok = all(np.allclose(a, b, rtol=1e-10, atol=1e-10, equal_nan=True) for a, b in zip(got, want))
    print(f"{'ok  ' if ok else 'FAIL'} {name}", flush=True)
    if not ok:
        failures.append(name)


def sampler_cases(rng, failures, quick):
    import npstn.functional as F

    modes = ("bilinear", "nearest")
    paddings = ("zeros", "border", "reflection")
    corners = (False, True)
    combos = list(itertools.product(modes, paddings, corners))
    if quick:
        combos = combos[::3]
    shapes2d = [(2, 3, 5, 7, 4, 6), (1, 1, 1, 1, 3, 2)]  # n, c, h_in, w_in, h_out, w_out
    for (n, c, hi, wi, ho, wo), (mode, pad, ac) in itertools.product(shapes2d, combos):
        x = rng.standard_normal((n, c, hi, wi))
        g = _awkward_grid(rng, n, ho, wo, 2)
        go = rng.standard_normal((n, c, ho, wo))
        kw = dict(mode=mode, padding_mode=pad, align_corners=ac)
        tag = f"grid_sample 2d {x.shape} -> {ho}x{wo} {mode}/{pad}/ac={ac}"
        _compare(tag, F.grid_sample(x, g, backend="cuda", **kw), F.grid_sample(x, g, backend="cpu", **kw), failures)
        _compare(tag + " backward", F.grid_sample_backward(go, x, g, backend="cuda", **kw),
                 F.grid_sample_backward(go, x, g, backend="cpu", **kw), failures)
    for mode, pad, ac in combos:
        x = rng.standard_normal((2, 2, 3, 4, 5))
        g = np.ascontiguousarray(_awkward_grid(rng, 2, 3 * 2, 3, 3).reshape(2, 3, 2, 3, 3))
        go = rng.standard_normal((2, 2, 3, 2, 3))
        kw = dict(mode=mode, padding_mode=pad, align_corners=ac)
        tag = f"grid_sample 3d {x.shape} {mode}/{pad}/ac={ac}"
        _compare(tag, F.grid_sample(x, g, backend="cuda", **kw), F.grid_sample(x, g, backend="cpu", **kw), failures)
        _compare(tag + " backward", F.grid_sample_backward(go, x, g, backend="cuda", **kw),
                 F.grid_sample_backward(go, x, g, backend="cpu", **kw), failures)


def grid_cases(rng, failures, quick):
    import npstn.functional as F

    size = (3, 1, 5, 7)
    cases = [
        ("affine_grid", F.affine_grid, F.affine_grid_backward, rng.standard_normal((3, 2, 3))),
        ("attention_grid", F.attention_grid, F.attention_grid_backward, rng.standard_normal((3, 3))),
        ("projective_grid", F.projective_grid, F.projective_grid_backward, rng.standard_normal((3, 8))),
        ("tps_grid", F.tps_grid, F.tps_grid_backward, rng.standard_normal((3, 16, 2))),
    ]
    for (name, fwd, bwd, theta), ac in itertools.product(cases, (False, True)):
        gg = rng.standard_normal((3, 5, 7, 2))
        _compare(f"{name} ac={ac}", fwd(theta, size, align_corners=ac, backend="cuda"),
                 fwd(theta, size, align_corners=ac, backend="cpu"), failures)
        _compare(f"{name} ac={ac} backward", bwd(gg, theta, size, align_corners=ac, backend="cuda"),
                 bwd(gg, theta, size, align_corners=ac, backend="cpu"), failures)
    theta3 = rng.standard_normal((2, 3, 4))
    size3 = (2, 1, 3, 4, 5)
    gg3 = rng.standard_normal((2, 3, 4, 5, 3))
    _compare("affine_grid 3d", F.affine_grid(theta3, size3, backend="cuda"), F.affine_grid(theta3, size3, backend="cpu"),
             failures)
    _compare("affine_grid 3d backward", F.affine_grid_backward(gg3, theta3, size3, backend="cuda"),
             F.affine_grid_backward(gg3, theta3, size3, backend="cpu"), failures)


def layer_cases(rng, failures, quick):
    import npstn.functional as F

    for (n, c, h, w, o, k, s, p) in [(2, 3, 7, 6, 4, 3, 2, 1), (1, 1, 1, 1, 2, 1, 1, 0), (3, 2, 9, 5, 3, 5, 1, 2)]:
        x = rng.standard_normal((n, c, h, w))
        wt = rng.standard_normal((o, c, k, k))
        b = rng.standard_normal(o)
        y = F.conv2d(x, wt, b, stride=s, padding=p, backend="cpu")
        go = rng.standard_normal(y.shape)
        tag = f"conv2d {x.shape} k{k} s{s} p{p}"
        _compare(tag, F.conv2d(x, wt, b, stride=s, padding=p, backend="cuda"), y, failures)
        _compare(tag + " backward", F.conv2d_backward(go, x, wt, b, stride=s, padding=p, backend="cuda"),
                 F.conv2d_backward(go, x, wt, b, stride=s, padding=p, backend="cpu"), failures)
    pools = [("max_pool2d", F.max_pool2d, F.max_pool2d_backward), ("relu_max_pool2d", F.relu_max_pool2d,
             F.relu_max_pool2d_backward), ("avg_pool2d", F.avg_pool2d, F.avg_pool2d_backward)]
    for (name, fwd, bwd), (shape, k, s, p, ceil) in itertools.product(
            pools, [((2, 3, 7, 5), 2, 2, 0, True), ((1, 2, 1, 1), 1, 1, 0, False), ((2, 1, 6, 9), 3, 2, 1, True)]):
        x = rng.standard_normal(shape)
        kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil)
        y = fwd(x, backend="cpu", **kw)
        go = rng.standard_normal(y.shape)
        tag = f"{name} {shape} k{k} s{s} p{p} ceil={ceil}"
        _compare(tag, fwd(x, backend="cuda", **kw), y, failures)
        _compare(tag + " backward", bwd(go, x, backend="cuda", **kw), bwd(go, x, backend="cpu", **kw), failures)
    x = rng.standard_normal((5, 7))
    go = rng.standard_normal((5, 7))
    _compare("relu", F.relu(x, backend="cuda"), F.relu(x, backend="cpu"), failures)
    _compare("relu backward", F.relu_backward(go, x, backend="cuda"), F.relu_backward(go, x, backend="cpu"), failures)
    wt, b = rng.standard_normal((3, 7)), rng.standard_normal(3)
    go3 = rng.standard_normal((5, 3))
    _compare("linear", F.linear(x, wt, b, backend="cuda"), F.linear(x, wt, b, backend="cpu"), failures)
    _compare("linear backward", F.linear_backward(go3, x, wt, b, backend="cuda"),
             F.linear_backward(go3, x, wt, b, backend="cpu"), failures)
    logits, target = rng.standard_normal((5, 10)), rng.integers(0, 10, size=5)
    _compare("cross_entropy", F.cross_entropy(logits, target, backend="cuda"),
             F.cross_entropy(logits, target, backend="cpu"), failures)
    _compare("cross_entropy backward", F.cross_entropy_backward(1.0, logits, target, backend="cuda"),
             F.cross_entropy_backward(1.0, logits, target, backend="cpu"), failures)
    vol = rng.standard_normal((2, 3, 4, 5, 6))
    gp = rng.standard_normal((2, 3, 5, 6))
    _compare("project", F.project(vol, backend="cuda"), F.project(vol, backend="cpu"), failures)
    _compare("project backward", F.project_backward(gp, vol, backend="cuda"),
             F.project_backward(gp, vol, backend="cpu"), failures)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a third of the sampler's mode/padding/corner combinations")
    ap.add_argument("--cases", default="sampler,grids,layers",
                    help="comma-separated groups to run: sampler, grids, layers (default all three)")
    ap.add_argument("--seed", type=int, default=0, help="random inputs' seed (default 0)")
    ap.add_argument("--allow-simulator", action="store_true",
                    help="run under Numba's CUDA simulator too (the test suite's check of this script)")
    args = ap.parse_args(argv)
    from npstn.bench.common import cuda_unavailable

    why = cuda_unavailable()
    if why and not (args.allow_simulator and "simulator" in why):
        print(f"gpu_memcheck: {why}; nothing to check", file=sys.stderr)
        return 2
    groups = {"sampler": sampler_cases, "grids": grid_cases, "layers": layer_cases}
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in groups]
    if unknown or not chosen:
        ap.error(f"--cases: unknown group(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(groups)}")
    rng = np.random.default_rng(args.seed)
    failures: list[str] = []
    with np.errstate(all="ignore"):
        for c in chosen:
            groups[c](rng, failures, args.quick)
    print(f"gpu_memcheck: {len(failures)} mismatch(es)" + (": " + "; ".join(failures) if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
