"""The tables a reader sees: descriptive tables of the stage reports (scores, suite, alignment, training), the
statistics tables of an :class:`~xltlib.analysis.summary.AnalysisResult`, and :func:`show`, which displays any
of them the one way the report shows tables (no 0, 1, 2... row numbers)."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from IPython.display import display

from xltlib.analysis.rq1 import RQ1
from xltlib.analysis.rq2 import RQ2
from xltlib.analysis.score import SOURCE, score_name, score_rows
from xltlib.analysis.summary import AnalysisResult
from xltlib.data import tasks as T
from xltlib.evaluation.robustness import is_robustness_metric, is_share, metric_order
from xltlib.training.drift import DRIFT_METRIC

KEY_METRICS = ("retrieval.acc1_en2xx", "retrieval.acc1_xx2en", "cka.cka", "cka.cka_linear_biased",
               "cosine_gap.cosine_gap", "retrieval.margin_acc1_en2xx")  # [::2] feeds the heat-maps
TRAIN_DIAGNOSTICS = ("loss", "clean_loss", "adv_loss", "loss_gap", "delta_token_norm", "delta_token_norm_rel",
                     "subst_rate")


# ------------------------------------------------------------------------------------------------ display
def flat(table: pd.DataFrame) -> pd.DataFrame:
    """The table with a named index (method, language...) turned into columns, bare row numbers dropped, and
    multi-level column names joined ("tatoeba · cka.cka · last layer"): one header row, as a CSV has."""
    named = any(n is not None for n in table.index.names)
    out = table.reset_index(drop=not named)
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [" · ".join(str(p) for p in col if str(p)) for col in out.columns]
    return out


def show(table: pd.DataFrame, digits: int | None = None) -> None:
    """Display a table in a notebook as the report shows every table: :func:`flat`, floats to ``digits``."""
    t = flat(table)
    # the table's id from its content, not a random one: a rerun of a page gives the same HTML
    uuid = hashlib.sha1(t.to_csv(index=False).encode()).hexdigest()[:10]
    styler = t.style.set_uuid(uuid).hide(axis="index").format(precision=6 if digits is None else digits, na_rep="NaN")
    # counts that a NaN row made float (seeds, languages, items) read as counts, not "16.0000"
    # (a column named n_* is a count even when every value is 1: "1 seed" is not a rate of 1.0000)
    counts = [c for c in t.columns if pd.api.types.is_float_dtype(t[c]) and t[c].notna().any()
              and bool((t[c].dropna() % 1 == 0).all())
              and (str(c).startswith("n_") or bool((t[c].dropna().abs() > 1).any()))]
    display(styler.format("{:.0f}", subset=counts, na_rep="NaN") if counts else styler)


# ------------------------------------------------------------------------------------------- task scores
def _mean_sd(mean: float, sd: float, n: int) -> str:
    return f"{100 * mean:.1f}" if n < 2 or np.isnan(sd) else f"{100 * mean:.1f} ± {100 * sd:.1f}"


def transfer_table(transfer: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per task: method x language task score (%), mean ± sd over seeds, plus avg and avg without English.

    The score is the task's XTREME-R metric: accuracy (XNLI, PAWS-X, XCOPA), tag F1 (UD-POS, PAN-X),
    mean of F1 and EM (QA), mAP@20 (LAReQA).
    """
    out = {}
    for task, df in score_rows(transfer).groupby("task"):
        per_seed = df.pivot_table(index=["method", "seed"], columns="language", values="value")
        langs = [SOURCE] + sorted(c for c in per_seed.columns if c != SOURCE)
        per_seed = per_seed[langs]
        per_seed["avg"] = per_seed[langs].mean(axis=1)  # XTREME: mean over all languages
        per_seed["avg (xx≠en)"] = per_seed[[c for c in langs if c != SOURCE]].mean(axis=1)
        g = per_seed.groupby(level="method")
        mean, sd, n = g.mean(), g.std(), g.size()
        table = pd.DataFrame({c: [_mean_sd(mean.loc[m, c], sd.loc[m, c], n[m]) for m in mean.index]
                              for c in mean.columns}, index=mean.index)
        table.insert(0, "seeds", n)
        out[task] = table
    return out


def suite_table(transfer: pd.DataFrame) -> pd.DataFrame:
    """XTREME-R style summary: per method, each task's score (mean over its languages, then over seeds) and
    the XTREME-R average over the run's XTREME-R tasks; plus the same without English ("xx≠en"). A task of
    another benchmark (PAWS-X: XTREME v1) is shown with its benchmark's name and left out of the average."""
    std = score_rows(transfer)
    if std.empty:
        return pd.DataFrame()
    per = (std.groupby(["method", "seed", "task"])
              .apply(lambda g: pd.Series({"all": g["value"].mean(),
                                          "xx": g.loc[g["language"] != SOURCE, "value"].mean()}),
                     include_groups=False)
              .reset_index())
    tasks = sorted(per["task"].unique())
    xtreme_r = [t for t in tasks if T.get_task(t).benchmark == "XTREME-R"]
    out = {}
    for col, label in (("all", ""), ("xx", " xx≠en")):
        wide = per.pivot_table(index=["method", "seed"], columns="task", values=col)
        wide["XTREME-R avg"] = wide[xtreme_r].mean(axis=1) if xtreme_r else np.nan
        wide = wide.rename(columns={t: f"{t} ({T.get_task(t).benchmark})" for t in tasks if t not in xtreme_r})
        g = wide.groupby(level="method")
        mean, sd, n = g.mean(), g.std(), g.size()
        for c in mean.columns:
            out[f"{c}{label}"] = [_mean_sd(mean.loc[m, c], sd.loc[m, c], n[m]) for m in mean.index]
        index = mean.index
    table = pd.DataFrame(out, index=index)
    table.insert(0, "seeds", std.groupby("method")["seed"].nunique())
    return table


def english_targets(transfer: pd.DataFrame) -> pd.DataFrame:
    """Does each task learn? Per task with a target (``Task.english_target``) and method: the English score
    (mean over seeds; the envelope of the per-seed bootstrap 95% CIs) against the target, which is a fixed
    score or the pre-trained encoder's own (``pretrained_<metric>`` rows, LAReQA)."""
    rows = []
    en = transfer[(transfer["language"] == SOURCE) & (transfer["language2"].fillna("") == "")]
    if "model" not in en:
        en = en.assign(model="")
    for (model, task, method), g in en.groupby(["model", "task", "method"], sort=True):
        spec = T.get_task(task).english_target
        if spec is None:
            continue
        metric, target = spec
        got = g[g["metric"] == metric]
        if got.empty:
            continue
        if target == "pretrained":
            ref = g.loc[g["metric"] == f"pretrained_{metric}", "value"]
            if ref.empty:  # rows scored before the reference existed: say so rather than fail the task
                target, what = float("nan"), "the pre-trained encoder's score (not in these rows: rescore)"
            else:
                target, what = float(ref.mean()), "the pre-trained encoder's score"
        elif target == "chance":
            target, what = 1 / len(T.get_task(task).labels), "chance"
        else:
            what = "fixed target"
        mean, low = float(got["value"].mean()), float(got["ci_low"].min())
        rows.append(dict(model=model, task=task, method=method, metric=metric, seeds=int(got["seed"].nunique()),
                         english=100 * mean, ci_low=100 * low, ci_high=100 * float(got["ci_high"].max()),
                         target=100 * target, target_is=what,
                         # chance is cleared only by the CI; a bar by the score itself
                         clears=(bool(low > target if what == "chance" else mean >= target)
                                 if np.isfinite(target) else None),
                         ci_above_target=bool(low > target) if np.isfinite(target) else None))
    return pd.DataFrame(rows, columns=["model", "task", "method", "metric", "seeds", "english", "ci_low", "ci_high",
                                       "target", "target_is", "clears", "ci_above_target"])


def task_coverage(tasks_in_run: list[str], transfer: pd.DataFrame) -> pd.DataFrame:
    """Which tasks and languages were scored, with the metric, the training data and what the offline data lacks."""
    std = score_rows(transfer)
    rows = []
    for name in tasks_in_run:
        t = T.get_task(name)
        langs = sorted(std.loc[std["task"] == name, "language"].unique())
        n = std.loc[std["task"] == name].groupby("language")["n"].max()
        rows.append({"task": name, "score": score_name(name),
                     "languages scored": f"{len(langs)}: {', '.join(langs)}",
                     "examples per language": f"{int(n.min())}–{int(n.max())}" if len(n) else "",
                     "notes": t.notes})
    return pd.DataFrame(rows).set_index("task")


def generalized_matrix(transfer: pd.DataFrame) -> dict[tuple[str, str], tuple[pd.DataFrame, str]]:
    """Per (task, method): accuracy matrix first-language x second-language (seed mean) and a summary line."""
    acc = transfer[transfer["metric"] == "accuracy"].copy()
    acc["language2"] = acc["language2"].fillna("")
    acc.loc[acc["language2"] == "", "language2"] = acc["language"]
    out = {}
    for (task, method), df in acc.groupby(["task", "method"]):
        if (df["language"] != df["language2"]).sum() == 0:
            continue
        crossed = sorted(set(df.loc[df["language"] != df["language2"], "language"]))  # the generalized subset
        mat = df.pivot_table(index="language", columns="language2", values="value", aggfunc="mean")
        mat = mat.loc[crossed, crossed]
        diag = np.nanmean(np.diag(mat.values))
        off = mat.values[~np.eye(len(mat), dtype=bool)]
        out[(task, method)] = (mat, f"{len(mat)} languages: same-language pairs {100 * diag:.1f}% (all held-out "
                                    f"rows), mixed-language pairs {100 * np.nanmean(off):.1f}%")
    return out


def robustness_table(transfer: pd.DataFrame) -> pd.DataFrame:
    """English accuracy (%) under attack per task and method, mean ± sd over seeds (xltlib.evaluation.robustness rows);
    the attack's loss gain must be positive for a working adversary. Empty when robustness was not scored."""
    rows = transfer[transfer["metric"].map(is_robustness_metric)]
    if not len(rows):
        return pd.DataFrame()
    scale = rows["metric"].map(is_share)
    rows = rows.assign(value=np.where(scale, 100 * rows["value"], rows["value"]))
    g = rows.groupby(["task", "method", "metric"])["value"]
    table = (g.mean().round(1).astype(str) + " ± " + g.std().fillna(0).round(1).astype(str)
             + " (n=" + g.size().astype(str) + ")").unstack("metric")
    return table[metric_order(table.columns)]


def train_diagnostics(train: pd.DataFrame) -> pd.DataFrame:
    """Per model, task and method: the training diagnostics of the kept epoch (``selected_epoch`` under checkpoint
    selection, else the last; mean over its steps, then over seeds): loss, clean and perturbed loss, their gap,
    the perturbation's norm per token (absolute and relative to the token embeddings), RS-DA's substitution
    rate; and the weight drift of the kept weights from the pre-trained encoder."""
    if not len(train):
        return pd.DataFrame()
    steps = train[train["metric"] == "train_loss"].rename(columns={"value": "loss"})
    if not len(steps):
        return pd.DataFrame()
    cols = [c for c in TRAIN_DIAGNOSTICS if c in steps and steps[c].notna().any()]
    kept = steps.groupby("checkpoint")["epoch"].transform("max")
    if "selected_epoch" in steps:
        kept = steps["selected_epoch"].fillna(kept)
    if "model" not in train:
        train, steps = train.assign(model=""), steps.assign(model="")
    by = ["model", "task", "method"]
    per_ck = steps[steps["epoch"] == kept].groupby([*by, "seed"])[cols].mean()
    table = per_ck.groupby(level=by).mean()
    table.insert(0, "seeds", per_ck.groupby(level=by).size())
    # over the trained parameters (xltlib.training.drift); older rows' `weight_drift` (frozen table included) differ
    drift = train[train["metric"] == DRIFT_METRIC].groupby(by)["value"].mean()
    if len(drift):
        table[DRIFT_METRIC] = drift
    return table.reset_index()


# ------------------------------------------------------------------------------------------- alignment
def alignment_summary(alignment: pd.DataFrame, method: str = "pretrained",
                      metrics: tuple[str, ...] = KEY_METRICS) -> pd.DataFrame:
    """Language x (dataset, metric, last layer / best layer): one row per language, for one method."""
    df = alignment[(alignment["method"] == method) & (alignment["language"] != "all")
                   & alignment["metric"].isin(metrics)]
    if df.empty:
        return pd.DataFrame()
    rows = []
    for (dataset, metric, lang), g in df.groupby(["dataset", "metric", "language"]):
        g = g.groupby("layer")["value"].mean().sort_index()
        rows.append({"dataset": dataset, "metric": metric, "language": lang, "last layer": g.iloc[-1],
                     "best layer": f"{g.max():.3f} (L{int(g.idxmax())})"})
    long = pd.DataFrame(rows)
    wide = long.pivot_table(index="language", columns=["dataset", "metric"], values=["last layer", "best layer"],
                            aggfunc="first")
    wide.columns = wide.columns.reorder_levels([1, 2, 0])
    return wide.sort_index(axis=1).round(3)


def langid_by_layer(alignment: pd.DataFrame) -> pd.DataFrame:
    """Language-ID probe accuracy per layer (rows) and method (columns): lower = more language-neutral."""
    df = alignment[alignment["metric"] == "langid_probe.langid_acc"]
    if df.empty:
        return pd.DataFrame()
    return df.pivot_table(index="layer", columns=["dataset", "method"], values="value", aggfunc="mean").round(3)


# ------------------------------------------------------------------------------------ statistics tables
def _family(df: pd.DataFrame, family: str) -> pd.DataFrame:
    return df.assign(family=family) if len(df) else df


def rq1_checkpoints(rq1: RQ1) -> pd.DataFrame:
    """RQ1 across checkpoints within languages: at the primary measure (the primary test when report.primary.unit is
    checkpoint), then the exploratory family (most significant first)."""
    first = "primary" if rq1.unit == "checkpoint" else "secondary (primary measure)"
    t = pd.concat([_family(rq1.by_checkpoint, first),
                   _family(rq1.exploratory_by_checkpoint, "exploratory (Holm within family)")], ignore_index=True)
    return t.sort_values(["family", "p_holm"], na_position="last", kind="stable") if len(t) else t


def rq1_correlations(rq1: RQ1) -> pd.DataFrame:
    """RQ1 across languages: at the primary measure (the primary test when report.primary.unit is language), then
    the exploratory family (most significant first)."""
    first = "primary" if rq1.unit == "language" else "secondary (primary measure)"
    corr = pd.concat([_family(rq1.across, first),
                      _family(rq1.exploratory, "exploratory (Holm within family)")], ignore_index=True)
    return corr.sort_values(["family", "p_holm"], na_position="last", kind="stable") if len(corr) else corr


def rq1_regressions(rq1: RQ1) -> pd.DataFrame:
    """RQ1 within checkpoints and languages: at the primary measure, then the exploratory family."""
    return pd.concat([_family(rq1.within, "primary measure"),
                      _family(rq1.exploratory_within, "exploratory (Holm within family)")], ignore_index=True)


def rq2_slopes(rq2: RQ2) -> pd.DataFrame:
    """RQ2, secondary: the task-score gain's slope on log10 size per method."""
    return _family(rq2.slopes, "transfer gain")


def result_tables(res: AnalysisResult) -> list[tuple[str, pd.DataFrame, str]]:
    """(file name, table, title) of every statistics table, in the order a reader needs them."""
    return [
        ("quality_gate", res.gate.table,
         "Model-quality gate: English score with its CI vs the bar in `bar` (`bar_kind`): accuracy (Wilson CI) vs the "
         "majority rate; PAN-X span F1 (bootstrap CI over sentences) vs the memorized-entity F1; UD-POS/QA/mAP: "
         "bootstrap CI, not gated"),
        ("method_vs_baseline", res.comparison.scores,
         "Method vs baseline: mean over target languages of the method's score minus the baseline's (each over its "
         "checkpoints), shown for the checkpoints passing the gate and for every trained checkpoint (`checkpoints`). "
         "95% CI = diff ± t(df)·sqrt(se_items² + se_seeds²): se_items from a bootstrap over item ids shared by every "
         "language, seed and method (n_items: items scored in every language), se_seeds from the seed variance pooled "
         "over the task's methods (seed_df), or a side's own arm's where larger (seed_variance); no CI where a side has fewer than 3 seeds ('too few seeds for an "
         "interval')"),
        ("alignment_vs_baseline", res.alignment_comparison.table,
         "Alignment, method vs baseline (checkpoints passing the gate): mean over languages of the primary alignment "
         "metric, seed-matched difference; 95% CI from items (parallel sentence pairs, one per English sentence) "
         "crossed with checkpoints, the seed variance pooled over the task's arms (seed_df) or a side's own where "
         "larger (seed_variance), Satterthwaite df; no CI "
         "below 3 matched seeds ('too few seeds for an interval')"),
        ("alignment_method_drift", res.alignment_comparison.drift,
         "Less drift? alignment ~ method (+ weight drift over the trained parameters, per 0.01 relative L2): OLS "
         "over the checkpoints passing the gate, per task; a method effect that shrinks once drift enters is "
         "'moves the weights less', not 'aligns more'"),
        ("rq1_checkpoints", rq1_checkpoints(res.rq1),
         "RQ1 across checkpoints within languages (unit: checkpoint; language fixed effects, checkpoint labels "
         "permuted): at the primary measure, then exploratory"),
        ("correlations", rq1_correlations(res.rq1),
         "RQ1 across languages (unit: language): at the primary measure, then exploratory"),
        ("regressions", rq1_regressions(res.rq1),
         "RQ1 within checkpoints and languages: checkpoint + language fixed effects, two-way clustered SEs"),
        ("alignment_gain", res.rq2.alignment,
         "RQ2 (primary): alignment gain on Tatoeba over the baseline (seed-matched) and over the pre-trained encoder, "
         "mean and slope per 10x CC-100 size"),
        ("gain_vs_resource", rq2_slopes(res.rq2),
         "RQ2 (secondary): seed-matched transfer gain vs log10 CC-100 size (one point per language)"),
        ("literature", res.literature,
         "The source paper's claims (Huang et al. 2021) beside this study's estimates (points, 95% CI) and verdicts"),
        ("alignment_pools", res.points.pools, "Alignment pool per dataset and language (n used, n available)"),
    ]
