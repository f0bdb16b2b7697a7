"""The cells of a run: every (model, task, method, seed) of the grid, with the id of the checkpoint it evaluates."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from xltlib.config.schema import RunConfig
from xltlib.data.tasks import get_task


@dataclass(frozen=True)
class Cell:
    """One (model, task, method, seed) of the grid and the checkpoint it evaluates."""

    cell_id: str  # model__task__method__s<seed>: folder names and resume
    model: str
    task: str
    method: str  # the grid's method entry: a name under ``methods`` or an objective type
    method_type: str  # the objective the entry trains with
    # the objective's hyperparameters as read from the params. A dict because the cache keys hash it as one
    # (its values may be lists); left out of the hash, kept in equality. Read it, never change it.
    method_params: dict = field(hash=False)
    seed: int
    checkpoint: str  # the checkpoint it evaluates (XQuAD and MLQA cells share TyDiQA's)


def expand_grid(cfg: RunConfig) -> list[Cell]:
    """Every (model, task, method, seed) cell but those ``grid.exclude`` leaves out, a task at its
    ``grid.task_seeds`` when it has them, with a stable id used for folders and resume, and the id of the checkpoint
    it evaluates. Seed by seed (every task and method of the first seed, then the next): a study that spans
    sessions has whole replicates early, and each seed's methods train close together in time, on the same
    machine as far as one session goes (its precision and speed), so a seed-matched method difference does not
    carry a machine's difference."""

    cells = []
    for model, task, method in itertools.product(cfg.grid.model, cfg.grid.task, cfg.grid_methods()):
        if cfg.split_entry(method)[0] in cfg.grid.exclude.get(task, ()):
            continue
        kind, hp = cfg.method_spec(method)
        for seed in cfg.grid.task_seeds.get(task, cfg.grid.seed):
            # Tasks that train on another task's data (XQuAD, MLQA on TyDiQA) share its checkpoint.
            checkpoint = cell_id(model, get_task(task).training_task, method, seed)
            cells.append(Cell(cell_id=cell_id(model, task, method, seed), model=model, task=task, method=method,
                              method_type=kind, method_params=hp, seed=seed, checkpoint=checkpoint))
    seeds = list(dict.fromkeys(c.seed for c in cells))
    return sorted(cells, key=lambda c: seeds.index(c.seed))  # stable: tasks and methods keep the params' order


def cell_id(model: str, task: str, method: str, seed: int) -> str:
    safe_model = model.replace("/", "--")
    return f"{safe_model}__{task}__{method}__s{seed}"
