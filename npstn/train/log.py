"""``log.csv``: one row per logging window (means over the window), torn last lines skipped."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from npstn.utils.io import atomic_write_text

_LOG_FIELDS = ("step", "loss", "train_accuracy", "lr", "test_error_percent", "elapsed_s")



def read_log(path) -> list[dict]:
    """Rows of a run's ``log.csv`` as dicts of floats (``test_error_percent`` None when not evaluated).

    A torn last line (from a crash mid-write) is skipped.
    """
    rows = []
    path = Path(path)
    if not path.is_file():
        return rows
    with open(path, newline="") as f:
        for rec in csv.DictReader(f):
            try:
                row = {"step": int(rec["step"])}
                for k in _LOG_FIELDS[1:]:
                    v = rec.get(k)
                    row[k] = float(v) if v not in (None, "") else None
            except (TypeError, ValueError):
                continue
            rows.append(row)
    return rows



def _format_row(row: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["" if row.get(k) is None else (repr(row[k]) if isinstance(row[k], float) else row[k])
                for k in _LOG_FIELDS])
    return buf.getvalue()



def _truncate_log(path: Path, step: int) -> None:
    """Keep only the rows up to ``step`` (rows written after the checkpoint are redone)."""
    rows = [r for r in read_log(path) if r["step"] <= step]
    text = ",".join(_LOG_FIELDS) + "\n" + "".join(_format_row(r) for r in rows)
    atomic_write_text(path, text)
