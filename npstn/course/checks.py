"""Self-checks for the code exercises in the notebooks: ``npstn.course.check(NAME, answer)``.

Each check compares the student's answer with npstn on random inputs (or with a
property the answer must have), prints one line, ``check NAME: ok`` or
``check NAME: not yet - <what is wrong>``, and returns True or False. It never
raises, so a notebook keeps running. The solutions live in the solution
repository's notebooks only.

=======================  ===========================================================
name                     answer
=======================  ===========================================================
affine_grid_backward     a function (grad_grid, size, align_corners) -> grad_theta (N, 2, 3)
eq7_left_derivative      an image (1, 1, H, W), H, W >= 4, float64, for which eq. 7 read
                         literally at x^s = 2 (pixels), y^s = 1.25 equals the left derivative
largest_gap_read         the largest spacing (in input pixels) between neighbouring bilinear
                         samples at which every pixel between them is still read
tps_grid_backward        a function (grad_grid, num_control_points, size) -> grad_theta (N, K, 2)
=======================  ===========================================================
"""
from __future__ import annotations

import numpy as np

__all__ = ["CHECKS", "run"]


def _affine_grid_backward(answer) -> str | None:
    import npstn.functional as F

    rng = np.random.default_rng(0)
    for size, ac in (((2, 1, 3, 5), False), ((1, 3, 4, 4), True), ((3, 1, 1, 6), False)):
        g = rng.standard_normal((size[0], size[2], size[3], 2))
        want = F.affine_grid_backward(g, size, align_corners=ac, backend="numpy")
        got = np.asarray(answer(g, size, ac))
        if got.shape != want.shape:
            return f"shape {got.shape}, expected {want.shape} for size={size}"
        if not np.allclose(got, want, rtol=1e-10, atol=1e-10):
            return f"values differ for size={size}, align_corners={ac} (max error {np.abs(got - want).max():.3g})"
    return None


def _eq7_left_derivative(img) -> str | None:
    from npstn.testing.strategies import pixel_to_normalized
    import npstn.functional as F

    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 4 or img.shape[:2] != (1, 1) or min(img.shape[2:]) < 4:
        return f"expected an image of shape (1, 1, H, W) with H, W >= 4, got {img.shape}"
    _, _, h, w = img.shape
    y = 1.25

    def value(x):
        g = np.array([[[[pixel_to_normalized(x, w, False), pixel_to_normalized(y, h, False)]]]])
        return F.grid_sample(img, g, backend="numpy")[0, 0, 0, 0]

    step = 2.0 ** -20
    left = (value(2.0) - value(2.0 - step)) / step
    right = (value(2.0 + step) - value(2.0)) / step
    ky = np.maximum(0, 1 - np.abs(y - np.arange(h)))
    literal = float(ky @ img[0, 0, :, 2])
    if abs(left - right) < 1e-9:
        return "there is no kink at x^s = 2 for this image (left and right derivatives agree): pick another"
    if abs(literal - left) > 1e-6:
        return f"eq. 7 literally gives {literal:.6f}, the left derivative is {left:.6f}"
    return None


def _largest_gap_read(delta) -> str | None:
    try:
        delta = float(delta)
    except (TypeError, ValueError):
        return f"expected a number of pixels, got {delta!r}"
    if abs(delta - 2.0) > 1e-9:
        return f"{delta:g} pixels: " + ("every pixel is still read a little beyond that" if delta < 2
                                        else "some pixels are no longer read at that spacing")
    return None


def _tps_grid_backward(answer) -> str | None:
    import npstn.functional as F

    rng = np.random.default_rng(1)
    for k, size in ((16, (2, 1, 5, 6)), (9, (1, 2, 3, 3))):
        g = rng.standard_normal((size[0], size[2], size[3], 2))
        want = F.tps_grid_backward(g, size, k, backend="numpy")
        got = np.asarray(answer(g, k, size))
        if got.shape != want.shape:
            return f"shape {got.shape}, expected {want.shape} for K={k}, size={size}"
        if not np.allclose(got, want, rtol=1e-9, atol=1e-9):
            return f"values differ for K={k}, size={size} (max error {np.abs(got - want).max():.3g})"
    return None


CHECKS = {
    "affine_grid_backward": _affine_grid_backward,
    "eq7_left_derivative": _eq7_left_derivative,
    "largest_gap_read": _largest_gap_read,
    "tps_grid_backward": _tps_grid_backward,
}


def run(name: str, *args, **kwargs) -> bool:
    """Run check ``name`` (see the module doc); prints one line and returns whether it passed."""
    if name not in CHECKS:
        raise ValueError(f"check name must be one of {', '.join(sorted(CHECKS))}, got {name!r}")
    try:
        problem = CHECKS[name](*args, **kwargs)
    except NotImplementedError as e:
        problem = f"not implemented yet ({e})"
    except Exception as e:  # the student's code raised: say what, keep the notebook running
        problem = f"your code raised {type(e).__name__}: {e}"
    print(f"check {name}: ok" if problem is None else f"check {name}: not yet - {problem}")
    return problem is None
