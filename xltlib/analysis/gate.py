"""Step 1 of the analysis, the model-quality gate: did each checkpoint learn its task in English?

Per (task, checkpoint) of a classification task: the English score with its Wilson CI against the majority-label
rate, decided on the English *selection* rows (``protocol.selection``: PAWS-X English dev, XNLI held-out premise
blocks; rows neither trained on nor scored): the selected epoch's ``select_score`` from the train log, its n the
number of selection rows, the majority rate that of their labels. Only a run without selection rows falls back to
the English *test* rows (the translations of the items scored in every language), and the table and the notes say
so. An entity-tagging task (PAN-X) has no majority rate: its kept weights' span F1 on the selection sentences must
beat the memorized-entity F1 on the same sentences (:mod:`xltlib.evaluation.memorized`, the CoNLL-2003 baseline),
the bootstrap CI over sentences of the difference above 0. Other task kinds (UD-POS, QA, mAP) are not gated:
their test score's bootstrap CI is shown. The bar a row was held to is in ``bar`` and named in ``bar_kind``.

A checkpoint whose CI does not clear its bar has no transfer to explain, so its rows are left out of every
later step (:func:`apply_gate`). The note names a run whose training loss never left the majority plateau
(:mod:`xltlib.training.plateau`, recorded in the train log).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import stats

from xltlib.analysis.score import SOURCE, score_rows
from xltlib.data import tasks as T
from xltlib.data.split import SELECTION, select_records, train_records
from xltlib.evaluation.memorized import is_entity_tagging, memorized_entity_counts
from xltlib.evaluation.metrics import f1_from_counts
from xltlib.training.plateau import FLAGGED, PRIOR_KINDS, plateau_note

GATE_COLS = ["task", "checkpoint", "method", "seed", "split", "english", "ci_lo", "ci_hi", "ci_level", "n", "majority",
             "bar", "bar_kind", "passes", "plateau", "precision", "note"]
MAJORITY = "majority rate"
MEMORIZED = "memorized-entity F1"
N_BOOT_SPANS = 2000  # the bootstrap of a tagger's selection F1: its tail at 1 - 0.05 / 5 epochs holds 10 replicates
TEST_FALLBACK = ("DECIDED ON ENGLISH TEST ROWS: the run has no selection rows (protocol.selection: false), and "
                 "test rows are the translations of the items scored in every language")


@dataclass(frozen=True)
class SelectionRows:
    """A task's English checkpoint-selection rows, as the gate uses them."""

    task: str
    n: int  # rows scored after every epoch (xltlib.training.loop.selection_score)
    majority: float  # share of the most frequent label among them (NaN for an entity-tagging task)
    source: str  # where they come from, in words
    # entity tagging: the memorized-entity tagger's (correct, predicted, gold) chunk counts per row (the bar), and
    # each checkpoint's (xltlib.runner.results.selection_counts)
    reference: np.ndarray | None = None
    counts: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def spans(self) -> bool:
        """Decided on span F1 against the memorized-entity bar, not on accuracy against the majority rate."""
        return self.reference is not None

    @property
    def memorized(self) -> float:
        """The memorized-entity F1 on these rows (NaN for a classification task)."""
        return float(f1_from_counts(self.reference)) if self.spans else math.nan

    @property
    def bar(self) -> float:
        return self.memorized if self.spans else self.majority

    @property
    def bar_kind(self) -> str:
        return MEMORIZED if self.spans else MAJORITY

    @property
    def label(self) -> str:
        """The gate table's ``split``: e.g. "selection (pawsx English dev, 500 rows)"."""
        return f"selection ({self.source}, {self.n} rows)"


def selection_rows(run) -> dict[str, SelectionRows] | None:
    """Per classification and entity-tagging task of ``run`` (``cfg``, ``split(task)``, ``data_dir``, ``path``,
    ``selection_counts()``: a run folder), its English selection rows; None when the run has none
    (``protocol.selection: false``: the gate falls back to test). An entity-tagging task's rows carry the
    memorized-entity F1 on them (learned from the run's own training rows) and each checkpoint's chunk counts.

    A task without selection rows in a run that asked for them is an error naming the task: the gate needs them."""
    if not run.cfg.protocol.selection:
        return None
    out = {}
    counts = None
    for task in run.cfg.grid.task:
        spec = T.get_task(task)
        if spec.kind not in PRIOR_KINDS and not is_entity_tagging(spec):
            continue
        split = run.split(task)
        recs = select_records(split, run.data_dir) if split.select_rows else []
        if not recs:
            raise ValueError(f"task {task}: no English selection rows (select_rows in "
                             f"{run.path('data', f'{task}.json')}) although protocol.selection is on; selection is "
                             "required for the model-quality gate: re-run the data and train stages")
        where = ("English dev" if split.protocol == "zero_shot" and SELECTION.get(task) == "dev" else
                 "held-out groups of the English training rows: " + ", ".join(split.select_rows))
        if is_entity_tagging(spec):
            counts = run.selection_counts() if counts is None else counts
            bar = memorized_entity_counts(train_records(split, run.data_dir), recs)
            out[task] = SelectionRows(task, len(recs), math.nan, f"{task} {where}", reference=bar, counts=counts)
            continue
        labels = np.bincount([int(r["label"]) for r in recs])
        out[task] = SelectionRows(task, len(recs), float(labels.max() / len(recs)), f"{task} {where}")
    return out


def with_counts(selection: dict[str, SelectionRows] | None,
                counts: dict[str, np.ndarray]) -> dict[str, SelectionRows] | None:
    """``selection`` with the entity-tagging tasks' checkpoint chunk counts replaced by ``counts``."""
    if selection is None:
        return None
    return {task: replace(s, counts=counts) if s.spans else s for task, s in selection.items()}


def scored_splits(run) -> dict[str, str]:
    """Per task of ``run``, the split its transfer rows score ("test", or "dev" where the data have no test)."""
    return {task: run.split(task).eval_split for task in run.cfg.grid.task}


def train_verdicts(train: pd.DataFrame | None) -> pd.DataFrame:
    """Per checkpoint of the train logs (``results/train``): the selected epoch's English selection score (the best
    ``select_score``: checkpoint selection keeps the best epoch), how many epochs selection chose among, and the
    plateau check's verdict (``plateau``, ``prior_entropy``, ``plateau_tail_loss``; "" and NaN in logs written
    before it existed), and the precision it trained in (``precision``: "bf16" or "fp32", "" where not recorded). A clean epoch (``train.clean_epochs``) is scored in the log but never kept, so it counts in
    neither: a robust run that scored well in its clean epoch and then collapsed is judged on what it kept."""
    cols = ["select_score", "epochs_scored", "plateau", "prior_entropy", "plateau_tail_loss", "precision"]
    if train is None or not len(train) or "checkpoint" not in train:
        return pd.DataFrame(columns=cols)
    log = train[train["metric"] == "train_loss"] if "metric" in train else train
    numbers = ("select_score", "prior_entropy", "plateau_tail_loss")
    log = log.assign(**{c: log[c] if c in log else np.nan for c in numbers},
                     plateau=log["plateau"].where(log["plateau"].map(lambda v: isinstance(v, str)), "")
                     if "plateau" in log else "",
                     precision=log["precision"].where(log["precision"].map(lambda v: isinstance(v, str)), "")
                     if "precision" in log else "")
    if "clean_epoch" in log:
        log = log.assign(select_score=log["select_score"].where(~log["clean_epoch"].fillna(False).astype(bool)))
    by = log.groupby("checkpoint")
    out = pd.DataFrame(dict(select_score=by["select_score"].max(), epochs_scored=by["select_score"].count(),
                            plateau=by["plateau"].first(), prior_entropy=by["prior_entropy"].first(),
                            plateau_tail_loss=by["plateau_tail_loss"].first(), precision=by["precision"].first()))
    return out[cols]


def wilson_ci(p: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (accuracy over n examples)."""
    if not n or not np.isfinite(p):
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + level / 2))
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return c - h, c + h


def quality_gate(transfer: pd.DataFrame, majority: dict[str, float] | None, *, train: pd.DataFrame | None = None,
                 selection: dict[str, SelectionRows] | None = None, scored: dict[str, str] | None = None,
                 level: float = 0.95) -> pd.DataFrame:
    """Per (task, checkpoint) of ``transfer``: the English score the gate decides on, its CI and the majority rate.

    ``majority``: the test rows' majority rate per classification task (the tasks gated); ``train``: the train logs;
    ``selection``: :func:`selection_rows` (None: the run has none, every gated task falls back to its test rows,
    and the note says so); ``scored``: the split the transfer rows score per task (:func:`scored_splits`).
    With selection rows the score is the selected epoch's ``select_score`` and its Wilson CI is taken at
    ``1 - (1 - level) / E`` over the E epochs selection chose among (the best of E scores on the same rows is an
    optimistic estimate; Bonferroni bounds the chance that a model at the majority rate passes by luck).
    ``passes`` is False when the CI's lower bound does not exceed the majority rate or there is no English score.
    An entity-tagging task with selection rows is decided on its kept weights' span F1 over the selection
    sentences, with a percentile bootstrap CI over sentences at the same level, against the memorized-entity F1
    (``bar``, ``bar_kind``). Tasks without a bar (UD-POS, QA, retrieval; tagging without selection rows) are not
    gated and say so. A gated task of a run with selection rows whose rows or scores are missing is an error naming
    the task."""
    majority, scored = majority or {}, scored or {}
    logs = train_verdicts(train)
    rows = []
    for (task, ck), g in score_rows(transfer).groupby(["task", "checkpoint"], sort=True):
        log = logs.loc[ck] if ck in logs.index else None
        row = dict(task=task, checkpoint=ck, method=g["method"].iloc[0] if "method" in g else "",
                   seed=g["seed"].iloc[0] if "seed" in g else -1, split=scored.get(task, "test"), english=math.nan,
                   ci_lo=math.nan, ci_hi=math.nan, ci_level=level, n=0, majority=majority.get(task, math.nan),
                   bar=majority.get(task, math.nan), bar_kind=MAJORITY if task in majority else "",
                   passes=True, plateau=log["plateau"] if log is not None else "",
                   precision=log["precision"] if log is not None else "", note="")
        gated = task in majority and np.isfinite(majority[task])
        spans = selection is not None and task in selection and selection[task].spans
        if selection is not None and (gated or spans):
            row = selection_verdict(row, selection.get(task), log, level)
        else:
            row = _scored_row(row, g[g["language"] == SOURCE], gated, level)
        if row["plateau"] in FLAGGED:
            row["note"] = "; ".join(filter(None, [row["note"], plateau_note(row["plateau"], log["plateau_tail_loss"],
                                                                            log["prior_entropy"])]))
        rows.append(row)
    return pd.DataFrame(rows, columns=GATE_COLS)


def selection_verdict(row: dict, sel: SelectionRows | None, log: pd.Series | None, level: float) -> dict:
    """``row`` decided on its task's English selection rows and the selection scores in its train log (an
    entity-tagging task's: :func:`span_verdict`)."""
    task, ck = row["task"], row["checkpoint"]
    if sel is None:
        raise ValueError(f"task {task}: the run has no English selection rows for it, though it has them for other "
                         "tasks; selection is required for the model-quality gate")
    lvl = 1 - (1 - level) / epochs_scored(task, ck, log)
    if sel.spans:
        return span_verdict(row, sel, lvl)
    score = float(log["select_score"])
    lo, hi = wilson_ci(score, sel.n, lvl)
    passes = bool(lo > sel.majority)
    note = "" if passes else "English selection score does not clear the selection rows' majority rate: excluded " \
                             "from RQ1/RQ2"
    return dict(row, split=sel.label, english=score, ci_lo=lo, ci_hi=hi, ci_level=lvl, n=sel.n, majority=sel.majority,
                bar=sel.majority, bar_kind=MAJORITY, passes=passes, note=note)


def epochs_scored(task: str, ck: str, log: pd.Series | None) -> int:
    """How many epochs checkpoint selection chose among (the Bonferroni factor); no selection score is an error."""
    if log is None or not log["epochs_scored"]:
        raise ValueError(f"task {task}: checkpoint {ck} has no English selection score (select_score) in its train log "
                         f"(results/train/{ck}.parquet); selection is required for the model-quality gate: re-run its "
                         "train stage")
    return int(log["epochs_scored"])


def span_verdict(row: dict, sel: SelectionRows, level: float, seed: int = 0) -> dict:
    """``row`` of an entity-tagging task decided on its selection sentences at CI level ``level`` (Bonferroni over
    the epochs, :func:`selection_verdict`): the kept weights' span F1 (from the chunk counts the train stage wrote)
    with a percentile bootstrap CI over sentences; it passes when the CI of its difference from the memorized-entity
    F1 on the same resampled sentences lies above 0 (the bar is estimated on those sentences too: paired).

    A checkpoint without counts (trained before the train stage wrote them) is not gated, and its note says how to
    gate it: delete its checkpoint and run again (``xlt run`` skips a finished checkpoint)."""
    ck = row["checkpoint"]
    counts = sel.counts.get(ck)
    if counts is None or len(counts) != sel.n:
        found = "missing" if counts is None else f"{len(counts)} sentences, not {sel.n}"
        return dict(row, split=sel.label, n=sel.n, majority=math.nan, bar=math.nan, bar_kind="", passes=True,
                    note=f"NOT GATED: no chunk counts of this checkpoint on the {sel.n} English selection sentences "
                         f"(results/selection/{ck}.parquet {found}; a checkpoint trained before the train stage "
                         "wrote them): delete its checkpoint folder and run again to gate it")
    idx = np.random.default_rng(seed).integers(0, sel.n, size=(N_BOOT_SPANS, sel.n))  # shared by both taggers
    model, memo = f1_from_counts(counts[idx]), f1_from_counts(sel.reference[idx])
    lo, hi = (float(q) for q in np.quantile(model, [(1 - level) / 2, (1 + level) / 2]))
    diff_lo = float(np.quantile(model - memo, (1 - level) / 2))
    score, bar = float(f1_from_counts(counts)), sel.memorized
    passes = diff_lo > 0
    numbers = f"F1 {score - bar:+.3f} over the memorized-entity F1, the CI's lower end {diff_lo:+.3f}"
    note = "" if passes else (f"English selection F1 does not clear the memorized-entity F1 (a lookup of the training "
                              f"entities; {numbers}): excluded from RQ1/RQ2")
    return dict(row, split=sel.label, english=score, ci_lo=lo, ci_hi=hi, ci_level=level, n=sel.n, majority=math.nan,
                bar=bar, bar_kind=MEMORIZED, passes=passes, note=note)


def _scored_row(row: dict, en: pd.DataFrame, gated: bool, level: float) -> dict:
    """``row`` decided on the English rows the transfer stage scored (test): a run without selection rows, or a task
    kind that is not gated."""
    if en.empty:
        return dict(row, passes=False, note="no English score")
    n = int(en["n"].sum()) if "n" in en else 0
    val = float(np.average(en["value"], weights=en["n"])) if n else float(en["value"].mean())
    if not gated:  # F1, QA, mAP are not proportions: the row's own bootstrap CI over examples; no bar
        one = len(en) == 1 and {"ci_low", "ci_high"} <= set(en)
        lo, hi = (float(en["ci_low"].iloc[0]), float(en["ci_high"].iloc[0])) if one else (math.nan, math.nan)
        return dict(row, english=val, ci_lo=lo, ci_hi=hi, n=n, ci_level=row["ci_level"] if one else math.nan,
                    note="no majority rate for this task kind: not gated (bootstrap CI; see the English-vs-target "
                         "table)")
    lo, hi = wilson_ci(val, n, level)  # accuracy: a proportion
    passes = bool(lo > row["majority"])
    notes = [TEST_FALLBACK] + ([] if passes else ["English score does not clear the majority rate: excluded from "
                                                   "RQ1/RQ2"])
    return dict(row, english=val, ci_lo=lo, ci_hi=hi, n=n, passes=passes, note="; ".join(notes))


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


@dataclass
class Gate:
    """What step 1 hands on: the gate table, the pairs that fail it and the transfer rows that pass."""

    table: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per (task, checkpoint), GATE_COLS
    failed: set[tuple[str, str]] = field(default_factory=set)  # (task, checkpoint) pairs that fail
    kept: pd.DataFrame = field(default_factory=pd.DataFrame)  # the transfer rows of the pairs that pass
    notes: list[str] = field(default_factory=list)

    @property
    def excluded(self) -> list[tuple[str, str]]:
        return sorted(self.failed)


def apply_gate(transfer: pd.DataFrame, majority: dict[str, float] | None, *, train: pd.DataFrame | None = None,
               selection: dict[str, SelectionRows] | None = None, scored: dict[str, str] | None = None) -> Gate:
    """Step 1: gate every (task, checkpoint) (:func:`quality_gate`: on the English selection rows where the run has
    them); the rows of those that fail are left out of the method comparison, RQ1 and RQ2."""
    if not len(transfer):
        return Gate(kept=transfer)
    table = quality_gate(transfer, majority, train=train, selection=selection, scored=scored)
    failed = gate_failures(table)
    gate = Gate(table=table, failed=failed, kept=drop_failed(transfer, failed))
    on_test = sorted(set(table.loc[_gated(table) & ~table["split"].str.startswith("selection"), "task"]))
    if on_test:
        gate.notes.append(f"**The model-quality gate of {', '.join(on_test)} is decided on English TEST rows**: this "
                          "run has no selection rows (protocol.selection: false). The test rows are the translations "
                          "of the items scored in every language, so the gate picks checkpoints on the evaluation "
                          "items themselves; run with `protocol.selection: true` to gate on held-out English rows.")
    if failed:
        gate.notes.append(f"{len(failed)} (task, checkpoint) pair(s) fail the model-quality gate and are left out "
                          f"of RQ1, RQ2 and the method comparison: "
                          + ", ".join(f"{t}/{c}" for t, c in gate.excluded))
    ungated = table[table["note"].str.startswith("NOT GATED")]
    if len(ungated):
        gate.notes.append(f"{len(ungated)} entity-tagging checkpoint(s) are NOT GATED: they have no chunk counts on "
                          "the selection sentences (trained before the train stage wrote them; delete their "
                          "checkpoint folders and run again to gate them): "
                          + ", ".join(f"{t}/{c}" for t, c in zip(ungated["task"], ungated["checkpoint"])))
    stuck = table[table["plateau"].isin(FLAGGED)]
    if len(stuck):
        gate.notes.append(f"{len(stuck)} checkpoint(s) did not leave the majority plateau (training loss at the "
                          "entropy of the label prior after warm-up; xltlib.training.plateau): "
                          + ", ".join(f"{t}/{c}" for t, c in zip(stuck["task"], stuck["checkpoint"])))
    return gate


def _gated(table: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(table["bar"], errors="coerce").notna()


def english_scores(gate: Gate) -> dict[str, float]:
    """Each gated checkpoint's English score on the rows the gate decided on (selection rows where the run has
    them): how well it learned the task, the covariate of RQ1's "learned less?" check."""
    t = gate.table
    if t is None or t.empty:
        return {}
    t = t[np.isfinite(t["english"].astype(float))]
    return dict(zip(t["checkpoint"], t["english"].astype(float)))


def collapse_text(table: pd.DataFrame) -> str:
    """The summary's opening line: per method, how many checkpoints of each gated task did not learn ("pgd: 2 of 2
    pawsx seeds did not learn"), how many of those sat on the majority plateau, and the rows that decided it."""
    if table is None or table.empty:
        return ""
    g = table[_gated(table)]
    if g.empty:
        return ""
    methods = list(dict.fromkeys(["baseline", *g["method"]]))
    parts, learned = [], []  # methods with a failed checkpoint, each task counted; then those that learned everywhere
    for method in [m for m in methods if m in set(g["method"])]:
        clauses, counts = [], []
        for task, t in g[g["method"] == method].groupby("task", sort=True):
            failed = ~t["passes"].astype(bool)
            unit = "seeds" if t["seed"].nunique() == len(t) else "checkpoints"
            stuck = int((failed & t["plateau"].isin(FLAGGED)).sum())
            clauses.append(f"{int(failed.sum())} of {len(t)} {task} {unit}"
                           + (f" ({stuck} on the majority plateau)" if stuck else ""))
            counts.append(f"{len(t)} {task}")
        if (~g.loc[g["method"] == method, "passes"].astype(bool)).any():
            parts.append(f"{method}: " + ", ".join(clauses) + " did not learn")
        else:
            learned.append(f"{method} ({', '.join(counts)})")
    if learned:
        parts.append(("every checkpoint learned: " if not parts else "every checkpoint of the others learned: ")
                     + ", ".join(learned))
    on = ("the English selection rows" if g["split"].str.startswith("selection").all() else
          "English TEST rows: the run has no selection rows")
    return (f"**Which checkpoints learned** (model-quality gate, decided on {on}): " + "; ".join(parts) + "."
            + precision_text(table))


def precision_text(table: pd.DataFrame) -> str:
    """A sentence when the checkpoints trained in more than one precision (a study run over sessions on machines
    with and without bf16): how many in each, per method, so that a method's difference can be read against it."""
    recorded = table[table["precision"].astype(str) != ""] if "precision" in table else table.iloc[:0]
    if recorded["precision"].nunique() < 2:
        return ""
    by = recorded.drop_duplicates("checkpoint").groupby(["method", "precision"]).size().unstack(fill_value=0)
    per = "; ".join(f"{m}: " + ", ".join(f"{by.loc[m, p]} {p}" for p in by.columns if by.loc[m, p])
                    for m in by.index)
    return (" The checkpoints trained in more than one precision (bf16 weights with fp32 masters on a CPU or GPU "
            f"with bf16, fp32 elsewhere): {per}.")


def decided_on(t: pd.DataFrame) -> str:
    """The rows and the CI one task's gate was decided on, in words (its rows of the gate table)."""
    t = t[_gated(t)] if _gated(t).any() else t  # an entity tagger without chunk counts was not gated
    split = t["split"].iloc[0]
    levels = sorted(set(t["ci_level"].round(4)))
    level = " or ".join(f"{100 * v:.1f}%" for v in levels)
    if split.startswith("selection"):
        ci = "bootstrap CI over sentences" if (t["bar_kind"] == MEMORIZED).any() else "Wilson CI"
        return f"{split}, {ci} at {level} (95% over the epochs checkpoint selection chose among, Bonferroni)"
    return f"{int(t['n'].max())} English {split} rows, Wilson {level} CI"
