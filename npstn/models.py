"""The paper's MNIST models: FCN, CNN, ST-FCN and ST-CNN (Jaderberg et al. 2015, A.4).

Every model is a :class:`PaperModel`: an optional spatial transformer acting
on the input, an optional 2x2 average pool after it (RTS and TC), and a
classifier with three weight layers::

    FCN     Flatten - Linear(D, h) - ReLU - Linear(h, h) - ReLU - Linear(h, K)
    CNN     Conv(C, 9x9) - ReLU - MaxPool 2 - Conv(C, 7x7) - ReLU - MaxPool 2 - Flatten - Linear(., K)

    ST-FCN  localisation: Flatten - 3 x (Linear(., 32) - ReLU) - Linear(32, P)
    ST-CNN  localisation: MaxPool 2 - Conv(20, 5x5) - ReLU - MaxPool 2 - Conv(20, 5x5) - ReLU
                          - Flatten - Linear(., 20) - ReLU - Linear(20, P)

P is the transform's parameter count (affine 6, attention 3, projective 8,
tps 32). The regression layer starts at the identity transform (zero weights,
identity bias), so an untrained ST passes its input through unchanged.

Choices npstn makes where the paper is silent (tagged [A] in docs/PAPER.md):

* Every max pool uses ``ceil_mode=True``. On even sizes that is identical to
  torch's default floor mode; on odd sizes it keeps the last row and column
  instead of dropping them, and it is what lets the CNN fit the 21x21 map that
  the RTS ST-CNN sees after its average pool (21 -> 13 -> 7 -> 1 -> 1; with
  floor mode the second convolution would have no room).
* The baselines (FCN, CNN) see the full canvas; only the ST models are
  followed by the 2x2 average pool on RTS (42 -> 21) and TC (60 -> 30).
* Parameter matching: within one distortion every model has about the same
  number of parameters. The anchor is the CNN with C = 64 filters in both
  convolutions (the top of the paper's 32-64 range); every other model's
  classifier width (FCN hidden units h, CNN filters C) is then chosen, at
  build time, as the integer that brings its *total* count (localisation
  network included) closest to the CNN's. See :func:`parameter_table`; the
  counts land within 1% of each other (tests assert 5%). A ~400k budget
  (docs/PAPER.md, "Models") is out of reach on 28x28 inputs for CNNs of at most 64
  filters (they top out near 209k), so npstn keeps the filter range and lets
  the budget follow.

Typical use::

    from npstn.models import build_model, parameter_table, format_parameter_table
    model = build_model("st-fcn", transform="affine", distortion="rts", seed=0)
    print(format_parameter_table("rts"))
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from npstn import nn
from npstn.nn.module import Module, Sequential
from npstn.stn.spatial_transformer import SpatialTransformer
from npstn.stn.transforms import get_transform

__all__ = [
    "MODELS",
    "TRANSFORM_NAMES",
    "INPUT_SIZES",
    "DOWNSAMPLED",
    "ANCHOR_FILTERS",
    "PaperModel",
    "ModelSpec",
    "build_model",
    "model_spec",
    "parameter_table",
    "format_parameter_table",
]

#: The four architectures of the paper's Table 1.
MODELS = ("fcn", "cnn", "st-fcn", "st-cnn")
#: Transforms an ST model may use.
TRANSFORM_NAMES = ("affine", "projective", "tps", "attention")
#: Canvas size of each distorted-MNIST variant.
INPUT_SIZES = {"r": 28, "rts": 42, "p": 28, "e": 28, "tc": 60}
#: Variants whose ST is followed by a 2x2 average pool (the paper's RTS and TC).
DOWNSAMPLED = ("rts", "tc")
#: Filters of the anchor CNN that fixes each distortion's parameter budget.
ANCHOR_FILTERS = 64

_LOC_FC = 32  # ST-FCN localisation: three hidden layers of 32 units
_LOC_CONV = 20  # ST-CNN localisation: 20 filters of 5x5, then FC 20
_FCN_WIDTHS = range(8, 2049)
_CNN_WIDTHS = range(4, 257)


# ----------------------------------------------------------------------------
# Sizes and parameter counts, in closed form (tests check them against the
# built modules). ``s`` is a square map's side.
# ----------------------------------------------------------------------------
def _conv(s: int, k: int) -> int:
    """Side after a valid (unpadded, stride 1) k x k convolution."""
    return s - k + 1


def _pool(s: int) -> int:
    """Side after MaxPool2d(2, ceil_mode=True): ceil(s / 2)."""
    return (s + 1) // 2


def _linear_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _conv_params(c_in: int, c_out: int, k: int) -> int:
    return c_out * c_in * k * k + c_out


def _cnn_sides(s: int) -> tuple[int, int, int, int]:
    """Map sides through the CNN classifier: conv9, pool, conv7, pool."""
    a = _conv(s, 9)
    b = _pool(a)
    c = _conv(b, 7)
    d = _pool(c)
    return a, b, c, d


def _fcn_params(d_in: int, hidden: int, classes: int) -> int:
    return (_linear_params(d_in, hidden) + _linear_params(hidden, hidden)
            + _linear_params(hidden, classes))


def _cnn_params(side: int, channels: int, filters: int, classes: int) -> int:
    *_, d = _cnn_sides(side)
    return (_conv_params(channels, filters, 9) + _conv_params(filters, filters, 7)
            + _linear_params(filters * d * d, classes))


def _loc_fcn_params(d_in: int, p: int) -> int:
    return (_linear_params(d_in, _LOC_FC) + 2 * _linear_params(_LOC_FC, _LOC_FC)
            + _linear_params(_LOC_FC, p))


def _loc_cnn_sides(s: int) -> tuple[int, int, int, int]:
    """Map sides through the ST-CNN localisation net: pool, conv5, pool, conv5."""
    a = _pool(s)
    b = _conv(a, 5)
    c = _pool(b)
    d = _conv(c, 5)
    return a, b, c, d


def _loc_cnn_params(side: int, channels: int, p: int) -> int:
    *_, d = _loc_cnn_sides(side)
    return (_conv_params(channels, _LOC_CONV, 5) + _conv_params(_LOC_CONV, _LOC_CONV, 5)
            + _linear_params(_LOC_CONV * d * d, _LOC_CONV) + _linear_params(_LOC_CONV, p))


# ----------------------------------------------------------------------------
# Specs: what will be built, and how many parameters it has
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """Everything that determines one model's architecture.

    ``width`` is the FCN's hidden units or the CNN's filters per convolution;
    ``params`` the total parameter count (localisation network included);
    ``target`` the parameter budget of its distortion (the anchor CNN's count).
    """

    model: str
    transform: str | None
    input_size: int
    channels: int
    num_classes: int
    downsample: bool
    width: int
    params: int
    target: int

    @property
    def classifier_input_size(self) -> int:
        return self.input_size // 2 if self.downsample else self.input_size

    def to_dict(self) -> dict:
        return asdict(self)


def _check_model(name) -> str:
    if not isinstance(name, str) or name.lower() not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return name.lower()


def _resolve_size(distortion, input_size) -> tuple[int, bool]:
    """(input side, whether the ST is followed by a 2x2 average pool)."""
    if distortion is not None:
        d = str(distortion).lower()
        if d not in INPUT_SIZES:
            raise ValueError(
                f"unknown distortion {distortion!r}; expected one of {', '.join(INPUT_SIZES)}"
            )
        size = INPUT_SIZES[d] if input_size is None else int(input_size)
        return size, d in DOWNSAMPLED
    if input_size is None:
        raise ValueError("give a distortion (r, rts, p, e, tc) or an input_size")
    return int(input_size), False


def _check_fits(model: str, side: int, downsample: bool) -> None:
    """Raise a ValueError if the input is too small for the architecture."""
    cls_side = side // 2 if (downsample and model.startswith("st-")) else side
    if model in ("cnn", "st-cnn") and min(_cnn_sides(cls_side)) < 1:
        raise ValueError(
            f"a {cls_side}x{cls_side} map is too small for the CNN classifier "
            "(9x9 conv, 2x2 pool, 7x7 conv, 2x2 pool need at least 21x21; "
            "use a larger input_size)"
        )
    if model == "st-cnn" and min(_loc_cnn_sides(side)) < 1:
        raise ValueError(
            f"a {side}x{side} input is too small for the ST-CNN localisation network "
            "(pool, 5x5 conv, pool, 5x5 conv needs input_size >= 25)"
        )


def _total_params(model: str, side: int, channels: int, classes: int, downsample: bool,
                  p: int, width: int) -> int:
    cls_side = side // 2 if (downsample and model.startswith("st-")) else side
    if model in ("fcn", "st-fcn"):
        n = _fcn_params(channels * cls_side * cls_side, width, classes)
    else:
        n = _cnn_params(cls_side, channels, width, classes)
    if model == "st-fcn":
        n += _loc_fcn_params(channels * side * side, p)
    elif model == "st-cnn":
        n += _loc_cnn_params(side, channels, p)
    return n


def model_spec(name: str, transform: str = "affine", distortion: str | None = "rts", *,
               input_size: int | None = None, channels: int = 1, num_classes: int = 10,
               width: int | None = None) -> ModelSpec:
    """The architecture :func:`build_model` builds, without building it.

    With ``width=None`` the width is chosen so the total parameter count is
    closest to the anchor CNN's on the same input (see the module doc).
    """
    model = _check_model(name)
    side, downsample = _resolve_size(distortion, input_size)
    _check_fits(model, side, downsample)
    p = get_transform(transform).num_params if model.startswith("st-") else 0
    tname = get_transform(transform).name if model.startswith("st-") else None
    target = _cnn_params(side, channels, ANCHOR_FILTERS, num_classes)

    def count(w: int) -> int:
        return _total_params(model, side, channels, num_classes, downsample, p, w)

    if width is None:
        widths = _FCN_WIDTHS if model in ("fcn", "st-fcn") else _CNN_WIDTHS
        width = min(widths, key=lambda w: (abs(count(w) - target), w))
    elif int(width) < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    width = int(width)
    return ModelSpec(model, tname, side, channels, num_classes, downsample and model.startswith("st-"),
                     width, count(width), target)


# ----------------------------------------------------------------------------
# The modules
# ----------------------------------------------------------------------------
class PaperModel(Module):
    """Input -> [spatial transformer] -> [2x2 average pool] -> classifier -> logits.

    Attributes
    ----------
    transformer : SpatialTransformer or None
        The ST acting on the input (ST models); its ``theta`` and ``grid``
        hold the last forward's transformation, for plotting.
    downsample : AvgPool2d or None
        The 2x2 average pool after the ST on RTS and TC.
    classifier : Sequential
        The FCN or CNN (three weight layers).
    spec : ModelSpec
        The architecture's description (sizes, width, parameter count).
    """

    def __init__(self, classifier: Module, transformer: SpatialTransformer | None = None,
                 downsample: Module | None = None, spec: ModelSpec | None = None):
        super().__init__()
        if transformer is not None:
            self.transformer = transformer
        else:
            object.__setattr__(self, "transformer", None)
        if downsample is not None:
            self.downsample = downsample
        else:
            object.__setattr__(self, "downsample", None)
        self.classifier = classifier
        object.__setattr__(self, "spec", spec)

    def _stages(self) -> list[Module]:
        return [m for m in (self.transformer, self.downsample, self.classifier) if m is not None]

    def forward(self, x: np.ndarray) -> np.ndarray:
        for m in self._stages():
            x = m(x)
        return x

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        for m in reversed(self._stages()):
            grad_output = m.backward(grad_output)
        return grad_output

    def extra_repr(self) -> str:
        if self.spec is None:
            return ""
        s = self.spec
        t = f", transform={s.transform!r}" if s.transform else ""
        return f"model={s.model!r}{t}, input={s.input_size}x{s.input_size}, width={s.width}, params={s.params}"


def _fcn(d_in: int, hidden: int, classes: int) -> Sequential:
    return Sequential(
        nn.Flatten(),
        nn.Linear(d_in, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def _cnn(side: int, channels: int, filters: int, classes: int) -> Sequential:
    *_, d = _cnn_sides(side)
    return Sequential(
        nn.Conv2d(channels, filters, 9), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(filters, filters, 7), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Flatten(),
        nn.Linear(filters * d * d, classes),
    )


def _loc_fcn(d_in: int, p: int) -> Sequential:
    return Sequential(
        nn.Flatten(),
        nn.Linear(d_in, _LOC_FC), nn.ReLU(),
        nn.Linear(_LOC_FC, _LOC_FC), nn.ReLU(),
        nn.Linear(_LOC_FC, _LOC_FC), nn.ReLU(),
        nn.Linear(_LOC_FC, p),
    )


def _loc_cnn(side: int, channels: int, p: int) -> Sequential:
    *_, d = _loc_cnn_sides(side)
    return Sequential(
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(channels, _LOC_CONV, 5), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(_LOC_CONV, _LOC_CONV, 5), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(_LOC_CONV * d * d, _LOC_CONV), nn.ReLU(),
        nn.Linear(_LOC_CONV, p),
    )


def build_model(name: str, transform: str = "affine", distortion: str | None = "rts", *,
                input_size: int | None = None, channels: int = 1, num_classes: int = 10,
                width: int | None = None, loc_lr_mult: float | None = None,
                seed: int | None = None, backend: str | None = None) -> PaperModel:
    """Build one of the paper's models as a float32 :class:`PaperModel`.

    Parameters
    ----------
    name : "fcn", "cnn", "st-fcn" or "st-cnn"
    transform : "affine", "projective", "tps" or "attention" (ST models only)
    distortion : "r", "rts", "p", "e", "tc" or None
        Fixes the input size (28/42/28/28/60) and whether a 2x2 average pool
        follows the ST (rts, tc). With None, give ``input_size``.
    input_size : int, optional
        Square input side; overrides the distortion's canvas size.
    channels, num_classes : input channels (1 for MNIST) and classes (10).
    width : int, optional
        FCN hidden units / CNN filters; None (default) matches the parameter
        count to the anchor CNN's (see the module doc).
    loc_lr_mult : float, optional
        Learning-rate multiplier for the localisation network's parameters.
    seed : int, optional
        Seed for the initial weights (:func:`npstn.nn.init.manual_seed`);
        None draws from the current global generator.
    backend : str, optional
        Backend of the ST's grid generator and sampler (None: process default).
    """
    spec = model_spec(name, transform, distortion, input_size=input_size, channels=channels,
                      num_classes=num_classes, width=width)
    if seed is not None:
        nn.init.manual_seed(int(seed))
    side, k = spec.input_size, spec.num_classes
    cls_side = spec.classifier_input_size
    transformer = downsample = None
    if spec.model.startswith("st-"):
        P = get_transform(spec.transform).num_params
        loc = _loc_fcn(channels * side * side, P) if spec.model == "st-fcn" else _loc_cnn(side, channels, P)
        transformer = SpatialTransformer(loc, spec.transform, output_size=None,
                                         loc_lr_mult=loc_lr_mult, backend=backend)
        if spec.downsample:
            downsample = nn.AvgPool2d(2)
    if spec.model in ("fcn", "st-fcn"):
        classifier = _fcn(channels * cls_side * cls_side, spec.width, k)
    else:
        classifier = _cnn(cls_side, channels, spec.width, k)
    model = PaperModel(classifier, transformer, downsample, spec)
    n = model.num_parameters()
    if n != spec.params:  # the closed-form count and the modules must agree
        raise AssertionError(f"build_model: built {n} parameters but the spec says {spec.params}")
    return model


# ----------------------------------------------------------------------------
# The table of counts
# ----------------------------------------------------------------------------
def parameter_table(distortion: str = "rts", *, input_size: int | None = None,
                    num_classes: int = 10,
                    transforms=("affine", "projective", "tps")) -> list[dict]:
    """One row per (model, transform) for a distortion: widths and parameter counts.

    Each row: ``model``, ``transform`` (None for FCN/CNN), ``width``,
    ``params``, ``target`` and ``deviation`` (params / target - 1).
    """
    rows = []
    for model in MODELS:
        ts = transforms if model.startswith("st-") else (None,)
        for t in ts:
            s = model_spec(model, t or "affine", distortion, input_size=input_size,
                           num_classes=num_classes)
            rows.append({"model": s.model, "transform": s.transform, "input_size": s.input_size,
                         "downsample": s.downsample, "width": s.width, "params": s.params,
                         "target": s.target, "deviation": s.params / s.target - 1.0})
    return rows


def format_parameter_table(distortion: str = "rts", **kwargs) -> str:
    """:func:`parameter_table` as a Markdown table."""
    rows = parameter_table(distortion, **kwargs)
    side = rows[0]["input_size"]
    lines = [f"Parameter counts, distortion {distortion!r} ({side}x{side} input); "
             f"budget = CNN with {ANCHOR_FILTERS} filters = {rows[0]['target']:,}",
             "",
             "| model | transform | width | parameters | vs budget |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        unit = "units" if "fcn" in r["model"] else "filters"
        lines.append(f"| {r['model'].upper()} | {r['transform'] or '-'} | {r['width']} {unit} | "
                     f"{r['params']:,} | {100 * r['deviation']:+.1f}% |")
    return "\n".join(lines)
