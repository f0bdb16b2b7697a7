"""RQ1 across checkpoints within languages (xltlib.analysis.rq1): the checkpoint-label permutation test and its
inverted CI - known answers, calibration on simulated nulls at the sizes of a study (10-30 checkpoints x 6-40
languages), power, coverage, many-language tasks (PAN-X), and the declared primary unit.

Null data: checkpoints (5 methods x strengths x seeds) whose alignment has method shifts, checkpoint shocks and a
checkpoint-specific slope over a language covariate, and whose transfer has its own checkpoint shocks and slopes,
the shocks larger for the robust methods than for the baseline (heteroscedastic); language effects in both.
400 simulated runs per size: the binomial SE at 5% is 1.1 points, so the bar 8.5% passes a calibrated test and
fails one that rejects 12% of the time.
"""
import math

import numpy as np
import pandas as pd
import pytest

from xltlib.analysis.inference import fe_slope
from xltlib.analysis.merge import Points
from xltlib.analysis.rq1 import (
    MIN_CHECKPOINTS_PERM,
    across_checkpoints,
    answer_rq1,
    checkpoint_matrices,
    checkpoint_permutation,
)
from xltlib.config.schema import ReportConfig

ALPHA = 0.05
N_SIM = 400


def simulate(rng, n_checkpoints: int, n_languages: int, *, beta: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """[checkpoint, language] alignment and transfer of one simulated task; ``beta``: transfer follows the
    checkpoint-driven part of alignment."""
    method = np.arange(n_checkpoints) % 5
    s_l, t_l = rng.normal(size=n_languages), rng.normal(size=n_languages)
    shift = rng.normal(0, 0.05, 5)  # methods move alignment
    scale = np.where(method == 0, 0.5, 1.5)  # robust checkpoints vary more than the baseline's
    part = (shift[method][:, None] + (rng.normal(0, 0.03, n_checkpoints) * scale)[:, None]
            + rng.normal(0, 0.02, n_checkpoints)[:, None] * s_l[None]
            + rng.normal(0, 0.01, (n_checkpoints, n_languages)))
    align = rng.normal(0, 0.1, n_languages)[None] + part
    score = (rng.normal(0, 0.05, n_languages)[None] + (rng.normal(0, 0.02, n_checkpoints) * scale)[:, None]
             + rng.normal(0, 0.01, n_checkpoints)[:, None] * t_l[None]
             + rng.normal(0, 0.01, (n_checkpoints, n_languages)) + beta * part)
    return align, score


def long_frame(align: np.ndarray, score: np.ndarray, *, task: str = "xnli") -> pd.DataFrame:
    c, n = align.shape
    return pd.DataFrame(dict(checkpoint=np.repeat([f"ck{i}" for i in range(c)], n), task=task,
                             method=np.repeat([f"m{i % 5}" for i in range(c)], n), seed=np.repeat(np.arange(c) // 5, n),
                             language=np.tile([f"l{j:02d}" for j in range(n)], c), metric="retrieval.acc1_en2xx",
                             layer=12, alignment=align.ravel(), score=score.ravel()))


# --------------------------------------------------------------------------------------------- known answers
def test_slope_is_the_language_fixed_effects_ols_and_exact_enumeration_counts_every_order():
    rng = np.random.default_rng(0)
    align, score = simulate(rng, 5, 8, beta=0.5)
    fit = checkpoint_permutation(align, score, n_perm=10_000, rng=rng)
    ols = fe_slope(long_frame(align, score), y="score", x="alignment", fe=("language",), cluster=("checkpoint",))
    assert fit["coef"] == pytest.approx(ols["coef"], rel=1e-10)
    assert fit["exact"] and fit["n_perm"] == math.factorial(5)  # 120 orders, the identity among them
    assert fit["p"] >= 1 / 120 and fit["ci_lo"] < fit["coef"] < fit["ci_hi"]
    # the CI's ends are where the inverted test's p crosses alpha: just inside accepts, just outside rejects
    for end, inward in ((fit["ci_lo"], 1), (fit["ci_hi"], -1)):
        width = fit["ci_hi"] - fit["ci_lo"]
        inside = checkpoint_permutation(align, score - (end + inward * 1e-3 * width) * align, n_perm=10_000, rng=rng)
        outside = checkpoint_permutation(align, score - (end - inward * 1e-3 * width) * align, n_perm=10_000, rng=rng)
        assert inside["p"] > ALPHA >= outside["p"]


def test_monte_carlo_p_and_the_floor():
    rng = np.random.default_rng(1)
    align, score = simulate(rng, 12, 10, beta=5.0)
    fit = checkpoint_permutation(align, score, n_perm=500, rng=rng, ci=False)
    assert not fit["exact"] and fit["n_perm"] == 500
    assert fit["p"] == pytest.approx(1 / 501) and fit["p_at_floor"] and math.isnan(fit["ci_lo"])


def test_languages_not_scored_by_every_checkpoint_are_left_out_and_small_groups_say_why():
    rng = np.random.default_rng(2)
    frame = long_frame(*simulate(rng, 6, 5))
    frame = frame[~((frame["checkpoint"] == "ck0") & (frame["language"] == "l03"))]
    X, _, _, langs, dropped = checkpoint_matrices(frame, "alignment", "score")
    assert X.shape == (6, 4) and "l03" not in langs and dropped == 1
    row = across_checkpoints(frame, n_perm=200, rng=rng)
    assert row["n_languages"] == 4 and "1 language(s) not scored by every checkpoint" in row["note"]
    few = frame[frame["checkpoint"].isin(["ck0", "ck1", "ck2"])]
    row = across_checkpoints(few, n_perm=200, rng=rng)
    assert math.isnan(row["p"]) and row["note"].startswith(f"empty: 3 checkpoint(s), at least {MIN_CHECKPOINTS_PERM}")
    flat = frame.assign(alignment=1.0)
    assert across_checkpoints(flat, n_perm=200, rng=rng)["note"].startswith("empty: alignment or transfer does not")


# --------------------------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("n_checkpoints,n_languages", [(10, 6), (30, 15)])
def test_checkpoint_permutation_holds_its_level_and_has_power(n_checkpoints, n_languages):
    rng = np.random.default_rng(n_checkpoints * 100 + n_languages)
    null = np.mean([checkpoint_permutation(*simulate(rng, n_checkpoints, n_languages), n_perm=499, rng=rng,
                                           ci=False)["p"] <= ALPHA for _ in range(N_SIM)])
    power = np.mean([checkpoint_permutation(*simulate(rng, n_checkpoints, n_languages, beta=0.5), n_perm=499,
                                            rng=rng, ci=False)["p"] <= ALPHA for _ in range(100)])
    print(f"{n_checkpoints} checkpoints x {n_languages} languages: null {null:.3f}, planted 0.5: {power:.2f}")
    assert 0.02 <= null <= 0.085
    assert power >= 0.75


def test_the_permutation_holds_its_level_where_a_cluster_robust_t_by_checkpoint_does_not():
    """Six checkpoints x 14 languages (a small study): the CR1 t with language fixed effects, clustered by
    checkpoint, t(G - 1), rejects a true null far above 5%; the permutation does not."""
    rng = np.random.default_rng(7)
    perm, cr1 = [], []
    for _ in range(N_SIM):
        align, score = simulate(rng, 6, 14)
        perm.append(checkpoint_permutation(align, score, n_perm=720, rng=rng, ci=False)["p"] <= ALPHA)
        cr1.append(fe_slope(long_frame(align, score), y="score", x="alignment", fe=("language",),
                            cluster=("checkpoint",))["p"] <= ALPHA)
    print(f"6 x 14 null: permutation {np.mean(perm):.3f}, cluster-robust t {np.mean(cr1):.3f}")
    assert np.mean(perm) <= 0.085
    assert np.mean(cr1) >= 0.10


def test_inverted_ci_covers_a_planted_slope():
    rng = np.random.default_rng(8)
    hits = []
    for _ in range(100):
        align, score = simulate(rng, 10, 15, beta=0.5)  # language effects differ: only within-language variation
        fit = checkpoint_permutation(align, score, n_perm=499, rng=rng)  # carries the planted 0.5
        hits.append(fit["ci_lo"] <= 0.5 <= fit["ci_hi"])
    print(f"coverage of the planted slope: {np.mean(hits):.2f}")
    assert np.mean(hits) >= 0.88


# ------------------------------------------------------------------------------------ answer_rq1 and the unit
def points_of(frames: list[pd.DataFrame]) -> Points:
    merged = pd.concat(frames, ignore_index=True).assign(gate_ok=True)
    return Points(merged=merged, analysed=merged, relatable=True)


def test_answer_rq1_declares_the_unit_and_handles_a_task_with_many_languages():
    """PAN-X scores 46 target languages (41 with Tatoeba rows): one task of 40 languages beside XNLI's 14."""
    rng = np.random.default_rng(9)
    xnli = long_frame(*simulate(rng, 10, 14, beta=0.5), task="xnli")
    panx = long_frame(*simulate(rng, 10, 40), task="panx")
    pts = points_of([xnli, panx])
    by_ck = answer_rq1(pts, ReportConfig.Primary(), n_boot=100, n_perm=500)
    assert by_ck.unit == "checkpoint" and by_ck.primary is by_ck.by_checkpoint
    t = by_ck.primary.set_index("task")
    assert t.loc["panx", "n_languages"] == 40 and t.loc["xnli", "n_checkpoints"] == 10
    assert t.loc["xnli", "p_holm"] <= ALPHA and t.loc["xnli", "ci_lo"] < 0.5 < t.loc["xnli", "ci_hi"]
    assert (t["p_holm"] >= t["p"]).all()
    by_lang = answer_rq1(pts, ReportConfig.Primary(unit="language"), n_boot=100, n_perm=500)
    assert by_lang.primary is by_lang.across and "r" in by_lang.primary
    with pytest.raises(ValueError, match="unit"):
        ReportConfig.Primary(unit="seed")
