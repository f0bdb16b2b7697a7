"""Step 4 of the analysis, RQ1: does the alignment a checkpoint reaches track the transfer it gets?

* **Across checkpoints, within languages** (unit: the checkpoint; the primary test when ``report.primary.unit`` is
  ``checkpoint``, the default). Checkpoints (methods x strengths x seeds of one task, those that pass the gate) are
  where robust training varies alignment. ``score ~ alignment + C(language)``: the slope is the change in a
  language's zero-shot score per unit of alignment across checkpoints, net of what pre-training gave the language
  (:data:`CHECKPOINT_ESTIMAND`). A checkpoint's languages are repeated measures of one unit, so the test permutes
  *checkpoint labels*: each checkpoint's alignment over all its languages moves as a block to another checkpoint's
  scores (:func:`checkpoint_permutation`); exact over all C! orders when that is at most ``n_perm``, else Monte
  Carlo. The CI inverts that test (the slopes b0 whose permutation p exceeds alpha on ``score - b0 * alignment``).
  It holds its level with 10-30 checkpoints x 6-40 languages where a one-way cluster-robust t by checkpoint rejects
  too often (``tests/test_rq1.py``).
* **Across languages** (unit: the language; secondary, or the primary test when ``report.primary.unit`` is
  ``language``). Statistic: Pearson r between the per-language means of alignment and of the task score, each value
  first centred within its checkpoint (so checkpoint-level shifts cancel even when a checkpoint lacks a language).
  Mostly what pre-training gave each language. Its permutation null permutes *languages*; permuting the
  per-language means is the same as applying one language permutation jointly to every checkpoint. Exact
  enumeration when k! is small, else Monte Carlo with enough draws that Holm over the family cannot be decided by
  the permutation floor. CI: language-cluster bootstrap on Fisher's z, its SE scaled by sqrt(k / (k - 1)) and
  t(k - 2) quantiles (a small-cluster correction; a percentile interval from 10-20 clusters is too narrow).
* **Within checkpoints and languages** (exploratory). ``score ~ alignment + C(checkpoint) + C(language)``; the
  slope is identified only by checkpoint x language variation. SEs are two-way cluster-robust (Cameron, Gelbach &
  Miller 2011) with CR1 factors, t(min(G) - 1); the partial R^2 is that of alignment alone.
* **Less drift?** The within-language slope with and without each checkpoint's weight drift as a covariate.
* **Learned less?** Across checkpoints (their means over languages), alignment's slope without and with each
  checkpoint's English selection score as a covariate.

A task is any task with transfer rows: PAN-X's 46 target languages meet Tatoeba's on the ISO 639-1 codes of
:func:`xltlib.data.languages.to_iso1` (41 of them; gu, my, pa, qu and yo have no Tatoeba rows). The primary test is
the one declared in ``report.primary`` (:class:`xltlib.config.schema.ReportConfig.Primary`), tested alone (Holm over
tasks); every other alignment metric x layer is exploratory, Holm within its family.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

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
CHECKPOINT_ESTIMAND = ("change in zero-shot score per unit of alignment across checkpoints (methods x strengths x "
                       "seeds) within a language (language fixed effects)")
CHECKPOINT_COLS = ["n_checkpoints", "n_languages", "n", "coef", "ci_lo", "ci_hi", "p", "n_perm", "exact",
                   "p_at_floor", "r_within", "note"]
MIN_CHECKPOINTS_PERM = 4  # 4! = 24 orders: the smallest exact p, 1/24, is below 0.05
ACROSS_COLS = ["n_languages", "n_checkpoints", "n_points", "r", "r_lo", "r_hi", "p", "n_perm", "exact",
               "p_at_floor", "note"]
WITHIN_COLS = ["n_languages", "n_checkpoints", "n", "coef", "se", "ci_lo", "ci_hi", "p", "df", "partial_r2",
               "note"]
DRIFT_COLS = ["model", "n_languages", "n_checkpoints", "n", "coef", "se", "ci_lo", "ci_hi", "p", "df",
              "partial_r2", "note"]


# ------------------------------------------------------------------------ across checkpoints, within languages
def checkpoint_matrices(frame: pd.DataFrame, x: str, y: str) -> tuple[np.ndarray, np.ndarray, list, list, int]:
    """[checkpoint, language] matrices of x and y over the languages every checkpoint has (a permutation moves
    whole rows): (X, Y, checkpoints, languages, languages dropped)."""
    g = frame.dropna(subset=[x, y])
    xs = g.pivot_table(index="checkpoint", columns="language", values=x, aggfunc="mean")
    ys = g.pivot_table(index="checkpoint", columns="language", values=y, aggfunc="mean")  # same cells as xs
    keep = xs.columns[xs.notna().all(axis=0)]
    return xs[keep].to_numpy(float), ys[keep].to_numpy(float), list(xs.index), list(keep), len(xs.columns) - len(keep)


def _permutations(c: int, n_perm: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Every ordering of c rows (identity first) when c! <= n_perm, else n_perm random ones: (orders, exact)."""
    if math.factorial(c) <= n_perm:
        return np.array(list(itertools.permutations(range(c))), dtype=np.int64), True
    return np.argsort(rng.random((n_perm, c)), axis=1), False


def checkpoint_permutation(X: np.ndarray, Y: np.ndarray, *, n_perm: int = 10_000, rng: np.random.Generator,
                           alpha: float = ALPHA, ci: bool = True, orders: tuple[np.ndarray, bool] | None = None
                           ) -> dict:
    """Slope of Y on X with language (column) fixed effects, its permutation p over checkpoint (row) labels and the
    CI that inverts the test.

    Rows of the language-centred X move as blocks: the slope under ordering pi is sum_c M[pi(c), c] with
    M = X~ Y~' / sum X~^2. Testing slope b0 permutes X against Y - b0 X, whose slope under pi is m_pi - b0 k_pi
    (K = X~ X~' / sum X~^2, k_identity = 1), so one set of orderings serves every b0; the CI's ends are where the
    two-sided p crosses ``alpha`` (bisection from the estimate outwards); ``ci=False`` skips it. ``orders``:
    (orderings, exact) to reuse, e.g. one set for a family of tests on the same checkpoints."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    sxx, syy = float(np.sum(Xc * Xc)), float(np.sum(Yc * Yc))
    out = dict(coef=math.nan, ci_lo=math.nan, ci_hi=math.nan, p=math.nan, n_perm=0, exact=False, p_at_floor=False,
               r_within=math.nan, note="")
    if sxx <= 1e-12 or syy <= 1e-12:
        out["note"] = "empty: alignment or transfer does not vary across checkpoints within a language"
        return out
    M, K = Xc @ Yc.T / sxx, Xc @ Xc.T / sxx
    orders, exact = orders if orders is not None else _permutations(len(X), n_perm, rng)
    cols = np.arange(len(X))
    m, k = M[orders, cols].sum(1), K[orders, cols].sum(1)
    b = float(np.trace(M))
    tol = 1e-10 * max(1.0, abs(b))

    def p_at(b0: float) -> float:
        hits = int(np.sum(np.abs(m - b0 * k) >= abs(b - b0) - tol))
        return hits / len(m) if exact else (1 + hits) / (1 + len(m))

    p = p_at(0.0)
    out.update(coef=b, p=p, n_perm=len(m), exact=exact, r_within=b * math.sqrt(sxx / syy),
               p_at_floor=(not exact) and p <= 1.0 / (len(m) + 1) + 1e-15)
    if not ci:
        return out
    step = float(np.std(m)) or abs(b) or 1.0
    ends = []
    for sign in (-1.0, 1.0):
        inside, j = 0.0, 0
        while p_at(b + sign * step * 2 ** j) > alpha and j < 40:
            inside, j = step * 2 ** j, j + 1
        if j == 40:  # p never falls below alpha: the data cannot bound the slope on this side
            ends.append(sign * math.inf)
            continue
        outside = step * 2 ** j
        for _ in range(50):
            mid = (inside + outside) / 2
            inside, outside = (mid, outside) if p_at(b + sign * mid) > alpha else (inside, mid)
        ends.append(b + sign * (inside + outside) / 2)
    out["ci_lo"], out["ci_hi"] = ends
    return out


def across_checkpoints(frame: pd.DataFrame, *, x: str = "alignment", y: str = "score", n_perm: int = 10_000,
                       rng: np.random.Generator | None = None, alpha: float = ALPHA, ci: bool = True,
                       orders: dict[int, tuple[np.ndarray, bool]] | None = None) -> dict:
    """RQ1 across checkpoints within languages for one group (one task x metric x layer); see the module
    docstring. The CI's level is 1 - ``alpha``; ``orders``: a cache of orderings per checkpoint count, shared by
    the tests of a family."""
    rng = rng if rng is not None else np.random.default_rng(0)
    X, Y, cks, langs, dropped = checkpoint_matrices(frame, x, y)
    row = dict(n_checkpoints=len(cks), n_languages=len(langs), n=int(X.size), note="")
    note = [f"{dropped} language(s) not scored by every checkpoint left out"] if dropped else []
    if len(cks) < MIN_CHECKPOINTS_PERM:
        note.insert(0, f"empty: {len(cks)} checkpoint(s), at least {MIN_CHECKPOINTS_PERM} needed for a permutation "
                       f"p below {alpha}")
    elif not langs:
        note.insert(0, "empty: no language scored by every checkpoint")
    else:
        if orders is not None and len(cks) not in orders:
            orders[len(cks)] = _permutations(len(cks), n_perm, rng)
        fit = checkpoint_permutation(X, Y, n_perm=n_perm, rng=rng, alpha=alpha, ci=ci,
                                     orders=orders.get(len(cks)) if orders is not None else None)
        if fit.pop("note"):
            note.insert(0, "empty: alignment or transfer does not vary across checkpoints within a language")
        row.update(fit)
    row["note"] = "; ".join(note)
    return {c: row.get(c, math.nan) for c in CHECKPOINT_COLS}


def across_checkpoints_table(merged: pd.DataFrame, *, by: Sequence[str] = ("task", "metric", "layer"),
                             x: str = "alignment", y: str = "score", n_perm: int = 10_000, seed: int = 0,
                             alpha: float = ALPHA) -> pd.DataFrame:
    """:func:`across_checkpoints` for every group (p only, no CI: an exploratory family), with Holm over the table's
    tests (``p_holm``). One set of orderings per checkpoint count serves the family."""
    keys = [k for k in by if k in merged]
    groups = list(merged.groupby(keys, sort=True, dropna=False)) if keys else [((), merged)]
    n_draws = n_perm_for(len(groups), n_perm, alpha)
    rng, orders = np.random.default_rng(seed), {}
    rows = [{**dict(zip(keys, gk if isinstance(gk, tuple) else (gk,))),
             **across_checkpoints(g, x=x, y=y, n_perm=n_draws, rng=rng, alpha=alpha, ci=False, orders=orders)}
            for gk, g in groups]
    out = pd.DataFrame(rows, columns=keys + CHECKPOINT_COLS)
    out["p_holm"] = holm(out["p"]) if len(out) else []
    return out


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


def english_adjusted(frame: pd.DataFrame, english: dict[str, float], *, x: str = "alignment", y: str = "score",
                     level: float = 0.95) -> list[dict]:
    """RQ1 across checkpoints without and with each checkpoint's English selection score as a covariate, at the
    checkpoint level: each checkpoint's mean alignment and mean transfer over the languages every checkpoint was
    scored in (so language effects cancel), then OLS ``transfer ~ alignment`` vs ``transfer ~ alignment + english``
    over the checkpoints, t(C - k). A checkpoint that learned the task less well in English scores lower in every
    language; if it also kept more alignment (it moved less, or its perturbation held it near the pre-trained
    encoder) the slope across checkpoints mixes "aligns more" with "learned less". The adjusted slope is
    alignment's relation to transfer at a given English score. Checkpoint means, not the checkpoint x language
    panel: the question lives at the checkpoint, and a two-way clustered panel fit with 14 language clusters
    rejected a true null 7% of the time in the calibration (``tests/test_stats.py``)."""
    g = frame.dropna(subset=[x, y])
    n_ck = g["checkpoint"].nunique()
    per_lang = g.groupby("language")["checkpoint"].nunique()
    common = per_lang.index[per_lang == n_ck]
    per = g[g["language"].isin(common)].groupby("checkpoint")[[x, y]].mean()
    per["english"] = per.index.map(english)
    k, c = len(common), len(per)
    out = []
    for model, cov in (("checkpoint means", []), ("+ English selection score", ["english"])):
        row = dict(model=model, n_languages=k, n_checkpoints=c, n=c)
        d = per.dropna(subset=[x, y, *cov])
        n_par = 2 + len(cov)
        note = too_small(k, c) or ("empty: no English score" if cov and per["english"].isna().all() else "") or \
            (f"empty: {len(d)} checkpoints for {n_par} parameters" if len(d) <= n_par + 1 else "")
        if note:
            out.append({**row, "note": note})
            continue
        X = np.column_stack([np.ones(len(d)), d[x].to_numpy(float), *[d[v].to_numpy(float) for v in cov]])
        yv = d[y].to_numpy(float)
        beta, *_ = np.linalg.lstsq(X, yv, rcond=None)
        resid = yv - X @ beta
        df = len(d) - n_par
        cov_b = np.linalg.pinv(X.T @ X) * float(resid @ resid) / df
        se = math.sqrt(cov_b[1, 1])
        if not se > 0:
            out.append({**row, "note": "empty: the fit is exact (no residual variation)"})
            continue
        t = beta[1] / se
        q = float(stats.t.ppf(0.5 + level / 2, df))
        out.append({**row, "n": len(d), "coef": float(beta[1]), "se": se, "ci_lo": float(beta[1] - q * se),
                    "ci_hi": float(beta[1] + q * se), "p": float(2 * stats.t.sf(abs(t), df)), "df": df,
                    "partial_r2": float(t * t / (t * t + df)), "note": ""})
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
    """What step 4 hands on. Tables are DataFrames whose empty groups carry a ``note`` saying why; each of the three
    tables at the primary measure has one row per task and Holm over tasks (``p_holm``)."""

    unit: str = "checkpoint"  # the declared primary unit (report.primary.unit): checkpoint or language
    metric: str = ""  # the primary metric's row name as merged (dataset-prefixed when several datasets)
    layers: dict[str, int] = field(default_factory=dict)  # task -> the primary layer
    by_checkpoint: pd.DataFrame = field(default_factory=pd.DataFrame)  # across checkpoints within languages
    across: pd.DataFrame = field(default_factory=pd.DataFrame)  # across languages
    within: pd.DataFrame = field(default_factory=pd.DataFrame)  # checkpoint and language fixed effects
    exploratory_by_checkpoint: pd.DataFrame = field(default_factory=pd.DataFrame)  # every other metric x layer
    exploratory: pd.DataFrame = field(default_factory=pd.DataFrame)  # across languages, every other metric x layer
    exploratory_within: pd.DataFrame = field(default_factory=pd.DataFrame)
    headline: pd.DataFrame = field(default_factory=pd.DataFrame)  # the points at the primary metric and layer
    drift: pd.DataFrame = field(default_factory=pd.DataFrame)  # weight drift per checkpoint (relative L2)
    drift_fits: pd.DataFrame = field(default_factory=pd.DataFrame)  # within languages, with and without drift
    english_fits: pd.DataFrame = field(default_factory=pd.DataFrame)  # with and without the English score
    notes: list[str] = field(default_factory=list)

    @property
    def primary(self) -> pd.DataFrame:
        """The declared primary test's table: :attr:`by_checkpoint` or :attr:`across`."""
        return self.by_checkpoint if self.unit == "checkpoint" else self.across


def _empty_row(base: dict, cols: list[str], note: str) -> dict:
    return {**base, **dict.fromkeys(cols, np.nan), "note": note}


def answer_rq1(points: Points, primary: ReportConfig.Primary, *, n_boot: int = 2000, n_perm: int = 10_000,
               seed: int = 0, alpha: float = ALPHA, drift: dict[str, float] | None = None,
               english: dict[str, float] | None = None) -> RQ1:
    """Step 4: at the declared metric and layer, per task, the test across checkpoints within languages, across
    languages and within both (Holm over tasks in each); the weight-drift and English-score checks there
    (``english``: each checkpoint's English selection score); then every other metric x layer as an exploratory
    family."""
    merged, analysed = points.merged, points.analysed
    unit = getattr(primary, "unit", "checkpoint")
    if not points.relatable:
        return RQ1(unit=unit)
    pm, why = resolve_metric(merged["metric"], primary.metric)
    rq = RQ1(unit=unit, metric=pm or primary.metric, notes=[why] if why else [])
    tasks = sorted(merged["task"].unique())
    rows_c, rows, rows_w = [], [], []
    n_draws = n_perm_for(len(tasks), n_perm, alpha)
    for i, task in enumerate(tasks):
        layers = merged.loc[(merged["task"] == task) & (merged["metric"] == pm), "layer"].unique() if pm else []
        layer = resolve_layer(primary, layers)
        if layer is not None:
            rq.layers[task] = layer
        base = dict(task=task, metric=rq.metric, layer=layer)
        g = analysed[(analysed["task"] == task) & (analysed["metric"] == pm) & (analysed["layer"] == layer)] \
            if pm is not None and layer is not None else analysed.iloc[0:0]
        if g.empty:
            note = (why if pm is None else f"empty: layer {primary.layer} not measured" if layer is None
                    else "empty: every checkpoint of this task fails the model-quality gate")
            rows_c.append(_empty_row(base, CHECKPOINT_COLS, note))
            rows.append(_empty_row(base, ACROSS_COLS, note))
            rows_w.append(_empty_row(base, WITHIN_COLS, note))
            continue
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        rows_c.append({**base, **across_checkpoints(g, n_perm=n_draws, rng=rng, alpha=alpha)})
        rows.append({**base, **across_languages(g, n_perm=n_draws, n_boot=n_boot, rng=rng)})
        rows_w.append({**base, **within_languages(g)})
    for name, data, cols in (("by_checkpoint", rows_c, CHECKPOINT_COLS), ("across", rows, ACROSS_COLS),
                             ("within", rows_w, WITHIN_COLS)):
        table = pd.DataFrame(data, columns=["task", "metric", "layer", *cols])
        table["p_holm"] = holm(table["p"]) if len(data) else []
        setattr(rq, name, table)

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
    if english:  # a checkpoint that learned English less scores lower everywhere, whatever its alignment
        erows = [dict(task=t, metric=rq.metric, layer=lay, **r)
                 for t, lay in rq.layers.items()
                 for r in english_adjusted(analysed[(analysed["task"] == t) & (analysed["metric"] == pm)
                                                    & (analysed["layer"] == lay)], english)]
        rq.english_fits = pd.DataFrame(erows, columns=["task", "metric", "layer", *DRIFT_COLS])

    rq.headline = merged.merge(pd.DataFrame([dict(task=t, layer=lay) for t, lay in rq.layers.items()]),
                               on=["task", "layer"]) if rq.layers else merged.iloc[0:0]
    if pm:
        rq.headline = rq.headline[rq.headline["metric"] == pm]
    prim = {(t, pm, lay) for t, lay in rq.layers.items()}
    is_prim = pd.Series([k in prim for k in zip(analysed["task"], analysed["metric"], analysed["layer"])],
                        index=analysed.index, dtype=bool)
    explo = analysed[~is_prim]
    if len(explo):
        rq.exploratory_by_checkpoint = across_checkpoints_table(explo, n_perm=n_perm, seed=seed + 2, alpha=alpha)
        rq.exploratory = across_languages_table(explo, n_perm=n_perm, n_boot=n_boot, seed=seed + 1, alpha=alpha)
        rq.exploratory_within = within_languages_table(explo)
    return rq
