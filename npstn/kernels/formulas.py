r"""The spatial transformer's formulas, each written once, for every backend.

Every scalar piece of the maths lives here as a plain Python function:

==============================  ==============================================  ==========================
formula                         what it computes                                paper / docs
==============================  ==============================================  ==========================
:func:`unnormalize`             normalised -> pixel coordinate                  docs/PAPER.md "Sampler"
:func:`clamp_far`               the far-point clamp, with its derivative        docs/DESIGN.md "Errors"
:func:`reflect_coordinate`      'reflection' padding, with its derivative       docs/DESIGN.md "Padding"
:func:`clip_coordinate`         'border' clip, with its derivative              docs/DESIGN.md "Padding"
:func:`source_coordinate`       the four above chained: x^s and d x^s / d x     eq. 3 (x_i^s)
:func:`round_half_even`         the nearest pixel (ties to even)                eq. 4
:func:`bilinear_weights`        the four bilinear weights                       eq. 5, eq. 6
:func:`bilinear_interpolate`    the weighted sum of the four neighbours         eq. 5
:func:`bilinear_coordinate_gradient`  dV/dx^s, dV/dy^s of one channel           eq. 7
:func:`trilinear_weights`       the eight trilinear weights (volumes)           eq. 5 in 3D, eq. 6
:func:`trilinear_interpolate`   the weighted sum of the eight neighbours        eq. 5 in 3D
:func:`trilinear_coordinate_gradient`  dV/dx^s, dV/dy^s, dV/dz^s of one channel  eq. 7 in 3D
:func:`homography`              u, v, w of the projective map                   docs/PAPER.md "Projective"
:func:`projective_point`        x^s = u/w, y^s = v/w and 1/w (horizon policy)   docs/PAPER.md "Projective"
:func:`projective_gradient`     the 8 terms of d grid / d theta at one point    docs/PAPER.md "Projective"
:func:`tps_radial_basis`        U(r) = r^2 log r^2 from r^2                     docs/PAPER.md "TPS"
==============================  ==============================================  ==========================

How one definition serves three backends (MiniTorch's idea for its operators):

* **NumPy** (the readable specification, :mod:`npstn.functional`) calls these
  functions on whole arrays: their bodies use only arithmetic, comparisons
  and the few *primitives* below, all of which work elementwise on arrays.
* **cpu** (``@njit``): each formula is registered with Numba
  (:func:`formula`: an ``@overload`` that returns the function itself,
  ``inline="always"``), so a kernel that calls
  ``formulas.bilinear_weights(...)`` compiles this very function on scalars
  and inlines it into its loop.
* **cuda** (``@cuda.jit``): the CUDA kernels call :data:`cuda_formulas`,
  a module of *twins*: each formula's code again, as a second function
  object registered for the cuda target only (a device function; NVVM
  inlines it). Not the same object, because Numba keeps one typing entry
  per function for all targets, and numba-cuda's inlining pass takes any
  ``inline="always"`` overload already compiled for the argument types,
  the cpu's included: after a cpu kernel had run, the cuda kernels failed
  to compile (found on an H200; see :func:`formula`).

The primitives (:func:`select`, :func:`clamp`, :func:`floor`,
:func:`isfinite`, :func:`copysign`, :func:`log`) are the only place where
the array and the scalar worlds differ: in Python they are NumPy's
elementwise functions, in compiled code one scalar instruction each (an
``@overload`` per target).

Precision. Formulas never introduce a float literal into a float32
computation: constants come in typed (``one`` is ``dtype(1)``), because
Numba types a Python float literal as float64 where NumPy keeps an array's
float32. So a formula computes the same float32 operations, in the same
order, on an array and on a scalar, and the cpu kernels reproduce the NumPy
specification bit for bit (tests check).

Editing a formula: Numba's on-disk cache (``cache=True``) keys a kernel by
its own source file, not by the functions it inlines from here. After
changing this file, delete the cached kernels
(``find npstn -name '*.nbi' -o -name '*.nbc' | xargs rm``) before timing
or testing.
"""
from __future__ import annotations

import math
import types

import numpy as np
from numba.extending import overload

__all__ = [
    "COORD_LIMIT", "PROJECTIVE_FAR", "PROJECTIVE_EPS", "BILINEAR", "NEAREST", "ZEROS", "BORDER", "REFLECTION",
    "MODE_CODES", "PADDING_CODES", "cuda_formulas", "formula",
    "select", "clamp", "floor", "isfinite", "copysign", "log",
    "unnormalize_constants", "unnormalize", "clamp_far", "reflect_coordinate", "clip_coordinate",
    "source_coordinate", "round_half_even", "bilinear_weights", "bilinear_interpolate",
    "bilinear_coordinate_gradient", "trilinear_weights", "trilinear_interpolate",
    "trilinear_coordinate_gradient", "homography", "projective_point", "projective_gradient", "tps_radial_basis",
]

# ----------------------------------------------------------------------------
# Shared constants (the one home of each)
# ----------------------------------------------------------------------------

#: Pixel coordinates are clamped to +-COORD_LIMIT before padding (npstn's
#: policy for huge grid values such as 1e30, see docs/DESIGN.md "Errors").
#: 2**22 is far outside any image yet small enough that float32 arithmetic
#: on it is exact and integer pixel indices never overflow.
COORD_LIMIT = 4194304.0
#: Magnitude of the coordinates of projective points on the horizon (|w| < eps).
PROJECTIVE_FAR = 1e6
#: Default threshold on |w| below which a projective point is sent "to infinity".
PROJECTIVE_EPS = 1e-6

# Integer codes of the sampler's modes (strings cannot cross into compiled code cheaply).
BILINEAR, NEAREST = 0, 1
ZEROS, BORDER, REFLECTION = 0, 1, 2
MODE_CODES = {"bilinear": BILINEAR, "nearest": NEAREST}
PADDING_CODES = {"zeros": ZEROS, "border": BORDER, "reflection": REFLECTION}


#: The formulas as the CUDA kernels call them (``from npstn.kernels.formulas import cuda_formulas as
#: fm``): the same names, each formula a twin of this module's function (same code, own object),
#: the constants and primitives themselves.
cuda_formulas = types.ModuleType(__name__ + ".cuda_formulas", "The formulas' twins for the cuda target.")
_CUDA_GLOBALS: dict = {}  # the twins' globals: this module's, with each formula name bound to its twin


def formula(fn):
    """Register a plain Python formula with Numba: for the cpu target inlined into its caller's
    loop; for the cuda target a twin (same code, another function object) as a device function
    (NVVM inlines it all the same), which the CUDA kernels call through :data:`cuda_formulas`.

    Why two objects. Numba keeps one typing entry per Python function, shared by all targets,
    and numba-cuda's inlining pass inlines any ``inline="always"`` overload of that entry that
    was already compiled for the call's argument types, whichever target compiled it. Once a
    cpu kernel had compiled a formula, a CUDA kernel calling the same function with the same
    types inlined the cpu version and failed ("add(omitted(default=Undefined), ...)", or an
    AssertionError in numba-cuda's postproc): on an H200, every spatial-transformer test that
    ran the cpu reference first. (Before that, one ``register_jitable(inline="always")`` did
    both targets and failed the same way everywhere.) tests/cuda_compile_check.py compiles a
    cpu kernel first, then every CUDA kernel to PTX, without a GPU where NVVM is installed.
    """
    def implementation(*args, **kwargs):
        return fn

    overload(fn, target="cpu", inline="always", strict=False)(implementation)

    twin = types.FunctionType(fn.__code__, _CUDA_GLOBALS, fn.__name__, fn.__defaults__, fn.__closure__)
    twin.__doc__, twin.__qualname__, twin.__module__ = fn.__doc__, fn.__qualname__, cuda_formulas.__name__

    def twin_implementation(*args, **kwargs):
        return twin

    overload(twin, target="cuda", strict=False)(twin_implementation)
    _CUDA_GLOBALS[fn.__name__] = twin
    setattr(cuda_formulas, fn.__name__, twin)
    return fn


# ----------------------------------------------------------------------------
# Primitives: elementwise on arrays in Python, one scalar operation when compiled
# ----------------------------------------------------------------------------

def _scalar(*xs) -> bool:
    return all(np.ndim(x) == 0 for x in xs)


def select(cond, a, b):
    """``a`` where ``cond``, else ``b`` (``np.where``; a branch-free select when compiled)."""
    if _scalar(cond, a, b):  # scalars (the CUDA simulator): keep them scalars
        return a if cond else b
    return np.where(cond, a, b)


def clamp(x, lo, hi):
    """``min(max(x, lo), hi)`` elementwise, in x's dtype."""
    return np.minimum(np.maximum(x, lo), hi)


def floor(x):
    """The largest integer <= x, as a float of x's dtype."""
    return np.floor(x)


def isfinite(x):
    """Neither NaN nor +-inf."""
    return np.isfinite(x)


def copysign(a, b):
    """|a| with the sign of b (signs of zeros included)."""
    return np.copysign(a, b)


def log(x):
    """The natural logarithm."""
    return np.log(x)


@overload(select, target="generic")
def _select_jit(cond, a, b):
    def impl(cond, a, b):
        return a if cond else b
    return impl


@overload(clamp, target="cpu")
def _clamp_cpu(x, lo, hi):
    def impl(x, lo, hi):
        return min(max(x, lo), hi)  # minss / maxss: the loops around it vectorise
    return impl


@overload(clamp, target="cuda")
def _clamp_cuda(x, lo, hi):
    def impl(x, lo, hi):  # (the CUDA target does not type the min / max builtins here)
        return lo if x < lo else (hi if x > hi else x)
    return impl


@overload(floor, target="cpu")
def _floor_cpu(x):
    return lambda x: np.floor(x)  # keeps the dtype (math.floor returns an int)


@overload(floor, target="cuda")
def _floor_cuda(x):
    return lambda x: type(x)(math.floor(x))  # |x| <= COORD_LIMIT where used: exact


@overload(isfinite, target="generic")
def _isfinite_jit(x):
    return lambda x: math.isfinite(x)


@overload(copysign, target="generic")
def _copysign_jit(a, b):
    return lambda a, b: math.copysign(a, b)


@overload(log, target="generic")
def _log_jit(x):
    return lambda x: math.log(x)


# ----------------------------------------------------------------------------
# The sampler's source coordinate: unnormalise, clamp far points, pad
# ----------------------------------------------------------------------------

def unnormalize_constants(dtype, size: int, align_corners: bool):
    """(one, scale, shift) in ``dtype`` for :func:`unnormalize` along an axis of ``size`` pixels.

    align_corners=False: x^s = (x + 1) * (size / 2) - 1/2   (-1, +1 -> the corner pixels' outer edges)
    align_corners=True:  x^s = (x + 1) * ((size - 1) / 2)   (-1, +1 -> the corner pixels' centres)
    """
    t = np.dtype(dtype).type
    if align_corners:
        return t(1), t((size - 1) / 2), t(0)
    return t(1), t(size / 2), t(0.5)


@formula
def unnormalize(x, one, scale, shift):
    """Pixel coordinate of the normalised coordinate x: ``(x + 1) * scale - shift`` (torch's order).

    d x^s / d x = scale. Computed in x's dtype.
    """
    return (x + one) * scale - shift


@formula
def clamp_far(p, d, limit):
    """Clamp p to [-limit, limit] (+-inf included); the derivative d passes inside, is 0 where clamped."""
    return clamp(p, -limit, limit), select(abs(p) <= limit, d, d - d)


@formula
def reflect_coordinate(p, d, size, align_corners, one):
    """Mirror p at the image edges ('reflection' padding); the derivative d flips sign on mirrored stretches.

    The edges are low = -1/2 and low + span = size - 1/2 (align_corners=False)
    or 0 and size - 1 (True); the mirrored pattern repeats every 2 span. A
    point at distance t = p - low from the low edge lands at
    ``extra = |t| mod 2 span`` if that is in the first half period, else at
    ``2 span - extra`` (one more mirror, which flips the derivative, as does
    t < 0). ``size`` is a float of p's dtype.
    """
    zero = one - one
    two = one + one
    if align_corners:
        low = zero
        twice_span = two * (size - one)
    else:
        low = -one / two
        twice_span = two * size
    if twice_span == zero:  # one pixel with align_corners=True: everything maps onto it
        return p * zero, d * zero
    t = p - low
    extra = abs(t) % twice_span  # both >= 0: an exact fmod
    reflected = twice_span - extra
    flip = extra > reflected
    return select(flip, reflected, extra) + low, select(flip != (t < zero), -d, d)


@formula
def clip_coordinate(p, d, size, one):
    """Clip p to [0, size - 1] ('border' padding); d passes strictly inside, is 0 at and beyond the edges."""
    zero = one - one
    last = size - one
    return clamp(p, zero, last), select((p > zero) & (p < last), d, zero)


@formula
def source_coordinate(x, one, scale, shift, limit, size, padding, align_corners):
    """x^s, the pixel coordinate a (finite) normalised coordinate x reads, and d x^s / d x.

    Unnormalise, clamp far points to +-limit, then apply the padding mode
    (``padding``: ZEROS, BORDER or REFLECTION; a compile-time constant in
    the kernels). ``size`` is the axis length as a float of x's dtype.
    """
    p, d = clamp_far(unnormalize(x, one, scale, shift), scale, limit)
    if padding == REFLECTION:
        q, e = reflect_coordinate(p, d, size, align_corners, one)
        return clip_coordinate(q, e, size, one)
    if padding == BORDER:
        return clip_coordinate(p, d, size, one)
    return p, d


@formula
def round_half_even(x, one):
    """The nearest integer to x, ties to even (C's nearbyint, as torch), as a float of x's dtype (eq. 4).

    The paper writes floor(x + 0.5), which differs only at exact ties.
    """
    f = floor(x)
    r = x - f  # exact
    half = one / (one + one)
    up = (r > half) | ((r == half) & (f % (one + one) != one - one))
    return select(up, f + one, f)


# ----------------------------------------------------------------------------
# Bilinear sampling (eq. 5) and its gradients (eq. 6, 7)
# ----------------------------------------------------------------------------

@formula
def bilinear_weights(fx, fy, one):
    """The weights of the NW, NE, SW, SE neighbours (eq. 5), fx = x^s - x0, fy = y^s - y0.

    They are also dV/dU of each neighbour (eq. 6), so the backward scatters
    grad_output times these weights into grad_input.
    """
    return (one - fy) * (one - fx), (one - fy) * fx, fy * (one - fx), fy * fx


@formula
def bilinear_interpolate(nw, ne, sw, se, w_nw, w_ne, w_sw, w_se):
    """V = the weighted sum of the four neighbours' values (eq. 5); outside neighbours read 0."""
    return nw * w_nw + ne * w_ne + sw * w_sw + se * w_se


@formula
def bilinear_coordinate_gradient(nw, ne, sw, se, fx, fy, one):
    """(dV/dx^s, dV/dy^s) of one channel at one point (eq. 7).

    With x0 = floor(x^s) the weights of eq. 5 are linear in fx = x^s - x0,
    so dV/dx^s = (1-fy)(NE - NW) + fy (SE - SW), the one-sided derivative from
    the right at an exact integer x^s (torch's sub-gradient); likewise y.
    """
    # BEGIN SOLUTION task2
    return (ne - nw) * (one - fy) + (se - sw) * fy, (sw - nw) * (one - fx) + (se - ne) * fx
    # END SOLUTION


# ----------------------------------------------------------------------------
# Trilinear sampling of volumes (eq. 5 with a third kernel factor) and its gradients
# ----------------------------------------------------------------------------
#
# The kernel of eq. 3 is separable, k(x^s - m) k(y^s - n) k(z^s - l), so the
# trilinear formulas are the bilinear ones of the two depth slices z0 and
# z0 + 1 ("top" and "bottom"), combined by the third factor (1 - fz, fz).
# Neighbour order, here and in every kernel: top NW, NE, SW, SE, then bottom
# NW, NE, SW, SE (x fastest, then y, then z).

@formula
def trilinear_weights(fx, fy, fz, one):
    """The weights of the eight neighbours (eq. 5 in 3D), fx, fy, fz the fractional parts.

    The bilinear weights of (fx, fy) times (1 - fz) for the slice z0 and
    times fz for the slice z0 + 1. They are dV/dU of each neighbour (eq. 6).
    """
    w_nw, w_ne, w_sw, w_se = bilinear_weights(fx, fy, one)
    gz = one - fz
    return w_nw * gz, w_ne * gz, w_sw * gz, w_se * gz, w_nw * fz, w_ne * fz, w_sw * fz, w_se * fz


@formula
def trilinear_interpolate(tnw, tne, tsw, tse, bnw, bne, bsw, bse,
                          w_tnw, w_tne, w_tsw, w_tse, w_bnw, w_bne, w_bsw, w_bse):
    """V = the weighted sum of the eight neighbours' values (eq. 5 in 3D); outside neighbours read 0."""
    return (bilinear_interpolate(tnw, tne, tsw, tse, w_tnw, w_tne, w_tsw, w_tse)
            + bilinear_interpolate(bnw, bne, bsw, bse, w_bnw, w_bne, w_bsw, w_bse))


@formula
def trilinear_coordinate_gradient(tnw, tne, tsw, tse, bnw, bne, bsw, bse, fx, fy, fz, one):
    """(dV/dx^s, dV/dy^s, dV/dz^s) of one channel at one point (eq. 7 in 3D).

    x and y: eq. 7 in each slice, weighted (1 - fz) and fz; z: the bilinear
    value of the bottom slice minus that of the top one. As in 2D, the
    one-sided derivative from the right at an exact integer coordinate.
    """
    gz = one - fz
    tx, ty = bilinear_coordinate_gradient(tnw, tne, tsw, tse, fx, fy, one)
    bx, by = bilinear_coordinate_gradient(bnw, bne, bsw, bse, fx, fy, one)
    w_nw, w_ne, w_sw, w_se = bilinear_weights(fx, fy, one)
    top = bilinear_interpolate(tnw, tne, tsw, tse, w_nw, w_ne, w_sw, w_se)
    bottom = bilinear_interpolate(bnw, bne, bsw, bse, w_nw, w_ne, w_sw, w_se)
    return tx * gz + bx * fz, ty * gz + by * fz, bottom - top


# ----------------------------------------------------------------------------
# The projective map and its derivative (float64 throughout)
# ----------------------------------------------------------------------------

@formula
def homography(a, b, c, d, e, f, g, h, x, y):
    """u, v, w of the target point (x, y) under [[a, b, c], [d, e, f], [g, h, 1]]."""
    return a * x + b * y + c, d * x + e * y + f, g * x + h * y + 1.0


@formula
def projective_point(u, v, w, eps):
    """(x^s, y^s, 1/w): x^s = u / w, y^s = v / w, and 1/w for the backward.

    On the horizon, |w| < eps, the point gets +-PROJECTIVE_FAR with the sign
    of the limit of u/w (sign(u) sign(w), signs of zeros as copysign reads
    them) and 1/w = 0, which zeroes its gradient.
    """
    far = abs(w) < eps
    safe_w = select(far, 1.0, w)
    sign_w = copysign(1.0, w)
    x_s = select(far, PROJECTIVE_FAR * copysign(1.0, u) * sign_w, u / safe_w)
    y_s = select(far, PROJECTIVE_FAR * copysign(1.0, v) * sign_w, v / safe_w)
    return x_s, y_s, select(far, 0.0, 1.0 / safe_w)


@formula
def projective_gradient(g_x, g_y, u, v, inv_w, x, y):
    """The 8 terms dL/d(a, b, c, d, e, f, g, h) of one point, from Gamma = (g_x, g_y) = dL/d(x^s, y^s).

    dL/d(a, b, c) = g_x (x, y, 1) / w; dL/d(d, e, f) = g_y (x, y, 1) / w;
    dL/d(g, h) = -q (x, y) / w with q = g_x x^s + g_y y^s = (g_x u + g_y v) / w.
    """
    # BEGIN SOLUTION task3
    gx = g_x * inv_w
    gy = g_y * inv_w
    q = (gx * u + gy * v) * inv_w
    return gx * x, gx * y, gx, gy * x, gy * y, gy, -q * x, -q * y
    # END SOLUTION


# ----------------------------------------------------------------------------
# The thin-plate spline's radial basis
# ----------------------------------------------------------------------------

@formula
def tps_radial_basis(r2):
    """The TPS radial basis phi = r^2 log r^2 from the squared distance r2 >= 0, with phi(0) = 0."""
    pos = r2 > 0.0
    return select(pos, r2 * log(select(pos, r2, 1.0)), 0.0 * r2)


# the twins see this module's constants and primitives; cuda_formulas offers them too
for _name, _value in list(globals().items()):
    _CUDA_GLOBALS.setdefault(_name, _value)
    if not _name.startswith("_") and not hasattr(cuda_formulas, _name):
        setattr(cuda_formulas, _name, _value)
del _name, _value
