"""Tables and figure data for the stage reports (pure pandas; the notebooks only display them)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def _fmt(mean: float, sd: float, n: int) -> str:
    return f"{100 * mean:.1f}" if n < 2 or np.isnan(sd) else f"{100 * mean:.1f} ± {100 * sd:.1f}"


def transfer_table(transfer: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per task: method x language accuracy (%), mean ± sd over seeds, plus avg and avg without English."""
    std = transfer[(transfer["metric"] == "accuracy") & (transfer["language2"].fillna("") == "")]
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


def generalized_matrix(transfer: pd.DataFrame) -> dict[tuple[str, str], tuple[pd.DataFrame, str]]:
    """Per (task, method): accuracy matrix first-language x second-language (seed mean) and a summary line."""
    acc = transfer[transfer["metric"] == "accuracy"].copy()
    acc["language2"] = acc["language2"].fillna("")
    acc.loc[acc["language2"] == "", "language2"] = acc["language"]
    out = {}
    for (task, method), df in acc.groupby(["task", "method"]):
        if (df["language"] != df["language2"]).sum() == 0:
            continue
        mat = df.pivot_table(index="language", columns="language2", values="value", aggfunc="mean")
        diag = np.nanmean(np.diag(mat.values))
        off = mat.values[~np.eye(len(mat), dtype=bool)]
        out[(task, method)] = (mat, f"mean over same-language pairs {100 * diag:.1f}%, "
                                    f"over mixed-language pairs {100 * np.nanmean(off):.1f}%")
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


def analyze(transfer: pd.DataFrame, alignment: pd.DataFrame, *, headline_metric: str, n_boot: int = 2000,
            n_perm: int = 10000, seed: int = 0, expected_cells: list[str] | None = None) -> dict:
    """Everything the analysis page shows: merged frame, RQ1 tables and fits, RQ2 gains, the summary text."""
    import warnings

    from . import analysis as A

    out: dict = {"notes": []}
    done = set(transfer["checkpoint"]) if len(transfer) else set()
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
    out["summary"] = A.plain_summary(corr, out["mixed"], out.get("gain_slopes"), n_checkpoints=n_ck,
                                     n_languages=merged["language"].nunique(), n_seeds=merged["seed"].nunique())
    if out["notes"]:
        out["summary"] += "\n\n" + "\n\n".join(f"*Note:* {n}" for n in out["notes"])
    return out
