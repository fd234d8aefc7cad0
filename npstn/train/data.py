"""Where a run's batches and test images come from.

``load_data`` gives the training stream (``sample_batch(batch_size, rng)``:
freshly distorted digits, drawn with ``rng`` alone) and the fixed test set;
:func:`prepare_data` applies ``train_set="fixed"`` (one distorted copy of the
training digits) and ``input_norm="standardize"``. Tests replace
:func:`load_train_source` and :func:`load_test_set` with synthetic digits.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from npstn.train.checkpoint import _NPZ_ERRORS, CHECKPOINT, METRICS, _stored_config
from npstn.train.config import TrainConfig

def _data_module():
    """npstn.data's distorted-MNIST API, imported late (MNIST is only needed when training)."""
    import npstn.data as d

    if not hasattr(d, "DistortedMNIST"):  # pragma: no cover - depends on the package layout
        from npstn.data import distorted as d
    return d



def load_train_source(distortion: str, data_dir=None, backend=None):
    """The training stream of a distortion: an object with ``sample_batch(batch_size, rng) -> (x, y)``.

    Every call of ``sample_batch`` distorts freshly drawn training digits,
    using only ``rng``. Tests replace this function with synthetic digits.
    """
    return _data_module().DistortedMNIST(distortion, data_dir=data_dir, backend=backend)



def load_test_set(distortion: str, data_dir=None):
    """The fixed test set of a distortion: x float32 (10000, 1, S, S), y int64 (10000,)."""
    return _data_module().test_set(distortion, data_dir=data_dir)



def load_addition_source(data_dir=None, backend=None):
    """The MNIST-addition training stream (:class:`npstn.data.addition.AdditionMNIST`): fresh pairs
    of RTS digits, x (B, 2, 42, 42), y their sum. Tests replace this function with synthetic digits."""
    from npstn.data.addition import AdditionMNIST

    return AdditionMNIST(data_dir=data_dir, backend=backend)



def load_addition_test_set(data_dir=None):
    """The fixed MNIST-addition test set (:func:`npstn.data.addition.addition_test_set`):
    x float32 (10000, 2, 42, 42), y int64 (10000,) in 0..18."""
    from npstn.data.addition import addition_test_set

    return addition_test_set(data_dir=data_dir)



def load_mnist3d_source(data_dir=None, backend=None, volume_size: int = 28):
    """The 3D-MNIST training stream (:class:`npstn.data.mnist3d.MNIST3D`): fresh volumes
    x (B, 1, S, S, S), y the digits. Tests replace this function with synthetic digits."""
    from npstn.data.mnist3d import MNIST3D

    return MNIST3D(data_dir=data_dir, size=volume_size, backend=backend)



def load_mnist3d_test_set(data_dir=None, volume_size: int = 28):
    """The fixed 3D-MNIST test set (:func:`npstn.data.mnist3d.mnist3d_test_set`):
    x float32 (1000, 1, S, S, S), y int64 (1000,)."""
    from npstn.data.mnist3d import mnist3d_test_set

    return mnist3d_test_set(data_dir=data_dir, size=volume_size)



def data_backend(backend):
    """The backend that distorts the training batches of a run on ``backend``: the cpu's for a run
    on the GPU. The batches are host arrays either way (the step copies each to the device once),
    and the cuda kernels on host arrays copy every image up and back per op: on an H200 with 16
    cores, an RTS batch of 256 took 30.9 ms on the cuda backend and 2.1 ms on the cpu backend
    (``npstn bench train``), next to a 26.6 ms CNN step."""
    return "cpu" if backend == "cuda" else backend


def load_data(distortion: str, data_dir=None, backend=None, task: str = "distortion", volume_size: int = 28):
    """``(train_source, (x_test, y_test))``: :func:`load_train_source` and :func:`load_test_set`
    (with ``task="addition"``: :func:`load_addition_source` and :func:`load_addition_test_set`;
    with ``task="mnist3d"``: :func:`load_mnist3d_source` and :func:`load_mnist3d_test_set`).
    ``backend``: the run's; the stream distorts on :func:`data_backend` of it."""
    backend = data_backend(backend)
    if task == "mnist3d":
        return (load_mnist3d_source(data_dir, backend=backend, volume_size=volume_size),
                load_mnist3d_test_set(data_dir, volume_size))
    if task == "addition":
        return load_addition_source(data_dir, backend=backend), load_addition_test_set(data_dir)
    return load_train_source(distortion, data_dir, backend=backend), load_test_set(distortion, data_dir)



def load_test_for(config: TrainConfig, data_dir=None):
    """The fixed test set of ``config``'s task and distortion (``data_dir`` overrides the config's)."""
    where = data_dir or config.data_dir
    if config.task == "mnist3d":
        return load_mnist3d_test_set(where, config.volume_size)
    if config.task == "addition":
        return load_addition_test_set(where)
    return load_test_set(config.distortion, where)



#: Training images measured for ``input_norm="standardize"``, and the seed that draws them.
NORM_SAMPLE, NORM_SEED = 8192, 20151208



class StandardizedSource:
    """A training stream whose images are standardised: ``(x - mean) / std``.

    ``mean`` and ``std`` are those of ``NORM_SAMPLE`` training images drawn
    from ``source`` with a generator seeded by ``NORM_SEED`` (so they do not
    depend on the run's seed, and every run of a distortion shares them).
    """

    def __init__(self, source):
        self.source = source
        # a source of large examples (3D-MNIST volumes) may ask for a smaller sample
        x, _ = source.sample_batch(getattr(source, "norm_sample", NORM_SAMPLE), np.random.default_rng(NORM_SEED))
        x = np.asarray(x, dtype=np.float64)
        self.mean, self.std = float(x.mean()), float(x.std())

    def apply(self, x: np.ndarray) -> np.ndarray:
        return standardize(x, {"mean": self.mean, "std": self.std})

    def sample_batch(self, batch_size: int, rng: np.random.Generator):
        x, y = self.source.sample_batch(batch_size, rng)
        return self.apply(x), y



class FixedTrainSet:
    """One fixed distorted copy of the training digits; batches are drawn from it.

    Every digit of ``source`` (a :class:`npstn.data.DistortedMNIST`) is
    distorted once with a generator derived from ``seed``; ``sample_batch``
    then draws indices uniformly with replacement from ``rng``, as the fresh
    stream does, and returns those images unchanged.
    """

    def __init__(self, source, seed: int):
        from npstn.data.distortions import _distort

        if not hasattr(source, "images"):
            raise ValueError("train_set='fixed' needs a training source with the digits (.images, .labels)")
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(2,)))
        images = source.images
        pool, exclude = (images, np.arange(len(images))) if source.distortion == "tc" else (None, None)
        self.x, _ = _distort(images, source.distortion, rng, pool=pool, exclude=exclude,
                             backend=getattr(source, "backend", None))
        self.y = np.asarray(source.labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.y)

    def sample_batch(self, batch_size: int, rng: np.random.Generator):
        idx = rng.integers(0, len(self.y), size=int(batch_size))
        return self.x[idx], self.y[idx]



def prepare_data(config: TrainConfig, train_source, test):
    """Apply ``config.train_set`` and ``config.input_norm`` to loaded data.

    Returns ``(train_source, (x_test, y_test), norm)`` where ``norm`` is None
    or ``{"mean", "std"}`` of the standardisation.
    """
    x_test, y_test = test
    norm = None
    if config.train_set == "fixed":
        train_source = FixedTrainSet(train_source, config.seed)
    if config.input_norm == "standardize":
        train_source = StandardizedSource(train_source)
        x_test = train_source.apply(x_test)
        norm = {"mean": train_source.mean, "std": train_source.std}
    return train_source, (x_test, y_test), norm



def _norm_stats(record) -> dict | None:
    """``record["input_norm_stats"]`` when ``record`` (a metrics or checkpoint state) holds a usable one."""
    stats = record.get("input_norm_stats") if isinstance(record, dict) else None
    if (isinstance(stats, dict) and all(isinstance(stats.get(k), (int, float)) for k in ("mean", "std"))
            and np.isfinite([stats["mean"], stats["std"]]).all() and stats["std"] > 0):
        return {"mean": float(stats["mean"]), "std": float(stats["std"])}
    return None


def run_input_norm(run_dir):
    """The standardisation of a run made with ``input_norm="standardize"``: ``{"mean", "std"}``, else None.

    Read from ``metrics.json``, or from the checkpoint of an unfinished run.
    """
    run = Path(run_dir)
    config = _stored_config(run) or {}
    if config.get("input_norm", "none") == "none":
        return None
    with contextlib.suppress(OSError, ValueError):
        stats = _norm_stats(json.loads((run / METRICS).read_text()))
        if stats:
            return stats
    with contextlib.suppress(*_NPZ_ERRORS), np.load(run / CHECKPOINT, allow_pickle=False) as f:
        stats = _norm_stats(json.loads(str(f["state.json"])))
        if stats:
            return stats
    raise ValueError(f"{str(run)!r} was trained on standardised inputs but records no mean and std")



def unstandardize(v, norm: dict | None):
    """Back to pixel units: ``v * std + mean`` in float32 for a run's ``norm``; v itself for None
    (so a transformer's output on standardised inputs can be drawn like its input)."""
    if norm is None:
        return v
    return v * np.float32(norm["std"]) + np.float32(norm["mean"])



def standardize(x: np.ndarray, norm: dict | None) -> np.ndarray:
    """``(x - mean) / std`` in float32 for a run's ``norm`` (see :func:`run_input_norm`); x itself for None."""
    if norm is None:
        return x
    return ((np.asarray(x, dtype=np.float32) - np.float32(norm["mean"])) / np.float32(norm["std"])).astype(np.float32)
