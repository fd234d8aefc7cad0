"""Execute every notebook in notebooks/ top to bottom and fail on the first error.

The notebooks teach npstn's derivations with npstn's own code, so they must
keep running as the code changes. Each one runs in a fresh IPython kernel
whose interpreter is *this* one (``sys.executable``, where npstn is
installed), with ``NPSTN_NOTEBOOK_QUICK=1`` so that training cells stay short.
Outputs are not compared: a notebook passes when no cell raises.

The same file re-executes the notebooks *in place*, storing their outputs
(figures included) so that they read well on a code-hosting site::

    python tests/test_notebooks.py                  # all, full mode (what is committed)
    python tests/test_notebooks.py 04 --quick       # one notebook, quick mode

Needs the ``dev`` extra (nbclient, nbformat, ipykernel).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
EXPECTED = [
    "01_grid_generator",
    "02_bilinear_sampling",
    "03_projective_and_tps",
    "04_training_an_st",
    "05_property_testing_your_layer",
    "06_trilinear_sampling_3d",
    "07_two_transformers_share_the_work",
]
CELL_TIMEOUT_S = 300  # per cell in quick mode (the tests); it stays far below it
FULL_CELL_TIMEOUT_S = 3600  # per cell in full mode (notebooks 04 and 07 train for minutes)
QUICK_ENV = "NPSTN_NOTEBOOK_QUICK"
KERNEL_NAME = "npstn-python3"
MAX_BYTES = 1_500_000  # a stored notebook (outputs included) stays small
NEEDS_MNIST = {"04_training_an_st", "07_two_transformers_share_the_work"}  # skipped where MNIST cannot be found (CI has it)


def _kernel_manager(spec_root: Path):
    """An AsyncKernelManager whose kernel runs ``sys.executable -m ipykernel_launcher``.

    A kernelspec named "python3" can be shadowed by a user-level one pointing
    at another interpreter (without npstn); this private spec cannot.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec_dir = spec_root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }))
    ksm = KernelSpecManager(kernel_dirs=[str(spec_root / "kernels")], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)


def execute_notebook(path, quick: bool = True, timeout: int | None = None):
    """Run the notebook at ``path`` top to bottom; returns the executed NotebookNode.

    Cells run with the notebooks folder as working directory. Raises
    ``nbclient.exceptions.CellExecutionError`` (naming the cell and the
    traceback) when a cell fails.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    if timeout is None:
        timeout = CELL_TIMEOUT_S if quick else FULL_CELL_TIMEOUT_S
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    env[QUICK_ENV] = "1" if quick else "0"
    env.pop("MPLBACKEND", None)  # the notebooks draw inline
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # this checkout's npstn, also when it is not installed (an editable install points here anyway)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    with tempfile.TemporaryDirectory(prefix="npstn-kernelspec-") as spec_root:
        client = NotebookClient(
            nb,
            km=_kernel_manager(Path(spec_root)),
            timeout=timeout,
            record_timing=False,  # no timestamps in the stored file
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute(env=env, cwd=str(path.parent))
    # store the standard kernelspec, not the private one used to run it
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                 "name": "python3"}
    return nb


def test_the_seven_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_executed_and_small(path):
    """Committed notebooks carry their outputs (figures show when rendered)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    unexecuted = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None]
    assert not unexecuted, (
        f"{path.name}: cells {unexecuted} were stored without being executed; "
        "re-run `python tests/test_notebooks.py` and commit the result"
    )
    errors = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: cells {errors} were stored with an error output"
    images = sum(1 for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images > 0, f"{path.name} stores no figure"
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"


def _mnist_found() -> bool:
    """Whether MNIST is where npstn.data looks for it ($NPSTN_DATA_DIR or the cache), without fetching."""
    from npstn.data import where

    folder = where()
    return folder is not None and folder.is_dir()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path):
    if path.stem in NEEDS_MNIST and not _mnist_found():
        pytest.skip("needs MNIST: set NPSTN_DATA_DIR to a folder with the four IDX files (or run `npstn data`)")
    execute_notebook(path, quick=True)


def main(argv=None) -> int:
    import argparse

    import nbformat

    parser = argparse.ArgumentParser(description="Re-execute notebooks in place, storing their outputs.")
    parser.add_argument("notebooks", nargs="*",
                        help="names or prefixes (e.g. 04 or 04_training_an_st); default: all")
    parser.add_argument("--quick", action="store_true", help=f"quick mode ({QUICK_ENV}=1)")
    parser.add_argument("--dry-run", action="store_true", help="execute but do not write")
    args = parser.parse_args(argv)
    chosen = [p for p in NOTEBOOKS if not args.notebooks or any(p.stem.startswith(a) or p.name == a
                                                                  for a in args.notebooks)]
    if not chosen:
        parser.error(f"no notebook matches {args.notebooks}")
    for path in chosen:
        t0 = time.perf_counter()
        nb = execute_notebook(path, quick=args.quick)
        wall = time.perf_counter() - t0
        if not args.dry_run:
            nbformat.write(nb, path)
        print(f"{path.name}: executed in {wall:.1f} s, {path.stat().st_size / 1024:.0f} KiB"
              + ("" if args.dry_run else " (written)"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
