"""Sweeps: many independent runs (a process pool or a dask cluster), and their results.

Every (model, transform, distortion, seed) is one run in its own folder
(:func:`run_folder`); finished runs are skipped and interrupted ones resume,
so the same command picks a sweep up where it stopped. ``results.json``,
``results.md`` (:func:`npstn.train.tables.results_table`) and ``results.png``
(:func:`npstn.viz.plot_table1`) are rewritten as each run lands;
:func:`collect_results` rebuilds them from the run folders alone.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from npstn.train.checkpoint import DIVERGED, METRICS, _jsonable
from npstn.train.config import _DETERMINING, TrainConfig, TrainingDiverged, _stored
from npstn.train.loop import train
from npstn.train.tables import results_table
from npstn.utils.io import atomic_write_json, atomic_write_text

def collect_results(root) -> list[dict]:
    """Sweep results rebuilt from the finished run folders under ``root`` (every ``metrics.json``).

    Returns dicts shaped like :func:`run_one`'s, so :func:`results_table` and
    :func:`npstn.viz.plot_table1` can redraw a table from the folders alone.
    """
    out = []
    for path in sorted(Path(root).glob("**/" + METRICS)):
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if m.get("status") != "finished" or "config" not in m:
            continue
        out.append({"config": m["config"], "status": "finished",
                    "test_error_percent": m["test_error_percent"], "wall_seconds": m.get("wall_seconds"),
                    "error": None, "metrics": m})
    return out



def run_folder(root, config: TrainConfig) -> Path:
    """Where a sweep keeps one run: ``root/<distortion>/<model>[-<transform>]/seed<S>``;
    for MNIST addition ``root/addition/[2x]<model>[-<transform>]/seed<S>``; for 3D MNIST
    ``root/mnist3d<S>/<model>/seed<S>``."""
    name = config.model + (f"-{config.transform}" if config.model.startswith("st-") else "")
    if config.task == "mnist3d":
        return Path(root) / f"mnist3d{config.volume_size}" / config.model / f"seed{config.seed}"
    if config.task == "addition":
        two = "2x" if config.transformers == 2 and config.model.startswith("st-") else ""
        return Path(root) / "addition" / (two + name) / f"seed{config.seed}"
    return Path(root) / config.distortion / name / f"seed{config.seed}"



def sweep_configs(root, models, transforms, distortions, seeds, task: str = "distortion",
                  **common) -> list[TrainConfig]:
    """The grid models x transforms x distortions x seeds as TrainConfigs (FCN/CNN once per transform list).

    ``common`` holds the other TrainConfig fields (steps, batch_size, lr...).
    Each config's ``out`` is :func:`run_folder`. With ``task="addition"`` (Table 4) the
    distortion is RTS and each ST model runs with one and with two transformers.
    """
    configs = []
    if task == "addition":
        distortions = ["rts"]
    for d in distortions:
        for m in models:
            st = str(m).lower().startswith("st-")
            ts = transforms if st else ["affine"]
            for n in ((1, 2) if task == "addition" and st else (1,)):
                extra = {"task": "addition", "transformers": n} if task == "addition" else {}
                for t in ts:
                    for s in seeds:
                        c = TrainConfig(model=m, transform=t, distortion=d, seed=int(s), **extra, **common)
                        c.out = str(run_folder(root, c))
                        configs.append(c)
    return configs



def _finished_metrics(config: TrainConfig):
    """The metrics of a finished run with this configuration, else None."""
    path = Path(config.out) / METRICS
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    stored = m.get("config", {})
    new = config.to_dict()
    if m.get("status") == "finished" and all(_jsonable(_stored(stored, k)) == _jsonable(new[k]) for k in _DETERMINING):
        return m
    return None



def run_one(config_dict: dict, threads: int | None = None) -> dict:
    """Train (or resume, or reuse) one sweep run; never raises. Used by the sweep's workers.

    Returns ``{"config", "status": finished|skipped|diverged|failed, "test_error_percent",
    "wall_seconds", "error", "metrics"}``: ``metrics`` is the run's full ``metrics.json``
    (None unless finished or skipped), so a sweep's client has every number even when its
    workers write the run folders on another filesystem.
    """
    config = TrainConfig.from_dict(config_dict)
    result = {"config": config.to_dict(), "status": None, "test_error_percent": None,
              "wall_seconds": None, "error": None, "metrics": None}
    done = _finished_metrics(config)
    if done is not None:
        result.update(status="skipped", test_error_percent=done["test_error_percent"],
                      wall_seconds=done["wall_seconds"], metrics=done)
        return result
    if (Path(config.out) / DIVERGED).is_file():  # resuming would diverge again, identically
        with contextlib.suppress(OSError, ValueError, KeyError):
            result["error"] = json.loads((Path(config.out) / DIVERGED).read_text())["message"]
        result["status"] = "diverged"
        return result
    if threads:
        with contextlib.suppress(Exception):
            import numba

            numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        m = train(config, resume=True, progress=False)
        result.update(status="finished", test_error_percent=m["test_error_percent"],
                      wall_seconds=m["wall_seconds"], metrics=m)
    except TrainingDiverged as exc:
        result.update(status="diverged", error=str(exc))
    except Exception as exc:  # a sweep reports failures and carries on
        result.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    return result



def run_sweep(configs: list[TrainConfig], root, *, jobs: int = 1, dask_address: str | None = None,
              progress: bool = True) -> list[dict]:
    """Run every config as an independent job; write ``results.json`` and ``results.md`` in ``root``.

    With ``jobs=1`` the runs go one after another in this process; with more,
    to a process pool of ``jobs`` workers (each given cpu_count // jobs Numba
    and BLAS threads); with ``dask_address``, to a
    dask.distributed cluster (``pip install "dask[distributed]"``): each run
    is one task; its run folder is written where the worker runs (so the
    workers need ``root`` at the same path, on a shared or their own
    filesystem), and the task returns the run's full metrics to this process,
    which writes ``results.json`` / ``results.md`` under ``root`` here.
    Finished runs with the same configuration are skipped; interrupted ones
    resume from their checkpoint.
    """
    import concurrent.futures as cf
    import multiprocessing as mp

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    jobs = max(1, int(jobs))
    results = []
    if jobs == 1 and not dask_address:  # one run at a time, in this process (easy to debug and interrupt)
        for i, c in enumerate(configs, 1):
            r = run_one(c.to_dict())
            results.append(r)
            _report(i, len(configs), c, r, progress)
            _write_sweep_results(root, results)
        return results

    threads, client, saved_env = None, None, {}
    if dask_address:
        try:
            from dask.distributed import Client
        except ImportError as exc:
            raise RuntimeError(
                "--dask needs dask.distributed, which is not installed: pip install 'dask[distributed]' "
                "(or run the sweep without --dask to use a local process pool)"
            ) from exc
        try:
            client = Client(dask_address, timeout=DASK_CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise RuntimeError(f"--dask {dask_address}: cannot reach the dask scheduler ({exc})") from None
        futures = {}
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        # BLAS reads its thread count when a worker starts; spawned workers inherit this environment.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            saved_env[var] = os.environ.get(var)
            os.environ[var] = str(threads)
        executor = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"))
    try:
        if client is not None:
            futures = {client.submit(run_one, c.to_dict(), threads, pure=False): c for c in configs}
            done_iter = _dask_as_completed(futures)
        else:
            futures = {executor.submit(run_one, c.to_dict(), threads): c for c in configs}
            done_iter = cf.as_completed(futures)
        for i, fut in enumerate(done_iter, 1):
            r = _future_result(fut, futures[fut])
            results.append(r)
            _report(i, len(configs), futures[fut], r, progress)
            _write_sweep_results(root, results)
    finally:
        if client is not None:  # dask: cancel what is left, then disconnect (the cluster stays up)
            with contextlib.suppress(Exception):
                client.cancel(list(futures))
            client.close()
        else:
            executor.shutdown(wait=True, cancel_futures=True)
        for var, v in saved_env.items():
            if v is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = v
    return results



#: Seconds to wait for a dask scheduler to answer before the sweep gives up.
DASK_CONNECT_TIMEOUT = 30



def _dask_as_completed(futures):
    from dask.distributed import as_completed

    return as_completed(list(futures))



def _future_result(fut, config: TrainConfig) -> dict:
    """A finished job's result; a job lost with its worker (or cancelled) is reported as failed."""
    try:
        return fut.result()
    except Exception as exc:  # run_one never raises: this is the executor's failure
        return {"config": config.to_dict(), "status": "failed", "test_error_percent": None,
                "wall_seconds": None, "error": f"{type(exc).__name__}: {exc}", "metrics": None}



def _report(i: int, n: int, config: TrainConfig, r: dict, progress: bool) -> None:
    if progress:
        err = r["test_error_percent"]
        what = f"{err:.2f}% test error" if err is not None else r["error"]
        print(f"[{i}/{n}] {config.describe()} seed {config.seed}: {r['status']}: {what}", flush=True)



def _write_sweep_results(root: Path, results: list[dict], complete: bool = False) -> None:
    """``results.json``, ``results.md`` (the table; ``complete``: every cell of the paper's Table 1,
    see :func:`results_table`) and ``results.png`` (:func:`npstn.viz.plot_table1`)."""
    atomic_write_json(root / "results.json", results)
    atomic_write_text(root / "results.md", results_table(results, complete=complete) + "\n")
    from npstn.viz import plot_table1

    plot_table1(results, root / "results.png")
