"""Prediction files: the transfer stage keeps every item's prediction, and `xlt rescore` gives back the stored rows
from them alone (checkpoints deleted), for every task kind of the smoke params."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xltlib.cli import main
from xltlib.config.validate import load_config
from xltlib.data import tasks as T
from xltlib.evaluation.predictions import prediction_file, read_predictions, score_predictions, write_predictions
from xltlib.evaluation.tagging import sentence_predictions, word_predictions
from xltlib.runner.rescore import RECOMPUTED, rescore_run
from xltlib.runner.run_dir import Run, init_run
from xltlib.runner.stages import stage_data, stage_train, stage_transfer

ROOT = Path(__file__).resolve().parents[1]
ROW = ["language", "language2", "metric"]
# the rows that need the model, kept as stored by rescore
MODEL_ROWS = ("robust_", "attack_", "synonym_subst_rate", "pretrained_")


def _scored_run(tmp_path_factory, params: str, overrides: list[str]) -> Path:
    """Data, training and transfer of a smoke params file (stage functions, no notebooks); then the checkpoints
    are deleted, so that whatever rescores the run cannot load a model."""
    out = tmp_path_factory.mktemp(Path(params).stem)
    run = init_run(load_config(ROOT / "params" / params, overrides), out, params)
    stage_data(run)
    for cell in run.training_cells():
        stage_train(run, cell.cell_id)
    stage_transfer(run)
    shutil.rmtree(run.path("checkpoints"))
    return out


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory):
    """XNLI and PAWS-X with generalized pairs and robustness rows (smoke.yaml, one method and seed)."""
    return _scored_run(tmp_path_factory, "smoke.yaml", ["grid.method=[rs_da]", "grid.seed=[1]"])


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    """Multiple choice, tagging, QA and answer retrieval (smoke-suite.yaml, one method)."""
    return _scored_run(tmp_path_factory, "smoke-suite.yaml", ["grid.method=[baseline]"])


def _stored(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {f.stem: pd.read_parquet(f) for f in sorted((run_dir / "results" / "transfer").glob("*.parquet"))}


def _assert_same_rows(stored: pd.DataFrame, rescored: pd.DataFrame, cell: str) -> None:
    """Every stored row comes back, in order, with identical metric, value, n, CI and per-example values."""
    assert len(rescored) == len(stored), cell
    cols = [c for c in RECOMPUTED if c in stored]
    for i, (a, b) in enumerate(zip(stored[ROW + cols].to_dict("records"), rescored[ROW + cols].to_dict("records"))):
        for c in ROW + cols:
            x, y = a[c], b[c]
            if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
                assert np.array_equal(np.asarray(x, float), np.asarray(y, float)), (cell, i, c)
            else:
                assert x == y or (pd.isna(x) and pd.isna(y)), (cell, i, c, x, y)


def _check_rescore(run_dir: Path, kinds: set[str]) -> list:
    stored = _stored(run_dir)
    assert {T.get_task(df["task"].iloc[0]).kind for df in stored.values()} == kinds
    cells = rescore_run(Run.open(run_dir))
    assert sorted(c.cell_id for c in cells) == sorted(stored)
    for c in cells:
        assert not c.error and not c.changed and not c.added, (c.cell_id, c.error, c.changed, c.added)
        assert c.path == run_dir / "results" / "rescored" / "transfer" / f"{c.cell_id}.parquet"
        _assert_same_rows(stored[c.cell_id], pd.read_parquet(c.path), c.cell_id)
        # what was not recomputed is exactly what needs the model
        df = stored[c.cell_id]
        model_rows = df["metric"].str.startswith(MODEL_ROWS)
        assert c.recomputed == int((~model_rows).sum()) > 0
        assert set(c.kept) == set(df.loc[model_rows, "metric"])
    assert _stored(run_dir).keys() == stored.keys()  # the stored rows are left alone
    for name, df in _stored(run_dir).items():
        _assert_same_rows(stored[name], df, name)
    return cells


def test_prediction_files_sit_beside_the_rows_under_their_key(pair_run):
    for cell, rows in _stored(pair_run).items():
        folder = pair_run / "results" / "predictions" / cell
        task = rows["task"].iloc[0]
        scored = rows[rows["metric"] == "accuracy"]
        n_lang = {"xnli": 4, "pawsx": 3}[task]
        assert len(scored) == n_lang + n_lang * (n_lang - 1)  # every language and every ordered pair
        for r in scored.itertuples():
            df = pd.read_parquet(prediction_file(folder, task, r.language, r.language2))
            assert len(df) == r.n and set(df["key"]) == {rows["key"].iloc[0]}
            assert list(df.columns) == ["task", "language", "language2", "key", "id", "gold", "prediction", "scores"]
            n_labels = len(T.get_task(task).labels)
            assert all(len(s) == n_labels for s in df["scores"])
            # the stored per-example correctness is the kept predictions' correctness, item by item
            assert (df["prediction"] == df["gold"]).astype(int).tolist() == list(r.per_example)
            assert (np.stack(df["scores"]).argmax(1) == df["prediction"]).all()


def test_rescore_gives_the_stored_pair_classification_rows_without_checkpoints(pair_run):
    assert not (pair_run / "checkpoints").exists()
    _check_rescore(pair_run, {"pair_classification"})


def test_rescore_gives_the_stored_rows_of_every_other_kind(suite_run):
    cells = _check_rescore(suite_run, {"multiple_choice", "token_classification", "span_extraction", "answer_retrieval"})
    assert {m for c in cells for m in c.kept} == {"pretrained_map@20", "pretrained_score"}  # LAReQA's reference
    lareqa = pd.read_parquet(next(suite_run.glob("results/predictions/*lareqa*/lareqa-de.parquet")))
    assert all(len(g) >= 1 for g in lareqa["gold"]) and all(np.all(np.diff(s) <= 0) for s in lareqa["scores"])
    panx = pd.read_parquet(next(suite_run.glob("results/predictions/*panx*/panx-de.parquet")))
    assert all(len(g) == len(p) for g, p in zip(panx["gold"], panx["prediction"]))


def test_rescore_reads_the_predictions_not_the_rows(pair_run, tmp_path, capsys):
    """A changed prediction changes the rescored row; --write replaces the stored rows; the command says which
    rows need the model."""
    run_dir = tmp_path / "run"
    shutil.copytree(pair_run, run_dir)
    shutil.rmtree(run_dir / "results" / "rescored", ignore_errors=True)  # an earlier test's rescoring
    cell = next(c for c in _stored(run_dir) if "__xnli__" in c)
    path = prediction_file(run_dir / "results" / "predictions" / cell, "xnli", "de")
    df = pd.read_parquet(path)
    df.loc[0, "prediction"] = (df.loc[0, "gold"] + 1) % 3 if df.loc[0, "prediction"] == df.loc[0, "gold"] \
        else df.loc[0, "gold"]
    df.to_parquet(path, index=False)
    before = pd.read_parquet(run_dir / "results" / "transfer" / f"{cell}.parquet")
    old = before[(before["language"] == "de") & (before["language2"] == "") & (before["metric"] == "accuracy")]

    assert main(["rescore", str(run_dir), "--write"]) == 0
    out = capsys.readouterr().out
    assert f"{cell}: 32 rows rescored, 2 differ from the stored rows" in out  # de accuracy and de score
    assert "kept as stored, they need the model" in out and "robust_acc_synonym_attack" in out
    after = pd.read_parquet(run_dir / "results" / "transfer" / f"{cell}.parquet")
    new = after[(after["language"] == "de") & (after["language2"] == "") & (after["metric"] == "accuracy")]
    assert abs(new["value"].iloc[0] - old["value"].iloc[0]) == pytest.approx(1 / old["n"].iloc[0])
    assert not (run_dir / "results" / "rescored").exists()
    keep = ~after["metric"].str.startswith(MODEL_ROWS)
    assert (after.loc[~keep, "created_at"] == before.loc[~keep, "created_at"]).all()  # model rows: as stored


def test_rescore_refuses_rows_without_predictions_of_their_key(pair_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(pair_run, run_dir)
    cell = next(c for c in _stored(run_dir) if "__pawsx__" in c)
    folder = run_dir / "results" / "predictions" / cell
    for f in folder.glob("*.parquet"):  # predictions of another transfer key: stale, not scored
        df = pd.read_parquet(f)
        df["key"] = "another-key"
        df.to_parquet(f, index=False)
    assert main(["rescore", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert f"{cell}: NOT rescored" in out and "no prediction file of transfer key" in out and "other keys" in out
    assert not (run_dir / "results" / "rescored" / "transfer" / f"{cell}.parquet").exists()


# ------------------------------------------------------------------ each kind's round trip, made-up predictions
def _made_up() -> dict[str, dict]:
    """A small predictions table per kind, with a known score."""
    return {
        "xnli": dict(id=["0", "1", "2", "3"], gold=[0, 1, 2, 1], prediction=[0, 1, 1, 1],
                     scores=[[2.0, 0, 0], [0, 1.0, 0], [0, 3.0, 1.0], [0, 1.0, 0.5]]),
        "xcopa": dict(id=["1", "2"], gold=[0, 1], prediction=[1, 1], scores=[[0.1, 0.4], [0.0, 0.2]]),
        "panx": dict(id=["0", "1"], gold=[["B-PER", "I-PER", "O"], ["B-LOC", "O"]],
                     prediction=[["B-PER", "I-PER", "O"], ["B-ORG", "O"]], truncated_words=[0, 1]),
        "xquad": dict(id=["q1", "q2"], gold=[["the Eiffel Tower", "Eiffel"], ["Paris"]], prediction=["Eiffel Tower", "Lyon"]),
        "lareqa": dict(id=["a", "b"], gold=[[0, 3], [2]], prediction=[[3, 1, 0], [1, 4, 5]],
                       scores=[[0.9, 0.5, 0.4], [0.8, 0.7, 0.1]]),
    }


EXPECTED = {  # (metric, value) of the made-up English predictions, by hand
    "xnli": ("accuracy", 3 / 4),
    "xcopa": ("accuracy", 1 / 2),
    "panx": ("f1", 1 / 2),  # gold chunks PER, LOC; predicted PER, ORG: 1 correct of 2 predicted and 2 gold
    "xquad": ("f1", 1 / 2),  # "Eiffel Tower" matches "the Eiffel Tower" once normalised; "Lyon" is not "Paris"
    "lareqa": ("map@20", (1 / 1 + 2 / 3) / 2 / 2),  # a: hits at ranks 1 and 3 of 2 relevant; b: no hit
}


@pytest.mark.parametrize("task", list(_made_up()))
def test_each_kind_scores_its_prediction_files_as_its_tables(task, tmp_path):
    table = pd.DataFrame(_made_up()[task])
    preds = {("en", ""): table, ("de", ""): table.iloc[::-1].reset_index(drop=True)}
    written = write_predictions(tmp_path, task, preds, key="k1")
    assert [p.name for p in written] == [f"{task}-en.parquet", f"{task}-de.parquet"]
    got_task, back, stale = read_predictions(tmp_path, "k1")
    assert got_task == task and not stale and list(back) == [("de", ""), ("en", "")]  # files in name order
    direct, rescored = score_predictions(task, preds), score_predictions(task, back)

    def key(r):
        return r["language"], r["metric"]

    assert sorted(map(key, direct)) == sorted(map(key, rescored))
    by = {key(r): r for r in rescored}
    for r in direct:
        s = by[key(r)]
        for c in ("value", "n", "ci_low", "ci_high"):
            assert r[c] == s[c] or (np.isnan(r[c]) and np.isnan(s[c])), (task, key(r), c)
        if "per_example" in r:
            assert np.array_equal(r["per_example"], s["per_example"])
    metric, value = EXPECTED[task]
    assert by[("en", metric)]["value"] == pytest.approx(value)
    if task == "panx":
        assert by[("en", "truncated_words")]["value"] == 1


def test_prediction_files_name_their_pair_and_keep_stale_files_apart(tmp_path):
    table = pd.DataFrame(_made_up()["xnli"])
    write_predictions(tmp_path, "xnli", {("en", "de"): table}, key="old")
    write_predictions(tmp_path, "xnli", {("en", ""): table}, key="new")
    assert prediction_file(tmp_path, "xnli", "en", "de").is_file()
    _, back, stale = read_predictions(tmp_path, "new")
    assert list(back) == [("en", "")] and [p.name for p in stale] == ["xnli-en-de.parquet"]
    with pytest.raises(FileNotFoundError, match="no prediction file of transfer key gone"):
        read_predictions(tmp_path, "gone")
    with pytest.raises(ValueError, match="reserve"):
        write_predictions(tmp_path, "xnli", {("en", ""): table.assign(key="x")}, key="new")


def test_sentence_predictions_count_the_filled_words_of_each_sentence():
    enc = [dict(word_ids=[None, 0, 0, 1, None], n_words=3), dict(word_ids=[None, 0, None], n_words=1)]
    logits = [np.array([[0, 1], [1, 0], [1, 0], [0, 1], [0, 0]]), np.eye(3, 2)]  # word 2 of sentence 0 was cut off
    tags, filled = sentence_predictions(logits, enc, ["O", "B-PER"])
    assert tags == [["O", "B-PER", "O"], ["B-PER"]] and filled == [1, 0]
    assert word_predictions(logits, enc, ["O", "B-PER"]) == (tags, 1)
