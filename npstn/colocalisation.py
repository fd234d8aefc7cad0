"""Co-localisation (the paper's A.2 and Table 5): find one digit class in 84x84 canvases, unsupervised.

The task (docs/PAPER.md "Co-localisation"; docs/colocalisation.md)
-------------------------------------------------------------------
A set of ``images`` (100) canvases of ``canvas`` x ``canvas`` (84 x 84)
pixels, each holding one 28x28 MNIST digit of a single class at a uniform
random whole-pixel position (**T**), and for **TC** also 16 random 6x6 crops
of other MNIST digits as clutter (added, clipped to 1). The digit's true box
(its 28x28 frame) is known, and used for scoring only.

An attention spatial transformer (s, t_x, t_y) (paper eq. 2) with a small
localisation network,

    Conv(1 -> 8, 9x9, stride 4) - ReLU - MaxPool 2 - Flatten - FC 8 - ReLU - FC 8 - ReLU - FC 3,

crops a 28x28 window T(I_n) out of each canvas; its regression layer starts
at the centred 28x28 crop, theta_0 = (28/84, 0, 0). A fixed encoder e(.) (the
MNIST CNN of Table 1, trained for classification on plain 28x28 MNIST,
:func:`mnist_encoder`, cached on disk) turns a crop into a descriptor: the
activations of its three layers, flattened and concatenated. With R(I_n) a
random 28x28 crop of the same canvas, the hinge loss over pairs n != m
(:func:`npstn.functional.colocalisation_loss`, alpha = 1)

    L = sum_n sum_{m != n} max(0, ||e(T(I_n)) - e(T(I_m))||^2 - ||e(T(I_n)) - e(R(I_n))||^2 + alpha)

is minimised by SGD on random batches of ``batch_size`` images (all their
ordered pairs), updating only the localisation network. A crop counts as
*localised* when its box has IoU > 0.5 with the digit's true box
(:func:`box_iou`); the metric is the share of the set's images localised.

The box of a crop. With align_corners=False the attention grid's corners
x^t = -+1 (the outer edges of the output's corner pixels) land at
x^s = t_x -+ s, so on a canvas of W pixels the crop covers the pixel
interval ``[(t_x - |s| + 1) W/2, (t_x + |s| + 1) W/2]`` (:func:`theta_to_box`),
and the same in y.

Entry points: :func:`colocalisation_set` (the data), :func:`colocalise` (one
run; ``npstn colocalise``), :func:`reproduce_table5` (``npstn reproduce
table5``), :func:`box_iou`, :func:`theta_to_box`, :func:`mnist_encoder`.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import platform
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import npstn
import npstn.functional as F
from npstn import nn
from npstn.nn.module import Module, Sequential
from npstn.stn.spatial_transformer import SpatialTransformer
from npstn.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = [
    "CANVAS", "DIGIT_SIZE", "NUM_IMAGES", "CLUTTER_PATCHES", "CLUTTER_SIZE", "IOU_THRESHOLD", "DATA_SEED",
    "AS_STATED", "ENCODER_VERSION", "OPTIMIZERS", "PAPER_TABLE5", "RUN_FILES", "ColocaliseConfig", "Encoder",
    "BoundedAttention", "box_iou", "theta_to_box", "box_to_theta", "tracking_correlation", "colocalisation_set",
    "localisation_net", "build_transformer", "cnn_encoder", "mnist_encoder", "encoder_for", "encoder_cache_dir",
    "colocalise", "reproduce_table5", "table5_markdown", "plot_boxes",
]

#: Canvas side (the paper: 84), the digit's frame side, images per set (the paper: about 100).
CANVAS = 84
DIGIT_SIZE = 28
NUM_IMAGES = 100
#: TC clutter: 16 random 6x6 crops of other MNIST digits.
CLUTTER_PATCHES = 16
CLUTTER_SIZE = 6
#: IoU above which a box counts as localised.
IOU_THRESHOLD = 0.5
#: The seed that picks each set's digits, positions and clutter (the paper's arXiv number).
DATA_SEED = 150602025
#: Bumped when a change makes the encoder trainer produce other weights (part of the cache name).
ENCODER_VERSION = 1

#: The paper's Table 5 (percent of images localised, IoU > 0.5): T is 100 for every digit;
#: for TC the paper's text gives a range over the digits, (75, 93) (docs/PAPER.md).
PAPER_TABLE5 = {"T": {d: 100.0 for d in range(10)}, "TC": (75.0, 93.0)}


# ----------------------------------------------------------------------------
# Boxes
# ----------------------------------------------------------------------------
def theta_to_box(theta, canvas: int = CANVAS) -> np.ndarray:
    """Attention parameters (N, 3) = (s, t_x, t_y) -> the crop's boxes (N, 4) = (x0, y0, x1, y1).

    In pixel-edge coordinates of a ``canvas`` x ``canvas`` input (0 = the left
    edge of the first pixel, ``canvas`` = the right edge of the last), for
    align_corners=False: ``x0 = (t_x - |s| + 1) canvas/2``, ``x1 = (t_x + |s| + 1) canvas/2``.
    """
    t = np.asarray(theta, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != 3:
        raise ValueError(f"theta must have shape (N, 3) = (s, t_x, t_y), got {t.shape}")
    s, tx, ty = np.abs(t[:, 0]), t[:, 1], t[:, 2]
    half = canvas / 2.0
    return np.stack([(tx - s + 1) * half, (ty - s + 1) * half, (tx + s + 1) * half, (ty + s + 1) * half], axis=1)


def box_to_theta(boxes, canvas: int = CANVAS) -> np.ndarray:
    """The inverse of :func:`theta_to_box` for square boxes (N, 4) -> (N, 3) (s from the width)."""
    b = np.asarray(boxes, dtype=np.float64)
    s = (b[:, 2] - b[:, 0]) / canvas
    return np.stack([s, (b[:, 0] + b[:, 2]) / canvas - 1, (b[:, 1] + b[:, 3]) / canvas - 1], axis=1)


def box_iou(boxes_a, boxes_b) -> np.ndarray:
    """Intersection over union of corresponding boxes: (N, 4), (N, 4) -> (N,) in [0, 1].

    Boxes are (x0, y0, x1, y1) with x0 <= x1, y0 <= y1 (continuous
    coordinates): IoU = |A n B| / |A u B|, 0 when the union is empty.
    """
    a, b = np.asarray(boxes_a, dtype=np.float64), np.asarray(boxes_b, dtype=np.float64)
    for name, x in (("boxes_a", a), ("boxes_b", b)):
        if x.ndim != 2 or x.shape[1] != 4:
            raise ValueError(f"box_iou: {name} must have shape (N, 4) = (x0, y0, x1, y1), got {x.shape}")
        if not np.isfinite(x).all() or (x[:, 2] < x[:, 0]).any() or (x[:, 3] < x[:, 1]).any():
            raise ValueError(f"box_iou: {name} must hold finite boxes with x0 <= x1 and y0 <= y1")
    if a.shape != b.shape:
        raise ValueError(f"box_iou: boxes_a {a.shape} and boxes_b {b.shape} must have the same shape")
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------
def _check_digit(digit) -> int:
    if isinstance(digit, bool) or not isinstance(digit, (int, np.integer)) or not 0 <= digit <= 9:
        raise ValueError(f"digit must be an int in 0..9, got {digit!r}")
    return int(digit)


def colocalisation_set(digit: int, clutter: bool = False, *, images: int = NUM_IMAGES, canvas: int = CANVAS,
                       seed: int = DATA_SEED, spread: int | None = None, digits=None, labels=None,
                       data_dir=None):
    """One co-localisation set: ``images`` canvases of one digit class, and the digits' true boxes.

    Parameters
    ----------
    digit : the class (0..9); ``images`` distinct examples of it are drawn.
    clutter : False for T, True for TC (16 random 6x6 crops of *other* digits).
    canvas : the canvas side (84); at least 28.
    seed : picks the digits, their positions and the clutter (default :data:`DATA_SEED`).
    spread : None (the paper: anywhere on the canvas), or the largest offset, in pixels along
        each axis, of a digit from the canvas's centre (an easier set, for tests and studies).
    digits, labels : preloaded 28x28 digits (uint8 0..255 or float in [0, 1]) and their
        labels instead of the MNIST *test* split (the encoder trains on the training split).

    Returns
    -------
    x : float32 (images, 1, canvas, canvas) in [0, 1]
    boxes : float64 (images, 4), each digit's 28x28 frame (x0, y0, x1, y1) in pixels
    """
    digit = _check_digit(digit)
    if isinstance(canvas, bool) or not isinstance(canvas, (int, np.integer)) or canvas < DIGIT_SIZE:
        raise ValueError(f"canvas must be an int >= {DIGIT_SIZE}, got {canvas!r}")
    if isinstance(images, bool) or not isinstance(images, (int, np.integer)) or images < 2:
        raise ValueError(f"images must be an int >= 2 (the loss compares pairs), got {images!r}")
    if digits is None and labels is None:
        from npstn.data.distorted import _load_split

        pool, pool_labels = _load_split("test", data_dir)
    else:
        from npstn.data.distorted import _as_digits

        pool, pool_labels = _as_digits(digits, labels, "colocalisation_set")
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(digit, int(bool(clutter)))))
    of_class = np.flatnonzero(pool_labels == digit)
    if len(of_class) < images:
        raise ValueError(f"images={images} is more than the {len(of_class)} images of digit {digit} there are "
                         "to draw from; ask for fewer (--images)")
    idx = rng.choice(of_class, size=int(images), replace=False)
    n, c, s = int(images), int(canvas), DIGIT_SIZE
    if spread is None:
        pos = rng.integers(0, c - s + 1, size=(n, 2))  # top-left (x, y)
    else:
        if isinstance(spread, bool) or not isinstance(spread, (int, np.integer)) or spread < 0:
            raise ValueError(f"spread must be None or a non-negative int, got {spread!r}")
        mid, half = (c - s) // 2, min(int(spread), (c - s) // 2)
        pos = rng.integers(mid - half, mid + half + 1, size=(n, 2))
    x = np.zeros((n, c, c), dtype=np.float32)
    for i in range(n):
        x[i, pos[i, 1]:pos[i, 1] + s, pos[i, 0]:pos[i, 0] + s] = pool[idx[i]]
    if clutter:
        p = CLUTTER_SIZE
        others = np.flatnonzero(~np.isin(np.arange(len(pool)), idx))  # never one of the set's own digits
        src = rng.choice(others, size=(n, CLUTTER_PATCHES))
        crop = rng.integers(0, s - p + 1, size=(n, CLUTTER_PATCHES, 2))
        where = rng.integers(0, c - p + 1, size=(n, CLUTTER_PATCHES, 2))
        for i in range(n):
            for k in range(CLUTTER_PATCHES):
                (cx, cy), (wx, wy) = crop[i, k], where[i, k]
                x[i, wy:wy + p, wx:wx + p] += pool[src[i, k], cy:cy + p, cx:cx + p]
        np.clip(x, 0.0, 1.0, out=x)
    boxes = np.concatenate([pos, pos + s], axis=1).astype(np.float64)
    return x[:, None], boxes


# ----------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------
def localisation_net(canvas: int = CANVAS, filters: int = 8, hidden: int = 8) -> Sequential:
    """The paper's small localisation network: conv 9x9 stride 4 (8 filters), 2x2 max-pool, FC 8, FC 8, FC 3."""
    side = (canvas - 9) // 4 + 1
    side = (side + 1) // 2  # MaxPool2d(2, ceil_mode=True)
    return Sequential(
        nn.Conv2d(1, filters, 9, stride=4), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Flatten(),
        nn.Linear(filters * side * side, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, 3),
    )


def build_transformer(canvas: int = CANVAS, init_scale: float | None = None, seed: int = 0,
                      bounded: tuple | None = None) -> SpatialTransformer:
    """The attention ST producing a 28x28 crop, starting at the centred crop of scale ``init_scale``
    (default 28 / canvas: a 28x28 window). ``bounded=(s_min, s_max)`` appends
    :class:`BoundedAttention` to the localisation network (crops stay inside the canvas)."""
    nn.init.manual_seed(int(seed))
    loc = localisation_net(canvas)
    s0 = DIGIT_SIZE / canvas if init_scale is None else float(init_scale)
    if bounded is not None:
        loc.append(BoundedAttention(*bounded))
    st = SpatialTransformer(loc, "attention", output_size=(DIGIT_SIZE, DIGIT_SIZE))
    reg = [m for m in loc if isinstance(m, nn.Linear)][-1]
    if bounded is not None:
        reg.bias.data[...] = loc[-1].raw_for(np.array([[s0, 0.0, 0.0]]))[0]
    else:
        reg.bias.data[0] = s0
    return st


class BoundedAttention(Module):
    """Maps unconstrained outputs (N, 3) to attention parameters whose crop stays inside the canvas.

    ::

        u   = sigmoid(z_0),      s   = s_min + (s_max - s_min) u
        t_x = (1 - s) tanh(z_1), t_y = (1 - s) tanh(z_2)

    so s lies in (s_min, s_max) and |t| < 1 - s: the box (:func:`theta_to_box`)
    never leaves the canvas (for s_max <= 1). Backward, with G = dL/dtheta and
    s' = (s_max - s_min) u (1 - u)::

        dL/dz_0 = s' (G_s - tanh(z_1) G_tx - tanh(z_2) G_ty)
        dL/dz_1 = (1 - s) (1 - tanh(z_1)^2) G_tx,   dL/dz_2 likewise with G_ty
    """

    def __init__(self, s_min: float = 0.2, s_max: float = 1.0):
        super().__init__()
        if not 0 < s_min < s_max <= 1:
            raise ValueError(f"BoundedAttention: need 0 < s_min < s_max <= 1, got {s_min}, {s_max}")
        self.s_min, self.s_max = float(s_min), float(s_max)
        self._cache = None

    def raw_for(self, theta) -> np.ndarray:
        """The inverse map: z (N, 3) with forward(z) = theta (s strictly inside the range)."""
        t = np.asarray(theta, dtype=np.float64)
        u = (t[:, 0] - self.s_min) / (self.s_max - self.s_min)
        if not ((u > 0) & (u < 1)).all():
            raise ValueError(f"BoundedAttention: s must lie strictly in ({self.s_min}, {self.s_max})")
        room = 1 - t[:, 0]
        return np.stack([np.log(u / (1 - u)), np.arctanh(t[:, 1] / room), np.arctanh(t[:, 2] / room)], axis=1)

    def forward(self, z):
        z64 = np.asarray(z, dtype=np.float64)
        u = 1.0 / (1.0 + np.exp(-z64[:, 0]))
        s = self.s_min + (self.s_max - self.s_min) * u
        th = np.tanh(z64[:, 1:])
        theta = np.concatenate([s[:, None], (1 - s)[:, None] * th], axis=1)
        self._cache = (u, s, th, z.dtype)
        return theta.astype(z.dtype)

    def backward(self, grad_out):
        if self._cache is None:
            raise RuntimeError("BoundedAttention.backward called before forward")
        u, s, th, dtype = self._cache
        g = np.asarray(grad_out, dtype=np.float64)
        ds = (self.s_max - self.s_min) * u * (1 - u)
        gz = np.empty_like(g)
        gz[:, 0] = ds * (g[:, 0] - th[:, 0] * g[:, 1] - th[:, 1] * g[:, 2])
        gz[:, 1:] = (1 - s)[:, None] * (1 - th ** 2) * g[:, 1:]
        return gz.astype(dtype)

    def extra_repr(self) -> str:
        return f"s_min={self.s_min}, s_max={self.s_max}"


class Encoder(Module):
    """A fixed classifier used as a descriptor: its tapped activations, flattened and concatenated.

    ``forward(x)`` (N, C, H, W) -> (N, D), D = the sum of the tapped layers'
    sizes; ``backward(grad)`` (N, D) splits the gradient by tap, adds each part
    to the gradient flowing back into the layer it was tapped after, and
    returns dL/dx. ``taps``: indices into ``net`` (a Sequential) whose outputs
    are tapped (the last layer's output is always a tap). ``probabilities``
    w >= 0: when w > 0, the descriptor also holds the class probabilities,
    w softmax(logits) (K more columns, the logits being the last layer's
    (N, K) output), whose gradient flows back into the logits through
    :func:`npstn.functional.softmax_backward`.
    """

    def __init__(self, net: Sequential, taps, scales=None, probabilities: float = 0.0):
        super().__init__()
        self.net = net
        self.taps = tuple(sorted(set(int(t) for t in taps) | {len(net) - 1}))
        self.scales = (1.0,) * len(self.taps) if scales is None else tuple(float(c) for c in scales)
        if len(self.scales) != len(self.taps):
            raise ValueError(f"Encoder: {len(self.scales)} scales for {len(self.taps)} taps")
        self.probabilities = float(probabilities)
        if not (math.isfinite(self.probabilities) and self.probabilities >= 0):
            raise ValueError(f"Encoder: probabilities must be a finite weight >= 0, got {probabilities!r}")
        self._shapes = None
        self._logits = self._p = None

    def forward(self, x):
        outs = []
        for i, m in enumerate(self.net):
            x = m(x)
            if i in self.taps:
                outs.append(x)
        self._shapes = [o.shape for o in outs]
        parts = [c * o.reshape(o.shape[0], -1) for c, o in zip(self.scales, outs)]
        if self.probabilities:
            self._logits, self._p = outs[-1], F.softmax(outs[-1], 1)
            parts.append(self.probabilities * self._p)
        return np.concatenate(parts, axis=1)

    def with_probabilities(self, w: float) -> "Encoder":
        """This encoder (the same network and scales) with the class probabilities at weight ``w``:
        itself when ``w`` is its weight already, else a new Encoder on the same network (this one
        stays as it is)."""
        if float(w) == self.probabilities:
            return self
        return Encoder(self.net, self.taps, self.scales, probabilities=w)

    def with_layer_weights(self, weights) -> "Encoder":
        """A new Encoder on the same network whose layers' parts are weighed by ``weights`` (one
        factor per tap, on top of the calibrated ``scales``; the probabilities keep their weight):
        0 drops a layer from the descriptor. This one stays as it is."""
        weights = tuple(float(w) for w in weights)
        if len(weights) != len(self.taps) or not all(math.isfinite(w) and w >= 0 for w in weights):
            raise ValueError(f"layer weights must be {len(self.taps)} finite numbers >= 0 (one per layer), "
                             f"got {weights!r}")
        return Encoder(self.net, self.taps, tuple(c * w for c, w in zip(self.scales, weights)),
                       probabilities=self.probabilities)

    def calibrate(self, x) -> tuple:
        """Set ``scales`` so each tap's part has mean squared norm 1 on the images ``x`` (N, C, H, W):
        c_t = 1 / sqrt(mean_n ||a_t(x_n)||^2). The three layers then weigh alike in distances,
        which are O(1), the scale of the hinge's margin alpha = 1 (the probabilities' weight is
        not calibrated: their squared norm is at most 1 already)."""
        self.scales = (1.0,) * len(self.taps)
        d = self.forward(x).astype(np.float64)
        scales, k = [], 0
        for shp in self._shapes:
            size = int(np.prod(shp[1:]))
            ms = float(np.mean(np.sum(d[:, k:k + size] ** 2, axis=1)))
            scales.append(1.0 / math.sqrt(ms) if ms > 0 else 1.0)
            k += size
        self.scales = tuple(scales)
        return self.scales

    def backward(self, grad_out):
        if self._shapes is None:
            raise RuntimeError("Encoder.backward called before forward")
        parts, k = {}, 0
        for t, c, shp in zip(self.taps, self.scales, self._shapes):
            size = int(np.prod(shp[1:]))
            parts[t] = c * grad_out[:, k:k + size].reshape(shp)
            k += size
        if self.probabilities:  # d(w p)/dlogits: the softmax's backward, into the last tap (the logits)
            last = self.taps[-1]
            gp = self.probabilities * np.asarray(grad_out[:, k:], dtype=self._p.dtype)
            parts[last] = parts[last] + F.softmax_backward(gp, self._logits, 1, output=self._p)
        g = None
        for i in range(len(self.net) - 1, -1, -1):
            if i in parts:
                g = parts[i] if g is None else g + parts[i]
            g = self.net[i].backward(g)
        return g


def cnn_encoder(width: int = 64, seed: int = 0) -> Encoder:
    """The Table 1 CNN on 28x28 inputs (``width`` filters; 64 is the paper's anchor) as an Encoder.

    Taps: after the first block (conv 9x9 - ReLU - max-pool: width x 10 x 10), after the
    second (conv 7x7 - ReLU - max-pool: width x 2 x 2) and the logits (10).
    """
    from npstn.models import build_model

    model = build_model("cnn", distortion=None, input_size=DIGIT_SIZE, width=int(width), seed=int(seed))
    return Encoder(model.classifier, taps=(2, 5))


# ----------------------------------------------------------------------------
# The encoder, trained once and cached
# ----------------------------------------------------------------------------
def encoder_cache_dir() -> Path:
    """Where trained encoders are cached: ``$XDG_CACHE_HOME/npstn/encoders`` (default ``~/.cache/...``)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "npstn" / "encoders"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shift_digits(x: np.ndarray, dx, dy) -> np.ndarray:
    """Each image x[i] (N, H, W) moved by (dx[i], dy[i]) whole pixels (right, down), zeros shifted in."""
    x = np.asarray(x)
    n, h, w = x.shape
    k = int(max(np.abs(dx).max(initial=0), np.abs(dy).max(initial=0)))
    pad = np.pad(x, ((0, 0), (k, k), (k, k)))
    rows = (k - np.asarray(dy))[:, None] + np.arange(h)[None, :]  # (N, H)
    cols = (k - np.asarray(dx))[:, None] + np.arange(w)[None, :]  # (N, W)
    return pad[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _train_encoder(width, steps, batch_size, lr, seed, x_train, y_train, x_test, y_test, progress, shift=0):
    from tqdm.auto import tqdm

    from npstn.train.step import evaluate, train_step

    enc = cnn_encoder(width, seed)
    model = enc.net
    opt = nn.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(7,)))
    moves = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(8,)))  # its own stream
    for _ in tqdm(range(int(steps)), desc=f"encoder: CNN ({width} filters) on MNIST", unit="step",
                  disable=not progress, dynamic_ncols=True):
        idx = rng.integers(0, len(x_train), size=batch_size)
        xb = x_train[idx]
        if shift:
            xb = shift_digits(xb, *moves.integers(-shift, shift + 1, size=(2, batch_size)))
        train_step(model, loss_fn, opt, xb[:, None], y_train[idx])
    err = evaluate(model, x_test[:, None], y_test, 500)
    enc.eval()
    enc.calibrate(x_train[np.random.default_rng(0).integers(0, len(x_train), size=512)][:, None])
    return enc, err


#: The most whole pixels ``encoder_shift`` may move a training digit along each axis (half the digit)
MAX_ENCODER_SHIFT = 14


def _check_encoder_shift(shift) -> int:
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) or not 0 <= shift <= MAX_ENCODER_SHIFT:
        raise ValueError(f"encoder shift must be an int from 0 to {MAX_ENCODER_SHIFT} (pixels), got {shift!r}")
    return int(shift)


def mnist_encoder(*, width: int = 32, steps: int = 1500, batch_size: int = 64, lr: float = 0.01, seed: int = 0,
                  shift: int = 0, data_dir=None, cache_dir=None, progress: bool = True, digits=None, labels=None):
    """The encoder e(.): the Table 1 CNN trained for classification on plain 28x28 MNIST, cached.

    Trained with SGD (momentum 0.9, batch ``batch_size``, constant ``lr``) for
    ``steps`` steps on the 60k training digits, pixels in [0, 1], each batch's
    digits moved by a random whole-pixel (dx, dy) in [-shift, shift]^2 when
    ``shift`` > 0; its test error on the 10k (unmoved) test digits is measured
    once. The weights go to
    ``<cache_dir>/mnist-cnn<width>-<steps>x<batch>-lr<lr>-seed<seed>[-shift<shift>]-v<ENCODER_VERSION>.npz``
    (default :func:`encoder_cache_dir`), written atomically, with the file's
    SHA-256 recorded beside it (``<name>.sha256``, written first). On later
    calls the file is used when its digest matches the record; a file npstn
    wrote that no longer matches (damaged) is named in a warning and trained
    again; a file without npstn's record is not npstn's: the ValueError names
    it and npstn never overwrites it. ``digits``/``labels``: preloaded training
    digits instead of MNIST (tests), cached under a fingerprint of them.

    Returns ``(encoder, info)``: an :class:`Encoder` in eval mode, and a dict
    (``path``, ``sha256``, ``test_error_percent``, the settings).
    """
    settings = {"width": int(width), "steps": int(steps), "batch_size": int(batch_size), "lr": float(lr),
                "seed": int(seed), "version": ENCODER_VERSION}
    for k in ("width", "steps", "batch_size"):
        if settings[k] < 1:
            raise ValueError(f"encoder {k} must be a positive int, got {settings[k]!r}")
    shift = _check_encoder_shift(shift)
    if shift:
        settings["shift"] = shift
    name = (f"mnist-cnn{width}-{steps}x{batch_size}-lr{lr:g}-seed{seed}" + (f"-shift{shift}" if shift else "")
            + f"-v{ENCODER_VERSION}")
    if digits is not None or labels is not None:
        from npstn.data.distorted import _as_digits, _fingerprint

        xtr, ytr = _as_digits(digits, labels, "mnist_encoder")
        xte, yte = xtr, ytr
        name += "-" + _fingerprint(xtr, ytr)
    else:
        xtr = xte = None
    folder = Path(cache_dir if cache_dir is not None else encoder_cache_dir()).expanduser()
    path = folder / f"{name}.npz"
    record = folder / f"{name}.npz.sha256"
    if path.exists() or path.is_symlink():
        if not record.is_file():
            raise ValueError(f"encoder cache {str(path)!r} exists but npstn did not write it (no {record.name} "
                             "beside it); npstn will not overwrite it: move it away, or set XDG_CACHE_HOME "
                             "to another folder")
        digest = _sha256(path) if path.is_file() else ""
        if digest == record.read_text().strip():
            try:
                with np.load(path, allow_pickle=False) as f:
                    meta = json.loads(str(f["meta.json"]))
                    state = {k[len("model/"):]: f[k] for k in f.files if k.startswith("model/")}
                enc = cnn_encoder(width, seed)
                enc.net.load_state_dict(state)
                enc.scales = tuple(float(c) for c in meta["scales"])
                enc.eval()
                return enc, {**meta, "path": str(path), "sha256": digest, "cached": True}
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                why = f"unreadable ({type(exc).__name__}: {exc})"
        else:
            why = f"its SHA-256 {digest[:12] or '(not a file)'}... differs from the {record.read_text().strip()[:12]}... npstn recorded"
        if not path.is_file() or path.is_symlink():
            raise ValueError(f"encoder cache {str(path)!r} is not a regular file; move it away")
        warnings.warn(f"encoder cache {path} is damaged ({why}); training the encoder again", stacklevel=2)
    if xtr is None:
        from npstn.data.distorted import _load_split

        xtr, ytr = _load_split("train", data_dir)
        xte, yte = _load_split("test", data_dir)
    t0 = time.perf_counter()
    enc, err = _train_encoder(width, steps, batch_size, lr, seed, xtr, ytr, xte, yte, progress, shift)
    enc.eval()
    meta = {**settings, "test_error_percent": float(err), "train_seconds": time.perf_counter() - t0,
            "scales": list(enc.scales),
            "architecture": "Table 1 CNN on 28x28: conv9-relu-maxpool2-conv7-relu-maxpool2-linear10"}
    arrays = {f"model/{k}": v for k, v in enc.net.state_dict().items()}
    arrays["meta.json"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    blob = buf.getvalue()
    digest = hashlib.sha256(blob).hexdigest()
    try:
        atomic_write_text(record, digest + "\n")  # the record first: a crash leaves a file npstn may replace
        atomic_write_bytes(path, blob)
    except OSError as exc:
        warnings.warn(f"could not write the encoder cache {path} ({exc}); continuing without it", stacklevel=2)
    return enc, {**meta, "path": str(path), "sha256": digest, "cached": False}


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------
@dataclass
class ColocaliseConfig:
    """Every setting of one co-localisation run (saved as ``config.json``).

    The defaults are npstn's recipe, chosen by experiment (docs/colocalisation.md,
    "npstn's recipe"): the paper's loss and networks, with the gradient stopped at
    the other image of each pair (``stop_partner``), s set by a schedule from the
    whole canvas (``init_scale=1``) down to a 28x28 window over the first two
    thirds of the run (``scale_anneal``) instead of learnt, the encoder's class
    probabilities in the descriptor (``probabilities=1``), and Adam at lr 3e-4
    dropped 10x after 2/3 and 5/6 of 3000 steps (``optimizer``). The paper's
    setup as stated (full gradient, s learnt from a 28x28 window, constant rate)
    is ``stop_partner=False, init_scale=None, learn_scale=True, scale_anneal=None,
    lr_drops=(), optimizer="sgd", probabilities=0``: :data:`AS_STATED` (with
    npstn's earlier lr 0.001 and 500 steps).

    digit, clutter : the set (class 0..9; T or TC)
    steps, batch_size, lr : steps on random batches of ``batch_size`` images, all their
        ordered pairs in each step's loss (reduction "mean")
    optimizer : "sgd" (SGD with ``momentum``) or "adam" (Adam, betas (0.9, 0.999); ``momentum``
        unused). Adam's step is the gradient divided by its running RMS, parameter by parameter,
        so the localisation network's hidden layers, whose gradients start near 0 behind a
        zero-initialised regression layer, learn as fast as the regression layer; with SGD they
        often do not, and the crops then sit at nearly the same place in every image
        (docs/colocalisation.md, point 5)
    momentum : SGD's momentum
    lr_drops : fractions of ``steps`` after which the rate drops 10x (() for a constant rate)
    margin : alpha of the hinge (the paper: 1)
    stop_partner : hold the other image of each pair fixed in the backward (a stop-gradient:
        :func:`npstn.functional.colocalisation_loss_backward`); False is the loss's full gradient
    images : images in the set (the paper: about 100)
    seed : the localisation network's initial weights and the batch stream
    data_seed : the set's digits, positions and clutter
    init_scale : s of the initial crop (None: 28/84, a 28x28 window; 1: the whole canvas)
    learn_scale : whether s is learnt (True, the paper's three parameters) or stays at init_scale
    scale_anneal : None, or fractions (a, b) of ``steps``: s is set by a schedule instead of learnt,
        init_scale until step a * steps, then linearly to 28 / canvas (a 28x28 window) at step
        b * steps and after (needs init_scale and learn_scale=False)
    lr_scale_power : p >= 0; with scale_anneal, each step's gradient is multiplied by
        (s / init_scale) ** p before the SGD step (for a factor that changes slowly, the same as
        multiplying the rate; 0: the rate does not follow s). A step in t moves the crop's
        content by t / s crop pixels, so as the window shrinks the same step moves it further;
        p = 1 keeps that move the same size in crop pixels
    probabilities : w >= 0; when w > 0 the descriptor also holds the encoder's class
        probabilities, w softmax(logits) (:class:`Encoder`), beside its three layers. With w = 1
        the true boxes are the lowest point of the loss over shifted crops for every digit on T,
        where the three layers alone prefer crops 8-12 px off for nine digits
        (docs/colocalisation.md); 1 is the recipe (0, the three layers alone, was the first
        recipe's, with SGD)
    eval_every : measure the localised share every this many steps (None: steps // 20)
    encoder_width, encoder_steps, encoder_batch_size, encoder_lr : the encoder (:func:`mnist_encoder`)
    encoder_shift : k >= 0: the encoder's training digits each moved by a random whole-pixel (dx, dy)
        in [-k, k]^2 (:func:`mnist_encoder`'s ``shift``; 0, the default: plain digits)
    """

    digit: int = 0
    clutter: bool = False
    steps: int = 3000
    batch_size: int = 16
    lr: float = 3e-4
    lr_drops: tuple = (0.667, 0.833)
    optimizer: str = "adam"
    momentum: float = 0.9
    margin: float = 1.0
    stop_partner: bool = True
    images: int = NUM_IMAGES
    seed: int = 0
    data_seed: int = DATA_SEED
    init_scale: float | None = 1.0
    learn_scale: bool = False
    bounded: tuple | None = None
    scale_anneal: tuple | None = (0.0, 0.6667)
    lr_scale_power: float = 0.0
    probabilities: float = 1.0
    eval_every: int | None = None
    encoder_width: int = 32
    encoder_steps: int = 1500
    encoder_batch_size: int = 64
    encoder_lr: float = 0.01
    encoder_shift: int = 0
    data_dir: str | None = None
    out: str | None = None

    def __post_init__(self):
        self.digit = _check_digit(self.digit)
        self.clutter = bool(self.clutter)
        self.stop_partner = bool(self.stop_partner)
        for k in ("steps", "batch_size", "images", "encoder_width", "encoder_steps", "encoder_batch_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{k} must be a positive int, got {v!r}")
        self.encoder_shift = _check_encoder_shift(self.encoder_shift)
        if self.images < 2 or self.batch_size < 2:
            raise ValueError("images and batch_size must be at least 2 (the loss compares pairs)")
        if self.bounded is not None:
            if len(self.bounded) != 2:
                raise ValueError(f"bounded must be None or (s_min, s_max), got {self.bounded!r}")
            self.bounded = (float(self.bounded[0]), float(self.bounded[1]))
        self.lr_drops = nn.drop_fractions(self.lr_drops)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.scale_anneal is not None:
            a = tuple(self.scale_anneal)
            if (len(a) != 2 or not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                                       for v in a) or not 0 <= a[0] <= a[1] <= 1):
                raise ValueError("scale_anneal must be None or fractions of the run (a, b) with 0 <= a <= b <= 1, "
                                 f"got {self.scale_anneal!r}")
            if self.init_scale is None or self.learn_scale or self.bounded is not None:
                raise ValueError("scale_anneal sets s by a schedule from init_scale: it needs init_scale, "
                                 "learn_scale=False and no bounded (to learn s, set scale_anneal=None)")
            self.scale_anneal = (float(a[0]), float(a[1]))
        if self.lr_scale_power and self.scale_anneal is None:
            raise ValueError("lr_scale_power makes the rate follow the scale schedule: it needs scale_anneal")
        if self.lr_scale_power and self.optimizer == "adam":
            raise ValueError("lr_scale_power scales the gradient, which Adam divides by its own RMS (no effect): "
                             "it needs optimizer='sgd'")
        if self.eval_every is not None and (not isinstance(self.eval_every, (int, np.integer)) or self.eval_every < 1):
            raise ValueError(f"eval_every must be None or a positive int, got {self.eval_every!r}")
        for k in ("lr", "momentum", "margin", "encoder_lr", "lr_scale_power", "probabilities"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")

    @property
    def variant(self) -> str:
        return "TC" if self.clutter else "T"

    @property
    def eval_interval(self) -> int:
        return self.eval_every or max(1, self.steps // 20)

    @property
    def anneal_steps(self) -> tuple | None:
        """``scale_anneal`` in steps (A, B), or None."""
        if self.scale_anneal is None:
            return None
        return tuple(int(round(f * self.steps)) for f in self.scale_anneal)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bounded"] = None if self.bounded is None else list(self.bounded)  # as JSON stores it
        d["lr_drops"] = list(self.lr_drops)
        d["scale_anneal"] = None if self.scale_anneal is None else list(self.scale_anneal)
        return d


def annealed_scale(step: int, start: float, anneal: tuple, canvas: int = CANVAS) -> float:
    """s at ``step`` of the schedule ``anneal = (A, B)`` (steps): ``start`` until step A, then linearly to
    28 / canvas (a 28x28 window) at step B and after."""
    a, b = anneal
    f = 1.0 if step >= b else 0.0 if step <= a else (step - a) / (b - a)
    return float(start) * (1.0 - f) + DIGIT_SIZE / canvas * f


def encoder_for(config: "ColocaliseConfig", *, progress: bool = True) -> tuple:
    """:func:`mnist_encoder` with ``config``'s encoder settings (width, steps, batch size, rate, data
    folder): the (Encoder, info) pair a run of ``config`` uses."""
    return mnist_encoder(width=config.encoder_width, steps=config.encoder_steps, batch_size=config.encoder_batch_size,
                         lr=config.encoder_lr, shift=config.encoder_shift, data_dir=config.data_dir,
                         progress=progress)


#: ColocaliseConfig.optimizer's choices
OPTIMIZERS = ("sgd", "adam")

#: The paper's setup as stated (the full gradient, s learnt from a centred 28x28 window, a constant
#: rate), with npstn's defaults of before the recipe for the rate and the length:
#: ``ColocaliseConfig(**AS_STATED)`` (``npstn colocalise --as-stated``).
AS_STATED = {"stop_partner": False, "init_scale": None, "learn_scale": True, "scale_anneal": None,
             "lr_drops": (), "lr": 0.001, "steps": 500, "optimizer": "sgd", "probabilities": 0.0}


def _random_crops(n, rng, canvas, dtype):
    """Attention parameters of random 28x28 crops inside the canvas: (n, 3)."""
    s = DIGIT_SIZE / canvas
    t = rng.uniform(-(1 - s), 1 - s, size=(n, 2))
    return np.concatenate([np.full((n, 1), s), t], axis=1).astype(dtype)


def crop_loss(encoder, x, crops, random_theta, margin: float = 1.0, stop_partner: bool = False):
    """The paper's loss on ``crops`` of canvases ``x``, and its gradient in the crops.

    x (N, C, H, W) the canvases; crops (N, C, 28, 28) the transformer's crops
    T(I_n); random_theta (N, 3) the attention parameters of the random crops
    R(I_n) (data: no gradient). e = encoder(crops), r = encoder(R),
    L = colocalisation_loss(e, r) (the mean over ordered pairs). Returns
    ``(L, dL/dcrops)``; the encoder is fixed (its gradients are zeroed).
    ``stop_partner``: the other image of each pair is held fixed in the
    backward (:func:`npstn.functional.colocalisation_loss_backward`).
    """
    b = len(x)
    rand = F.grid_sample(x, F.attention_grid(random_theta, (b, x.shape[1], DIGIT_SIZE, DIGIT_SIZE)))
    desc = encoder(np.concatenate([crops, rand]))
    e, r = desc[:b], desc[b:]
    loss = float(F.colocalisation_loss(e, r, margin=margin))
    ge, _ = F.colocalisation_loss_backward(np.float64(1.0), e, r, margin=margin, stop_partner=stop_partner)
    g_in = encoder.backward(np.concatenate([ge, np.zeros_like(ge)]))
    encoder.zero_grad()  # the encoder is fixed
    return loss, g_in[:b]


def tracking_correlation(theta, boxes, canvas: int = CANVAS) -> list:
    """How far the crops follow their digits: the correlation over the set between the crops' centres
    (t_x, t_y of theta (N, 3)) and the true boxes' centres, [r_x, r_y] (None where either does not vary).

    Near 1 when the localisation network tracks each digit (even at a constant offset, which IoU
    punishes and this does not); near 0 when it puts every crop at about the same place."""
    t = np.asarray(theta, dtype=np.float64)[:, 1:]
    c = box_to_theta(boxes, canvas)[:, 1:]
    out = []
    for i in range(2):
        a, b = t[:, i] - t[:, i].mean(), c[:, i] - c[:, i].mean()
        den = float(np.sqrt((a * a).sum() * (b * b).sum()))
        out.append(round(float((a * b).sum()) / den, 4) if den > 1e-12 else None)
    return out


def _localised(st, x, boxes, canvas):
    theta = st.localization(x)
    iou = box_iou(theta_to_box(theta, canvas), boxes)
    return 100.0 * float(np.mean(iou > IOU_THRESHOLD)), float(iou.mean()), theta


def plot_boxes(x, true_boxes, snapshots, path, title: str | None = None, n: int = 8) -> Path:
    """The paper's co-localisation figure: the first ``n`` images, one row per training snapshot.

    ``snapshots``: a list of ``(step, theta (N, 3), localised_percent)``; the crop's box is drawn
    in red (green when its IoU with the true box exceeds 0.5), the true box dashed white.
    """
    from npstn.viz import _pyplot, _save

    plt = _pyplot()
    n = min(n, len(x))
    rows = len(snapshots)
    fig, axes = plt.subplots(rows, n, figsize=(1.45 * n, 1.6 * rows + 0.4), squeeze=False)
    canvas = x.shape[-1]
    for r, (step, theta, pct) in enumerate(snapshots):
        boxes = theta_to_box(theta[:n], canvas)
        iou = box_iou(boxes, true_boxes[:n])
        for j in range(n):
            ax = axes[r, j]
            ax.imshow(x[j, 0], cmap="gray", vmin=0, vmax=1, extent=(0, canvas, canvas, 0))
            t = true_boxes[j]
            ax.add_patch(plt.Rectangle((t[0], t[1]), t[2] - t[0], t[3] - t[1], fill=False, ec="white",
                                       ls="--", lw=0.8))
            b = boxes[j]
            ax.add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False,
                                       ec="#34c759" if iou[j] > IOU_THRESHOLD else "#ff3b30", lw=1.4))
            ax.set_xlim(0, canvas)
            ax.set_ylim(canvas, 0)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"step {step}\n{pct:.0f}%", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


#: The files a co-localisation run writes into its folder (all in npstn.utils.runfolder.NPSTN_FILES).
RUN_FILES = ("config.json", "metrics.json", "log.csv", "model.npz", "boxes.png")


def colocalise(config: ColocaliseConfig, *, progress: bool = True, data=None, encoder=None) -> dict:
    """Train the attention ST to co-localise one digit class; returns the metrics.

    With ``config.out`` set, the run folder is locked and receives
    ``config.json``, ``log.csv``, ``model.npz`` (the transformer's weights),
    ``boxes.png`` (:func:`plot_boxes` at the start, three points in between and
    the end) and ``metrics.json`` (``localised_percent``: the share of the
    set's images whose crop has IoU > 0.5 with the digit's true box). A folder
    that already holds any file npstn writes
    (:data:`npstn.utils.runfolder.NPSTN_FILES`) is refused (FileExistsError).

    ``data``: ``(x, boxes)`` instead of :func:`colocalisation_set`;
    ``encoder``: ``(Encoder, info)`` instead of :func:`mnist_encoder` (tests).
    """
    if config.out is None:
        return _colocalise(config, progress, data, encoder, None)
    from npstn.utils.runfolder import lock_run, npstn_files_in

    run = Path(config.out)
    present = npstn_files_in(run)
    if present:
        raise FileExistsError(f"{str(run)!r} already holds {', '.join(present)}; npstn will not overwrite "
                              "them: choose another --out folder")
    with lock_run(run):
        present = npstn_files_in(run)
        if present:  # written between the check and the lock
            raise FileExistsError(f"{str(run)!r} already holds {', '.join(present)}; choose another --out")
        return _colocalise(config, progress, data, encoder, run)


def _colocalise(config, progress, data, encoder, run):
    from tqdm.auto import tqdm

    if data is None:
        x, boxes = colocalisation_set(config.digit, config.clutter, images=config.images,
                                      seed=config.data_seed, data_dir=config.data_dir)
    else:
        x, boxes = data
        x = np.ascontiguousarray(x, dtype=np.float32)
    canvas = x.shape[-1]
    enc, enc_info = encoder_for(config, progress=progress) if encoder is None else encoder
    enc = enc.with_probabilities(config.probabilities)  # a copy if it differs: the caller's stays as it is
    enc.eval()
    st = build_transformer(canvas, config.init_scale, config.seed, config.bounded)
    opt = (nn.Adam(st.parameters(), lr=config.lr) if config.optimizer == "adam" else
           nn.SGD(st.parameters(), lr=config.lr, momentum=config.momentum))
    scheduler = nn.MultiStepLR(opt, nn.drop_milestones(config.lr_drops, config.steps), 0.1)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1,)))
    n, b = len(x), min(config.batch_size, len(x))
    reg = [m for m in st.localization if isinstance(m, nn.Linear)][-1]  # the regression layer (s, t_x, t_y)
    if run is not None:
        atomic_write_json(run / "config.json", config.to_dict())
    pct, miou, theta = _localised(st, x, boxes, canvas)
    history = [{"step": 0, "localised_percent": pct, "mean_iou": miou, "loss": None}]
    snap_at = sorted({int(round(f * config.steps)) for f in (0.1, 0.25, 0.5)} - {0, config.steps})
    snapshots = [(0, theta, pct)]
    rows, window = [], []
    t0 = time.perf_counter()
    bar = tqdm(total=config.steps, desc=f"co-localise digit {config.digit} on {config.variant}", unit="step",
               disable=not progress, dynamic_ncols=True)
    for step in range(1, config.steps + 1):
        rate = 1.0  # the factor on this step's rate (lr_scale_power)
        if config.scale_anneal is not None:  # s's weight row stays 0 (learn_scale=False): its bias is s
            s_now = annealed_scale(step, config.init_scale, config.anneal_steps, canvas)
            reg.bias.data[0] = s_now
            rate = (s_now / config.init_scale) ** config.lr_scale_power
        idx = rng.choice(n, size=b, replace=False)
        xb = x[idx]
        crops = st(xb)
        loss, g_crops = crop_loss(enc, xb, crops, _random_crops(b, rng, canvas, xb.dtype), config.margin,
                                  config.stop_partner)
        opt.zero_grad()  # only the transformer learns
        st.backward(g_crops)
        if not config.learn_scale:  # s stays at init_scale: no gradient reaches its regression row
            reg.weight.grad[0] = 0
            reg.bias.grad[0] = 0
        if rate != 1.0:  # the gradient's factor enters the momentum buffer: in effect a rate that follows s
            for prm in st.parameters():
                prm.grad *= rate
        opt.step()
        scheduler.step()
        if not math.isfinite(loss) or not all(np.isfinite(p.data).all() for p in st.parameters()):
            from npstn.train import TrainingDiverged

            raise TrainingDiverged(f"co-localisation diverged at step {step} (loss {loss:g}); "
                                               f"try a smaller --lr (now {config.lr:g})")
        window.append(loss)
        if step % config.eval_interval == 0 or step == config.steps or step in snap_at:
            pct, miou, theta = _localised(st, x, boxes, canvas)
            mean_loss = float(np.mean(window)) if window else None
            window = []
            history.append({"step": step, "localised_percent": pct, "mean_iou": miou, "loss": mean_loss})
            rows.append((step, mean_loss, pct, miou, round(time.perf_counter() - t0, 3)))
            if step in snap_at or step == config.steps:
                snapshots.append((step, theta, pct))
            bar.set_postfix({"loss": f"{mean_loss:.3f}", "localised": f"{pct:.0f}%"}, refresh=False)
        bar.update(1)
    bar.close()
    wall = time.perf_counter() - t0
    pct, miou, theta = _localised(st, x, boxes, canvas)
    iou = box_iou(theta_to_box(theta, canvas), boxes)
    metrics = {
        "localised_percent": pct,
        "mean_iou": miou,
        "initial_localised_percent": history[0]["localised_percent"],
        "initial_mean_iou": history[0]["mean_iou"],
        "digit": config.digit,
        "variant": config.variant,
        "images": int(n),
        "steps": config.steps,
        "wall_seconds": wall,
        "history": history,
        "per_image_iou": [round(float(v), 4) for v in iou],
        "final_theta_mean": [float(v) for v in theta.mean(axis=0)],
        "final_theta_std": [float(v) for v in theta.std(axis=0)],
        "tracking_correlation": tracking_correlation(theta, boxes, canvas),
        "encoder": {k: v for k, v in enc_info.items()},
        "config": config.to_dict(),
        "npstn_version": npstn.__version__,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "status": "finished",
    }
    if run is not None:
        lines = ["step,loss,localised_percent,mean_iou,elapsed_s"] + [
            f"{s},{'' if l is None else f'{l:.6g}'},{p:.1f},{m:.4f},{t}" for s, l, p, m, t in rows]
        atomic_write_text(run / "log.csv", "\n".join(lines) + "\n")
        nn.save(st, run / "model.npz")
        plot_boxes(x, boxes, snapshots, run / "boxes.png",
                   title=f"co-localisation, digit {config.digit} on {config.variant}: crops (red/green) "
                         "and true boxes (dashed) during training")
        atomic_write_json(run / "metrics.json", metrics)
    if progress:
        print(f"npstn: digit {config.digit} on {config.variant}: {pct:.0f}% localised (IoU > 0.5; "
              f"{history[0]['localised_percent']:.0f}% at the start), {config.steps} steps, {wall:.0f} s")
    return metrics


# ----------------------------------------------------------------------------
# Table 5
# ----------------------------------------------------------------------------
def table5_markdown(results: list[dict]) -> str:
    """Measured Table 5 beside the paper's: one row per digit, T and TC columns (percent localised)."""
    cells = {(m["variant"], m["digit"]): m for m in results}
    lo, hi = PAPER_TABLE5["TC"]
    lines = ["| digit | T (npstn) | T (paper) | TC (npstn) | TC (paper) |", "|---:|---:|---:|---:|---:|"]
    for d in range(10):
        t, tc = cells.get(("T", d)), cells.get(("TC", d))
        fmt = (lambda m: f"{m['localised_percent']:.0f}%" if m else "-")
        lines.append(f"| {d} | {fmt(t)} | {PAPER_TABLE5['T'][d]:.0f}% | {fmt(tc)} | {lo:.0f}-{hi:.0f}% |")
    return "\n".join(lines)


#: ColocaliseConfig fields added after runs were made, with the value a run that lacks one ran with
_ADDED_FIELDS = {"lr_scale_power": 0.0, "probabilities": 0.0, "optimizer": "sgd", "encoder_shift": 0}


def _finished(folder: Path, config: ColocaliseConfig):
    with contextlib.suppress(OSError, ValueError):
        m = json.loads((folder / "metrics.json").read_text())
        if isinstance(m, dict) and m.get("status") == "finished":
            stored = {**_ADDED_FIELDS, **{k: v for k, v in m.get("config", {}).items() if k not in ("out", "data_dir")}}
            want = {k: v for k, v in config.to_dict().items() if k not in ("out", "data_dir")}
            if stored == want:
                return m
    return None


def reproduce_table5(out, digits=range(10), variants=("T", "TC"), *, progress: bool = True,
                     report_only: bool = False, **settings) -> list[dict]:
    """Run (or collect) every (variant, digit) cell into ``out/<variant>/digit<d>/``; write
    ``out/results.md`` and ``out/results.json``. Finished cells with the same settings are
    skipped; ``settings`` are :class:`ColocaliseConfig` fields for every cell."""
    out = Path(out)
    results = []
    for v in variants:
        for d in digits:
            folder = out / v / f"digit{d}"
            config = ColocaliseConfig(digit=d, clutter=(v == "TC"), out=str(folder), **settings)
            m = _finished(folder, config)
            if m is None and report_only:
                with contextlib.suppress(OSError, ValueError):
                    m = json.loads((folder / "metrics.json").read_text())
                    m = m if isinstance(m, dict) and m.get("status") == "finished" else None
            if m is None and not report_only:
                m = colocalise(config, progress=progress)
            if m is not None:
                results.append(m)
    if results:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "results.md", "Table 5: co-localisation, percent of images localised "
                          "(IoU > 0.5)\n\n" + table5_markdown(results) + "\n")
        atomic_write_json(out / "results.json", [
            {k: m[k] for k in ("digit", "variant", "localised_percent", "mean_iou", "initial_localised_percent",
                               "steps", "wall_seconds")} for m in results])
    return results
