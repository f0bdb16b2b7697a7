"""``xlt lab RUN_DIR [STAGE]``: open a stage notebook of a run in JupyterLab with the parameters that run used.

The notebook is built the way papermill built it for ``xlt run``: the current jupytext source
``notebooks/<stage>.py`` plus an ``injected-parameters`` cell made by papermill's own parameterizer from the
parameters recorded in the executed notebook (``DIR/notebooks/<name>.ipynb``, its ``metadata.papermill``). It is
written to ``DIR/lab/<name>.ipynb`` (an edited copy is kept; ``--fresh`` rebuilds it), so the executed batch
notebooks stay as the run left them.

The server listens on 127.0.0.1 only, with a random token, never open. Its kernels get ``XLT_INTERACTIVE=1``:
every row or checkpoint they write carries ``interactive=True`` in its provenance columns
(:func:`xltlib.core.rows.provenance`), and ``report/index.html`` lists the result files holding such rows.
"""
from __future__ import annotations

import errno
import os
import secrets
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from xltlib.core.progress import PROGRESS_FILE_ENV
from xltlib.core.rows import INTERACTIVE_ENV
from xltlib.runner.notebook import NOTEBOOK_NAMES, QUIET_ENV, STAGES, notebook_name, source_notebook, stage_parameters
from xltlib.runner.run_dir import Run, RunLocked, run_lock

LAB_DIR = "lab"
HOST = "127.0.0.1"
BANNER_TAG = "xlt-lab"


class LabError(ValueError):
    """Bad ``xlt lab`` input: the message names what was expected or what is in the way."""


@dataclass
class LabNotebook:
    stage: str
    name: str  # as under DIR/notebooks/: 04_alignment, 02_train/<checkpoint>
    path: Path  # DIR/lab/<name>.ipynb
    parameters: dict
    origin: str  # where the parameters come from, in words
    kept: bool = False  # an existing (maybe edited) copy was left as it was


def open_run(run_dir: str | Path) -> Run:
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise LabError(f"{path} does not exist or is not a folder; expected a run folder made by `xlt run` "
                       f"(e.g. outputs/quick)")
    try:
        return Run.open(path)
    except FileNotFoundError as exc:
        raise LabError(str(exc)) from None


def stage_choices(run: Run) -> str:
    cks = [c.checkpoint for c in run.training_cells()]
    shown = ", ".join(cks[:4]) + (f", … ({len(cks)} in all)" if len(cks) > 4 else "")
    return (f"{NOTEBOOK_NAMES['data']}, {NOTEBOOK_NAMES['train']}/<checkpoint> ({shown or 'no training cells'}), "
            f"{NOTEBOOK_NAMES['transfer']}, {NOTEBOOK_NAMES['alignment']}, {NOTEBOOK_NAMES['analysis']} "
            f"(or the short names {', '.join(STAGES)})")


def resolve_stage(run: Run, stage: str) -> tuple[str, str]:
    """(stage, checkpoint) from ``04_alignment`` / ``alignment`` / ``train`` / ``02_train/<checkpoint>`` / a
    cell id or checkpoint name. ``train`` alone is the grid's first training cell."""
    text = stage.strip().strip("/")
    head, _, tail = text.partition("/")
    by_name = {v: k for k, v in NOTEBOOK_NAMES.items()}
    key = by_name.get(head) or (head if head in STAGES else None)
    cells = run.training_cells()
    if key is None:
        for c in run.cells():  # a cell id or checkpoint name on its own
            if text in (c.cell_id, c.checkpoint):
                return "train", c.checkpoint
        raise LabError(f"unknown stage '{stage}'; stages of {run.dir}: {stage_choices(run)}")
    if key != "train":
        if tail:
            raise LabError(f"stage '{stage}': only the train stage has one notebook per checkpoint; "
                           f"stages: {stage_choices(run)}")
        return key, ""
    if not cells:
        raise LabError(f"the grid of {run.dir} has no training cells")
    if not tail:
        return "train", cells[0].checkpoint
    for c in run.cells():
        if tail in (c.checkpoint, c.cell_id):
            return "train", c.checkpoint
    raise LabError(f"no training cell '{tail}' in the grid of {run.dir}; stages: {stage_choices(run)}")


def recorded_parameters(run: Run, name: str) -> tuple[dict | None, Path | None]:
    """The parameters papermill injected when ``xlt run`` executed notebook ``name`` (kept or failed)."""

    for nb_path in (run.path("notebooks", f"{name}.ipynb"), run.path("notebooks", f"{name}.failed.ipynb")):
        if nb_path.is_file():
            params = nbformat.read(nb_path, as_version=4).metadata.get("papermill", {}).get("parameters")
            if params is not None:
                return dict(params), nb_path
    return None, None


def _training_cell_id(run: Run, checkpoint: str) -> str:
    return next(c.cell_id for c in run.training_cells() if c.checkpoint == checkpoint)


def lab_parameters(run: Run, stage: str, checkpoint: str = "") -> tuple[dict, str]:
    """The injected parameters for the lab copy, and where they come from (in words, for the banner)."""
    name = notebook_name(stage, checkpoint)
    recorded, nb_path = recorded_parameters(run, name)
    expected = stage_parameters(run, stage, _training_cell_id(run, checkpoint) if stage == "train" else "")
    if recorded is None:
        return expected, "this stage has not run in this folder: the parameters `xlt run` would inject"
    # the values papermill recorded, in the order the driver passed them (the metadata stores keys sorted)
    params = {k: recorded.get(k, v) for k, v in expected.items()} | recorded
    origin = f"injected by papermill into `{nb_path.relative_to(run.dir)}`"
    was = params.get("run_dir", "")
    if not was or Path(was).resolve() != run.dir:  # the folder was moved or copied since it ran
        params["run_dir"] = str(run.dir)
        origin += f"; `run_dir` changed from `{was}` to this folder, where the run now is"
    return params, origin


def _banner(run: Run, nb: LabNotebook) -> str:
    src = f"notebooks/{nb.stage}.py"
    html = run.path("report", f"{nb.name}.html")
    batch = f" · what the batch run showed: `{html.relative_to(run.dir)}`" if html.exists() else ""
    extra = ("  \n**Running this notebook retrains this checkpoint** and replaces the one `xlt run` saved."
             if nb.stage == "train" else "")
    return (f"**Opened with `xlt lab`** for run `{run.dir}`. Parameters: {nb.origin} (the cell tagged "
            f"`injected-parameters`). Code: the current `{src}`; edits stay in this copy "
            f"(`{nb.path.relative_to(run.dir)}`){batch}.  \n"
            f"Rows and checkpoints written from this session carry `interactive=True` in their provenance "
            f"columns, so they never pass for batch results.{extra}")


def prepare_notebook(run: Run, stage: str, checkpoint: str = "", fresh: bool = False) -> LabNotebook:
    """Write ``DIR/lab/<name>.ipynb``: the stage source with the run's injected parameters (kept if it exists)."""

    name = notebook_name(stage, checkpoint)
    params, origin = lab_parameters(run, stage, checkpoint)
    out = LabNotebook(stage, name, run.path(LAB_DIR, f"{name}.ipynb"), params, origin)
    if out.path.exists() and not fresh:
        out.kept = True
        return out
    out.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.path.with_name(f".{out.path.stem}.tmp.ipynb")  # papermill's loader wants the .ipynb suffix
    nbformat.write(source_notebook(stage), tmp)
    # papermill's own loader and parameterizer: the same injected cell that `xlt run` executed
    nb = parameterize_notebook(load_notebook_node(str(tmp)), params, kernel_name="python3", language="python")
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(_banner(run, out), metadata={"tags": [BANNER_TAG]}))
    for cell in nb.cells:
        cell.setdefault("id", secrets.token_hex(4))  # nbformat 4.5 wants cell ids; the injected cell may lack one
        for key in ("papermill", "tags"):  # the loader's empty placeholders
            if not cell.metadata.get(key, True):
                del cell.metadata[key]
    nbformat.write(nb, tmp)
    os.replace(tmp, out.path)
    return out


def prepare(run: Run, stage: str | None = None, fresh: bool = False) -> list[LabNotebook]:
    """The notebook for ``stage``, or (no stage) one for every stage and training cell of the grid."""
    if stage:
        return [prepare_notebook(run, *resolve_stage(run, stage), fresh=fresh)]
    todo = [("data", "")] + [("train", c.checkpoint) for c in run.training_cells()] + \
        [(s, "") for s in ("transfer", "alignment", "analysis")]
    return [prepare_notebook(run, s, ck, fresh=fresh) for s, ck in todo]


def check_port(port: int) -> int:
    """A free port on 127.0.0.1 (``0``: any free one); an error naming what is in the way otherwise."""
    if not 0 <= port <= 65535:
        raise LabError(f"--port {port}: expected a port number 1-65535 (or 0 for any free port)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
        try:
            s.bind((HOST, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                what = "in use (another Jupyter server? `jupyter server list` shows yours)" \
                    if exc.errno == errno.EADDRINUSE else "not allowed for this user"
                raise LabError(f"port {port} on {HOST} is {what}; choose another with --port N, "
                               f"or --port 0 for any free port") from None
            raise
        return s.getsockname()[1]


def kernel_env(base: dict | None = None) -> dict:
    """The server's environment (its kernels inherit it): interactive marking, no batch-only settings."""
    env = dict(os.environ if base is None else base)
    env.pop(PROGRESS_FILE_ENV, None)  # no `xlt run` driver reads progress here; the notebook shows its own bars
    env[INTERACTIVE_ENV] = "1"
    for k, v in QUIET_ENV.items():
        if k != "TQDM_DISABLE":  # progress bars are welcome in an interactive notebook
            env.setdefault(k, v)
    return env


def server_command(run: Run, target: Path | None, port: int, open_browser: bool, allow_root: bool = False) -> list[str]:
    rel = target.relative_to(run.dir).as_posix() if target is not None else LAB_DIR
    return [sys.executable, "-m", "jupyterlab", f"--ServerApp.ip={HOST}", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", f"--ServerApp.root_dir={run.dir}",
            f"--ServerApp.open_browser={open_browser}", f"--LabApp.default_url=/lab/tree/{rel}"] + \
        (["--ServerApp.allow_root=True"] if allow_root else [])


def notes(run: Run) -> list[str]:
    """Things worth knowing before the notebook runs (printed, not fatal)."""
    out = []
    if not run.cfg.data_dir and not os.environ.get("XLT_DATA_DIR"):
        out.append("XLT_DATA_DIR is not set and the run's config names no data_dir: the notebook reads the "
                   "Hugging Face hub; set XLT_DATA_DIR as for `xlt run` to read the same data")
    try:
        with run_lock(run.dir):
            pass
    except RunLocked as exc:
        out.append(f"{exc}; notebooks run here may read artefacts that run is replacing")
    return out


def lab(run_dir: str | Path, stage: str | None = None, *, port: int = 8888, open_browser: bool = True,
        fresh: bool = False, dry_run: bool = False, allow_root: bool = False) -> int:
    """Prepare the notebook(s), then replace this process with JupyterLab (``dry_run``: print, do not start)."""
    run = open_run(run_dir)
    nbs = prepare(run, stage, fresh)
    port = check_port(port)
    if not dry_run and hasattr(os, "geteuid") and os.geteuid() == 0 and not allow_root:
        raise LabError("JupyterLab refuses to run as root; run `xlt lab` as a normal user, or pass --allow-root "
                       "(e.g. in a container)")
    target = nbs[0].path if stage else None
    token = secrets.token_urlsafe(24)
    env = kernel_env()
    env["JUPYTER_TOKEN"] = token  # in the environment, not the command line, where `ps` would show it
    for nb in nbs if stage else []:
        state = "kept (edited copy; --fresh rebuilds it)" if nb.kept else "written"
        print(f"{nb.path} {state}\n  parameters: {nb.parameters}\n  from: {nb.origin.replace('`', '')}")
    if not stage:
        print(f"{len(nbs)} stage notebooks in {run.path(LAB_DIR)} ({sum(nb.kept for nb in nbs)} kept as edited)")
    for note in notes(run):
        print(f"xlt lab: note: {note}", file=sys.stderr)
    rel = target.relative_to(run.dir).as_posix() if target is not None else LAB_DIR
    print(f"JupyterLab on http://{HOST}:{port}/lab/tree/{rel}?token={token}\n"
          f"  (loopback only; rows written from its kernels carry interactive=True)", flush=True)
    cmd = server_command(run, target, port, open_browser, allow_root)
    if dry_run:
        print("dry run, not started: " + " ".join(cmd))
        return 0
    sys.stderr.flush()
    os.execve(sys.executable, cmd, env)  # the server owns the terminal from here (Ctrl-C stops it)
    return 0  # pragma: no cover - not reached
