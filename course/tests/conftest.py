"""Shared setup of the course's tests: the student's code, the NumPy backend, a derandomised Hypothesis.

The grader (``npstn course grade DIR``) runs these tests with ``NPSTN_COURSE_DIR=DIR``
and ``DIR`` first on ``PYTHONPATH``; every test then fails unless ``import npstn``
found the student's copy. ``NPSTN_COURSE_EXAMPLES`` sets the examples per
property (default 20). Run one task by hand with ``pytest course/tests -m task1``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _standins, for every test folder

os.environ.setdefault("NPSTN_BACKEND", "numpy")  # before npstn is imported: the student's NumPy code

import pytest  # noqa: E402
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

# the grader only needs pass or fail: it sets NPSTN_COURSE_SHRINK=0 (no shrinking of a failing
# example, so a task that is not done yet fails fast); run by hand, failures are shrunk
_SHRINK = os.environ.get("NPSTN_COURSE_SHRINK", "1") != "0"

settings.register_profile(
    "course",
    max_examples=int(os.environ.get("NPSTN_COURSE_EXAMPLES", "20")),
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if _SHRINK else []),
)
settings.load_profile("course")


@pytest.fixture(autouse=True)
def _students_numpy_code():
    """Every test runs the student's npstn on the "numpy" backend."""
    import npstn

    want = os.environ.get("NPSTN_COURSE_DIR")
    if want:
        got = Path(npstn.__file__).resolve().parent
        if got != (Path(want).resolve() / "npstn"):
            pytest.fail(f"imported npstn from {got}, not the student repository {want}: "
                        "run the tests with the repository first on PYTHONPATH (npstn course grade does)")
    previous = npstn.get_backend()
    npstn.set_backend("numpy")
    yield
    npstn.set_backend(previous)
