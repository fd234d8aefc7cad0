"""The course kit: the starter removes every solution, the grader scores 0 there and full points on
the solutions, and a bug planted in one solution costs exactly that task's points.

The starter is generated once per module; each grading runs the course's tests in a subprocess
(the student's code, never this process's npstn) with few Hypothesis examples. Task 6 (the
mini-project, minutes of training) is graded here only on the starter, where it fails at once.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import npstn.functional as F
from npstn.cli import main
from npstn.course import TASKS
from npstn.course.grade import format_report, grade
from npstn.course.kit import BEGIN, END, StarterError, strip_solutions, write_starter

ROOT = Path(__file__).resolve().parents[1]
FAST = [t.number for t in TASKS if t.number != 6]
EXAMPLES = 3


@pytest.fixture(scope="module")
def starter(tmp_path_factory):
    out = tmp_path_factory.mktemp("course") / "student"
    summary = write_starter(out)
    assert sorted(summary["tasks"]) == [t.number for t in TASKS]
    return out


def test_strip_solutions_replaces_each_marked_body():
    text = ("def f(x):\n    \"\"\"doc\"\"\"\n    # BEGIN SOLUTION task1\n    y = 2 * x\n    return y\n"
            "    # END SOLUTION\n\n\ndef g():\n    # BEGIN SOLUTION task3: kernel removed\n    return 1\n"
            "    # END SOLUTION\n")
    out, tasks = strip_solutions(text)
    assert tasks == [1, 3]
    assert "2 * x" not in out and "return 1" not in out and '"""doc"""' in out
    assert '    raise NotImplementedError("Task 1: the affine grid' in out
    assert "kernel removed" in out
    ns = {}
    exec(compile(out, "<starter>", "exec"), ns)
    with pytest.raises(NotImplementedError, match="Task 3"):
        ns["g"]()


@pytest.mark.parametrize("text, message", [
    ("# BEGIN SOLUTION task1\nx = 1\n", "never closed"),
    ("x = 1\n# END SOLUTION\n", "without a"),
    ("# BEGIN SOLUTION task1\n# BEGIN SOLUTION task2\n# END SOLUTION\n", "inside the solution"),
    ("# BEGIN SOLUTION task9\n# END SOLUTION\n", "task must be one of"),
])
def test_malformed_markers_are_refused(text, message):
    with pytest.raises((StarterError, ValueError), match=message):
        strip_solutions(text)


def test_the_starter_holds_no_solution(starter):
    files = {p.relative_to(starter).as_posix(): p.read_text() for p in starter.rglob("*.py")}
    assert not (starter / "course" / "tests" / "heldback").exists()
    assert not (starter / "course" / "mutation" / "mutants.py").exists()
    assert not (starter / "course" / "mutation" / "solution_test_channel_affine.py").exists()
    assert (starter / "course" / "mutation" / "test_channel_affine.py").is_file()
    assert (starter / "README.md").is_file() and (starter / "course" / "tests" / "test_task1_affine.py").is_file()
    assert 'testpaths = ["course/tests"]' in (starter / "pyproject.toml").read_text()  # `make test` finds them
    for name, text in files.items():
        assert not any(BEGIN.match(line) or END.match(line) for line in text.splitlines()), name
    # the NumPy specification and the compiled kernels of each task are gone, not only disabled
    for name, gone in [("npstn/functional/affine.py", 'np.einsum("nijr,ijk->nrk"'),
                       ("npstn/kernels/cpu/grids.py", "gxx += gx * x"),
                       ("npstn/kernels/cuda/grids.py", "_affine_grid_backward_kernel[") ,
                       ("npstn/kernels/formulas.py", "(ne - nw) * (one - fy)"),
                       ("npstn/kernels/formulas.py", "q = (gx * u + gy * v) * inv_w"),
                       ("npstn/functional/tps.py", "np.linalg.solve(lmat, rhs)"),
                       ("npstn/stn/spatial_transformer.py", "grad_x + grad_x_loc"),
                       ("npstn/course/miniproject.py", "build_model(")]:
        assert gone not in files[name], (name, gone)
    for t in TASKS:
        assert any(f"Task {t.number}: " in text for text in files.values())


def test_grader_gives_zero_on_the_starter(starter):
    results = grade(starter, examples=EXAMPLES)
    report = format_report(results)
    print(report)
    assert [r.number for r in results] == [t.number for t in TASKS]
    for r in results:
        assert r.total > 0 and r.passed == 0, report
    assert report.splitlines()[-1] == f"total: 0/{sum(t.points for t in TASKS)}"


def test_grade_fail_under_sets_the_exit_status(starter, capsys):
    args = ["course", "grade", str(starter), "--task", "1", "--examples", "5"]
    assert main(args) == 0  # graded: 0 points, but no threshold asked for
    assert main([*args, "--fail-under", "0"]) == 0
    assert main([*args, "--fail-under", "5"]) == 1
    err = capsys.readouterr().err
    assert "total 0 is below --fail-under 5" in err


def test_grader_gives_full_points_on_the_solutions():
    results = grade(ROOT, tasks=FAST, examples=EXAMPLES)
    report = format_report(results)
    print(report)
    for r in results:
        assert r.total > 0 and r.passed == r.total, report
    assert report.splitlines()[-1] == f"total: {sum(r.points for r in results)}/{sum(r.points for r in results)}"


# (task, file, solution text, the bug planted in it)
MUTANTS = [
    (2, "npstn/kernels/formulas.py", "(sw - nw) * (one - fx) + (se - ne) * fx",
     "(sw - nw) * (one - fy) + (se - ne) * fx"),
    (5, "npstn/stn/spatial_transformer.py", "return grad_x + grad_x_loc", "return grad_x"),
]


@pytest.mark.parametrize("task, path, right, wrong", MUTANTS, ids=[f"task{m[0]}" for m in MUTANTS])
def test_a_bug_in_one_solution_fails_exactly_that_task(task, path, right, wrong, tmp_path):
    mutant = tmp_path / "mutant"
    shutil.copytree(ROOT / "npstn", mutant / "npstn", ignore=shutil.ignore_patterns("__pycache__"))
    src = (mutant / path).read_text()
    assert src.count(right) == 1
    (mutant / path).write_text(src.replace(right, wrong))
    results = grade(mutant, tasks=FAST, examples=EXAMPLES)
    print(format_report(results))
    failed = [r.number for r in results if r.passed < r.total]
    assert failed == [task], format_report(results, verbose=True)
    bad = results[[r.number for r in results].index(task)]
    # both mutants are wrong derivatives: the finite-difference test catches them, and caps the task at half
    assert bad.gradient_failed and bad.score <= bad.points / 2, format_report(results, verbose=True)


def _refused(argv, capsys, name):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("npstn"), err
    assert name in err[0], err
    return err[0]


def test_course_cli_refuses_bad_folders(tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("mine")
    _refused(["course", "starter", full], capsys, "OUT")
    assert sorted(p.name for p in full.iterdir()) == ["mine.txt"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    _refused(["course", "starter", afile], capsys, "OUT")
    _refused(["course", "grade", tmp_path / "missing"], capsys, "DIR")
    line = _refused(["course", "grade", full], capsys, "npstn/__init__.py")
    assert str(full) in line
    for bad in ("0", "7", "x"):
        _refused(["course", "grade", full, f"--task={bad}"], capsys, "--task")
    _refused(["course", "grade", full, "--examples=0"], capsys, "--examples")


def test_course_starter_command_writes_a_repository(tmp_path, capsys):
    assert main(["course", "starter", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"task 2: .*npstn/kernels/formulas.py", out)
    assert (tmp_path / "s" / "npstn" / "__init__.py").is_file()


def test_every_name_in_the_syllabus_equation_table_exists():
    import importlib

    text = (ROOT / "course" / "SYLLABUS.md").read_text()
    table = text[text.index("## The paper's equations"):text.index("## The tasks")]
    names = re.findall(r"`(npstn(?:\.\w+)+)`", table)
    assert len(names) > 30
    for name in names:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                obj = getattr(obj, attr)
            break
        else:
            pytest.fail(f"{name} is not importable")


# ------------------------------------------------------------------ the offline kit: npstn data --pack / --import
def _mnist_folder():
    from npstn.data import where

    folder = where()
    return folder if folder is not None and folder.is_dir() else None


def test_data_pack_and_import_round_trip(tmp_path, monkeypatch, capsys):
    if _mnist_folder() is None:
        pytest.skip("needs MNIST (NPSTN_DATA_DIR)")
    archive = tmp_path / "mnist.tar"
    assert main(["data", "--pack", str(archive)]) == 0
    assert archive.is_file()
    _refused(["data", "--pack", archive], capsys, "--pack")  # never overwrites
    # into a folder of the student's, then into an empty cache
    target = tmp_path / "mine"
    target.mkdir()
    monkeypatch.delenv("NPSTN_DATA_DIR", raising=False)
    assert main(["data", "--import", str(archive), "--data-dir", str(target)]) == 0
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["data", "--import", str(archive)]) == 0
    from npstn.data.mnist import load_mnist, mnist_cache_dir

    x, y = load_mnist("test", progress=False)
    assert x.shape == (10000, 28, 28) and (mnist_cache_dir() / "t10k-labels-idx1-ubyte").is_file()


def test_data_import_refuses_a_bad_archive_and_a_foreign_file(tmp_path, capsys):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar")
    capsys.readouterr()
    assert main(["data", "--import", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a tar archive" in err[0]
    import io
    import tarfile

    with tarfile.open(tmp_path / "partial.tar", "w") as tar:  # one file only, and a wrong one
        info = tarfile.TarInfo("t10k-labels-idx1-ubyte")
        info.size = 8
        tar.addfile(info, io.BytesIO(b"\0\0\x08\x01\0\0\0\0"))
    assert main(["data", "--import", str(tmp_path / "partial.tar")]) == 1
    assert "SHA-256" in capsys.readouterr().err


# ------------------------------------------------------------------ the mutation-graded assignment
def test_mutation_grading_counts_the_planted_bugs_caught(monkeypatch):
    from npstn.course.mutation import format_mutants, grade_mutants

    monkeypatch.setenv("NPSTN_COURSE_EXAMPLES", "5")
    model_answer = grade_mutants(ROOT / "course" / "mutation" / "solution_test_channel_affine.py")
    assert model_answer.passes_on_correct and not model_answer.missed and len(model_answer.caught) >= 5
    assert format_mutants(model_answer).splitlines()[-1] == "mutation: 10/10"
    weak = grade_mutants(ROOT / "course" / "mutation" / "test_channel_affine.py")  # the starter's skeleton
    assert weak.passes_on_correct and weak.missed and weak.score < 10


def test_mutation_grading_gives_nothing_for_tests_that_fail_on_the_correct_layer(tmp_path):
    from npstn.course.mutation import format_mutants, grade_mutants

    wrong = tmp_path / "test_wrong.py"
    wrong.write_text("from npstn.course.mutation import layer_under_test\n\n"
                     "def test_everything_is_a_bug():\n    assert layer_under_test() is None\n")
    result = grade_mutants(wrong)
    assert not result.passes_on_correct and result.score == 0
    assert format_mutants(result).splitlines()[-1] == "mutation: 0/10"


# ------------------------------------------------------------------ notebook exercises
def test_the_starter_notebooks_hold_no_solution_and_no_output(starter):
    import json

    books = sorted((starter / "notebooks").glob("*.ipynb"))
    assert [p.name for p in books] == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    exercises = 0
    for path in books:
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            assert "solution" not in cell["metadata"].get("tags", []), path.name
            src = "".join(cell["source"])
            assert not any(BEGIN.match(line) or END.match(line) for line in src.splitlines()), path.name
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None
                exercises += "npstn.course.check(" in src
    assert exercises >= 3
    solutions = sum("solution" in c["metadata"].get("tags", []) for p in (ROOT / "notebooks").glob("*.ipynb")
                    for c in __import__("json").loads(p.read_text())["cells"])
    assert solutions >= 4  # the pencil exercises' worked answers stay in the solution repository


@pytest.mark.parametrize("name, right, wrong", [
    ("affine_grid_backward",
     lambda g, size, ac: F.affine_grid_backward(g, size, ac, backend="numpy"),
     lambda g, size, ac: F.affine_grid_backward(g, size, ac, backend="numpy") * 2),
    ("largest_gap_read", 2.0, 1.0),
    ("tps_grid_backward",
     lambda g, k, size: F.tps_grid_backward(g, size, k, backend="numpy"),
     lambda g, k, size: F.tps_grid_backward(g, size, k, backend="numpy")[:, ::-1]),
])
def test_self_checks_tell_right_from_wrong(name, right, wrong, capsys):
    import npstn.course

    assert npstn.course.check(name, right) is True
    assert capsys.readouterr().out.strip() == f"check {name}: ok"
    assert npstn.course.check(name, wrong) is False
    assert capsys.readouterr().out.startswith(f"check {name}: not yet - ")


def test_self_check_of_the_eq7_exercise(capsys):
    import numpy as np

    import npstn.course

    img = np.random.default_rng(3).uniform(0.1, 1, (1, 1, 4, 8))
    assert not npstn.course.check("eq7_left_derivative", img)
    img[0, 0, :, 1] = 0.0
    assert npstn.course.check("eq7_left_derivative", img)

    def unfinished(*a):
        raise NotImplementedError("Exercise: your answer here")

    assert not npstn.course.check("affine_grid_backward", unfinished)
    assert "not implemented yet" in capsys.readouterr().out
    with pytest.raises(ValueError, match="check name must be one of"):
        npstn.course.check("nope", 1)
