"""Step 2, method vs baseline (xltlib.analysis.compare) and its item-level inference (xltlib.analysis.items,
xltlib.analysis.item_inference): known answers, shared item draws, the pooled seed variance, "too few seeds", the
two views of the checkpoints and bad input. Calibration on simulated runs: tests/test_calibration.py."""
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from xltlib.analysis.compare import (
    ALL_CHECKPOINTS,
    MVB_COLS,
    MVB_COLUMNS,
    PASSING,
    compare_methods,
    method_vs_baseline,
)
from xltlib.analysis.gate import GATE_COLS, Gate
from xltlib.analysis.item_inference import (
    TOO_FEW_SEEDS,
    arm_differences,
    item_bootstrap,
    pooled_seed_variance,
    pooled_sensitivity,
    satterthwaite_t,
    seed_variance_test,
)
from xltlib.analysis.items import item_table


def rows_for(values: dict, *, task="xnli", ids: dict | None = None, metric="score") -> pd.DataFrame:
    """Transfer rows from {(method, seed, language): 0/1 array}; ``ids`` the same keys -> item ids."""
    out = []
    for (m, s, lg), v in values.items():
        r = dict(checkpoint=f"{task}-{m}-{s}", task=task, method=m, seed=s, language=lg, language2="", metric=metric,
                 value=float(np.mean(v)), n=len(v), per_example=np.asarray(v))
        if ids is not None:
            r["item_ids"] = ids[(m, s, lg)]
        out.append(r)
    return pd.DataFrame(out)


def random_run(rng, *, methods=("baseline", "pgd"), seeds=(1, 2, 3), langs=("de", "fr", "sw"), n=300, acc=None):
    acc = acc or {}
    return {(m, s, lg): (rng.random(n) < acc.get(m, 0.6)).astype(np.int8)
            for m in methods for s in seeds for lg in langs}


# ------------------------------------------------------------------------------------------ the inference core
def test_pooled_seed_variance_is_the_one_way_anova_residual_variance():
    rng = np.random.default_rng(0)
    arms = np.array(["baseline"] * 3 + ["pgd"] * 3 + ["freelb"] * 2 + ["rs_da"])
    y = rng.normal(size=len(arms)) + (arms == "pgd")
    s2, df = pooled_seed_variance(y, arms)
    fit = smf.ols("y ~ C(arm)", data=pd.DataFrame(dict(y=y, arm=arms))).fit()
    assert s2 == pytest.approx(fit.mse_resid) and df == fit.df_resid == 2 + 2 + 1 + 0
    assert math.isnan(pooled_seed_variance(np.array([1.0, 2.0]), ["a", "b"])[0])


def test_item_bootstrap_draws_items_once_for_every_method():
    rng = np.random.default_rng(1)
    d = rng.normal(size=500)
    b = item_bootstrap(np.array([d, 2 * d, d + 1]), n_boot=300, rng=rng)
    assert np.allclose(b[1], 2 * b[0]) and np.allclose(b[2], b[0] + 1)  # the same item ids in every row
    assert np.std(b[0], ddof=1) == pytest.approx(np.std(d) / math.sqrt(500), rel=0.15)


def test_item_bootstrap_of_language_means_is_resampling_ids_in_every_cell():
    """Averaging over languages first is exact: one draw of item ids applied in every (checkpoint, language) cell
    gives the replicate that the same draw gives on the language-averaged table."""
    rng = np.random.default_rng(2)
    cells = rng.integers(0, 2, size=(4, 5, 60)).astype(float)  # checkpoint x language x item
    idx = rng.integers(0, 60, size=60)
    per_cell = cells[:, :, idx].mean(axis=2).mean(axis=1)  # resample ids in every cell, then average
    assert np.allclose(per_cell, cells.mean(axis=1)[:, idx].mean(axis=1))


def test_satterthwaite_matches_the_formula_and_the_t_quantile():
    lo, hi, nu = satterthwaite_t(1.0, [(0.04, 4), (0.01, 999)])
    v = 0.05
    assert nu == pytest.approx(v * v / (0.04 ** 2 / 4 + 0.01 ** 2 / 999))
    assert hi - 1.0 == pytest.approx(stats.t.ppf(0.975, nu) * math.sqrt(v)) and 1.0 - lo == pytest.approx(hi - 1.0)
    assert all(math.isnan(x) for x in satterthwaite_t(1.0, [(0.0, 4), (0.0, 9)]))


def test_satterthwaite_takes_a_negative_method_of_moments_part_and_holds_df_at_one():
    # MS_seed - MS_residual: the negative part enters the variance with its sign and nu's denominator squared
    lo, hi, nu = satterthwaite_t(0.0, [(0.05, 2), (-0.01, 40), (0.02, 999)])
    v = 0.06
    assert nu == pytest.approx(v * v / (0.05 ** 2 / 2 + 0.01 ** 2 / 40 + 0.02 ** 2 / 999))
    assert hi == pytest.approx(stats.t.ppf(0.975, nu) * math.sqrt(v)) and lo == pytest.approx(-hi)
    # a large negative part leaves little variance but a small nu: held at 1, not below
    lo, hi, nu = satterthwaite_t(0.0, [(0.05, 1), (-0.045, 1)])
    assert nu == 1.0 and hi == pytest.approx(stats.t.ppf(0.975, 1.0) * math.sqrt(0.005))
    assert all(math.isnan(x) for x in satterthwaite_t(0.0, [(0.01, 3), (-0.02, 9)]))  # variance not positive


def test_arm_differences_known_difference_interval_and_parts():
    rng = np.random.default_rng(3)
    n_items = 800
    item = rng.normal(0, 0.2, n_items)
    arms = np.array(["baseline"] * 3 + ["pgd"] * 3 + ["freelb"] * 2)
    shift = {"baseline": 0.0, "pgd": 0.05, "freelb": -0.02}
    values = np.array([0.6 + shift[a] + rng.normal(0, 0.01) + item + rng.normal(0, 0.1, n_items) for a in arms])
    out = {d.method: d for d in arm_differences(values, arms, baseline="baseline", n_boot=1000, rng=rng)}
    pgd = out["pgd"]
    assert pgd.diff == pytest.approx(values[3:6].mean() - values[:3].mean())
    assert pgd.ci_lo < 0.05 < pgd.ci_hi and pgd.ci_lo > 0
    s2, df = pooled_seed_variance(values.mean(axis=1), arms)
    assert pgd.seed_df == df == 2 + 2 + 1  # the 2-seed arm adds its degree of freedom to the pooled variance
    # each side: its own arm's seed variance where larger than the pooled one (its S - 1 df), else the pooled
    means = values.mean(axis=1)
    sides = []
    for arm in ("pgd", "baseline"):
        own = np.var(means[arms == arm], ddof=1)
        sides.append((own / 3, 2) if own > s2 else (s2 / 3, df))
    assert pgd.se_seeds == pytest.approx(math.sqrt(sum(v for v, _ in sides)))
    assert pgd.seed_variance == "; ".join(f"{a}: {'its own' if d == 2 else 'pooled'} ({d} df)"
                                          for a, (_, d) in zip(("pgd", "baseline"), sides))
    d_items = values[3:6].mean(0) - values[:3].mean(0)
    assert pgd.se_items == pytest.approx(np.std(d_items, ddof=1) / math.sqrt(n_items), rel=0.1)
    v = pgd.se_items ** 2 + pgd.se_seeds ** 2
    assert pgd.df == pytest.approx(v * v / (sum(u * u / d for u, d in sides) + pgd.se_items ** 4 / (n_items - 1)))
    assert pgd.ci_hi - pgd.diff == pytest.approx(stats.t.ppf(0.975, pgd.df) * math.sqrt(v))
    fl = out["freelb"]  # 2 seeds: the difference, no interval
    assert np.isfinite(fl.diff) and fl.diff == pytest.approx(-0.02, abs=0.02)
    assert math.isnan(fl.ci_lo) and math.isnan(fl.ci_hi) and math.isnan(fl.df) and TOO_FEW_SEEDS in fl.note


def test_one_arm_that_varies_more_keeps_its_own_variance_and_the_pooled_interval_is_the_sensitivity():
    rng = np.random.default_rng(5)
    n_items = 400
    item = rng.normal(0, 0.2, n_items)
    arms = np.repeat(["baseline", "pgd", "freelb", "rs_da"], 3)
    shock = {"baseline": 0.005, "pgd": 0.05, "freelb": 0.005, "rs_da": 0.005}  # pgd's seeds spread 10x wider
    values = np.array([0.6 + rng.normal(0, shock[a]) + item + rng.normal(0, 0.05, n_items) for a in arms])
    out = {d.method: d for d in arm_differences(values, arms, baseline="baseline", n_boot=500, rng=rng)}
    pgd, fl = out["pgd"], out["freelb"]
    assert pgd.seed_variance.startswith("pgd: its own (2 df)") and fl.seed_variance.startswith("freelb: pooled")
    assert pgd.ci_hi - pgd.ci_lo > pgd.ci_hi_pooled - pgd.ci_lo_pooled  # its own spread, not the others' smaller one
    assert (fl.ci_lo, fl.ci_hi) == pytest.approx((fl.ci_lo_pooled, fl.ci_hi_pooled))  # both sides pooled: the same
    means = values.mean(axis=1)
    assert pgd.seed_var_p == pytest.approx(stats.bartlett(*[means[arms == a] for a in np.unique(arms)]).pvalue)
    assert np.isnan(seed_variance_test(means[:3], arms[:3]))  # one arm: nothing to compare
    rows = [dict(method=d.method, diff=d.diff, seed_variance=d.seed_variance, ci_lo_pooled=d.ci_lo_pooled,
                 ci_hi_pooled=d.ci_hi_pooled, seed_var_p=d.seed_var_p) for d in out.values()]
    line = pooled_sensitivity(rows)
    assert line.startswith("Seed variance: the comparisons of pgd use a side's own, larger seed variance")
    assert f"Bartlett's p that the arms share one: {pgd.seed_var_p:.2f}" in line
    assert pooled_sensitivity([dict(r, seed_variance="pooled") for r in rows]) == ""  # nothing to say


def test_an_arm_of_learned_and_collapsed_runs_stays_out_of_the_pool_and_takes_its_own_variance():
    rng = np.random.default_rng(6)
    n_items = 400
    item = rng.normal(0, 0.2, n_items)
    arms = np.repeat(["baseline", "pgd", "rs_da"], 3)
    level = {("pgd", 2): -0.2}  # one pgd seed on the majority plateau, 20 points down
    values = np.array([0.7 + level.get((a, k % 3), 0) + rng.normal(0, 0.005) + item + rng.normal(0, 0.05, n_items)
                       for k, a in enumerate(arms)])
    pooled_in = {d.method: d for d in arm_differences(values, arms, baseline="baseline", n_boot=300,
                                                      rng=np.random.default_rng(0))}
    out = {d.method: d for d in arm_differences(values, arms, baseline="baseline", n_boot=300,
                                                rng=np.random.default_rng(0), own_only={"pgd"})}
    rs, pgd = out["rs_da"], out["pgd"]
    assert rs.seed_df == 2 + 2 and pooled_in["rs_da"].seed_df == 2 + 2 + 2
    assert rs.ci_hi - rs.ci_lo < (pooled_in["rs_da"].ci_hi - pooled_in["rs_da"].ci_lo) / 5  # not widened by pgd
    assert pgd.seed_variance.startswith("pgd: its own (2 df)")
    means = values.mean(axis=1)
    assert pgd.se_seeds >= math.sqrt(np.var(means[arms == "pgd"], ddof=1) / 3)  # its whole spread, 2 df
    keep = arms != "pgd"
    assert rs.seed_var_p == pytest.approx(stats.bartlett(*[means[keep][arms[keep] == a]
                                                           for a in ("baseline", "rs_da")]).pvalue)


# ------------------------------------------------------------------------------------------ the item table
def test_item_table_uses_the_items_scored_in_every_language():
    rng = np.random.default_rng(4)
    vals = random_run(rng, n=50)
    ids = {k: np.arange(50) for k in vals}
    for k in [k for k in vals if k[2] == "sw"]:  # sw lacks items 0-9: scored rows 10..49 of the same 50 items
        vals[k], ids[k] = vals[k][10:], np.arange(10, 50)
    tab = item_table(rows_for(vals, ids=ids).assign(unit=lambda d: d["language"]), unit="unit")
    assert tab.per_item and tab.n_items == 40 and tab.n_items_max == 50 and tab.units == ["de", "fr", "sw"]
    c = tab.checkpoints.index("xnli-pgd-2")
    expect = np.mean([vals[("pgd", 2, "de")][10:], vals[("pgd", 2, "fr")][10:], vals[("pgd", 2, "sw")]], axis=0)
    assert np.allclose(tab.values[c], expect)
    out = method_vs_baseline(rows_for(vals, ids=ids), n_boot=200).iloc[0]
    assert out["n_items"] == 40 and "40 of 50 items: those scored in every language" in out["note"]


def test_arms_that_share_no_items_name_both_checkpoints():
    rng = np.random.default_rng(5)
    vals = random_run(rng, n=30)
    ids = {k: (np.arange(30) if k[0] == "baseline" else np.arange(100, 130)) for k in vals}
    with pytest.raises(ValueError, match=r"xnli \(standard.*'xnli-baseline-1' and 'xnli-pgd-1' share no scored items"):
        method_vs_baseline(rows_for(vals, ids=ids), n_boot=100)


def test_unequal_lengths_without_ids_are_refused_not_aligned_by_position():
    rng = np.random.default_rng(6)
    vals = random_run(rng, n=30)
    vals[("pgd", 2, "fr")] = vals[("pgd", 2, "fr")][:25]
    with pytest.raises(ValueError, match="different lengths.*xnli-pgd-2.*item ids"):
        method_vs_baseline(rows_for(vals), n_boot=100)


def test_rows_without_per_item_values_use_the_languages():
    rng = np.random.default_rng(7)
    rows = rows_for(random_run(rng)).drop(columns=["per_example"])
    out = method_vs_baseline(rows, n_boot=200).iloc[0]
    assert out["resampled"].startswith("languages (no per-item values") and out["n_items"] == 3
    assert np.isfinite(out["ci_lo"])


# ------------------------------------------------------------------------------------------ the tables
def test_method_vs_baseline_columns_and_the_too_few_seeds_row():
    rng = np.random.default_rng(8)
    vals = random_run(rng, methods=("baseline", "pgd", "freelb"), acc={"pgd": 0.7})
    vals = {k: v for k, v in vals.items() if not (k[0] == "freelb" and k[1] == 3)}
    t = method_vs_baseline(rows_for(vals), n_boot=300)
    assert list(t.columns) == MVB_COLS and set(MVB_COLUMNS) <= set(MVB_COLS)
    t = t.set_index("method")
    pgd, fl = t.loc["pgd"], t.loc["freelb"]
    assert pgd["ci_lo"] > 0 and pgd["n_items"] == 300 and pgd["n_seeds"] == pgd["n_baseline_seeds"] == 3
    assert pgd["resampled"].startswith("test examples (item ids shared") and pgd["seed_df"] == 2 + 2 + 1
    assert fl["n_seeds"] == 2 and np.isfinite(fl["diff"]) and np.isnan(fl["ci_lo"]) and np.isnan(fl["df"])
    assert fl["note"].startswith(TOO_FEW_SEEDS)
    assert (t["checkpoints"] == ALL_CHECKPOINTS).all()
    # p is the interval's own t test (p < 0.05 exactly when the CI excludes 0); Holm over the arms with one
    se = math.hypot(pgd["se_items"], pgd["se_seeds"])
    assert pgd["p"] == pytest.approx(2 * stats.t.sf(abs(pgd["diff"]) / se, pgd["df"])) and pgd["p"] < 0.05
    assert pgd["p_holm"] == pytest.approx(pgd["p"]) and np.isnan(fl["p"]) and np.isnan(fl["p_holm"])


def test_generalized_pairs_resample_the_row_ids_of_the_pair():
    rng = np.random.default_rng(9)
    vals = random_run(rng, langs=("de", "fr"), n=200)
    std = rows_for(vals)
    gen = []
    for m in ("baseline", "pgd"):
        for s in (1, 2, 3):
            for a, b in (("de", "fr"), ("fr", "de")):
                v = (rng.random(200) < (0.55 if m == "baseline" else 0.65)).astype(np.int8)
                gen.append(dict(checkpoint=f"xnli-{m}-{s}", task="xnli", method=m, seed=s, language=a, language2=b,
                                metric="accuracy", value=v.mean(), n=200, per_example=v))
    out = method_vs_baseline(pd.concat([std, pd.DataFrame(gen)], ignore_index=True), n_boot=300).set_index("setting")
    g = out.loc["generalized"]
    assert g["n_languages"] == 2 and g["n_items"] == 200 and "ordered language pairs" in g["note"]
    expect = np.mean([r["per_example"].mean() for r in gen if r["method"] == "pgd"]) - \
        np.mean([r["per_example"].mean() for r in gen if r["method"] == "baseline"])
    assert g["diff"] == pytest.approx(expect) and g["ci_lo"] > 0


def gate_for(rows: pd.DataFrame, failing: set[str]) -> Gate:
    table = rows.drop_duplicates(["task", "checkpoint"])[["task", "checkpoint", "method", "seed"]]
    table = table.assign(passes=~table["checkpoint"].isin(failing)).reindex(columns=GATE_COLS)
    return Gate(table=table, failed={(t, c) for t, c in zip(table["task"], table["checkpoint"]) if c in failing})


def test_compare_methods_shows_passing_and_every_trained_checkpoint_labelled():
    rng = np.random.default_rng(10)
    vals = random_run(rng, methods=("baseline", "pgd", "rs_da"), seeds=(1, 2, 3, 4), langs=("en", "de", "fr"),
                      acc={"pgd": 0.62})
    vals.update({("pgd", 4, lg): np.zeros(300, np.int8) for lg in ("en", "de", "fr")})  # a collapsed run
    rows = rows_for(vals)
    comp = compare_methods(rows, gate_for(rows, {"xnli-pgd-4"}), n_boot=200)
    t = comp.scores
    assert list(t["checkpoints"]) == [PASSING, PASSING, ALL_CHECKPOINTS, ALL_CHECKPOINTS]  # passing first
    t = t.set_index(["checkpoints", "method"])
    ok, every = t.loc[(PASSING, "pgd")], t.loc[(ALL_CHECKPOINTS, "pgd")]
    assert ok["n_seeds"] == 3 and every["n_seeds"] == 4
    assert every["diff"] < ok["diff"] - 0.1  # the collapsed run counts with what it scored
    assert "1 of 4 pgd checkpoint(s) fail the gate" in every["note"] and "fail" not in ok["note"]
    assert every["se_seeds"] > 3 * ok["se_seeds"]  # its own spread, learned and collapsed runs
    # ... kept out of the pooled variance: the arms that all learned are not widened by it
    assert every["seed_variance"].startswith("pgd: its own (3 df)") and "pgd: own seed variance only" in every["note"]
    rs_every = t.loc[(ALL_CHECKPOINTS, "rs_da")]
    assert rs_every["seed_df"] == 3 + 3 and rs_every["se_seeds"] < 2 * t.loc[(PASSING, "rs_da"), "se_seeds"]
    assert t.loc[(PASSING, "rs_da"), "seed_df"] == 3 + 2 + 3  # pooled over the passing checkpoints of every arm
    # every pgd checkpoint failing: the passing view says so
    comp2 = compare_methods(rows, gate_for(rows, {f"xnli-pgd-{s}" for s in (1, 2, 3, 4)}), n_boot=100)
    row = comp2.scores.set_index(["checkpoints", "method"]).loc[(PASSING, "pgd")]
    assert row["note"] == "empty: every pgd checkpoint fails the model-quality gate" and np.isnan(row["diff"])
