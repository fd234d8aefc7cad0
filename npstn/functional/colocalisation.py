"""The co-localisation hinge loss (paper A.2; docs/PAPER.md "Co-localisation") and its backward.

A batch of N images of one digit class; e_n = e(T(I_n)) (N, D) is the
descriptor of image n's crop by the transformer, r_n = e(R(I_n)) (N, D) the
descriptor of a random crop of the same image. The loss asks each crop to be
closer to the crops of the *other* images than to a random crop of its own
image, by a margin alpha (the paper: alpha = 1)::

    d_nm = ||e_n - e_m||^2          q_n = ||e_n - r_n||^2
    h_nm = d_nm - q_n + alpha       a_nm = 1[h_nm > 0]            (n != m)

    L = sum_n sum_{m != n} max(0, h_nm)                           reduction "sum"
    L = that sum / (N (N - 1))                                    reduction "mean" (the default)

Backward, g the upstream gradient of L (times 1 / (N (N - 1)) for "mean"):
e_n appears in h_nm (as the anchor: through d_nm and q_n) and in h_mn (as
the other image: through d_mn), r_n only in q_n::

    dL/de_n = g [ sum_m a_nm (2 (e_n - e_m) - 2 (e_n - r_n)) + sum_m a_mn 2 (e_n - e_m) ]
            = 2 g [ (A_n + A'_n) e_n - (a + a^T)_n . e  - A_n (e_n - r_n) ]
    dL/dr_n = 2 g A_n (e_n - r_n)

with A_n = sum_{m != n} a_nm (row sums), A'_n = sum_{m != n} a_mn (column
sums) and ((a + a^T) e)_n = sum_m (a_nm + a_mn) e_m. The hinge is not
differentiable at h_nm = 0; like torch's ReLU, a_nm takes 0 there (the
sub-gradient from the left).

``stop_partner=True`` holds the other image of each pair fixed (a
stop-gradient, as SimSiam's on one branch of a Siamese network): e_n is
moved only as the anchor of its pairs, toward the others and away from its
random crop, and no longer pulled by the others' pairs, so the crops cannot
lower the loss by collapsing onto one another (docs/colocalisation.md)::

    dL/de_n = g sum_m a_nm (2 (e_n - e_m) - 2 (e_n - r_n)) = 2 g (A_n r_n - (a . e)_n)

dL/dr_n is unchanged. The loss's value is the same; this is the gradient of
L with e_m, m != n, treated as constants in the pairs (n, m).

Shapes: embeddings (N, D) and random_embeddings (N, D), N >= 2, float32 or
float64 (the same); the loss is a NumPy scalar of their dtype. The sums are
formed in float64 and the results cast back. Backends: "numpy" and "cpu"
are the same vectorised NumPy (the op is an N x N matrix product; N is a
small batch); device arrays are refused (copy them to the host).
"""
from __future__ import annotations

import numpy as np

from npstn._checks import check_float_array, check_same_dtype, shape_str
from npstn._device import is_device_array

__all__ = ["colocalisation_loss", "colocalisation_loss_backward", "colocalisation_hinges"]

_REDUCTIONS = ("mean", "sum")


def _check(name, embeddings, random_embeddings, margin, reduction, backend):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if backend not in (None, "numpy", "cpu", "cuda"):
        raise ValueError(f"{name}: backend must be None, 'numpy', 'cpu' or 'cuda', got {backend!r}")
    for arg, a in (("embeddings", embeddings), ("random_embeddings", random_embeddings)):
        if is_device_array(a):
            raise TypeError(f"{name}: {arg} is a CUDA device array; this loss runs on the host "
                            "(copy it with .copy_to_host())")
        check_float_array(f"{name}: {arg}", a, 2, what="(N, D)")
    check_same_dtype(f"{name}: embeddings", embeddings, f"{name}: random_embeddings", random_embeddings)
    if tuple(random_embeddings.shape) != tuple(embeddings.shape):
        raise ValueError(f"{name}: random_embeddings must have the shape of embeddings "
                         f"{shape_str(embeddings.shape)}, got {shape_str(random_embeddings.shape)}")
    if embeddings.shape[0] < 2:
        raise ValueError(f"{name}: embeddings needs N >= 2 rows (the loss sums over pairs n != m), "
                         f"got shape {shape_str(embeddings.shape)}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float, np.floating, np.integer)) \
            or not np.isfinite(margin):
        raise ValueError(f"{name}: margin must be a finite number, got {margin!r}")


def colocalisation_hinges(embeddings, random_embeddings, margin: float = 1.0) -> np.ndarray:
    """The hinge arguments h (N, N) in float64: h[n, m] = d_nm - q_n + margin, h[n, n] = -inf."""
    e = np.asarray(embeddings, dtype=np.float64)
    r = np.asarray(random_embeddings, dtype=np.float64)
    sq = np.einsum("nd,nd->n", e, e)
    d = sq[:, None] + sq[None, :] - 2.0 * (e @ e.T)  # ||e_n - e_m||^2
    np.maximum(d, 0.0, out=d)  # rounding can make the expanded form slightly negative
    diff = e - r
    q = np.einsum("nd,nd->n", diff, diff)  # ||e_n - r_n||^2
    h = d - q[:, None] + float(margin)
    np.fill_diagonal(h, -np.inf)
    return h


def colocalisation_loss(embeddings, random_embeddings, *, margin: float = 1.0, reduction: str = "mean",
                        backend: str | None = None):
    """The co-localisation hinge loss (equations in the module docstring).

    embeddings (N, D): e(T(I_n)), the descriptors of the transformer's crops;
    random_embeddings (N, D): e(R(I_n)), descriptors of random crops of the
    same images; margin: alpha (the paper's 1); reduction "mean" (over the
    N (N - 1) ordered pairs) or "sum". Returns a NumPy scalar of the inputs' dtype.
    """
    _check("colocalisation_loss", embeddings, random_embeddings, margin, reduction, backend)
    h = colocalisation_hinges(embeddings, random_embeddings, margin)
    n = h.shape[0]
    total = np.maximum(h, 0.0).sum()
    if reduction == "mean":
        total /= n * (n - 1)
    return np.asarray(total, dtype=embeddings.dtype)[()]


def colocalisation_loss_backward(grad_output, embeddings, random_embeddings, *, margin: float = 1.0,
                                 reduction: str = "mean", stop_partner: bool = False, backend: str | None = None):
    """(dL/dembeddings, dL/drandom_embeddings), each (N, D) of the inputs' dtype.

    grad_output: the upstream gradient of the (scalar) loss; stop_partner: hold
    the other image of each pair fixed (a stop-gradient). Equations in the
    module docstring.
    """
    if not isinstance(stop_partner, (bool, np.bool_)):
        raise TypeError(f"colocalisation_loss_backward: stop_partner must be a bool, got {stop_partner!r}")
    _check("colocalisation_loss_backward", embeddings, random_embeddings, margin, reduction, backend)
    g = np.asarray(grad_output, dtype=np.float64)
    if g.shape != ():
        raise ValueError("colocalisation_loss_backward: grad_output must be a scalar (the loss is one "
                         f"number), got shape {shape_str(g.shape)}")
    h = colocalisation_hinges(embeddings, random_embeddings, margin)
    n = h.shape[0]
    a = (h > 0).astype(np.float64)  # a_nm; 0 on the diagonal (h = -inf there)
    scale = 2.0 * float(g) / (n * (n - 1) if reduction == "mean" else 1)
    e = np.asarray(embeddings, dtype=np.float64)
    r = np.asarray(random_embeddings, dtype=np.float64)
    rows, cols = a.sum(axis=1), a.sum(axis=0)  # A_n, A'_n
    diff = e - r
    if stop_partner:
        grad_e = scale * (rows[:, None] * r - a @ e)
    else:
        grad_e = scale * ((rows + cols)[:, None] * e - (a + a.T) @ e - rows[:, None] * diff)
    grad_r = scale * rows[:, None] * diff
    return grad_e.astype(embeddings.dtype), grad_r.astype(embeddings.dtype)
