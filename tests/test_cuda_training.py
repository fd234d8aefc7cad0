"""A whole training step on the GPU: device layers, loss, optimisers, Module.to, train().

Runs on a real GPU when there is one, else in Numba's CUDA simulator
(conftest.py sets NUMBA_ENABLE_CUDASIM=1), which runs every GPU thread as a
Python thread: shapes are tiny and Hypothesis examples few.

How every new backward is covered (the DESIGN's rule that each backward is
gradient-checked):

* The functional ops behind Linear, Conv2d, MaxPool2d, AvgPool2d, ReLU and
  CrossEntropyLoss are checked on the cuda backend by tests/test_ops.py (the
  op table): agreement with the NumPy specification, forward and backward,
  float32 and float64 (random configurations; the tolerances these tests
  used), gradient checks, and device arrays in and out.
* Here, the layers on the device (awkward Conv2d shapes, gradient
  accumulation, max-pool ties and NaN, ReLU, Dropout, Flatten,
  CrossEntropyLoss and SpatialTransformer) are compared with the cpu
  backend's forward *and* backward (input gradient and every parameter
  gradient) on the same arrays; the cpu backwards are gradient-checked in
  test_linear.py, test_conv.py, test_pooling.py, test_activation.py,
  test_loss.py, test_spatial_transformer.py and test_ops.py.
* In addition, ``test_device_layers_pass_gradcheck`` runs
  :func:`npstn.testing.gradcheck` (central differences, float64) through the
  public layer API on the device for the input gradient of each layer kind
  (GEMM, im2col/col2im, pooling, ReLU, cross-entropy kernels).
* The GEMM and column-sum kernels are compared with NumPy directly, for odd
  sizes and several tile shapes.

In the simulator, a strict mode (fixture ``strict_device_arrays``) makes the
simulator's device arrays behave like real ones: no NumPy arithmetic or
attributes on them, no silent conversion to NumPy; and it counts copies
between host and device, so a test can assert that a training step makes
no host round trips.
"""
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from npstn import nn
from npstn import train as T
from npstn._device import is_device_array
from npstn.models import PaperModel
from npstn.stn.spatial_transformer import SpatialTransformer
from npstn.testing import gradcheck
from npstn.testing import strategies as sn

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():  # pragma: no cover - conftest enables the simulator
    pytest.skip("no CUDA GPU and no CUDA simulator", allow_module_level=True)

from numba import config as numba_config  # noqa: E402

from npstn.kernels.cuda import loss as kloss  # noqa: E402
from npstn.kernels.cuda import matmul  # noqa: E402
from test_train import _CrashAfter  # noqa: E402  (the simulated crash of the cpu resume tests)

SIM = bool(numba_config.ENABLE_CUDASIM)
FEW = settings(max_examples=6, deadline=None)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True, scope="module")
def _fast_simulator_threads():
    """Make the simulator fast and its shared memory race-free for this module.

    * Its barriers wait for GIL hand-overs; a short switch interval speeds them up.
    * Its ``cuda.shared.array`` looks up, then stores, a per-call-site allocation
      without a lock, so two threads arriving together can get different
      arrays (a race in the simulator, not in the kernels; the short switch
      interval makes it show). A lock around it restores CUDA's semantics.
    """
    old = sys.getswitchinterval()
    restore = None
    if SIM:
        import threading

        try:
            from numba.core import types
            from numba.cuda.simulator import kernelapi
            from numba.np import numpy_support

            kernelapi.FakeCUDAShared.array  # noqa: B018 - the method patched below
        except (ImportError, AttributeError):  # another simulator layout: leave it alone
            yield
            return

        orig = kernelapi.FakeCUDAShared.array
        lock = threading.Lock()

        def locked_array(self, shape, dtype):
            if shape == 0:  # dynamic shared memory: not keyed by call site
                return orig(self, shape, dtype)
            if isinstance(dtype, types.Type):
                dtype = numpy_support.as_dtype(dtype)
            frame = sys._getframe(1)
            caller = (frame.f_code.co_filename, frame.f_lineno)  # the simulator's key
            with lock:
                res = self._allocations.get(caller)
                if res is None:
                    res = self._allocations[caller] = np.empty(shape, dtype)
            return res

        kernelapi.FakeCUDAShared.array = locked_array
        restore = (kernelapi.FakeCUDAShared, orig)
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)
    if restore is not None:
        restore[0].array = restore[1]


class _Copies:
    def __init__(self):
        self.to_host = 0
        self.to_device = 0
        self.active = False  # counting only in the simulator's strict mode

    def reset(self):
        self.to_host = self.to_device = 0


# What a real numba DeviceNDArray offers besides what FakeCUDAArray defines itself.
_DEVICE_ARRAY_ATTRS = {"dtype", "size", "ndim", "strides", "nbytes", "flags", "squeeze", "itemsize"}


@pytest.fixture(autouse=True)
def strict_device_arrays(monkeypatch):
    """In the simulator, make device arrays as strict as real ones and count host<->device copies."""
    copies = _Copies()
    try:
        from numba.cuda.simulator.cudadrv import devicearray as fake
    except ImportError:  # pragma: no cover - another simulator layout
        fake = None
    if not SIM or fake is None:
        yield copies
        return

    cls = fake.FakeCUDAArray
    orig_getattr, orig_to_host = cls.__getattr__, cls.copy_to_host

    def strict_getattr(self, name):
        if name not in _DEVICE_ARRAY_ATTRS:
            raise AttributeError(f"a device array has no attribute {name!r} (strict simulator mode)")
        return orig_getattr(self, name)

    def counted_to_host(self, *args, **kwargs):
        copies.to_host += 1
        return orig_to_host(self, *args, **kwargs)

    def no_arithmetic(self, *args):
        raise TypeError("real device arrays support no arithmetic (strict simulator mode)")

    monkeypatch.setattr(cls, "__getattr__", strict_getattr)
    monkeypatch.setattr(cls, "copy_to_host", counted_to_host)
    for op in ("__add__", "__sub__", "__mul__", "__truediv__", "__floordiv__", "__mod__",
               "__pow__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"):
        monkeypatch.setattr(cls, op, no_arithmetic)
    monkeypatch.setattr(cls, "__hash__", object.__hash__)
    orig_to_device = cuda.to_device

    def counted_to_device(*args, **kwargs):
        copies.to_device += 1
        return orig_to_device(*args, **kwargs)

    monkeypatch.setattr(cuda, "to_device", counted_to_device)
    copies.active = True
    yield copies


def host(a):
    return a.copy_to_host() if is_device_array(a) else np.asarray(a)


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if np.dtype(dtype) == np.float32 else dict(rtol=1e-12, atol=1e-13)


def assert_close(a, b, dtype=np.float64):
    np.testing.assert_allclose(host(a), host(b), **tol(dtype))


def run_layer(layer, x, g, device: bool):
    """(y, grad_in, [param grads]) of one forward + backward, as host arrays."""
    layer.zero_grad()
    if device:
        y = layer(dev(x))
        assert is_device_array(y)
        gi = layer.backward(dev(g))
        assert is_device_array(gi)
        return host(y), host(gi), [host(p.grad) for p in layer.parameters()]
    y = layer(x)
    gi = layer.backward(g)
    return y, gi, [p.grad.copy() for p in layer.parameters()]


def compare_layer(layer, x, rng, dtype):
    """Device forward/backward of ``layer`` equals its cpu-backend forward/backward."""
    g = rng.standard_normal(np.shape(layer(x))).astype(x.dtype)  # random, never all ones
    y, gi, grads = run_layer(layer, x, g, False)
    layer.to("cuda")
    try:
        yd, gid, gradsd = run_layer(layer, x, g, True)
    finally:
        layer.to("cpu")
    np.testing.assert_allclose(yd, y, **tol(dtype))
    np.testing.assert_allclose(gid, gi, **tol(dtype))
    assert len(grads) == len(gradsd)
    for a, b in zip(gradsd, grads):
        np.testing.assert_allclose(a, b, **tol(dtype))


# ----------------------------------------------------------------------------- GEMM
TILES = [(1, 1), (2, 2), (3, 2), (2, 4), (4, 1)]


@FEW
@given(m=st.integers(1, 9), k=st.integers(1, 11), n=st.integers(1, 9), ta=st.booleans(),
       tb=st.booleans(), tile=st.sampled_from(TILES), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31))
def test_gemm_matches_numpy_for_odd_sizes(m, k, n, ta, tb, tile, dtype, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype)
    ref = (a.T if ta else a) @ (b.T if tb else b)
    out = matmul.gemm(dev(a), dev(b), trans_a=ta, trans_b=tb, tile=tile)
    np.testing.assert_allclose(host(out), ref, **tol(dtype))
    out = matmul.gemm(dev(a), dev(b), trans_a=ta, trans_b=tb, tile=tile, bias=dev(bias))
    np.testing.assert_allclose(host(out), ref + bias, **tol(dtype))
    c0 = rng.standard_normal((m, n)).astype(dtype)
    c = dev(c0)
    matmul.gemm(dev(a), dev(b), c, trans_a=ta, trans_b=tb, tile=tile, accumulate=True)
    np.testing.assert_allclose(host(c), c0 + ref, **tol(dtype))


@settings(max_examples=5, deadline=None)
@given(m=st.integers(1, 6), k=st.integers(1, 40), n=st.integers(1, 6), ta=st.booleans(),
       tb=st.booleans(), splits=st.integers(2, 7), accumulate=st.booleans(), seed=st.integers(0, 2**31))
def test_split_k_gemm_matches_numpy(m, k, n, ta, tb, splits, accumulate, seed):
    """K cut into slices (the weight-gradient case), partials reduced in a fixed order."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if ta else (m, k))
    b = rng.standard_normal((n, k) if tb else (k, n))
    ref = (a.T if ta else a) @ (b.T if tb else b)
    c0 = rng.standard_normal((m, n))
    bias = None if accumulate else rng.standard_normal(n)
    c = dev(c0)
    matmul.gemm(dev(a), dev(b), c, trans_a=ta, trans_b=tb, accumulate=accumulate, splits=splits,
                bias=None if bias is None else dev(bias))
    want = c0 + ref if accumulate else ref + bias
    np.testing.assert_allclose(host(c), want, rtol=1e-12, atol=1e-12)
    # the same product twice gives the same bits (no atomics)
    again = matmul.gemm(dev(a), dev(b), trans_a=ta, trans_b=tb, splits=splits)
    np.testing.assert_array_equal(host(again), host(matmul.gemm(dev(a), dev(b), trans_a=ta, trans_b=tb,
                                                                splits=splits)))


def test_gemm_chooses_split_k_for_few_tiles_and_long_k():
    t, r = matmul.TILE
    assert matmul._auto_splits(1, 100 * matmul.SPLIT_K_MIN, t) > 1
    assert matmul._auto_splits(matmul.TARGET_BLOCKS, 100 * matmul.SPLIT_K_MIN, t) == 1
    assert matmul._auto_splits(1, matmul.SPLIT_K_MIN, t) == 1
    rng = np.random.default_rng(21)
    a, b = rng.standard_normal((3, 4 * matmul.SPLIT_K_MIN)), rng.standard_normal((2, 4 * matmul.SPLIT_K_MIN))
    g = dev(np.ones((3, 2)))
    matmul.gemm(dev(a), dev(b), g, trans_b=True, accumulate=True)  # dW += G X^T shape, auto splits
    np.testing.assert_allclose(host(g), 1 + a @ b.T, rtol=1e-12)


def test_gemm_default_tile_crosses_tile_edges():
    t, r = matmul.TILE
    rng = np.random.default_rng(1)
    m, k, n = 2 * t * r + 1, 2 * t + 1, t * r + 3
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    np.testing.assert_allclose(host(matmul.gemm(dev(a), dev(b))), a @ b, rtol=1e-12)


def test_gemm_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="inner sizes"):
        matmul.gemm(dev(np.zeros((2, 3))), dev(np.zeros((4, 2))))


@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (1, 5), (9, 13)])
@pytest.mark.parametrize("axis", [0, 1])
def test_sum_axis_matches_numpy(shape, axis):
    a = np.random.default_rng(2).standard_normal(shape)
    np.testing.assert_allclose(host(matmul.sum_axis(dev(a), axis)), a.sum(axis=axis), rtol=1e-12)
    out = dev(np.ones(a.shape[1 - axis]))
    matmul.sum_axis(dev(a), axis, out=out, accumulate=True)
    np.testing.assert_allclose(host(out), 1 + a.sum(axis=axis), rtol=1e-12)


# ----------------------------------------------------------------------------- layers = cpu
def test_conv2d_awkward_shapes_on_device():
    rng = np.random.default_rng(3)
    for kwargs, shape in [(dict(in_channels=1, out_channels=1, kernel_size=1), (1, 1, 1, 1)),
                          (dict(in_channels=3, out_channels=2, kernel_size=(3, 2), stride=(2, 3),
                                padding=(1, 0)), (1, 3, 5, 4)),
                          (dict(in_channels=2, out_channels=3, kernel_size=5, padding=2), (2, 2, 1, 1))]:
        layer = nn.Conv2d(**kwargs, rng=0).double()
        compare_layer(layer, rng.standard_normal(shape), rng, np.float64)


@pytest.mark.parametrize("kind", ["linear", "conv", "maxpool", "avgpool", "relu", "loss"])
def test_layer_with_backend_cuda_runs_the_cuda_kernels_on_host_arrays(kind, strict_device_arrays):
    """backend="cuda" on NumPy arrays copies them to the GPU and the results back (as
    grid_sample does): host results equal to the cpu layer's, made by device kernels."""
    rng = np.random.default_rng(21)
    make, shape = {
        "linear": (lambda b: nn.Linear(3, 2, rng=0, backend=b), (2, 3)),
        "conv": (lambda b: nn.Conv2d(2, 2, 2, stride=2, padding=1, rng=0, backend=b), (1, 2, 3, 3)),
        "maxpool": (lambda b: nn.MaxPool2d(2, ceil_mode=True, backend=b), (1, 1, 3, 3)),
        "avgpool": (lambda b: nn.AvgPool2d(3, stride=2, padding=1, backend=b), (1, 1, 4, 3)),
        "relu": (lambda b: nn.ReLU(backend=b), (2, 3)),
        "loss": (lambda b: nn.CrossEntropyLoss(backend=b), (2, 3)),
    }[kind]
    x = rng.standard_normal(shape)
    extra = (np.array([2, 0]),) if kind == "loss" else ()
    ref, gpu = make("cpu").double(), make("cuda").double()
    y_ref = ref(x, *extra)
    strict_device_arrays.reset()
    y = gpu(x, *extra)
    assert isinstance(y, (np.ndarray, np.generic)) and not is_device_array(y)
    if strict_device_arrays.active:
        assert strict_device_arrays.to_device > 0 and strict_device_arrays.to_host > 0
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-13)
    g = 1.3 if kind == "loss" else rng.standard_normal(np.shape(y_ref))
    gi_ref, gi = ref.backward(g), gpu.backward(g)
    assert isinstance(gi, np.ndarray)
    np.testing.assert_allclose(gi, gi_ref, rtol=1e-12, atol=1e-13)
    for p, q in zip(gpu.parameters(), ref.parameters()):
        assert isinstance(p.grad, np.ndarray)
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-12, atol=1e-13)


def test_layers_reject_an_unknown_backend_when_built():
    for make in (lambda: nn.Linear(2, 2, backend="gpu"), lambda: nn.ReLU(backend="gpu"),
                 lambda: nn.MaxPool2d(2, backend="gpu"), lambda: nn.AvgPool2d(2, backend="gpu"),
                 lambda: nn.CrossEntropyLoss(backend="gpu"), lambda: nn.Conv2d(1, 1, 1, backend="gpu")):
        with pytest.raises(ValueError, match="unknown backend 'gpu'"):
            make()


def test_conv2d_gradients_accumulate_on_device():
    rng = np.random.default_rng(4)
    layer = nn.Conv2d(2, 3, 3, padding=1, rng=0).double().to("cuda")
    x, g = rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    layer.zero_grad()
    for _ in range(2):
        layer(dev(x))
        layer.backward(dev(g))
    twice = [host(p.grad) for p in layer.parameters()]
    layer.zero_grad()
    layer(dev(x))
    layer.backward(dev(g))
    for a, b in zip(twice, [host(p.grad) for p in layer.parameters()]):
        np.testing.assert_allclose(a, 2 * b, rtol=1e-12)


def test_maxpool_ties_and_nan_follow_the_cpu_kernel():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 2, 2] = np.nan
    layer = nn.MaxPool2d(2, stride=1, ceil_mode=True)
    y = layer(x)
    g = np.arange(1.0, 1.0 + y.size).reshape(y.shape)
    gi = layer.backward(g)
    layer.to("cuda")
    yd = host(layer(dev(x)))
    gid = host(layer.backward(dev(g)))
    np.testing.assert_array_equal(yd, y)  # NaN where the CPU has NaN
    np.testing.assert_array_equal(gid, gi)


@FEW
@given(shape=sn.shapes(min_dims=1, max_dims=4, max_side=4), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31))
def test_relu_and_flatten_on_device_equal_cpu(shape, dtype, seed):
    """Backward covered by equality with the gradient-checked cpu ReLU/Flatten (test_activation.py)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[0] = 0.0  # the sub-gradient at 0
    compare_layer(nn.ReLU(), x, rng, dtype)
    if len(shape) >= 2:
        compare_layer(nn.Flatten(), x, rng, dtype)


def test_dropout_on_device_drops_the_same_elements_as_on_the_cpu():
    """Same seed, same mask on both devices (the mask is drawn on the host)."""
    rng = np.random.default_rng(6)
    x, g = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    a, b = nn.Dropout(0.4, rng=7), nn.Dropout(0.4, rng=7)
    b.to("cuda")
    np.testing.assert_array_equal(host(b(dev(x))), a(x))
    np.testing.assert_array_equal(host(b.backward(dev(g))), a.backward(g))
    b.eval()
    np.testing.assert_array_equal(host(b(dev(x))), x)


@FEW
@given(ll=sn.logits_and_labels(max_batch=5, max_classes=5), reduction=st.sampled_from(["mean", "sum", "none"]),
       labels_on_device=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31))
def test_cross_entropy_on_device_equals_cpu(ll, reduction, labels_on_device, dtype, seed):
    """Backward covered by equality with the gradient-checked cpu loss (test_loss.py)."""
    logits, labels = ll
    logits = logits.astype(dtype)
    rng = np.random.default_rng(seed)
    cpu, gpu = nn.CrossEntropyLoss(reduction), nn.CrossEntropyLoss(reduction)
    grad = rng.standard_normal(len(labels)) if reduction == "none" else 1.7
    loss = cpu(logits, labels)
    dl = cpu.backward(grad)
    dlabels = dev(labels.astype(np.int64)) if labels_on_device else labels
    loss_d = gpu(dev(logits), dlabels)
    if reduction == "none":
        assert is_device_array(loss_d)
    else:
        assert isinstance(loss_d, np.generic) and loss_d.dtype == dtype
    np.testing.assert_allclose(host(loss_d), loss, **tol(dtype))
    dld = gpu.backward(dev(grad.astype(dtype)) if reduction == "none" else grad)
    assert is_device_array(dld)
    np.testing.assert_allclose(host(dld), dl, **tol(dtype))


def test_cross_entropy_on_device_rejects_bad_labels_without_reading_out_of_bounds():
    loss = nn.CrossEntropyLoss()
    logits = dev(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        loss(logits, dev(np.array([0, 4, -1])))


def test_argmax_and_count_correct_follow_numpy():
    z = np.array([[1.0, 3.0, 3.0], [np.nan, 1.0, 2.0], [0.0, 0.0, 0.0], [1.0, np.nan, 5.0], [-1.0, -2.0, -0.5]])
    y = np.array([1, 0, 0, 2, 2])
    np.testing.assert_array_equal(host(kloss.argmax_rows(dev(z))), z.argmax(axis=1))
    assert kloss.count_correct(dev(z), y) == int((z.argmax(axis=1) == y).sum())
    assert kloss.count_correct(dev(z), dev(y)) == int((z.argmax(axis=1) == y).sum())


# ----------------------------------------------------------------------------- gradcheck on device
def _on_device(layer, *extra):
    """(forward, backward) of a device layer as host functions, for gradcheck's function form."""
    def forward(x):
        return host(layer(dev(x), *extra))

    def backward(g, x):
        layer(dev(x), *extra)
        return host(layer.backward(dev(g)))

    return forward, backward


@pytest.mark.parametrize("name", ["linear", "conv", "maxpool", "avgpool", "relu"])
def test_device_layers_pass_gradcheck(name):
    rng = np.random.default_rng(8)
    layer, shape = {
        "linear": (nn.Linear(3, 2, rng=0), (2, 3)),
        "conv": (nn.Conv2d(2, 2, 2, stride=2, padding=1, rng=0), (1, 2, 3, 3)),
        "maxpool": (nn.MaxPool2d(2, ceil_mode=True), (1, 1, 3, 3)),
        "avgpool": (nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True), (1, 1, 4, 3)),
        "relu": (nn.ReLU(), (2, 3)),
    }[name]
    layer.double().to("cuda")
    x = rng.uniform(-2, 2, shape)
    x = np.where(np.abs(x) < 0.1, 0.5, x)  # away from ReLU's kink
    fwd, bwd = _on_device(layer)
    assert gradcheck(fwd, [x], backward=bwd, max_elements=16)


def test_device_cross_entropy_passes_gradcheck():
    rng = np.random.default_rng(9)
    labels = np.array([2, 0])
    loss = nn.CrossEntropyLoss()

    def fwd(z):
        return np.asarray(loss(dev(z), labels))

    def bwd(g, z):
        loss(dev(z), labels)
        return host(loss.backward(float(g)))

    assert gradcheck(fwd, [rng.standard_normal((2, 3))], backward=bwd)


@FEW
@given(ll=sn.logits_and_labels(max_batch=4, max_classes=4), per_row=st.booleans())
def test_kernel_cross_entropy_backward_matches_finite_differences(ll, per_row):
    """kloss.cross_entropy_backward against central differences of kloss.cross_entropy_forward.

    Both of its modes: ``row_scale`` is the vector-Jacobian product of the
    per-row losses (N,) with an arbitrary upstream gradient, ``scale`` that of
    the summed loss with a scalar one. Shapes drawn by Hypothesis, batch 1 and
    a single class included; float64.
    """
    logits, labels = ll

    def forward(z):
        _, losses, _, loss_sum, bad = kloss.cross_entropy_forward(dev(z), labels)
        assert bad == 0
        return host(losses) if per_row else np.asarray(loss_sum)

    def backward(g, z):
        log_p, _, d_labels, _, _ = kloss.cross_entropy_forward(dev(z), labels)
        if per_row:
            return host(kloss.cross_entropy_backward(log_p, d_labels, row_scale=np.asarray(g)))
        return host(kloss.cross_entropy_backward(log_p, d_labels, scale=float(g)))

    assert gradcheck(forward, [logits.astype(np.float64)], backward=backward)


# ----------------------------------------------------------------------------- optimisers
@pytest.mark.parametrize("kwargs", [dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=0.01),
                                    dict(momentum=0.5, dampening=0.3), dict(), dict(weight_decay=0.1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_step_on_device_equals_host(kwargs, dtype):
    rng = np.random.default_rng(10)
    init = [rng.standard_normal(s).astype(dtype) for s in [(3, 2), (5,)]]
    grads = [[rng.standard_normal(a.shape).astype(dtype) for a in init] for _ in range(3)]
    results = []
    for device in ("cpu", "cuda"):
        ps = [nn.Parameter(a.copy()) for a in init]
        ps[1].lr_mult = 0.3
        for p in ps:
            p.to(device)
        opt = nn.SGD(ps, lr=0.1, **kwargs)
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = dev(g) if device == "cuda" else g.copy()
            opt.step()
        if device == "cuda" and kwargs.get("momentum"):
            assert all(is_device_array(b) for b in opt._buf)
        state = opt.state_dict()
        assert all(isinstance(v, (np.ndarray, np.generic)) for v in state.values())
        results.append(([host(p.data) for p in ps], state))
    for a, b in zip(*[r[0] for r in results]):
        np.testing.assert_allclose(b, a, rtol=1e-6 if dtype == np.float32 else 1e-14)
    assert results[0][1].keys() == results[1][1].keys()


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_step_on_device_equals_host(weight_decay):
    rng = np.random.default_rng(11)
    init = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(3)]
    out = []
    for device in ("cpu", "cuda"):
        p = nn.Parameter(init.copy()).to(device)
        opt = nn.Adam([p], lr=0.01, weight_decay=weight_decay)
        for g in grads:
            p.grad = dev(g) if device == "cuda" else g.copy()
            opt.step()
        out.append((host(p.data), opt.state_dict()))
    np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-13)
    for k in out[0][1]:
        np.testing.assert_allclose(out[1][1][k], out[0][1][k], rtol=1e-13)


def test_optimizer_state_follows_its_parameters():
    """SGD buffers made on the host move to the device with the model, and back."""
    m = nn.Linear(3, 2, rng=0).double()
    opt = nn.SGD(m.parameters(), lr=0.1, momentum=0.9)
    x = np.random.default_rng(12).standard_normal((2, 3))
    m(x)
    m.backward(np.ones((2, 2)))
    opt.step()
    assert not any(is_device_array(b) for b in opt._buf)
    m.to("cuda")
    opt.zero_grad()
    m(dev(x))
    m.backward(dev(np.ones((2, 2))))
    opt.step()
    assert all(is_device_array(b) for b in opt._buf)
    state = opt.state_dict()
    m.to("cpu")
    opt.load_state_dict(state)
    assert not any(is_device_array(b) for b in opt._buf)


# ----------------------------------------------------------------------------- Module.to, save/load
def test_module_to_device_round_trip():
    m = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2, rng=1))
    before = m.state_dict()
    assert m.device == "cpu"
    assert m.to("cuda") is m and m.device == "cuda" and m[1].device == "cuda"
    for p in m.parameters():
        assert is_device_array(p.data) and is_device_array(p.grad) and p.device == "cuda"
        assert "device='cuda'" in repr(p)
    sd = m.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert all(np.array_equal(sd[k], before[k]) for k in before)
    m.zero_grad()
    assert all(not host(p.grad).any() for p in m.parameters())
    m.to(np.float64)  # a cast keeps the device
    assert m.device == "cuda" and all(p.data.dtype == np.float64 for p in m.parameters())
    m.cpu()
    assert m.device == "cpu" and all(isinstance(p.data, np.ndarray) for p in m.parameters())
    assert all(np.array_equal(p.data, before[k].astype(np.float64)) for k, p in m.named_parameters())
    m.cuda().to(device="cpu", dtype=np.float32)
    assert m.device == "cpu" and all(p.data.dtype == np.float32 for p in m.parameters())
    with pytest.raises(ValueError, match="unknown device"):
        m.to(device="tpu")


def test_mixing_devices_is_an_actionable_error():
    layer = nn.Linear(3, 2, rng=0)
    with pytest.raises(TypeError, match=r"to\('cuda'\)"):
        layer(dev(np.zeros((1, 3), np.float32)))
    layer.to("cuda")
    with pytest.raises(TypeError, match="to_device"):
        layer(np.zeros((1, 3), np.float32))
    conv = nn.Conv2d(1, 1, 1, rng=0)
    with pytest.raises(TypeError, match=r"to\('cuda'\)"):
        conv(dev(np.zeros((1, 1, 2, 2), np.float32)))


def test_save_and_load_a_device_model(tmp_path):
    m = nn.Sequential(nn.Linear(4, 3, rng=0), nn.ReLU(), nn.Linear(3, 2, rng=1)).to("cuda")
    path = nn.save(m, tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as f:  # a plain NumPy file
        saved = {k: f[k] for k in f.files}
    assert set(saved) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    fresh = nn.Sequential(nn.Linear(4, 3, rng=5), nn.ReLU(), nn.Linear(3, 2, rng=6)).to("cuda")
    fresh.load_state_dict(nn.load(path))
    for k, p in fresh.named_parameters():
        assert is_device_array(p.data)
        np.testing.assert_array_equal(host(p.data), saved[k])
    cpu_model = nn.Sequential(nn.Linear(4, 3, rng=5), nn.ReLU(), nn.Linear(3, 2, rng=6))
    cpu_model.load_state_dict(m.state_dict())
    x = np.random.default_rng(13).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(host(fresh(dev(x))), cpu_model(x), rtol=1e-5, atol=1e-6)
    nn.save({"a": dev(np.arange(3.0))}, tmp_path / "d.npz")  # a dict of device arrays too
    np.testing.assert_array_equal(nn.load(tmp_path / "d.npz")["a"], np.arange(3.0))


# ----------------------------------------------------------------------------- whole training steps
def tiny_st_fcn(seed=0, transform="affine", channels=2, side=6, classes=3):
    """ST-FCN-like: ST (FCN localisation) -> 2x2 average pool -> FCN classifier."""
    nn.init.manual_seed(seed)
    p = {"affine": 6, "attention": 3, "projective": 8, "tps": 8}[transform]
    from npstn.stn.transforms import TPSTransform

    t = TPSTransform(4) if transform == "tps" else transform
    loc = nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, 5), nn.ReLU(), nn.Linear(5, p))
    st_ = SpatialTransformer(loc, t, loc_lr_mult=0.5)
    half = side // 2
    cls = nn.Sequential(nn.Flatten(), nn.Linear(channels * half * half, 4), nn.ReLU(), nn.Linear(4, classes))
    return PaperModel(cls, st_, nn.AvgPool2d(2))


def tiny_st_cnn(seed=0, channels=1, side=7, classes=3):
    """ST-CNN-like: ST (CNN localisation with ceil-mode pools) -> CNN classifier."""
    nn.init.manual_seed(seed)
    loc = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), nn.Conv2d(channels, 2, 3), nn.ReLU(),
                        nn.Flatten(), nn.Linear(2 * 2 * 2, 3), nn.ReLU(), nn.Linear(3, 6))
    st_ = SpatialTransformer(loc, "affine")
    cls = nn.Sequential(nn.Conv2d(channels, 2, 3), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
                        nn.Flatten(), nn.Linear(2 * 3 * 3, classes))
    return PaperModel(cls, st_)


def tiny_cnn(seed=0, channels=1, side=7, classes=3):
    """CNN-like: Conv - ReLU - MaxPool(ceil) - Conv - ReLU - MaxPool(ceil) - Flatten - Linear."""
    nn.init.manual_seed(seed)
    cls = nn.Sequential(nn.Conv2d(channels, 3, 3), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
                        nn.Conv2d(3, 2, 2, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
                        nn.Flatten(), nn.Linear(2 * 2 * 2, classes))
    return PaperModel(cls)


def tiny_fcn(seed=0, channels=1, side=7, classes=3):
    nn.init.manual_seed(seed)
    return PaperModel(nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, 4), nn.ReLU(),
                                    nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, classes)))


def _jiggle(model, seed=14, scale=0.05):
    """Move the ST off the identity (its regression layer starts at zero weights)."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data += (scale * rng.standard_normal(p.data.shape)).astype(p.data.dtype)


def training_steps(model, x, y, device: bool, steps=2, copies=None):
    """Run SGD steps; return (losses, state_dict, last input gradient (host), copies per step)."""
    if device:
        model.to("cuda")
    opt = nn.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    losses, per_step = [], []
    xd, yd = (dev(x), dev(y)) if device else (x, y)
    for _ in range(steps):
        if copies is not None:
            copies.reset()
        logits = model(xd)
        assert is_device_array(logits) == device
        losses.append(float(loss_fn(logits, yd)))
        opt.zero_grad()
        gin = model.backward(loss_fn.backward())
        assert is_device_array(gin) == device
        opt.step()
        if copies is not None and copies.active:
            per_step.append((copies.to_host, copies.to_device))
    return losses, model.state_dict(), host(gin), per_step


@pytest.mark.parametrize("build,shape", [(tiny_st_fcn, (2, 2, 6, 6)), (tiny_cnn, (2, 1, 7, 7))])
def test_training_step_on_device_equals_cpu_float64(build, shape, strict_device_arrays):
    rng = np.random.default_rng(15)
    x, y = rng.standard_normal(shape), np.array([0, 2])
    ref_model, dev_model = build().double(), build().double()
    _jiggle(ref_model)
    _jiggle(dev_model)
    ref = training_steps(ref_model, x, y, device=False)
    got = training_steps(dev_model, x, y, device=True, copies=strict_device_arrays)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-12)
    for k in ref[1]:
        np.testing.assert_allclose(got[1][k], ref[1][k], rtol=1e-12, atol=1e-14, err_msg=k)
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-10, atol=1e-14)
    if got[3]:  # strict simulator mode: after the first step (constants uploaded, buffers
        # made) the loss is the only copy between host and device
        assert got[3][-1] == (1, 0), f"(copies to host, copies to device) per step: {got[3]}"


@pytest.mark.parametrize("build,shape", [(tiny_st_cnn, (2, 1, 7, 7)), (tiny_fcn, (2, 1, 7, 7))])
def test_training_step_on_device_equals_cpu_float32(build, shape):
    rng = np.random.default_rng(16)
    x, y = rng.standard_normal(shape).astype(np.float32), np.array([1, 2])
    ref_model, dev_model = build(), build()
    _jiggle(ref_model)
    _jiggle(dev_model)
    ref = training_steps(ref_model, x, y, device=False)
    got = training_steps(dev_model, x, y, device=True)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5)
    for k in ref[1]:
        np.testing.assert_allclose(got[1][k], ref[1][k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("transform", ["attention", "projective", "tps"])
def test_other_transforms_train_on_device(transform):
    rng = np.random.default_rng(17)
    x, y = rng.standard_normal((1, 2, 6, 6)), np.array([1])
    ref_model, dev_model = tiny_st_fcn(transform=transform).double(), tiny_st_fcn(transform=transform).double()
    _jiggle(ref_model, scale=0.02)
    _jiggle(dev_model, scale=0.02)
    ref = training_steps(ref_model, x, y, device=False, steps=1)
    got = training_steps(dev_model, x, y, device=True, steps=1)
    for k in ref[1]:
        np.testing.assert_allclose(got[1][k], ref[1][k], rtol=1e-10, atol=1e-13, err_msg=k)


def test_spatial_transformer_backward_with_theta_output_on_device():
    """return_theta=True: the extra theta gradient is added on the device."""
    rng = np.random.default_rng(18)
    x = rng.standard_normal((2, 1, 4, 4))
    gv, gt = rng.standard_normal((2, 1, 3, 3)), rng.standard_normal((2, 6))
    outs = []
    for device in (False, True):
        nn.init.manual_seed(3)
        loc = nn.Sequential(nn.Flatten(), nn.Linear(16, 6))
        st_ = SpatialTransformer(loc, "affine", output_size=(3, 3), return_theta=True).double()
        _jiggle(st_)
        if device:
            st_.to("cuda")
        v, theta = st_(dev(x) if device else x)
        gx = st_.backward((dev(gv), dev(gt)) if device else (gv, gt))
        outs.append([host(v), host(theta), host(gx)] + [host(p.grad) for p in st_.parameters()])
    for a, b in zip(*outs):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_parallel_spatial_transformers_on_device_equal_cpu():
    """Two STs side by side (the paper's 2xST-FCN): concatenation and its split on the device."""
    rng = np.random.default_rng(20)
    x, g = rng.standard_normal((2, 1, 4, 4)), rng.standard_normal((2, 2, 3, 3))
    outs = []
    for device in (False, True):
        nn.init.manual_seed(4)
        par = nn.Parallel(*[SpatialTransformer(nn.Sequential(nn.Flatten(), nn.Linear(16, 6)), "affine",
                                               output_size=(3, 3)) for _ in range(2)]).double()
        _jiggle(par)
        if device:
            par.to("cuda")
        y = par(dev(x) if device else x)
        gx = par.backward(dev(g) if device else g)
        assert is_device_array(y) == device and is_device_array(gx) == device
        outs.append([host(y), host(gx)] + [host(p.grad) for p in par.parameters()])
    for a, b in zip(*outs):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- train() with backend="cuda"
class _TinySource:
    """Synthetic 7x7 'digits' of 3 classes: a bright row whose position is the class."""

    def __init__(self, side=7, classes=3):
        self.side, self.classes = side, classes

    def sample_batch(self, batch_size, rng):
        y = rng.integers(0, self.classes, size=batch_size)
        x = (0.1 * rng.standard_normal((batch_size, 1, self.side, self.side))).astype(np.float32)
        for i, k in enumerate(y):
            x[i, 0, 1 + 2 * k, :] += 1.0
        return x, y.astype(np.int64)


@pytest.fixture
def tiny_models(monkeypatch):
    """Make train() build 7x7 models (the paper's 28x28+ are too big for the simulator)."""
    builders = {"cnn": tiny_cnn, "st-cnn": tiny_st_cnn, "fcn": tiny_fcn}

    def build(name, transform="affine", distortion="r", *, width=None, loc_lr_mult=None, seed=None, **kw):
        return builders[name](seed=seed or 0)

    monkeypatch.setattr(T.loop, "build_model", build)


def _test_data():
    rng = np.random.default_rng(19)
    return _TinySource().sample_batch(5, rng)


@pytest.mark.parametrize("model", ["cnn", "st-cnn"])
def test_train_with_cuda_backend_runs_and_resumes(tiny_models, tmp_path, model):
    cfg = dict(model=model, distortion="r", steps=4, batch_size=2, eval_every=4, checkpoint_every=2,
               log_every=1, eval_batch_size=3, backend="cuda")
    full = T.train(T.TrainConfig(**cfg, out=str(tmp_path / "full")), progress=False,
                   data=(_TinySource(), _test_data()))
    assert full["steps"] == 4 and 0 <= full["test_error_percent"] <= 100 and full["backend"] == "cuda"
    rows = T.read_log(tmp_path / "full" / "log.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and 0 <= r["train_accuracy"] <= 1 for r in rows)
    with np.load(tmp_path / "full" / "checkpoint.npz", allow_pickle=False) as f:  # host arrays
        assert any(k.startswith("optim/momentum_buffer") for k in f.files)

    # the same run, interrupted after step 2 (crash while drawing batch 3), then resumed
    out = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        T.train(T.TrainConfig(**cfg, out=out), progress=False,
                data=(_CrashAfter(_TinySource(), 3), _test_data()))
    resumed = T.train(T.TrainConfig(**cfg, out=out), resume=True, progress=False,
                      data=(_TinySource(), _test_data()))
    a, b = nn.load(tmp_path / "full" / "model.npz"), nn.load(tmp_path / "resumed" / "model.npz")
    for k in a:
        if model == "cnn":  # no atomics anywhere: bit-identical
            np.testing.assert_array_equal(b[k], a[k], err_msg=k)
        else:  # the sampler's backward adds with atomics: equal up to summation order
            np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-6, err_msg=k)
    assert resumed["test_error_percent"] == pytest.approx(full["test_error_percent"])


def test_evaluate_on_device_equals_cpu(tiny_models):
    x, y = _test_data()
    cpu_model = tiny_cnn(seed=3)
    gpu_model = tiny_cnn(seed=3).to("cuda")
    assert T.evaluate(gpu_model, x, y, batch_size=2) == T.evaluate(cpu_model, x, y, batch_size=2)
    assert gpu_model.training and gpu_model.device == "cuda"


# ----------------------------------------------------------------------------- compiled for a real GPU
def test_kernels_compile_for_a_real_gpu():
    """The simulator runs kernels as Python, so it cannot catch typing errors; compile every
    kernel of a training step (the new ones and the spatial transformer's) to PTX for sm_90,
    float32 and float64, with NVVM when it is installed (no GPU needed; `make venv-cuda`)."""
    import os
    import subprocess

    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    here = os.path.dirname(__file__)
    script = os.path.join(here, "cuda_compile_check.py")
    # numba-cuda with NVVM: NPSTN_CUDA_PYTHON, else the venv `make venv-cuda` built (its stamp is written
    # only after a complete install), else this Python
    venv = os.path.join(here, "..", ".venv-cuda")
    python = os.environ.get("NPSTN_CUDA_PYTHON")
    if not python and os.path.exists(os.path.join(venv, ".installed")):
        python = os.path.join(venv, "bin", "python")
    python = python or sys.executable
    proc = subprocess.run([python, script], env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip() or "NVVM is not available")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bench_train_step_on_device_is_the_training_step():
    """`npstn bench train --backends cuda` times the step training runs: the model and the batches on
    the device (not host arrays copied per op), the same losses as the host step."""
    from npstn.bench.train import _npstn_step

    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 2, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=4).astype(np.int64)
    losses, st_times = {}, {}
    for on_device in (False, True):
        model = tiny_st_fcn()
        _jiggle(model)
        st_times[on_device] = []
        step = _npstn_step(model, [(x, y)], 0.9, st_times[on_device], on_device=on_device)
        losses[on_device] = [step() for _ in range(3)]
        assert getattr(model, "device", "cpu") == ("cuda" if on_device else "cpu")
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)
    assert losses[True][-1] < losses[True][0]
    assert len(st_times[True]) == 3 and all(t > 0 for t in st_times[True])
