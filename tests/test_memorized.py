"""The entity-tagging gate: the memorized-entity bar (xltlib.evaluation.memorized), the chunk counts the train stage
writes on the selection sentences, and the gate's verdict on them (xltlib.analysis.gate.span_verdict), with its
calibration on simulated taggers at the bar."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xltlib.analysis.gate import MEMORIZED, SelectionRows, apply_gate, collapse_text, quality_gate, selection_rows
from xltlib.analysis.recipes import recipe_table
from xltlib.config.validate import load_config
from xltlib.data import tasks as T
from xltlib.data.split import select_records, train_records
from xltlib.evaluation.memorized import MemorizedEntities, is_entity_tagging, memorized_entity_counts
from xltlib.evaluation.metrics import f1_from_counts
from xltlib.runner.run_dir import init_run
from xltlib.runner.stages import stage_data, stage_train

SMOKE_SUITE = Path(__file__).resolve().parents[1] / "params" / "smoke-suite.yaml"


def sent(text: str, tags: str) -> dict:
    return dict(tokens=text.split(), tags=tags.split())


TRAIN = [sent("New York is big", "B-LOC I-LOC O O"),
         sent("York won", "B-ORG O"),
         sent("Ann visited York", "B-PER O B-LOC"),  # York: ORG once, LOC once -> ambiguous, not memorized
         sent("Ann Lee met Bob", "B-PER I-PER O B-PER"),
         sent("Bob Smith left", "B-ORG I-ORG O")]  # "Bob Smith" an ORG here; "Bob" alone stays PER


def test_only_phrases_with_one_type_are_memorized_and_the_longest_wins():
    m = MemorizedEntities.learn(TRAIN)
    assert m.phrases == {("New", "York"): "LOC", ("Ann",): "PER", ("Ann", "Lee"): "PER", ("Bob",): "PER",
                         ("Bob", "Smith"): "ORG"}
    assert m.longest == 2
    assert m.tag("Bob Smith and Ann Lee in New York".split()) == \
        "B-ORG I-ORG O B-PER I-PER O B-LOC I-LOC".split()
    assert m.tag("York and Bob".split()) == ["O", "O", "B-PER"]  # ambiguous York untagged
    assert MemorizedEntities.learn([]).tag(["a"]) == ["O"]


def test_memorized_counts_give_seqeval_f1_on_the_scored_sentences():
    scored = [sent("Ann met Bob Smith", "B-PER O B-PER I-PER"),  # Ann right; Bob Smith predicted ORG: wrong type
              sent("New York", "B-LOC I-LOC"),  # right
              sent("Carl slept", "B-PER O")]  # unknown name: missed
    counts = memorized_entity_counts(TRAIN, scored)
    assert counts.tolist() == [[1, 2, 2], [1, 1, 1], [0, 0, 1]]
    p, r = 2 / 3, 2 / 4
    assert f1_from_counts(counts) == pytest.approx(2 * p * r / (p + r))
    assert memorized_entity_counts(TRAIN, []).shape == (0, 3)


def test_entity_tagging_is_the_iob_token_task_only():
    assert is_entity_tagging(T.get_task("panx"))
    assert not is_entity_tagging(T.get_task("udpos")) and not is_entity_tagging(T.get_task("xnli"))


def _rows(cks, task="panx"):
    return pd.DataFrame([dict(checkpoint=ck, task=task, method=ck.rsplit("-", 1)[0], seed=int(ck.rsplit("-", 1)[1]),
                              language=lang, language2="", metric="score", value=0.7, n=100)
                         for ck in cks for lang in ("en", "de")])


def _log(cks, epochs=3, task="panx"):
    return pd.DataFrame([dict(checkpoint=ck, task=task, metric="train_loss", value=0.3, epoch=e, select_score=0.5,
                              plateau="", prior_entropy=np.nan, plateau_tail_loss=np.nan)
                         for ck in cks for e in range(epochs)])


def _tagger_counts(rng, n: int, f1: float, gold: np.ndarray | None = None) -> np.ndarray:
    """Chunk counts of n sentences (of ``gold`` chunks each, else drawn) from a tagger whose precision and recall
    (so its F1) are ``f1``: each gold chunk found with probability f1, false chunks added so that precision is f1
    too. Two taggers on the same ``gold`` are correlated as taggers on the same sentences are."""
    gold = rng.poisson(1.5, n) if gold is None else gold
    correct = rng.binomial(gold, f1)
    false = rng.poisson(1.5 * (1 - f1), n)
    return np.stack([correct, correct + false, gold], axis=1)


def test_the_span_gate_holds_the_selection_f1_ci_to_the_memorized_bar():
    rng = np.random.default_rng(0)
    counts = {"baseline-1": _tagger_counts(rng, 300, 0.7), "pgd-1": _tagger_counts(rng, 300, 0.15),
              "pgd-2": np.zeros((300, 3), dtype=np.int64)}
    counts["pgd-2"][:, 2] = 1  # predicts O everywhere: F1 0
    reference = _tagger_counts(rng, 300, 0.13)
    sel = {"panx": SelectionRows("panx", 300, np.nan, "panx held-out groups of the English training rows: "
                                 "train_file", reference=reference, counts=counts)}
    gate = apply_gate(_rows(counts), {}, train=_log(counts), selection=sel, scored={"panx": "dev"})
    t = gate.table.set_index("checkpoint")
    assert (t["bar"] == f1_from_counts(reference)).all() and (t["bar_kind"] == MEMORIZED).all()
    assert t["majority"].isna().all()
    assert t.loc["baseline-1", "english"] == pytest.approx(f1_from_counts(counts["baseline-1"]))
    assert t.loc["baseline-1", "passes"] and np.allclose(t["ci_level"], 1 - 0.05 / 3)
    assert t.loc["baseline-1", "ci_lo"] < t.loc["baseline-1", "english"] < t.loc["baseline-1", "ci_hi"]
    assert not t.loc["pgd-1", "passes"] and not t.loc["pgd-2", "passes"]
    assert "memorized-entity F1" in t.loc["pgd-2", "note"] and t.loc["pgd-2", "english"] == 0
    assert gate.failed == {("panx", "pgd-1"), ("panx", "pgd-2")}
    assert "pgd: 2 of 2 panx seeds did not learn" in collapse_text(gate.table)
    # a checkpoint trained before the counts were written is not gated, and the row and the notes say how to gate it
    old = quality_gate(_rows(["rs_da-1"]), {}, train=_log(["rs_da-1"]), selection=sel).iloc[0]
    assert old["passes"] and np.isnan(old["bar"]) and "results/selection/rs_da-1.parquet missing" in old["note"]
    assert old["note"].startswith("NOT GATED") and collapse_text(pd.DataFrame([old])) == ""
    mixed = apply_gate(_rows(["baseline-1", "rs_da-1"]), {}, train=_log(["baseline-1", "rs_da-1"]), selection=sel)
    assert any("NOT GATED" in n and "panx/rs_da-1" in n for n in mixed.notes)
    short = {"panx": SelectionRows("panx", 301, np.nan, "x", reference=reference, counts=counts)}
    assert "300 sentences, not 301" in quality_gate(_rows(["pgd-1"]), {}, train=_log(["pgd-1"]),
                                                    selection=short).iloc[0]["note"]
    # no selection score in the train log: an error, as for a classifier
    with pytest.raises(ValueError, match="checkpoint pgd-1 has no English selection score"):
        quality_gate(_rows(["pgd-1"]), {}, train=None, selection=sel)


def test_a_recipe_search_on_an_entity_task_judges_each_cell_by_the_same_span_rule():
    rng = np.random.default_rng(2)
    counts = {"pgd@lr=1e-4-1": _tagger_counts(rng, 300, 0.7), "pgd@lr=2e-5-1": _tagger_counts(rng, 300, 0.1)}
    log = _log(counts).assign(method=lambda d: d["checkpoint"].str.rsplit("-", n=1).str[0], seed=1, n=10,
                              elapsed_s=60.0)
    sel = {"panx": SelectionRows("panx", 300, np.nan, "x", reference=_tagger_counts(rng, 300, 0.13), counts=counts)}
    table = recipe_table(log, sel, lambda entry: (entry.split("@")[0], {"lr": float(entry.split("=")[1])}))
    t = table.set_index("checkpoint")
    assert t.loc["pgd@lr=1e-4-1", "learned"] and not t.loc["pgd@lr=2e-5-1", "learned"]
    assert t.loc["pgd@lr=1e-4-1", "select_score"] == pytest.approx(f1_from_counts(counts["pgd@lr=1e-4-1"]))


def gate_pass_rate(rng, f1: float, bar: float, *, n=500, sims=300, epochs=3, bonferroni=True) -> float:
    """The share of simulated taggers of population F1 ``f1`` that pass against a memorized tagger of population F1
    ``bar`` on the same n sentences (each simulation: new sentences; the best of ``epochs`` independent draws of
    the tagger kept, the worst case for choosing among epochs)."""
    out = []
    for _ in range(sims):
        gold = rng.poisson(1.5, n)
        best = max((_tagger_counts(rng, n, f1, gold) for _ in range(epochs)), key=f1_from_counts)
        sel = {"panx": SelectionRows("panx", n, np.nan, "x", reference=_tagger_counts(rng, n, bar, gold),
                                     counts={"m-1": best})}
        out.append(quality_gate(_rows(["m-1"]), {}, train=_log(["m-1"], epochs if bonferroni else 1),
                                selection=sel)["passes"].iloc[0])
    return float(np.mean(out))


@pytest.mark.slow
def test_a_tagger_at_the_bar_rarely_passes_and_one_above_it_does():
    """Calibration: a tagger whose population F1 equals the memorized tagger's, on the same 500 selection
    sentences, passes at most 2.5% of the time (E x the one-sided 0.05 / 2E of the Bonferroni level, a bound for
    the best of E = 3 epochs) up to Monte-Carlo error; 10 points above the bar it passes nearly always."""
    rng = np.random.default_rng(1)
    sims = 300
    assert gate_pass_rate(rng, 0.3, 0.3, sims=sims) <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / sims)
    assert gate_pass_rate(rng, 0.40, 0.3, sims=sims) > 0.95


def test_the_train_stage_writes_the_kept_weights_chunk_counts_and_the_gate_reads_them(tmp_path):
    run = init_run(load_config(SMOKE_SUITE, ["grid.task=[panx]", "grid.method=[baseline]"]), tmp_path / "run")
    stage_data(run)
    cell = run.training_cells()[0]
    log = stage_train(run, cell.cell_id)
    recs = select_records(run.split("panx"), run.data_dir)
    counts = run.selection_counts()
    assert list(counts) == [cell.checkpoint] and counts[cell.checkpoint].shape == (len(recs), 3)
    # the same weights the loop kept: their F1 is the kept epoch's selection score
    kept = log.loc[log["epoch"] == log["selected_epoch"].iloc[0], "select_score"].dropna().iloc[0]
    assert f1_from_counts(counts[cell.checkpoint]) == pytest.approx(kept)
    assert counts[cell.checkpoint][:, 2].sum() > 0  # gold chunks: the rows are tagged sentences
    # the plateau check judged the tagger against its tags' prior, step by step weighted by labelled words
    assert (log["labelled"] > 0).all() and log["plateau"].iloc[0] != "not applicable"
    assert np.isfinite(log["prior_entropy"].iloc[0])
    sel = selection_rows(run)
    assert set(sel) == {"panx"} and sel["panx"].spans and sel["panx"].n == len(recs)
    bar = f1_from_counts(memorized_entity_counts(train_records(run.split("panx"), run.data_dir), recs))
    assert sel["panx"].memorized == pytest.approx(bar)
