"""Why npstn's Table 1 differs from the paper: the measurements that need no retraining.

Usage (``NPSTN_DATA_DIR`` pointing at MNIST)::

    python benchmarks/table1_study/study.py reading  RUN [RUN ...]  [--json OUT]
    python benchmarks/table1_study/study.py generator RUN           [--json OUT]
    python benchmarks/table1_study/study.py runs ROOT               [--json OUT]

``reading``: for each finished run folder, how the number is read:

* final test error against the best one over training (``metrics.json``'s
  evaluations; the study runs evaluate every 1000 steps);
* the error on 10 independent draws of the distorted test set (the 10k test
  digits distorted with seeds 1..10 instead of ``TEST_SEED``): mean, sd,
  min, max, and where the fixed test set falls among them;
* the error on a test set drawn from *training* digits (10k training
  digits, distorted with ``TEST_SEED``): the generalisation gap.

``generator``: one trained RTS (or R) model evaluated on test sets built in
other ways from the same test digits and the same random parameters:

* RTS ``default`` (npstn's generator), ``antialiased`` (each canvas pixel
  the mean of 2x2 bilinear samples: a supersampled, prefiltered render),
  ``frame-scale`` versus ``ink-scale`` (the scale applied to the digit's
  20x20 ink box normalised to 28 px, i.e. digits 1.4x larger, centred where
  they no longer fit), and ``anywhere`` (the digit's centre uniform over
  the whole canvas, ink clipped by the edge);
* the share of test digits that lose ink over the canvas edge under each
  placement (rendered on a canvas twice as large with the same parameters);
* R: the share of digits whose rotated ink is clipped by the 28x28 frame.

``runs``: a Markdown table of every finished run under ROOT (config
differences from the baseline, final and best test error, train error).

Everything prints Markdown and, with ``--json``, writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import npstn  # noqa: F401  (sets the BLAS spin default before NumPy work)
import npstn.functional as F
from npstn import train as T
from npstn.data import distortions as D
from npstn.data.distorted import TEST_SEED, _load_split, test_set

DRAWS = 10


def _model(run):
    model, config = T.load_run(run)
    return model, config, T.run_input_norm(run)


def _err(model, norm, x, y) -> float:
    return T.evaluate(model, T.standardize(x, norm), y)


def reading(runs) -> list[dict]:
    out = []
    for run in runs:
        model, config, norm = _model(run)
        m = json.loads((Path(run) / T.METRICS).read_text())
        evals = [(e["step"], e["test_error_percent"]) for e in m["evals"]]
        best_step, best = min(evals, key=lambda e: e[1])
        x_test, y_test = T.load_test_set(config.distortion)
        fixed = _err(model, norm, x_test, y_test)
        draws = [_err(model, norm, test_set(config.distortion, seed=s, cache=False)[0], y_test)
                 for s in range(1, DRAWS + 1)]
        xtr, ytr = _load_split("train", None)
        xt, _ = D._distort(xtr[:10000], config.distortion, np.random.default_rng(TEST_SEED),
                           pool=xtr[:10000] if config.distortion == "tc" else None,
                           exclude=np.arange(10000) if config.distortion == "tc" else None)
        train_digits = _err(model, norm, xt, ytr[:10000])
        d = np.array(draws)
        out.append({"run": str(run), "final": m["test_error_percent"], "fixed_recomputed": fixed,
                    "best": best, "best_step": best_step, "draws": draws,
                    "draws_mean": float(d.mean()), "draws_sd": float(d.std(ddof=1)),
                    "draws_min": float(d.min()), "draws_max": float(d.max()),
                    "train_digits": train_digits, "final_train_error": 100 * (1 - m["final_train_accuracy"])})
    return out


def print_reading(rows) -> None:
    print("| run | final | best (step) | 10 redrawn test sets: mean +- sd [min, max] | training digits, test seed |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {Path(r['run']).name} | {r['final']:.2f} | {r['best']:.2f} ({r['best_step'] // 1000}k) | "
              f"{r['draws_mean']:.2f} +- {r['draws_sd']:.2f} [{r['draws_min']:.2f}, {r['draws_max']:.2f}] | "
              f"{r['train_digits']:.2f} |")


# --------------------------------------------------------------------------- generator variants
def _rts_theta_big(theta, factor):
    """The same warp on a canvas ``factor`` times larger (same pixel size, same centre)."""
    big = theta.copy()
    big[:, :, :2] *= factor
    return big


def _sample(images, theta, size, supersample=1):
    """Bilinear render of ``images`` through ``theta`` on an S x S canvas, ``supersample``^2 samples a pixel."""
    n = len(images)
    out = np.empty((n, 1, size, size), np.float32)
    for s in range(0, n, 1000):
        sl = slice(s, min(n, s + 1000))
        th = np.ascontiguousarray(theta[sl], np.float32)
        g = F.affine_grid(th, (th.shape[0], 1, size * supersample, size * supersample))
        v = np.asarray(F.grid_sample(images[sl, None], g))
        if supersample > 1:
            k = supersample
            v = v.reshape(v.shape[0], 1, size, k, size, k).mean(axis=(3, 5))
        out[sl] = v
    return np.clip(out, 0, 1)


def _ink_lost(images, theta, size) -> np.ndarray:
    """Share of each digit's ink that falls outside an S x S canvas (rendered on a 2S canvas)."""
    big = _sample(images, _rts_theta_big(theta, 2.0), 2 * size)
    a = size // 2
    inside = big[:, 0, a:a + size, a:a + size].sum(axis=(1, 2))
    total = big.sum(axis=(1, 2, 3))
    return 1.0 - inside / np.maximum(total, 1e-12)


def generator(run) -> dict:
    model, config, norm = _model(run)
    name, size = config.distortion, D.canvas_size(config.distortion)
    images, labels = _load_split("test", None)
    x_default, y = T.load_test_set(name)
    rng = np.random.default_rng(TEST_SEED)
    result = {"run": str(run), "distortion": name, "variants": {}}

    def add(label, x, lost=None, note=""):
        entry = {"test_error_percent": _err(model, norm, x, y), "note": note}
        if lost is not None:
            entry["clipped_over_1pct"] = float((lost > 0.01).mean() * 100)
            entry["clipped_over_5pct"] = float((lost > 0.05).mean() * 100)
        result["variants"][label] = entry

    if name == "rts":
        params = D._draw_rts(len(images), rng, size)  # the test set's own draws (same rng use)
        theta = D._theta_rts(params, size)
        again = _sample(images, theta, size)
        assert np.allclose(again, x_default, atol=1e-6), "the study's renderer must reproduce the test set"
        add("default", x_default, _ink_lost(images, theta, size), "npstn: frame scaled by s, ink box inside")
        add("antialiased", _sample(images, theta, size, supersample=2), None,
            "same parameters, 2x2 supersampled (prefiltered) pixels")
        # ink-scale: the scale acts on the 20x20 ink box normalised to 28 px (digits 1.4x larger)
        ink = dict(params, scale=params["scale"] * (D.SOURCE_SIZE / (2 * D.INK_HALF_WIDTH)))
        room = np.maximum(D.rts_room(ink["angle"], ink["scale"], size), 0.0)
        unit = params["offset"] / np.maximum(D.rts_room(params["angle"], params["scale"], size), 1e-9)[:, None]
        ink["offset"] = unit * room[:, None]
        th_ink = D._theta_rts(ink, size)
        add("ink-scale", _sample(images, th_ink, size), _ink_lost(images, th_ink, size),
            "scale relative to the ink box (x1.4), centred where it does not fit")
        # anywhere: the centre uniform over the canvas (+-S/2 px), ink may leave the canvas
        anyw = dict(params, offset=unit * (size / 2.0))
        th_any = D._theta_rts(anyw, size)
        add("anywhere", _sample(images, th_any, size), _ink_lost(images, th_any, size),
            "centre uniform over the whole canvas, ink clipped at the edge")
    elif name == "r":
        params = D._draw_r(len(images), rng)
        theta = D._theta_r(params, size)
        add("default", x_default, _ink_lost(images, theta, size), "rotated in the 28x28 frame (corners clipped)")
        add("antialiased", _sample(images, theta, size, supersample=2), None, "2x2 supersampled")
    else:
        raise ValueError(f"generator study covers r and rts, not {name!r}")
    return result


def print_generator(res) -> None:
    print(f"Model: {res['run']} ({res['distortion']})\n")
    print("| test set | test error % | digits losing >1% / >5% of ink | how it is made |")
    print("|---|---:|---:|---|")
    for k, v in res["variants"].items():
        clip = (f"{v['clipped_over_1pct']:.2f}% / {v['clipped_over_5pct']:.2f}%"
                if "clipped_over_1pct" in v else "")
        print(f"| {k} | {v['test_error_percent']:.2f} | {clip} | {v['note']} |")


# --------------------------------------------------------------------------- all runs
_BASE = T.TrainConfig()


def runs_table(root) -> list[dict]:
    rows = []
    for mpath in sorted(Path(root).glob("**/metrics.json")):
        m = json.loads(mpath.read_text())
        if m.get("status") != "finished":
            continue
        c = m["config"]
        diff = {k: c[k] for k in ("width", "momentum", "input_norm", "train_set", "seed")
                if k in c and c[k] != getattr(_BASE, k)}
        evals = [e["test_error_percent"] for e in m["evals"]]
        rows.append({"run": mpath.parent.name, "model": c["model"], "distortion": c["distortion"],
                     "steps": c["steps"], "changed": diff, "final": m["test_error_percent"],
                     "best": min(evals) if evals else None, "parameters": m["parameters"],
                     "train_error": 100 * (1 - m["final_train_accuracy"]),
                     "wall_minutes": m["wall_seconds"] / 60})
    return rows


def print_runs(rows) -> None:
    print("| run | model | changed | parameters | final test % | best test % | final train % | wall min |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        ch = ", ".join(f"{k}={v}" for k, v in r["changed"].items()) or "-"
        print(f"| {r['run']} | {r['model']} | {ch} | {r['parameters']:,} | {r['final']:.2f} | "
              f"{r['best']:.2f} | {r['train_error']:.2f} | {r['wall_minutes']:.0f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("reading")
    a.add_argument("runs", nargs="+")
    g = sub.add_parser("generator")
    g.add_argument("run")
    r = sub.add_parser("runs")
    r.add_argument("root")
    for s in (a, g, r):
        s.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.cmd == "reading":
        res = reading(args.runs)
        print_reading(res)
    elif args.cmd == "generator":
        res = generator(args.run)
        print_generator(res)
    else:
        res = runs_table(args.root)
        print_runs(res)
    if args.json:
        from npstn.utils.io import atomic_write_json

        atomic_write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
