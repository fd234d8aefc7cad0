"""A model answer to the property-testing assignment (ships only with the solution repository).

Catches every planted mutant: parameters drawn (not the initial ones), shapes drawn
with batch > 1, and a separate test of the accumulation protocol.
"""
import os

import numpy as np
from hypothesis import given, settings, strategies as st

from npstn.course.mutation import layer_under_test
from npstn.testing import gradcheck
from npstn.testing import strategies as nst

ChannelAffine = layer_under_test()
SETTINGS = settings(max_examples=int(os.environ.get("NPSTN_COURSE_EXAMPLES", "25")), deadline=None, derandomize=True, database=None)


def _layer(c, data):
    layer = ChannelAffine(c).double()
    layer.weight.data[...] = data.draw(nst.float_arrays((c,), low=-2, high=2), label="weight")
    layer.bias.data[...] = data.draw(nst.float_arrays((c,), low=-2, high=2), label="bias")
    return layer


@SETTINGS
@given(shape=nst.nchw_shapes(max_batch=3, max_channels=3, max_hw=4), data=st.data())
def test_backward_matches_finite_differences(shape, data):
    gradcheck(_layer(shape[1], data), data.draw(nst.float_arrays(shape), label="x"))


@SETTINGS
@given(shape=nst.nchw_shapes(max_batch=2, max_channels=3, max_hw=3), data=st.data())
def test_two_backward_passes_accumulate(shape, data):
    layer = _layer(shape[1], data)
    x = data.draw(nst.float_arrays(shape), label="x")
    g1, g2 = data.draw(nst.float_arrays(shape), label="g1"), data.draw(nst.float_arrays(shape), label="g2")
    single = []
    for g in (g1, g2):
        layer.zero_grad()
        layer.forward(x)
        layer.backward(g)
        single.append([p.grad.copy() for p in layer.parameters()])
    layer.zero_grad()
    for g in (g1, g2):
        layer.forward(x)
        layer.backward(g)
    for p, a, b in zip(layer.parameters(), *single):
        np.testing.assert_allclose(p.grad, a + b, rtol=1e-12, atol=1e-12)
