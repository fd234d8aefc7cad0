"""Benchmark: one training step of the paper's models, and what a full run costs.

Run it from any install, or from the repository root::

    npstn bench train                                    # FCN, CNN, ST-FCN, ST-CNN (affine, tps) on RTS
    python benchmarks/bench_train.py                     # the same, from a checkout
    npstn bench train --models fcn,st-fcn --repeats 10 --batch-size 64 --json -
    npstn bench train --models cnn,st-cnn --transforms affine --profile   # + per-layer profile, GFLOP/s

What is timed. One training step, exactly as :func:`npstn.train.train` takes
it, minus the bookkeeping (logging, checkpoints, evaluation)::

    logits = model(x); loss = loss_fn(logits, y)            # CrossEntropyLoss
    optimizer.zero_grad(); model.backward(loss_fn.backward()); optimizer.step()

with SGD (lr 0.01, momentum :data:`npstn.train.DEFAULT_MOMENTUM`), float32,
batch 256 by default, for FCN, CNN, ST-FCN and ST-CNN (each ST model with
every ``--transforms`` entry), built by :func:`npstn.models.build_model` as
training builds them (``needs_input_grad = False``: no gradient for the
images, as PyTorch computes none for an input without ``requires_grad``) (parameter-matched widths, RTS: 42x42 inputs, the ST
followed by a 2x2 average pool). Data generation (drawing and distorting a
batch, :meth:`npstn.data.DistortedMNIST.sample_batch`) is timed separately,
on its own, and reported in its own column: the steps cycle through
``--data-batches`` batches made before the timing starts.

PyTorch (optional, imported only here): the *same* networks
(:func:`npstn.bench.torch_models.to_torch`: same layers, widths, parameter
counts, and a copy of npstn's initial weights), checked at start-up to give
the same logits as npstn on the first batch (float32, 1e-4 relative) and the
same gradients outside the localisation networks (1e-3), then stepped with
``F.cross_entropy``, ``loss.backward()`` and ``torch.optim.SGD`` (same lr,
momentum and per-parameter lr multipliers), on the same batches, with
``torch.set_num_threads`` equal to Numba's thread count. Every round of the
timing runs every model once with npstn and once with PyTorch, one after the
other (the order reversed every other round), so a change in machine load
hits all of them alike.

Reported per model (and backend): the median ms per step over ``--repeats``
rounds after ``--warmup`` rounds (min and quartiles in the JSON), steps/s,
the ST's own share of the step (its forward and backward, localisation
network included, timed inside the step), the overhead ratio ST-FCN/FCN and
ST-CNN/CNN of median step times (for both libraries), the data time per
batch, the projected wall time of the full schedule, ``--schedule-steps``
(150k) x (median step + data time), and the ratio torch_ms / npstn_ms (> 1:
npstn is faster).

``--profile`` then profiles each model with convolutions on its own
(:mod:`npstn.bench.layers`): the median time of every layer's forward and
backward inside the training step, its share of the step, and the
convolutions' GFLOP/s against this machine's sgemm rate (a 2048^3 float32
product); the tables go to the output and the JSON (``profile``).

Backends: ``cpu`` by default; ``numpy`` (the readable specification, for the
npstn layers that have one) and ``cuda`` (every op runs its cuda kernels,
the host batches and parameters copied to the GPU and the results back at
each op, by the dispatch rule of :mod:`npstn._backend`; only on a real GPU,
skipped with a message otherwise; PyTorch then runs on the GPU) on request.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from npstn.utils import argtypes as A
from npstn.bench.common import (
    blas_threads,
    cuda_unavailable,
    import_torch,
    load_average,
    print_header,
    run_interleaved,
    run_meta,
    set_blas_threads,
    set_omp_wait_policy,
    stats_ms,
    write_json,
)

__all__ = ["main", "model_configs", "make_data_source", "synthetic_digits", "format_table"]

#: How the script form of this benchmark is invoked (recorded in the JSON's ``command``).
SCRIPT = "python benchmarks/bench_train.py"
#: The paper's schedule: 150k steps.
SCHEDULE_STEPS = 150_000
ST_BASE = {"st-fcn": "fcn", "st-cnn": "cnn"}
LR = 0.01
# npstn.models' names, repeated here so that parsing the options imports nothing
# that starts an OpenMP runtime (tests check they agree with npstn.models)
MODELS = ("fcn", "cnn", "st-fcn", "st-cnn")
TRANSFORM_NAMES = ("affine", "projective", "tps", "attention")
DISTORTIONS = ("r", "rts", "p", "e", "tc")


# ----------------------------------------------------------------------------
# What runs
# ----------------------------------------------------------------------------

def model_configs(models, transforms) -> list[tuple[str, str | None]]:
    """(model, transform or None) for each model, each ST model once per transform."""
    out = []
    for m in models:
        if m.startswith("st-"):
            out.extend((m, t) for t in transforms)
        else:
            out.append((m, None))
    return out


def label(model: str, transform: str | None) -> str:
    return model.upper() + (f" {transform}" if transform else "")


def synthetic_digits(n: int = 1000, seed: int = 0):
    """n 28x28 uint8 "digits" (a bright bar whose place is the class, plus noise) and labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = (rng.random((n, 28, 28)) * 40).astype(np.uint8)
    for i, k in enumerate(y):
        x[i, 5 + 2 * k:8 + 2 * k, 6:22] = 230
    return x, y.astype(np.int64)


def make_data_source(mode: str, data_dir=None):
    """``(images, labels, description)``: the training digits the batches are drawn from.

    ``mode`` "mnist" reads MNIST (fetching it if need be, as training does);
    "synthetic" makes digits up; "auto" reads MNIST if it is on this machine
    (``data_dir``, ``$NPSTN_DATA_DIR`` or the cache) and otherwise makes digits
    up, with a note. The step time does not depend on the pixel values (nor,
    but for the ST's sample points, on the distortion drawn); data time does
    not depend on where the digits came from.
    """
    from npstn.data import MNISTError, load_mnist, where

    if mode == "synthetic":
        x, y = synthetic_digits()
        return x, y, "synthetic digits (--data synthetic)"
    if mode == "mnist":
        x, y = load_mnist("train", data_dir, progress=False)
        return x, y, f"MNIST training digits ({where(data_dir)})"
    folder = where(data_dir)
    if folder is not None:
        try:
            x, y = load_mnist("train", folder, progress=False)
            return x, y, f"MNIST training digits ({folder})"
        except MNISTError as exc:
            why = f"MNIST in {folder} is unusable ({str(exc).splitlines()[0]})"
    else:
        why = "MNIST is not on this machine (no --data-dir, NPSTN_DATA_DIR or cached copy)"
    x, y = synthetic_digits()
    return x, y, f"synthetic digits: {why}; pass --data mnist to fetch it"


# ----------------------------------------------------------------------------
# The steps
# ----------------------------------------------------------------------------

def _npstn_step(model, batches, momentum, st_times, on_device: bool = False):
    """A closure running one npstn training step on the next batch; ST time appended to st_times.

    The step is :func:`npstn.train.step.train_step`, the one training runs (its loss read-back ends
    the step on a GPU too). ``on_device``: as ``npstn train --backend cuda`` does, the model moves to
    the GPU (parameters, gradients, SGD buffers) and the batches are copied there once, up front, as
    PyTorch's are; the ST's share is then timed between two device synchronisations.
    """
    import numpy as np

    from npstn import nn
    from npstn.train.step import train_step

    sync = _no_sync
    if on_device:
        from numba import cuda

        from npstn._device import to_device

        model.to("cuda")
        batches = [(to_device(np.asarray(x, dtype=np.float32)), to_device(np.asarray(y, dtype=np.int64)))
                   for x, y in batches]
        sync = cuda.synchronize
    loss_fn = nn.CrossEntropyLoss()
    opt = nn.SGD(model.parameters(), lr=LR, momentum=momentum)
    clock = time.perf_counter
    acc = [0.0]
    st = getattr(model, "transformer", None)
    if st is not None:  # time the ST's forward and backward inside the step
        fwd, bwd = st.forward, st.backward

        def timed_fwd(x):
            sync()
            t0 = clock()
            out = fwd(x)
            sync()
            acc[0] += clock() - t0
            return out

        def timed_bwd(g):
            sync()
            t0 = clock()
            out = bwd(g)
            sync()
            acc[0] += clock() - t0
            return out

        object.__setattr__(st, "forward", timed_fwd)
        object.__setattr__(st, "backward", timed_bwd)
    i = [0]

    def step():
        x, y = batches[i[0] % len(batches)]
        i[0] += 1
        acc[0] = 0.0
        loss, _ = train_step(model, loss_fn, opt, x, y)
        if st is not None:
            st_times.append(acc[0])
        return loss

    return step


def _no_sync():
    pass


def _torch_step(torch, tmodel, lr_mults, tbatches, momentum):
    import torch.nn.functional as TF

    from npstn.bench.torch_models import sgd_param_groups

    opt = torch.optim.SGD(sgd_param_groups(lr_mults, LR), lr=LR, momentum=momentum)
    i = [0]

    def step():
        x, y = tbatches[i[0] % len(tbatches)]
        i[0] += 1
        logits = tmodel(x)
        loss = TF.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()  # also waits for a GPU

    return step


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------

def _csv(text) -> list[str]:
    return [t.strip().lower() for t in str(text).split(",") if t.strip()]


def parse_args(argv, prog=SCRIPT):
    p = A.Parser(
        prog=prog,
        description="Time one training step (forward, backward, SGD momentum update) of FCN, CNN, "
                    "ST-FCN and ST-CNN on distorted MNIST, per backend, interleaved with the same "
                    "networks in PyTorch when it is installed; project the full 150k-step run.")
    p.add_argument("--backends", default="cpu",
                   help="comma-separated npstn backends: cpu (default), numpy, cuda (cuda only on a "
                        "real GPU; skipped with a message otherwise)")
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"comma-separated models (default {','.join(MODELS)})")
    p.add_argument("--transforms", default="affine,tps",
                   help="comma-separated transforms of the ST models (default affine,tps; also "
                        "projective, attention)")
    p.add_argument("--distortion", default="rts", choices=list(DISTORTIONS),
                   help="distorted-MNIST variant: input size and the ST's 2x2 pool (default rts, 42x42)")
    p.add_argument("--batch-size", type=A.positive_int(16_384), default=256, help="batch size (default 256, the paper's)")
    p.add_argument("--repeats", type=A.positive_int(100_000), default=30, help="timed rounds (default 30; medians are reported)")
    p.add_argument("--warmup", type=A.nonnegative_int(100_000), default=3, help="untimed rounds first (default 3)")
    p.add_argument("--threads", type=A.positive_int(1024), default=None,
                   help="threads for Numba, NumPy's BLAS and PyTorch (default: Numba's, all cores)")
    p.add_argument("--no-torch", action="store_true", help="do not measure PyTorch")
    p.add_argument("--profile", action="store_true",
                   help="after the timing, profile each model with convolutions per layer and pass "
                        "(ms, share of the step, the convolutions' GFLOP/s against this machine's sgemm "
                        "rate; npstn.bench.layers)")
    p.add_argument("--data", choices=["auto", "mnist", "synthetic"], default="auto",
                   help="training digits: MNIST if on this machine, else synthetic (auto, default); "
                        "MNIST, fetched if need be (mnist); made up (synthetic)")
    p.add_argument("--data-dir", type=A.input_folder, default=None, help="folder with the MNIST IDX files (default: "
                   "NPSTN_DATA_DIR, then the cache)")
    p.add_argument("--data-batches", type=A.positive_int(1024), default=8,
                   help="batches generated (and timed) before the steps, which cycle through them "
                        "(default 8)")
    p.add_argument("--schedule-steps", type=A.positive_int(10**9), default=SCHEDULE_STEPS,
                   help=f"steps of the full run the projection is for (default {SCHEDULE_STEPS}, the paper's)")
    p.add_argument("--seed", type=A.seed, default=0, help="seed of the weights and the data (default 0)")
    p.add_argument("--omp-wait-policy", choices=["passive", "active", "unset"], default="passive",
                   help="OMP_WAIT_POLICY for Numba's and PyTorch's OpenMP pools (default passive; "
                        "'unset' leaves the environment alone)")
    p.add_argument("--json", type=A.output_file, default=None, metavar="PATH",
                   help="where to write the JSON ('-' for stdout; default "
                        "benchmarks/results/bench_train-<host>.json in a checkout, else "
                        "./bench_train-<host>.json)")
    args = p.parse_args(argv)
    args.backends = _csv(args.backends)
    args.models = _csv(args.models)
    args.transforms = _csv(args.transforms)
    bad = [b for b in args.backends if b not in ("numpy", "cpu", "cuda")]
    if bad:
        p.error(f"--backends: unknown backend(s) {', '.join(bad)}; choose from numpy, cpu, cuda")
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        p.error(f"--models: unknown model(s) {', '.join(bad)}; choose from {', '.join(MODELS)}")
    bad = [t for t in args.transforms if t not in TRANSFORM_NAMES]
    if bad:
        p.error(f"--transforms: unknown transform(s) {', '.join(bad)}; choose from {', '.join(TRANSFORM_NAMES)}")
    if not args.models:
        p.error("--models is empty")
    if any(m.startswith("st-") for m in args.models) and not args.transforms:
        p.error("--transforms is empty but ST models were asked for")
    for name in ("batch_size", "repeats", "data_batches", "schedule_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be at least 0")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    return args


def main(argv=None, *, prog: str = SCRIPT) -> int:
    """Run the benchmark with command-line arguments ``argv``; returns 0.

    ``prog`` is how it was invoked (the script, or ``npstn bench train``), for
    the help text and the JSON's ``command``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv, prog)
    out = sys.stderr if args.json == "-" else sys.stdout  # the table goes where the JSON does not
    set_omp_wait_policy(args.omp_wait_policy)

    import numba

    import npstn
    from npstn.train import DEFAULT_MOMENTUM

    torch = import_torch(args.no_torch)
    notes = []
    if torch is None and not args.no_torch:
        notes.append("PyTorch is not installed: no comparison (pip install torch)")

    threads = numba.get_num_threads() if args.threads is None else args.threads
    if threads > numba.config.NUMBA_NUM_THREADS:
        notes.append(f"--threads {threads} > NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}: "
                     f"using {numba.config.NUMBA_NUM_THREADS}")
        threads = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(threads)
    if args.threads is not None and not set_blas_threads(threads):
        notes.append("could not set NumPy's BLAS thread count (set OPENBLAS_NUM_THREADS)")
    if torch is not None:
        torch.set_num_threads(threads)

    backends = list(args.backends)
    if "cuda" in backends:
        reason = cuda_unavailable()
        if reason:
            backends.remove("cuda")
            notes.append(f"cuda skipped: {reason}")

    from npstn.data import MNISTError

    try:
        images, labels, data_desc = make_data_source(args.data, args.data_dir)
    except MNISTError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    configs = model_configs(args.models, args.transforms)
    momentum = DEFAULT_MOMENTUM
    meta = run_meta(
        "bench_train", torch, prog, argv, notes, backends,
        npstn=npstn.__version__,
        blas_threads=blas_threads(),
        openblas_thread_timeout=os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        dtype="float32",
        distortion=args.distortion,
        batch_size=args.batch_size,
        optimizer=f"SGD(lr={LR}, momentum={momentum})",
        repeats=args.repeats,
        warmup=args.warmup,
        data=data_desc,
        data_batches=args.data_batches,
        schedule_steps=args.schedule_steps,
        seed=args.seed,
    )
    print_header(meta, out, [f"{args.distortion.upper()}, batch {args.batch_size}, {meta['optimizer']}, "
                             f"float32; data: {data_desc}"])

    rows = []
    prev_backend = npstn.get_backend()
    try:
        for backend in backends:
            npstn.set_backend(backend)  # every layer, not only the ST, follows the backend
            rows += _run_backend(args, backend, configs, images, labels, momentum, torch, out)
    finally:
        npstn.set_backend(prev_backend)

    try:
        meta["numba_threading_layer"] = numba.threading_layer()
    except ValueError:
        meta["numba_threading_layer"] = None
    meta["load_average_end"] = load_average()
    print(f"# numba threading layer: {meta['numba_threading_layer']}; load average at the end: "
          f"{meta['load_average_end']}", file=out)
    print(file=out)
    print(format_table(rows), file=out)
    summary = format_overheads(rows)
    if summary:
        print(file=out)
        print(summary, file=out)
    write_json({"meta": meta, "results": rows}, args.json, "bench_train")
    return 0


def _run_backend(args, backend, configs, images, labels, momentum, torch, out) -> list[dict]:
    """Generate the data, build every model (and its PyTorch twin), time them; the table rows."""
    import numpy as np

    from npstn.data import DistortedMNIST
    from npstn.models import build_model
    from npstn.train.data import data_backend

    # ---- data: generated (and timed) before the steps, on the backend training uses ------
    distort_on = data_backend(backend)
    source = DistortedMNIST(args.distortion, backend=distort_on, images=images, labels=labels)
    rng = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=(1,)))
    source.sample_batch(args.batch_size, rng)  # compiles the distortion's kernels
    batches, data_times = [], []
    for _ in range(args.data_batches):
        t0 = time.perf_counter()
        x, y = source.sample_batch(args.batch_size, rng)
        data_times.append(time.perf_counter() - t0)
        batches.append((np.ascontiguousarray(x, dtype=np.float32), y))
    data = stats_ms(data_times)
    print(f"# {backend}: data {data['median_ms']:.2f} ms per batch of {args.batch_size} "
          f"(median of {len(data_times)}; distorted on the {distort_on or 'default'} backend, "
          "as training does)", file=out, flush=True)

    tdev = "cuda" if backend == "cuda" else "cpu"
    use_torch = torch is not None and (tdev == "cpu" or torch.cuda.is_available())
    if torch is not None and not use_torch:
        print(f"# {backend}: PyTorch has no GPU here: no comparison", file=out, flush=True)
    tbatches = None
    if use_torch and tdev == "cuda":
        # npstn computes in float32; PyTorch's default on NVIDIA GPUs rounds convolution inputs to
        # TF32 (10-bit mantissa), another computation (on an H200 the CNN's gradients then differed
        # from npstn's by 3% of their scale, against 1e-6 in float32): compare and time in float32
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        print(f"# {backend}: PyTorch CUDA in full float32 (TF32 off, as npstn)", file=out, flush=True)
    if use_torch:
        tbatches = [(torch.from_numpy(x).to(tdev), torch.from_numpy(np.asarray(y, np.int64)).to(tdev))
                    for x, y in batches]

    # ---- models, twins, the equivalence check ----------------------------------
    funcs, info, st_times, funcs_models = {}, {}, {}, {}
    for model_name, transform in configs:
        name = label(model_name, transform)
        model = build_model(model_name, transform or "affine", args.distortion, seed=args.seed)
        model.needs_input_grad = False  # as training builds it (npstn.train.loop.build_run_model)
        spec = model.spec
        info[name] = {"model": model_name, "transform": transform, "label": name, "backend": backend,
                      "distortion": args.distortion, "input_size": spec.input_size,
                      "classifier_input_size": spec.classifier_input_size, "width": spec.width,
                      "params": model.num_parameters(), "batch_size": args.batch_size}
        if use_torch:
            from npstn.bench.torch_models import check_equivalence, to_torch

            tmodel, lr_mults = to_torch(model, tdev)
            x0, y0 = batches[0]
            eq = check_equivalence(model, tmodel, x0, y0, device=tdev)
            info[name]["equivalence"] = eq
            info[name]["torch_params"] = int(sum(p.numel() for p in tmodel.parameters()))
            funcs[(name, "torch")] = _torch_step(torch, tmodel, lr_mults, tbatches, momentum)
        st_times[name] = []
        # (after the twin is made from the host weights; on cuda the model then moves to the GPU)
        funcs[(name, "npstn")] = _npstn_step(model, batches, momentum, st_times[name], backend == "cuda")
        funcs_models[name] = model
        print(f"# {backend}: {name}: {info[name]['params']:,} parameters"
              + (f"; PyTorch twin agrees (logits {eq['logits_max_rel_err']:.1e}, "
                 f"gradients {eq['grad_max_rel_err']:.1e})" if use_torch else ""), file=out, flush=True)

    # ---- timing: every model, both libraries, once per round --------------------
    print(f"# {backend}: timing {len(funcs)} step functions, {args.warmup} warm-up + {args.repeats} "
          "rounds...", file=out, flush=True)
    res = run_interleaved(funcs, args.repeats, args.warmup)

    rows = []
    for model_name, transform in configs:
        name = label(model_name, transform)
        ours = res[(name, "npstn")]
        row = dict(info[name])
        row["npstn"] = ours
        row["steps_per_s"] = 1e3 / ours["median_ms"]
        if st_times[name]:
            st = stats_ms(st_times[name][args.warmup:] or st_times[name])
            row["st"] = st
            row["st_share"] = st["median_ms"] / ours["median_ms"]
        row["data"] = data
        row["projected_steps"] = args.schedule_steps
        row["projected_hours"] = args.schedule_steps * (ours["median_ms"] + data["median_ms"]) / 3.6e6
        if (name, "torch") in res:
            theirs = res[(name, "torch")]
            row["torch_device"] = tdev
            row["torch"] = theirs
            row["torch_steps_per_s"] = 1e3 / theirs["median_ms"]
            row["torch_projected_hours"] = (args.schedule_steps * (theirs["median_ms"] + data["median_ms"])
                                            / 3.6e6)
            row["ratio_torch_over_npstn"] = theirs["median_ms"] / ours["median_ms"]
        rows.append(row)
    # overhead of the ST: ratio of median step times to the base model, same backend
    by_name = {r["label"]: r for r in rows}
    for r in rows:
        base = by_name.get(label(ST_BASE[r["model"]], None)) if r["model"] in ST_BASE else None
        if base is None:
            continue
        r["st_over_base"] = r["npstn"]["median_ms"] / base["npstn"]["median_ms"]
        if "torch" in r and "torch" in base:
            r["torch_st_over_base"] = r["torch"]["median_ms"] / base["torch"]["median_ms"]
    for r in rows:
        print(format_row(r), file=out, flush=True)
    if args.profile and backend != "cuda":
        _profile(args, configs, funcs_models, batches, momentum, rows, out)
    return rows


def _profile(args, configs, models, batches, momentum, rows, out) -> None:
    """Per-layer profile of each model with convolutions (``--profile``), into its row too."""
    from npstn.bench.layers import format_profile, profile_step, sgemm_rate

    rate = sgemm_rate()
    for (model_name, transform), row in zip(configs, rows):
        if "cnn" not in model_name:
            continue
        x, y = batches[0]
        prof = profile_step(models[row["label"]], x, y, repeats=max(3, min(args.repeats, 10)),
                            momentum=momentum)
        prof["sgemm_gflops"] = rate
        row["profile"] = prof
        print(file=out)
        print(format_profile(prof, rate, f"{row['backend']}: {row['label']} ({row['distortion'].upper()}, "
                                         f"{row['input_size']}x{row['input_size']}, batch {args.batch_size})"),
              file=out, flush=True)


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------

def _iqr(s) -> float:
    return s["q3_ms"] - s["q1_ms"]


def format_row(r) -> str:
    s = (f"{r['label']:<18} {r['backend']:<6} npstn {r['npstn']['median_ms']:9.2f} ms/step "
         f"({r['steps_per_s']:7.1f} steps/s)")
    if "st" in r:
        s += f" ST {r['st']['median_ms']:7.2f} ms ({100 * r['st_share']:.0f}%)"
    if "st_over_base" in r:
        s += f" ST/base {r['st_over_base']:.2f}"
    if "torch" in r:
        s += f" | torch {r['torch']['median_ms']:9.2f} ms  ratio {r['ratio_torch_over_npstn']:5.2f}"
    return s


def format_table(rows) -> str:
    head = ("| model | backend | params | npstn ms/step (median) | min | IQR | steps/s | ST fwd+bwd ms (share) "
            "| ST/base | data ms/batch | projected run (h) | torch ms/step | torch ST/base | torch/npstn |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        n = r["npstn"]
        st = f"{r['st']['median_ms']:.2f} ({100 * r['st_share']:.0f}%)" if "st" in r else "-"
        ratio = f"{r['st_over_base']:.2f}" if "st_over_base" in r else "-"
        t = f"{r['torch']['median_ms']:.2f}" if "torch" in r else "-"
        tratio = f"{r['torch_st_over_base']:.2f}" if "torch_st_over_base" in r else "-"
        vs = f"{r['ratio_torch_over_npstn']:.2f}" if "torch" in r else "-"
        lines.append(
            f"| {r['label']} | {r['backend']} | {r['params']:,} | {n['median_ms']:.2f} | {n['min_ms']:.2f} "
            f"| {_iqr(n):.2f} | {r['steps_per_s']:.1f} | {st} | {ratio} | {r['data']['median_ms']:.2f} "
            f"| {r['projected_hours']:.1f} | {t} | {tratio} | {vs} |")
    return "\n".join(lines)


def format_overheads(rows) -> str:
    """One line per ST model: its step time over its base model's (npstn, and PyTorch)."""
    lines = []
    for r in rows:
        if "st_over_base" not in r:
            continue
        base = ST_BASE[r["model"]].upper()
        s = (f"# {r['backend']}: {r['label']} / {base} = {r['st_over_base']:.2f} "
             f"({100 * (r['st_over_base'] - 1):+.0f}%)")
        if "torch_st_over_base" in r:
            s += f"; PyTorch {r['torch_st_over_base']:.2f} ({100 * (r['torch_st_over_base'] - 1):+.0f}%)"
        s += (f"; the ST is {100 * r['st_share']:.0f}% of the step; classifier input "
              f"{r['classifier_input_size']}x{r['classifier_input_size']} vs {r['input_size']}x{r['input_size']}")
        lines.append(s)
    return "\n".join(lines)
