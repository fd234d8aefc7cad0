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

MNIST addition (the paper's Table 4, appendix A.1)
--------------------------------------------------
Inputs are 2 x 42 x 42 (one RTS digit per channel), 19 classes (the sums
0..18); :func:`build_addition_model` (or ``build_model(..., task="addition")``)
builds::

    FCN       the FCN above on 2 x 42 x 42 = 3528 inputs
    CNN       the CNN above with 2 input channels, on the full canvas
    ST-FCN    one ST (FCN localisation, 3 x 32 units, seeing both channels,
              warping both) - 2x2 average pool - FCN on 2 x 21 x 21
    2xST-FCN  two such STs in parallel (:class:`npstn.nn.Parallel`), each with
              its own localisation network seeing both channels and warping
              both; their 2-channel outputs concatenated into 4 channels -
              2x2 average pool - FCN on 4 x 21 x 21

with the paper's rule, "all networks have the same number of parameters":
every model's classifier width is chosen so that its total count matches
one budget (:func:`addition_parameter_table`), by default
:data:`ADDITION_BUDGET` = 400,000 parameters, chosen by experiment. The
localisation networks are costly on 3528 inputs (115k parameters each for
affine), so anchoring on the 64-filter CNN as in Table 1 (254,995) leaves the
2xST-FCN's classifier 14 hidden units, a bottleneck: on a 15k-step schedule
it ends at 61.1% test error against 17.6% at 400,000, where the classifier
has 90 (benchmarks/RESULTS.md, "Table 4"). The paper's 2xST-FCN, with the
same localisation networks, beats its FCN five-fold, so its budget was larger
than the CNN's too. ``budget=`` sets another budget for every model at once.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from npstn import nn
from npstn.nn.module import Module, Sequential, passes_on_input_grad
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
    "TASKS",
    "ADDITION_MODELS",
    "ADDITION_INPUT_SIZE",
    "ADDITION_CHANNELS",
    "ADDITION_CLASSES",
    "ADDITION_BUDGET",
    "AdditionSpec",
    "addition_budget",
    "addition_model_spec",
    "build_addition_model",
    "addition_parameter_table",
    "format_addition_parameter_table",
    "MNIST3D_MODELS",
    "MNIST3D_ANCHOR_WIDTH",
    "Mnist3DSpec",
    "mnist3d_model_spec",
    "build_mnist3d_model",
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

#: Tasks: Table 1's distorted MNIST, and Table 4's MNIST addition.
TASKS = ("distortion", "addition", "mnist3d")
#: Architectures of the paper's Table 4 (MNIST addition); "st-fcn" with 1 or 2 transformers.
ADDITION_MODELS = ("fcn", "cnn", "st-fcn")
#: MNIST addition: canvas side, channels (one digit each) and classes (sums 0..18).
ADDITION_INPUT_SIZE = 42
#: MNIST addition: the default parameter budget at 42x42, chosen by experiment (see the module doc).
ADDITION_BUDGET = 400_000
ADDITION_CHANNELS = 2
ADDITION_CLASSES = 19

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


def _cnn_fits(s: int) -> bool:
    """Whether an s x s map survives the CNN classifier (every side along the way >= 1: s >= 21)."""
    return min(_cnn_sides(s)) >= 1


def _cnn_too_small(s: int, hint: str = "") -> ValueError:
    return ValueError(f"a {s}x{s} map is too small for the CNN classifier "
                      f"(9x9 conv, 2x2 pool, 7x7 conv, 2x2 pool need at least 21x21{hint})")


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
    if model in ("cnn", "st-cnn") and not _cnn_fits(cls_side):
        raise _cnn_too_small(cls_side, "; use a larger input_size")
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
    transformer : SpatialTransformer, Parallel or None
        The ST acting on the input (ST models); its ``theta`` and ``grid``
        hold the last forward's transformation, for plotting. For the
        addition task's 2xST-FCN, an :class:`npstn.nn.Parallel` of two STs
        (see :attr:`transformers`).
    downsample : AvgPool2d, Project or None
        The 2x2 average pool after the ST on RTS and TC; for 3D MNIST the
        projection of the volume to 2D (:class:`npstn.nn.Project`).
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

    @property
    def transformers(self) -> tuple:
        """The model's spatial transformers, in order: () for FCN/CNN, one, or two (2xST)."""
        t = self.transformer
        if t is None:
            return ()
        if isinstance(t, SpatialTransformer):
            return (t,)
        return tuple(m for m in t.children() if isinstance(m, SpatialTransformer))

    def _stages(self) -> list[Module]:
        return [m for m in (self.transformer, self.downsample, self.classifier) if m is not None]

    needs_input_grad = passes_on_input_grad(
        lambda self: self._stages()[:1],
        """Whether ``backward`` must return dL/dinput (default True).

        Set it False when the input is data that needs no gradient (training
        does): the first stage is told so and skips the work, and
        ``backward`` returns None, as torch leaves ``x.grad`` None. The
        CNN's first convolution skips its input gradient (a third of its
        backward), the FCN's first Linear its dL/dX, a transformer the
        sampler's scatter (eq. 6) and its localisation network's input
        gradient. Parameter gradients are unchanged, bit for bit.
        """)

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
        size = f"{s.input_size}x{s.input_size}"
        if getattr(s, "task", None) == "addition":
            t = f", task='addition', transformers={s.transformers}" + t
            size = f"{s.channels}x{size}"
        elif getattr(s, "task", None) == "mnist3d":
            t = ", task='mnist3d'" + t
            size = f"{s.input_size}x{size}"
        return f"model={s.model!r}{t}, input={size}, width={s.width}, params={s.params}"


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
                input_size: int | None = None, channels: int | None = None,
                num_classes: int | None = None, width: int | None = None,
                loc_lr_mult: float | None = None, seed: int | None = None,
                backend: str | None = None, task: str | None = None,
                transformers: int = 1, budget: int | None = None) -> PaperModel:
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
    channels, num_classes : input channels and classes; None: 1 and 10
        (distorted MNIST), 2 and 19 (addition; no other values allowed there).
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
    task : "distortion" (default, Table 1), "addition" (Table 4) or "mnist3d" (A.3)
        With "addition" the call is :func:`build_addition_model` (name "fcn",
        "cnn" or "st-fcn"; ``distortion`` must be "rts" or None); with
        "mnist3d" :func:`build_mnist3d_model` (name "fcn" or "st-fcn",
        ``input_size`` the volume's side, ``budget`` as for addition).
    transformers : int
        Addition only: 1 or 2 spatial transformers in parallel (ST models).
    budget : int, optional
        Addition only: the parameter budget (default: the anchor CNN's).
    """
    task = _check_task(task)
    if task == "addition":
        if distortion is not None and str(distortion).lower() != "rts":
            raise ValueError(f"the addition task distorts each digit with RTS; got distortion={distortion!r} "
                             "(pass distortion='rts' or None)")
        for arg, value, fixed in (("channels", channels, ADDITION_CHANNELS),
                                  ("num_classes", num_classes, ADDITION_CLASSES)):
            if value is not None and int(value) != fixed:
                raise ValueError(f"the addition task has {arg}={fixed}; got {arg}={value!r} (leave it None)")
        return build_addition_model(name, transform, transformers=transformers, input_size=input_size,
                                    width=width, budget=budget, loc_lr_mult=loc_lr_mult, seed=seed,
                                    backend=backend)
    if task == "mnist3d":
        if transformers != 1:
            raise ValueError("the mnist3d task has one 3D transformer; leave transformers at 1")
        return build_mnist3d_model(name, input_size=28 if input_size is None else input_size, width=width,
                                   budget=budget, loc_lr_mult=loc_lr_mult, seed=seed, backend=backend)
    if budget is not None or transformers != 1:
        raise ValueError("transformers= and budget= belong to the addition task; pass task='addition'")
    channels = 1 if channels is None else channels
    num_classes = 10 if num_classes is None else num_classes
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


# ----------------------------------------------------------------------------
# MNIST addition (Table 4)
# ----------------------------------------------------------------------------
def _check_task(task) -> str:
    if task is None:
        return "distortion"
    if not isinstance(task, str) or task.lower() not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return task.lower()


@dataclass(frozen=True)
class AdditionSpec(ModelSpec):
    """A :class:`ModelSpec` for the MNIST-addition task.

    ``transformers`` is the number of spatial transformers (0 for FCN and
    CNN, 1 for ST-FCN, 2 for 2xST-FCN); ``task`` is always "addition".
    ``channels`` (2) is the input's; the classifier sees
    ``classifier_channels`` = ``transformers * channels`` for 2xST-FCN.
    """

    transformers: int = 0
    task: str = "addition"

    @property
    def classifier_channels(self) -> int:
        return self.channels * max(1, self.transformers)

    @property
    def label(self) -> str:
        """The model's name in Table 4: "FCN", "CNN", "ST-FCN affine", "2xST-FCN tps"."""
        base = self.model.upper()
        if self.transformers == 2:
            base = "2x" + base
        return f"{base} {self.transform}" if self.transform else base


def _check_transformers(model: str, transformers) -> int:
    if isinstance(transformers, bool) or not isinstance(transformers, (int, np.integer)) \
            or transformers not in (1, 2):
        raise ValueError(f"transformers must be 1 or 2, got {transformers!r}")
    if transformers == 2 and not model.startswith("st-"):
        raise ValueError(f"transformers=2 needs an ST model ('st-fcn'); {model!r} has no transformer")
    return int(transformers) if model.startswith("st-") else 0


def _addition_params(model: str, side: int, p: int, transformers: int, width: int) -> int:
    c, k = ADDITION_CHANNELS, ADDITION_CLASSES
    if model == "fcn":
        return _fcn_params(c * side * side, width, k)
    if model == "cnn":
        return _cnn_params(side, c, width, k)
    cls = side // 2
    return (transformers * _loc_fcn_params(c * side * side, p)
            + _fcn_params(transformers * c * cls * cls, width, k))


def addition_budget(side: int, budget: int | None = None) -> tuple[int | None, str]:
    """The parameter count Table 4's models are matched to on a ``side`` x ``side`` input, and its source.

    ``(budget, "given")`` when one is given; at the task's 42x42,
    ``(ADDITION_BUDGET, "default")`` (npstn's, chosen by experiment); on
    another side, the CNN with :data:`ANCHOR_FILTERS` filters on it,
    ``(count, "cnn")``, or ``(None, "none")`` where that CNN does not fit.
    """
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
            raise ValueError(f"budget must be a positive int (a parameter count), got {budget!r}")
        return int(budget), "given"
    if side == ADDITION_INPUT_SIZE:
        return ADDITION_BUDGET, "default"
    if _cnn_fits(side):
        return _cnn_params(side, ADDITION_CHANNELS, ANCHOR_FILTERS, ADDITION_CLASSES), "cnn"
    return None, "none"


def addition_model_spec(name: str, transform: str = "affine", *, transformers: int = 1,
                        input_size: int | None = None, width: int | None = None,
                        budget: int | None = None) -> AdditionSpec:
    """The architecture :func:`build_addition_model` builds, without building it.

    ``budget`` (default: :data:`ADDITION_BUDGET` at the task's 42x42; on
    another ``input_size``, the CNN with :data:`ANCHOR_FILTERS` filters on it)
    is the parameter count every model is matched to: with ``width=None`` the
    classifier width (FCN hidden units, CNN filters) is the one whose *total*
    count (localisation networks included) is closest to it.
    """
    if not isinstance(name, str) or name.lower() not in ADDITION_MODELS:
        raise ValueError(f"unknown addition model {name!r}; expected one of {', '.join(ADDITION_MODELS)} "
                         "(2xST-FCN is 'st-fcn' with transformers=2)")
    model = name.lower()
    n_st = _check_transformers(model, transformers)
    side = ADDITION_INPUT_SIZE if input_size is None else int(input_size)
    if side < 2 or side % 2:
        raise ValueError(f"input_size must be an even int >= 2 (the ST is followed by a 2x2 average pool), "
                         f"got {input_size!r}")
    cnn_fits = _cnn_fits(side)
    if model == "cnn" and not cnn_fits:
        raise _cnn_too_small(side)
    p = get_transform(transform).num_params if n_st else 0
    tname = get_transform(transform).name if n_st else None
    target, _ = addition_budget(side, budget)
    if target is None:
        if width is None:
            raise ValueError(f"on a {side}x{side} input there is no anchor CNN to fix the budget; "
                             "give width= or budget=")
        target = 0

    def count(w: int) -> int:
        return _addition_params(model, side, p, n_st, w)

    if width is None:
        widths = range(1, 4097) if model != "cnn" else range(1, 257)
        width = min(widths, key=lambda w: (abs(count(w) - target), w))
    elif isinstance(width, bool) or int(width) < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    width = int(width)
    return AdditionSpec(model, tname, side, ADDITION_CHANNELS, ADDITION_CLASSES, bool(n_st),
                        width, count(width), target, transformers=n_st)


def build_addition_model(name: str, transform: str = "affine", *, transformers: int = 1,
                         input_size: int | None = None, width: int | None = None,
                         budget: int | None = None, loc_lr_mult: float | None = None,
                         seed: int | None = None, backend: str | None = None) -> PaperModel:
    """Build a model for MNIST addition (the paper's Table 4) as a float32 :class:`PaperModel`.

    Input (N, 2, S, S), S = 42 (one RTS digit per channel); output (N, 19)
    logits over the sums 0..18. See the module doc for the architectures.

    Parameters
    ----------
    name : "fcn", "cnn" or "st-fcn"
    transform : "affine", "projective", "tps" or "attention" (ST-FCN only)
    transformers : 1 (ST-FCN) or 2 (2xST-FCN); ignored (recorded as 0) for FCN and CNN
    input_size : even square input side (default 42); smaller sizes suit
        gradient checks (give ``width`` when the CNN does not fit).
    width : FCN hidden units / CNN filters; None matches the budget.
    budget : parameter count to match (default :data:`ADDITION_BUDGET` at 42x42).
    loc_lr_mult, seed, backend : as for :func:`build_model`.

    The model's ``spec`` is an :class:`AdditionSpec` (``task="addition"``,
    ``transformers``); ``model.transformers`` lists its STs in order.
    """
    spec = addition_model_spec(name, transform, transformers=transformers, input_size=input_size,
                               width=width, budget=budget)
    if seed is not None:
        nn.init.manual_seed(int(seed))
    side, c, k = spec.input_size, spec.channels, spec.num_classes
    transformer = downsample = None
    if spec.transformers:
        P = get_transform(spec.transform).num_params
        sts = [SpatialTransformer(_loc_fcn(c * side * side, P), spec.transform, output_size=None,
                                  loc_lr_mult=loc_lr_mult, backend=backend)
               for _ in range(spec.transformers)]
        transformer = sts[0] if len(sts) == 1 else nn.Parallel(*sts, dim=1)
        downsample = nn.AvgPool2d(2)
    cls_side = spec.classifier_input_size
    if spec.model == "cnn":
        classifier = _cnn(side, c, spec.width, k)
    else:
        classifier = _fcn(spec.classifier_channels * cls_side * cls_side, spec.width, k)
    model = PaperModel(classifier, transformer, downsample, spec)
    n = model.num_parameters()
    if n != spec.params:  # the closed-form count and the modules must agree
        raise AssertionError(f"build_addition_model: built {n} parameters but the spec says {spec.params}")
    return model


#: The rows of Table 4: (model, transformers), the ST rows once per transform.
_ADDITION_ROWS = (("fcn", 1), ("cnn", 1), ("st-fcn", 1), ("st-fcn", 2))


def addition_parameter_table(*, input_size: int | None = None, budget: int | None = None,
                             transforms=("affine", "projective", "tps")) -> list[dict]:
    """One row per Table 4 model: widths and parameter counts for MNIST addition.

    Each row: ``model``, ``transform`` (None for FCN/CNN), ``transformers``,
    ``label`` (e.g. "2xST-FCN tps"), ``width``, ``params``, ``target`` and
    ``deviation`` (params / target - 1).
    """
    rows = []
    for model, n_st in _ADDITION_ROWS:
        for t in (transforms if model.startswith("st-") else (None,)):
            s = addition_model_spec(model, t or "affine", transformers=n_st, input_size=input_size,
                                    budget=budget)
            rows.append({"model": s.model, "transform": s.transform, "transformers": s.transformers,
                         "label": s.label, "input_size": s.input_size, "width": s.width,
                         "params": s.params, "target": s.target,
                         "deviation": s.params / s.target - 1.0})
    return rows


def format_addition_parameter_table(**kwargs) -> str:
    """:func:`addition_parameter_table` as a Markdown table."""
    rows = addition_parameter_table(**kwargs)
    side = rows[0]["input_size"]
    anchor = {"default": " (npstn's default)", "cnn": f" = CNN with {ANCHOR_FILTERS} filters"}.get(
        addition_budget(side, kwargs.get("budget"))[1], "")
    lines = [f"Parameter counts, MNIST addition ({ADDITION_CHANNELS}x{side}x{side} input, "
             f"{ADDITION_CLASSES} classes); budget{anchor} = {rows[0]['target']:,}",
             "",
             "| model | transformers | width | parameters | vs budget |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        unit = "filters" if r["model"] == "cnn" else "units"
        lines.append(f"| {r['label']} | {r['transformers']} | {r['width']} {unit} | "
                     f"{r['params']:,} | {100 * r['deviation']:+.1f}% |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# 3D MNIST (appendix A.3): a 3D transformer, a projection, a 2D classifier
# ----------------------------------------------------------------------------
#: The 3D-MNIST models: the FCN on the projection of the untouched volume, and
#: the ST-FCN whose 3D transformer turns the volume before the projection.
MNIST3D_MODELS = ("fcn", "st-fcn")
#: The ST-FCN's classifier width that fixes the task's parameter budget.
MNIST3D_ANCHOR_WIDTH = 128


@dataclass(frozen=True)
class Mnist3DSpec(ModelSpec):
    """A :class:`ModelSpec` for 3D MNIST: inputs (N, 1, S, S, S), ``input_size`` = S; ``task`` "mnist3d"."""

    task: str = "mnist3d"


def _mnist3d_params(model: str, side: int, width: int) -> int:
    cls = _fcn_params(side * side, width, 10)
    return cls + (_loc_fcn_params(side ** 3, 12) if model == "st-fcn" else 0)


def mnist3d_model_spec(name: str, *, input_size: int = 28, width: int | None = None,
                       budget: int | None = None) -> Mnist3DSpec:
    """The architecture :func:`build_mnist3d_model` builds, without building it.

    Both models end in the same FCN (three weight layers) on the S x S
    projection. The budget (default: the ST-FCN with a classifier of
    :data:`MNIST3D_ANCHOR_WIDTH` hidden units) is matched by the classifier
    width, as in Table 1: the FCN gets the units the ST-FCN spends on its
    localisation network.
    """
    if not isinstance(name, str) or name.lower() not in MNIST3D_MODELS:
        raise ValueError(f"unknown 3D-MNIST model {name!r}; expected one of {', '.join(MNIST3D_MODELS)}")
    model = name.lower()
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 2:
        raise ValueError(f"input_size must be an int >= 2 (the volume's side), got {input_size!r}")
    side = int(input_size)
    if budget is None:
        target = _mnist3d_params("st-fcn", side, MNIST3D_ANCHOR_WIDTH)
    elif isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"budget must be a positive int (a parameter count), got {budget!r}")
    else:
        target = int(budget)
    if width is None:
        width = min(_FCN_WIDTHS, key=lambda w: (abs(_mnist3d_params(model, side, w) - target), w))
    elif isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    width = int(width)
    transform = "affine3d" if model == "st-fcn" else None
    return Mnist3DSpec(model, transform, side, 1, 10, False, width, _mnist3d_params(model, side, width), target)


def build_mnist3d_model(name: str, *, input_size: int = 28, width: int | None = None,
                        budget: int | None = None, loc_lr_mult: float | None = None,
                        seed: int | None = None, backend: str | None = None) -> PaperModel:
    """Build a 3D-MNIST model (appendix A.3) as a float32 :class:`PaperModel`.

    Input (N, 1, S, S, S) volumes (:mod:`npstn.data.mnist3d`), output (N, 10) logits::

        FCN     Project (mean over depth) - FCN on S x S
        ST-FCN  ST(affine3d; localisation Flatten - 3 x (Linear(., 32) - ReLU) - Linear(32, 12),
                identity-initialised) - Project - FCN on S x S

    The projection sits in the model's ``downsample`` slot (the stage after
    the transformer), so ``model.transformer.theta`` is the learnt 3D
    transformation, as for the 2D models.
    """
    spec = mnist3d_model_spec(name, input_size=input_size, width=width, budget=budget)
    if seed is not None:
        nn.init.manual_seed(int(seed))
    s = spec.input_size
    transformer = None
    if spec.model == "st-fcn":
        transformer = SpatialTransformer(_loc_fcn(s ** 3, 12), "affine3d", output_size=None,
                                         loc_lr_mult=loc_lr_mult, backend=backend)
    model = PaperModel(_fcn(s * s, spec.width, 10), transformer, nn.Project("mean", backend=backend), spec)
    n = model.num_parameters()
    if n != spec.params:  # the closed-form count and the modules must agree
        raise AssertionError(f"build_mnist3d_model: built {n} parameters but the spec says {spec.params}")
    return model
