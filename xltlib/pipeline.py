"""Run the stage notebooks with papermill: grid cells, resume, failure marking, HTML export.

Stages run in order data -> train (one notebook per grid cell) -> transfer ->
alignment -> analysis. A train cell whose checkpoint exists with the same
fingerprint is skipped; transfer and alignment cache their rows per
checkpoint, so a rerun redoes only what is missing. A failed notebook is kept
as ``*.failed.ipynb`` (and its HTML) and the stage is marked failed in
``status.json``; nothing of it looks done. While a stage runs, a terminal shows the grid position and the
stage's progress bar (:mod:`xltlib.progress`); a pipe gets one line per finished stage.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import logging
import os
import re
import time
from pathlib import Path

from .config import RunConfig
from .progress import LiveProgress
from .results import write_json
from .run import Run, init_run, run_lock

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
STAGES = ("data", "train", "transfer", "alignment", "analysis")
# executed notebook of each stage under DIR/notebooks/ (train: one per checkpoint, 02_train/<checkpoint>)
NOTEBOOK_NAMES = {"data": "01_data", "train": "02_train", "transfer": "03_transfer", "alignment": "04_alignment",
                  "analysis": "05_analysis"}
log = logging.getLogger("xlt")
logging.getLogger("papermill").setLevel(logging.WARNING)  # one line per stage is ours to print
# Kernels inherit these: reports show results, not progress bars or load reports.
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
             "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}


class StageFailed(RuntimeError):
    pass


def notebook_name(stage: str, checkpoint: str = "") -> str:
    """``04_alignment``; a training cell's is ``02_train/<checkpoint>``."""
    return f"{NOTEBOOK_NAMES[stage]}/{checkpoint}" if stage == "train" else NOTEBOOK_NAMES[stage]


def stage_parameters(run: Run, stage: str, cell_id: str = "") -> dict:
    """The parameters papermill injects into a stage notebook (``xlt lab`` rebuilds them the same way)."""
    return dict(run_dir=str(run.dir), cell_id=cell_id) if stage == "train" else dict(run_dir=str(run.dir))


def source_notebook(stage: str):
    """The jupytext source ``notebooks/<stage>.py`` as a notebook node with the python3 kernel."""
    import jupytext

    src = NOTEBOOK_DIR / f"{stage}.py"
    if not src.is_file():
        raise FileNotFoundError(f"stage notebook {src} is missing")
    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _source_notebook(stage: str, run_dir: Path) -> Path:
    """Convert the jupytext source ``notebooks/<stage>.py`` into an .ipynb papermill can run."""
    import jupytext

    out = run_dir / "notebooks" / "_src" / f"{stage}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(source_notebook(stage), out)
    return out


def export_html(notebook: Path, target: Path, title: str) -> Path:
    """Self-contained HTML: code hidden, images embedded, no CDN needed to show content."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True)
    exporter.log.setLevel(logging.ERROR)  # one warning per page about figures without alt text
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4), resources={"metadata": {"name": title}})
    # The template loads require.js and MathJax from a CDN; the reports need neither (no widgets, no LaTeX).
    body = re.sub(r'<script[^>]*src="https?://[^"]*"[^>]*>\s*</script>', "", body)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body, encoding="utf-8")
    return target


def _ipc_kernel_manager():
    """nbclient's kernel manager on local IPC sockets: the kernel is on this machine anyway, and over TCP
    every stage kernel printed ipykernel's warning about unencrypted TCP."""
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"

    return IPCKernelManager


def execute_stage(run: Run, stage: str, name: str, parameters: dict, status: dict, position: str = "") -> bool:
    """Execute one notebook; returns True on success. Failures are recorded, not raised.

    ``position``: where this notebook is in the run (``[3/7]``), shown on the terminal and in the log line.
    """
    import papermill as pm

    out = run.path("notebooks", f"{name}.ipynb")
    failed = out.with_suffix(".failed.ipynb")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in (out, failed):
        stale.unlink(missing_ok=True)
    t0 = time.perf_counter()
    ok, error = True, ""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    label = f"{position} {name}".strip()
    try:
        with LiveProgress(run.dir, label):
            pm.execute_notebook(str(_source_notebook(stage, run.dir)), str(out), parameters=parameters,
                                kernel_name="python3", language="python", progress_bar=False,
                                cwd=str(run.dir), log_output=False, kernel_manager_class=_ipc_kernel_manager())
    except Exception as exc:  # noqa: BLE001 - any failure marks the stage failed
        ok, error = False, f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        if out.exists():
            os.replace(out, failed)
    nb = out if ok else failed
    if nb.exists():
        export_html(nb, run.path("report", f"{name}.html"), name)
    status[name] = dict(stage=stage, ok=ok, error=error, seconds=round(time.perf_counter() - t0, 1),
                        finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                        notebook=str(nb.relative_to(run.dir)))
    write_json(status, run.path("status.json"))
    log.info("%-46s %s (%.0f s)%s", label, "ok" if ok else "FAILED", status[name]["seconds"],
             f"  {error}" if error else "")
    return ok


def run_pipeline(cfg: RunConfig, run_dir: Path, params_file: str = "", stages: tuple[str, ...] = STAGES) -> Run:
    """Execute the stages for every grid cell under the run folder's lock; raise StageFailed at the end if
    anything failed."""
    with run_lock(Path(run_dir)):
        return _run_stages(init_run(cfg, run_dir, params_file), stages)


def _run_stages(run: Run, stages: tuple[str, ...]) -> Run:
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

    if "data" in stages and not execute_stage(run, "data", "01_data", stage_parameters(run, "data"), status,
                                              position()):
        failures.append("01_data")
        stages = ()  # nothing downstream can run without the split
    if "train" in stages:
        for cell in cells:
            name = notebook_name("train", cell["checkpoint"])
            if run.cell_done(cell):
                log.info("%-46s skipped (checkpoint exists)", f"{position()} {name}")
                status[name] = dict(stage="train", ok=True, skipped=True)
                continue
            if not execute_stage(run, "train", name, stage_parameters(run, "train", cell["cell_id"]), status,
                                 position()):
                failures.append(name)
    for stage in ("transfer", "alignment", "analysis"):
        if stage in stages and not execute_stage(run, stage, notebook_name(stage), stage_parameters(run, stage),
                                                 status, position()):
            failures.append(notebook_name(stage))
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
    items, train_items = [], []
    for name, st in sorted(status.items()):
        page = run.path("report", f"{name}.html")
        state = "skipped (already done)" if st.get("skipped") else ("ok" if st.get("ok") else f"FAILED: {st.get('error', '')}")
        link = f'<a href="{html.escape(os.path.relpath(page, run.path("report")))}">{html.escape(name)}</a>' \
            if page.exists() else html.escape(name)
        item = f"<li>{link} — {html.escape(state)} {st.get('seconds', '')}{' s' if 'seconds' in st else ''}</li>"
        (train_items if st.get("stage") == "train" else items).append(item)
    if train_items:
        failed = sum("FAILED" in i for i in train_items)
        items.insert(1 if items else 0, f"<li><details><summary>{len(train_items)} training cells"
                     f"{f', {failed} FAILED' if failed else ''}</summary><ul>{''.join(train_items)}</ul></details></li>")
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
