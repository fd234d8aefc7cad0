"""Grid generators: affine (eq. 1), attention (eq. 2), projective, thin-plate spline.

Forward/backward pairs are checked against finite differences (float64,
random upstream gradients), torch (affine), each other (metamorphic
relations), and their documented policies (the projective horizon, TPS
interpolation). Backend agreement and device arrays: test_grids_backends.py.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npstn.functional as F
from npstn.functional.projective import PROJECTIVE_FAR
from npstn.stn.transforms import (
    AffineTransform,
    AttentionTransform,
    ProjectiveTransform,
    TPSTransform,
    Transform,
    get_transform,
)
from npstn.testing import gradcheck
from npstn.testing import strategies as sn

HOST_BACKENDS = ["numpy", "cpu"]


# ---------------------------------------------------------------------------
# A uniform view of the four generators: (forward, backward, theta strategy)
# ---------------------------------------------------------------------------

def _fwd_bwd(name, size, align_corners, backend, k=16):
    """forward(theta) -> grid and backward(G, theta) -> grad_theta for generator ``name``."""
    kw = dict(align_corners=align_corners, backend=backend)
    if name == "affine":
        return (lambda t: F.affine_grid(t, size, **kw),
                lambda g, t: F.affine_grid_backward(g, size, **kw))
    if name == "attention":
        return (lambda t: F.attention_grid(t, size, **kw),
                lambda g, t: F.attention_grid_backward(g, t, size, **kw))
    if name == "projective":
        return (lambda t: F.projective_grid(t, size, **kw),
                lambda g, t: F.projective_grid_backward(g, t, size, **kw))
    if name == "tps":
        return (lambda t: F.tps_grid(t, size, **kw),
                lambda g, t: F.tps_grid_backward(g, size, num_control_points=k, **kw))
    raise AssertionError(name)


def _thetas(name, n, dtype=np.float64, k=16):
    return {
        "affine": lambda: sn.affine_thetas(n, dtype),
        "attention": lambda: sn.attention_thetas(n, dtype),
        "projective": lambda: sn.projective_thetas(n, dtype),
        "tps": lambda: sn.tps_thetas(n, k, dtype),
    }[name]()


GENERATORS = ["affine", "attention", "projective", "tps"]


# ---------------------------------------------------------------------------
# Base grid: torch's coordinates for both align_corners settings, and W = 1
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("w", [1, 2, 3, 7])
def test_base_grid_coordinates(w):
    i = np.arange(w)
    g_false = F.base_grid((1, 1, 1, w), align_corners=False)[0, 0, :, 0]
    g_true = F.base_grid((1, 1, 1, w), align_corners=True)[0, 0, :, 0]
    np.testing.assert_allclose(g_false, (2 * i + 1) / w - 1, atol=1e-15)  # pixel centres
    np.testing.assert_allclose(g_true, np.linspace(-1, 1, w) if w > 1 else [0.0], atol=1e-15)
    # height runs along axis 1 and fills the y slot
    col = F.base_grid((1, 1, w, 1), align_corners=False)[0, :, 0]
    np.testing.assert_allclose(col[:, 1], (2 * i + 1) / w - 1, atol=1e-15)
    np.testing.assert_array_equal(col[:, 0], 0.0)


def test_unit_size_gives_zero_both_ways():
    for ac in (False, True):
        g = F.affine_grid(np.eye(2, 3)[None], (1, 1, 1, 1), align_corners=ac, backend="numpy")
        np.testing.assert_array_equal(g, np.zeros((1, 1, 1, 2)))


# ---------------------------------------------------------------------------
# Affine: torch reference, linearity and the transpose
# ---------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Since version 1.3.0, affine_grid behavior")
@pytest.mark.parametrize("backend", HOST_BACKENDS)
@given(size=sn.transform_sizes(), data=st.data(), align_corners=st.booleans())
def test_affine_matches_torch(backend, size, data, align_corners):
    torch = pytest.importorskip("torch")
    theta = data.draw(sn.affine_thetas(size[0]))
    g_up = data.draw(sn.float_arrays((size[0], size[2], size[3], 2)))
    t = torch.tensor(theta, requires_grad=True)
    ref = torch.nn.functional.affine_grid(t, list(size), align_corners=align_corners)
    (ref * torch.tensor(g_up)).sum().backward()
    grid = F.affine_grid(theta, size, align_corners, backend=backend)
    np.testing.assert_allclose(grid, ref.detach().numpy(), rtol=1e-10, atol=1e-10)
    grad = F.affine_grid_backward(g_up, size, align_corners, backend=backend)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_affine_matches_torch_float32(backend):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    size = (3, 2, 9, 14)
    theta = rng.uniform(-1.5, 1.5, (3, 2, 3)).astype(np.float32)
    g_up = rng.standard_normal((3, 9, 14, 2)).astype(np.float32)
    for ac in (False, True):
        t = torch.tensor(theta, requires_grad=True)
        ref = torch.nn.functional.affine_grid(t, list(size), align_corners=ac)
        (ref * torch.tensor(g_up)).sum().backward()
        grid = F.affine_grid(theta, size, ac, backend=backend)
        grad = F.affine_grid_backward(g_up, size, ac, backend=backend)
        assert grid.dtype == np.float32 and grad.dtype == np.float32
        np.testing.assert_allclose(grid, ref.detach().numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-5, atol=1e-4)


@given(size=sn.transform_sizes(), data=st.data(), align_corners=st.booleans())
def test_affine_linear_and_backward_is_transpose(size, data, align_corners):
    n = size[0]
    t1 = data.draw(sn.affine_thetas(n, mode="random"))
    t2 = data.draw(sn.affine_thetas(n, mode="random"))
    a, b = 0.7, -1.3
    g = lambda t: F.affine_grid(t, size, align_corners, backend="numpy")  # noqa: E731
    np.testing.assert_allclose(g(a * t1 + b * t2), a * g(t1) + b * g(t2), atol=1e-12)
    up = data.draw(sn.float_arrays((n, size[2], size[3], 2)))
    lhs = np.sum(g(t1) * up)
    rhs = np.sum(t1 * F.affine_grid_backward(up, size, align_corners, backend="numpy"))
    assert abs(lhs - rhs) <= 1e-10 * (1 + abs(lhs))


# ---------------------------------------------------------------------------
# Every backward against finite differences (float64, random upstream grad)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("name", GENERATORS)
@given(size=sn.transform_sizes(max_hw=5), data=st.data(), align_corners=st.booleans())
def test_backward_matches_finite_differences(name, backend, size, data, align_corners):
    k = data.draw(st.sampled_from([4, 9, 16])) if name == "tps" else 16
    theta = data.draw(_thetas(name, size[0], k=k))
    fwd, bwd = _fwd_bwd(name, size, align_corners, backend, k=k)
    gradcheck(fwd, [theta], backward=lambda g, t: bwd(g, t), seed=data.draw(st.integers(0, 2**16)))


# ---------------------------------------------------------------------------
# Identity parameters and metamorphic relations between generators
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", HOST_BACKENDS)
@given(size=sn.transform_sizes(), align_corners=st.booleans(), dtype=sn.dtypes())
def test_identity_params_give_base_grid(backend, size, align_corners, dtype):
    n = size[0]
    base = F.base_grid(size, align_corners)
    ident = {
        "affine": lambda: F.affine_grid(np.tile(np.eye(2, 3), (n, 1, 1)).astype(dtype), size, align_corners, backend),
        "attention": lambda: F.attention_grid(np.tile([1.0, 0, 0], (n, 1)).astype(dtype), size, align_corners, backend),
        "projective": lambda: F.projective_grid(np.tile(F.PROJECTIVE_IDENTITY, (n, 1)).astype(dtype), size,
                                                align_corners, backend),
        "tps": lambda: F.tps_grid(np.tile(F.tps_control_points(16), (n, 1, 1)).astype(dtype), size,
                                  align_corners, backend),
    }
    tol = 1e-12 if dtype == np.float64 else 1e-6
    for name, make in ident.items():
        grid = make()
        assert grid.dtype == dtype and grid.shape == (n, size[2], size[3], 2), name
        np.testing.assert_allclose(grid, base, atol=tol, err_msg=name)


@given(size=sn.transform_sizes(), data=st.data(), align_corners=st.booleans())
def test_attention_equals_affine(size, data, align_corners):
    theta = data.draw(sn.attention_thetas(size[0]))
    s, tx, ty = theta.T
    zero = np.zeros_like(s)
    affine = np.stack([np.stack([s, zero, tx], -1), np.stack([zero, s, ty], -1)], 1)
    np.testing.assert_allclose(
        F.attention_grid(theta, size, align_corners, backend="numpy"),
        F.affine_grid(affine, size, align_corners, backend="numpy"),
        atol=1e-14,
    )
    # and the backward is the affine one, read through the constraint
    up = data.draw(sn.float_arrays((size[0], size[2], size[3], 2)))
    ga = F.affine_grid_backward(up, size, align_corners, backend="numpy")
    gs = F.attention_grid_backward(up, theta, size, align_corners, backend="numpy")
    np.testing.assert_allclose(gs, np.stack([ga[:, 0, 0] + ga[:, 1, 1], ga[:, 0, 2], ga[:, 1, 2]], 1), atol=1e-12)


@given(size=sn.transform_sizes(), data=st.data(), align_corners=st.booleans())
def test_projective_without_perspective_equals_affine(size, data, align_corners):
    affine = data.draw(sn.affine_thetas(size[0], mode="random"))
    theta = np.concatenate([affine.reshape(-1, 6), np.zeros((size[0], 2))], axis=1)
    np.testing.assert_allclose(
        F.projective_grid(theta, size, align_corners, backend="numpy"),
        F.affine_grid(affine, size, align_corners, backend="numpy"),
        atol=1e-14,
    )
    up = data.draw(sn.float_arrays((size[0], size[2], size[3], 2)))
    gp = F.projective_grid_backward(up, theta, size, align_corners, backend="numpy")
    ga = F.affine_grid_backward(up, size, align_corners, backend="numpy")
    np.testing.assert_allclose(gp[:, :6], ga.reshape(-1, 6), atol=1e-12)


def test_projective_matches_explicit_homography():
    rng = np.random.default_rng(3)
    theta = rng.uniform(-0.5, 0.5, (2, 8)) + np.array(F.PROJECTIVE_IDENTITY)
    theta[:, 6:] *= 0.5
    size = (2, 1, 4, 5)
    grid = F.projective_grid(theta, size, backend="numpy")
    base = F.base_grid(size)
    for n in range(2):
        hmat = np.append(theta[n], 1.0).reshape(3, 3)
        hom = np.concatenate([base[n], np.ones((4, 5, 1))], -1) @ hmat.T
        np.testing.assert_allclose(grid[n], hom[..., :2] / hom[..., 2:], rtol=1e-13)


# ---------------------------------------------------------------------------
# Projective horizon policy: |w| < eps -> +-PROJECTIVE_FAR, zero gradient
# ---------------------------------------------------------------------------

def _horizon_theta():
    # align_corners=True, W = 3: x^t in {-1, 0, 1}. g = 1 gives w = x^t + 1 = 0 in
    # column 0; in row 0 of batch 1 the perspective is tiny but nonzero (|w| = 1e-9).
    theta = np.array([
        [1.0, 0.5, 0.2, -0.3, 1.0, -0.4, 1.0, 0.0],
        [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0 - 1e-9],
    ])
    return theta, (2, 1, 3, 3)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_projective_horizon_goes_far_with_zero_gradient(backend):
    theta, size = _horizon_theta()
    grid = F.projective_grid(theta, size, align_corners=True, backend=backend)
    assert np.all(np.isfinite(grid))
    # batch 0, column 0 (x^t = -1, w = 0): sign of the limit of u/w = sign(u) * sign(+0)
    ys = np.array([-1.0, 0.0, 1.0])
    u = 1.0 * -1 + 0.5 * ys + 0.2
    v = -0.3 * -1 + 1.0 * ys - 0.4
    np.testing.assert_array_equal(grid[0, :, 0, 0], PROJECTIVE_FAR * np.sign(u))
    np.testing.assert_array_equal(grid[0, :, 0, 1], PROJECTIVE_FAR * np.sign(v))
    # batch 1, row 0 (y^t = -1, w = 1e-9 > 0): u = x^t, v = -1
    np.testing.assert_array_equal(grid[1, 0, :, 1], -PROJECTIVE_FAR)
    np.testing.assert_array_equal(grid[1, 0, [0, 2], 0], [-PROJECTIVE_FAR, PROJECTIVE_FAR])
    assert grid[1, 0, 1, 0] == PROJECTIVE_FAR  # u = +0 -> +
    # everything else follows the formula
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = F.projective_grid(theta[:1], (1, 1, 3, 3), True, "numpy", eps=0.0)
    np.testing.assert_allclose(grid[0, :, 1:], raw[0, :, 1:])
    # gradient: an upstream gradient living only on far points gives exactly 0 ...
    far = np.abs(grid) >= PROJECTIVE_FAR
    up = np.where(far, 1.0, 0.0) * np.random.default_rng(0).standard_normal(grid.shape)
    np.testing.assert_array_equal(F.projective_grid_backward(up, theta, size, True, backend), 0.0)
    # ... and the rest equals the gradient computed without those points
    up2 = np.random.default_rng(1).standard_normal(grid.shape)
    g_all = F.projective_grid_backward(up2, theta, size, True, backend)
    g_near = F.projective_grid_backward(np.where(far, 0.0, up2), theta, size, True, backend)
    np.testing.assert_allclose(g_all, g_near, rtol=1e-14, atol=0)


def test_projective_eps_is_a_threshold_on_the_denominator():
    theta, size = _horizon_theta()
    # batch 0 has w = x^t + 1 in {0, 1, 2} along a row: eps = 1.5 sends two columns far
    wide = F.projective_grid(theta, size, True, "numpy", eps=1.5)
    assert np.all(np.abs(wide[0, :, :2]) == PROJECTIVE_FAR)
    assert np.all(np.abs(wide[0, :, 2]) < 10)
    # eps = 0 disables the policy: w = 0 exactly divides by zero (inf / nan, numpy warns)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = F.projective_grid(theta, size, True, "numpy", eps=0.0)
    assert not np.all(np.isfinite(raw[0, :, 0]))
    with pytest.raises(ValueError, match="eps"):
        F.projective_grid(theta, size, True, "numpy", eps=-1.0)


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_projective_far_value_samples_as_padding_in_torch(padding_mode):
    """PROJECTIVE_FAR is far enough out to read as padding (checked with torch's sampler)."""
    torch = pytest.importorskip("torch")
    img = torch.arange(1.0, 13.0, dtype=torch.float64).reshape(1, 1, 3, 4)
    grid = torch.tensor([[[[PROJECTIVE_FAR, PROJECTIVE_FAR], [-PROJECTIVE_FAR, PROJECTIVE_FAR],
                           [PROJECTIVE_FAR, -PROJECTIVE_FAR], [-PROJECTIVE_FAR, -PROJECTIVE_FAR]]]],
                        dtype=torch.float64)
    for ac in (False, True):
        out = torch.nn.functional.grid_sample(img, grid, padding_mode=padding_mode, align_corners=ac)
        want = [0.0] * 4 if padding_mode == "zeros" else [12.0, 9.0, 4.0, 1.0]  # the corners
        np.testing.assert_array_equal(out.numpy().ravel(), want)


# ---------------------------------------------------------------------------
# Thin-plate spline
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("k", [4, 9, 16, 25])
def test_tps_control_points_layout(k):
    c = F.tps_control_points(k)
    side = int(round(np.sqrt(k)))
    lin = np.linspace(-1, 1, side)
    assert c.shape == (k, 2)
    np.testing.assert_array_equal(c.reshape(side, side, 2)[..., 0], np.tile(lin, (side, 1)))
    np.testing.assert_array_equal(c.reshape(side, side, 2)[..., 1], np.tile(lin[:, None], (1, side)))
    c[0, 0] = 42.0  # a copy: the cache is not touched
    assert F.tps_control_points(k)[0, 0] == -1.0


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@given(k=st.sampled_from([4, 9, 16, 25]), size=sn.transform_sizes(max_hw=8), data=st.data(),
       align_corners=st.booleans())
def test_tps_reproduces_affine_maps_exactly(backend, k, size, data, align_corners):
    affine = data.draw(sn.affine_thetas(size[0], mode="random"))
    c = F.tps_control_points(k)
    theta = np.einsum("nrk,pk->npr", affine, np.concatenate([c, np.ones((k, 1))], 1))  # A (x_p, y_p, 1)
    np.testing.assert_allclose(
        F.tps_grid(theta, size, align_corners, backend=backend),
        F.affine_grid(affine, size, align_corners, backend="numpy"),
        rtol=0, atol=1e-10,
    )


@pytest.mark.parametrize("k", [4, 9, 16])
def test_tps_interpolates_its_control_points(k):
    side = int(round(np.sqrt(k)))
    rng = np.random.default_rng(k)
    theta = F.tps_control_points(k)[None] + rng.uniform(-0.3, 0.3, (2, k, 2))
    # align_corners=True with H_out - 1 a multiple of side - 1 puts grid points on every c_p
    step = 2
    h = w = (side - 1) * step + 1
    grid = F.tps_grid(theta, (2, 1, h, w), align_corners=True, backend="numpy")
    on_ctrl = grid[:, ::step, ::step].reshape(2, k, 2)
    np.testing.assert_allclose(on_ctrl, theta, atol=1e-12)


def test_tps_matrix_is_cached_and_read_only():
    m1 = F.tps_matrix(16, 5, 7, False)
    m2 = F.tps_matrix(16, 5, 7, False)
    assert m1 is m2 and m1.shape == (35, 16) and m1.dtype == np.float64
    assert not m1.flags.writeable
    np.testing.assert_allclose(m1.sum(axis=1), 1.0, atol=1e-12)  # constants are reproduced
    with pytest.raises(ValueError):
        m1[0, 0] = 1.0
    assert F.tps_matrix(16, 5, 7, True) is not m1


def test_tps_backward_is_the_transpose():
    rng = np.random.default_rng(5)
    size = (2, 3, 6, 5)
    theta = rng.standard_normal((2, 9, 2))
    up = rng.standard_normal((2, 6, 5, 2))
    lhs = np.sum(F.tps_grid(theta, size, backend="numpy") * up)
    rhs = np.sum(theta * F.tps_grid_backward(up, size, num_control_points=9, backend="numpy"))
    assert abs(lhs - rhs) < 1e-10 * (1 + abs(lhs))


# ---------------------------------------------------------------------------
# Validation at the public boundary
# ---------------------------------------------------------------------------

def test_bad_theta_shapes_and_dtypes():
    size = (2, 1, 3, 3)
    with pytest.raises(ValueError, match=r"theta must have shape \(N, 2, 3\).*got shape \(2, 3, 2\)"):
        F.affine_grid(np.zeros((2, 3, 2)), size, backend="numpy")
    with pytest.raises(ValueError, match=r"theta must have 3 dimensions.*got shape \(2, 6\)"):
        F.affine_grid(np.zeros((2, 6)), size, backend="numpy")
    with pytest.raises(TypeError, match="theta must be float32 or float64, got dtype int64"):
        F.affine_grid(np.zeros((2, 2, 3), dtype=np.int64), size, backend="numpy")
    with pytest.raises(TypeError, match="theta must be an array"):
        F.affine_grid([[1, 0, 0], [0, 1, 0]], size, backend="numpy")
    with pytest.raises(ValueError, match=r"theta must have shape \(N, 3\).*got shape \(2, 4\)"):
        F.attention_grid(np.zeros((2, 4)), size, backend="numpy")
    with pytest.raises(ValueError, match=r"theta must have shape \(N, 8\).*got shape \(2, 9\)"):
        F.projective_grid(np.zeros((2, 9)), size, backend="numpy")
    with pytest.raises(ValueError, match=r"K a perfect square.*got shape \(2, 10, 2\)"):
        F.tps_grid(np.zeros((2, 10, 2)), size, backend="numpy")
    with pytest.raises(ValueError, match=r"K a perfect square.*got shape \(2, 1, 2\)"):
        F.tps_grid(np.zeros((2, 1, 2)), size, backend="numpy")
    with pytest.raises(ValueError, match=r"theta must have shape \(N, 2, 3\)"):
        F.affine_grid(np.zeros((0, 2, 3)), (1, 1, 2, 2), backend="numpy")


@pytest.mark.parametrize("size,err,msg", [
    ((2, 1, 3), TypeError, "size must be a tuple of 4 ints"),
    ((2, 1, 3, 3.0), TypeError, "size must be a tuple of 4 ints"),
    ((2, 1, True, 3), TypeError, "size must be a tuple of 4 ints"),
    ("2133", TypeError, "size must be a tuple of 4 ints"),
    ((2, 1, 0, 3), ValueError, "positive"),
    ((3, 1, 3, 3), ValueError, r"size\[0\] = 3 .* batch size is 2"),
])
def test_bad_size(size, err, msg):
    for call in (
        lambda: F.affine_grid(np.zeros((2, 2, 3)), size, backend="numpy"),
        lambda: F.attention_grid(np.zeros((2, 3)), size, backend="numpy"),
        lambda: F.projective_grid(np.zeros((2, 8)), size, backend="numpy"),
        lambda: F.tps_grid(np.zeros((2, 16, 2)), size, backend="numpy"),
    ):
        with pytest.raises(err, match=msg):
            call()


def test_size_accepts_lists_and_numpy_ints():
    g = F.affine_grid(np.eye(2, 3)[None], [1, np.int64(2), 3, np.int32(4)], backend="numpy")
    assert g.shape == (1, 3, 4, 2)


def test_bad_grad_grid():
    size = (2, 1, 3, 4)
    msg = r"grad_grid must have shape \(N, H_out, W_out, 2\) = \(2, 3, 4, 2\).*got shape \(2, 4, 3, 2\)"
    bad = np.zeros((2, 4, 3, 2))
    with pytest.raises(ValueError, match=msg):
        F.affine_grid_backward(bad, size, backend="numpy")
    with pytest.raises(ValueError, match=msg):
        F.attention_grid_backward(bad, np.zeros((2, 3)), size, backend="numpy")
    with pytest.raises(ValueError, match=msg):
        F.projective_grid_backward(bad, np.zeros((2, 8)), size, backend="numpy")
    with pytest.raises(ValueError, match=msg):
        F.tps_grid_backward(bad, size, backend="numpy")
    with pytest.raises(TypeError, match="grad_grid must be float32 or float64"):
        F.affine_grid_backward(np.zeros((2, 3, 4, 2), dtype=np.int32), size, backend="numpy")
    with pytest.raises(TypeError, match="grad_grid has dtype float32 but theta has dtype float64"):
        F.projective_grid_backward(np.zeros((2, 3, 4, 2), np.float32), np.zeros((2, 8)), size, backend="numpy")
    with pytest.raises(ValueError, match=r"size\[0\] = 2 .* batch size is 3"):
        F.attention_grid_backward(np.zeros((2, 3, 4, 2)), np.zeros((3, 3)), size, backend="numpy")


@pytest.mark.parametrize("k", [0, 1, 2, 3, 8, 10, -4])
def test_tps_num_control_points_must_be_square_ge_4(k):
    with pytest.raises(ValueError, match="perfect square >= 4"):
        F.tps_control_points(k)
    with pytest.raises(ValueError, match="perfect square >= 4"):
        TPSTransform(k)
    with pytest.raises(ValueError, match="perfect square >= 4"):
        F.tps_grid_backward(np.zeros((1, 2, 2, 2)), (1, 1, 2, 2), num_control_points=k, backend="numpy")


def test_tps_num_control_points_type():
    with pytest.raises(TypeError, match="num_control_points must be an int"):
        F.tps_control_points(16.0)
    with pytest.raises(TypeError, match="num_control_points must be an int"):
        F.tps_control_points(True)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        F.affine_grid(np.eye(2, 3)[None], (1, 1, 2, 2), backend="tpu")


# ---------------------------------------------------------------------------
# The Transform interface
# ---------------------------------------------------------------------------

def test_get_transform_names_and_instances():
    assert isinstance(get_transform("affine"), AffineTransform)
    assert isinstance(get_transform("Attention"), AttentionTransform)
    assert isinstance(get_transform("projective"), ProjectiveTransform)
    tps = get_transform("tps")
    assert isinstance(tps, TPSTransform) and tps.num_control_points == 16 and tps.num_params == 32
    mine = TPSTransform(9)
    assert get_transform(mine) is mine and mine.num_params == 18
    assert [get_transform(n).num_params for n in ("affine", "attention", "projective")] == [6, 3, 8]
    for bad in ("similarity", None, 3, AffineTransform):
        with pytest.raises(ValueError, match="'affine', 'attention', 'projective', 'tps'"):
            get_transform(bad)
    assert TPSTransform(16) == get_transform("tps") and TPSTransform(9) != TPSTransform(16)
    assert hash(AffineTransform()) == hash(get_transform("affine"))
    assert "num_control_points=9" in repr(mine)


def test_transform_base_class_is_abstract():
    with pytest.raises(NotImplementedError):
        Transform().identity()


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transform_identity_round_trip(name, dtype):
    t = get_transform(name)
    ident = t.identity(dtype)
    assert ident.shape == (t.num_params,) and ident.dtype == dtype
    size = (3, 2, 4, 5)
    theta = np.tile(ident, (3, 1))
    grid = t.grid(theta, size, backend="cpu")
    assert grid.dtype == dtype and grid.shape == (3, 4, 5, 2)
    np.testing.assert_allclose(grid, t.base_grid(size), atol=1e-12 if dtype == np.float64 else 1e-6)
    grad = t.grid_backward(np.ones((3, 4, 5, 2), dtype), theta, size, backend="cpu")
    assert grad.shape == (3, t.num_params) and grad.dtype == dtype


def test_transform_flat_layouts_match_functional():
    rng = np.random.default_rng(7)
    size = (2, 1, 3, 4)
    up = rng.standard_normal((2, 3, 4, 2))
    th6 = rng.standard_normal((2, 6))
    np.testing.assert_array_equal(AffineTransform().grid(th6, size, backend="numpy"),
                                  F.affine_grid(th6.reshape(2, 2, 3), size, backend="numpy"))
    np.testing.assert_array_equal(AffineTransform().grid_backward(up, th6, size, backend="numpy"),
                                  F.affine_grid_backward(up, size, backend="numpy").reshape(2, 6))
    th32 = rng.standard_normal((2, 32))
    np.testing.assert_array_equal(TPSTransform().grid(th32, size, backend="numpy"),
                                  F.tps_grid(th32.reshape(2, 16, 2), size, backend="numpy"))
    np.testing.assert_array_equal(TPSTransform().grid_backward(up, th32, size, backend="numpy"),
                                  F.tps_grid_backward(up, size, backend="numpy").reshape(2, 32))
    np.testing.assert_allclose(TPSTransform().identity(np.float64)[:4], [-1.0, -1.0, -1 / 3, -1.0], atol=1e-15)


def test_transform_validates_flat_theta():
    with pytest.raises(ValueError, match=r"affine transform must have shape \(N, 6\), got shape \(2, 8\)"):
        AffineTransform().grid(np.zeros((2, 8)), (2, 1, 2, 2))
    with pytest.raises(ValueError, match=r"theta must have 2 dimensions \(N, 32\)"):
        TPSTransform().grid(np.zeros((2, 16, 2)), (2, 1, 2, 2))
    with pytest.raises(ValueError, match=r"size\[0\] = 3"):
        TPSTransform().grid_backward(np.zeros((3, 2, 2, 2)), np.zeros((2, 32)), (3, 1, 2, 2))
    with pytest.raises(TypeError, match="grad_grid has dtype float32 but theta has dtype float64"):
        AffineTransform().grid_backward(np.zeros((2, 2, 2, 2), np.float32), np.zeros((2, 6)), (2, 1, 2, 2))


@settings(max_examples=20)
@given(case=sn.transform_cases(), align_corners=st.booleans(), seed=st.integers(0, 2**16))
def test_transform_interface_gradients(case, align_corners, seed):
    transform, theta, size = case
    gradcheck(
        lambda t: transform.grid(t, size, align_corners, backend="numpy"),
        [theta],
        backward=lambda g, t: transform.grid_backward(g, t, size, align_corners, backend="numpy"),
        seed=seed,
    )


@given(theta=sn.projective_thetas(mode="random"), align_corners=st.booleans())
def test_projective_strategy_keeps_away_from_the_horizon(theta, align_corners):
    n = theta.shape[0]
    base = F.base_grid((n, 1, 5, 5), align_corners)
    w = theta[:, 6, None, None] * base[..., 0] + theta[:, 7, None, None] * base[..., 1] + 1
    assert np.all(w >= 0.5 - 1e-12)


# ----------------------------------------------------------------------------
# One rule for every backward: op_backward(grad_grid, theta, size, **kwargs)
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_linear_generators_take_theta_by_the_rule_and_without_it(backend, align_corners):
    """affine/tps backward: (grad_grid, theta, size, ...) and the older (grad_grid, size, ...) give the same bits."""
    rng = np.random.default_rng(11)
    size = (2, 1, 3, 5)
    up = rng.standard_normal((2, 3, 5, 2))
    theta = rng.standard_normal((2, 2, 3))
    ref = F.affine_grid_backward(up, size, align_corners=align_corners, backend=backend)
    for got in (F.affine_grid_backward(up, theta, size, align_corners, backend),
                F.affine_grid_backward(up, theta, size, align_corners=align_corners, backend=backend),
                F.affine_grid_backward(up, size, align_corners, backend),
                F.affine_grid_backward(up, size, align_corners, backend=backend)):
        np.testing.assert_array_equal(got, ref)
    theta_tps = rng.standard_normal((2, 9, 2))
    ref = F.tps_grid_backward(up, size, num_control_points=9, align_corners=align_corners, backend=backend)
    for got in (F.tps_grid_backward(up, theta_tps, size, align_corners, backend),
                F.tps_grid_backward(up, theta_tps, size, align_corners=align_corners, backend=backend),
                F.tps_grid_backward(up, size, 9, align_corners, backend)):
        np.testing.assert_array_equal(got, ref)
    # every generator's backward accepts the same positional arguments
    for backward, th in ((F.affine_grid_backward, theta), (F.attention_grid_backward, theta[:, 0]),
                         (F.projective_grid_backward, rng.standard_normal((2, 8)) * 0.1),
                         (F.tps_grid_backward, theta_tps)):
        assert backward(up, th, size, align_corners, backend).shape == th.shape


def test_theta_given_to_a_linear_backward_is_checked():
    size = (2, 1, 3, 4)
    up = np.zeros((2, 3, 4, 2))
    with pytest.raises(ValueError, match=r"theta must have shape \(N, 2, 3\)"):
        F.affine_grid_backward(up, np.zeros((2, 3, 2)), size, backend="numpy")
    with pytest.raises(ValueError, match=r"size\[0\] = 2 .* batch size is 3"):
        F.affine_grid_backward(up, np.zeros((3, 2, 3)), size, backend="numpy")
    with pytest.raises(TypeError, match="grad_grid has dtype float64 but theta has dtype float32"):
        F.affine_grid_backward(up, np.zeros((2, 2, 3), np.float32), size, backend="numpy")
    with pytest.raises(ValueError, match="num_control_points = 16 does not match theta, which has K = 9"):
        F.tps_grid_backward(up, np.zeros((2, 9, 2)), size, num_control_points=16, backend="numpy")
    with pytest.raises(TypeError, match="align_corners given twice"):
        F.affine_grid_backward(up, size, True, align_corners=True)
    with pytest.raises(TypeError, match="backend given twice"):
        F.affine_grid_backward(up, size, True, "numpy", backend="cpu")
    with pytest.raises(TypeError, match="num_control_points given twice"):
        F.tps_grid_backward(up, size, 9, num_control_points=9)
