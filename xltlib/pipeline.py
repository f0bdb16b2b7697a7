"""Run the stage notebooks with papermill: grid cells, resume, failure marking, HTML export.

Stages run in order data -> train (one notebook per grid cell) -> transfer ->
alignment -> analysis, the units of work through the configured executor (:mod:`xltlib.executors`:
``local`` or ``ray``). A train cell whose checkpoint exists with the same
fingerprint is skipped; transfer and alignment cache their rows per
checkpoint, so a rerun redoes only what is missing, whichever executor ran before. A failed notebook is kept
as ``*.failed.ipynb`` (and its HTML) and the stage is marked failed in
``status.json``; nothing of it looks done. While a stage runs, a terminal shows the grid position and the
stage's progress bar (:mod:`xltlib.progress`); a pipe gets one line per finished stage.
"""
from __future__ import annotations

import html
import json
import logging
import os
import socket
from pathlib import Path

from .config import RunConfig
from .execute import STAGES, execute_notebook, notebook_name, stage_parameters
from .executors import Unit, make_executor
from .results import write_json
from .run import Run, init_run, run_lock

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
    if "train" in stages:
        todo = []
        for cell in cells:
            name = notebook_name("train", cell["checkpoint"])
            if run.cell_done(cell):
                log.info("%-46s skipped (checkpoint exists)", f"{position()} {name}")
                status[name] = dict(stage="train", ok=True, skipped=True)
                continue
            todo.append(Unit("train", name, stage_parameters(run, "train", cell["cell_id"])))
        executor.run(run.dir, todo, record, position)
    if executor.splits_stages:  # one unit per cell / checkpoint, then each stage's page from the rows on disk
        units = [Unit("transfer", notebook_name("transfer", c["cell_id"]), stage_parameters(run, "transfer", c["cell_id"]))
                 for c in run.finished_cells() if "transfer" in stages and not run.transfer_done(c)]
        units += [Unit("alignment", notebook_name("alignment", ck["checkpoint"]),
                       stage_parameters(run, "alignment", ck["checkpoint"]))
                  for ck in run.alignment_checkpoints() if "alignment" in stages and not run.alignment_done(ck)]
        total += len(units)
        executor.run(run.dir, units, record, position)
    for stage in ("transfer", "alignment", "analysis"):
        if stage in stages:
            run_here(stage, compute=not (executor.splits_stages and stage != "analysis"))
    write_index(run, status)
    if failures:
        raise StageFailed(f"{len(failures)} stage notebook(s) failed: {', '.join(failures)}; "
                          f"see {run.path('status.json')} and the *.failed.ipynb notebooks")
    return run


def interactive_results(run: Run) -> list[str]:
    """Result files with rows written from an interactive session (``xlt lab`` marks them ``interactive``)."""
    import pandas as pd

    found = []
    for f in sorted(run.path("results").glob("*/*.parquet")):
        try:
            flags = pd.read_parquet(f, columns=["interactive"])["interactive"]
        except (KeyError, ValueError):  # written before the column existed: a batch row
            continue
        if flags.fillna(False).astype(bool).any():
            found.append(str(f.relative_to(run.dir)))
    return found


def write_index(run: Run, status: dict | None = None) -> Path:
    """``report/index.html``: the analysis page first, then links to every stage report."""
    if status is None:
        sp = run.path("status.json")
        status = json.loads(sp.read_text()) if sp.exists() else {}
    analysis = run.path("report", "05_analysis.html")
    items, unit_items = [], {}
    for name, st in sorted(status.items()):
        page = run.path("report", f"{name}.html")
        state = "skipped (already done)" if st.get("skipped") else ("ok" if st.get("ok") else f"FAILED: {st.get('error', '')}")
        link = f'<a href="{html.escape(os.path.relpath(page, run.path("report")))}">{html.escape(name)}</a>' \
            if page.exists() else html.escape(name)
        where = f" on {html.escape(st['host'])}" if st.get("host") else ""
        item = f"<li>{link} — {html.escape(state)} {st.get('seconds', '')}{' s' if 'seconds' in st else ''}{where}</li>"
        # one notebook per cell / checkpoint (training; transfer and alignment under a distributed executor)
        (unit_items.setdefault(st.get("stage"), []) if "/" in name else items).append(item)
    at = 1 if items else 0
    for stage, what in (("train", "training cells"), ("transfer", "transfer units (one per cell)"),
                        ("alignment", "alignment units (one per checkpoint)")):
        group = unit_items.get(stage, [])
        if group:
            failed = sum("FAILED" in i for i in group)
            items.insert(at, f"<li><details><summary>{len(group)} {what}{f', {failed} FAILED' if failed else ''}"
                             f"</summary><ul>{''.join(group)}</ul></details></li>")
            at += 1
    body = analysis.read_text(encoding="utf-8") if analysis.exists() else "<p>The analysis stage has not run.</p>"
    lab = interactive_results(run)
    warn = (f'<p style="color:#a00"><b>{len(lab)} result file(s) hold rows written from an interactive session '
            f"(xlt lab), not by a batch run</b> (column <code>interactive</code>): "
            f"{html.escape(', '.join(lab))}</p>") if lab else ""
    nav = (f'<nav style="font-family:sans-serif;margin:1em 2em;padding:0.5em 1em;border:1px solid #ccc">'
           f"<b>Run {html.escape(run.cfg.name)}</b> — stage reports:<ul>{''.join(items)}</ul>{warn}</nav>")
    page = body.replace("<body", "<body", 1)
    idx = page.find(">", page.find("<body")) + 1 if "<body" in page else 0
    out = run.path("report", "index.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page[:idx] + nav + page[idx:], encoding="utf-8")
    return out
