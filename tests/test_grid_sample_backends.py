"""Every backend of the sampler agrees with the NumPy specification, and obeys the hostile-input policy.

The cuda backend runs on a GPU when there is one and in Numba's CUDA
simulator otherwise (tests/conftest.py), which is slow: its tests use tiny
shapes and few examples.

Tolerances (relative to the data's scale, max(1, max |reference|)):
float64 1e-12, float32 1e-5.
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npstn
from npstn.functional import grid_sample, grid_sample_backward
from npstn.testing import strategies as nst

TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}

TINY = nst.sampler_configs(max_batch=2, max_channels=2, max_side=4, max_out_side=3)


def agree(actual, expected, what=""):
    expected = np.asarray(expected)
    tol = TOL[expected.dtype]
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    assert np.asarray(actual).dtype == expected.dtype, what
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected.astype(np.float64),
                               rtol=tol, atol=tol * scale, err_msg=what)


def check_against_numpy(case, backend):
    kw = case.kwargs
    ref_out = grid_sample(case.input, case.grid, backend="numpy", **kw)
    ref_gi, ref_gg = grid_sample_backward(case.grad_output, case.input, case.grid, backend="numpy", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # float32 overflow inside the simulator
        out = grid_sample(case.input, case.grid, backend=backend, **kw)
        gi, gg = grid_sample_backward(case.grad_output, case.input, case.grid, backend=backend, **kw)
    assert isinstance(out, np.ndarray) and isinstance(gi, np.ndarray) and isinstance(gg, np.ndarray)
    agree(out, ref_out, f"{backend} output")
    agree(gi, ref_gi, f"{backend} grad_input")
    agree(gg, ref_gg, f"{backend} grad_grid")
    check_grid_only(case, backend, gg)
    check_grid_only(case, "numpy", ref_gg)
    return out, gi, gg


def check_grid_only(case, backend, full_grad_grid):
    """needs_input_grad=False: no grad_input, and the backend's grad_grid bit for bit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        gi, gg = grid_sample_backward(case.grad_output, case.input, case.grid, backend=backend,
                                      needs_input_grad=False, **case.kwargs)
    assert gi is None
    np.testing.assert_array_equal(gg, full_grad_grid, err_msg=f"{backend} grad_grid without grad_input")


# ----------------------------------------------------------------------------
# cpu
# ----------------------------------------------------------------------------

@given(nst.grid_sample_cases(dtype=nst.dtypes()))
def test_cpu_matches_numpy(case):
    check_against_numpy(case, "cpu")


@settings(max_examples=20)
@given(nst.grid_sample_cases(dtype=nst.dtypes(), grids="on_kinks"))
def test_cpu_matches_numpy_on_kinks(case):
    """Same sub-gradients as the specification at exact integer / half-integer positions."""
    check_against_numpy(case, "cpu")


@pytest.mark.parametrize("shape,out_hw", [((1, 1, 9, 11), (13, 10)), ((7, 3, 6, 5), (4, 9)), ((2, 17, 5, 5), (3, 3))])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("split", [None, False, True], ids=["auto", "by-image", "split"])
def test_cpu_parallel_backward_is_race_free(shape, out_hw, mode, split):
    """Many points hit the same pixels (strong down-/upsampling); neither strategy may race."""
    from npstn.kernels.cpu import grid_sample as cpu_kernels

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    g = rng.uniform(-1.2, 1.2, (shape[0], *out_hw, 2))
    g[0, 0, 0] = np.nan
    go = rng.standard_normal((*shape[:2], *out_hw))
    for padding_mode in ("zeros", "border", "reflection"):
        kw = dict(mode=mode, padding_mode=padding_mode, align_corners=False)
        ref = grid_sample_backward(go, x, g, backend="numpy", **kw)
        for _ in range(3):
            got = cpu_kernels.backward(go, x, g, split=split, **kw)
            agree(got[0], ref[0], "grad_input")
            agree(got[1], ref[1], "grad_grid")
            none, gg = cpu_kernels.backward(go, x, g, needs_input_grad=False, parallel=True, tile_points=16, **kw)
            assert none is None
            np.testing.assert_array_equal(gg, got[1], err_msg="grad_grid without grad_input, parallel")


@pytest.mark.parametrize("backend", ["cpu", "cuda"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_near_integer_coordinates_take_the_specifications_side(backend, align_corners):
    """A float32 identity grid puts x^s within a rounding error of the integers, on either side.

    The kernels unnormalise in float32 in the specification's order, so they
    pick the same neighbours and the same one-sided gradient at every point.
    """
    n, c, h, w = 2, 2, 5, 11
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    px, py = np.meshgrid(np.arange(w) * 1.0, np.arange(h) * 1.0)
    g1 = np.stack([nst.pixel_to_normalized(px, w, align_corners),
                   nst.pixel_to_normalized(py, h, align_corners)], axis=-1)
    g = np.broadcast_to(g1 * np.float32(0.999) + np.float32(0.0007), (n, h, w, 2)).astype(np.float32)
    g = np.concatenate([g, np.broadcast_to(g1, (n, h, w, 2)).astype(np.float32)], axis=1)
    go = rng.standard_normal((n, c, 2 * h, w)).astype(np.float32)
    kw = dict(mode="bilinear", padding_mode="border", align_corners=align_corners)
    p32 = (g[..., 0] + np.float32(1)) * np.float32(w / 2 if not align_corners else (w - 1) / 2)
    assert np.any(np.floor(p32) != np.round(p32)), "the grid should straddle some integers"
    ref = grid_sample_backward(go, x, g, backend="numpy", **kw)
    got = grid_sample_backward(go, x, g, backend=backend, **kw)
    agree(got[0], ref[0], "grad_input")
    agree(got[1], ref[1], "grad_grid")


@pytest.mark.parametrize("volume", [False, True], ids=["image", "volume"])
def test_cpu_accepts_read_only_arrays(volume):
    """Data may be read-only (a memory map, np.broadcast_to): no kernel may type it as writable,
    in any backward strategy (the split's pass 1 and the backward without grad_input once did)."""
    from npstn.kernels.cpu import grid_sample as cpu_kernels

    rng = np.random.default_rng(2)
    shape, gshape = ((2, 3, 4, 5, 6), (2, 3, 3, 4, 3)) if volume else ((3, 2, 5, 6), (3, 4, 4, 2))
    x, g = rng.standard_normal(shape), rng.uniform(-1.1, 1.1, gshape)
    go = rng.standard_normal((*shape[:2], *gshape[1:-1]))
    for a in (x, g, go):
        a.setflags(write=False)
    ref_gi, ref_gg = grid_sample_backward(go, x, g, backend="numpy")
    agree(grid_sample(x, g, backend="cpu"), grid_sample(x, g, backend="numpy"))
    for needs in (True, False):
        gi, gg = grid_sample_backward(go, x, g, backend="cpu", needs_input_grad=needs)
        agree(gg, ref_gg, f"grad_grid, needs_input_grad={needs}")
        assert (gi is None) if not needs else agree(gi, ref_gi) is None
    if not volume:
        for split in (False, True):
            gi, gg = cpu_kernels.backward(go, x, g, "bilinear", "zeros", False, split=split)
            agree(gi, ref_gi, f"split={split}")
            agree(gg, ref_gg, f"split={split}")


def test_cpu_accepts_non_contiguous_arrays():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5, 6)).transpose(0, 1, 3, 2)  # (2, 3, 6, 5), not C-contiguous
    g = rng.uniform(-1, 1, (2, 4, 4, 2))[:, ::-1]
    go = rng.standard_normal((2, 3, 4, 4))[..., ::-1]
    agree(grid_sample(x, g, backend="cpu"), grid_sample(x, g, backend="numpy"))
    for a, b in zip(grid_sample_backward(go, x, g, backend="cpu"), grid_sample_backward(go, x, g, backend="numpy")):
        agree(a, b)


def test_default_backend_is_used(monkeypatch):
    monkeypatch.setattr(npstn._backend, "_current", None)
    monkeypatch.setenv("NPSTN_BACKEND", "numpy")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 1, 3, 3))
    g = rng.uniform(-1, 1, (1, 2, 2, 2))
    agree(grid_sample(x, g), grid_sample(x, g, backend="numpy"))
    assert npstn.get_backend() == "numpy"


# ----------------------------------------------------------------------------
# cuda (simulator without a GPU)
# ----------------------------------------------------------------------------

@settings(max_examples=8)
@given(nst.grid_sample_cases(dtype=nst.dtypes(), configs=TINY))
def test_cuda_matches_numpy(case):
    check_against_numpy(case, "cuda")


@settings(max_examples=4)
@given(nst.grid_sample_cases(dtype=nst.dtypes(), configs=TINY, grids="on_kinks"))
def test_cuda_matches_numpy_on_kinks(case):
    check_against_numpy(case, "cuda")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_device_arrays_stay_on_the_device(dtype):
    from numba import cuda

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 3, 4)).astype(dtype)
    g = rng.uniform(-1.2, 1.2, (2, 2, 3, 2)).astype(dtype)
    go = rng.standard_normal((2, 2, 2, 3)).astype(dtype)
    kw = dict(mode="bilinear", padding_mode="border", align_corners=True)
    d_x, d_g, d_go = cuda.to_device(x), cuda.to_device(g), cuda.to_device(go)

    out = grid_sample(d_x, d_g, backend="cuda", **kw)
    assert cuda.devicearray.is_cuda_ndarray(out) and not isinstance(out, np.ndarray)
    agree(out.copy_to_host(), grid_sample(x, g, backend="numpy", **kw))

    gi, gg = grid_sample_backward(d_go, d_x, d_g, backend="cuda", **kw)
    assert cuda.devicearray.is_cuda_ndarray(gi) and cuda.devicearray.is_cuda_ndarray(gg)
    ref_gi, ref_gg = grid_sample_backward(go, x, g, backend="numpy", **kw)
    agree(gi.copy_to_host(), ref_gi)
    agree(gg.copy_to_host(), ref_gg)

    # one device argument is enough to keep the result on the device
    out_mixed = grid_sample(x, d_g, backend="cuda", **kw)
    assert cuda.devicearray.is_cuda_ndarray(out_mixed)


def test_device_arrays_choose_the_cuda_backend():
    """backend=None: a device argument means "cuda" (resolve_backend), for the sampler and the grids."""
    import npstn.functional as F
    from numba import cuda

    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 2, 3, 4))
    theta = (np.eye(2, 3) + rng.uniform(-0.2, 0.2, (1, 2, 3)))
    size = (1, 2, 2, 3)
    d_grid = F.affine_grid(cuda.to_device(theta), size)
    assert cuda.devicearray.is_cuda_ndarray(d_grid)
    grid = F.affine_grid(theta, size, backend="numpy")
    out = grid_sample(x, d_grid)
    assert cuda.devicearray.is_cuda_ndarray(out)
    agree(out.copy_to_host(), grid_sample(x, grid, backend="numpy"))
    go = rng.standard_normal(out.shape)
    d_gi, d_gg = grid_sample_backward(cuda.to_device(go), x, grid)
    assert cuda.devicearray.is_cuda_ndarray(d_gi) and cuda.devicearray.is_cuda_ndarray(d_gg)
    gi, gg = grid_sample_backward(go, x, grid, backend="numpy")
    agree(d_gi.copy_to_host(), gi)
    agree(d_gg.copy_to_host(), gg)
    d_gt = F.affine_grid_backward(d_gg, cuda.to_device(theta), size)
    assert cuda.devicearray.is_cuda_ndarray(d_gt)
    agree(d_gt.copy_to_host(), F.affine_grid_backward(gg, theta, size, backend="numpy"))


def test_device_array_with_a_host_backend_is_a_clear_error():
    from numba import cuda

    d_x = cuda.to_device(np.zeros((1, 1, 2, 2)))
    with pytest.raises(TypeError, match=r"input is a CUDA device array but backend='cpu'"):
        grid_sample(d_x, np.zeros((1, 2, 2, 2)), backend="cpu")


# ----------------------------------------------------------------------------
# Hostile grids: NaN / inf sample 0 with zero gradient; huge values follow the padding
# ----------------------------------------------------------------------------

def check_hostile(case, backend):
    x, g, go = case.input, case.grid, case.grad_output
    kw = case.kwargs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = grid_sample(x, g, backend=backend, **kw)
        gi, gg = grid_sample_backward(go, x, g, backend=backend, **kw)
    for name, a in (("output", out), ("grad_input", gi), ("grad_grid", gg)):
        assert np.all(np.isfinite(a)), f"{backend}: {name} has non-finite values"

    bad = ~np.isfinite(g).all(axis=-1)  # (N, H_out, W_out)
    assert np.all(out.transpose(0, 2, 3, 1)[bad] == 0), "NaN/inf points must sample 0"
    assert np.all(gg[bad] == 0), "NaN/inf points must get zero gradient"
    # they add nothing to grad_input: the gradient equals that of the other points alone
    go_clean = go * ~bad[:, None]
    gi_clean, _ = grid_sample_backward(go_clean, x, np.where(bad[..., None], 0, g).astype(g.dtype),
                                       backend="numpy", **kw)
    agree(gi, gi_clean, "grad_input without the NaN/inf points")

    # huge finite coordinates follow the padding mode (unless align_corners=True on a side of
    # one pixel, where every coordinate maps to that pixel's centre)
    h_in, w_in = x.shape[2:]
    far = np.abs(g) >= 1e29
    if kw["align_corners"]:
        far &= np.array([w_in > 1, h_in > 1])
    huge = np.isfinite(g).all(axis=-1) & far.any(axis=-1)
    vals = out.transpose(0, 2, 3, 1)  # (N, H_out, W_out, C)
    if kw["padding_mode"] == "zeros":
        assert np.all(vals[huge] == 0)
    else:
        # border and reflection read inside the image: a convex combination of its pixels
        lo = x.min(axis=(2, 3))[:, None, None, :]
        hi = x.max(axis=(2, 3))[:, None, None, :]
        eps = 1e-5 if x.dtype == np.float32 else 1e-12
        lo, hi = np.broadcast_to(lo, vals.shape), np.broadcast_to(hi, vals.shape)
        assert np.all(vals[huge] >= lo[huge] - eps) and np.all(vals[huge] <= hi[huge] + eps)
    return out, gi, gg


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@given(case=nst.grid_sample_cases(dtype=nst.dtypes(), grids="hostile"))
def test_hostile_grids(backend, case):
    check_hostile(case, backend)
    if backend != "numpy":
        check_against_numpy(case, backend)  # and exactly the specification's numbers


@settings(max_examples=6)
@given(case=nst.grid_sample_cases(dtype=nst.dtypes(), configs=TINY, grids="hostile"))
def test_hostile_grids_cuda(case):
    check_hostile(case, "cuda")
    check_against_numpy(case, "cuda")


@pytest.mark.parametrize("backend", ["numpy", "cpu", "cuda"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_coordinates_by_hand(backend, dtype):
    """1e30 and the dtype's max: 0 with zeros, the edge pixel with border, in range with reflection."""
    x = np.arange(1, 13, dtype=dtype).reshape(1, 1, 3, 4)  # values 1..12, row-major
    big = float(np.finfo(dtype).max)
    pts = [(1e30, 0.0), (-1e30, 0.0), (0.0, 1e30), (big, -big), (np.nan, 0.0), (0.0, np.inf), (-np.inf, np.nan)]
    g = np.array(pts, dtype=dtype).reshape(1, 1, len(pts), 2)
    go = np.ones((1, 1, 1, len(pts)), dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        outs = {p: grid_sample(x, g, padding_mode=p, backend=backend)[0, 0, 0] for p in ("zeros", "border", "reflection")}
        grads = {p: grid_sample_backward(go, x, g, padding_mode=p, backend=backend) for p in ("zeros", "border", "reflection")}
    np.testing.assert_array_equal(outs["zeros"], 0)
    # border: x -> +edge (col 3), y = 0 -> between rows 0 and 1 (x^s = 1.0 for H = 3) i.e. row 1
    np.testing.assert_array_equal(outs["border"][:4], [x[0, 0, 1, 3], x[0, 0, 1, 0], x[0, 0, 2, 1] * 0.5 + x[0, 0, 2, 2] * 0.5,
                                                       x[0, 0, 0, 3]])
    np.testing.assert_array_equal(outs["border"][4:], 0)  # NaN / inf: 0 in every padding mode
    assert np.all((outs["reflection"][:4] >= 1) & (outs["reflection"][:4] <= 12))
    np.testing.assert_array_equal(outs["reflection"][4:], 0)
    non_finite_point = ~np.isfinite(g).all(axis=-1)
    huge_coord = np.isfinite(g) & (np.abs(g) > 1e29)
    for p, (gi, gg) in grads.items():
        assert np.all(np.isfinite(gi)) and np.all(np.isfinite(gg)), p
        assert np.all(gg[non_finite_point] == 0), p  # NaN / inf: zero gradient
        assert np.all(gg[huge_coord] == 0), p  # far coordinates are clamped: zero derivative
    assert np.all(grads["zeros"][0] == 0)
    assert grads["border"][0].sum() == 4  # four in-image points each route their gradient 1 into the image


# ----------------------------------------------------------------------------
# The cpu backend's specialised kernels (npstn/kernels/cpu/grid_sample.py)
# ----------------------------------------------------------------------------
#
# One kernel is compiled per (mode, padding) pair and per driver (serial or
# parallel); the backward has two strategies (by image, split); points go in
# tiles and channels in blocks of 4, then 3, 2 or 1. Each combination must
# give the specification's numbers, and all of them the same bits.

def _variant_case(rng, dtype, shape, out_hw):
    """Input, grid and upstream gradient with points inside, across the border, far out and NaN/inf."""
    n, c = shape[:2]
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.uniform(-1.25, 1.25, (n, *out_hw, 2)).astype(dtype)
    g[0, 0, 0, 0] = np.nan
    g[-1, -1, -1, 1] = np.inf
    g[0, -1, 0] = (1e30, -1e30)
    g[-1, 0, -1, 0] = np.finfo(dtype).max
    go = rng.standard_normal((n, c, *out_hw)).astype(dtype)
    return x, g, go


# channels 1..9 cover every channel block (4, then 3, 2 or 1 left); 7 points per tile split rows
VARIANT_SHAPES = [((3, 1, 5, 6), (4, 7)), ((2, 2, 4, 4), (5, 3)), ((2, 3, 6, 5), (3, 4)),
                  ((1, 4, 3, 7), (6, 2)), ((2, 5, 4, 4), (4, 4)), ((3, 9, 5, 3), (2, 5))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_cpu_kernel_variants_match_the_specification(mode, padding_mode, dtype):
    from npstn.kernels.cpu import grid_sample as cpu_kernels

    rng = np.random.default_rng(5)
    # the parallel kernels run the serial ones' code under prange: a few pairs cover them (compiling is slow)
    parallel_too = (mode, padding_mode) in (("bilinear", "zeros"), ("bilinear", "border"),
                                            ("nearest", "reflection"))
    for shape, out_hw in VARIANT_SHAPES:
        x, g, go = _variant_case(rng, dtype, shape, out_hw)
        for align_corners in (False, True):
            kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                ref = grid_sample(x, g, backend="numpy", **kw)
                ref_gi, ref_gg = grid_sample_backward(go, x, g, backend="numpy", **kw)
            first = None
            for parallel in (False, True) if parallel_too else (False,):
                for tile_points in (7, cpu_kernels.TILE_POINTS):
                    out = cpu_kernels.forward(x, g, parallel=parallel, tile_points=tile_points, **kw)
                    agree(out, ref, f"{kw} output")
                    # the same formulas (npstn.kernels.formulas), so the same bits, every padding mode
                    np.testing.assert_array_equal(out, ref, err_msg=f"{kw}: the spec's forward, bit for bit")
                    for split in (False, True):
                        gi, gg = cpu_kernels.backward(go, x, g, split=split, parallel=parallel,
                                                      tile_points=tile_points, **kw)
                        agree(gi, ref_gi, f"{kw} grad_input")
                        agree(gg, ref_gg, f"{kw} grad_grid")
                        if first is None:
                            first = (out, gi, gg)
                        for a, b in zip(first, (out, gi, gg)):  # every strategy gives the same bits
                            np.testing.assert_array_equal(a, b, err_msg=f"{kw} parallel={parallel} split={split}")
                    none, gg = cpu_kernels.backward(go, x, g, parallel=parallel, tile_points=tile_points,
                                                    needs_input_grad=False, **kw)
                    assert none is None
                    np.testing.assert_array_equal(gg, first[2], err_msg=f"{kw} parallel={parallel}, no grad_input")


def test_cpu_large_call_takes_the_parallel_kernels():
    """A call above PARALLEL_MIN_WORK, with the automatic choices, agrees with the serial kernels bit for bit."""
    from npstn.kernels.cpu import grid_sample as cpu_kernels

    rng = np.random.default_rng(6)
    for n in (3, 8):  # 3 images: the split backward on 2+ threads; 8: by image
        x, g, go = _variant_case(rng, np.float32, (n, 5, 30, 30), (50, 51))
        assert n * 5 * 50 * 51 >= cpu_kernels.PARALLEL_MIN_WORK
        kw = dict(mode="bilinear", padding_mode="zeros", align_corners=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = grid_sample(x, g, backend="cpu", **kw)
            gi, gg = grid_sample_backward(go, x, g, backend="cpu", **kw)
            ref = grid_sample(x, g, backend="numpy", **kw)
            ref_gi, ref_gg = grid_sample_backward(go, x, g, backend="numpy", **kw)
        np.testing.assert_array_equal(out, ref)
        agree(gi, ref_gi)
        agree(gg, ref_gg)
        s_gi, s_gg = cpu_kernels.backward(go, x, g, parallel=False, **kw)
        np.testing.assert_array_equal(cpu_kernels.forward(x, g, parallel=False, **kw), out)
        np.testing.assert_array_equal(s_gi, gi)
        np.testing.assert_array_equal(s_gg, gg)


def test_cpu_serial_and_parallel_kernels_have_distinct_cache_keys():
    """Numba's disk cache keys a closure by its bytecode and closure values, not its options.

    The factories' kernels name PARALLEL so that the serial and the parallel
    kernel of one (mode, padding) pair never load each other from the cache.
    """
    from npstn.kernels.cpu import grid_sample as cpu_kernels

    for kind, padding in (("forward", 0), ("by_image", 0), ("points", 0), ("grid_only", 0), ("scatter", -1)):
        cells = []
        for parallel in (False, True):
            k = cpu_kernels._kernel(kind, 0, padding, parallel)
            cells.append(tuple(cell.cell_contents for cell in k.py_func.__closure__))
        assert cells[0] != cells[1], kind


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("align_corners", [False, True])
def test_cpu_affine_grid_serial_and_parallel_kernels(dtype, align_corners):
    """The affine generator's cpu kernels (serial below AFFINE_PARALLEL_MIN_POINTS, parallel above) match numpy."""
    import npstn.functional as F
    from npstn.kernels.cpu import grids as cpu_grids

    rng = np.random.default_rng(7)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-6, atol=1e-6)
    for size in ((3, 1, 5, 7), (40, 1, 30, 29)):
        parallel = size[0] * size[2] * size[3] >= cpu_grids.AFFINE_PARALLEL_MIN_POINTS
        assert parallel == (size[0] == 40)
        theta = (np.eye(2, 3) + rng.uniform(-0.3, 0.3, (size[0], 2, 3))).astype(dtype)
        up = rng.standard_normal((size[0], size[2], size[3], 2)).astype(dtype)
        grid = F.affine_grid(theta, size, align_corners, backend="cpu")
        assert grid.dtype == dtype
        np.testing.assert_allclose(grid, F.affine_grid(theta, size, align_corners, backend="numpy"), **tol)
        gt = F.affine_grid_backward(up, size, align_corners, backend="cpu")
        assert gt.dtype == dtype
        np.testing.assert_allclose(gt, F.affine_grid_backward(up, size, align_corners, backend="numpy"), **tol)
        # the two drivers run the same body
        xs, ys = F.affine._base_xy(size[2], size[3], align_corners)
        other = np.empty_like(grid)
        (cpu_grids._affine_grid_serial if parallel else cpu_grids._affine_grid_kernel)(theta, xs, ys, other)
        np.testing.assert_array_equal(other, grid)
    # ... and never share a disk-cache entry (see test_cpu_serial_and_parallel_kernels_have_distinct_cache_keys)
    for serial, par in ((cpu_grids._affine_grid_serial, cpu_grids._affine_grid_kernel),
                        (cpu_grids._affine_grid_backward_serial, cpu_grids._affine_grid_backward_kernel)):
        cells = [tuple(cell.cell_contents for cell in k.py_func.__closure__) for k in (serial, par)]
        assert cells[0] != cells[1]
