"""Every op of tests/op_table.py, checked the same way.

* gradcheck: the op's backward (named in the table: ``linear_backward``,
  ``conv2d_backward``, ``max_pool2d_backward``, ``avg_pool2d_backward``,
  ``relu_backward``, ``softmax_backward``, ``project_backward``, ``cross_entropy_backward``, ``grid_sample_backward`` and
  ``affine_grid_backward`` (on images and on volumes), ``attention_grid_backward``,
  ``projective_grid_backward``, ``tps_grid_backward``) against central
  differences of its forward, in float64, with a random upstream gradient,
  on every backend (the cuda one in the simulator on tiny shapes);
* backend agreement: forward and backward of "cpu" and "cuda" equal the
  "numpy" specification to the table's tolerance, with host arrays in and
  host arrays out;
* dtypes: float32 and float64 inputs give outputs and gradients of the same
  dtype, on every backend;
* devices: device arrays in give device arrays out, equal to the host
  results; the layer ops find the cuda backend from the arrays alone
  (backend=None), and a host backend asked for explicitly with device
  arrays is a TypeError naming what to do.

The cuda backend runs on a GPU when there is one, else in Numba's CUDA
simulator (tests/conftest.py), which is slow: its tests draw tiny shapes and
few examples.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npstn._device import is_device_array
from npstn.testing import gradcheck

from op_table import OPS

HOST = ("numpy", "cpu")
CUDA_FEW = settings(max_examples=8, deadline=None)
IDS = [op.name for op in OPS]


def _cuda():
    cuda = pytest.importorskip("numba.cuda")
    if not cuda.is_available():  # pragma: no cover - conftest enables the simulator
        pytest.skip("no CUDA GPU and no CUDA simulator")
    return cuda


def _host(a):
    return a.copy_to_host() if is_device_array(a) else a


def _call(op, case, backend, g=None):
    """(output, gradients) of one forward and one backward on ``backend``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # float32 overflow inside the simulator
        out = op.forward(*case.args, backend=backend, **case.kwargs)
        if g is None:
            g = np.random.default_rng(0).standard_normal(np.shape(_host(out)))
            g = g.astype(np.asarray(_host(out)).dtype)
        grads = op.backward(g, *case.args, backend=backend, **case.kwargs)
    assert len(grads) == len(case.args), f"{op.backward_name} returned {len(grads)} gradients"
    return out, grads, g


def _float_inputs(case):
    return [i for i, a in enumerate(case.args)
            if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)]


def _agree(actual, expected, tol, what):
    expected = np.asarray(expected)
    assert isinstance(actual, (np.ndarray, np.generic)), f"{what}: {type(actual).__name__} is not a host array"
    assert np.asarray(actual).dtype == expected.dtype, what
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected.astype(np.float64),
                               err_msg=what, **tol[expected.dtype])


def _check_against_numpy(op, case, backend):
    ref_out, ref_grads, g = _call(op, case, "numpy")
    out, grads, _ = _call(op, case, backend, g)
    _agree(out, ref_out, op.tol, f"{op.name} {backend} output")
    for i, (a, b) in enumerate(zip(grads, ref_grads)):
        if b is None:
            assert a is None, f"{op.backward_name} {backend}: gradient {i} should be None"
        else:
            _agree(a, b, op.tol, f"{op.backward_name} {backend} gradient {i}")


def _gradcheck(op, case, backend, max_elements=32):
    def forward(*args):
        return _host(op.forward(*args, backend=backend, **case.kwargs))

    def backward(g, *args):
        return [None if a is None else _host(a)
                for a in op.backward(g, *args, backend=backend, **case.kwargs)]

    assert gradcheck(forward, list(case.args), backward=backward, wrt=_float_inputs(case),
                     max_elements=max_elements, **op.gradcheck_kwargs)


# ----------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("op", OPS, ids=IDS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_gradcheck_host(op, backend, data):
    _gradcheck(op, data.draw(op.cases(np.float64, False)), backend)


@pytest.mark.parametrize("op", OPS, ids=IDS)
@settings(max_examples=2, deadline=None)
@given(data=st.data())
def test_gradcheck_cuda(op, data):
    _cuda()
    _gradcheck(op, data.draw(op.cases(np.float64, True)), "cuda", max_elements=16)  # the simulator is slow


# ----------------------------------------------------------------------------- backends
@pytest.mark.parametrize("op", OPS, ids=IDS)
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
def test_cpu_agrees_with_numpy(op, data, dtype):
    _check_against_numpy(op, data.draw(op.cases(dtype, False)), "cpu")


@pytest.mark.parametrize("op", OPS, ids=IDS)
@CUDA_FEW
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
def test_cuda_agrees_with_numpy(op, data, dtype):
    _cuda()
    _check_against_numpy(op, data.draw(op.cases(dtype, True)), "cuda")


# ----------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("op", OPS, ids=IDS)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_dtype_is_preserved(op, data):
    """float32 in, float32 out (outputs and gradients), on each host backend; and the float32
    result is the float64 one rounded (to the float32 tolerance)."""
    case64 = data.draw(op.cases(np.float64, False))
    case32 = case64._replace(args=tuple(
        a.astype(np.float32) if i in _float_inputs(case64) else a for i, a in enumerate(case64.args)))
    for backend in HOST:
        out64, grads64, g = _call(op, case64, backend)
        out32, grads32, _ = _call(op, case32, backend, np.asarray(g).astype(np.float32))
        assert np.asarray(out32).dtype == np.float32 and np.asarray(out64).dtype == np.float64
        for a32, a64 in zip(grads32, grads64):
            if a64 is None:
                assert a32 is None
                continue
            assert a32.dtype == np.float32 and a64.dtype == np.float64
        scale = max(1.0, float(np.abs(out64).max(initial=0.0)))
        np.testing.assert_allclose(np.asarray(out32, np.float64), out64, rtol=1e-4, atol=1e-5 * scale)


# ----------------------------------------------------------------------------- devices
@pytest.mark.parametrize("op", OPS, ids=IDS)
@settings(max_examples=3, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
def test_device_arrays_stay_on_the_device(op, data, dtype):
    cuda = _cuda()
    case = data.draw(op.cases(dtype, True))
    host_out, host_grads, g = _call(op, case, "cuda")
    dargs = tuple(None if a is None else cuda.to_device(np.ascontiguousarray(a)) for a in case.args)
    dcase = case._replace(args=dargs)
    backend = None if op.infers_device else "cuda"  # None: the arrays decide
    out = op.forward(*dcase.args, backend=backend, **dcase.kwargs)
    if np.ndim(host_out):
        assert is_device_array(out), f"{op.name}: device inputs gave a host output"
    np.testing.assert_array_equal(_host(out), host_out)
    dg = cuda.to_device(np.ascontiguousarray(g)) if np.ndim(g) else g
    grads = op.backward(dg, *dcase.args, backend=backend, **dcase.kwargs)
    for a, b in zip(grads, host_grads):
        if b is None:
            assert a is None
            continue
        assert is_device_array(a), f"{op.backward_name}: device inputs gave a host gradient"
        np.testing.assert_array_equal(a.copy_to_host(), b)
    with pytest.raises(TypeError, match="device array"):
        op.forward(*dcase.args, backend="cpu", **dcase.kwargs)
