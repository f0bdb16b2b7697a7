"""``xlt rescore RUN``: a run's transfer rows recomputed from its prediction files, without a model or checkpoint.

For every transfer rows file ``results/transfer/<cell_id>.parquet`` the cell's predictions written under the
same transfer key (``results/predictions/<cell_id>/``, :mod:`xltlib.evaluation.predictions`) are scored again by
the task kind's ``score``. The rows come out in the stored order with every column of the stored row; a
recomputed row gets the new ``value``, ``n``, ``ci_low``, ``ci_high`` (and ``per_example`` where the kind
gives one) and the provenance of this rescoring (commit, time, versions), and a metric the scoring gives that
the stored rows lack is added. Rows that need the model are kept as stored: the robustness rows (English
accuracy under attack, ``robust_*``, ``attack_*``, ``synonym_subst_rate``) and LAReQA's ``pretrained_*`` rows
(the pre-trained encoder's own score).

The rescored rows go to ``results/rescored/transfer/<cell_id>.parquet``; ``write=True`` replaces the stored
rows instead (under the run folder's lock). Either way each file is written atomically.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from xltlib.core.rows import write_parquet_atomic
from xltlib.evaluation.predictions import read_predictions, score_predictions
from xltlib.runner.run_dir import Run

__all__ = ["RECOMPUTED", "CellRescore", "rescore_cell", "rescore_run"]

RECOMPUTED = ("value", "n", "ci_low", "ci_high", "per_example")  # what scoring sets in a row
_ROW_ID = ("language", "language2", "metric")


@dataclass
class CellRescore:
    """What rescoring did to one cell's rows."""

    cell_id: str
    rows: pd.DataFrame | None = None  # the rescored rows; None when the cell could not be rescored
    path: Path | None = None  # where they were written
    recomputed: int = 0
    changed: list[str] = field(default_factory=list)  # "lang[-lang2] metric: stored -> rescored"
    added: list[str] = field(default_factory=list)  # metrics the stored rows lacked
    kept: list[str] = field(default_factory=list)  # metrics kept as stored: they need the model
    stale_files: int = 0  # prediction files of another transfer key, left alone
    error: str = ""


def _row_id(row: dict) -> tuple[str, str, str]:
    """(language, language2, metric): what a cell's transfer row is about."""
    lang2 = row.get("language2")
    return str(row["language"]), "" if lang2 is None or pd.isna(lang2) else str(lang2), str(row["metric"])


def _where(rid: tuple[str, str, str]) -> str:
    return f"{rid[0]}-{rid[1]}" if rid[1] else rid[0]


def _same(a, b) -> bool:
    """Exact equality of two row values; NaN equals NaN, arrays and lists compare element by element."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (list, tuple, np.ndarray)) or isinstance(b, (list, tuple, np.ndarray)):
        return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float), equal_nan=True)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def rescore_cell(stored: pd.DataFrame, predictions_dir: Path, prov: dict) -> CellRescore:
    """The stored transfer rows of one cell with every row its predictions can give recomputed (see the module)."""
    cell_id, key = str(stored["cell_id"].iloc[0]), str(stored["key"].iloc[0])
    out = CellRescore(cell_id)
    try:
        task, predictions, stale = read_predictions(predictions_dir, key)
    except FileNotFoundError as exc:
        out.error = (f"{exc}; the rows were written without their predictions (before xlt kept them, or the "
                     f"files were removed): delete results/transfer/{cell_id}.parquet and run the transfer stage "
                     f"again (it needs the checkpoint)")
        return out
    out.stale_files = len(stale)
    if task != stored["task"].iloc[0]:
        out.error = f"{predictions_dir}: predictions of task '{task}' but the rows are of task '{stored['task'].iloc[0]}'"
        return out
    fresh = {_row_id(r): r for r in score_predictions(task, predictions)}
    scored_metrics = {m for _, _, m in fresh}
    rows, seen = [], set()
    for row in stored.to_dict("records"):
        rid = _row_id(row)
        if rid in fresh:
            new = fresh[rid]
            diff = [c for c in RECOMPUTED if c in new and not _same(row.get(c), new[c])]
            if diff:
                out.changed.append(f"{_where(rid)} {rid[2]}: value "
                                   f"{row.get('value')} -> {new['value']} ({', '.join(diff)} differ)")
            row.update({c: new[c] for c in RECOMPUTED if c in new}, **prov)
            out.recomputed += 1
            seen.add(rid)
        elif rid[2] in scored_metrics:  # a language (pair) the rows scored but no prediction file holds
            out.error = (f"{predictions_dir}: no predictions of {_where(rid)} under key "
                         f"{key}, which the rows score ({rid[2]})")
            return out
        elif rid[2] not in out.kept:
            out.kept.append(rid[2])
        rows.append(row)
    meta = {c: stored[c].iloc[0] for c in ("cell_id", "checkpoint", "model", "task", "method", "seed", "layer", "key")
            if c in stored}
    for rid, new in fresh.items():
        if rid not in seen:
            rows.append(dict(meta, **new, **prov))
            out.added.append(f"{_where(rid)} {rid[2]}")
    out.rows = pd.DataFrame(rows, columns=list(dict.fromkeys([*stored.columns, *(k for r in rows for k in r)])))
    return out


def rescore_run(run: Run, *, write: bool = False) -> list[CellRescore]:
    """Rescore every transfer rows file of ``run`` (see the module); a cell that cannot be rescored is written
    nowhere (an earlier rescoring's rows of it are removed from ``results/rescored/``) and says why in its
    ``error``."""
    prov = run.prov()
    dest = run.path("results", "transfer") if write else run.path("results", "rescored", "transfer")
    done = []
    for path in sorted(run.path("results", "transfer").glob("*.parquet")):
        stored = pd.read_parquet(path)
        if not len(stored) or "key" not in stored or "cell_id" not in stored:
            done.append(CellRescore(path.stem, error=f"{path}: no transfer rows with a cell id and key"))
            continue
        res = rescore_cell(stored, run.path("results", "predictions", str(stored["cell_id"].iloc[0])), prov)
        if res.rows is not None:
            res.path = dest / path.name
            write_parquet_atomic(res.rows, res.path)
        elif not write:  # an earlier rescoring's rows must not pass for this one's
            (dest / path.name).unlink(missing_ok=True)
        done.append(res)
    return done
