"""The task registry keyed by name, and the entry points that read a task's records.

One module per task family holds its readers (XTREME-layout folder and hub, returning the same records) and its
:class:`~xltlib.data.tasks.spec.Task` entry: :mod:`.xnli_pawsx`, :mod:`.tatoeba`, :mod:`.xcopa`, :mod:`.udpos`,
:mod:`.panx`, :mod:`.qa` (XQuAD, MLQA, TyDiQA-GoldP), :mod:`.retrieval` (LAReQA, Mewsli-X). A task entry says which
languages it has, how to read it, its XTREME metric and its *kind* (:mod:`xltlib.evaluation.task_types`: the head it
trains and how it is scored).

The *offline protocol* (``protocol.name: offline_dev_split``) exists for data folders without labelled test sets:
the English dev set is split by group (XNLI premise block ``row // 3``; PAWS-X rows linked by a shared English
sentence), the training groups are used for fine-tuning, and the remaining rows, the same row indices in every
language, are evaluated.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xltlib.core.registry import Registry
from xltlib.data.formats import DataError
from xltlib.data.tasks import panx, qa, retrieval, tatoeba, udpos, xcopa, xnli_pawsx
from xltlib.data.tasks.spec import Task
from xltlib.data.tasks.tatoeba import TATOEBA_ISO1
from xltlib.data.tasks.xnli_pawsx import read_nli_pairs, read_paraphrase_pairs

__all__ = ["TASKS", "Task", "DataError", "TATOEBA_ISO1", "get_task", "data_dir_or_none", "load_records",
           "load_train_records", "offline_split", "check_aligned", "read_nli_pairs", "read_paraphrase_pairs"]

TASKS: Registry[Task] = Registry("task")
for _task in (xnli_pawsx.XNLI, xnli_pawsx.PAWSX, tatoeba.TATOEBA, xcopa.XCOPA, udpos.UDPOS, panx.PANX, qa.XQUAD,
              qa.MLQA, qa.TYDIQA, retrieval.LAREQA, retrieval.MEWSLIX):
    TASKS.add(_task.name, _task)


def get_task(name: str) -> Task:
    return TASKS.get(name)


# ------------------------------------------------------------------- entry points
def data_dir_or_none(data_dir: str | Path | None) -> Path | None:
    d = data_dir or os.environ.get("XLT_DATA_DIR")
    if not d:
        return None
    d = Path(d)
    if not d.is_dir():
        raise DataError(f"data folder {d} does not exist; expected an XTREME-layout folder (xnli/, pawsx/, tatoeba-laser/ ...)")
    return d


def load_records(task: str, lang: str, data_dir: str | Path | None = None, split: str = "dev") -> list[dict]:
    """Records of one task, language and split, from the local folder when given, else from the hub."""
    t = get_task(task)
    t.check_language(lang)
    if split not in t.splits:
        raise ValueError(f"task '{task}' has no '{split}' split here; its splits: {', '.join(t.splits)}")
    d = data_dir_or_none(data_dir)
    args = (lang, split) if len(t.splits) > 1 else (lang,)
    return t.local_reader(d, *args) if d is not None else t.hub_reader(*args)


def load_train_records(task: str, data_dir: str | Path | None = None) -> list[dict]:
    """English training records of a task with a training file (or of the task it trains from)."""
    t = get_task(get_task(task).training_task)
    if t.train_reader is None:
        raise ValueError(f"task '{t.name}' has no training file; it uses the offline dev split")
    d = data_dir_or_none(data_dir)
    return t.train_reader(d) if d is not None else t.train_hub_reader()


def offline_split(task: str, english: list[dict], train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, eval) of the offline protocol: whole groups go to one side."""
    t = get_task(task)
    groups = t.group_fn(english) if t.group_fn else np.arange(len(english))
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    train_groups = set(rng.permutation(uniq)[: int(round(train_fraction * len(uniq)))].tolist())
    is_train = np.array([g in train_groups for g in groups])
    return np.flatnonzero(is_train), np.flatnonzero(~is_train)


def check_aligned(task: str, by_lang: dict[str, list[dict]]) -> None:
    n = {lang: len(r) for lang, r in by_lang.items()}
    if len(set(n.values())) > 1:
        raise DataError(f"task '{task}': languages have different row counts {n}; the offline protocol needs row-aligned files")
