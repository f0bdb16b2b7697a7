"""The source paper's claims checked against a method-vs-baseline table (xltlib.analysis.literature): the verdict
rule at each of its boundaries, both column spellings of the comparison table, strata, rows without an interval,
the conservative generalized-minus-standard contrast, and the reasons a difference may arise."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from xltlib.analysis.literature import (
    CLAIMS,
    CONTRADICTED,
    NO_INTERVAL,
    NOT_REPRODUCED,
    REPRODUCED,
    check_claims,
    literature_table,
    updates_per_task,
    verdict,
)


@pytest.mark.parametrize("lo,hi,claimed,word,detail", [
    (0.5, 3.0, 2.1, REPRODUCED, "covers the claimed size"),
    (2.5, 4.0, 2.1, REPRODUCED, "larger than claimed"),
    (0.2, 1.0, 2.1, NOT_REPRODUCED, "smaller than claimed"),
    (-1.0, 3.0, 2.1, NOT_REPRODUCED, "inconclusive"),
    (-1.0, 1.0, 2.1, NOT_REPRODUCED, "includes 0 and excludes the claimed size"),
    (-3.0, -0.5, 2.1, CONTRADICTED, "below 0"),
    (0.1, 0.4, None, REPRODUCED, "above 0"),
    (-0.4, 0.1, None, NOT_REPRODUCED, "includes 0"),
    (math.nan, math.nan, 2.1, NO_INTERVAL, ""),
])
def test_the_verdict_rule(lo, hi, claimed, word, detail):
    got, why = verdict((lo + hi) / 2, lo, hi, claimed)
    assert got == word and detail in why


def comparison(**spelling) -> pd.DataFrame:
    """A method-vs-baseline table as step 2 hands it on (score units: fractions), in the given column spelling."""
    d, lo, hi = (spelling.get(k, k) for k in ("diff", "ci_lo", "ci_hi"))
    rows = [dict(task="pawsx", setting="standard", checkpoints="passing the gate", method="rs_da", n_seeds=5, df=8.0,
                 note="", **{d: 0.02, lo: 0.008, hi: 0.032}),
            dict(task="pawsx", setting="generalized", checkpoints="passing the gate", method="rs_da", n_seeds=5, df=8.0,
                 note="", **{d: 0.05, lo: 0.03, hi: 0.07}),
            dict(task="xnli", setting="standard", checkpoints="passing the gate", method="rs_da", n_seeds=5, df=6.0,
                 note="", **{d: -0.03, lo: -0.05, hi: -0.01}),
            dict(task="xnli", setting="standard", checkpoints="every trained checkpoint", method="pgd", n_seeds=2,
                 df=np.nan, note="too few seeds for an interval (pgd 2, baseline 2 checkpoint(s); 3 each needed)",
                 **{d: 0.01, lo: np.nan, hi: np.nan})]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("spelling", [{}, dict(diff="difference", ci_lo="ci_low", ci_hi="ci_high")])
def test_each_claim_beside_the_estimate(spelling):
    t = literature_table(comparison(**spelling), strata=("checkpoints",), updates={"pawsx": 780.0})
    paws = t[(t["task"] == "pawsx") & (t["claim"] == CLAIMS[0].text)].iloc[0]
    assert paws["estimate"] == pytest.approx(2.0) and paws["ci_lo"] == pytest.approx(0.8)
    assert paws["verdict"] == REPRODUCED and paws["checkpoints"] == "passing the gate"
    assert "780 updates per checkpoint here" in paws["why_it_may_differ"] and "49,401" in paws["why_it_may_differ"]
    xnli = t[(t["task"] == "xnli") & (t["method"] == "rs_da")].iloc[0]
    assert xnli["verdict"] == CONTRADICTED and xnli["claimed"] == 1.6
    few = t[(t["task"] == "xnli") & (t["method"] == "pgd")].iloc[0]
    assert few["verdict"] == NO_INTERVAL and "too few seeds" in few["detail"] and few["estimate"] == pytest.approx(1.0)
    gen = t[t["claim"] == CLAIMS[2].text]
    assert list(gen["task"]) == ["pawsx"]  # xnli has no generalized rows
    assert "size is from issue 25" in paws["claim_checked"] and "checked" in gen.iloc[0]["claim_checked"]


def test_the_generalized_contrast_is_conservative():
    """generalized - standard: +3.0 points; SE = the two SEs added (each half-width / t(8)), t with 8 df."""
    t = literature_table(comparison(), strata=("checkpoints",))
    g = t[t["claim"] == CLAIMS[2].text].iloc[0]
    q = stats.t.ppf(0.975, 8.0)
    se = (3.2 - 0.8) / (2 * q) + (7.0 - 3.0) / (2 * q)
    assert g["estimate"] == pytest.approx(3.0) and g["ci_lo"] == pytest.approx(3.0 - q * se)
    assert g["ci_hi"] == pytest.approx(3.0 + q * se) and g["verdict"] == NOT_REPRODUCED  # the interval includes 0


def test_a_table_that_lacks_a_claim_says_so_and_bad_columns_name_what_is_missing():
    only_xnli = comparison().query("task == 'xnli'")
    t = literature_table(only_xnli)
    paws = t[t["claim"] == CLAIMS[0].text].iloc[0]
    assert paws["verdict"] == "not estimated" and "no standard rows for pawsx" in paws["detail"]
    empty = literature_table(pd.DataFrame())
    assert set(empty["verdict"]) == {"not estimated"} and len(empty) == len(CLAIMS)
    with pytest.raises(ValueError, match="no diff or difference column"):
        literature_table(comparison().drop(columns=["diff"]))


def test_check_claims_reads_the_encoder_and_the_updates_of_a_run():
    train = pd.DataFrame(dict(task=["pawsx"] * 5 + ["xnli"] * 3, checkpoint=["a"] * 3 + ["b"] * 2 + ["c"] * 3,
                              metric="train_loss"))
    assert updates_per_task(train) == {"pawsx": 2.5, "xnli": 3.0}
    t = check_claims(comparison(), pd.DataFrame(dict(model=["me5-small"])), train)
    assert t["why_it_may_differ"].dropna().str.startswith("encoder: me5-small here").all()
    assert "checkpoints" in t.columns
