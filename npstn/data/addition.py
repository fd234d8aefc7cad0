"""MNIST addition (Jaderberg et al. 2015, appendix A.1): two RTS digits, one per channel; the label is their sum.

Each example is a 2-channel 42x42 image: channel 0 holds digit a, channel 1
digit b, each distorted *independently* with the paper's RTS distortion
(rotation U[-45, 45] degrees, scale U[0.7, 1.2], a random position on the
42x42 canvas; :mod:`npstn.data.distortions`). The label is ``a + b``, one of
19 classes (0..18). A network sees both channels and must find, read and add
the two digits; the paper's 2xST-FCN does it with two spatial transformers
that learn, from the sum alone, to attend to one digit each.

* :class:`AdditionMNIST` draws fresh training pairs from the 60k training
  digits: ``x, y = data.sample_batch(256, rng)`` uses nothing but ``rng``, so
  restoring a checkpoint's generator state reproduces the following batches
  exactly (as :class:`npstn.data.DistortedMNIST` does).
* :func:`addition_test_set` returns the fixed test set: 10k pairs of MNIST
  *test* digits drawn and distorted with :data:`ADDITION_TEST_SEED`,
  memoised in-process and cached on disk beside the distorted test sets.

How a batch is drawn (the order matters for exact resume)
---------------------------------------------------------
For a batch of B pairs, from one generator ``rng``::

    ia = rng.integers(0, N, B)          # the first digits (uniform, with replacement)
    ib = rng.integers(0, N, B)          # the second digits, independently
    xa = RTS(images[ia], rng)           # B RTS draws, then the warps
    xb = RTS(images[ib], rng)           # B more RTS draws
    x = stack(xa, xb) on the channel axis;  y = labels[ia] + labels[ib]

so channel 0 depends only on the first digits and their distortions, and
channel 1 only on the second ones. The test set is drawn the same way, except
that ``ia`` and ``ib`` are two independent permutations of the test digits
(every test digit appears once in each channel).
"""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np

from npstn.data.distorted import (
    _MEMO,
    TEST_SEED,
    DigitSource,
    _as_digits,
    _fingerprint,
    _freeze,
    _load_split,
    distorted_cache_dir,
)
from npstn.data.distortions import GENERATOR_VERSION, _distort, canvas_size
from npstn.utils.io import atomic_save_npz

__all__ = [
    "ADDITION_CLASSES",
    "ADDITION_CHANNELS",
    "ADDITION_DISTORTION",
    "ADDITION_TEST_SEED",
    "ADDITION_VERSION",
    "AdditionMNIST",
    "addition_test_set",
]

#: The distortion applied to each digit.
ADDITION_DISTORTION = "rts"
#: Sums of two digits: 0..18.
ADDITION_CLASSES = 19
#: One channel per digit.
ADDITION_CHANNELS = 2
#: Seed of the addition test set: the distorted test sets' :data:`TEST_SEED` + 1
#: (150602026), so the pairs' distortions are not those of the RTS test set.
ADDITION_TEST_SEED = TEST_SEED + 1
#: Bumped whenever a change to how pairs are drawn makes a seed give different
#: pairs (the RTS generator's own version, GENERATOR_VERSION, is in the cache name too).
ADDITION_VERSION = 1


def _pair_images(images: np.ndarray, ia: np.ndarray, ib: np.ndarray, rng: np.random.Generator,
                 backend) -> np.ndarray:
    """Digits ``images[ia]`` and ``images[ib]``, RTS-distorted in that order, as float32 (B, 2, 42, 42)."""
    xa, _ = _distort(images[ia], ADDITION_DISTORTION, rng, backend=backend)
    xb, _ = _distort(images[ib], ADDITION_DISTORTION, rng, backend=backend)
    size = xa.shape[-1]
    x = np.empty((len(ia), ADDITION_CHANNELS, size, size), dtype=np.float32)
    x[:, 0] = xa[:, 0]
    x[:, 1] = xb[:, 0]
    return x


# --------------------------------------------------------------------------- training data


class AdditionMNIST(DigitSource):
    """The MNIST training digits, drawn as fresh RTS pairs labelled with their sum.

    A :class:`npstn.data.DigitSource`, like :class:`npstn.data.DistortedMNIST`
    (``sample_batch``, ``images``, ``labels``, ``image_size``, ``num_classes``,
    ``backend``), for the addition task.

    Parameters
    ----------
    data_dir : folder of the MNIST files (default: ``$NPSTN_DATA_DIR``, then
        the user cache, then a download; see :func:`npstn.data.load_mnist`).
    backend : backend of the grid generator and the sampler (None = default).
    seed : seed of :attr:`rng`, used when ``sample_batch`` gets no generator.
    images, labels : preloaded digits instead of MNIST: uint8 (N, 28, 28) in
        0..255 or float in [0, 1], and int labels (N,) in 0..9.

    Attributes
    ----------
    images : float32 (N, 28, 28) in [0, 1];  labels : int64 (N,), the digits 0..9
    digit_distortion : "rts" (each digit's distortion);  image_size : 42
    channels : 2;  num_classes : 19

    There is deliberately no ``distortion`` attribute: code written for
    single-digit sources (which distorts ``images`` itself with
    ``distortion``) fails loudly instead of making single-digit batches.
    """

    num_classes = ADDITION_CLASSES
    channels = ADDITION_CHANNELS
    digit_distortion = ADDITION_DISTORTION
    image_size = canvas_size(ADDITION_DISTORTION)

    def __repr__(self) -> str:
        return (f"AdditionMNIST(n={len(self)}, image_size={self.image_size}, "
                f"channels={self.channels}, backend={self.backend!r})")

    def _draw(self, batch_size: int, rng: np.random.Generator):
        """``batch_size`` fresh pairs of training digits, each digit RTS-distorted on its own.

        Both digits are drawn uniformly with replacement and independently,
        then distorted, all from ``rng`` (default :attr:`rng`) and nothing
        else (see the module doc for the order): the same generator state
        always gives the same batch.

        Returns ``(x, y)``: x float32 (B, 2, 42, 42) in [0, 1] (channel 0 the
        first digit, channel 1 the second), y int64 (B,) in 0..18, their sum.
        """
        n, b = len(self), batch_size
        ia = rng.integers(0, n, size=b)
        ib = rng.integers(0, n, size=b)
        x = _pair_images(self.images, ia, ib, rng, self.backend)
        return x, self.labels[ia] + self.labels[ib]


# --------------------------------------------------------------------------- the test set


def _read_cache(path: Path, meta: dict, size: int, n: int):
    """The cached (x, y, digits) if ``path`` holds a good file for ``meta``; None if absent; ValueError if bad."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = {k: f[k] for k in ("x", "y", "digits", *meta)}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"unreadable ({type(exc).__name__}: {exc})") from exc
    for k, v in meta.items():
        if stored[k].item() != v:
            raise ValueError(f"it holds {k}={stored[k].item()!r}, expected {v!r}")
    x, y, d = stored["x"], stored["y"], stored["digits"]
    if (x.dtype != np.float32 or x.shape != (n, ADDITION_CHANNELS, size, size)
            or y.dtype != np.int64 or y.shape != (n,) or d.dtype != np.int64 or d.shape != (n, 2)):
        raise ValueError(f"wrong arrays: x {x.dtype} {x.shape}, y {y.dtype} {y.shape}, "
                         f"digits {d.dtype} {d.shape}")
    if not np.array_equal(y, d.sum(axis=1)) or d.min(initial=0) < 0 or d.max(initial=0) > 9:
        raise ValueError("its labels are not the sums of its digits")
    if n and not (x.min() >= 0.0 and x.max() <= 1.0):  # also catches NaN
        raise ValueError("its pixels are not all in [0, 1]")
    return x, y, d


def addition_test_set(data_dir=None, seed: int = ADDITION_TEST_SEED, backend: str | None = None, *,
                      images=None, labels=None, cache: bool = True, cache_dir=None,
                      return_digits: bool = False):
    """The fixed MNIST-addition test set: N pairs of test digits, RTS-distorted once with ``seed``.

    The first digits are a permutation of the N test digits and so are the
    second ones (two independent permutations drawn from ``seed``), so every
    test digit appears once in each channel; then every digit is distorted
    (see the module doc). N = 10000 for MNIST.

    Parameters
    ----------
    data_dir : folder of the MNIST files, read only when the set is not cached.
    seed : keep the default :data:`ADDITION_TEST_SEED` (150602026) so every
        model is tested on the same pairs.
    backend : backend used if the set has to be generated.
    images, labels : preloaded digits instead of the MNIST test split.
    cache : read and write the disk cache (the in-process memo is always
        used). The file is ``<cache_dir>/addition-rts-<seed>-v<G>-a<A>.npz``
        (142 MB for MNIST) in :func:`npstn.data.distorted_cache_dir` by
        default, G = :data:`~npstn.data.GENERATOR_VERSION`, A =
        :data:`ADDITION_VERSION`; preloaded digits add their fingerprint to
        the name. Written atomically; a bad file is regenerated with a warning.
    cache_dir : folder of the disk cache.
    return_digits : also return the two digits of each pair.

    Returns
    -------
    ``(x, y)`` or ``(x, y, digits)``: x float32 (N, 2, 42, 42) in [0, 1], y
    int64 (N,) in 0..18, digits int64 (N, 2) with ``y == digits.sum(1)``.
    Shared by every caller in the process, so read-only (``.copy()`` for a
    writable one).
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    seed = int(seed)
    given = images is not None or labels is not None
    stem = f"addition-{ADDITION_DISTORTION}-{seed}-v{GENERATOR_VERSION}-a{ADDITION_VERSION}"
    if given:
        images, labels = _as_digits(images, labels, "addition_test_set")
        source = _fingerprint(images, labels)
        filename = f"{stem}-{source}.npz"
    else:
        source = "mnist-t10k"
        filename = f"{stem}.npz"
    # Shares the distorted test sets' memo (cleared by npstn.data.clear_test_set_memo);
    # "addition" is not a distortion name, so the keys never collide.
    key = ("addition", seed, (GENERATOR_VERSION, ADDITION_VERSION), source)
    if key not in _MEMO:
        _MEMO[key] = _make_test_set(key, filename, images, labels, data_dir, backend, cache, cache_dir)
    x, y, d = _MEMO[key]
    return (x, y, d) if return_digits else (x, y)


addition_test_set.__test__ = False  # not a pytest test, even when imported into a test module


def _make_test_set(key, filename, images, labels, data_dir, backend, cache, cache_dir):
    _, seed, _, source = key
    given = images is not None
    size = canvas_size(ADDITION_DISTORTION)
    meta = {"task": "addition", "seed": seed, "version": GENERATOR_VERSION,
            "addition_version": ADDITION_VERSION, "source": source}
    path = Path(cache_dir if cache_dir is not None else distorted_cache_dir()).expanduser() / filename
    if cache:
        try:
            found = _read_cache(path, meta, size, len(images) if given else 10000)
        except ValueError as why:
            warnings.warn(f"addition test set cache {path} is bad ({why}); regenerating it", stacklevel=3)
            found = None
        if found is not None:
            return _freeze3(*found)

    if not given:
        images, labels = _load_split("test", data_dir)
    rng = np.random.default_rng(seed)
    n = len(images)
    ia = rng.permutation(n)
    ib = rng.permutation(n)
    x = _pair_images(images, ia, ib, rng, backend)
    digits = np.stack([labels[ia], labels[ib]], axis=1).astype(np.int64)
    y = digits.sum(axis=1)
    if cache:
        arrays = {"x": x, "y": y, "digits": digits, **{k: np.array(v) for k, v in meta.items()}}
        try:
            atomic_save_npz(path, arrays)
        except OSError as exc:
            warnings.warn(
                f"could not write the addition test set cache {path} ({exc}); continuing without it. "
                "Set XDG_CACHE_HOME to a writable folder to cache it.",
                stacklevel=3,
            )
    return _freeze3(x, y, digits)


def _freeze3(x, y, digits):
    x, y = _freeze(x, y)
    digits.flags.writeable = False
    return x, y, digits
