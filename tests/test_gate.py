"""The model-quality gate (xltlib.analysis.gate) on English selection rows: what it decides on, what it says when a
run has no selection rows, its errors, its calibration, and the summary's opening line."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from xltlib.analysis.gate import (SelectionRows, apply_gate, collapse_text, quality_gate, scored_splits,
                                  selection_rows, wilson_ci)
from xltlib.config.schema import ProtocolConfig
from xltlib.data.split import make_split, select_records
from xltlib.data.synthetic import make_smoke_data

SEL = {"pawsx": SelectionRows("pawsx", 500, 0.56, "pawsx English dev")}


def transfer_rows(cks: dict[str, float], task="pawsx") -> pd.DataFrame:
    """English and German test scores per checkpoint (name -> English test accuracy)."""
    rows = []
    for ck, en in cks.items():
        method, seed = ck.rsplit("-", 1)
        for lang, v in (("en", en), ("de", en - 0.1)):
            rows.append(dict(checkpoint=ck, task=task, method=method, seed=int(seed), language=lang, language2="",
                             metric="score", value=v, n=400))
    return pd.DataFrame(rows)


def train_rows(scores: dict[str, list[float]], plateau: dict[str, str] | None = None, task="pawsx") -> pd.DataFrame:
    """Train logs: per checkpoint, one ``select_score`` per epoch on the epoch's last step, the selected epoch on
    every row and the plateau check's columns, as xltlib.training.loop writes them."""
    rows = []
    for ck, per_epoch in scores.items():
        best = int(np.argmax(per_epoch)) if per_epoch else None
        for epoch, s in enumerate(per_epoch or [np.nan]):
            for step in range(3):
                rows.append(dict(checkpoint=ck, task=task, metric="train_loss", value=0.5, epoch=epoch,
                                 select_score=s if step == 2 and per_epoch else np.nan,
                                 **({"selected_epoch": best} if best is not None else {}),
                                 plateau=(plateau or {}).get(ck, "left"), prior_entropy=0.686,
                                 plateau_tail_loss=0.684 if (plateau or {}).get(ck) == "plateau" else 0.4))
        rows.append(dict(checkpoint=ck, task=task, metric="weight_drift", value=0.01))
    return pd.DataFrame(rows)


def test_the_gate_decides_on_the_selected_epochs_selection_score():
    tr = transfer_rows({"baseline-1": 0.85, "pgd-1": 0.85, "pgd-2": 0.60})  # test scores all clear 0.55
    logs = train_rows({"baseline-1": [0.80, 0.84, 0.83], "pgd-1": [0.56, 0.55, 0.57], "pgd-2": [0.70, 0.78, 0.62]})
    g = quality_gate(tr, {"pawsx": 0.55}, train=logs, selection=SEL, scored={"pawsx": "test"}).set_index("checkpoint")
    assert set(g["split"]) == {"selection (pawsx English dev, 500 rows)"}
    assert g.loc["baseline-1", "english"] == pytest.approx(0.84) and g.loc["pgd-2", "english"] == pytest.approx(0.78)
    assert (g["n"] == 500).all() and (g["majority"] == 0.56).all()  # the selection rows' n and majority rate
    assert g.loc["baseline-1", "passes"] and g.loc["pgd-2", "passes"]
    # 85% on test, but at the majority rate on the selection rows: fails, and says on which rows
    assert not g.loc["pgd-1", "passes"] and "selection rows' majority rate" in g.loc["pgd-1", "note"]
    # the best of 3 epochs: its Wilson CI at 1 - 0.05 / 3
    assert g.loc["pgd-1", "ci_level"] == pytest.approx(1 - 0.05 / 3)
    assert (g.loc["pgd-1", "ci_lo"], g.loc["pgd-1", "ci_hi"]) == pytest.approx(wilson_ci(0.57, 500, 1 - 0.05 / 3))


def test_a_clean_epoch_is_neither_the_score_nor_one_of_the_epochs_chosen_among():
    """With train.clean_epochs the first epoch is scored in the log but never kept: a robust run that learned in its
    clean epoch (0.80) and collapsed after it (0.57, 0.56) is judged on its kept epoch, at 1 - 0.05 / 2."""
    tr = transfer_rows({"baseline-1": 0.85, "pgd-1": 0.85})
    logs = train_rows({"baseline-1": [0.80, 0.84, 0.83], "pgd-1": [0.80, 0.57, 0.56]})
    logs["clean_epoch"] = np.where(logs["metric"] == "train_loss", logs["epoch"] == 0, None)
    g = quality_gate(tr, {"pawsx": 0.55}, train=logs, selection=SEL, scored={"pawsx": "test"}).set_index("checkpoint")
    assert g.loc["pgd-1", "english"] == pytest.approx(0.57) and not g.loc["pgd-1", "passes"]
    assert g.loc["baseline-1", "english"] == pytest.approx(0.84) and g.loc["baseline-1", "passes"]
    assert g["ci_level"].tolist() == pytest.approx([1 - 0.05 / 2] * 2)


def test_a_plateau_run_is_named_in_the_note_the_gate_notes_and_the_opening_line():
    tr = transfer_rows({"baseline-1": 0.85, "baseline-2": 0.84, "pgd-1": 0.56, "pgd-2": 0.56})
    logs = train_rows({"baseline-1": [0.8, 0.82], "baseline-2": [0.8, 0.81], "pgd-1": [0.56, 0.56],
                       "pgd-2": [0.55, 0.56]}, plateau={"pgd-1": "plateau", "pgd-2": "plateau"})
    gate = apply_gate(tr, {"pawsx": 0.55}, train=logs, selection=SEL)
    t = gate.table.set_index("checkpoint")
    assert t.loc["pgd-1", "plateau"] == "plateau" and "did not leave the majority plateau" in t.loc["pgd-1", "note"]
    assert "0.684" in t.loc["pgd-1", "note"] and "0.686" in t.loc["pgd-1", "note"]
    assert t.loc["baseline-1", "plateau"] == "left" and "plateau" not in t.loc["baseline-1", "note"]
    assert gate.failed == {("pawsx", "pgd-1"), ("pawsx", "pgd-2")}
    assert any("did not leave the majority plateau" in n and "pawsx/pgd-2" in n for n in gate.notes)
    assert not any("TEST rows" in n for n in gate.notes)
    line = collapse_text(gate.table)
    assert "pgd: 2 of 2 pawsx seeds (2 on the majority plateau) did not learn; every checkpoint of the others " \
           "learned: baseline (2 pawsx)." in line
    assert "decided on the English selection rows" in line


def test_the_precision_each_checkpoint_trained_in_is_in_the_table_and_a_mix_is_named():
    tr = transfer_rows({"baseline-1": 0.85, "baseline-2": 0.84, "pgd-1": 0.80, "pgd-2": 0.81})
    logs = train_rows({"baseline-1": [0.8, 0.82], "baseline-2": [0.8, 0.81], "pgd-1": [0.7, 0.8], "pgd-2": [0.7, 0.8]})
    one = apply_gate(tr, {"pawsx": 0.55}, train=logs.assign(precision="bf16"), selection=SEL).table
    assert (one["precision"] == "bf16").all() and "precision" not in collapse_text(one)
    logs["precision"] = np.where(logs["checkpoint"].isin(["baseline-2", "pgd-2"]), "fp32", "bf16")
    mixed = apply_gate(tr, {"pawsx": 0.55}, train=logs, selection=SEL).table.set_index("checkpoint")
    assert mixed.loc["pgd-2", "precision"] == "fp32" and mixed.loc["pgd-1", "precision"] == "bf16"
    assert "more than one precision" in collapse_text(mixed.reset_index())
    assert "baseline: 1 bf16, 1 fp32; pgd: 1 bf16, 1 fp32." in collapse_text(mixed.reset_index())
    # logs written before provenance carried it: blank, and no sentence
    assert (apply_gate(tr, {"pawsx": 0.55}, train=logs.drop(columns="precision"), selection=SEL)
            .table["precision"] == "").all()


def test_without_selection_rows_the_gate_falls_back_to_test_and_says_so_loudly():
    tr = transfer_rows({"baseline-1": 0.85, "pgd-1": 0.56})
    gate = apply_gate(tr, {"pawsx": 0.55}, train=train_rows({"baseline-1": [], "pgd-1": []}), selection=None,
                      scored={"pawsx": "test"})
    t = gate.table.set_index("checkpoint")
    assert set(t["split"]) == {"test"} and (t["n"] == 400).all() and (t["majority"] == 0.55).all()
    assert t["note"].str.startswith("DECIDED ON ENGLISH TEST ROWS").all()
    assert not t.loc["pgd-1", "passes"] and t.loc["baseline-1", "passes"]
    assert gate.notes[0].startswith("**The model-quality gate of pawsx is decided on English TEST rows**")
    assert "decided on English TEST rows" in collapse_text(gate.table)
    # a task kind without a majority rate is not gated, whatever the selection rows
    tag = transfer_rows({"baseline-1": 0.9}, task="udpos").assign(ci_low=0.88, ci_high=0.92)
    g = quality_gate(tag, {}, train=None, selection=SEL, scored={"udpos": "dev"}).iloc[0]
    assert g["passes"] and g["split"] == "dev" and "not gated" in g["note"] and collapse_text(pd.DataFrame([g])) == ""


def test_missing_selection_rows_or_scores_are_errors_naming_the_task():
    tr = transfer_rows({"baseline-1": 0.85})
    with pytest.raises(ValueError, match="task pawsx: the run has no English selection rows.*required for the "
                                         "model-quality gate"):
        quality_gate(tr, {"pawsx": 0.55}, train=train_rows({"baseline-1": [0.8]}), selection={})
    with pytest.raises(ValueError, match=r"task pawsx: checkpoint baseline-1 has no English selection score.*"
                                         r"results/train/baseline-1.parquet"):
        quality_gate(tr, {"pawsx": 0.55}, train=train_rows({"baseline-1": []}), selection=SEL)
    with pytest.raises(ValueError, match="task pawsx: checkpoint baseline-1"):  # no train log at all
        quality_gate(tr, {"pawsx": 0.55}, train=None, selection=SEL)


def test_selection_rows_of_a_run_from_its_split_files(tmp_path):
    data = make_smoke_data(tmp_path / "data")
    on = ProtocolConfig(name="zero_shot", selection=True, selection_fraction=0.25, max_eval=30)
    splits = {t: make_split(t, ["en", "de"], on, data) for t in ("xnli", "pawsx", "udpos")}
    run = SimpleNamespace(cfg=SimpleNamespace(protocol=on, grid=SimpleNamespace(task=list(splits))), data_dir=data,
                          split=splits.get, path=lambda *p: tmp_path.joinpath(*p))
    sel = selection_rows(run)
    assert set(sel) == {"xnli", "pawsx"}  # UD-POS has no label prior: not gated
    for task, s in sel.items():
        labels = [r["label"] for r in select_records(splits[task], data)]
        assert s.n == len(labels) and s.majority == pytest.approx(np.bincount(labels).max() / len(labels))
    assert sel["pawsx"].label == f"selection (pawsx English dev, {sel['pawsx'].n} rows)"
    assert "held-out groups of the English training rows: xnli_dev_en" in sel["xnli"].label
    assert scored_splits(run) == {"xnli": "test", "pawsx": "test", "udpos": "dev"}
    off = SimpleNamespace(cfg=SimpleNamespace(protocol=ProtocolConfig(), grid=run.cfg.grid))
    assert selection_rows(off) is None  # no selection rows: the gate falls back to test
    # selection on, but a task's split without selection rows (written before it was turned on)
    splits["pawsx"] = make_split("pawsx", ["en", "de"], ProtocolConfig(name="zero_shot", max_eval=30), data)
    with pytest.raises(ValueError, match=r"task pawsx: no English selection rows .*pawsx.json"):
        selection_rows(run)


def test_a_model_at_the_majority_rate_rarely_passes_and_a_learned_one_does():
    """Calibration: a checkpoint at the majority rate, scored on 500 selection rows after each of 4 epochs whose
    scores are independent draws (the worst case for taking the best), passes at most 2.5% of the time (one-sided
    level of the 95% CI) with the Bonferroni level; at the nominal level it would pass about 4 times as often.
    A checkpoint 8 points above the majority rate passes nearly always."""
    rng = np.random.default_rng(0)
    n, maj, sims, epochs = 500, 0.56, 1000, 4
    tr = transfer_rows({f"m-{i}": 0.8 for i in range(sims)})
    null = {f"m-{i}": list(rng.binomial(n, maj, epochs) / n) for i in range(sims)}
    sel = {"pawsx": SelectionRows("pawsx", n, maj, "pawsx English dev")}
    g = quality_gate(tr, {"pawsx": 0.55}, train=train_rows(null), selection=sel)
    false_pass = g["passes"].mean()
    naive = np.mean([wilson_ci(max(s), n)[0] > maj for s in null.values()])
    assert false_pass <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / sims) and naive > 2 * false_pass + 0.02
    learned = {f"m-{i}": list(rng.binomial(n, maj + 0.08, epochs) / n) for i in range(sims)}
    assert quality_gate(tr, {"pawsx": 0.55}, train=train_rows(learned), selection=sel)["passes"].mean() > 0.95
