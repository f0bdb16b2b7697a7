"""A run folder's result rows as the analysis reads them: live rows only, and the figures derived from the run.

Rows of artefacts whose key moved (settings, data or checkpoint changed, :mod:`xltlib.runner.keys`) stay on disk
until recomputed but are not analysed. The functions take the run folder (:class:`xltlib.runner.run_dir.Run`),
which offers them as methods (``run.load_results(kind)``) to the reporting layer, without importing it.
"""
from __future__ import annotations

import pandas as pd

from xltlib.core.rows import read_rows
from xltlib.data import tasks as T
from xltlib.runner.keys import live_keys


def load_results(run, kind: str) -> pd.DataFrame:
    """The rows of ``results/<kind>/`` made under a live key; ``df.attrs['stale_rows']`` counts the others."""
    df = read_rows(run.path("results", kind))
    if not len(df):
        df.attrs["stale_rows"] = 0
        return df
    live = df["key"].isin(live_keys(run, kind)) if "key" in df else pd.Series(False, index=df.index)
    out = df[live].reset_index(drop=True)
    out.attrs["stale_rows"] = int((~live).sum())
    return out


def weight_drift(run) -> dict[str, float]:
    """Checkpoint -> relative L2 distance of its encoder from the pre-trained weights (live checkpoints)."""
    train = load_results(run, "train")
    if not len(train):
        return {}
    d = train[train["metric"] == "weight_drift"]
    return dict(zip(d["checkpoint"], d["value"].astype(float)))


def majority_rates(run) -> dict[str, float]:
    """Per task, the share of the most frequent label among the English scored rows (a trivial baseline)."""
    out = {}
    for task in run.cfg.grid.task:
        if T.get_task(task).kind in ("pair_classification", "multiple_choice"):
            out[task] = run.split(task).majority_rate("en")
    return out
