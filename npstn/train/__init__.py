"""Training, evaluation and checkpoints for the paper's distorted-MNIST experiments.

A training step is ten lines with no autodiff (:func:`train_step`)::

    logits = model(x)                     # forward; every layer caches what its backward needs
    loss = loss_fn(logits, y)             # mean softmax cross-entropy over the batch
    optimizer.zero_grad()                 # every Parameter.grad = 0
    model.backward(loss_fn.backward())    # dL/dlogits, back through every layer into .grad
    optimizer.step()                      # SGD with momentum on every Parameter

and :func:`train` is the loop around it. What is where:

=================  ==============================================================
``config.py``      :class:`TrainConfig`: every setting of a run; the paper's
                   protocol is the default, and what the paper leaves open was
                   chosen by experiment (docs/training.md)
``data.py``        the training stream and the fixed test set; fixed or fresh
                   training data, standardised inputs (:func:`prepare_data`)
``step.py``        :func:`train_step` and :func:`evaluate`
``loop.py``        :func:`train`: schedule, logging, evaluation, checkpoints,
                   divergence, exact resume; :func:`load_run`
``checkpoint.py``  the run folder's files and the checkpoint format
``log.py``         ``log.csv``
``sweep.py``       many runs on a process pool or a dask cluster
                   (:func:`run_sweep`), :func:`collect_results`
``tables.py``      the paper's Table 1 and :func:`results_table`
=================  ==============================================================

Typical use::

    from npstn.train import TrainConfig, train
    metrics = train(TrainConfig(model="st-fcn", distortion="rts", steps=3000, out="runs/a"))
    print(metrics["test_error_percent"])
"""
from npstn.train.config import (ADDITION_LOC_LR_MULT, DEFAULT_INPUT_NORM, DEFAULT_LOC_LR_MULT, DEFAULT_MOMENTUM, INPUT_NORMS, TRAIN_SETS,
                                TrainConfig, TrainingDiverged, _DETERMINING, _stored)
from npstn.train.checkpoint import (CHECKPOINT, CONFIG, DIVERGED, LOG, METRICS, MODEL, _stored_config, load_checkpoint,
                                    read_npz, save_checkpoint)
from npstn.train.log import read_log
from npstn.train.data import (FixedTrainSet, StandardizedSource, load_addition_source, load_addition_test_set,
                              load_data, load_test_for, load_test_set, load_train_source, prepare_data,
                              run_input_norm, standardize)
from npstn.train.step import evaluate, train_step
from npstn.train.loop import _check_resume_config, load_run, train
from npstn.train.tables import PAPER_TABLE1, REPLICATIONS, results_table
from npstn.train.sweep import DASK_CONNECT_TIMEOUT, collect_results, run_folder, run_one, run_sweep, sweep_configs
from npstn.train import checkpoint, config, data, log, loop, step, sweep, tables  # noqa: F401  (the submodules)

__all__ = [
    "DEFAULT_MOMENTUM", "DEFAULT_LOC_LR_MULT", "ADDITION_LOC_LR_MULT", "DEFAULT_INPUT_NORM", "INPUT_NORMS", "TRAIN_SETS", "TrainConfig", "TrainingDiverged",
    "train", "train_step", "evaluate", "load_data", "load_train_source", "load_test_set",
    "load_test_for", "load_addition_source", "load_addition_test_set", "prepare_data",
    "FixedTrainSet", "StandardizedSource", "run_input_norm", "standardize", "load_run", "read_log",
    "save_checkpoint", "load_checkpoint", "read_npz", "run_sweep", "run_one", "sweep_configs", "run_folder",
    "collect_results", "results_table", "PAPER_TABLE1", "REPLICATIONS",
    "CHECKPOINT", "METRICS", "CONFIG", "LOG", "MODEL", "DIVERGED",
]
