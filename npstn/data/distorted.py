"""Distorted-MNIST datasets: fresh training batches, and one fixed test set per distortion.

The paper (Jaderberg et al. 2015, Section 4.1) trains on digits distorted
afresh at every step and tests on a fixed distorted copy of the 10k MNIST test
images. Here:

* :class:`DistortedMNIST` holds the 60k training digits (float32, /255) and
  draws training batches: ``x, y = data.sample_batch(256, rng)`` picks 256
  random digits *and* distorts them, using nothing but ``rng``. So saving
  ``rng.bit_generator.state`` in a checkpoint and restoring it reproduces the
  following batches exactly.
* :func:`test_set` returns the 10k test digits distorted once with the fixed
  seed :data:`TEST_SEED`: the same arrays for every model, run and process.
  They are memoised in-process and cached on disk (see below).

Both accept preloaded arrays, ``images=`` (uint8 0..255, or float in [0, 1])
and ``labels=``, instead of reading MNIST, e.g. tiny synthetic digits in tests.

The disk cache
--------------
``test_set`` writes ``<cache>/<name>-<seed>-v<version>.npz`` (uncompressed
float32; 31 MB for the 28x28 sets, 71 MB for RTS, 144 MB for TC), where
``<cache>`` is :func:`distorted_cache_dir` (``$XDG_CACHE_HOME/npstn/distorted``,
by default ``~/.cache/npstn/distorted``) and ``<version>`` is
:data:`npstn.data.distortions.GENERATOR_VERSION`, so a change to the generator
never reuses a stale file. Test sets made from preloaded arrays add a
fingerprint of those arrays to the name. Files are written atomically (a crash
never leaves half a file); a file that cannot be read back, or whose contents
do not match what was asked for, is regenerated with a warning. If the cache
cannot be written (read-only home, full disk), a warning says so and the test
set is still returned. The cached file was made by whichever backend generated
it first; the backends agree to float32 rounding.

TC clutter for the test set is cropped from the *test* digits (never a digit's
own image), so the test set needs only the test split; training batches crop
it from the training digits.
"""
from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from npstn.data.distortions import (
    GENERATOR_VERSION,
    SOURCE_SIZE,
    _check_rng,
    _distort,
    canvas_size,
    check_distortion,
)
from npstn.data.mnist import load_mnist
from npstn.utils.io import atomic_save_npz

__all__ = [
    "TEST_SEED",
    "NUM_CLASSES",
    "DigitSource",
    "DistortedMNIST",
    "test_set",
    "distorted_cache_dir",
    "clear_test_set_memo",
]

#: Seed of every distorted test set (the paper's arXiv number, 1506.02025).
TEST_SEED = 150602025
#: MNIST has ten classes.
NUM_CLASSES = 10

# In-process memo of test sets: (name, seed, version, source) -> (x, y), read-only.
_MEMO: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def distorted_cache_dir() -> Path:
    """Where distorted test sets are cached: ``$XDG_CACHE_HOME/npstn/distorted``.

    ``XDG_CACHE_HOME`` is used when set to an absolute path, else ``~/.cache``
    (the same rule as :func:`npstn.data.mnist_cache_dir`). Not created here.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "npstn" / "distorted"


def clear_test_set_memo() -> None:
    """Forget the test sets memoised in this process (the disk cache is kept)."""
    _MEMO.clear()


# --------------------------------------------------------------------------- inputs


def _as_digits(images, labels, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Preloaded (images, labels) -> float32 (N, 28, 28) in [0, 1] and int64 (N,) in 0..9."""
    if images is None or labels is None:
        raise ValueError(f"{what}: pass both images= and labels= (or neither, to read MNIST)")
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or images.shape[1:] != (SOURCE_SIZE, SOURCE_SIZE) or images.shape[0] < 1:
        raise ValueError(
            f"{what}: images must have shape (N, 28, 28) with N >= 1, got shape {images.shape}"
        )
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / np.float32(255.0)
    elif images.dtype in (np.float32, np.float64):
        images = np.ascontiguousarray(images, dtype=np.float32)
        if not (np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0):
            raise ValueError(
                f"{what}: float images must hold values in [0, 1] (pixels / 255), got range "
                f"[{np.nanmin(images)}, {np.nanmax(images)}]"
            )
    else:
        raise TypeError(f"{what}: images must be uint8 (0..255) or float32/float64 in [0, 1], got {images.dtype}")
    labels = np.asarray(labels)
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{what}: labels must be integers of shape ({images.shape[0]},) to match the images, "
            f"got dtype {labels.dtype} shape {labels.shape}"
        )
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"{what}: labels must lie in 0..{NUM_CLASSES - 1}, got range [{labels.min()}, {labels.max()}]")
    return images, labels.astype(np.int64)


def _load_split(split: str, data_dir) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_mnist(split, data_dir)
    return images.astype(np.float32) / np.float32(255.0), labels


# --------------------------------------------------------------------------- training data


class DigitSource:
    """What every training-set source shares: the MNIST training digits, a generator, fresh batches.

    :class:`DistortedMNIST`, :class:`npstn.data.AdditionMNIST` and
    :class:`npstn.data.MNIST3D` are DigitSources. Each loads the digits
    (``images`` float32 (N, 28, 28) in [0, 1], ``labels`` int64 (N,)) here,
    keeps ``backend``, ``seed`` and ``rng`` (the generator ``sample_batch``
    uses when given none), and implements :meth:`_draw`.
    ``sample_batch(batch_size, rng=None)`` checks its arguments and calls
    ``_draw(batch_size, rng)``, which must take every random number from
    ``rng`` and nothing else: the same generator state gives the same batch.
    """

    num_classes = NUM_CLASSES

    def __init__(self, data_dir=None, backend: str | None = None, *, seed: int = 0, images=None, labels=None):
        if images is None and labels is None:
            self.images, self.labels = _load_split("train", data_dir)
        else:
            self.images, self.labels = _as_digits(images, labels, type(self).__name__)
        self.backend = backend
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def sample_batch(self, batch_size: int, rng: np.random.Generator | None = None):
        """A fresh batch ``(x, y)`` of ``batch_size`` examples drawn from ``rng`` (default :attr:`rng`).

        See the class's ``_draw`` for what x and y hold.
        """
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        return self._draw(int(batch_size), self.rng if rng is None else _check_rng(rng))

    def _draw(self, batch_size: int, rng: np.random.Generator):
        raise NotImplementedError


class DistortedMNIST(DigitSource):
    """The MNIST training digits, drawn as freshly distorted batches.

    Parameters
    ----------
    distortion : "r", "rts", "p", "e" or "tc" (see :mod:`npstn.data.distortions`).
    data_dir : folder of the MNIST files (default: ``$NPSTN_DATA_DIR``, then the
        user cache, then a download; see :func:`npstn.data.load_mnist`).
    seed : seed of :attr:`rng`, the generator used when ``sample_batch`` is
        called without one.
    backend : backend of the grid generators and the sampler (None = default).
    images, labels : preloaded digits instead of MNIST: uint8 (N, 28, 28) in
        0..255 or float in [0, 1], and int labels (N,) in 0..9.

    Attributes
    ----------
    images : float32 (N, 28, 28) in [0, 1];  labels : int64 (N,)
    image_size : the canvas side S (28, 42 or 60);  num_classes : 10
    """

    def __init__(self, distortion: str, data_dir=None, seed: int = 0, backend: str | None = None, *,
                 images=None, labels=None):
        self.distortion = check_distortion(distortion)
        super().__init__(data_dir, backend, seed=seed, images=images, labels=labels)
        self.image_size = canvas_size(self.distortion)

    def __repr__(self) -> str:
        return (f"DistortedMNIST(distortion={self.distortion!r}, n={len(self)}, "
                f"image_size={self.image_size}, backend={self.backend!r})")

    def _draw(self, batch_size: int, rng: np.random.Generator):
        """A batch of random training digits, freshly distorted.

        Indices are drawn uniformly with replacement, then the distortions.
        Returns ``(x, y)``: x float32 (B, 1, S, S) in [0, 1], y int64 (B,).
        """
        idx = rng.integers(0, len(self), size=batch_size)
        pool, exclude = (self.images, idx) if self.distortion == "tc" else (None, None)
        x, _ = _distort(self.images[idx], self.distortion, rng, pool=pool, exclude=exclude,
                        backend=self.backend)
        return x, self.labels[idx]


# --------------------------------------------------------------------------- the test set


def _fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def _read_cache(path: Path, meta: dict, size: int, n: int, labels: np.ndarray | None):
    """The cached (x, y) if ``path`` holds a good file for ``meta``, None if absent; ValueError if bad."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = {k: f[k] for k in ("x", "y", *meta)}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"unreadable ({type(exc).__name__}: {exc})") from exc
    for k, v in meta.items():
        if stored[k].item() != v:
            raise ValueError(f"it holds {k}={stored[k].item()!r}, expected {v!r}")
    x, y = stored["x"], stored["y"]
    if x.dtype != np.float32 or x.shape != (n, 1, size, size) or y.dtype != np.int64 or y.shape != (n,):
        raise ValueError(f"wrong arrays: x {x.dtype} {x.shape}, y {y.dtype} {y.shape}")
    if labels is not None and not np.array_equal(y, labels):
        raise ValueError("its labels differ from the given labels")
    if n and not (x.min() >= 0.0 and x.max() <= 1.0):  # also catches NaN
        raise ValueError("its pixels are not all in [0, 1]")
    return x, y


def _freeze(x: np.ndarray, y: np.ndarray):
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def test_set(distortion: str, data_dir=None, seed: int = TEST_SEED, backend: str | None = None, *,
             images=None, labels=None, cache: bool = True, cache_dir=None):
    """The distorted test set: the 10k MNIST test digits distorted once with ``seed``.

    Parameters
    ----------
    distortion : "r", "rts", "p", "e" or "tc".
    data_dir : folder of the MNIST files (see :func:`npstn.data.load_mnist`);
        read only when the test set is not already cached.
    seed : the distortions' seed; keep the default :data:`TEST_SEED` so every
        model is tested on the same images.
    backend : backend used if the set has to be generated.
    images, labels : preloaded digits instead of the MNIST test split.
    cache : read and write the disk cache (the in-process memo is always used).
    cache_dir : folder of the disk cache (default :func:`distorted_cache_dir`).

    Returns
    -------
    ``(x, y)``: x float32 (N, 1, S, S) in [0, 1], y int64 (N,); N = 10000 for
    MNIST. The arrays are shared by every caller in the process, so they are
    read-only: ``x.copy()`` for a writable one.
    """
    name = check_distortion(distortion)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    seed = int(seed)
    given = images is not None or labels is not None
    if given:
        images, labels = _as_digits(images, labels, "test_set")
        source = _fingerprint(images, labels)
        filename = f"{name}-{seed}-v{GENERATOR_VERSION}-{source}.npz"
    else:
        source = "mnist-t10k"
        filename = f"{name}-{seed}-v{GENERATOR_VERSION}.npz"
    key = (name, seed, GENERATOR_VERSION, source)
    if key in _MEMO:
        return _MEMO[key]

    size = canvas_size(name)
    meta = {"distortion": name, "seed": seed, "version": GENERATOR_VERSION, "source": source}
    path = Path(cache_dir if cache_dir is not None else distorted_cache_dir()).expanduser() / filename
    if cache:
        try:
            found = _read_cache(path, meta, size, len(images) if given else 10000, labels if given else None)
        except ValueError as why:
            warnings.warn(f"distorted test set cache {path} is bad ({why}); regenerating it", stacklevel=2)
            found = None
        if found is not None:
            _MEMO[key] = _freeze(*found)
            return _MEMO[key]

    if not given:
        images, labels = _load_split("test", data_dir)
    rng = np.random.default_rng(seed)
    # TC clutter comes from the other test digits (pool = the set itself).
    pool, exclude = (images, np.arange(len(images))) if name == "tc" else (None, None)
    x, _ = _distort(images, name, rng, pool=pool, exclude=exclude, backend=backend)
    y = np.array(labels, dtype=np.int64)
    if cache:
        arrays = {"x": x, "y": y, **{k: np.array(v) for k, v in meta.items()}}
        try:
            atomic_save_npz(path, arrays)
        except OSError as exc:
            warnings.warn(
                f"could not write the distorted test set cache {path} ({exc}); continuing without it. "
                "Set XDG_CACHE_HOME to a writable folder to cache it.",
                stacklevel=2,
            )
    _MEMO[key] = _freeze(x, y)
    return _MEMO[key]


test_set.__test__ = False  # not a pytest test, even when imported into a test module
