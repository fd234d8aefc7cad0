"""npstn's course kit: tasks, a student-repository generator, an autograder and self-checks.

A lecturer turns this repository (the *solution* repository) into a student
repository with one command, and grades a student's work with another::

    npstn course starter OUT        # OUT: a new student repository
    npstn course grade OUT          # points per task, then "total: X/Y"

The solutions are marked in the real source (``# BEGIN SOLUTION taskN`` ...
``# END SOLUTION``): the starter replaces each marked body with
``raise NotImplementedError("Task N: ...")``, so there is no second copy of
the code to maintain. The tests of each task live in ``course/tests`` beside
the package (``course/tests/heldback`` ships only with the solutions). The
tasks, the rubric and the syllabus are in ``course/SYLLABUS.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Task", "TASKS", "task", "check"]


@dataclass(frozen=True)
class Task:
    """One graded task: its number, title, points and where the student works."""

    number: int
    title: str
    points: int
    where: str  # the function(s) the student implements


TASKS = (
    Task(1, "the affine grid's backward (eq. 1 transposed)", 10,
         "npstn/functional/affine.py: _affine_grid_backward_numpy"),
    Task(2, "the sampler's backward (eq. 6 and 7, image and grid paths)", 25,
         "npstn/kernels/formulas.py: bilinear_coordinate_gradient; "
         "npstn/functional/grid_sample.py: _grid_sample_backward_numpy"),
    Task(3, "the projective grid's backward (quotient rule)", 10,
         "npstn/kernels/formulas.py: projective_gradient; "
         "npstn/functional/projective.py: _projective_grid_backward_numpy"),
    Task(4, "the thin-plate spline's linear system", 15,
         "npstn/functional/tps.py: _tps_coefficients"),
    Task(5, "SpatialTransformer.backward (sampler path + localisation path)", 15,
         "npstn/stn/spatial_transformer.py: SpatialTransformer.backward"),
    Task(6, "mini-project: ST-FCN on RTS below 8% test error with your own backward passes", 25,
         "npstn/course/miniproject.py: train_st_fcn"),
)


def task(number: int) -> Task:
    """The :class:`Task` numbered ``number`` (1-6)."""
    for t in TASKS:
        if t.number == number:
            return t
    raise ValueError(f"task must be one of {', '.join(str(t.number) for t in TASKS)}, got {number!r}")


def check(name: str, *args, **kwargs) -> bool:
    """Run the notebook self-check ``name`` on the student's answer; prints one line, returns ok.

    See :mod:`npstn.course.checks` for the checks and what each one expects.
    """
    from npstn.course import checks

    return checks.run(name, *args, **kwargs)
