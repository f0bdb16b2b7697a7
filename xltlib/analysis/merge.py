"""Tables, plots and the plain-words summary of the analysis page; the statistics live in
:mod:`xltlib.analysis.stats`.

Inputs are the tidy long frames of the project (columns ``checkpoint, model, task, method, seed,
language, language2, layer, metric, value, n`` and, for alignment, ``dataset``).
"""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from xltlib.analysis import stats as S
from xltlib.data.languages import to_iso1

SOURCE_LANGUAGE = "en"
PRETRAINED_PREFIX = "pretrained:"

__all__ = [
    "merge_alignment_transfer",
    "delta_table",
    "plot_alignment_vs_transfer",
    "plot_language_means",
    "plot_corr_by_layer",
    "plot_deltas",
    "plot_gain_vs_resource",
    "summary_markdown",
]

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _norm_languages(s: pd.Series) -> pd.Series:
    """Apply :func:`to_iso1` to a column; unknown codes are lower-cased and
    kept (with one warning listing them)."""
    mapping, unknown = {}, []
    for c in pd.unique(s.dropna()):
        try:
            mapping[c] = to_iso1(c)
        except ValueError:
            mapping[c] = str(c).strip().lower()
            unknown.append(str(c))
    if unknown:
        warnings.warn(f"language codes not in languages table kept as-is: {sorted(unknown)}",
                      stacklevel=3)
    return s.map(mapping)


def _blank(s: pd.Series) -> pd.Series:
    return s.isna() | (s.astype(str).str.strip() == "")


# --------------------------------------------------------------------------
# 1. merge
# --------------------------------------------------------------------------
def merge_alignment_transfer(alignment: pd.DataFrame, transfer: pd.DataFrame,
                             *, transfer_metric: str = "score") -> pd.DataFrame:
    """Join per-language alignment of each fine-tuned checkpoint with its transfer.

    One row per (checkpoint, task, language, metric, layer) with ``alignment``,
    ``transfer_acc``, ``transfer_en`` and ``transfer_gap`` (= English accuracy
    of the checkpoint minus the language's accuracy).  Pre-trained rows and the
    source language (English) are excluded; duplicates are averaged.  If the
    alignment rows come from more than one ``dataset``, ``metric`` is
    prefixed with ``"<dataset>/"`` so groups stay distinct.
    """
    tr = transfer.copy()
    if "language2" in tr:
        tr = tr[_blank(tr["language2"])]
    tr = tr[tr["metric"] == transfer_metric]
    if tr.empty:
        raise ValueError(f"no standard-setting '{transfer_metric}' transfer rows")
    tr["language"] = _norm_languages(tr["language"])
    meta_cols = [c for c in ("model", "method", "seed") if c in tr]
    meta = tr.groupby("checkpoint", sort=False)[meta_cols].first()
    acc = (tr.groupby(["checkpoint", "task", "language"], as_index=False)
             .agg(transfer_acc=("value", "mean"),
                  n_eval=("n", "sum") if "n" in tr else ("value", "size")))
    en = (acc[acc["language"] == SOURCE_LANGUAGE]
          .rename(columns={"transfer_acc": "transfer_en"})[["checkpoint", "task", "transfer_en"]])
    acc = acc[acc["language"] != SOURCE_LANGUAGE].merge(en, on=["checkpoint", "task"], how="left")
    acc["transfer_gap"] = acc["transfer_en"] - acc["transfer_acc"]

    al = alignment.copy()
    al = al[~al["checkpoint"].astype(str).str.startswith(PRETRAINED_PREFIX)]
    if "method" in al:
        al = al[al["method"] != "pretrained"]
    al["language"] = _norm_languages(al["language"])
    al = al[al["language"] != SOURCE_LANGUAGE]
    if "dataset" in al and al["dataset"].nunique(dropna=True) > 1:
        al["metric"] = al["dataset"].astype(str) + "/" + al["metric"].astype(str)
    agg = dict(alignment=("value", "mean"))
    if "n" in al:
        agg["n_align"] = ("n", "max")  # the pool the alignment was measured on
    al = al.groupby(["checkpoint", "language", "metric", "layer"], as_index=False).agg(**agg)

    out = al.merge(acc, on=["checkpoint", "language"], how="inner")
    out = out.merge(meta.reset_index(), on="checkpoint", how="left")
    missing = set(al["checkpoint"]) - set(acc["checkpoint"])
    if missing:
        warnings.warn(f"{len(missing)} alignment checkpoint(s) without transfer rows dropped",
                      stacklevel=2)
    cols = ["checkpoint", "model", "task", "method", "seed", "language", "metric", "layer",
            "alignment", "n_align", "transfer_acc", "transfer_en", "transfer_gap", "n_eval"]
    out = out[[c for c in cols if c in out]]
    return out.sort_values(["task", "metric", "layer", "checkpoint", "language"],
                           ignore_index=True)



# --------------------------------------------------------------------------
# 4. deltas vs baseline
# --------------------------------------------------------------------------
def delta_table(merged: pd.DataFrame, *, baseline: str = "baseline") -> pd.DataFrame:
    """Seed-averaged change vs. the baseline per (task, language, metric, layer,
    method != baseline): ``delta_alignment`` and ``delta_transfer`` (method
    minus baseline), plus the two seed means and seed counts."""
    keys = [c for c in ("model", "task", "language", "metric", "layer") if c in merged]
    agg = {"alignment": ("alignment", "mean"), "transfer": ("transfer_acc", "mean"),
           "n_seeds": ("seed", "nunique") if "seed" in merged else ("alignment", "size")}
    if "transfer_gap" in merged:
        agg["gap"] = ("transfer_gap", "mean")
    m = merged.groupby(keys + ["method"], as_index=False, dropna=False).agg(**agg)
    if baseline not in set(m["method"]):
        raise ValueError(f"no rows with method == {baseline!r}")
    base = m[m["method"] == baseline].drop(columns="method")
    other = m[m["method"] != baseline]
    d = other.merge(base, on=keys, suffixes=("_method", "_baseline"), how="inner")
    d["delta_alignment"] = d["alignment_method"] - d["alignment_baseline"]
    d["delta_transfer"] = d["transfer_method"] - d["transfer_baseline"]
    if "gap_method" in d:
        d["delta_transfer_gap"] = d["gap_method"] - d["gap_baseline"]
        d = d.drop(columns=["gap_method", "gap_baseline"])
    first = keys + ["method", "delta_alignment", "delta_transfer"]
    return d[first + [c for c in d.columns if c not in first]].reset_index(drop=True)



# --------------------------------------------------------------------------
# 7. plots
# --------------------------------------------------------------------------
def _plt():
    return plt


def plot_alignment_vs_transfer(merged_one_metric_layer: pd.DataFrame, *, x: str = "alignment",
                               y: str = "transfer_acc", hue: str = "method",
                               annotate: bool = False):
    """Scatter of transfer vs. alignment with an OLS fit (95% band) per method."""
    plt = _plt()
    df = merged_one_metric_layer
    fig, ax = plt.subplots(figsize=(6, 4.5))
    palette = dict(zip(sorted(df[hue].unique()), sns.color_palette(n_colors=df[hue].nunique())))
    for level, g in df.groupby(hue):
        sns.regplot(data=g, x=x, y=y, ax=ax, color=palette[level], label=str(level),
                    scatter_kws=dict(s=18, alpha=0.7), line_kws=dict(lw=1.5),
                    ci=95 if len(g) > 2 else None, n_boot=200)
    if annotate:
        for _, r in df.iterrows():
            ax.annotate(r["language"], (r[x], r[y]), fontsize=6, alpha=0.7)
    title = []
    for c in ("metric", "layer"):
        if c in df and df[c].nunique() == 1:
            title.append(f"{c}={df[c].iloc[0]}")
    ax.set_title(", ".join(title))
    ax.legend(title=hue, fontsize=8)
    fig.tight_layout()
    return fig


def plot_language_means(headline: pd.DataFrame, *, x: str = "alignment", y: str = "transfer_acc"):
    """What the primary test sees: one point per language (values centred within each checkpoint, then
    averaged over the checkpoints that pass the gate), one panel per task."""
    plt = _plt()
    df = headline[headline["gate_ok"]] if "gate_ok" in headline else headline
    tasks = sorted(df["task"].unique()) if len(df) else []
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(5 * max(len(tasks), 1), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        m = S.language_means(df[df["task"] == task], x, y)
        ax.scatter(m[x], m[y], s=20)
        for lang, r in m.iterrows():
            ax.annotate(lang, (r[x], r[y]), fontsize=7, alpha=0.8)
        ax.set_title(f"{task}: {len(m)} languages")
        ax.set_xlabel(f"{x} (centred per checkpoint, mean)")
        ax.set_ylabel(f"{y} (centred per checkpoint, mean)")
    if not tasks:
        axes[0][0].text(0.5, 0.5, "no checkpoint passes the model-quality gate", ha="center", va="center")
        axes[0][0].set_axis_off()
    fig.tight_layout()
    return fig


def plot_corr_by_layer(corr_table: pd.DataFrame, *, stat: str = "r"):
    """Correlation (``r`` or ``rho``) with its bootstrap CI band across layers,
    one line per metric (one panel per task if several)."""
    plt = _plt()
    tasks = sorted(corr_table["task"].unique()) if "task" in corr_table else [None]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sub = corr_table if task is None else corr_table[corr_table["task"] == task]
        for metric, g in sub.groupby("metric"):
            g = g.groupby("layer", as_index=False)[[stat, f"{stat}_lo", f"{stat}_hi"]].mean()
            g = g.sort_values("layer")
            line, = ax.plot(g["layer"], g[stat], marker="o", ms=3, label=str(metric))
            ax.fill_between(g["layer"], g[f"{stat}_lo"], g[f"{stat}_hi"],
                            color=line.get_color(), alpha=0.15)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"{stat} (95% language-bootstrap CI)")
        ax.set_ylim(-1.05, 1.05)
        if task is not None:
            ax.set_title(str(task))
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_deltas(delta: pd.DataFrame, *, metric=None, layer=None):
    """Left: change in transfer vs. baseline per language and method.  Right:
    change in alignment vs. change in transfer for one metric/layer (the first
    one if not given)."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    keys = [c for c in ("task", "language", "method") if c in delta]
    dt = delta.drop_duplicates(subset=keys)
    sns.barplot(data=dt, x="language", y="delta_transfer", hue="method", ax=a1,
                errorbar=None)
    a1.axhline(0, color="grey", lw=0.8)
    a1.set_ylabel("Δ transfer score vs. baseline")
    a1.tick_params(axis="x", rotation=90)
    sub = delta
    if "metric" in delta:
        metric = metric if metric is not None else sorted(delta["metric"].unique())[0]
        sub = sub[sub["metric"] == metric]
    if "layer" in delta:
        layer = layer if layer is not None else sorted(sub["layer"].unique())[-1]
        sub = sub[sub["layer"] == layer]
    sns.scatterplot(data=sub, x="delta_alignment", y="delta_transfer", hue="method", ax=a2)
    a2.axhline(0, color="grey", lw=0.8)
    a2.axvline(0, color="grey", lw=0.8)
    a2.set_title(f"metric={metric}, layer={layer}")
    a2.set_xlabel("Δ alignment vs. baseline")
    a2.set_ylabel("Δ transfer vs. baseline")
    fig.tight_layout()
    return fig


def plot_gain_vs_resource(frame: pd.DataFrame, *, size_col: str = "size_gib"):
    """Gain vs. CC-100 size (log x axis) with an OLS line per method."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    methods = sorted(frame["method"].unique())
    colors = dict(zip(methods, sns.color_palette(n_colors=len(methods))))
    for m, g in frame.groupby("method"):
        ax.scatter(g[size_col], g["gain"], s=18, color=colors[m], label=str(m), alpha=0.8)
        if len(g) > 2 and g[size_col].nunique() > 1:
            b, a = np.polyfit(np.log(g[size_col]), g["gain"], 1)
            xs = np.geomspace(g[size_col].min(), g[size_col].max(), 50)
            ax.plot(xs, a + b * np.log(xs), color=colors[m], lw=1.5)
    for lang, g in frame.groupby("language"):
        ax.annotate(lang, (g[size_col].iloc[0], g["gain"].max()), fontsize=6, alpha=0.7)
    ax.set_xscale("log")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("CC-100 size (GiB, Conneau et al. 2020)")
    ax.set_ylabel("gain vs. baseline")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------
# 8. plain-language summary
# --------------------------------------------------------------------------
def _fmt(v, nd=2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    text = f"{v:.{nd}f}"
    return text.lstrip("-") if float(text) == 0 else text  # -0.004 -> "0.0", not "-0.0"


def _fmt_p(p) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"




def _pts(v, nd=1) -> str:
    """A score difference in points (x100), signed."""
    if v is None or not np.isfinite(v):
        return "n/a"
    text = f"{100 * v:+.{nd}f}"
    return text.replace("-", "+", 1) if float(text) == 0 else text


def _p_text(row, alpha) -> str:
    p = row.get("p", np.nan)
    if row.get("p_at_floor"):
        return f"p < {1 / (int(row['n_perm']) + 1):.1g} ({int(row['n_perm'])} permutations)"
    how = "exact, all orderings" if row.get("exact") else f"{int(row.get('n_perm', 0))} permutations"
    return f"p = {_fmt_p(p)} ({how})" if "n_perm" in row else f"p = {_fmt_p(p)}"


def _row_lines(table: pd.DataFrame, value: str, empty, line) -> list[str]:
    """One summary line per table row: ``line(row)`` where ``value`` is a number, else ``empty(row)`` (the
    row's note says why it is empty)."""
    return [line(r) if np.isfinite(r.get(value, np.nan)) else empty(r) for _, r in table.iterrows()]


def summary_markdown(res, *, protocol: str | None = None, alignment_text: str = "") -> str:
    """The plain-words summary of an :class:`~xltlib.analysis.stats.AnalysisResult`, built in this one place.

    Every claim states its unit, n and estimand; a relation is "found" only when the declared primary
    test rejects (Holm over tasks when there are several); the rest is labelled exploratory."""
    a = res.alpha
    c = res.counts
    L = ["## Summary", ""]
    if c:
        L += [f"Data: {c.get('checkpoints', 0)} fine-tuned checkpoints ({c.get('analysed_checkpoints', 0)} pass the "
              f"model-quality gate), {c.get('tasks', 0)} task(s), {c.get('languages', 0)} target languages, "
              f"{c.get('seeds', 0)} seed(s) per method.", ""]

    # -- the gate
    L += ["### Do the models learn their tasks? (model-quality gate)", ""]
    g = res.gate
    if g is None or g.empty:
        L.append("No English scores: the gate could not be applied.")
    else:
        for task, t in g.groupby("task"):
            maj = t["majority"].iloc[0]
            if not np.isfinite(maj):
                L.append(f"- {task}: English {100 * t['english'].mean():.1f}% (mean over {len(t)} checkpoints); no "
                         "majority rate for this task kind, not gated.")
                continue
            n_fail = int((~t["passes"].astype(bool)).sum())
            L.append(f"- {task}: English scores from {100 * t['english'].min():.1f}% to {100 * t['english'].max():.1f}% "
                     f"across {len(t)} checkpoints ({int(t['n'].max())} English test rows each; a checkpoint passes "
                     f"when the lower end of its Wilson 95% CI is above the majority rate {100 * maj:.1f}%): "
                     + ("every checkpoint clears it." if n_fail == 0 else
                        f"**{n_fail} of {len(t)} checkpoint(s) do not clear it and are left out of RQ1 and RQ2** "
                        "(no transfer to explain)."))
    L.append("")
    if alignment_text:
        L += [alignment_text, ""]

    # -- method vs baseline
    L += ["### Robust methods vs the baseline", ""]
    mvb = res.method_vs_baseline
    if mvb is None or mvb.empty:
        L.append("No method could be compared with the baseline (needs the baseline and another method).")
    else:
        L.append(f"Estimand: {S.MVB_ESTIMAND}; 95% CI from a paired bootstrap with seed variance added "
                 "(unit and n as stated per line).")
        L.append("")
        L += _row_lines(
            mvb, "diff", lambda r: f"- {r['task']} ({r['setting']}) {r['method']}: {r['note']}.",
            lambda r: f"- {r['task']} ({r['setting']}) {r['method']} − baseline: {_pts(r['diff'])} points "
                      f"(95% CI {_pts(r['ci_lo'])} to {_pts(r['ci_hi'])}; {int(r['n_languages'])} "
                      f"{'language pairs' if r['setting'] == 'generalized' else 'target languages'}, "
                      f"{int(r['n_seeds'])} matched seed(s); resampled: {r['resampled']})"
                      + (f" — {r['note']}" if r["note"] else "") + ".")
    L.append("")

    # -- RQ1
    L += ["### RQ1: does alignment track transfer?", ""]
    pr = res.rq1_primary
    where = "the last layer" if res.primary.layer == "last" else f"layer {res.primary.layer}"
    L.append(f"Primary analysis (declared in `report.primary`): `{res.primary_metric or res.primary.metric}` at {where}, "
             f"across languages. Unit: the language; estimand: {S.ACROSS_ESTIMAND}. "
             "Test: the languages are permuted (one permutation for all checkpoints); CI: language-cluster "
             "bootstrap with a small-cluster correction."
             + (" Holm over tasks." if len(pr) > 1 else ""))
    L.append("")
    found = []
    if pr is None or pr.empty:
        L.append("The primary test could not be run (no alignment and transfer rows to relate).")
    for _, r in (pr.iterrows() if pr is not None else []):
        if not np.isfinite(r.get("r", np.nan)):
            L.append(f"- {r['task']}: no test — {r['note']}.")
            continue
        p_use = r["p_holm"] if len(pr) > 1 else r["p"]
        rej = np.isfinite(p_use) and p_use <= a
        if rej:
            found.append(r["task"])
        L.append(f"- {r['task']} (layer {r['layer']}): r = {_fmt(r['r'])} (95% CI {_fmt(r['r_lo'])} to "
                 f"{_fmt(r['r_hi'])}), {_p_text(r, a)}"
                 + (f", Holm p = {_fmt_p(r['p_holm'])}" if len(pr) > 1 else "")
                 + f"; n = {int(r['n_languages'])} languages × {int(r['n_checkpoints'])} checkpoints. "
                 + (f"**Relation found**: languages better aligned to English transfer "
                    f"{'better' if r['r'] > 0 else 'worse'}." if rej else
                    "**No relation found** at α = " + f"{a}" + " (not evidence of no relation; see the CI)."))
    L.append("")
    pw = res.rq1_primary_within
    if pw is not None and len(pw):
        L.append(f"Within languages (secondary, same measure): estimand: {S.WITHIN_ESTIMAND}; units: checkpoints "
                 "and languages (SEs clustered two-way by both).")
        L.append("")
        L += _row_lines(
            pw, "coef", lambda r: f"- {r['task']}: no fit — {r['note']}.",
            lambda r: f"- {r['task']}: +0.1 alignment goes with {_pts(0.1 * r['coef'])} points of transfer "
                      f"(95% CI {_pts(0.1 * r['ci_lo'])} to {_pts(0.1 * r['ci_hi'])}, p = {_fmt_p(r['p'])}, "
                      f"t with {int(r['df'])} df; partial R² of alignment {_fmt(r['partial_r2'], 3)}; "
                      f"n = {int(r['n'])} points, {int(r['n_languages'])} languages × {int(r['n_checkpoints'])} "
                      "checkpoints).")
        L.append("")
    ex = res.rq1_exploratory
    if ex is not None and len(ex) and "p_holm" in ex:
        n_t = int(ex["p"].notna().sum())
        n_rej = int((ex["p_holm"] <= a).sum())
        L.append(f"Exploratory: {n_rej} of {n_t} other metric × layer tests across languages reject after Holm "
                 "within that family; exploratory results suggest where to look, they are not findings.")
        L.append("")

    # -- RQ2
    L += ["### RQ2: do robust objectives help low-resource languages most?", ""]
    rq = res.rq2
    if rq is None or rq.empty:
        L.append("Not estimated: needs the baseline and another method among the checkpoints that pass the gate.")
    else:
        L.append(f"Estimand: {S.RQ2_ESTIMAND}. Unit: the language (one point per language, its gains averaged over "
                 "seeds and tasks); OLS t-test; Holm across methods. Negative = larger gains for lower-resource "
                 "languages.")
        L.append("")
        any_found = False
        for _, r in rq.iterrows():
            if not np.isfinite(r.get("slope_per_10x", np.nan)):
                L.append(f"- {r['method']}: no fit — {r['note']}.")
                continue
            rej = np.isfinite(r["p_holm"]) and r["p_holm"] <= a
            any_found |= bool(rej and r["slope_per_10x"] < 0)
            verdict = ("gains shrink with more pre-training data (helps low-resource languages most)"
                       if rej and r["slope_per_10x"] < 0 else
                       "gains grow with more pre-training data" if rej else "no dependence on size found")
            L.append(f"- {r['method']}: {_pts(r['slope_per_10x'], 2)} points per 10× (95% CI "
                     f"{_pts(r['ci_lo'], 2)} to {_pts(r['ci_hi'], 2)}, p = {_fmt_p(r['p'])}, Holm p = "
                     f"{_fmt_p(r['p_holm'])}; n = {int(r['n_languages'])} languages, {int(r['n_tasks'])} task(s), "
                     f"{int(r['n_seeds'])} seed(s)): {verdict}."
                     + (f" ({r['note']})" if r["note"] else ""))
        if not any_found:
            L += ["", "The data do not support the claim that robust training helps low-resource languages most."]
    L.append("")

    L += ["### What these data cannot say", "",
          "- Only one pre-trained encoder was studied; the results may not hold for other models or sizes.",
          "- The analysis is correlational: alignment is measured, not manipulated, so it cannot show that "
          "alignment causes transfer; language properties (pre-training data, script, family) can drive both.",
          *([f"- With {c['languages']} languages and {c.get('seeds', 0)} seed(s) the intervals are wide."]
            if c.get("languages") else []),  # no RQ1 rows (no alignment stage): nothing to size
          "- CC-100 sizes are the published XLM-R Table 6 numbers (see `xltlib.data.languages`)."]
    if protocol == "offline_dev_split":
        L.append("- The offline protocol trains on part of the English dev set, so English scores are not a clean "
                 "held-out estimate.")
    if res.notes:
        L += ["", *[f"*Note:* {n}" for n in res.notes]]
    return "\n".join(L) + "\n"
