"""The chained cache keys of a run folder's artefacts, and which artefacts are done under them.

One artefact, one key, each chained on the one it is made from:
split (task, languages, protocol, content of the rows read) -> checkpoint (+ model, method, seed, train
settings) -> transfer (+ the scored rows and evaluate settings) / alignment (+ alignment settings and the
parallel data). Every result row carries its artefact's key; only rows whose key is live are analysed
(:mod:`xltlib.runner.results`), so a rerun after any change recomputes exactly the artefacts whose key moved.

The functions take the run folder (:class:`xltlib.runner.run_dir.Run`: ``cfg``, ``split``, its cells and paths)
without importing it: the run folder reads its result rows through this module.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from xltlib.config.grid import Cell
from xltlib.data import tasks as T
from xltlib.data.split import content_hash
from xltlib.evaluation.alignment import METRICS_VERSION
from xltlib.training.objectives import OBJECTIVES

PRETRAINED = "pretrained"
KINDS = ("train", "transfer", "alignment")  # the folders under results/


@dataclass(frozen=True)
class AlignmentCheckpoint:
    """What the alignment stage encodes: a pre-trained model (``path`` None) or a finished checkpoint."""

    checkpoint: str  # the checkpoint's name, or pretrained:<model>
    model: str
    task: str  # the task it trained on; "" for a pre-trained model
    method: str  # the grid's method entry, or "pretrained"
    seed: int  # -1 for a pre-trained model
    path: Path | None = None  # the checkpoint folder; None: the pre-trained model, loaded by name
    key: str = ""  # the checkpoint key; "" for a pre-trained model (its name stands in)

    @classmethod
    def pretrained(cls, model: str) -> "AlignmentCheckpoint":
        return cls(checkpoint=f"{PRETRAINED}:{model}", model=model, task="", method=PRETRAINED, seed=-1)


def cached(path: Path, key: str) -> bool:
    """The artefact at ``path`` exists and was made under ``key`` by a batch run."""
    if not path.exists():
        return False
    try:
        cols = ["key", "interactive"] if "interactive" in pq.read_schema(path).names else ["key"]
        rows = pd.read_parquet(path, columns=cols)
    except (KeyError, ValueError, IndexError, OSError):  # written without a key, or unreadable: recompute
        return False
    # rows written from a JupyterLab session (xlt lab) never stand in for a batch result
    interactive = "interactive" in rows and rows["interactive"].fillna(False).astype(bool).any()
    return len(rows) > 0 and rows["key"].iloc[0] == key and not interactive


# The dicts hashed below define the keys: a changed entry moves the keys of every existing run folder, and
# all of it is recomputed (tests/test_keys.py pins them).
def checkpoint_key(run, cell: Cell) -> str:
    """split (training rows) -> checkpoint: everything that determines the trained weights."""
    training_task = T.get_task(cell.task).training_task
    return content_hash(dict(split=run.split(cell.task).train_key, model=cell.model, training_task=training_task,
                             method=cell.method_type, method_params=objective_settings(cell), seed=cell.seed,
                             train=train_settings(run.cfg.train_for(training_task, cell.method))))


def clean_prefix_key(run, cell: Cell) -> str:
    """The checkpoint key without the method: the cells that share it train the same clean epochs
    (``train.clean_epochs``; :mod:`xltlib.training.resume`)."""
    training_task = T.get_task(cell.task).training_task
    return content_hash(dict(split=run.split(cell.task).train_key, model=cell.model, training_task=training_task,
                             seed=cell.seed, train=train_settings(run.cfg.train_for(training_task, cell.method)),
                             shares="clean epochs"))


# TrainConfig fields added after runs were keyed, with the default that reproduces those runs: left out of the key
# at that default, so a finished checkpoint keeps its key
LATER_TRAIN_FIELDS = {"clean_epochs": 0}


def train_settings(train) -> dict:
    """The train settings of a checkpoint's key."""
    return {k: v for k, v in train.model_dump().items() if LATER_TRAIN_FIELDS.get(k, object()) != v}


def objective_settings(cell: Cell) -> dict:
    """The objective's hyperparameters with its defaults filled in: a default that changes (PGD's random start
    became the reference's) moves the key of every checkpoint that relied on it. A baseline has none, so its
    key is what it was."""
    return OBJECTIVES.get(cell.method_type).checked_hparams(cell.method_params, cell.method)


def transfer_key(run, cell: Cell) -> str:
    """checkpoint -> transfer: the checkpoint, the scored rows and how they are scored."""
    c = run.cfg
    return content_hash(dict(checkpoint=checkpoint_key(run, cell), split=run.split(cell.task).eval_key,
                             evaluate=c.evaluate.model_dump(), max_length=c.train.max_length, bf16=c.train.bf16,
                             method=cell.method_type, method_params=cell.method_params))


def parallel_key(run) -> str:
    """The key of the parallel data the alignment stage last encoded; "" before it first ran."""
    path = run.path("data", "parallel.json")
    return json.loads(path.read_text())["key"] if path.is_file() else ""


def alignment_key(run, ck: AlignmentCheckpoint) -> str:
    """checkpoint (or the pre-trained model) -> alignment: + alignment settings, the parallel data and the
    metrics' version (a metric whose meaning changed recomputes, :data:`~xltlib.evaluation.alignment.METRICS_VERSION`)."""
    base = ck.key if ck.path is not None else ck.checkpoint
    return content_hash(dict(checkpoint=base, alignment=run.cfg.alignment.model_dump(),
                             parallel=parallel_key(run), bf16=run.cfg.train.bf16, metrics_version=METRICS_VERSION))


def cell_done(run, cell: Cell) -> bool:
    """The cell's checkpoint is on disk under its current key."""
    meta = run.checkpoint_dir(cell.checkpoint) / "xlt_checkpoint.json"
    try:
        return meta.is_file() and json.loads(meta.read_text()).get("key") == checkpoint_key(run, cell)
    except FileNotFoundError:  # no split yet: nothing can be done
        return False


def transfer_done(run, cell: Cell) -> bool:
    return cached(run.transfer_path(cell.cell_id), transfer_key(run, cell))


def alignment_done(run, ck: AlignmentCheckpoint) -> bool:
    """False also before the alignment stage first wrote the parallel data's key."""
    return bool(parallel_key(run)) and cached(run.alignment_path(ck.checkpoint), alignment_key(run, ck))


def trained_rows(run, cell: Cell) -> bool:
    """The cell's training rows are on disk under its current checkpoint key (whether or not the checkpoint is)."""
    rows = run.train_path(cell.checkpoint)
    try:
        return rows.is_file() and cached(rows, checkpoint_key(run, cell))
    except FileNotFoundError:  # no split yet: nothing can be done
        return False


def alignment_checkpoint(run, cell: Cell) -> AlignmentCheckpoint:
    """What the alignment stage encodes for ``cell``'s checkpoint, with its key (trained or not yet)."""
    return AlignmentCheckpoint(checkpoint=cell.checkpoint, model=cell.model, task=T.get_task(cell.task).training_task,
                               method=cell.method, seed=cell.seed, path=run.checkpoint_dir(cell.checkpoint),
                               key=checkpoint_key(run, cell))


def evaluated(run, cell: Cell) -> bool:
    """Every row the run makes from ``cell``'s checkpoint is on disk under its current keys: its training rows,
    the transfer rows of every grid cell that scores it and, when the run aligns, its alignment rows. Its folder is
    then no longer needed: a run that comes back without it (pruned, or left on a machine that is gone, the rows
    kept) trains it again only when a setting that its rows depend on changes."""
    if not trained_rows(run, cell):
        return False
    if not all(transfer_done(run, c) for c in run.cells() if c.checkpoint == cell.checkpoint):
        return False
    return not run.cfg.alignment.datasets or alignment_done(run, alignment_checkpoint(run, cell))


def finished_cells(run) -> list[Cell]:
    return [c for c in run.cells() if cell_done(run, c)]


def missing_cells(run) -> list[str]:
    """Ids of the cells without a checkpoint under the current key (training failed or not run), but those whose
    rows are all on disk (:func:`evaluated`)."""
    return [c.cell_id for c in run.cells() if not cell_done(run, c) and not evaluated(run, c)]


def alignment_checkpoints(run) -> list[AlignmentCheckpoint]:
    """The pre-trained model(s) and every finished checkpoint, with their keys."""
    ck = []
    if run.cfg.alignment.include_pretrained:
        ck += [AlignmentCheckpoint.pretrained(m) for m in run.cfg.grid.model]
    # and those whose folder is gone but whose rows are all on disk (their alignment rows stay live)
    return ck + [alignment_checkpoint(run, c) for c in run.training_cells() if cell_done(run, c) or evaluated(run, c)]


def scored_cells(run) -> list[Cell]:
    """Cells whose results can be analysed: checkpoint on disk, or training rows under the current key (a run
    folder whose checkpoints were pruned, or that came back from a remote machine without them)."""
    return [c for c in run.cells() if cell_done(run, c) or trained_rows(run, c)]


def live_keys(run, kind: str) -> set[str]:
    """The keys of the artefacts of ``kind`` (one of :data:`KINDS`) that the current settings make."""
    if kind == "train":
        return {checkpoint_key(run, c) for c in scored_cells(run)}
    if kind == "transfer":
        return {transfer_key(run, c) for c in scored_cells(run)}
    if kind == "alignment":
        return {alignment_key(run, ck) for ck in alignment_checkpoints(run)}
    raise ValueError(f"unknown results kind '{kind}'; kinds: {', '.join(KINDS)}")
