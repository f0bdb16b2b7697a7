"""Tables and figure data for the stage reports (pure pandas; the notebooks only display them)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from xltlib.analysis import merge as A
from xltlib.analysis import stats as S
from xltlib.data import tasks as T


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


def english_targets(transfer: pd.DataFrame) -> pd.DataFrame:
    """Does each task learn? Per task with a target (``Task.english_target``) and method: the English score
    (mean over seeds; the envelope of the per-seed bootstrap 95% CIs) against the target, which is a fixed
    score or the pre-trained encoder's own (``pretrained_<metric>`` rows, LAReQA)."""

    rows = []
    en = transfer[(transfer["language"] == "en") & (transfer["language2"].fillna("") == "")]
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


KEY_METRICS = ("retrieval.acc1_en2xx", "retrieval.acc1_xx2en", "cka.cka_debiased", "cka.cka",
               "cosine_gap.cosine_gap", "retrieval.margin_acc1_en2xx")  # [::2] feeds the heat-maps


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


def pool_table(alignment: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and language: the pool the pair metrics used (n) and the pairs available."""
    a = alignment[alignment["language"] != "all"] if "language" in alignment else alignment
    if a.empty or "n" not in a:
        return pd.DataFrame()
    cols = {"n": ("n", "max")}
    if "n_available" in a:
        cols["n_available"] = ("n_available", "max")
    keys = [k for k in ("dataset", "language") if k in a]
    return a.groupby(keys, as_index=False).agg(**cols)


def _resolve_metric(metrics, wanted: str) -> tuple[str | None, str]:
    """The merged metric name for ``wanted`` (dataset-prefixed when several datasets were measured)."""
    metrics = sorted(set(metrics))
    if wanted in metrics:
        return wanted, ""
    cands = [m for m in metrics if m.endswith("/" + wanted)]
    if cands:
        pick = next((m for m in cands if m.startswith("tatoeba/")), cands[0])
        return pick, f"primary metric measured on several datasets; using {pick}"
    return None, f"primary metric '{wanted}' was not measured (metrics: {', '.join(metrics) or 'none'})"


def analyze(transfer: pd.DataFrame, alignment: pd.DataFrame, *, primary=None, headline_metric: str | None = None,
            n_boot: int = 2000, n_perm: int = 10000, seed: int = 0, expected_cells: list[str] | None = None,
            majority: dict[str, float] | None = None, protocol: str | None = None,
            alpha: float = S.ALPHA, drift: dict[str, float] | None = None) -> S.AnalysisResult:
    """Everything the analysis page shows, as an :class:`~xltlib.analysis.stats.AnalysisResult`.

    Steps: the model-quality gate (checkpoints whose English score does not clear the majority rate are
    left out of RQ1/RQ2); method vs baseline; RQ1 across languages at the declared ``primary`` metric
    and layer (tested alone; Holm over tasks when there are several), RQ1 within languages there, the
    other metric x layer combinations as exploratory families (Holm within each); RQ2 on seed-matched
    gains; then the summary, built once by :func:`xltlib.analysis.merge.summary_markdown`."""

    if primary is None:
        primary = S.Primary(metric="retrieval.acc1_en2xx", layer="last")
    elif not isinstance(primary, S.Primary):
        d = primary if isinstance(primary, dict) else primary.model_dump()
        primary = S.Primary(metric=d["metric"], layer=d["layer"])
    res = S.AnalysisResult(primary=primary, alpha=alpha)
    key = "cell_id" if "cell_id" in transfer else "checkpoint"  # cells sharing a checkpoint match on the cell id
    done = set(transfer[key].dropna()) if len(transfer) else set()
    missing = sorted(set(expected_cells or []) - done)
    if missing:
        res.notes.append(f"Missing cells (no transfer results; analysed what exists): {', '.join(missing)}")
    if len(transfer):
        res.gate = S.quality_gate(transfer, majority)
        failed = S.gate_failures(res.gate)
        res.excluded = sorted(failed)
        if failed:
            res.notes.append(f"{len(failed)} (task, checkpoint) pair(s) fail the model-quality gate and are left out "
                             f"of RQ1, RQ2 and the method comparison: "
                             + ", ".join(f"{t}/{c}" for t, c in res.excluded))
    else:
        failed = set()
    if transfer.empty or alignment.empty:
        res.notes.append("No transfer or no alignment rows: nothing to relate.")
        res.summary = A.summary_markdown(res, protocol=protocol)
        return res
    res.pools = pool_table(alignment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = A.merge_alignment_transfer(alignment, transfer)
    ok = pd.Series([(t, c) not in failed for t, c in zip(merged["task"], merged["checkpoint"])], index=merged.index)
    res.merged = merged.assign(gate_ok=ok)
    res.analysed = merged[ok].reset_index(drop=True)
    tr_ok = S.drop_failed(transfer, failed)
    std_ok = _standard(tr_ok)

    # method vs baseline (tasks whose checkpoints all fail the gate get a row saying so)
    mvb = S.method_vs_baseline(tr_ok, n_boot=n_boot, seed=seed)
    lost = sorted(set(_standard(transfer)["task"]) - set(std_ok["task"]))
    extra = [dict(task=t, setting="standard", method="(all)", note="empty: every checkpoint fails the model-quality gate")
             for t in lost]
    res.method_vs_baseline = pd.concat([mvb, pd.DataFrame(extra, columns=mvb.columns)], ignore_index=True) \
        if extra else mvb

    # RQ1: the primary test per task, then the exploratory families
    pm, why = _resolve_metric(merged["metric"], primary.metric)
    if why:
        res.notes.append(why)
    res.primary_metric = pm or primary.metric
    tasks = sorted(merged["task"].unique())
    rows, rows_w, frames = [], [], []
    n_draws = S._n_perm_for(len(tasks), n_perm, alpha)
    for i, task in enumerate(tasks):
        layers = merged.loc[(merged["task"] == task) & (merged["metric"] == pm), "layer"].unique() if pm else []
        layer = primary.resolve_layer(layers)
        if layer is not None:
            res.primary_layer[task] = layer
        base = dict(task=task, metric=res.primary_metric, layer=layer)
        g = res.analysed[(res.analysed["task"] == task) & (res.analysed["metric"] == pm)
                         & (res.analysed["layer"] == layer)] if pm and layer is not None else res.analysed.iloc[0:0]
        if pm is None or layer is None:
            note = why if pm is None else f"empty: layer {primary.layer} not measured"
            rows.append({**base, **dict.fromkeys(S.ACROSS_COLS, np.nan), "note": note})
            rows_w.append({**base, **dict.fromkeys(S.WITHIN_COLS, np.nan), "note": note})
            continue
        frames.append(merged[(merged["task"] == task) & (merged["metric"] == pm) & (merged["layer"] == layer)])
        if g.empty:
            note = "empty: every checkpoint of this task fails the model-quality gate"
            rows.append({**base, **dict.fromkeys(S.ACROSS_COLS, np.nan), "note": note})
            rows_w.append({**base, **dict.fromkeys(S.WITHIN_COLS, np.nan), "note": note})
            continue
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        rows.append({**base, **S.across_languages(g, n_perm=n_draws, n_boot=n_boot, rng=rng)})
        rows_w.append({**base, **S.within_languages(g)})
    res.rq1_primary = pd.DataFrame(rows, columns=["task", "metric", "layer", *S.ACROSS_COLS])
    res.rq1_primary["p_holm"] = S.holm(res.rq1_primary["p"]) if len(rows) else []
    res.rq1_primary_within = pd.DataFrame(rows_w, columns=["task", "metric", "layer", *S.WITHIN_COLS])
    if drift:  # "less drift": robust methods may align better only because they move the weights less
        res.drift = pd.DataFrame([dict(checkpoint=c, weight_drift=v) for c, v in drift.items()])
        drows = [dict(task=t, metric=res.primary_metric, layer=lay, **r)
                 for t, lay in res.primary_layer.items()
                 for r in S.drift_adjusted(res.analysed[(res.analysed["task"] == t)
                                                        & (res.analysed["metric"] == pm)
                                                        & (res.analysed["layer"] == lay)], drift)]
        res.rq1_drift = pd.DataFrame(drows, columns=["task", "metric", "layer", *S.DRIFT_COLS])
    res.rq1_primary_within["p_holm"] = S.holm(res.rq1_primary_within["p"]) if len(rows_w) else []
    res.headline_frame = res.merged.merge(pd.DataFrame(
        [dict(task=t, layer=lay) for t, lay in res.primary_layer.items()]), on=["task", "layer"]) \
        if res.primary_layer else res.merged.iloc[0:0]
    if pm:
        res.headline_frame = res.headline_frame[res.headline_frame["metric"] == pm]
    prim = {(t, pm, lay) for t, lay in res.primary_layer.items()}
    is_prim = pd.Series([k in prim for k in zip(res.analysed["task"], res.analysed["metric"], res.analysed["layer"])],
                        index=res.analysed.index, dtype=bool)
    explo = res.analysed[~is_prim]
    if len(explo):
        res.rq1_exploratory = S.across_languages_table(explo, n_perm=n_perm, n_boot=n_boot, seed=seed + 1, alpha=alpha)
        res.rq1_exploratory_within = S.within_languages_table(explo)

    # RQ2: seed-matched gains over the baseline vs pre-training size
    methods = set(std_ok["method"]) if len(std_ok) else set()
    if "baseline" in methods and len(methods) > 1:
        gains = S.matched_gains(std_ok)
        if gains.attrs.get("n_unmatched"):
            res.notes.append(f"RQ2: {gains.attrs['n_unmatched']} (task, language, method, seed) score(s) without a "
                             "baseline at the same seed (missing or excluded by the gate) were left out.")
        res.rq2, res.rq2_frame = S.gain_slopes(gains)
        if pm and res.primary_layer:
            h = res.analysed[res.analysed["metric"] == pm].merge(pd.DataFrame(
                [dict(task=t, layer=lay) for t, lay in res.primary_layer.items()]), on=["task", "layer"])
            if len(h) and "baseline" in set(h["method"]):
                res.rq2_alignment, _ = S.gain_slopes(S.matched_gains(h, value="alignment"))
        if "baseline" in set(res.analysed["method"]) and res.analysed["method"].nunique() > 1:
            res.delta = A.delta_table(res.analysed)
    else:
        res.notes.append("RQ2 and the method comparison need the baseline and at least one other method among the "
                         "checkpoints that pass the model-quality gate.")
    res.counts = dict(checkpoints=int(merged["checkpoint"].nunique()),
                      analysed_checkpoints=int(res.analysed["checkpoint"].nunique()) if len(res.analysed) else 0,
                      languages=int(merged["language"].nunique()), tasks=len(tasks),
                      seeds=int(merged["seed"].nunique()) if "seed" in merged else 0)
    if len(res.pools) and "dataset" in res.pools:
        uneven = [d for d, g in res.pools.groupby("dataset") if g["n"].nunique() > 1]
        if uneven:
            res.notes.append(f"Alignment pools differ across languages in {', '.join(uneven)} (rows computed before "
                             "common pools, or alignment.pool = full): retrieval scores are not comparable across "
                             "languages; re-run the alignment stage.")
    headline = headline_metric or primary.metric
    res.summary = A.summary_markdown(res, protocol=protocol,
                                     alignment_text=alignment_by_method_text(alignment, dict(
                                         metric=headline, last_layer=int(alignment.loc[alignment["metric"] == headline, "layer"].max())
                                         if (alignment["metric"] == headline).any() else -1)))
    return res


def result_tables(res: S.AnalysisResult) -> list[tuple[str, pd.DataFrame, str]]:
    """(file name, table, title) of every statistics table, in the order a reader needs them."""
    def tag(df: pd.DataFrame, family: str) -> pd.DataFrame:
        return df.assign(family=family) if len(df) else df

    corr = pd.concat([tag(res.rq1_primary, "primary"), tag(res.rq1_exploratory, "exploratory (Holm within family)")],
                     ignore_index=True)
    fits = pd.concat([tag(res.rq1_primary_within, "primary measure"),
                      tag(res.rq1_exploratory_within, "exploratory (Holm within family)")], ignore_index=True)
    rq2 = pd.concat([tag(res.rq2, "transfer gain"), tag(res.rq2_alignment, "alignment gain (primary measure)")],
                    ignore_index=True)
    if len(corr):
        corr = corr.sort_values(["family", "p_holm"], na_position="last", kind="stable")
    return [
        ("quality_gate", res.gate, "Model-quality gate: English score (Wilson 95% CI; F1/QA/mAP: bootstrap CI) vs the majority rate"),
        ("method_vs_baseline", res.method_vs_baseline,
         "Method vs baseline: mean over target languages, seed-matched difference with 95% CI"),
        ("correlations", corr, "RQ1 across languages (unit: language): primary test, then exploratory"),
        ("regressions", fits, "RQ1 within languages: checkpoint + language fixed effects, two-way clustered SEs"),
        ("gain_vs_resource", rq2, "RQ2: seed-matched gain vs log10 CC-100 size (one point per language)"),
        ("alignment_pools", res.pools, "Alignment pool per dataset and language (n used, n available)"),
    ]


def export_results(run, dest) -> list:
    """Write a finished run's headline tables (CSV + Markdown), figures (PNG) and provenance to ``dest``.

    Small files meant for the repository (docs/results/), regenerated by ``xlt export RUN_DIR DEST``.
    """

    matplotlib.use("Agg")

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    transfer, alignment = run.load_results("transfer"), run.load_results("alignment")
    r = run.cfg.report
    res = analyze(transfer, alignment, primary=r.primary, headline_metric=r.correlation_metric, n_boot=r.n_boot,
                  n_perm=r.n_perm, seed=r.seed, expected_cells=[c["cell_id"] for c in run.cells()],
                  majority=run.majority_rates(), protocol=run.cfg.protocol.name,
                  drift=run.weight_drift())
    written = []

    def save_table(df: pd.DataFrame, name: str, index: bool = True):
        df.to_csv(dest / f"{name}.csv", index=index)
        written.append(dest / f"{name}.csv")

    def save_fig(fig, name: str):
        fig.savefig(dest / f"{name}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(dest / f"{name}.png")

    md = [res.summary, ""]
    for name, table, title in result_tables(res):
        save_table(table, name, index=False)
        md += [f"## {title}", "", table.round(4).to_markdown(index=False) if len(table) else "(empty)", ""]
    suite = suite_table(transfer)
    if len(suite.columns) > 3:  # more than one task: the XTREME-R style suite average
        save_table(suite, "suite")
        md += ["## Suite: task scores (%) and their average, mean ± sd over seeds", "", suite.to_markdown(), ""]
    robust_acc = robustness_table(transfer)
    if len(robust_acc):
        save_table(robust_acc, "robustness")
        md += ["## Did robust training make the model robust? English accuracy under attack (%), mean ± sd over "
               "seeds", "", robust_acc.to_markdown(), ""]
    robust = robustness_vs_baseline(transfer, n_boot=r.n_boot, seed=r.seed, failed=S.gate_failures(res.gate))
    if len(robust):
        save_table(robust, "robustness_vs_baseline", index=False)
        md += ["## Robustness: method − baseline (points), seed-matched, paired bootstrap over English rows + seed "
               "variance (checkpoints that fail the model-quality gate left out)", "", robust.drop(columns=["resampled"]).round(2).to_markdown(index=False), ""]
    diag = train_diagnostics(run.load_results("train"))
    if len(diag):
        save_table(diag, "train_diagnostics", index=False)
        md += ["## Training diagnostics (last epoch, mean over steps then seeds)", "",
               diag.round(4).to_markdown(index=False), ""]
    targets = english_targets(transfer)
    if len(targets):
        save_table(targets, "english_targets", index=False)
        md += ["## Does each task learn? English score vs its target (%)", "",
               targets.round(1).to_markdown(index=False), ""]
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
    if len(res.headline_frame):
        save_fig(A.plot_alignment_vs_transfer(res.headline_frame), "alignment_vs_transfer")
        save_fig(A.plot_language_means(res.headline_frame), "language_means")
    if len(res.rq1_exploratory) and res.rq1_exploratory["r"].notna().any():
        save_fig(A.plot_corr_by_layer(res.rq1_exploratory), "correlation_by_layer")
    if len(res.delta):
        save_fig(A.plot_deltas(res.delta, metric=res.primary_metric,
                               layer=next(iter(res.primary_layer.values()), None)), "deltas")
    if len(res.rq2_frame):
        save_fig(A.plot_gain_vs_resource(res.rq2_frame), "transfer_gain_vs_resource")
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


ROBUSTNESS_METRICS = ("robust_acc_clean", "robust_acc_pgd_eps", "robust_acc_pgd_2eps", "robust_acc_synonym",
                      "robust_acc_noise_sigma", "attack_loss_gain_pgd_eps", "synonym_subst_rate")


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


ROBUST_ACCURACIES = ("robust_acc_clean", "robust_acc_pgd_eps", "robust_acc_pgd_2eps", "robust_acc_synonym",
                     "robust_acc_noise_sigma")


def robustness_vs_baseline(transfer: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0,
                           failed: set[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Did a method make the model more robust than the baseline? Per task, method and attack: English accuracy
    under attack minus the baseline's at the same seeds (points), with the paired bootstrap over the same English
    rows plus the seed variance of :func:`xltlib.analysis.stats.method_vs_baseline`. Each checkpoint is attacked at its
    own trained strength (the baseline at the documented defaults), so ``strength`` / ``baseline_strength`` say
    when the two attacks differ. ``failed``: (task, checkpoint) pairs that fail the model-quality gate, left out
    (a checkpoint that predicts the majority label is "robust" to every attack)."""
    rows = S.drop_failed(transfer[transfer["metric"].isin(ROBUST_ACCURACIES)], failed or set())
    if not len(rows):
        return pd.DataFrame()
    out = []
    for metric in ROBUST_ACCURACIES:
        sub = rows[rows["metric"] == metric]
        if not len(sub):
            continue
        t = S.method_vs_baseline(sub, metric=metric, n_boot=n_boot, seed=seed, exclude=())
        t = t[t["setting"] == "standard"].drop(columns=["setting", "n_languages"])
        strength = sub.groupby(["task", "method"])["strength"].mean() if "strength" in sub else None
        for r in t.to_dict("records"):
            r = dict(attack=metric.removeprefix("robust_acc_"), **r)
            for col in ("baseline", "score", "diff", "ci_lo", "ci_hi"):
                r[col] = 100 * r[col]
            if strength is not None:
                r["strength"] = strength.get((r["task"], r["method"]), np.nan)
                r["baseline_strength"] = strength.get((r["task"], "baseline"), np.nan)
                if metric.startswith("robust_acc_pgd") and not np.isclose(r["strength"], r["baseline_strength"]):
                    r["note"] = (r["note"] + "; " if r["note"] else "") + "attacked at its own strength, not the baseline's"
            out.append(r)
    return pd.DataFrame(out)


TRAIN_DIAGNOSTICS = ("loss", "clean_loss", "adv_loss", "loss_gap", "delta_token_norm", "delta_token_norm_rel",
                     "subst_rate")


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
