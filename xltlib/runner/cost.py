"""Where a run's wall time went: ``xlt cost DIR``, per stage, per notebook and per part, beside the machine's peak.

Three sources, all written by the run itself:

* ``status.json``: each notebook's wall time as the driver saw it, with its jupytext conversion and HTML export
  (``convert_s``, ``html_s``; runs made before those fields lump both into "conversion + HTML export");
* the executed notebook: papermill's start and end of the notebook and of every cell;
* ``timings/<notebook>.jsonl`` (:mod:`xltlib.core.timing`): the named parts the stage code timed (model loading,
  tokenisation, the training loop, scoring, encoding, each metric), placed in the cell that ran them, with their
  CPU seconds where known (the kernel's CPU before the first part: its start-up and imports);
* ``status.json``'s ``kernel_cpu_s`` / ``driver_cpu_s``: each notebook's CPU seconds in its kernel and in the
  driver. On a busy shared machine wall time swells with the other jobs; CPU seconds on one thread do not.

A notebook's wall time is split exactly into parts: ``notebook: ...`` rows are the overhead around the work
(conversion, kernel start, imports, papermill's bookkeeping between cells, kernel shutdown, HTML export),
``<stage>: ...`` rows the work, ``cell k: ...`` rows cell time no timer covers. Runs made before the timers
existed still split into cells, with the training loop taken from the training rows' own clock (``elapsed_s``).
"""
from __future__ import annotations

import datetime as _dt
import json
import re
import socket
from pathlib import Path

import nbformat
import pandas as pd
import torch

from xltlib.core.peak import cpu_peaks, format_peaks, matmul_peak
from xltlib.core.rows import write_json
from xltlib.core.timing import exclusive_seconds, read_timings
from xltlib.runner.notebook import STAGES, TIMINGS_DIR, timings_path
from xltlib.runner.run_dir import Run

MACHINE_FILE = "machine.json"  # DIR/timings/machine.json: the matmul peak, measured once per host
SHORT_CELL_S = 0.5  # untimed cells shorter than this are summed into one row per notebook
COLUMNS = ["stage", "notebook", "cell", "component", "seconds", "cpu_seconds"]


def _epoch(stamp: str | None) -> float | None:
    return pd.Timestamp(stamp).timestamp() if stamp else None


def _cell_label(k: int, source: str, imports: bool = True) -> str:
    """``cell 4: run = Run.open(run_dir) (+ imports)``: the executed notebook's k-th cell (from 0) by its first
    statement that is not an import, and whether it imports (``imports``: say so)."""
    lines = [ln.strip() for ln in source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    has_imports = any(re.match(r"(import|from)\s", ln) for ln in lines)
    body = [ln for ln in lines if not re.match(r"(import|from)\s|\)$|[A-Za-z_][\w, ]*\)?,?$", ln)]
    text = body[0] if body else (lines[0] if lines else "")
    text = text if len(text) <= 48 else text[:47] + "…"
    return f"cell {k}: {text}" + (" (+ imports)" if imports and has_imports else "")


def _unit(name: str) -> str:
    """The checkpoint / cell a unit notebook ran (``02_train/<checkpoint>`` -> ``<checkpoint>``)."""
    return name.split("/", 1)[1] if "/" in name else ""


def _loop_seconds(run: Run, checkpoint: str) -> float | None:
    """The training loop's own clock (the last ``elapsed_s`` of the training rows): runs made before the timers."""
    path = run.train_path(checkpoint)
    if not path.is_file():
        return None
    rows = pd.read_parquet(path, columns=["metric", "elapsed_s"])
    loop = rows.loc[rows["metric"] == "train_loss", "elapsed_s"]
    return float(loop.max()) if len(loop) else None


def notebook_costs(run: Run, name: str, entry: dict) -> list[dict]:
    """One notebook's wall time split into parts (rows of :data:`COLUMNS`); their seconds add up to its wall."""
    stage, unit = entry.get("stage", name.split("/")[0]), _unit(name)
    rows: list[dict] = []

    def add(component: str, seconds: float, cell: str = unit, cpu: float = float("nan")) -> None:
        if seconds > 0:
            rows.append(dict(stage=stage, notebook=name, cell=cell, component=component, seconds=float(seconds),
                             cpu_seconds=float("nan") if cpu is None else float(cpu)))

    path = run.dir / entry.get("notebook", "")
    if not entry.get("notebook") or not path.is_file():
        add("notebook: not executed here (no notebook)", entry.get("seconds") or 0.0)
        return rows
    nb = nbformat.read(path, as_version=4)
    pm = nb.metadata.get("papermill", {})
    nb_start, nb_end = _epoch(pm.get("start_time")), _epoch(pm.get("end_time"))
    parts = read_timings(timings_path(run.dir, name))
    if len(parts):
        parts = parts.assign(own=exclusive_seconds(parts), own_cpu=exclusive_seconds(parts, "cpu"))
    executed = [(k, c, _epoch(c.metadata.get("papermill", {}).get("start_time")),
                 _epoch(c.metadata.get("papermill", {}).get("end_time")))
                for k, c in enumerate(nb.cells)]
    executed = [(k, c, s, e) for k, c, s, e in executed if s is not None and e is not None]
    timed_run = bool(len(parts))  # made with the timers: the stage's first part marks the end of the imports
    if stage == "train" and not timed_run and executed:  # before the timers: the loop's own clock
        loop = _loop_seconds(run, unit)
        if loop is not None:
            k, _, s, e = max(executed, key=lambda x: x[3] - x[2])
            parts = pd.DataFrame([dict(id=1, parent=None, component="train: training loop", start=e - loop, end=e,
                                       seconds=loop, own=loop, own_cpu=float("nan"))])
    in_cells = 0.0
    short = 0.0
    first_code = timed_run
    for k, cell, s, e in executed:
        in_cells += e - s
        mine = parts[(parts["start"] >= s - 1e-3) & (parts["start"] <= e + 1e-3)] if len(parts) else parts
        is_params = "parameters" in cell.metadata.get("tags", []) or \
            "injected-parameters" in cell.metadata.get("tags", [])
        if not len(mine):
            if cell.cell_type == "code" and not is_params and e - s >= SHORT_CELL_S:
                add(_cell_label(k, cell.source), e - s)
            else:
                short += e - s
            if cell.cell_type == "code" and not is_params:
                first_code = False
            continue
        top = mine[mine["parent"].isna() | ~mine["parent"].isin(mine["id"])]
        if cell.cell_type == "code" and first_code:  # the stage's first call follows the notebook's imports
            first = top.loc[top["start"].idxmin()]  # its CPU before it: the kernel's start-up and the imports
            add("notebook: imports + opening the run", float(first["start"]) - s,
                cpu=pd.to_numeric(first.get("cpu_start"), errors="coerce"))
            untimed = (e - s) - (float(top["start"].min()) - s) - float(top["seconds"].sum())
        else:
            untimed = (e - s) - float(top["seconds"].sum())
        first_code = False
        for _, p in mine.iterrows():
            add(p["component"], p["own"], cell=p.get("unit") if isinstance(p.get("unit"), str) else unit,
                cpu=p["own_cpu"])
        if untimed >= SHORT_CELL_S:
            add(f"{_cell_label(k, cell.source, imports=False)}: untimed rest", untimed)
        else:
            short += max(untimed, 0.0)
    add(f"notebook: short untimed cells (< {SHORT_CELL_S:g} s each)", short)
    if executed and nb_start is not None and nb_end is not None:
        first_start, last_end = min(s for _, _, s, _ in executed), max(e for _, _, _, e in executed)
        add("notebook: kernel start", first_start - nb_start)
        add("notebook: kernel shutdown", nb_end - last_end)
        add("notebook: papermill between cells", (last_end - first_start) - in_cells)
    if "html_s" in entry:
        add("notebook: jupytext conversion", entry.get("convert_s", 0.0))
        add("notebook: HTML export", entry["html_s"])
    accounted = sum(r["seconds"] for r in rows)
    wall = entry.get("seconds")
    if wall is not None and not pd.isna(wall):  # NaN: a unit lost on a worker
        rest = wall - accounted
        add("notebook: jupytext conversion + HTML export" if "html_s" not in entry else "notebook: driver, other",
            rest if rest > 0 else 0.0)
    return rows


def _earlier_entry(run: Run, name: str, entry: dict) -> dict | None:
    """A unit this invocation skipped (its rows were on disk) but an earlier one executed: an entry for the notebook
    it left (``notebooks/<name>.ipynb``), without a driver wall time (its parts, from papermill's clock, are its
    wall: no conversion, HTML export or driver time); None when there is no such notebook. A resumable run's cost
    then covers every session that ran it."""
    path = Path("notebooks") / f"{name}.ipynb"
    if not (run.dir / path).is_file():
        return None
    return dict(stage=entry.get("stage", name.split("/")[0]), notebook=str(path), earlier=True)


def cost_table(run: Run) -> pd.DataFrame:
    """Every executed notebook of the run (``status.json``) split into parts: rows of :data:`COLUMNS`
    (``cpu_seconds``: where a part's CPU time is known), with the notebooks earlier invocations left for the units
    this one skipped (:func:`_earlier_entry`). ``attrs["notebooks"]``: per notebook its stage, wall seconds, CPU
    seconds (its kernel's and the driver's; NaN where not recorded) and whether an earlier invocation ran it."""
    sp = run.path("status.json")
    if not sp.is_file():
        raise FileNotFoundError(f"{sp} does not exist: the run has not executed any notebook yet")
    status = json.loads(sp.read_text())
    rows, totals = [], []
    for name, entry in status.items():
        if entry.get("skipped") and (entry := _earlier_entry(run, name, entry)) is None:
            continue
        parts = notebook_costs(run, name, entry)  # reads the notebook once
        rows += parts
        cpu = entry.get("kernel_cpu_s", float("nan")) + entry.get("driver_cpu_s", float("nan"))
        wall = entry.get("seconds", sum(p["seconds"] for p in parts) if entry.get("earlier") else float("nan"))
        totals.append(dict(notebook=name, stage=entry.get("stage", name.split("/")[0]),
                           seconds=wall, cpu_seconds=cpu,
                           earlier=bool(entry.get("earlier"))))
    df = pd.DataFrame(rows, columns=COLUMNS)
    order = {s: i for i, s in enumerate(STAGES)}
    df = df.sort_values(["stage", "notebook"], key=lambda c: c.map(order) if c.name == "stage" else c,
                        kind="stable").reset_index(drop=True)
    df.attrs["notebooks"] = pd.DataFrame(totals, columns=["notebook", "stage", "seconds", "cpu_seconds", "earlier"])
    return df


def by_stage(costs: pd.DataFrame) -> pd.DataFrame:
    """Per stage: notebooks, wall seconds, share of the run, the overhead (``notebook: ...``) per notebook, and
    CPU seconds (kernels and driver; NaN when a notebook's were not recorded)."""
    total = costs["seconds"].sum()
    g = costs.groupby("stage", sort=False)
    overhead = costs[costs["component"].str.startswith("notebook:")].groupby("stage", sort=False)["seconds"].sum()
    out = pd.DataFrame({"notebooks": g["notebook"].nunique(), "seconds": g["seconds"].sum()})
    out["share"] = out["seconds"] / total
    out["overhead_per_notebook"] = overhead.reindex(out.index).fillna(0.0) / out["notebooks"]
    nbs = costs.attrs.get("notebooks")
    if nbs is not None and len(nbs):
        known = nbs.groupby("stage", sort=False)["cpu_seconds"].agg(lambda v: v.sum() if v.notna().all() else None)
        out["cpu_seconds"] = pd.to_numeric(known.reindex(out.index), errors="coerce")
    return out.reset_index()


def by_component(costs: pd.DataFrame) -> pd.DataFrame:
    """Per stage and part: seconds summed over the stage's notebooks, share of the run, mean per notebook."""
    total = costs["seconds"].sum()
    n_nb = costs.groupby("stage", sort=False)["notebook"].nunique()
    g = costs.groupby(["stage", "component"], sort=False)
    out = pd.DataFrame({"seconds": g["seconds"].sum(), "cpu_seconds": g["cpu_seconds"].sum(min_count=1)}).reset_index()
    out["share"] = out["seconds"] / total
    out["per_notebook"] = out["seconds"] / out["stage"].map(n_nb)
    out["cpu_per_notebook"] = out["cpu_seconds"] / out["stage"].map(n_nb)
    return out.sort_values(["stage", "seconds"], ascending=[True, False], kind="stable",
                           key=lambda c: c.map({s: i for i, s in enumerate(STAGES)}) if c.name == "stage" else c)


def by_cell(costs: pd.DataFrame) -> pd.DataFrame:
    """Per notebook, grid cell and part, with the part's share of its notebook."""
    g = costs.groupby(["stage", "notebook", "cell", "component"], sort=False)
    out = pd.DataFrame({"seconds": g["seconds"].sum(), "cpu_seconds": g["cpu_seconds"].sum(min_count=1)}).reset_index()
    out["share"] = out["seconds"] / out["notebook"].map(costs.groupby("notebook")["seconds"].sum())
    return out


def machine_peak(run_dir: str | Path, remeasure: bool = False) -> dict:
    """This machine's 2048^2 matmul peak in the precision runs compute in (1 thread, every usable core; CUDA's bf16
    8192^2 when there is a GPU), measured once per host and kept in ``DIR/timings/machine.json``."""
    path = Path(run_dir) / TIMINGS_DIR / MACHINE_FILE
    host = socket.gethostname()
    if path.is_file() and not remeasure:
        cached = json.loads(path.read_text())
        if cached.get("host") == host and "dtype" in cached:  # no dtype: written before it was recorded
            return cached
    peaks = dict(host=host, torch=torch.__version__,
                 measured_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **cpu_peaks())
    if torch.cuda.is_available():
        peaks["cuda_bf16_tflops"] = matmul_peak("cuda") / 1e12
    try:
        write_json(peaks, path)
    except OSError:  # a read-only run folder (someone else's, an archive): measured again next time
        pass
    return peaks


def _table(df: pd.DataFrame) -> str:
    fmt = {c: (lambda v: f"{v:.1%}") for c in df.columns if c == "share"}
    fmt.update({c: (lambda v: "" if pd.isna(v) else f"{v:,.1f}") for c in df.columns
                if c in ("seconds", "per_notebook", "overhead_per_notebook", "cpu_seconds", "cpu_per_notebook")})
    return df.to_string(index=False, formatters=fmt)


def format_report(run: Run, costs: pd.DataFrame, peaks: dict, cells: bool = False) -> str:
    """The text ``xlt cost`` prints: the peak, then per stage, per part, and (``cells``) per notebook."""
    total = costs["seconds"].sum()
    peak = format_peaks(peaks)
    if "cuda_bf16_tflops" in peaks:
        peak += f"; CUDA bf16 8192² {peaks['cuda_bf16_tflops']:,.0f} TFLOP/s"
    nbs = costs.attrs.get("notebooks")
    earlier = int(nbs["earlier"].sum()) if nbs is not None and "earlier" in nbs else 0
    out = [f"{run.dir}: {costs['notebook'].nunique()} notebooks, {total:,.1f} s of notebook wall time"
           + (f" ({earlier} run by earlier invocations, costed from the notebooks they left: papermill's wall, no "
              "conversion or HTML export; a unit resumed from an epoch state shows its last part only)"
              if earlier else ""),
           f"machine {peaks['host']}: {peak} (measured {peaks['measured_at']}, {TIMINGS_DIR}/{MACHINE_FILE})", "",
           ("By stage (overhead = the notebook: parts below; cpu_seconds = its kernels' and the driver's CPU "
            "time, which a busy shared machine does not inflate)"), _table(by_stage(costs)), "",
           ("By part, summed over each stage's notebooks (cpu_seconds where known; imports: with the kernel's "
            "start-up)"), _table(by_component(costs))]
    if cells:
        out += ["", "By notebook and grid cell", _table(by_cell(costs))]
    return "\n".join(out)
