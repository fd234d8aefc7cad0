"""Values of the wrong kind are refused at the public boundaries, with TypeError naming the argument.

A string for a boolean flag is truthy ("False" would mean True), an integer
array in a float layer would silently compute in the wrong dtype, and an
absurd grid size would reach NumPy's MemoryError: each is refused before any
work, naming what was wrong.
"""
import numpy as np
import pytest

import npstn.functional as F
from npstn import nn
from npstn._checks import MAX_GRID_POINTS
from npstn.train import TrainConfig

TH_AFFINE = np.array([[[1, 0, 0], [0, 1, 0]]], np.float32)
TH_ATT = np.array([[1, 0, 0]], np.float32)
TH_PROJ = np.array([[1, 0, 0, 0, 1, 0, 0, 0]], np.float32)
TH_TPS = F.tps_control_points(16).astype(np.float32)[None]
X = np.zeros((1, 1, 4, 4), np.float32)
GRID = np.zeros((1, 2, 2, 2), np.float32)
SIZE = (1, 1, 4, 4)

BAD_BOOLS = ["False", "yes", 0, 1, None, 1.0, [True]]
GRID_CALLS = {
    "affine_grid": lambda ac: F.affine_grid(TH_AFFINE, SIZE, align_corners=ac),
    "affine_grid_backward": lambda ac: F.affine_grid_backward(np.zeros((1, 4, 4, 2), np.float32), SIZE,
                                                              align_corners=ac),
    "attention_grid": lambda ac: F.attention_grid(TH_ATT, SIZE, align_corners=ac),
    "projective_grid": lambda ac: F.projective_grid(TH_PROJ, SIZE, align_corners=ac),
    "tps_grid": lambda ac: F.tps_grid(TH_TPS, SIZE, align_corners=ac),
    "grid_sample": lambda ac: F.grid_sample(X, GRID, align_corners=ac),
}


@pytest.mark.parametrize("value", BAD_BOOLS, ids=repr)
@pytest.mark.parametrize("fn", sorted(GRID_CALLS))
def test_align_corners_must_be_a_bool(fn, value):
    with pytest.raises(TypeError, match="align_corners must be a bool"):
        GRID_CALLS[fn](value)


@pytest.mark.parametrize("fn", sorted(GRID_CALLS))
@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_real_bools_are_accepted(fn, value):
    GRID_CALLS[fn](value)


@pytest.mark.parametrize("size", [(1, 1, 10**6, 10**6), (10**5, 1, 10**3, 10**3), (2**20, 3, 2**6, 2**6)])
def test_absurd_grid_sizes_are_refused_before_allocation(size):
    th = np.repeat(TH_AFFINE, size[0], axis=0) if size[0] <= 2**20 else TH_AFFINE
    with pytest.raises(ValueError, match="grid points"):
        F.affine_grid(th, size)
    assert size[0] * size[2] * size[3] > MAX_GRID_POINTS


@pytest.mark.parametrize("layer, x, name", [
    (nn.Linear(4, 2), np.zeros((2, 4), np.int64), "Linear input"),
    (nn.Conv2d(1, 1, 2), np.zeros((1, 1, 4, 4), np.int32), "input"),
    (nn.ReLU(), np.zeros(3, np.int16), "ReLU input"),
    (nn.MaxPool2d(2), np.zeros((1, 1, 4, 4), np.uint8), "MaxPool2d input"),
    (nn.Flatten(), np.zeros((1, 1, 2, 2), bool), "Flatten input"),
])
def test_integer_arrays_are_refused_by_float_layers(layer, x, name):
    with pytest.raises(TypeError, match=f"{name}.*float32 or float64"):
        layer(x)


@pytest.mark.parametrize("make, name", [
    (lambda: nn.Linear(2, 2, bias="no"), "bias"),
    (lambda: nn.Conv2d(1, 1, 2, bias="False"), "bias"),
    (lambda: nn.Linear(2, 2).train("no"), "mode"),
    (lambda: nn.Linear("3", 2), "in_features"),
    (lambda: nn.Conv2d(1, 1, 2.5), "kernel_size"),
    (lambda: nn.Dropout("0.5"), "p"),
    (lambda: F.affine_grid(TH_AFFINE.astype(np.int64), SIZE), "theta"),
    (lambda: F.grid_sample(X.astype(np.int64), GRID), "input"),
    (lambda: F.affine_grid(TH_AFFINE, (1, 1, 4.0, 4)), "size"),
])
def test_wrong_kinds_name_the_argument(make, name):
    with pytest.raises(TypeError, match=name):
        make()


@pytest.mark.parametrize("kwargs", [dict(steps="100"), dict(batch_size=2.5), dict(seed=None), dict(width=True),
                                    dict(lr="0.1"), dict(input_norm=True), dict(eval_every=-1)])
def test_train_config_refuses_wrong_kinds(kwargs):
    with pytest.raises((TypeError, ValueError), match=next(iter(kwargs))):
        TrainConfig(**kwargs)
