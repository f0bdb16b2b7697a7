"""The statistics of xltlib.analysis (gate, compare, rq1, rq2, inference): known answers, empty groups, and
calibration.

Calibration: null data shaped like a run (languages x checkpoints, language- and checkpoint-level effects,
checkpoint-specific slopes over a language covariate) -> every test the report uses rejects at most 10%
of the time at alpha = 0.05; with a planted effect it rejects most of the time. Small counts keep it fast.
"""
import itertools
import math

import numpy as np
import pandas as pd
import pytest

from xltlib.analysis.compare import method_vs_baseline
from xltlib.analysis.gate import drop_failed, gate_failures, quality_gate, wilson_ci
from xltlib.analysis.inference import fe_slope, holm, permutation_p
from xltlib.analysis.rq1 import (across_languages, across_languages_table, drift_adjusted, english_adjusted,
                                 within_languages)
from xltlib.analysis.rq2 import gain_slopes, matched_gains

LANGS = ["de", "fr", "es", "ru", "zh", "ar", "hi", "sw", "ur", "th", "tr", "vi", "bg", "el"]
METHODS = ["baseline", "pgd", "freelb", "rs_rp", "rs_da"]
SEEDS = [1, 2, 3]
N_SIM = 40
ALPHA = 0.05


def panel(rng, *, beta_across=0.0, beta_within=0.0, langs=LANGS, methods=METHODS, seeds=SEEDS, task="xnli"):
    """One simulated run in the merged layout: alignment and transfer per (checkpoint, language).

    Both have a language effect, a checkpoint effect, a checkpoint-specific slope over a language
    covariate (so residuals correlate within checkpoint and within language) and noise. Under the null
    (betas 0) the two are independent. ``beta_across`` makes transfer's language effect follow
    alignment's; ``beta_within`` adds beta * (checkpoint x language part of alignment) to transfer."""
    L = len(langs)
    cks = [(m, s) for m in methods for s in seeds]
    C = len(cks)
    s_x, s_y = rng.normal(size=L), rng.normal(size=L)  # language covariates (independent under null)
    a_lang = rng.normal(0, 0.1, L)
    y_lang = rng.normal(0, 0.05, L) + beta_across * a_lang
    a_ck, y_ck = rng.normal(0, 0.05, C), rng.normal(0, 0.03, C)
    g_x, g_y = rng.normal(0, 0.03, C), rng.normal(0, 0.02, C)
    inter_a = g_x[:, None] * s_x[None, :] + rng.normal(0, 0.02, (C, L))
    al = 0.6 + a_lang[None, :] + a_ck[:, None] + inter_a
    tr = (0.65 + y_lang[None, :] + y_ck[:, None] + g_y[:, None] * s_y[None, :] + rng.normal(0, 0.01, (C, L))
          + beta_within * inter_a)
    rows = []
    for i, (m, s) in enumerate(cks):
        for j, lg in enumerate(langs):
            rows.append(dict(checkpoint=f"{task}-{m}-{s}", task=task, method=m, seed=s, language=lg,
                             metric="retrieval.acc1_en2xx", layer=12, alignment=al[i, j], score=tr[i, j]))
    return pd.DataFrame(rows)


def transfer_rows(rng, *, slope=0.0, diff=0.0, tasks=("xnli", "pawsx"), langs=LANGS, methods=METHODS,
                  seeds=SEEDS, n=1000):
    """Tidy transfer rows: task + language + method x language (shared across tasks, as a language in
    two tasks would be) + checkpoint shock + noise; ``slope`` plants gain = slope * log10(size) for
    non-baseline methods, ``diff`` a constant gain."""
    from xltlib.data.languages import resource_table

    size = np.log10(resource_table().loc[langs, "size_gib"].to_numpy(float))
    size = size - size.mean()
    ml = {m: rng.normal(0, 0.01, len(langs)) for m in methods}
    lang = rng.normal(0, 0.05, len(langs))
    rows = []
    for t in tasks:
        t_eff = rng.normal(0.7, 0.02)
        for m in methods:
            for s in seeds:
                ck = rng.normal(0, 0.01)
                for j, lg in enumerate(["en", *langs]):
                    if lg == "en":
                        v = t_eff + 0.1 + ck
                    else:
                        v = t_eff + lang[j - 1] + ml[m][j - 1] + ck + rng.normal(0, 0.005)
                        if m != "baseline":
                            v += slope * size[j - 1] + diff
                    rows.append(dict(checkpoint=f"{t}-{m}-{s}", task=t, method=m, seed=s, language=lg,
                                     language2="", metric="score", value=v, n=n))
    return pd.DataFrame(rows)


def rejection_rate(fn, n_sim=N_SIM, seed=0):
    rng = np.random.default_rng(seed)
    return float(np.mean([fn(rng) for _ in range(n_sim)]))

def assert_calibrated(rejects, *, null, planted, seeds, label, power_min=0.7):
    """Rejection rate at alpha under simulated null data <= 0.10, and >= ``power_min`` with a planted effect."""
    null_rate = rejection_rate(rejects(null), seed=seeds[0])
    power = rejection_rate(rejects(planted), seed=seeds[1])
    print(f"{label}: null {null_rate:.3f}, planted {power:.3f}")
    assert null_rate <= 0.10
    assert power >= power_min



# --------------------------------------------------------------------------------------- calibration
def test_across_languages_calibrated_and_powerful():
    def rejects(beta):
        def f(rng):
            row = across_languages(panel(rng, beta_across=beta), n_perm=200, n_boot=200, rng=rng)
            return row["p"] <= ALPHA
        return f

    null = rejection_rate(rejects(0.0))
    power = rejection_rate(rejects(1.0), seed=1)
    print(f"across-languages permutation: null {null:.3f}, planted {power:.3f}")
    assert null <= 0.10
    assert power >= 0.7


def test_across_languages_ci_covers_zero_under_null():
    def misses(rng):
        row = across_languages(panel(rng), n_perm=100, n_boot=200, rng=rng)
        return not row["r_lo"] <= 0 <= row["r_hi"]

    rate = rejection_rate(misses, seed=2)
    print(f"across-languages bootstrap CI excludes 0 under null: {rate:.3f}")
    assert rate <= 0.10


def test_language_permutation_holds_its_level_where_a_pointwise_one_does_not():
    """The report's RQ1 permutation test (``across_languages``: ``permutation_p`` over per-language means) rejects
    a true null about 5% of the time on data clustered by language and checkpoint; the same ``permutation_p``
    over the points (the pointwise test: a language's 15 checkpoint copies taken as independent) rejects it far
    more often. 400 simulated runs: the binomial SE at 5% is 1.1 points, so the bound 8.5% (3 SE) passes a
    calibrated test and fails one that rejects 12% of the time (3.2 SE below that)."""
    rng = np.random.default_rng(3)
    by_language, pointwise = [], []
    for _ in range(400):
        d = panel(rng)
        by_language.append(across_languages(d, x="alignment", y="score", n_perm=100, n_boot=20, rng=rng)["p"])
        pointwise.append(permutation_p(d["alignment"].to_numpy(), d["score"].to_numpy(), 100, rng)[0])
    level, liberal = np.mean(np.array(by_language) <= ALPHA), np.mean(np.array(pointwise) <= ALPHA)
    print(f"clustered null, rejection at 5%: by language {level:.3f}, pointwise {liberal:.3f}")
    assert 0.02 <= level <= 0.085
    assert liberal >= 0.3


def test_within_languages_calibrated_and_powerful():
    def rejects(beta):
        def f(rng):
            return within_languages(panel(rng, beta_within=beta))["p"] <= ALPHA
        return f

    assert_calibrated(rejects, null=0.0, planted=0.5, seeds=(4, 5),
                      label="within-languages two-way clustered FE")


def test_rq2_slopes_calibrated_and_powerful():
    def rejects(slope, col="p"):
        def f(rng):
            tr = transfer_rows(rng, slope=slope, methods=["baseline", "pgd"])
            out, _ = gain_slopes(matched_gains(tr))
            return out.iloc[0][col] <= ALPHA
        return f

    assert_calibrated(rejects, null=0.0, planted=0.03, seeds=(6, 7),
                      label="RQ2 gain ~ task shares + log10 size, one point per language")

    def any_holm(rng):  # family-wise: any of four methods rejected after Holm
        out, _ = gain_slopes(matched_gains(transfer_rows(rng)))
        return bool((out["p_holm"] <= ALPHA).any())

    fw = rejection_rate(any_holm, n_sim=25, seed=8)
    print(f"RQ2 Holm across 4 methods, family-wise: {fw:.3f}")
    assert fw <= 0.10


def test_method_vs_baseline_ci_calibrated_and_powerful():
    def excludes_zero(diff):
        def f(rng):
            tr = transfer_rows(rng, diff=diff, methods=["baseline", "pgd"], tasks=("xnli",))
            row = method_vs_baseline(tr, n_boot=200, seed=int(rng.integers(1 << 30))).iloc[0]
            return not row["ci_lo"] <= 0 <= row["ci_hi"]
        return f

    null = rejection_rate(excludes_zero(0.0), n_sim=100, seed=9)
    power = rejection_rate(excludes_zero(0.06), seed=10)
    print(f"method vs baseline paired bootstrap: null {null:.3f}, planted {power:.3f}")
    assert null <= 0.10
    assert power >= 0.7


def per_example_rows(rng, *, diff=0.0, n_langs=6, seeds=3, n=200):
    """Transfer rows with 0/1 correctness per test example, as the pair-classification tasks record them:
    shared example difficulty (the test set is a sample of examples), language levels, a seed-level
    shift per checkpoint, and ``diff`` (logit scale) added for the method."""
    a = rng.normal(0.5, 0.5, n_langs)
    z = rng.normal(0, 1.5, n)
    rows = []
    for m in ("baseline", "pgd"):
        for s in range(seeds):
            c = rng.normal(0, 0.1) + (diff if m == "pgd" else 0.0)
            for j in range(n_langs):
                p = 1 / (1 + np.exp(-(a[j] + c + z + rng.normal(0, 0.3, n))))
                v = (rng.random(n) < p).astype(np.int8)
                rows.append(dict(checkpoint=f"{m}{s}", task="xnli", method=m, seed=s, language=f"l{j}",
                                 language2="", metric="score", value=v.mean(), n=n, per_example=v))
    return pd.DataFrame(rows)


def test_method_vs_baseline_per_example_ci_calibrated_and_powerful():
    def excludes_zero(diff):
        def f(rng):
            row = method_vs_baseline(per_example_rows(rng, diff=diff), n_boot=100,
                                       seed=int(rng.integers(1 << 30))).iloc[0]
            assert row["resampled"].startswith("test examples")
            return not row["ci_lo"] <= 0 <= row["ci_hi"]
        return f

    assert_calibrated(excludes_zero, null=0.0, planted=0.8, seeds=(12, 13),
                      label="method vs baseline, paired bootstrap over test examples")


# ------------------------------------------------------------------------------------- known answers
def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.01, 0.04, np.nan, 0.03, 0.2])
    ok = np.isfinite(p)
    expect = multipletests(p[ok], method="holm")[1]
    got = holm(p)
    assert np.isnan(got[2]) and np.allclose(got[ok], expect)


def test_exact_permutation_enumerates_all_orders():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    b = a.copy()
    p, n, exact = permutation_p(a, b, 1000, np.random.default_rng(0))
    assert exact and n == math.factorial(5)
    # only the identity and the reversal reach |r| = 1
    assert p == pytest.approx(2 / 120)
    r_all = [abs(np.corrcoef(a, b[list(q)])[0, 1]) for q in itertools.permutations(range(5))]
    b2 = np.array([2.0, 1.0, 3.0, 5.0, 4.0])
    p2, _, _ = permutation_p(a, b2, 1000, np.random.default_rng(0))
    r_obs = abs(np.corrcoef(a, b2)[0, 1])
    r_all = [abs(np.corrcoef(a, b2[list(q)])[0, 1]) for q in itertools.permutations(range(5))]
    assert p2 == pytest.approx(np.mean(np.array(r_all) >= r_obs - 1e-10))


def test_permutations_raised_so_holm_is_not_decided_by_the_floor():
    rng = np.random.default_rng(0)
    d = pd.concat([panel(rng, beta_across=3.0).assign(layer=layer) for layer in range(12)])
    t = across_languages_table(d, n_perm=100, n_boot=100)
    assert (t["n_perm"] >= 20 * 12 / 0.05).all()
    assert (t["p_holm"] <= 0.05).all()  # a strong effect survives Holm over 12 layers


def test_language_means_cancel_checkpoint_shifts():
    rng = np.random.default_rng(1)
    d = panel(rng)
    shifted = d.copy()
    shifted.loc[shifted["checkpoint"] == shifted["checkpoint"].iloc[0], "score"] += 5.0
    shifted = shifted.drop(index=shifted.index[3])  # an unbalanced panel too
    a = across_languages(d, n_perm=50, n_boot=50)["r"]
    b = across_languages(shifted, n_perm=50, n_boot=50)["r"]
    assert abs(a - b) < 0.05


def test_fe_slope_matches_statsmodels_cluster():
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(2)
    d = panel(rng, beta_within=0.7)
    fit = fe_slope(d, y="score", x="alignment", fe=("checkpoint", "language"), cluster=("language",))
    res = smf.ols("score ~ alignment + C(checkpoint) + C(language)", data=d).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(d["language"])[0]})
    assert fit["coef"] == pytest.approx(res.params["alignment"])
    assert fit["se"] == pytest.approx(res.bse["alignment"], rel=1e-6)
    assert 0 < fit["partial_r2"] < 1
    two = within_languages(d)
    assert two["coef"] == pytest.approx(fit["coef"]) and two["df"] == len(LANGS) - 1


def test_rq2_recovers_slope_and_counts_languages_once():
    rng = np.random.default_rng(3)
    tr = transfer_rows(rng, slope=-0.02, methods=["baseline", "pgd"])
    gains = matched_gains(tr)
    assert set(gains["seed"]) == set(SEEDS) and "en" not in set(gains["language"])
    out, frame = gain_slopes(gains)
    r = out.iloc[0]
    assert r["ci_lo"] <= -0.02 <= r["ci_hi"] and r["slope_per_10x"] < 0
    assert r["n_languages"] == len(LANGS) and r["n_tasks"] == 2 and r["df"] == len(LANGS) - 2
    # one seed of pgd without a baseline counterpart is dropped, not compared with another seed
    g2 = matched_gains(tr[~((tr["method"] == "baseline") & (tr["seed"] == 3))])
    assert set(g2["seed"]) == {1, 2} and g2.attrs["n_unmatched"] > 0


def test_method_vs_baseline_known_difference_and_per_example():
    rng = np.random.default_rng(4)
    tr = transfer_rows(rng, diff=0.05, methods=["baseline", "pgd"], tasks=("xnli",))
    row = method_vs_baseline(tr, n_boot=300).iloc[0]
    assert row["diff"] == pytest.approx(0.05, abs=0.01) and row["ci_lo"] > 0
    assert row["resampled"].startswith("languages (no per-item values") and row["n_languages"] == len(LANGS)
    # per-example values: 0/1 correctness on shared examples
    rows = []
    for m, acc in (("baseline", 0.6), ("pgd", 0.7)):
        for s in (1, 2, 3):
            for lg in ("en", "de", "sw", "hi"):
                v = (rng.random(400) < acc).astype(float)
                rows.append(dict(checkpoint=f"{m}{s}", task="xnli", method=m, seed=s, language=lg, language2="",
                                 metric="score", value=v.mean(), n=400, per_example=v))
    out = method_vs_baseline(pd.DataFrame(rows), n_boot=100).iloc[0]
    assert out["resampled"].startswith("test examples (item ids shared") and out["ci_lo"] < out["diff"] < out["ci_hi"]
    assert out["n_seeds"] == out["n_baseline_seeds"] == 3 and out["seed_df"] == 2 + 2 and out["n_items"] == 400


def test_quality_gate():
    rows = []
    for ck, en in (("good", 0.80), ("chance", 0.34), ("near", 0.355)):
        for lg, v in (("en", en), ("de", en - 0.05)):
            rows.append(dict(checkpoint=ck, task="xnli", method="baseline", seed=1, language=lg, language2="",
                             metric="score", value=v, n=1000))
    rows.append(dict(checkpoint="tag", task="udpos", method="baseline", seed=1, language="en", language2="",
                     metric="score", value=0.2, n=100, ci_low=0.15, ci_high=0.26))
    g = quality_gate(pd.DataFrame(rows), {"xnli": 1 / 3}).set_index("checkpoint")
    assert g.loc["good", "passes"] and g.loc["good", "ci_lo"] > 1 / 3
    assert not g.loc["chance", "passes"] and "excluded" in g.loc["chance", "note"]
    assert not g.loc["near", "passes"]  # 35.5% on 1000 rows: CI reaches below 33.3%
    assert g.loc["tag", "passes"] and "not gated" in g.loc["tag", "note"]
    assert (g.loc["tag", "ci_lo"], g.loc["tag", "ci_hi"]) == (0.15, 0.26)  # F1 is no proportion: its bootstrap CI
    lo, hi = wilson_ci(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    failed = gate_failures(g.reset_index())
    assert failed == {("xnli", "chance"), ("xnli", "near")}
    kept = drop_failed(pd.DataFrame(rows), failed)
    assert set(kept["checkpoint"]) == {"good", "tag"}


def test_small_groups_say_why_and_never_raise():
    rng = np.random.default_rng(5)
    d = panel(rng, langs=["de", "sw"])
    row = across_languages(d, n_perm=50, n_boot=50)
    assert np.isnan(row["p"]) and "2 language(s)" in row["note"]
    one = panel(rng, methods=["baseline"], seeds=[1])
    assert "1 checkpoint(s)" in within_languages(one)["note"]
    assert "1 checkpoint(s)" in across_languages(one)["note"]
    t = across_languages_table(pd.concat([d.assign(task="a"), panel(rng).assign(task="b")]), n_perm=50,
                                 n_boot=50)
    assert len(t) == 2 and t.set_index("task").loc["a", "note"].startswith("empty")
    assert np.isfinite(t.set_index("task").loc["b", "p"])
    tr = transfer_rows(rng, langs=["de", "fr"], methods=["baseline", "pgd"])
    out, _ = gain_slopes(matched_gains(tr))
    assert out.iloc[0]["note"].startswith("empty") and np.isnan(out.iloc[0]["p"])
    mvb = method_vs_baseline(tr[tr["method"] == "pgd"])
    assert mvb.iloc[0]["note"].startswith("empty")


def test_method_vs_baseline_generalized_pairs():
    rng = np.random.default_rng(6)
    tr = transfer_rows(rng, methods=["baseline", "pgd"], tasks=("xnli",), langs=["de", "fr", "es"])
    gen = []
    for _, r in tr[tr["language"] != "en"].iterrows():
        for l2 in ("de", "fr", "es"):
            if l2 != r["language"]:
                bump = 0.04 if r["method"] == "pgd" else 0.0
                gen.append({**r.to_dict(), "language2": l2, "metric": "accuracy", "value": r["value"] - 0.05 + bump})
    out = method_vs_baseline(pd.concat([tr, pd.DataFrame(gen)]), n_boot=100).set_index("setting")
    g = out.loc["generalized"]
    assert g["n_languages"] == 6 and "ordered language pairs" in g["note"]
    assert g["diff"] == pytest.approx(out.loc["standard", "diff"] + 0.04, abs=1e-9)


def test_drift_covariate_separates_alignment_from_weight_movement():
    """Transfer driven by drift alone, alignment tracking drift: the slope is there without drift and
    vanishes with it."""
    rng = np.random.default_rng(0)
    langs, cks = [f"l{i}" for i in range(12)], [f"c{j}" for j in range(10)]
    drift = {c: float(d) for c, d in zip(cks, rng.uniform(0.01, 0.05, len(cks)))}
    lang_fx = dict(zip(langs, rng.normal(0, 1, len(langs))))
    rows = []
    for c in cks:
        for lang in langs:
            a = -20 * drift[c] + rng.normal(0, 0.05)  # more drift, less alignment
            rows.append(dict(checkpoint=c, language=lang, alignment=a,
                             score=lang_fx[lang] - 50 * drift[c] + rng.normal(0, 0.05)))
    fits = {f["model"]: f for f in drift_adjusted(pd.DataFrame(rows), drift)}
    assert fits["without drift"]["p"] < 0.05 and fits["without drift"]["coef"] > 0
    assert abs(fits["with drift"]["coef"]) < abs(fits["without drift"]["coef"]) / 5
    # too few checkpoints: a row saying why, no numbers
    small = drift_adjusted(pd.DataFrame(rows[:12]), drift)
    assert all(f["note"].startswith("empty") for f in small)


def english_panel(rng, *, beta=0.0, n_checkpoints=24, n_languages=14):
    """One task's checkpoints x languages where how well a checkpoint learned English (``e``) drives its transfer
    everywhere and its alignment the other way (a strong perturbation keeps alignment and learns less: the study's
    XNLI arms), with language effects, a checkpoint-specific slope over a language covariate, checkpoint shocks and
    noise. ``beta`` adds beta x the checkpoint's own alignment (its part not explained by ``e``) to transfer."""
    e = rng.normal(0.65, 0.05, n_checkpoints)
    a_own = rng.normal(0, 0.05, n_checkpoints)
    a_ck = -1.5 * (e - 0.65) + a_own
    s_lang = rng.normal(size=n_languages)
    al = (0.6 + rng.normal(0, 0.1, n_languages)[None, :] + a_ck[:, None]
          + rng.normal(0, 0.03, n_checkpoints)[:, None] * s_lang[None, :] + rng.normal(0, 0.02, (n_checkpoints, n_languages)))
    tr = (0.6 + rng.normal(0, 0.05, n_languages)[None, :] + 0.8 * (e - 0.65)[:, None] + beta * a_own[:, None]
          + rng.normal(0, 0.01, n_checkpoints)[:, None] + rng.normal(0, 0.01, (n_checkpoints, n_languages)))
    rows = [dict(checkpoint=f"c{i}", language=f"l{j}", alignment=al[i, j], score=tr[i, j])
            for i in range(n_checkpoints) for j in range(n_languages)]
    return pd.DataFrame(rows), {f"c{i}": float(v) for i, v in enumerate(e)}


def test_english_covariate_is_calibrated_and_separates_alignment_from_task_learning():
    """RQ1's "learned less?" check at the study's size (24 checkpoints x 14 languages): with transfer driven by the
    English score alone and alignment falling as it rises, the slope without the covariate is negative and
    rejects; with it the test holds its level (400 null runs: <= 8.5% passes a calibrated test, fails one at 12%)
    and finds a planted relation."""
    rng = np.random.default_rng(11)
    null_rej, raw_rej, raw_neg = [], [], []
    for _ in range(400):
        frame, english = english_panel(rng)
        fits = {f["model"]: f for f in english_adjusted(frame, english)}
        null_rej.append(fits["+ English selection score"]["p"] <= ALPHA)
        raw_rej.append(fits["checkpoint means"]["p"] <= ALPHA)
        raw_neg.append(fits["checkpoint means"]["coef"] < 0)
    planted = []
    for _ in range(200):
        frame, english = english_panel(rng, beta=0.3)
        fit = english_adjusted(frame, english)[1]
        planted.append(fit["p"] <= ALPHA and fit["coef"] > 0)
    level, power = float(np.mean(null_rej)), float(np.mean(planted))
    print(f"English-score covariate: null {level:.3f}, planted {power:.3f}, unadjusted rejects {np.mean(raw_rej):.3f}")
    assert level <= 0.085 and power >= 0.8
    assert np.mean(raw_rej) >= 0.9 and np.mean(raw_neg) >= 0.99  # the confound the covariate removes
    small = english_adjusted(frame.iloc[:12], english)
    assert all(f["note"].startswith("empty") for f in small)

