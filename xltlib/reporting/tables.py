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

KEY_METRICS = ("retrieval.acc1_en2xx", "retrieval.acc1_xx2en", "cka.cka_debiased", "cka.cka",
               "cosine_gap.cosine_gap", "retrieval.margin_acc1_en2xx")  # [::2] feeds the heat-maps
ROBUSTNESS_METRICS = ("robust_acc_clean", "robust_acc_pgd_eps", "robust_acc_pgd_2eps", "robust_acc_synonym",
                      "robust_acc_noise_sigma", "attack_loss_gain_pgd_eps", "synonym_subst_rate")
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
    display(t.style.set_uuid(uuid).hide(axis="index").format(precision=6 if digits is None else digits,
                                                             na_rep="NaN"))


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
    rows = transfer[transfer["metric"].isin(ROBUSTNESS_METRICS)]
    if not len(rows):
        return pd.DataFrame()
    scale = rows["metric"].str.startswith("robust_acc") | (rows["metric"] == "synonym_subst_rate")
    rows = rows.assign(value=np.where(scale, 100 * rows["value"], rows["value"]))
    g = rows.groupby(["task", "method", "metric"])["value"]
    table = (g.mean().round(1).astype(str) + " ± " + g.std().fillna(0).round(1).astype(str)
             + " (n=" + g.size().astype(str) + ")").unstack("metric")
    return table[[m for m in ROBUSTNESS_METRICS if m in table.columns]]


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
    drift = train[train["metric"] == "weight_drift"].groupby(by)["value"].mean()
    if len(drift):
        table["weight_drift"] = drift
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


def rq1_correlations(rq1: RQ1) -> pd.DataFrame:
    """RQ1 across languages: the primary test per task, then the exploratory family (most significant first)."""
    corr = pd.concat([_family(rq1.primary, "primary"),
                      _family(rq1.exploratory, "exploratory (Holm within family)")], ignore_index=True)
    return corr.sort_values(["family", "p_holm"], na_position="last", kind="stable") if len(corr) else corr


def rq1_regressions(rq1: RQ1) -> pd.DataFrame:
    """RQ1 within languages: at the primary measure, then the exploratory family."""
    return pd.concat([_family(rq1.primary_within, "primary measure"),
                      _family(rq1.exploratory_within, "exploratory (Holm within family)")], ignore_index=True)


def rq2_slopes(rq2: RQ2) -> pd.DataFrame:
    """RQ2: the task-score gain's slope on log10 size per method, then the alignment gain's."""
    return pd.concat([_family(rq2.slopes, "transfer gain"),
                      _family(rq2.alignment, "alignment gain (primary measure)")], ignore_index=True)


def result_tables(res: AnalysisResult) -> list[tuple[str, pd.DataFrame, str]]:
    """(file name, table, title) of every statistics table, in the order a reader needs them."""
    return [
        ("quality_gate", res.gate.table,
         "Model-quality gate: English score (Wilson 95% CI; F1/QA/mAP: bootstrap CI) vs the majority rate"),
        ("method_vs_baseline", res.comparison.scores,
         "Method vs baseline: mean over target languages, seed-matched difference with 95% CI"),
        ("correlations", rq1_correlations(res.rq1),
         "RQ1 across languages (unit: language): primary test, then exploratory"),
        ("regressions", rq1_regressions(res.rq1),
         "RQ1 within languages: checkpoint + language fixed effects, two-way clustered SEs"),
        ("gain_vs_resource", rq2_slopes(res.rq2),
         "RQ2: seed-matched gain vs log10 CC-100 size (one point per language)"),
        ("alignment_pools", res.points.pools, "Alignment pool per dataset and language (n used, n available)"),
    ]
