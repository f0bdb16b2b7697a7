"""Statistics for RQ1 (does alignment track zero-shot transfer?) and RQ2 (do
robust objectives help low-resource languages most?).

Inputs are the tidy long frames described in the project (columns
``checkpoint, model, task, method, seed, language, language2, layer, metric,
value, n`` and, for alignment, ``dataset``).

Methods used
------------
* Pearson r / Spearman rho with a *cluster* (language-level) percentile
  bootstrap CI: languages are resampled with replacement and all rows of a
  drawn language are kept (Field & Welsh 2007, "Bootstrapping clustered
  data"); implemented exactly through per-row multiplicity weights.
* Permutation test that shuffles transfer across languages *within* each
  checkpoint (Good 2005, "Permutation, Parametric and Bootstrap Tests"),
  p = (1 + #|stat*| >= |stat|) / (1 + n_perm) (Phipson & Smyth 2010).
* Holm (1979) step-down adjustment across all groups of a table
  (``statsmodels.stats.multitest.multipletests(method="holm")``).
* OLS with language (and method) fixed effects, and a linear mixed model
  with a random intercept per language (statsmodels ``mixedlm``); marginal /
  conditional R^2 of Nakagawa & Schielzeth (2013).
* RQ2: ``gain ~ log(size_gib) * C(method)``; per-method slopes via linear
  contrasts (``t_test``).
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.multitest import multipletests

from .languages import resource_table, to_iso1

SOURCE_LANGUAGE = "en"
PRETRAINED_PREFIX = "pretrained:"

__all__ = [
    "merge_alignment_transfer",
    "correlation_table",
    "fit_ols",
    "fit_mixed",
    "delta_table",
    "delta_correlation",
    "transfer_gain_table",
    "gain_vs_resource",
    "bootstrap_mean_ci",
    "summarize_transfer",
    "plot_alignment_vs_transfer",
    "plot_corr_by_layer",
    "plot_deltas",
    "plot_gain_vs_resource",
    "plain_summary",
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


def _note_join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


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
    al = (al.groupby(["checkpoint", "language", "metric", "layer"], as_index=False)
            .agg(alignment=("value", "mean")))

    out = al.merge(acc, on=["checkpoint", "language"], how="inner")
    out = out.merge(meta.reset_index(), on="checkpoint", how="left")
    missing = set(al["checkpoint"]) - set(acc["checkpoint"])
    if missing:
        warnings.warn(f"{len(missing)} alignment checkpoint(s) without transfer rows dropped",
                      stacklevel=2)
    cols = ["checkpoint", "model", "task", "method", "seed", "language", "metric", "layer",
            "alignment", "transfer_acc", "transfer_en", "transfer_gap", "n_eval"]
    out = out[[c for c in cols if c in out]]
    return out.sort_values(["task", "metric", "layer", "checkpoint", "language"],
                           ignore_index=True)


# --------------------------------------------------------------------------
# 2. correlations
# --------------------------------------------------------------------------
def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def _weighted_corr(X: np.ndarray, Y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Row-wise weighted Pearson; X, Y either (n,) or (B, n); W (B, n)."""
    sw = W.sum(1)
    mx = (W * X).sum(1) / sw
    my = (W * Y).sum(1) / sw
    Xc = X - mx[:, None]
    Yc = Y - my[:, None]
    cov = (W * Xc * Yc).sum(1)
    vx = (W * Xc * Xc).sum(1)
    vy = (W * Yc * Yc).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(vx * vy)
    r[(vx <= 1e-12 * sw) | (vy <= 1e-12 * sw)] = np.nan
    return r


def _weighted_ranks(v: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Average ranks (ties -> mean rank) of v in the sample that repeats row i
    W[b, i] times; returns (B, n) ranks per row."""
    uniq, inv = np.unique(v, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(inv[order])) + 1]
    Wu = np.add.reduceat(W[:, order], starts, axis=1)  # (B, U)
    before = np.cumsum(Wu, axis=1) - Wu
    rank_u = before + (Wu + 1.0) / 2.0
    return rank_u[:, inv]


def _cluster_bootstrap(x, y, clusters, n_boot, rng, chunk=250):
    """Cluster bootstrap (resample clusters with replacement) of r and rho."""
    codes, k = pd.factorize(clusters)[0], len(pd.unique(clusters))
    rs, rhos = [], []
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        counts = rng.multinomial(k, np.full(k, 1.0 / k), size=b).astype(float)
        W = counts[:, codes]
        rs.append(_weighted_corr(x[None, :], y[None, :], W))
        rhos.append(_weighted_corr(_weighted_ranks(x, W), _weighted_ranks(y, W), W))
        done += b
    return np.concatenate(rs), np.concatenate(rhos)


def _perm_test(x, y, blocks, n_perm, rng, chunk=500):
    """Two-sided permutation p for Pearson and Spearman, permuting y within blocks."""
    order = np.argsort(pd.factorize(blocks)[0], kind="stable")
    x, y = x[order], y[order]
    b = pd.factorize(np.asarray(blocks)[order])[0].astype(float)

    def z(v):
        return (v - v.mean()) / v.std()

    zx, zy = z(x), z(y)
    rx, ry = z(stats.rankdata(x)), z(stats.rankdata(y))
    r_obs, rho_obs = np.mean(zx * zy), np.mean(rx * ry)
    ge_r = ge_rho = 0
    done = 0
    tol = 1e-12
    while done < n_perm:
        m = min(chunk, n_perm - done)
        idx = np.argsort(rng.random((m, len(x))) + b[None, :], axis=1)
        ge_r += int(np.sum(np.abs((zx[None, :] * zy[idx]).mean(1)) >= abs(r_obs) - tol))
        ge_rho += int(np.sum(np.abs((rx[None, :] * ry[idx]).mean(1)) >= abs(rho_obs) - tol))
        done += m
    return (1 + ge_r) / (1 + n_perm), (1 + ge_rho) / (1 + n_perm)


def _holm(p: pd.Series) -> pd.Series:
    out = pd.Series(np.nan, index=p.index)
    ok = p.notna()
    if ok.any():
        out[ok] = multipletests(p[ok].to_numpy(), method="holm")[1]
    return out


def correlation_table(merged: pd.DataFrame, *, by: Sequence[str] = ("metric", "layer"),
                      x: str = "alignment", y: str = "transfer_acc", n_boot: int = 2000,
                      n_perm: int = 2000, seed: int = 0, pool_seeds: bool = True,
                      ci: float = 0.95, language_col: str = "language",
                      block_col: str = "checkpoint") -> pd.DataFrame:
    """Pearson/Spearman per group with language-cluster bootstrap CIs,
    within-checkpoint permutation p-values and Holm-adjusted p-values.

    ``task`` is added to the grouping automatically when several tasks are
    present; ``seed`` when ``pool_seeds`` is False.  Groups with fewer than 3
    languages get NaN statistics and a ``note``.
    Columns: keys, n_points, n_languages, n_checkpoints, r, r_lo, r_hi, rho,
    rho_lo, rho_hi, p_perm, p_perm_rho, p_holm, p_holm_rho, note.
    """
    keys = list(by)
    if "task" in merged and "task" not in keys and merged["task"].nunique() > 1:
        keys = ["task"] + keys
    if not pool_seeds and "seed" not in keys:
        keys.append("seed")
    df = merged.dropna(subset=[x, y])
    alpha = (1 - ci) / 2 * 100
    ss = np.random.SeedSequence(seed)
    rows = []
    groups = df.groupby(keys, sort=True, dropna=False) if keys else [((), df)]
    for gkey, g in groups:
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        row = dict(zip(keys, gkey))
        xv, yv = g[x].to_numpy(float), g[y].to_numpy(float)
        langs = g[language_col].to_numpy()
        k = len(pd.unique(langs))
        row.update(n_points=len(g), n_languages=k,
                   n_checkpoints=g[block_col].nunique() if block_col in g else np.nan,
                   r=np.nan, r_lo=np.nan, r_hi=np.nan, rho=np.nan, rho_lo=np.nan,
                   rho_hi=np.nan, p_perm=np.nan, p_perm_rho=np.nan, note="")
        rng = np.random.default_rng(ss.spawn(1)[0])
        if k < 3:
            row["note"] = f"too few languages ({k})"
            rows.append(row)
            continue
        r = _pearson(xv, yv)
        if np.isnan(r):
            row["note"] = "constant x or y"
            rows.append(row)
            continue
        row["r"] = r
        row["rho"] = float(stats.spearmanr(xv, yv)[0])
        if n_boot > 0:
            br, brho = _cluster_bootstrap(xv, yv, langs, n_boot, rng)
            if np.isfinite(br).sum() > 1:
                row["r_lo"], row["r_hi"] = np.nanpercentile(br, [alpha, 100 - alpha])
            if np.isfinite(brho).sum() > 1:
                row["rho_lo"], row["rho_hi"] = np.nanpercentile(brho, [alpha, 100 - alpha])
        if n_perm > 0:
            blocks = g[block_col].to_numpy() if block_col in g else np.zeros(len(g))
            row["p_perm"], row["p_perm_rho"] = _perm_test(xv, yv, blocks, n_perm, rng)
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = _holm(out["p_perm"])
    out["p_holm_rho"] = _holm(out["p_perm_rho"])
    first = keys + ["n_points", "n_languages", "n_checkpoints", "r", "r_lo", "r_hi", "rho",
                    "rho_lo", "rho_hi", "p_perm", "p_perm_rho", "p_holm", "p_holm_rho", "note"]
    return out[first]


# --------------------------------------------------------------------------
# 3. regression models
# --------------------------------------------------------------------------
_FIT_COLS = ["model", "formula", "term", "coef", "se", "ci_lo", "ci_hi", "p", "n",
             "n_languages", "n_checkpoints", "r2", "r2_conditional", "warnings", "note"]


def _fit_row(kind, formula, term, df, **kw) -> pd.DataFrame:
    row = dict(model=kind, formula=formula, term=term, coef=np.nan, se=np.nan,
               ci_lo=np.nan, ci_hi=np.nan, p=np.nan, n=len(df),
               n_languages=df["language"].nunique() if "language" in df else np.nan,
               n_checkpoints=df["checkpoint"].nunique() if "checkpoint" in df else np.nan,
               r2=np.nan, r2_conditional=np.nan, warnings="", note="")
    row.update(kw)
    return pd.DataFrame([row], columns=_FIT_COLS)


def _factor_terms(df: pd.DataFrame, factors: Iterable[str]) -> list[str]:
    return [f"C({f})" for f in factors if f in df and df[f].nunique() > 1]


def _check_one_group(df: pd.DataFrame) -> str:
    bad = [c for c in ("metric", "layer") if c in df and df[c].nunique() > 1]
    return f"expects one metric x layer, got several {bad}" if bad else ""


def _prepare_fit(frame: pd.DataFrame, y: str, x: str, factors: Sequence[str]):
    """(rows with x and y, factor terms, formula, parameter count, note if the frame cannot be fitted)."""
    df = frame.dropna(subset=[x, y])
    terms = _factor_terms(df, factors)
    formula = " + ".join([f"{y} ~ {x}"] + terms)
    n_params = 2 + sum(df[t[2:-1]].nunique() - 1 for t in terms)
    return df, terms, formula, n_params, _check_one_group(df)


def fit_ols(merged_one_metric_layer: pd.DataFrame, *, y: str = "transfer_acc",
            x: str = "alignment", factors: Sequence[str] = ("task", "language", "method"),
            cov_type: str = "nonrobust") -> pd.DataFrame:
    """OLS ``y ~ x + C(language) + C(method)`` (factors with one level dropped).

    With language fixed effects the ``x`` coefficient is a *within-language*
    association (across checkpoints).  Returns one row: coef, se, 95% CI, p,
    n, R^2; failures are reported in ``note`` instead of raised.
    """
    df, terms, formula, n_params, note = _prepare_fit(merged_one_metric_layer, y, x, factors)
    if note:
        return _fit_row("ols", formula, x, df, note=note)
    if len(df) < n_params + 2:
        return _fit_row("ols", formula, x, df,
                        note=f"too few points (n={len(df)}, parameters={n_params})")
    if df[x].nunique() < 2:
        return _fit_row("ols", formula, x, df, note=f"{x} is constant")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            res = smf.ols(formula, data=df).fit(cov_type=cov_type)
            ci = res.conf_int().loc[x]
            out = _fit_row("ols", formula, x, df, coef=res.params[x], se=res.bse[x],
                           ci_lo=ci[0], ci_hi=ci[1], p=res.pvalues[x], r2=res.rsquared)
        except Exception as e:  # noqa: BLE001 - reported, not raised
            out = _fit_row("ols", formula, x, df, note=f"fit failed: {type(e).__name__}: {e}")
    out["warnings"] = "; ".join(sorted({str(m.message) for m in w}))
    if np.isnan(out["se"].iloc[0]) and not out["note"].iloc[0]:
        out["note"] = "coefficient not identifiable (x collinear with fixed effects?)"
    return out


def fit_mixed(merged_one_metric_layer: pd.DataFrame, *, y: str = "transfer_acc",
              x: str = "alignment", factors: Sequence[str] = ("task", "method"),
              group: str = "language", reml: bool = True) -> pd.DataFrame:
    """Linear mixed model ``y ~ x + C(method)`` with a random intercept per
    language (statsmodels ``mixedlm``).  ``r2`` is the marginal and
    ``r2_conditional`` the conditional R^2 (Nakagawa & Schielzeth 2013).
    Same one-row summary as :func:`fit_ols`; never raises for fit problems.
    """
    df, terms, formula, n_params, note = _prepare_fit(merged_one_metric_layer, y, x, factors)
    if note:
        return _fit_row("mixedlm", formula, x, df, note=note)
    n_groups = df[group].nunique() if group in df else 0
    if n_groups < 3 or len(df) < n_params + 3:
        return _fit_row("mixedlm", formula, x, df,
                        note=f"too few points/groups (n={len(df)}, {group}s={n_groups})")
    if df[x].nunique() < 2:
        return _fit_row("mixedlm", formula, x, df, note=f"{x} is constant")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            res = smf.mixedlm(formula, data=df, groups=df[group]).fit(reml=reml)
            ci = res.conf_int().loc[x]
            fe = res.fe_params
            exog = res.model.exog[:, : len(fe)]
            var_f = float(np.var(exog @ fe.to_numpy()))
            var_re = float(np.asarray(res.cov_re)[0, 0])
            var_e = float(res.scale)
            tot = var_f + var_re + var_e
            note = "" if res.converged else "did not converge"
            out = _fit_row("mixedlm", formula, x, df, coef=fe[x], se=res.bse[x],
                           ci_lo=ci[0], ci_hi=ci[1], p=res.pvalues[x],
                           r2=var_f / tot if tot > 0 else np.nan,
                           r2_conditional=(var_f + var_re) / tot if tot > 0 else np.nan,
                           note=note)
        except Exception as e:  # noqa: BLE001
            out = _fit_row("mixedlm", formula, x, df,
                           note=f"fit failed: {type(e).__name__}: {e}")
    out["warnings"] = "; ".join(sorted({str(m.message) for m in w}))
    return out


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


def delta_correlation(delta: pd.DataFrame, *, by: Sequence[str] = ("metric", "layer"),
                      **kwargs) -> pd.DataFrame:
    """:func:`correlation_table` of ``delta_transfer`` on ``delta_alignment``
    (language-cluster bootstrap; permutation across languages within method)."""
    kwargs.setdefault("x", "delta_alignment")
    kwargs.setdefault("y", "delta_transfer")
    kwargs.setdefault("block_col", "method")
    kwargs["pool_seeds"] = True
    return correlation_table(delta, by=by, **kwargs)


# --------------------------------------------------------------------------
# 5. RQ2: gain vs. pre-training resource size
# --------------------------------------------------------------------------
def transfer_gain_table(transfer: pd.DataFrame, *, baseline: str = "baseline",
                        metric: str = "score") -> pd.DataFrame:
    """Per (model, task, language, method != baseline): seed-mean task score
    minus the baseline's seed mean, as ``gain`` (standard setting only)."""
    tr = transfer.copy()
    if "language2" in tr:
        tr = tr[_blank(tr["language2"])]
    tr = tr[tr["metric"] == metric]
    tr["language"] = _norm_languages(tr["language"])
    keys = [c for c in ("model", "task", "language") if c in tr]
    m = tr.groupby(keys + ["method"], as_index=False).agg(acc=("value", "mean"),
                                                         n_seeds=("seed", "nunique"))
    base = m[m["method"] == baseline].drop(columns="method")
    d = m[m["method"] != baseline].merge(base, on=keys, suffixes=("", "_baseline"))
    d["gain"] = d["acc"] - d["acc_baseline"]
    return d.reset_index(drop=True)


def gain_vs_resource(transfer_or_alignment_deltas: pd.DataFrame,
                     resource: pd.DataFrame | None = None, *, gain_col: str | None = None,
                     size_col: str = "size_gib", cov_type: str = "nonrobust",
                     exclude: Sequence[str] = (SOURCE_LANGUAGE,)):
    """Regress the gain on log(CC-100 size) x method: ``gain ~ np.log(size_gib) *
    C(method)``.  Returns ``(slopes, frame)``: the slope of each method (plus a
    common slope from ``gain ~ np.log(size_gib) + C(method)``, method
    "pooled") with SE, 95% CI, p and Holm-adjusted p across methods, and the
    merged frame for plotting.  Languages without a size are dropped and named
    in ``note``.  A negative slope means larger gains for lower-resource
    languages.  ``gain_col`` defaults to ``gain``, else ``delta_transfer``,
    else ``delta_alignment``.
    """
    df = transfer_or_alignment_deltas.copy()
    if gain_col is None:
        gain_col = next((c for c in ("gain", "delta_transfer", "delta_alignment") if c in df),
                        None)
        if gain_col is None:
            raise ValueError("no gain column (gain / delta_transfer / delta_alignment)")
    if gain_col == "delta_transfer" and {"metric", "layer"} & set(df.columns):
        keys = [c for c in ("model", "task", "language", "method") if c in df]
        df = df.drop_duplicates(subset=keys)  # transfer delta repeats over metric x layer
    elif {"metric", "layer"} & set(df.columns):
        n_grp = df.groupby([c for c in ("metric", "layer") if c in df]).ngroups
        if n_grp > 1:
            raise ValueError(f"{gain_col}: filter to one metric x layer first ({n_grp} found)")
    if resource is None:
        resource = resource_table()
    res_df = resource.reset_index() if "language" not in resource.columns else resource
    df["language"] = _norm_languages(df["language"])
    df = df[~df["language"].isin(exclude)]
    df = df.drop(columns=[size_col], errors="ignore").merge(
        res_df[["language", size_col]], on="language", how="left")
    df = df.rename(columns={gain_col: "gain"}) if gain_col != "gain" else df
    bad = df[size_col].isna() | ~(df[size_col] > 0)
    dropped = sorted(df.loc[bad, "language"].unique())
    df = df[~bad & df["gain"].notna()].reset_index(drop=True)
    df["log_size"] = np.log(df[size_col])
    note = f"dropped (no CC-100 size): {', '.join(dropped)}" if dropped else ""

    methods = sorted(df["method"].unique()) if len(df) else []
    cols = ["method", "slope", "se", "ci_lo", "ci_hi", "p", "p_holm", "slope_per_10x",
            "n_points", "n_languages", "gain_col", "note"]

    def empty(n):
        return pd.DataFrame([dict(method=m, n_points=len(df), n_languages=df["language"].nunique()
                                  if len(df) else 0, gain_col=gain_col, note=n)
                             for m in (methods or ["(none)"])], columns=cols)

    if len(df) == 0 or df["language"].nunique() < 3:
        return empty(_note_join(note, "too few languages with a size")), df
    rows = []
    data = df.rename(columns={size_col: "size_gib"})
    size_term = "np.log(size_gib)"
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            if len(methods) > 1:
                res = smf.ols(f"gain ~ {size_term} * C(method)", data=data).fit(cov_type=cov_type)
                names = list(res.params.index)
                for m in methods:
                    L = np.zeros(len(names))
                    L[names.index(size_term)] = 1.0
                    inter = f"{size_term}:C(method)[T.{m}]"
                    if inter in names:
                        L[names.index(inter)] = 1.0
                    t = res.t_test(L)
                    lo, hi = np.asarray(t.conf_int()).ravel()
                    sub = data[data["method"] == m]
                    rows.append(dict(method=m, slope=float(np.ravel(t.effect)[0]),
                                     se=float(np.ravel(t.sd)[0]), ci_lo=lo, ci_hi=hi,
                                     p=float(np.ravel(t.pvalue)[0]), n_points=len(sub),
                                     n_languages=sub["language"].nunique()))
                pooled = smf.ols(f"gain ~ {size_term} + C(method)", data=data).fit(
                    cov_type=cov_type)
            else:
                pooled = smf.ols(f"gain ~ {size_term}", data=data).fit(cov_type=cov_type)
            ci = pooled.conf_int().loc[size_term]
            pooled_row = dict(method="pooled" if len(methods) > 1 else methods[0],
                              slope=pooled.params[size_term], se=pooled.bse[size_term],
                              ci_lo=ci[0], ci_hi=ci[1], p=pooled.pvalues[size_term],
                              n_points=len(data), n_languages=data["language"].nunique())
        except Exception as e:  # noqa: BLE001
            return empty(_note_join(note, f"fit failed: {type(e).__name__}: {e}")), df
    out = pd.DataFrame(rows + [pooled_row])
    per_method = out["method"] != "pooled"
    out["p_holm"] = np.nan
    if per_method.sum() > 1:
        out.loc[per_method, "p_holm"] = _holm(out.loc[per_method, "p"])
    else:
        out.loc[per_method, "p_holm"] = out.loc[per_method, "p"]
    out["slope_per_10x"] = out["slope"] * math.log(10)
    out["gain_col"] = gain_col
    msgs = "; ".join(sorted({str(m.message) for m in w}))
    out["note"] = _note_join(note, f"warnings: {msgs}" if msgs else "")
    return out[cols], df


# --------------------------------------------------------------------------
# 6. transfer summaries
# --------------------------------------------------------------------------
def bootstrap_mean_ci(values, n_boot: int = 2000, seed: int = 0,
                      ci: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap CI of the mean; (mean, nan, nan) if n < 2.
    With very few values (e.g. 3 seeds) the percentile CI is too narrow."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(v.mean())
    if len(v) < 2 or n_boot <= 0:
        return (mean, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    boots = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    a = (1 - ci) / 2 * 100
    lo, hi = np.percentile(boots, [a, 100 - a])
    return (mean, float(lo), float(hi))


def summarize_transfer(transfer: pd.DataFrame, *, metric: str = "score",
                       n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (task, method, language): mean, sd and bootstrap 95% CI over seeds
    (``kind="language"``), plus per (task, method) the XTREME-style average
    over languages of the per-language score, computed per seed and then
    summarised over seeds, both including English (``kind="avg_incl_en"``,
    language "AVG (incl. en)") and over target languages only
    (``kind="avg_excl_en"``, language "AVG (excl. en)")."""
    tr = transfer.copy()
    if "language2" in tr:
        tr = tr[_blank(tr["language2"])]
    tr = tr[tr["metric"] == metric]
    tr["language"] = _norm_languages(tr["language"])
    base = [c for c in ("model", "task", "method") if c in tr]
    per_seed = tr.groupby(base + ["language", "seed"], as_index=False)["value"].mean()

    def summ(g: pd.DataFrame) -> pd.Series:
        m, lo, hi = bootstrap_mean_ci(g["value"], n_boot=n_boot, seed=seed)
        return pd.Series(dict(mean=m, sd=g["value"].std(ddof=1), n_seeds=g["seed"].nunique(),
                              ci_lo=lo, ci_hi=hi))

    parts = []
    lang = per_seed.groupby(base + ["language"]).apply(summ, include_groups=False).reset_index()
    lang["kind"] = "language"
    parts.append(lang)
    for kind, label, keep in (("avg_incl_en", "AVG (incl. en)", None),
                              ("avg_excl_en", "AVG (excl. en)", SOURCE_LANGUAGE)):
        ps = per_seed if keep is None else per_seed[per_seed["language"] != keep]
        avg = ps.groupby(base + ["seed"], as_index=False).agg(
            value=("value", "mean"), n_languages=("language", "nunique"))
        s = avg.groupby(base).apply(summ, include_groups=False).reset_index()
        s["n_languages"] = avg.groupby(base)["n_languages"].max().to_numpy()
        s["language"], s["kind"] = label, kind
        parts.append(s)
    out = pd.concat(parts, ignore_index=True)
    out["n_seeds"] = out["n_seeds"].astype(int)
    cols = base + ["kind", "language", "mean", "sd", "ci_lo", "ci_hi", "n_seeds", "n_languages"]
    return out[[c for c in cols if c in out]].sort_values(base + ["kind", "language"],
                                                          ignore_index=True)


# --------------------------------------------------------------------------
# 7. plots
# --------------------------------------------------------------------------
def _plt():
    import matplotlib.pyplot as plt
    return plt


def plot_alignment_vs_transfer(merged_one_metric_layer: pd.DataFrame, *, x: str = "alignment",
                               y: str = "transfer_acc", hue: str = "method",
                               annotate: bool = False):
    """Scatter of transfer vs. alignment with an OLS fit (95% band) per method."""
    import seaborn as sns
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
    import seaborn as sns
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
    import seaborn as sns
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


def plain_summary(corr_table: pd.DataFrame, ols_row, gain_table, n_checkpoints: int,
                  n_languages: int, n_seeds: int, *, alpha: float = 0.05) -> str:
    """Markdown answer to RQ1/RQ2 with effect sizes, CIs and limitations."""
    L = ["## Summary", "",
         f"Data: {n_checkpoints} fine-tuned checkpoints, {n_languages} target languages, "
         f"{n_seeds} seed(s) per method.", "", "### RQ1: does alignment track transfer?", ""]
    ct = corr_table if corr_table is not None else pd.DataFrame()
    valid = ct[ct["r"].notna()] if "r" in ct else ct.iloc[0:0]
    n_tests = int(valid["p_holm"].notna().sum()) if "p_holm" in valid else 0
    if valid.empty:
        L.append("No correlation could be estimated (too few languages or no overlapping data).")
    else:
        order = valid.assign(_p=valid["p_holm"].fillna(1.0), _a=-valid["r"].abs())
        best = order.sort_values(["_p", "_a"]).iloc[0]
        where = ", ".join(f"{k}={best[k]}" for k in ("task", "metric", "layer", "seed")
                          if k in best.index)
        eff = (f"Pearson r = {_fmt(best['r'])} (95% CI {_fmt(best['r_lo'])} to "
               f"{_fmt(best['r_hi'])}, resampling languages), Spearman rho = "
               f"{_fmt(best['rho'])} (CI {_fmt(best['rho_lo'])} to {_fmt(best['rho_hi'])}); "
               f"permutation p = {_fmt_p(best['p_perm'])}, Holm-adjusted p = "
               f"{_fmt_p(best['p_holm'])} over {n_tests} metric x layer tests; "
               f"{int(best['n_points'])} points from {int(best['n_languages'])} languages.")
        if not np.isfinite(best["p_holm"]) or best["p_holm"] > alpha:
            L.append(f"**No significant relation between alignment and transfer was found** "
                     f"after Holm correction (all adjusted p > {alpha}). The strongest "
                     f"candidate ({where}) has {eff} A null here means the data cannot "
                     f"distinguish the relation from zero; it is not evidence of no relation, "
                     f"especially with wide confidence intervals.")
        else:
            n_sig = int((valid["p_holm"] <= alpha).sum())
            direction = "higher" if best["r"] > 0 else "lower"
            L.append(f"Alignment is significantly associated with transfer in {n_sig} of "
                     f"{n_tests} metric x layer combinations. The strongest ({where}): {eff} "
                     f"Languages with {direction} alignment to English tend to have higher "
                     f"zero-shot task score. This is a correlation across languages; language "
                     f"properties (e.g. pre-training data size, script) can drive both.")
    L.append("")
    row = None
    if isinstance(ols_row, pd.DataFrame) and len(ols_row):
        row = ols_row.iloc[0]
    elif isinstance(ols_row, pd.Series):
        row = ols_row
    if row is not None:
        kind = "mixed model (random intercept per language)" if row.get("model") == "mixedlm" \
            else "regression with language fixed effects"
        if not np.isfinite(row.get("coef", np.nan)):
            L.append(f"The {kind} could not be estimated: {row.get('note') or 'unknown reason'}.")
        else:
            sig = row["p"] <= alpha if np.isfinite(row["p"]) else False
            L.append(f"Within languages ({kind}, `{row.get('formula', '')}`): a 0.1 increase in "
                     f"alignment goes with a {_fmt(row['coef'] * 0.1 * 100, 1)} point change in "
                     f"task score (coef {_fmt(row['coef'], 3)}, 95% CI {_fmt(row['ci_lo'], 3)} to "
                     f"{_fmt(row['ci_hi'], 3)}, p = {_fmt_p(row['p'])}, n = {int(row['n'])}, "
                     f"R² = {_fmt(row.get('r2', np.nan))}). "
                     + ("The within-language association is significant (single test, "
                        "not multiplicity-adjusted)." if sig else
                        "There is no significant within-language association: across "
                        "checkpoints, changes in alignment do not detectably predict changes "
                        "in transfer."))
            if row.get("note"):
                L.append(f"(Note: {row['note']}.)")
    L += ["", "### RQ2: do robust objectives help low-resource languages most?", ""]
    gt = gain_table
    if gt is None or len(gt) == 0 or "slope" not in gt or gt["slope"].notna().sum() == 0:
        note = "" if gt is None or "note" not in gt or len(gt) == 0 else gt["note"].iloc[0]
        L.append("The gain-vs-resource regression could not be estimated"
                 + (f" ({note})." if note else "."))
    else:
        pts = "gain" in str(gt["gain_col"].iloc[0]) or "transfer" in str(gt["gain_col"].iloc[0])
        unit = " score points" if pts else " (units of the gain)"
        scale = 100.0 if pts else 1.0
        L.append("Slope of the gain over the baseline against log CC-100 size, per 10x more "
                 "pre-training data (negative = larger gains for lower-resource languages):")
        L.append("")
        any_sig = False
        for _, r in gt.iterrows():
            if not np.isfinite(r["slope"]):
                continue
            p_use = r["p_holm"] if np.isfinite(r.get("p_holm", np.nan)) else r["p"]
            sig = np.isfinite(p_use) and p_use <= alpha
            any_sig |= bool(sig and r["method"] != "pooled")
            verdict = ("gains shrink with more data (helps low-resource most)" if sig and
                       r["slope"] < 0 else "gains grow with more data" if sig else
                       "no detectable dependence on resource size")
            k = math.log(10) * scale
            L.append(f"- {r['method']}: {_fmt(r['slope'] * k, 2)}{unit} per 10x "
                     f"(95% CI {_fmt(r['ci_lo'] * k, 2)} to {_fmt(r['ci_hi'] * k, 2)}, "
                     f"p = {_fmt_p(r['p'])}"
                     + (f", Holm p = {_fmt_p(r['p_holm'])}" if r["method"] != "pooled" else "")
                     + f"; {int(r['n_points'])} points): {verdict}.")
        if not any_sig:
            L += ["", "No method shows a significant dependence of its gain on pre-training "
                  "resource size, so the data do not support the claim that robust training "
                  "helps low-resource languages most."]
        if isinstance(gt.get("note"), pd.Series) and gt["note"].iloc[0]:
            L += ["", f"Note: {gt['note'].iloc[0]}."]
    L += ["", "### What these data cannot say", "",
          "- Only one pre-trained encoder was studied; the results may not hold for other "
          "models or sizes.",
          "- The offline protocol trains (and selects) on part of the English dev set, so "
          "English dev scores are not a clean held-out estimate and the transfer gap inherits "
          "that bias.",
          "- The analysis is correlational: alignment is measured, not manipulated, so it "
          "cannot show that alignment causes transfer.",
          f"- With {n_languages} languages and {n_seeds} seed(s) the intervals are wide; "
          "resource size is confounded with script, family and test-set quality.",
          "- CC-100 sizes are the published XLM-R Table 6 numbers (some missing or doubtful; "
          "see `xltlib.languages`)."]
    return "\n".join(L) + "\n"
