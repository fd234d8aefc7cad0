#!/usr/bin/env bash
# One-shot check of npstn's cuda backend on a machine with an NVIDIA GPU (about 6-7 minutes on an H200;
# each step has a time limit).
#
#   bash benchmarks/gpu_check.sh            # from the repository root, with .venv set up (make venv)
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh
#
# 0. every cuda kernel compiled to PTX (tests/cuda_compile_check.py; the script
#    stops here if one does not compile);
# 1. the cuda tests on the real device (NPSTN_REAL_GPU=1: no simulator);
# 2. a short `npstn train --backend cuda` against the same run with --backend cpu
#    (same config and seed): test errors and a few weights compared (needs MNIST:
#    NPSTN_DATA_DIR or the npstn cache; skipped with a note otherwise);
# 3. `npstn bench sampler` and `npstn bench train` with the cuda backend, beside
#    PyTorch CUDA when torch with CUDA is installed;
# 4. benchmarks/gpu_memcheck.py (every kernel on awkward inputs, against the cpu
#    backend) under compute-sanitizer's memcheck when it is installed.
#
# Everything goes into one folder: $OUT if set, else gpu-check-<UTC date>/. summary.txt
# lists each step's status; gpu-check.json gathers the figures (machine, steps, comparison, benchmarks). Exit status: 0 every step passed, 1 a step failed, 2 no GPU.
# Variables: PYTHON (default .venv/bin/python, else python3), STEPS (training steps, 300).
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}"
STEPS="${STEPS:-300}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$OUT" || { echo "gpu_check: cannot create $OUT" >&2; exit 2; }
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }
failed=0

# ---------------------------------------------------------------- is there a GPU at all?
unset NUMBA_ENABLE_CUDASIM
export NPSTN_REAL_GPU=1
if ! command -v nvidia-smi >/dev/null 2>&1 && [ ! -e /dev/nvidia0 ]; then
    note "gpu_check: no NVIDIA GPU here (no nvidia-smi, no /dev/nvidia0); nothing to check."
    exit 2
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
if ! "$PYTHON" -c "from numba import cuda; import sys; sys.exit(0 if cuda.is_available() else 1)" \
        > "$OUT/numba-cuda.txt" 2>&1; then
    note "gpu_check: numba.cuda sees no usable GPU (see $OUT/numba-cuda.txt; is numba-cuda installed?"
    note "           pip install numba-cuda). Nothing to check."
    exit 2
fi
"$PYTHON" - > "$OUT/machine.json" 2>&1 <<'EOF'
import json, platform, os
import numba, numpy
from numba import cuda
d = cuda.get_current_device()
try:
    import numba_cuda
    numba_cuda_version = numba_cuda.__version__
except ImportError:
    numba_cuda_version = None
info = {"gpu": d.name.decode() if isinstance(d.name, bytes) else str(d.name),
        "compute_capability": list(d.compute_capability), "numba": numba.__version__,
        "numba_cuda": numba_cuda_version,
        "numpy": numpy.__version__, "python": platform.python_version(), "cpus": os.cpu_count()}
try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.cuda.is_available()
except ImportError:
    info["torch"] = None
print(json.dumps(info, indent=2))
EOF
note "gpu_check: $(tr -d '\n' < "$OUT/machine.json" | tr -s ' ')"
note "gpu_check: writing into $OUT/"

run_step() {  # run_step NAME TIMEOUT_S COMMAND...: log in $OUT/NAME.log, status in summary.txt
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    if timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; then
        note "PASS  $name ($((SECONDS - t0)) s)"
    else
        local rc=$?
        note "FAIL  $name (exit $rc after $((SECONDS - t0)) s; see $OUT/$name.log)"
        failed=1
    fi
}

# ---------------------------------------------------------------- 0. every kernel compiles
# (about 20 s: all 88 kernels to PTX with this machine's numba-cuda; when that fails, every later
# step would fail on the same error, so the script stops here and keeps the device time)
run_step compile 120 "$PYTHON" tests/cuda_compile_check.py
if [ $failed != 0 ]; then
    note "gpu_check: the kernels do not compile here (see $OUT/compile.log); the other steps are skipped"
    exit 1
fi

# ---------------------------------------------------------------- 1. cuda tests on the device
# every test whose id names cuda, in every test file (the op table, the sampler and grids in 2-D
# and 3-D, training, the benchmarks)
# (a test that cannot compile its kernels can spend minutes in Hypothesis's retries: with
# pytest-timeout installed, each test gets 60 s, so one such test does not hide the rest)
per_test=()
"$PYTHON" -c "import pytest_timeout" > /dev/null 2>&1 && per_test=(--timeout 60)
run_step cuda-tests 240 env HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-dev}" "$PYTHON" -m pytest -v \
    -p no:cacheprovider -k cuda --junitxml="$OUT/cuda-tests.xml" ${per_test[@]+"${per_test[@]}"} tests

# ---------------------------------------------------------------- 2. cuda training against cpu
if "$PYTHON" -c "from npstn.data.mnist import fetch_mnist; fetch_mnist(progress=False)" \
        > "$OUT/mnist.log" 2>&1; then
    common=(--model st-fcn --transform affine --distortion rts --steps "$STEPS" --batch-size 64
            --eval-every "$STEPS" --seed 0 --quiet)
    run_step train-cuda 75 "$PYTHON" -m npstn train "${common[@]}" --backend cuda --out "$OUT/train-cuda"
    run_step train-cpu 75 "$PYTHON" -m npstn train "${common[@]}" --backend cpu --out "$OUT/train-cpu"
    run_step train-compare 30 "$PYTHON" - "$OUT" <<'EOF'
"""cuda vs cpu: test errors within 1 point, weights close (float32 sums in another order drift)."""
import json, sys
from pathlib import Path
import numpy as np
from npstn import nn
out = Path(sys.argv[1])
m = {b: json.loads((out / f"train-{b}" / "metrics.json").read_text()) for b in ("cuda", "cpu")}
w = {b: nn.load(out / f"train-{b}" / "model.npz") for b in ("cuda", "cpu")}
weights = {}
for k in list(w["cpu"])[:4] + list(w["cpu"])[-2:]:
    a, b = w["cuda"][k].astype(np.float64), w["cpu"][k].astype(np.float64)
    weights[k] = {"max_abs_diff": float(np.abs(a - b).max()),
                  "rel_diff": float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))}
res = {"test_error_percent": {b: m[b]["test_error_percent"] for b in m},
       "steps_per_second": {b: m[b]["steps_per_second"] for b in m}, "weights": weights}
res["error_gap_points"] = abs(res["test_error_percent"]["cuda"] - res["test_error_percent"]["cpu"])
res["ok"] = res["error_gap_points"] <= 1.0 and max(v["rel_diff"] for v in weights.values()) < 0.05
(out / "train-compare.json").write_text(json.dumps(res, indent=2) + "\n")
print(json.dumps(res, indent=2))
sys.exit(0 if res["ok"] else 1)
EOF
else
    note "SKIP  train-cuda/train-cpu: MNIST not found (set NPSTN_DATA_DIR; see $OUT/mnist.log)"
fi

# ---------------------------------------------------------------- 3. benchmarks, cuda and PyTorch CUDA
run_step bench-sampler 60 "$PYTHON" -m npstn bench sampler --backends cpu,cuda --repeats 20 \
    --json "$OUT/bench_sampler.json"
run_step bench-train 90 "$PYTHON" -m npstn bench train --backends cpu,cuda --repeats 10 \
    --json "$OUT/bench_train.json"

# ---------------------------------------------------------------- 4. out-of-bounds accesses
# benchmarks/gpu_memcheck.py runs every sampler, grid and layer kernel on awkward inputs (points at
# +-1e30, NaN, inf, borders; 1-pixel images) and compares each result with the cpu backend's; under
# compute-sanitizer's memcheck any out-of-bounds or misaligned access fails the step too.
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -n 1)
if [ -n "$SANITIZER" ]; then
    run_step memcheck 120 "$SANITIZER" --tool memcheck --error-exitcode 1 "$PYTHON" benchmarks/gpu_memcheck.py
else
    note "SKIP  memcheck under compute-sanitizer: not found; the cuda-vs-cpu comparison runs alone"
    run_step gpu-memcheck 90 "$PYTHON" benchmarks/gpu_memcheck.py
fi

note "gpu_check: done; $([ $failed = 0 ] && echo 'every step passed' || echo 'some steps FAILED'); results in $OUT/"

# ---------------------------------------------------------------- one file with everything measured
# gpu-check.json: the machine, each step's status line, the cuda-vs-cpu comparison and both benchmarks'
# rows (for a session that can bring back only a few files)
"$PYTHON" - "$OUT" > /dev/null 2>&1 <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def read(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None
bench = {name: (read(f"{name}.json") or {}).get("results") for name in ("bench_sampler", "bench_train")}
summary = (out / "summary.txt").read_text().splitlines() if (out / "summary.txt").is_file() else []
(out / "gpu-check.json").write_text(json.dumps({"machine": read("machine.json"), "steps": summary,
                                                "train_compare": read("train-compare.json"), **bench}, indent=1) + "\n")
EOF
exit $failed
