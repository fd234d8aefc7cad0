"""Test configuration: Hypothesis profiles.

* ``dev`` (default): few examples, quick local runs.
* ``ci``: derandomised (the same examples every run), more examples.
* ``thorough``: many examples, for a long local soak.

Select with ``HYPOTHESIS_PROFILE=ci``. JIT compilation makes first calls
slow, so no profile has a deadline.
"""
import os
import shutil

# The cuda backend's kernels are tested everywhere: on a real GPU when one is
# present, else in Numba's CUDA simulator. The variable must be set before
# numba is first imported, which is why it lives here. NPSTN_REAL_GPU=1
# insists on the device (benchmarks/gpu_check.sh): the simulator is switched
# off, and the session stops at once when no GPU is usable.
REAL_GPU = os.environ.get("NPSTN_REAL_GPU", "") == "1"
if REAL_GPU:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
elif "NUMBA_ENABLE_CUDASIM" not in os.environ and not (
    os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi")
):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

# Numba's OpenMP workers spin-wait between parallel regions; on a small shared
# machine that makes each tiny prange launch cost milliseconds. Passive waiting
# keeps the many small kernels the tests launch cheap.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=15, **_common)
settings.register_profile("ci", max_examples=40, derandomize=True, print_blob=True, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_sessionstart(session):
    if REAL_GPU:
        import pytest

        try:
            from numba import cuda

            ok = cuda.is_available()
        except Exception as exc:  # numba-cuda missing or broken
            ok, why = False, f"numba.cuda cannot be imported ({exc})"
        else:
            why = "numba.cuda.is_available() is False"
        if not ok:
            pytest.exit(f"NPSTN_REAL_GPU=1 but no CUDA GPU is usable: {why}", returncode=3)
