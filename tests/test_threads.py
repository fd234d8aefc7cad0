"""npstn.utils.threads: one knob for Numba's and BLAS's threads."""
import numba
import numpy as np
import pytest

from npstn.cli import build_parser
from npstn.utils.threads import blas_threads, get_num_threads, machine_busy, set_num_threads


@pytest.fixture
def restore_threads():
    numba_before, blas_before = numba.get_num_threads(), blas_threads()
    yield
    numba.set_num_threads(numba_before)
    if blas_before is not None:
        from npstn.utils.threads import set_blas_threads

        set_blas_threads(blas_before)


def test_set_num_threads_sets_numba_and_blas(restore_threads):
    assert set_num_threads(1) == 1
    assert get_num_threads() == 1
    if blas_threads() is not None:  # NumPy's OpenBLAS can be asked; MKL/Accelerate builds cannot
        assert blas_threads() == 1
    a = np.random.default_rng(0).random((64, 64))
    np.testing.assert_allclose(a @ a.T, (a @ a.T).T)  # BLAS still works after the change


def test_set_num_threads_clips_to_what_numba_started(restore_threads):
    assert set_num_threads(10_000) == numba.config.NUMBA_NUM_THREADS


@pytest.mark.parametrize("bad", [0, -3])
def test_set_num_threads_rejects_fewer_than_one(bad):
    with pytest.raises(ValueError, match="at least 1"):
        set_num_threads(bad)


@pytest.mark.parametrize("bad", [1.5, "2", True])
def test_set_num_threads_rejects_non_integers(bad):
    with pytest.raises(TypeError, match="integer"):
        set_num_threads(bad)


def test_machine_busy_reports_load_and_cores():
    busy, load, cores = machine_busy()
    assert isinstance(busy, bool) and cores >= 1
    assert busy == (load > cores + 0.5) or np.isnan(load)


@pytest.mark.parametrize("argv", [["train", "--threads", "1"], ["quickstart", "--threads", "1"],
                                  ["sweep", "--threads", "1"], ["reproduce", "table1", "--threads", "1"]])
def test_threads_option_on_the_heavy_commands(argv):
    assert build_parser().parse_args(argv).threads == 1
