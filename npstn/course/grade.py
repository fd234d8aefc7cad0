"""The autograder: run the course's tests against a student repository, per task.

The tests run in a separate ``python -m pytest`` process whose working folder
is the student repository and whose ``PYTHONPATH`` starts with it, so that
``import npstn`` finds the *student's* code, never the npstn installed here
(``course/tests/conftest.py`` fails every test if it does). The tests are the
ones beside *this* npstn: run from the solution repository, the grader adds the
held-back tests of ``course/tests/heldback``.

A task's points are its weight times the fraction of its tests that pass,
and at most half its weight while any of its finite-difference tests (a test
whose name contains ``finite_differences``) fails: a backward pass that is
not the derivative cannot earn most of a task however many shape and dtype
tests it passes.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from npstn.course import TASKS, task as _task
from npstn.course.kit import solution_root

__all__ = ["TaskResult", "grade", "format_report", "test_files"]

_FILE = re.compile(r"test_task(\d+)_\w*\.py$")
#: Tests whose name holds this check the backward against finite differences: a task with one failing
#: scores at most half its points (see the module doc).
GRADIENT_TEST = "finite_differences"


@dataclass
class TaskResult:
    number: int
    title: str
    points: int
    passed: int = 0
    total: int = 0
    skipped: int = 0
    failures: list = field(default_factory=list)
    gradient_failed: bool = False  # a finite-difference test of the task failed

    @property
    def score(self) -> float:
        if not self.total:
            return 0.0
        share = self.points * self.passed / self.total
        return min(share, self.points / 2) if self.gradient_failed else share


def test_files(tests_dir: Path, tasks) -> list[Path]:
    """The test files of ``tasks`` under ``tests_dir`` (held-back ones included where present)."""
    files = []
    for path in sorted(tests_dir.rglob("test_task*_*.py")):
        m = _FILE.search(path.name)
        if m and int(m.group(1)) in tasks:
            files.append(path)
    return files


def _check_dir(directory: Path) -> Path:
    directory = Path(directory).resolve()
    if not (directory / "npstn" / "__init__.py").is_file():
        raise ValueError(f"DIR must be a student repository (a folder with npstn/__init__.py), got {directory}")
    return directory


def grade(directory=".", tasks=None, examples: int | None = None, extra_args=(), timeout: float | None = None,
          tests_dir: Path | None = None) -> list[TaskResult]:
    """Grade the student repository ``directory`` on ``tasks`` (default: all); one TaskResult per task.

    ``examples`` sets the Hypothesis examples per property (``NPSTN_COURSE_EXAMPLES``, default 20).
    """
    directory = _check_dir(directory)
    numbers = [t.number for t in TASKS] if tasks is None else [_task(int(n)).number for n in tasks]
    tests_dir = solution_root() / "course" / "tests" if tests_dir is None else Path(tests_dir)
    files = test_files(tests_dir, set(numbers))
    results = {n: TaskResult(n, _task(n).title, _task(n).points) for n in numbers}
    if not files:
        return [results[n] for n in numbers]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(directory)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["NPSTN_COURSE_DIR"] = str(directory)
    env["NPSTN_BACKEND"] = "numpy"
    env["NPSTN_COURSE_SHRINK"] = "0"  # pass or fail is all the grader needs
    if examples is not None:
        env["NPSTN_COURSE_EXAMPLES"] = str(int(examples))
    with tempfile.TemporaryDirectory(prefix="npstn-grade-") as tmp:
        report = Path(tmp) / "report.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
               "--continue-on-collection-errors",
               "-c", str(tests_dir / "pytest.ini"), "--rootdir", str(tests_dir), f"--junitxml={report}",
               *map(str, files), *extra_args]
        proc = subprocess.run(cmd, cwd=directory, env=env, capture_output=True, text=True, timeout=timeout)
        if not report.is_file():
            raise RuntimeError(f"the tests did not run (pytest exit code {proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        for case in ET.parse(report).getroot().iter("testcase"):
            where = " ".join(case.get(k) or "" for k in ("file", "classname", "name"))
            m = re.search(r"test_task(\d+)_", where)
            if not m or int(m.group(1)) not in results:
                continue
            r = results[int(m.group(1))]
            r.total += 1
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            if case.find("skipped") is not None:
                r.skipped += 1
                r.failures.append(f"{case.get('name')}: skipped ({case.find('skipped').get('message', '')})")
            elif bad is not None:
                msg = (bad.get("message") or "").strip().splitlines()
                r.failures.append(f"{case.get('name')}: {msg[0][:160] if msg else 'failed'}")
                r.gradient_failed |= GRADIENT_TEST in (case.get("name") or "")
            else:
                r.passed += 1
    return [results[n] for n in numbers]


def format_report(results, verbose: bool = False) -> str:
    """Points per task, then ``total: X/Y`` (Y: the points of the tasks graded)."""
    lines = []
    for r in results:
        note = (f"{r.passed}/{r.total} tests passed" + (f", {r.skipped} skipped" if r.skipped else "")
                + (", a finite-difference test failed: at most half"
                   if r.gradient_failed and r.passed * 2 > r.total else ""))
        lines.append(f"task {r.number}  {r.title:<78} {r.score:5.1f}/{r.points:<3d} ({note})")
        if verbose:
            lines.extend(f"          - {f}" for f in r.failures[:8])
    total = sum(r.score for r in results)
    lines.append(f"total: {total:g}/{sum(r.points for r in results)}" if total == int(total)
                 else f"total: {total:.1f}/{sum(r.points for r in results)}")
    return "\n".join(lines)
