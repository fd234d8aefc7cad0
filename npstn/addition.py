"""MNIST addition (the paper's Table 4): the published results and how far two transformers specialise.

In the 2xST-FCN two spatial transformers see the same 2-channel input (digit
a in channel 0, digit b in channel 1) and each warps *both* channels. Trained
only on the sum a + b, the paper reports that they co-adapt so that each one
attends to one digit. :func:`channel_energy_shares` measures that division of
labour on a batch, without labels and without changing the model:

    E[k, c] = sum over n, h, w of V_k[n, c, h, w]^2
    M[k, c] = E[k, c] / sum_c' E[k, c']

where V_k = T_k(U - b) is transformer k's output with the sampling grid it
computes from U, and b the value of an empty (black) input pixel: 0 for
pixels in [0, 1], -mean/std for standardised inputs (``background``). Ink
is then what differs from black, and outside the canvas (zero padding) is
black too; measured on V_k = T_k(U) itself, standardised inputs would count
their grey background and the padding as energy, and every row would drift
toward the canvas's own mix. A transformer samples every
channel on the same grid, so its output channel c is made only of input
channel c: M[k, c] is the share of transformer k's output energy (sum of
squares) that comes from input channel c, i.e. how much of digit c's ink falls
in its window. Each row sums to 1. For two transformers on two channels,

    s = M[0, 0] - M[1, 0]   (:func:`specialisation_index`, in [-1, 1])

is +1 when transformer 0 sees only digit a and transformer 1 only digit b, -1
when they divide the work the other way round, and 0 when both see the same
mix (an untrained 2xST: both are the identity, so both rows equal the input's
own channel shares). |s| is the degree of specialisation.

The measure runs each transformer's forward pass, which overwrites the
``theta``/``grid`` it keeps for a pending backward: call it between training
steps, not between a forward and its backward.
"""
from __future__ import annotations

import numpy as np

__all__ = ["PAPER_TABLE4", "channel_energy_shares", "specialisation_index", "specialisation_report"]

#: The paper's Table 4 (MNIST addition) test errors, %, keyed by (model, transform or None, transformers).
PAPER_TABLE4 = {
    ("fcn", None, 0): 47.7,
    ("cnn", None, 0): 14.7,
    ("st-fcn", "affine", 1): 22.6,
    ("st-fcn", "projective", 1): 18.5,
    ("st-fcn", "tps", 1): 19.1,
    ("st-fcn", "affine", 2): 9.0,
    ("st-fcn", "projective", 2): 5.9,
    ("st-fcn", "tps", 2): 5.8,
}


def _transformers_of(model) -> tuple:
    from npstn.stn.spatial_transformer import SpatialTransformer

    if isinstance(model, SpatialTransformer):
        return (model,)
    if isinstance(model, (list, tuple)):
        sts = tuple(model)
    else:
        sts = tuple(getattr(model, "transformers", ()) or ())
    if not sts or not all(isinstance(t, SpatialTransformer) for t in sts):
        raise ValueError(
            "channel_energy_shares: model must be a SpatialTransformer, a sequence of them, or a model "
            f"with spatial transformers (an ST model of npstn.models); got {type(model).__name__} "
            "with none"
        )
    return sts


def channel_energy_shares(model, x, *, background: float = 0.0, per_sample: bool = False) -> np.ndarray:
    """Share of each transformer's output energy that comes from each input channel.

    Parameters
    ----------
    model : a model with spatial transformers (``model.transformers``, e.g.
        :func:`npstn.models.build_addition_model`'s ST-FCN or 2xST-FCN), a
        :class:`~npstn.stn.SpatialTransformer`, or a sequence of them.
    x : float array (N, C, H, W): the input the transformers see (for a
        trained run, standardised as in training).
    background : the value of a black pixel in ``x``'s units: 0 for pixels
        in [0, 1], ``-mean / std`` for standardised inputs. Each transformer
        computes its grid from ``x`` and samples ``x - background`` on it,
        so only ink counts (see the module doc).
    per_sample : return one matrix per image instead of one for the batch.

    Returns
    -------
    float64 (K, C), or (N, K, C) with ``per_sample``: ``M[k, c]`` =
    E[k, c] / sum_c' E[k, c'], E[k, c] the sum of squares of transformer k's
    output channel c (over the batch, or over one image). Rows sum to 1; a
    row whose output is all zeros is NaN. See the module doc.
    """
    sts = _transformers_of(model)
    x = np.asarray(x)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"channel_energy_shares: x must be a float array (N, C, H, W), got "
                         f"{x.dtype} of shape {x.shape}")
    background = float(background)
    if not np.isfinite(background):
        raise ValueError(f"channel_energy_shares: background must be a finite number, got {background}")
    from npstn import functional as F
    from npstn._device import is_device_array, to_device, to_host

    energies = []
    for st in sts:
        params = st.parameters()
        dtype = params[0].data.dtype if params else x.dtype  # the transformer's own precision
        xin = np.ascontiguousarray(x, dtype=dtype)
        on_device = st.device == "cuda"
        v = st(to_device(xin) if on_device else xin)
        v = to_host(v) if is_device_array(v) else np.asarray(v)
        if background != 0.0:  # the ink: x - background sampled on the grid the transformer computed from x
            grid = to_host(st.grid) if is_device_array(st.grid) else st.grid
            ink = np.ascontiguousarray(xin - np.asarray(background, dtype=xin.dtype))
            v = F.grid_sample(ink, grid, mode=st.mode, padding_mode=st.padding_mode,
                              align_corners=st.align_corners, backend="numpy" if on_device else st.backend)
        e = np.square(v.astype(np.float64)).sum(axis=(2, 3))  # (N, C)
        energies.append(e)
    e = np.stack(energies, axis=1)  # (N, K, C)
    if not per_sample:
        e = e.sum(axis=0)  # (K, C)
    total = e.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, e / np.where(total > 0, total, 1.0), np.nan)


def specialisation_index(shares) -> float | np.ndarray:
    """``M[0, 0] - M[1, 0]`` of a (2, 2) share matrix (or of each in an (N, 2, 2) stack).

    +1: transformer 0 sees only channel 0 and transformer 1 only channel 1;
    -1: the other way round; 0: both see the same mix. See the module doc.
    """
    m = np.asarray(shares, dtype=np.float64)
    if m.shape[-2:] != (2, 2):
        raise ValueError(f"specialisation_index needs 2 transformers x 2 channels, shape (..., 2, 2); "
                         f"got shape {m.shape}")
    s = m[..., 0, 0] - m[..., 1, 0]
    return float(s) if s.ndim == 0 else s


def specialisation_report(model, x, *, background: float = 0.0) -> dict:
    """JSON-ready summary for a log: ``{"channel_shares": M as nested lists, "specialisation": s}``.

    ``specialisation`` is :func:`specialisation_index` for a model with two
    transformers on a 2-channel input, else None. NaN shares become None.
    ``background`` as in :func:`channel_energy_shares`.
    """
    m = channel_energy_shares(model, x, background=background)
    s = specialisation_index(m) if m.shape == (2, 2) else None
    clean = [[None if not np.isfinite(v) else float(v) for v in row] for row in m]
    return {"channel_shares": clean, "specialisation": None if s is None or not np.isfinite(s) else s}
