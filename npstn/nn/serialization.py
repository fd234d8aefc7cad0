"""Saving and loading a model's parameters as ``.npz``, written atomically.

``save(model, "model.npz")`` writes ``model.state_dict()`` (torch-style keys
such as ``"0.weight"``) through a temporary file and a rename, so a crash
mid-write leaves the previous file intact. ``load(path)`` returns the state
dict; ``model.load_state_dict(load(path))`` restores it.

Files always hold host NumPy arrays: a model on the GPU saves host copies
(``state_dict`` copies them back), and loading into a GPU model copies the
values onto the device.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from npstn._device import to_host
from npstn.nn.module import Module
from npstn.utils.io import atomic_save_npz

__all__ = ["save", "load"]


def save(obj, path) -> Path:
    """Write a Module's state dict (or a dict of arrays) to ``path`` atomically."""
    state = obj.state_dict() if isinstance(obj, Module) else obj
    if not isinstance(state, dict):
        raise TypeError(f"save: obj must be a Module or a dict of arrays, got {type(obj).__name__}")
    path = Path(path)
    atomic_save_npz(path, {k: np.asarray(to_host(v)) for k, v in state.items()})
    return path


def load(path) -> "OrderedDict[str, np.ndarray]":
    """Read a state dict written by :func:`save` (keys in their saved order)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load: no such file {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            return OrderedDict((k, f[k]) for k in f.files)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"load: {str(path)!r} is not a readable .npz state file ({exc})") from exc
