"""3D MNIST (Jaderberg et al. 2015, appendix A.3): digits extruded into volumes, turned and moved in 3D.

Each example is a volume (1, S, S, S) (default S = 28) holding one MNIST
digit *extruded* along the depth axis: the digit's 28 x 28 image fills the
volume's x-y extent, repeated over a slab of depth ``|z| <= SLAB_HALF`` (in
normalised coordinates, so half the depth by default). The slab is then
rotated in 3D at random (three angles, each uniform in +-``max_angle``
degrees, about x, y and z) and translated (each coordinate uniform in
+-``max_shift``). Seen along the depth axis the untouched slab projects to
the digit; turned out of plane, its projection smears into something hard
to read. The paper's 3D transformer learns to turn the volume back so that
its projection (:class:`npstn.nn.Project`) is easy to classify.

How a volume is drawn (the renderer is npstn's own ops). Output voxel p, in
normalised coordinates, shows the point q = R p + t of the digit's frame
(R the rotation, t the translation: theta = [R | t] of
:func:`npstn.functional.affine_grid` on the volume's 5-D size). There the
volume holds the digit's bilinear value at (q_x, q_y)
(:func:`npstn.functional.grid_sample` on the 28 x 28 image, zeros outside)
times the slab's occupancy of q_z, a ramp one voxel wide
(``clip(1/2 + (SLAB_HALF - |q_z|) S / 2, 0, 1)``) so the slab's faces are
antialiased. Values lie in [0, 1].

* :class:`MNIST3D` draws fresh training volumes from the 60k training
  digits; ``x, y = data.sample_batch(64, rng)`` uses nothing but ``rng``.
* :func:`mnist3d_test_set` renders the fixed test set: the first ``n`` MNIST
  test digits (default 1000: a volume is S^3 floats, 88 KB at S = 28), posed
  with a generator seeded by :data:`MNIST3D_TEST_SEED`.

Order of the draws for a batch of B: ``idx = rng.integers(0, N, B)``, then
the angles ``rng.uniform(-a, a, (B, 3))``, then the shifts
``rng.uniform(-s, s, (B, 3))``.
"""
from __future__ import annotations

import numpy as np

from npstn.data.distorted import TEST_SEED, DigitSource, _as_digits, _load_split

__all__ = [
    "MNIST3D_SIZE",
    "MNIST3D_MAX_ANGLE",
    "MNIST3D_MAX_SHIFT",
    "MNIST3D_TEST_SEED",
    "MNIST3D_TEST_SIZE",
    "SLAB_HALF",
    "MNIST3D",
    "rotation_matrices",
    "random_poses",
    "render_volumes",
    "mnist3d_test_set",
]

#: Default side S of the volumes (S x S x S voxels).
MNIST3D_SIZE = 28
#: Default bound of each rotation angle, degrees.
MNIST3D_MAX_ANGLE = 45.0
#: Default bound of each translation, normalised coordinates (1 = half the volume).
MNIST3D_MAX_SHIFT = 0.15
#: Half the extruded slab's thickness, normalised (0.5: the slab fills the middle half of the depth).
SLAB_HALF = 0.5
#: Seed of the test set's poses.
MNIST3D_TEST_SEED = TEST_SEED + 3
#: Test volumes by default (the first of the MNIST test digits).
MNIST3D_TEST_SIZE = 1000


def rotation_matrices(angles: np.ndarray) -> np.ndarray:
    """R = Rz(c) Ry(b) Rx(a) (B, 3, 3) for angles (B, 3) = (a, b, c) in radians, float64."""
    a, b, c = (np.asarray(angles, dtype=np.float64)[:, i] for i in range(3))
    n = a.shape[0]
    rx = np.zeros((n, 3, 3))
    rx[:, 0, 0] = 1
    rx[:, 1, 1], rx[:, 1, 2], rx[:, 2, 1], rx[:, 2, 2] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    ry = np.zeros((n, 3, 3))
    ry[:, 1, 1] = 1
    ry[:, 0, 0], ry[:, 0, 2], ry[:, 2, 0], ry[:, 2, 2] = np.cos(b), np.sin(b), -np.sin(b), np.cos(b)
    rz = np.zeros((n, 3, 3))
    rz[:, 2, 2] = 1
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1] = np.cos(c), -np.sin(c), np.sin(c), np.cos(c)
    return rz @ ry @ rx


def random_poses(batch: int, rng: np.random.Generator, max_angle: float = MNIST3D_MAX_ANGLE,
                 max_shift: float = MNIST3D_MAX_SHIFT) -> np.ndarray:
    """theta (B, 3, 4) = [R | t], float64: random rotations (each angle uniform in +-max_angle degrees)
    and translations (each uniform in +-max_shift), drawn from ``rng`` in that order."""
    angles = np.deg2rad(rng.uniform(-max_angle, max_angle, size=(batch, 3)))
    shifts = rng.uniform(-max_shift, max_shift, size=(batch, 3))
    theta = np.empty((batch, 3, 4))
    theta[:, :, :3] = rotation_matrices(angles)
    theta[:, :, 3] = shifts
    return theta


def render_volumes(digits: np.ndarray, theta: np.ndarray, size: int = MNIST3D_SIZE,
                   backend: str | None = None) -> np.ndarray:
    """Volumes (B, 1, S, S, S) float32 of the digits (B, 28, 28) extruded and posed by theta (B, 3, 4).

    See the module doc: voxel p shows the digit at (q_x, q_y), q = theta (p, 1),
    times the slab's occupancy of q_z.
    """
    from npstn import functional as F

    digits = np.asarray(digits, dtype=np.float32)
    b, s = digits.shape[0], int(size)
    q = F.affine_grid(np.asarray(theta, dtype=np.float32), (b, 1, s, s, s), backend=backend)  # (B, S, S, S, 3)
    xy = np.ascontiguousarray(q[..., :2].reshape(b, s * s * s, 1, 2))
    values = F.grid_sample(digits[:, None], xy, backend=backend).reshape(b, 1, s, s, s)
    slab = np.clip(0.5 + (SLAB_HALF - np.abs(q[..., 2])) * (s / 2), 0.0, 1.0).astype(np.float32)
    return values * slab[:, None]


class MNIST3D(DigitSource):
    """The MNIST training digits, drawn as fresh 3D-MNIST volumes (see the module doc).

    A :class:`npstn.data.DigitSource`, like :class:`npstn.data.DistortedMNIST`
    (``sample_batch``, ``images``, ``labels``, ``image_size``, ``num_classes``,
    ``backend``).

    Parameters
    ----------
    data_dir : folder of the MNIST files (default: ``$NPSTN_DATA_DIR``, ...).
    size : the volumes' side S (default 28).
    max_angle, max_shift : the pose bounds (degrees; normalised coordinates).
    backend : backend of the renderer's grid generator and sampler.
    seed : seed of :attr:`rng`, used when ``sample_batch`` gets no generator.
    images, labels : preloaded digits instead of MNIST.
    """

    num_classes = 10
    channels = 1
    distortion = "mnist3d"
    #: volumes measured for ``input_norm="standardize"`` (fewer than the 2D tasks' 8192: a volume is S^3 floats)
    norm_sample = 512

    def __init__(self, data_dir=None, size: int = MNIST3D_SIZE, *, max_angle: float = MNIST3D_MAX_ANGLE,
                 max_shift: float = MNIST3D_MAX_SHIFT, backend: str | None = None, seed: int = 0,
                 images=None, labels=None):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
            raise ValueError(f"size must be an int >= 2 (the volume's side), got {size!r}")
        super().__init__(data_dir, backend, seed=seed, images=images, labels=labels)
        self.image_size = int(size)
        self.max_angle, self.max_shift = float(max_angle), float(max_shift)

    def __repr__(self) -> str:
        return (f"MNIST3D(n={len(self)}, size={self.image_size}, max_angle={self.max_angle:g}, "
                f"max_shift={self.max_shift:g}, backend={self.backend!r})")

    def _draw(self, batch_size: int, rng: np.random.Generator):
        """Fresh volumes: x float32 (B, 1, S, S, S) in [0, 1], y int64 (B,) the digits."""
        idx = rng.integers(0, len(self), size=batch_size)
        theta = random_poses(batch_size, rng, self.max_angle, self.max_shift)
        return render_volumes(self.images[idx], theta, self.image_size, self.backend), self.labels[idx]


def mnist3d_test_set(data_dir=None, size: int = MNIST3D_SIZE, n: int = MNIST3D_TEST_SIZE,
                     seed: int = MNIST3D_TEST_SEED, *, max_angle: float = MNIST3D_MAX_ANGLE,
                     max_shift: float = MNIST3D_MAX_SHIFT, backend: str | None = None,
                     images=None, labels=None):
    """The fixed test set: (x float32 (n, 1, S, S, S), y int64 (n,)), the first ``n`` MNIST test digits
    posed with ``np.random.default_rng(seed)`` (rendered in chunks of 256)."""
    if images is None and labels is None:
        images, labels = _load_split("test", data_dir)
    else:
        images, labels = _as_digits(images, labels, "mnist3d_test_set")
    n = min(int(n), len(images))
    images = images[:n]
    theta = random_poses(n, np.random.default_rng(seed), max_angle, max_shift)
    x = np.empty((n, 1, size, size, size), dtype=np.float32)
    for i in range(0, n, 256):
        x[i:i + 256] = render_volumes(images[i:i + 256], theta[i:i + 256], size, backend)
    return x, np.asarray(labels[:n], dtype=np.int64)
