"""Every figure of the stage reports and the export: matplotlib figures returned to the caller, which shows or
saves them. The task score's axis says what the score is (:func:`xltlib.analysis.score.score_label`)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from xltlib.analysis.compare import PASSING
from xltlib.analysis.rq1 import language_means
from xltlib.analysis.score import score_label
from xltlib.reporting.tables import KEY_METRICS


def _label(df: pd.DataFrame, column: str) -> str:
    """The axis label of a column: the task score's names its metric."""
    return score_label(df["task"].unique()) if column == "score" and "task" in df else column


# ---------------------------------------------------------------------------------------- method vs baseline
def plot_vs_baseline(table: pd.DataFrame, *, title: str, unit: str = "points", scale: float = 100.0):
    """Each arm minus the baseline, one panel per task: the estimate with its 95% CI (the one the brief reads), the
    interval with one seed variance for every arm beside it where the table has it (``ci_lo_pooled``), a cross
    where an arm has no interval (too few seeds). ``table``: rows of one setting and one set of checkpoints, with
    task, method, diff, ci_lo, ci_hi (fractions; ``scale`` turns them into ``unit``)."""
    rows = table[np.isfinite(table["diff"].astype(float))] if len(table) else table
    tasks = sorted(rows["task"].unique()) if len(rows) else []
    n_arms = max((rows["task"] == t).sum() for t in tasks) if tasks else 1
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(4.6 * max(len(tasks), 1), 0.42 * n_arms + 1.6),
                             squeeze=False)
    for ax, task in zip(axes[0], tasks):
        t = rows[rows["task"] == task].sort_values("method", ascending=False)
        y = np.arange(len(t))
        d, lo, hi = (scale * t[c].astype(float).to_numpy() for c in ("diff", "ci_lo", "ci_hi"))
        ok = np.isfinite(lo)
        if ok.any():
            ax.errorbar(d[ok], y[ok], xerr=[d[ok] - lo[ok], hi[ok] - d[ok]], fmt="o", color="C0", lw=2, capsize=3,
                        label="95% CI")
        if "ci_lo_pooled" in t and np.isfinite(t["ci_lo_pooled"].astype(float)).any():
            plo, phi = (scale * t[c].astype(float).to_numpy() for c in ("ci_lo_pooled", "ci_hi_pooled"))
            has = np.isfinite(plo)
            ax.errorbar(d[has], y[has] - 0.22, xerr=[d[has] - plo[has], phi[has] - d[has]], fmt="none", color="C1",
                        lw=1, capsize=2, label="one seed variance for every arm")
        if (~ok).any():
            ax.plot(d[~ok], y[~ok], "x", color="grey", label="no interval (too few seeds)")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, t["method"])
        ax.set_title(task)
        ax.set_xlabel(f"method − baseline ({unit})")
    if tasks:  # one legend for every panel's marks
        marks = {}
        for ax in axes[0]:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                marks.setdefault(label, handle)
        axes[0][0].legend(list(marks.values()), list(marks), fontsize=7, loc="best")
    else:
        axes[0][0].text(0.5, 0.5, "no comparison", ha="center", va="center")
        axes[0][0].set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def vs_baseline_figures(res) -> list[tuple[str, object]]:
    """The brief's comparisons as figures, ``(file name, figure)``: zero-shot transfer (standard setting,
    checkpoints passing the gate) and the primary alignment, one figure per parallel dataset."""
    out = []
    mvb = res.comparison.scores
    if mvb is not None and len(mvb):
        std = mvb[(mvb["setting"] == "standard") & (mvb["checkpoints"] == PASSING)]
        if np.isfinite(std["diff"].astype(float)).any():
            out.append(("method_vs_baseline", plot_vs_baseline(
                std, title="Zero-shot transfer, robust training − baseline (mean over the target languages; "
                           "checkpoints passing the gate)")))
    ac, metric = res.alignment_comparison.table, res.alignment_comparison.metric
    if ac is not None and len(ac) and np.isfinite(ac["diff"].astype(float)).any():
        scored = ac[np.isfinite(ac["diff"].astype(float))]
        datasets = sorted(scored["dataset"].unique())
        points = "acc" in metric  # accuracies in points, other metrics as they are
        for dataset in datasets:
            name = "alignment_vs_baseline" + ("" if len(datasets) == 1 else f"_{dataset}")
            out.append((name, plot_vs_baseline(
                scored[scored["dataset"] == dataset], unit="points" if points else metric,
                scale=100.0 if points else 1.0,
                title=f"Alignment ({metric}, {dataset}), robust training − baseline by the task the checkpoints "
                      "were trained on (seed-matched; passing the gate)")))
    return out


# ------------------------------------------------------------------------------------------------- RQ1
def plot_alignment_vs_transfer(merged_one_metric_layer: pd.DataFrame, *, x: str = "alignment",
                               y: str = "score", hue: str = "method", annotate: bool = False):
    """Scatter of the task score vs. alignment, one panel per task (their scores are not on one scale), with an OLS
    fit (95% band) per method over the checkpoints that pass the gate; a failed checkpoint's points (``gate_ok``
    False: it predicts the majority label whatever its alignment) are grey crosses, not fitted."""
    df = merged_one_metric_layer
    ok = df["gate_ok"].astype(bool) if "gate_ok" in df else pd.Series(True, index=df.index)
    tasks = sorted(df["task"].unique()) if "task" in df and len(df) else [""]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.5), squeeze=False)
    palette = dict(zip(sorted(df[hue].unique()), sns.color_palette(n_colors=max(df[hue].nunique(), 1))))
    for ax, task in zip(axes[0], tasks):
        here = (df["task"] == task) if task else pd.Series(True, index=df.index)
        for level, g in df[here & ok].groupby(hue):
            sns.regplot(data=g, x=x, y=y, ax=ax, color=palette[level], label=str(level),
                        scatter_kws=dict(s=14, alpha=0.6), line_kws=dict(lw=1.5),
                        ci=95 if len(g) > 2 else None, n_boot=200)
        failed = df[here & ~ok]
        if len(failed):
            ax.scatter(failed[x], failed[y], marker="x", s=18, color="0.55", alpha=0.8,
                       label=f"failed the gate ({failed['checkpoint'].nunique()} checkpoint(s), not fitted)")
        if annotate:
            for _, r in df[here].iterrows():
                ax.annotate(r["language"], (r[x], r[y]), fontsize=6, alpha=0.7)
        ax.set_title(task)
        ax.set_ylabel(_label(df[here], y))
        ax.legend(fontsize=7)
    title = [f"{c}={df[c].iloc[0]}" for c in ("metric", "layer") if c in df and df[c].nunique() == 1]
    fig.suptitle("Transfer vs alignment per (checkpoint, language)" + (f" ({', '.join(title)})" if title else ""))
    fig.tight_layout()
    return fig


def plot_language_means(headline: pd.DataFrame, *, x: str = "alignment", y: str = "score"):
    """What the primary test sees: one point per language (values centred within each checkpoint, then
    averaged over the checkpoints that pass the gate), one panel per task."""
    df = headline[headline["gate_ok"]] if "gate_ok" in headline else headline
    tasks = sorted(df["task"].unique()) if len(df) else []
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(5 * max(len(tasks), 1), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        one = df[df["task"] == task]
        m = language_means(one, x, y)
        ax.scatter(m[x], m[y], s=20)
        for lang, r in m.iterrows():
            ax.annotate(lang, (r[x], r[y]), fontsize=7, alpha=0.8)
        ax.set_title(f"{task}: {len(m)} languages")
        ax.set_xlabel(f"{x} (centred per checkpoint, mean)")
        ax.set_ylabel(f"{_label(one, y)} (centred per checkpoint, mean)")
    if not tasks:
        axes[0][0].text(0.5, 0.5, "no checkpoint passes the model-quality gate", ha="center", va="center")
        axes[0][0].set_axis_off()
    fig.tight_layout()
    return fig


def plot_corr_by_layer(corr_table: pd.DataFrame, *, stat: str = "r"):
    """Correlation (``r`` or ``rho``) with its bootstrap CI band across layers,
    one line per metric (one panel per task if several)."""
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


# ------------------------------------------------------------------------------------------------- RQ2
def plot_deltas(delta: pd.DataFrame, *, metric=None, layer=None):
    """Left: change in the task score vs. baseline per language and method.  Right:
    change in alignment vs. change in the task score for one metric/layer (the first
    one if not given)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    keys = [c for c in ("task", "language", "method") if c in delta]
    dt = delta.drop_duplicates(subset=keys)
    score = _label(delta, "score")
    sns.barplot(data=dt, x="language", y="delta_score", hue="method", ax=a1,
                errorbar=None)
    a1.axhline(0, color="grey", lw=0.8)
    a1.set_ylabel(f"Δ {score} vs. baseline")
    a1.tick_params(axis="x", rotation=90)
    sub = delta
    if "metric" in delta:
        metric = metric if metric is not None else sorted(delta["metric"].unique())[0]
        sub = sub[sub["metric"] == metric]
    if "layer" in delta:
        layer = layer if layer is not None else sorted(sub["layer"].unique())[-1]
        sub = sub[sub["layer"] == layer]
    sns.scatterplot(data=sub, x="delta_alignment", y="delta_score", hue="method", ax=a2)
    a2.axhline(0, color="grey", lw=0.8)
    a2.axvline(0, color="grey", lw=0.8)
    a2.set_title(f"metric={metric}, layer={layer}")
    a2.set_xlabel("Δ alignment vs. baseline")
    a2.set_ylabel(f"Δ {score} vs. baseline")
    fig.tight_layout()
    return fig


def plot_gain_vs_resource(frame: pd.DataFrame, *, size_col: str = "size_gib"):
    """Gain vs. CC-100 size (log x axis) with an OLS line per method."""
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
    ax.set_ylabel(f"gain in {_label(frame, 'score')} vs. baseline")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------- heat-maps
def plot_generalized(generalized: dict[tuple[str, str], tuple[pd.DataFrame, str]], task: str):
    """One task's generalized accuracy (%), first-sentence x second-sentence language, one panel per method
    (the matrices of :func:`xltlib.reporting.tables.generalized_matrix`)."""
    methods = [m for t, m in generalized if t == task]
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3), squeeze=False)
    for ax, m in zip(axes[0], methods):
        sns.heatmap(100 * generalized[(task, m)][0], ax=ax, vmin=30, vmax=80, cmap="viridis", cbar=False,
                    annot=True, fmt=".0f", annot_kws={"size": 7})
        ax.set_title(m)
        ax.set_xlabel("2nd sentence")
        ax.set_ylabel("1st sentence")
    fig.suptitle(f"{task}: generalized accuracy (%)", y=1.04)
    return fig


def alignment_heatmaps(alignment: pd.DataFrame, metrics: tuple[str, ...] = KEY_METRICS[::2]):
    """(title, language x layer frame, heatmap kwargs): the pre-trained model, then each method's change."""
    df = alignment[alignment["language"] != "all"]
    out = []
    for dataset in sorted(df["dataset"].unique()):
        for metric in metrics:
            m = df[(df["dataset"] == dataset) & (df["metric"] == metric)]
            if m.empty:
                continue
            pre = m[m["method"] == "pretrained"].pivot_table(index="language", columns="layer", values="value")
            if not pre.empty:
                out.append((f"{dataset} · {metric} · pre-trained", pre,
                            dict(cmap="viridis", annot=False, cbar_kws={"label": metric})))
            for method, g in m[m["method"] != "pretrained"].groupby("method"):
                ft = g.pivot_table(index="language", columns="layer", values="value", aggfunc="mean")
                if pre.empty:
                    continue
                delta = ft - pre.reindex_like(ft)
                lim = float(np.nanmax(np.abs(delta.values))) or 1e-9
                out.append((f"{dataset} · {metric} · {method} minus pre-trained (mean over tasks, seeds)", delta,
                            dict(cmap="RdBu_r", center=0, vmin=-lim, vmax=lim, cbar_kws={"label": "change"})))
    return out


def plot_heatmap(title: str, frame: pd.DataFrame, kwargs: dict):
    """One language x layer heat-map of :func:`alignment_heatmaps`."""
    fig, ax = plt.subplots(figsize=(0.45 * frame.shape[1] + 2.5, 0.28 * frame.shape[0] + 1.5))
    sns.heatmap(frame, ax=ax, **kwargs)
    ax.set_title(title)
    ax.set_xlabel("layer")
    ax.set_ylabel("language")
    return fig
