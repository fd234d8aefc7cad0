"""The paper's Table 1 and the Markdown table of a sweep's results beside it."""
from __future__ import annotations

import numpy as np

from npstn.models import INPUT_SIZES, MODELS, TRANSFORM_NAMES

#: The paper's Table 1 test errors (%), keyed by (model, transform or None) and distortion.
#: TC: the paper's ST rows do not name the transform; npstn lists them under affine.
PAPER_TABLE1 = {
    ("fcn", None): {"r": 2.1, "rts": 5.2, "p": 3.1, "e": 3.2, "tc": 13.2},
    ("cnn", None): {"r": 1.2, "rts": 0.8, "p": 1.5, "e": 1.4, "tc": 3.5},
    ("st-fcn", "affine"): {"r": 1.2, "rts": 0.8, "p": 1.5, "e": 2.7, "tc": 2.0},
    ("st-fcn", "projective"): {"r": 1.3, "rts": 0.9, "p": 1.4, "e": 2.6},
    ("st-fcn", "tps"): {"r": 1.1, "rts": 0.8, "p": 1.4, "e": 2.4},
    ("st-cnn", "affine"): {"r": 0.7, "rts": 0.5, "p": 0.8, "e": 1.2, "tc": 1.7},
    ("st-cnn", "projective"): {"r": 0.8, "rts": 0.6, "p": 0.8, "e": 1.3},
    ("st-cnn", "tps"): {"r": 0.7, "rts": 0.5, "p": 0.8, "e": 1.1},
}



#: The best published independent replications we know of (test error %, who), for comparison.
REPLICATIONS = {
    ("fcn", None): {"r": (3.8, "a Caffe replication")},
    ("st-fcn", "affine"): {"r": (5.4, "the Columbia course report (ST-FCN)")},
}



def _is_addition(r: dict) -> bool:
    return r["config"].get("task", "distortion") == "addition"



def _owed(model: str) -> str:
    """The cell of a table cell without a finished run (a CNN's: 150k steps are a GPU's work)."""
    return "owed (GPU)" if "cnn" in model else "owed"



def _mean_cell(errs: list, bad: int) -> str:
    e = np.array(errs)
    txt = (f"{e.mean():.2f} +- {e.std():.2f} ({len(e)})" if len(e) > 1
           else f"{e[0]:.2f} (1)" if len(e) == 1 else "-")
    return txt + (f" [{bad} failed/diverged]" if bad else "")



def results_table(results: list[dict], *, complete: bool = False) -> str:
    """A Markdown table: mean test error (%) +- std over seeds per (model, transform) x distortion,
    beside the paper's Table 1 numbers; MNIST-addition runs get their own table beside Table 4
    (:func:`addition_results_table`).

    ``complete``: each table has every row (and Table 1 every column) of the
    paper's, and a cell without a finished run says so: "owed", or "owed
    (GPU)" in the CNN and ST-CNN rows (a CNN step takes about a second on a
    CPU, so 150k steps are a GPU's work)."""
    addition = [r for r in results if _is_addition(r)]
    rest = [r for r in results if not _is_addition(r)]
    parts = (([_table1(rest, complete=complete)] if rest or not addition else [])
             + ([addition_results_table(addition, complete=complete)] if addition else []))
    return "\n\n".join(parts)



def addition_results_table(results: list[dict], complete: bool = False) -> str:
    """MNIST addition (Table 4): mean test error (%) +- std over seeds per model, beside the paper's,
    with the last recorded specialisation index s of each 2xST run (see :mod:`npstn.addition`).
    ``complete``: every row of the paper's Table 4, unmeasured ones "owed" ("owed (GPU)": the CNN)."""
    from npstn.addition import PAPER_TABLE4

    cells: dict = {}
    steps = set()
    for r in results:
        c = r["config"]
        st = c["model"].startswith("st-")
        key = (c["model"], c["transform"] if st else None, int(c.get("transformers", 1)) if st else 0)
        cell = cells.setdefault(key, {"errs": [], "bad": 0, "spec": []})
        steps.add(c["steps"])
        if r["test_error_percent"] is not None:
            cell["errs"].append(r["test_error_percent"])
        else:
            cell["bad"] += 1
        recs = (r.get("metrics") or {}).get("specialisation") or []
        if recs and recs[-1].get("specialisation") is not None and "centring_shares" in recs[-1]:
            cell["spec"].append(recs[-1]["specialisation"])
    order = list(PAPER_TABLE4)
    keys = sorted(set(cells) | (set(order) if complete else set()),
                  key=lambda k: order.index(k) if k in order else len(order))
    lines = [f"MNIST addition, test error (%), mean +- std over seeds (runs); steps: "
             f"{', '.join(map(str, sorted(steps)))}.", "",
             "| model | npstn | paper | specialisation s (centring) |", "|---|---:|---:|---:|"]
    for key in keys:
        m, t, n = key
        name = ("2x" if n == 2 else "") + m.upper() + (f" {t}" if t else "")
        paper = PAPER_TABLE4.get(key)
        if key not in cells:
            lines.append(f"| {name} | {_owed(m)} | {paper} |  |")
            continue
        spec = ", ".join(f"{v:+.2f}" for v in cells[key]["spec"]) if cells[key]["spec"] else ""
        lines.append(f"| {name} | {_mean_cell(cells[key]['errs'], cells[key]['bad'])} | "
                     f"{'' if paper is None else paper} | {spec} |")
    return "\n".join(lines)



def _table1(results: list[dict], complete: bool = False) -> str:
    """:func:`results_table` for distorted-MNIST runs (Table 1)."""
    cells: dict = {}
    steps = set()
    for r in results:
        c = r["config"]
        key = (c["model"], c["transform"] if c["model"].startswith("st-") else None)
        cell = cells.setdefault(key, {}).setdefault(c["distortion"], {"errs": [], "bad": 0})
        steps.add(c["steps"])
        if r["test_error_percent"] is not None:
            cell["errs"].append(r["test_error_percent"])
        else:
            cell["bad"] += 1
    dists = [d for d in INPUT_SIZES if any(d in v for v in cells.values())
             or (complete and any(d in v for v in PAPER_TABLE1.values()))]
    order = {m: i for i, m in enumerate(MODELS)}
    torder = {t: i for i, t in enumerate(TRANSFORM_NAMES)}
    keys = sorted(set(cells) | (set(PAPER_TABLE1) if complete else set()),
                  key=lambda k: (order[k[0]], torder.get(k[1], -1)))
    head = "| model | " + " | ".join(f"{d.upper()} npstn | {d.upper()} paper" for d in dists) + " |"
    lines = [f"Test error (%), mean +- std over seeds (runs); steps: {', '.join(map(str, sorted(steps)))}.",
             "", head, "|---|" + "---:|---:|" * len(dists)]
    for key in keys:
        name = key[0].upper() + (f" {key[1]}" if key[1] else "")
        row = []
        for d in dists:
            cell = cells.get(key, {}).get(d)
            paper = PAPER_TABLE1.get(key, {}).get(d)
            if cell is not None:
                row.append(_mean_cell(cell["errs"], cell["bad"]))
            elif complete and paper is not None:
                row.append(_owed(key[0]))
            else:
                row.append("")
            row.append("" if paper is None else f"{paper}")
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    reps = [f"{k[0].upper()}{' ' + k[1] if k[1] else ''} on {d.upper()}: {err} ({who})"
            for k, v in REPLICATIONS.items() if k in cells for d, (err, who) in v.items() if d in dists]
    if reps:
        lines += ["", "Best published replications: " + "; ".join(reps) + "."]
    return "\n".join(lines)
