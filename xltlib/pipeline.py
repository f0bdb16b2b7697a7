"""Run the stage notebooks with papermill: grid cells, resume, failure marking, HTML export.

Stages run in order data -> train (one notebook per grid cell) -> transfer ->
alignment -> analysis. A train cell whose checkpoint exists with the same
fingerprint is skipped; transfer and alignment cache their rows per
checkpoint, so a rerun redoes only what is missing. A failed notebook is kept
as ``*.failed.ipynb`` (and its HTML) and the stage is marked failed in
``status.json``; nothing of it looks done.
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
from .results import write_json
from .run import Run, init_run, run_lock

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
STAGES = ("data", "train", "transfer", "alignment", "analysis")
log = logging.getLogger("xlt")
logging.getLogger("papermill").setLevel(logging.WARNING)  # one line per stage is ours to print
# Kernels inherit these: reports show results, not progress bars or load reports.
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
             "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}


class StageFailed(RuntimeError):
    pass


def _source_notebook(stage: str, run_dir: Path) -> Path:
    """Convert the jupytext source ``notebooks/<stage>.py`` into an .ipynb papermill can run."""
    import jupytext

    src = NOTEBOOK_DIR / f"{stage}.py"
    if not src.is_file():
        raise FileNotFoundError(f"stage notebook {src} is missing")
    out = run_dir / "notebooks" / "_src" / f"{stage}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(nb, out)
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


def execute_stage(run: Run, stage: str, name: str, parameters: dict, status: dict) -> bool:
    """Execute one notebook; returns True on success. Failures are recorded, not raised."""
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
    try:
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
    log.info("%-40s %s (%.0f s)%s", name, "ok" if ok else "FAILED", status[name]["seconds"],
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
    base = dict(run_dir=str(run.dir))
    failures = []
    if "data" in stages and not execute_stage(run, "data", "01_data", base, status):
        failures.append("01_data")
        stages = ()  # nothing downstream can run without the split
    if "train" in stages:
        for cell in run.training_cells():
            name = f"02_train/{cell['checkpoint']}"
            if run.cell_done(cell):
                log.info("%-40s skipped (checkpoint exists)", name)
                status[name] = dict(stage="train", ok=True, skipped=True)
                continue
            if not execute_stage(run, "train", name, dict(base, cell_id=cell["cell_id"]), status):
                failures.append(name)
    for stage, name in (("transfer", "03_transfer"), ("alignment", "04_alignment"), ("analysis", "05_analysis")):
        if stage in stages and not execute_stage(run, stage, name, base, status):
            failures.append(name)
    write_index(run, status)
    if failures:
        raise StageFailed(f"{len(failures)} stage notebook(s) failed: {', '.join(failures)}; "
                          f"see {run.path('status.json')} and the *.failed.ipynb notebooks")
    return run


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
    nav = (f'<nav style="font-family:sans-serif;margin:1em 2em;padding:0.5em 1em;border:1px solid #ccc">'
           f"<b>Run {html.escape(run.cfg.name)}</b> — stage reports:<ul>{''.join(items)}</ul></nav>")
    page = body.replace("<body", "<body", 1)
    idx = page.find(">", page.find("<body")) + 1 if "<body" in page else 0
    out = run.path("report", "index.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page[:idx] + nav + page[idx:], encoding="utf-8")
    return out
