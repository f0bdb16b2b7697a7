"""RQ2 on alignment (xltlib.analysis.rq2): the seed x language inference of mean gains and size slopes
(calibration on simulated nulls at the sizes of the study: the 61 Tatoeba languages with a CC-100 size x 3 or 5
seeds), the Tatoeba rows it reads (ISO 639-3 codes, languages without a size, the common pool, the gate), both
references (the baseline at the same seed, the pre-trained encoder), and the config value that asks for every
Tatoeba language with a CC-100 size.

Null regimes: language effects dominate; seed shocks and seed-specific slopes on size dominate; the seed x language
noise dominates. 400 simulated runs per regime and seed count: the bar 8.5% passes a calibrated test and fails one
that rejects 12% of the time.
"""
import math

import numpy as np
import pandas as pd
import pytest

from xltlib.analysis.gate import Gate
from xltlib.analysis.merge import Points
from xltlib.analysis.rq2 import (
    MIN_SEEDS,
    TOO_FEW_SEEDS,
    alignment_gain_table,
    alignment_gains,
    answer_rq2,
    seeds_by_languages,
)
from xltlib.config.schema import AlignmentConfig, ReportConfig, tatoeba_cc100_languages
from xltlib.data.languages import resource_table, to_iso1

ALPHA = 0.05
N_SIM = 400
CC100 = tatoeba_cc100_languages()
LOG_SIZE = np.log10(resource_table()["size_gib"].reindex([to_iso1(c) for c in CC100]).to_numpy(float))
REGIMES = {"languages": dict(), "seeds": dict(s_seed=0.03, s_slope=0.03), "noise": dict(s_lang=0.005, s_noise=0.03)}


def gains(rng, n_seeds: int, *, slope: float = 0.0, mean: float = 0.0, s_lang=0.02, s_seed=0.01, s_slope=0.01,
          s_noise=0.01) -> np.ndarray:
    """[seed, language] alignment gains: language effects (independent of size), seed shocks, seed-specific slopes
    on size, noise; ``slope`` and ``mean`` planted."""
    x = LOG_SIZE - LOG_SIZE.mean()
    return (mean + slope * x[None] + rng.normal(0, s_lang, len(x))[None] + rng.normal(0, s_seed, n_seeds)[:, None]
            + rng.normal(0, s_slope, n_seeds)[:, None] * x[None] + rng.normal(0, s_noise, (n_seeds, len(x))))


# --------------------------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("n_seeds", [3, 5])
@pytest.mark.parametrize("regime", sorted(REGIMES))
def test_mean_and_slope_hold_their_level(n_seeds, regime):
    rng = np.random.default_rng(n_seeds * 10 + sorted(REGIMES).index(regime))
    slope_rej, mean_rej = [], []
    for _ in range(N_SIM):
        G = gains(rng, n_seeds, **REGIMES[regime])
        slope_rej.append(seeds_by_languages(G, LOG_SIZE)["p"] <= ALPHA)
        mean_rej.append(seeds_by_languages(G)["p"] <= ALPHA)
    print(f"{regime}-dominated, {n_seeds} seeds: slope {np.mean(slope_rej):.3f}, mean {np.mean(mean_rej):.3f}")
    assert np.mean(slope_rej) <= 0.085 and np.mean(mean_rej) <= 0.085


def test_power_with_a_planted_slope_and_mean():
    rng = np.random.default_rng(42)
    slope = np.mean([seeds_by_languages(gains(rng, 5, slope=-0.03), LOG_SIZE)["p"] <= ALPHA for _ in range(100)])
    mean = np.mean([seeds_by_languages(gains(rng, 5, mean=0.03))["p"] <= ALPHA for _ in range(100)])
    print(f"5 seeds, planted slope -0.03 per 10x: {slope:.2f}; planted mean +0.03: {mean:.2f}")
    assert slope >= 0.8 and mean >= 0.8


def test_without_language_residuals_it_is_the_one_sample_t_test_of_the_per_seed_estimates():
    """Each seed's gains on an exact line over languages (seed-specific intercept and slope): the language stratum
    is empty, and the slope's (mean's) test is scipy's one-sample t-test of the per-seed slopes (means)."""
    from scipy import stats

    x = np.array([0.0, 0.5, 1.0, 2.0, 3.0])
    intercepts, slopes = np.array([0.1, -0.2, 0.05, 0.3]), np.array([0.02, 0.05, -0.01, 0.04])
    G = intercepts[:, None] + slopes[:, None] * x[None]
    fit = seeds_by_languages(G, x)
    assert fit["estimate"] == pytest.approx(slopes.mean()) and fit["df"] == pytest.approx(len(slopes) - 1)
    assert fit["p"] == pytest.approx(stats.ttest_1samp(slopes, 0).pvalue)
    flat = intercepts[:, None] + np.zeros((1, 5))  # no language profile at all: the mean's test
    assert seeds_by_languages(flat)["p"] == pytest.approx(stats.ttest_1samp(intercepts, 0).pvalue)


def test_too_few_seeds_and_degenerate_sizes_say_why():
    rng = np.random.default_rng(3)
    G = gains(rng, MIN_SEEDS - 1)
    two = seeds_by_languages(G, LOG_SIZE)
    assert np.isfinite(two["estimate"]) and math.isnan(two["ci_lo"]) and two["note"].startswith(TOO_FEW_SEEDS)
    flat_sizes = seeds_by_languages(gains(rng, 3), np.ones(len(LOG_SIZE)))
    assert flat_sizes["note"] == "empty: the languages' sizes do not vary"


# ------------------------------------------------------------------------------------- the Tatoeba rows
def alignment_rows(rng, *, methods=("baseline", "pgd"), seeds=(1, 2, 3), slope=-0.03, languages=None,
                   tasks=("xnli",), pool=1000) -> pd.DataFrame:
    """Tidy alignment rows as the alignment stage writes them (Tatoeba codes as the task names them, the pre-trained
    encoder first), with pgd's gain over the baseline = ``slope`` x centred log10 size + noise."""
    languages = list(CC100 if languages is None else languages)
    size = resource_table()["size_gib"]
    centre = float(np.mean(LOG_SIZE))

    def log_size(code: str) -> float:  # languages without a size get the centre (no planted gain)
        try:
            return math.log10(size[to_iso1(code)]) if size.get(to_iso1(code), 0) > 0 else centre
        except ValueError:
            return centre

    logs = {c: log_size(c) for c in languages}
    base_al = {c: rng.uniform(0.5, 0.9) for c in languages}
    rows = [dict(checkpoint="pretrained:m", model="m", task="", method="pretrained", seed=-1, language=c,
                 language2="en", layer=12, metric="retrieval.acc1_en2xx", value=base_al[c] + 0.1, n=pool,
                 n_available=pool, dataset="tatoeba") for c in languages]
    for task in tasks:
        for m in methods:
            for s in seeds:
                shock = rng.normal(0, 0.002)
                for c in languages:
                    v = base_al[c] + shock + rng.normal(0, 0.005)
                    if m != "baseline":
                        v += 0.02 + slope * (logs[c] - centre)
                    rows.append(dict(checkpoint=f"{task}-{m}-{s}", model="m", task=task, method=m, seed=s, language=c,
                                     language2="en", layer=12, metric="retrieval.acc1_en2xx", value=v, n=pool,
                                     n_available=pool, dataset="tatoeba"))
    return pd.DataFrame(rows)


def test_gains_over_the_baseline_and_the_pretrained_encoder_recover_what_was_planted():
    rng = np.random.default_rng(5)
    rows = alignment_rows(rng)
    table, frame, notes = alignment_gain_table(rows, ReportConfig.Primary())
    t = table.set_index(["method", "reference"])
    vs_base = t.loc[("pgd", "baseline")]
    assert vs_base["n_languages"] == 61 and vs_base["n_seeds"] == 3 and vs_base["pool"] == 1000
    assert vs_base["slope_ci_lo"] < -0.03 < vs_base["slope_ci_hi"] and vs_base["slope_p_holm"] <= ALPHA
    assert vs_base["mean_ci_lo"] > 0
    # every fine-tuned checkpoint sits 0.1 below the pre-trained encoder; pgd gains 0.02 on average back
    assert t.loc[("baseline", "pretrained"), "mean_gain"] == pytest.approx(-0.1, abs=0.01)
    assert t.loc[("pgd", "pretrained"), "mean_ci_hi"] < 0
    assert set(frame["reference"]) == {"baseline", "pretrained"} and frame["language"].nunique() == 61
    assert not notes


def test_languages_without_a_size_or_off_the_common_pool_are_named_and_left_out():
    rng = np.random.default_rng(6)
    rows = alignment_rows(rng, languages=[*CC100[:20], "ber", "swe"])  # Berber: not in the table; Swedish: no size
    rows.loc[rows["language"] == "amh", "n"] = 168  # Amharic's 168 pairs on its own (the pool was "full")
    rows.loc[rows["language"] == CC100[0], "n"] = 168
    table, _, notes = alignment_gain_table(rows, ReportConfig.Primary())
    assert table.set_index(["method", "reference"]).loc[("pgd", "baseline"), "n_languages"] == 19
    assert any("without a CC-100 size" in n and "ber" in n and "sv" in n for n in notes)
    assert any("another pool than the common 1000" in n and to_iso1(CC100[0]) in n for n in notes)
    small = alignment_rows(rng, languages=CC100[:10], pool=50)
    table, _, notes = alignment_gain_table(small, ReportConfig.Primary())
    assert table.empty and any("below 100" in n for n in notes)


def test_the_gate_and_seed_matching():
    rng = np.random.default_rng(7)
    rows = alignment_rows(rng, languages=CC100[:12])
    g = alignment_gains(rows, {("xnli", "xnli-pgd-2")}, reference="baseline")
    assert set(g["seed"]) == {1, 3}  # pgd seed 2 failed the gate: its pair is gone
    g = alignment_gains(rows, {("xnli", "xnli-baseline-3")}, reference="pretrained")
    assert set(g.loc[g["method"] == "baseline", "seed"]) == {1, 2}
    table, _, _ = alignment_gain_table(rows, ReportConfig.Primary(), {("xnli", "xnli-pgd-2")})
    row = table.set_index(["method", "reference"]).loc[("pgd", "baseline")]
    assert row["n_seeds"] == 2 and math.isnan(row["slope_ci_lo"]) and TOO_FEW_SEEDS in row["note"]
    with pytest.raises(ValueError, match="reference must be one of"):
        alignment_gains(rows, reference="english")


def test_answer_rq2_reads_the_alignment_rows_and_the_declared_layer():
    rng = np.random.default_rng(8)
    rows = alignment_rows(rng, languages=CC100[:15])
    rows = pd.concat([rows, rows.assign(layer=6, value=rows["value"] - 0.2)], ignore_index=True)
    rq = answer_rq2(Points(), Gate(), rows, ReportConfig.Primary())
    assert set(rq.alignment["layer"]) == {12} and len(rq.alignment) == 3  # pgd - baseline; each - pretrained
    rq6 = answer_rq2(Points(), Gate(), rows, ReportConfig.Primary(layer=6))
    assert set(rq6.alignment["layer"]) == {6}
    none = answer_rq2(Points(), Gate(), rows, ReportConfig.Primary(metric="cka.cka_debiased"))
    assert none.alignment.empty and any("no tatoeba rows of cka.cka_debiased" in n for n in none.notes)


# ----------------------------------------------------------------------------------------------- the config
def test_alignment_languages_cc100_means_every_tatoeba_language_with_a_size():
    cfg = AlignmentConfig(languages="cc100")
    assert cfg.languages == CC100 and len(CC100) == 61
    assert {"sw", "amh", "zsm", "nob"} <= set(CC100) and not {"swe", "ukr", "ber"} & set(CC100)
    with pytest.raises(ValueError, match="'cc100'.*got 'all'"):
        AlignmentConfig(languages="all")
