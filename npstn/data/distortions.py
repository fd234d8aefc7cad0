r"""The five distortions of the paper's distorted-MNIST experiments.

Jaderberg et al., "Spatial Transformer Networks" (NIPS 2015), Section 4.1 and
Appendix A.4, train on MNIST digits distorted in five ways. This module makes
them, with npstn's own grid generators and bilinear sampler (zeros padding,
``align_corners=False``), from a seeded :class:`numpy.random.Generator`, so
every dataset is reproducible:

===========  ===============================================================  ======
name         recipe                                                           canvas
===========  ===============================================================  ======
``"r"``      rotation U[-90, 90] degrees                                      28x28
``"rts"``    rotation U[-45, 45] degrees, scale U[0.7, 1.2], uniformly        42x42
             random position with the digit inside the canvas
``"p"``      scale U[0.75, 1.0], then each of the 4 image corners moved by    28x28
             N(0, 5 px) in x and y; the homography through the 4 corners
``"e"``      scale U[0.75, 1.0], then a thin-plate spline through 16 control  28x28
             points on a 4x4 grid, each moved by N(0, 1.5 px)
``"tc"``     the digit at a uniformly random position, plus six 6x6 crops     60x60
             of other random digits at random positions, added, clipped to 1
===========  ===============================================================  ======

Usage::

    rng = np.random.default_rng(0)
    x = distort(images, "rts", rng)          # images (N, 28, 28) float32 in [0, 1]
    x.shape                                  # (N, 1, 42, 42), float32 in [0, 1]
    x, params = distort(images, "r", rng, return_params=True)
    params["angle"]                          # (N,) the rotation of each digit, degrees
    render(images, "r", {"angle": np.full(len(images), 90.0)})   # given parameters

How a warp is made
------------------
The sampler needs the *backward* map: for each pixel of the output canvas,
where to read the 28x28 source digit. Every warp below is therefore written as
"output canvas coordinates -> source digit coordinates", in the normalised
units of the grid generators (-1 = left/top edge, +1 = right/bottom edge of
the frame, pixel centres at (2i + 1)/S - 1). The canvas (S x S) and the source
(28 x 28) have different sizes, so a distance of d pixels is 2d/S normalised
units on the canvas but 2d/28 in the source: a point x_out (normalised, on
the canvas) is p = x_out * S/2 pixels from the canvas centre, and a point
p pixels from the source centre is x_in = p / 14. The theta of each warp
folds these factors in.

Conventions (all documented, all tested)
----------------------------------------
* **Rotation sign.** A positive angle turns the digit *counterclockwise as
  seen on screen* (row 0 at the top), like :func:`numpy.rot90` with ``k=1``
  and like ``scipy.ndimage.rotate``: ``distort`` with angle +90 equals
  ``np.rot90(image)``. With y pointing down, the forward map of a
  counterclockwise on-screen turn by phi is
  ``(x, y) -> (cos phi x + sin phi y, -sin phi x + cos phi y)``, so the
  backward map the sampler uses is its inverse, ``[[cos, -sin], [sin, cos]]``.
* **Scale.** A scale s > 1 makes the digit larger (the forward map multiplies
  distances from the centre by s; the backward map divides by s).
* **RTS placement.** MNIST digits were size-normalised to fit a 20x20 box in
  the 28x28 frame. The placement bound uses that box, centred (half-width
  :data:`INK_HALF_WIDTH` = 10 px), widened by half a pixel (bilinear
  interpolation spreads the outermost ink pixels that far), rotated and
  scaled: its half-extent along x and along y is
  ``h = 10.5 s (|cos phi| + |sin phi|)`` px. The digit's centre is put
  uniformly in ``[-(20.5 - h), 20.5 - h]`` px along each axis from the canvas
  centre (20.5 px is the distance to the centres of the border pixels), so
  whatever lies in that box never reaches the canvas's outermost ring of
  pixels, which stays 0 (at the extremes, s = 1.2 and phi = +-45 degrees,
  h = 17.8 px and the digit can still move +-2.7 px; a small upright digit
  can move +-13.1 px). Caveat: MNIST centres digits by their centre of mass,
  so a real digit's ink can stick out of the centred 20x20 box by up to 4
  pixels, and at the most extreme placements a few edge pixels of such a
  digit reach the border ring or fall off the canvas (measured on the 60k
  training digits: about 1 in 100 puts ink > 0.1 on the border ring, fewer
  than 2 in 1000 lose more than 3% of their ink).
* **P corners.** The four corners are those of the 28x28 frame, (+-1, +-1) in
  normalised units (the outer edges of the corner pixels). The forward map
  scales the frame by s about its centre, then moves corner k by delta_k ~
  N(0, 5 px) per axis: the digit's corner q_k lands at p_k = s q_k + delta_k.
  The backward homography maps each p_k back to q_k; it is the unique
  homography through those 4 point pairs, found by solving the 8x8 linear
  (DLT) system with h33 = 1 (:func:`homography_from_points`). A draw whose
  moved corners do not form a convex quadrilateral (a fold or a near-collinear
  triple, where the homography would tear or flip the digit; about 1.4% of
  draws, measured) has its 8 offsets redrawn from the same generator, which
  trims the offsets' tails slightly (their spread stays 5 px within 2%).
  N(0, 5 px) on a 28 px frame is a strong distortion: some digits come out
  thin and steeply foreshortened.
* **E control points.** The 16 control points c_p are the regular 4x4 grid
  over [-1, 1]^2 of the output frame (:func:`npstn.functional.tps_control_points`).
  The backward map is ``x_in = T(x_out) / s``, where T is the thin-plate spline
  with T(c_p) = c_p + delta_p, delta_p ~ N(0, 1.5 px): the spline's theta is
  ``(c_p + delta_p) / s``. (This is the inverse of "scale by s, then warp by
  T^{-1}"; with symmetric Gaussian offsets T^{-1} is, to first order, a TPS
  with offsets -delta_p, so it draws from the same distribution to first order.)
* **TC.** Only whole-pixel translations are involved, so TC copies pixels
  (array slicing) rather than resampling: the digit's 28x28 frame goes at a
  uniform top-left corner in {0, ..., 32}^2 of the 60x60 canvas; each of the
  six 6x6 clutter patches is cropped at a uniform top-left corner in
  {0, ..., 22}^2 of a uniformly chosen pool image (not the digit itself when
  the pool is the batch) and added at a uniform top-left corner in
  {0, ..., 54}^2; the sum is clipped to 1. Crops can land on blank parts of a
  digit, as in the paper's recipe ("random crops").

All parameters for a call are drawn first (vectorised, in a fixed order),
then the images are warped in chunks of :data:`CHUNK_SIZE` to bound memory,
so the result does not depend on the chunk size. Bilinear sampling of values
in [0, 1] with zero padding stays in [0, 1]; the output is clipped to [0, 1]
anyway to remove float rounding.

Change :data:`GENERATOR_VERSION` whenever a change here changes the images a
seed produces: it is part of the name of the cached test sets
(:func:`npstn.data.distorted.test_set`), so old caches are not reused.
"""
from __future__ import annotations

import numpy as np

import npstn.functional as F

__all__ = [
    "DISTORTIONS",
    "GENERATOR_VERSION",
    "SOURCE_SIZE",
    "INK_HALF_WIDTH",
    "CHUNK_SIZE",
    "canvas_size",
    "check_distortion",
    "distort",
    "homography_from_points",
    "render",
    "rts_room",
    "PARAM_NAMES",
]

#: The distortion names, in the paper's order.
DISTORTIONS = ("r", "rts", "p", "e", "tc")

#: Bumped whenever a change makes a seed produce different images.
GENERATOR_VERSION = 1

#: Side of an MNIST digit's frame, pixels.
SOURCE_SIZE = 28

_CANVAS = {"r": 28, "rts": 42, "p": 28, "e": 28, "tc": 60}

#: Rotation ranges, degrees: U[-R, R].
R_MAX_ANGLE = 90.0
RTS_MAX_ANGLE = 45.0
#: Scale ranges: U[lo, hi].
RTS_SCALE = (0.7, 1.2)
PE_SCALE = (0.75, 1.0)
#: Standard deviations of the P corner offsets and E control-point offsets, pixels.
P_CORNER_STD = 5.0
E_CONTROL_STD = 1.5
#: Number of TPS control points for E (a 4x4 grid).
E_NUM_CONTROL_POINTS = 16
#: Half-width (pixels) of the centred box that bounds an MNIST digit's ink
#: (MNIST normalised each digit to fit 20x20); used to keep RTS digits inside.
INK_HALF_WIDTH = 10.0
#: TC: number and side of the clutter patches.
TC_NUM_PATCHES = 6
TC_PATCH_SIZE = 6
#: Images warped per chunk (bounds the memory of grids and outputs).
CHUNK_SIZE = 1024

# The corners of the 28x28 frame in normalised units, clockwise on screen
# (y down): top-left, top-right, bottom-right, bottom-left.
_FRAME_CORNERS = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


# --------------------------------------------------------------------------- helpers


def check_distortion(distortion) -> str:
    """Return ``distortion`` lower-cased if it names one of :data:`DISTORTIONS`, else ValueError."""
    name = distortion.lower() if isinstance(distortion, str) else distortion
    if name not in DISTORTIONS:
        raise ValueError(
            f"unknown distortion {distortion!r}; expected one of {', '.join(repr(d) for d in DISTORTIONS)} "
            "(r = rotated, rts = rotated/translated/scaled, p = projective, e = elastic, tc = translated+cluttered)"
        )
    return name


def canvas_size(distortion: str) -> int:
    """Side S of the square canvas a distortion produces: 28 (r, p, e), 42 (rts) or 60 (tc)."""
    return _CANVAS[check_distortion(distortion)]


def _check_images(name: str, images) -> np.ndarray:
    """images: float (N, 28, 28) or (N, 1, 28, 28) with values in [0, 1] -> float32 (N, 28, 28)."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array of shape (N, 28, 28), got {type(images).__name__}")
    if images.dtype == np.uint8:
        raise TypeError(
            f"{name} has dtype uint8 (0..255); distortions take float pixels in [0, 1]: "
            f"pass {name}.astype(np.float32) / 255"
        )
    if images.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64 with values in [0, 1], got dtype {images.dtype}")
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or images.shape[1:] != (SOURCE_SIZE, SOURCE_SIZE):
        raise ValueError(
            f"{name} must have shape (N, 28, 28) (or (N, 1, 28, 28)), got shape {images.shape}"
        )
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.size and not (np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0):
        raise ValueError(
            f"{name} must hold finite values in [0, 1] (MNIST pixels / 255), got range "
            f"[{np.nanmin(images)}, {np.nanmax(images)}]"
        )
    return images


def _check_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)) or an int seed, "
        f"got {type(rng).__name__}"
    )


def _rotation_backward(angle_deg: np.ndarray) -> np.ndarray:
    """(N, 2, 2) backward rotation [[cos, -sin], [sin, cos]] of an on-screen CCW turn by angle."""
    phi = np.deg2rad(angle_deg)
    c, s = np.cos(phi), np.sin(phi)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def homography_from_points(src, dst) -> np.ndarray:
    """The homographies mapping 4 points ``src`` to 4 points ``dst`` (DLT with h33 = 1).

    Parameters
    ----------
    src, dst : arrays (N, 4, 2) of (x, y) points; no three of a set collinear.

    Returns
    -------
    theta : float64 (N, 8) = (a, b, c, d, e, f, g, h) of H = [[a, b, c], [d, e, f], [g, h, 1]]
        with ``dst_k ~ H src_k`` (the layout of :func:`npstn.functional.projective_grid`).

    Each pair (x, y) -> (u, v) gives two linear equations in the 8 unknowns,
    from u (g x + h y + 1) = a x + b y + c and likewise for v::

        [x, y, 1, 0, 0, 0, -u x, -u y] . theta = u
        [0, 0, 0, x, y, 1, -v x, -v y] . theta = v

    and the 4 pairs give the 8x8 system solved here (batched).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 3 or src.shape[1:] != (4, 2):
        raise ValueError(
            f"src and dst must both have shape (N, 4, 2), got {src.shape} and {dst.shape}"
        )
    n = src.shape[0]
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    rows_u = np.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)  # (N, 4, 8)
    rows_v = np.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    a = np.concatenate([rows_u, rows_v], axis=1)  # (N, 8, 8)
    b = np.concatenate([u, v], axis=1)  # (N, 8)
    try:
        return np.linalg.solve(a, b[..., None])[..., 0].reshape(n, 8)
    except np.linalg.LinAlgError as exc:
        raise ValueError(
            "homography_from_points: a point set is degenerate (three points collinear?), "
            "so no unique homography exists"
        ) from exc


def _convex(quads: np.ndarray, min_cross: float) -> np.ndarray:
    """(N,) True where the quadrilateral (N, 4, 2) is strictly convex with the frame's orientation.

    The frame corners run clockwise on screen (y down), which makes every
    cross product of consecutive edges positive; a fold or a collinear triple
    makes one of them <= min_cross.
    """
    e = np.roll(quads, -1, axis=1) - quads  # edge k: corner k -> k+1
    e_next = np.roll(e, -1, axis=1)
    cross = e[..., 0] * e_next[..., 1] - e[..., 1] * e_next[..., 0]
    return (cross > min_cross).all(axis=1)


# --------------------------------------------------------------------------- parameters
#
# Each distortion has a _draw_* function (the random parameters, drawn from
# rng in a fixed order) and, for the warps, a _theta_* function (the backward
# map given to the grid generator, computed from those parameters).


def rts_room(angle, scale, size: int = 42) -> np.ndarray:
    """How far (px, each way along x and y) an RTS digit's centre may move from the canvas centre.

    ``(S/2 - 0.5) - (INK_HALF_WIDTH + 0.5) * scale * (|cos| + |sin|)``: the
    rotated, scaled 20x20 ink box, widened by the half pixel of bilinear
    spread, stays within the centres of the canvas's border pixels.
    """
    phi = np.deg2rad(np.asarray(angle, dtype=np.float64))
    scale = np.asarray(scale, dtype=np.float64)
    half_extent = (INK_HALF_WIDTH + 0.5) * scale * (np.abs(np.cos(phi)) + np.abs(np.sin(phi)))
    return size / 2.0 - 0.5 - half_extent


def _draw_r(n, rng):
    return {"angle": rng.uniform(-R_MAX_ANGLE, R_MAX_ANGLE, size=n)}


def _theta_r(params, size):
    angle = np.asarray(params["angle"], dtype=np.float64)
    theta = np.zeros((angle.shape[0], 2, 3))
    theta[:, :, :2] = _rotation_backward(angle) * (size / SOURCE_SIZE)
    return theta


def _draw_rts(n, rng, size):
    angle = rng.uniform(-RTS_MAX_ANGLE, RTS_MAX_ANGLE, size=n)
    scale = rng.uniform(*RTS_SCALE, size=n)
    room = rts_room(angle, scale, size)
    if (room < 0).any():  # cannot happen with the paper's ranges; guards edits of the constants
        raise ValueError("RTS: the rotated, scaled ink box does not fit the canvas; check the constants")
    offset = rng.uniform(-1.0, 1.0, size=(n, 2)) * room[:, None]  # (x, y) px from the canvas centre
    return {"angle": angle, "scale": scale, "offset": offset}


def _theta_rts(params, size):
    angle = np.asarray(params["angle"], dtype=np.float64)
    scale = np.asarray(params["scale"], dtype=np.float64)
    offset = np.asarray(params["offset"], dtype=np.float64)
    # Backward map in pixels from the centres: p_in = R^-1 (p_out - t) / s,
    # with p_out = x_out * S/2 (canvas) and x_in = p_in / 14 (source).
    rinv = _rotation_backward(angle)
    half_src = SOURCE_SIZE / 2.0
    theta = np.zeros((angle.shape[0], 2, 3))
    theta[:, :, :2] = rinv * (size / 2.0 / half_src / scale)[:, None, None]
    theta[:, :, 2] = -np.einsum("nij,nj->ni", rinv, offset) / (half_src * scale[:, None])
    return theta


def _moved_corners(scale, corner_offset):
    """Where the frame's corners land (normalised): s q_k + delta_k, (N, 4, 2)."""
    return scale[:, None, None] * _FRAME_CORNERS + corner_offset * (2.0 / SOURCE_SIZE)


def _draw_p(n, rng):
    scale = rng.uniform(*PE_SCALE, size=n)
    corner_offset = rng.normal(0.0, P_CORNER_STD, size=(n, 4, 2))  # px, (x, y); TL, TR, BR, BL
    # Redraw the (rare) draws whose moved corners fold the quadrilateral.
    for _ in range(1000):
        bad = ~_convex(_moved_corners(scale, corner_offset), 1e-3)
        if not bad.any():
            break
        corner_offset[bad] = rng.normal(0.0, P_CORNER_STD, size=(int(bad.sum()), 4, 2))
    else:  # pragma: no cover - probability ~0
        raise RuntimeError("P: could not draw non-folding corner offsets")
    return {"scale": scale, "corner_offset": corner_offset}


def _theta_p(params, size):
    scale = np.asarray(params["scale"], dtype=np.float64)
    moved = _moved_corners(scale, np.asarray(params["corner_offset"], dtype=np.float64))
    # Backward homography: moved corner p_k (output) -> frame corner q_k (source).
    return homography_from_points(moved, np.broadcast_to(_FRAME_CORNERS, moved.shape))


def _draw_e(n, rng):
    scale = rng.uniform(*PE_SCALE, size=n)
    control_offset = rng.normal(0.0, E_CONTROL_STD, size=(n, E_NUM_CONTROL_POINTS, 2))  # px
    return {"scale": scale, "control_offset": control_offset}


def _theta_e(params, size):
    scale = np.asarray(params["scale"], dtype=np.float64)
    control_offset = np.asarray(params["control_offset"], dtype=np.float64)
    ctrl = F.tps_control_points(control_offset.shape[1])  # (K, 2), the output frame's regular grid
    # x_in = T(x_out) / s with T(c_p) = c_p + delta_p; the TPS is linear in theta.
    return (ctrl[None] + control_offset * (2.0 / SOURCE_SIZE)) / scale[:, None, None]


def _draw_tc(n, rng, pool_size, exclude):
    """TC parameters; ``exclude`` (n,) = each digit's own index in the pool, never cropped (or None)."""
    size, src, k, p = _CANVAS["tc"], SOURCE_SIZE, TC_NUM_PATCHES, TC_PATCH_SIZE
    position = rng.integers(0, size - src + 1, size=(n, 2))  # digit's top-left (x, y)
    if exclude is not None and pool_size > 1:
        # A uniform index among the *other* images: draw from pool_size - 1, skip one's own.
        idx = rng.integers(0, pool_size - 1, size=(n, k))
        idx += idx >= np.asarray(exclude)[:, None]
    else:
        idx = rng.integers(0, max(pool_size, 1), size=(n, k))
    crop = rng.integers(0, src - p + 1, size=(n, k, 2))  # top-left (x, y) in the pool image
    where = rng.integers(0, size - p + 1, size=(n, k, 2))  # top-left (x, y) on the canvas
    return {"position": position, "clutter_index": idx, "clutter_crop": crop, "clutter_position": where}


# name -> (grid generator, theta from parameters)
_WARPS = {"r": ("affine", _theta_r), "rts": ("affine", _theta_rts), "p": ("projective", _theta_p),
          "e": ("tps", _theta_e)}


# --------------------------------------------------------------------------- rendering


def _warp(images, theta, kind, size, backend):
    """Sample images (n, 28, 28) through the backward warp theta onto an S x S canvas."""
    n = images.shape[0]
    shape = (n, 1, size, size)
    theta = np.ascontiguousarray(theta, dtype=np.float32)
    if kind == "affine":
        grid = F.affine_grid(theta, shape, align_corners=False, backend=backend)
    elif kind == "projective":
        grid = F.projective_grid(theta, shape, align_corners=False, backend=backend)
    else:
        grid = F.tps_grid(theta, shape, align_corners=False, backend=backend)
    out = F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False, backend=backend)
    return np.asarray(out)


def _render_tc(images, pool, params):
    n = images.shape[0]
    size, src, p = _CANVAS["tc"], SOURCE_SIZE, TC_PATCH_SIZE
    canvas = np.zeros((n, size, size), dtype=np.float32)
    rows = np.arange(n)[:, None, None]
    ar_src, ar_p = np.arange(src), np.arange(p)
    x0, y0 = params["position"][:, 0], params["position"][:, 1]
    canvas[rows, (y0[:, None] + ar_src)[:, :, None], (x0[:, None] + ar_src)[:, None, :]] = images
    idx, crop, where = params["clutter_index"], params["clutter_crop"], params["clutter_position"]
    for k in range(idx.shape[1]):  # one patch per image at a time: no index repeats within a step
        cy = (crop[:, k, 1, None] + ar_p)[:, :, None]
        cx = (crop[:, k, 0, None] + ar_p)[:, None, :]
        patch = pool[idx[:, k, None, None], cy, cx]  # (n, 6, 6)
        wy = (where[:, k, 1, None] + ar_p)[:, :, None]
        wx = (where[:, k, 0, None] + ar_p)[:, None, :]
        canvas[rows, wy, wx] += patch
    np.clip(canvas, 0.0, 1.0, out=canvas)
    return canvas[:, None]


# --------------------------------------------------------------------------- public


def distort(images, distortion: str, rng, *, pool=None, backend: str | None = None,
            return_params: bool = False, chunk_size: int = CHUNK_SIZE):
    """Distort MNIST digits with one of the paper's five distortions (see the module docstring).

    Parameters
    ----------
    images : float32/float64 array (N, 28, 28) (or (N, 1, 28, 28)), values in [0, 1]
        (MNIST pixels / 255).
    distortion : one of :data:`DISTORTIONS`: "r", "rts", "p", "e", "tc".
    rng : numpy.random.Generator (or an int seed); every random number is drawn
        from it, so the same generator state gives the same output.
    pool : float array (M, 28, 28) in [0, 1], optional
        TC only: the images the clutter is cropped from (e.g. the whole training
        set). Default: ``images`` itself, never cropping a digit's own image
        (when N > 1).
    backend : "numpy", "cpu", "cuda" or None (the process default), passed to
        the grid generators and the sampler.
    return_params : also return the dict of sampled parameters.
    chunk_size : images warped at a time (the output does not depend on it).

    Returns
    -------
    x : float32 (N, 1, S, S) in [0, 1], S = :func:`canvas_size` (distortion).
    params : dict, when ``return_params``: float64/int64 arrays with N rows:
        r: ``angle`` (degrees, + = counterclockwise on screen), ``theta`` (N, 2, 3);
        rts: ``angle``, ``scale``, ``offset`` (N, 2) = the digit centre's (x, y)
        from the canvas centre in pixels, ``theta`` (N, 2, 3);
        p: ``scale``, ``corner_offset`` (N, 4, 2) px (corners TL, TR, BR, BL),
        ``theta`` (N, 8); e: ``scale``, ``control_offset`` (N, 16, 2) px,
        ``theta`` (N, 16, 2); tc: ``position`` (N, 2) the digit frame's top-left
        (x, y), ``clutter_index`` (N, 6) into the pool, ``clutter_crop``
        (N, 6, 2) the crop's top-left (x, y) in that image, ``clutter_position``
        (N, 6, 2) the patch's top-left (x, y) on the canvas.
        The theta arrays are the backward maps (output -> source) given to the
        grid generators. :func:`render` (images, distortion, params) redoes the
        same images from these parameters.
    """
    name = check_distortion(distortion)
    images = _check_images("images", images)
    rng = _check_rng(rng)
    if not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    exclude = None
    if name == "tc":
        if pool is None:
            pool, exclude = images, np.arange(images.shape[0])
        else:
            pool = _check_images("pool", pool)
            if pool.shape[0] < 1:
                raise ValueError("pool must hold at least one image (N >= 1) to crop the TC clutter from")
    x, params = _distort(images, name, rng, pool=pool, exclude=exclude, backend=backend,
                         chunk_size=int(chunk_size))
    return (x, params) if return_params else x


def _distort(images, name, rng, *, pool=None, exclude=None, backend=None, chunk_size=CHUNK_SIZE):
    """:func:`distort` without the argument checks (inputs already validated).

    ``exclude`` (TC): each image's own index in ``pool``, never used as a clutter source.
    """
    n, size = images.shape[0], _CANVAS[name]
    if name == "r":
        params = _draw_r(n, rng)
    elif name == "rts":
        params = _draw_rts(n, rng, size)
    elif name == "p":
        params = _draw_p(n, rng)
    elif name == "e":
        params = _draw_e(n, rng)
    else:
        params = _draw_tc(n, rng, pool.shape[0], exclude)
    return _render(images, name, params, pool, backend, chunk_size), params


def _render(images, name, params, pool, backend, chunk_size):
    n, size = images.shape[0], _CANVAS[name]
    out = np.zeros((n, 1, size, size), dtype=np.float32)
    if name in _WARPS:
        kind, theta_of = _WARPS[name]
        params["theta"] = theta = theta_of(params, size)
    for start in range(0, n, chunk_size):
        sl = slice(start, min(n, start + chunk_size))
        if name == "tc":
            out[sl] = _render_tc(images[sl], pool, {k: v[sl] for k, v in params.items()})
        else:
            out[sl] = _warp(images[sl], theta[sl], kind, size, backend)
    np.clip(out, 0.0, 1.0, out=out)
    return out


#: The parameters :func:`render` needs for each distortion.
PARAM_NAMES = {
    "r": ("angle",),
    "rts": ("angle", "scale", "offset"),
    "p": ("scale", "corner_offset"),
    "e": ("scale", "control_offset"),
    "tc": ("position", "clutter_index", "clutter_crop", "clutter_position"),
}


def render(images, distortion: str, params: dict, *, pool=None, backend: str | None = None,
           chunk_size: int = CHUNK_SIZE):
    """Apply a distortion with *given* parameters (no randomness): the deterministic half of :func:`distort`.

    ``params`` holds the arrays named in :data:`PARAM_NAMES` (distortion), one
    row per image, as :func:`distort` returns them with ``return_params=True``
    (any ``theta`` in it is ignored and recomputed). E.g. ``render(images, "r",
    {"angle": np.full(len(images), 90.0)})`` equals ``np.rot90`` of each image.
    For TC, ``clutter_index`` indexes ``pool`` (default: ``images``).
    No redraw happens here, so folding P corner offsets are rendered as given.

    Returns float32 (N, 1, S, S) in [0, 1].
    """
    name = check_distortion(distortion)
    images = _check_images("images", images)
    n = images.shape[0]
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict with keys {PARAM_NAMES[name]}, got {type(params).__name__}")
    missing = [k for k in PARAM_NAMES[name] if k not in params]
    if missing:
        raise ValueError(f"params for {name!r} lack {missing}; it needs {PARAM_NAMES[name]}")
    params = {k: np.asarray(params[k]) for k in PARAM_NAMES[name]}
    for k, v in params.items():
        if v.ndim < 1 or v.shape[0] != n:
            raise ValueError(f"params[{k!r}] must have one row per image ({n}), got shape {v.shape}")
    if name == "tc":
        pool = images if pool is None else _check_images("pool", pool)
        idx, crop, where = params["clutter_index"], params["clutter_crop"], params["clutter_position"]
        if (idx.min(initial=0) < 0 or idx.max(initial=0) >= pool.shape[0]
                or crop.min(initial=0) < 0 or crop.max(initial=0) > SOURCE_SIZE - TC_PATCH_SIZE
                or where.min(initial=0) < 0 or where.max(initial=0) > _CANVAS["tc"] - TC_PATCH_SIZE
                or params["position"].min(initial=0) < 0
                or params["position"].max(initial=0) > _CANVAS["tc"] - SOURCE_SIZE):
            raise ValueError("TC params out of range: indices must lie in the pool and patches on the canvas")
        params = {k: v.astype(np.int64) for k, v in params.items()}
    else:
        params = {k: v.astype(np.float64) for k, v in params.items()}
    if not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return _render(images, name, params, pool, backend, int(chunk_size))
