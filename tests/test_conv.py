"""Conv2d: gradients vs finite differences, agreement with torch, the im2col
kernels vs their NumPy reference, dtypes, and validation errors."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from npstn.kernels.cpu import im2col as k
from npstn.nn import Conv2d, Sequential
from npstn.testing import gradcheck
from npstn.testing.strategies import conv_configs, float_arrays

BACKENDS = ["numpy", "cpu"]


def make(cfg, backend="cpu", dtype=np.float64, seed=0):
    return Conv2d(**cfg.kwargs(), rng=seed, backend=backend).to(dtype)


def kernel_args(cfg):
    (kh, kw), (sh, sw), (ph, pw) = cfg.kernel_hw, cfg.stride_hw, cfg.padding_hw
    return kh, kw, sh, sw, ph, pw


# ---------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@given(cfg=conv_configs(), seed=st.integers(0, 2**31 - 1))
def test_gradcheck_input_weight_bias(backend, cfg, seed):
    conv = make(cfg, backend, seed=seed)
    x = np.random.default_rng(seed).uniform(-2, 2, cfg.input_shape)
    gradcheck(conv, x, seed=seed)  # input, weight and (if any) bias, float64


@given(cfg=conv_configs())
def test_gradients_accumulate(cfg):
    conv = make(cfg)
    x = np.random.default_rng(1).standard_normal(cfg.input_shape)
    g = np.random.default_rng(2).standard_normal(cfg.output_shape)
    conv(x)
    gx1 = conv.backward(g)
    w1 = conv.weight.grad.copy()
    b1 = None if conv.bias is None else conv.bias.grad.copy()
    conv(x)
    gx2 = conv.backward(g)
    np.testing.assert_allclose(gx2, gx1, rtol=1e-12, atol=1e-12)  # input grad is returned, not summed
    np.testing.assert_allclose(conv.weight.grad, 2 * w1, rtol=1e-12, atol=1e-12)
    if b1 is not None:
        np.testing.assert_allclose(conv.bias.grad, 2 * b1, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# torch as the reference
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@given(cfg=conv_configs(max_batch=4, max_channels=4, max_kernel=5, max_hw=9),
       seed=st.integers(0, 2**31 - 1))
def test_forward_backward_match_torch(backend, cfg, seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    conv = make(cfg, backend, seed=seed)
    x = rng.standard_normal(cfg.input_shape)
    y = conv(x)
    assert y.shape == cfg.output_shape
    g = rng.standard_normal(y.shape)
    gx = conv.backward(g)

    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(conv.weight.data, requires_grad=True)
    bt = None if conv.bias is None else torch.tensor(conv.bias.data, requires_grad=True)
    yt = F.conv2d(xt, wt, bt, stride=cfg.stride_hw, padding=cfg.padding_hw)
    yt.backward(torch.tensor(g))

    assert tuple(yt.shape) == y.shape
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(conv.weight.grad, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    if bt is not None:
        np.testing.assert_allclose(conv.bias.grad, bt.grad.numpy(), rtol=1e-10, atol=1e-10)


@given(cfg=conv_configs())
def test_output_shape_formula(cfg):
    n, _, h, w = cfg.input_shape
    (kh, kw), (sh, sw), (ph, pw) = cfg.kernel_hw, cfg.stride_hw, cfg.padding_hw
    want = (n, cfg.out_channels, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
    conv = make(cfg)
    assert conv.output_shape(cfg.input_shape) == want
    assert conv(np.zeros(cfg.input_shape)).shape == want


def test_init_matches_torch_default():
    conv = Conv2d(3, 8, (5, 3), rng=0)
    bound = 1 / np.sqrt(3 * 5 * 3)
    assert conv.weight.shape == (8, 3, 5, 3) and conv.bias.shape == (8,)
    assert conv.weight.dtype == np.float32 and conv.bias.dtype == np.float32
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.bias.data).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.8 * bound  # uses the range, not a sliver of it
    # reproducible from a seed, and weight and bias are independent draws
    again = Conv2d(3, 8, (5, 3), rng=0)
    np.testing.assert_array_equal(conv.weight.data, again.weight.data)
    assert not np.allclose(conv.bias.data, conv.weight.data.reshape(-1)[:8])
    nobias = Conv2d(3, 8, 5, bias=False)
    assert nobias.bias is None
    assert list(nobias.state_dict()) == ["weight"]
    assert list(Sequential(conv).state_dict()) == ["0.weight", "0.bias"]


def test_repr():
    assert repr(Conv2d(1, 32, 9)) == "Conv2d(1, 32, kernel_size=(9, 9), stride=(1, 1))"
    assert repr(Conv2d(2, 4, (3, 1), 2, (1, 0), bias=False)) == (
        "Conv2d(2, 4, kernel_size=(3, 1), stride=(2, 2), padding=(1, 0), bias=False)"
    )


# ---------------------------------------------------------------------------
# dtypes and layouts
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@given(cfg=conv_configs())
def test_float32_in_float32_out(backend, cfg):
    x64 = np.random.default_rng(0).standard_normal(cfg.input_shape)
    g64 = np.random.default_rng(1).standard_normal(cfg.output_shape)
    conv32, conv64 = make(cfg, backend, np.float32), make(cfg, backend, np.float64)
    y32, y64 = conv32(x64.astype(np.float32)), conv64(x64)
    gx32, gx64 = conv32.backward(g64.astype(np.float32)), conv64.backward(g64)
    assert y32.dtype == gx32.dtype == conv32.weight.grad.dtype == np.float32
    if conv32.bias is not None:
        assert conv32.bias.grad.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gx32, gx64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(conv32.weight.grad, conv64.weight.grad, rtol=1e-4, atol=1e-4)


def test_non_contiguous_input():
    rng = np.random.default_rng(0)
    conv = Conv2d(3, 2, (2, 3), stride=(1, 2), padding=1, rng=0).double()
    x = rng.standard_normal((5, 4, 3, 2)).transpose(3, 2, 0, 1)  # (2, 3, 5, 4), not contiguous
    y = conv(x)
    gx = conv.backward(np.ones_like(y))
    y_ref = conv(np.ascontiguousarray(x))
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(gx.shape, x.shape)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    conv = Conv2d(2, 3, 3, padding=1, rng=0, backend=backend).double()
    y = conv(np.zeros((0, 2, 4, 5)))
    assert y.shape == (0, 3, 4, 5)  # as torch
    assert conv.backward(np.zeros(y.shape)).shape == (0, 2, 4, 5)
    assert not conv.weight.grad.any() and not conv.bias.grad.any()


def test_workspace_reused_and_shape_changes():
    conv = Conv2d(2, 3, 3, padding=1, rng=0).double()
    rng = np.random.default_rng(0)
    for shape in [(2, 2, 5, 5), (2, 2, 5, 5), (1, 2, 4, 6), (2, 2, 5, 5)]:
        x = rng.standard_normal(shape)
        ref = Conv2d(2, 3, 3, padding=1, backend="numpy").double()
        ref.load_state_dict(conv.state_dict())
        g = rng.standard_normal(conv.output_shape(shape))
        y, y_ref = conv(x), ref(x)
        np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(conv.backward(g), ref.backward(g), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# kernels vs the NumPy reference
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(cfg=conv_configs(max_batch=4, max_channels=4, max_kernel=5, max_hw=9), seed=st.integers(0, 2**31 - 1))
def test_kernels_match_numpy_reference(dtype, cfg, seed):
    rng = np.random.default_rng(seed)
    args = kernel_args(cfg)
    x = rng.standard_normal(cfg.input_shape).astype(dtype)
    cols = k.im2col(x, *args)
    cols_ref = k.im2col_numpy(x, *args)
    assert cols.dtype == dtype and cols.shape == cols_ref.shape
    np.testing.assert_array_equal(cols, cols_ref)  # a pure copy: exact

    # into a dirty reused buffer: every element is overwritten (padding included)
    buf = np.full_like(cols, np.nan)
    assert k.im2col(x, *args, out=buf) is buf
    np.testing.assert_array_equal(buf, cols_ref)

    g = rng.standard_normal(cols.shape).astype(dtype)
    gx = k.col2im(g, x.shape, *args)
    gx_ref = k.col2im_numpy(g, x.shape, *args)
    assert gx.dtype == dtype and gx.shape == x.shape
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(gx, gx_ref, rtol=tol, atol=tol)

    # col2im is the adjoint of im2col: <im2col(x), g> == <x, col2im(g)>
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    lhs = np.sum(k.im2col(x64, *args) * g64)
    rhs = np.sum(x64 * k.col2im(g64, x.shape, *args))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)

    n, o = cfg.input_shape[0], cfg.out_channels
    y = rng.standard_normal((o, n * 5)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    np.testing.assert_array_equal(k.cols_to_nchw(y, b, n), k.cols_to_nchw_numpy(y, b, n))
    np.testing.assert_array_equal(k.cols_to_nchw(y, None, n), k.cols_to_nchw_numpy(y, None, n))
    g3 = rng.standard_normal((n, o, 5)).astype(dtype)
    np.testing.assert_array_equal(k.nchw_to_cols(g3), k.nchw_to_cols_numpy(g3))


@given(x=float_arrays(shape=(1, 1, 3, 4)))
def test_im2col_by_hand(x):
    # 2x2 kernel, stride 2, padding 1 on a 3x4 image: output 2x3, each column a 2x2 window
    cols = k.im2col(x, 2, 2, 2, 2, 1, 1)
    xp = np.pad(x[0, 0], 1)
    want = np.array([[xp[2 * oy + i, 2 * ox + j] for oy in range(2) for ox in range(3)]
                     for i in range(2) for j in range(2)])
    np.testing.assert_array_equal(cols, want)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(kernel_size=3, stride=0), ValueError, r"stride must be positive, got \(0, 0\)"),
        (dict(kernel_size=3, stride=(1, -2)), ValueError, r"stride must be positive, got \(1, -2\)"),
        (dict(kernel_size=3, padding=-1), ValueError, r"padding must be non-negative, got \(-1, -1\)"),
        (dict(kernel_size=0), ValueError, r"kernel_size must be positive"),
        (dict(kernel_size=(3, 3, 3)), TypeError, r"kernel_size must be an int or a pair"),
        (dict(kernel_size=2.5), TypeError, r"kernel_size must be an int or a pair"),
        (dict(kernel_size=3, stride=True), TypeError, r"stride must be an int or a pair"),
        (dict(kernel_size=3, backend="gpu"), ValueError, r"unknown backend 'gpu'"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Conv2d(2, 3, **kwargs)


@pytest.mark.parametrize(
    "args, exc, match",
    [
        ((0, 3, 3), ValueError, r"in_channels must be a positive int, got 0"),
        ((2, -1, 3), ValueError, r"out_channels must be a positive int, got -1"),
        ((2.0, 3, 3), TypeError, r"in_channels must be an int"),
    ],
)
def test_bad_channels(args, exc, match):
    with pytest.raises(exc, match=match):
        Conv2d(*args)


@pytest.mark.parametrize(
    "x, exc, match",
    [
        (np.zeros((2, 5, 5)), ValueError,
         r"input must have 4 dimensions \(N, C, H, W\), got shape \(2, 5, 5\)"),
        (np.zeros((1, 2, 3, 5, 5)), ValueError, r"got shape \(1, 2, 3, 5, 5\)"),
        (np.zeros((1, 3, 5, 5)), ValueError,
         r"input has 3 channels \(shape \(1, 3, 5, 5\)\) but in_channels=2; "
         r"expected shape \(N, 2, H, W\)"),
        (np.zeros((1, 2, 5, 5), dtype=np.int64), TypeError, r"input must be float32 or float64, got dtype int64"),
        (np.zeros((1, 2, 5, 5), dtype=np.float32), TypeError,
         r"input has dtype float32 but Conv2d.weight has dtype float64"),
        (np.zeros((1, 2, 2, 5)), ValueError,
         r"kernel_size \(3, 3\) is larger than the padded input \(2, 5\) "
         r"\(input shape \(1, 2, 2, 5\), padding \(0, 0\)\)"),
        ([[[[0.0]]]], TypeError, r"input must be an array, got list"),
    ],
)
def test_bad_input(x, exc, match):
    conv = Conv2d(2, 4, 3).double()
    with pytest.raises(exc, match=match):
        conv(x)


def test_kernel_larger_than_padded_input_names_padding():
    conv = Conv2d(1, 1, (4, 7), padding=(1, 2))
    with pytest.raises(ValueError, match=r"kernel_size \(4, 7\) is larger than the padded input "
                                         r"\(4, 6\) \(input shape \(1, 1, 2, 2\), padding \(1, 2\)\)"):
        conv(np.zeros((1, 1, 2, 2), np.float32))
    assert conv(np.zeros((1, 1, 2, 3), np.float32)).shape == (1, 1, 1, 1)  # exactly fits


def test_backward_errors():
    conv = Conv2d(2, 4, 3).double()
    with pytest.raises(RuntimeError, match="backward called before forward"):
        conv.backward(np.zeros((1, 4, 3, 3)))
    y = conv(np.zeros((1, 2, 5, 5)))
    with pytest.raises(ValueError, match=r"grad_out has shape \(1, 4, 3, 2\) but the forward output "
                                         r"had shape \(1, 4, 3, 3\)"):
        conv.backward(np.zeros((1, 4, 3, 2)))
    with pytest.raises(TypeError, match="grad_out has dtype float32 but Conv2d.weight has dtype float64"):
        conv.backward(np.zeros(y.shape, np.float32))
    conv.backward(np.zeros(y.shape))
    with pytest.raises(RuntimeError, match="call forward again"):
        conv.backward(np.zeros(y.shape))


# ---------------------------------------------------------------------------
# the cpu backend's chunked products
# ---------------------------------------------------------------------------

def _conv_case(dtype, n=7, c=3, h=9, o=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, h)).astype(dtype)
    w = rng.standard_normal((o, c, k, k)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1)])
def test_chunked_results_do_not_depend_on_the_chunk_size(monkeypatch, stride, padding):
    import npstn.functional as F
    import npstn.functional.conv as fconv

    monkeypatch.setattr(fconv, "GRAIN_COLUMNS", 20)  # grains of a few images: many grains, chunks
    monkeypatch.setattr(fconv, "GRAIN_VALUES", 1)
    for dtype in (np.float64, np.float32):
        x, w, b = _conv_case(dtype)
        y_ref = F.conv2d(x, w, b, stride, padding, backend="numpy")
        g = np.random.default_rng(1).standard_normal(y_ref.shape).astype(dtype)
        grads_ref = F.conv2d_backward(g, x, w, b, stride, padding, backend="numpy")
        runs = []
        for chunk_size, keep in ((None, False), (1, False), (2, True), (3, False), (5, True),
                                 (100, False), (100, True)):
            ws = fconv.ConvWorkspace(keep_columns=keep)  # kept columns or recomputed: the same
            y = F.conv2d(x, w, b, stride, padding, backend="cpu", chunk_size=chunk_size, workspace=ws)
            grads = F.conv2d_backward(g, x, w, b, stride, padding, backend="cpu", chunk_size=chunk_size,
                                      workspace=ws)
            runs.append((y, *grads))
        for other in runs[1:]:
            for a, ref in zip(other, runs[0]):
                if dtype == np.float64:  # bit for bit: the grains, not the chunks, fix every sum
                    np.testing.assert_array_equal(a, ref)
                else:
                    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-5)
        tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
        for a, ref in zip(runs[0], (y_ref, *grads_ref)):
            np.testing.assert_allclose(a, ref, **tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_input_grad_keeps_weight_and_bias_gradients(backend):
    import npstn.functional as F

    x, w, b = _conv_case(np.float64, n=3)
    g = np.random.default_rng(2).standard_normal(F.conv2d(x, w, b, backend=backend).shape)
    full = F.conv2d_backward(g, x, w, b, backend=backend)
    gx, gw, gb = F.conv2d_backward(g, x, w, b, backend=backend, needs_input_grad=False)
    assert gx is None
    np.testing.assert_array_equal(gw, full[1])
    np.testing.assert_array_equal(gb, full[2])
    # the layer: backward returns None, the parameters' gradients are those of the full backward
    conv = Conv2d(3, 4, 3, rng=0, backend=backend).double()
    ref = Conv2d(3, 4, 3, rng=0, backend=backend).double()
    conv.needs_input_grad = False
    conv(x)
    ref(x)
    assert conv.backward(g) is None and ref.backward(g) is not None
    np.testing.assert_array_equal(conv.weight.grad, ref.weight.grad)
    np.testing.assert_array_equal(conv.bias.grad, ref.bias.grad)


def test_cnn_needs_input_grad_flag():
    from npstn.models import build_model

    model = build_model("cnn", "affine", None, input_size=24, width=4, seed=0).double()
    x = np.random.default_rng(0).random((2, 1, 24, 24))
    g = np.random.default_rng(1).standard_normal((2, 10))
    model(x)
    assert model.backward(g).shape == x.shape
    grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    model.needs_input_grad = False
    assert not model.needs_input_grad and not model.classifier[0].needs_input_grad
    model(x)
    assert model.backward(g) is None
    for p, ref in zip(model.parameters(), grads):
        np.testing.assert_array_equal(p.grad, ref)
