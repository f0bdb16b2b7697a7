"""Execute one stage notebook with papermill and export its HTML: the unit of work of every executor.

:func:`execute_notebook` runs ``notebooks/<stage>.py`` with the injected parameters in a fresh kernel and
returns its status entry; it never raises for a failing notebook (the notebook is kept as
``*.failed.ipynb`` with its HTML) and writes nothing shared, so several can run at once on one run folder
(:mod:`xltlib.runner.executors`). Where the run keeps its status (``status.json``) is the driver's business.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import re
import resource
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import jupytext
import nbformat
import papermill as pm
from jupyter_client.manager import AsyncKernelManager
from nbconvert import HTMLExporter

from xltlib.core.progress import LiveProgress
from xltlib.core.timing import TIMINGS_FILE_ENV
from xltlib.runner.run_dir import Run

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"  # the repository's notebooks/ (editable install)
STAGES = ("data", "train", "transfer", "alignment", "analysis")
# executed notebook of each stage under DIR/notebooks/ (train: one per checkpoint, 02_train/<checkpoint>)
NOTEBOOK_NAMES = {"data": "01_data", "train": "02_train", "transfer": "03_transfer", "alignment": "04_alignment",
                  "analysis": "05_analysis"}
TIMINGS_DIR = "timings"  # DIR/timings/: what each kernel timed, and the machine's matmul peak (xltlib.runner.cost)
UNIT_STAGES = ("train", "transfer", "alignment")  # stages whose work splits into one unit per cell / checkpoint
logging.getLogger("papermill").setLevel(logging.WARNING)  # one line per stage is ours to print
# Kernels inherit these: reports show results, not progress bars or load reports.
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
             "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}


def timings_path(run_dir: str | Path, name: str) -> Path:
    """``DIR/timings/<name>.jsonl``: the parts the kernel of notebook ``name`` timed (xltlib.core.timing; xlt cost)."""
    return Path(run_dir) / TIMINGS_DIR / f"{name}.jsonl"


def notebook_name(stage: str, unit: str = "") -> str:
    """``04_alignment``; one unit's is ``02_train/<checkpoint>``, ``03_transfer/<cell_id>``, ``04_alignment/<checkpoint>``."""
    return f"{NOTEBOOK_NAMES[stage]}/{unit.replace(':', '__').replace('/', '--')}" if unit else NOTEBOOK_NAMES[stage]


def stage_parameters(run: Run, stage: str, unit: str = "", compute: bool = True) -> dict:
    """The parameters papermill injects into a stage notebook (``xlt lab`` rebuilds them the same way).

    train: ``cell_id`` (required); transfer / alignment: ``unit`` = one cell / checkpoint only, and
    ``compute=False`` = show the rows on disk, compute nothing (the summary page after distributed units).
    """
    if stage == "train":
        return dict(run_dir=str(run.dir), cell_id=unit)
    params = dict(run_dir=str(run.dir))
    if unit:
        params["unit"] = unit
    if not compute:
        params["compute"] = False
    return params


def source_notebook(stage: str):
    """The jupytext source ``notebooks/<stage>.py`` as a notebook node with the python3 kernel."""

    src = NOTEBOOK_DIR / f"{stage}.py"
    if not src.is_file():
        raise FileNotFoundError(f"stage notebook {src} is missing")
    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _source_notebook(stage: str, run_dir: Path) -> Path:
    """Convert ``notebooks/<stage>.py`` into an .ipynb papermill can run (atomically: workers share the file)."""

    out = run_dir / "notebooks" / "_src" / f"{stage}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{uuid.uuid4().hex}.{out.name}")
    jupytext.write(source_notebook(stage), tmp)
    os.replace(tmp, out)
    return out


def export_html(notebook: Path, target: Path, title: str) -> Path:
    """Self-contained HTML: code hidden, images embedded, no CDN needed to show content."""

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
    every stage kernel printed ipykernel's warning about unencrypted TCP. The sockets go to a fresh temporary
    folder, not the run folder: kernels of parallel units would otherwise race for the same socket names.

    Its shutdown sends no interrupt first. jupyter_client's ``shutdown_kernel`` sends SIGINT before the
    shutdown request; papermill shuts the kernel down as soon as the reply to its last ``kernel_info_request``
    arrives, while the kernel may still be inside that request's handler, where ipykernel turns SIGINT into a
    KeyboardInterrupt and logs ``ERROR | KeyboardInterrupt caught in kernel.`` into a successful run's log.
    Nothing is left to interrupt when papermill shuts down (the notebook has finished or failed); ipykernel
    handles the shutdown request on its control thread even while a cell runs, and a kernel that does not
    exit is still terminated, then killed, after ``shutdown_wait_time``. (:func:`execute_notebook` kills its
    kernels at once instead: every output has arrived by then, and a kernel that has imported torch took
    ``shutdown_wait_time / 2`` = 2.5 s to be terminated after the request, in every notebook.)
    Its socket folder goes with it."""

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = str(Path(tempfile.mkdtemp(prefix="xlt-kernel-")) / "kernel-ipc")

        async def _async_interrupt_kernel(self) -> None:
            if not self.shutting_down:  # only shutdown's own first interrupt is dropped; interrupt_kernel() still works
                await super()._async_interrupt_kernel()

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart:
                shutil.rmtree(Path(self.ip).parent, ignore_errors=True)

    return IPCKernelManager


def _children_cpu() -> float:
    """CPU seconds of this process's finished (reaped) child processes: the stage kernels."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def _kernel_env(timings: Path):
    """Point ``$XLT_TIMINGS_FILE`` at this notebook's timings file while its kernel starts (it inherits it)."""
    before = os.environ.get(TIMINGS_FILE_ENV)
    os.environ[TIMINGS_FILE_ENV] = str(timings)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TIMINGS_FILE_ENV, None)
        else:
            os.environ[TIMINGS_FILE_ENV] = before


def execute_notebook(run_dir: str | Path, stage: str, name: str, parameters: dict, label: str = "",
                     live: bool = True) -> dict:
    """Run one stage notebook; returns its status entry (``ok``, ``error``, ``seconds``, ...). Never raises for
    a failing notebook. ``live``: draw the kernel's progress on this terminal (one notebook at a time only)."""

    run_dir = Path(run_dir)
    out = run_dir / "notebooks" / f"{name}.ipynb"
    failed = out.with_suffix(".failed.ipynb")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in (out, failed):
        stale.unlink(missing_ok=True)
    timings = timings_path(run_dir, name)
    timings.unlink(missing_ok=True)
    t0, cpu0, kernels0 = time.perf_counter(), time.process_time(), _children_cpu()
    ok, error, convert_s = True, "", 0.0
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    try:
        src = _source_notebook(stage, run_dir)
        convert_s = time.perf_counter() - t0
        with LiveProgress(run_dir, label or name) if live else contextlib.nullcontext(), _kernel_env(timings):
            pm.execute_notebook(str(src), str(out), parameters=parameters,
                                kernel_name="python3", language="python", progress_bar=False,
                                cwd=str(run_dir), log_output=False, kernel_manager_class=_ipc_kernel_manager(),
                                shutdown_kernel="immediate")  # the outputs are in: no 2.5 s wait (above)
    except Exception as exc:  # noqa: BLE001 - any failure marks the stage failed
        ok, error = False, f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        if out.exists():
            os.replace(out, failed)
    nb = out if ok else failed
    t_html = time.perf_counter()
    if nb.exists():
        export_html(nb, run_dir / "report" / f"{name}.html", name)
    end = time.perf_counter()
    # where the time went (xlt cost): the conversion and HTML export, and CPU seconds of this process and of the
    # kernel it started (a busy shared machine inflates wall time, not these)
    return dict(stage=stage, ok=ok, error=error, seconds=round(end - t0, 1),
                finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                notebook=str(nb.relative_to(run_dir)), convert_s=round(convert_s, 3), html_s=round(end - t_html, 3),
                driver_cpu_s=round(time.process_time() - cpu0, 3), kernel_cpu_s=round(_children_cpu() - kernels0, 3))
