"""``train()``: the loop around :func:`npstn.train.step.train_step`.

Each step draws a batch, runs :func:`~npstn.train.step.train_step`, steps the
learning-rate schedule, checks for divergence (a non-finite or exploding loss,
a NaN parameter), logs, evaluates and checkpoints at their intervals. The run
folder is locked for the whole run (:mod:`npstn.utils.runfolder`).

With ``backend="cuda"`` the model lives on the GPU (``model.to("cuda")``): each
step copies the batch (distorted on the cpu backend,
:func:`npstn.train.data.data_backend`) to the device once, every layer, the loss and the SGD
update run there, and only the scalar loss, the count of correct predictions
and a did-anything-become-NaN flag come back. Checkpoints hold host copies,
as on the CPU, and resuming puts them back on the device.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

import npstn
from npstn import nn
from npstn.models import build_model
from npstn.train import data as _data
from npstn.train.checkpoint import (CHECKPOINT, CONFIG, DIVERGED, LOG, METRICS, MODEL, _checkpoint_state,
                                    _jsonable, _stored_config, load_checkpoint, read_npz, save_checkpoint)
from npstn.train.config import _DETERMINING, TrainConfig, TrainingDiverged, _stored
from npstn.train.log import _LOG_FIELDS, _format_row, _truncate_log, read_log
from npstn.train.step import _all_finite, _count_correct, evaluate, train_step
from npstn.utils.io import atomic_write_json, atomic_write_text
from npstn.utils.runfolder import RunFolderError, lock_run, npstn_files_in

@contextlib.contextmanager
def _backend(name):
    """Use ``name`` as the process-wide backend inside the block (None: leave it)."""
    if name is None:
        yield
        return
    prev = npstn.get_backend()
    npstn.set_backend(name)
    try:
        yield
    finally:
        npstn.set_backend(prev)



def build_run_model(config: TrainConfig, seed: int | None = None):
    """The untrained model ``config`` describes (its task, model, transform, width, ...)."""
    extra = ({"task": "addition", "transformers": config.transformers, "budget": config.budget}
             if config.task == "addition" else {})
    if config.task == "mnist3d":
        extra = {"task": "mnist3d", "budget": config.budget, "input_size": config.volume_size}
    model = build_model(config.model, config.transform, config.distortion, width=config.width,
                        loc_lr_mult=config.loc_lr_mult, seed=seed, **extra)
    model.needs_input_grad = False  # the images need no gradient (the CNN's first conv skips it)
    return model



def _data_rng(seed: int) -> np.random.Generator:
    """The training data stream: independent of the weight-initialisation stream."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(1,)))



def _check_resume_config(stored: dict, config: TrainConfig, where: Path) -> None:
    new = config.to_dict()
    diffs = [f"{k}: {_stored(stored, k)!r} -> {new[k]!r}" for k in _DETERMINING
             if _jsonable(_stored(stored, k)) != _jsonable(new[k])]
    if diffs:
        raise RunFolderError(
            f"this folder holds a different run: {'; '.join(diffs)} (cannot resume {str(where)!r}: "
            "its checkpoint was made with a different configuration). Resume with the original "
            "settings, or start a new run in another --out folder."
        )




def _resume_without_checkpoint(run: Path, config: TrainConfig):
    """``--resume`` where no checkpoint exists: the stored metrics of the same finished run, else None
    (a fresh start). A finished or different run is never restarted over its files."""
    stored = _stored_config(run)
    if stored is not None:
        _check_resume_config(stored, config, run)
    elif npstn_files_in(run):
        raise RunFolderError(
            f"cannot resume {str(run)!r}: it holds {', '.join(npstn_files_in(run))} but no {CONFIG}, "
            "so it is not an npstn run; npstn will not overwrite those files. Choose another --out folder."
        )
    finished = [n for n in (MODEL, METRICS) if (run / n).exists()]
    if not finished:
        return None
    with contextlib.suppress(OSError, ValueError):
        m = json.loads((run / METRICS).read_text())
        if isinstance(m, dict) and m.get("status") == "finished" and all(
                _jsonable(_stored(m.get("config", {}), k)) == _jsonable(config.to_dict()[k])
                for k in _DETERMINING):
            return m
    raise RunFolderError(
        f"cannot resume {str(run)!r}: it holds {' and '.join(finished)} of a run but no {CHECKPOINT}, "
        "so it cannot continue it exactly; npstn will not start over on top of it. "
        "Choose another --out folder (or move those files away)."
    )



def train(config: TrainConfig, *, resume: bool = False, progress: bool = True, data=None) -> dict:
    """Train one model as ``config`` says; returns the metrics dict (also in ``metrics.json``).

    Parameters
    ----------
    config : TrainConfig
    resume : continue from ``<out>/checkpoint.npz`` (exactly: the final
        weights equal an uninterrupted run's); the configuration is compared
        with the checkpoint's before any weights are read. With no checkpoint
        there, the run starts from scratch, unless the folder holds a
        finished run (its stored metrics are returned when the configuration
        matches, else :class:`~npstn.utils.runfolder.RunFolderError`).
    progress : show a tqdm progress bar (loss, accuracy, steps/s).
    data : ``(train_source, (x_test, y_test))`` to use instead of
        :func:`load_data` (tests pass synthetic digits).

    Raises
    ------
    TrainingDiverged
        If the loss becomes NaN/inf or exceeds ``config.max_loss``; the last
        good checkpoint is kept and ``diverged.json`` records what happened.
    FileExistsError
        If ``out`` already holds any file npstn writes
        (:data:`~npstn.utils.runfolder.NPSTN_FILES`) and ``resume`` is False.
    RunFolderError
        If another process holds the folder (``.npstn.lock``), the folder
        holds a different run, or a file in it is damaged.

    The folder is locked for the whole run (see :mod:`npstn.utils.runfolder`);
    stale temporary files of killed atomic writes are removed first.
    """
    run = Path(config.out)
    if not resume and npstn_files_in(run):
        raise FileExistsError(
            f"{str(run)!r} already holds a training run (or files of the names npstn writes: "
            f"{', '.join(npstn_files_in(run))}); pass resume=True (--resume) to continue "
            "it, or choose another output folder (--out)"
        )
    with lock_run(run):
        return _train_locked(config, run, resume, progress, data)



def _train_locked(config: TrainConfig, run: Path, resume: bool, progress: bool, data) -> dict:
    """:func:`train`'s body, run while holding the folder's lock."""
    from tqdm.auto import tqdm

    ckpt_path, log_path = run / CHECKPOINT, run / LOG
    if not resume and npstn_files_in(run):  # written between the check and the lock
        raise FileExistsError(f"{str(run)!r} already holds a training run; choose another --out")
    state = None
    if resume and ckpt_path.is_file():
        # the configuration first: no weights are read for a different run
        state = _checkpoint_state(ckpt_path)
        _check_resume_config(state.get("config", {}), config, run)
    elif resume:
        done = _resume_without_checkpoint(run, config)
        if done is not None:
            if progress:
                print(f"npstn: {config.describe()} in {run}/ has already finished: test error "
                      f"{done['test_error_percent']:.2f}%")
            return done

    with _backend(config.backend):
        model = build_run_model(config, seed=config.seed)
        on_device = npstn.get_backend() == "cuda"
        if on_device:  # parameters, gradients and SGD buffers live on the GPU
            model.to("cuda")
        optimizer = nn.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)
        scheduler = nn.MultiStepLR(optimizer, config.milestones, config.lr_gamma)
        rng = _data_rng(config.seed)

        start, elapsed_before, evals, specialisation = 0, 0.0, [], []
        window = {"loss": 0.0, "correct": 0, "seen": 0, "steps": 0}
        if state is not None:
            state = load_checkpoint(ckpt_path, model, optimizer, scheduler, rng)
            start, elapsed_before = state["step"], state["elapsed_s"]
            evals, window = state["evals"], state["window"]
            specialisation = state.get("specialisation") or []
            _truncate_log(log_path, start)
            if progress:
                print(f"npstn: resuming {config.describe()} from step {start} ({ckpt_path})")
        else:
            (run / DIVERGED).unlink(missing_ok=True)
            atomic_write_text(log_path, ",".join(_LOG_FIELDS) + "\n")
        atomic_write_json(run / CONFIG, config.to_dict())

        train_source, test = data if data is not None else _data.load_data(
            config.distortion, config.data_dir, config.backend, task=config.task, volume_size=config.volume_size)
        train_source, (x_test, y_test), norm = _data.prepare_data(config, train_source, test)
        loss_fn = nn.CrossEntropyLoss()

        if start >= config.steps:  # already complete: just (re)write the outputs
            return _finish(run, model, config, x_test, y_test, evals, elapsed_before, progress, norm,
                           specialisation)

        def checkpoint(step, elapsed):
            save_checkpoint(ckpt_path, model, optimizer, scheduler, rng, step, {
                "config": config.to_dict(), "elapsed_s": elapsed, "evals": evals,
                "window": dict(window), "input_norm_stats": norm, "specialisation": specialisation})

        t0 = time.perf_counter()
        bar = tqdm(total=config.steps, initial=start, unit="step", disable=not progress,
                   desc=config.describe(), dynamic_ncols=True)
        log = open(log_path, "a", newline="")
        try:
            for step in range(start, config.steps):
                x, y = train_source.sample_batch(config.batch_size, rng)
                y_loss = y
                if on_device:  # the one host-to-device copy of the step
                    from npstn._device import to_device

                    x = to_device(np.asarray(x, dtype=np.float32))
                    y_loss = to_device(np.asarray(y, dtype=np.int64))
                lr_used = optimizer.lr
                loss, logits = train_step(model, loss_fn, optimizer, x, y_loss)
                k = step + 1
                if not math.isfinite(loss) or loss > config.max_loss:  # the update is never saved
                    log.flush()
                    raise _diverged(run, config, k, loss,
                                    f"the training loss is {loss:g}" + (
                                        "" if not math.isfinite(loss) else f" > max_loss={config.max_loss:g}"))
                scheduler.step()
                if not _all_finite(model):
                    # e.g. a NaN theta: the sampler maps it to zeros, so the loss can stay finite
                    log.flush()
                    raise _diverged(run, config, k, loss, "a parameter became NaN or infinite")

                window["loss"] += loss
                window["correct"] += _count_correct(logits, y_loss)
                window["seen"] += len(y)
                window["steps"] += 1

                test_err = None
                if k % config.eval_interval == 0 or k == config.steps:
                    test_err = evaluate(model, x_test, y_test, config.eval_batch_size)
                    evals.append([k, test_err])
                    if config.task == "addition" and getattr(model, "transformers", None):
                        specialisation.append(_specialisation(model, x_test, k, norm))
                if k % config.log_interval == 0 or test_err is not None or k == config.steps:
                    elapsed = elapsed_before + time.perf_counter() - t0
                    mean_loss = window["loss"] / window["steps"]
                    acc = window["correct"] / window["seen"]
                    log.write(_format_row({"step": k, "loss": mean_loss, "train_accuracy": acc,
                                           "lr": float(f"{lr_used:.6g}"), "test_error_percent": test_err,
                                           "elapsed_s": round(elapsed, 3)}))
                    window = {"loss": 0.0, "correct": 0, "seen": 0, "steps": 0}
                    rate = (k - start) / max(time.perf_counter() - t0, 1e-9)
                    post = {"loss": f"{mean_loss:.3f}", "acc": f"{100 * acc:.1f}%", "steps/s": f"{rate:.1f}"}
                    if evals:
                        post["test_err"] = f"{evals[-1][1]:.2f}%"
                    bar.set_postfix(post, refresh=False)
                if k % config.checkpoint_interval == 0 or k == config.steps:
                    log.flush()
                    checkpoint(k, elapsed_before + time.perf_counter() - t0)
                bar.update(1)
        finally:
            log.close()
            bar.close()
        return _finish(run, model, config, x_test, y_test, evals,
                       elapsed_before + time.perf_counter() - t0, progress, norm, specialisation)



def _diverged(run: Path, config: TrainConfig, step: int, loss: float, what: str) -> TrainingDiverged:
    """Record a divergence in ``diverged.json`` and build the error to raise."""
    ckpt = run / CHECKPOINT
    good = None
    if ckpt.is_file():
        with contextlib.suppress(Exception), np.load(ckpt, allow_pickle=False) as f:
            good = json.loads(str(f["state.json"]))["step"]
    kept = (f"the last good checkpoint ({ckpt}, step {good}) is kept" if good is not None
            else "no checkpoint had been written yet")
    msg = (f"training diverged at step {step}: {what}. The run was stopped; {kept}. "
           f"Try a smaller learning rate (--lr, now {config.lr:g})"
           + (f" or localisation multiplier (--loc-lr-mult, now {config.loc_lr_mult:g})"
              if config.model.startswith("st-") else "")
           + ", in a new --out folder.")
    atomic_write_json(run / DIVERGED, {"step": step, "loss": loss if math.isfinite(loss) else str(loss),
                                       "checkpoint_step": good, "message": msg})
    return TrainingDiverged(msg)



#: Test images on which an addition run measures its transformers' specialisation at each evaluation.
SPECIALISATION_IMAGES = 1000



def measure_specialisation(model, x_test, norm: dict | None = None) -> dict:
    """:func:`npstn.addition.specialisation_report` on the first :data:`SPECIALISATION_IMAGES` test
    pairs (how far the transformers divide the digits), as a run records it at each evaluation and
    ``npstn eval`` on its final weights. With standardised inputs (``norm``) a black pixel is
    -mean/std: only ink counts."""
    from npstn.addition import specialisation_report

    background = -norm["mean"] / norm["std"] if norm else 0.0
    return specialisation_report(model, x_test[:SPECIALISATION_IMAGES], background=background)


def _specialisation(model, x_test, step: int, norm: dict | None = None) -> dict:
    """``{"step", ...}``: :func:`measure_specialisation` at a step of training."""
    return {"step": int(step), **measure_specialisation(model, x_test, norm)}



def _finish(run: Path, model, config: TrainConfig, x_test, y_test, evals, wall: float,
            progress: bool, norm: dict | None = None, specialisation: list | None = None) -> dict:
    """Final evaluation (if the last step was not evaluated), model.npz and metrics.json."""
    if evals and evals[-1][0] == config.steps:
        err = evals[-1][1]
    else:
        err = evaluate(model, x_test, y_test, config.eval_batch_size)
    nn.save(model, run / MODEL)
    rows = read_log(run / LOG)
    metrics = {
        "test_error_percent": err,
        "steps": config.steps,
        "wall_seconds": wall,
        "steps_per_second": config.steps / wall if wall > 0 else None,
        "parameters": model.num_parameters(),
        "final_train_loss": rows[-1]["loss"] if rows else None,
        "final_train_accuracy": rows[-1]["train_accuracy"] if rows else None,
        "evals": [{"step": int(s), "test_error_percent": float(e)} for s, e in evals],
        "test_images": int(len(y_test)),
        "input_norm_stats": norm,
        **({"specialisation": specialisation or []} if config.task == "addition" else {}),
        "config": config.to_dict(),
        "model_spec": model.spec.to_dict() if getattr(model, "spec", None) else None,
        "npstn_version": npstn.__version__,
        "backend": config.backend or npstn.get_backend(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "status": "finished",
    }
    atomic_write_json(run / METRICS, metrics)
    if progress:
        print(f"npstn: {config.describe()}: test error {err:.2f}% after {config.steps} steps "
              f"({wall:.0f} s); run folder {run}/")
    return metrics



def load_run(run_dir, weights: str = "final"):
    """Rebuild a run's model from its folder: returns ``(model, config)``.

    ``weights="final"`` loads ``model.npz`` (falling back to the checkpoint's
    weights when the run has not finished); ``"checkpoint"`` the checkpoint's.
    """
    run = Path(run_dir)
    if not (run / CONFIG).is_file():
        raise FileNotFoundError(
            f"{str(run)!r} is not a run folder (no {CONFIG}); give the --out folder of `npstn train`"
        )
    try:
        config = TrainConfig.from_stored(_stored_config(run))
    except (TypeError, ValueError) as exc:
        raise RunFolderError(f"{str(run / CONFIG)!r} is not a valid npstn configuration ({exc})") from None
    model = build_run_model(config, seed=0)
    if weights == "final" and (run / MODEL).is_file():
        path, state = run / MODEL, read_npz(run / MODEL, "model file")
    elif (run / CHECKPOINT).is_file():
        path, data = run / CHECKPOINT, read_npz(run / CHECKPOINT, "checkpoint")
        state = {k[len("model/"):]: v for k, v in data.items() if k.startswith("model/")}
    else:
        raise FileNotFoundError(f"{str(run)!r} holds no weights yet ({MODEL} or {CHECKPOINT})")
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError, TypeError) as exc:
        raise RunFolderError(f"{str(path)!r} does not hold the weights of this run's "
                             f"{config.describe()} ({' '.join(str(exc).split())})") from None
    model.eval()
    return model, config
