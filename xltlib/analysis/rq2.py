"""Step 5 of the analysis, RQ2: do robust objectives help low-resource languages most?

Unit: the language. Gains are method minus baseline at the *same seed* (same task, language); per method, the
seed-mean gains are averaged per language (task intercepts kept as task shares), so a language scored in two
tasks counts once, and regressed on log10(CC-100 size): OLS, t(L - k). Seed variance is inside the residual.
Holm across methods. The same slope is fitted to the alignment gain at the primary measure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from xltlib.analysis.gate import Gate
from xltlib.analysis.inference import MIN_LANGUAGES, holm, residualize
from xltlib.analysis.merge import Points, delta_table
from xltlib.analysis.rq1 import RQ1
from xltlib.analysis.score import SOURCE, score_rows
from xltlib.data.languages import resource_table

RQ2_ESTIMAND = ("change in a method's seed-matched gain over the baseline per 10x more CC-100 pre-training "
                "data (task intercepts; a language counts once)")
RQ2_COLS = ["method", "n_languages", "n_tasks", "n_points", "n_seeds", "slope_per_10x", "se", "ci_lo", "ci_hi",
            "p", "df", "p_holm", "note"]


def matched_gains(frame: pd.DataFrame, *, value: str = "value", baseline: str = "baseline",
                  keys: Sequence[str] = ("task", "language"), exclude: Sequence[str] = (SOURCE,)) -> pd.DataFrame:
    """Method minus baseline at the same seed, per ``keys`` (seed-mean first if rows repeat).

    Rows whose seed has no baseline counterpart are dropped (``n_unmatched`` in ``attrs``)."""
    keys = [k for k in keys if k in frame]
    f = frame[~frame["language"].isin(exclude)] if "language" in frame else frame
    m = f.groupby([*keys, "method", "seed"], as_index=False)[value].mean()
    base = m[m["method"] == baseline].drop(columns="method").rename(columns={value: "baseline_value"})
    other = m[m["method"] != baseline]
    out = other.merge(base, on=[*keys, "seed"], how="left")
    unmatched = int(out["baseline_value"].isna().sum())
    out = out.dropna(subset=["baseline_value"]).reset_index(drop=True)
    out["gain"] = out[value] - out["baseline_value"]
    out.attrs["n_unmatched"] = unmatched
    return out


def language_level_slope(per: pd.DataFrame, *, y: str = "gain", x: str = "log10_size",
                         level: float = 0.95) -> dict:
    """Slope of ``y`` on ``x`` with one point per language: gains averaged over the language's tasks, the
    task intercepts entering as each language's share of every task (so a language in two tasks counts
    once and a task's overall gain does not pass for a resource effect). Classical OLS SE, t(L - k):
    exact for iid normal language effects; clustered SEs from 10-20 languages with a skewed size
    covariate reject a true null too often (12% in the calibration)."""
    tasks = sorted(per["task"].unique())
    agg = per.groupby("language").agg(y=(y, "mean"), x=(x, "first"))
    Z = [np.ones(len(agg))]
    for t in tasks[1:]:
        share = per.assign(_t=(per["task"] == t).astype(float)).groupby("language")["_t"].mean()
        col = share.reindex(agg.index).to_numpy(float)
        if np.ptp(col) > 0:
            Z.append(col)
    Z = np.column_stack(Z)
    L, k = len(agg), Z.shape[1] + 1
    out = dict(coef=math.nan, se=math.nan, ci_lo=math.nan, ci_hi=math.nan, p=math.nan, df=math.nan, note="")
    if L - k < 1:
        out["note"] = f"empty: {L} languages for {k} parameters"
        return out
    xt = residualize(agg["x"].to_numpy(float), Z)
    yt = residualize(agg["y"].to_numpy(float), Z)
    sxx = float(xt @ xt)
    if sxx <= 1e-12:
        out["note"] = "empty: the languages' sizes do not vary"
        return out
    b = float(xt @ yt) / sxx
    e = yt - b * xt
    df = L - k
    se = math.sqrt(float(e @ e) / df / sxx)
    t = float(stats.t.ppf(0.5 + level / 2, df))
    out.update(coef=b, se=se, ci_lo=b - t * se, ci_hi=b + t * se, df=df,
               p=float(2 * stats.t.sf(abs(b / se), df)) if se > 0 else 0.0)
    return out


def gain_slopes(gains: pd.DataFrame, resource: pd.DataFrame | None = None, *, gain: str = "gain",
                size_col: str = "size_gib", level: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per method: the slope of the seed-matched gain on log10(CC-100 size) with task intercepts and one
    point per language (:func:`language_level_slope`); Holm across methods. Returns (slopes, the
    per (method, task, language) frame that was fitted)."""
    if resource is None:
        resource = resource_table()
    res = resource.reset_index() if "language" not in resource.columns else resource
    keys = [k for k in ("task", "language") if k in gains]
    per = (gains.groupby(["method", *keys], as_index=False)
           .agg(gain=(gain, "mean"), n_seeds=("seed", "nunique") if "seed" in gains else (gain, "size")))
    per = per.merge(res[["language", size_col]], on="language", how="left")
    no_size = sorted(per.loc[~(per[size_col] > 0), "language"].unique())
    per = per[per[size_col] > 0].copy()
    per["log10_size"] = np.log10(per[size_col])
    if "task" not in per:
        per["task"] = ""
    rows = []
    for method in sorted(gains["method"].unique()):
        g = per[per["method"] == method]
        k = g["language"].nunique()
        row = dict(method=method, n_languages=k, n_tasks=g["task"].nunique(), n_points=len(g),
                   n_seeds=int(g["n_seeds"].max()) if len(g) else 0)
        note = [f"no CC-100 size (dropped): {', '.join(no_size)}"] if no_size else []
        if k < MIN_LANGUAGES:
            note.insert(0, f"empty: {k} language(s) with a size, at least {MIN_LANGUAGES} needed")
            row.update(slope_per_10x=math.nan, se=math.nan, ci_lo=math.nan, ci_hi=math.nan, p=math.nan,
                       df=math.nan)
        else:
            fit = language_level_slope(g, level=level)
            if fit["note"]:
                note.insert(0, fit["note"])
            row.update(slope_per_10x=fit["coef"], se=fit["se"], ci_lo=fit["ci_lo"], ci_hi=fit["ci_hi"],
                       p=fit["p"], df=fit["df"])
        row["note"] = "; ".join(note)
        rows.append(row)
    out = pd.DataFrame(rows, columns=[c for c in RQ2_COLS if c != "p_holm"])
    out["p_holm"] = holm(out["p"]) if len(out) else []
    return out[RQ2_COLS], per


@dataclass
class RQ2:
    """What step 5 hands on."""

    slopes: pd.DataFrame = field(default_factory=pd.DataFrame)  # task-score gain vs log10 size, per method
    frame: pd.DataFrame = field(default_factory=pd.DataFrame)  # the (method, task, language) gains fitted
    alignment: pd.DataFrame = field(default_factory=pd.DataFrame)  # alignment gain (primary measure) vs size
    delta: pd.DataFrame = field(default_factory=pd.DataFrame)  # seed-mean method - baseline per point (plots)
    notes: list[str] = field(default_factory=list)


def answer_rq2(points: Points, gate: Gate, rq1: RQ1) -> RQ2:
    """Step 5: seed-matched gains over the baseline on the checkpoints that pass the gate, against pre-training
    size: the task score's gain, and the alignment gain at RQ1's primary metric and layer."""
    if not points.relatable:
        return RQ2()
    scores = score_rows(gate.kept)
    methods = set(scores["method"]) if len(scores) else set()
    if not ("baseline" in methods and len(methods) > 1):
        return RQ2(notes=["RQ2 and the method comparison need the baseline and at least one other method among the "
                          "checkpoints that pass the model-quality gate."])
    rq = RQ2()
    gains = matched_gains(scores)
    if gains.attrs.get("n_unmatched"):
        rq.notes.append(f"RQ2: {gains.attrs['n_unmatched']} (task, language, method, seed) score(s) without a "
                        "baseline at the same seed (missing or excluded by the gate) were left out.")
    rq.slopes, rq.frame = gain_slopes(gains)
    analysed = points.analysed
    if rq1.layers:
        h = analysed[analysed["metric"] == rq1.metric].merge(pd.DataFrame(
            [dict(task=t, layer=lay) for t, lay in rq1.layers.items()]), on=["task", "layer"])
        if len(h) and "baseline" in set(h["method"]):
            rq.alignment, _ = gain_slopes(matched_gains(h, value="alignment"))
    if "baseline" in set(analysed["method"]) and analysed["method"].nunique() > 1:
        rq.delta = delta_table(analysed)
    return rq
