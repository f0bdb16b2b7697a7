"""The cells of a run: every (model, task, method, seed) of the grid, with the id of the checkpoint it evaluates."""
from __future__ import annotations

import itertools

from xltlib.config.schema import RunConfig
from xltlib.data.tasks import get_task


def expand_grid(cfg: RunConfig) -> list[dict]:
    """Every (model, task, method, seed) cell, with a stable id used for folders and resume, and the id of
    the checkpoint it evaluates."""

    cells = []
    for model, task, method, seed in itertools.product(cfg.grid.model, cfg.grid.task, cfg.grid.method, cfg.grid.seed):
        kind, hp = cfg.method_spec(method)
        # Tasks that train on another task's data (XQuAD, MLQA on TyDiQA) share its checkpoint.
        checkpoint = cell_id(model, get_task(task).training_task, method, seed)
        cells.append(dict(cell_id=cell_id(model, task, method, seed), model=model, task=task,
                          method=method, method_type=kind, method_params=hp, seed=seed, checkpoint=checkpoint))
    return cells


def cell_id(model: str, task: str, method: str, seed: int) -> str:
    safe_model = model.replace("/", "--")
    return f"{safe_model}__{task}__{method}__s{seed}"
