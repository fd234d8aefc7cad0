"""Tools to property-test hand-written gradients: npstn's own tests use them, and so can yours.

* :func:`gradcheck` compares a backward with central finite differences in
  float64 and names the worst element when they disagree.
* :mod:`npstn.testing.strategies` holds Hypothesis strategies for shapes,
  arrays, layer configurations and sampling grids.

Example::

    from hypothesis import given
    from npstn.testing import gradcheck, strategies as st_npstn
    from npstn.nn import Linear

    @given(st_npstn.float_arrays(st_npstn.shapes(min_dims=2, max_dims=2)))
    def test_linear(x):
        gradcheck(Linear(x.shape[1], 3), x)
"""
from npstn.testing.gradcheck import GradcheckError, GradcheckResult, TensorReport, gradcheck
from npstn.testing import strategies

__all__ = ["gradcheck", "GradcheckError", "GradcheckResult", "TensorReport", "strategies"]
