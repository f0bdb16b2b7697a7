"""Tests for the analysis steps (xltlib.analysis), analyze_run and the export (xltlib.reporting) and
xltlib.data.languages on synthetic data with known answers."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from xltlib.analysis.compare import PASSING, robustness_vs_baseline  # noqa: E402
from xltlib.analysis.merge import delta_table, merge_alignment_transfer  # noqa: E402
from xltlib.analysis.summary import (  # noqa: E402
    LOSES_LESS,
    LOSES_LIKE,
    AnalysisResult,
    _above_below,
    _fmt,
    _seed_counts,
    analyze_run,
    brief_markdown,
    raise_or_lose_less,
)
from xltlib.config.schema import ReportConfig  # noqa: E402
from xltlib.data.languages import resource_table, to_iso1  # noqa: E402
from xltlib.reporting import plots as P  # noqa: E402
from xltlib.reporting.export import DirtyTreeError, export_results  # noqa: E402
from xltlib.reporting.tables import english_targets, flat, result_tables, train_diagnostics  # noqa: E402

LANGS = ["de", "fr", "es", "ru", "zh", "ar", "hi", "sw", "ur", "th", "tr", "vi", "bg", "el",
         "ja", "ko", "te", "ta", "mr", "bn"]
NB = 200  # small bootstrap / permutation counts keep the suite fast


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
    merged = merge_alignment_transfer(pd.DataFrame(al_rows), pd.DataFrame(tr_rows))
    assert len(merged) == 2 * 2 * 2  # checkpoints x {de, sw} x layers
    assert set(merged["language"]) == {"de", "sw"}
    assert not merged["checkpoint"].str.startswith("pretrained:").any()
    r = merged[(merged.checkpoint == "ck1") & (merged.language == "sw")].iloc[0]
    assert r["score"] == pytest.approx(0.65) and r["score_en"] == pytest.approx(0.85)
    assert r["transfer_gap"] == pytest.approx(0.85 - 0.65)
    assert r["score_metric"] == "accuracy"  # what XNLI's score is, from the task registry
    assert r["method"] == "baseline" and r["seed"] == 1
    assert {"alignment", "score", "transfer_gap", "model", "method", "seed"} <= set(
        merged.columns)


# ---------------------------------------------------------------- deltas
def test_delta_table_sign():
    rows = []
    for m, a, t in [("baseline", 0.5, 0.70), ("pgd", 0.6, 0.65), ("freelb", 0.4, 0.75)]:
        for s in (1, 2):
            for lg in ("de", "sw", "hi"):
                rows.append(dict(checkpoint=f"{m}{s}", model="xlmr", task="xnli", method=m,
                                 seed=s, language=lg, metric="cka.cka", layer=6,
                                 alignment=a + 0.01 * s, score=t + 0.01 * s,
                                 transfer_gap=0.1))
    d = delta_table(pd.DataFrame(rows))
    assert set(d["method"]) == {"pgd", "freelb"} and len(d) == 6
    pgd, fl = d[d.method == "pgd"], d[d.method == "freelb"]
    assert np.allclose(pgd["delta_alignment"], 0.1) and np.allclose(pgd["delta_score"], -0.05)
    assert np.allclose(fl["delta_alignment"], -0.1) and np.allclose(fl["delta_score"], 0.05)


# ---------------------------------------------------------------- summaries
def test_plots_return_figures():
    res = analyze(*run_frames(), majority={"xnli": 0.34}, n_boot=50, n_perm=50)
    figs = [P.plot_alignment_vs_transfer(res.rq1.headline), P.plot_language_means(res.rq1.headline),
            P.plot_corr_by_layer(res.rq1.exploratory), P.plot_deltas(res.rq2.delta),
            P.plot_gain_vs_resource(res.rq2.frame)]
    for f in figs:
        assert isinstance(f, Figure)
        plt.close(f)
    assert figs[0].axes[0].get_ylabel() == "score (accuracy)"  # the task score says what it is


def test_alignment_vs_transfer_has_a_panel_per_task_and_fits_only_checkpoints_that_learned():
    head = pd.DataFrame([dict(task=t, checkpoint=f"{t}-{m}-{s}", method=m, language=lg, metric="m", layer=2,
                              score_metric="accuracy", alignment=0.1 * k + 0.01 * s, score=0.5 + 0.02 * k,
                              gate_ok=not (t == "pawsx" and m == "pgd" and s == 2))
                         for t in ("pawsx", "xnli") for m in ("baseline", "pgd") for s in (1, 2)
                         for k, lg in enumerate(("de", "fr", "sw", "zh"))])
    fig = P.plot_alignment_vs_transfer(head)
    assert [a.get_title() for a in fig.axes] == ["pawsx", "xnli"]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "failed the gate (1 checkpoint(s), not fitted)" in labels
    assert not any("failed" in t.get_text() for t in fig.axes[1].get_legend().get_texts())
    plt.close(fig)


def test_the_comparison_figures_show_each_arm_with_its_interval():
    """One panel per task, an arm per row: its CI (the brief's), the one-seed-variance interval beside it, a cross
    where an arm has too few seeds for one; the brief's two comparisons come as named figures."""
    t = pd.DataFrame(dict(task=["xnli"] * 3 + ["pawsx"], method=["pgd", "freelb", "rs_da", "pgd"],
                          diff=[0.02, -0.1, 0.01, 0.03], ci_lo=[-0.01, -0.15, np.nan, np.nan],
                          ci_hi=[0.05, -0.05, np.nan, np.nan], ci_lo_pooled=[0.0, -0.13, np.nan, np.nan],
                          ci_hi_pooled=[0.04, -0.07, np.nan, np.nan]))
    fig = P.plot_vs_baseline(t, title="t")
    pawsx, xnli = fig.axes
    assert (pawsx.get_title(), xnli.get_title()) == ("pawsx", "xnli")
    assert [x.get_text() for x in xnli.get_yticklabels()] == ["rs_da", "pgd", "freelb"]
    assert {text.get_text() for text in pawsx.get_legend().get_texts()} == {
        "95% CI", "one seed variance for every arm", "no interval (too few seeds)"}
    plt.close(fig)
    res = analyze(*run_frames(), majority={"xnli": 0.34, "pawsx": 0.55}, n_boot=50, n_perm=50)
    named = P.vs_baseline_figures(res)
    assert [n for n, _ in named][:1] == ["method_vs_baseline"] and all(isinstance(f, Figure) for _, f in named)
    plt.close("all")


def test_number_format_has_no_negative_zero():
    assert _fmt(-0.004, 1) == "0.0" and _fmt(-0.06, 1) == "-0.1" and _fmt(float("nan")) == "n/a"


# ---------------------------------------------------------------- analyze_run: the typed result and the summary
class FakeRun:
    """What analyze_run and export_results read of a run folder, over frames made by the test."""

    def __init__(self, transfer, alignment, *, majority=None, primary=None, n_boot=2000, n_perm=10_000, seed=0,
                 drift=None, cells=(), train=None, protocol="zero_shot", tmp=None):
        primary = ReportConfig.Primary(**primary) if isinstance(primary, dict) else primary or ReportConfig.Primary()
        # model_construct: the test's small bootstrap counts are below the config's floor of 100
        report = ReportConfig.model_construct(primary=primary, correlation_metric="retrieval.acc1_en2xx",
                                              n_boot=n_boot, n_perm=n_perm, seed=seed)
        self.cfg = SimpleNamespace(report=report, protocol=SimpleNamespace(name=protocol, selection=False),
                                   grid=SimpleNamespace(seed=[1, 2, 3], task=["xnli", "pawsx"]),
                                   model_dump=lambda mode=None: {"name": "fake"})
        self.rows = {"transfer": transfer, "alignment": alignment,
                     "train": pd.DataFrame() if train is None else train}
        self.majority, self.drift, self.cell_ids = majority, drift or {}, list(cells)
        self.dir, self.params_file, self.tmp = tmp, "params/fake.yaml", tmp

    def load_results(self, kind):
        return self.rows[kind].copy()

    def majority_rates(self):
        return self.majority

    def split(self, task):  # as xltlib.data.split.Split: test rows scored, no selection rows (protocol.selection off)
        return SimpleNamespace(task=task, eval_split="test", select_rows={})

    def weight_drift(self):
        return self.drift

    def alignment_outcomes(self, metric, layer):  # no per-pair outcomes: the comparison gives differences only
        return pd.DataFrame()

    def cells(self):
        return [SimpleNamespace(cell_id=c) for c in self.cell_ids]  # as xltlib.config.grid.Cell

    def path(self, *parts):  # the analysis page shows config.yaml
        p = self.tmp.joinpath(*parts)
        p.write_text("name: fake\n")
        return p


def analyze(transfer, alignment, **kw) -> AnalysisResult:
    return analyze_run(FakeRun(transfer, alignment, **kw))


def run_frames(*, relation=True, langs=LANGS[:10], chance_checkpoint=None, pawsx_langs=("de", "fr"), seeds=(1, 2, 3),
               seed=0):
    """Tidy transfer and alignment rows of a small run: xnli on ``langs``, pawsx on two languages."""
    rng = np.random.default_rng(seed)
    lang_eff = {lg: rng.normal(0, 0.05) for lg in langs}
    al_eff = {lg: (2 * lang_eff[lg] if relation else rng.normal(0, 0.1)) for lg in langs}
    tr, al = [], []
    for task, ls in (("xnli", list(langs)), ("pawsx", list(pawsx_langs))):
        for m in ("baseline", "pgd"):
            for s in seeds:
                ck = f"{task}-{m}-{s}"
                for lg in ["en", *ls]:
                    v = 0.8 if lg == "en" else 0.6 + lang_eff.get(lg, 0) + rng.normal(0, 0.01)
                    if ck == chance_checkpoint and lg == "en":
                        v = 0.34
                    tr.append(dict(checkpoint=ck, cell_id=ck, model="m", task=task, method=m, seed=s, language=lg,
                                   language2="", metric="score", value=v, n=1000, layer=-1))
                    if lg == "en":
                        continue
                    a = 0.5 + al_eff.get(lg, 0) + rng.normal(0, 0.01)
                    for layer in (0, 1, 2):
                        for met in ("retrieval.acc1_en2xx", "cka.cka"):
                            al.append(dict(checkpoint=ck, model="m", task=task, method=m, seed=s, language=lg,
                                           language2="en", layer=layer, metric=met, value=a + 0.01 * layer, n=100,
                                           n_available=100, dataset="tatoeba"))
    return pd.DataFrame(tr), pd.DataFrame(al)


def test_analyze_returns_typed_result_with_primary_and_families():
    res = analyze(*run_frames(), majority={"xnli": 0.34, "pawsx": 0.55}, n_boot=100, n_perm=100)
    assert isinstance(res, AnalysisResult)
    assert res.rq1.unit == "checkpoint" and res.rq1.primary is res.rq1.by_checkpoint  # the declared default
    ck = res.rq1.by_checkpoint.set_index("task")
    assert ck.loc["xnli", "n_checkpoints"] == 6 and ck.loc["xnli", "n_languages"] == 10 and np.isfinite(ck.loc["xnli", "p"])
    pr = res.rq1.across.set_index("task")
    assert pr.loc["xnli", "metric"] == "retrieval.acc1_en2xx" and pr.loc["xnli", "layer"] == 2
    assert pr.loc["xnli", "n_languages"] == 10 and pr.loc["xnli", "n_checkpoints"] == 6
    assert pr.loc["xnli", "r"] > 0.9 and pr.loc["xnli", "p_holm"] <= 0.05
    assert pr.loc["pawsx", "note"].startswith("empty: 2 language(s)") and np.isnan(pr.loc["pawsx", "p"])
    # the primary (task, metric, layer) is not among the exploratory tests
    ex = res.rq1.exploratory
    assert not ((ex["task"] == "xnli") & (ex["metric"] == "retrieval.acc1_en2xx") & (ex["layer"] == 2)).any()
    assert len(ex) == 2 * 2 * 3 - 2 and (ex["p_holm"].dropna() >= ex["p"].dropna()).all()
    assert "Relation found" in res.summary and "Unit: the language" in res.summary
    assert "Primary analysis (declared in `report.primary`, unit: checkpoint)" in res.summary
    assert "n = 10 languages × 6 checkpoints" in res.summary
    assert "10 target languages with both transfer and alignment rows" in res.summary
    assert {"xnli", "pawsx"} <= set(res.comparison.scores["task"])
    assert set(res.rq2.slopes["method"]) == {"pgd"} and res.rq2.slopes.iloc[0]["n_languages"] == 10
    names = [n for n, _, _ in result_tables(res)]
    assert names[:2] == ["quality_gate", "method_vs_baseline"] and "correlations" in names
    assert {"rq1_checkpoints", "alignment_gain", "literature"} <= set(names)


def test_the_data_line_gives_seeds_per_task_where_a_task_ran_fewer():
    """The study runs PAN-X (RQ1's breadth) at one seed: "3 seed(s) per method" would overstate it."""
    assert _seed_counts(dict(seeds=3, seeds_by_task={"xnli": 3, "pawsx": 3})) == "3 seed(s) per method"
    assert _seed_counts(dict(seeds=3, seeds_by_task={"xnli": 3, "panx": 1})) == "seeds per method: panx 1, xnli 3"


def test_the_brief_answers_each_question_with_its_interval():
    """The answers lead the summary: per task the transfer difference of every arm with its CI and which CIs exclude
    0, RQ1 at its primary unit, RQ2's alignment gains over the baseline, the source paper's claims by verdict."""
    tr, al = run_frames()
    tr.loc[(tr["method"] == "pgd") & (tr["language"] != "en") & (tr["task"] == "xnli"), "value"] -= 0.05
    res = analyze(tr, al, majority={"xnli": 0.34, "pawsx": 0.55}, n_boot=200, n_perm=200)
    lines = res.brief.splitlines()
    assert res.summary.startswith("## Summary\n\n### The answers in brief\n\n" + res.brief)  # the answers lead
    xnli = next(ln for ln in lines if ln.startswith("- **Robust training vs the baseline, xnli"))
    row = res.comparison.scores.query("task == 'xnli' and setting == 'standard' and checkpoints == @PASSING").iloc[0]
    assert f"pgd {100 * row['diff']:+.1f} ({100 * row['ci_lo']:+.1f} to {100 * row['ci_hi']:+.1f})" in xnli
    assert row["ci_hi"] < 0 and xnli.endswith("below: pgd.")  # a planted 5-point loss
    rq1 = next(ln for ln in lines if ln.startswith("- **RQ1, xnli** (primary, unit: checkpoint)"))
    assert "within a language" in rq1 and "6 checkpoints" in rq1
    assert "Across checkpoints at a given English selection score: " in rq1  # the "learned less?" check
    align = next(ln for ln in lines if ln.startswith("- **Alignment, robust training vs the baseline, xnli"))
    diff = res.alignment_comparison.table.query("task == 'xnli' and method == 'pgd'").iloc[0]["diff"]
    assert f"pgd {100 * diff:+.1f} (no interval)" in align and align.endswith("no intervals (the notes below say why).")
    rq2 = next(ln for ln in lines if ln.startswith("- **RQ2, xnli-trained checkpoints** (primary: slope"))
    gain = res.rq2.alignment.query("task == 'xnli' and reference == 'baseline' and method == 'pgd'").iloc[0]
    assert f"pgd {100 * gain['slope_per_10x']:+.1f} ({100 * gain['slope_ci_lo']:+.1f} to " in rq2
    assert "lower-resource languages" in rq2 and "pre-trained encoder" in rq2
    claims = [ln for ln in lines if ln.startswith("- **The source paper: ")]
    assert claims and all(" of " in ln and " arms" in ln for ln in claims)


def test_the_brief_of_arms_with_too_few_seeds_claims_no_difference():
    res = analyze(*run_frames(seeds=(1,)), majority={"xnli": 0.34, "pawsx": 0.55}, n_boot=50, n_perm=50)
    xnli = next(ln for ln in res.brief.splitlines() if ln.startswith("- **Robust training vs the baseline, xnli"))
    assert "(no interval: too few seeds)" in xnli and xnli.endswith("no intervals (fewer than 3 seeds per arm).")
    rq2 = next(ln for ln in res.brief.splitlines() if ln.startswith("- **RQ2, xnli"))
    assert "no intervals (fewer than 3 seeds per arm)" in rq2 and "no arm gains more" not in rq2
    assert rq2.endswith("Above the pre-trained encoder, or only less lost than the baseline? No intervals.")
    assert "every checkpoint learned: baseline (1 pawsx, 1 xnli), pgd (1 pawsx, 1 xnli)." in res.brief


def test_the_brief_of_a_run_without_scores_says_so():
    assert brief_markdown(AnalysisResult(primary=ReportConfig.Primary())).endswith(
        "No result yet: the run has no scored checkpoints.\n")


def test_above_and_below_are_holm_adjusted_over_the_arms():
    """Seven arms at 95% each: an arm is called above or below the baseline after Holm over the arms with an
    interval; one whose CI alone excludes 0 is named as such, not as a difference."""
    t = pd.DataFrame(dict(method=["a", "b", "c"], diff=[5.0, 1.0, -4.0], ci_lo=[3.0, 0.1, -6.0],
                          ci_hi=[7.0, 1.9, -2.0], p=[0.001, 0.04, 0.002], p_holm=[0.003, 0.04, 0.004],
                          n_seeds=3, n_baseline_seeds=3))
    assert _above_below(t) == "above (Holm over 3 arms): a, b; below (Holm over 3 arms): c"
    t.loc[1, "p_holm"] = 0.12
    assert _above_below(t) == ("above (Holm over 3 arms): a; below (Holm over 3 arms): c; "
                               "CI excludes 0 but not after Holm: b")
    assert _above_below(t.iloc[[1]].assign(p_holm=0.2)) == ("no arm differs from the baseline; "
                                                            "CI excludes 0 but not after Holm: b")
    assert _above_below(t.drop(columns=["p", "p_holm"])) == "above: a, b; below: c"  # a table without p: the CIs
    assert _above_below(t.assign(p_holm=[0.003, np.nan, 0.004])).startswith("above (Holm over 3 arms): a, b;")
    # a verdict that rests on the seed-variance rule: what one shared variance would give after Holm is said
    t = t.assign(ci_lo_pooled=[3.5, 0.2, -5.0], ci_hi_pooled=[6.5, 1.8, -3.0], p_holm_pooled=[0.002, 0.12, 0.003])
    assert "one seed variance" not in _above_below(t)  # the same verdicts: nothing added
    t.loc[1, "p_holm_pooled"] = 0.03
    assert _above_below(t).endswith("CI excludes 0 but not after Holm: b; with one seed variance shared by every "
                                    "arm (3 seeds cannot check it), after Holm: above: a, b; below: c")


def test_loses_less_than_the_baseline_is_decided_as_the_comparison_line_decides():
    """RQ2's 'only loses less of it than the baseline' uses the alignment comparison with Holm over the arms, the
    same verdict as that comparison's line in the brief."""
    gains = pd.DataFrame([dict(task="xnli", method=m, reference=ref, mean_gain=g, mean_ci_lo=g - 0.05,
                               mean_ci_hi=g + 0.05) for m, g in (("baseline", -0.4), ("pgd", -0.2))
                          for ref in ("pretrained", "baseline")])
    vs = pd.DataFrame([dict(task="xnli", method="pgd", diff=0.2, ci_lo=0.01, ci_hi=0.39, p=0.04, p_holm=0.04)])
    assert raise_or_lose_less(gains, vs)[("xnli", "pgd")]["verdict"] == LOSES_LESS
    vs["p_holm"] = 0.2  # its CI excludes 0, but not after Holm over the task's arms
    assert raise_or_lose_less(gains, vs)[("xnli", "pgd")]["verdict"] == LOSES_LIKE


def test_only_an_unfinished_run_is_labelled_interim():
    def brief(**progress):
        return brief_markdown(AnalysisResult(primary=ReportConfig.Primary(), progress=progress))
    assert brief(cells=56, done=30).startswith("- **Interim: 30 of 56 cells of the grid have transfer results**")
    assert "Interim" not in brief(cells=56, done=56) and "Interim" not in brief()


def test_analyze_null_relation_is_not_found():
    res = analyze(*run_frames(relation=False, seed=3), majority={"xnli": 0.34}, n_boot=100, n_perm=100)
    row = res.rq1.primary.set_index("task").loc["xnli"]
    assert row["p_holm"] > 0.05
    assert "**No relation found**" in res.summary and "Relation found**:" not in res.summary


def test_gate_excludes_failing_checkpoints_from_rq1_and_rq2():
    tr, al = run_frames(chance_checkpoint="xnli-pgd-3")
    res = analyze(tr, al, majority={"xnli": 0.34, "pawsx": 0.55}, n_boot=50, n_perm=50)
    assert ("xnli", "xnli-pgd-3") in res.gate.excluded
    assert "xnli-pgd-3" not in set(res.points.analysed["checkpoint"])
    assert "xnli-pgd-3" in set(res.points.merged["checkpoint"])
    assert res.rq1.primary.set_index("task").loc["xnli", "n_checkpoints"] == 5
    assert "1 of 6 checkpoint(s) do not clear it" in res.summary and "xnli/xnli-pgd-3" in res.summary
    # the summary opens with the answers in brief, their first line each method's collapses; no selection rows:
    # decided on test, and the notes say so loudly
    assert res.summary.split("\n")[2] == "### The answers in brief"
    opening = res.summary.split("\n")[4]
    assert "pgd: 0 of 3 pawsx seeds, 1 of 3 xnli seeds did not learn; every checkpoint of the others learned: " \
           "baseline (3 pawsx, 3 xnli)." in opening
    assert "decided on English TEST rows" in res.summary and set(res.gate.table["split"]) == {"test"}
    # every xnli checkpoint at chance: rows say why, nothing is computed from them
    tr2 = tr.copy()
    tr2.loc[(tr2["task"] == "xnli") & (tr2["language"] == "en"), "value"] = 0.3
    res2 = analyze(tr2, al, majority={"xnli": 0.34, "pawsx": 0.55}, n_boot=50, n_perm=50)
    row = res2.rq1.primary.set_index("task").loc["xnli"]
    assert "fails the model-quality gate" in row["note"] and np.isnan(row["p"])
    mvb = res2.comparison.scores
    assert "fails the model-quality gate" in mvb[mvb["task"] == "xnli"].iloc[0]["note"]


def test_analyze_small_and_empty_inputs_never_crash():
    tr, al = run_frames(langs=["de", "fr"], seeds=(1,))
    res = analyze(tr, al, n_boot=50, n_perm=50)
    assert res.rq1.primary["note"].str.startswith("empty").all()
    assert "no test" in res.summary
    empty = analyze(tr.iloc[0:0], al, n_boot=50, n_perm=50)
    assert "nothing to relate" in empty.summary
    res3 = analyze(tr, al, primary={"metric": "cka.cka_debiased", "layer": "last"}, n_boot=50, n_perm=50)
    assert "not measured" in res3.summary


def test_english_targets_fixed_bar_chance_and_pretrained_reference():
    def row(task, metric, value, lo, hi, lang="en"):
        return dict(task=task, method="baseline", seed=1, language=lang, language2="", metric=metric, value=value,
                    ci_low=lo, ci_high=hi, n=100)

    rows = [row("udpos", "f1", 0.93, 0.92, 0.94), row("udpos", "f1", 0.40, 0.3, 0.5, "de"),  # only English counts
            row("xcopa", "accuracy", 0.54, 0.45, 0.64),  # above 50% but its CI reaches chance: does not clear
            row("lareqa", "map@20", 0.013, 0.009, 0.018), row("lareqa", "pretrained_map@20", 0.34, 0.3, 0.38),
            row("xquad", "f1", 0.457, 0.40, 0.51), row("mlqa", "f1", 0.5, 0.4, 0.6)]  # mlqa has no target
    t = english_targets(pd.DataFrame(rows)).set_index("task")
    assert set(t.index) == {"udpos", "xcopa", "lareqa", "xquad"}
    assert t.loc["udpos", "clears"] and t.loc["udpos", "english"] == pytest.approx(93.0)
    assert t.loc["xcopa", "target"] == pytest.approx(50.0) and not t.loc["xcopa", "clears"]
    assert t.loc["lareqa", "target"] == pytest.approx(34.0) and not t.loc["lareqa", "clears"]
    assert t.loc["xquad", "target"] == pytest.approx(55.0) and not t.loc["xquad", "clears"]


def test_robustness_vs_baseline_pairs_items_per_attack_and_strength():
    rng = np.random.default_rng(0)
    rows = []
    for seed in (1, 2, 3):
        truth = rng.random(400)
        for method, p_ok in (("baseline", 0.5), ("pgd", 0.7), ("freelb", 0.5)):
            for metric, attack, strength in (("robust_acc_clean", "clean", 0.0), ("robust_acc_pgd_0.02", "pgd", 0.02)):
                ok = (truth < (0.8 if attack == "clean" else p_ok)).astype(float)
                rows.append(dict(task="xnli", method=method, seed=seed, language="en", language2="", metric=metric,
                                 value=ok.mean(), n=400, attack=attack, strength=strength, scale="relative",
                                 per_example=ok.tolist(), checkpoint=f"{method}{seed}"))
    t = robustness_vs_baseline(pd.DataFrame(rows), n_boot=200).set_index(["metric", "method"])
    pgd = t.loc[("robust_acc_pgd_0.02", "pgd")]
    assert pgd["diff"] == pytest.approx(20.0, abs=3) and pgd["ci_lo"] > 0 and pgd["strength"] == 0.02
    assert pgd["attack"] == "pgd" and pgd["scale"] == "relative"
    assert t.loc[("robust_acc_clean", "pgd"), "diff"] == pytest.approx(0.0)
    assert t.loc[("robust_acc_pgd_0.02", "freelb"), "diff"] == pytest.approx(0.0)


def test_train_diagnostics_last_epoch_per_method():
    rows = []
    for method, gap in (("baseline", np.nan), ("pgd", 0.2)):
        for seed in (1, 2):
            for step, epoch in ((1, 0), (2, 0), (3, 1), (4, 1)):
                rows.append(dict(task="xnli", method=method, seed=seed, checkpoint=f"{method}{seed}",
                                 metric="train_loss", value=1.0 / step, epoch=epoch, loss_gap=gap * epoch))
            rows.append(dict(task="xnli", method=method, seed=seed, checkpoint=f"{method}{seed}",
                             metric="weight_drift_trained", value=0.01, epoch=np.nan, loss_gap=np.nan))
            # an older run's measure (frozen table included) is another quantity: not shown as this one
            rows.append(dict(task="xnli", method=method, seed=seed, checkpoint=f"{method}{seed}",
                             metric="weight_drift", value=0.004, epoch=np.nan, loss_gap=np.nan))
    t = train_diagnostics(pd.DataFrame(rows)).set_index("method")
    assert t.loc["pgd", "seeds"] == 2 and t.loc["pgd", "loss"] == pytest.approx((1 / 3 + 1 / 4) / 2)
    assert t.loc["pgd", "loss_gap"] == pytest.approx(0.2) and np.isnan(t.loc["baseline", "loss_gap"])
    assert t.loc["baseline", "weight_drift_trained"] == pytest.approx(0.01) and "weight_drift" not in t


def test_summary_without_alignment_rows_says_so_and_sizes_nothing():
    """A baseline-only run without the alignment stage (the study-bars check): no '0 languages' line."""
    transfer, _ = run_frames()
    res = analyze(transfer, pd.DataFrame(columns=transfer.columns), majority={"xnli": 0.34}, n_boot=50, n_perm=50)
    assert "No transfer or no alignment rows" in res.summary
    assert "With 0 languages" not in res.summary and "intervals are wide" not in res.summary


# ---------------------------------------------------------------- one set of numbers: analyze_run, export, the page
ROOT = Path(__file__).resolve().parents[1]


def small_run(tmp_path) -> FakeRun:
    """A run with a missing cell, a checkpoint at chance (gated out), weight drift and a git commit."""
    tr, al = run_frames(chance_checkpoint="xnli-pgd-3")
    drift = {ck: 0.01 + 0.001 * i for i, ck in enumerate(sorted(tr["checkpoint"].unique()))}
    return FakeRun(tr.assign(git_commit="abc"), al, majority={"xnli": 0.34, "pawsx": 0.55}, n_boot=100, n_perm=100,
                   seed=3, drift=drift, cells=[*tr["cell_id"].unique(), "xnli-freelb-1"], tmp=tmp_path)


def test_export_writes_what_analyze_run_returns(tmp_path):
    run = small_run(tmp_path)
    res = analyze_run(run)
    assert "Missing cells" in res.summary and "xnli-freelb-1" in res.summary
    n = len(run.cells())
    assert res.progress == dict(cells=n, done=n - 1)  # an unfinished run's answers open with what they rest on
    assert res.brief.startswith(f"- **Interim: {n - 1} of {n} cells of the grid have transfer results**")
    assert ("xnli", "xnli-pgd-3") in res.gate.excluded and len(res.rq1.drift_fits)
    out = tmp_path / "export"
    export_results(run, out)
    assert (out / "summary.md").read_text().startswith(res.summary)
    for name, table, _ in result_tables(res):
        assert len(table), name
        assert (out / f"{name}.csv").read_text() == table.to_csv(index=False), name
    primary = pd.read_csv(out / "rq1_checkpoints.csv").query("family == 'primary'").set_index("task")
    assert primary.loc["xnli", "coef"] == pytest.approx(res.rq1.primary.set_index("task").loc["xnli", "coef"])
    prov = json.loads((out / "provenance.json").read_text())
    assert (prov["cells"], prov["cells_done"]) == (n, n - 1) and prov["exported_with"]
    for f in out.glob("*.csv"):  # no 0, 1, 2... column: every header cell is named
        assert "" not in f.read_text().splitlines()[0].split(","), f.name


def test_export_refuses_rows_from_a_dirty_tree_unless_allowed(tmp_path):
    run = small_run(tmp_path)
    for kind in ("transfer", "alignment"):
        run.rows[kind] = run.rows[kind].assign(git_commit="abc123-dirty", git_diff="0f0f0f0f0f0f")
    with pytest.raises(DirtyTreeError, match="abc123-dirty.*--allow-dirty"):
        export_results(run, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # nothing that looks exported
    export_results(run, tmp_path / "allowed", allow_dirty=True)
    prov = json.loads((tmp_path / "allowed" / "provenance.json").read_text())
    assert prov["dirty"] is True and prov["git_commits"] == ["abc123-dirty"] and prov["git_diffs"] == ["0f0f0f0f0f0f"]


def test_analysis_page_runs_the_steps_of_analyze_run(tmp_path, monkeypatch):
    """The analysis notebook's cells call the steps analyze_run calls, in the same order, on the same rows:
    the page shows the numbers ``xlt export`` writes."""
    import jupytext

    run = small_run(tmp_path)
    # the page opens its run through xltlib.runner.stages.Run: here, the fake run (and no torch import)
    monkeypatch.setitem(sys.modules, "xltlib.runner.stages", SimpleNamespace(Run=SimpleNamespace(open=lambda d: run)))
    page = {}
    for cell in jupytext.read(ROOT / "notebooks" / "analysis.py").cells:
        if cell.cell_type == "code":
            exec(cell.source, page)
    plt.close("all")
    expected = analyze_run(run)
    assert page["res"].summary == expected.summary
    for (name, shown, _), (_, written, _) in zip(result_tables(page["res"]), result_tables(expected)):
        pd.testing.assert_frame_equal(shown, written, obj=name)
    pd.testing.assert_frame_equal(page["rq1"].headline, expected.rq1.headline)


def test_tables_are_shown_without_row_numbers(monkeypatch):
    from xltlib.reporting import tables

    shown = []
    monkeypatch.setattr(tables, "display", shown.append)
    tables.show(pd.DataFrame({"r": [0.123456, 0.5]}, index=[4, 9]), 3)
    tables.show(pd.DataFrame({"seeds": [3]}, index=pd.Index(["pgd"], name="method")))
    tables.show(pd.DataFrame({"n_languages": [16.0, float("nan")], "diff": [0.2025, float("nan")],
                              "rate": [0.0, 1.0]}), 4)
    tables.show(pd.DataFrame({"n_seeds": [1.0, float("nan")], "rate": [1.0, float("nan")]}), 4)
    first, second, third, fourth = (s.to_html() for s in shown)
    assert ">16<" in third and ">0.2025<" in third and ">0.0000<" in third  # a count as a count, a rate as a rate
    assert ">1<" in fourth and ">1.0000<" in fourth  # one seed is a count even when no count exceeds 1
    assert "row_heading" not in first and ">0.123<" in first and ">4<" not in first
    assert "row_heading" not in second and ">method<" in second and ">pgd<" in second
    wide = pd.DataFrame([[0.5]], index=pd.Index(["de"], name="language"),
                        columns=pd.MultiIndex.from_tuples([("tatoeba", "cka.cka", "last layer")]))
    assert list(flat(wide).columns) == ["language", "tatoeba · cka.cka · last layer"]
