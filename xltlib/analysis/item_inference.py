"""Item-level inference for a difference between arms of checkpoints scored on the same test items: each method's
checkpoints (seeds) against the baseline's, on a checkpoint x item table of values.

The data: ``values[c, i]``, checkpoint ``c``'s value on test item ``i`` averaged over the languages (or language
pairs) it was scored in - XNLI and PAWS-X test rows are translations of the same items, scored at every seed and by
every method. Averaging over languages first is exact: every estimate below is linear in the per-item values, so
resampling item ids once per bootstrap replicate in every (language, seed, method) cell at once is resampling the
columns of this table.

The model behind it (one noise model for every arm of a task)::

    values[c, i] = mu[arm(c)] + u[c] + b[i] + g[arm(c), i] + e[c, i]

``u``: the checkpoint's shock (training seed, and its checkpoint x language effects averaged over languages);
``b``: the item's difficulty (shared by every arm: cancels in a difference); ``g``: the item x method interaction
(an item hard for one method, easy for another); ``e``: what is left (the checkpoint's own item-level noise). The
estimate is the difference of arm means ``D = mean_c in m, i values - mean_c in b, i values`` and, with
``k = 1/S_m + 1/S_b``, ``Var(D) = k sigma_u^2 + 2 sigma_g^2 / I + k sigma_e^2 / I``. Two estimates add up to it:

* **items** - a bootstrap over item ids, drawn once per replicate and shared by every method of the comparison
  (``V_items``, scaled by I / (I - 1)): it estimates the item part ``2 sigma_g^2 / I + k sigma_e^2 / I`` with
  the checkpoints held fixed; I - 1 degrees of freedom.
* **seeds** - the variance of the checkpoints' means around their arm's mean, **pooled over the baseline and every
  method** of the task (:func:`pooled_seed_variance`): it estimates ``sigma_u^2 + sigma_e^2 / I`` with ``sum over
  arms of (S_a - 1)`` degrees of freedom, so a few seeds of one arm that happen to agree cannot make it collapse.
  Each side of a difference takes **its own arm's variance where that is the larger** (:func:`side_variance`,
  ``S_a - 1`` df): the seed variance need not be the same in every arm (on the study's XNLI transfer rows the two
  strong adversarial arms' checkpoint means vary about 200x more from seed to seed than the baseline's), and a
  pooled variance alone then gives the most variable arm too narrow an interval (about 12% of null runs rejected
  when one of 5 arms has 9x the others' seed variance at 3 seeds, about 4% with its own;
  ``tests/test_calibration.py``). It costs power where the arms do vary alike (intervals can only widen: 3% of
  run-sized nulls rejected instead of 5%). ``V_seeds = v_m / S_m + v_b / S_b`` (one part with the pooled df when
  both sides take the pooled variance: it is one estimate).

Their sum counts ``k sigma_e^2 / I`` twice: the interval errs on the wide side by that much, which is small when
the items are many (I in the hundreds: on 400 simulated null runs of 15 languages x 1000 items x 3 seeds x 3 arms,
``tests/test_calibration.py``, the 95% CI excluded 0 in 3.3% and 3.0% of them; 5.0% and 5.3% before a side could
take its own variance) and keeps the seed part from being estimated as zero when the seeds happen to agree (a
moment estimator that subtracts the shared part would collapse then). The CI is ``D +- t(nu) sqrt(V_items + V_seeds)``
with Welch-Satterthwaite's ``nu`` over the three parts (each side's seed part with its df, the items with I - 1).

An arm whose checkpoints are not draws of that noise model - in the "every trained checkpoint" view, an arm with a
checkpoint that failed the model-quality gate, whose seeds spread as learned and collapsed runs - is left out of the
pool and takes its own variance (``own_only``): pooled in, its spread (on the study's PAWS-X rows, 20 points between
a collapsed and a learned seed) would widen every other arm's interval tenfold.

A comparison where the method or the baseline has fewer than :data:`MIN_SEEDS` checkpoints gets its difference and
:data:`TOO_FEW_SEEDS`, no interval: a seed variance needs seeds of the arms compared, not only of the others.
"""
from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_SEEDS = 3  # checkpoints per arm below which a comparison gets no interval
TOO_FEW_SEEDS = "too few seeds for an interval"
BOOT_CHUNK = 100  # bootstrap replicates drawn at once (keeps the index array at 100 x items)


@dataclass(frozen=True)
class ArmDiff:
    """One method's arm against the baseline's: the difference of arm means and its interval (NaN: none)."""

    method: str
    n_seeds: int  # the method's checkpoints
    n_baseline_seeds: int
    score: float  # the method's mean over its checkpoints and the items
    baseline: float
    diff: float
    ci_lo: float
    ci_hi: float
    df: float  # Welch-Satterthwaite df of the t interval
    se_items: float  # sqrt(V_items): the item bootstrap's part
    se_seeds: float  # sqrt(V_seeds): the seed part (each side: its own arm's variance or the pooled, the larger)
    seed_df: int  # sum over the pooled arms of (seeds - 1)
    seed_variance: str = ""  # which variance each side took (its own arm's or the pooled one) and its df
    # sensitivity: the interval if every arm shared one seed variance (the pooled one on both sides)
    ci_lo_pooled: float = math.nan
    ci_hi_pooled: float = math.nan
    seed_var_p: float = math.nan  # Bartlett's test that the arms' seed variances are equal (seed_variance_test)
    p: float = math.nan  # two-sided p of diff under the interval's t(df)
    p_pooled: float = math.nan  # the same under the pooled-only interval
    note: str = ""


def pooled_seed_variance(checkpoint_means: np.ndarray, arms: Sequence[str]) -> tuple[float, int]:
    """(variance, df): the checkpoints' means around their own arm's mean, pooled over every arm -
    ``sum_a sum_c (y_c - ybar_a)^2 / sum_a (S_a - 1)``. An arm with one checkpoint adds nothing; NaN and 0 df when
    no arm has two."""
    y = np.asarray(checkpoint_means, dtype=float)
    arms = np.asarray(arms)
    ss, df = 0.0, 0
    for a in np.unique(arms):
        ya = y[arms == a]
        ss += float(((ya - ya.mean()) ** 2).sum())
        df += len(ya) - 1
    return (ss / df if df else math.nan), df


def seed_variance_test(checkpoint_means: np.ndarray, arms: Sequence[str]) -> float:
    """Bartlett's p that every arm's checkpoints spread alike (the pooled seed variance's assumption), over the
    arms with at least 2 checkpoints; NaN with fewer than 2 such arms or an arm without spread. At 3 seeds it has
    little power: a large p does not show the variances equal."""
    y = np.asarray(checkpoint_means, dtype=float)
    arms = np.asarray(arms)
    groups = [y[arms == a] for a in np.unique(arms) if (arms == a).sum() > 1]
    if len(groups) < 2 or any(np.var(g) == 0 for g in groups):
        return math.nan
    return float(stats.bartlett(*groups).pvalue)


def pooled_sensitivity(rows, fmt=lambda v: f"{v:+.3f}") -> str:
    """One sentence for a task's comparison table (rows with ``method``, ``seed_variance``, ``ci_lo_pooled``,
    ``ci_hi_pooled``, ``seed_var_p``): which sides took their own arm's larger seed variance, Bartlett's p, and
    which CIs would exclude 0 if every arm shared one seed variance. '' when no side took its own."""
    rows = [r for r in rows if np.isfinite(r.get("ci_lo_pooled", math.nan))]
    own = [r["method"] for r in rows if "its own" in str(r.get("seed_variance", ""))]
    if not own:
        return ""
    p = next((r["seed_var_p"] for r in rows if np.isfinite(r.get("seed_var_p", math.nan))), math.nan)
    out = [f"{r['method']} {fmt(r['diff'])} ({fmt(r['ci_lo_pooled'])} to {fmt(r['ci_hi_pooled'])})" for r in rows
           if r["ci_lo_pooled"] > 0 or r["ci_hi_pooled"] < 0]
    seeds = min(int(r.get("n_seeds", 0)) for r in rows)
    return (f"Seed variance: the comparisons of {', '.join(own)} use a side's own, larger seed variance (Bartlett's "
            f"p that the arms share one: {'n/a' if not np.isfinite(p) else f'{p:.2f}'}; at {seeds} seeds it has "
            "little power). If every arm shared one (the pooled variance on both sides), the CIs excluding 0 would "
            "be (unadjusted): " + ("; ".join(out) if out else "none") + ".")


def side_variance(own: tuple[float, int], pooled: tuple[float, int]) -> tuple[float, int, bool]:
    """(variance, df, own?) for one side of a difference: the arm's own seed variance where it is the larger, else
    the pooled one. The pooled variance keeps a few agreeing seeds from collapsing the interval; the own one keeps
    an arm that varies more than the others from borrowing their smaller spread."""
    if np.isfinite(own[0]) and own[1] > 0 and (not np.isfinite(pooled[0]) or own[0] > pooled[0]):
        return own[0], own[1], True
    return pooled[0], pooled[1], False


def item_bootstrap(diffs: np.ndarray, *, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of the mean over items of each row of ``diffs`` [methods, items]: one draw of item
    ids per replicate, shared by every row. Returns [methods, n_boot]."""
    diffs = np.asarray(diffs, dtype=float)
    n_items = diffs.shape[1]
    out = np.empty((diffs.shape[0], n_boot))
    for c in range(0, n_boot, BOOT_CHUNK):
        m = min(BOOT_CHUNK, n_boot - c)
        idx = rng.integers(0, n_items, size=(m, n_items))
        out[:, c:c + m] = diffs[:, idx].mean(axis=2)
    return out


def t_test_p(est: float, se: float, df: float) -> float:
    """Two-sided p of ``est`` against 0 under the t(df) reference of its interval (normal for infinite df); NaN
    without one."""
    if not (np.isfinite(est) and np.isfinite(se) and se > 0 and df > 0):
        return math.nan
    return float(2 * (stats.norm.sf(abs(est) / se) if math.isinf(df) else stats.t.sf(abs(est) / se, df)))


def satterthwaite_t(est: float, parts: Sequence[tuple[float, float]],
                    level: float = 0.95) -> tuple[float, float, float]:
    """(lo, hi, df) of ``est +- t(nu) sqrt(sum v)`` for variance parts ``(v, df)`` (Welch-Satterthwaite ``nu``);
    NaNs when the variance is not positive. A part may be negative (a method-of-moments variance, one mean square
    minus another): it enters ``nu``'s denominator squared, and ``nu`` is held at 1 or more (with positive parts
    it is at least the smallest part's df anyway)."""
    var = sum(v for v, _ in parts)
    if not var > 0:
        return math.nan, math.nan, math.nan
    den = sum(v * v / k for v, k in parts if v != 0)
    nu = max(var * var / den, 1.0)
    h = float(stats.t.ppf(0.5 + level / 2, nu)) * math.sqrt(var)
    return est - h, est + h, nu


def arm_differences(values: np.ndarray, arms: Sequence[str], *, baseline: str, n_boot: int,
                    rng: np.random.Generator, level: float = 0.95, min_seeds: int = MIN_SEEDS,
                    own_only: Collection[str] = ()) -> list[ArmDiff]:
    """Every other arm of ``values`` [checkpoint, item] against ``baseline`` (see the module docstring): the
    difference of arm means with a t interval on the item bootstrap (shared draws) plus the pooled seed variance.
    ``arms`` names each checkpoint's arm (its method). The arms of ``own_only`` (e.g. arms with a checkpoint that
    failed the model-quality gate: their seeds spread as a mixture of learned and collapsed runs, not under the
    shared noise model) stay out of the pooled variance and of Bartlett's test, and take their own."""
    values = np.asarray(values, dtype=float)
    arms = np.asarray(arms)
    own_only = set(own_only)
    n_items = values.shape[1]
    if baseline not in set(arms):
        raise ValueError(f"no checkpoint of the baseline arm '{baseline}' among the arms {sorted(set(arms))}")
    if n_items < 2:
        raise ValueError(f"{n_items} item(s): the item bootstrap needs at least 2")
    methods = sorted(set(arms) - {baseline})
    arm_items = {a: values[arms == a].mean(axis=0) for a in [baseline, *methods]}  # [items] per arm
    means = values.mean(axis=1)
    shared = ~np.isin(arms, list(own_only))
    s2, seed_df = pooled_seed_variance(means[shared], arms[shared])
    own = {a: (float(np.var(means[arms == a], ddof=1)) if (arms == a).sum() > 1 else math.nan,
               int((arms == a).sum()) - 1) for a in arm_items}
    seed_var_p = seed_variance_test(means[shared], arms[shared])
    diffs = np.array([arm_items[m] - arm_items[baseline] for m in methods]).reshape(len(methods), n_items)
    boots = item_bootstrap(diffs, n_boot=n_boot, rng=rng) if methods else np.empty((0, n_boot))
    n_b = int((arms == baseline).sum())
    out = []
    for j, m in enumerate(methods):
        n_m = int((arms == m).sum())
        est = float(diffs[j].mean())
        v_items = float(np.var(boots[j], ddof=1)) * n_items / (n_items - 1)
        row = dict(method=m, n_seeds=n_m, n_baseline_seeds=n_b, score=float(arm_items[m].mean()),
                   baseline=float(arm_items[baseline].mean()), diff=est, ci_lo=math.nan, ci_hi=math.nan,
                   df=math.nan, se_items=math.sqrt(v_items), se_seeds=math.nan, seed_df=seed_df,
                   seed_var_p=seed_var_p)
        if min(n_m, n_b) < min_seeds:
            row["note"] = f"{TOO_FEW_SEEDS} ({m} {n_m}, {baseline} {n_b} checkpoint(s); {min_seeds} each needed)"
        else:
            sides = [(a, n, side_variance(own[a], (math.nan, 0) if a in own_only else (s2, seed_df)))
                     for a, n in ((m, n_m), (baseline, n_b))]
            seed_parts = [(v / n, df) for _, n, (v, df, mine) in sides if mine]
            if shared := sum(1 / n for _, n, (*_, mine) in sides if not mine):  # one pooled estimate: one part
                seed_parts.append((s2 * shared, seed_df))
            lo, hi, nu = satterthwaite_t(est, [(v_items, n_items - 1), *seed_parts], level)
            pooled_parts = [(v_items, n_items - 1), (s2 * (1 / n_m + 1 / n_b), seed_df)]
            lo_pooled, hi_pooled, nu_pooled = satterthwaite_t(est, pooled_parts, level)
            se_seeds = math.sqrt(sum(v for v, _ in seed_parts))
            row.update(ci_lo=lo, ci_hi=hi, df=nu, se_seeds=se_seeds, ci_lo_pooled=lo_pooled, ci_hi_pooled=hi_pooled,
                       p=t_test_p(est, math.sqrt(v_items + se_seeds ** 2), nu),
                       p_pooled=t_test_p(est, math.sqrt(sum(v for v, _ in pooled_parts)), nu_pooled),
                       seed_variance="; ".join(f"{a}: {'its own' if mine else 'pooled'} ({df} df)"
                                               for a, _, (_, df, mine) in sides),
                       note="" if np.isfinite(nu) else "no variance: every checkpoint scored every item alike")
        out.append(ArmDiff(**row))
    return out
