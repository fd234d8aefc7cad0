"""npstn shortens OpenBLAS's spin-wait when it is imported before NumPy (see npstn/__init__.py)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _timeout_seen(code: str, env_value: str | None) -> str:
    env = dict(os.environ)
    env.pop("OPENBLAS_THREAD_TIMEOUT", None)
    if env_value is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = env_value
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code + "; import os; "
                          "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset'))"],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_imported_first_sets_a_short_spin():
    assert _timeout_seen("import npstn", None) == "4"


def test_the_users_setting_wins():
    assert _timeout_seen("import npstn", "12") == "12"


def test_numpy_already_loaded_leaves_the_environment_alone():
    # OpenBLAS has read its settings by then; changing the variable would only mislead
    assert _timeout_seen("import numpy, npstn", None) == "unset"
