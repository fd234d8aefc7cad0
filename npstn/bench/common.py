"""Helpers shared by the benchmarks: machine description, timing, JSON output.

Nothing here imports NumPy, Numba or PyTorch at module level: a benchmark
must be able to set ``OMP_WAIT_POLICY`` (and thread counts) before those
libraries load their threading runtimes.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import statistics
import sys
import time

__all__ = [
    "REPO",
    "cpu_model",
    "load_average",
    "cuda_unavailable",
    "set_omp_wait_policy",
    "import_torch",
    "blas_threads",
    "set_blas_threads",
    "stats_ms",
    "run_interleaved",
    "default_json_path",
    "write_json",
    "run_meta",
    "print_header",
]

#: The folder holding the ``npstn`` package: the repository root in a checkout
#: (or an editable install); site-packages in a regular install.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ----------------------------------------------------------------------------
# Machine description
# ----------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cuda_unavailable() -> str | None:
    """Why the cuda backend cannot be timed here, or None (a real GPU, not the simulator)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return "the CUDA simulator is on (NUMBA_ENABLE_CUDASIM)"
    try:
        from numba import cuda
    except Exception as exc:  # numba-cuda missing or broken
        return f"numba.cuda cannot be imported ({exc})"
    if not cuda.is_available():
        return "no GPU (numba.cuda.is_available() is False)"
    return None


def gpu_name() -> str:
    from numba import cuda

    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def set_omp_wait_policy(policy: str) -> None:
    """Set ``OMP_WAIT_POLICY`` (``passive``/``active``; ``unset`` leaves it alone).

    OpenMP reads it when its runtime starts: call this before numba's parallel
    kernels first run and before torch is imported.
    """
    if policy == "unset":
        return
    # importing numba starts no OpenMP runtime; its first parallel kernel (the threading
    # layer's initialisation) or importing torch does
    numba_par = sys.modules.get("numba.np.ufunc.parallel")
    if "torch" in sys.modules or getattr(numba_par, "_is_initialized", False):
        print("note: an OpenMP runtime (numba's threading layer or torch) has already started; "
              "--omp-wait-policy may not take effect", file=sys.stderr)
    os.environ["OMP_WAIT_POLICY"] = policy.upper()


def import_torch(disabled: bool = False):
    """``torch``, or None when it is not installed (or ``disabled``). Never a dependency of npstn."""
    if disabled:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


# BLAS threads (NumPy's matrix products): npstn.utils.threads does it for
# the training commands too.
from npstn.utils.threads import blas_threads, set_blas_threads  # noqa: E402,F401


def run_meta(benchmark: str, torch, prog: str, argv, notes: list, backends, **fields) -> dict:
    """The run description every benchmark's JSON starts with ("meta").

    Machine, library versions and thread counts, then ``fields`` (what the
    benchmark measured and how), then the command, the load average now and
    the notes; the GPU's name when the cuda backend runs.
    """
    import numba
    import numpy as np

    meta = {
        "benchmark": benchmark,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        **fields,
        "command": f"{prog} " + " ".join(argv),
        "load_average_start": load_average(),
        "notes": notes,
    }
    if "cuda" in backends:
        meta["gpu"] = gpu_name()
    return meta


def print_header(meta: dict, out, extra_lines=()) -> None:
    """The ``# ...`` lines above a benchmark's table: machine and libraries, ``extra_lines``, notes."""
    blas = f" (BLAS threads {meta['blas_threads']})" if "blas_threads" in meta else ""
    print(f"# {meta['cpu_model']}, {meta['cpu_count']} cores; numba {meta['numba']} "
          f"({meta['numba_threads']} threads), numpy {meta['numpy']}{blas}, "
          f"torch {meta['torch']} ({meta['torch_threads']} threads); OMP_WAIT_POLICY={meta['omp_wait_policy']}; "
          f"load average {meta['load_average_start']}", file=out, flush=True)
    for line in [*extra_lines, *meta["notes"]]:
        print(f"# {line}", file=out, flush=True)


# ----------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------

def stats_ms(times):
    """Seconds -> {median_ms, min_ms, q1_ms, q3_ms, repeats}."""
    ts = sorted(t * 1e3 for t in times)
    q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
    return {"median_ms": statistics.median(ts), "min_ms": ts[0], "q1_ms": q[0], "q3_ms": q[2],
            "repeats": len(ts)}


def run_interleaved(funcs: dict, repeats: int, warmup: int) -> dict:
    """Time every callable once per round, in turn; return name -> stats."""
    names = list(funcs)
    for _ in range(warmup):
        for name in names:
            funcs[name]()
    times = {name: [] for name in names}
    clock = time.perf_counter
    for r in range(repeats):
        # alternate the order each round so no implementation always follows the same one
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            t0 = clock()
            funcs[name]()
            times[name].append(clock() - t0)
    return {name: stats_ms(ts) for name, ts in times.items()}


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------

def default_json_path(name: str) -> str:
    """``benchmarks/results/<name>-<host>.json`` in a checkout, else ``./<name>-<host>.json``."""
    fname = f"{name}-{socket.gethostname()}.json"
    bench_dir = os.path.join(REPO, "benchmarks")
    if os.path.isdir(bench_dir):
        return os.path.join(bench_dir, "results", fname)
    return os.path.join(os.getcwd(), fname)


def write_json(result, path, name: str) -> None:
    """Write ``result`` to ``path`` ('-': stdout; None: :func:`default_json_path`)."""
    text = json.dumps(result, indent=2)
    if path == "-":
        print(text)
        return
    if path is None:
        path = default_json_path(name)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text + "\n")
    print(f"# wrote {path}", flush=True)
