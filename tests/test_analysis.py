"""Tests for xltlib.analysis and xltlib.languages on synthetic data with known answers."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from xltlib import analysis as A  # noqa: E402
from xltlib.languages import resource_table, to_iso1  # noqa: E402

LANGS = ["de", "fr", "es", "ru", "zh", "ar", "hi", "sw", "ur", "th", "tr", "vi", "bg", "el",
         "ja", "ko", "te", "ta", "mr", "bn"]
METHODS = ["baseline", "pgd"]
SEEDS = [1, 2]
NB = 200  # small bootstrap / permutation counts keep the suite fast


def make_merged(kind="linear", langs=LANGS, seed=0, layers=(0, 1), methods=METHODS,
                seeds=SEEDS, noise=0.0):
    """Merged-format frame: alignment per (checkpoint, language, layer)."""
    rng = np.random.default_rng(seed)
    lang_effect = dict(zip(langs, rng.normal(0, 0.05, len(langs))))
    lang_base = dict(zip(langs, rng.uniform(0.2, 0.8, len(langs))))
    rows = []
    for m in methods:
        for s in seeds:
            ck = f"ck-{m}-{s}"
            for lg in langs:
                for layer in layers:
                    a = lang_base[lg] + rng.normal(0, 0.1)
                    if kind == "linear":
                        t = 0.3 + 0.5 * a
                    elif kind == "independent":
                        t = rng.uniform(0.3, 0.8)
                    elif kind == "fe":  # known slope with language effects
                        t = 0.5 + 0.3 * a + lang_effect[lg] + rng.normal(0, noise)
                    rows.append(dict(checkpoint=ck, model="xlmr", task="xnli", method=m, seed=s,
                                     language=lg, metric="cka.cka", layer=layer, alignment=a,
                                     transfer_acc=t))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- languages
def test_resource_table_and_codes():
    rt = resource_table()
    for lg in ("en", "de", "sw"):
        assert np.isfinite(rt.loc[lg, "size_gib"]) and rt.loc[lg, "size_gib"] > 0
    assert rt.loc["en", "size_gib"] > rt.loc["de", "size_gib"] > rt.loc["sw", "size_gib"]
    assert to_iso1("deu") == "de"
    assert to_iso1("cmn") == "zh"
    assert to_iso1("swh") == "sw" and to_iso1("arb") == "ar" and to_iso1("zh-Hans") == "zh"
    assert to_iso1("DE") == "de"
    with pytest.raises(ValueError, match="xqz"):
        to_iso1("xqz")


# ---------------------------------------------------------------- merge
def test_merge_alignment_transfer():
    tr_rows, al_rows = [], []
    acc = {"en": 0.85, "de": 0.78, "sw": 0.65}
    for ck, m, s in [("ck1", "baseline", 1), ("ck2", "pgd", 1)]:
        for lg, v in acc.items():
            tr_rows.append(dict(checkpoint=ck, model="xlmr", task="xnli", method=m, seed=s,
                                language=lg, language2="", layer=-1, metric="score",
                                value=v + (0.01 if m == "pgd" else 0), n=100))
        # a non-standard (translate-test style) row that must be ignored
        tr_rows.append(dict(checkpoint=ck, model="xlmr", task="xnli", method=m, seed=s,
                            language="de", language2="en", layer=-1, metric="score",
                            value=0.1, n=100))
        for lg3 in ("deu", "swh", "eng"):
            for layer in (0, 12):
                al_rows.append(dict(checkpoint=ck, model="xlmr", task="xnli", method=m, seed=s,
                                    language=lg3, language2="en", layer=layer, metric="cka.cka",
                                    value=0.5, n=1000, dataset="tatoeba"))
    for lg3 in ("deu", "swh"):
        al_rows.append(dict(checkpoint="pretrained:xlmr", model="xlmr", task="",
                            method="pretrained", seed=-1, language=lg3, language2="en", layer=0,
                            metric="cka.cka", value=0.4, n=1000, dataset="tatoeba"))
    merged = A.merge_alignment_transfer(pd.DataFrame(al_rows), pd.DataFrame(tr_rows))
    assert len(merged) == 2 * 2 * 2  # checkpoints x {de, sw} x layers
    assert set(merged["language"]) == {"de", "sw"}
    assert not merged["checkpoint"].str.startswith("pretrained:").any()
    r = merged[(merged.checkpoint == "ck1") & (merged.language == "sw")].iloc[0]
    assert r["transfer_acc"] == pytest.approx(0.65)
    assert r["transfer_gap"] == pytest.approx(0.85 - 0.65)
    assert r["method"] == "baseline" and r["seed"] == 1
    assert {"alignment", "transfer_acc", "transfer_gap", "model", "method", "seed"} <= set(
        merged.columns)


# ---------------------------------------------------------------- correlations
def test_perfect_relation():
    ct = A.correlation_table(make_merged("linear"), n_boot=NB, n_perm=NB)
    assert len(ct) == 2
    assert (ct["r"] > 0.999).all() and (ct["rho"] > 0.999).all()
    assert (ct["r_lo"] > 0.99).all() and (ct["r_hi"] <= 1.0 + 1e-9).all()
    assert (ct["p_perm"] <= 1.0 / (NB + 1) + 1e-12).all()
    assert (ct["n_languages"] == len(LANGS)).all() and (ct["n_checkpoints"] == 4).all()
    assert (ct["note"] == "").all()


def test_independent_and_holm():
    ct = A.correlation_table(make_merged("independent", seed=3), n_boot=NB, n_perm=NB)
    assert (ct["r"].abs() < 0.3).all()
    assert (ct["p_perm"] > 0.01).all()
    assert (ct["r_lo"] < 0).all() and (ct["r_hi"] > 0).all()
    assert (ct["p_holm"] >= ct["p_perm"] - 1e-12).all()
    assert (ct["p_holm_rho"] >= ct["p_perm_rho"] - 1e-12).all()


def test_too_few_languages_and_seed_grouping():
    df = make_merged("linear", langs=["de", "sw"])
    ct = A.correlation_table(df, n_boot=NB, n_perm=NB)
    assert ct["r"].isna().all()
    assert (ct["note"] == "too few languages (2)").all()
    ct2 = A.correlation_table(make_merged("linear"), n_boot=50, n_perm=50, pool_seeds=False)
    assert "seed" in ct2 and len(ct2) == 2 * len(SEEDS)


def test_weighted_bootstrap_matches_replication():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=7), rng.normal(size=7)
    x[3] = x[1]  # tie
    w = np.array([[2, 0, 1, 1, 3, 0, 1]], dtype=float)
    xr, yr = np.repeat(x, w[0].astype(int)), np.repeat(y, w[0].astype(int))
    from scipy import stats
    r = A._weighted_corr(x[None], y[None], w)[0]
    rho = A._weighted_corr(A._weighted_ranks(x, w), A._weighted_ranks(y, w), w)[0]
    assert r == pytest.approx(stats.pearsonr(xr, yr)[0])
    assert rho == pytest.approx(stats.spearmanr(xr, yr)[0])


# ---------------------------------------------------------------- regressions
def test_ols_recovers_slope():
    df = make_merged("fe", noise=0.005, layers=(0,))
    out = A.fit_ols(df)
    r = out.iloc[0]
    assert r["note"] == ""
    assert r["ci_lo"] <= 0.3 <= r["ci_hi"]
    assert abs(r["coef"] - 0.3) < 0.03
    assert r["n"] == len(df) and r["r2"] > 0.9
    assert "C(language)" in r["formula"] and "C(method)" in r["formula"]
    # a single method level is dropped automatically
    one = A.fit_ols(df[df.method == "baseline"]).iloc[0]
    assert "C(method)" not in one["formula"] and np.isfinite(one["coef"])


def test_mixed_model_runs():
    df = make_merged("fe", noise=0.005, layers=(0,))
    r = A.fit_mixed(df).iloc[0]
    assert np.isfinite(r["coef"]) and abs(r["coef"] - 0.3) < 0.05
    assert r["model"] == "mixedlm" and 0 <= r["r2"] <= r["r2_conditional"] <= 1


def test_fits_report_instead_of_raising():
    df = make_merged("fe", langs=["de", "sw"], layers=(0,), seeds=[1])
    assert "too few" in A.fit_ols(df.iloc[:3]).iloc[0]["note"]
    assert "too few" in A.fit_mixed(df).iloc[0]["note"]
    both = make_merged("fe", layers=(0, 1))
    assert "one metric" in A.fit_ols(both).iloc[0]["note"]


# ---------------------------------------------------------------- deltas
def test_delta_table_sign():
    rows = []
    for m, a, t in [("baseline", 0.5, 0.70), ("pgd", 0.6, 0.65), ("freelb", 0.4, 0.75)]:
        for s in (1, 2):
            for lg in ("de", "sw", "hi"):
                rows.append(dict(checkpoint=f"{m}{s}", model="xlmr", task="xnli", method=m,
                                 seed=s, language=lg, metric="cka.cka", layer=6,
                                 alignment=a + 0.01 * s, transfer_acc=t + 0.01 * s,
                                 transfer_gap=0.1))
    d = A.delta_table(pd.DataFrame(rows))
    assert set(d["method"]) == {"pgd", "freelb"} and len(d) == 6
    pgd, fl = d[d.method == "pgd"], d[d.method == "freelb"]
    assert np.allclose(pgd["delta_alignment"], 0.1) and np.allclose(pgd["delta_transfer"], -0.05)
    assert np.allclose(fl["delta_alignment"], -0.1) and np.allclose(fl["delta_transfer"], 0.05)


def test_delta_correlation():
    merged = make_merged("linear", methods=["baseline", "pgd", "freelb"])
    dc = A.delta_correlation(A.delta_table(merged), n_boot=NB, n_perm=NB)
    assert (dc["r"] > 0.99).all() and (dc["n_checkpoints"] == 2).all()


# ---------------------------------------------------------------- RQ2
def test_gain_vs_resource_negative_slope():
    rt = resource_table()
    langs = [lg for lg in LANGS + ["yo", "en"] if lg]
    rng = np.random.default_rng(1)
    rows = []
    for m, a, b in [("pgd", 0.05, -0.01), ("freelb", 0.01, 0.0)]:
        for lg in langs:
            size = rt.loc[lg, "size_gib"]
            g = a + b * np.log(size) if np.isfinite(size) else 0.0
            rows.append(dict(task="xnli", language=lg, method=m, gain=g + rng.normal(0, 0.001)))
    slopes, frame = A.gain_vs_resource(pd.DataFrame(rows))
    pgd = slopes[slopes.method == "pgd"].iloc[0]
    assert pgd["slope"] < 0 and pgd["ci_hi"] < 0 and pgd["ci_lo"] <= -0.01 <= pgd["ci_hi"]
    fl = slopes[slopes.method == "freelb"].iloc[0]
    assert fl["ci_lo"] <= 0 <= fl["ci_hi"]
    assert "yo" in pgd["note"] and "yo" not in set(frame["language"])
    assert "en" not in set(frame["language"])
    assert "pooled" in set(slopes["method"])


def test_gain_from_transfer_and_delta_table():
    rows = []
    rt = resource_table()
    for m in ("baseline", "pgd"):
        for s in (1, 2):
            for lg in ["en"] + LANGS:
                v = 0.7 + (0.05 - 0.01 * np.log(rt.loc[lg, "size_gib"]) if m == "pgd" else 0)
                rows.append(dict(checkpoint=f"{m}{s}", model="xlmr", task="xnli", method=m,
                                 seed=s, language=lg, language2="", layer=-1, metric="score",
                                 value=v, n=100))
    gains = A.transfer_gain_table(pd.DataFrame(rows))
    slopes, _ = A.gain_vs_resource(gains)
    assert slopes.iloc[0]["slope"] == pytest.approx(-0.01, abs=1e-6)
    # delta_table output: transfer deltas are deduplicated across metric x layer
    d = A.delta_table(make_merged("linear"))
    s2, f2 = A.gain_vs_resource(d)
    assert len(f2) == len(LANGS) and s2.iloc[0]["gain_col"] == "delta_transfer"


# ---------------------------------------------------------------- summaries
def test_bootstrap_mean_ci_and_summarize_transfer():
    m, lo, hi = A.bootstrap_mean_ci([1.0, 2.0, 3.0, 4.0], n_boot=NB, seed=0)
    assert m == 2.5 and lo <= m <= hi
    assert np.isnan(A.bootstrap_mean_ci([1.0], n_boot=NB)[1])
    rows = []
    for s, bump in ((1, 0.0), (2, 0.02)):
        for lg, v in (("en", 0.9), ("de", 0.8), ("sw", 0.6)):
            rows.append(dict(checkpoint=f"c{s}", model="xlmr", task="xnli", method="baseline",
                             seed=s, language=lg, language2="", layer=-1, metric="score",
                             value=v + bump, n=10))
    out = A.summarize_transfer(pd.DataFrame(rows), n_boot=NB).set_index("language")
    assert out.loc["de", "mean"] == pytest.approx(0.81)
    assert out.loc["de", "sd"] == pytest.approx(np.std([0.8, 0.82], ddof=1))
    assert out.loc["AVG (incl. en)", "mean"] == pytest.approx((0.9 + 0.8 + 0.6) / 3 + 0.01)
    assert out.loc["AVG (excl. en)", "mean"] == pytest.approx((0.8 + 0.6) / 2 + 0.01)
    assert out.loc["AVG (excl. en)", "kind"] == "avg_excl_en"


def test_plain_summary_null_and_positive():
    null_ct = A.correlation_table(make_merged("independent", seed=3), n_boot=NB, n_perm=NB)
    df = make_merged("independent", seed=3, layers=(0,))
    txt = A.plain_summary(null_ct, A.fit_ols(df), None, n_checkpoints=4,
                          n_languages=len(LANGS), n_seeds=2)
    assert "No significant relation" in txt
    assert "one pre-trained encoder" in txt and "English dev set" in txt
    pos_ct = A.correlation_table(make_merged("linear"), n_boot=NB, n_perm=NB)
    gains = pd.DataFrame([dict(language=lg, method="pgd", gain=0.01) for lg in LANGS])
    slopes, _ = A.gain_vs_resource(gains)
    txt2 = A.plain_summary(pos_ct, A.fit_mixed(make_merged("fe", layers=(0,))), slopes,
                           4, len(LANGS), 2)
    assert "No significant relation" not in txt2 and "significantly associated" in txt2
    assert "RQ2" in txt2


# ---------------------------------------------------------------- plots
def test_plots_return_figures():
    merged = make_merged("linear", methods=["baseline", "pgd", "freelb"])
    one = merged[merged.layer == 0]
    ct = A.correlation_table(merged, n_boot=50, n_perm=50)
    d = A.delta_table(merged)
    _, frame = A.gain_vs_resource(d)
    figs = [A.plot_alignment_vs_transfer(one), A.plot_corr_by_layer(ct), A.plot_deltas(d),
            A.plot_gain_vs_resource(frame)]
    for f in figs:
        assert isinstance(f, Figure)
        plt.close(f)


def test_number_format_has_no_negative_zero():
    from xltlib.analysis import _fmt

    assert _fmt(-0.004, 1) == "0.0" and _fmt(-0.06, 1) == "-0.1" and _fmt(float("nan")) == "n/a"
