"""Step 5 of the analysis, RQ2: does robust training improve *alignment* where the low-resource languages are?

**Primary: alignment gains on Tatoeba** (:func:`alignment_gain_table`). Alignment needs no task data, so it is
measured on every Tatoeba language with a CC-100 size (:func:`~xltlib.data.languages.resource_table`) that was
scored at the common pool size (retrieval accuracy falls with the pool, so languages on other pools are left out
and named). Per task and method, at the declared primary metric and layer (``report.primary``), the gain of each
checkpoint that passes the gate over

* the **baseline** at the same seed (does the method align better than plain fine-tuning?), and
* the **pre-trained** encoder (does fine-tuning with the method raise alignment at all, or only lose less of it
  than the baseline?),

one value per (seed, language). Two numbers per row: the mean gain over languages and the slope of the gain on
log10(CC-100 size) (negative = larger gains for lower-resource languages; the RQ2 test, Holm across the rows of a
reference). The languages are the sample and the checkpoints (seeds) the clustered unit; sentences are not resampled:
a language's sentence-sampling noise is part of its language and seed residuals (the per-sentence outcomes that newer
alignment rows keep are not needed for this estimand; languages that share English sentences are treated as
independent, an approximation). Gains follow ``g[s, l] = m_l + d_s,l`` - a language part
shared by every seed and a seed part shared by every language (a seed's overall shift, its own slope over
languages, noise) - and the variance of either estimate (mean or slope, a linear contrast ``w`` over languages of
the seed-mean gains) is estimated by its two strata (:func:`seeds_by_languages`): the spread of the per-seed
estimates (S - 1 df) plus the language residual of the seed means (L - p df), with t quantiles (S - 1 df when the
seed part is the larger, else Satterthwaite's). An arm with fewer than
:data:`MIN_SEEDS` matched seeds gets its estimate and "too few seeds for an interval". Calibrated on simulated nulls
at real sizes (61 languages x 3-5 seeds, language effects, seed shocks and seed-specific slopes on size) in
``tests/test_rq2.py``.

**Secondary: transfer gains** (:func:`gain_slopes`) over the languages the tasks score. Gains are method minus
baseline at the *same seed* (same task, language); per method, the seed-mean gains are averaged per language (task
intercepts kept as task shares), so a language scored in two tasks counts once, and regressed on log10(CC-100
size): OLS, t(L - k). Seed variance is inside the residual. Holm across methods.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from xltlib.analysis.gate import Gate
from xltlib.analysis.inference import MIN_LANGUAGES, holm, residualize
from xltlib.analysis.merge import PRETRAINED_PREFIX, Points, delta_table, norm_languages
from xltlib.analysis.rq1 import resolve_layer
from xltlib.analysis.score import SOURCE, score_rows
from xltlib.config.schema import ReportConfig
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


# ------------------------------------------------------------------ primary: alignment gains on Tatoeba
MIN_SEEDS = 3  # fewer matched seeds: no interval (two seeds do not estimate a seed variance)
MIN_POOL = 100  # sentences per language: retrieval among fewer candidates says little
REFERENCES = ("baseline", "pretrained")
ALIGN_RQ2_ESTIMAND = ("the change in a checkpoint's alignment to English (primary metric and layer) over the "
                      "baseline at the same seed, or over the pre-trained encoder, per Tatoeba language: its mean "
                      "over languages, and its slope per 10x more CC-100 pre-training data")
ALIGN_COLS = ["task", "method", "reference", "metric", "layer", "pool", "n_languages", "n_seeds", "mean_gain",
              "mean_ci_lo", "mean_ci_hi", "mean_df", "mean_p", "mean_p_holm", "slope_per_10x", "slope_ci_lo",
              "slope_ci_hi", "slope_df", "slope_p", "slope_p_holm", "note"]
TOO_FEW_SEEDS = "too few seeds for an interval"


def seeds_by_languages(gains: np.ndarray, x: np.ndarray | None = None, *, level: float = 0.95) -> dict:
    """Estimate, SE and t interval of a contrast over languages of seed x language gains (see the module
    docstring): the mean over languages (``x`` None) or the OLS slope on ``x``.

    ``gains`` is [S, L], complete. With ``w`` the contrast (the row of (X'X)^-1 X' of the coefficient) the estimate
    is the mean over seeds of ``gains[s] @ w``, and its variance ``A + B``: A = s2_L |w|^2 with s2_L the residual
    variance of the seed-mean gains over languages (L - p df: the language effects, plus the noise / S), B = the
    variance of the per-seed estimates / S (S - 1 df: seed shocks and slopes, plus the noise; the language effects
    cancel). The noise is counted in both, so the variance errs high by at most noise / S. Degrees of freedom:
    S - 1 when B is the larger part, else Satterthwaite's. Subtracting the double-counted noise (the seed x language
    residual) and using Satterthwaite's df throughout rejected a true null 7-9% of the time at 3 seeds in the
    calibration (``tests/test_rq2.py``); this rule stays at or under 5.5%."""
    G = np.asarray(gains, dtype=float)
    S, L = G.shape
    X = np.ones((L, 1)) if x is None else np.column_stack([np.ones(L), np.asarray(x, dtype=float)])
    p = X.shape[1]
    out = dict(estimate=math.nan, se=math.nan, ci_lo=math.nan, ci_hi=math.nan, df=math.nan, p=math.nan, note="")
    if L - p < 1:
        out["note"] = f"empty: {L} languages for {p} parameters"
        return out
    if x is not None and np.ptp(X[:, 1]) <= 1e-12:
        out["note"] = "empty: the languages' sizes do not vary"
        return out
    w = np.linalg.solve(X.T @ X, X.T)[-1]
    per_seed = G @ w
    est = float(per_seed.mean())
    out["estimate"] = est
    if S < MIN_SEEDS:
        out["note"] = f"{TOO_FEW_SEEDS} ({S} matched seed(s), at least {MIN_SEEDS})"
        return out
    gbar = G.mean(0)
    beta, *_ = np.linalg.lstsq(X, gbar, rcond=None)
    r = gbar - X @ beta
    df_a, df_b = L - p, S - 1
    a = float(r @ r) / df_a * float(w @ w)
    b = float(np.var(per_seed, ddof=1)) / S
    var = a + b
    if not var > 0:
        out["note"] = "empty: no variation left to estimate a variance from (the gains are fitted exactly)"
        return out
    df = float(df_b) if b > a else var * var / (a * a / df_a + b * b / df_b)
    se = math.sqrt(var)
    t = float(stats.t.ppf(0.5 + level / 2, df))
    out.update(se=se, ci_lo=est - t * se, ci_hi=est + t * se, df=df, p=float(2 * stats.t.sf(abs(est) / se, df)))
    return out


def is_pretrained(rows: pd.DataFrame) -> pd.Series:
    """True for the pre-trained encoder's alignment rows."""
    ck = rows["checkpoint"].astype(str).str.startswith(PRETRAINED_PREFIX)
    return ck | (rows["method"] == "pretrained") if "method" in rows else ck


def tatoeba_rows(alignment: pd.DataFrame, primary: ReportConfig.Primary, *,
                 dataset: str = "tatoeba") -> tuple[pd.DataFrame, int | None, list[str]]:
    """The rows of one dataset at the primary metric and layer, languages as ISO 639-1 codes with their CC-100
    size (``size_gib``, NaN when the table has none): (rows, layer, notes)."""
    a = alignment
    if "dataset" in a:
        a = a[a["dataset"] == dataset]
    a = a[(a["metric"] == primary.metric) & (a["language"] != "all")]
    if a.empty:
        return a, None, [f"RQ2 on alignment: no {dataset} rows of {primary.metric}"]
    layer = resolve_layer(primary, a["layer"].unique())
    if layer is None:
        return a.iloc[0:0], None, [f"RQ2 on alignment: layer {primary.layer} of {primary.metric} was not measured"]
    a = a[a["layer"] == layer].copy()
    with warnings.catch_warnings():  # codes the table lacks are named by common_pool_languages' note
        warnings.simplefilter("ignore")
        a["language"] = norm_languages(a["language"])
    sizes = resource_table()["size_gib"]
    a["size_gib"] = a["language"].map(sizes).astype(float)
    return a[a["language"] != SOURCE], int(layer), []


def common_pool_languages(rows: pd.DataFrame, *, min_pool: int = MIN_POOL) -> tuple[pd.DataFrame, int, list[str]]:
    """The rows of the languages scored on the common pool (the pool size most languages share) with a CC-100
    size: (rows, pool, notes naming what was left out)."""
    notes = []
    no_size = sorted(rows.loc[~(rows["size_gib"] > 0), "language"].unique())
    if no_size:
        notes.append(f"{len(no_size)} language(s) without a CC-100 size left out: {', '.join(no_size)}")
    rows = rows[rows["size_gib"] > 0]
    if rows.empty:
        return rows, 0, notes
    if "n" not in rows:
        return rows, 0, notes + ["no pool size recorded (column n): pools assumed equal"]
    per_lang = rows.groupby("language")["n"].max()
    pool = int(per_lang.value_counts().sort_index(ascending=False).idxmax())
    off = sorted(per_lang.index[per_lang != pool])
    if off:
        notes.append(f"{len(off)} language(s) scored on another pool than the common {pool} left out: "
                     + ", ".join(off))
    if pool < min_pool:
        notes.append(f"the common pool ({pool} sentences) is below {min_pool}: too few for retrieval")
        return rows.iloc[0:0], pool, notes
    return rows[rows["language"].isin(per_lang.index[per_lang == pool])], pool, notes


def alignment_gains(rows: pd.DataFrame, failed: set[tuple[str, str]] = frozenset(), *, reference: str,
                    baseline: str = "baseline") -> pd.DataFrame:
    """Per (task, method, seed, language): the fine-tuned checkpoint's alignment minus the reference's - the
    ``baseline`` at the same task and seed, or the ``pretrained`` encoder (of the same model). Checkpoints that
    fail the gate (``failed``: (task, checkpoint)) are left out, and so are their seed-matched partners."""
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    pre = is_pretrained(rows)
    tuned = rows[~pre]
    if failed:
        tuned = tuned[[(t, c) not in failed for t, c in zip(tuned["task"], tuned["checkpoint"])]]
    model = ["model"] if "model" in rows else []
    cols = ["task", "method", "seed", "language", *model]
    tuned = tuned.groupby(cols, as_index=False)["value"].mean()
    if reference == "baseline":
        ref = tuned[tuned["method"] == baseline].drop(columns="method").rename(columns={"value": "reference"})
        out = tuned[tuned["method"] != baseline].merge(ref, on=["task", "seed", "language", *model])
    else:
        ref = rows[pre].groupby(["language", *model], as_index=False)["value"].mean()
        out = tuned.merge(ref.rename(columns={"value": "reference"}), on=["language", *model])
    out["gain"] = out["value"] - out["reference"]
    return out[["task", "method", "seed", "language", "value", "reference", "gain"]]


def alignment_gain_table(alignment: pd.DataFrame, primary: ReportConfig.Primary,
                         failed: set[tuple[str, str]] = frozenset(), *, min_pool: int = MIN_POOL,
                         baseline: str = "baseline", level: float = 0.95
                         ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """RQ2's primary table: per (task, method, reference) the mean alignment gain over the Tatoeba languages with
    a CC-100 size on the common pool, and its slope per 10x CC-100 size (:func:`seeds_by_languages`); Holm within
    each reference. Returns (table, the per (task, method, reference, language) seed-mean gains, notes)."""
    rows, layer, notes = tatoeba_rows(alignment, primary)
    rows, pool, pool_notes = common_pool_languages(rows, min_pool=min_pool) if len(rows) else (rows, 0, [])
    notes += [f"RQ2 on alignment: {n}" for n in pool_notes]
    size = rows.groupby("language")["size_gib"].first() if len(rows) else pd.Series(dtype=float)
    out, frames = [], []
    for reference in REFERENCES:
        gains = alignment_gains(rows, failed, reference=reference, baseline=baseline) if len(rows) else pd.DataFrame()
        if gains.empty:
            continue
        for (task, method), g in gains.groupby(["task", "method"], sort=True):
            wide = g.pivot_table(index="seed", columns="language", values="gain", aggfunc="mean")
            complete = wide.dropna(axis=1)
            row = dict(task=task, method=method, reference=reference, metric=primary.metric, layer=layer, pool=pool,
                       n_languages=complete.shape[1], n_seeds=complete.shape[0])
            note = []
            if complete.shape[1] < wide.shape[1]:
                note.append(f"{wide.shape[1] - complete.shape[1]} language(s) not scored at every seed left out")
            if complete.shape[1] < MIN_LANGUAGES:
                note.insert(0, f"empty: {complete.shape[1]} language(s), at least {MIN_LANGUAGES} needed")
                out.append({**row, "note": "; ".join(note)})
                continue
            G = complete.to_numpy(float)
            logsize = np.log10(size.reindex(complete.columns).to_numpy(float))
            mean = seeds_by_languages(G, level=level)
            slope = seeds_by_languages(G, logsize, level=level)
            for fit in (slope, mean):
                if fit["note"] and fit["note"] not in note:
                    note.insert(0, fit["note"])
            out.append({**row, "mean_gain": mean["estimate"], "mean_ci_lo": mean["ci_lo"], "mean_ci_hi": mean["ci_hi"],
                        "mean_df": mean["df"], "mean_p": mean["p"], "slope_per_10x": slope["estimate"],
                        "slope_ci_lo": slope["ci_lo"], "slope_ci_hi": slope["ci_hi"], "slope_df": slope["df"],
                        "slope_p": slope["p"], "note": "; ".join(note)})
            frames.append(pd.DataFrame(dict(task=task, method=method, reference=reference,
                                            language=complete.columns, gain=G.mean(0), n_seeds=len(G),
                                            size_gib=10 ** logsize, log10_size=logsize)))
    table = pd.DataFrame(out, columns=ALIGN_COLS)
    for col, holm_col in (("slope_p", "slope_p_holm"), ("mean_p", "mean_p_holm")):
        for reference in REFERENCES:
            at = table["reference"] == reference
            if at.any():
                table.loc[at, holm_col] = holm(table.loc[at, col].to_numpy(float))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return table, frame, notes


@dataclass
class RQ2:
    """What step 5 hands on."""

    alignment: pd.DataFrame = field(default_factory=pd.DataFrame)  # primary: Tatoeba alignment gains, ALIGN_COLS
    alignment_frame: pd.DataFrame = field(default_factory=pd.DataFrame)  # their seed-mean gain per language (plots)
    slopes: pd.DataFrame = field(default_factory=pd.DataFrame)  # secondary: task-score gain vs log10 size, per method
    frame: pd.DataFrame = field(default_factory=pd.DataFrame)  # the (method, task, language) transfer gains fitted
    delta: pd.DataFrame = field(default_factory=pd.DataFrame)  # seed-mean method - baseline per point (plots)
    notes: list[str] = field(default_factory=list)


def answer_rq2(points: Points, gate: Gate, alignment: pd.DataFrame | None = None,
               primary: ReportConfig.Primary | None = None, *, min_pool: int = MIN_POOL) -> RQ2:
    """Step 5: on the checkpoints that pass the gate, the alignment gains on Tatoeba over the baseline and over the
    pre-trained encoder at the primary metric and layer (:func:`alignment_gain_table`; needs the ``alignment`` rows
    and ``primary``), then the task score's seed-matched gains over the baseline against pre-training size."""
    rq = RQ2()
    if alignment is not None and len(alignment) and primary is not None:
        rq.alignment, rq.alignment_frame, notes = alignment_gain_table(alignment, primary, gate.failed,
                                                                       min_pool=min_pool)
        rq.notes += notes
    if not points.relatable:
        return rq
    scores = score_rows(gate.kept)
    methods = set(scores["method"]) if len(scores) else set()
    if not ("baseline" in methods and len(methods) > 1):
        rq.notes.append("RQ2 on transfer and the method comparison need the baseline and at least one other method "
                        "among the checkpoints that pass the model-quality gate.")
        return rq
    gains = matched_gains(scores)
    if gains.attrs.get("n_unmatched"):
        rq.notes.append(f"RQ2: {gains.attrs['n_unmatched']} (task, language, method, seed) score(s) without a "
                        "baseline at the same seed (missing or excluded by the gate) were left out.")
    rq.slopes, rq.frame = gain_slopes(gains)
    analysed = points.analysed
    if "baseline" in set(analysed["method"]) and analysed["method"].nunique() > 1:
        rq.delta = delta_table(analysed)
    return rq
