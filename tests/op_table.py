"""The table of ops that tests/test_ops.py checks, one :class:`OpInfo` per op
(as PyTorch's OpInfo and MiniTorch's MathTest do).

Each entry names an op's forward and its backward, says how to draw inputs
for it (Hypothesis strategies from :mod:`npstn.testing.strategies`), which
backends run it and how closely they must agree. test_ops.py runs the same
checks over every entry: finite-difference gradient checks (float64, random
upstream gradient), agreement of every backend with the NumPy
specification, dtype preservation, and the device behaviour (device arrays
in, device arrays out; a host backend asked for explicitly with device
arrays is a TypeError).

Conventions of the table:

* ``Case.args`` are the forward's array inputs in order (None for an absent
  optional one, e.g. ``bias=None``; integer arrays such as labels are
  inputs without a gradient); ``Case.kwargs`` its other arguments, which
  the backward receives as well.
* ``OpInfo.forward(*args, backend=..., **kwargs)`` returns one array (or a
  NumPy scalar for a reduced loss); ``OpInfo.backward(grad_output, *args,
  backend=..., **kwargs)`` returns one gradient per arg, None where there is
  none. For the layer ops these are the functions themselves (they follow
  the package's backward rule); the grid generators' backwards are adapted
  to it here from their current signatures.
* ``small`` strategies (tiny shapes) are what the CUDA simulator runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
from hypothesis import strategies as st

import npstn.functional as F
from npstn.testing import strategies as sn

__all__ = ["Case", "OpInfo", "OPS", "ops_named"]


class Case(NamedTuple):
    args: tuple  # the forward's array inputs, in order
    kwargs: dict  # its other arguments (shared with the backward)


F64 = np.dtype(np.float64)
F32 = np.dtype(np.float32)
# float64 backends form the same sums in other orders; float32 kernels may also
# accumulate in float64 where the specification rounds per step
LAYER_TOL = {F64: dict(rtol=1e-12, atol=1e-13), F32: dict(rtol=1e-5, atol=1e-6)}
GRID_TOL = {F64: dict(rtol=1e-12, atol=1e-12), F32: dict(rtol=1e-6, atol=1e-6)}
SAMPLER_TOL = {F64: dict(rtol=1e-12, atol=1e-12), F32: dict(rtol=1e-5, atol=1e-5)}


@dataclass(frozen=True)
class OpInfo:
    name: str
    forward: Callable
    backward: Callable
    cases: Callable  # cases(dtype, small: bool) -> strategy of Case
    backward_name: str  # the public backward function the entry checks
    backends: tuple = ("numpy", "cpu", "cuda")
    tol: dict = field(default_factory=lambda: LAYER_TOL)
    gradcheck_kwargs: dict = field(default_factory=dict)
    # whether backend=None follows device arrays to "cuda" (the dispatch rule of
    # npstn._backend.resolve_backend); the grid ops still need backend="cuda"
    infers_device: bool = True


def _tuple(fn):
    """A backward returning one array -> a 1-tuple, so every entry returns one gradient per arg."""
    def wrapped(*a, **k):
        return (fn(*a, **k),)
    return wrapped


def _arrays(draw, shape, dtype, low=-2.0, high=2.0):
    return draw(sn.float_arrays(shape, dtype=dtype, low=low, high=high))


# -- layer ops ----------------------------------------------------------------------------

@st.composite
def linear_cases(draw, dtype, small):
    cfg = draw(sn.linear_configs(max_batch=3 if small else 4, max_features=6))
    x = _arrays(draw, cfg.input_shape, dtype)
    w = _arrays(draw, (cfg.out_features, cfg.in_features), dtype)
    b = _arrays(draw, (cfg.out_features,), dtype) if cfg.bias else None
    return Case((x, w, b), {})


@st.composite
def conv2d_cases(draw, dtype, small):
    kw = dict(max_batch=2, max_channels=3, max_kernel=3, max_stride=3, max_padding=2, max_hw=5 if small else 6)
    cfg = draw(sn.conv_configs(**kw))
    (kh, kw_) = cfg.kernel_hw
    c, o = cfg.input_shape[1], cfg.output_shape[1]
    x = _arrays(draw, cfg.input_shape, dtype)
    w = _arrays(draw, (o, c, kh, kw_), dtype)
    b = _arrays(draw, (o,), dtype) if cfg.bias else None
    return Case((x, w, b), dict(stride=cfg.stride, padding=cfg.padding))


def _pool_configs(small):
    if small:
        return sn.pool_configs(max_batch=2, max_channels=2, max_hw=6, max_kernel=3, max_stride=3)
    return sn.pool_configs()


@st.composite
def max_pool2d_cases(draw, dtype, small):
    cfg = draw(_pool_configs(small))
    x = draw(sn.untied_arrays(cfg.shape, dtype=dtype))  # distinct values: one argmax per window
    return Case((x,), cfg.kwargs())


@st.composite
def relu_max_pool2d_cases(draw, dtype, small):
    cfg = draw(_pool_configs(small))
    x = draw(sn.untied_arrays(cfg.shape, dtype=np.float64))  # one argmax per window
    x = np.where(x >= 0, x + 0.1, x - 0.1)  # and away from relu's kink at 0 (monotone: still untied)
    return Case((x.astype(dtype),), cfg.kwargs())


@st.composite
def avg_pool2d_cases(draw, dtype, small):
    cfg = draw(_pool_configs(small))
    extra = draw(st.sampled_from([{}, dict(count_include_pad=False), dict(divisor_override=3)]))
    return Case((_arrays(draw, cfg.shape, dtype),), {**cfg.kwargs(), **extra})


@st.composite
def relu_cases(draw, dtype, small):
    shape = draw(sn.shapes(min_dims=1, max_dims=4, max_side=3 if small else 5))
    x = _arrays(draw, shape, np.float64)
    x = np.where(np.abs(x) < 0.05, 0.5, x)  # away from the kink at 0 (finite differences)
    return Case((x.astype(dtype),), {})


@st.composite
def softmax_cases(draw, dtype, small):
    """Any rank 1-4 (sides of 1 included: a softmax over one element is 1, its gradient 0), any dim,
    negative ones too; logits up to +-30 apart (the max-shift keeps exp() finite)."""
    shape = draw(sn.shapes(min_dims=1, max_dims=4, max_side=3 if small else 5))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    x = _arrays(draw, shape, dtype, low=-15.0, high=15.0)
    return Case((x,), dict(dim=dim))


@st.composite
def project_cases(draw, dtype, small):
    side = st.integers(1, 3 if small else 4)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(side), draw(side), draw(side))
    return Case((_arrays(draw, shape, dtype),), dict(reduction=draw(st.sampled_from(["sum", "mean"]))))


@st.composite
def cross_entropy_cases(draw, dtype, small):
    logits, labels = draw(sn.logits_and_labels(max_batch=4 if small else 5, max_classes=4 if small else 6))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    return Case((logits.astype(dtype), labels), dict(reduction=reduction))


def _ce_backward(g, logits, labels, **kw):
    return F.cross_entropy_backward(g, logits, labels, **kw), None


# -- the sampler and the grid generators ----------------------------------------------------

@st.composite
def grid_sample_cases(draw, dtype, small):
    configs = sn.sampler_configs(max_batch=2, max_channels=2, max_side=4, max_out_side=3) if small else None
    case = draw(sn.grid_sample_cases(dtype=dtype, configs=configs))
    return Case((case.input, case.grid), dict(case.kwargs))


@st.composite
def grid_sample3d_cases(draw, dtype, small):
    """Volumes (N, C, D, H, W): depth 1 and odd sizes included, points outside the volume too."""
    if small:  # the CUDA simulator runs a Python thread per output point
        configs = sn.sampler_configs(max_batch=1, max_channels=2, max_side=3, max_out_side=2, spatial_dims=3)
    else:
        configs = sn.sampler_configs(max_batch=2, max_channels=2, max_side=4, max_out_side=3, spatial_dims=3)
    case = draw(sn.grid_sample_cases(dtype=dtype, configs=configs))
    return Case((case.input, case.grid), dict(case.kwargs))


@st.composite
def affine_grid3d_cases(draw, dtype, small):
    n = draw(st.integers(1, 2))
    side = st.integers(1, 3 if small else 5)
    size = (n, draw(st.integers(1, 3)), draw(side), draw(side), draw(side))
    theta = draw(sn.affine3d_thetas(n, dtype))
    return Case((theta,), dict(size=size, align_corners=draw(st.booleans())))


def _grid_cases(thetas):
    @st.composite
    def cases(draw, dtype, small):
        n, c, h, w = draw(sn.transform_sizes(max_batch=2, max_hw=4 if small else 6))
        theta, extra = thetas(draw, n, dtype)
        return Case((theta,), dict(size=(n, c, h, w), align_corners=draw(st.booleans()), **extra))
    return cases


def _affine_thetas(draw, n, dtype):
    return draw(sn.affine_thetas(n, dtype)), {}


def _attention_thetas(draw, n, dtype):
    return draw(sn.attention_thetas(n, dtype)), {}


def _projective_thetas(draw, n, dtype):
    return draw(sn.projective_thetas(n, dtype)), {}


def _tps_thetas(draw, n, dtype):
    return draw(sn.tps_thetas(n, draw(st.sampled_from([4, 9, 16])), dtype)), {}


def _tps_backward(g, theta, size, align_corners=False, backend=None):
    return (F.tps_grid_backward(g, size, num_control_points=theta.shape[1],
                                align_corners=align_corners, backend=backend),)


OPS = [
    OpInfo("linear", F.linear, F.linear_backward, linear_cases, "linear_backward"),
    OpInfo("conv2d", F.conv2d, F.conv2d_backward, conv2d_cases, "conv2d_backward"),
    OpInfo("max_pool2d", F.max_pool2d, _tuple(F.max_pool2d_backward), max_pool2d_cases,
           "max_pool2d_backward"),
    OpInfo("relu_max_pool2d", F.relu_max_pool2d, _tuple(F.relu_max_pool2d_backward),
           relu_max_pool2d_cases, "relu_max_pool2d_backward"),
    OpInfo("avg_pool2d", F.avg_pool2d, _tuple(F.avg_pool2d_backward), avg_pool2d_cases,
           "avg_pool2d_backward"),
    OpInfo("relu", F.relu, _tuple(F.relu_backward), relu_cases, "relu_backward"),
    OpInfo("softmax", F.softmax, _tuple(F.softmax_backward), softmax_cases, "softmax_backward"),
    OpInfo("project", F.project, _tuple(F.project_backward), project_cases, "project_backward"),
    OpInfo("cross_entropy", F.cross_entropy, _ce_backward, cross_entropy_cases,
           "cross_entropy_backward"),
    OpInfo("grid_sample", F.grid_sample, F.grid_sample_backward, grid_sample_cases,
           "grid_sample_backward", tol=SAMPLER_TOL,
           gradcheck_kwargs=dict(eps=1e-6, atol=1e-6, rtol=1e-4), infers_device=False),
    OpInfo("affine_grid", F.affine_grid,
           lambda g, theta, size, **kw: (F.affine_grid_backward(g, size, **kw),),
           _grid_cases(_affine_thetas), "affine_grid_backward", tol=GRID_TOL, infers_device=False),
    OpInfo("grid_sample3d", F.grid_sample, F.grid_sample_backward, grid_sample3d_cases,
           "grid_sample_backward", tol=SAMPLER_TOL,
           gradcheck_kwargs=dict(eps=1e-6, atol=1e-6, rtol=1e-4), infers_device=False),
    OpInfo("affine_grid3d", F.affine_grid,
           lambda g, theta, size, **kw: (F.affine_grid_backward(g, theta, size, **kw),),
           affine_grid3d_cases, "affine_grid_backward", tol=GRID_TOL, infers_device=False),
    OpInfo("attention_grid", F.attention_grid, _tuple(F.attention_grid_backward),
           _grid_cases(_attention_thetas), "attention_grid_backward", tol=GRID_TOL,
           infers_device=False),
    OpInfo("projective_grid", F.projective_grid, _tuple(F.projective_grid_backward),
           _grid_cases(_projective_thetas), "projective_grid_backward", tol=GRID_TOL,
           infers_device=False),
    OpInfo("tps_grid", F.tps_grid, _tps_backward, _grid_cases(_tps_thetas), "tps_grid_backward",
           tol=GRID_TOL, infers_device=False),
]


def ops_named(*names):
    return [op for op in OPS if op.name in names]
