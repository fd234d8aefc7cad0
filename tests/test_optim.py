"""Optimisers and schedules follow torch.optim's update rules exactly."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from npstn.nn import SGD, Adam, MultiStepLR, Parameter, StepLR

torch = pytest.importorskip("torch")


def _run(npstn_opt_factory, torch_opt_factory, steps=5, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (4,)]
    init = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]
    ps = [Parameter(a.copy()) for a in init]
    tps = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt, topt = npstn_opt_factory(ps), torch_opt_factory(tps)
    for gs in grads:
        for p, tp, g in zip(ps, tps, gs):
            p.grad[...] = g
            tp.grad = torch.tensor(g)
        opt.step()
        topt.step()
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-12)


@given(
    lr=st.floats(1e-3, 0.5),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    wd=st.sampled_from([0.0, 1e-2]),
    nesterov=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_sgd_matches_torch(lr, momentum, wd, nesterov, seed):
    nesterov = nesterov and momentum > 0
    _run(lambda p: SGD(p, lr=lr, momentum=momentum, weight_decay=wd, nesterov=nesterov),
         lambda p: torch.optim.SGD(p, lr=lr, momentum=momentum, weight_decay=wd, nesterov=nesterov),
         seed=seed)


@given(lr=st.floats(1e-4, 0.1), wd=st.sampled_from([0.0, 1e-2]), seed=st.integers(0, 1000))
def test_adam_matches_torch(lr, wd, seed):
    _run(lambda p: Adam(p, lr=lr, weight_decay=wd), lambda p: torch.optim.Adam(p, lr=lr, weight_decay=wd), seed=seed)


def test_lr_mult_scales_the_step():
    p, q = Parameter(np.ones(2)), Parameter(np.ones(2), lr_mult=0.1)
    for x in (p, q):
        x.grad[:] = 1.0
    SGD([p, q], lr=1.0).step()
    np.testing.assert_allclose(p.data, 0.0)
    np.testing.assert_allclose(q.data, 0.9)


def test_schedules_match_torch():
    p = Parameter(np.zeros(1))
    tp = torch.zeros(1, requires_grad=True)
    for ours, theirs in [
        (lambda o: StepLR(o, 3, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
        (lambda o: MultiStepLR(o, [2, 5], 0.1), lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5], 0.1)),
    ]:
        opt, topt = SGD([p], lr=0.1), torch.optim.SGD([tp], lr=0.1)
        s, ts = ours(opt), theirs(topt)
        for _ in range(8):
            topt.step()
            s.step()
            ts.step()
            assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)


def test_optimizer_state_roundtrip_continues_identically():
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(4) for _ in range(6)]
    for make in (lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: Adam(ps, lr=0.01)):
        a = Parameter(np.ones(4))
        opt = make([a])
        for g in grads[:3]:
            a.grad[:] = g
            opt.step()
        state, snapshot = opt.state_dict(), a.data.copy()
        for g in grads[3:]:
            a.grad[:] = g
            opt.step()
        b = Parameter(snapshot)
        opt2 = make([b])
        opt2.load_state_dict(state)
        for g in grads[3:]:
            b.grad[:] = g
            opt2.step()
        np.testing.assert_array_equal(a.data, b.data)


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="model.parameters"):
        SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        SGD([Parameter(np.zeros(1))], lr=-1)
    with pytest.raises(ValueError, match="nesterov"):
        SGD([Parameter(np.zeros(1))], lr=0.1, nesterov=True)
