"""Model state saved to .npz atomically; a crash mid-write loses nothing."""
import os

import numpy as np
import pytest

import npstn.utils.io as io
from npstn.nn import Module, Parameter, load, save


class Two(Module):
    def __init__(self, v):
        super().__init__()
        self.a = Parameter(np.full((2, 3), v, dtype=np.float32))
        self.b = Parameter(np.full(3, v, dtype=np.float32))


def test_save_load_roundtrip(tmp_path):
    path = save(Two(1.5), tmp_path / "m.npz")
    state = load(path)
    assert list(state) == ["a", "b"] and state["a"].dtype == np.float32
    m = Two(0.0)
    m.load_state_dict(state)
    np.testing.assert_array_equal(m.a.data, 1.5)


def test_crash_mid_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    save(Two(1.0), path)

    def boom(f, **arrays):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(io.np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        save(Two(2.0), path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m.npz"]  # no temp file left behind
    np.testing.assert_array_equal(load(path)["a"], 1.0)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load(bad)
