"""The ``npstn`` command."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import npstn
from npstn.utils import argtypes as A

#: Limits that stop absurd sizes before anything is allocated.
MAX_STEPS = 100_000_000
MAX_BATCH = 16_384
MAX_THREADS = 1024
MAX_SEEDS = 1000
MAX_JOBS = 256
MAX_VIZ = 100
#: Largest model `npstn train` builds (the paper's are ~0.1-0.5 M parameters).
MAX_PARAMETERS = 50_000_000


def _cmd_demo(args) -> int:
    from npstn.demo import run_demo

    m = run_demo(steps=args.steps, seed=args.seed, out=args.out, plot=not args.no_plot,
                 progress=not args.quiet)
    print(json.dumps(m, indent=2))
    print(f"demo: test accuracy {100 * m['test_accuracy']:.1f}% "
          f"({m['steps']} steps, {m['wall_seconds']:.1f} s); model and plot in {args.out}/")
    return 0


def _apply_threads(args, command: str) -> None:
    """--threads N: N threads for Numba and BLAS; without it, a hint when the machine is busy."""
    from npstn.utils.threads import machine_busy, set_num_threads

    if getattr(args, "threads", None):
        set_num_threads(args.threads)
        return
    busy, load, cores = machine_busy()
    if busy:
        print(f"npstn {command}: this machine is busy (load average {load:.1f} on {cores} cores); "
              "parallel kernels then wait on descheduled threads, and --threads 1 can be several "
              "times faster", file=sys.stderr)


def _threads_option(p) -> None:
    p.add_argument("--threads", type=A.positive_int(MAX_THREADS), default=None, metavar="N",
                   help="threads for Numba's kernels and NumPy's BLAS (default: all cores; on a busy "
                   "machine 1 is often much faster)")


def _cmd_quickstart(args) -> int:
    from npstn.quickstart import run_quickstart

    _apply_threads(args, "quickstart")

    run_quickstart(out=args.out, steps=args.steps, seed=args.seed, data_dir=args.data_dir,
                   progress=not args.quiet)
    return 0


def _cmd_data(args) -> int:
    from npstn.data.mnist import main_data

    return main_data(args.data_dir, pack=args.pack, import_from=args.import_from)


# ---------------------------------------------------------------------------
# train / eval / viz / params / sweep / reproduce
# ---------------------------------------------------------------------------
# Options of `npstn train` that map onto TrainConfig fields (dest -> field).
_TRAIN_FIELDS = ("model", "transform", "distortion", "steps", "batch_size", "seed", "out", "backend",
                 "data_dir", "momentum", "loc_lr_mult", "lr", "lr_drops", "eval_every", "checkpoint_every",
                 "log_every", "width", "weight_decay", "max_loss", "input_norm", "train_set", "task",
                 "transformers", "budget", "volume_size")
# The subset a sweep applies to every run.
_COMMON_FIELDS = ("steps", "batch_size", "backend", "data_dir", "momentum", "loc_lr_mult", "lr", "lr_drops",
                  "eval_every", "checkpoint_every", "weight_decay", "input_norm", "train_set")


def _given(args, fields) -> dict:
    """The options the user actually gave (they default to None), as TrainConfig fields."""
    return {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}


def _add_training_options(p, sweep: bool = False) -> None:
    """Options shared by `train` and `sweep`; every default is None = TrainConfig's default."""
    from npstn.train import ADDITION_LOC_LR_MULT, DEFAULT_LOC_LR_MULT, DEFAULT_MOMENTUM

    p.add_argument("--steps", type=A.positive_int(MAX_STEPS), help="training steps (default: the paper's 150000)")
    p.add_argument("--batch-size", type=A.positive_int(MAX_BATCH), help="batch size (default 256)")
    p.add_argument("--lr", type=A.nonnegative_float,
                   help="base learning rate (default 0.01; /10 at 1/3 and 2/3 of the run)")
    p.add_argument("--lr-drops", type=A.fraction_list, metavar="F1,F2|none",
                   help="fractions of the run after which the rate drops 10x (default 0.333,0.667; "
                   "'none' keeps it constant)")
    p.add_argument("--momentum", type=A.nonnegative_float, help=f"SGD momentum (default {DEFAULT_MOMENTUM})")
    p.add_argument("--loc-lr-mult", type=A.nonnegative_float,
                   help=f"learning-rate multiplier of the localisation network (default {DEFAULT_LOC_LR_MULT}; "
                        f"{ADDITION_LOC_LR_MULT} for --task addition's ST models)")
    p.add_argument("--weight-decay", type=A.nonnegative_float, help="L2 weight decay (default 0, as in the paper)")
    p.add_argument("--eval-every", type=A.positive_int(MAX_STEPS),
                   help="evaluate on the test set every K steps (default steps/10)")
    p.add_argument("--checkpoint-every", type=A.positive_int(MAX_STEPS),
                   help="checkpoint every K steps (default min(1000, steps/10))")
    p.add_argument("--input-norm", choices=["none", "standardize"],
                   help="standardise the pixels by the training mean and std (default) or feed them as they are, in [0, 1]")
    p.add_argument("--train-set", choices=["fresh", "fixed"],
                   help="fresh distortions every step (default) or one fixed distorted copy of the 60k digits")
    p.add_argument("--backend", choices=list(npstn.BACKENDS), help="compute backend (default: NPSTN_BACKEND or cpu)")
    p.add_argument("--data-dir", type=A.input_folder,
                   help="folder with the MNIST IDX files (default: NPSTN_DATA_DIR, cache, download)")


def _run_dir_default(config) -> str:
    from npstn.train import run_folder

    return str(run_folder("runs", config))


def _check_model_size(config, prog: str) -> None:
    """Refuse a model too large to build (``--width``) before anything is allocated."""
    from npstn.models import addition_model_spec, mnist3d_model_spec, model_spec

    if config.task == "mnist3d":
        spec = mnist3d_model_spec(config.model, input_size=config.volume_size, width=config.width,
                                  budget=config.budget)
    elif config.task == "addition":
        spec = addition_model_spec(config.model, config.transform, transformers=config.transformers,
                                   width=config.width, budget=config.budget)
    else:
        spec = model_spec(config.model, config.transform, config.distortion, width=config.width)
    if spec.params > MAX_PARAMETERS:
        raise ValueError(f"--width {config.width} gives {config.describe()} {spec.params:,} parameters, "
                         f"more than npstn trains ({MAX_PARAMETERS:,}); use a smaller --width"
                         + (" or --budget" if config.task in ("addition", "mnist3d") else ""))


def _cmd_train(args) -> int:
    import dataclasses

    from npstn.train import TrainConfig, TrainingDiverged, _stored_config, train

    given = _given(args, _TRAIN_FIELDS)
    try:
        config = TrainConfig.from_dict(given)
        out = Path(args.out) if args.out else Path(_run_dir_default(config))
        if args.resume and (out / "config.json").is_file():
            # continue the run with the settings it was started with; options given here override
            fields = _stored_config(out)
            fields.update(given)
            config = TrainConfig.from_stored(fields)
        config = dataclasses.replace(config, out=str(out))
        _check_model_size(config, "npstn train")
    except (TypeError, ValueError, OSError) as exc:
        return A.fail("npstn train", exc)
    if not args.out:  # the default folder must be usable too
        try:
            A.output_folder(str(out))
        except argparse.ArgumentTypeError as exc:
            return A.fail("npstn train", f"--out (default {out}) {exc}")
    _apply_threads(args, "train")
    try:
        m = train(config, resume=args.resume, progress=not args.quiet)
    except TrainingDiverged as exc:
        print(f"npstn train: {exc}", file=sys.stderr)
        return 3
    print(f"test error {m['test_error_percent']:.2f}%  ({m['steps']} steps, {m['wall_seconds']:.1f} s, "
          f"{m['parameters']:,} parameters)  metrics: {config.out}/metrics.json")
    return 0


def _cmd_eval(args) -> int:
    from npstn.train import data as train_data
    from npstn.train import evaluate, load_run, run_input_norm, standardize
    from npstn.utils.io import atomic_write_json

    model, config = load_run(args.run_dir, weights="checkpoint" if args.checkpoint else "final")
    x, y = train_data.load_test_for(config, args.data_dir)
    norm = run_input_norm(args.run_dir)
    x = standardize(x, norm)
    err = evaluate(model, x, y, args.batch_size)
    result = {"test_error_percent": err, "test_images": int(len(y)),
              "weights": "checkpoint" if args.checkpoint else "final", "run": str(args.run_dir)}
    spec = None
    if config.task == "addition" and getattr(model, "transformers", None):
        from npstn.train.loop import SPECIALISATION_IMAGES, measure_specialisation

        spec = measure_specialisation(model, x, norm)  # as the run records it
        result["specialisation"] = spec
    atomic_write_json(Path(args.run_dir) / "eval.json", result)
    print(f"{config.describe()}: test error {err:.2f}% on {len(y)} test images ({args.run_dir})")
    if spec is not None and spec["specialisation"] is not None:
        print(f"specialisation on the first {min(SPECIALISATION_IMAGES, len(y))} test pairs: "
              f"s = {spec['specialisation']:+.3f} (centring), {spec['energy_specialisation']:+.3f} (energy)")
    return 0


def _cmd_viz(args) -> int:
    from npstn.viz import viz_run

    for p in viz_run(args.run_dir, n=args.n, out=args.out):
        print(p)
    return 0


def _cmd_params(args) -> int:
    from npstn.models import INPUT_SIZES, format_addition_parameter_table, format_parameter_table

    if args.task == "addition":
        if args.distortion not in (None, "rts"):
            return A.fail("npstn params", f"--distortion {args.distortion}: the addition task draws RTS digits; "
                          "leave --distortion out")
        print(format_addition_parameter_table(budget=args.budget))
        return 0
    if args.budget is not None:
        return A.fail("npstn params", "--budget belongs to --task addition (Table 1 models are matched to the CNN)")

    dists = [args.distortion] if args.distortion else list(INPUT_SIZES)
    transforms = ("affine", "projective", "tps", "attention")
    print("\n\n".join(format_parameter_table(d, transforms=transforms) for d in dists))
    return 0


def _split(text) -> list[str]:
    return [t.strip().lower() for t in str(text).split(",") if t.strip()]


def _choices(option: str, values: list[str], allowed) -> list[str]:
    """Check a comma list of names (``--models fcn,st-fcn``) against ``allowed``."""
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise ValueError(f"{option} must be a comma list of {', '.join(allowed)}, got "
                         f"{','.join(values) or 'nothing'!r}" + (f" ({', '.join(map(repr, bad))} unknown)" if bad else ""))
    return values


def _sweep(args, models, transforms, distortions, task: str = "distortion") -> int:
    from npstn.models import ADDITION_MODELS, INPUT_SIZES, MODELS, TRANSFORM_NAMES
    from npstn.train import TrainConfig, run_sweep, sweep_configs

    prog = f"npstn {args.command}"
    try:
        _choices("--models", models, ADDITION_MODELS if task == "addition" else MODELS)
        _choices("--transforms", transforms, TRANSFORM_NAMES)
        _choices("--distortions", distortions, list(INPUT_SIZES))
    except ValueError as exc:
        return A.fail(prog, exc)
    common = _given(args, _COMMON_FIELDS + (("budget",) if task == "addition" else ()))
    seeds = range(args.seed_start, args.seed_start + args.seeds)
    try:
        configs = sweep_configs(args.out, models, transforms, distortions, seeds, task=task, **common)
        if getattr(args, "grid", None):
            try:
                extra = json.loads(Path(args.grid).read_text())
            except ValueError as exc:
                raise ValueError(f"--grid {args.grid}: not valid JSON ({exc})") from None
            if not isinstance(extra, list) or not all(isinstance(i, dict) for i in extra):
                raise ValueError(f"--grid {args.grid}: expected a JSON list of config objects")
            from npstn.train import run_folder

            configs = []
            for k, item in enumerate(extra):
                try:
                    c = TrainConfig.from_dict({**common, **item})
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"--grid {args.grid}: item {k}: {exc}") from None
                if "out" not in item:
                    c.out = str(run_folder(args.out, c))
                configs.append(c)
    except (TypeError, ValueError, OSError) as exc:
        return A.fail(prog, exc)
    if args.jobs <= 1 and not args.dask:  # runs in this process; a pool's workers get cores // jobs each
        _apply_threads(args, "sweep")
    print(f"npstn sweep: {len(configs)} runs into {args.out}/ "
          + (f"on dask at {args.dask}" if args.dask else f"with {args.jobs} process(es)"), flush=True)
    try:
        results = run_sweep(configs, args.out, jobs=args.jobs, dask_address=args.dask)
    except RuntimeError as exc:
        return A.fail(prog, exc)
    print((Path(args.out) / "results.md").read_text())
    bad = [r for r in results if r["status"] not in ("finished", "skipped")]
    return 1 if bad else 0


def _cmd_sweep(args) -> int:
    return _sweep(args, _split(args.models), _split(args.transforms), _split(args.distortions))


def _colocalise_settings(args) -> dict:
    """The ColocaliseConfig fields given on the command line (--as-stated: the paper's setup as stated,
    npstn.colocalisation.AS_STATED, under the flags given)."""
    from npstn.colocalisation import AS_STATED

    names = {"steps": "steps", "batch_size": "batch_size", "lr": "lr", "optimizer": "optimizer", "images": "images",
             "encoder_steps": "encoder_steps", "encoder_shift": "encoder_shift", "data_dir": "data_dir"}
    given = {field: getattr(args, dest) for dest, field in names.items() if getattr(args, dest, None) is not None}
    return {**AS_STATED, **given} if getattr(args, "as_stated", False) else given


def _cmd_colocalise(args) -> int:
    from npstn.colocalisation import ColocaliseConfig, colocalise

    variant = "TC" if args.clutter else "T"
    out = args.out or f"runs/colocalise/{variant}/digit{args.digit}"
    try:
        if not args.out:
            A.output_folder(out)
        config = ColocaliseConfig(digit=args.digit, clutter=args.clutter, seed=args.seed, out=out,
                                  **_colocalise_settings(args))
    except argparse.ArgumentTypeError as exc:
        return A.fail("npstn colocalise", f"--out (default {out}) {exc}")
    except (TypeError, ValueError) as exc:
        return A.fail("npstn colocalise", exc)
    _apply_threads(args, "colocalise")
    m = colocalise(config, progress=not args.quiet)
    print(f"digit {config.digit} on {variant}: {m['localised_percent']:.0f}% localised (IoU > 0.5), "
          f"mean IoU {m['mean_iou']:.2f}, {m['steps']} steps, {m['wall_seconds']:.0f} s; "
          f"metrics: {out}/metrics.json, picture: {out}/boxes.png")
    return 0


def _cmd_reproduce_table5(args) -> int:
    from npstn.colocalisation import ColocaliseConfig, reproduce_table5

    out = args.out or "runs/table5"
    try:
        digits = [int(d) for d in _choices("--digits", _split(args.digits), [str(i) for i in range(10)])]
        variants = [v.upper() for v in _choices("--variants", _split(args.variants), ["t", "tc"])]
        settings = _colocalise_settings(args)
        if settings.get("batch_size", 2) < 2:
            raise ValueError(f"--batch-size must be at least 2 for table5 (the loss compares pairs), "
                             f"got {settings['batch_size']}")
        ColocaliseConfig(**settings)  # validate once, before any work
        if not args.out:
            A.output_folder(out)
    except argparse.ArgumentTypeError as exc:
        return A.fail("npstn reproduce", f"--out (default {out}) {exc}")
    except (TypeError, ValueError) as exc:
        return A.fail("npstn reproduce", exc)
    _apply_threads(args, "reproduce")
    results = reproduce_table5(out, digits, variants, progress=not args.quiet, report_only=args.report,
                               seed=args.seed_start, **settings)
    if not results:
        return A.fail("npstn reproduce", f"--out {out}: no finished co-localisation runs there; run them "
                      "first with the same command without --report")
    print((Path(out) / "results.md").read_text())
    print(f"npstn reproduce: {len(results)} cells; {out}/results.md, results.json")
    return 0


def _cmd_reproduce(args) -> int:
    if args.table == "table5":
        return _cmd_reproduce_table5(args)
    table4 = args.table == "table4"
    if args.out is None:
        args.out = f"runs/{args.table}"
    if args.models is None:
        args.models = "fcn,cnn,st-fcn" if table4 else "fcn,cnn,st-fcn,st-cnn"
    if args.budget is not None and not table4:
        return A.fail("npstn reproduce", f"--budget {args.budget}: only table4 (MNIST addition) matches its "
                      "models to a budget; table1's are matched to the CNN")
    if table4 and args.distortions not in (None, "rts"):
        return A.fail("npstn reproduce", f"--distortions {args.distortions}: table4 (MNIST addition) draws RTS "
                      "digits only; leave --distortions out")
    if args.distortions is None:
        args.distortions = "rts" if table4 else "r,rts,p,e"
    if args.report:  # no training: the table and the figure from the finished runs under --out
        from npstn.train import collect_results
        from npstn.train.sweep import _write_sweep_results

        results = collect_results(args.out)
        if not results:
            return A.fail("npstn reproduce", f"--out {args.out}: no finished runs there (no metrics.json of a "
                          "finished run); train them first with the same command without --report")
        _write_sweep_results(Path(args.out), results, complete=True)  # every cell of the table, owed ones too
        print((Path(args.out) / "results.md").read_text())
        print(f"npstn reproduce: {len(results)} finished runs; {args.out}/results.md, results.json, results.png")
        return 0
    if args.steps is None:
        args.steps = 150_000
    return _sweep(args, _split(args.models), _split(args.transforms), _split(args.distortions),
                  task="addition" if table4 else "distortion")


def _cmd_course(args) -> int:
    if args.course_command == "starter":
        from npstn.course.kit import write_starter

        summary = write_starter(args.out)
        print(f"wrote the student repository {summary['out']} ({summary['files']} files); solutions removed:")
        for n, files in summary["tasks"].items():
            print(f"  task {n}: {', '.join(files)}")
        print(f"grade it with: npstn course grade {summary['out']}")
        return 0
    if args.course_command == "mutants":
        from npstn.course.mutation import format_mutants, grade_mutants

        print(format_mutants(grade_mutants(args.tests)))
        return 0
    from npstn.course.grade import format_report, grade

    results = grade(args.dir, tasks=args.task, examples=args.examples)
    print(format_report(results, verbose=args.verbose))
    total = sum(r.score for r in results)
    if args.fail_under is not None and total < args.fail_under:
        print(f"npstn course grade: total {total:g} is below --fail-under {args.fail_under:g}", file=sys.stderr)
        return 1
    return 0


def _cmd_bench(args) -> int:
    from npstn.bench import main as bench_main

    try:
        return bench_main([args.benchmark, *args.options])
    except SystemExit as exc:  # a benchmark's option error (one line, already printed) or --help
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)


def _add_sweep_options(p, seeds: int = 1) -> None:
    p.add_argument("--seeds", type=A.positive_int(MAX_SEEDS), default=seeds,
                   help=f"runs per cell, seeds SEED_START, SEED_START+1, ... (default {seeds})")
    p.add_argument("--seed-start", type=A.seed, default=0)
    p.add_argument("--jobs", type=A.positive_int(MAX_JOBS), default=1, help="parallel runs in the local process pool (default 1)")
    p.add_argument("--dask", metavar="ADDRESS", default=None,
                   help="run the jobs on a dask.distributed scheduler (e.g. tcp://host:8786) instead")
    p.add_argument("--threads", type=A.positive_int(MAX_THREADS), default=None, metavar="N",
                   help="with --jobs 1: threads for Numba and BLAS (default all cores); a process "
                   "pool gives each worker cores // jobs")
    _add_training_options(p, sweep=True)


def build_parser() -> argparse.ArgumentParser:
    p = A.Parser(
        prog="npstn",
        description="Spatial Transformer Networks from scratch in NumPy and Numba.",
    )
    p.add_argument("--version", action="version", version=f"npstn {npstn.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="train a small MLP with the hand-written layers (a quick smoke run)")
    d.add_argument("--steps", type=A.positive_int(MAX_STEPS), default=1500)
    d.add_argument("--seed", type=A.seed, default=0)
    d.add_argument("--out", type=A.output_folder, default="runs/demo", help="folder for model.npz and demo.png")
    d.add_argument("--no-plot", action="store_true")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_cmd_demo)

    q = sub.add_parser("quickstart", help="the Quickstart's main job: ST-FCN vs FCN on RTS-distorted "
                       "MNIST, a few minutes on a laptop, with pictures")
    q.add_argument("--steps", type=A.positive_int(MAX_STEPS), default=1500)
    q.add_argument("--seed", type=A.seed, default=0)
    q.add_argument("--out", type=A.output_folder, default="runs/quickstart")
    q.add_argument("--data-dir", type=A.input_folder, default=None, help="folder with the MNIST IDX files")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    _threads_option(q)
    q.set_defaults(func=_cmd_quickstart)

    g = sub.add_parser("data", help="find or fetch MNIST, verify it, and print where it lives")
    g.add_argument("--data-dir", type=A.input_folder, default=None, help="folder with the four MNIST IDX files")
    gx = g.add_mutually_exclusive_group()
    gx.add_argument("--pack", metavar="ARCHIVE", type=A.new_file, default=None,
                    help="write the four verified files into one tar archive to hand out (offline classrooms)")
    gx.add_argument("--import", dest="import_from", metavar="ARCHIVE", type=A.input_file, default=None,
                    help="verify and install the files of an archive made with --pack (into --data-dir, "
                    "else the npstn cache)")
    g.set_defaults(func=_cmd_data)

    t = sub.add_parser("train", help="train FCN / CNN / ST-FCN / ST-CNN on distorted MNIST, MNIST addition or 3D MNIST",
                       description="Train one of the paper's models on a distorted-MNIST variant (Table 1) "
                       "or on MNIST addition (--task addition, Table 4). Defaults follow the paper "
                       "(SGD, batch 256, lr 0.01 /10 at 1/3 and 2/3, 150k steps).")
    t.add_argument("--task", choices=["distortion", "addition", "mnist3d"],
                   help="distorted MNIST (default), MNIST addition: two RTS digits in two channels, "
                   "the label their sum (models fcn, cnn, st-fcn), or 3D MNIST (appendix A.3): digits "
                   "extruded into volumes, turned and moved in 3D (models fcn: the projection's classifier, "
                   "st-fcn: a 3D affine transformer before the projection)")
    t.add_argument("--volume-size", type=A.positive_int(256),
                   help="--task mnist3d: the volumes' side S, S^3 voxels (default 28)")
    t.add_argument("--transformers", type=int, choices=[1, 2],
                   help="--task addition: 1 (ST-FCN) or 2 (2xST-FCN, two transformers in parallel); default 1")
    t.add_argument("--budget", type=A.positive_int(MAX_PARAMETERS),
                   help="--task addition or mnist3d: parameter count every model is matched to (default: "
                   "addition, 400,000, chosen by experiment; mnist3d, the ST-FCN's with 128 hidden units)")
    t.add_argument("--model", choices=["fcn", "cnn", "st-fcn", "st-cnn"], help="(default st-fcn)")
    t.add_argument("--transform", choices=["affine", "projective", "tps", "attention"],
                   help="the ST's transform (default affine)")
    t.add_argument("--distortion", choices=["r", "rts", "p", "e", "tc"], help="(default rts)")
    t.add_argument("--seed", type=A.seed, help="seed of the weights and the data stream (default 0)")
    t.add_argument("--out", type=A.output_folder, help="run folder (default runs/<distortion>/<model>[-<transform>]/seed<S>)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (exactly as if never interrupted)")
    t.add_argument("--width", type=A.positive_int(1_000_000), help="classifier width override (default: parameter-matched)")
    t.add_argument("--log-every", type=A.positive_int(MAX_STEPS), help="CSV row every K steps (default min(100, steps/100))")
    t.add_argument("--max-loss", type=A.positive_float, help="stop as diverged above this loss (default 100)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    _threads_option(t)
    _add_training_options(t)
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="test error of a trained run")
    e.add_argument("run_dir", type=A.run_folder)
    e.add_argument("--checkpoint", action="store_true", help="use the checkpoint's weights, not model.npz")
    e.add_argument("--batch-size", type=A.positive_int(MAX_BATCH), default=250, help="test images per forward pass")
    e.add_argument("--data-dir", type=A.input_folder, default=None)
    e.set_defaults(func=_cmd_eval)

    v = sub.add_parser("viz", help="PNGs of a run: input, sampling grid, output; learning curves")
    v.add_argument("run_dir", type=A.run_folder)
    v.add_argument("--n", type=A.positive_int(MAX_VIZ), default=12,
                   help=f"test digits to draw (default 12, at most {MAX_VIZ})")
    v.add_argument("--out", type=A.output_folder, default=None, help="folder for the PNGs (default RUN_DIR/viz)")
    v.set_defaults(func=_cmd_viz)

    pp = sub.add_parser("params", help="print the parameter-count table of the models")
    pp.add_argument("--distortion", choices=["r", "rts", "p", "e", "tc"], default=None,
                    help="one distortion (default: all)")
    pp.add_argument("--task", choices=["distortion", "addition"], default="distortion",
                    help="Table 1 models (default) or the MNIST-addition models of Table 4")
    pp.add_argument("--budget", type=A.positive_int(MAX_PARAMETERS), default=None,
                    help="--task addition: the parameter count to match (default 400,000)")
    pp.set_defaults(func=_cmd_params)

    s = sub.add_parser("sweep", help="run a grid of training runs; Markdown table of mean test errors",
                       description="Every (distortion, model, transform, seed) is an independent run "
                       "in OUT/<distortion>/<model>[-<transform>]/seed<S>; finished runs are skipped, "
                       "interrupted ones resumed. Writes OUT/results.md beside the paper's numbers.")
    s.add_argument("--models", default="fcn,st-fcn", help="comma list (default fcn,st-fcn)")
    s.add_argument("--transforms", default="affine", help="comma list for ST models (default affine)")
    s.add_argument("--distortions", default="rts", help="comma list (default rts)")
    s.add_argument("--grid", type=A.input_file, default=None, help="JSON file: a list of config objects to run instead of the grid")
    s.add_argument("--out", type=A.output_folder, default="runs/sweep")
    _add_sweep_options(s)
    s.set_defaults(func=_cmd_sweep)

    from npstn.colocalisation import MAX_ENCODER_SHIFT, OPTIMIZERS, ColocaliseConfig

    r = sub.add_parser("reproduce", help="reproduce a table of the paper (table1, table4, table5)",
                       description="table1: FCN, CNN, ST-FCN and ST-CNN (each transform) on each "
                       "distortion; table4: MNIST addition, FCN, CNN, ST-FCN and 2xST-FCN (each transform). "
                       "--seeds runs each, 150k steps unless --steps. Same options and outputs as `npstn sweep`. "
                       "table5: co-localisation of each digit (--digits) on T and TC (--variants), one "
                       "`npstn colocalise` run each into OUT/<T|TC>/digit<D>, seed --seed-start; --steps, "
                       "--batch-size, --lr, --images and --encoder-steps apply to every cell.")
    r.add_argument("table", choices=["table1", "table4", "table5"])
    r.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9", help="table5: comma list of digits (default all)")
    r.add_argument("--variants", default="t,tc", help="table5: comma list of t (plain) and tc (cluttered)")
    r.add_argument("--images", type=A.int_range(2, 10_000, "an integer from 2 to 10000"), default=None,
                   help="table5: images per set (default 100)")
    r.add_argument("--encoder-steps", type=A.positive_int(MAX_STEPS), default=None,
                   help="table5: training steps of the MNIST encoder (default 1500)")
    shift_type = A.int_range(0, MAX_ENCODER_SHIFT)
    r.add_argument("--encoder-shift", type=shift_type, default=None, metavar="K",
                   help="table5: train the encoder on digits moved by up to K px (default 0)")
    r.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="table5: the localisation network's optimiser (default: npstn's recipe's)")
    r.add_argument("--quiet", action="store_true", help="table5: no progress bars")
    r.add_argument("--as-stated", action="store_true",
                   help="table5: the paper's setup as stated (full gradient, s learnt from a 28x28 window, lr "
                        "0.001 constant, 500 steps) instead of npstn's recipe (docs/colocalisation.md)")
    r.add_argument("--models", default=None,
                   help="comma list (default: all of the table's: fcn,cnn,st-fcn,st-cnn for table1; "
                   "fcn,cnn,st-fcn for table4, whose st-fcn rows run with 1 and 2 transformers)")
    r.add_argument("--report", action="store_true",
                   help="train nothing: rebuild results.md, results.json and results.png (npstn against the "
                   "paper) from the finished run folders under --out")
    r.add_argument("--transforms", default="affine,projective,tps")
    r.add_argument("--distortions", default=None, help="comma list (table1; default r,rts,p,e)")
    r.add_argument("--out", type=A.output_folder, default=None, help="(default runs/<table>)")
    r.add_argument("--budget", type=A.positive_int(MAX_PARAMETERS), default=None,
                   help="table4: parameter count every model is matched to (default as `npstn train "
                   "--task addition`; `npstn params --task addition --budget N` prints the widths)")
    _add_sweep_options(r, seeds=3)  # the paper reports means of 3 runs
    r.set_defaults(func=_cmd_reproduce)

    cc = ColocaliseConfig()  # its defaults, for the help
    c = sub.add_parser("colocalise", help="co-localise one digit class in 84x84 canvases with an attention "
                       "ST (the paper's Table 5)",
                       description="Train an attention spatial transformer, with the hinge loss on the "
                       "descriptors of an MNIST CNN (trained once and cached), to crop the one digit class "
                       "in 100 84x84 canvases (--clutter: with 16 6x6 clutter patches each). Writes "
                       "metrics.json (localised_percent: crops with IoU > 0.5) and boxes.png.")
    c.add_argument("--digit", type=A.digit, required=True,
                   help="the digit class to co-localise, 0-9")
    c.add_argument("--clutter", action="store_true", help="the TC variant: 16 random 6x6 crops of other digits")
    c.add_argument("--steps", type=A.positive_int(MAX_STEPS), default=None, help=f"training steps (default {cc.steps})")
    c.add_argument("--batch-size", type=A.int_range(2, MAX_BATCH, "an integer from 2 to 16384"), default=None,
                   help=f"images per step, all their pairs in the loss (default {cc.batch_size})")
    c.add_argument("--lr", type=A.nonnegative_float, default=None, help=f"learning rate (default {cc.lr:g})")
    c.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help=f"sgd (momentum {cc.momentum:g}) or adam (default {cc.optimizer})")
    c.add_argument("--images", type=A.int_range(2, 10_000, "an integer from 2 to 10000"), default=None,
                   help=f"images in the set (default {cc.images})")
    c.add_argument("--encoder-steps", type=A.positive_int(MAX_STEPS), default=None,
                   help=f"training steps of the MNIST CNN encoder, cached once trained (default {cc.encoder_steps})")
    c.add_argument("--encoder-shift", type=shift_type, default=None, metavar="K",
                   help="train the encoder on digits each moved by a random (dx, dy) of up to K px per axis "
                        f"(default {cc.encoder_shift}: plain digits)")
    c.add_argument("--as-stated", action="store_true",
                   help="the paper's setup as stated (full gradient, s learnt from a 28x28 window, lr 0.001 "
                        "constant, 500 steps) instead of npstn's recipe (docs/colocalisation.md)")
    c.add_argument("--seed", type=A.seed, default=0, help="the transformer's weights and the batches")
    c.add_argument("--out", type=A.output_folder, default=None,
                   help="run folder (default runs/colocalise/<T|TC>/digit<D>)")
    c.add_argument("--data-dir", type=A.input_folder, default=None, help="folder with the MNIST IDX files")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    _threads_option(c)
    c.set_defaults(func=_cmd_colocalise)

    co = sub.add_parser("course", help="the course kit: write a student repository, grade one",
                        description="The course kit (course/SYLLABUS.md): `npstn course starter OUT` writes a "
                        "student repository with the solutions removed; `npstn course grade [DIR]` grades one.")
    csub = co.add_subparsers(dest="course_command", metavar="ACTION", required=True)
    cs = csub.add_parser("starter", help="write a student repository (solutions replaced by NotImplementedError)")
    cs.add_argument("out", metavar="OUT", type=A.new_folder, help="a new or empty folder")
    cg = csub.add_parser("grade", help="grade a student repository: points per task, then total: X/Y")
    cg.add_argument("dir", metavar="DIR", nargs="?", default=".", type=A.input_folder,
                    help="the student repository (default: the current folder); its own code is graded")
    cg.add_argument("--task", type=A.int_range(1, 6, "a task number (1-6)"), action="append",
                    help="grade only this task (repeatable; default: all)")
    cg.add_argument("--examples", type=A.positive_int(10_000), default=None,
                    help="Hypothesis examples per property test (default 20)")
    cg.add_argument("--verbose", action="store_true", help="name the failed tests")
    cg.add_argument("--fail-under", type=A.nonnegative_float, default=None, metavar="POINTS",
                    help="exit with status 1 when the total is below POINTS (for CI; default: always 0 "
                    "once graded)")
    cm = csub.add_parser("mutants", help="grade a property-testing assignment by mutation: how many planted "
                         "bugs its tests catch")
    cm.add_argument("tests", metavar="TESTS", type=A.input_file,
                    help="the student's test file (course/mutation/test_channel_affine.py in their repository)")
    co.set_defaults(func=_cmd_course)

    bn = sub.add_parser("bench", help="run a benchmark: sampler or train (npstn bench NAME --help)",
                        description="Run one of npstn's benchmarks; it prints a Markdown table and "
                        "writes JSON. Options after NAME go to the benchmark (npstn bench NAME --help).")
    bn.add_argument("benchmark", choices=["sampler", "train"],
                    help="sampler: affine grid + bilinear sampling; train: one training step per model")
    bn.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's options")
    bn.set_defaults(func=_cmd_bench)
    return p


def _user_error(exc) -> bool:
    """Errors caused by what the user typed or handed in (files, folders, settings), not by npstn."""
    from npstn.utils.runfolder import RunFolderError

    if isinstance(exc, (RunFolderError, FileExistsError, FileNotFoundError, PermissionError,
                        IsADirectoryError, NotADirectoryError, ValueError, MemoryError)):
        return True
    mnist = sys.modules.get("npstn.data.mnist")
    return mnist is not None and isinstance(exc, mnist.MNISTError)


def main(argv=None) -> int:
    """The ``npstn`` command; returns its exit status.

    0 success; 1 a sweep with failed runs, or an internal error (one line;
    ``NPSTN_DEBUG=1`` shows the traceback); 2 a user error: a bad argument,
    a file or folder that cannot be used, missing MNIST (one line naming the
    argument or the file; MNIST's message adds where to put the files);
    3 a diverged run; 130 interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version, or a one-line error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    prog = f"npstn {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("NPSTN_DEBUG"):
            raise
        if isinstance(exc, MemoryError):
            return A.fail(prog, "out of memory; use smaller sizes (--batch-size, --width, --n)")
        mnist = sys.modules.get("npstn.data.mnist")
        if mnist is not None and isinstance(exc, mnist.MNISTError):  # keeps its instructions
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
        if _user_error(exc) or isinstance(exc, OSError):
            return A.fail(prog, exc)
        print(f"{prog}: internal error ({type(exc).__name__}: {A.one_line(exc)}); rerun with "
              "NPSTN_DEBUG=1 for the traceback, and please report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
