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

Energy shares see which digit's ink each transformer *shows*, not which one
it *frames*. A transformer that centres and uprights digit a still shows
whatever part of digit b falls in its window, often at a larger scale, so
on trained 2xST-FCNs whose two windows plainly follow one digit each (the
pictures of ``npstn viz``) the energy rows stay near the input's mix.
:func:`centring_shares` measures the framing instead:

    A[k, c] = share of pairs in which, of the two digits, digit c's ink
              centroid is the nearer to the centre of transformer k's
              sampling window (the grid point at the output's centre)

and ``s = A[0, 0] - A[1, 0]`` is the same index on it: +-1 when each
transformer always frames its own digit, 0 when both frame the same one (at
the identity both windows are the canvas's centre: s = 0 exactly).
:func:`specialisation_report`, logged by training runs, gives both; its
``specialisation`` is the centring index.

The measures run each transformer's forward pass, which overwrites the
``theta``/``grid`` it keeps for a pending backward: call it between training
steps, not between a forward and its backward.
"""
from __future__ import annotations

import numpy as np

__all__ = ["PAPER_TABLE4", "channel_energy_shares", "centring_shares", "ink_centroids", "window_centres",
           "specialisation_index", "specialisation_report"]

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
    x = _check_batch("channel_energy_shares", x)
    background = _check_background("channel_energy_shares", background)
    return _energy_shares(_run(sts, x), background, per_sample)


def _run(sts, x) -> list:
    """Each transformer run once on ``x``: ``[(st, x_in, V, grid)]``, all on the host.

    ``x_in`` is ``x`` in the transformer's own precision (what it saw); a
    transformer on the GPU gets it on the device and hands V and its grid back.
    """
    from npstn._device import is_device_array, to_device, to_host

    runs = []
    for st in sts:
        params = st.parameters()
        dtype = params[0].data.dtype if params else x.dtype  # the transformer's own precision
        xin = np.ascontiguousarray(x, dtype=dtype)
        v = st(to_device(xin) if st.device == "cuda" else xin)
        v = to_host(v) if is_device_array(v) else np.asarray(v)
        grid = to_host(st.grid) if is_device_array(st.grid) else np.asarray(st.grid)
        runs.append((st, xin, v, grid))
    return runs


def _energy_shares(runs, background: float, per_sample: bool) -> np.ndarray:
    """:func:`channel_energy_shares` of transformers already run (:func:`_run`)."""
    from npstn import functional as F

    energies = []
    for st, xin, v, grid in runs:
        if background != 0.0:  # the ink: x - background sampled on the grid the transformer computed from x
            ink = np.ascontiguousarray(xin - np.asarray(background, dtype=xin.dtype))
            v = F.grid_sample(ink, grid, mode=st.mode, padding_mode=st.padding_mode,
                              align_corners=st.align_corners,
                              backend="numpy" if st.device == "cuda" else st.backend)
        e = np.square(v.astype(np.float64)).sum(axis=(2, 3))  # (N, C)
        energies.append(e)
    e = np.stack(energies, axis=1)  # (N, K, C)
    if not per_sample:
        e = e.sum(axis=0)  # (K, C)
    total = e.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, e / np.where(total > 0, total, 1.0), np.nan)


def _check_batch(name: str, x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name}: x must be a float array (N, C, H, W), got {x.dtype} of shape {x.shape}")
    return x


def _check_background(name: str, background) -> float:
    background = float(background)
    if not np.isfinite(background):
        raise ValueError(f"{name}: background must be a finite number, got {background}")
    return background


def ink_centroids(x, *, background: float = 0.0) -> np.ndarray:
    """Each channel's centre of ink, in normalised coordinates (align_corners=False).

    ``x`` (N, C, H, W); the ink is ``max(x - background, 0)`` (``background``
    as in :func:`channel_energy_shares`). Returns float64 (N, C, 2) of (x, y):
    pixel column j is at (2j + 1) / W - 1, row i at (2i + 1) / H - 1, so -1
    and +1 are the canvas's edges as in a sampling grid. A channel without
    ink gives NaN.
    """
    x = _check_batch("ink_centroids", x)
    b = _check_background("ink_centroids", background)
    h, w = x.shape[2:]
    ink = np.maximum(x.astype(np.float64) - b, 0.0)
    cols = (2 * np.arange(w) + 1) / w - 1
    rows = (2 * np.arange(h) + 1) / h - 1
    mass = ink.sum(axis=(2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (ink.sum(axis=2) * cols).sum(axis=-1) / mass
        cy = (ink.sum(axis=3) * rows).sum(axis=-1) / mass
    out = np.stack([cx, cy], axis=-1)
    out[mass <= 0] = np.nan
    return out


def window_centres(model, x) -> np.ndarray:
    """Where each transformer's window is centred: the source point of the output's centre.

    Runs each transformer on ``x`` (N, C, H, W) and averages its grid's
    central point (the middle row/column, or the two middle ones of an even
    size), so for an affine theta it is exactly theta @ (0, 0, 1) = (t_x,
    t_y). Returns float64 (N, K, 2) of normalised (x, y), one row per
    transformer (``model`` as in :func:`channel_energy_shares`).
    """
    sts = _transformers_of(model)
    x = _check_batch("window_centres", x)
    return _window_centres(_run(sts, x))


def _window_centres(runs) -> np.ndarray:
    """:func:`window_centres` of transformers already run (:func:`_run`)."""
    centres = []
    for _, _, _, grid in runs:
        ho, wo = grid.shape[1:3]
        rows = slice((ho - 1) // 2, ho // 2 + 1)
        cols = slice((wo - 1) // 2, wo // 2 + 1)
        centres.append(grid[:, rows, cols, :].astype(np.float64).mean(axis=(1, 2)))
    return np.stack(centres, axis=1)


def centring_shares(model, x, *, background: float = 0.0, per_sample: bool = False) -> np.ndarray:
    """Share of pairs in which each transformer's window is centred nearer each channel's digit.

    Returns float64 (K, C), or (N, K, C) with ``per_sample``: ``A[k, c]`` is
    the share of images (of the batch) in which channel c's ink centroid
    (:func:`ink_centroids`) is the nearest to transformer k's window centre
    (:func:`window_centres`); a tie counts 1/2 to each. Rows sum to 1.
    Images with a channel without ink are left out (per sample: NaN rows).
    See the module doc.
    """
    sts = _transformers_of(model)
    x = _check_batch("centring_shares", x)
    b = _check_background("centring_shares", background)
    return _centring_shares(_window_centres(_run(sts, x)), x, b, per_sample)


def _centring_shares(centres, x, background: float, per_sample: bool) -> np.ndarray:
    """:func:`centring_shares` from the window centres (N, K, 2) of the transformers run on ``x``."""
    ink = ink_centroids(x, background=background)                    # (N, C, 2)
    d = np.linalg.norm(centres[:, :, None, :] - ink[:, None, :, :], axis=-1)  # (N, K, C)
    valid = np.isfinite(ink).all(axis=(1, 2))                        # every channel has ink
    nearest = np.where(valid[:, None, None], d, 0.0)
    a = (nearest == nearest.min(axis=-1, keepdims=True)).astype(np.float64)
    a /= a.sum(axis=-1, keepdims=True)
    if per_sample:
        a[~valid] = np.nan
        return a
    if not valid.any():
        return np.full(a.shape[1:], np.nan)
    return a[valid].mean(axis=0)


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
    """JSON-ready summary for a log, both measures of the module doc.

    ``{"centring_shares": A, "specialisation": s of A, "channel_shares": M,
    "energy_specialisation": s of M}``: A from :func:`centring_shares`, M
    from :func:`channel_energy_shares`, as nested lists. The indices are
    :func:`specialisation_index` for a model with two transformers on a
    2-channel input, else None. NaN shares become None. ``background`` as in
    :func:`channel_energy_shares`.
    """
    def clean(m):
        return [[None if not np.isfinite(v) else float(v) for v in row] for row in m]

    def index(m):
        s = specialisation_index(m) if m.shape == (2, 2) else None
        return None if s is None or not np.isfinite(s) else s

    sts = _transformers_of(model)
    x = _check_batch("specialisation_report", x)
    background = _check_background("specialisation_report", background)
    runs = _run(sts, x)  # each transformer runs once for both measures
    a = _centring_shares(_window_centres(runs), x, background, per_sample=False)
    m = _energy_shares(runs, background, per_sample=False)
    return {"centring_shares": clean(a), "specialisation": index(a),
            "channel_shares": clean(m), "energy_specialisation": index(m)}
