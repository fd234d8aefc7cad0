"""TrainConfig: every setting of a training run, and the defaults npstn chose.

The paper's protocol (Jaderberg et al. 2015, A.4; docs/PAPER.md) is the
default: SGD with batch 256, base learning rate 0.01 divided by 10 at 1/3 and
2/3 of the run (the paper's 50k and 100k of 150k steps), cross-entropy, no
weight decay, no dropout. Settings the paper does not state (momentum, the
localisation learning-rate multiplier, input scaling, fixed or fresh training
data) were chosen by experiment; the experiments and their numbers are in
docs/training.md and benchmarks/RESULTS.md.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass

import numpy as np

from npstn.models import ADDITION_MODELS, INPUT_SIZES, MNIST3D_MODELS, MODELS, TASKS, TRANSFORM_NAMES
from npstn.nn.optim import drop_fractions, drop_milestones

#: SGD momentum used unless told otherwise (chosen by experiment; see docs/training.md).
DEFAULT_MOMENTUM = 0.9



#: Learning-rate multiplier of localisation networks (chosen by experiment; see docs/training.md).
DEFAULT_LOC_LR_MULT = 1.0

#: The addition task's (Table 4) multiplier for its ST models: at 1.0 the 2xST-FCN comes apart during
#: the long phase at lr 0.01; at 0.1 both ST-FCNs train faster and stay stable (docs/training.md).
ADDITION_LOC_LR_MULT = 0.1



# Fields of TrainConfig that change the trained weights: a resumed run must
# agree with its checkpoint on all of them. The others (where data and
# outputs live, how often to evaluate or checkpoint, the backend) may change.
_DETERMINING = ("model", "transform", "distortion", "steps", "batch_size", "lr", "lr_drops",
                "lr_gamma", "momentum", "loc_lr_mult", "weight_decay", "seed", "width",
                "log_every", "max_loss", "input_norm", "train_set", "task", "transformers", "budget",
                "volume_size")



#: How the input pixels reach the network: as they are ([0, 1]), or standardised.
INPUT_NORMS = ("none", "standardize")
#: Inputs are standardised unless told otherwise (chosen by experiment: docs/training.md, and the
#: Table 1 cause study in benchmarks/RESULTS.md; RTS, 30k steps: FCN 12.83 -> 9.21%, ST-FCN 1.85 -> 1.46%).
DEFAULT_INPUT_NORM = "standardize"
#: What a stored configuration that predates a field was trained with (config.json files written
#: before the field existed): a missing ``input_norm`` means raw pixels, a missing ``train_set`` fresh data.
LEGACY_DEFAULTS = {"input_norm": "none", "train_set": "fresh"}



#: Where the training digits come from: fresh distortions every step, or one fixed distorted copy.
TRAIN_SETS = ("fresh", "fixed")



@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``config.json`` in the run folder.

    Attributes
    ----------
    task : "distortion" (the default: distorted MNIST, Table 1), "addition"
        (MNIST addition, Table 4: two RTS digits in two channels, the label
        their sum; ``distortion`` must be "rts" and ``model`` "fcn", "cnn"
        or "st-fcn"; see :mod:`npstn.data.addition`) or "mnist3d" (3D MNIST, the paper's appendix A.3: digits extruded
        into volumes of ``volume_size``^3, turned and moved in 3D; models
        "fcn" (on the projection) and "st-fcn" (a 3D affine transformer, then
        the projection); ``transform`` stays "affine", which is 3D here; see
        :mod:`npstn.data.mnist3d`)
    transformers : addition only: 1 (ST-FCN) or 2 (2xST-FCN, two transformers in parallel)
    budget : addition and mnist3d: the parameter count the models are matched to
        (None: the task's default, see :func:`npstn.models.addition_model_spec`,
        :func:`npstn.models.mnist3d_model_spec`)
    volume_size : mnist3d only: the volumes' side S (default 28)
    model : "fcn", "cnn", "st-fcn" or "st-cnn"
    transform : "affine", "projective", "tps" or "attention" (ST models)
    distortion : "r", "rts", "p", "e" or "tc"
    steps : training steps (the paper: 150_000)
    batch_size : the paper: 256
    lr : base learning rate (the paper: 0.01)
    lr_drops : fractions of ``steps`` at which the rate is multiplied by
        ``lr_gamma`` (default 1/3 and 2/3: the paper's 50k and 100k of 150k)
    momentum : see :data:`DEFAULT_MOMENTUM`
    loc_lr_mult : the localisation networks' learning-rate multiplier; None (the
        default) resolves to :data:`ADDITION_LOC_LR_MULT` for the addition
        task's ST models and :data:`DEFAULT_LOC_LR_MULT` otherwise (the
        resolved number is what ``to_dict`` stores)
    weight_decay : L2 penalty (the paper: none)
    seed : seeds the initial weights and the training data stream
    width : classifier width override (None: parameter-matched, see npstn.models)
    input_norm : "standardize" (the default, :data:`DEFAULT_INPUT_NORM`) or "none" (pixels in [0, 1]);
        standardize:
        subtract the mean and divide by the standard deviation of the
        distorted training pixels (measured on 8192 training images drawn
        with a fixed generator, independent of ``seed``), for training and
        test images alike
    train_set : "fresh" (the default: every batch distorts freshly drawn
        digits) or "fixed": every training digit is distorted once, at the
        start, with a generator derived from ``seed``, and batches are drawn
        from that fixed set (a fixed 60k-image training set, as many
        replications use)
    eval_every : evaluate on the test set every this many steps (None: steps // 10)
    checkpoint_every : write a checkpoint every this many steps (None: min(1000, steps // 10))
    log_every : write a CSV row (means over the window) every this many steps
        (None: min(100, steps // 100))
    eval_batch_size : test images per forward pass when evaluating
    max_loss : a training loss above this (or NaN/inf) stops the run as diverged
    backend : "numpy", "cpu", "cuda" or None (the process default)
    data_dir : folder with the MNIST IDX files (None: NPSTN_DATA_DIR, the cache, download)
    out : the run folder
    """

    task: str = "distortion"
    transformers: int = 1
    budget: int | None = None
    volume_size: int = 28
    model: str = "st-fcn"
    transform: str = "affine"
    distortion: str = "rts"
    steps: int = 150_000
    batch_size: int = 256
    lr: float = 0.01
    lr_drops: tuple = (1 / 3, 2 / 3)
    lr_gamma: float = 0.1
    momentum: float = DEFAULT_MOMENTUM
    loc_lr_mult: float | None = None
    weight_decay: float = 0.0
    seed: int = 0
    width: int | None = None
    eval_every: int | None = None
    checkpoint_every: int | None = None
    log_every: int | None = None
    eval_batch_size: int = 250
    max_loss: float = 100.0
    input_norm: str = DEFAULT_INPUT_NORM
    train_set: str = "fresh"
    backend: str | None = None
    data_dir: str | None = None
    out: str = "runs/run"

    def __post_init__(self):
        self.model = str(self.model).lower()
        self.transform = str(self.transform).lower()
        self.distortion = str(self.distortion).lower()
        self.lr_drops = drop_fractions(self.lr_drops)
        if self.loc_lr_mult is None:
            addition_st = str(self.task).lower() == "addition" and self.model.startswith("st-")
            self.loc_lr_mult = ADDITION_LOC_LR_MULT if addition_st else DEFAULT_LOC_LR_MULT
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.transform not in TRANSFORM_NAMES:
            raise ValueError(f"transform must be one of {', '.join(TRANSFORM_NAMES)}, got {self.transform!r}")
        if self.distortion not in INPUT_SIZES:
            raise ValueError(f"distortion must be one of {', '.join(INPUT_SIZES)}, got {self.distortion!r}")
        for name in ("steps", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        for name in ("eval_every", "checkpoint_every", "log_every", "width"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name} must be None or a positive int, got {v!r}")
        for name in ("lr", "momentum", "loc_lr_mult", "weight_decay", "max_loss"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        for name, allowed in (("input_norm", INPUT_NORMS), ("train_set", TRAIN_SETS)):
            v = getattr(self, name)
            if v not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {v!r}")
        self._check_task()

    def _check_task(self) -> None:
        """The fields of the addition and mnist3d tasks, and their absence elsewhere."""
        self.task = str(self.task).lower()
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        t = self.transformers
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t not in (1, 2):
            raise ValueError(f"transformers must be 1 or 2, got {t!r}")
        b = self.budget
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1):
            raise ValueError(f"budget must be None or a positive int (a parameter count), got {b!r}")
        v = self.volume_size
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2:
            raise ValueError(f"volume_size must be an int >= 2, got {v!r}")
        if self.task != "mnist3d" and v != 28:
            raise ValueError("volume_size belongs to the mnist3d task; set task='mnist3d' (--task mnist3d)")
        if self.task == "distortion":
            if t != 1 or b is not None:
                raise ValueError("transformers and budget belong to the addition task; set task='addition' "
                                 "(--task addition)")
            return
        if self.task == "mnist3d":
            if self.model not in MNIST3D_MODELS:
                raise ValueError(f"the mnist3d task's models are {', '.join(MNIST3D_MODELS)}, got {self.model!r}")
            if t != 1:
                raise ValueError("the mnist3d task has one 3D transformer; transformers must be 1")
            if self.transform != "affine":
                raise ValueError(f"the mnist3d task's transformer is the 3D affine one; transform must be "
                                 f"'affine', got {self.transform!r}")
            if self.distortion != "rts":
                raise ValueError(f"the mnist3d task poses its own volumes; leave distortion at its default "
                                 f"('rts'), got {self.distortion!r}")
            if self.train_set != "fresh":
                raise ValueError("the mnist3d task draws fresh volumes every step; train_set must be 'fresh'")
            return
        if self.model not in ADDITION_MODELS:
            raise ValueError(f"the addition task's models are {', '.join(ADDITION_MODELS)}, got {self.model!r} "
                             "(2xST-FCN is st-fcn with transformers=2)")
        if t == 2 and not self.model.startswith("st-"):
            raise ValueError(f"transformers=2 needs the st-fcn model; {self.model!r} has no transformer")
        if self.distortion != "rts":
            raise ValueError(f"the addition task draws RTS digits; distortion must be 'rts', got {self.distortion!r}")
        if self.train_set != "fresh":
            raise ValueError("the addition task draws fresh pairs every step; train_set must be 'fresh'")

    # derived settings ---------------------------------------------------------
    @property
    def milestones(self) -> list[int]:
        """Steps after which the learning rate drops (for 150k steps: 50k and 100k)."""
        return drop_milestones(self.lr_drops, self.steps)

    @property
    def eval_interval(self) -> int:
        return self.eval_every or max(1, self.steps // 10)

    @property
    def checkpoint_interval(self) -> int:
        return self.checkpoint_every or max(1, min(1000, self.steps // 10))

    @property
    def log_interval(self) -> int:
        return self.log_every or max(1, min(100, self.steps // 100))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_drops"] = list(self.lr_drops)
        return d

    @classmethod
    def from_stored(cls, d: dict) -> "TrainConfig":
        """The configuration a stored ``config.json`` describes: a field it predates takes the value
        runs had before the field existed (:data:`LEGACY_DEFAULTS`), not today's default."""
        return cls.from_dict({**{k: v for k, v in LEGACY_DEFAULTS.items() if k not in d}, **d})

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known: {sorted(names)}")
        return cls(**d)

    def describe(self) -> str:
        t = f" ({self.transform})" if self.model.startswith("st-") else ""
        if self.task == "addition":
            n = "2x" if self.transformers == 2 and self.model.startswith("st-") else ""
            return f"{n}{self.model.upper()}{t} on MNIST addition"
        if self.task == "mnist3d":
            t = " (affine3d)" if self.model.startswith("st-") else ""
            return f"{self.model.upper()}{t} on 3D MNIST ({self.volume_size}^3)"
        return f"{self.model.upper()}{t} on {self.distortion.upper()}"



class TrainingDiverged(RuntimeError):
    """The training loss became NaN/inf or exceeded ``max_loss``; the run was stopped."""



def _stored(stored: dict, key: str):
    """A stored configuration's value of ``key``; a field it predates reads as the value runs had
    before the field existed (:data:`LEGACY_DEFAULTS`), else as the field's default."""
    if key in stored:
        return stored[key]
    if key in LEGACY_DEFAULTS:
        return LEGACY_DEFAULTS[key]
    field = {f.name: f for f in dataclasses.fields(TrainConfig)}[key]
    return field.default
