"""xltlib.evaluation.robustness on the tiny random model: the same attacks at the same strengths for every checkpoint,
tidy rows and per-item outcomes, seeded and side-effect free; and the config keys that set the strengths."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from xltlib.config.schema import ConfigError, EvalConfig
from xltlib.config.validate import load_config
from xltlib.evaluation.attacks import STATUSES, AttackResult, summarize_attack
from xltlib.evaluation.predictions import read_predictions, write_predictions
from xltlib.evaluation.robustness import (
    ITEM_COLUMNS,
    RobustnessSettings,
    is_robustness_metric,
    metric_order,
    robustness_settings,
    score_robustness,
)
from xltlib.models.heads import load_classifier
from xltlib.models.load import load_tokenizer

N = 40
METRICS = {"robust_acc_clean", "robust_acc_pgd_0.5", "robust_acc_pgd_2", "attack_loss_gain_pgd_0.5",
           "attack_loss_gain_pgd_2", "robust_acc_noise_0.5", "robust_acc_synonym_attack", "attack_success_rate_synonym",
           "attack_perturbed_words_synonym", "attack_queries_synonym", "robust_acc_synonym_draw", "synonym_subst_rate"}


def _records(n=N):
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(40)]
    return [dict(id=100 + i, text_a=" ".join(rng.choice(words, 6)), text_b=" ".join(rng.choice(words, 5)),
                 label=int(i % 3)) for i in range(n)]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("syn") / "syn.json"
    path.write_text(json.dumps({f"w{i}": [f"w{i + 1}", f"w{i + 2}"] for i in range(0, 40, 3)}))
    return path


def _settings(table, **kw):
    return RobustnessSettings(**dict(dict(pgd_eps=(0.5, 2.0), noise_sigma=(0.5,), synonyms=table, pgd_steps=5,
                                          query_budget=40, max_change=1.0, sentences="both"), **kw))


def _model(seed):
    torch.manual_seed(seed)
    return load_classifier("tiny-random", 3), load_tokenizer("tiny-random")


@pytest.fixture(scope="module")
def scored(table):
    model, tok = _model(0)
    kw = dict(batch_size=16, max_length=32)
    state = torch.random.get_rng_state()
    first = score_robustness(model, tok, _records(), _settings(table), **kw)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    again = score_robustness(model, tok, _records(), _settings(table), **kw)
    other = score_robustness(*_model(1), _records(), _settings(table), **kw)  # another checkpoint
    return first, again, other


def test_rows_are_tidy_and_complete(scored):
    rows = scored[0].rows
    by = {r["metric"]: r for r in rows}
    assert set(by) == METRICS and len(rows) == len(METRICS)
    ids = [str(r["id"]) for r in _records()]
    for r in rows:
        assert set(r) - {"per_example", "item_ids"} == {"language", "language2", "metric", "value", "n", "ci_low",
                                                        "ci_high", "attack", "strength", "scale"}
        assert r["language"] == "en" and is_robustness_metric(r["metric"])
        if "per_example" in r:  # every value keeps its items, for comparisons paired by item
            assert len(r["per_example"]) == len(r["item_ids"]) == r["n"] and set(r["item_ids"]) <= set(ids)
            if r["n"]:
                assert np.mean(r["per_example"]) == pytest.approx(r["value"])
        if r["metric"].startswith("robust_acc"):
            assert r["n"] == N and r["item_ids"] == ids
            assert 0 <= r["value"] <= 1 and r["ci_low"] <= r["value"] <= r["ci_high"]
    assert (by["robust_acc_pgd_2"]["strength"], by["robust_acc_pgd_2"]["scale"]) == (2.0, "relative")
    assert (by["robust_acc_noise_0.5"]["strength"], by["robust_acc_noise_0.5"]["attack"]) == (0.5, "noise")
    assert (by["robust_acc_synonym_attack"]["strength"], by["robust_acc_synonym_attack"]["scale"]) == (40, "queries")
    assert by["robust_acc_synonym_draw"]["scale"] == "exact" and 0 < by["synonym_subst_rate"]["value"] < 0.5


def test_the_attacks_raise_the_loss_and_lower_accuracy(scored):
    by = {r["metric"]: r["value"] for r in scored[0].rows}
    assert 0 < by["attack_loss_gain_pgd_0.5"] < by["attack_loss_gain_pgd_2"]
    assert by["robust_acc_pgd_2"] <= by["robust_acc_pgd_0.5"] <= by["robust_acc_clean"]
    assert by["robust_acc_synonym_attack"] <= by["robust_acc_clean"]


def test_seeded_and_alike_for_every_checkpoint(scored):
    first, again, other = scored
    assert pd.DataFrame(first.rows).equals(pd.DataFrame(again.rows)) and first.items.equals(again.items)
    # another checkpoint meets the same attacks on the same items: same metrics, strengths, ids, drawn texts
    key = ["metric", "attack", "strength", "scale"]
    assert pd.DataFrame(first.rows)[key].equals(pd.DataFrame(other.rows)[key])
    acc = [[(r["metric"], r["item_ids"]) for r in x.rows if r["metric"].startswith("robust_acc")]
           for x in (first, other)]
    assert acc[0] == acc[1]
    draw = [x.items[x.items["attack"] == "synonym_draw"][["id", "text_a", "text_b"]].reset_index(drop=True)
            for x in (first, other)]
    assert draw[0].equals(draw[1])
    assert (first.items["id"] == other.items["id"]).all()


def test_per_item_outcomes_match_the_rows_and_round_trip(scored, tmp_path):
    rows, items = {r["metric"]: r for r in scored[0].rows}, scored[0].items
    assert list(items.columns) == list(ITEM_COLUMNS) and len(items) == N * 6  # clean, 2 x pgd, noise, attack, draw
    acc = items.groupby(["attack", "strength"], dropna=False)["correct"].mean()
    assert acc[("pgd", 2.0)] == pytest.approx(rows["robust_acc_pgd_2"]["value"])
    assert acc[("synonym_attack", 40.0)] == pytest.approx(rows["robust_acc_synonym_attack"]["value"])
    gain = items[(items["attack"] == "pgd") & (items["strength"] == 0.5)]["loss_gain"]
    assert gain.to_numpy() == pytest.approx(rows["attack_loss_gain_pgd_0.5"]["per_example"])
    syn = items[items["attack"] == "synonym_attack"]
    assert syn["status"].isin(STATUSES).all() and (syn["queries"].between(1, 40)).all()
    assert ((syn["status"] == "failed") == (syn["correct"] == 1)).all()
    # the summary rows are TextAttack's log of the same outcomes
    results = [AttackResult(r.status, r.text_a, r.text_b, r.prediction, int(r.queries), int(r.words),
                            int(r.words_total), int(r.words_changed), 0.0) for r in syn.itertuples()]
    log = summarize_attack(results)
    assert rows["robust_acc_synonym_attack"]["value"] == pytest.approx(log["accuracy_under_attack"])
    assert rows["attack_queries_synonym"]["value"] == pytest.approx(log["avg_queries"])
    assert rows["attack_success_rate_synonym"]["n"] == log["successful"] + log["failed"]
    # stored as the transfer stage stores predictions: one file, stamped with the key, read back equal
    write_predictions(tmp_path, "xnli", {("en", ""): items}, key="k1")
    task, back, stale = read_predictions(tmp_path, "k1")
    assert task == "xnli" and not stale and back[("en", "")].reset_index(drop=True).equals(items)


def test_max_examples_attacks_the_first_rows(table):
    out = score_robustness(*_model(0), _records(), _settings(table, pgd_eps=(0.5,), noise_sigma=(0.5,)),
                           batch_size=16, max_length=32, max_examples=7)
    assert all(r["n"] == 7 for r in out.rows if r["metric"].startswith("robust_acc"))
    assert set(out.items["id"]) == {str(100 + i) for i in range(7)}


def test_bf16_weights_score_the_same_attacks_and_give_the_fp32_weights_back(table):
    model, tok = _model(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = score_robustness(model, tok, _records(), _settings(table), batch_size=16, max_length=32, bf16=True)
    assert {r["metric"] for r in out.rows} == METRICS
    assert all(v.dtype == before[k].dtype and torch.equal(v, before[k]) for k, v in model.state_dict().items())
    gain = {r["metric"]: r["value"] for r in out.rows}
    assert 0 < gain["attack_loss_gain_pgd_0.5"] < gain["attack_loss_gain_pgd_2"]


def test_metric_order_reads_clean_then_attacks_by_strength(scored):
    order = metric_order([r["metric"] for r in scored[0].rows] + ["accuracy"])
    assert order[:3] == ["robust_acc_clean", "robust_acc_pgd_0.5", "robust_acc_pgd_2"]
    assert order[-2:] == ["robust_acc_synonym_draw", "synonym_subst_rate"] and "accuracy" not in order


# ------------------------------------------------------------------------------------------------- config keys
def test_strengths_are_one_list_or_one_per_task(table, tmp_path):
    ev = EvalConfig()
    assert ev.robustness_max_examples >= 500
    assert ev.robustness_strengths("xnli") == ev.robustness_strengths("pawsx") == {
        "pgd": list(ev.robustness_pgd_eps), "noise": list(ev.robustness_noise_sigma)}
    ev = EvalConfig(robustness_pgd_eps={"xnli": [0.02, 0.05], "pawsx": [0.1]}, robustness_noise_sigma=[0.2])
    assert ev.robustness_strengths("pawsx") == {"pgd": [0.1], "noise": [0.2]}
    s = robustness_settings(ev, "xnli", tmp_path)
    assert s.pgd_eps == (0.02, 0.05) and s.synonyms == tmp_path / "synonyms" / "counterfitted_neighbors.json"
    assert robustness_settings(EvalConfig(robustness_synonyms=str(table)), "xnli", None).synonyms == table


def test_an_attack_without_a_strength_for_a_task_names_the_key(tmp_path):
    ev = EvalConfig(robustness_noise_sigma={"xnli": [0.1]})
    with pytest.raises(ConfigError, match=r"evaluate.robustness_noise_sigma sets no strength for task 'pawsx'"):
        ev.robustness_strengths("pawsx")
    with pytest.raises(ValueError, match="evaluate.robustness_synonyms is not set"):
        robustness_settings(EvalConfig(), "xnli", None)
    params = tmp_path / "p.yaml"
    params.write_text("smoke: true\ngrid: {model: [tiny-random], task: [xnli, pawsx]}\n"
                      "evaluate: {robustness: true, robustness_pgd_eps: {xnli: [0.05]}}\n")
    with pytest.raises(ConfigError, match=rf"{params}: evaluate.robustness_pgd_eps sets no strength for task 'pawsx'"):
        load_config(params)
    params.write_text("smoke: true\ngrid: {model: [tiny-random], task: [xnli]}\n"
                      "evaluate: {robustness_pgd_eps: {xnli: [0.05], xnl: [0.1]}}\n")
    with pytest.raises(ConfigError, match="evaluate.robustness_pgd_eps.xnl: not a registered task"):
        load_config(params)
    params.write_text("smoke: true\ngrid: {model: [tiny-random], task: [xnli]}\n"
                      f"evaluate: {{robustness: true, robustness_synonyms: {tmp_path / 'none.json'}}}\n")
    with pytest.raises(ConfigError, match="evaluate.robustness_synonyms = .*none.json'?: no such file"):
        load_config(params)


@pytest.mark.parametrize("value", [[], [0.0, 0.1], [0.1, 0.1], {"xnli": []}])
def test_bad_strength_lists_are_named(value):
    with pytest.raises(ValidationError, match="robustness_pgd_eps.*expected a non-empty list of distinct strengths"):
        EvalConfig(robustness_pgd_eps=value)
