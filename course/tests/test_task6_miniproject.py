"""Task 6, the mini-project: the ST-FCN on RTS below 8% test error with your own backward passes.

Trains for about ten minutes on one CPU core and needs MNIST (``NPSTN_DATA_DIR`` or ``npstn data``).
"""
import pytest

pytestmark = pytest.mark.task6


def test_st_fcn_on_rts_below_8_percent():
    from npstn.data import where

    from npstn.course.miniproject import train_st_fcn

    folder = where()
    if folder is None or not folder.is_dir():
        pytest.skip("needs MNIST: set NPSTN_DATA_DIR (or run `npstn data`)")
    result = train_st_fcn()
    print(f"test error {result['test_error']:.2f}% after {result['steps']} steps ({result['seconds']:.0f} s)")
    assert result["test_error"] < 8.0
