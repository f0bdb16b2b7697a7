"""End to end: the smoke params through every stage notebook, then resume and failure behaviour."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from bs4 import BeautifulSoup

from xltlib.cli import main
from xltlib.config.validate import load_config
from xltlib.runner import keys
from xltlib.runner.notebook import notebook_name
from xltlib.runner.pipeline import StageFailed, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "smoke.yaml"


def _pipeline_run(tmp_path_factory, params: Path) -> Path:
    out = tmp_path_factory.mktemp(params.stem)
    run_pipeline(load_config(params), out, params_file=str(params))
    return out


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    return _pipeline_run(tmp_path_factory, SMOKE)


@pytest.mark.e2e
def test_every_stage_succeeds(smoke_run):
    status = json.loads((smoke_run / "status.json").read_text())
    cfg = load_config(SMOKE)
    n_cells = len(cfg.grid.model) * len(cfg.grid.task) * len(cfg.grid.method) * len(cfg.grid.seed)
    assert sum(k.startswith("02_train/") for k in status) == n_cells
    assert all(s["ok"] for s in status.values()), status
    assert not list(smoke_run.rglob("*.failed.ipynb"))
    assert not list(smoke_run.glob("checkpoints/*.resume.pt*"))  # a finished cell leaves no resume state


@pytest.mark.e2e
def test_transfer_rows_recorded(smoke_run):
    df = pd.read_parquet(smoke_run / "results" / "transfer")
    std = df[(df["language2"] == "") & (df["metric"] == "accuracy")]
    # one accuracy row (and one identical task-score row) per checkpoint x language, in [0, 1], with provenance
    score = df[(df["language2"] == "") & (df["metric"] == "score")]
    assert len(score) == len(std) and (score["value"].to_numpy() == std["value"].to_numpy()).all()
    assert set(std.groupby("task")["language"].unique().apply(sorted).to_dict()["xnli"]) == {"en", "de", "fr", "sw"}
    assert std.groupby("checkpoint").size().isin([3, 4]).all()
    assert std["value"].between(0, 1).all() and (std["n"] > 0).all()
    assert (std["ci_low"] <= std["value"]).all() and (std["value"] <= std["ci_high"]).all()
    for col in ("git_commit", "created_at", "v_torch", "v_transformers", "params_file", "seed"):
        assert col in df and df[col].notna().all()
    # generalized pairs: every ordered pair of distinct languages, for every checkpoint
    gen = df[(df["language2"] != "") & (df["task"] == "xnli") & (df["metric"] == "accuracy")]
    assert gen.groupby("checkpoint").size().eq(4 * 3).all()
    # robustness under attack, English only, every checkpoint: the adversary raises the loss
    rob = df[df["metric"].str.startswith("robust_acc_")]
    assert set(rob["language"]) == {"en"} and rob.groupby("checkpoint")["metric"].nunique().ge(4).all()
    gain = df[df["metric"].str.startswith("attack_loss_gain_pgd_")]  # one row per checkpoint and strength
    assert len(gain) == df["checkpoint"].nunique() * gain["metric"].nunique() and (gain["value"] > 0).all()


@pytest.mark.e2e
def test_training_is_seeded(smoke_run):
    train = pd.read_parquet(smoke_run / "results" / "train")
    losses = train[train["checkpoint"].str.contains("xnli__baseline")].groupby("seed")["value"].apply(list)
    assert len(losses) == 2 and losses.iloc[0] != losses.iloc[1]  # different seeds, different runs
    assert train["value"].notna().all()


@pytest.mark.e2e
def test_alignment_rows_recorded(smoke_run):
    al = pd.read_parquet(smoke_run / "results" / "alignment")
    assert "pretrained:tiny-random" in set(al["checkpoint"])
    assert al["checkpoint"].nunique() == 1 + 12
    ret = al[al["metric"] == "retrieval.acc1_xx2en"]
    assert set(ret["language"]) == {"de", "fr", "sw"} and set(ret["layer"]) == {0, 1, 2}
    assert ret["value"].between(0, 1).all()
    assert {"cka.cka", "cosine_gap.cosine_gap", "langid_probe.langid_acc"} <= set(al["metric"])


@pytest.mark.e2e
def test_report_is_self_contained(smoke_run):
    index = smoke_run / "report" / "index.html"
    soup = BeautifulSoup(index.read_text(), "html.parser")
    text = soup.get_text()
    assert "Summary" in text and "RQ1" in text and "RQ2" in text
    links = [a["href"] for a in soup.find_all("a", href=True)]
    for stage in ("01_data.html", "03_transfer.html", "04_alignment.html"):
        assert stage in links and (index.parent / stage).exists()
    assert any(h.startswith("02_train/") for h in links)
    imgs = soup.find_all("img")
    assert imgs and all(i["src"].startswith("data:image/png;base64") for i in imgs)
    assert not soup.find_all("input", {"class": "jp-InputArea"})  # code hidden
    assert soup.find("table") is not None
    for page in [index, *(index.parent.glob("*.html"))]:
        remote = [t for t in BeautifulSoup(page.read_text(), "html.parser").find_all(["script", "link", "img"])
                  if (t.get("src") or t.get("href") or "").startswith("http")]
        assert not remote, (page.name, remote[:2])


@pytest.mark.e2e
def test_rerun_resumes_without_retraining(smoke_run):
    before = {p: p.stat().st_mtime for p in (smoke_run / "checkpoints").rglob("trainable.safetensors")}
    transfer_before = {p: p.stat().st_mtime for p in (smoke_run / "results" / "transfer").glob("*.parquet")}
    assert main(["run", str(SMOKE), "--out", str(smoke_run), "--stages", "data,train,transfer"]) == 0
    status = json.loads((smoke_run / "status.json").read_text())
    assert all(s.get("skipped") for k, s in status.items() if k.startswith("02_train/"))
    assert before == {p: p.stat().st_mtime for p in (smoke_run / "checkpoints").rglob("trainable.safetensors")}
    assert transfer_before == {p: p.stat().st_mtime for p in (smoke_run / "results" / "transfer").glob("*.parquet")}


@pytest.mark.e2e
def test_failed_stage_is_marked_and_nothing_looks_done(tmp_path, smoke_run):
    # a data folder without the PAWS-X files: the data stage fails, nothing downstream runs
    data = tmp_path / "data"
    shutil.copytree(smoke_run / "smoke-data", data)
    shutil.rmtree(data / "pawsx")
    cfg = load_config(SMOKE, ["smoke=false", f"data_dir={data}", "grid.seed=[1]"])
    with pytest.raises(StageFailed, match="01_data"):
        run_pipeline(cfg, tmp_path / "run")
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["01_data"]["ok"] is False and "pawsx" in status["01_data"]["error"]
    assert (tmp_path / "run" / "notebooks" / "01_data.failed.ipynb").exists()
    assert not (tmp_path / "run" / "notebooks" / "01_data.ipynb").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert "FAILED" in (tmp_path / "run" / "report" / "index.html").read_text()


def test_cli_rejects_unknown_key_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain: {epoch: 1}\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "train.epoch" in err and "epochs" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_report_command_rebuilds_without_training(smoke_run):
    mtimes = {p: p.stat().st_mtime for p in (smoke_run / "checkpoints").rglob("*.safetensors")}
    assert main(["report", str(smoke_run)]) == 0
    assert (smoke_run / "report" / "index.html").exists()
    assert mtimes == {p: p.stat().st_mtime for p in (smoke_run / "checkpoints").rglob("*.safetensors")}


@pytest.mark.e2e
def test_export_writes_tables_figures_and_provenance(smoke_run, tmp_path):
    assert main(["export", str(smoke_run), str(tmp_path / "res")]) == 0
    res = tmp_path / "res"
    summary = (res / "summary.md").read_text()
    assert "RQ1" in summary and "RQ2" in summary and "Transfer score" in summary
    prov = json.loads((res / "provenance.json").read_text())
    assert prov["seeds"] == [1, 2] and prov["git_commit"] and prov["v_torch"]
    for name in ("transfer_xnli.csv", "correlations.csv", "regressions.csv", "alignment_vs_transfer.png",
                 "generalized_xnli.png"):
        assert (res / name).stat().st_size > 0, name


@pytest.mark.e2e
def test_rows_of_stale_checkpoints_or_settings_are_not_analysed(smoke_run):
    from xltlib.runner.run_dir import Run

    run = Run.open(smoke_run)
    al = run.load_results("alignment")
    assert al.attrs["stale_rows"] == 0
    stale = al.head(3).assign(key="old-settings")
    gone = pd.read_parquet(next((smoke_run / "results" / "transfer").glob("*.parquet"))).assign(key="removed")
    stale.to_parquet(smoke_run / "results" / "alignment" / "stale.parquet")
    gone.to_parquet(smoke_run / "results" / "transfer" / "removed.parquet")
    try:
        again = run.load_results("alignment")
        assert len(again) == len(al) and again.attrs["stale_rows"] == 3
        transfer = run.load_results("transfer")
        assert "removed" not in set(transfer["key"]) and transfer.attrs["stale_rows"] == len(gone)
    finally:
        (smoke_run / "results" / "alignment" / "stale.parquet").unlink()
        (smoke_run / "results" / "transfer" / "removed.parquet").unlink()


@pytest.mark.e2e
def test_a_run_folder_without_its_checkpoints_still_reports(smoke_run, tmp_path):
    """Checkpoints pruned, or a run folder brought back from a remote machine without them: the training rows
    under the current key keep the cell's results live."""
    import shutil

    from xltlib.runner.run_dir import Run

    copy = tmp_path / "run"
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns("checkpoints", "kernel-ipc*"))
    full, pruned = Run.open(smoke_run), Run.open(copy)
    for kind in ("train", "transfer"):
        assert len(pruned.load_results(kind)) == len(full.load_results(kind)) > 0, kind
    assert len(pruned.load_results("alignment")) == len(full.load_results("alignment")) > 0
    assert keys.missing_cells(pruned) == []  # every row of every cell is on disk: nothing is missing
    # the same command on the folder without its checkpoints (a study resumed on another machine from its rows)
    # trains and scores nothing again
    rows_before = _created(copy / "results" / "transfer")
    assert main(["run", str(SMOKE), "--out", str(copy), "--stages", "data,train,transfer,alignment"]) == 0
    status = json.loads((copy / "status.json").read_text())
    assert all(s.get("skipped") for k, s in status.items() if k.startswith("02_train/"))
    assert not (copy / "checkpoints").exists() and _created(copy / "results" / "transfer") == rows_before
    # with a unit per checkpoint (2 workers), the transfer and alignment units whose rows are on disk are listed as
    # skipped, so `xlt cost` counts the notebooks the run they came from left; a unit an earlier invocation saw fail
    # is no longer listed as failed once its rows are on disk
    failed = notebook_name("transfer", pruned.cells()[0].cell_id)
    status[failed] = dict(stage="transfer", ok=False, error="cut off")
    (copy / "status.json").write_text(json.dumps(status))
    assert main(["run", str(SMOKE), "--out", str(copy), "--set", "executor.workers=2",
                 "--stages", "data,train,transfer,alignment"]) == 0
    status = json.loads((copy / "status.json").read_text())
    skipped = {k for k, s in status.items() if s.get("skipped") and not k.startswith("02_train/")}
    assert skipped == ({notebook_name("transfer", c.cell_id) for c in pruned.cells()}
                       | {notebook_name("alignment", ck.checkpoint) for ck in keys.alignment_checkpoints(pruned)})
    assert status[failed]["ok"]
    assert _created(copy / "results" / "transfer") == rows_before
    # a chain cut between a checkpoint's transfer and its alignment, on a machine that is gone: the checkpoint is
    # trained again, and its transfer rows are those of the new training, not kept from the lost one
    cut = pruned.training_cells()[0]
    pruned.alignment_path(cut.checkpoint).unlink()
    assert main(["run", str(SMOKE), "--out", str(copy), "--stages", "data,train,transfer,alignment"]) == 0
    after = _created(copy / "results" / "transfer")
    scored_by_cut = {f"{c.cell_id}.parquet" for c in pruned.cells() if c.checkpoint == cut.checkpoint}
    assert all(after[f] != rows_before[f] for f in scored_by_cut)
    assert all(after[f] == rows_before[f] for f in rows_before if f not in scored_by_cut)
    assert pruned.alignment_path(cut.checkpoint).is_file() and keys.missing_cells(pruned) == []
    (copy / "data" / "xnli.json").unlink()  # a split not made yet: no results, no crash
    assert pruned.load_results("transfer")["task"].ne("xnli").all()


ONE_CELL = ["--set", "grid.task=[xnli]", "--set", "grid.method=[baseline]", "--set", "grid.seed=[1]",
            "--set", "evaluate.generalized=false", "--stages", "data,train,transfer,alignment"]


def _created(folder: Path) -> dict[str, str]:
    """artefact file -> the creation time its rows record (rewritten only when recomputed)."""
    return {p.name: pd.read_parquet(p, columns=["created_at"])["created_at"].iloc[0]
            for p in sorted(folder.glob("*.parquet"))}


@pytest.mark.e2e
def test_rerun_recomputes_exactly_what_changed(tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(SMOKE), "--out", str(out), *ONE_CELL]) == 0
    transfer, alignment = _created(out / "results" / "transfer"), _created(out / "results" / "alignment")
    ck = "tiny-random__xnli__baseline__s1.parquet"

    # nothing changed: nothing recomputed
    assert main(["run", str(SMOKE), "--out", str(out), *ONE_CELL]) == 0
    status = json.loads((out / "status.json").read_text())
    assert status["02_train/tiny-random__xnli__baseline__s1"].get("skipped")
    assert _created(out / "results" / "transfer") == transfer and _created(out / "results" / "alignment") == alignment

    # a training setting changed: retrained, so its transfer AND alignment rows are recomputed (the
    # checkpoint keeps its name); the pre-trained model's alignment is not
    assert main(["run", str(SMOKE), "--out", str(out), *ONE_CELL, "--set", "train.epochs=1"]) == 0
    status = json.loads((out / "status.json").read_text())
    assert not status["02_train/tiny-random__xnli__baseline__s1"].get("skipped")
    new_al = _created(out / "results" / "alignment")
    assert new_al[ck] != alignment[ck] and new_al["pretrained__tiny-random.parquet"] == alignment["pretrained__tiny-random.parquet"]
    assert _created(out / "results" / "transfer")[ck] != transfer[ck]
    from xltlib.runner.run_dir import Run

    assert Run.open(out).load_results("alignment").attrs["stale_rows"] == 0

    # a task's languages changed: same training rows, no retraining; transfer recomputed on the new languages
    before = _created(out / "results" / "transfer")
    args = [*ONE_CELL, "--set", "train.epochs=1", "--set", "languages={xnli: [en, de]}"]
    assert main(["run", str(SMOKE), "--out", str(out), *args]) == 0
    status = json.loads((out / "status.json").read_text())
    assert status["02_train/tiny-random__xnli__baseline__s1"].get("skipped")
    assert _created(out / "results" / "transfer")[ck] != before[ck]
    rows = Run.open(out).load_results("transfer")
    assert set(rows["language"]) == {"en", "de"}


def test_second_run_into_a_folder_in_use_stops_naming_the_holder(tmp_path, capsys):
    import os
    import socket
    import subprocess
    import sys

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".xlt.lock").write_text(json.dumps(dict(pid=holder.pid, host=socket.gethostname(), started="t0")))
        assert main(["run", str(SMOKE), "--out", str(out), *ONE_CELL]) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "in use" in err
        assert not (out / "status.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is recognised as stale and taken over; released at the end
    from xltlib.runner.run_dir import run_lock

    with run_lock(out):
        assert json.loads((out / ".xlt.lock").read_text())["pid"] == os.getpid()
    assert not (out / ".xlt.lock").exists()


SMOKE_SUITE = ROOT / "params" / "smoke-suite.yaml"


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    return _pipeline_run(tmp_path_factory, SMOKE_SUITE)


@pytest.mark.e2e
def test_suite_runs_every_task_kind_end_to_end(suite_run):
    status = json.loads((suite_run / "status.json").read_text())
    assert all(s["ok"] for s in status.values()), status
    # XQuAD and MLQA share the TyDiQA-trained checkpoint, LAReQA trains its dual encoder: 5 training tasks x 2 methods
    assert sorted(k for k in status if k.startswith("02_train/")) == sorted(
        f"02_train/tiny-random__{t}__{m}__s1" for t in ("xcopa", "udpos", "panx", "tydiqa", "lareqa")
        for m in ("baseline", "rs_da"))
    df = pd.read_parquet(suite_run / "results" / "transfer")
    score = df[df["metric"] == "score"]
    assert set(score["task"]) == {"xcopa", "udpos", "panx", "xquad", "mlqa", "lareqa"}
    assert set(df.loc[df["task"] == "xquad", "metric"]) == {"f1", "exact_match", "score"}
    assert score["value"].between(0, 1).all()
    assert df.loc[df["task"].isin(["xquad", "mlqa"]), "checkpoint"].str.contains("__tydiqa__").all()
    assert df.loc[df["task"] == "lareqa", "checkpoint"].str.contains("__lareqa__").all()
    # PAN-X is gated on its selection sentences: the train stage wrote the kept weights' chunk counts
    assert sorted(p.stem for p in (suite_run / "results" / "selection").glob("*.parquet")) == [
        f"tiny-random__panx__{m}__s1" for m in ("baseline", "rs_da")]
    html = (suite_run / "report" / "index.html").read_text()
    assert "XTREME-R style suite" in html and "XTREME-R avg" in html and "TyDiQA-GoldP English train" in html


def test_a_checkpoint_scores_the_same_under_a_fresh_model_cache(tmp_path, monkeypatch):
    """A checkpoint holds the trained parameters only; the frozen rest comes from the base model in the model
    cache. Loaded where that cache is fresh (another machine, a Ray worker, a pruned cache: the base model is
    made anew), it gives the logits it gives beside the cache it was trained with. Training on a fresh cache
    is tests/test_train.py::test_first_run_on_fresh_model_cache_equals_later_runs."""
    import numpy as np
    import torch

    from xltlib.evaluation.task_types import load_checkpoint, train_classifier
    from xltlib.training.checkpoints import save_checkpoint
    from xltlib.training.objectives import build_objective

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    records = [dict(text_a=" ".join(rng.choice(words, 5)), text_b=" ".join(rng.choice(words, 4)), label=i % 3)
               for i in range(24)]
    monkeypatch.setenv("XLT_MODEL_CACHE", str(tmp_path / "trained-here"))
    model, tok, _ = train_classifier("tiny-random", records, num_labels=3, objective=build_objective("baseline"),
                                     seed=5, epochs=1, batch_size=8, lr=1e-3, max_length=32, bf16=False)
    ck = save_checkpoint(model, tok, tmp_path / "ck", base_model="tiny-random",
                         meta={"kind": "pair_classification", "pooling": "mean"})
    batch = tok([r["text_a"] for r in records], [r["text_b"] for r in records], padding=True, return_tensors="pt",
                return_token_type_ids=False)
    logits = []
    for cache in ("trained-here", "fresh"):
        monkeypatch.setenv("XLT_MODEL_CACHE", str(tmp_path / cache))
        loaded, _, _ = load_checkpoint(ck, device="cpu")
        with torch.no_grad():
            logits.append(loaded(**batch).logits)
    assert (tmp_path / "fresh" / "tiny-random").is_dir()  # the base model was made anew there
    assert torch.equal(logits[0], logits[1])
