"""benchmarks/gpu_check.sh: valid bash, and a clear exit 2 on a machine without a GPU."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="a GPU is present: the script would use it")
@pytest.mark.parametrize("fake_nvidia_smi", [False, True], ids=["no-driver", "driver-but-no-usable-gpu"])
def test_without_a_gpu_it_says_so_and_exits_2(tmp_path, fake_nvidia_smi):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("date", "mkdir", "tee", "tr", "dirname", "timeout", "env"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    if fake_nvidia_smi:  # a driver tool that answers, but numba finds no device
        (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'fake nvidia-smi'\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    out = tmp_path / "out"
    env = {"PATH": str(bin_dir), "OUT": str(out), "HOME": str(tmp_path), "NUMBA_ENABLE_CUDASIM": "1",
           "PYTHON": sys.executable}
    p = subprocess.run([shutil.which("bash"), str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "nothing to check" in (p.stdout + p.stderr).lower()
    assert "Traceback" not in p.stdout + p.stderr
    assert (out / "summary.txt").is_file()


MEMCHECK = SCRIPT.parent / "gpu_memcheck.py"


def _memcheck(*args):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    return subprocess.run([sys.executable, str(MEMCHECK), *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=SCRIPT.parent.parent)


def test_memcheck_script_agrees_with_cpu_in_the_simulator():
    p = _memcheck("--cases", "grids", "--allow-simulator")
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert sum(line.startswith("ok ") for line in lines) == 18, p.stdout  # 4 generators x 2 conventions x fwd/bwd, 3-D
    assert lines[-1] == "gpu_memcheck: 0 mismatch(es)"


@pytest.mark.parametrize("args, message", [((), "nothing to check"), (("--cases", "sampler,colour", "--allow-simulator"),
                                                                        "unknown group(s) colour")])
def test_memcheck_script_refuses_the_simulator_and_unknown_groups(args, message):
    p = _memcheck(*args)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr
    assert "Traceback" not in p.stderr
