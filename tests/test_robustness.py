"""xltlib.evaluation.robustness on the tiny random model: tidy rows, a working adversary, seeded and side-effect free."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from xltlib.models.heads import load_classifier
from xltlib.models.load import load_tokenizer
from xltlib.training.objectives import build_objective
from xltlib.evaluation.robustness import attack_settings, robustness_rows


def _records(n=40):
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(40)]
    return [dict(text_a=" ".join(rng.choice(words, 6)), text_b=" ".join(rng.choice(words, 5)), label=int(i % 3))
            for i in range(n)]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    table = tmp_path_factory.mktemp("syn") / "syn.json"
    table.write_text('{"w1": ["w2"], "w3": ["w4", "w5"], "w6": ["w7"]}')
    obj = build_objective("rs_da", {"synonyms": str(table)})
    torch.manual_seed(0)
    model, tok = load_classifier("tiny-random", 3), load_tokenizer("tiny-random")
    kw = dict(objective=obj, eps=0.5, attack_steps=5, batch_size=16, max_length=32, seed=3)
    state = torch.random.get_rng_state()
    rows = robustness_rows(model, tok, _records(), **kw)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    again = robustness_rows(model, tok, _records(), **kw)
    return rows, again


def test_rows_are_tidy_and_complete(scored):
    rows, _ = scored
    by = {r["metric"]: r for r in rows}
    assert set(by) == {"robust_acc_clean", "robust_acc_pgd_eps", "robust_acc_pgd_2eps", "attack_loss_gain_pgd_eps",
                       "attack_loss_gain_pgd_2eps", "robust_acc_noise_sigma", "robust_acc_synonym",
                       "synonym_subst_rate"}
    for r in rows:
        assert set(r) - {"per_example"} == {"language", "language2", "metric", "value", "n", "ci_low", "ci_high",
                                            "strength", "scale"}
        if "per_example" in r:  # accuracies keep their rows for the paired comparison with the baseline
            assert len(r["per_example"]) == r["n"] and np.mean(r["per_example"]) == pytest.approx(r["value"])
        assert r["language"] == "en" and r["n"] == 40
        if r["metric"].startswith("robust_acc"):
            assert 0 <= r["value"] <= 1 and r["ci_low"] <= r["value"] <= r["ci_high"]
    assert by["robust_acc_pgd_eps"]["strength"] == 0.5 and by["robust_acc_pgd_2eps"]["strength"] == 1.0
    assert by["robust_acc_noise_sigma"]["strength"] == 0.01  # rs_rp's default sigma
    assert by["robust_acc_synonym"]["scale"] == "exact" and 0 < by["synonym_subst_rate"]["value"] < 0.2


def test_the_attack_raises_the_loss_and_lowers_accuracy(scored):
    rows, again = scored
    by = {r["metric"]: r["value"] for r in rows}
    assert 0 < by["attack_loss_gain_pgd_eps"] < by["attack_loss_gain_pgd_2eps"]
    assert by["robust_acc_pgd_2eps"] <= by["robust_acc_pgd_eps"] <= by["robust_acc_clean"]
    assert pd.DataFrame(rows).equals(pd.DataFrame(again))  # same seed, same rows (NaN CIs compare equal)


def test_attack_settings_follow_the_trained_objective():
    assert attack_settings(build_objective("pgd", {"eps": 0.1, "scale": "relative"}))[
        "eps_scale"] == "relative"
    s = attack_settings(build_objective("freelb", {"adv_max_norm": 0.4}))
    assert s["eps"] == 0.4 and s["eps_scale"] == "absolute"
    s = attack_settings(build_objective("rs_rp", {"sigma": 0.05, "scale": "relative"}))
    assert (s["sigma"], s["sigma_scale"], s["eps"]) == (0.05, "relative", 0.2)
    s = attack_settings(build_objective("pgd"), eps=0.02, sigma=0.1, scale="relative")  # matched across methods
    assert (s["eps"], s["eps_scale"], s["sigma"], s["sigma_scale"]) == (0.02, "relative", 0.1, "relative")
    with pytest.raises(ValueError, match="robustness scale = 'rel': expected one of absolute, relative"):
        attack_settings(None, scale="rel")
