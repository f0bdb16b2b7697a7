"""Inference for RQ1 (does alignment track zero-shot transfer?) and RQ2 (do robust objectives help
low-resource languages most?), at the unit each claim is about.

Every test here is calibrated by simulation in ``tests/test_stats.py`` (null data shaped like a run:
languages x checkpoints with language- and checkpoint-level effects).

* **RQ1 across languages** (unit: language). Statistic: Pearson r between the per-language means of
  alignment and of transfer, each value first centred within its checkpoint (so checkpoint-level shifts
  cancel even when a checkpoint lacks a language). Its permutation null permutes *languages*; permuting
  the per-language means is the same as applying one language permutation jointly to every checkpoint.
  Exact enumeration when k! is small, else Monte Carlo with enough draws that Holm over the family cannot
  be decided by the permutation floor. CI: language-cluster bootstrap on Fisher's z, its SE scaled by
  sqrt(k / (k - 1)) and t(k - 2) quantiles (a small-cluster correction; a percentile interval from
  10-20 clusters is too narrow).
* **RQ1 within languages** (units: checkpoints and languages). ``transfer ~ alignment + C(checkpoint) +
  C(language)``; the slope is identified only by checkpoint x language variation: *within a language and
  net of each checkpoint's overall level, the change in transfer per unit of alignment*. SEs are two-way
  cluster-robust (Cameron, Gelbach & Miller 2011) with CR1 factors, t(min(G) - 1); the partial R^2 is
  that of alignment alone (the fixed effects explain most of the total).
* **RQ2** (unit: language). Gains are method minus baseline at the *same seed* (same task, language);
  per method, the seed-mean gains are averaged per language (task intercepts kept as task shares), so a
  language scored in two tasks counts once, and regressed on log10(CC-100 size): OLS, t(L - k). Seed
  variance is inside the residual. Holm across methods.
* **Method vs baseline**: the mean over target languages of the method's score minus the baseline's,
  with a paired bootstrap CI over test examples and seeds when rows carry per-example values
  (``per_example``), else over languages and seeds.
* **Model-quality gate**: English score with its Wilson 95% CI (F1, QA, mAP: their bootstrap CI) against the
  majority-label rate.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from xltlib.data.languages import resource_table

ALPHA = 0.05
MIN_LANGUAGES = 3
MIN_CHECKPOINTS = 2
MAX_PERM = 200_000  # cap on Monte Carlo permutations per test
SOURCE = "en"

ACROSS_ESTIMAND = ("Pearson r between languages' mean alignment to English and their mean zero-shot score "
                   "(values centred within each checkpoint, then averaged over checkpoints)")
WITHIN_ESTIMAND = ("change in zero-shot score per unit of alignment within a language, net of each "
                   "checkpoint's overall level (checkpoint and language fixed effects)")
RQ2_ESTIMAND = ("change in a method's seed-matched gain over the baseline per 10x more CC-100 pre-training "
                "data (task intercepts; a language counts once)")
MVB_ESTIMAND = "mean over target languages of the method's score minus the baseline's (seed-matched)"


@dataclass(frozen=True)
class Primary:
    """The declared primary analysis: RQ1 across languages for one alignment metric at one layer."""

    metric: str
    layer: int | str  # an int, or "last"

    def resolve_layer(self, layers: Sequence[int]) -> int | None:
        layers = sorted(int(v) for v in layers)
        if not layers:
            return None
        if self.layer == "last":
            return layers[-1]
        return int(self.layer) if int(self.layer) in layers else None


# ------------------------------------------------------------------------------------------------ helpers
def holm(p) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values; NaN stays NaN and is not counted as a test."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(p[idx], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


def too_small(n_languages: int, n_checkpoints: int) -> str:
    """Why a group cannot be tested ('' when it can)."""
    if n_languages < MIN_LANGUAGES:
        return f"empty: {n_languages} language(s), at least {MIN_LANGUAGES} needed"
    if n_checkpoints < MIN_CHECKPOINTS:
        return f"empty: {n_checkpoints} checkpoint(s), at least {MIN_CHECKPOINTS} needed"
    return ""


def _rowwise_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of (B, k) arrays; NaN where a row is constant."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    va, vb = (a * a).sum(1), (b * b).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(1) / np.sqrt(va * vb)
    r[(va <= 1e-24) | (vb <= 1e-24)] = np.nan
    return r


def _n_perm_for(m_tests: int, n_perm: int, alpha: float = ALPHA) -> int:
    """Draws such that the smallest p, times the Holm factor m, stays well under alpha."""
    return int(min(MAX_PERM, max(n_perm, math.ceil(20 * max(m_tests, 1) / alpha))))


# ------------------------------------------------------------------------------------ RQ1 across languages
def language_means(frame: pd.DataFrame, x: str, y: str, *, unit: str = "language",
                   block: str = "checkpoint") -> pd.DataFrame:
    """Per-``unit`` means of x and y after centring each within its ``block`` (checkpoint)."""
    g = frame[[unit, block, x, y]].dropna()
    c = g[[x, y]] - g.groupby(block)[[x, y]].transform("mean")
    c[unit] = g[unit].to_numpy()
    return c.groupby(unit)[[x, y]].mean()


def permutation_p(a: np.ndarray, b: np.ndarray, n_perm: int, rng: np.random.Generator,
                  chunk: int = 20_000) -> tuple[float, int, bool]:
    """Two-sided permutation p of Pearson r(a, b) over permutations of b: (p, draws, exact).

    Exact (all k! orderings, identity included) when k! <= n_perm; otherwise Monte Carlo with
    p = (1 + #{|r*| >= |r|}) / (1 + n_perm) (Phipson & Smyth 2010)."""
    k = len(a)
    za = (a - a.mean()) / a.std()
    zb = (b - b.mean()) / b.std()
    r_obs = abs(float(np.mean(za * zb)))
    tol = 1e-10
    if math.factorial(k) <= n_perm:
        perms = np.array(list(itertools.permutations(range(k))), dtype=np.int64)
        r = np.abs((za[None, :] * zb[perms]).mean(1))
        return float(np.mean(r >= r_obs - tol)), len(perms), True
    hits, done = 0, 0
    while done < n_perm:
        m = min(chunk, n_perm - done)
        idx = np.argsort(rng.random((m, k)), axis=1)
        hits += int(np.sum(np.abs((za[None, :] * zb[idx]).mean(1)) >= r_obs - tol))
        done += m
    return (1 + hits) / (1 + n_perm), n_perm, False


def cluster_bootstrap_r_ci(a: np.ndarray, b: np.ndarray, n_boot: int, rng: np.random.Generator,
                           level: float = 0.95) -> tuple[float, float]:
    """CI of r(a, b) from resampling the k units (languages) with replacement.

    Normal interval on Fisher's z with the bootstrap SE scaled by sqrt(k / (k - 1)) and t(k - 2)
    quantiles: the small-cluster correction (percentile intervals from few clusters undercover)."""
    k = len(a)
    r = float(np.corrcoef(a, b)[0, 1])
    idx = rng.integers(0, k, size=(n_boot, k))
    rb = _rowwise_corr(a[idx], b[idx])
    zb = np.arctanh(np.clip(rb[np.isfinite(rb)], -0.9999, 0.9999))
    if len(zb) < 2:
        return math.nan, math.nan
    se = float(np.std(zb, ddof=1)) * math.sqrt(k / (k - 1))
    t = float(stats.t.ppf(0.5 + level / 2, max(k - 2, 1)))
    z0 = float(np.arctanh(np.clip(r, -0.9999, 0.9999)))
    return math.tanh(z0 - t * se), math.tanh(z0 + t * se)


ACROSS_COLS = ["n_languages", "n_checkpoints", "n_points", "r", "r_lo", "r_hi", "p", "n_perm", "exact",
               "p_at_floor", "note"]


def across_languages(frame: pd.DataFrame, *, x: str = "alignment", y: str = "transfer_acc",
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
                           x: str = "alignment", y: str = "transfer_acc", n_perm: int = 10_000,
                           n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                           alpha: float = ALPHA) -> pd.DataFrame:
    """:func:`across_languages` for every group, with Holm over the table's tests (``p_holm``).

    The permutation count is raised per family so that p is not pinned at 1/(n_perm + 1) times the
    Holm factor (see :func:`_n_perm_for`)."""
    keys = [k for k in by if k in merged]
    groups = list(merged.groupby(keys, sort=True, dropna=False)) if keys else [((), merged)]
    n_draws = _n_perm_for(len(groups), n_perm, alpha)
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


# ------------------------------------------------------------------------------------ regression with FEs
def _dummies(frame: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    parts = [np.ones((len(frame), 1))]
    for c in cols:
        codes = pd.factorize(frame[c])[0]
        n = codes.max() + 1 if len(codes) else 0
        if n > 1:
            parts.append(np.eye(n)[codes][:, 1:])
    return np.hstack(parts)


def _resid(v: np.ndarray, Z: np.ndarray) -> np.ndarray:
    beta, *_ = np.linalg.lstsq(Z, v, rcond=None)
    return v - Z @ beta


def _cluster_var(score: np.ndarray, groups: np.ndarray, n: int, k: int) -> tuple[float, int]:
    """CR1 variance numerator sum_g (sum_{i in g} score_i)^2 with the G/(G-1) (N-1)/(N-K) factor."""
    codes, uniq = pd.factorize(groups)
    G = len(uniq)
    s = np.bincount(codes, weights=score, minlength=G)
    factor = (G / (G - 1) if G > 1 else math.nan) * (n - 1) / max(n - k, 1)
    return float(factor * np.sum(s * s)), G


def fe_slope(frame: pd.DataFrame, *, y: str, x: str, fe: Sequence[str], cluster: Sequence[str],
             covariates: Sequence[str] = (), level: float = 0.95) -> dict:
    """OLS slope of ``y`` on ``x`` with fixed effects ``fe`` (and ``covariates``), one- or two-way
    cluster-robust SE (Frisch-Waugh-Lovell: slope = sum x~ y / sum x~^2 with x~ the residual of x on
    the rest), t(min G - 1) CI and p, and the partial R^2 of x."""
    g = frame.dropna(subset=[y, x, *covariates]).reset_index(drop=True)
    n = len(g)
    out = dict(coef=math.nan, se=math.nan, ci_lo=math.nan, ci_hi=math.nan, p=math.nan, df=math.nan,
               partial_r2=math.nan, n=n, note="")
    Z = _dummies(g, fe)
    if covariates:
        Z = np.hstack([Z, g[list(covariates)].to_numpy(float)])
    k = Z.shape[1] + 1
    if n < k + 2:
        out["note"] = f"empty: {n} points for {k} parameters"
        return out
    yv, xv = g[y].to_numpy(float), g[x].to_numpy(float)
    xt = _resid(xv, Z)
    sxx = float(xt @ xt)
    if sxx <= 1e-12 * max(float(xv @ xv), 1e-300):
        out["note"] = f"empty: {x} does not vary within the fixed effects"
        return out
    yt = _resid(yv, Z)
    b = float(xt @ yt) / sxx
    e = yt - b * xt
    ssr_r, ssr_f = float(yt @ yt), float(e @ e)
    score = xt * e
    vs, Gs = [], []
    for c in cluster:
        v, G = _cluster_var(score, g[c].to_numpy(), n, k)
        vs.append(v)
        Gs.append(G)
    if len(cluster) == 2:  # two-way: V_a + V_b - V_(a and b)
        inter = g[cluster[0]].astype(str) + "\x00" + g[cluster[1]].astype(str)
        v_ab, _ = _cluster_var(score, inter.to_numpy(), n, k)
        var = vs[0] + vs[1] - v_ab
        if not var > 0:  # the difference can be negative in small samples: the larger one-way variance
            var = max(vs)
    else:
        var = vs[0]
    df = min(Gs) - 1
    if df < 1 or not np.isfinite(var):
        out["note"] = f"empty: {min(Gs)} cluster(s)"
        return out
    se = math.sqrt(var) / sxx
    t = float(stats.t.ppf(0.5 + level / 2, df))
    out.update(coef=b, se=se, ci_lo=b - t * se, ci_hi=b + t * se, df=df,
               p=float(2 * stats.t.sf(abs(b / se), df)) if se > 0 else math.nan,
               partial_r2=(ssr_r - ssr_f) / ssr_r if ssr_r > 0 else math.nan)
    return out


WITHIN_COLS = ["n_languages", "n_checkpoints", "n", "coef", "se", "ci_lo", "ci_hi", "p", "df", "partial_r2",
               "note"]


def within_languages(frame: pd.DataFrame, *, x: str = "alignment", y: str = "transfer_acc",
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
                           x: str = "alignment", y: str = "transfer_acc", level: float = 0.95) -> pd.DataFrame:
    keys = [k for k in by if k in merged]
    groups = list(merged.groupby(keys, sort=True, dropna=False)) if keys else [((), merged)]
    rows = [{**dict(zip(keys, gk if isinstance(gk, tuple) else (gk,))),
             **within_languages(g, x=x, y=y, level=level)} for gk, g in groups]
    out = pd.DataFrame(rows, columns=keys + WITHIN_COLS)
    out["p_holm"] = holm(out["p"]) if len(out) else []
    return out


DRIFT_COLS = ["model", "n_languages", "n_checkpoints", "n", "coef", "se", "ci_lo", "ci_hi", "p", "df",
              "partial_r2", "note"]


def drift_adjusted(frame: pd.DataFrame, drift: dict[str, float], *, x: str = "alignment", y: str = "transfer_acc",
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


# ---------------------------------------------------------------------------------------------------- RQ2
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
    xt = _resid(agg["x"].to_numpy(float), Z)
    yt = _resid(agg["y"].to_numpy(float), Z)
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


RQ2_COLS = ["method", "n_languages", "n_tasks", "n_points", "n_seeds", "slope_per_10x", "se", "ci_lo", "ci_hi",
            "p", "df", "p_holm", "note"]


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


# --------------------------------------------------------------------------------------- method vs baseline
def _paired_values(g: pd.DataFrame, method: str, baseline: str, unit: str):
    """(units, seeds, method matrix [unit, seed], baseline matrix, per-example dict or None)."""
    pm = g[g["method"] == method].groupby([unit, "seed"])["value"].mean().unstack("seed")
    pb = g[g["method"] == baseline].groupby([unit, "seed"])["value"].mean().unstack("seed")
    units = sorted(set(pm.index) & set(pb.index))
    seeds = sorted(set(pm.columns) & set(pb.columns))
    return units, seeds, pm.reindex(index=units, columns=seeds), pb.reindex(index=units, columns=seeds)


def _per_example(g: pd.DataFrame, method: str, baseline: str, unit: str, units, seeds):
    """{(unit, seed): (method values, baseline values)} when every cell carries equally long arrays."""
    if "per_example" not in g:
        return None
    out = {}
    for u in units:
        for s in seeds:
            cell = []
            for m in (method, baseline):
                v = g[(g[unit] == u) & (g["seed"] == s) & (g["method"] == m)]["per_example"]
                if len(v) != 1 or v.iloc[0] is None or not hasattr(v.iloc[0], "__len__"):
                    return None
                cell.append(np.asarray(v.iloc[0], dtype=float))
            if len(cell[0]) != len(cell[1]) or len(cell[0]) == 0:
                return None
            out[(u, s)] = tuple(cell)
    return out


def paired_diff_ci(dm: np.ndarray, db: np.ndarray, *, n_boot: int, rng: np.random.Generator,
                   level: float = 0.95, per_example: dict | None = None, units=None, seeds=None):
    """Mean over units (languages) of the seed-matched difference, and its CI: (est, lo, hi, df).

    The variance has two parts. Within seeds, a paired bootstrap: test examples are resampled (the same
    indices for method and baseline) when per-example values exist, else languages. Across seeds, the
    variance of the seed-level differences / S (seeds are the training replicates; bootstrapping 2-3 of
    them undercovers). CI: est +- t(nu) SE with Welch-Satterthwaite nu."""
    d = dm - db  # [unit, seed]
    est = float(np.nanmean(d))
    L, S = d.shape
    boots = np.empty(n_boot)
    if per_example is not None:
        boots[:] = 0.0
        for u in units:
            for s in seeds:
                vm, vb = per_example[(u, s)]
                dv = vm - vb  # paired: the same resampled rows for method and baseline
                for c in range(0, n_boot, 100):  # chunks keep the index array small (100 x n rows)
                    m = min(100, n_boot - c)
                    boots[c : c + m] += dv[rng.integers(0, len(dv), size=(m, len(dv)))].mean(1)
        boots /= L * S
        df_unit = math.inf
    else:
        dl = np.nanmean(d, axis=1)  # per-language difference, seeds averaged
        boots = dl[rng.integers(0, L, size=(n_boot, L))].mean(1)
        df_unit = L - 1
    v_unit = float(np.var(boots, ddof=1)) * (L / (L - 1) if per_example is None and L > 1 else 1.0)
    v_seed = float(np.var(np.nanmean(d, axis=0), ddof=1)) / S if S > 1 else 0.0
    var = v_unit + v_seed
    if not var > 0:
        return est, math.nan, math.nan, math.nan
    parts = [(v_unit, df_unit), (v_seed, S - 1)]
    den = sum(v * v / k for v, k in parts if v > 0 and k > 0 and np.isfinite(k))
    nu = var * var / den if den > 0 else math.inf
    nu = max(nu, 1.0)
    t = float(stats.t.ppf(0.5 + level / 2, nu)) if np.isfinite(nu) else float(stats.norm.ppf(0.5 + level / 2))
    se = math.sqrt(var)
    return est, est - t * se, est + t * se, nu


MVB_COLS = ["task", "setting", "method", "n_languages", "n_seeds", "baseline", "score", "diff", "ci_lo", "ci_hi",
            "df", "resampled", "note"]


def method_vs_baseline(transfer: pd.DataFrame, *, baseline: str = "baseline", metric: str = "score",
                       n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                       exclude: Sequence[str] = (SOURCE,)) -> pd.DataFrame:
    """Per task (and for generalized mixed-language pairs where present) and method: the mean over target
    languages of the method's score, the baseline's, their seed-matched difference and a paired
    bootstrap CI (see :func:`paired_diff_ci`)."""
    tr = transfer.copy()
    if "language2" not in tr:
        tr["language2"] = ""
    tr["language2"] = tr["language2"].fillna("").astype(str)
    std = tr[(tr["language2"] == "") & (tr["metric"] == metric)]
    std = std[~std["language"].isin(exclude)].assign(unit=lambda d: d["language"])
    gen = tr[(tr["language2"] != "") & (tr["language2"] != tr["language"])]
    # generalized pairs may carry only their accuracy (the task score of the pair tasks)
    gen = gen[gen["metric"] == (metric if (gen["metric"] == metric).any() else "accuracy")]
    gen = gen.assign(unit=gen["language"] + "-" + gen["language2"])
    rng_root = np.random.SeedSequence(seed)
    rows = []
    for setting, frame in (("standard", std), ("generalized", gen)):
        for task, g in frame.groupby("task", sort=True):
            for method in sorted(set(g["method"]) - {baseline}):
                row = dict(task=task, setting=setting, method=method, n_languages=0, n_seeds=0,
                           baseline=math.nan, score=math.nan, diff=math.nan, ci_lo=math.nan, ci_hi=math.nan,
                           df=math.nan, resampled="", note="")
                if baseline not in set(g["method"]):
                    row["note"] = f"empty: no {baseline} rows"
                    rows.append(row)
                    continue
                units, seeds, pm, pb = _paired_values(g, method, baseline, "unit")
                row.update(n_languages=len(units), n_seeds=len(seeds))
                if not units or not seeds:
                    row["note"] = "empty: no language scored at a seed shared with the baseline"
                    rows.append(row)
                    continue
                pe = _per_example(g, method, baseline, "unit", units, seeds)
                rng = np.random.default_rng(rng_root.spawn(1)[0])
                est, lo, hi, nu = paired_diff_ci(pm.to_numpy(float), pb.to_numpy(float), n_boot=n_boot, rng=rng,
                                             level=level, per_example=pe, units=units, seeds=seeds)
                row.update(baseline=float(np.nanmean(pb.to_numpy(float))), score=float(np.nanmean(pm.to_numpy(float))),
                           diff=est, ci_lo=lo, ci_hi=hi, df=nu,
                           resampled=("test examples (paired) + seeds" if pe is not None else "languages (paired) + seeds"))
                notes = []
                if len(seeds) == 1:
                    notes.append("1 matched seed: seed-to-seed variance is not in the CI")
                elif len(seeds) < 3:
                    notes.append(f"{len(seeds)} matched seeds: seed variance is poorly estimated (wide CI)")
                if setting == "generalized":
                    notes.append("units are ordered language pairs")
                row["note"] = "; ".join(notes)
                rows.append(row)
    return pd.DataFrame(rows, columns=MVB_COLS)


# ------------------------------------------------------------------------------------- model-quality gate
def wilson_ci(p: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (accuracy over n examples)."""
    if not n or not np.isfinite(p):
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + level / 2))
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return c - h, c + h


GATE_COLS = ["task", "checkpoint", "method", "seed", "english", "ci_lo", "ci_hi", "n", "majority", "passes", "note"]


def quality_gate(transfer: pd.DataFrame, majority: dict[str, float] | None, *, metric: str = "score",
                 level: float = 0.95) -> pd.DataFrame:
    """Per (task, checkpoint): the English score with its Wilson CI beside the majority-label rate (tasks without
    one: the score's own bootstrap CI).

    ``passes`` is False when the CI's lower bound does not exceed the majority rate (the model has not
    shown that it learned the task) or when there is no English score; tasks without a majority rate
    (tagging, QA, retrieval) are not gated and say so."""
    majority = majority or {}
    tr = transfer[transfer["metric"] == metric]
    if "language2" in tr:
        tr = tr[tr["language2"].fillna("").astype(str) == ""]
    rows = []
    for (task, ck), g in tr.groupby(["task", "checkpoint"], sort=True):
        en = g[g["language"] == SOURCE]
        row = dict(task=task, checkpoint=ck, method=g["method"].iloc[0] if "method" in g else "",
                   seed=g["seed"].iloc[0] if "seed" in g else -1, english=math.nan, ci_lo=math.nan,
                   ci_hi=math.nan, n=0, majority=majority.get(task, math.nan), passes=True, note="")
        if en.empty:
            row.update(passes=False, note="no English score")
            rows.append(row)
            continue
        n = int(en["n"].sum()) if "n" in en else 0
        val = float(np.average(en["value"], weights=en["n"])) if n else float(en["value"].mean())
        gated = task in majority and np.isfinite(majority[task])
        if gated:  # accuracy: a proportion
            lo, hi = wilson_ci(val, n, level)
        else:  # F1, QA, mAP are not proportions: the row's own bootstrap CI over examples
            one = len(en) == 1 and {"ci_low", "ci_high"} <= set(en)
            lo, hi = (float(en["ci_low"].iloc[0]), float(en["ci_high"].iloc[0])) if one else (math.nan, math.nan)
        row.update(english=val, ci_lo=lo, ci_hi=hi, n=n)
        if not gated:
            row["note"] = "no majority rate for this task kind: not gated (bootstrap CI; see the English-vs-target table)"
        elif not lo > majority[task]:
            row.update(passes=False, note="English score does not clear the majority rate: excluded from RQ1/RQ2")
        rows.append(row)
    return pd.DataFrame(rows, columns=GATE_COLS)


def gate_failures(gate: pd.DataFrame) -> set[tuple[str, str]]:
    """(task, checkpoint) pairs that fail the gate."""
    if gate is None or gate.empty:
        return set()
    bad = gate[~gate["passes"].astype(bool)]
    return set(zip(bad["task"], bad["checkpoint"]))


def drop_failed(frame: pd.DataFrame, failed: set[tuple[str, str]]) -> pd.DataFrame:
    """Rows of ``frame`` whose (task, checkpoint) passed the gate."""
    if not failed or frame.empty:
        return frame
    key = list(zip(frame["task"], frame["checkpoint"]))
    return frame[[k not in failed for k in key]].reset_index(drop=True)


# ------------------------------------------------------------------------------------------ typed result
def _empty() -> pd.DataFrame:
    return pd.DataFrame()


@dataclass
class AnalysisResult:
    """Everything the analysis page and the export show (built by :func:`xltlib.reporting.report.analyze`).

    Tables are DataFrames whose empty groups carry a ``note`` saying why; ``notes`` are page-level
    remarks (missing cells, excluded checkpoints, fallbacks)."""

    primary: Primary
    alpha: float = ALPHA
    notes: list[str] = field(default_factory=list)
    gate: pd.DataFrame = field(default_factory=_empty)  # model-quality gate per (task, checkpoint)
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (task, checkpoint) failing the gate
    merged: pd.DataFrame = field(default_factory=_empty)  # every (checkpoint, language, metric, layer) point
    analysed: pd.DataFrame = field(default_factory=_empty)  # the points that passed the gate
    method_vs_baseline: pd.DataFrame = field(default_factory=_empty)
    primary_layer: dict[str, int] = field(default_factory=dict)  # task -> resolved layer
    primary_metric: str = ""  # the resolved metric row name (dataset-prefixed when several datasets)
    rq1_primary: pd.DataFrame = field(default_factory=_empty)  # across languages, one row per task
    rq1_primary_within: pd.DataFrame = field(default_factory=_empty)  # within languages at the primary
    rq1_exploratory: pd.DataFrame = field(default_factory=_empty)  # across languages, every other metric x layer
    rq1_exploratory_within: pd.DataFrame = field(default_factory=_empty)
    rq2: pd.DataFrame = field(default_factory=_empty)  # transfer gain vs log10 size, per method
    rq2_frame: pd.DataFrame = field(default_factory=_empty)
    rq2_alignment: pd.DataFrame = field(default_factory=_empty)  # alignment gain (primary measure) vs size
    delta: pd.DataFrame = field(default_factory=_empty)  # seed-mean method - baseline (plots)
    headline_frame: pd.DataFrame = field(default_factory=_empty)  # points at the primary metric and layer
    pools: pd.DataFrame = field(default_factory=_empty)  # alignment pool size per dataset and language
    drift: pd.DataFrame = field(default_factory=_empty)  # weight drift per checkpoint (relative L2 from pre-trained)
    rq1_drift: pd.DataFrame = field(default_factory=_empty)  # within languages, with and without drift
    counts: dict[str, int] = field(default_factory=dict)  # checkpoints, languages, seeds, tasks
    summary: str = ""
