"""The property-testing assignment, graded by mutation (notebook 05; course/SYLLABUS.md).

Students write Hypothesis tests for :class:`ChannelAffine`, the per-channel
scale and shift of notebook 05 (``y[n, c, h, w] = weight[c] * x[n, c, h, w] +
bias[c]``), importing it through :func:`layer_under_test`::

    from npstn.course.mutation import layer_under_test
    ChannelAffine = layer_under_test()

The grader (``npstn course mutants TESTFILE``) runs their file once against the
correct layer, which it must pass, and once against each of N planted bug
variants (``course/mutation/mutants.py``, which ships only with the solution
repository); the score is the fraction of variants the tests catch.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npstn.nn.module import Module, Parameter

__all__ = ["ChannelAffine", "layer_under_test", "MutationResult", "grade_mutants", "format_mutants",
           "MUTANT_ENV", "MUTANTS_FILE_ENV"]

MUTANT_ENV = "NPSTN_MUTANT"  # the variant under test: a name from mutants.py, or unset for the correct layer
MUTANTS_FILE_ENV = "NPSTN_MUTANTS_FILE"


class ChannelAffine(Module):
    """y[n, c, h, w] = weight[c] * x[n, c, h, w] + bias[c]; input (N, C, H, W), weight and bias (C,)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = Parameter(np.ones(channels, dtype=np.float32))
        self.bias = Parameter(np.zeros(channels, dtype=np.float32))
        self._x = None

    def forward(self, x):
        self._x = x
        return x * self.weight.data[:, None, None] + self.bias.data[:, None, None]

    def backward(self, g):
        """dL/dx = g w_c; accumulates dL/dw_c = sum_{n,h,w} g x and dL/db_c = sum_{n,h,w} g into .grad."""
        self.weight.grad += (g * self._x).sum(axis=(0, 2, 3))
        self.bias.grad += g.sum(axis=(0, 2, 3))
        return g * self.weight.data[:, None, None]


def _load_mutants(path) -> dict:
    spec = importlib.util.spec_from_file_location("npstn_course_mutants", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.MUTANTS)


def layer_under_test():
    """The class the students' tests exercise: :class:`ChannelAffine`, or the grader's current mutant."""
    name = os.environ.get(MUTANT_ENV)
    if not name:
        return ChannelAffine
    return _load_mutants(os.environ[MUTANTS_FILE_ENV])[name]


@dataclass
class MutationResult:
    passes_on_correct: bool
    caught: list
    missed: list
    points: int = 10

    @property
    def score(self) -> float:
        n = len(self.caught) + len(self.missed)
        return self.points * len(self.caught) / n if self.passes_on_correct and n else 0.0


_DRIVER = """
import json, os, sys
import pytest
from hypothesis import Phase, settings
# pass or fail is all the grader needs: no shrinking of failing examples (the student's own
# settings(...) keep their other choices; they inherit the phases from this profile)
settings.register_profile("npstn-mutants", phases=[Phase.explicit, Phase.reuse, Phase.generate], database=None)
settings.load_profile("npstn-mutants")
test_file, names = sys.argv[1], sys.argv[2:]
codes = {}
for name in [""] + names:
    os.environ["%s"] = name
    for mod in [m for m in sys.modules if m == "{stem}" or m.endswith(".{stem}")]:
        del sys.modules[mod]
    codes[name] = int(pytest.main(["-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir",
                                   os.path.dirname(test_file), test_file]))
    if name == "" and codes[name] != 0:
        break
print("NPSTN-MUTANTS " + json.dumps(codes))
""" % MUTANT_ENV


def grade_mutants(test_file, mutants_file=None, timeout: float | None = 900) -> MutationResult:
    """Run the students' ``test_file`` on the correct layer and on every mutant; see the module doc.

    One Python process runs pytest once per variant (the test module is imported afresh each time).
    """
    from npstn.course.kit import solution_root

    test_file = Path(test_file).resolve()
    if not test_file.is_file() or test_file.suffix != ".py":
        raise ValueError(f"TESTS must be a Python test file, got {test_file}")
    mutants_file = Path(mutants_file) if mutants_file else solution_root() / "course" / "mutation" / "mutants.py"
    if not mutants_file.is_file():
        raise ValueError(f"the planted mutants ({mutants_file}) ship only with the solution repository; "
                         "grade from there")
    names = list(_load_mutants(mutants_file))
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # this npstn, whose ChannelAffine is the reference
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    env[MUTANTS_FILE_ENV] = str(mutants_file)
    env.pop(MUTANT_ENV, None)
    driver = _DRIVER.replace("{stem}", test_file.stem)
    proc = subprocess.run([sys.executable, "-c", driver, str(test_file), *names], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=test_file.parent)
    found = [line for line in proc.stdout.splitlines() if line.startswith("NPSTN-MUTANTS ")]
    if not found:
        raise RuntimeError(f"the mutation grader did not finish (exit code {proc.returncode}): "
                           + " ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:]))
    codes = json.loads(found[-1].split(" ", 1)[1])
    bad = {k: v for k, v in codes.items() if v not in (0, 1)}
    if bad:  # 2-5: interrupted, internal error, usage error, no tests collected
        raise ValueError(f"the tests in {test_file} did not run (pytest exit codes {bad}); "
                         "run them with pytest to see why")
    if codes[""] != 0:
        return MutationResult(False, [], names)
    caught = [n for n in names if codes[n] != 0]
    return MutationResult(True, caught, [n for n in names if n not in caught])


def format_mutants(result: MutationResult) -> str:
    n = len(result.caught) + len(result.missed)
    if not result.passes_on_correct:
        return f"the tests fail on the correct layer: no mutant counts\nmutation: 0/{result.points}"
    lines = [f"caught {len(result.caught)} of {n} planted bugs"]
    lines += [f"  caught  {m}" for m in result.caught] + [f"  missed  {m}" for m in result.missed]
    score = result.score
    lines.append(f"mutation: {score:g}/{result.points}" if score == int(score)
                 else f"mutation: {score:.1f}/{result.points}")
    return "\n".join(lines)
