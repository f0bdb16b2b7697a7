"""The inference tools the RQ1 and RQ2 steps share: Holm's adjustment, the language permutation test, the
language-cluster bootstrap of a correlation, and OLS slopes with fixed effects and cluster-robust SEs.

Every test built on them is calibrated by simulation in ``tests/test_stats.py`` (null data shaped like a run:
languages x checkpoints with language- and checkpoint-level effects).
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
MIN_LANGUAGES = 3
MIN_CHECKPOINTS = 2
MAX_PERM = 200_000  # cap on Monte Carlo permutations per test


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


def n_perm_for(m_tests: int, n_perm: int, alpha: float = ALPHA) -> int:
    """Draws such that the smallest p, times the Holm factor m, stays well under alpha."""
    return int(min(MAX_PERM, max(n_perm, math.ceil(20 * max(m_tests, 1) / alpha))))


# --------------------------------------------------------------------------------- correlation over units
def _rowwise_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of (B, k) arrays; NaN where a row is constant."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    va, vb = (a * a).sum(1), (b * b).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(1) / np.sqrt(va * vb)
    r[(va <= 1e-24) | (vb <= 1e-24)] = np.nan
    return r


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


# ------------------------------------------------------------------------------------ regression with FEs
def _dummies(frame: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    parts = [np.ones((len(frame), 1))]
    for c in cols:
        codes = pd.factorize(frame[c])[0]
        n = codes.max() + 1 if len(codes) else 0
        if n > 1:
            parts.append(np.eye(n)[codes][:, 1:])
    return np.hstack(parts)


def residualize(v: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """The residual of ``v`` after least squares on the columns of ``Z``."""
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
    the rest), t(min G - 1) CI and p, and the partial R^2 of x.

    Two-way SEs follow Cameron, Gelbach & Miller (2011) with CR1 factors."""
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
    xt = residualize(xv, Z)
    sxx = float(xt @ xt)
    if sxx <= 1e-12 * max(float(xv @ xv), 1e-300):
        out["note"] = f"empty: {x} does not vary within the fixed effects"
        return out
    yt = residualize(yv, Z)
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


def p_words(p: float) -> str:
    """What follows 'p ' in a sentence: '< 0.001', '= 0.017' or '= n/a'."""
    if p is None or not np.isfinite(p):
        return "= n/a"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"

