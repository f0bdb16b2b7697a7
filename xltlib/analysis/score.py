"""What the analysis reads from the transfer rows: each task's score and its name; English is the source.

The transfer stage writes one ``metric == "score"`` row per (checkpoint, task, language): the XTREME-R task
score, the mean of the task's :attr:`~xltlib.data.tasks.spec.Task.score_metrics` (accuracy; tag F1; the mean of
QA F1 and EM; mAP@20), with its own bootstrap CI and, for pair classification, its per-example values. Every
step of the analysis reads it through :func:`score_rows`; :func:`score_name` says what it is.
"""
from __future__ import annotations

import pandas as pd

from xltlib.data import tasks as T

SOURCE = "en"  # the training language: scored, but not a transfer target
SCORE = "score"  # the metric name of the task-score rows


def is_blank(s: pd.Series) -> pd.Series:
    """True where a text column is empty (NaN or only spaces)."""
    return s.isna() | (s.astype(str).str.strip() == "")


def standard_rows(transfer: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of one metric in the standard setting (both sentences in one language: no ``language2``)."""
    rows = transfer[transfer["metric"] == metric]
    return rows[is_blank(rows["language2"])] if "language2" in rows else rows


def score_rows(transfer: pd.DataFrame) -> pd.DataFrame:
    """The task-score rows of the standard setting: one per (checkpoint, task, language)."""
    return standard_rows(transfer, SCORE)


def score_name(task: str) -> str:
    """What a task's score is, from its registry entry (e.g. "accuracy", "mean of f1 and exact_match")."""
    parts = T.get_task(task).score_metrics if task in T.TASKS else (SCORE,)
    return parts[0] if len(parts) == 1 else "mean of " + " and ".join(parts)


def score_label(tasks) -> str:
    """An axis or column label: "score (accuracy)", or "score" when the tasks' scores differ."""
    names = {score_name(t) for t in tasks}
    return f"score ({names.pop()})" if len(names) == 1 else "score"
