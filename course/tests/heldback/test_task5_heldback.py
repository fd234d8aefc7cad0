"""Task 5, held back: backward accumulates into the localisation parameters' .grad."""
import numpy as np
import pytest

import _standins

pytestmark = pytest.mark.task5


def test_two_backward_passes_accumulate(monkeypatch):
    _standins.patch(monkeypatch)
    rng = np.random.default_rng(11)
    st = _standins.make_st(rng)
    u = rng.standard_normal((2, 2, 4, 5))
    g1, g2 = rng.standard_normal((2, 2, 4, 5)), rng.standard_normal((2, 2, 4, 5))
    single = []
    for g in (g1, g2):
        st.zero_grad()
        st(u)
        st.backward(g)
        single.append([p.grad.copy() for p in st.parameters()])
    st.zero_grad()
    for g in (g1, g2):
        st(u)
        st.backward(g)
    for p, a, b in zip(st.parameters(), *single):
        np.testing.assert_allclose(p.grad, a + b, rtol=1e-10, atol=1e-12)
