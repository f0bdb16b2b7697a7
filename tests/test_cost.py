"""Where a run's time went: the timed parts (xltlib.core.timing) and `xlt cost` (xltlib.runner.cost)."""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch

from xltlib.cli import main
from xltlib.config.validate import load_config
from xltlib.core import devices
from xltlib.core.peak import compute_dtype, matmul_peak
from xltlib.core.timing import TIMINGS_FILE_ENV, exclusive_seconds, read_timings, record, timed
from xltlib.runner import notebook as N
from xltlib.runner.cost import MACHINE_FILE, by_component, by_stage, cost_table, format_report, notebook_costs
from xltlib.runner.run_dir import Run

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "smoke.yaml"
T0 = 1_800_000_000.0  # an epoch second: the synthetic notebook's start


def _iso(t: float) -> str:
    return pd.Timestamp(t, unit="s", tz="UTC").isoformat()


# ----------------------------------------------------------------------------- timing
def test_timed_parts_nest_inherit_labels_and_split_exclusively(tmp_path, monkeypatch):
    path = tmp_path / "t.jsonl"
    monkeypatch.setenv(TIMINGS_FILE_ENV, str(path))

    @timed("outer")
    def work():
        with timed("inner", unit="cell-a"):
            time.sleep(0.05)
            record("measured elsewhere", 0.02)
        time.sleep(0.02)

    work()
    parts = read_timings(path).set_index("component")
    assert list(parts.index) == ["measured elsewhere", "inner", "outer"]  # written as each part ends
    assert parts.loc["inner", "parent"] == parts.loc["outer", "id"]
    assert parts.loc["measured elsewhere", "parent"] == parts.loc["inner", "id"]
    assert parts.loc["measured elsewhere", "unit"] == "cell-a"  # inherited from the enclosing block
    assert pd.isna(parts.loc["outer", "unit"])
    own = exclusive_seconds(parts.reset_index()).set_axis(parts.index)
    assert own["measured elsewhere"] == pytest.approx(0.02)
    assert own["inner"] == pytest.approx(parts.loc["inner", "seconds"] - 0.02)
    assert own["outer"] == pytest.approx(parts.loc["outer", "seconds"] - parts.loc["inner", "seconds"])
    assert 0.015 < own["outer"] < 0.5 and own.sum() == pytest.approx(parts.loc["outer", "seconds"])
    # CPU: known for timed blocks (a sleep takes little), unknown for a part measured elsewhere and so for its parent
    assert parts.loc["outer", "cpu"] < parts.loc["outer", "seconds"] and parts.loc["outer", "cpu_start"] > 0
    cpu = exclusive_seconds(parts.reset_index(), "cpu").set_axis(parts.index)
    assert pd.isna(cpu["measured elsewhere"]) and pd.isna(cpu["inner"]) and cpu["outer"] >= 0


def test_nothing_is_written_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(TIMINGS_FILE_ENV, raising=False)
    with timed("x"):
        record("y", 1.0)
    assert not list(tmp_path.iterdir())
    assert len(read_timings(tmp_path / "absent.jsonl")) == 0


# ----------------------------------------------------------------------------- cost table
def _cell(source: str, start: float, end: float, tags=()) -> nbformat.NotebookNode:
    c = nbformat.v4.new_code_cell(source)
    c.metadata["tags"] = list(tags)
    c.metadata["papermill"] = dict(start_time=_iso(start), end_time=_iso(end), duration=end - start)
    return c


def _fake_notebook(run_dir: Path, name: str, parts: list[dict] | None) -> dict:
    """A train notebook: kernel start 1 s, parameters, the stage cell (11 s), a plot cell (0.2 s), shutdown 0.5 s."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        _cell('run_dir = ""', T0 + 1.0, T0 + 1.01, tags=["parameters"]),
        _cell('run_dir = "/x"', T0 + 1.02, T0 + 1.03, tags=["injected-parameters"]),
        _cell("import pandas as pd\nfrom xltlib.runner.stages import Run, stage_train\n\nrun = Run.open(run_dir)\n"
              "log = stage_train(run, cell_id)", T0 + 1.05, T0 + 12.05),
        _cell("plt.plot(log)", T0 + 12.1, T0 + 12.3),
    ]
    nb.metadata["papermill"] = dict(start_time=_iso(T0), end_time=_iso(T0 + 12.8))
    path = run_dir / "notebooks" / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    if parts is not None:
        timings = N.timings_path(run_dir, name)
        timings.parent.mkdir(parents=True, exist_ok=True)
        timings.write_text("".join(json.dumps(p) + "\n" for p in parts))
    return dict(stage="train", ok=True, seconds=13.3, notebook=str(path.relative_to(run_dir)), convert_s=0.1,
                html_s=0.3)


def _part(ident, parent, component, start, end, cpu=None, cpu_start=None, **labels):
    return dict(id=ident, parent=parent, component=component, start=T0 + start, end=T0 + end, seconds=end - start,
                cpu=cpu, cpu_start=cpu_start, **labels)


@pytest.fixture
def run(tmp_path) -> Run:
    return Run(load_config(SMOKE), tmp_path)


def test_a_notebook_splits_into_parts_that_add_up_to_its_wall_time(run):
    name = "02_train/ck-a"
    parts = [_part(2, 1, "train: training loop", 5.0, 10.0),
             _part(1, None, "train: model loading + tokenisation", 4.0, 10.5, cpu=6.4, cpu_start=3.5),
             _part(3, None, "train: saving rows and checkpoint", 10.5, 11.5, cpu=0.9, cpu_start=9.9)]
    entry = _fake_notebook(run.dir, name, parts)
    table = pd.DataFrame(notebook_costs(run, name, entry)).set_index("component")
    rows = table["seconds"]
    assert table.loc["notebook: imports + opening the run", "cpu_seconds"] == 3.5  # the kernel's CPU before it
    assert table.loc["train: saving rows and checkpoint", "cpu_seconds"] == pytest.approx(0.9)
    assert pd.isna(table.loc["train: model loading + tokenisation", "cpu_seconds"])  # the loop's CPU is unknown
    assert rows["notebook: kernel start"] == pytest.approx(1.0, abs=1e-3)
    assert rows["notebook: imports + opening the run"] == pytest.approx(4.0 - 1.05, abs=1e-3)
    assert rows["train: training loop"] == pytest.approx(5.0)
    assert rows["train: model loading + tokenisation"] == pytest.approx(1.5)  # its own time, the loop taken out
    assert rows["train: saving rows and checkpoint"] == pytest.approx(1.0)
    assert rows["cell 2: run = Run.open(run_dir): untimed rest"] == pytest.approx(0.55, abs=1e-3)
    assert rows["notebook: kernel shutdown"] == pytest.approx(0.5, abs=1e-3)
    assert rows["notebook: HTML export"] == 0.3 and rows["notebook: jupytext conversion"] == 0.1
    assert rows.sum() == pytest.approx(entry["seconds"], abs=1e-6)  # the driver's rest closes the sum


def test_a_run_made_before_the_timers_takes_the_loop_from_its_training_rows(run):
    name = "02_train/ck-b"
    entry = _fake_notebook(run.dir, name, parts=None)
    del entry["convert_s"], entry["html_s"]
    run.train_path("ck-b").parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(dict(metric=["train_loss", "train_loss", "weight_drift"], elapsed_s=[3.0, 8.0, None])).to_parquet(
        run.train_path("ck-b"))
    rows = pd.DataFrame(notebook_costs(run, name, entry)).set_index("component")["seconds"]
    assert rows["train: training loop"] == 8.0
    assert "notebook: imports + opening the run" not in rows  # nothing tells imports from loading here
    assert rows["notebook: jupytext conversion + HTML export"] == pytest.approx(13.3 - 12.8, abs=1e-3)
    assert rows.sum() == pytest.approx(entry["seconds"])


def test_cost_table_and_summaries_cover_every_executed_notebook(run):
    status = {"02_train/ck-a": _fake_notebook(run.dir, "02_train/ck-a", [_part(1, None, "train: x", 4.0, 10.0)]),
              "02_train/ck-c": dict(stage="train", ok=True, skipped=True)}
    (run.dir / "status.json").write_text(json.dumps(status))
    costs = cost_table(run)
    assert set(costs["notebook"]) == {"02_train/ck-a"} and set(costs["cell"]) == {"ck-a"}
    stage = by_stage(costs).set_index("stage")
    assert stage.loc["train", "seconds"] == pytest.approx(13.3) and stage.loc["train", "share"] == 1.0
    assert pd.isna(stage.loc["train", "cpu_seconds"])  # this status entry has no CPU times
    parts = by_component(costs)
    assert parts["share"].sum() == pytest.approx(1.0) and parts.iloc[0]["component"] == "train: x"


def test_a_unit_an_earlier_invocation_ran_is_costed_from_the_notebook_it_left(run):
    """A resumed run skips the units whose rows are on disk; their notebooks from the session that ran them still
    count, with papermill's wall (12.8 s here), so the cost of a study spans its sessions."""
    _fake_notebook(run.dir, "02_train/ck-old", [_part(1, None, "train: x", 4.0, 10.0)])
    status = {"02_train/ck-a": _fake_notebook(run.dir, "02_train/ck-a", [_part(1, None, "train: x", 4.0, 10.0)]),
              "02_train/ck-old": dict(stage="train", ok=True, skipped=True),
              "02_train/ck-gone": dict(stage="train", ok=True, skipped=True)}  # no notebook left: not costed
    (run.dir / "status.json").write_text(json.dumps(status))
    costs = cost_table(run)
    assert set(costs["notebook"]) == {"02_train/ck-a", "02_train/ck-old"}
    old = costs[costs["notebook"] == "02_train/ck-old"]
    assert old["seconds"].sum() == pytest.approx(12.8, abs=1e-3)
    assert old.set_index("component").loc["train: x", "seconds"] == pytest.approx(6.0)
    nbs = costs.attrs["notebooks"].set_index("notebook")
    assert bool(nbs.loc["02_train/ck-old", "earlier"]) and not bool(nbs.loc["02_train/ck-a", "earlier"])
    peak = dict(host="h", measured_at="t", dtype="bfloat16", gflops_1_thread=1.0, gflops_all_threads=2.0, threads=2)
    assert "1 run by earlier invocations" in format_report(run, costs, peak)


def test_xlt_cost_prints_the_tables_with_the_cached_peak(run, capsys, tmp_path):
    (run.dir / "config.yaml").write_text((SMOKE).read_text())
    status = {"02_train/ck-a": _fake_notebook(run.dir, "02_train/ck-a", [_part(1, None, "train: x", 4.0, 10.0)])}
    (run.dir / "status.json").write_text(json.dumps(status))
    peak = dict(host=socket.gethostname(), torch="t", measured_at="then", dtype="bfloat16",
                gflops_1_thread=123.0, gflops_all_threads=234.0, threads=2)
    (run.dir / N.TIMINGS_DIR / MACHINE_FILE).write_text(json.dumps(peak))
    assert main(["cost", str(run.dir), "--cells", "--csv", str(tmp_path / "c.csv")]) == 0
    out = capsys.readouterr().out
    assert "bfloat16 2048² matmul peak 123 GFLOP/s on 1 thread (per CPU second), 234 GFLOP/s on 2 threads" in out
    assert "By stage" in out and "By notebook and grid cell" in out and "train: x" in out
    assert len(pd.read_csv(tmp_path / "c.csv")) == len(cost_table(run))


def test_matmul_peak_is_a_rate():
    assert 1e8 < matmul_peak("cpu", 1, dtype=compute_dtype("cpu"), trials=1, reps=1, warmup_s=0.0) < 1e15


def test_the_peak_is_measured_in_fp32_where_bf16_is_emulated(monkeypatch):
    monkeypatch.setattr(devices.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert compute_dtype("cpu") == torch.float32
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert compute_dtype("cpu") == torch.bfloat16


# ----------------------------------------------------------------------------- a real kernel
TIMED = '''# %% tags=["parameters"]
seconds = 0.0

# %%
import time

from xltlib.core.timing import timed

with timed("tiny: work", unit="u1"):
    time.sleep(seconds)
'''


@pytest.mark.e2e
def test_an_executed_notebook_reports_its_parts_and_shuts_down_at_once(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "tiny.py").write_text(TIMED)
    monkeypatch.setattr(N, "NOTEBOOK_DIR", tmp_path / "notebooks")
    run_dir = tmp_path / "run"
    entry = N.execute_notebook(run_dir, "tiny", "tiny", {"seconds": 0.3}, live=False)
    assert entry["ok"], entry["error"]
    assert {"convert_s", "html_s"} <= set(entry) and entry["kernel_cpu_s"] > 0.3  # python + ipykernel at least
    parts = read_timings(N.timings_path(run_dir, "tiny"))
    assert list(parts["component"]) == ["tiny: work"] and parts["seconds"].iloc[0] >= 0.3
    rows = pd.DataFrame(notebook_costs(Run(load_config(SMOKE), run_dir), "tiny", entry))
    rows = rows.set_index("component")
    assert rows.loc["tiny: work", "cell"] == "u1"
    assert rows.loc["notebook: kernel shutdown", "seconds"] < 1.0  # killed once its outputs are in, no 2.5 s wait
    assert rows["seconds"].sum() == pytest.approx(entry["seconds"], abs=0.06)
