"""Benchmark: affine grid + bilinear sampling, forward and forward+backward.

Run it from any install, or from the repository root (nothing to install
beyond npstn's own dependencies; PyTorch, when installed, is measured
alongside)::

    npstn bench sampler                                  # all shapes, numpy/cpu/cuda
    python benchmarks/bench_sampler.py                   # the same, from a checkout
    python benchmarks/bench_sampler.py --backends cpu --repeats 50 --json -

What is timed, per shape (N, C, H, W) -> H_out x W_out (or a volume
(N, C, D, H, W) -> D_out x H_out x W_out: the 3D transformer, theta (N, 3, 4)
and trilinear sampling), float32, align_corners=False, padding "zeros", a
random near-identity theta:

* ``fwd``: ``affine_grid(theta)`` then ``grid_sample(input, grid)``;
* ``fwd+bwd``: the forward, then ``grid_sample_backward`` (grad_input and
  grad_grid for a fixed random grad_output) and ``affine_grid_backward``
  (grad_theta): everything a training step spends on the transformer's
  sampling.

PyTorch (when importable) runs ``F.affine_grid`` / ``F.grid_sample`` on CPU
tensors, with ``requires_grad`` on theta *and* the input for fwd+bwd (npstn's
backward always returns both gradients), ``out.backward(grad_output)``.
Each repeat runs every implementation once, one after the other (npstn fwd,
torch fwd, npstn fwd+bwd, torch fwd+bwd, ...), so a change in machine load
hits all of them alike; the figures are medians over the repeats after
warm-up, and the ratio torch_time / npstn_time of those medians is the number
to compare across machines (> 1: npstn is faster).

Reported per (shape, backend, pass): median ms (and min, quartiles in the
JSON), output pixels per second (N * C * H_out * W_out / time) and effective
memory bandwidth, the bytes the sampler must at least move divided by the
time (all arrays float32, 4 bytes an element)::

    fwd     bytes = 4 * (N*C*H*W  + N*H_out*W_out*2 + N*C*H_out*W_out)
                         input      grid                output
    fwd+bwd bytes = fwd bytes
                  + 4 * (N*C*H_out*W_out + N*C*H*W + N*H_out*W_out*2     (read: grad_output, input, grid)
                         + N*C*H*W + N*H_out*W_out*2)                    (written: grad_input, grad_grid)

(theta and grad_theta are negligible and not counted).

Threads: PyTorch gets ``torch.set_num_threads(os.cpu_count())``; Numba uses
its default (``numba.get_num_threads()``, all cores unless NUMBA_NUM_THREADS
says otherwise). Both are printed and written to the JSON, with the CPU
model, core count, library versions, the date and the load average.

OpenMP wait policy: Numba's OpenMP layer and PyTorch each keep a pool of
OpenMP threads that spin-wait for a while after every parallel region. With
both in one process, interleaved, on a machine with few cores, one pool's
spinning steals the cores the other needs. ``--omp-wait-policy`` (default
``passive``) sets ``OMP_WAIT_POLICY`` before Numba and PyTorch load; the
figures in benchmarks/RESULTS.md say what it changes.

The cuda backend runs only on a real GPU (skipped when
``numba.cuda.is_available()`` is False or the CUDA simulator is on), with
device arrays that stay on the device and a synchronisation after each call;
PyTorch is then also measured on ``cuda`` tensors.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

from npstn.utils import argtypes as A
from npstn.bench.common import (  # noqa: F401  (re-exported: the script's old names)
    cpu_model,
    cuda_unavailable,
    gpu_name,
    load_average,
    print_header,
    run_interleaved,
    run_meta,
    set_omp_wait_policy,
    write_json as _write_json,
)

#: How the script form of this benchmark is invoked (recorded in the JSON's ``command``).
SCRIPT = "python benchmarks/bench_sampler.py"

SHAPES = [
    # (N, C, H, W), (H_out, W_out)
    ((256, 1, 28, 28), (28, 28)),  # MNIST
    ((256, 1, 42, 42), (42, 42)),  # RTS / distorted MNIST 42x42
    ((256, 1, 60, 60), (28, 28)),  # attention-style downsampling (cluttered 60x60 -> 28x28)
    ((32, 32, 64, 64), (64, 64)),  # a transformer on feature maps
    ((16, 3, 224, 224), (224, 224)),  # an ImageNet-sized batch
    # (N, C, D, H, W), (D_out, H_out, W_out): the 3D transformer (affine_grid (N, 3, 4), trilinear sampling)
    ((8, 4, 32, 32, 32), (32, 32, 32)),
]
#: the numpy backend (the readable specification) is slow: only the small shapes
NUMPY_MAX_OUTPUT_ELEMENTS = 256 * 1 * 42 * 42

# ----------------------------------------------------------------------------
# Shapes and traffic
# ----------------------------------------------------------------------------

def shape_name(shape, out_hw) -> str:
    return f"({','.join(map(str, shape))})->{'x'.join(map(str, out_hw))}"


def traffic_bytes(shape, out_hw, itemsize=4):
    """(forward bytes, forward+backward bytes): the formula in the module docstring (volumes: grids of 3)."""
    n, c = shape[:2]
    inp = n * c * math.prod(shape[2:])
    points = n * math.prod(out_hw)
    grid, out = points * len(out_hw), c * points
    fwd = inp + grid + out
    bwd = (out + inp + grid) + (inp + grid)
    return itemsize * fwd, itemsize * (fwd + bwd)


# ----------------------------------------------------------------------------
# The measured callables
# ----------------------------------------------------------------------------

def make_inputs(shape, out_hw, seed=0):
    import numpy as np

    n, c = shape[:2]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    # near-identity transforms: a little rotation, scale and shift; some points fall outside
    if len(shape) == 5:
        base = [[0.9, 0.1, 0.0, 0.05], [-0.1, 0.9, 0.05, 0.02], [0.0, -0.05, 0.9, -0.03]]
    else:
        base = [[0.9, 0.1, 0.05], [-0.1, 0.9, 0.02]]
    theta = np.tile(np.array(base, np.float32), (n, 1, 1))
    theta += rng.normal(0.0, 0.05, theta.shape).astype(np.float32)
    go = rng.standard_normal((n, c, *out_hw)).astype(np.float32)
    return x, theta, go


def npstn_callables(backend, x, theta, go, out_hw):
    """(fwd, fwdbwd) closures for an npstn backend; cuda keeps device arrays on the device."""
    import npstn.functional as F

    size = (x.shape[0], x.shape[1], *out_hw)
    sync = lambda: None  # noqa: E731
    if backend == "cuda":
        from numba import cuda

        x, theta, go = cuda.to_device(x), cuda.to_device(theta), cuda.to_device(go)
        sync = cuda.synchronize

    def fwd():
        g = F.affine_grid(theta, size, backend=backend)
        out = F.grid_sample(x, g, backend=backend)
        sync()
        return out

    def fwdbwd():
        g = F.affine_grid(theta, size, backend=backend)
        out = F.grid_sample(x, g, backend=backend)
        gi, gg = F.grid_sample_backward(go, x, g, backend=backend)
        gt = F.affine_grid_backward(gg, theta, size, backend=backend)
        sync()
        return out, gi, gt

    return fwd, fwdbwd


def torch_callables(device, x, theta, go, out_hw):
    import torch
    import torch.nn.functional as TF

    size = (x.shape[0], x.shape[1], *out_hw)
    tx = torch.from_numpy(x).to(device)
    ttheta = torch.from_numpy(theta).to(device)
    tgo = torch.from_numpy(go).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def fwd():
        with torch.no_grad():
            g = TF.affine_grid(ttheta, size, align_corners=False)
            out = TF.grid_sample(tx, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        sync()
        return out

    def fwdbwd():
        th = ttheta.detach().requires_grad_(True)
        xi = tx.detach().requires_grad_(True)
        g = TF.affine_grid(th, size, align_corners=False)
        out = TF.grid_sample(xi, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        out.backward(tgo)
        sync()
        return out, xi.grad, th.grad

    return fwd, fwdbwd


def check_agreement(ours, theirs, what, tol=1e-4):
    """The two implementations compute the same thing (a guard against benchmarking a bug).

    grad_theta gets a loose ``tol``: it sums ~1e5 float32 terms, and the two
    float32 grids differ in the last bit (npstn rounds a float64 product once,
    torch multiplies in float32), which moves the odd point across a pixel
    boundary, where the coordinate gradient jumps (by up to W/2 times a pixel
    difference).
    """
    import numpy as np

    a = ours.copy_to_host() if hasattr(ours, "copy_to_host") else np.asarray(ours)
    b = theirs.detach().cpu().numpy()
    scale = max(1.0, float(np.abs(b).max()))
    err = float(np.abs(a - b).max()) / scale
    if err > tol:
        raise AssertionError(f"{what}: npstn and torch disagree (max relative error {err:.3g})")


# ----------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------

def parse_args(argv, prog=SCRIPT):
    p = A.Parser(
        prog=prog,
        description="Time affine_grid + bilinear grid_sample (forward and forward+backward) per "
                    "backend, interleaved with PyTorch when it is installed.")
    p.add_argument("--backends", default="numpy,cpu,cuda",
                   help="comma-separated npstn backends (default: numpy,cpu,cuda; numpy runs only the "
                        "small shapes, cuda only on a real GPU)")
    p.add_argument("--shapes", default=None,
                   help=f"comma-separated indices into the shape list (0-{len(SHAPES) - 1}; "
                        f"{len(SHAPES) - 1} is the 3D one), default all")
    p.add_argument("--repeats", type=A.positive_int(100_000), default=40, help="timed rounds per shape (default 40)")
    p.add_argument("--warmup", type=A.nonnegative_int(100_000), default=3, help="untimed rounds first (default 3)")
    p.add_argument("--no-torch", action="store_true", help="do not measure PyTorch")
    p.add_argument("--omp-wait-policy", choices=["passive", "active", "unset"], default="passive",
                   help="OMP_WAIT_POLICY for Numba's and PyTorch's OpenMP pools (default passive; "
                        "'unset' leaves the environment alone)")
    p.add_argument("--json", type=A.output_file, default=None, metavar="PATH",
                   help="where to write the JSON ('-' for stdout; default "
                        "benchmarks/results/bench_sampler-<host>.json in a checkout, else "
                        "./bench_sampler-<host>.json)")
    args = p.parse_args(argv)
    bad = [b for b in args.backends.split(",") if b.strip() and b.strip() not in ("numpy", "cpu", "cuda")]
    if bad or not args.backends.strip(","):
        p.error(f"argument --backends: must be a comma list of numpy, cpu, cuda, got {args.backends!r}")
    if args.shapes is not None:
        ids = [t.strip() for t in args.shapes.split(",")]
        if not ids or not all(t.isdigit() and int(t) < len(SHAPES) for t in ids):
            p.error(f"argument --shapes: must be a comma list of shape indices 0-{len(SHAPES) - 1}, "
                    f"got {args.shapes!r}")
    return args


def main(argv=None, *, prog: str = SCRIPT) -> int:
    """Run the benchmark with command-line arguments ``argv``; returns 0.

    ``prog`` is how it was invoked (the script, or ``npstn bench sampler``),
    for the help text and the JSON's ``command``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv, prog)
    # the table goes to stdout, or to stderr when the JSON does (--json -)
    out = sys.stderr if args.json == "-" else sys.stdout
    # OpenMP reads the policy when its runtime starts: before numba / torch are imported.
    set_omp_wait_policy(args.omp_wait_policy)
    import numba

    try:
        import torch
    except ImportError:
        torch = None
    if args.no_torch:
        torch = None

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    notes = []
    if "cuda" in backends:
        reason = cuda_unavailable()
        if reason:
            backends.remove("cuda")
            notes.append(f"cuda skipped: {reason}")
    shape_ids = range(len(SHAPES)) if args.shapes is None else [int(s) for s in args.shapes.split(",")]

    if torch is not None:
        torch.set_num_threads(os.cpu_count())
    meta = run_meta("bench_sampler", torch, prog, argv, notes, backends, dtype="float32",
                    align_corners=False, padding_mode="zeros", repeats=args.repeats, warmup=args.warmup)
    print_header(meta, out)

    rows = []
    for si in shape_ids:
        shape, out_hw = SHAPES[si]
        x, theta, go = make_inputs(shape, out_hw)
        n, c = shape[:2]
        pixels = n * c * math.prod(out_hw)
        bytes_fwd, bytes_fb = traffic_bytes(shape, out_hw)
        for backend in backends:
            if backend == "numpy" and pixels > NUMPY_MAX_OUTPUT_ELEMENTS:
                continue
            funcs = {}
            f, fb = npstn_callables(backend, x, theta, go, out_hw)
            funcs["npstn fwd"], funcs["npstn fwd+bwd"] = f, fb
            tdev = "cuda" if backend == "cuda" else "cpu"
            if torch is not None and (tdev == "cpu" or torch.cuda.is_available()):
                tf, tfb = torch_callables(tdev, x, theta, go, out_hw)
                funcs["torch fwd"], funcs["torch fwd+bwd"] = tf, tfb
                check_agreement(f(), tf(), f"{shape_name(shape, out_hw)} {backend} forward")
                ours, theirs = fb(), tfb()
                check_agreement(ours[1], theirs[1], f"{shape_name(shape, out_hw)} {backend} grad_input")
                check_agreement(ours[2], theirs[2], f"{shape_name(shape, out_hw)} {backend} grad_theta",
                                tol=5e-2)
            # numpy is slow: fewer repeats are enough
            reps = max(5, args.repeats // 4) if backend == "numpy" else args.repeats
            res = run_interleaved(funcs, reps, args.warmup)
            for pas, nbytes in (("fwd", bytes_fwd), ("fwd+bwd", bytes_fb)):
                ours = res[f"npstn {pas}"]
                row = {"shape": list(shape), "out_hw": list(out_hw), "name": shape_name(shape, out_hw),
                       "backend": backend, "pass": pas, "npstn": ours,
                       "mpixels_per_s": pixels / ours["median_ms"] / 1e3,
                       "gbytes_per_s": nbytes / ours["median_ms"] / 1e6, "bytes": nbytes}
                if f"torch {pas}" in res:
                    theirs = res[f"torch {pas}"]
                    row["torch_device"] = tdev
                    row["torch"] = theirs
                    row["torch_mpixels_per_s"] = pixels / theirs["median_ms"] / 1e3
                    row["ratio_torch_over_npstn"] = theirs["median_ms"] / ours["median_ms"]
                rows.append(row)
                print(format_row(row), file=out, flush=True)
    try:
        meta["numba_threading_layer"] = numba.threading_layer()  # known once a parallel kernel has run
    except ValueError:
        meta["numba_threading_layer"] = None
    meta["load_average_end"] = load_average()
    print(f"# numba threading layer: {meta['numba_threading_layer']}; load average at the end: "
          f"{meta['load_average_end']}", file=out)
    print(file=out)
    print(format_table(rows), file=out)
    result = {"meta": meta, "results": rows}
    write_json(result, args.json)
    return 0


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------

def format_row(row) -> str:
    s = (f"{row['name']:<28} {row['backend']:<6} {row['pass']:<8} npstn {row['npstn']['median_ms']:9.3f} ms"
         f"  {row['mpixels_per_s']:8.1f} Mpx/s {row['gbytes_per_s']:7.2f} GB/s")
    if "torch" in row:
        s += f" | torch {row['torch']['median_ms']:9.3f} ms  ratio {row['ratio_torch_over_npstn']:6.2f}"
    return s


def format_table(rows) -> str:
    head = ("| shape | backend | pass | npstn ms (median) | torch ms (median) | torch/npstn "
            "| npstn Mpixel/s | npstn GB/s |")
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = f"{r['torch']['median_ms']:.3f}" if "torch" in r else "-"
        ratio = f"{r['ratio_torch_over_npstn']:.2f}" if "torch" in r else "-"
        lines.append(f"| {r['name']} | {r['backend']} | {r['pass']} | {r['npstn']['median_ms']:.3f} | {t} "
                     f"| {ratio} | {r['mpixels_per_s']:.1f} | {r['gbytes_per_s']:.2f} |")
    return "\n".join(lines)


def write_json(result, path):
    _write_json(result, path, "bench_sampler")


if __name__ == "__main__":
    sys.exit(main())
