"""`xlt lab` and live progress: the lab notebook carries the run's injected parameters (no server started), bad
input gives a clear error, and `xlt run` draws progress on a terminal and nothing in a pipe."""
from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import nbformat
import pytest

from xltlib.runner import lab as L
from xltlib.core import progress as P
from xltlib.cli import main
from xltlib.runner.notebook import source_notebook
from xltlib.core.rows import provenance
from xltlib.runner.run_dir import Run

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--set", "grid.method=[baseline]", "--set", "grid.seed=[1]", "--set", "grid.task=[xnli]"]
XLT = [sys.executable, "-m", "xltlib.cli"]
CHECKPOINT = "tiny-random__xnli__baseline__s1"


def run_on_terminal(cmd: list[str], timeout: float = 600) -> str:
    """Run ``cmd`` with stdout and stderr on a pseudo-terminal of 40 x 160 characters; everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, close_fds=True)
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        proc.wait(timeout=60)
        os.close(master)
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    return out.decode(errors="replace")


@pytest.fixture(scope="module")
def terminal_run(tmp_path_factory):
    """One small smoke run (1 cell) on a pseudo-terminal: (run folder, what the terminal showed)."""
    out = tmp_path_factory.mktemp("lab") / "run"
    shown = run_on_terminal(XLT + ["run", str(ROOT / "params" / "smoke.yaml"), "--out", str(out)] + SMALL)
    return out, shown


# ------------------------------------------------------------------ live progress
@pytest.mark.e2e
def test_terminal_shows_grid_position_and_progress_bars(terminal_run):
    _, shown = terminal_run
    frames = re.split(r"[\r\n]", shown)
    # the grid position of every notebook, in the bar while it runs and in its log line when it ends
    for k, name in enumerate(["01_data", f"02_train/{CHECKPOINT}", "03_transfer", "04_alignment", "05_analysis"], 1):
        assert any(f"[{k}/5] {name}" in f and " ok (" in f for f in frames), name
    # a bar with counts, rate and ETA inside each long stage, forwarded from the kernel
    for stage, what, unit in (("02_train", "training steps", "step"), ("03_transfer", "examples scored", "ex"),
                              ("04_alignment", "sentences encoded", "sent")):
        bars = [f for f in frames if f"] {stage}" in f and f"· {what}:" in f]
        assert any(re.search(rf"\d+%\|.*\| \d+/\d+ \[\d\d:\d\d<\d\d:\d\d, +[\d.?]+{unit}/s", f) for f in bars), \
            (stage, bars[:3])
    train_bars = [f for f in frames if "training steps:" in f]
    assert any(re.search(r"100%\|.*\| (\d+)/\1 ", f) for f in train_bars)  # it reached the last step


@pytest.mark.e2e
def test_a_pipe_gets_log_lines_only(tmp_path):
    """The cheapest `xlt run` that logs a finished notebook: the data stage alone. On a terminal the driver
    redraws the stage's bar (its elapsed time while the kernel starts and runs) with carriage returns."""
    out = subprocess.run(XLT + ["run", str(ROOT / "params" / "smoke.yaml"), "--out", str(tmp_path / "run"),
                                "--stages", "data"] + SMALL, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert re.search(r"\[1/1\] 01_data +ok \(\d+ s\)", text)
    assert "\r" not in text and "01_data:" not in text and "it/s" not in text  # no bar, not even a bare one
    assert not (tmp_path / "run" / P.PROGRESS_FILE_NAME).exists()


@pytest.mark.e2e
def test_batch_notebooks_show_results_not_bars(terminal_run):
    run_dir, _ = terminal_run
    nb = nbformat.read(run_dir / "notebooks" / "02_train" / f"{CHECKPOINT}.ipynb", as_version=4)
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "training steps" not in text and "step/s" not in text
    assert not (run_dir / P.PROGRESS_FILE_NAME).exists()  # removed when each stage ends


def test_kernel_side_writes_the_progress_file_and_draws_no_bar_when_disabled(tmp_path, monkeypatch, capsys):
    target = tmp_path / "progress.json"
    monkeypatch.setenv(P.PROGRESS_FILE_ENV, str(target))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    with P.progress(10, "examples scored", "ex") as bar:
        bar.update(4)
        bar.update(6)
    state = json.loads(target.read_text())
    assert (state["desc"], state["n"], state["total"], state["unit"]) == ("examples scored", 10, 10, "ex")
    assert state["done"] >= 10
    assert capsys.readouterr().err == ""  # no bar in a batch kernel


def test_driver_draws_from_the_file_on_a_terminal_only(tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv(P.PROGRESS_FILE_ENV, raising=False)
    screen = Terminal()
    with P.LiveProgress(tmp_path, "[3/7] 03_transfer", stream=screen, interval=0.05):
        assert os.environ[P.PROGRESS_FILE_ENV] == str(tmp_path / P.PROGRESS_FILE_NAME)
        with P.progress(8, "examples scored", "ex") as bar:
            bar.update(8)
        time.sleep(0.4)
    assert P.PROGRESS_FILE_ENV not in os.environ and not (tmp_path / P.PROGRESS_FILE_NAME).exists()
    assert re.search(r"\[3/7\] 03_transfer · examples scored: 100%\|.*\| 8/8 ", screen.getvalue())

    pipe = io.StringIO()
    with P.LiveProgress(tmp_path, "[3/7] 03_transfer", stream=pipe, interval=0.05):
        assert P.PROGRESS_FILE_ENV not in os.environ  # nobody reads it: the kernel writes nothing
        with P.progress(8, "examples scored", "ex") as bar:
            bar.update(8)
    assert pipe.getvalue() == "" and not (tmp_path / P.PROGRESS_FILE_NAME).exists()


# ------------------------------------------------------------------ xlt lab: parameters, no server
def injected(nb) -> str:
    cells = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    return cells[0].source


@pytest.mark.parametrize("stage,name", [("data", "01_data"), (f"02_train/{CHECKPOINT}", f"02_train/{CHECKPOINT}"),
                                        ("transfer", "03_transfer"), ("04_alignment", "04_alignment"),
                                        ("analysis", "05_analysis")])
@pytest.mark.e2e
def test_lab_notebook_has_the_parameters_papermill_injected(terminal_run, stage, name):
    run_dir, _ = terminal_run
    [nb] = L.prepare(Run.open(run_dir), stage, fresh=True)
    assert nb.path == run_dir / "lab" / f"{name}.ipynb"
    lab_nb = nbformat.read(nb.path, as_version=4)
    executed = nbformat.read(run_dir / "notebooks" / f"{name}.ipynb", as_version=4)
    assert injected(lab_nb) == injected(executed)
    assert nb.parameters == executed.metadata.papermill.parameters
    # the current source's code, in order, after a banner that says where the parameters come from
    src_code = [c.source for c in source_notebook(nb.stage).cells if c.cell_type == "code"]
    lab_code = [c.source for c in lab_nb.cells if c.cell_type == "code"
                and "injected-parameters" not in c.metadata.get("tags", [])]
    assert lab_code == src_code
    banner = lab_nb.cells[0]
    assert L.BANNER_TAG in banner.metadata.tags and f"notebooks/{name}.ipynb" in banner.source
    assert "interactive=True" in banner.source
    assert lab_nb.metadata.kernelspec.name == "python3"


@pytest.mark.e2e
def test_rerunning_the_lab_alignment_notebook_reproduces_the_runs_tables(terminal_run):
    """The `Done when` of the issue: `xlt lab RUN 04_alignment`, Run All, the same tables as the batch run."""
    from nbclient import NotebookClient

    run_dir, _ = terminal_run
    [nb] = L.prepare(Run.open(run_dir), "04_alignment", fresh=True)
    lab_nb = nbformat.read(nb.path, as_version=4)
    env = L.kernel_env()
    env.pop("TQDM_DISABLE", None)
    NotebookClient(lab_nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(run_dir)}}) \
        .execute(env=env)
    batch = nbformat.read(run_dir / "notebooks" / "04_alignment.ipynb", as_version=4)

    def tables(notebook):
        return [o["data"]["text/html"] for c in notebook.cells if c.cell_type == "code" for o in c.outputs
                if "text/html" in o.get("data", {})]

    assert tables(batch) and tables(lab_nb) == tables(batch)


@pytest.mark.e2e
def test_train_alone_is_the_first_training_cell(terminal_run):
    run = Run.open(terminal_run[0])
    assert L.resolve_stage(run, "train") == ("train", CHECKPOINT)
    assert L.resolve_stage(run, CHECKPOINT) == ("train", CHECKPOINT)
    assert L.resolve_stage(run, "04_alignment") == ("alignment", "")


@pytest.mark.e2e
def test_cli_dry_run_prints_a_loopback_token_url_and_starts_nothing(terminal_run, capsys):
    run_dir, _ = terminal_run
    assert main(["lab", str(run_dir), "04_alignment", "--dry-run", "--port", "0", "--fresh"]) == 0
    out = capsys.readouterr().out
    url = re.search(r"http://127\.0\.0\.1:(\d+)/lab/tree/lab/04_alignment\.ipynb\?token=(\S+)", out)
    assert url and len(url.group(2)) >= 24
    cmd = out.split("dry run, not started: ")[1]
    assert "--ServerApp.ip=127.0.0.1" in cmd and f"--ServerApp.root_dir={run_dir}" in cmd
    assert url.group(2) not in cmd  # the token travels in the environment, not on the command line
    assert "parameters: {'run_dir': '" + str(run_dir) + "'}" in out


@pytest.mark.e2e
def test_an_edited_lab_notebook_is_kept_unless_fresh(terminal_run):
    run = Run.open(terminal_run[0])
    [nb] = L.prepare(run, "transfer", fresh=True)
    nb.path.write_text(nb.path.read_text().replace("Zero-shot transfer", "Zero-shot transfer (my edit)"))
    [again] = L.prepare(run, "transfer")
    assert again.kept and "(my edit)" in again.path.read_text()
    [fresh] = L.prepare(run, "transfer", fresh=True)
    assert not fresh.kept and "(my edit)" not in fresh.path.read_text()


@pytest.mark.e2e
def test_a_moved_run_folder_points_the_notebook_at_its_new_place(terminal_run, tmp_path):
    src, _ = terminal_run
    moved = tmp_path / "moved"
    shutil.copytree(src, moved, ignore=shutil.ignore_patterns("checkpoints", "lab"))
    [nb] = L.prepare(Run.open(moved), "alignment", fresh=True)
    assert nb.parameters["run_dir"] == str(moved.resolve())
    assert f'run_dir = "{moved.resolve()}"' in injected(nbformat.read(nb.path, as_version=4))
    assert "changed from" in nb.origin and str(src) in nb.origin


@pytest.mark.e2e
def test_a_stage_that_never_ran_gets_the_parameters_xlt_run_would_inject(terminal_run, tmp_path):
    src, _ = terminal_run
    fresh = tmp_path / "fresh"
    shutil.copytree(src, fresh, ignore=shutil.ignore_patterns("checkpoints", "lab", "notebooks"))
    [nb] = L.prepare(Run.open(fresh), f"02_train/{CHECKPOINT}")
    assert nb.parameters == dict(run_dir=str(fresh.resolve()), cell_id=CHECKPOINT)
    assert "has not run" in nb.origin


def test_kernels_are_marked_interactive_and_keep_their_bars(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")  # a user's own setting is theirs to keep
    env = L.kernel_env({"PATH": "/bin", P.PROGRESS_FILE_ENV: "/x/.progress.json"})
    assert env["XLT_INTERACTIVE"] == "1" and P.PROGRESS_FILE_ENV not in env and "TQDM_DISABLE" not in env
    assert env["TRANSFORMERS_VERBOSITY"] == "error"
    monkeypatch.setenv("XLT_INTERACTIVE", "1")
    assert provenance("p.yaml")["interactive"] is True
    monkeypatch.delenv("XLT_INTERACTIVE")
    assert provenance("p.yaml")["interactive"] is False


# ------------------------------------------------------------------ bad input
def test_not_a_run_folder(tmp_path, capsys):
    assert main(["lab", str(tmp_path), "--dry-run"]) == 2
    assert "is not an xlt run folder (no config.yaml)" in capsys.readouterr().err
    assert main(["lab", str(tmp_path / "missing"), "--dry-run"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.e2e
def test_unknown_stage_names_the_stages(terminal_run, capsys):
    run_dir, _ = terminal_run
    assert main(["lab", str(run_dir), "plots", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown stage 'plots'" in err and "04_alignment" in err and CHECKPOINT in err
    assert main(["lab", str(run_dir), "train/nope", "--dry-run"]) == 2
    assert "no training cell 'nope'" in capsys.readouterr().err


@pytest.mark.e2e
def test_port_in_use_names_the_port(terminal_run, capsys):
    run_dir, _ = terminal_run
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["lab", str(run_dir), "alignment", "--dry-run", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is in use" in err and "--port" in err
