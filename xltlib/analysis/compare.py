"""Step 2 of the analysis: each robust method against the baseline, on the task score of the target languages
and on English accuracy under attack.

The estimate is the mean over target languages (or ordered language pairs, generalized setting) of the method's
score minus the baseline's at the same seed, with a paired bootstrap CI over test examples and seeds when rows
carry per-example values (``per_example``), else over languages and seeds (:func:`paired_diff_ci`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from xltlib.analysis.gate import Gate, drop_failed
from xltlib.analysis.score import SCORE, SOURCE, score_rows, standard_rows

MVB_ESTIMAND = "mean over target languages of the method's score minus the baseline's (seed-matched)"
MVB_COLS = ["task", "setting", "method", "n_languages", "n_seeds", "baseline", "score", "diff", "ci_lo", "ci_hi",
            "df", "resampled", "note"]
ROBUST_ACCURACIES = ("robust_acc_clean", "robust_acc_pgd_eps", "robust_acc_pgd_2eps", "robust_acc_synonym",
                     "robust_acc_noise_sigma")


def _paired_values(g: pd.DataFrame, method: str, baseline: str, unit: str):
    """(units, seeds, method matrix [unit, seed], baseline matrix)."""
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


def method_vs_baseline(transfer: pd.DataFrame, *, baseline: str = "baseline", metric: str = SCORE,
                       n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                       exclude: Sequence[str] = (SOURCE,)) -> pd.DataFrame:
    """Per task (and for generalized mixed-language pairs where present) and method: the mean over target
    languages of the method's ``metric`` (the task score unless told), the baseline's, their seed-matched
    difference and a paired bootstrap CI (see :func:`paired_diff_ci`)."""
    std = standard_rows(transfer, metric)
    std = std[~std["language"].isin(exclude)].assign(unit=lambda d: d["language"])
    tr = transfer.copy()
    if "language2" not in tr:
        tr["language2"] = ""
    tr["language2"] = tr["language2"].fillna("").astype(str)
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
                row.update(baseline=float(np.nanmean(pb.to_numpy(float))),
                           score=float(np.nanmean(pm.to_numpy(float))), diff=est, ci_lo=lo, ci_hi=hi, df=nu,
                           resampled=("test examples (paired) + seeds" if pe is not None
                                      else "languages (paired) + seeds"))
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


def robustness_vs_baseline(transfer: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0,
                           failed: set[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Did a method make the model more robust than the baseline? Per task, method and attack: English accuracy
    under attack minus the baseline's at the same seeds (points), with the paired bootstrap over the same English
    rows plus the seed variance of :func:`method_vs_baseline`. Each checkpoint is attacked at its
    own trained strength (the baseline at the documented defaults), so ``strength`` / ``baseline_strength`` say
    when the two attacks differ. ``failed``: (task, checkpoint) pairs that fail the model-quality gate, left out
    (a checkpoint that predicts the majority label is "robust" to every attack)."""
    rows = drop_failed(transfer[transfer["metric"].isin(ROBUST_ACCURACIES)], failed or set())
    if not len(rows):
        return pd.DataFrame()
    out = []
    for metric in ROBUST_ACCURACIES:
        sub = rows[rows["metric"] == metric]
        if not len(sub):
            continue
        t = method_vs_baseline(sub, metric=metric, n_boot=n_boot, seed=seed, exclude=())
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


@dataclass
class Comparison:
    """What step 2 hands on: each method against the baseline."""

    scores: pd.DataFrame = field(default_factory=pd.DataFrame)  # task score on target languages, MVB_COLS
    robustness: pd.DataFrame = field(default_factory=pd.DataFrame)  # English accuracy under attack (points)


def compare_methods(transfer: pd.DataFrame, gate: Gate, *, n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Step 2: every method against the baseline on the checkpoints that pass the gate: the task score of the
    target languages (a task whose checkpoints all fail gets a row saying so) and English accuracy under attack."""
    if not len(transfer):
        return Comparison()
    mvb = method_vs_baseline(gate.kept, n_boot=n_boot, seed=seed)
    lost = sorted(set(score_rows(transfer)["task"]) - set(score_rows(gate.kept)["task"]))
    extra = [dict(task=t, setting="standard", method="(all)", note="empty: every checkpoint fails the model-quality gate")
             for t in lost]
    if extra:
        mvb = pd.concat([mvb, pd.DataFrame(extra, columns=mvb.columns)], ignore_index=True)
    return Comparison(scores=mvb, robustness=robustness_vs_baseline(transfer, n_boot=n_boot, seed=seed,
                                                                    failed=gate.failed))
