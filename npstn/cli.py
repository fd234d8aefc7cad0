"""The ``npstn`` command."""
from __future__ import annotations

import argparse
import json
import sys

import npstn


def _cmd_demo(args) -> int:
    from npstn.demo import run_demo

    m = run_demo(steps=args.steps, seed=args.seed, out=args.out, plot=not args.no_plot,
                 progress=not args.quiet)
    print(json.dumps(m, indent=2))
    print(f"demo: test accuracy {100 * m['test_accuracy']:.1f}% "
          f"({m['steps']} steps, {m['wall_seconds']:.1f} s); model and plot in {args.out}/")
    return 0


def _cmd_data(args) -> int:
    from npstn.data.mnist import main_data

    return main_data(args.data_dir)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="npstn",
        description="Spatial Transformer Networks from scratch in NumPy and Numba.",
    )
    p.add_argument("--version", action="version", version=f"npstn {npstn.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="train a small MLP with the hand-written layers (a quick smoke run)")
    d.add_argument("--steps", type=int, default=1500)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="runs/demo", help="folder for model.npz and demo.png")
    d.add_argument("--no-plot", action="store_true")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_cmd_demo)

    g = sub.add_parser("data", help="find or fetch MNIST, verify it, and print where it lives")
    g.add_argument("--data-dir", default=None, help="folder with the four MNIST IDX files")
    g.set_defaults(func=_cmd_data)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("npstn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
