"""Why npstn's Table 1 differs from the paper: the measurements that need no retraining.

Usage (``NPSTN_DATA_DIR`` pointing at MNIST)::

    python benchmarks/table1_study/study.py reading  RUN [RUN ...]  [--json OUT]
    python benchmarks/table1_study/study.py generator RUN           [--json OUT]
    python benchmarks/table1_study/study.py errors RUN [RUN ...]    [--json OUT]
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
* R: the share of digits whose rotated ink is clipped by the 28x28 frame;
* P: the test set drawn with the same parameters but the corner offsets
  scaled with the digit (x s: moved on the unscaled frame) or shrunk (x0.75,
  x0.5, x0: the scale alone), and the share of digits whose ink the
  homography moves out of the 28x28 frame under each.

``errors``: where a trained R or RTS model's test errors fall (no retraining).
Each test digit's own distortion (angle, scale, offset) is redrawn exactly
as the test set drew it, and the errors are binned by |angle| and by scale.
For an ST model, also how well the transformer undoes the distortion: the
composite map from the ST's output to the undistorted 28x28 digit,
``M q + t`` with ``M = A_d A_st`` and ``t = A_d b_st + b_d`` (``A_d, b_d``
the test digit's own RTS or R map)
(normalised coordinates), is the pose in which the classifier sees the
digit; a transformer that canonicalises perfectly makes it the same for
every digit. Reported: the spread over the test set of its rotation
(degrees), of its scale (sqrt|det M|, as a percentage of the median) and
of its translation (source pixels), for the correctly and the wrongly
classified digits; how much of the distortion the transformer undoes (the
slope of its own rotation on the digit's, negated, and of its log-scale on
the digit's: 1 for all of it, 0 for none); and how large the digit is in
the classifier's input (the 28 px frame, after the 2x2 average pool).

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
def _theta_big(theta, factor):
    """The same warp on a canvas ``factor`` times larger (same pixel size, same centre).

    Canvas point x' is x = factor x' of the original canvas, so the coefficients of x and y scale
    by ``factor``: affine theta (N, 2, 3), its first two columns; projective theta (N, 8) =
    (a, b, c, d, e, f, g, h), a, b, d, e, g and h.
    """
    big = theta.copy()
    if big.ndim == 3:
        big[:, :, :2] *= factor
    else:
        big[:, [0, 1, 3, 4, 6, 7]] *= factor
    return big


def _sample(images, theta, size, supersample=1, grid=F.affine_grid):
    """Bilinear render of ``images`` through ``theta`` (``grid``'s parameters: affine by default, or
    F.projective_grid's) on an S x S canvas, ``supersample``^2 samples a pixel."""
    n = len(images)
    out = np.empty((n, 1, size, size), np.float32)
    for s in range(0, n, 1000):
        sl = slice(s, min(n, s + 1000))
        th = np.ascontiguousarray(theta[sl], np.float32)
        g = grid(th, (th.shape[0], 1, size * supersample, size * supersample))
        v = np.asarray(F.grid_sample(images[sl, None], g))
        if supersample > 1:
            k = supersample
            v = v.reshape(v.shape[0], 1, size, k, size, k).mean(axis=(3, 5))
        out[sl] = v
    return np.clip(out, 0, 1)


def _ink_lost(images, theta, size, grid=F.affine_grid) -> np.ndarray:
    """Share of each digit's ink that falls outside an S x S canvas (rendered on a 2S canvas)."""
    big = _sample(images, _theta_big(theta, 2.0), 2 * size, grid=grid)
    a = size // 2
    inside = big[:, 0, a:a + size, a:a + size].sum(axis=(1, 2))
    total = big.sum(axis=(1, 2, 3))
    return 1.0 - inside / np.maximum(total, 1e-12)


def _test_draws(name: str, n: int, size: int):
    """The test set's own distortion parameters and maps for its ``n`` digits: the same calls on the
    same generator (seed ``TEST_SEED``) as :func:`npstn.data.distorted.test_set`. ``(params, theta)``."""
    rng = np.random.default_rng(TEST_SEED)
    if name == "rts":
        params = D._draw_rts(n, rng, size)
        return params, D._theta_rts(params, size)
    if name == "p":
        params = D._draw_p(n, rng)
        return params, D._theta_p(params, size)
    params = D._draw_r(n, rng)
    return params, D._theta_r(params, size)


def generator(run) -> dict:
    model, config, norm = _model(run)
    name, size = config.distortion, D.canvas_size(config.distortion)
    images, labels = _load_split("test", None)
    x_default, y = T.load_test_set(name)
    result = {"run": str(run), "distortion": name, "variants": {}}

    def add(label, x, lost=None, note=""):
        entry = {"test_error_percent": _err(model, norm, x, y), "note": note}
        if lost is not None:
            entry["clipped_over_1pct"] = float((lost > 0.01).mean() * 100)
            entry["clipped_over_5pct"] = float((lost > 0.05).mean() * 100)
        result["variants"][label] = entry

    if name == "rts":
        params, theta = _test_draws(name, len(images), size)
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
        params, theta = _test_draws(name, len(images), size)
        add("default", x_default, _ink_lost(images, theta, size), "rotated in the 28x28 frame (corners clipped)")
        add("antialiased", _sample(images, theta, size, supersample=2), None, "2x2 supersampled")
    elif name == "p":
        params, theta = _test_draws(name, len(images), size)
        assert np.allclose(D.render(images, "p", params), x_default, atol=1e-6), \
            "the study's renderer must reproduce the test set"
        add("default", x_default, _ink_lost(images, theta, size, F.projective_grid),
            f"scale U{D.PE_SCALE}, corners moved by N(0, {D.P_CORNER_STD:g} px)")
        std = D.P_CORNER_STD
        variants = [("x s", params["scale"][:, None, None],  # another reading of the recipe
                     f"(N(0, {std:g} s px): moved on the unscaled frame)")]
        variants += [(f"x{k:g}", k, f"(N(0, {std * k:g} px))" + ("; the scale alone" if k == 0 else ""))
                     for k in (0.75, 0.5, 0.0)]  # shrunk
        for times, factor, how in variants:  # the same draws, the corner offsets multiplied by factor
            p = dict(params, corner_offset=params["corner_offset"] * factor)
            add(f"corners {times}", D.render(images, "p", p),
                _ink_lost(images, D._theta_p(p, size), size, F.projective_grid),
                f"the same draws, corner offsets {times} {how}")
    else:
        raise ValueError(f"generator study covers r, rts and p, not {name!r}")
    return result


def print_generator(res) -> None:
    print(f"Model: {res['run']} ({res['distortion']})\n")
    print("| test set | test error % | digits losing >1% / >5% of ink | how it is made |")
    print("|---|---:|---:|---|")
    for k, v in res["variants"].items():
        clip = (f"{v['clipped_over_1pct']:.2f}% / {v['clipped_over_5pct']:.2f}%"
                if "clipped_over_1pct" in v else "")
        print(f"| {k} | {v['test_error_percent']:.2f} | {clip} | {v['note']} |")


# --------------------------------------------------------------------------- where the errors fall

ANGLE_BINS = {"rts": (0, 15, 30, 45), "r": (0, 30, 60, 90)}   # |angle| in degrees
SCALE_BINS = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2)                    # RTS only


def _rotation_scale(a):
    """Rotation angle (deg) and scale sqrt|det| of 2x2 linear maps ``a`` (N, 2, 2)."""
    angle = np.degrees(np.arctan2(a[:, 1, 0] - a[:, 0, 1], a[:, 0, 0] + a[:, 1, 1]))
    return angle, np.sqrt(np.abs(np.linalg.det(a)))


def _pose(theta_st, theta_dist):
    """Rotation (deg), scale and translation (source px) of the composite map ST output -> source digit.

    ``theta_st`` (N, 2, 3) maps the ST's output to the canvas, ``theta_dist``
    (N, 2, 3) the canvas to the undistorted 28x28 digit (both normalised).
    """
    a_st, b_st = theta_st[:, :, :2], theta_st[:, :, 2]
    a_d, b_d = theta_dist[:, :, :2], theta_dist[:, :, 2]
    angle, scale = _rotation_scale(a_d @ a_st)
    t = np.einsum("nij,nj->ni", a_d, b_st) + b_d
    return angle, scale, t * (D.SOURCE_SIZE / 2.0)


def _rms_spread(xy) -> float:
    """Root-mean-square distance of 2-D points ``xy`` (N, 2) from their mean."""
    return float(np.sqrt(np.mean(np.sum((xy - xy.mean(axis=0)) ** 2, axis=1))))


def _spread(angle, scale, shift) -> dict:
    med = np.median(scale)
    return {"n": int(len(angle)), "angle_sd_deg": float(np.std(angle)),
            "scale_sd_percent": float(100 * np.std(scale / med)),
            "shift_sd_px": _rms_spread(shift),
            "angle_abs_p95_deg": float(np.percentile(np.abs(angle - np.median(angle)), 95))}


def _binned(values, wrong, edges) -> list[dict]:
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (values >= lo) & (values < hi) if hi != edges[-1] else (values >= lo) & (values <= hi)
        out.append({"bin": [lo, hi], "n": int(inside.sum()), "error_percent": float(100 * wrong[inside].mean())})
    return out


def errors(run) -> dict:
    model, config, norm = _model(run)
    name = config.distortion
    if name not in ANGLE_BINS:
        raise SystemExit(f"errors: the analysis covers R and RTS runs, not {name!r} ({run})")
    size = D.canvas_size(name)
    images, _ = _load_split("test", None)
    x, y = T.load_test_set(name)
    params, theta_dist = _test_draws(name, len(images), size)
    xs = T.standardize(x, norm)
    model.eval()
    pred, thetas = [], []
    st = model.transformer if model.transformers else None
    for i in range(0, len(y), 500):
        pred.append(model(np.ascontiguousarray(xs[i:i + 500], np.float32)).argmax(axis=1))
        if st is not None:
            thetas.append(np.asarray(st.theta, np.float64).reshape(len(pred[-1]), -1))
    wrong = np.concatenate(pred) != y
    res = {"run": str(run), "distortion": name, "model": config.model, "transform": config.transform,
           "test_error_percent": float(100 * wrong.mean()),
           "by_angle": _binned(np.abs(params["angle"]), wrong, ANGLE_BINS[name])}
    if name == "rts":
        res["by_scale"] = _binned(params["scale"], wrong, SCALE_BINS)
    if st is not None and config.transform == "affine":
        theta = np.concatenate(thetas).reshape(-1, 2, 3)
        angle, scale, shift = _pose(theta, theta_dist)
        res["pose"] = {"all": _spread(angle, scale, shift),
                       "correct": _spread(angle[~wrong], scale[~wrong], shift[~wrong]),
                       "wrong": _spread(angle[wrong], scale[wrong], shift[wrong])}
        # how much of the distortion the transformer undoes: the slope of its own rotation on the
        # digit's (-1: all of it, 0: none) and of its scale on the digit's (1: all of it, 0: none)
        st_angle, st_scale = _rotation_scale(theta[:, :, :2])
        res["rotation_undone"] = float(-np.polyfit(params["angle"], st_angle, 1)[0])
        res["input_rotation_sd_deg"] = float(np.std(params["angle"]))
        if name == "rts":
            res["scale_undone"] = float(np.polyfit(params["scale"], st_scale, 1)[0] / np.median(st_scale)
                                        * np.median(params["scale"]))
            res["input_scale_sd_percent"] = float(100 * np.std(params["scale"] / np.median(params["scale"])))
            off = params["offset"] / params["scale"][:, None]  # canvas px -> source px
            res["input_shift_sd_px"] = _rms_spread(off)
        # the 28 px frame in the classifier's input: 2/scale of the ST output's 2 units (then the 2x2 pool)
        out = size // 2 if model.downsample is not None else size
        res["digit_frame_px_in_classifier_input"] = float(out / np.median(scale))
    return res


def print_errors(rows) -> None:
    for r in rows:
        label = r["model"] + (f" {r['transform']}" if r["model"].startswith("st") else "")
        print(f"\n{r['run']} ({r['distortion'].upper()} {label}): {r['test_error_percent']:.2f}% test error\n")
        print("| abs(angle) | " + " | ".join(f"{b['bin'][0]}-{b['bin'][1]} deg" for b in r["by_angle"]) + " |")
        print("|---|" + "---:|" * len(r["by_angle"]))
        print("| error % | " + " | ".join(f"{b['error_percent']:.2f}" for b in r["by_angle"]) + " |")
        if "by_scale" in r:
            print("\n| scale | " + " | ".join(f"{b['bin'][0]:.1f}-{b['bin'][1]:.1f}" for b in r["by_scale"]) + " |")
            print("|---|" + "---:|" * len(r["by_scale"]))
            print("| error % | " + " | ".join(f"{b['error_percent']:.2f}" for b in r["by_scale"]) + " |")
        if "pose" in r:
            undone = f"rotation undone: {r['rotation_undone']:.2f}"
            if "scale_undone" in r:
                undone += f", scale undone: {r['scale_undone']:.2f}"
            print(f"\nShare of the distortion the transformer undoes (1: all, 0: none): {undone}. "
                  f"The digit's 28 px frame spans {r['digit_frame_px_in_classifier_input']:.1f} px of the "
                  "classifier's input (median). Its pose there, spread over the test set (the input's: "
                  f"rotation sd {r['input_rotation_sd_deg']:.1f} deg"
                  + (f", scale sd {r['input_scale_sd_percent']:.1f}%, shift sd {r['input_shift_sd_px']:.1f} px"
                     if "input_shift_sd_px" in r else "") + "):\n")
            print("| digits | n | rotation sd (deg) | 95th pct abs(rotation) (deg) | scale sd (%) | shift sd (px) |")
            print("|---|---:|---:|---:|---:|---:|")
            for k, v in r["pose"].items():
                print(f"| {k} | {v['n']} | {v['angle_sd_deg']:.2f} | {v['angle_abs_p95_deg']:.2f} | "
                      f"{v['scale_sd_percent']:.2f} | {v['shift_sd_px']:.2f} |")


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
    e = sub.add_parser("errors")
    e.add_argument("runs", nargs="+")
    r = sub.add_parser("runs")
    r.add_argument("root")
    for s in (a, g, e, r):
        s.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.cmd == "reading":
        res = reading(args.runs)
        print_reading(res)
    elif args.cmd == "generator":
        res = generator(args.run)
        print_generator(res)
    elif args.cmd == "errors":
        res = [errors(run) for run in args.runs]
        print_errors(res)
    else:
        res = runs_table(args.root)
        print_runs(res)
    if args.json:
        from npstn.utils.io import atomic_write_json

        atomic_write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
