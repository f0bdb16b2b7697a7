"""Every stage notebook runs top to bottom through nbclient, the code path of a JupyterLab kernel, with the
parameters `xlt lab` gives it on a small smoke run; and JupyterLab (jupytext) saves the .py sources unchanged."""
from __future__ import annotations

import asyncio
import inspect
import json
import re
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from xltlib.runner import keys
from xltlib.runner import lab as L
from xltlib.config.validate import load_config
from xltlib.runner.notebook import NOTEBOOK_DIR, STAGES
from xltlib.reporting.index import write_index
from xltlib.runner.run_dir import init_run

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["grid.method=[baseline]", "grid.seed=[1]", "grid.task=[xnli]"]


def execute(path: Path, run_dir: Path) -> nbformat.NotebookNode:
    """Run a notebook as JupyterLab would: a python3 kernel in the run folder, with `xlt lab`'s environment."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env = L.kernel_env()
    env.pop("TQDM_DISABLE", None)  # as in a user's shell (an earlier batch test may have set it here)
    NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(run_dir)}}) \
        .execute(env=env)
    nbformat.write(nb, path)  # as saving in JupyterLab does: the lab copy keeps its outputs
    return nb


@pytest.fixture(scope="module")
def lab_session(tmp_path_factory):
    """A fresh smoke run (one cell) whose every stage is run in order from its `xlt lab` notebook."""
    cfg = load_config(ROOT / "params" / "smoke.yaml", SMALL)
    run = init_run(cfg, tmp_path_factory.mktemp("nb") / "run", "params/smoke.yaml")
    notebooks = {}
    for nb in L.prepare(run):
        notebooks[nb.stage] = (nb, execute(nb.path, run.dir))
    return run, notebooks


def outputs(nb) -> str:
    return json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])


@pytest.mark.e2e
def test_every_stage_notebook_runs_top_to_bottom(lab_session):
    run, notebooks = lab_session
    assert set(notebooks) == set(STAGES)
    for stage, (nb, executed) in notebooks.items():
        code = [c for c in executed.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code), stage  # every cell ran, in order, no error stopped it
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells), stage
        assert nb.parameters["run_dir"] == str(run.dir)
        assert '"output_type": "error"' not in outputs(executed), stage


@pytest.mark.e2e
def test_stages_record_what_a_batch_run_records(lab_session):
    run, notebooks = lab_session
    cell = run.training_cells()[0]
    assert keys.cell_done(run, cell)  # a checkpoint with its chained key
    transfer, alignment = run.load_results("transfer"), run.load_results("alignment")
    assert set(transfer["language"]) == {"en", "de", "fr", "sw"}
    rates = transfer[transfer["metric"].str.match(r"(accuracy|score|robust_acc_|attack_success_rate_|synonym_subst_rate)")]
    assert len(rates) and rates["value"].between(0, 1).all()
    assert (transfer.loc[transfer["metric"].str.startswith("attack_queries_"), "value"] >= 1).all()
    assert (transfer["value"].notna() | (transfer["n"] == 0)).all()  # a mean over no attacked row is NaN, n = 0
    assert {"pretrained", "baseline"} <= set(alignment["method"])
    assert any("Does robust training align languages" in c.source for c in notebooks["analysis"][1].cells)
    assert "text/html" in outputs(notebooks["analysis"][1])  # the analysis tables were displayed


@pytest.mark.e2e
def test_rows_written_from_the_lab_are_marked_interactive(lab_session):
    run, _ = lab_session
    for kind in ("train", "transfer", "alignment"):
        rows = pd.read_parquet(run.path("results", kind))
        assert rows["interactive"].all(), kind
    meta = json.loads((run.checkpoint_dir(run.training_cells()[0].checkpoint) / "xlt_checkpoint.json").read_text())
    assert meta["interactive"] is True
    index = write_index(run).read_text()
    assert "written from an interactive session (xlt lab), not by a batch run" in index
    assert "results/transfer/" in index


@pytest.mark.e2e
def test_interactive_notebooks_show_progress_bars(lab_session):
    _, notebooks = lab_session
    train = outputs(notebooks["train"][1])
    # the kernel draws tqdm's bar under the cell (no TQDM_DISABLE); it clears itself at the end (leave=False)
    assert re.search(r"training steps: +\d+%\|.*\| \d+/\d+ \[", train) and "step/s" in train


def test_jupyterlab_saves_the_py_sources_inputs_only(tmp_path):
    """Open each source through jupytext's contents manager (what JupyterLab uses), run-like outputs and
    JupyterLab's cell metadata added, save: the .py file is byte-identical, with no outputs."""
    from jupytext import TextFileContentsManager

    shutil.copy(ROOT / "jupytext.toml", tmp_path / "jupytext.toml")
    for src in sorted(NOTEBOOK_DIR.glob("*.py")):
        shutil.copy(src, tmp_path / src.name)
    cm = TextFileContentsManager(root_dir=str(tmp_path))

    def call(x):
        return asyncio.run(x) if inspect.iscoroutine(x) else x

    sources = sorted(tmp_path.glob("*.py"))
    assert {p.stem for p in sources} == set(STAGES)
    for path in sources:
        before = path.read_text()
        nb = call(cm.get(path.name, type="notebook", content=True))["content"]
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), path.name
        for c in nb.cells:
            if c.cell_type == "code":
                c.outputs = [nbformat.v4.new_output("stream", name="stdout", text="OUTPUT LINE\n")]
                c.execution_count = 7
                c.metadata.update(scrolled=True, execution={"iopub.status.busy": "2026-11-27T00:00:00Z"})
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells.append(nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["scratch"], "collapsed": True}))
        call(cm.save(dict(type="notebook", content=nb), path.name))
        after = path.read_text()
        assert after == before + '\n# %% tags=["scratch"]\nx = 1\n', path.name
        assert "OUTPUT LINE" not in after
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in sources] + ["jupytext.toml"])


def test_the_repository_config_is_the_one_jupytext_finds_for_the_sources():
    from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file

    found = find_jupytext_configuration_file(str(NOTEBOOK_DIR))
    assert Path(found) == ROOT / "jupytext.toml"
    cfg = load_jupytext_configuration_file(found)
    assert cfg.notebook_metadata_filter == "-all" and cfg.cell_metadata_filter == "tags,-all"
    assert not any(cfg.formats or [])  # no pairing: an .ipynb with outputs never appears beside the sources
