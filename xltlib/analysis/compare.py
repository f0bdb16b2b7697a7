"""Step 2 of the analysis: each robust method against the baseline, on the task score of the target languages
(standard setting, and generalized language pairs where scored) and on English accuracy under attack.

The estimate is the mean over target languages (pairs) of a method's score, averaged over its checkpoints
(seeds), minus the baseline's, on the test items scored in every language. Its interval is item-level
(:mod:`xltlib.analysis.item_inference`): a bootstrap over item ids drawn once per replicate and shared by every
language, seed and method of the task (the items come from the rows' ``per_example`` values,
:mod:`xltlib.analysis.items`; rows without them: the languages), plus the seed-to-seed variance pooled over the
baseline and every method of the task - or, for a side whose own arm varies more, that arm's own
(:func:`~xltlib.analysis.item_inference.side_variance`) - with Welch-Satterthwaite df. A method or baseline with fewer than
:data:`~xltlib.analysis.item_inference.MIN_SEEDS` checkpoints gets its difference and "too few seeds for an
interval".

Method vs baseline is shown two ways (column ``checkpoints``): every trained checkpoint, a collapsed run counted
with what it scored, and only the checkpoints that pass the model-quality gate (:mod:`xltlib.analysis.gate`).
"""
from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from xltlib.analysis.gate import Gate, drop_failed, gate_failures
from xltlib.analysis.inference import holm
from xltlib.analysis.item_inference import arm_differences
from xltlib.analysis.items import item_table
from xltlib.analysis.score import SCORE, SOURCE, score_rows, standard_rows

MVB_ESTIMAND = ("mean over target languages of the method's score minus the baseline's, each averaged over its "
                "checkpoints (seeds), on the test items scored in every language")
ALL_CHECKPOINTS = "every trained checkpoint"
PASSING = "passing the gate"
MVB_COLS = ["task", "setting", "checkpoints", "method", "n_languages", "n_items", "n_seeds", "n_baseline_seeds",
            "baseline", "score", "diff", "ci_lo", "ci_hi", "df", "se_items", "se_seeds", "seed_df", "seed_variance", "p", "p_holm", "ci_lo_pooled", "ci_hi_pooled",
            "p_holm_pooled", "seed_var_p", "resampled", "note"]
MVB_COLUMNS = {  # what each column of the comparison tables means
    "checkpoints": f"which checkpoints count: '{ALL_CHECKPOINTS}' (a collapsed run with what it scored) or "
                   f"'{PASSING}' (the model-quality gate)",
    "n_languages": "target languages (generalized: ordered language pairs) scored by every checkpoint",
    "n_items": "test items in the estimate: those scored by every checkpoint in every language (no per-item values: "
               "the languages)",
    "n_seeds": "the method's checkpoints", "n_baseline_seeds": "the baseline's checkpoints",
    "baseline": "the baseline's score (mean over its checkpoints, the languages and the items)",
    "score": "the method's score, likewise", "diff": "score - baseline",
    "ci_lo": "95% CI: diff +- t(df) sqrt(se_items^2 + se_seeds^2); empty with 'too few seeds for an interval'",
    "ci_hi": "see ci_lo", "df": "Welch-Satterthwaite degrees of freedom of that t interval",
    "se_items": "the item bootstrap's part (item ids resampled once per replicate, shared by every language, seed "
                "and method): item sampling alone, not an interval",
    "se_seeds": "the seed part: per side, the checkpoints' spread pooled over the baseline and every method of the "
                "task, or the side's own arm's spread where that is larger (seed_variance says which); every "
                "trained checkpoint: an arm with a checkpoint that fails the gate takes its own, out of the pool",
    "seed_df": "degrees of freedom of the pooled seed variance: sum over the task's pooled arms of (checkpoints - 1)",
    "seed_variance": "which seed variance each side of the difference took (its own arm's or the pooled) and its df",
    "p": "two-sided p of diff against 0 under the interval's t(df)",
    "p_holm": "p after Holm's adjustment over the methods compared together (task, setting and checkpoints; for "
              "robustness also the attack and strength): the brief's 'above'/'below'",
    "ci_lo_pooled": "sensitivity: the 95% CI if every arm of the task shared one seed variance (the pooled one on "
                    "both sides)", "ci_hi_pooled": "see ci_lo_pooled",
    "p_holm_pooled": "Holm's p of that pooled-only interval, over the same methods",
    "seed_var_p": "Bartlett's p that the task's arms share one seed variance (little power at 3 seeds)",
    "resampled": "what the interval resamples", "note": "why a row has no interval, and what it leaves out",
}
ROBUST_ACCURACY = "robust_acc_"  # prefix of English accuracy under an attack (xltlib.evaluation.robustness)


def _comparison_rows(g: pd.DataFrame, *, task: str, setting: str, checkpoints: str, baseline: str, n_boot: int,
                     rng: np.random.Generator, level: float, own_only: Sequence[str] = ()) -> list[dict]:
    """The rows of one task and setting (``g``: its rows, ``unit`` the language or ordered language pair): every
    method against the baseline on the checkpoint x item table of :func:`~xltlib.analysis.items.item_table`, with
    the interval of :func:`~xltlib.analysis.item_inference.arm_differences` (one item draw per replicate for every
    method of the task, the seed variance pooled over all of them or a side's own where larger)."""
    base = dict(task=task, setting=setting, checkpoints=checkpoints)
    methods = sorted(set(g["method"].astype(str)) - {baseline})
    if baseline not in set(g["method"].astype(str)):
        return [dict(base, method=m, note=f"empty: no {baseline} rows") for m in methods]
    if not methods:
        return []
    where = f"{task} ({setting} setting, {checkpoints})"
    try:
        tab = item_table(g, unit="unit")
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e
    units = "ordered language pairs" if setting == "generalized" else "languages"
    notes = []
    if tab.per_item and tab.n_items < tab.n_items_max:
        notes.append(f"{tab.n_items} of {tab.n_items_max} items: those scored in every language")
    if tab.dropped_units:
        notes.append(f"{len(tab.dropped_units)} {units} not scored by every checkpoint left out "
                     f"({', '.join(map(str, tab.dropped_units))})")
    if setting == "generalized":
        notes.append("units are ordered language pairs (first sentence's language - second's)")
    if own_only:
        notes.append(f"{', '.join(own_only)}: own seed variance only (a checkpoint failed the gate: its seeds spread "
                     "as learned and collapsed runs, kept out of the pooled variance)")
    if tab.per_item:  # generalized: an item is the row id of the pair, scored in every pair
        unit = "language pair" if setting == "generalized" else "language"
        resampled = (f"test examples (item ids shared by every {unit}, seed and method) + seeds (variance pooled "
                     "over the task's methods, or a side's own where larger)")
    else:
        resampled = (f"{units} (no per-item values: the {units} are the items) + seeds (variance pooled over the "
                     "task's methods, or a side's own where larger)")
    info = dict(base, n_languages=len(tab.units), n_items=tab.n_items, resampled=resampled)
    arms = np.asarray(tab.arms)
    if tab.n_items < 2:  # one language without per-item values: nothing to resample
        b = float(tab.values[arms == baseline].mean())
        return [dict(info, method=m, n_seeds=int((arms == m).sum()), n_baseline_seeds=int((arms == baseline).sum()),
                     baseline=b, score=float(tab.values[arms == m].mean()),
                     diff=float(tab.values[arms == m].mean()) - b, ci_lo=math.nan, ci_hi=math.nan, resampled="",
                     note="; ".join([f"1 of the {units} and no per-item values: no interval", *notes]))
                for m in methods]
    try:
        diffs = arm_differences(tab.values, arms, baseline=baseline, n_boot=n_boot, rng=rng, level=level,
                                own_only=own_only)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e
    out = []
    for d, p_h, p_hp in zip(diffs, holm([d.p for d in diffs]), holm([d.p_pooled for d in diffs])):
        out.append(dict(info, method=d.method, n_seeds=d.n_seeds, n_baseline_seeds=d.n_baseline_seeds,
                        baseline=d.baseline, score=d.score, diff=d.diff, ci_lo=d.ci_lo, ci_hi=d.ci_hi, df=d.df,
                        se_items=d.se_items, se_seeds=d.se_seeds, seed_df=d.seed_df, seed_variance=d.seed_variance,
                        p=d.p, p_holm=p_h, ci_lo_pooled=d.ci_lo_pooled, ci_hi_pooled=d.ci_hi_pooled,
                        p_holm_pooled=p_hp, seed_var_p=d.seed_var_p,
                        note="; ".join(n for n in (d.note, *notes) if n)))
    return out


def method_vs_baseline(transfer: pd.DataFrame, *, baseline: str = "baseline", metric: str = SCORE,
                       n_boot: int = 2000, seed: int = 0, level: float = 0.95, exclude: Sequence[str] = (SOURCE,),
                       checkpoints: str = ALL_CHECKPOINTS,
                       failed: Collection[tuple[str, str]] = ()) -> pd.DataFrame:
    """Per task, setting (standard: the target languages, ``exclude`` left out; generalized: ordered pairs of two
    languages, where scored) and method: the mean over the languages (pairs) of the method's ``metric`` (the task
    score unless told), averaged over its checkpoints, minus the baseline's, on the items scored in every language,
    with the item-level interval of the module docstring. ``checkpoints`` labels which checkpoints ``transfer``
    holds (:data:`ALL_CHECKPOINTS` or :data:`PASSING`); ``failed``, the (task, checkpoint) pairs that fail the
    gate, names the arms that keep their own seed variance, out of the pool. Columns: :data:`MVB_COLS`.

    Raises ValueError naming the task, setting and checkpoints when two checkpoints share no scored item or
    per-example values cannot be matched (:func:`~xltlib.analysis.items.item_table`)."""
    std = standard_rows(transfer, metric)
    std = std[~std["language"].isin(exclude)].assign(unit=lambda d: d["language"].astype(str))
    tr = transfer.copy()
    if "language2" not in tr:
        tr["language2"] = ""
    tr["language2"] = tr["language2"].fillna("").astype(str)
    gen = tr[(tr["language2"].str.strip() != "") & (tr["language2"] != tr["language"])]
    # generalized pairs may carry only their accuracy (the task score of the pair tasks)
    gen = gen[gen["metric"] == (metric if (gen["metric"] == metric).any() else "accuracy")]
    gen = gen.assign(unit=gen["language"].astype(str) + "-" + gen["language2"])
    groups = [(setting, task, g) for setting, frame in (("standard", std), ("generalized", gen))
              for task, g in frame.groupby("task", sort=True)]
    streams = np.random.SeedSequence(seed).spawn(len(groups))  # one stream per (setting, task): shared by its methods
    failed = set(failed)
    cks = transfer[["task", "method", "checkpoint"]].drop_duplicates()
    failed_arms = {(t, str(m)) for t, m, c in zip(cks["task"], cks["method"], cks["checkpoint"]) if (t, c) in failed}
    rows = []
    for (setting, task, g), ss in zip(groups, streams):
        rows += _comparison_rows(g, task=task, setting=setting, checkpoints=checkpoints, baseline=baseline,
                                 n_boot=n_boot, rng=np.random.default_rng(ss), level=level,
                                 own_only=sorted(m for t, m in failed_arms if t == task))
    return pd.DataFrame(rows, columns=MVB_COLS)


def robustness_vs_baseline(transfer: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0,
                           failed: set[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Did a method make the model more robust than the baseline? Per task, method, attack and strength: English
    accuracy under attack minus the baseline's (points), with the interval of :func:`method_vs_baseline` over the
    attacked English rows. Every checkpoint of a task faces the same attacks at the same strengths on the same rows
    (``evaluate.robustness_*``), so each row differences one attack. ``failed``: (task, checkpoint) pairs that fail
    the model-quality gate, left out (a checkpoint that predicts the majority label is "robust" to every attack)."""
    rows = drop_failed(transfer[transfer["metric"].astype(str).str.startswith(ROBUST_ACCURACY)], failed or set())
    if not len(rows):
        return pd.DataFrame()
    label = PASSING if failed is not None else ALL_CHECKPOINTS
    out = []
    for metric, sub in rows.groupby("metric", sort=True):
        t = method_vs_baseline(sub, metric=metric, n_boot=n_boot, seed=seed, exclude=(), checkpoints=label)
        t = t[t["setting"] == "standard"].drop(columns=["setting", "n_languages"])
        first = sub.iloc[0]
        for r in t.to_dict("records"):
            r = dict(attack=first.get("attack", metric.removeprefix(ROBUST_ACCURACY)),
                     strength=first.get("strength", np.nan), scale=first.get("scale", ""), metric=metric, **r)
            for col in ("baseline", "score", "diff", "ci_lo", "ci_hi", "se_items", "se_seeds", "ci_lo_pooled",
                        "ci_hi_pooled"):
                r[col] = 100 * r[col]
            out.append(r)
    return pd.DataFrame(out)


@dataclass
class Comparison:
    """What step 2 hands on: each method against the baseline."""

    scores: pd.DataFrame = field(default_factory=pd.DataFrame)  # task score on target languages, MVB_COLS
    robustness: pd.DataFrame = field(default_factory=pd.DataFrame)  # English accuracy under attack (points)


def _failures_note(mvb: pd.DataFrame, transfer: pd.DataFrame, failed: set[tuple[str, str]]) -> pd.DataFrame:
    """The rows over every trained checkpoint, with how many of the method's (and baseline's) checkpoints fail."""
    if not failed or mvb.empty:
        return mvb
    ck = score_rows(transfer).drop_duplicates(["task", "checkpoint"])
    ck = ck.assign(fails=[(t, c) in failed for t, c in zip(ck["task"], ck["checkpoint"])])
    counts = ck.groupby(["task", "method"])["fails"].agg(["sum", "size"])
    mvb = mvb.copy()
    for i, r in mvb.iterrows():
        parts = [f"{int(counts.loc[(r['task'], m), 'sum'])} of {int(counts.loc[(r['task'], m), 'size'])} {m} "
                 "checkpoint(s) fail the gate" for m in (r["method"], "baseline")
                 if (r["task"], m) in counts.index and counts.loc[(r["task"], m), "sum"] > 0]
        if parts:
            text = "; ".join(parts) + " (counted with what they scored)"
            mvb.at[i, "note"] = f"{r['note']}; {text}" if r["note"] else text
    return mvb


def compare_methods(transfer: pd.DataFrame, gate: Gate, *, n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Step 2: every method against the baseline on the task score of the target languages, shown two ways (column
    ``checkpoints``): the checkpoints that pass the gate (``gate.table``'s ``passes``; a task whose checkpoints all
    fail gets a row saying so) and every trained checkpoint; and English accuracy under attack, passing
    checkpoints only."""
    if not len(transfer):
        return Comparison()
    failed = gate_failures(gate.table)
    passing = drop_failed(transfer, failed)
    mvb_pass = method_vs_baseline(passing, n_boot=n_boot, seed=seed, checkpoints=PASSING)
    lost = sorted(set(score_rows(transfer)["task"]) - set(score_rows(passing)["task"]))
    extra = [dict(task=t, setting="standard", checkpoints=PASSING, method="(all)",
                  note="empty: every checkpoint fails the model-quality gate") for t in lost]
    mvb_all = _failures_note(method_vs_baseline(transfer, n_boot=n_boot, seed=seed, checkpoints=ALL_CHECKPOINTS,
                                                failed=failed), transfer, failed)
    shown = set(zip(mvb_pass["task"], mvb_pass["setting"], mvb_pass["method"]))
    extra += [dict(task=t, setting=s, checkpoints=PASSING, method=m,
                   note=f"empty: every {m} checkpoint fails the model-quality gate")
              for t, s, m in zip(mvb_all["task"], mvb_all["setting"], mvb_all["method"])
              if t not in lost and (t, s, m) not in shown]
    if extra:
        mvb_pass = pd.concat([mvb_pass, pd.DataFrame(extra, columns=MVB_COLS)], ignore_index=True)
    mvb = pd.concat([t for t in (mvb_pass, mvb_all) if len(t)], ignore_index=True) if len(mvb_pass) or len(mvb_all) \
        else mvb_pass
    if len(mvb):  # per task: passing checkpoints first, then every trained one
        order = mvb["checkpoints"].map({PASSING: 0, ALL_CHECKPOINTS: 1})
        setting = mvb["setting"].map({"standard": 0, "generalized": 1})
        mvb = (mvb.assign(_v=order, _s=setting).sort_values(["task", "_v", "_s"], kind="stable")
               .drop(columns=["_v", "_s"]).reset_index(drop=True))
    return Comparison(scores=mvb, robustness=robustness_vs_baseline(transfer, n_boot=n_boot, seed=seed,
                                                                    failed=failed))
