"""Pictures of a trained run, in the style of the paper's figures.

:func:`plot_transformations` shows, for a few test digits, the input U, the
sampling grid T_theta(G) drawn over it, and the transformer's output V (the
paper's Figure 1 / Table 1 insets). The grid is drawn in input-pixel
coordinates: its boundary quadrilateral (where the corners of the output frame
read from) bold, and a subsampled mesh of the grid inside it.

:func:`plot_learning_curves` plots the training loss, the training error and
the test error from a run's ``log.csv``.

:func:`viz_run` does both for a run folder (``npstn viz RUN_DIR``). All PNGs
are written atomically, with matplotlib's Agg backend unless pyplot is already in
use (a notebook keeps its own backend: see ``_pyplot``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from npstn.utils.io import atomic_open

__all__ = ["grid_to_pixels", "transformation_mesh", "plot_transformations",
           "plot_learning_curves", "viz_run", "plot_table1"]


def _pyplot():
    """matplotlib.pyplot, on the Agg backend unless the caller already imported pyplot.

    A script or the CLI gets Agg (no display needed). In a notebook or an
    interactive session pyplot is already loaded with the user's backend
    (e.g. ``%matplotlib inline``): switching it to Agg would stop every later
    figure of theirs from showing, so it is left alone (our figures are
    closed after saving, so they never pop up).
    """
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    _pyplot().close(fig)
    return path


def grid_to_pixels(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Normalised grid coordinates (-1..1, ``align_corners=False``) -> input pixel coordinates.

    Pixel i's centre is at i (matplotlib's ``imshow`` convention); -1 maps to
    -0.5, the outer edge of pixel 0, and +1 to W - 0.5.
    """
    g = np.asarray(grid, dtype=np.float64)
    px = ((g[..., 0] + 1.0) * width - 1.0) / 2.0
    py = ((g[..., 1] + 1.0) * height - 1.0) / 2.0
    return np.stack([px, py], axis=-1)


def transformation_mesh(transformer, theta: np.ndarray, height: int, width: int,
                        lines: int = 9) -> np.ndarray:
    """T_theta on a ``lines`` x ``lines`` mesh spanning the whole output frame, in input pixels.

    Returns (N, lines, lines, 2) (x, y); row 0 / column 0 and the last ones
    are the frame's edges, so ``mesh[:, [0, -1]]`` and ``mesh[:, :, [0, -1]]``
    trace the boundary quadrilateral.
    """
    theta = np.asarray(theta, dtype=np.float64)
    size = (theta.shape[0], 1, lines, lines)
    # align_corners=True puts the mesh's outer points exactly on the frame (-1 and +1).
    g = transformer.transform.grid(theta, size, align_corners=True, backend="numpy")
    return grid_to_pixels(g, height, width)


def _draw_mesh(ax, mesh: np.ndarray, color="#ff3b30") -> None:
    for i in range(mesh.shape[0]):
        ax.plot(mesh[i, :, 0], mesh[i, :, 1], color=color, lw=0.5, alpha=0.7)
    for j in range(mesh.shape[1]):
        ax.plot(mesh[:, j, 0], mesh[:, j, 1], color=color, lw=0.5, alpha=0.7)
    edge = np.concatenate([mesh[0, :], mesh[1:, -1], mesh[-1, -2::-1], mesh[-2::-1, 0]])
    ax.plot(edge[:, 0], edge[:, 1], color=color, lw=1.8)


def _show(ax, img, title=None) -> None:
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _predict(model, x, norm, transformers, describe):
    """Run ``model`` on pixels ``x`` in eval mode (its mode restored after), standardised with ``norm``.

    Returns the predictions and, for each of ``transformers`` (modules of
    ``model``, run on the same input), ``(V in pixel units, describe(st))``,
    where ``describe`` reads what the forward left in the transformer (theta).
    """
    from npstn.train.data import standardize, unstandardize

    was_training = model.training
    model.eval()
    try:
        x_in = standardize(x, norm)
        pred = model(x_in).argmax(axis=1)
        views = [(unstandardize(np.asarray(st(x_in)), norm), describe(st)) for st in transformers]
    finally:
        model.train(was_training)
    return pred, views


def plot_transformations(model, x: np.ndarray, path, labels=None, title: str | None = None,
                         groups: int = 2, norm: dict | None = None) -> Path:
    """U, T_theta(G) over U, and V for each image in ``x`` (N, 1, H, W); one PNG.

    For a model without a spatial transformer only the inputs (and
    predictions) are drawn. ``labels`` adds the true labels to the titles.
    Images are laid out in ``groups`` side-by-side columns. ``x`` holds pixels
    in [0, 1]; for a model trained on standardised inputs pass the run's
    ``norm`` (:func:`npstn.train.run_input_norm`): the model then sees
    ``(x - mean) / std`` and V is drawn back in pixel units
    (``V * std + mean``, so the sampler's zero padding shows as the mean grey).
    """
    plt = _pyplot()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, _, h, w = x.shape
    st = getattr(model, "transformer", None)
    pred, views = _predict(model, x, norm, [st] if st is not None else [],
                           lambda t: transformation_mesh(t, t.theta, h, w))
    if st is not None:
        [(v, mesh)] = views
    panels = 3 if st is not None else 1
    groups = max(1, min(groups, n))
    rows = -(-n // groups)
    fig, axes = plt.subplots(rows, groups * panels, figsize=(1.5 * groups * panels, 1.6 * rows + 0.4),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        r, c = i % rows, (i // rows) * panels
        lab = f"label {labels[i]}, pred {pred[i]}" if labels is not None else f"pred {pred[i]}"
        _show(axes[r, c], x[i, 0], f"U ({lab})")
        axes[r, c].axis("on")
        if st is not None:
            ax = axes[r, c + 1]
            _show(ax, x[i, 0], "T_theta(G) on U")
            _draw_mesh(ax, mesh[i])
            # show the whole quadrilateral even where it reaches outside the image
            xs, ys = mesh[i, ..., 0], mesh[i, ..., 1]
            ax.set_xlim(min(-0.5, xs.min()) - 1, max(w - 0.5, xs.max()) + 1)
            ax.set_ylim(max(h - 0.5, ys.max()) + 1, min(-0.5, ys.min()) - 1)
            ax.axis("on")
            _show(axes[r, c + 2], v[i, 0], "V")
            axes[r, c + 2].axis("on")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def box_edges(theta: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Where a 3D affine transformer reads its output cube: the 12 edges of the box T_theta([-1, 1]^3).

    ``theta`` (N, 12) (or (N, 3, 4)). Returns ``(edges, depth)``: edges
    (N, 12, 2, 3), each edge's two end points in the input's voxel
    coordinates (x, y, z; align_corners=False, so -1 and +1 are the outer
    faces of the corner voxels), and depth (12,): the output z (-1 front,
    +1 back, 0 for the four edges along z) of each edge.
    """
    a = np.asarray(theta, dtype=np.float64).reshape(-1, 3, 4)
    corners = np.array([[x, y, z] for z in (-1, 1) for y in (-1, 1) for x in (-1, 1)], dtype=np.float64)
    pairs = [(i, j) for i in range(8) for j in range(i + 1, 8) if np.sum(corners[i] != corners[j]) == 1]
    q = np.einsum("nrk,ck->ncr", a[:, :, :3], corners) + a[:, None, :, 3]  # (N, 8, 3) normalised
    q = (q + 1) * (size / 2) - 0.5  # voxels
    edges = np.stack([q[:, [i, j]] for i, j in pairs], axis=1)
    depth = np.array([corners[i, 2] if corners[i, 2] == corners[j, 2] else 0.0 for i, j in pairs])
    return edges, depth


def plot_mnist3d(model, x: np.ndarray, path, labels=None, title: str | None = None,
                 norm: dict | None = None) -> Path:
    """3D MNIST: per volume, the projection of the input U, the learnt 3D transformation, and the
    projection of the transformer's output V (what the classifier reads); one PNG.

    ``x`` (N, 1, S, S, S) in [0, 1]. The transformation is drawn as the box
    T_theta([-1, 1]^3) the transformer reads, seen along the depth axis over
    the input's projection (front face red, back face blue, depth edges
    grey). A model without a transformer shows the input's projection and
    its predictions only. ``norm`` as for :func:`plot_transformations`.
    """
    plt = _pyplot()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, s = x.shape[0], x.shape[-1]
    st = getattr(model, "transformer", None)
    pred, views = _predict(model, x, norm, [st] if st is not None else [], lambda t: box_edges(t.theta, s))
    if st is not None:
        [(v, (edges, depth))] = views
    proj_u = x.mean(axis=2)[:, 0]
    hi = max(float(proj_u.max()), 1e-6)
    panels = 3 if st is not None else 1
    fig, axes = plt.subplots(n, panels, figsize=(1.9 * panels, 1.8 * n + 0.4), squeeze=False)
    for i in range(n):
        lab = f"label {labels[i]}, pred {pred[i]}" if labels is not None else f"pred {pred[i]}"
        _show(axes[i, 0], proj_u[i] / hi, f"projection of U\n({lab})")
        if st is None:
            continue
        ax = axes[i, 1]
        _show(ax, proj_u[i] / hi, "T_theta box on U")
        for e, z in zip(edges[i], depth):
            color = "#ff3b30" if z < 0 else ("#0a84ff" if z > 0 else "#8e8e93")
            ax.plot(e[:, 0], e[:, 1], color=color, lw=1.2)
        xs, ys = edges[i, ..., 0], edges[i, ..., 1]
        ax.set_xlim(min(-0.5, xs.min()) - 1, max(s - 0.5, xs.max()) + 1)
        ax.set_ylim(max(s - 0.5, ys.max()) + 1, min(-0.5, ys.min()) - 1)
        proj_v = v[i, 0].mean(axis=0)
        _show(axes[i, 2], proj_v / max(float(proj_v.max()), 1e-6), "projection of V")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_learning_curves(log_csv, path, title: str | None = None) -> Path:
    """Training loss (left) and training / test error in % (right, log scale) from ``log.csv``."""
    from npstn.train import read_log

    rows = read_log(log_csv)
    if not rows:
        raise ValueError(f"{str(log_csv)!r} holds no log rows yet; train for a few steps first")
    plt = _pyplot()
    step = np.array([r["step"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    train_err = 100.0 * (1.0 - np.array([r["train_accuracy"] for r in rows]))
    tests = [(r["step"], r["test_error_percent"]) for r in rows if r["test_error_percent"] is not None]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(step, loss, lw=1)
    a.set_yscale("log")
    a.set_xlabel("step")
    a.set_title("training loss (cross-entropy)")
    b.plot(step, np.maximum(train_err, 1e-2), lw=1, label="train (fresh distortions)")
    if tests:
        ts, te = zip(*tests)
        b.plot(ts, np.maximum(te, 1e-2), "o-", ms=4, label="test")
        b.annotate(f"{te[-1]:.2f}%", (ts[-1], max(te[-1], 1e-2)), textcoords="offset points",
                   xytext=(-10, 8), fontsize=8)
    b.set_yscale("log")
    b.set_xlabel("step")
    b.set_title("error (%)")
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3, which="both")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def viz_run(run_dir, n: int = 12, out=None, test_data=None) -> list[Path]:
    """Write ``transformations.png`` and ``curves.png`` for a run folder; returns the paths.

    ``out`` defaults to ``<run_dir>/viz``. ``test_data`` = (x, y) replaces the
    run's test set (default: :func:`npstn.train.load_test_set`).
    """
    from npstn import train as T

    run = Path(run_dir)
    model, config = T.load_run(run)
    out = Path(out) if out is not None else run / "viz"
    if test_data is None:
        test_data = T.data.load_test_for(config)
    x, y = test_data
    if config.task == "mnist3d":
        paths = [plot_mnist3d(model, x[:n], out / "transformations.png", labels=y[:n],
                              title=f"{config.describe()}:\nprojections, and the box the 3D transformer reads",
                              norm=T.run_input_norm(run))]
    elif config.task == "addition":
        paths = [plot_addition(model, x[:n], out / "transformations.png", labels=y[:n],
                               title=f"{config.describe()}: both channels with each transformer's grid, "
                                     "then each transformer's output", norm=T.run_input_norm(run))]
        spec = _specialisation_plot(run, out / "specialisation.png", config)
        if spec is not None:
            paths.append(spec)
    else:
        paths = [plot_transformations(model, x[:n], out / "transformations.png", labels=y[:n],
                                      title=f"{config.describe()}: input U, sampling grid "
                                            "T_theta(G) on U, output V", norm=T.run_input_norm(run))]
    if (run / T.LOG).is_file() and T.read_log(run / T.LOG):
        paths.append(plot_learning_curves(run / T.LOG, out / "curves.png", title=config.describe()))
    return paths


def _specialisation_plot(run: Path, path, config) -> Path | None:
    """The 2xST specialisation index over training (from metrics.json, else the checkpoint); None if unrecorded."""
    import json

    from npstn import train as T

    records = None
    try:
        records = json.loads((run / T.METRICS).read_text()).get("specialisation")
    except (OSError, ValueError, AttributeError):
        pass
    if not records:
        try:
            with np.load(run / T.CHECKPOINT, allow_pickle=False) as f:
                records = json.loads(str(f["state.json"])).get("specialisation")
        except Exception:  # noqa: BLE001 - an unreadable checkpoint just means no plot
            records = None
    # "specialisation" is the centring index; records of runs before it was logged hold the energy index
    # under that key and no "centring_shares"
    centring = [(r["step"], r["specialisation"]) for r in records or ()
                if r.get("specialisation") is not None and "centring_shares" in r]
    energy = [(r["step"], r.get("energy_specialisation", r.get("specialisation"))) for r in records or ()]
    energy = [(k, v) for k, v in energy if v is not None]
    if not centring and not energy:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    if centring:
        ax.plot(*zip(*centring), marker="o", label="centring: A[0,0] - A[1,0] (which digit each window frames)")
    if energy:
        ax.plot(*zip(*energy), marker=".", ls="--", color="grey",
                label="energy: M[0,0] - M[1,0] (which digit's ink each output shows)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("step")
    ax.set_ylabel("specialisation s")
    ax.legend(fontsize=6, loc="best")
    ax.set_title(f"{config.describe()}\ns = +-1: each transformer takes one digit; 0: both the same", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_table1(results: list[dict], path, title: str | None = None) -> Path:
    """Table 1 as a picture: npstn's test error against the paper's, one point per cell.

    ``results`` are sweep results (dicts with ``config`` and
    ``test_error_percent``, as :func:`npstn.train.run_sweep` returns and
    ``results.json`` holds). Each (model, transform, distortion) cell is one
    point: x the paper's error, y npstn's mean over seeds, with a bar from the
    lowest to the highest seed; the diagonal is "as the paper", the dashed line
    1.5x the paper. Cells the paper does not report are left out. MNIST-addition
    runs (``task="addition"``) are drawn against Table 4 with star markers
    ("add"; 2xST-FCN in purple).
    """
    from npstn.addition import PAPER_TABLE4
    from npstn.train import PAPER_TABLE1

    plt = _pyplot()
    cells: dict = {}
    for r in results:
        c, err = r["config"], r.get("test_error_percent")
        if err is None:
            continue
        st = c["model"].startswith("st-")
        if c.get("task", "distortion") == "addition":
            n = int(c.get("transformers", 1)) if st else 0
            key = ("2xst-fcn" if n == 2 else c["model"], c["transform"] if st else None, "add",
                   PAPER_TABLE4.get((c["model"], c["transform"] if st else None, n)))
        else:
            key = (c["model"], c["transform"] if st else None, c["distortion"],
                   PAPER_TABLE1.get((c["model"], c["transform"] if st else None), {}).get(c["distortion"]))
        cells.setdefault(key, []).append(float(err))
    colours = {"fcn": "#8e8e93", "cnn": "#34c759", "st-fcn": "#007aff", "st-cnn": "#ff9500",
               "2xst-fcn": "#af52de"}
    markers = {"r": "o", "rts": "s", "p": "^", "e": "D", "tc": "v", "add": "*"}
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    top = max([max(v) for v in cells.values()] + [k[3] or 0 for k in cells] + [1.0])
    lo, hi = 0.3, max(20.0, 1.6 * top)
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, label="as the paper")
    ax.plot([lo, hi], [1.5 * lo, 1.5 * hi], color="k", lw=0.8, ls="--", label="1.5x the paper")
    seen = set()
    for (model, transform, dist, paper), errs in sorted(cells.items(), key=str):
        if paper is None:
            continue
        e = np.array(errs)
        lab = ("2xST-FCN" if model == "2xst-fcn" else model.upper()) + (f" {transform}" if transform else "")
        ax.errorbar([paper], [e.mean()], yerr=[[e.mean() - e.min()], [e.max() - e.mean()]],
                    fmt=markers.get(dist, "o"), color=colours.get(model, "k"), ms=6, capsize=2,
                    alpha=0.85 if transform in (None, "affine") else 0.55,
                    label=lab if (model, transform) not in seen else None)
        seen.add((model, transform))
        short = {"affine": "aff", "projective": "proj", "tps": "tps", "attention": "att"}.get(transform, "")
        ax.annotate(f"{dist.upper()} {short}".strip(), (paper, e.mean()),
                    textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("paper's test error (%)")
    ax.set_ylabel("npstn's test error (%), mean over seeds (bar: min-max)")
    if title is None:
        addition = any(k[2] == "add" for k in cells)
        distorted = any(k[2] != "add" for k in cells)
        if addition and not distorted:
            title = "Table 4 (MNIST addition): npstn against the paper"
        else:
            title = (("Tables 1 and 4" if addition else "Table 1") + ": npstn against the paper "
                     "(markers: o R, s RTS, ^ P, D E, v TC" + (", * addition" if addition else "") + ")")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


# --------------------------------------------------------------------------- MNIST addition

#: Colours of the first and second transformer's grids in :func:`plot_addition`.
ADDITION_GRID_COLOURS = ("#ff3b30", "#0a84ff")


def plot_addition(model, x: np.ndarray, path, labels=None, digits=None, title: str | None = None,
                  norm: dict | None = None) -> Path:
    """MNIST addition pairs, both transformers' grids on both channels, and each transformer's output.

    One row per pair in ``x`` (N, 2, H, W) (channel 0 digit a, channel 1
    digit b): channel 0 and channel 1 of the input U, each with every
    transformer's sampling grid T_theta(G) drawn over it (transformer 1 red,
    transformer 2 blue; boundary bold), then each transformer's output V_k,
    channel 0 and channel 1 (the paper's addition figure). A 2xST model that
    has learnt to share the work shows each grid around one digit, and each
    V_k holding one digit while its other channel is nearly empty. For a
    model without transformers only the input channels are drawn.

    ``labels`` (the sums) and ``digits`` ((N, 2), the two digits) add to the
    row titles, with the model's prediction. ``norm`` as for
    :func:`plot_transformations` (the model sees standardised pixels; the
    outputs are drawn back in pixel units). Returns the PNG's path.
    """
    plt = _pyplot()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 2:
        raise ValueError(f"plot_addition: x must be (N, 2, H, W) pairs, got shape {x.shape}")
    n, _, h, w = x.shape
    sts = tuple(getattr(model, "transformers", ()) or ())
    pred, views = _predict(model, x, norm, sts, lambda t: transformation_mesh(t, t.theta, h, w))
    outs = [v for v, _ in views]
    meshes = [m for _, m in views]
    lo, hi = min(0.0, float(x.min())), max(1.0, float(x.max()))
    cols = 2 + 2 * len(sts)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.75 * n + 0.5), squeeze=False)
    for i in range(n):
        what = f"pred {pred[i]}"
        if labels is not None:
            what = f"sum {labels[i]}, " + what
        if digits is not None:
            what = f"{digits[i][0]} + {digits[i][1]}: " + what
        for c in range(2):
            ax = axes[i, c]
            ax.imshow(x[i, c], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            xs, ys = [-0.5, w - 0.5], [-0.5, h - 0.5]
            for k, mesh in enumerate(meshes):
                _draw_mesh(ax, mesh[i], color=ADDITION_GRID_COLOURS[k % len(ADDITION_GRID_COLOURS)])
                xs += [mesh[i, ..., 0].min(), mesh[i, ..., 0].max()]
                ys += [mesh[i, ..., 1].min(), mesh[i, ..., 1].max()]
            ax.set_xlim(min(xs) - 1, max(xs) + 1)
            ax.set_ylim(max(ys) + 1, min(ys) - 1)
            grids = " + grids" if meshes else ""
            ax.set_title((f"{what}\n" if c == 0 else "\n") + f"U channel {c}{grids}", fontsize=7)
        for k, v in enumerate(outs):
            for c in range(2):
                ax = axes[i, 2 + 2 * k + c]
                ax.imshow(v[i, c], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                for side in ax.spines.values():
                    side.set_edgecolor(ADDITION_GRID_COLOURS[k % len(ADDITION_GRID_COLOURS)])
                    side.set_linewidth(1.5)
                ax.set_title(f"\nV{k + 1} channel {c}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


__all__ += ["plot_addition", "ADDITION_GRID_COLOURS"]
