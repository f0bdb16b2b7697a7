"""Did a classification or tagging run leave the majority plateau? A check on its per-step training loss.

A classifier that outputs the training labels' prior p whatever its input has an expected cross-entropy of
H(p), the prior's entropy (any other constant output does worse). A run that "collapsed" onto the majority class
sits there: quick's RS-DA PAWS-X cell ends at 0.664 nats against H = 0.686 (English test 58.5%, majority 56%),
the first study-lite's failed PAWS-X checkpoints at 0.686. The loss drop below H is what the model's predictions tell about
the label, so a run whose late loss is still within a small share of H has learned (almost) nothing, whatever the
noise of single batches. :func:`detect_plateau` names it, so the collapse is read in the train log, on the
training page and in the model-quality gate's note instead of being discovered in the transfer tables. A tagger's
loss is the mean over labelled words, so the same holds with p the prior of the training tags over words: one that
tags every word with the prior (``O`` mostly, on PAN-X) sits at its entropy.

Judged on the steps after warm-up (the learning rate still climbs before that, so a flat start says nothing):

* ``tail_loss``: the mean loss of the last quarter of the steps;
* ``min_loss``: the lowest point of the loss smoothed over a window of 10% of those steps (at least
  ``MIN_STEPS``): did it ever drop well below H?

=============  ==========================================================  =========
status         when                                                        flagged
=============  ==========================================================  =========
left           ``tail_loss < (1 - MARGIN) H``: it learned (late learners)  no
plateau        within ``MARGIN`` of H at the end, never ``DROP`` below it  yes
returned       within ``MARGIN`` of H at the end after dipping ``DROP``    yes
               below it earlier (it learned, then fell back)
above          ``tail_loss > (1 + MARGIN) H``: worse than a constant       yes
               output (an over-confident collapse, or divergence)
too short      fewer than ``MIN_STEPS`` steps after warm-up                no
not applicable no label prior (QA, retrieval)                              no
=============  ==========================================================  =========
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

# Task kinds whose training labels have a prior: one label per example (sentence pairs) or per item (the index of
# the right choice). Span extraction and retrieval have none: "not applicable".
PRIOR_KINDS = ("pair_classification", "multiple_choice")
TAG_KINDS = ("token_classification",)  # a tag per word: the prior of the training tags over words

# The band around H, as a share of H. The drop H - L is the label information the predictions carry: a calibrated
# classifier on balanced labels reaches 0.95 H at about 63% accuracy with two classes and 50% with three, so a run
# inside the band is at best a few points above the majority rate. Noise is far smaller: the last-quarter mean of a
# plateau run varies by about sd(batch loss) / sqrt(steps) = 0.03 / sqrt(62) = 0.004 nats on quick's RS-DA PAWS-X
# cell (0.6% of H; 0.011 with the minimum tail of 8 steps). Observed: that cell ends at 0.967 H, the runs that
# learned at 0.48-0.71 H (quick's XNLI and PAWS-X cells, batch 32).
MARGIN = 0.05
# "Well below" H for the smoothed curve: twice the band. The lowest point of a plateau run's smoothed loss lies
# about 3 sd of a window mean under its level: 3 x 0.03 / sqrt(22) = 0.02 nats (3% of H) on that cell, whose
# lowest point is 0.958 H; a run that learned drops far further (quick's PAWS-X baseline: 0.53 H).
DROP = 2 * MARGIN
TAIL = 0.25  # the share of the steps whose mean loss is the run's end point
WINDOW = 0.10  # the smoothing window, as a share of the steps after warm-up
MIN_STEPS = 8  # fewer steps after warm-up (or in the tail, or the window) cannot be told from batch noise

FLAGGED = ("plateau", "returned", "above")


@dataclass(frozen=True)
class Plateau:
    """The verdict on one run (see the module's table); ``columns()`` is what the train log records."""

    status: str
    prior_entropy: float = math.nan  # H(p) of the training labels, nats
    tail_loss: float = math.nan  # mean loss over the last quarter of the steps
    min_loss: float = math.nan  # lowest smoothed loss after warm-up
    steps: int = 0  # steps judged (after warm-up)
    loss: str = "loss"  # the train-log column judged: clean_loss where the objective logs it (else loss)

    @property
    def flagged(self) -> bool:
        return self.status in FLAGGED

    @property
    def note(self) -> str:
        return plateau_note(self.status, self.tail_loss, self.prior_entropy)

    def columns(self) -> dict:
        return dict(plateau=self.status, prior_entropy=self.prior_entropy, plateau_tail_loss=self.tail_loss,
                    plateau_min_loss=self.min_loss)


def plateau_note(status: str, tail_loss: float, prior_entropy: float) -> str:
    """The words for a status, with the numbers that decided it."""
    numbers = (f"training loss {tail_loss:.3f} over the last quarter of the steps vs {prior_entropy:.3f}, the "
               f"entropy of the training labels' prior; plateau band ±{MARGIN:.0%} of it")
    if status == "left":
        return f"left the majority plateau ({numbers})"
    if status == "plateau":
        return f"did not leave the majority plateau ({numbers})"
    if status == "returned":
        return f"fell back to the majority plateau after leaving it ({numbers})"
    if status == "above":
        return f"training loss ended above the label prior's entropy: worse than a constant output ({numbers})"
    if status == "too short":
        return f"plateau check: fewer than {MIN_STEPS} steps after warm-up, not judged"
    if status == "not applicable":
        return "plateau check: not applicable (no label prior for this task kind)"
    return ""


def label_prior(labels: Sequence[int], num_labels: int) -> np.ndarray:
    """The share of each label among the training labels."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_labels).astype(float)
    if counts.sum() == 0:
        raise ValueError("label_prior: no training labels")
    return counts / counts.sum()


def detect_plateau(rows: Sequence[dict] | pd.DataFrame, prior: Sequence[float] | None, *,
                   warmup_steps: int = 0) -> Plateau:
    """Judge a run from its per-step log ``rows`` (``loss``, and ``clean_loss`` where the objective logs the loss
    on unperturbed inputs: that one, since a strong adversary can hold the perturbed loss up while the model
    learns) and the training labels' ``prior`` (None: the task kind has none). The first ``warmup_steps`` steps
    are left out. Where the log has ``labelled`` (a tagger: the labelled words of each step's batch, whose mean
    its loss is), the tail and the smoothed curve are means over words, not steps: a model outputting the prior
    then sits at H exactly, however the tag mix varies between the length-bucketed batches."""
    if prior is None:
        return Plateau("not applicable")
    log = pd.DataFrame(list(rows) if not isinstance(rows, pd.DataFrame) else rows)
    h = float(stats.entropy(np.asarray(prior, dtype=float)))  # nats, as the cross-entropy loss
    losses = log["loss"].to_numpy(dtype=float) if len(log) else np.empty(0)
    col = "loss"
    # judged on clean_loss where the run ends logging it; steps without it (e.g. before adv_begin_iter) take loss.
    # A run logging it only in its clean epochs (train.clean_epochs, diagnostics off) is judged on loss
    if "clean_loss" in log and len(log) and pd.notna(log["clean_loss"].iloc[-1]):
        losses, col = log["clean_loss"].fillna(log["loss"]).to_numpy(dtype=float), "clean_loss"
    weights = (log["labelled"].fillna(1).to_numpy(dtype=float) if "labelled" in log and len(log)
               else np.ones(len(losses)))
    start = min(max(0, int(warmup_steps)), len(losses))
    after, w = losses[start:], weights[start:]
    tail_n = min(len(after), max(MIN_STEPS, math.ceil(TAIL * len(losses))))
    if len(after) < MIN_STEPS:
        return Plateau("too short", prior_entropy=h, steps=len(after), loss=col)
    tail = float(np.average(after[-tail_n:], weights=w[-tail_n:]))
    window = max(MIN_STEPS, round(WINDOW * len(after)))
    smooth = pd.Series(after * w).rolling(window).sum() / pd.Series(w).rolling(window).sum()
    lowest = float(smooth.min()) if len(after) >= window else tail
    if tail < (1 - MARGIN) * h:
        status = "left"
    elif tail > (1 + MARGIN) * h:
        status = "above"
    else:
        status = "returned" if lowest < (1 - DROP) * h else "plateau"
    return Plateau(status, prior_entropy=h, tail_loss=tail, min_loss=lowest, steps=len(after), loss=col)


def mark_plateau(rows: list[dict], kind: str, records: Sequence[dict], num_labels: int, *,
                 warmup_steps: int = 0, word_labels: Sequence[int] | None = None) -> Plateau:
    """Judge a finished training run and write the verdict (:meth:`Plateau.columns`) on every row of its log.

    ``kind``: the task kind's name; the prior is that of ``records``' labels for :data:`PRIOR_KINDS`; for
    :data:`TAG_KINDS` that of ``word_labels`` (the tag ids trained on: the words that survived truncation), else
    of the records' tags over words."""
    prior = None
    if kind in PRIOR_KINDS and records:
        prior = label_prior([r["label"] for r in records], num_labels)
    elif kind in TAG_KINDS and word_labels is not None and len(word_labels):
        prior = label_prior(word_labels, num_labels)
    elif kind in TAG_KINDS and any(r["tags"] for r in records):
        tags = [t for r in records for t in r["tags"]]
        prior = label_prior(np.unique(tags, return_inverse=True)[1], len(set(tags)))
    verdict = detect_plateau(rows, prior, warmup_steps=warmup_steps)
    for r in rows:
        r.update(verdict.columns())
    return verdict
