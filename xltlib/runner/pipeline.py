"""Run the stage notebooks with papermill: grid cells, resume, failure marking, HTML export.

Stages run in order data -> train (one notebook per grid cell) -> transfer ->
alignment -> analysis, the units of work through the configured executor (:mod:`xltlib.runner.executors`:
``local`` or ``ray``). A train cell whose checkpoint exists with the same
fingerprint is skipped; transfer and alignment cache their rows per
checkpoint, so a rerun redoes only what is missing, whichever executor ran before. A failed notebook is kept
as ``*.failed.ipynb`` (and its HTML) and the stage is marked failed in
``status.json``; nothing of it looks done. While a stage runs, a terminal shows the grid position and the
stage's progress bar (:mod:`xltlib.core.progress`); a pipe gets one line per finished stage."""
from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

from xltlib.config.schema import RunConfig
from xltlib.core.rows import write_json
from xltlib.reporting.index import write_index
from xltlib.runner import keys
from xltlib.runner.executors import Unit, make_executor
from xltlib.runner.notebook import STAGES, execute_notebook, notebook_name, stage_parameters
from xltlib.runner.run_dir import Run, init_run, run_lock

log = logging.getLogger("xlt")


class StageFailed(RuntimeError):
    pass


def execute_stage(run: Run, stage: str, name: str, parameters: dict, status: dict, position: str = "") -> bool:
    """Execute one notebook here and record it in ``status.json``; returns True on success."""
    label = f"{position} {name}".strip()
    entry = execute_notebook(run.dir, stage, name, parameters, label=label)
    record_entry(run, status, name, entry, label)
    return entry["ok"]


def record_entry(run: Run, status: dict, name: str, entry: dict, label: str) -> None:
    """One finished notebook: its status entry in ``status.json`` and one log line."""
    status[name] = entry
    write_json(status, run.path("status.json"))
    where = f" on {entry['host']}" if entry.get("host") and entry["host"] != socket.gethostname() else ""
    log.info("%-46s %s (%.0f s)%s%s", label, "ok" if entry["ok"] else "FAILED", entry.get("seconds", float("nan")),
             where, f"  {entry['error']}" if entry.get("error") else "")


def run_pipeline(cfg: RunConfig, run_dir: Path, params_file: str = "", stages: tuple[str, ...] = STAGES) -> Run:
    """Execute the stages for every grid cell under the run folder's lock with the configured executor;
    raise StageFailed at the end if anything failed."""
    executor = make_executor(cfg.executor)  # an executor that cannot run here fails before anything is written
    try:
        with run_lock(Path(run_dir)):
            return _run_stages(init_run(cfg, run_dir, params_file), stages, executor)
    finally:
        executor.close()


def transfer_unit(run: Run, cell) -> Unit:
    return Unit("transfer", notebook_name("transfer", cell.cell_id), stage_parameters(run, "transfer", cell.cell_id))


def alignment_units(run: Run, checkpoints: list[keys.AlignmentCheckpoint]) -> list[Unit]:
    """One alignment unit per checkpoint whose rows are not on disk under its current key."""
    return [Unit("alignment", notebook_name("alignment", ck.checkpoint), stage_parameters(run, "alignment", ck.checkpoint))
            for ck in checkpoints if not keys.alignment_done(run, ck)]


def evaluation_units(run: Run, cell, stages: tuple[str, ...]) -> list[Unit]:
    """What ``executor.evaluate_as_trained`` runs after a training cell: the transfer unit of every grid cell that
    scores its checkpoint and its alignment unit, those whose rows are not on disk yet."""
    units = [transfer_unit(run, c) for c in run.cells()
             if "transfer" in stages and c.checkpoint == cell.checkpoint and not keys.transfer_done(run, c)]
    if "alignment" in stages and run.cfg.alignment.datasets:
        units += alignment_units(run, [keys.alignment_checkpoint(run, cell)])
    return units


def record_cached_units(run: Run, stages: tuple[str, ...], status: dict) -> None:
    """The per-checkpoint transfer and alignment units not run because their rows are on disk, marked skipped in
    ``status`` as skipped training units are, so that the index lists them and ``xlt cost`` counts the notebooks
    earlier invocations (or the run the rows were copied from) left; an earlier successful entry, with its measured
    time, is kept, a failed one is replaced (its rows have come since)."""
    names = []
    if "transfer" in stages:
        names += [("transfer", notebook_name("transfer", c.cell_id)) for c in keys.scored_cells(run)
                  if keys.transfer_done(run, c)]
    if "alignment" in stages and run.cfg.alignment.datasets:
        names += [("alignment", notebook_name("alignment", ck.checkpoint)) for ck in keys.alignment_checkpoints(run)
                  if keys.alignment_done(run, ck)]
    for stage, name in names:
        if not status.get(name, {}).get("ok"):
            status[name] = dict(stage=stage, ok=True, skipped=True)


def _run_stages(run: Run, stages: tuple[str, ...], executor) -> Run:
    sp = run.path("status.json")
    status: dict = json.loads(sp.read_text()) if sp.exists() else {}
    failures = []
    cells = run.training_cells() if "train" in stages else []
    total = sum(s in stages for s in STAGES if s != "train") + len(cells)
    done = 0

    def position() -> str:  # the grid position: notebook k of n in this run
        nonlocal done
        done += 1
        return f"[{done}/{total}]"

    def record(unit: Unit, entry: dict, label: str) -> None:
        record_entry(run, status, unit.name, entry, label)
        if not entry["ok"]:
            failures.append(unit.name)

    def run_here(stage: str, **kw) -> bool:
        name = notebook_name(stage)
        ok = execute_stage(run, stage, name, stage_parameters(run, stage, **kw), status, position())
        if not ok:
            failures.append(name)
        return ok

    if "data" in stages and not run_here("data"):
        stages = ()  # nothing downstream can run without the split
    chained = run.cfg.executor.evaluate_as_trained and executor.chains
    if run.cfg.executor.evaluate_as_trained and not executor.chains:
        log.warning("executor.evaluate_as_trained: the %s executor runs every unit as its own task, so transfer and "
                    "alignment run after all training, as without it", executor.name)
    split = executor.splits_stages or chained
    ran: set[str] = set()  # units run in a chain: not run a second time below
    if "train" in stages:
        todo = []
        if chained and "alignment" in stages:  # the pre-trained encoder's, first
            todo += alignment_units(run, [ck for ck in keys.alignment_checkpoints(run) if ck.path is None])
            total += len(todo)
        for cell in cells:
            name = notebook_name("train", cell.checkpoint)
            train = []
            if keys.evaluated(run, cell):
                log.info("%-46s skipped (every row of it is on disk)", f"{position()} {name}")
                status[name] = dict(stage="train", ok=True, skipped=True)
                continue
            if keys.cell_done(run, cell):
                log.info("%-46s skipped (checkpoint exists)", f"{position()} {name}")
                status[name] = dict(stage="train", ok=True, skipped=True)
            else:
                if keys.trained_rows(run, cell):  # its folder is gone and some of its rows are not on disk
                    log.info("%s: its checkpoint folder is gone and not every row of it is on disk under the current "
                             "keys (a setting of the transfer or alignment stage changed, or a run was cut off "
                             "before them): training it again", name)
                train = [Unit("train", name, stage_parameters(run, "train", cell.cell_id))]
            if chained:  # its transfer and alignment units follow it in one worker
                chain = train + evaluation_units(run, cell, stages)
                total += len(chain) - len(train)
                ran.update(u.name for u in chain)
                if chain:
                    todo.append(Unit(chain[0].stage, chain[0].name, chain[0].parameters, then=tuple(chain[1:])))
            else:
                todo += train
        executor.run(run.dir, todo, record, position)
    if split:  # one unit per cell / checkpoint, then each stage's page from the rows on disk
        units = [transfer_unit(run, c) for c in keys.finished_cells(run)
                 if "transfer" in stages and not keys.transfer_done(run, c)]
        if "alignment" in stages:
            units += alignment_units(run, keys.alignment_checkpoints(run))
        units = [u for u in units if u.name not in ran]
        total += len(units)
        executor.run(run.dir, units, record, position)
        record_cached_units(run, stages, status)
    for stage in ("transfer", "alignment", "analysis"):
        if stage in stages:
            run_here(stage, compute=not (split and stage != "analysis"))
    write_index(run, status)
    if failures:
        raise StageFailed(f"{len(failures)} stage notebook(s) failed: {', '.join(failures)}; "
                          f"see {run.path('status.json')} and the *.failed.ipynb notebooks")
    return run
