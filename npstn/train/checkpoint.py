"""The files of a run folder, and checkpoints that resume a run exactly.

A run lives in one folder::

    config.json       the TrainConfig (written first)
    log.csv           step, loss, train_accuracy, lr, test_error_percent, elapsed_s
    checkpoint.npz    model + optimiser + scheduler + RNG state + step (atomic)
    model.npz         the final weights (npstn.nn.save format)
    metrics.json      test_error_percent, steps, wall_seconds, parameters, config
    diverged.json     only if the loss became NaN/inf or exploded

Exact resume: everything that influences the weights lives in the
checkpoint, the data generator's ``bit_generator.state`` included, so
``train(config, resume=True)`` after an interruption ends with *bit-identical*
weights to an uninterrupted run (on the same machine and backend).
"""
from __future__ import annotations

import dataclasses
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from npstn.train.config import TrainConfig
from npstn.utils.io import atomic_save_npz
from npstn.utils.runfolder import RunFolderError

CONFIG = "config.json"



LOG = "log.csv"



CHECKPOINT = "checkpoint.npz"



MODEL = "model.npz"



METRICS = "metrics.json"



DIVERGED = "diverged.json"



_CHECKPOINT_FORMAT = 1



def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return v.item()
    return v



def save_checkpoint(path, model, optimizer, scheduler, rng, step: int, extra: dict) -> None:
    """Write model, optimiser (array state), scheduler, RNG and step to ``path`` atomically.

    Arrays go in as ``model/<name>`` and ``optim/<key>``; everything else
    (scheduler, RNG bit_generator state with its 128-bit integers, step,
    ``extra``) as one JSON string under ``state.json``.
    """
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    scalars = {}
    for k, v in optimizer.state_dict().items():
        if np.ndim(v) == 0:
            scalars[k] = _jsonable(v)
        else:
            arrays[f"optim/{k}"] = np.asarray(v)
    state = {
        "format": _CHECKPOINT_FORMAT,
        "step": int(step),
        "optimizer_scalars": scalars,
        "scheduler": _jsonable(scheduler.state_dict()),
        "rng": _jsonable(rng.bit_generator.state),
        **extra,
    }
    arrays["state.json"] = np.array(json.dumps(state))
    atomic_save_npz(path, arrays)



#: What reading a damaged .npz can raise: truncation, bit flips (CRC, zlib), missing members.
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError)



def read_npz(path, what: str = "file") -> dict:
    """Every array of the ``.npz`` file ``path``, read in full (so a damaged member shows now).

    Raises :class:`~npstn.utils.runfolder.RunFolderError` naming the file
    when it is truncated, bit-flipped (a CRC or zlib error), not a zip
    archive, or holds pickled objects.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise
    except _NPZ_ERRORS as exc:
        raise RunFolderError(
            f"{what} {str(path)!r} is damaged or not an npstn file ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())}); restore it from a backup, or move it away to start over"
        ) from None



def _checkpoint_state(path: Path, data: dict | None = None) -> dict:
    """The JSON state of a checkpoint (its step, configuration, ...), checked; ``data`` if already read."""
    path = Path(path)
    if data is None:
        try:
            with np.load(path, allow_pickle=False) as f:
                if "state.json" not in f.files:
                    data = {}
                else:
                    data = {"state.json": f["state.json"]}
        except FileNotFoundError:
            raise
        except _NPZ_ERRORS:
            data = read_npz(path, "checkpoint")  # raises with the file named
    if "state.json" not in data:
        raise RunFolderError(f"{str(path)!r} is not an npstn training checkpoint (no state.json entry)")
    try:
        state = json.loads(str(data["state.json"]))
    except ValueError:
        raise RunFolderError(f"checkpoint {str(path)!r} is damaged (its state.json is not JSON)") from None
    if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
        got = state.get("format") if isinstance(state, dict) else None
        raise RunFolderError(f"checkpoint {str(path)!r} has format {got}, "
                             f"this npstn reads format {_CHECKPOINT_FORMAT}")
    return state



def load_checkpoint(path, model, optimizer, scheduler, rng) -> dict:
    """Restore what :func:`save_checkpoint` wrote; returns the JSON state (with ``step``)."""
    path = Path(path)
    data = read_npz(path, "checkpoint")
    state = _checkpoint_state(path, data)
    model.load_state_dict({k[len("model/"):]: v for k, v in data.items() if k.startswith("model/")})
    opt_state = dict(state["optimizer_scalars"])
    opt_state.update({k[len("optim/"):]: v for k, v in data.items() if k.startswith("optim/")})
    optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["rng"]
    return state


def _stored_config(run: Path) -> dict | None:
    """``run/config.json`` as a dict (None when absent); a damaged or foreign file is an error naming it."""
    path = run / CONFIG
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{str(path)!r} is not a readable npstn config.json "
                             f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    if not isinstance(stored, dict) or not {"model", "distortion"} <= set(stored) or set(stored) - known:
        raise RunFolderError(f"{str(path)!r} is not an npstn run configuration; npstn will not "
                             "overwrite it: choose another --out folder")
    return stored
