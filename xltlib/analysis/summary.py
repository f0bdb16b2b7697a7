"""Step 6 of the analysis: the typed result of every step and its plain-words summary; and
:func:`analyze_run`, which runs the six steps on a run folder in order (the analysis page shows the same
calls, one per cell; ``xlt export`` writes what :func:`analyze_run` returns).

1. :func:`~xltlib.analysis.gate.apply_gate` - did each checkpoint learn its task in English?
2. :func:`~xltlib.analysis.compare.compare_methods` - each robust method against the baseline
3. :func:`~xltlib.analysis.merge.merge_points` - alignment beside the task score, per checkpoint and language
4. :func:`~xltlib.analysis.rq1.answer_rq1` - does alignment track transfer?
5. :func:`~xltlib.analysis.rq2.answer_rq2` - does robust training improve alignment, most for low-resource languages?
6. :func:`summarize` - the result and its summary, with the source paper's claims checked
   (:func:`~xltlib.analysis.literature.check_claims`)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from xltlib.analysis.alignment_compare import AlignmentComparison, alignment_target, compare_alignment
from xltlib.analysis.alignment_compare import summary_lines as alignment_comparison_lines
from xltlib.analysis.compare import MVB_ESTIMAND, PASSING, Comparison, compare_methods
from xltlib.analysis.gate import (MEMORIZED, Gate, apply_gate, collapse_text, decided_on, english_scores, scored_splits,
                                  selection_rows)
from xltlib.analysis.inference import ALPHA, p_words
from xltlib.analysis.item_inference import MIN_SEEDS, pooled_sensitivity
from xltlib.analysis.literature import check_claims
from xltlib.analysis.merge import Points, merge_points
from xltlib.analysis.rq1 import ACROSS_ESTIMAND, CHECKPOINT_ESTIMAND, RQ1, WITHIN_ESTIMAND, answer_rq1
from xltlib.analysis.rq2 import ALIGN_RQ2_ESTIMAND, RQ2, RQ2_ESTIMAND, answer_rq2
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
    literature: pd.DataFrame = field(default_factory=pd.DataFrame)  # the source paper's claims beside the estimates
    # method - baseline on the primary alignment (item-level interval) and alignment ~ method + drift
    alignment_comparison: AlignmentComparison = field(default_factory=AlignmentComparison)
    alpha: float = ALPHA
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # checkpoints, languages, seeds, tasks
    # cells of the run's grid with transfer rows, and in all: a run still under way is labelled interim
    progress: dict[str, int] = field(default_factory=dict)
    brief: str = ""  # the answers first, one bullet per question with its interval (markdown)
    summary: str = ""  # step 6: the plain-words summary (markdown), the brief at its top


def missing_cells(transfer: pd.DataFrame, expected_cells: list[str]) -> list[str]:
    """The grid cells without transfer rows."""
    key = "cell_id" if "cell_id" in transfer else "checkpoint"  # cells sharing a checkpoint match on the cell id
    done = set(transfer[key].dropna()) if len(transfer) else set()
    return sorted(set(expected_cells or []) - done)


def missing_cells_note(transfer: pd.DataFrame, expected_cells: list[str]) -> list[str]:
    """A note naming the grid cells without transfer rows (the analysis uses what exists)."""
    missing = missing_cells(transfer, expected_cells)
    return [f"Missing cells (no transfer results; analysed what exists): {', '.join(missing)}"] if missing else []


def interim_text(progress: dict[str, int]) -> str:
    """The brief's first line for a run still under way: its answers are from the cells that finished."""
    done, cells = progress.get("done", 0), progress.get("cells", 0)
    if not cells or done >= cells:
        return ""
    return (f"**Interim: {done} of {cells} cells of the grid have transfer results** (the others have not run yet or "
            "failed: the notes name them; the answers below are from these cells and may change when the rest "
            "finish).")


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
              notes: Sequence[str] = (), alpha: float = ALPHA, literature: pd.DataFrame | None = None,
              alignment_comparison: AlignmentComparison | None = None,
              progress: dict[str, int] | None = None) -> AnalysisResult:
    """Step 6: the result of steps 1-5 with their notes, the counts, and the summary (:func:`summary_markdown`).
    ``progress`` (cells with transfer rows and in all) labels an unfinished run's answers as interim."""
    res = AnalysisResult(primary=primary, gate=gate, comparison=comparison, points=points, rq1=rq1, rq2=rq2,
                         literature=pd.DataFrame() if literature is None else literature, alpha=alpha,
                         progress=dict(progress or {}),
                         notes=[*notes, *gate.notes, *points.notes, *rq1.notes, *rq2.notes])
    if alignment_comparison is not None:
        res.alignment_comparison = alignment_comparison
        res.notes += alignment_comparison.notes
    text = ""
    if points.relatable:
        merged, analysed = points.merged, points.analysed
        res.counts = dict(checkpoints=int(merged["checkpoint"].nunique()),
                          analysed_checkpoints=int(analysed["checkpoint"].nunique()) if len(analysed) else 0,
                          languages=int(merged["language"].nunique()), tasks=int(merged["task"].nunique()),
                          seeds=int(merged["seed"].nunique()) if "seed" in merged else 0,
                          seeds_by_task=(merged.groupby("task")["seed"].nunique().astype(int).to_dict()
                                         if "seed" in merged else {}))
        text = alignment_by_method_text(alignment, headline_metric or primary.metric)
    res.brief = brief_markdown(res)
    res.summary = summary_markdown(res, protocol=protocol, alignment_text=text)
    return res


def analyze_run(run) -> AnalysisResult:
    """The six steps on a run folder, in order, with the run's ``report`` settings.

    ``run`` needs ``load_results(kind)``, ``majority_rates()``, ``weight_drift()``, ``alignment_outcomes(metric,
    layer)``, ``cells()`` (each with a
    ``cell_id``), ``cfg.report`` and ``cfg.protocol.name``: :class:`xltlib.runner.run_dir.Run` has them."""
    report = run.cfg.report
    transfer, alignment = run.load_results("transfer"), run.load_results("alignment")
    cells = [c.cell_id for c in run.cells()]
    notes = missing_cells_note(transfer, cells)
    progress = dict(cells=len(cells), done=len(cells) - len(missing_cells(transfer, cells)))
    gate = apply_gate(transfer, run.majority_rates(), train=run.load_results("train"), selection=selection_rows(run),
                      scored=scored_splits(run))
    comparison = compare_methods(transfer, gate, n_boot=report.n_boot, seed=report.seed)
    points = merge_points(alignment, transfer, gate)
    drift = run.weight_drift()
    rq1 = answer_rq1(points, report.primary, n_boot=report.n_boot, n_perm=report.n_perm, seed=report.seed,
                     drift=drift, english=english_scores(gate))
    # alignment: method - baseline (items x checkpoints) and alignment ~ method + drift, passing checkpoints
    metric, layer = alignment_target(alignment, report.primary)
    outcomes = run.alignment_outcomes(metric, layer) if layer is not None else pd.DataFrame()
    alignment_cmp = compare_alignment(alignment, outcomes, gate.table, report.primary, drift=drift)
    rq2 = answer_rq2(points, gate, alignment, report.primary)
    literature = check_claims(comparison.scores, transfer, run.load_results("train"))
    return summarize(report.primary, gate, comparison, points, rq1, rq2, alignment=alignment,
                     headline_metric=report.correlation_metric, protocol=run.cfg.protocol.name, notes=notes,
                     literature=literature, alignment_comparison=alignment_cmp, progress=progress)


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
    return f"p {p_words(p)} ({how})" if "n_perm" in row else f"p {p_words(p)}"


def _row_lines(table: pd.DataFrame, value: str, empty, line) -> list[str]:
    """One summary line per table row: ``line(row)`` where ``value`` is a number, else ``empty(row)`` (the
    row's note says why it is empty)."""
    return [line(r) if np.isfinite(r.get(value, np.nan)) else empty(r) for _, r in table.iterrows()]


def _seed_counts(counts: dict) -> str:
    """"3 seed(s) per method", or per task where the tasks differ (a breadth task run at fewer seeds)."""
    by_task = counts.get("seeds_by_task") or {}
    if len(set(by_task.values())) > 1:
        return "seeds per method: " + ", ".join(f"{task} {n}" for task, n in sorted(by_task.items()))
    return f"{counts.get('seeds', 0)} seed(s) per method"


def summary_markdown(res: AnalysisResult, *, protocol: str | None = None, alignment_text: str = "") -> str:
    """The plain-words summary of an :class:`AnalysisResult`, built in this one place.

    Every claim states its unit, n and estimand; a relation is "found" only when the declared primary
    test rejects (Holm over tasks when there are several); the rest is labelled exploratory."""
    a = res.alpha
    c = res.counts
    L = ["## Summary", "", "### The answers in brief", "", res.brief or brief_markdown(res)]  # names the collapses
    if c:
        L += [f"Data: {c.get('checkpoints', 0)} fine-tuned checkpoints ({c.get('analysed_checkpoints', 0)} pass the "
              f"model-quality gate), {c.get('tasks', 0)} task(s), {c.get('languages', 0)} target languages with "
              f"both transfer and alignment rows (RQ1's points), {_seed_counts(c)}.", ""]

    # -- the gate
    L += ["### Do the models learn their tasks? (model-quality gate)", ""]
    g = res.gate.table
    if g is None or g.empty:
        L.append("No English scores: the gate could not be applied.")
    else:
        for task, t in g.groupby("task"):
            bar = t["bar"].dropna().iloc[0] if t["bar"].notna().any() else np.nan
            if not np.isfinite(bar):
                L.append(f"- {task}: English {100 * t['english'].mean():.1f}% (mean over {len(t)} checkpoints); no "
                         "majority rate or memorized-entity bar for this task kind, not gated.")
                continue
            n_fail = int((~t["passes"].astype(bool)).sum())
            L.append(f"- {task}: English scores from {100 * t['english'].min():.1f}% to {100 * t['english'].max():.1f}% "
                     f"across {len(t)} checkpoints (decided on {decided_on(t)}; a checkpoint passes "
                     + (f"when the CI of its F1 minus the memorized-entity F1 ({100 * bar:.1f}%, a lookup of the "
                        "training entities, on the same resampled sentences) lies above 0): "
                        if (t["bar_kind"] == MEMORIZED).any() else
                        f"when the lower end of its CI is above the majority rate {100 * bar:.1f}%): ")
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
        L.append(f"Estimand: {MVB_ESTIMAND}; 95% CI: t interval on an item bootstrap (item ids shared by every "
                 "language, seed and method) plus the seed variance pooled over the task's methods, or a side's own "
                 "arm's where larger; shown for "
                 "the checkpoints passing the gate and for every trained checkpoint (unit and n as stated per line).")
        L.append("")
        L += _row_lines(
            mvb, "diff", lambda r: f"- {r['task']} ({r['setting']}, {r['checkpoints']}) {r['method']}: {r['note']}.",
            lambda r: f"- {r['task']} ({r['setting']}, {r['checkpoints']}) {r['method']} − baseline: "
                      f"{_pts(r['diff'])} points ("
                      + (f"95% CI {_pts(r['ci_lo'])} to {_pts(r['ci_hi'])}, t with {r['df']:.0f} df; "
                         if np.isfinite(r["ci_lo"]) else "no CI; ")
                      + f"{int(r['n_languages'])} "
                      f"{'language pairs' if r['setting'] == 'generalized' else 'target languages'}, "
                      f"{int(r['n_items'])} items, {int(r['n_seeds'])} vs {int(r['n_baseline_seeds'])} seed(s); "
                      f"resampled: {r['resampled']})" + (f" — {r['note']}" if r["note"] else "") + ".")
        for (task, setting), t in mvb[mvb["checkpoints"] == PASSING].groupby(["task", "setting"], sort=True):
            if line := pooled_sensitivity(t.to_dict("records"), fmt=_pts):
                L += ["", f"{task} ({setting}): {line}"]
    L.append("")

    # -- alignment: method vs baseline, and "less drift?"
    L += alignment_comparison_lines(res.alignment_comparison)

    # -- RQ1
    L += ["### RQ1: does the alignment a checkpoint reaches track the transfer it gets?", ""]
    L += _rq1_lines(res)

    # -- RQ2
    L += ["### RQ2: does robust training improve alignment, most for low-resource languages?", ""]
    L += _rq2_alignment_lines(res.rq2.alignment, a, res.alignment_comparison.table)
    L += _rq2_transfer_lines(res.rq2.slopes, a)

    # -- the source paper's claims
    L += _literature_lines(res.literature)

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


def _reject(row, a, several: bool) -> bool:
    p = row["p_holm"] if several else row["p"]
    return bool(np.isfinite(p) and p <= a)


def _rq1_lines(res: AnalysisResult) -> list[str]:
    """RQ1: the declared primary unit first (checkpoint or language), the other unit as the secondary analysis, the
    two-way fixed-effects fit and the exploratory families."""
    a, rq = res.alpha, res.rq1
    where = "the last layer" if res.primary.layer == "last" else f"layer {res.primary.layer}"
    measure = f"`{rq.metric or res.primary.metric}` at {where}"

    def ck_lines(t: pd.DataFrame) -> list[str]:
        several = len(t) > 1
        return _row_lines(
            t, "coef", lambda r: f"- {r['task']}: no test — {r['note']}.",
            lambda r: f"- {r['task']} (layer {r['layer']}): +0.1 alignment goes with {_pts(0.1 * r['coef'])} points of "
                      f"transfer within a language (95% CI {_pts(0.1 * r['ci_lo'])} to {_pts(0.1 * r['ci_hi'])}), "
                      f"{_p_text(r, a)}" + (f", Holm p {p_words(r['p_holm'])}" if several else "")
                      + f"; within-language r = {_fmt(r['r_within'])}; n = {int(r['n_checkpoints'])} checkpoints × "
                      f"{int(r['n_languages'])} languages. "
                      + (f"**Relation found**: checkpoints that align a language better transfer to it "
                         f"{'better' if r['coef'] > 0 else 'worse'}." if _reject(r, a, several) else
                         f"**No relation found** at α = {a} (not evidence of no relation; see the CI).")
                      + (f" ({r['note']})" if r["note"] else ""))

    def lang_lines(t: pd.DataFrame) -> list[str]:
        several = len(t) > 1
        return _row_lines(
            t, "r", lambda r: f"- {r['task']}: no test — {r['note']}.",
            lambda r: f"- {r['task']} (layer {r['layer']}): r = {_fmt(r['r'])} (95% CI {_fmt(r['r_lo'])} to "
                      f"{_fmt(r['r_hi'])}), {_p_text(r, a)}" + (f", Holm p {p_words(r['p_holm'])}" if several else "")
                      + f"; n = {int(r['n_languages'])} languages × {int(r['n_checkpoints'])} checkpoints. "
                      + (f"**Relation found**: languages better aligned to English transfer "
                         f"{'better' if r['r'] > 0 else 'worse'}." if _reject(r, a, several) else
                         f"**No relation found** at α = {a} (not evidence of no relation; see the CI)."))

    by_ck = ("across checkpoints within each language. Unit: the checkpoint (methods × strengths × seeds of a task "
             f"that pass the gate); estimand: {CHECKPOINT_ESTIMAND}. Test: the checkpoint labels are permuted (a "
             "checkpoint's alignment over all its languages moves as one block); CI: the slopes that test does not "
             "reject.")
    by_lang = (f"across languages. Unit: the language; estimand: {ACROSS_ESTIMAND}. Test: the languages are permuted "
               "(one permutation for all checkpoints); CI: language-cluster bootstrap with a small-cluster correction.")
    holm = " Holm over tasks."
    ck, lang = rq.by_checkpoint, rq.across
    if rq.unit == "checkpoint":
        first, first_lines = by_ck + (holm if len(ck) > 1 else ""), ck_lines(ck)
        second = "Across languages (secondary: mostly what pre-training gave each language), same measure: " + by_lang
        second_lines = lang_lines(lang)
    else:
        first, first_lines = by_lang + (holm if len(lang) > 1 else ""), lang_lines(lang)
        second = "Across checkpoints within languages (secondary), same measure: " + by_ck
        second_lines = ck_lines(ck)
    L = [f"Primary analysis (declared in `report.primary`, unit: {rq.unit}): {measure}, {first}", ""]
    L += (first_lines or ["The primary test could not be run (no alignment and transfer rows to relate)."]) + [""]
    if learned := _learned_less_lines(rq.english_fits):
        L += ["Learned less? Across checkpoints (each checkpoint's mean alignment and transfer over the languages "
              "every checkpoint was scored in; OLS, t(checkpoints - parameters)), alignment's slope without and with "
              "each checkpoint's English selection score as a covariate: a checkpoint that learned the task less well "
              "scores lower in every language whatever its alignment, so the adjusted slope is alignment's relation "
              "to transfer at a given English score.", "", *learned, ""]
    if second_lines:
        L += [second, "", *second_lines, ""]
    pw = rq.within
    if pw is not None and len(pw):
        L += [f"Within checkpoints and languages (exploratory, same measure): estimand: {WITHIN_ESTIMAND}; units: "
              "checkpoints and languages (SEs clustered two-way by both).", ""]
        L += _row_lines(
            pw, "coef", lambda r: f"- {r['task']}: no fit — {r['note']}.",
            lambda r: f"- {r['task']}: +0.1 alignment goes with {_pts(0.1 * r['coef'])} points of transfer "
                      f"(95% CI {_pts(0.1 * r['ci_lo'])} to {_pts(0.1 * r['ci_hi'])}, p {p_words(r['p'])}, "
                      f"t with {int(r['df'])} df; partial R² of alignment {_fmt(r['partial_r2'], 3)}; "
                      f"n = {int(r['n'])} points, {int(r['n_languages'])} languages × {int(r['n_checkpoints'])} "
                      "checkpoints).")
        L.append("")
    for family, table in (("across checkpoints", rq.exploratory_by_checkpoint), ("across languages", rq.exploratory)):
        if table is not None and len(table) and "p_holm" in table and table["p"].notna().any():
            L += [f"Exploratory ({family}): {int((table['p_holm'] <= a).sum())} of {int(table['p'].notna().sum())} "
                  "other metric × layer tests reject after Holm within that family; exploratory results suggest where "
                  "to look, they are not findings.", ""]
    return L


def _learned_less_lines(fits: pd.DataFrame) -> list[str]:
    """One line per task: the slope across checkpoints within languages without and with the English score."""
    if fits is None or fits.empty:
        return []
    out = []
    for task, t in fits.groupby("task", sort=True):
        parts = [f"{r['model']}: " + (f"+0.1 alignment goes with {_pts(0.1 * r['coef'])} points (95% CI "
                                      f"{_pts(0.1 * r['ci_lo'])} to {_pts(0.1 * r['ci_hi'])}, p {p_words(r['p'])}, "
                                      f"t with {int(r['df'])} df)" if np.isfinite(r.get("coef", np.nan))
                                      else f"no fit ({r['note']})") for _, r in t.iterrows()]
        n = t["n_checkpoints"].max()
        out.append(f"- {task}: " + "; ".join(parts) + (f"; {int(n)} checkpoints." if np.isfinite(n) else "."))
    return out


def _ci_pts(r, prefix: str, est: str, nd: int = 1) -> str:
    """'+1.2 (95% CI +0.3 to +2.1, t with 4.0 df)' from the columns ``est``, ``<prefix>_ci_lo``, ``<prefix>_ci_hi``
    and ``<prefix>_df``; the estimate alone when there is no interval."""
    if np.isfinite(r.get(f"{prefix}_ci_lo", np.nan)):
        return (f"{_pts(r[est], nd)} (95% CI {_pts(r[f'{prefix}_ci_lo'], nd)} to {_pts(r[f'{prefix}_ci_hi'], nd)}, "
                f"t with {r[f'{prefix}_df']:.1f} df)")
    return f"{_pts(r[est], nd)} (no interval)"


def _rq2_alignment_lines(table: pd.DataFrame, a: float, vs_baseline: pd.DataFrame | None = None) -> list[str]:
    """RQ2's primary answer: alignment gains over the baseline and over the pre-trained encoder, and their slopes on
    CC-100 size; then, per method, whether it raises alignment at all or only loses less of it."""
    if table is None or table.empty:
        return ["Alignment gains: not estimated (needs Tatoeba alignment rows at the primary metric and layer for the "
                "baseline or the pre-trained encoder and another method).", ""]
    t = table[np.isfinite(table["n_languages"].astype(float))]
    pool = int(t["pool"].max()) if len(t) and np.isfinite(t["pool"].max()) else 0
    L = [f"Primary (alignment on Tatoeba, every language with a CC-100 size scored on the common pool of {pool} "
         f"sentences): estimand: {ALIGN_RQ2_ESTIMAND}. Unit: the language; the checkpoints (seeds) are the clustered "
         "unit (sentences are not resampled: their noise is inside each language's residual): t intervals from the "
         "seed and language strata. Holm across the rows of each reference. Points = alignment × 100; a negative "
         "slope = larger gains for lower-resource languages. The mean gain over the baseline is the alignment "
         "comparison's estimate; its interval here uses each arm's own seeds (S - 1 df, the slope's machinery), "
         "the comparison's crosses the parallel sentences with the checkpoints (the pooled seed variance, or a "
         "side's own where larger) and is Holm-adjusted over the arms; that one decides \"better or worse than the "
         "baseline\".", ""]
    for _, r in table.iterrows():
        head = f"- {r['task']} · {r['method']} − {r['reference']}"
        if not np.isfinite(r.get("mean_gain", np.nan)):
            L.append(f"{head}: no estimate — {r['note']}.")
            continue
        slope_rej = np.isfinite(r["slope_p_holm"]) and r["slope_p_holm"] <= a
        verdict = ("" if not np.isfinite(r["slope_p_holm"]) else
                   " — gains larger for lower-resource languages" if slope_rej and r["slope_per_10x"] < 0 else
                   " — gains larger for higher-resource languages" if slope_rej else
                   " — no dependence on size found")
        L.append(f"{head}: mean {_ci_pts(r, 'mean', 'mean_gain')} points; slope "
                 f"{_ci_pts(r, 'slope', 'slope_per_10x', 2)} points per 10× CC-100 size, Holm p "
                 f"{p_words(r['slope_p_holm'])}{verdict}; {int(r['n_languages'])} languages, {int(r['n_seeds'])} seed(s)"
                 + (f" ({r['note']})" if r["note"] else "") + ".")
    L.append("")
    L += _raise_or_lose_less(table, vs_baseline, a)
    return L


RAISES, LOSES_LESS, LOSES_MORE, LOSES_LIKE, NO_GAIN, NO_INTERVAL = (
    "raises", "loses less", "loses more", "loses like the baseline", "no gain", "no interval")


def raise_or_lose_less(table: pd.DataFrame, vs_baseline: pd.DataFrame | None = None,
                       alpha: float = ALPHA) -> dict[tuple[str, str], dict]:
    """Per (task, method): does it raise alignment above the pre-trained encoder (RQ2's gain over it), or only lose
    less than the baseline? The comparison with the baseline is the alignment comparison's (``vs_baseline``: the
    item x checkpoint interval, the seed variance pooled over the task's arms or a side's own where larger, the one
    its section prints, Holm over the task's arms where the table has ``p_holm``) where it has the arm, else RQ2's
    own gain over the baseline. Returns {(task, method): dict(verdict, vs_pretrained,
    vs_baseline)} with the verdict one of RAISES, LOSES_LESS, LOSES_MORE, LOSES_LIKE, NO_GAIN, NO_INTERVAL."""
    out = {}
    pre = table[table["reference"] == "pretrained"].set_index(["task", "method"])
    own = table[table["reference"] == "baseline"].set_index(["task", "method"])
    pooled = (vs_baseline[np.isfinite(vs_baseline["diff"].astype(float))].drop_duplicates(["task", "method"])
              .set_index(["task", "method"]) if vs_baseline is not None and len(vs_baseline) else pd.DataFrame())
    for (task, method), r in own.iterrows():
        if (task, method) not in pre.index or (task, "baseline") not in pre.index:
            continue
        m = pre.loc[(task, method)]
        if (task, method) in pooled.index:
            b = pooled.loc[(task, method)]
            base_lo, base_hi = b["ci_lo"], b["ci_hi"]
            above, below = base_lo > 0, base_hi < 0
            if np.isfinite(b.get("p_holm", np.nan)):  # the verdict of the comparison's own line: Holm over the arms
                above, below = (b["p_holm"] <= alpha and b["diff"] > 0), (b["p_holm"] <= alpha and b["diff"] < 0)
        else:
            base_lo, base_hi = r["mean_ci_lo"], r["mean_ci_hi"]
            above, below = base_lo > 0, base_hi < 0
        if not all(np.isfinite(v) for v in (m["mean_ci_lo"], base_lo)):
            verdict = NO_INTERVAL
        elif m["mean_ci_lo"] > 0:
            verdict = RAISES
        elif above:
            verdict = LOSES_LESS
        elif m["mean_ci_hi"] < 0 and below:
            verdict = LOSES_MORE
        elif m["mean_ci_hi"] < 0:
            verdict = LOSES_LIKE
        else:
            verdict = NO_GAIN
        out[(task, method)] = dict(verdict=verdict, vs_pretrained=m["mean_gain"],
                                   baseline_vs_pretrained=pre.loc[(task, "baseline"), "mean_gain"])
    return out


def _raise_or_lose_less(table: pd.DataFrame, vs_baseline: pd.DataFrame | None = None,
                        alpha: float = ALPHA) -> list[str]:
    """The summary's lines of :func:`raise_or_lose_less`."""
    words = {RAISES: "**raises alignment** above the pre-trained encoder.",
             LOSES_LESS: "**loses less alignment than the baseline** but does not raise it above the pre-trained "
                         "encoder.",
             LOSES_MORE: "loses alignment, more than the baseline.",
             LOSES_LIKE: "loses alignment against the pre-trained encoder, no differently from the baseline (its "
                         "difference from the baseline is not significant after Holm, or its interval covers 0).",
             NO_GAIN: "no gain in alignment found over the baseline or the pre-trained encoder."}
    out = []
    for (task, method), v in raise_or_lose_less(table, vs_baseline, alpha).items():
        if v["verdict"] == NO_INTERVAL:
            out.append(f"- {task} · {method}: raises alignment or only loses less? No interval (too few seeds); "
                       f"point estimates: {_pts(v['vs_pretrained'])} points vs the pre-trained encoder (baseline "
                       f"{_pts(v['baseline_vs_pretrained'])}).")
        else:
            out.append(f"- {task} · {method}: {words[v['verdict']]}")
    return (["Does robust training raise alignment at all, or only lose less of it than the baseline? (above the "
             "pre-trained encoder: RQ2's gain over it; less than the baseline: the alignment comparison, Holm over the "
             "task's arms)",
             "", *out, ""] if out else [])


def _rq2_transfer_lines(rq: pd.DataFrame, a: float) -> list[str]:
    """RQ2's secondary table: the task score's gains over the baseline against CC-100 size."""
    if rq is None or rq.empty:
        return ["Transfer gains (secondary): not estimated (needs the baseline and another method among the "
                "checkpoints that pass the gate).", ""]
    L = [f"Secondary (transfer gains on the languages the tasks score): estimand: {RQ2_ESTIMAND}. Unit: the language "
         "(one point per language, its gains averaged over seeds and tasks); OLS t-test; Holm across methods.", ""]
    for _, r in rq.iterrows():
        if not np.isfinite(r.get("slope_per_10x", np.nan)):
            L.append(f"- {r['method']}: no fit — {r['note']}.")
            continue
        rej = np.isfinite(r["p_holm"]) and r["p_holm"] <= a
        verdict = ("gains shrink with more pre-training data (helps low-resource languages most)"
                   if rej and r["slope_per_10x"] < 0 else
                   "gains grow with more pre-training data" if rej else "no dependence on size found")
        L.append(f"- {r['method']}: {_pts(r['slope_per_10x'], 2)} points per 10× (95% CI "
                 f"{_pts(r['ci_lo'], 2)} to {_pts(r['ci_hi'], 2)}, p {p_words(r['p'])}, Holm p "
                 f"{p_words(r['p_holm'])}; n = {int(r['n_languages'])} languages, {int(r['n_tasks'])} task(s), "
                 f"{int(r['n_seeds'])} seed(s)): {verdict}." + (f" ({r['note']})" if r["note"] else ""))
    return L + [""]


def _literature_lines(lit: pd.DataFrame) -> list[str]:
    """The source paper's claims beside this study's estimates (:mod:`xltlib.analysis.literature`)."""
    if lit is None or lit.empty:
        return []
    L = ["### The source paper's claims, checked (Huang et al. 2021, EMNLP)", "",
         "Rule: the 95% CI covers the claimed size and excludes 0 → reproduced (above the claim: reproduced, "
         "larger); it includes 0, or lies above 0 but below the claim → not reproduced; it lies entirely below 0 → "
         "contradicted; no interval (too few seeds) → said so.", ""]
    for _, r in lit.iterrows():
        where = " · ".join(str(r[c]) for c in ("task", "method", "checkpoints") if isinstance(r.get(c), str) and r[c])
        if not np.isfinite(r.get("estimate", np.nan)):
            L.append(f"- {r['claim']}{f' ({where})' if where else ''}: {r['verdict']} — {r['detail']}.")
            continue
        ci = (f"95% CI {r['ci_lo']:+.1f} to {r['ci_hi']:+.1f}" if np.isfinite(r["ci_lo"]) else "no interval")
        L.append(f"- {r['claim']} ({where}): {r['estimate']:+.1f} points ({ci}) → **{r['verdict']}**"
                 + (f" ({r['detail']})" if r["detail"] else "") + ".")
    whys = lit.dropna(subset=["why_it_may_differ"]).drop_duplicates("task")
    L += ["", *[f"Why {t} may differ: {w}." for t, w in zip(whys["task"], whys["why_it_may_differ"])],
          f"What was checked of the claims: {'; '.join(dict.fromkeys(lit['claim_checked'].dropna()))}.", ""]
    return L


# ------------------------------------------------------------------------------------- the answers in brief
def _arm_ci(r, est: str = "diff", lo: str = "ci_lo", hi: str = "ci_hi") -> str:
    """'pgd_r01 +0.4 (-1.0 to +1.8)', or the estimate and 'no interval' when the arm has too few seeds."""
    if not np.isfinite(r.get(est, np.nan)):
        return f"{r['method']} n/a"
    ci = (f"{_pts(r[lo])} to {_pts(r[hi])}" if np.isfinite(r.get(lo, np.nan)) else
          "no interval: too few seeds" if _few_seeds(r) else "no interval")
    return f"{r['method']} {_pts(r[est])} ({ci})"


def _few_seeds(r) -> bool:
    """Fewer seeds than an interval needs (the method's or the baseline's)."""
    n = min(float(r.get(c, np.inf)) for c in ("n_seeds", "n_baseline_seeds"))
    return n < MIN_SEEDS


def _above_below(t: pd.DataFrame, lo: str = "ci_lo", hi: str = "ci_hi", alpha: float = 0.05) -> str:
    """Which arms differ from the baseline, in words: above / below after Holm's adjustment over the arms with an
    interval (column ``p_holm``, where the table has it), and any arm whose CI alone excludes 0."""
    with_ci = t[np.isfinite(t[lo].astype(float))] if lo in t else t.iloc[:0]
    if with_ci.empty:
        return (f"no intervals (fewer than {MIN_SEEDS} seeds per arm)" if all(_few_seeds(r) for _, r in t.iterrows())
                else "no intervals (the notes below say why)")
    some = "" if len(with_ci) == len(t) else f" of the {len(with_ci)} arms with an interval"

    def differs(p_col: str, lo_col: str, hi_col: str) -> pd.Series:
        """Held after Holm (``p_col``); a row without a Holm p falls back to its own CI."""
        outside = (with_ci[lo_col] > 0) | (with_ci[hi_col] < 0)
        if p_col not in with_ci:
            return outside
        p = with_ci[p_col].astype(float)
        return (p <= alpha).where(p.notna(), outside)

    outside = (with_ci[lo] > 0) | (with_ci[hi] < 0)
    held = differs("p_holm", lo, hi)
    adjusted = f" (Holm over {len(with_ci)} arms)" if "p_holm" in with_ci and len(with_ci) > 1 else ""
    up = list(with_ci.loc[held & (with_ci["diff"] > 0), "method"])
    down = list(with_ci.loc[held & (with_ci["diff"] < 0), "method"])
    unadjusted = list(with_ci.loc[outside & ~held, "method"])
    parts = [f"above{some}{adjusted}: {', '.join(up)}" if up else "",
             f"below{some}{adjusted}: {', '.join(down)}" if down else "",
             f"CI excludes 0 but not after Holm: {', '.join(unadjusted)}" if unadjusted else ""]
    if not up and not down:
        parts[0] = f"no arm{some} differs from the baseline" + (adjusted or ("" if unadjusted else
                                                                             " (every CI covers 0)"))
    if {"p_holm_pooled", "ci_lo_pooled", "ci_hi_pooled"} <= set(with_ci):  # a verdict resting on the variance rule
        pooled = differs("p_holm_pooled", "ci_lo_pooled", "ci_hi_pooled")
        if not pooled.equals(held):
            up_p = list(with_ci.loc[pooled & (with_ci["diff"] > 0), "method"])
            down_p = list(with_ci.loc[pooled & (with_ci["diff"] < 0), "method"])
            seeds = int(min(with_ci["n_seeds"].min(), with_ci.get("n_baseline_seeds", with_ci["n_seeds"]).min()))
            parts.append(f"with one seed variance shared by every arm ({seeds} seeds cannot check it), after Holm: "
                         + "; ".join(x for x in (f"above: {', '.join(up_p)}" if up_p else "",
                                                 f"below: {', '.join(down_p)}" if down_p else "") if x)
                         if up_p or down_p else "with one seed variance shared by every arm, no arm differs either")
    return "; ".join(p for p in parts if p)


def brief_markdown(res: AnalysisResult) -> str:
    """The answers first, one bullet per question, each with its interval: which checkpoints learned, robust
    training vs the baseline on transfer, RQ1 and RQ2 at their declared primary analyses, the source paper's
    claims. The full summary (units, n, estimands, secondary analyses) follows it."""
    a = res.alpha
    L = []
    if interim := interim_text(res.progress):
        L.append(f"- {interim}")
    if collapsed := collapse_text(res.gate.table):
        L.append(f"- {collapsed}")
    mvb = res.comparison.scores
    if mvb is not None and len(mvb):
        rows = mvb[(mvb["setting"] == "standard") & (mvb["checkpoints"] == PASSING)]
        for task, t in rows.groupby("task", sort=True):
            head = f"- **Robust training vs the baseline, {task} zero-shot transfer**"
            if not np.isfinite(t["diff"].astype(float)).any():
                L.append(f"{head}: no comparison — {t['note'].iloc[0]}.")
                continue
            L.append(f"{head} (points, mean over {int(t['n_languages'].max())} target languages, checkpoints passing "
                     "the gate, 95% CI): " + "; ".join(_arm_ci(r) for _, r in t.iterrows()) + f" — {_above_below(t, alpha=a)}.")
    rq = res.rq1
    primary = rq.by_checkpoint if rq.unit == "checkpoint" else rq.across
    if primary is not None and len(primary):
        est = "coef" if rq.unit == "checkpoint" else "r"
        for _, r in primary.iterrows():
            if not np.isfinite(r.get(est, np.nan)):
                L.append(f"- **RQ1, {r['task']}**: no test — {r['note']}.")
                continue
            size = (f"+0.1 alignment goes with {_pts(0.1 * r['coef'])} points of transfer within a language (95% CI "
                    f"{_pts(0.1 * r['ci_lo'])} to {_pts(0.1 * r['ci_hi'])}; {int(r['n_checkpoints'])} checkpoints)"
                    if est == "coef" else
                    f"r = {_fmt(r['r'])} across languages (95% CI {_fmt(r['r_lo'])} to {_fmt(r['r_hi'])}; "
                    f"{int(r['n_languages'])} languages)")
            found = _reject(r, a, len(primary) > 1)
            adj = rq.english_fits
            adj = adj[(adj["task"] == r["task"]) & (adj["model"] != "checkpoint means")] if len(adj) else adj
            net = ""
            if len(adj) and np.isfinite(adj["coef"].iloc[0]):
                e = adj.iloc[0]
                net = (f" Across checkpoints at a given English selection score: {_pts(0.1 * e['coef'])} points per "
                       f"+0.1 (95% CI {_pts(0.1 * e['ci_lo'])} to {_pts(0.1 * e['ci_hi'])}, p {p_words(e['p'])}).")
            L.append(f"- **RQ1, {r['task']}** (primary, unit: {rq.unit}): {size} — "
                     + ("**relation found**." if found else f"no relation found at α = {a}.") + net)
    ac = res.alignment_comparison.table
    if ac is not None and len(ac) and np.isfinite(ac["diff"].astype(float)).any():
        scored = ac[np.isfinite(ac["diff"].astype(float))]
        many = scored["model"].nunique() > 1  # the Holm family is per model too: name it when there are several
        for (task, dataset, model), t in scored.groupby(["task", "dataset", "model"], sort=True):
            L.append(f"- **Alignment, robust training vs the baseline, {task}-trained checkpoints"
                     + (f" of {model}" if many else "") + "** "
                     f"(`{res.alignment_comparison.metric}` × 100 on {dataset}, mean over {int(t['n_languages'].max())} "
                     "languages, seed-matched, checkpoints passing the gate, 95% CI): "
                     + "; ".join(_arm_ci(r) for _, r in t.iterrows()) + f" — {_above_below(t, alpha=a)}.")
    al = res.rq2.alignment
    if al is not None and len(al):
        fitted = al[np.isfinite(al["slope_per_10x"].astype(float))]
        verdicts = raise_or_lose_less(al, res.alignment_comparison.table, a)
        for task, t in fitted[fitted["reference"] == "baseline"].groupby("task", sort=True):
            low = list(t.loc[(t["slope_p_holm"] <= a) & (t["slope_per_10x"] < 0), "method"])
            high = list(t.loc[(t["slope_p_holm"] <= a) & (t["slope_per_10x"] > 0), "method"])
            verdict = ("**larger gains for lower-resource languages**: " + ", ".join(low) if low else
                       "no arm gains more for lower-resource languages (Holm)") + \
                      (f"; larger for higher-resource languages: {', '.join(high)}" if high else "")
            if not np.isfinite(t["slope_ci_lo"].astype(float)).any():  # no interval: nothing was tested
                verdict = f"no intervals (fewer than {MIN_SEEDS} seeds per arm)"
            said = {m: verdicts.get((task, m), {}).get("verdict") for m in t["method"]}
            raised, less = [m for m, v in said.items() if v == RAISES], [m for m, v in said.items() if v == LOSES_LESS]
            above_pre = (" Above the pre-trained encoder, or only less lost than the baseline? No intervals."
                         if all(v in (NO_INTERVAL, None) for v in said.values()) else
                         (f" Above the pre-trained encoder: {', '.join(raised)}" if raised else
                          " No arm raises alignment above the pre-trained encoder")
                         + (f"; {', '.join(less)} only lose less of it than the baseline." if less else "."))
            L.append(f"- **RQ2, {task}-trained checkpoints** (primary: slope of the alignment gain over the baseline "
                     f"per 10× CC-100 size, × 100, {int(t['n_languages'].max())} Tatoeba languages, 95% CI): "
                     + "; ".join(_arm_ci(r, "slope_per_10x", "slope_ci_lo", "slope_ci_hi") for _, r in t.iterrows())
                     + f" — {verdict}." + above_pre)
    lit = res.literature
    if lit is not None and len(lit) and "verdict" in lit:
        scored = lit[lit["checkpoints"] == PASSING] if "checkpoints" in lit and (lit["checkpoints"] == PASSING).any() \
            else lit
        for claim, c in scored.groupby("claim", sort=False):
            counts = c["verdict"].value_counts()
            L.append(f"- **The source paper: {claim}** — " + ", ".join(f"{v}: {n} of {len(c)} arms"
                                                                     for v, n in counts.items()) + ".")
    if not L:
        L.append("No result yet: the run has no scored checkpoints.")
    return "\n".join(L) + "\n"
