"""Step 6 of the analysis: the typed result of every step and its plain-words summary; and
:func:`analyze_run`, which runs the six steps on a run folder in order (the analysis page shows the same
calls, one per cell; ``xlt export`` writes what :func:`analyze_run` returns).

1. :func:`~xltlib.analysis.gate.apply_gate` - did each checkpoint learn its task in English?
2. :func:`~xltlib.analysis.compare.compare_methods` - each robust method against the baseline
3. :func:`~xltlib.analysis.merge.merge_points` - alignment beside the task score, per checkpoint and language
4. :func:`~xltlib.analysis.rq1.answer_rq1` - does alignment track transfer?
5. :func:`~xltlib.analysis.rq2.answer_rq2` - do robust objectives help low-resource languages most?
6. :func:`summarize` - the result and its summary
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from xltlib.analysis.compare import MVB_ESTIMAND, Comparison, compare_methods
from xltlib.analysis.gate import Gate, apply_gate
from xltlib.analysis.inference import ALPHA
from xltlib.analysis.merge import Points, merge_points
from xltlib.analysis.rq1 import ACROSS_ESTIMAND, RQ1, WITHIN_ESTIMAND, answer_rq1
from xltlib.analysis.rq2 import RQ2, RQ2_ESTIMAND, answer_rq2
from xltlib.config.schema import ReportConfig


@dataclass
class AnalysisResult:
    """Everything the analysis page and the export show, one field per step.

    Tables are DataFrames whose empty groups carry a ``note`` saying why; ``notes`` are page-level
    remarks (missing cells, excluded checkpoints, fallbacks)."""

    primary: ReportConfig.Primary  # the declared primary analysis (report.primary)
    gate: Gate = field(default_factory=Gate)  # step 1
    comparison: Comparison = field(default_factory=Comparison)  # step 2
    points: Points = field(default_factory=Points)  # step 3
    rq1: RQ1 = field(default_factory=RQ1)  # step 4
    rq2: RQ2 = field(default_factory=RQ2)  # step 5
    alpha: float = ALPHA
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # checkpoints, languages, seeds, tasks
    summary: str = ""  # step 6: the plain-words summary (markdown)


def missing_cells_note(transfer: pd.DataFrame, expected_cells: list[str]) -> list[str]:
    """A note naming the grid cells without transfer rows (the analysis uses what exists)."""
    key = "cell_id" if "cell_id" in transfer else "checkpoint"  # cells sharing a checkpoint match on the cell id
    done = set(transfer[key].dropna()) if len(transfer) else set()
    missing = sorted(set(expected_cells or []) - done)
    return [f"Missing cells (no transfer results; analysed what exists): {', '.join(missing)}"] if missing else []


def alignment_by_method_text(alignment: pd.DataFrame, metric: str) -> str:
    """One sentence: the alignment ``metric`` at its last layer per method (mean over languages;
    ± sd over seeds and tasks of that mean), the pre-trained model first."""
    at = alignment["metric"] == metric
    last_layer = int(alignment.loc[at, "layer"].max()) if at.any() else -1
    a = alignment[at & (alignment["layer"] == last_layer)]
    if a.empty:
        return ""
    per_ck = a.groupby(["method", "checkpoint"])["value"].mean()
    stats = per_ck.groupby(level="method").agg(["mean", "std"])
    order = ["pretrained"] + [m for m in stats.index if m != "pretrained"]
    parts = [f"{m} {stats.loc[m, 'mean']:.3f}" + ("" if np.isnan(stats.loc[m, "std"]) else f" ± {stats.loc[m, 'std']:.3f}")
             for m in order if m in stats.index]
    return (f"**Alignment after fine-tuning** — `{metric}` at layer {last_layer}, mean over "
            f"{a['language'].nunique()} languages (± sd over checkpoints): " + "; ".join(parts) + ".")


def summarize(primary: ReportConfig.Primary, gate: Gate, comparison: Comparison, points: Points, rq1: RQ1, rq2: RQ2,
              *, alignment: pd.DataFrame, headline_metric: str = "", protocol: str | None = None,
              notes: Sequence[str] = (), alpha: float = ALPHA) -> AnalysisResult:
    """Step 6: the result of steps 1-5 with their notes, the counts, and the summary (:func:`summary_markdown`)."""
    res = AnalysisResult(primary=primary, gate=gate, comparison=comparison, points=points, rq1=rq1, rq2=rq2,
                         alpha=alpha, notes=[*notes, *gate.notes, *points.notes, *rq1.notes, *rq2.notes])
    text = ""
    if points.relatable:
        merged, analysed = points.merged, points.analysed
        res.counts = dict(checkpoints=int(merged["checkpoint"].nunique()),
                          analysed_checkpoints=int(analysed["checkpoint"].nunique()) if len(analysed) else 0,
                          languages=int(merged["language"].nunique()), tasks=int(merged["task"].nunique()),
                          seeds=int(merged["seed"].nunique()) if "seed" in merged else 0)
        text = alignment_by_method_text(alignment, headline_metric or primary.metric)
    res.summary = summary_markdown(res, protocol=protocol, alignment_text=text)
    return res


def analyze_run(run) -> AnalysisResult:
    """The six steps on a run folder, in order, with the run's ``report`` settings.

    ``run`` needs ``load_results(kind)``, ``majority_rates()``, ``weight_drift()``, ``cells()`` (each with a
    ``cell_id``), ``cfg.report`` and ``cfg.protocol.name``: :class:`xltlib.runner.run_dir.Run` has them."""
    report = run.cfg.report
    transfer, alignment = run.load_results("transfer"), run.load_results("alignment")
    notes = missing_cells_note(transfer, [c.cell_id for c in run.cells()])
    gate = apply_gate(transfer, run.majority_rates())
    comparison = compare_methods(transfer, gate, n_boot=report.n_boot, seed=report.seed)
    points = merge_points(alignment, transfer, gate)
    rq1 = answer_rq1(points, report.primary, n_boot=report.n_boot, n_perm=report.n_perm, seed=report.seed,
                     drift=run.weight_drift())
    rq2 = answer_rq2(points, gate, rq1)
    return summarize(report.primary, gate, comparison, points, rq1, rq2, alignment=alignment,
                     headline_metric=report.correlation_metric, protocol=run.cfg.protocol.name, notes=notes)


# ------------------------------------------------------------------------------------- the summary's words
def _fmt(v, nd=2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    text = f"{v:.{nd}f}"
    return text.lstrip("-") if float(text) == 0 else text  # -0.004 -> "0.0", not "-0.0"


def _fmt_p(p) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _pts(v, nd=1) -> str:
    """A score difference in points (x100), signed."""
    if v is None or not np.isfinite(v):
        return "n/a"
    text = f"{100 * v:+.{nd}f}"
    return text.replace("-", "+", 1) if float(text) == 0 else text


def _p_text(row, alpha) -> str:
    p = row.get("p", np.nan)
    if row.get("p_at_floor"):
        return f"p < {1 / (int(row['n_perm']) + 1):.1g} ({int(row['n_perm'])} permutations)"
    how = "exact, all orderings" if row.get("exact") else f"{int(row.get('n_perm', 0))} permutations"
    return f"p = {_fmt_p(p)} ({how})" if "n_perm" in row else f"p = {_fmt_p(p)}"


def _row_lines(table: pd.DataFrame, value: str, empty, line) -> list[str]:
    """One summary line per table row: ``line(row)`` where ``value`` is a number, else ``empty(row)`` (the
    row's note says why it is empty)."""
    return [line(r) if np.isfinite(r.get(value, np.nan)) else empty(r) for _, r in table.iterrows()]


def summary_markdown(res: AnalysisResult, *, protocol: str | None = None, alignment_text: str = "") -> str:
    """The plain-words summary of an :class:`AnalysisResult`, built in this one place.

    Every claim states its unit, n and estimand; a relation is "found" only when the declared primary
    test rejects (Holm over tasks when there are several); the rest is labelled exploratory."""
    a = res.alpha
    c = res.counts
    L = ["## Summary", ""]
    if c:
        L += [f"Data: {c.get('checkpoints', 0)} fine-tuned checkpoints ({c.get('analysed_checkpoints', 0)} pass the "
              f"model-quality gate), {c.get('tasks', 0)} task(s), {c.get('languages', 0)} target languages, "
              f"{c.get('seeds', 0)} seed(s) per method.", ""]

    # -- the gate
    L += ["### Do the models learn their tasks? (model-quality gate)", ""]
    g = res.gate.table
    if g is None or g.empty:
        L.append("No English scores: the gate could not be applied.")
    else:
        for task, t in g.groupby("task"):
            maj = t["majority"].iloc[0]
            if not np.isfinite(maj):
                L.append(f"- {task}: English {100 * t['english'].mean():.1f}% (mean over {len(t)} checkpoints); no "
                         "majority rate for this task kind, not gated.")
                continue
            n_fail = int((~t["passes"].astype(bool)).sum())
            L.append(f"- {task}: English scores from {100 * t['english'].min():.1f}% to {100 * t['english'].max():.1f}% "
                     f"across {len(t)} checkpoints ({int(t['n'].max())} English test rows each; a checkpoint passes "
                     f"when the lower end of its Wilson 95% CI is above the majority rate {100 * maj:.1f}%): "
                     + ("every checkpoint clears it." if n_fail == 0 else
                        f"**{n_fail} of {len(t)} checkpoint(s) do not clear it and are left out of RQ1 and RQ2** "
                        "(no transfer to explain)."))
    L.append("")
    if alignment_text:
        L += [alignment_text, ""]

    # -- method vs baseline
    L += ["### Robust methods vs the baseline", ""]
    mvb = res.comparison.scores
    if mvb is None or mvb.empty:
        L.append("No method could be compared with the baseline (needs the baseline and another method).")
    else:
        L.append(f"Estimand: {MVB_ESTIMAND}; 95% CI from a paired bootstrap with seed variance added "
                 "(unit and n as stated per line).")
        L.append("")
        L += _row_lines(
            mvb, "diff", lambda r: f"- {r['task']} ({r['setting']}) {r['method']}: {r['note']}.",
            lambda r: f"- {r['task']} ({r['setting']}) {r['method']} − baseline: {_pts(r['diff'])} points "
                      f"(95% CI {_pts(r['ci_lo'])} to {_pts(r['ci_hi'])}; {int(r['n_languages'])} "
                      f"{'language pairs' if r['setting'] == 'generalized' else 'target languages'}, "
                      f"{int(r['n_seeds'])} matched seed(s); resampled: {r['resampled']})"
                      + (f" — {r['note']}" if r["note"] else "") + ".")
    L.append("")

    # -- RQ1
    L += ["### RQ1: does alignment track transfer?", ""]
    pr = res.rq1.primary
    where = "the last layer" if res.primary.layer == "last" else f"layer {res.primary.layer}"
    L.append(f"Primary analysis (declared in `report.primary`): `{res.rq1.metric or res.primary.metric}` at {where}, "
             f"across languages. Unit: the language; estimand: {ACROSS_ESTIMAND}. "
             "Test: the languages are permuted (one permutation for all checkpoints); CI: language-cluster "
             "bootstrap with a small-cluster correction."
             + (" Holm over tasks." if len(pr) > 1 else ""))
    L.append("")
    if pr is None or pr.empty:
        L.append("The primary test could not be run (no alignment and transfer rows to relate).")
    for _, r in (pr.iterrows() if pr is not None else []):
        if not np.isfinite(r.get("r", np.nan)):
            L.append(f"- {r['task']}: no test — {r['note']}.")
            continue
        p_use = r["p_holm"] if len(pr) > 1 else r["p"]
        rej = np.isfinite(p_use) and p_use <= a
        L.append(f"- {r['task']} (layer {r['layer']}): r = {_fmt(r['r'])} (95% CI {_fmt(r['r_lo'])} to "
                 f"{_fmt(r['r_hi'])}), {_p_text(r, a)}"
                 + (f", Holm p = {_fmt_p(r['p_holm'])}" if len(pr) > 1 else "")
                 + f"; n = {int(r['n_languages'])} languages × {int(r['n_checkpoints'])} checkpoints. "
                 + (f"**Relation found**: languages better aligned to English transfer "
                    f"{'better' if r['r'] > 0 else 'worse'}." if rej else
                    "**No relation found** at α = " + f"{a}" + " (not evidence of no relation; see the CI)."))
    L.append("")
    pw = res.rq1.primary_within
    if pw is not None and len(pw):
        L.append(f"Within languages (secondary, same measure): estimand: {WITHIN_ESTIMAND}; units: checkpoints "
                 "and languages (SEs clustered two-way by both).")
        L.append("")
        L += _row_lines(
            pw, "coef", lambda r: f"- {r['task']}: no fit — {r['note']}.",
            lambda r: f"- {r['task']}: +0.1 alignment goes with {_pts(0.1 * r['coef'])} points of transfer "
                      f"(95% CI {_pts(0.1 * r['ci_lo'])} to {_pts(0.1 * r['ci_hi'])}, p = {_fmt_p(r['p'])}, "
                      f"t with {int(r['df'])} df; partial R² of alignment {_fmt(r['partial_r2'], 3)}; "
                      f"n = {int(r['n'])} points, {int(r['n_languages'])} languages × {int(r['n_checkpoints'])} "
                      "checkpoints).")
        L.append("")
    ex = res.rq1.exploratory
    if ex is not None and len(ex) and "p_holm" in ex:
        n_t = int(ex["p"].notna().sum())
        n_rej = int((ex["p_holm"] <= a).sum())
        L.append(f"Exploratory: {n_rej} of {n_t} other metric × layer tests across languages reject after Holm "
                 "within that family; exploratory results suggest where to look, they are not findings.")
        L.append("")

    # -- RQ2
    L += ["### RQ2: do robust objectives help low-resource languages most?", ""]
    rq = res.rq2.slopes
    if rq is None or rq.empty:
        L.append("Not estimated: needs the baseline and another method among the checkpoints that pass the gate.")
    else:
        L.append(f"Estimand: {RQ2_ESTIMAND}. Unit: the language (one point per language, its gains averaged over "
                 "seeds and tasks); OLS t-test; Holm across methods. Negative = larger gains for lower-resource "
                 "languages.")
        L.append("")
        any_found = False
        for _, r in rq.iterrows():
            if not np.isfinite(r.get("slope_per_10x", np.nan)):
                L.append(f"- {r['method']}: no fit — {r['note']}.")
                continue
            rej = np.isfinite(r["p_holm"]) and r["p_holm"] <= a
            any_found |= bool(rej and r["slope_per_10x"] < 0)
            verdict = ("gains shrink with more pre-training data (helps low-resource languages most)"
                       if rej and r["slope_per_10x"] < 0 else
                       "gains grow with more pre-training data" if rej else "no dependence on size found")
            L.append(f"- {r['method']}: {_pts(r['slope_per_10x'], 2)} points per 10× (95% CI "
                     f"{_pts(r['ci_lo'], 2)} to {_pts(r['ci_hi'], 2)}, p = {_fmt_p(r['p'])}, Holm p = "
                     f"{_fmt_p(r['p_holm'])}; n = {int(r['n_languages'])} languages, {int(r['n_tasks'])} task(s), "
                     f"{int(r['n_seeds'])} seed(s)): {verdict}."
                     + (f" ({r['note']})" if r["note"] else ""))
        if not any_found:
            L += ["", "The data do not support the claim that robust training helps low-resource languages most."]
    L.append("")

    L += ["### What these data cannot say", "",
          "- Only one pre-trained encoder was studied; the results may not hold for other models or sizes.",
          "- The analysis is correlational: alignment is measured, not manipulated, so it cannot show that "
          "alignment causes transfer; language properties (pre-training data, script, family) can drive both.",
          *([f"- With {c['languages']} languages and {c.get('seeds', 0)} seed(s) the intervals are wide."]
            if c.get("languages") else []),  # no RQ1 rows (no alignment stage): nothing to size
          "- CC-100 sizes are the published XLM-R Table 6 numbers (see `xltlib.data.languages`)."]
    if protocol == "offline_dev_split":
        L.append("- The offline protocol trains on part of the English dev set, so English scores are not a clean "
                 "held-out estimate.")
    if res.notes:
        L += ["", *[f"*Note:* {n}" for n in res.notes]]
    return "\n".join(L) + "\n"
