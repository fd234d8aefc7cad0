"""Stand-ins for task 5: a smooth "sampler" and a two-parameter "transform" with known backward passes.

SpatialTransformer.backward chains three backward passes; with these stand-ins
in place of the bilinear sampler and the grid generators, task 5 is graded on
its own (a bug in task 1 or 2 does not cost task 5's points).
"""
import types

import numpy as np

import npstn.functional as F
from npstn.stn.transforms import Transform


def sample(u, grid, **_):
    """V = U sin(grid_x) + U^2 grid_y (channels share the grid)."""
    gx, gy = grid[:, None, :, :, 0], grid[:, None, :, :, 1]
    return u * np.sin(gx) + u ** 2 * gy


def sample_backward(go, u, grid, **_):
    gx, gy = grid[:, None, :, :, 0], grid[:, None, :, :, 1]
    grad_u = go * (np.sin(gx) + 2 * u * gy)
    grad_grid = np.stack([(go * u * np.cos(gx)).sum(axis=1), (go * u ** 2).sum(axis=1)], axis=-1)
    return grad_u, grad_grid


class ScaleShift(Transform):
    """grid = s * base + t (both coordinates): theta (N, 2) = (s, t)."""

    name = "scale-shift"
    num_params = 2

    def identity(self, dtype=np.float32):
        return np.array([1.0, 0.0], dtype=dtype)

    def _grid(self, theta, size, align_corners, backend):
        base = F.base_grid(size, align_corners)
        return (theta[:, 0, None, None, None] * base + theta[:, 1, None, None, None]).astype(theta.dtype)

    def _grid_backward(self, grad_grid, theta, size, align_corners, backend):
        base = F.base_grid(size, align_corners)
        return np.stack([(grad_grid * base).sum(axis=(1, 2, 3)), grad_grid.sum(axis=(1, 2, 3))], axis=1)


def patch(monkeypatch):
    """Route the SpatialTransformer module's sampler calls to the stand-ins."""
    import npstn.stn.spatial_transformer as stm

    fake = types.SimpleNamespace(grid_sample=sample, grid_sample_backward=sample_backward)
    monkeypatch.setattr(stm, "F", fake)


def make_st(rng, channels=2, hw=(4, 5), return_theta=False):
    from npstn import nn
    from npstn.stn import SpatialTransformer

    loc = nn.Sequential(nn.Flatten(), nn.Linear(channels * hw[0] * hw[1], 4), nn.Tanh() if hasattr(nn, "Tanh")
                        else nn.ReLU(), nn.Linear(4, 2))
    st = SpatialTransformer(loc, ScaleShift(), return_theta=return_theta, backend="numpy")
    st.double()
    for p in st.parameters():
        p.data[...] = rng.normal(0, 0.3, p.data.shape)
    return st
