"""The paper's models: architectures, shapes, parameter-count matching (npstn.models)."""
import numpy as np
import pytest

from npstn import nn
from npstn.models import (
    INPUT_SIZES,
    MODELS,
    TRANSFORM_NAMES,
    build_model,
    format_parameter_table,
    model_spec,
    parameter_table,
)
from npstn.stn import SpatialTransformer

DISTORTIONS = list(INPUT_SIZES)
CASES = [(m, t) for m in MODELS for t in (TRANSFORM_NAMES if m.startswith("st-") else ["affine"])]


@pytest.mark.parametrize("distortion", DISTORTIONS)
def test_parameter_counts_match_within_5_percent(distortion):
    rows = parameter_table(distortion, transforms=TRANSFORM_NAMES)
    assert {r["model"] for r in rows} == set(MODELS)
    counts = [r["params"] for r in rows]
    assert max(counts) / min(counts) - 1 < 0.05, rows
    for r in rows:
        # the closed-form count is what the built modules hold
        model = build_model(r["model"], r["transform"] or "affine", distortion)
        assert model.num_parameters() == r["params"]
        assert model.spec.width == r["width"]


def test_parameter_table_formats_every_model():
    text = format_parameter_table("rts")
    for name in ("FCN", "CNN", "ST-FCN", "ST-CNN", "affine", "projective", "tps"):
        assert name in text
    assert "229,066" in text  # the anchor: a CNN with 64 filters on 42x42


@pytest.mark.parametrize("distortion", DISTORTIONS)
@pytest.mark.parametrize("name,transform", CASES)
def test_forward_backward_shapes(name, transform, distortion):
    model = build_model(name, transform, distortion, seed=0)
    s = INPUT_SIZES[distortion]
    x = np.random.default_rng(0).random((2, 1, s, s), dtype=np.float32)
    logits = model(x)
    assert logits.shape == (2, 10) and logits.dtype == np.float32
    grad_x = model.backward(np.random.default_rng(1).standard_normal((2, 10)).astype(np.float32))
    assert grad_x.shape == x.shape
    for pname, p in model.named_parameters():
        assert p.data.dtype == np.float32, pname
        assert p.grad.shape == p.data.shape and np.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", ["st-fcn", "st-cnn"])
@pytest.mark.parametrize("distortion", ["r", "rts"])
def test_untrained_transformer_is_the_identity(name, distortion):
    model = build_model(name, "affine", distortion, seed=0)
    assert isinstance(model.transformer, SpatialTransformer)
    s = INPUT_SIZES[distortion]
    x = np.random.default_rng(0).random((3, 1, s, s), dtype=np.float32)
    np.testing.assert_allclose(model.transformer(x), x, atol=1e-5)
    np.testing.assert_allclose(model.transformer.theta, np.tile([1, 0, 0, 0, 1, 0], (3, 1)), atol=0)


def test_layout_follows_the_paper():
    fcn = build_model("fcn", distortion="r")
    assert [type(m).__name__ for m in fcn.classifier] == [
        "Flatten", "Linear", "ReLU", "Linear", "ReLU", "Linear"]
    cnn = build_model("cnn", distortion="r")
    convs = [m for m in cnn.classifier if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(9, 9), (7, 7)]
    assert cnn.transformer is None and cnn.downsample is None
    st = build_model("st-fcn", "tps", "rts")
    widths = [m.out_features for m in st.transformer.localization if isinstance(m, nn.Linear)]
    assert widths == [32, 32, 32, 32]  # three hidden layers of 32, then the 32 TPS parameters
    assert isinstance(st.downsample, nn.AvgPool2d)  # RTS: 2x2 average pool after the ST
    stc = build_model("st-cnn", "affine", "r")
    assert stc.downsample is None  # R: no pool
    loc = [type(m).__name__ for m in stc.transformer.localization]
    assert loc == ["MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "Flatten",
                   "Linear", "ReLU", "Linear"]


def test_rts_st_cnn_fits_21x21_with_ceil_mode_pooling():
    # 42 -> avg pool 21 -> conv9 13 -> pool 7 (ceil) -> conv7 1 -> pool 1 (ceil)
    model = build_model("st-cnn", "affine", "rts")
    assert model.spec.classifier_input_size == 21
    assert model.classifier[-1].in_features == model.spec.width
    assert all(m.ceil_mode for m in model.classifier if isinstance(m, nn.MaxPool2d))


def test_loc_lr_mult_applies_to_the_localisation_network_only():
    model = build_model("st-cnn", "affine", "r", loc_lr_mult=0.1)
    for name, p in model.named_parameters():
        assert p.lr_mult == (0.1 if name.startswith("transformer.") else 1.0), name


def test_seed_makes_weights_reproducible():
    a = build_model("st-fcn", "affine", "r", seed=3).state_dict()
    b = build_model("st-fcn", "affine", "r", seed=3).state_dict()
    c = build_model("st-fcn", "affine", "r", seed=4).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["classifier.1.weight"], c["classifier.1.weight"])


def test_width_override_and_input_size():
    spec = model_spec("fcn", distortion=None, input_size=10, width=7, num_classes=3)
    model = build_model("fcn", distortion=None, input_size=10, width=7, num_classes=3)
    assert model.num_parameters() == spec.params == 100 * 7 + 7 + 7 * 7 + 7 + 7 * 3 + 3
    assert model(np.zeros((4, 1, 10, 10), np.float32)).shape == (4, 3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="mlp"), "unknown model"),
    (dict(name="fcn", distortion="xyz"), "unknown distortion"),
    (dict(name="st-fcn", transform="spline"), "unknown transform"),
    (dict(name="cnn", distortion=None, input_size=16), "too small"),
    (dict(name="st-cnn", distortion=None, input_size=22), "too small"),
    (dict(name="fcn", distortion=None), "input_size"),
])
def test_bad_arguments_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)


def test_gradcheck_tiny_st_cnn():
    """End-to-end gradient of a small ST-CNN (every layer in one chain) against finite differences."""
    from npstn.testing import gradcheck

    model = build_model("st-cnn", "affine", distortion=None, input_size=25, width=2, seed=0).double()
    reg = model.transformer.localization[-1]
    rng = np.random.default_rng(0)
    # a generic (non-identity) transform that depends on the input, so sample points sit away
    # from the bilinear kernel's kinks at whole pixels and the localisation net gets gradients
    reg.weight.data[...] = 0.05 * rng.standard_normal(reg.weight.data.shape)
    reg.bias.data[...] = [0.9, 0.12, 0.05, -0.1, 0.85, -0.03]
    x = rng.random((2, 1, 25, 25))
    gradcheck(model, x, max_elements=16, atol=1e-5, rtol=1e-3)


def _parameter_grads(model, x, g, needs_input_grad):
    model.zero_grad()
    model.needs_input_grad = needs_input_grad
    model(x)
    back = model.backward(g)
    return back, [p.grad.copy() for p in model.parameters()]


INPUT_GRAD_CASES = ([(m, t, dict(distortion="rts")) for m, t in CASES]
                    + [("st-fcn", t, dict(task="addition", transformers=k, input_size=12, width=6))
                       for t in ("affine", "tps") for k in (1, 2)]
                    + [("st-fcn", "affine", dict(task="mnist3d", input_size=8))])


@pytest.mark.parametrize("name,transform,kw", INPUT_GRAD_CASES,
                         ids=[f"{n}-{t}-{kw.get('task', 'rts')}-{kw.get('transformers', 1)}"
                              for n, t, kw in INPUT_GRAD_CASES])
def test_no_input_grad_keeps_every_parameter_gradient(name, transform, kw):
    """model.needs_input_grad = False (as training sets it): backward returns None and skips
    the first stage's input gradient (the sampler's scatter, the localisation network's or the
    first layer's dL/dx), and every parameter gradient is the full backward's, bit for bit."""
    model = build_model(name, transform, seed=0, **kw).double()
    spec = model.spec
    shape = ((2, 1, *(spec.input_size,) * 3) if kw.get("task") == "mnist3d"
             else (2, spec.channels, spec.input_size, spec.input_size))
    x = np.random.default_rng(0).random(shape)
    g = np.random.default_rng(1).standard_normal((2, spec.num_classes))
    full, ref = _parameter_grads(model, x, g, True)
    assert full.shape == x.shape
    none, got = _parameter_grads(model, x, g, False)
    assert none is None and not model.needs_input_grad
    for (pname, _), a, b in zip(model.named_parameters(), got, ref):
        np.testing.assert_array_equal(a, b, err_msg=pname)
    for st in model.transformers:  # each transformer, and the first learnable layer of its localisation net
        assert not st.needs_input_grad and not st.localization.needs_input_grad
    if model.transformers:
        assert model.classifier.needs_input_grad  # the classifier's input is the transformer's output
    _, again = _parameter_grads(model, x, g, True)  # and back
    for a, b in zip(again, ref):
        np.testing.assert_array_equal(a, b)


def test_needs_input_grad_must_be_a_bool():
    model = build_model("st-fcn", "affine", "r", seed=0)
    for target in (model, model.transformer, model.classifier):
        with pytest.raises(TypeError, match="needs_input_grad"):
            target.needs_input_grad = "False"
