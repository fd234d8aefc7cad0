"""Command-line validation: argparse ``type=`` functions and a parser with one-line errors.

Every user error on the ``npstn`` command line ends the same way: exit status
2 and one line on stderr that names the argument, what it got and what it
wants, e.g.::

    npstn eval: --batch-size must be a positive integer, got '-1'

The ``type=`` functions below check a value as argparse reads it, before any
work (or allocation) starts; :class:`Parser` turns argparse's own errors into
that one line instead of a usage block. Nothing here imports NumPy, so the
benchmarks can validate their options before they set OpenMP's wait policy.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

__all__ = [
    "Parser", "positive_int", "nonnegative_int", "seed", "digit", "finite_float", "nonnegative_float",
    "positive_float", "fraction_list", "int_range", "run_folder", "output_folder", "output_file", "input_folder",
    "input_file", "one_line", "MAX_SEED",
]

#: Seeds are non-negative and fit in 63 bits (what NumPy's SeedSequence and JSON round-trip as ints).
MAX_SEED = 2**63 - 1


def one_line(text) -> str:
    """``text`` on one line (newlines and runs of spaces collapsed)."""
    return " ".join(str(text).split())


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``PROG: MESSAGE (see PROG --help)``, exit 2.

    argparse's "argument --x: must be ..." reads as "--x must be ...".
    """

    def error(self, message):  # noqa: D401 - argparse's signature
        m = re.match(r"argument ([^:]+): (must .*|is .*|does .*|holds .*)$", message, re.S)
        if m:
            message = f"{m.group(1).split('/')[-1]} {m.group(2)}"
        self.exit(2, f"{self.prog}: {one_line(message)} (see {self.prog} --help)\n")


def _int(text: str) -> int:
    t = str(text).strip().replace("_", "")
    if not re.fullmatch(r"[+-]?\d+", t):
        raise ValueError
    return int(t)


def int_range(lo: int | None = None, hi: int | None = None, what: str | None = None):
    """A ``type=`` function for integers in [lo, hi]; ``what`` names the kind in messages."""
    if what is None:
        what = ("a positive integer" if lo == 1 else "a non-negative integer" if lo == 0 else "an integer")

    def parse(text):
        try:
            v = _int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if lo is not None and v < lo:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be {what} of at most {hi:,}, got {text!r}")
        return v

    parse.__name__ = "int"
    return parse


def positive_int(hi: int | None = None):
    """``type=positive_int(10_000)``: an integer in [1, hi]."""
    return int_range(1, hi)


def nonnegative_int(hi: int | None = None):
    return int_range(0, hi)


seed = int_range(0, MAX_SEED, "a non-negative integer (a seed)")


def digit(text) -> int:
    """A digit class, 0..9."""
    try:
        return int_range(0, 9)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a digit from 0 to 9, got {text!r}") from None


def _float(text, ok, what):
    try:
        v = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not (math.isfinite(v) and ok(v)):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return v


def finite_float(text) -> float:
    return _float(text, lambda v: True, "a finite number")


def nonnegative_float(text) -> float:
    return _float(text, lambda v: v >= 0, "a finite number >= 0")


def positive_float(text) -> float:
    return _float(text, lambda v: v > 0, "a finite number > 0")


def fraction_list(text) -> tuple:
    """'0.333,0.667' -> (0.333, 0.667), each in (0, 1); 'none' or '' -> ()."""
    if str(text).strip().lower() in ("none", ""):
        return ()
    want = "comma-separated fractions in (0, 1) like 0.333,0.667, or 'none'"
    try:
        vals = tuple(float(t) for t in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
    if not all(math.isfinite(v) and 0 < v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
    return vals


def _blocking_file(path: Path):
    """The first existing non-folder among ``path`` and its parents, else None."""
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else p
    return None


def _nearest_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path(".")


def output_folder(text) -> str:
    """A folder npstn may create or write into: not a file, not inside a file, writable."""
    if not str(text).strip() or "\0" in str(text):
        raise argparse.ArgumentTypeError(f"must be a folder path, got {text!r}")
    path = Path(text).expanduser()
    bad = _blocking_file(path)
    if bad is not None:
        where = "is a file" if bad == path else f"is inside {str(bad)!r}, which is a file"
        raise argparse.ArgumentTypeError(f"must be a folder, but {str(path)!r} {where}")
    base = _nearest_existing(path)
    if not os.access(base, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(
            f"must be a writable folder, but {str(base)!r} is not writable by this user")
    return str(path)


def new_folder(text) -> str:
    """A folder npstn may create: it does not exist yet, or is an empty folder (never overwrites)."""
    path = Path(output_folder(text))
    if path.exists() and any(path.iterdir()):
        raise argparse.ArgumentTypeError(f"must be a new or empty folder, but {str(path)!r} is not empty")
    return str(path)


def output_file(text) -> str:
    """A file npstn may write ('-' for stdout): not a folder, not inside a file, its folder writable."""
    if str(text) == "-":
        return "-"
    if not str(text).strip() or "\0" in str(text):
        raise argparse.ArgumentTypeError(f"must be a file path, got {text!r}")
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"must be a file, but {str(path)!r} is a folder")
    bad = _blocking_file(path.parent)
    if bad is not None:
        raise argparse.ArgumentTypeError(f"must be a file path, but {str(bad)!r} is a file, not a folder")
    base = _nearest_existing(path.parent)
    if not os.access(base, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"must be writable, but {str(base)!r} is not writable by this user")
    return str(path)


def new_file(text) -> str:
    """A file npstn may create: like :func:`output_file`, and it must not exist yet (never overwrites)."""
    if str(text) == "-":
        raise argparse.ArgumentTypeError("must be a file path, got '-'")
    path = Path(output_file(text))
    if path.exists():
        raise argparse.ArgumentTypeError(f"must be a new file, but {str(path)!r} exists (npstn does not overwrite it)")
    return str(path)


def input_folder(text) -> str:
    """An existing, readable folder."""
    if not str(text).strip() or "\0" in str(text):
        raise argparse.ArgumentTypeError(f"must be a path, got {text!r}")
    path = Path(text).expanduser()
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise argparse.ArgumentTypeError(f"must be an existing folder, but {str(path)!r} {what}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"must be a readable folder, but {str(path)!r} is not readable")
    return str(path)


def input_file(text) -> str:
    """An existing, readable file."""
    if not str(text).strip() or "\0" in str(text):
        raise argparse.ArgumentTypeError(f"must be a path, got {text!r}")
    path = Path(text).expanduser()
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is not a file"
        raise argparse.ArgumentTypeError(f"must be an existing file, but {str(path)!r} {what}")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"must be a readable file, but {str(path)!r} is not readable")
    return str(path)


def run_folder(text) -> str:
    """The folder of a training run: it exists and holds ``config.json``."""
    if not str(text).strip() or "\0" in str(text):
        raise argparse.ArgumentTypeError(f"must be a path, got {text!r}")
    path = Path(text).expanduser()
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is a file, not a folder"
        raise argparse.ArgumentTypeError(
            f"must be a run folder (the --out of `npstn train`), but {str(path)!r} {what}")
    if not (path / "config.json").is_file():
        raise argparse.ArgumentTypeError(
            f"must be a run folder (the --out of `npstn train`), but {str(path)!r} holds no config.json")
    return str(path)


def fail(prog: str, message) -> int:
    """Print ``PROG: MESSAGE`` on one line to stderr; return 2 (the exit status of a user error)."""
    print(f"{prog}: {one_line(message)}", file=sys.stderr)
    return 2
