"""A run folder's result rows as the analysis reads them: live rows only, and the figures derived from the run.

Rows of artefacts whose key moved (settings, data or checkpoint changed, :mod:`xltlib.runner.keys`) stay on disk
until recomputed but are not analysed. The functions take the run folder (:class:`xltlib.runner.run_dir.Run`),
which offers them as methods (``run.load_results(kind)``) to the reporting layer, without importing it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from xltlib.core.rows import read_rows
from xltlib.data import tasks as T
from xltlib.evaluation.alignment import METRICS_VERSION
from xltlib.models.load import load_encoder
from xltlib.runner.keys import cell_done, live_keys, parallel_key
from xltlib.training.drift import DRIFT_METRIC, checkpoint_drift

ALIGNMENT_OUTCOMES = "alignment_outcomes"  # results/<this>/: per-pair outcomes of each checkpoint's alignment
PARALLEL_ITEMS = "parallel_items.parquet"  # data/<this>: the item each parallel pair is
SELECTION_COUNTS = "selection"  # results/<this>/: per selection sentence, an entity tagger's chunk counts
CHUNK_COUNTS = ["correct", "predicted", "gold"]


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
    """Checkpoint -> relative L2 distance of its trained parameters from the pre-trained weights
    (:mod:`xltlib.training.drift`), for the live checkpoints.

    From the training rows (:data:`~xltlib.training.drift.DRIFT_METRIC`); a checkpoint trained before those rows
    existed (its rows hold ``weight_drift``, over every encoder tensor, frozen table included: another quantity,
    not read) gets it from its saved parameters when its folder is on disk, and is left out otherwise."""
    train = load_results(run, "train")
    out = {}
    if len(train):
        d = train[train["metric"] == DRIFT_METRIC]
        out = dict(zip(d["checkpoint"], d["value"].astype(float)))
    pretrained: dict[str, dict] = {}  # base model -> its parameters, loaded once
    for cell in run.training_cells():
        if cell.checkpoint in out or not cell_done(run, cell):
            continue
        if cell.model not in pretrained:
            pretrained[cell.model] = dict(load_encoder(cell.model).named_parameters())
        out[cell.checkpoint] = checkpoint_drift(run.checkpoint_dir(cell.checkpoint), pretrained[cell.model]).value
    return out


def alignment_outcomes(run, metric: str, layer: int) -> pd.DataFrame:
    """The per-pair outcomes of one alignment metric at one layer (the live checkpoints'), one row per
    checkpoint, dataset and language: ``correct`` (bool per scored pair) and ``items`` (int64 per scored pair: the
    item it is, the same in every checkpoint and, for the same English sentence, every language; see
    :func:`xltlib.runner.stages.write_parallel_items`). Rows written before alignment metric version 2 have no
    outcomes: ``attrs['note']`` then says to rerun the alignment stage."""
    live = live_keys(run, "alignment")
    frames = []
    for path in sorted(run.path("results", ALIGNMENT_OUTCOMES).glob("*.parquet")):
        if not {"metric", "layer", "key"} <= set(pq.read_schema(path).names):
            continue  # a checkpoint whose metrics keep no per-pair outcomes
        t = pq.read_table(path, filters=[("metric", "=", metric), ("layer", "=", int(layer))]).to_pandas()
        frames.append(t[t["key"].isin(live)])
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if out.empty:
        out.attrs["note"] = (f"no per-sentence outcomes of {metric} at layer {layer} (alignment rows made before "
                             f"metric version {METRICS_VERSION}, or a metric without them): rerun the alignment stage")
        return out
    items_file = run.path("data", PARALLEL_ITEMS)
    items = pd.read_parquet(items_file) if items_file.is_file() else pd.DataFrame(columns=["key"])
    if not len(items) or items["key"].iloc[0] != parallel_key(run):
        raise FileNotFoundError(f"{items_file} is missing or was written for other parallel data than "
                                f"data/parallel.json names: rerun the alignment stage")
    by_lang = {k: g.sort_values("position")["item"].to_numpy(np.int64)
               for k, g in items.groupby(["dataset", "language"])}
    out["items"] = [by_lang[(d, lang)][np.asarray(pool, bool)]
                    for d, lang, pool in zip(out["dataset"], out["language"], out["in_pool"])]
    out["correct"] = [np.asarray(c, bool) for c in out["correct"]]
    return out.drop(columns=["in_pool"])


def selection_counts(run, keys: set[str] | None = None) -> dict[str, np.ndarray]:
    """Checkpoint -> its kept weights' (correct, predicted, gold) chunk counts per English selection sentence, in
    row order, for the checkpoints of entity-tagging tasks made under ``keys`` (default: the live ones; the train
    stage writes them beside the checkpoint; the model-quality gate bootstraps their F1)."""
    df = read_rows(run.path("results", SELECTION_COUNTS))
    if not len(df):
        return {}
    df = df[df["key"].isin(live_keys(run, "train") if keys is None else keys)]
    return {ck: g.sort_values("item")[CHUNK_COUNTS].to_numpy(np.int64) for ck, g in df.groupby("checkpoint")}


def majority_rates(run) -> dict[str, float]:
    """Per task, the share of the most frequent label among the English scored rows (a trivial baseline)."""
    out = {}
    for task in run.cfg.grid.task:
        if T.get_task(task).kind in ("pair_classification", "multiple_choice"):
            out[task] = run.split(task).majority_rate("en")
    return out
