"""The student repository, generated from the solution repository's real source.

``strip_solutions(text)`` replaces every marked solution, the lines from
``# BEGIN SOLUTION task<N>`` (N the task's number, at the body's indentation)
to the next line that holds only ``# END SOLUTION``, by ``raise NotImplementedError("Task 1: ...")`` at the marker's indentation.
A marker may carry a note after a colon (``# BEGIN SOLUTION task2: the
compiled kernel is left out ...``), which the message repeats; that is how the
cpu and cuda kernels of a task are removed, so that no backend hands out the
answer. ``write_starter(out)`` copies the package, the course folder (without
``course/tests/heldback``) and the project files into ``out``, stripping
every Python file.
"""
from __future__ import annotations

import re
from pathlib import Path

from npstn.course import TASKS
from npstn.course import task as _task

__all__ = ["BEGIN", "END", "strip_solutions", "solution_root", "starter_files", "write_starter", "StarterError"]

BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION (?:task(?P<n>\d+)|(?P<exercise>exercise))"
                   r"(?::\s*(?P<note>.*?))?\s*$")
END = re.compile(r"^[ \t]*# END SOLUTION\s*$")
HELDBACK = "heldback"  # course/tests/heldback: the tests that ship only with the solutions
# what a student repository holds, relative to the repository root
_TOP_FILES = ("pyproject.toml", "LICENSE", "Makefile")
_TOP_DIRS = ("npstn", "course", "notebooks")
SOLUTION_TAG = "solution"  # a notebook cell with this tag (a worked answer) ships only with the solutions
_SKIP_PARTS = {"__pycache__", ".pytest_cache", ".hypothesis", ".ipynb_checkpoints", HELDBACK}
# files that ship only with the solutions: the planted mutants and the model answer of the mutation lab
_SOLUTION_ONLY = {"course/mutation/mutants.py", "course/mutation/solution_test_channel_affine.py"}


class StarterError(ValueError):
    """A malformed solution marker, or an output folder that cannot be used."""


def strip_solutions(text: str, path: str = "<text>") -> tuple[str, list[int]]:
    """``text`` with every marked solution replaced; returns (new text, task numbers found)."""
    out, tasks = [], []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        m = BEGIN.match(lines[i].rstrip("\n"))
        if END.match(lines[i].rstrip("\n")):
            raise StarterError(f"{path}:{i + 1}: '# END SOLUTION' without a '# BEGIN SOLUTION taskN' above it")
        if not m:
            out.append(lines[i])
            i += 1
            continue
        n = None if m["exercise"] else int(m["n"])
        title = "Exercise: your answer here" if n is None else f"Task {n}: {_task(n).title}"
        j = i + 1
        while j < len(lines) and not END.match(lines[j].rstrip("\n")):
            if BEGIN.match(lines[j].rstrip("\n")):
                raise StarterError(f"{path}:{j + 1}: a solution marker inside the solution opened at line {i + 1}")
            j += 1
        if j == len(lines):
            raise StarterError(f"{path}:{i + 1}: '{lines[i].strip()}' is never closed by '# END SOLUTION'")
        message = title + (f"; {m['note']}" if m["note"] else "") + (" (see course/SYLLABUS.md)" if n else "")
        out.append(f"{m['indent']}raise NotImplementedError({message!r})\n")
        if n is not None:
            tasks.append(n)
        i = j + 1
    return "".join(out), tasks


def strip_notebook(text: str, path: str = "<notebook>") -> str:
    """A notebook (JSON text) for students: cells tagged "solution" dropped, marked code stripped,
    every output cleared (an output could show an answer)."""
    import json

    nb = json.loads(text)
    cells = []
    for cell in nb.get("cells", []):
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        if cell.get("cell_type") == "code":
            src = "".join(cell.get("source", []))
            src, _ = strip_solutions(src, f"{path} cell {cell.get('id', len(cells))}")
            cell["source"] = src.splitlines(keepends=True)
            cell["outputs"], cell["execution_count"] = [], None
        cells.append(cell)
    nb["cells"] = cells
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def solution_root() -> Path:
    """The repository this npstn was imported from (it must hold ``course/``)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "course" / "tests").is_dir():
        raise StarterError(
            f"npstn course needs a clone of the npstn repository (with its course/ folder); "
            f"{root} has no course/tests. Run it from a clone: git clone ... && pip install -e ."
        )
    return root


def starter_files(root: Path):
    """(relative path, absolute path) of every file a student repository gets, sorted."""
    files = [(Path(name), root / name) for name in _TOP_FILES if (root / name).is_file()]
    for top in _TOP_DIRS:
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root)
            if (path.is_file() and not (_SKIP_PARTS & set(rel.parts)) and rel.as_posix() not in _SOLUTION_ONLY
                    and path.suffix not in (".pyc", ".nbi", ".nbc")):
                files.append((rel, path))
    return sorted(files)


def write_starter(out, root: Path | None = None) -> dict:
    """Write the student repository into ``out`` (a new or empty folder); returns a summary.

    Python files are stripped of their solutions; ``course/student_README.md``
    becomes the repository's README.md. Never overwrites: ``out`` must not
    exist or be an empty folder.
    """
    from npstn.utils.io import atomic_write_bytes

    root = solution_root() if root is None else Path(root)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StarterError(f"OUT must be a new or empty folder, and {out} is "
                           + ("not a folder" if not out.is_dir() else "not empty") + "; choose another path")
    if any(_is_inside(out, root / top) for top in _TOP_DIRS) or out.resolve() == root.resolve():
        raise StarterError(f"OUT ({out}) must not lie inside the repository's npstn/ or course/ folder")
    plan, stripped = [], {}
    for rel, path in starter_files(root):
        data = path.read_bytes()
        if path.suffix == ".py":
            text, tasks = strip_solutions(data.decode("utf-8"), str(rel))
            data = text.encode("utf-8")
            for n in tasks:
                stripped.setdefault(n, []).append(str(rel))
        elif path.suffix == ".ipynb":
            data = strip_notebook(data.decode("utf-8"), str(rel)).encode("utf-8")
        if rel == Path("course/student_README.md"):
            rel = Path("README.md")
        if rel == Path("pyproject.toml"):  # the student repository's tests are the course's (`make test`)
            data = data.replace(b'testpaths = ["tests"]', b'testpaths = ["course/tests"]')
        plan.append((rel, data))
    missing = [t.number for t in TASKS if t.number not in stripped]
    if missing:
        raise StarterError(f"no solution marker found for task(s) {missing}; the student repository would "
                           "hand out their answers")
    out.mkdir(parents=True, exist_ok=True)
    for rel, data in plan:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / rel, data)
    return {"out": str(out), "files": len(plan), "tasks": {n: sorted(set(v)) for n, v in sorted(stripped.items())}}


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False

