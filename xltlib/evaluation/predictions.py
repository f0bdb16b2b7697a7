"""Prediction files: every scored item's prediction, kept beside the tidy rows, so that a run can be inspected
item by item and rescored without its checkpoints (as XTREME's ``evaluate.py`` scores prediction files).

A cell's predictions sit in one folder (the transfer stage uses ``results/predictions/<cell_id>/``), one parquet
file per scored language or generalized pair: ``<task>-<language>.parquet`` / ``<task>-<language>-<language2>.parquet``.
A file holds one row per scored item, in the order they were scored (the bootstrap CIs resample positions),
with the task kind's columns (:mod:`xltlib.evaluation.task_types`: ``id``, ``gold``, ``prediction`` and, by
kind, ``scores`` or ``truncated_words``) and, in every row, :data:`META_COLUMNS`: the task, the language
(pair) and the transfer ``key`` of the cell, the same key its tidy rows carry, so predictions of other settings
or checkpoints are recognised as stale. Files are written atomically (a temporary file, then a rename).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from xltlib.core.rows import write_parquet_atomic
from xltlib.data import tasks as T
from xltlib.evaluation.predict import Predictions
from xltlib.evaluation.task_types import get_kind

__all__ = ["META_COLUMNS", "prediction_file", "write_predictions", "read_predictions", "score_predictions"]

META_COLUMNS = ("task", "language", "language2", "key")


def prediction_file(folder: str | Path, task: str, language: str, language2: str = "") -> Path:
    """``folder/<task>-<language>[-<language2>].parquet``."""
    return Path(folder) / f"{'-'.join([task, language] + ([language2] if language2 else []))}.parquet"


def write_predictions(folder: str | Path, task: str, predictions: Predictions, key: str) -> list[Path]:
    """One file per (language, language2) of ``predictions`` (a task kind's ``predict``), each row stamped
    with ``task``, the language (pair) and ``key``. Returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for (lang, lang2), table in predictions.items():
        clash = [c for c in META_COLUMNS if c in table.columns]
        if clash:
            raise ValueError(f"predictions of task '{task}', language '{lang}{'-' + lang2 if lang2 else ''}' have "
                             f"column(s) {clash}, which the prediction files reserve for {list(META_COLUMNS)}")
        df = pd.concat([pd.DataFrame(dict(task=task, language=lang, language2=lang2, key=key), index=table.index),
                        table], axis=1)
        path = prediction_file(folder, task, lang, lang2)
        write_parquet_atomic(df, path)
        written.append(path)
    return written


def read_predictions(folder: str | Path, key: str) -> tuple[str, Predictions, list[Path]]:
    """(task, the predictions written under ``key``, the files in ``folder`` written under another key).

    Raises FileNotFoundError when ``folder`` holds no file of ``key``, ValueError when those files name
    more than one task or a file mixes keys.
    """
    folder = Path(folder)
    tasks, predictions, stale = set(), {}, []
    for path in sorted(folder.glob("*.parquet")):
        df = pd.read_parquet(path)
        missing = [c for c in META_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{path}: not a prediction file, it lacks the column(s) {missing}")
        if df["key"].nunique() > 1:
            raise ValueError(f"{path}: rows of {df['key'].nunique()} transfer keys in one prediction file")
        if not len(df) or df["key"].iloc[0] != key:
            stale.append(path)
            continue
        tasks.add(df["task"].iloc[0])
        predictions[(df["language"].iloc[0], df["language2"].iloc[0])] = df.drop(columns=list(META_COLUMNS))
    if not predictions:
        raise FileNotFoundError(f"{folder}: no prediction file of transfer key {key}"
                                + (f" ({len(stale)} file(s) of other keys)" if stale else ""))
    if len(tasks) > 1:
        raise ValueError(f"{folder}: prediction files of several tasks under key {key}: {sorted(tasks)}")
    return tasks.pop(), predictions, stale


def score_predictions(task: str, predictions: Predictions) -> list[dict]:
    """The tidy rows of ``predictions`` as the task's kind scores them (no model)."""
    t = T.get_task(task)
    return get_kind(t.kind).score(t, predictions)
