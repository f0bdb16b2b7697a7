"""Tables and figure data for the stage reports (pure pandas; the notebooks only display them)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def _fmt(mean: float, sd: float, n: int) -> str:
    return f"{100 * mean:.1f}" if n < 2 or np.isnan(sd) else f"{100 * mean:.1f} ± {100 * sd:.1f}"


def _standard(transfer: pd.DataFrame, metric: str = "score") -> pd.DataFrame:
    return transfer[(transfer["metric"] == metric) & (transfer["language2"].fillna("") == "")]


def transfer_table(transfer: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per task: method x language task score (%), mean ± sd over seeds, plus avg and avg without English.

    The score is the task's XTREME-R metric: accuracy (XNLI, PAWS-X, XCOPA), tag F1 (UD-POS, PAN-X),
    mean of F1 and EM (QA), mAP@20 (LAReQA).
    """
    std = _standard(transfer)
    out = {}
    for task, df in std.groupby("task"):
        per_seed = df.pivot_table(index=["method", "seed"], columns="language", values="value")
        langs = ["en"] + sorted(c for c in per_seed.columns if c != "en")
        per_seed = per_seed[langs]
        per_seed["avg"] = per_seed[langs].mean(axis=1)  # XTREME: mean over all languages
        per_seed["avg (xx≠en)"] = per_seed[[c for c in langs if c != "en"]].mean(axis=1)
        g = per_seed.groupby(level="method")
        mean, sd, n = g.mean(), g.std(), g.size()
        table = pd.DataFrame({c: [_fmt(mean.loc[m, c], sd.loc[m, c], n[m]) for m in mean.index] for c in mean.columns},
                             index=mean.index)
        table.insert(0, "seeds", n)
        out[task] = table
    return out


def suite_table(transfer: pd.DataFrame) -> pd.DataFrame:
    """XTREME-R style summary: per method, each task's score (mean over its languages, then over seeds) and
    the suite average over the tasks in the run; plus the same without English ("xx≠en")."""
    std = _standard(transfer)
    if std.empty:
        return pd.DataFrame()
    per = (std.groupby(["method", "seed", "task"])
              .apply(lambda g: pd.Series({"all": g["value"].mean(),
                                          "xx": g.loc[g["language"] != "en", "value"].mean()}),
                     include_groups=False)
              .reset_index())
    tasks = sorted(per["task"].unique())
    out = {}
    for col, label in (("all", ""), ("xx", " xx≠en")):
        wide = per.pivot_table(index=["method", "seed"], columns="task", values=col)
        wide["suite avg"] = wide[tasks].mean(axis=1)
        g = wide.groupby(level="method")
        mean, sd, n = g.mean(), g.std(), g.size()
        for c in mean.columns:
            out[f"{c}{label}"] = [_fmt(mean.loc[m, c], sd.loc[m, c], n[m]) for m in mean.index]
        index = mean.index
    table = pd.DataFrame(out, index=index)
    table.insert(0, "seeds", std.groupby("method")["seed"].nunique())
    return table


def task_coverage(tasks_in_run: list[str], transfer: pd.DataFrame) -> pd.DataFrame:
    """Which tasks and languages were scored, with the metric, the training data and what the offline data lacks."""
    from . import tasks as T

    std = _standard(transfer)
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


def score_name(task: str) -> str:
    """What a task's score is, from its registry entry (e.g. "accuracy", "mean of f1 and exact_match")."""
    from . import tasks as T

    parts = T.get_task(task).score_metrics if task in T.TASKS else ("score",)
    return parts[0] if len(parts) == 1 else "mean of " + " and ".join(parts)


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


KEY_METRICS = ("retrieval.acc1_xx2en", "retrieval.acc1_en2xx", "retrieval.margin_acc1_xx2en", "cka.cka",
               "cosine_gap.cosine_gap")


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


def alignment_by_method_text(alignment: pd.DataFrame, headline: dict) -> str:
    """One sentence: the headline alignment measure at the last layer per method (mean over languages;
    ± sd over seeds and tasks of that mean), the pre-trained model first."""
    a = alignment[(alignment["metric"] == headline["metric"]) & (alignment["layer"] == headline["last_layer"])]
    if a.empty:
        return ""
    per_ck = a.groupby(["method", "checkpoint"])["value"].mean()
    stats = per_ck.groupby(level="method").agg(["mean", "std"])
    order = ["pretrained"] + [m for m in stats.index if m != "pretrained"]
    parts = [f"{m} {stats.loc[m, 'mean']:.3f}" + ("" if np.isnan(stats.loc[m, "std"]) else f" ± {stats.loc[m, 'std']:.3f}")
             for m in order if m in stats.index]
    return (f"**Alignment after fine-tuning** — `{headline['metric']}` at layer {headline['last_layer']}, mean over "
            f"{a['language'].nunique()} languages (± sd over checkpoints): " + "; ".join(parts) + ".")


def analyze(transfer: pd.DataFrame, alignment: pd.DataFrame, *, headline_metric: str, n_boot: int = 2000,
            n_perm: int = 10000, seed: int = 0, expected_cells: list[str] | None = None,
            majority: dict[str, float] | None = None) -> dict:
    """Everything the analysis page shows: merged frame, RQ1 tables and fits, RQ2 gains, the summary text."""
    import warnings

    from . import analysis as A

    out: dict = {"notes": []}
    # cells of tasks sharing a training task share a checkpoint: match on the cell id when rows carry it
    key = "cell_id" if "cell_id" in transfer else "checkpoint"
    done = set(transfer[key].dropna()) if len(transfer) else set()
    missing = sorted(set(expected_cells or []) - done)
    if missing:
        out["notes"].append(f"Missing cells (no transfer results; analysed what exists): {', '.join(missing)}")
    if transfer.empty or alignment.empty:
        out["notes"].append("No transfer or no alignment rows: nothing to relate.")
        out["summary"] = "## Summary\n\n" + "\n\n".join(out["notes"])
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = A.merge_alignment_transfer(alignment, transfer)
    out["merged"] = merged
    out["transfer_summary"] = A.summarize_transfer(transfer, n_boot=n_boot, seed=seed)
    corr = A.correlation_table(merged, n_boot=n_boot, n_perm=n_perm, seed=seed)
    out["corr"] = corr
    metrics = merged["metric"].unique()
    head = headline_metric if headline_metric in metrics else (metrics[0] if len(metrics) else None)
    if head != headline_metric:
        out["notes"].append(f"report.correlation_metric '{headline_metric}' not measured; using '{head}'.")
    hm = merged[merged["metric"] == head]
    if "task" in corr:
        best_layer = corr[corr["metric"] == head].groupby("layer")["r"].mean().idxmax() \
            if corr[corr["metric"] == head]["r"].notna().any() else int(hm["layer"].max())
    else:
        sub = corr[corr["metric"] == head]
        best_layer = int(sub.loc[sub["r"].idxmax(), "layer"]) if sub["r"].notna().any() else int(hm["layer"].max())
    last_layer = int(hm["layer"].max())
    out["headline"] = dict(metric=head, last_layer=last_layer, best_layer=int(best_layer))
    one = hm[hm["layer"] == last_layer]
    if merged["seed"].nunique() > 1:  # the headline measure per seed, next to the pooled table
        out["corr_by_seed"] = A.correlation_table(hm, n_boot=n_boot, n_perm=n_perm, seed=seed, pool_seeds=False)
    out["ols"] = A.fit_ols(one)
    out["mixed"] = A.fit_mixed(one)
    out["headline_frame"] = one
    methods = set(merged["method"])
    if "baseline" in methods and len(methods) > 1:
        delta = A.delta_table(merged)
        out["delta"] = delta
        out["delta_corr"] = A.delta_correlation(delta, n_boot=n_boot, n_perm=n_perm, seed=seed)
        gains = A.transfer_gain_table(transfer)
        out["gain_slopes"], out["gain_frame"] = A.gain_vs_resource(gains)
        d_al = delta[(delta["metric"] == head) & (delta["layer"] == last_layer)].copy()
        out["align_gain_slopes"], out["align_gain_frame"] = A.gain_vs_resource(d_al, gain_col="delta_alignment")
    else:
        out["notes"].append("RQ2 needs a baseline and at least one robust method in the grid.")
    n_ck = merged["checkpoint"].nunique()
    std = _standard(transfer)
    level = []
    for task, g in std.groupby("task"):
        en, xx = g.loc[g["language"] == "en", "value"].mean(), g.loc[g["language"] != "en", "value"].mean()
        base = f"; always predicting the majority label scores {100 * majority[task]:.1f}%" if majority and task in majority else ""
        level.append(f"{task}: English {100 * en:.1f}%, other languages {100 * xx:.1f}% (mean over methods and seeds{base})")
    level_text = ("**How well the fine-tuned models do at all** — " + "; ".join(level) + ". Read the method "
                  "differences below against that, and with their confidence intervals.")
    out["summary"] = A.plain_summary(corr, out["mixed"], out.get("gain_slopes"), n_checkpoints=n_ck,
                                     n_languages=merged["language"].nunique(), n_seeds=merged["seed"].nunique())
    head, sep, rest = out["summary"].partition("\n\n### RQ1")
    align_text = alignment_by_method_text(alignment, out["headline"])
    out["summary"] = head + "\n\n" + level_text + "\n\n" + align_text + sep + rest
    if out["notes"]:
        out["summary"] += "\n\n" + "\n\n".join(f"*Note:* {n}" for n in out["notes"])
    return out


def export_results(run, dest) -> list:
    """Write a finished run's headline tables (CSV + Markdown), figures (PNG) and provenance to ``dest``.

    Small files meant for the repository (docs/results/), regenerated by ``xlt export RUN_DIR DEST``.
    """
    import json
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from . import analysis as A
    from .stages import load_results, majority_rates

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    transfer, alignment = load_results(run, "transfer"), load_results(run, "alignment")
    r = run.cfg.report
    res = analyze(transfer, alignment, headline_metric=r.correlation_metric, n_boot=r.n_boot, n_perm=r.n_perm,
                  seed=r.seed, expected_cells=[c["cell_id"] for c in run.cells()], majority=majority_rates(run))
    written = []

    def save_table(df: pd.DataFrame, name: str, index: bool = True):
        df.to_csv(dest / f"{name}.csv", index=index)
        written.append(dest / f"{name}.csv")

    def save_fig(fig, name: str):
        fig.savefig(dest / f"{name}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(dest / f"{name}.png")

    md = [res["summary"], ""]
    suite = suite_table(transfer)
    if len(suite.columns) > 3:  # more than one task: the XTREME-R style suite average
        save_table(suite, "suite")
        md += ["## Suite: task scores (%) and their average, mean ± sd over seeds", "", suite.to_markdown(), ""]
    for task, table in transfer_table(transfer).items():
        save_table(table, f"transfer_{task}")
        md += [f"## Transfer score (%), {task} ({score_name(task)}) — mean ± sd over seeds", "",
               table.to_markdown(), ""]
    gen = generalized_matrix(transfer)
    for (task, method), (mat, line) in gen.items():
        md += [f"- generalized {task} · {method}: {line}"]
    if gen:
        md.append("")
        for task in sorted({t for t, _ in gen}):
            methods = [m for t, m in gen if t == task]
            fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3), squeeze=False)
            for ax, m in zip(axes[0], methods):
                sns.heatmap(100 * gen[(task, m)][0], ax=ax, vmin=30, vmax=80, cmap="viridis", cbar=False,
                            annot=True, fmt=".0f", annot_kws={"size": 7})
                ax.set_title(m); ax.set_xlabel("2nd sentence"); ax.set_ylabel("1st sentence")
            fig.suptitle(f"{task}: generalized accuracy (%)", y=1.04)
            save_fig(fig, f"generalized_{task}")
    if "corr" in res:
        cols = [c for c in ("task", "metric", "layer", "n_points", "n_languages", "r", "r_lo", "r_hi", "rho",
                            "p_perm", "p_holm", "note") if c in res["corr"]]
        corr = res["corr"].sort_values("p_holm")[cols]
        save_table(corr, "correlations", index=False)
        md += ["## Ten strongest alignment–transfer correlations (Holm-adjusted over all metric × layer tests)", "",
               corr.head(10).round(3).to_markdown(index=False), ""]
        save_fig(A.plot_alignment_vs_transfer(res["headline_frame"]), "alignment_vs_transfer")
        save_fig(A.plot_corr_by_layer(res["corr"]), "correlation_by_layer")
        if "corr_by_seed" in res:
            save_table(res["corr_by_seed"], "correlations_by_seed", index=False)
        fits = pd.concat([res["ols"], res["mixed"]], ignore_index=True)
        save_table(fits, "regressions", index=False)
        md += ["## Regressions at the last layer", "", fits.drop(columns=[c for c in ("warnings",) if c in fits])
               .round(4).to_markdown(index=False), ""]
    if "delta" in res:
        h = res["headline"]
        save_fig(A.plot_deltas(res["delta"], metric=h["metric"], layer=h["last_layer"]), "deltas")
        save_table(res["gain_slopes"], "transfer_gain_vs_resource", index=False)
        save_table(res["align_gain_slopes"], "alignment_gain_vs_resource", index=False)
        save_fig(A.plot_gain_vs_resource(res["gain_frame"]), "transfer_gain_vs_resource")
        md += ["## Transfer gain over baseline vs log CC-100 size", "",
               res["gain_slopes"].round(4).to_markdown(index=False), ""]
    summ = alignment_summary(alignment)
    if not summ.empty:
        save_table(summ, "alignment_pretrained")
    prov = {k: transfer[k].iloc[0] for k in transfer.columns if k.startswith("v_") or k in ("git_commit", "python")} \
        if len(transfer) else {}
    prov.update(run_dir=str(run.dir), params_file=run.params_file, seeds=run.cfg.grid.seed,
                cells=len(run.cells()), config=run.cfg.model_dump(mode="json"))
    (dest / "provenance.json").write_text(json.dumps(prov, indent=1, default=str))
    written.append(dest / "provenance.json")
    (dest / "summary.md").write_text("\n".join(md))
    written.append(dest / "summary.md")
    return written
