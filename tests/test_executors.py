"""Executors: the smoke grid on a local Ray cluster and on two local workers gives the rows the local executor
gives, a killed Ray driver resumes, and settings that cannot work are refused before anything is written."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from xltlib.cli import main
from xltlib.config.schema import ExecutorConfig
from xltlib.config.validate import load_config
from xltlib.runner.executors import ExecutorError, init_ray, local_workers, make_executor
from xltlib.runner.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "smoke.yaml"
# a smaller smoke grid (4 training cells): enough to compare executors, quick on two cores
SMALL = ["grid.seed=[1]", "grid.method=[baseline,pgd]"]
PROVENANCE = {"created_at", "git_commit", "git_diff", "host", "device", "params_file", "python", "interactive"}


def test_unknown_executor_is_refused_listing_the_registered_ones(tmp_path, capsys):
    with pytest.raises(ExecutorError, match=r"unknown executor 'dask'; registered: local, ray"):
        make_executor(ExecutorConfig(name="dask"))
    out = tmp_path / "run"
    assert main(["run", str(SMOKE), "--out", str(out), "--executor", "dask"]) == 2
    assert "unknown executor 'dask'" in capsys.readouterr().err
    assert not out.exists()  # nothing written


def test_unreachable_address_is_an_error_naming_it():
    pytest.importorskip("ray")
    with pytest.raises(ExecutorError, match=r"executor.address = 'ray://127.0.0.1:1': nothing reachable"):
        make_executor(ExecutorConfig(name="ray", address="ray://127.0.0.1:1"))
    with pytest.raises(ExecutorError, match="expected 'auto', 'host:port'"):
        make_executor(ExecutorConfig(name="ray", address="headnode"))


def test_a_local_ray_start_that_times_out_is_tried_again_and_then_named(monkeypatch):
    ray = pytest.importorskip("ray")
    calls = []

    def flaky_init(**kw):
        calls.append(kw)
        if len(calls) < 2:
            raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ray, "init", flaky_init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    init_ray(num_cpus=1)
    assert len(calls) == 2 and calls[0]["include_dashboard"] is False and calls[0]["num_cpus"] == 1

    def never(**kw):
        raise Exception("The current node timed out during startup.")

    monkeypatch.setattr(ray, "init", never)
    with pytest.raises(RuntimeError, match=r"timed out during startup.*after 3 attempt\(s\).*raylet.err"):
        init_ray()
    monkeypatch.setattr(ray, "init", lambda **kw: (_ for _ in ()).throw(ConnectionError("refused")))
    with pytest.raises(ConnectionError):  # not a start-up time-out: raised at once
        init_ray(address="auto")


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.mark.e2e
def test_resources_the_cluster_lacks_are_refused(ray_cluster):
    with pytest.raises(ExecutorError, match=r"cell_resources.num_gpus = 1, but the Ray cluster has 0 GPU"):
        make_executor(ExecutorConfig(name="ray", cell_resources={"num_cpus": 1, "num_gpus": 1}))
    with pytest.raises(ExecutorError, match=r"cell_resources.num_cpus = 64, but the Ray cluster has 2 CPU"):
        make_executor(ExecutorConfig(name="ray", cell_resources={"num_cpus": 64}))


def _rows(run_dir: Path, kind: str) -> pd.DataFrame:
    df = pd.read_parquet(run_dir / "results" / kind)
    df = df.drop(columns=[c for c in df.columns if c in PROVENANCE or c.startswith("v_")])
    if kind == "train":  # wall-clock columns of the step log
        df = df.drop(columns=[c for c in ("elapsed_s",) if c in df])
    sort = [c for c in ("checkpoint", "cell_id", "dataset", "metric", "language", "language2", "layer", "n")
            if c in df]
    return df.sort_values(sort).reset_index(drop=True)


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory, ray_cluster):
    # one CPU thread in both: float sums (an attack's loss gain, the probe's fit) depend on the thread count
    same_threads = SMALL + ["train.threads=1"]
    local = tmp_path_factory.mktemp("local") / "run"
    run_pipeline(load_config(SMOKE, same_threads), local, params_file=str(SMOKE))
    distributed = tmp_path_factory.mktemp("ray") / "run"
    cfg = load_config(SMOKE, same_threads + ["executor.name=ray", "executor.cell_resources={num_cpus: 1}"])
    run_pipeline(cfg, distributed, params_file=str(SMOKE))
    return local, distributed


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["train", "transfer", "alignment"])
def test_smoke_on_ray_gives_the_local_rows(both_runs, kind):
    local, distributed = both_runs
    a, b = _rows(local, kind), _rows(distributed, kind)
    assert len(a) > 0 and list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a, b)  # same keys, same values: the cells are deterministic on the CPU


def _small_run(tmp_path_factory, name: str, executor_setting: str) -> Path:
    """The small smoke grid on one torch thread per kernel under one executor setting."""
    out = tmp_path_factory.mktemp(name) / "run"
    run_pipeline(load_config(SMOKE, SMALL + ["train.threads=1", executor_setting]), out, params_file=str(SMOKE))
    return out


@pytest.fixture(scope="module")
def pooled_run(tmp_path_factory):
    return _small_run(tmp_path_factory, "pool", "executor.workers=2")


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["train", "transfer", "alignment"])
def test_two_local_workers_give_the_one_worker_rows(both_runs, pooled_run, kind):
    local, _ = both_runs
    pd.testing.assert_frame_equal(_rows(local, kind), _rows(pooled_run, kind))


@pytest.fixture(scope="module")
def chained_run(tmp_path_factory):
    return _small_run(tmp_path_factory, "chain", "executor.evaluate_as_trained=true")


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["train", "transfer", "alignment"])
def test_evaluating_each_checkpoint_as_trained_gives_the_same_rows(pooled_run, chained_run, kind):
    pd.testing.assert_frame_equal(_rows(pooled_run, kind), _rows(chained_run, kind))


@pytest.mark.e2e
def test_evaluate_as_trained_scores_and_aligns_each_checkpoint_before_the_next_trains(chained_run):
    status = json.loads((chained_run / "status.json").read_text())
    assert all(s["ok"] for s in status.values()), status
    units = [k for k in status if k.startswith(("02_train/", "03_transfer/", "04_alignment/"))]
    assert units[0] == "04_alignment/pretrained__me5-small" or units[0].startswith("04_alignment/pretrained")
    trained = [u for u in units if u.startswith("02_train/")]
    for first, second in zip(trained, trained[1:]):  # the first checkpoint's rows are all written before the next
        ck = first.split("/", 1)[1]
        between = units[units.index(first) + 1:units.index(second)]
        assert any(u.startswith("03_transfer/") for u in between) and f"04_alignment/{ck}" in between, units


def test_a_worker_that_dies_in_a_chain_names_the_chain():
    """A pool process that dies while running a training unit and its evaluation: the entry names every unit of
    the chain (the keys say next time which of them finished)."""
    from concurrent.futures.process import BrokenProcessPool

    from xltlib.runner.executors import Unit, _failed_entry

    chain = Unit("train", "02_train/ck", {}, then=(Unit("transfer", "03_transfer/c", {}),))
    entry = _failed_entry(chain, BrokenProcessPool("A process in the process pool was terminated abruptly"))
    assert not entry["ok"] and entry["error"].startswith("BrokenProcessPool: A process in the process pool")
    assert entry["error"].endswith("(the worker died in the chain of 02_train/ck, 03_transfer/c)")
    assert "chain" not in _failed_entry(Unit("train", "02_train/ck", {}), RuntimeError("x"))["error"]


@pytest.mark.e2e
def test_two_local_workers_run_transfer_and_alignment_per_unit(pooled_run):
    status = json.loads((pooled_run / "status.json").read_text())
    assert all(s["ok"] for s in status.values()), status
    assert sum(k.startswith(("03_transfer/", "04_alignment/")) for k in status) == 4 + 5
    assert (pooled_run / "report" / "04_alignment.html").is_file()


def test_local_workers_setting(monkeypatch):
    assert local_workers(3) == 3
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert local_workers("auto") == len(os.sched_getaffinity(0))
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert local_workers("auto") == 1  # cells would share one GPU
    executor = make_executor(ExecutorConfig(workers=1))
    assert executor.workers == 1 and not executor.splits_stages
    with pytest.raises(ValueError, match="workers"):
        ExecutorConfig(workers=0)


@pytest.mark.e2e
def test_ray_status_and_report_name_every_unit(both_runs):
    _, distributed = both_runs
    status = json.loads((distributed / "status.json").read_text())
    assert all(s["ok"] for s in status.values()), status
    units = [k for k in status if k.startswith(("03_transfer/", "04_alignment/"))]
    assert len(units) == 4 + 5  # a transfer unit per cell; an alignment unit per checkpoint + the pre-trained model
    assert all(status[k].get("host") for k in units)
    index = (distributed / "report" / "index.html").read_text()
    assert "transfer units (one per cell)" in index and "alignment units (one per checkpoint)" in index
    for page in ("03_transfer", "04_alignment", "05_analysis"):  # the stage pages, made from the rows on disk
        assert (distributed / "report" / f"{page}.html").is_file()


@pytest.mark.e2e
def test_killed_ray_driver_resumes_and_loses_nothing(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "xltlib.cli", "run", str(SMOKE), "--out", str(out), "--executor", "ray",
           "--set", "grid.seed=[1]", "--set", "grid.task=[xnli]", "--set", "executor.cell_resources={num_cpus: 1}"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a fresh local cluster of its own
    driver = subprocess.Popen(cmd + ["--set", "executor.cell_resources={num_cpus: 2}"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list((out / "checkpoints").glob("*/xlt_checkpoint.json")):
            time.sleep(0.5)
        finished = {p.parent.name: p.stat().st_mtime_ns for p in (out / "checkpoints").glob("*/xlt_checkpoint.json")}
        assert finished, "no training cell finished within 5 minutes"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local Ray cluster, mid-grid
        driver.wait()
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    status = json.loads((out / "status.json").read_text())
    for ck, mtime in finished.items():  # finished before the kill: skipped, not retrained
        assert status[f"02_train/{ck}"].get("skipped"), status[f"02_train/{ck}"]
        assert (out / "checkpoints" / ck / "xlt_checkpoint.json").stat().st_mtime_ns == mtime
    assert len(list((out / "checkpoints").glob("*/xlt_checkpoint.json"))) == 3  # xnli x 3 methods, seed 1
    assert all(s["ok"] for s in status.values()), status


@pytest.mark.e2e
def test_a_failing_unit_is_retried_then_marked_failed_with_its_notebook(tmp_path, ray_cluster):
    from xltlib.runner.pipeline import StageFailed

    out = tmp_path / "run"
    small = ["grid.seed=[1]", "grid.method=[baseline]"]
    run_pipeline(load_config(SMOKE, small), out, params_file=str(SMOKE), stages=("data",))
    split = json.loads((out / "data" / "pawsx.json").read_text())
    split["train_rows"] = {k: [10 ** 6] for k in split["train_rows"]}  # a row that does not exist: training fails
    (out / "data" / "pawsx.json").write_text(json.dumps(split))
    cfg = load_config(SMOKE, small + ["executor.name=ray", "executor.cell_resources={num_cpus: 1}",
                                      "executor.max_retries=1"])
    with pytest.raises(StageFailed, match="02_train/tiny-random__pawsx__baseline__s1"):
        run_pipeline(cfg, out, params_file=str(SMOKE), stages=("train",))
    status = json.loads((out / "status.json").read_text())
    failed = status["02_train/tiny-random__pawsx__baseline__s1"]
    assert failed["ok"] is False and failed["attempts"] == "all retries failed" and "IndexError" in failed["error"]
    assert (out / failed["notebook"]).is_file() and failed["notebook"].endswith(".failed.ipynb")
    assert status["02_train/tiny-random__xnli__baseline__s1"]["ok"]  # the other unit finished
    assert not (out / "checkpoints" / "tiny-random__pawsx__baseline__s1").exists()
