"""The majority-plateau check (xltlib.training.plateau) on simulated loss curves with known answers.

Per-step losses are simulated as a training loop logs them: the mean cross-entropy of a batch of 32 examples whose
labels are drawn from the prior, under a model that gives the true label some probability."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from xltlib.training.plateau import (DROP, MARGIN, MIN_STEPS, detect_plateau, label_prior, mark_plateau,
                                     plateau_note)

PRIOR = np.array([0.555, 0.445])  # PAWS-X's training labels (4,615 of 8,311 pairs are label 0)
H = float(stats.entropy(PRIOR))
STEPS, WARMUP, BATCH = 250, 25, 32  # quick's PAWS-X cell: 4,000 pairs x 2 epochs / 32, 10% warm-up


def batch_losses(p_true_label, rng, batch: int = BATCH) -> np.ndarray:
    """One logged loss per step: the mean of -log q(y) over a batch. ``p_true_label[t]``: how far the model has
    moved from the prior at step t, from 0 (it outputs the prior) to 1 (it gives the true label probability 0.9)."""
    move = np.asarray(p_true_label, dtype=float)[:, None]
    y = rng.random((len(move), batch)) < PRIOR[1]  # labels from the prior
    q = (1 - move) * np.where(y, PRIOR[1], PRIOR[0]) + move * 0.9
    return -np.log(q).mean(axis=1)


def rows(losses) -> list[dict]:
    return [dict(step=i + 1, loss=float(v)) for i, v in enumerate(losses)]


def judge(losses):
    return detect_plateau(rows(losses), PRIOR, warmup_steps=WARMUP)


def learning(steps=STEPS):
    return 1 - np.exp(-np.arange(steps) / 40)


def test_a_learning_curve_left_the_plateau():
    v = judge(batch_losses(learning(), np.random.default_rng(0)))
    assert v.status == "left" and not v.flagged
    assert v.tail_loss < 0.5 * H and v.prior_entropy == pytest.approx(H)
    assert v.note.startswith("left the majority plateau")


def test_a_plateau_curve_is_flagged():
    v = judge(batch_losses(np.zeros(STEPS), np.random.default_rng(1)))  # outputs the prior all along
    assert v.status == "plateau" and v.flagged
    assert v.tail_loss == pytest.approx(H, abs=0.01) and v.steps == STEPS - WARMUP
    assert v.note.startswith("did not leave the majority plateau") and f"{H:.3f}" in v.note


def test_a_noisy_plateau_is_flagged_at_every_seed():
    """A model whose output wobbles around the prior from step to step (per-step loss sd 0.044, more than the 0.033 of
    quick's RS-DA PAWS-X cell) and learns a very little: flagged at every one of 200 seeds."""
    statuses = set()
    for seed in range(200):
        rng = np.random.default_rng(seed)
        wobble = np.clip(0.01 + rng.normal(0, 0.05, STEPS), -0.2, 0.3)  # sometimes worse than the prior
        statuses.add(judge(batch_losses(wobble, rng, batch=BATCH)).status)
    assert statuses == {"plateau"}


def test_a_late_learner_left_the_plateau():
    """Flat for 70% of its steps, then learning: judged by its end, not by its long flat start."""
    move = np.zeros(STEPS)
    move[175:] = 1 - np.exp(-np.arange(STEPS - 175) / 15)
    v = judge(batch_losses(move, np.random.default_rng(2)))
    assert v.status == "left" and not v.flagged


def test_slow_learners_are_never_flagged_and_plateaus_always_are():
    """Runs that end about 11% below H (twice the band) are never flagged; runs that stay at H always are (200
    seeds each)."""
    slow, flat = set(), set()
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        slow.add(judge(batch_losses(0.1 * learning(), rng)).status)  # move 0.1: expected loss 0.89 H at the end
        flat.add(judge(batch_losses(np.zeros(STEPS), rng)).status)
    assert slow == {"left"} and flat == {"plateau"}


def test_a_run_that_learned_and_fell_back_is_named_so():
    move = np.concatenate([learning(125), np.linspace(1, 0, 25), np.zeros(100)])
    v = judge(batch_losses(move, np.random.default_rng(3)))
    assert v.status == "returned" and v.flagged and v.min_loss < (1 - DROP) * H
    assert v.note.startswith("fell back to the majority plateau")


def test_a_loss_above_the_prior_entropy_is_flagged():
    """An over-confident constant output (always the majority class, probability 0.9) is worse than the prior."""
    rng = np.random.default_rng(4)
    losses = [float(-np.log(np.where(rng.random(BATCH) < PRIOR[1], 0.1, 0.9)).mean()) for _ in range(STEPS)]
    v = judge(losses)
    assert v.status == "above" and v.flagged and v.tail_loss > (1 + MARGIN) * H


def test_warm_up_is_left_out_and_short_runs_are_not_judged():
    # a run flat through its warm-up and learning after it: warm-up steps do not count
    move = np.concatenate([np.zeros(WARMUP), learning(STEPS - WARMUP)])
    assert judge(batch_losses(move, np.random.default_rng(5))).status == "left"
    v = detect_plateau(rows(np.full(MIN_STEPS + 2, H)), PRIOR, warmup_steps=3)
    assert v.status == "too short" and not v.flagged and "not judged" in v.note


def test_clean_loss_is_judged_where_the_objective_logs_it():
    """An adversary can hold the perturbed loss at H while the model learns the clean task."""
    clean = batch_losses(learning(), np.random.default_rng(6))
    log = [dict(step=i + 1, loss=H, clean_loss=float(c)) for i, c in enumerate(clean)]
    v = detect_plateau(log, PRIOR, warmup_steps=WARMUP)
    assert v.status == "left" and v.loss == "clean_loss"
    assert detect_plateau([dict(r, clean_loss=np.nan) for r in log], PRIOR, warmup_steps=WARMUP).status == "plateau"


def test_a_robust_phase_back_on_the_plateau_after_a_clean_epoch_is_flagged():
    """train.clean_epochs with diagnostics off: clean_loss only in the clean epoch, the robust epochs log loss."""
    move = np.concatenate([learning(100), np.zeros(150)])  # learned in the clean epoch, flat after the switch
    losses = batch_losses(move, np.random.default_rng(7))
    log = [dict(step=i + 1, loss=float(v), **({"clean_loss": float(v)} if i < 100 else {}))
           for i, v in enumerate(losses)]
    v = detect_plateau(log, PRIOR, warmup_steps=WARMUP)
    assert v.loss == "loss" and v.status == "returned" and v.flagged


def test_mark_plateau_writes_the_verdict_on_every_row_and_says_when_it_does_not_apply():
    records = [dict(label=int(y)) for y in np.random.default_rng(7).random(400) < PRIOR[1]]
    log = rows(batch_losses(np.zeros(STEPS), np.random.default_rng(8)))
    v = mark_plateau(log, "pair_classification", records, 2, warmup_steps=WARMUP)
    assert v.status == "plateau" and all(r["plateau"] == "plateau" for r in log)
    assert log[0]["prior_entropy"] == pytest.approx(stats.entropy(label_prior([r["label"] for r in records], 2)))
    spans = rows(np.linspace(2, 0.1, 50))
    na = mark_plateau(spans, "span_extraction", [dict(question="q", context="c")], 2)
    assert na.status == "not applicable" and spans[-1]["plateau"] == "not applicable"
    assert np.isnan(spans[0]["prior_entropy"])
    assert "not applicable" in plateau_note(na.status, na.tail_loss, na.prior_entropy)


def test_a_tagger_is_judged_against_the_prior_of_its_training_tags_over_words():
    """A tagger that tags every word with the tag prior (PAN-X: mostly O) has a per-word loss of the prior's
    entropy: one stuck there is flagged, one whose loss falls well below it is not."""
    records = [dict(tokens=["w"] * 5, tags=["B-PER", "I-PER", "O", "O", "O"]),
               dict(tokens=["w"] * 5, tags=["O", "O", "B-LOC", "O", "O"])]
    h = stats.entropy([7 / 10, 1 / 10, 1 / 10, 1 / 10])
    stuck = rows(h + 0.01 * np.random.default_rng(3).standard_normal(STEPS))
    v = mark_plateau(stuck, "token_classification", records, 7, warmup_steps=WARMUP)
    assert v.prior_entropy == pytest.approx(h) and v.status == "plateau" and stuck[0]["plateau"] == "plateau"
    learned = rows(np.linspace(h, 0.2 * h, STEPS))
    assert mark_plateau(learned, "token_classification", records, 7, warmup_steps=WARMUP).status == "left"
    # the words that survived truncation (the loop passes them) decide the prior, not the records' tags
    ids = np.array([0] * 9 + [1])
    v = mark_plateau(rows(np.full(STEPS, 0.3)), "token_classification", records, 7, warmup_steps=WARMUP,
                     word_labels=ids)
    assert v.prior_entropy == pytest.approx(stats.entropy([0.9, 0.1]))


def test_a_taggers_steps_are_weighted_by_their_labelled_words():
    """Length-bucketed batches differ in tag mix: short entity-dense fragments vs long sentences. A tagger that
    outputs the overall prior p scores H(p_b, p) on batch b; weighted by the batch's labelled words the mean is
    H(p), unweighted it is not: the check weights by ``labelled``."""
    p_dense, p_sparse, n_dense, n_sparse = np.array([0.5, 0.5]), np.array([0.95, 0.05]), 40, 400
    p = (n_dense * p_dense + n_sparse * p_sparse) / (n_dense + n_sparse)
    h = stats.entropy(p)
    cross = [-(q * np.log(p)).sum() for q in (p_dense, p_sparse)]
    log = [dict(step=i + 1, loss=cross[i % 2], labelled=(n_dense, n_sparse)[i % 2]) for i in range(STEPS)]
    v = detect_plateau(log, p, warmup_steps=WARMUP)
    assert v.tail_loss == pytest.approx(h, rel=0.02) and v.status == "plateau"
    unweighted = detect_plateau([{k: r[k] for k in ("step", "loss")} for r in log], p, warmup_steps=WARMUP)
    assert unweighted.tail_loss > 1.3 * h and unweighted.status == "above"  # what the check would say unweighted
    with pytest.raises(ValueError, match="no training labels"):
        label_prior([], 2)
