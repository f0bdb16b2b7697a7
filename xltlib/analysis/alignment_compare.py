"""A step of the analysis: do robust methods keep more cross-lingual alignment than the baseline, and is that only
"they move the weights less"? Per task and parallel dataset, on the checkpoints that pass the model-quality gate
(:mod:`xltlib.analysis.gate`; a collapsed model that barely moved keeps its alignment and explains nothing), at the
primary alignment metric (``report.primary``: ``retrieval.acc1_en2xx`` at the last layer by default).

1. **Method - baseline** (:func:`method_vs_baseline_alignment`): the mean over languages of the method's primary
   alignment minus the baseline's at the same seeds. Its interval treats the data as what they are: parallel
   sentence pairs (*items*) crossed with checkpoints. Every checkpoint scores the same pairs, so an item the method
   retrieves better than the baseline does so at every seed; a pair of two languages with the same English
   sentence is one item (XNLI premises, PUD sentences). Variance of the difference = checkpoint (seed) part +
   item part, method-of-moments estimates of a crossed random-effects model (:func:`crossed_difference`): the seed
   part is pooled over the baseline and every method of the task (so it cannot collapse because a few seeds
   happened to agree), or a side's own arm's where that is larger (an arm that varies more from seed to seed does
   not borrow the others' smaller spread), with Satterthwaite degrees of freedom. An arm with fewer than
   :data:`MIN_SEEDS` matched seeds gets its difference and "too few seeds for an interval". Calibrated on
   simulated nulls in ``tests/test_alignment_compare.py``.
2. **Alignment ~ method + drift** (:func:`alignment_drift_fits`): OLS per task, one row per passing checkpoint:
   the method effects on alignment without and with the checkpoint's weight drift over its trained parameters
   (:mod:`xltlib.training.drift`) as a covariate. A method effect that shrinks once drift enters is "less drift",
   not "more alignment". (RQ1's ``drift_fits`` asks another question: whether drift absorbs the
   alignment -> transfer slope.)
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

from xltlib.analysis.inference import ALPHA, holm, p_words
from xltlib.analysis.item_inference import (pooled_sensitivity, satterthwaite_t, seed_variance_test, side_variance,
                                            t_test_p)
from xltlib.analysis.rq1 import resolve_layer
from xltlib.config.schema import ReportConfig

MIN_SEEDS = 3  # matched seeds an arm needs for an interval: fewer do not estimate a seed variance
TOO_FEW = "too few seeds for an interval"
PRETRAINED = "pretrained"
AC_COLS = ["task", "dataset", "model", "metric", "layer", "method", "n_seeds", "n_languages", "n_items", "n_pairs",
           "baseline", "score", "diff", "se", "ci_lo", "ci_hi", "df", "seed_df", "seed_variance", "p", "p_holm",
           "ci_lo_pooled", "ci_hi_pooled", "p_pooled", "p_holm_pooled", "seed_var_p", "interval", "note"]
DRIFT_FIT_COLS = ["task", "dataset", "model", "metric", "layer", "fit", "term", "coef", "se", "ci_lo", "ci_hi", "p", "df",
                  "n_checkpoints", "note"]
AC_ESTIMAND = ("mean over languages of the method's primary alignment minus the baseline's (seed-matched), "
               "checkpoints that pass the model-quality gate")
DRIFT_TERM = "weight drift (per 0.01)"  # the drift coefficient's unit: 0.01 of relative L2 distance
DRIFT_SCALE = 100.0


class ComparisonError(ValueError):
    """Two checkpoints of a comparison scored no common items."""


# ------------------------------------------------------------------------------------------- estimator
@dataclass(frozen=True)
class Difference:
    """Method - baseline over a shared item set: the estimate, its SE and interval, and the degrees of freedom
    (``seed_df``: of the pooled seed variance). ``note`` says why there is no interval."""

    diff: float
    se: float = math.nan
    ci_lo: float = math.nan
    ci_hi: float = math.nan
    df: float = math.nan
    seed_df: float = math.nan
    seed_variance: str = ""  # which seed variance each side took (its own arm's or the pooled) and its df
    ci_lo_pooled: float = math.nan  # sensitivity: the interval if every arm shared one seed variance
    ci_hi_pooled: float = math.nan
    seed_var_p: float = math.nan  # Bartlett's p that the arms share one seed variance
    p: float = math.nan  # two-sided p of diff under the interval's t(df)
    p_pooled: float = math.nan  # the same under the pooled-only interval
    note: str = ""


def _seed_mean_squares(y: np.ndarray) -> tuple[float, int, float, int]:
    """Two-way (seed x item) ANOVA without replication of one arm's [S, K] matrix: (SS seeds, df, SS residual, df)."""
    s, k = y.shape
    g = y.mean()
    r = y.mean(1, keepdims=True)
    c = y.mean(0, keepdims=True)
    return float(k * ((r - g) ** 2).sum()), s - 1, float(((y - r - c + g) ** 2).sum()), (s - 1) * (k - 1)


def pooled_seed_variance(arms: Sequence[np.ndarray]) -> tuple[float, float, int, float, int]:
    """The variance of one checkpoint's item mean due to its training run (seed), pooled over ``arms``
    (each [S_a, K] over the same K items): ``(sigma2_c, MS_seed, df_seed, MS_residual, df_residual)``.

    E[MS_seed] = K sigma2_c + sigma2_e and E[MS_residual] = sigma2_e (seed x item noise), so
    sigma2_c = (MS_seed - MS_residual) / K, truncated at 0. Arms with one seed add nothing."""
    ss_s = ss_e = 0.0
    df_s = df_e = 0
    for y in arms:
        if y.shape[0] < 2:
            continue
        a, da, b, db = _seed_mean_squares(y)
        ss_s, df_s, ss_e, df_e = ss_s + a, df_s + da, ss_e + b, df_e + db
    if df_s == 0:
        return math.nan, math.nan, 0, math.nan, 0
    ms_s, ms_e = ss_s / df_s, (ss_e / df_e if df_e else 0.0)
    k = arms[0].shape[1]
    return max(ms_s - ms_e, 0.0) / k, ms_s, df_s, ms_e, df_e


def crossed_difference(method: np.ndarray, baseline: np.ndarray, arms: Sequence[np.ndarray], *,
                       level: float = 0.95, min_seeds: int = MIN_SEEDS) -> Difference:
    """Method - baseline for seed-matched [S, K] matrices of item values (row s: the checkpoint of seed s; column
    k: item k, the same items in every row and arm; the estimand is the grand mean), with a crossed
    items x checkpoints interval.

    Model: Z[s, k] = method - baseline = delta + gamma_s + w_k + eps_sk, with gamma the difference of two
    checkpoint shocks (variance sigma2_m + sigma2_b; independent training runs), w the item x method interaction
    and eps the noise. Var(mean Z) = (sigma2_m + sigma2_b) / S + sigma2_w / K + sigma2_eps / (S K), estimated as
    (sigma2_m + sigma2_b) / S + MS_item(Z) / (S K), since E[MS_item(Z)] = S sigma2_w + sigma2_eps. Each side's
    sigma2 is the one pooled over ``arms`` (the baseline and every method of the task, each [S_a, K];
    :func:`pooled_seed_variance`), or the side's own where that is larger
    (:func:`~xltlib.analysis.item_inference.side_variance`). Satterthwaite df for the linear combination of mean
    squares; t interval. Shared seed effects (same data order for method and baseline) only make the seed part
    conservative."""
    if method.shape != baseline.shape:
        raise ValueError(f"method and baseline matrices differ in shape: {method.shape} vs {baseline.shape}")
    z = method - baseline
    s, k = z.shape
    est = float(z.mean())
    if s < min_seeds:
        return Difference(est, note=f"{s} matched seed(s): {TOO_FEW}")
    if k < 2:
        return Difference(est, note=f"{k} item(s): no item variance")
    pooled = pooled_seed_variance(arms)
    df_s = pooled[2]
    ms_item = float(s * ((z.mean(0) - est) ** 2).sum() / (k - 1))
    a = 1.0 / (s * k)

    def interval(estimates):
        """(se, lo, hi, nu) from (weight, (sigma2_c, MS_seed, df, MS_residual, df)) per seed-variance estimate:
        V = sum of weight a (MS_seed - MS_res) + a MS_item(Z), a = 1 / (S K); an estimate truncated at 0 drops
        out. The pooled estimate enters once, weighted by the sides that took it: it is one estimate, not two."""
        parts = [(a * ms_item, k - 1)]
        for n, (sigma2_c, ms_s, d_s, ms_e, d_e) in estimates:
            if sigma2_c > 0:
                parts += [(n * a * ms_s, d_s), (-n * a * ms_e, d_e)]
        var = sum(v for v, _ in parts)
        if not var > 0:
            return 0.0, math.nan, math.nan, math.nan
        return (math.sqrt(var), *satterthwaite_t(est, parts, level))

    estimates, took, on_pooled = [], [], 0
    for name, side in (("method", method), ("baseline", baseline)):
        own = pooled_seed_variance([side])
        _, _, mine = side_variance((own[0], own[2]), (pooled[0], pooled[2]))
        if mine:
            estimates.append((1, own))
        else:
            on_pooled += 1
        took.append(f"{name}: {'its own' if mine else 'pooled'} ({(own if mine else pooled)[2]} df)")
    se, lo, hi, nu = interval(estimates + ([(on_pooled, pooled)] if on_pooled else []))
    if not se > 0:
        return Difference(est, se=0.0, seed_df=df_s, note="no variation between items or checkpoints")
    se_pooled, lo_pooled, hi_pooled, nu_pooled = interval([(2, pooled)])  # sensitivity: one variance for every arm
    seeded = [y for y in arms if y.shape[0] > 1]
    var_p = seed_variance_test(np.concatenate([y.mean(1) for y in seeded]),
                               np.repeat(np.arange(len(seeded)), [y.shape[0] for y in seeded])) if seeded else math.nan
    return Difference(est, se, lo, hi, nu, float(df_s), seed_variance="; ".join(took), ci_lo_pooled=lo_pooled,
                      ci_hi_pooled=hi_pooled, seed_var_p=var_p, p=t_test_p(est, se, nu),
                      p_pooled=t_test_p(est, se_pooled, nu_pooled))


# ------------------------------------------------------------------------------------ data -> matrices
def passing_checkpoints(gate_table: pd.DataFrame) -> tuple[set[str], set[str]]:
    """(checkpoints whose every gate row passes, checkpoints with a failing row). A checkpoint serving several
    tasks (XQuAD and MLQA share TyDiQA's) passes when it passes for all of them."""
    if gate_table is None or not len(gate_table):
        return set(), set()
    ok = gate_table.groupby("checkpoint")["passes"].apply(lambda p: bool(p.astype(bool).all()))
    return set(ok.index[ok]), set(ok.index[~ok])


def _item_means(row) -> pd.DataFrame:
    """One checkpoint x language's outcomes, collapsed per item: mean correctness and the pairs it covers."""
    g = pd.DataFrame(dict(item=np.asarray(row["items"], np.int64), correct=np.asarray(row["correct"], float)))
    return g.groupby("item", sort=True)["correct"].agg(["mean", "size"])


def item_matrix(outcomes: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per checkpoint, one value per item such that the mean over items is the checkpoint's mean over languages
    of its mean over the language's pairs (the metric's row values, averaged over languages).

    Items: an English sentence; the pairs of two languages with the same English sentence form one item (its
    value sums their weighted outcomes). Only languages every checkpoint scored, and in each the items every
    checkpoint scored, are used (``info`` says how many); two checkpoints with no common item raise
    :class:`ComparisonError` naming both. Returns (frame [checkpoint x item], info)."""
    cks = sorted(outcomes["checkpoint"].unique())
    langs_by_ck = outcomes.groupby("checkpoint")["language"].apply(set)
    langs = sorted(set.intersection(*langs_by_ck)) if len(langs_by_ck) else []
    info = dict(n_languages=len(langs), dropped_languages=sorted(set.union(*langs_by_ck) - set(langs))
                if len(langs_by_ck) else [], n_pairs=0, dropped_pairs=0)
    if not langs:
        raise ComparisonError(f"checkpoints {cks[0]} and {cks[-1]} share no language of the parallel data")
    per_lang = []
    for lang in langs:
        rows = outcomes[outcomes["language"] == lang]
        means = {r["checkpoint"]: _item_means(r) for _, r in rows.iterrows()}
        common = None
        for m in means.values():
            common = m.index if common is None else common.intersection(m.index)
        if not len(common):
            names = sorted(means)
            pair = next(((a, b) for i, a in enumerate(names) for b in names[i + 1:]
                         if not len(means[a].index.intersection(means[b].index))), (names[0], names[-1]))
            raise ComparisonError(f"checkpoints {pair[0]} and {pair[1]} share no scored pair in language '{lang}' "
                                  "(different parallel rows or pools); rerun the alignment stage for both")
        # pairs per item every checkpoint scored (an English sentence may recur within a language)
        size = pd.concat([m.loc[common, "size"] for m in means.values()], axis=1).min(axis=1)
        n_lang = float(size.sum())
        info["n_pairs"] += int(n_lang)
        info["dropped_pairs"] += int(max(m["size"].sum() for m in means.values()) - n_lang)
        vals = pd.DataFrame({ck: m.loc[common, "mean"] for ck, m in means.items()})
        per_lang.append(vals.mul(size / (len(langs) * n_lang), axis=0))  # language-weighted contribution
    contrib = pd.concat(per_lang).groupby(level=0).sum()  # items shared by languages add up
    info["n_items"] = len(contrib)
    return (contrib * len(contrib)).T.loc[cks], info


def checkpoint_alignment(alignment: pd.DataFrame, metric: str, layer: int) -> pd.DataFrame:
    """Per fine-tuned checkpoint and dataset: the ``metric`` at ``layer`` averaged over its languages (the
    primary alignment of a checkpoint), with task, method and seed."""
    a = alignment[(alignment["metric"] == metric) & (alignment["layer"] == layer)
                  & (alignment["method"] != PRETRAINED) & (alignment["language"] != "all")]
    if "dataset" not in a:
        a = a.assign(dataset="")
    if "model" not in a:
        a = a.assign(model="")
    return (a.groupby(["task", "dataset", "model", "checkpoint", "method", "seed"], as_index=False)
             .agg(alignment=("value", "mean"), n_languages=("language", "nunique")))


# ------------------------------------------------------------------------------------------- the step
def alignment_target(alignment: pd.DataFrame, primary: ReportConfig.Primary) -> tuple[str, int | None]:
    """The primary alignment metric and its layer among those measured (None: not measured)."""
    if not len(alignment) or "metric" not in alignment:
        return primary.metric, None
    layers = alignment.loc[alignment["metric"] == primary.metric, "layer"].dropna().unique()
    return primary.metric, resolve_layer(primary, layers)


def method_vs_baseline_alignment(alignment: pd.DataFrame, outcomes: pd.DataFrame, passing: set[str], *,
                                 metric: str, layer: int, baseline: str = "baseline", level: float = 0.95,
                                 min_seeds: int = MIN_SEEDS) -> pd.DataFrame:
    """Per task, dataset and method: the seed-matched difference from the baseline in ``metric`` at ``layer``
    over the ``passing`` checkpoints, with the crossed items x checkpoints interval of
    :func:`crossed_difference` where per-pair ``outcomes`` exist (:func:`xltlib.runner.results.alignment_outcomes`),
    else the difference of the metric rows and a note."""
    ck = checkpoint_alignment(alignment, metric, layer)
    ck = ck[ck["checkpoint"].isin(passing)]
    have = outcomes[outcomes["checkpoint"].isin(passing)] if len(outcomes) else outcomes
    rows = []
    for (task, dataset, model), g in ck.groupby(["task", "dataset", "model"], sort=True):
        base = dict(task=task, dataset=dataset, model=model, metric=metric, layer=layer)
        if baseline not in set(g["method"]):
            rows.append(dict(base, method="(all)", note=f"empty: no passing {baseline} checkpoint"))
            continue
        o = have[have["checkpoint"].isin(set(g["checkpoint"])) & (have["dataset"] == dataset)] if len(have) else have
        values, info = None, {}
        if len(o) and set(g["checkpoint"]) <= set(o["checkpoint"]):
            values, info = item_matrix(o)
        seeds = {m: dict(zip(gm["seed"], gm["checkpoint"])) for m, gm in g.groupby("method")}
        arms = [values.loc[list(s.values())].to_numpy(float) for s in seeds.values()] if values is not None else []
        level_note = f"{len(info.get('dropped_languages', []))} language(s) not scored by every checkpoint left out" \
            if info.get("dropped_languages") else ""
        for method in sorted(set(seeds) - {baseline}):
            matched = sorted(set(seeds[method]) & set(seeds[baseline]))
            row = dict(base, method=method, n_seeds=len(matched), n_languages=int(g["n_languages"].max()))
            if not matched:
                rows.append(dict(row, note=f"empty: no passing seed shared with {baseline}"))
                continue
            m_ck = [seeds[method][s] for s in matched]
            b_ck = [seeds[baseline][s] for s in matched]
            row["score"] = float(g.set_index("checkpoint").loc[m_ck, "alignment"].mean())
            row["baseline"] = float(g.set_index("checkpoint").loc[b_ck, "alignment"].mean())
            if values is None:
                row.update(diff=row["score"] - row["baseline"], note=(
                    f"no per-sentence outcomes of {metric} (a metric without them, or rows before alignment metric "
                    "version 2: rerun the alignment stage): difference only"))
                rows.append(row)
                continue
            d = crossed_difference(values.loc[m_ck].to_numpy(float), values.loc[b_ck].to_numpy(float), arms,
                                   level=level, min_seeds=min_seeds)
            notes = [n for n in (d.note, level_note,
                                 f"{info['dropped_pairs']} pair(s) not scored by every checkpoint left out"
                                 if info["dropped_pairs"] else "") if n]
            row.update(n_languages=info["n_languages"], n_items=info["n_items"], n_pairs=info["n_pairs"],
                       diff=d.diff, se=d.se, ci_lo=d.ci_lo, ci_hi=d.ci_hi, df=d.df, seed_df=d.seed_df,
                       seed_variance=d.seed_variance, p=d.p, p_pooled=d.p_pooled, ci_lo_pooled=d.ci_lo_pooled,
                       ci_hi_pooled=d.ci_hi_pooled, seed_var_p=d.seed_var_p,
                       interval=(f"items (parallel sentences) x checkpoints, crossed; seed variance pooled over "
                                  f"{sum(1 for a in arms if a.shape[0] > 1)} arm(s), or a side's own where larger")
                       if np.isfinite(d.ci_lo) else "",
                       note="; ".join(notes))
            rows.append(row)
    table = pd.DataFrame(rows, columns=AC_COLS)
    if len(table):  # Holm over the methods of each task, dataset and model (the brief's 'above' / 'below')
        family = [table["task"], table["dataset"], table["model"]]
        for col in ("p", "p_pooled"):
            table[col.replace("p", "p_holm", 1)] = table[col].astype(float).groupby(family).transform(
                lambda g: pd.Series(holm(g.to_numpy()), index=g.index))
    return table


def alignment_drift_fits(alignment: pd.DataFrame, drift: Mapping[str, float], passing: set[str], *, metric: str,
                         layer: int, baseline: str = "baseline", level: float = 0.95) -> pd.DataFrame:
    """Per task and dataset, OLS over the ``passing`` checkpoints (one row each): ``alignment ~ method`` and
    ``alignment ~ method + drift`` (baseline the reference; drift in units of 0.01 relative L2). One output row per
    model and term: the coefficient, its SE, t interval and p (``df`` residual degrees of freedom)."""
    ck = checkpoint_alignment(alignment, metric, layer)
    ck = ck[ck["checkpoint"].isin(passing)]
    ck = ck.assign(drift=np.array([drift.get(c, np.nan) for c in ck["checkpoint"]], float) * DRIFT_SCALE)
    out = []
    for (task, dataset, model), g in ck.groupby(["task", "dataset", "model"], sort=True):
        base = dict(task=task, dataset=dataset, model=model, metric=metric, layer=layer)
        if baseline not in set(g["method"]) or g["method"].nunique() < 2:
            out.append(dict(base, note=f"empty: needs passing {baseline} and method checkpoints"))
            continue
        missing = sorted(g.loc[g["drift"].isna(), "checkpoint"])
        methods = f"C(method, Treatment(reference={baseline!r}))"
        for fit_name, formula, data in (("alignment ~ method", f"alignment ~ {methods}", g),
                                     ("alignment ~ method + drift", f"alignment ~ {methods} + drift",
                                      g.dropna(subset=["drift"]))):
            k = data["method"].nunique() + ("drift" in formula)
            note = (f"{len(missing)} checkpoint(s) without weight drift left out" if missing and "drift" in formula
                    else "")
            if len(data) <= k or data["method"].nunique() < 2 or baseline not in set(data["method"]):
                out.append(dict(base, fit=fit_name, n_checkpoints=len(data),
                                note=f"empty: {len(data)} checkpoint(s) for {k} parameters"))
                continue
            with warnings.catch_warnings():  # a rank-deficient design is reported below, not warned about
                warnings.simplefilter("ignore")
                fit = smf.ols(formula, data=data).fit()
            if fit.model.rank < len(fit.params):
                out.append(dict(base, fit=fit_name, n_checkpoints=len(data),
                                note="empty: weight drift does not vary apart from method"))
                continue
            ci = fit.conf_int(alpha=1 - level)
            for term in fit.params.index:
                if term == "Intercept":
                    continue
                label = DRIFT_TERM if term == "drift" else term.split("[T.", 1)[1].rstrip("]") + f" - {baseline}"
                out.append(dict(base, fit=fit_name, term=label, coef=float(fit.params[term]),
                                se=float(fit.bse[term]), ci_lo=float(ci.loc[term, 0]), ci_hi=float(ci.loc[term, 1]),
                                p=float(fit.pvalues[term]), df=float(fit.df_resid), n_checkpoints=len(data),
                                note=note))
    return pd.DataFrame(out, columns=DRIFT_FIT_COLS)


@dataclass
class AlignmentComparison:
    """What this step hands on: method - baseline on the primary alignment, and alignment ~ method + drift."""

    metric: str = ""
    layer: int | None = None
    table: pd.DataFrame = field(default_factory=pd.DataFrame)  # AC_COLS
    drift: pd.DataFrame = field(default_factory=pd.DataFrame)  # DRIFT_FIT_COLS
    excluded: list[str] = field(default_factory=list)  # fine-tuned checkpoints left out (gate failures, ungated)
    notes: list[str] = field(default_factory=list)


def compare_alignment(alignment: pd.DataFrame, outcomes: pd.DataFrame, gate_table: pd.DataFrame,
                      primary: ReportConfig.Primary, *, drift: Mapping[str, float] | None = None,
                      baseline: str = "baseline", level: float = 1 - ALPHA) -> AlignmentComparison:
    """The step: method - baseline on the primary alignment metric with its item-level interval, and
    alignment ~ method + drift, per task and dataset, over the checkpoints that pass the model-quality gate
    (``gate_table``'s ``passes``). ``outcomes``: the per-pair outcomes of the primary metric at its layer."""
    metric, layer = alignment_target(alignment, primary)
    res = AlignmentComparison(metric=metric, layer=layer)
    if layer is None:
        res.notes.append(f"Alignment comparison: the primary metric {metric} was not measured.")
        return res
    passing, failing = passing_checkpoints(gate_table)
    tuned = set(alignment.loc[alignment["method"] != PRETRAINED, "checkpoint"])
    res.excluded = sorted(tuned - passing)
    if res.excluded:
        ungated = sorted(tuned - passing - failing)
        res.notes.append(f"Alignment comparison: {len(res.excluded)} checkpoint(s) left out: "
                         + ", ".join(res.excluded) + (f" ({len(ungated)} without a gate row)" if ungated else "")
                         + ".")
    if outcomes is None or not len(outcomes):
        if outcomes is not None and outcomes.attrs.get("note"):
            res.notes.append(f"Alignment comparison: {outcomes.attrs['note']}.")
        outcomes = pd.DataFrame(columns=["checkpoint", "task", "dataset", "language", "items", "correct"])
    res.table = method_vs_baseline_alignment(alignment, outcomes, passing, metric=metric, layer=layer,
                                             baseline=baseline, level=level)
    res.drift = alignment_drift_fits(alignment, drift or {}, passing, metric=metric, layer=layer, baseline=baseline,
                                     level=level) if drift else pd.DataFrame(columns=DRIFT_FIT_COLS)
    if not drift:
        res.notes.append("Alignment ~ method + drift: no weight drift recorded for any checkpoint.")
    # a method none of whose checkpoints passes gets a row saying so (not silence)
    ft = alignment[(alignment["method"] != PRETRAINED) & (alignment["method"] != baseline)]
    shown = set(zip(res.table["task"], res.table["method"]))
    lost = sorted(set(zip(ft["task"], ft["method"])) - set(zip(ft.loc[ft["checkpoint"].isin(passing), "task"],
                                                                 ft.loc[ft["checkpoint"].isin(passing), "method"])))
    empty = [dict(task=t, metric=metric, layer=layer, method=m,
                  note="empty: no checkpoint of this method passes the model-quality gate")
             for t, m in lost if (t, m) not in shown]
    if empty:
        res.table = pd.concat([res.table, pd.DataFrame(empty, columns=AC_COLS)], ignore_index=True)
    return res


# ------------------------------------------------------------------------------------------- the words
def _diff_number(metric: str, v: float) -> str:
    """Accuracies in points (x100), other metrics as they are; no unit."""
    if not np.isfinite(v):
        return "n/a"
    return f"{100 * v:+.1f}" if "acc" in metric else f"{v:+.3f}"


def _diff_text(metric: str, v: float) -> str:
    """:func:`_diff_number` with its unit (points for accuracies)."""
    text = _diff_number(metric, v)
    return f"{text} points" if "acc" in metric and np.isfinite(v) else text


def summary_lines(ac: AlignmentComparison) -> list[str]:
    """The summary's section on this step (markdown lines; none when nothing was compared)."""
    t = ac.table
    if t is None or not len(t):
        return []
    L = ["### Alignment: robust methods vs the baseline", "",
         f"Estimand: {AC_ESTIMAND}; `{ac.metric}` at layer {ac.layer}. Interval: items (parallel sentence pairs) "
         "crossed with checkpoints, seed variance pooled over the task's arms or a side's own where larger, "
         "Satterthwaite df.", ""]
    for _, r in t.iterrows():
        head = "- " + " · ".join(str(r[c]) for c in ("task", "dataset", "method") if isinstance(r[c], str) and r[c])
        if not np.isfinite(r.get("diff", np.nan)):
            L.append(f"{head}: {r['note']}.")
            continue
        if np.isfinite(r.get("ci_lo", np.nan)):
            ci = (f"95% CI {_diff_text(ac.metric, r['ci_lo'])} to {_diff_text(ac.metric, r['ci_hi'])}, "
                  f"df {r['df']:.0f}; {int(r['n_seeds'])} matched seeds, {int(r['n_languages'])} languages, "
                  f"{int(r['n_items'])} items")
        else:
            ci = r["note"]
        L.append(f"{head} − baseline: {_diff_text(ac.metric, r['diff'])} ({ci}).")
    for (task, dataset), g in t.groupby(["task", "dataset"], sort=True):
        if line := pooled_sensitivity(g.to_dict("records"), fmt=lambda v: _diff_number(ac.metric, v)):
            L += ["", f"{task} · {dataset}: {line}"]
    d = ac.drift
    if d is not None and len(d) and d["coef"].notna().any():
        L += ["", "Less drift? Method effects on alignment without and with each checkpoint's weight drift (trained "
              "parameters only) in the model (OLS over passing checkpoints; its p-values assume one residual variance "
              "for every arm, which the interval above does not: read the change in a method's coefficient, not its "
              "p):", ""]
        for _, r in d[d["coef"].notna()].iterrows():
            L.append(f"- {r['task']} · {r['dataset']} · {r['fit']}: {r['term']} {r['coef']:+.4f} (95% CI "
                     f"{r['ci_lo']:+.4f} to {r['ci_hi']:+.4f}, p {p_words(r['p'])}, {int(r['n_checkpoints'])} "
                     "checkpoints).")
    return L + [""]
