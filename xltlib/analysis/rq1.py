"""Step 4 of the analysis, RQ1: does alignment track zero-shot transfer?

* **Across languages** (the primary test; unit: language). Statistic: Pearson r between the per-language means
  of alignment and of the task score, each value first centred within its checkpoint (so checkpoint-level
  shifts cancel even when a checkpoint lacks a language). Its permutation null permutes *languages*; permuting
  the per-language means is the same as applying one language permutation jointly to every checkpoint.
  Exact enumeration when k! is small, else Monte Carlo with enough draws that Holm over the family cannot
  be decided by the permutation floor. CI: language-cluster bootstrap on Fisher's z, its SE scaled by
  sqrt(k / (k - 1)) and t(k - 2) quantiles (a small-cluster correction; a percentile interval from
  10-20 clusters is too narrow).
* **Within languages** (units: checkpoints and languages). ``score ~ alignment + C(checkpoint) +
  C(language)``; the slope is identified only by checkpoint x language variation: *within a language and
  net of each checkpoint's overall level, the change in the score per unit of alignment*. SEs are two-way
  cluster-robust (Cameron, Gelbach & Miller 2011) with CR1 factors, t(min(G) - 1); the partial R^2 is
  that of alignment alone (the fixed effects explain most of the total).
* **Less drift?** The within-language slope with and without each checkpoint's weight drift as a covariate.

The primary test is the one declared in ``report.primary`` (:class:`xltlib.config.schema.ReportConfig.Primary`),
tested alone (Holm over tasks); every other alignment metric x layer is exploratory, Holm within its family.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from xltlib.analysis.inference import (
    ALPHA,
    cluster_bootstrap_r_ci,
    fe_slope,
    holm,
    n_perm_for,
    permutation_p,
    too_small,
)
from xltlib.analysis.merge import Points
from xltlib.config.schema import ReportConfig

ACROSS_ESTIMAND = ("Pearson r between languages' mean alignment to English and their mean zero-shot score "
                   "(values centred within each checkpoint, then averaged over checkpoints)")
WITHIN_ESTIMAND = ("change in zero-shot score per unit of alignment within a language, net of each "
                   "checkpoint's overall level (checkpoint and language fixed effects)")
ACROSS_COLS = ["n_languages", "n_checkpoints", "n_points", "r", "r_lo", "r_hi", "p", "n_perm", "exact",
               "p_at_floor", "note"]
WITHIN_COLS = ["n_languages", "n_checkpoints", "n", "coef", "se", "ci_lo", "ci_hi", "p", "df", "partial_r2",
               "note"]
DRIFT_COLS = ["model", "n_languages", "n_checkpoints", "n", "coef", "se", "ci_lo", "ci_hi", "p", "df",
              "partial_r2", "note"]


# ------------------------------------------------------------------------------------ across languages
def language_means(frame: pd.DataFrame, x: str, y: str, *, unit: str = "language",
                   block: str = "checkpoint") -> pd.DataFrame:
    """Per-``unit`` means of x and y after centring each within its ``block`` (checkpoint)."""
    g = frame[[unit, block, x, y]].dropna()
    c = g[[x, y]] - g.groupby(block)[[x, y]].transform("mean")
    c[unit] = g[unit].to_numpy()
    return c.groupby(unit)[[x, y]].mean()


def across_languages(frame: pd.DataFrame, *, x: str = "alignment", y: str = "score",
                     n_perm: int = 10_000, n_boot: int = 2000, rng: np.random.Generator | None = None,
                     level: float = 0.95) -> dict:
    """RQ1 across languages for one group (one task x metric x layer); see the module docstring."""
    rng = rng if rng is not None else np.random.default_rng(0)
    g = frame.dropna(subset=[x, y])
    k, c = g["language"].nunique(), g["checkpoint"].nunique()
    row = dict(n_languages=k, n_checkpoints=c, n_points=len(g), r=math.nan, r_lo=math.nan, r_hi=math.nan,
               p=math.nan, n_perm=0, exact=False, p_at_floor=False, note=too_small(k, c))
    if row["note"]:
        return row
    means = language_means(g, x, y)
    a, b = means[x].to_numpy(float), means[y].to_numpy(float)
    if np.ptp(a) <= 1e-12 or np.ptp(b) <= 1e-12:
        row["note"] = "empty: alignment or transfer does not vary across languages"
        return row
    row["r"] = float(np.corrcoef(a, b)[0, 1])
    row["r_lo"], row["r_hi"] = cluster_bootstrap_r_ci(a, b, n_boot, rng, level)
    p, used, exact = permutation_p(a, b, n_perm, rng)
    row.update(p=p, n_perm=used, exact=exact, p_at_floor=(not exact) and p <= 1.0 / (used + 1) + 1e-15)
    return row


def across_languages_table(merged: pd.DataFrame, *, by: Sequence[str] = ("task", "metric", "layer"),
                           x: str = "alignment", y: str = "score", n_perm: int = 10_000,
                           n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                           alpha: float = ALPHA) -> pd.DataFrame:
    """:func:`across_languages` for every group, with Holm over the table's tests (``p_holm``).

    The permutation count is raised per family so that p is not pinned at 1/(n_perm + 1) times the
    Holm factor (see :func:`~xltlib.analysis.inference.n_perm_for`)."""
    keys = [k for k in by if k in merged]
    groups = list(merged.groupby(keys, sort=True, dropna=False)) if keys else [((), merged)]
    n_draws = n_perm_for(len(groups), n_perm, alpha)
    seeds = np.random.SeedSequence(seed).spawn(max(len(groups), 1))
    rows = []
    for (gkey, g), ss in zip(groups, seeds):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        rows.append({**dict(zip(keys, gkey)),
                     **across_languages(g, x=x, y=y, n_perm=n_draws, n_boot=n_boot,
                                        rng=np.random.default_rng(ss), level=level)})
    out = pd.DataFrame(rows, columns=keys + ACROSS_COLS)
    out["p_holm"] = holm(out["p"]) if len(out) else []
    return out


# ------------------------------------------------------------------------------------ within languages
def within_languages(frame: pd.DataFrame, *, x: str = "alignment", y: str = "score",
                     level: float = 0.95) -> dict:
    """RQ1 within languages for one group: checkpoint and language fixed effects, SEs clustered two-way
    by checkpoint and language."""
    g = frame.dropna(subset=[x, y])
    k, c = g["language"].nunique(), g["checkpoint"].nunique()
    note = too_small(k, c)
    if note:
        return dict(n_languages=k, n_checkpoints=c, n=len(g), coef=math.nan, se=math.nan, ci_lo=math.nan,
                    ci_hi=math.nan, p=math.nan, df=math.nan, partial_r2=math.nan, note=note)
    fit = fe_slope(g, y=y, x=x, fe=("checkpoint", "language"), cluster=("checkpoint", "language"), level=level)
    return dict(n_languages=k, n_checkpoints=c, **fit)


def within_languages_table(merged: pd.DataFrame, *, by: Sequence[str] = ("task", "metric", "layer"),
                           x: str = "alignment", y: str = "score", level: float = 0.95) -> pd.DataFrame:
    """:func:`within_languages` for every group, with Holm over the table's tests (``p_holm``)."""
    keys = [k for k in by if k in merged]
    groups = list(merged.groupby(keys, sort=True, dropna=False)) if keys else [((), merged)]
    rows = [{**dict(zip(keys, gk if isinstance(gk, tuple) else (gk,))),
             **within_languages(g, x=x, y=y, level=level)} for gk, g in groups]
    out = pd.DataFrame(rows, columns=keys + WITHIN_COLS)
    out["p_holm"] = holm(out["p"]) if len(out) else []
    return out


def drift_adjusted(frame: pd.DataFrame, drift: dict[str, float], *, x: str = "alignment", y: str = "score",
                   level: float = 0.95) -> list[dict]:
    """RQ1 within languages with and without each checkpoint's weight drift (relative distance from the
    pre-trained weights) as a covariate: ``y ~ x + C(language)`` vs ``y ~ x + drift + C(language)``, SEs
    clustered two-way by checkpoint and language. Drift is constant within a checkpoint, so checkpoint
    fixed effects would absorb it: this model keeps language effects only. If alignment's slope shrinks
    once drift enters, "robust training aligns" is partly "robust training moves the weights less"."""
    g = frame.assign(drift=frame["checkpoint"].map(drift)).dropna(subset=[x, y])
    k, c = g["language"].nunique(), g["checkpoint"].nunique()
    out = []
    for model, cov in (("without drift", ()), ("with drift", ("drift",))):
        note = too_small(k, c) or ("empty: no weight drift recorded" if cov and g["drift"].isna().all() else "")
        if note:
            out.append(dict(model=model, n_languages=k, n_checkpoints=c, n=len(g), note=note))
            continue
        fit = fe_slope(g, y=y, x=x, fe=("language",), cluster=("checkpoint", "language"), covariates=cov,
                       level=level)
        out.append(dict(model=model, n_languages=k, n_checkpoints=c, **fit))
    return out


# ------------------------------------------------------------------------------------ the declared primary
def resolve_metric(metrics, wanted: str) -> tuple[str | None, str]:
    """The merged metric name for ``wanted`` (dataset-prefixed when several datasets were measured), and a
    note when it had to be picked or is missing."""
    metrics = sorted(set(metrics))
    if wanted in metrics:
        return wanted, ""
    cands = [m for m in metrics if m.endswith("/" + wanted)]
    if cands:
        pick = next((m for m in cands if m.startswith("tatoeba/")), cands[0])
        return pick, f"primary metric measured on several datasets; using {pick}"
    return None, f"primary metric '{wanted}' was not measured (metrics: {', '.join(metrics) or 'none'})"


def resolve_layer(primary: ReportConfig.Primary, layers: Sequence[int]) -> int | None:
    """The primary's layer among the ``layers`` measured ("last": the highest); None when it was not measured."""
    layers = sorted(int(v) for v in layers)
    if not layers:
        return None
    if primary.layer == "last":
        return layers[-1]
    return int(primary.layer) if int(primary.layer) in layers else None


@dataclass
class RQ1:
    """What step 4 hands on. Tables are DataFrames whose empty groups carry a ``note`` saying why."""

    metric: str = ""  # the primary metric's row name as merged (dataset-prefixed when several datasets)
    layers: dict[str, int] = field(default_factory=dict)  # task -> the primary layer
    primary: pd.DataFrame = field(default_factory=pd.DataFrame)  # across languages, one row per task
    primary_within: pd.DataFrame = field(default_factory=pd.DataFrame)  # within languages at the primary
    exploratory: pd.DataFrame = field(default_factory=pd.DataFrame)  # across languages, every other metric x layer
    exploratory_within: pd.DataFrame = field(default_factory=pd.DataFrame)
    headline: pd.DataFrame = field(default_factory=pd.DataFrame)  # the points at the primary metric and layer
    drift: pd.DataFrame = field(default_factory=pd.DataFrame)  # weight drift per checkpoint (relative L2)
    drift_fits: pd.DataFrame = field(default_factory=pd.DataFrame)  # within languages, with and without drift
    notes: list[str] = field(default_factory=list)


def _empty_row(base: dict, cols: list[str], note: str) -> dict:
    return {**base, **dict.fromkeys(cols, np.nan), "note": note}


def answer_rq1(points: Points, primary: ReportConfig.Primary, *, n_boot: int = 2000, n_perm: int = 10_000,
               seed: int = 0, alpha: float = ALPHA, drift: dict[str, float] | None = None) -> RQ1:
    """Step 4: the primary test per task (across and within languages at the declared metric and layer; Holm over
    tasks), the weight-drift check there, then every other metric x layer as an exploratory family."""
    merged, analysed = points.merged, points.analysed
    if not points.relatable:
        return RQ1()
    pm, why = resolve_metric(merged["metric"], primary.metric)
    rq = RQ1(metric=pm or primary.metric, notes=[why] if why else [])
    tasks = sorted(merged["task"].unique())
    rows, rows_w = [], []
    n_draws = n_perm_for(len(tasks), n_perm, alpha)
    for i, task in enumerate(tasks):
        layers = merged.loc[(merged["task"] == task) & (merged["metric"] == pm), "layer"].unique() if pm else []
        layer = resolve_layer(primary, layers)
        if layer is not None:
            rq.layers[task] = layer
        base = dict(task=task, metric=rq.metric, layer=layer)
        if pm is None or layer is None:
            note = why if pm is None else f"empty: layer {primary.layer} not measured"
            rows.append(_empty_row(base, ACROSS_COLS, note))
            rows_w.append(_empty_row(base, WITHIN_COLS, note))
            continue
        g = analysed[(analysed["task"] == task) & (analysed["metric"] == pm) & (analysed["layer"] == layer)]
        if g.empty:
            note = "empty: every checkpoint of this task fails the model-quality gate"
            rows.append(_empty_row(base, ACROSS_COLS, note))
            rows_w.append(_empty_row(base, WITHIN_COLS, note))
            continue
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        rows.append({**base, **across_languages(g, n_perm=n_draws, n_boot=n_boot, rng=rng)})
        rows_w.append({**base, **within_languages(g)})
    rq.primary = pd.DataFrame(rows, columns=["task", "metric", "layer", *ACROSS_COLS])
    rq.primary["p_holm"] = holm(rq.primary["p"]) if len(rows) else []
    rq.primary_within = pd.DataFrame(rows_w, columns=["task", "metric", "layer", *WITHIN_COLS])
    rq.primary_within["p_holm"] = holm(rq.primary_within["p"]) if len(rows_w) else []

    if drift:  # "less drift": robust methods may align better only because they move the weights less
        meta = [c for c in ("checkpoint", "method", "seed") if c in merged]
        rq.drift = (pd.DataFrame([dict(checkpoint=c, weight_drift=v) for c, v in drift.items()])
                    .merge(merged[meta].drop_duplicates(), on="checkpoint")
                    .sort_values(meta[1:] or ["checkpoint"], ignore_index=True))
        drows = [dict(task=t, metric=rq.metric, layer=lay, **r)
                 for t, lay in rq.layers.items()
                 for r in drift_adjusted(analysed[(analysed["task"] == t) & (analysed["metric"] == pm)
                                                  & (analysed["layer"] == lay)], drift)]
        rq.drift_fits = pd.DataFrame(drows, columns=["task", "metric", "layer", *DRIFT_COLS])

    rq.headline = merged.merge(pd.DataFrame([dict(task=t, layer=lay) for t, lay in rq.layers.items()]),
                               on=["task", "layer"]) if rq.layers else merged.iloc[0:0]
    if pm:
        rq.headline = rq.headline[rq.headline["metric"] == pm]
    prim = {(t, pm, lay) for t, lay in rq.layers.items()}
    is_prim = pd.Series([k in prim for k in zip(analysed["task"], analysed["metric"], analysed["layer"])],
                        index=analysed.index, dtype=bool)
    explo = analysed[~is_prim]
    if len(explo):
        rq.exploratory = across_languages_table(explo, n_perm=n_perm, n_boot=n_boot, seed=seed + 1, alpha=alpha)
        rq.exploratory_within = within_languages_table(explo)
    return rq
