"""Step 1 of the analysis, the model-quality gate: did each checkpoint learn its task in English?

Per (task, checkpoint): the English score with its Wilson 95% CI (F1, QA, mAP: the score row's bootstrap CI)
against the majority-label rate. A checkpoint whose CI does not clear the majority rate has no transfer to
explain, so its rows are left out of every later step (:func:`apply_gate`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from xltlib.analysis.score import SOURCE, score_rows

GATE_COLS = ["task", "checkpoint", "method", "seed", "english", "ci_lo", "ci_hi", "n", "majority", "passes", "note"]


def wilson_ci(p: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (accuracy over n examples)."""
    if not n or not np.isfinite(p):
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + level / 2))
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return c - h, c + h


def quality_gate(transfer: pd.DataFrame, majority: dict[str, float] | None, *, level: float = 0.95) -> pd.DataFrame:
    """Per (task, checkpoint): the English score with its Wilson CI beside the majority-label rate (tasks without
    one: the score's own bootstrap CI).

    ``passes`` is False when the CI's lower bound does not exceed the majority rate (the model has not
    shown that it learned the task) or when there is no English score; tasks without a majority rate
    (tagging, QA, retrieval) are not gated and say so."""
    majority = majority or {}
    rows = []
    for (task, ck), g in score_rows(transfer).groupby(["task", "checkpoint"], sort=True):
        en = g[g["language"] == SOURCE]
        row = dict(task=task, checkpoint=ck, method=g["method"].iloc[0] if "method" in g else "",
                   seed=g["seed"].iloc[0] if "seed" in g else -1, english=math.nan, ci_lo=math.nan,
                   ci_hi=math.nan, n=0, majority=majority.get(task, math.nan), passes=True, note="")
        if en.empty:
            row.update(passes=False, note="no English score")
            rows.append(row)
            continue
        n = int(en["n"].sum()) if "n" in en else 0
        val = float(np.average(en["value"], weights=en["n"])) if n else float(en["value"].mean())
        gated = task in majority and np.isfinite(majority[task])
        if gated:  # accuracy: a proportion
            lo, hi = wilson_ci(val, n, level)
        else:  # F1, QA, mAP are not proportions: the row's own bootstrap CI over examples
            one = len(en) == 1 and {"ci_low", "ci_high"} <= set(en)
            lo, hi = (float(en["ci_low"].iloc[0]), float(en["ci_high"].iloc[0])) if one else (math.nan, math.nan)
        row.update(english=val, ci_lo=lo, ci_hi=hi, n=n)
        if not gated:
            row["note"] = "no majority rate for this task kind: not gated (bootstrap CI; see the English-vs-target table)"
        elif not lo > majority[task]:
            row.update(passes=False, note="English score does not clear the majority rate: excluded from RQ1/RQ2")
        rows.append(row)
    return pd.DataFrame(rows, columns=GATE_COLS)


def gate_failures(gate: pd.DataFrame) -> set[tuple[str, str]]:
    """(task, checkpoint) pairs that fail the gate."""
    if gate is None or gate.empty:
        return set()
    bad = gate[~gate["passes"].astype(bool)]
    return set(zip(bad["task"], bad["checkpoint"]))


def drop_failed(frame: pd.DataFrame, failed: set[tuple[str, str]]) -> pd.DataFrame:
    """Rows of ``frame`` whose (task, checkpoint) passed the gate."""
    if not failed or frame.empty:
        return frame
    key = list(zip(frame["task"], frame["checkpoint"]))
    return frame[[k not in failed for k in key]].reset_index(drop=True)


@dataclass
class Gate:
    """What step 1 hands on: the gate table, the pairs that fail it and the transfer rows that pass."""

    table: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per (task, checkpoint), GATE_COLS
    failed: set[tuple[str, str]] = field(default_factory=set)  # (task, checkpoint) pairs that fail
    kept: pd.DataFrame = field(default_factory=pd.DataFrame)  # the transfer rows of the pairs that pass
    notes: list[str] = field(default_factory=list)

    @property
    def excluded(self) -> list[tuple[str, str]]:
        return sorted(self.failed)


def apply_gate(transfer: pd.DataFrame, majority: dict[str, float] | None) -> Gate:
    """Step 1: gate every (task, checkpoint) on its English score; the rows of those that fail are left out of
    the method comparison, RQ1 and RQ2."""
    if not len(transfer):
        return Gate(kept=transfer)
    table = quality_gate(transfer, majority)
    failed = gate_failures(table)
    gate = Gate(table=table, failed=failed, kept=drop_failed(transfer, failed))
    if failed:
        gate.notes.append(f"{len(failed)} (task, checkpoint) pair(s) fail the model-quality gate and are left out "
                          f"of RQ1, RQ2 and the method comparison: "
                          + ", ".join(f"{t}/{c}" for t, c in gate.excluded))
    return gate
