"""Co-localisation (paper A.2, Table 5): the hinge loss and its backward, boxes and IoU, the data,
the encoder and its cache, a short run that must raise IoU, and the commands.

Everything runs on synthetic digits (no MNIST) and tiny encoders.
"""
import json
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import npstn.functional as F
from npstn import colocalisation as C
from npstn import nn
from npstn.cli import main
from npstn.testing import gradcheck


# ------------------------------------------------------------------------------- the loss
def brute_force_loss(e, r, margin, reduction):
    n = len(e)
    total = 0.0
    for i in range(n):
        q = np.sum((e[i] - r[i]) ** 2)
        for j in range(n):
            if i != j:
                total += max(0.0, np.sum((e[i] - e[j]) ** 2) - q + margin)
    return total / (n * (n - 1)) if reduction == "mean" else total


@st.composite
def loss_cases(draw, max_n=5, max_d=4):
    n = draw(st.integers(2, max_n))
    d = draw(st.integers(1, max_d))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((n, d))
    r = e + draw(st.floats(0.1, 2.0)) * rng.standard_normal((n, d))
    margin = draw(st.sampled_from([0.0, 0.5, 1.0, 3.0]))
    reduction = draw(st.sampled_from(["mean", "sum"]))
    return e, r, margin, reduction


@settings(max_examples=25, deadline=None)
@given(case=loss_cases())
def test_loss_equals_the_pairwise_sum(case):
    e, r, margin, reduction = case
    got = F.colocalisation_loss(e, r, margin=margin, reduction=reduction)
    np.testing.assert_allclose(got, brute_force_loss(e, r, margin, reduction), rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(case=loss_cases())
def test_backward_matches_finite_differences(case):
    e, r, margin, reduction = case
    h = F.colocalisation_hinges(e, r, margin)
    assume(np.min(np.abs(h[np.isfinite(h)])) > 1e-3)  # away from the hinge's kinks
    g = np.random.default_rng(1).uniform(0.5, 2.0)  # a random upstream gradient, not 1

    def forward(e, r):
        return np.asarray(g * F.colocalisation_loss(e, r, margin=margin, reduction=reduction))

    def backward(grad_out, e, r):  # gradcheck's own random upstream gradient, times g
        return F.colocalisation_loss_backward(g * np.asarray(grad_out), e, r, margin=margin,
                                              reduction=reduction)

    assert gradcheck(forward, [e, r], backward=backward, eps=1e-6, atol=1e-6, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(case=loss_cases())
def test_stop_partner_backward_is_the_gradient_with_the_other_images_held(case):
    """stop_partner=True: dL/de_n with e_m (m != n) held fixed in the pairs (n, m); dL/dr as the full backward."""
    e, r, margin, reduction = case
    n = len(e)
    h = F.colocalisation_hinges(e, r, margin)
    assume(np.min(np.abs(h[np.isfinite(h)])) > 1e-3)  # away from the hinge's kinks
    g = np.random.default_rng(2).uniform(0.5, 2.0)

    def held(i, x):  # the loss's terms in which e_i is the anchor, as a function of e_i = x
        q = np.sum((x - r[i]) ** 2)
        t = sum(max(0.0, np.sum((x - e[j]) ** 2) - q + margin) for j in range(n) if j != i)
        return g * t / (n * (n - 1) if reduction == "mean" else 1)

    ge, gr = F.colocalisation_loss_backward(np.float64(g), e, r, margin=margin, reduction=reduction,
                                            stop_partner=True)
    eps, fd = 1e-6, np.zeros_like(e)
    for i, k in np.ndindex(*e.shape):
        step = np.zeros(e.shape[1])
        step[k] = eps
        fd[i, k] = (held(i, e[i] + step) - held(i, e[i] - step)) / (2 * eps)
    np.testing.assert_allclose(ge, fd, rtol=1e-5, atol=1e-7)
    _, full_gr = F.colocalisation_loss_backward(np.float64(g), e, r, margin=margin, reduction=reduction)
    np.testing.assert_array_equal(gr, full_gr)
    with pytest.raises(TypeError, match="stop_partner"):
        F.colocalisation_loss_backward(np.float64(g), e, r, stop_partner="yes")


def test_backward_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    e, r = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    te, tr = torch.tensor(e, requires_grad=True), torch.tensor(r, requires_grad=True)
    d = ((te[:, None] - te[None]) ** 2).sum(-1)
    q = ((te - tr) ** 2).sum(-1)
    h = torch.clamp(d - q[:, None] + 1.0, min=0) * (1 - torch.eye(6, dtype=torch.float64))
    (h.sum() / 30 * 0.7).backward()
    ge, gr = F.colocalisation_loss_backward(0.7, e, r)
    np.testing.assert_allclose(ge, te.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gr, tr.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(F.colocalisation_loss(e, r), h.sum().item() / 30, rtol=1e-12)


def test_hinge_at_its_kink_takes_the_zero_subgradient():
    e = np.ones((3, 2))  # every d_nm = 0 and q_n = 0: with margin 0 each hinge sits at 0
    ge, gr = F.colocalisation_loss_backward(1.0, e, e.copy(), margin=0.0)
    assert not ge.any() and not gr.any()
    assert F.colocalisation_loss(e, e.copy(), margin=0.0) == 0


def test_loss_keeps_float32_and_checks_its_arguments():
    rng = np.random.default_rng(0)
    e, r = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    assert F.colocalisation_loss(e, r).dtype == np.float32
    assert all(g.dtype == np.float32 for g in F.colocalisation_loss_backward(np.float32(1), e, r))
    with pytest.raises(ValueError, match="random_embeddings"):
        F.colocalisation_loss(e, r[:3])
    with pytest.raises(ValueError, match="N >= 2"):
        F.colocalisation_loss(e[:1], r[:1])
    with pytest.raises(TypeError, match="dtype"):
        F.colocalisation_loss(e, r.astype(np.float64))
    with pytest.raises(ValueError, match="reduction"):
        F.colocalisation_loss(e, r, reduction="none")
    with pytest.raises(ValueError, match="margin"):
        F.colocalisation_loss(e, r, margin=float("nan"))
    with pytest.raises(ValueError, match="grad_output"):
        F.colocalisation_loss_backward(np.ones(2), e, r)


# ------------------------------------------------------------------------------- boxes and IoU
def test_iou_known_values():
    a = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1]], dtype=float)
    b = np.array([[0, 0, 2, 2], [1, 0, 3, 2], [5, 5, 6, 6], [0, 0, 0, 0]], dtype=float)
    np.testing.assert_allclose(C.box_iou(a, b), [1.0, 1 / 3, 0.0, 0.0])
    with pytest.raises(ValueError, match="x0 <= x1"):
        C.box_iou(np.array([[2, 0, 1, 1.0]]), a[:1])
    with pytest.raises(ValueError, match="same shape"):
        C.box_iou(a, b[:2])


boxes = st.tuples(st.floats(0, 50), st.floats(0, 50), st.floats(0.5, 30), st.floats(0.5, 30)).map(
    lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@settings(max_examples=40, deadline=None)
@given(a=boxes, b=boxes, shift=st.floats(-20, 20))
def test_iou_is_symmetric_bounded_and_shift_invariant(a, b, shift):
    a, b = np.array([a]), np.array([b])
    iou = C.box_iou(a, b)
    assert 0 <= iou[0] <= 1
    np.testing.assert_allclose(iou, C.box_iou(b, a), rtol=1e-12)
    np.testing.assert_allclose(iou, C.box_iou(a + shift, b + shift), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(C.box_iou(a, a), [1.0])


def test_theta_to_box_and_back():
    np.testing.assert_allclose(C.theta_to_box(np.array([[1 / 3, 0, 0]]), 84), [[28, 28, 56, 56]])
    np.testing.assert_allclose(C.theta_to_box(np.array([[1.0, 0, 0]]), 84), [[0, 0, 84, 84]])
    b = np.array([[3.0, 40, 31, 68], [56, 0, 84, 28]])
    np.testing.assert_allclose(C.theta_to_box(C.box_to_theta(b, 84), 84), b, atol=1e-12)


def test_the_box_of_a_crop_is_where_the_sampler_reads():
    """Cropping with box_to_theta(true box) gives back the digit exactly (pixel centres hit pixel centres)."""
    x, boxes_ = C.colocalisation_set(4, digits=DIGITS, labels=LABELS, images=6, seed=5)
    theta = C.box_to_theta(boxes_, 84).astype(np.float32)
    crops = F.grid_sample(x, F.attention_grid(theta, (6, 1, 28, 28)))
    for i, (x0, y0, x1, y1) in enumerate(boxes_.astype(int)):
        np.testing.assert_allclose(crops[i, 0], x[i, 0, y0:y1, x0:x1], atol=1e-5)


# ------------------------------------------------------------------------------- data
def synthetic_class_digits(n_per_class=12, seed=0):
    """28x28 uint8 'digits': class k is a ring of radius 6 + k/2 with a bar at a class angle, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28] - 13.5
    rad = np.hypot(xx, yy)
    out, labels = [], []
    for k in range(10):
        for _ in range(n_per_class):
            img = np.clip(1.4 - np.abs(rad - 6 - k / 2 - rng.normal(0, 0.3)) / 1.2, 0, 1)
            ang = np.pi * k / 10
            along = xx * np.cos(ang) + yy * np.sin(ang)
            across = -xx * np.sin(ang) + yy * np.cos(ang)
            img = np.maximum(img, (np.abs(across) < 1.5) & (np.abs(along) < 7))
            out.append((255 * np.clip(img + rng.uniform(0, 0.05, img.shape), 0, 1)).astype(np.uint8))
            labels.append(k)
    return np.array(out), np.array(labels)


DIGITS, LABELS = synthetic_class_digits()


def test_set_places_one_digit_class_at_its_box():
    x, b = C.colocalisation_set(3, images=10, digits=DIGITS, labels=LABELS, seed=1)
    assert x.shape == (10, 1, 84, 84) and x.dtype == np.float32 and b.shape == (10, 4)
    assert ((b[:, 2] - b[:, 0]) == 28).all() and b.min() >= 0 and b.max() <= 84
    own = DIGITS[LABELS == 3].astype(np.float32) / 255
    for i, (x0, y0, x1, y1) in enumerate(b.astype(int)):
        inside = x[i, 0, y0:y1, x0:x1]
        assert any(np.array_equal(inside, d) for d in own)  # a digit of class 3, unchanged
        outside = x[i, 0].copy()
        outside[y0:y1, x0:x1] = 0
        assert not outside.any()  # T: nothing else on the canvas
    x2, b2 = C.colocalisation_set(3, images=10, digits=DIGITS, labels=LABELS, seed=1)
    assert np.array_equal(x, x2) and np.array_equal(b, b2)


def test_cluttered_set_adds_patches_of_other_digits():
    x, b = C.colocalisation_set(3, clutter=True, images=10, digits=DIGITS, labels=LABELS, seed=1)
    xt, bt = C.colocalisation_set(3, clutter=False, images=10, digits=DIGITS, labels=LABELS, seed=1)
    assert x.min() >= 0 and x.max() <= 1
    outside = x[:, 0].copy()
    for i, (x0, y0, x1, y1) in enumerate(b.astype(int)):
        outside[i, y0:y1, x0:x1] = 0
    assert (outside > 0).sum() > 10 * 6  # clutter lands outside the digit's box
    with pytest.raises(ValueError, match="digit"):
        C.colocalisation_set(10, digits=DIGITS, labels=LABELS)
    with pytest.raises(ValueError, match="more than the 12 images"):
        C.colocalisation_set(3, images=13, digits=DIGITS, labels=LABELS)


# ------------------------------------------------------------------------------- encoder
@pytest.mark.parametrize("probabilities", [0.0, 1.5])
def test_encoder_backward_matches_finite_differences(probabilities):
    enc = C.cnn_encoder(width=2, seed=0)
    enc.scales = (0.5, 2.0, 1.5)
    enc.probabilities = probabilities
    x = np.random.default_rng(0).random((2, 1, 28, 28))
    assert gradcheck(enc, [x], params=False, max_elements=24)


def test_encoder_probabilities_append_the_weighted_softmax_of_the_logits():
    enc = C.cnn_encoder(width=2, seed=0)
    x = np.random.default_rng(1).random((3, 1, 28, 28)).astype(np.float32)
    layers = enc(x)
    enc.probabilities = 2.0
    d = enc(x)
    logits = layers[:, -10:] / enc.scales[-1]
    np.testing.assert_allclose(d[:, :-10], layers)
    np.testing.assert_allclose(d[:, -10:], 2.0 * F.softmax(logits, 1), rtol=1e-6)
    with pytest.raises(ValueError, match="probabilities must be a finite weight >= 0"):
        C.Encoder(enc.net, taps=(2, 5), probabilities=-1)


def test_encoder_with_layer_weights_reweighs_a_copy():
    enc = C.cnn_encoder(width=2, seed=0)
    enc.scales, enc.probabilities = (0.5, 2.0, 1.5), 1.0
    x = np.random.default_rng(2).random((3, 1, 28, 28)).astype(np.float32)
    d = enc(x)
    w = enc.with_layer_weights((2.0, 0.0, 1.0))
    assert enc.scales == (0.5, 2.0, 1.5) and w.scales == (1.0, 0.0, 1.5) and w.probabilities == 1.0
    dw = w(x)
    sizes = [int(np.prod(s[1:])) for s in enc._shapes]
    a, b = sizes[0], sizes[0] + sizes[1]
    np.testing.assert_allclose(dw[:, :a], 2.0 * d[:, :a], rtol=1e-6)  # layer 1 doubled
    assert not dw[:, a:b].any()  # layer 2 dropped
    np.testing.assert_allclose(dw[:, b:], d[:, b:], rtol=1e-6)  # logits and probabilities as they were
    for bad in ((1.0, 1.0), (1.0, -1.0, 1.0), (1.0, float("nan"), 1.0)):
        with pytest.raises(ValueError, match="layer weights must be 3 finite numbers"):
            enc.with_layer_weights(bad)


def test_colocalise_with_probabilities_leaves_the_callers_encoder_alone():
    x, b = C.colocalisation_set(2, images=12, digits=DIGITS, labels=LABELS, seed=3)
    enc = tiny_encoder()
    config = C.ColocaliseConfig(digit=2, steps=4, batch_size=8, images=12, probabilities=1.0)
    m = C.colocalise(config, progress=False, data=(x, b), encoder=enc)
    assert enc[0].probabilities == 0.0 and m["config"]["probabilities"] == 1.0
    with pytest.raises(ValueError, match="probabilities must be"):
        C.ColocaliseConfig(probabilities=float("inf"))


def test_bounded_attention_backward_and_bounds():
    m = C.BoundedAttention(0.2, 1.0)
    z = np.random.default_rng(0).normal(0, 2, (5, 3))
    theta = m(z)
    assert (theta[:, 0] > 0.2).all() and (theta[:, 0] < 1).all()
    assert (np.abs(theta[:, 1:]) < 1 - theta[:, :1]).all()  # the box stays inside the canvas
    b = C.theta_to_box(theta, 84)
    assert (b >= 0).all() and (b <= 84).all()
    np.testing.assert_allclose(m.raw_for(theta), z, rtol=1e-9, atol=1e-9)
    assert gradcheck(m, [z], params=False)


def tiny_encoder(seed=0):
    enc = C.cnn_encoder(width=4, seed=seed)
    enc.eval()
    enc.calibrate((DIGITS[::7].astype(np.float32) / 255)[:, None])
    return enc, {"kind": "random CNN, 4 filters"}


def test_encoder_cache_reuses_detects_damage_and_never_touches_foreign_files(tmp_path):
    kw = dict(width=2, steps=2, batch_size=4, digits=DIGITS, labels=LABELS, cache_dir=tmp_path, progress=False)
    enc, info = C.mnist_encoder(**kw)
    assert not info["cached"] and len(enc.scales) == 3
    path = tmp_path / info["path"].split("/")[-1]
    again, info2 = C.mnist_encoder(**kw)
    assert info2["cached"] and info2["sha256"] == info["sha256"] and again.scales == enc.scales
    for a, b in zip(enc.parameters(), again.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    path.write_bytes(path.read_bytes()[:100])  # damaged
    with pytest.warns(UserWarning, match=str(path.name)):
        _, info3 = C.mnist_encoder(**kw)
    assert not info3["cached"] and C._sha256(path) == info3["sha256"]
    (tmp_path / (path.name + ".sha256")).unlink()  # now the file is not npstn's
    before = path.read_bytes()
    with pytest.raises(ValueError, match="did not write it"):
        C.mnist_encoder(**kw)
    assert path.read_bytes() == before


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), h=st.integers(1, 7), w=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_shift_digits_moves_each_image_by_whole_pixels_with_zeros_shifted_in(n, h, w, seed):
    rng = np.random.default_rng(seed)
    x = rng.random((n, h, w))
    dx, dy = rng.integers(-8, 9, size=(2, n))
    got = C.shift_digits(x, dx, dy)
    want = np.zeros_like(x)
    for i in range(n):
        for r in range(h):
            for c in range(w):
                if 0 <= r - dy[i] < h and 0 <= c - dx[i] < w:
                    want[i, r, c] = x[i, r - dy[i], c - dx[i]]
    np.testing.assert_array_equal(got, want)


def test_encoder_shift_trains_on_moved_digits_under_its_own_cache_name(tmp_path):
    kw = dict(width=2, steps=3, batch_size=4, digits=DIGITS, labels=LABELS, cache_dir=tmp_path, progress=False)
    plain, info = C.mnist_encoder(**kw)
    moved, info_moved = C.mnist_encoder(shift=3, **kw)
    assert "-shift" not in info["path"] and "-shift3-" in info_moved["path"] and info_moved["shift"] == 3
    assert "shift" not in info  # the plain encoder's settings (and cache name) are as before
    assert any(not np.array_equal(a.data, b.data) for a, b in zip(plain.parameters(), moved.parameters()))
    again, info_again = C.mnist_encoder(shift=3, **kw)
    assert info_again["cached"] and info_again["sha256"] == info_moved["sha256"]
    for bad in (-1, 15, 2.0, True):
        with pytest.raises(ValueError, match="encoder shift"):
            C.mnist_encoder(shift=bad, **kw)
        with pytest.raises(ValueError, match="encoder shift"):
            C.ColocaliseConfig(encoder_shift=bad)
    assert C.ColocaliseConfig(encoder_shift=4).to_dict()["encoder_shift"] == 4


def test_a_finished_run_without_encoder_shift_ran_with_plain_digits(tmp_path):
    cfg = C.ColocaliseConfig(digit=3, out=str(tmp_path))
    stored = {k: v for k, v in cfg.to_dict().items() if k != "encoder_shift"}  # written before the field
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "finished", "config": stored}))
    assert C._finished(tmp_path, cfg) is not None
    assert C._finished(tmp_path, C.ColocaliseConfig(digit=3, encoder_shift=2, out=str(tmp_path))) is None


# ------------------------------------------------------------------------------- training
def test_gradient_through_the_whole_chain_matches_finite_differences():
    """dL/dtheta through the loss, the encoder's taps, the sampler and the attention grid (float64)."""
    x, _ = C.colocalisation_set(2, images=4, digits=DIGITS, labels=LABELS, seed=3, spread=8)
    x = x.astype(np.float64)
    enc, _ = tiny_encoder()
    enc.double()
    rng = np.random.default_rng(0)
    size = (4, 1, 28, 28)
    r = enc(F.grid_sample(x, F.attention_grid(C._random_crops(4, rng, 84, np.float64), size))).copy()
    theta = np.array([1 / 3, 0.02, -0.03]) + rng.normal(0, 0.03, (4, 3))

    def forward(theta):
        return np.asarray(F.colocalisation_loss(enc(F.grid_sample(x, F.attention_grid(theta, size))), r))

    def backward(g, theta):
        grid = F.attention_grid(theta, size)
        e = enc(F.grid_sample(x, grid))
        ge, _ = F.colocalisation_loss_backward(np.asarray(g), e, r)
        _, gg = F.grid_sample_backward(enc.backward(ge), x, grid)
        return F.attention_grid_backward(gg, theta, size)

    # bilinear sampling has kinks at integer pixel positions: a loose tolerance for the few near one
    assert gradcheck(forward, [theta], backward=backward, eps=1e-6, atol=1e-3, rtol=1e-2)


#: the paper's setup as stated (ColocaliseConfig's docstring): full gradient, s learnt from a 28x28 window
PAPER_AS_STATED = dict(stop_partner=False, init_scale=None, learn_scale=True, scale_anneal=None, lr_drops=(),
                       optimizer="sgd", probabilities=0.0)


def test_short_run_lowers_the_loss():
    """SGD on the hinge loss, its full gradient, lowers it (T, synthetic digits, a random 4-filter encoder)."""
    x, b = C.colocalisation_set(2, images=12, digits=DIGITS, labels=LABELS, seed=3)
    config = C.ColocaliseConfig(digit=2, steps=40, batch_size=8, lr=0.01, eval_every=20, images=12,
                                **PAPER_AS_STATED)
    m = C.colocalise(config, progress=False, data=(x, b), encoder=tiny_encoder())
    first, last = m["history"][1]["loss"], m["history"][-1]["loss"]
    assert last < first - 0.05, m["history"]
    assert [h["step"] for h in m["history"]] == [0, 4, 10, 20, 40]  # snapshots at 10%, 25%, 50% and the end
    assert 0 <= m["localised_percent"] <= 100 and len(m["per_image_iou"]) == 12


def test_scale_anneal_sets_s_by_its_schedule_and_nothing_else_moves_it():
    """scale_anneal=(a, b): s = init_scale until step a*steps, linear to 28/84 at b*steps, then held."""
    assert C.annealed_scale(0, 1.0, (2, 6)) == 1.0 and C.annealed_scale(2, 1.0, (2, 6)) == 1.0
    assert C.annealed_scale(4, 1.0, (2, 6)) == pytest.approx((1.0 + 28 / 84) / 2)
    assert C.annealed_scale(6, 1.0, (2, 6)) == C.annealed_scale(99, 1.0, (2, 6)) == pytest.approx(28 / 84)
    assert C.annealed_scale(5, 0.5, (5, 5)) == pytest.approx(28 / 84)  # A == B: a step
    assert C.annealed_scale(4, 0.5, (5, 5)) == 0.5  # ... with init_scale before it (no 0 / 0)
    x, b = C.colocalisation_set(2, images=12, digits=DIGITS, labels=LABELS, seed=3)
    config = C.ColocaliseConfig(digit=2, steps=8, batch_size=8, lr=0.01, eval_every=2, images=12, init_scale=1.0,
                                learn_scale=False, scale_anneal=(0.25, 0.75))
    assert config.anneal_steps == (2, 6)
    m = C.colocalise(config, progress=False, data=(x, b), encoder=tiny_encoder())
    assert m["final_theta_mean"][0] == pytest.approx(28 / 84, abs=1e-6)
    assert json.loads(json.dumps(config.to_dict()))["scale_anneal"] == [0.25, 0.75]


def test_lr_scale_power_scales_each_step_by_the_window():
    """lr_scale_power=p multiplies a step's gradient by (s / init_scale) ** p: one plain SGD step at
    s = 28/84 from init_scale 1 moves t by exactly (1/3) ** p of the step without it; with s held
    (init_scale = 28/84) p changes nothing."""
    x, b = C.colocalisation_set(2, images=12, digits=DIGITS, labels=LABELS, seed=3)
    common = dict(digit=2, steps=1, batch_size=8, lr=0.05, momentum=0.0, lr_drops=(), images=12,
                  learn_scale=False, scale_anneal=(0.0, 1.0), optimizer="sgd")

    def final_t(**kw):
        m = C.colocalise(C.ColocaliseConfig(**{**common, **kw}), progress=False, data=(x, b), encoder=tiny_encoder())
        return np.array(m["final_theta_mean"])

    t0 = final_t(init_scale=1.0)
    assert np.abs(t0[1:]).max() > 1e-4  # the step moved the crops
    for p in (1.0, 2.0):
        np.testing.assert_allclose(final_t(init_scale=1.0, lr_scale_power=p)[1:], t0[1:] / 3 ** p, rtol=1e-5)
    held = dict(init_scale=28 / 84, steps=5, momentum=0.9)
    np.testing.assert_array_equal(final_t(**held, lr_scale_power=1.0), final_t(**held))


def test_tracking_correlation_tells_a_tracking_network_from_a_fixed_one():
    boxes = np.array([[0, 10, 28, 38], [40, 2, 68, 30], [20, 50, 48, 78], [56, 30, 84, 58]], dtype=float)
    truth = C.box_to_theta(boxes)
    np.testing.assert_allclose(C.tracking_correlation(truth, boxes), [1.0, 1.0])
    shifted = truth + np.array([0.0, 0.1, -0.2])  # a constant offset still tracks
    np.testing.assert_allclose(C.tracking_correlation(shifted, boxes), [1.0, 1.0])
    mirrored = truth * np.array([1.0, -1.0, 1.0])
    np.testing.assert_allclose(C.tracking_correlation(mirrored, boxes), [-1.0, 1.0])
    fixed = np.tile([28 / 84, 0.1, 0.0], (4, 1))  # every crop at the same place
    assert C.tracking_correlation(fixed, boxes) == [None, None]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimizer_is_the_one_asked_for(tmp_path, optimizer):
    """optimizer="adam": the first step moves each parameter by lr times the sign of its gradient (Adam's
    first step, m / sqrt(v) = g / |g|), so t's regression bias ends at exactly +-lr; SGD's first step
    (momentum 0) is lr * g, which is not."""
    x, b = C.colocalisation_set(2, images=12, digits=DIGITS, labels=LABELS, seed=3)
    lr = 0.01
    config = C.ColocaliseConfig(digit=2, steps=1, batch_size=8, lr=lr, momentum=0.0, lr_drops=(), images=12,
                                optimizer=optimizer, out=str(tmp_path / "run"))
    C.colocalise(config, progress=False, data=(x, b), encoder=tiny_encoder())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["optimizer"] == optimizer
    state = nn.load(tmp_path / "run" / "model.npz")
    bias_t = [v for k, v in state.items() if k.endswith("bias") and v.shape == (3,)][-1][1:]  # (t_x, t_y)
    moved_by_lr = np.allclose(np.abs(bias_t), lr, rtol=1e-4)
    assert moved_by_lr == (optimizer == "adam")
    assert np.abs(bias_t).min() > 0


@pytest.mark.parametrize("kw, match", [
    (dict(optimizer="rmsprop"), "optimizer must be one of sgd, adam"),
    (dict(optimizer="adam", lr_scale_power=1.0), "needs optimizer='sgd'"),
    (dict(init_scale=1.0, learn_scale=False, scale_anneal=(0.5, 0.2)), "0 <= a <= b <= 1"),
    (dict(init_scale=1.0, learn_scale=False, scale_anneal=(0, 2)), "0 <= a <= b <= 1"),
    (dict(init_scale=1.0, learn_scale=False, scale_anneal=(0.5,)), "0 <= a <= b <= 1"),
    (dict(init_scale=1.0, learn_scale=False, scale_anneal=(True, 0.5)), "0 <= a <= b <= 1"),
    (dict(init_scale=None, learn_scale=False, scale_anneal=(0, 0.5)), "init_scale"),
    (dict(init_scale=1.0, learn_scale=True, scale_anneal=(0, 0.5)), "learn_scale=False"),
    (dict(init_scale=1.0, learn_scale=False, bounded=(0.2, 1.0), scale_anneal=(0, 0.5)), "no bounded"),
    (dict(init_scale=None, learn_scale=True, scale_anneal=None, lr_scale_power=1.0), "needs scale_anneal"),
    (dict(lr_scale_power=-1.0, optimizer="sgd"), "lr_scale_power must be"),
])
def test_scale_anneal_config_checks(kw, match):
    with pytest.raises(ValueError, match=match):
        C.ColocaliseConfig(**kw)


# ------------------------------------------------------------------------------- commands
@pytest.fixture
def synthetic_task(monkeypatch):
    real_set = C.colocalisation_set

    def fake_set(digit, clutter=False, *, images=C.NUM_IMAGES, seed=C.DATA_SEED, **kw):
        return real_set(digit, clutter, images=min(images, 12), seed=seed, digits=DIGITS, labels=LABELS)

    monkeypatch.setattr(C, "colocalisation_set", fake_set)
    monkeypatch.setattr(C, "mnist_encoder", lambda **kw: tiny_encoder())


def test_colocalise_command_writes_metrics_and_picture_and_refuses_to_overwrite(tmp_path, synthetic_task, capsys):
    out = tmp_path / "run"
    argv = ["colocalise", "--digit", "5", "--clutter", "--steps", "4", "--batch-size", "4", "--quiet",
            "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["variant"] == "TC" and m["digit"] == 5 and m["steps"] == 4 and 0 <= m["localised_percent"] <= 100
    assert (out / "boxes.png").stat().st_size > 1000 and (out / "log.csv").is_file()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.json" in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_colocalise_command_as_stated_runs_the_papers_setup_and_defaults_to_the_recipe(tmp_path, synthetic_task):
    """--as-stated: the full gradient, s learnt from a 28x28 window, lr 0.001 constant (flags given still win);
    without it, config.json holds npstn's recipe (ColocaliseConfig's defaults)."""
    base = ["colocalise", "--digit", "2", "--steps", "4", "--batch-size", "4", "--quiet", "--threads", "1"]
    assert main(base + ["--as-stated", "--out", str(tmp_path / "a")]) == 0
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["stop_partner"] is False and cfg["learn_scale"] is True and cfg["init_scale"] is None
    assert cfg["scale_anneal"] is None and cfg["lr_drops"] == [] and cfg["lr"] == 0.001 and cfg["steps"] == 4
    assert cfg["optimizer"] == "sgd" and cfg["probabilities"] == 0.0
    assert main(base + ["--as-stated", "--optimizer", "adam", "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "config.json").read_text())["optimizer"] == "adam"
    assert main(base + ["--out", str(tmp_path / "b")]) == 0
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    recipe = C.ColocaliseConfig().to_dict()
    assert cfg["stop_partner"] is True and cfg["scale_anneal"] == recipe["scale_anneal"] and cfg["lr"] == recipe["lr"]
    m = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert m["final_theta_mean"][0] == pytest.approx(28 / 84, abs=1e-6)  # the window shrank to 28x28


def test_reproduce_table5_runs_cells_skips_finished_ones_and_reports(tmp_path, synthetic_task, capsys):
    out = tmp_path / "t5"
    argv = ["reproduce", "table5", "--digits", "7", "--variants", "t", "--steps", "3", "--batch-size", "4",
            "--quiet", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    table = (out / "results.md").read_text()
    assert "| 7 | " in table and "| 1 | - |" in table and "75-93%" in table
    stamp = (out / "T" / "digit7" / "metrics.json").stat().st_mtime_ns
    assert main(argv) == 0  # the finished cell is skipped
    assert (out / "T" / "digit7" / "metrics.json").stat().st_mtime_ns == stamp
    # ... also when it was run before lr_scale_power existed (it ran as its 0, the recipe's value)
    f = out / "T" / "digit7" / "metrics.json"
    m = json.loads(f.read_text())
    del m["config"]["lr_scale_power"]
    f.write_text(json.dumps(m))
    stamp = f.stat().st_mtime_ns
    assert main(argv) == 0 and f.stat().st_mtime_ns == stamp
    # ... but not a run from before probabilities and optimizer existed (it ran as 0 and sgd, the recipe
    # is 1 and adam): a run of other settings is named, and left as it is
    m = json.loads(f.read_text())
    del m["config"]["probabilities"], m["config"]["optimizer"]
    f.write_text(json.dumps(m))
    before = {p.name: p.read_bytes() for p in f.parent.iterdir()}
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "digit7" in err[0] and "--out" in err[0], err
    assert {p.name: p.read_bytes() for p in f.parent.iterdir()} == before
    assert main(["reproduce", "table5", "--report", "--out", str(out)]) == 0
    assert [r["digit"] for r in json.loads((out / "results.json").read_text())] == [7]
    assert main(["reproduce", "table5", "--report", "--out", str(tmp_path / "empty")]) == 2


def test_config_checks_its_fields():
    with pytest.raises(ValueError, match="digit"):
        C.ColocaliseConfig(digit=11)
    with pytest.raises(ValueError, match="at least 2"):
        C.ColocaliseConfig(batch_size=1)
    with pytest.raises(ValueError, match="lr"):
        C.ColocaliseConfig(lr=float("nan"))
    c = C.ColocaliseConfig(digit=4, clutter=1, bounded=[0.2, 1], scale_anneal=None)
    assert c.variant == "TC" and c.bounded == (0.2, 1.0)
    assert json.loads(json.dumps(c.to_dict()))["bounded"] == [0.2, 1.0]
