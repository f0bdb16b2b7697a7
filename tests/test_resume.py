"""Epoch-level resume (xltlib.training.resume): a cell cut off after an epoch and run again gives the numbers of
the run that was never cut off."""
from __future__ import annotations

import logging

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from xltlib.config.validate import load_config
from xltlib.core import devices
from xltlib.evaluation.task_types import train_classifier
from xltlib.models.heads import load_classifier
from xltlib.runner import keys
from xltlib.runner.run_dir import init_run
from xltlib.runner.stages import stage_data, stage_train
from xltlib.training import loop
from xltlib.training.loop import trainable_parameters
from xltlib.training.objectives import build_objective
from xltlib.training.precision import MasterWeights, _bf16_copy
from xltlib.training.resume import clear_epoch_state, load_epoch_state


SMOKE = Path(__file__).resolve().parents[1] / "params" / "smoke.yaml"


class Cut(Exception):
    """The process ending (a session's end, a killed job) right after an epoch's state was written."""


def _records(n=24):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    return [dict(id=i, text_a=" ".join(rng.choice(words, 5)), text_b=" ".join(rng.choice(words, 4)), label=int(i % 3))
            for i in range(n)]


def _cut_after(monkeypatch, epoch: int) -> list[int]:
    """Make the loop stop right after it saved the state of ``epoch``; returns the epochs saved so far."""
    real, saved = loop.save_epoch_state, []

    def save_then_cut(path, state, print_):
        real(path, state, print_)
        saved.append(state.epoch)
        if state.epoch == epoch:
            raise Cut

    monkeypatch.setattr(loop, "save_epoch_state", save_then_cut)
    return saved


def _same_run(a, b):
    """Same log (all but the clock) and the same trained weights."""
    (ma, _, la), (mb, _, lb) = a, b
    drop = lambda rows: [{k: v for k, v in r.items() if k not in ("elapsed_s", "resumed")} for r in rows]  # noqa: E731
    assert drop(la) == drop(lb)
    for (n, p), (_, q) in zip(ma.named_parameters(), mb.named_parameters()):
        assert torch.equal(p, q), n


def _objective(name, tmp_path):
    if name == "rs_da":
        table = tmp_path / "syn.json"
        table.write_text('{"w1": ["w2"], "w3": ["w4", "w5"], "w7": ["w8"]}')
        return lambda: build_objective("rs_da", {"synonyms": str(table)})
    if name == "freelb":  # adv_begin_iter: a counter the objective carries across epochs
        return lambda: build_objective("freelb", {"adv_begin_iter": 4})
    return lambda: build_objective(name)


@pytest.mark.parametrize("method,clean_epochs,cut", [("baseline", 0, 0), ("baseline", 0, 1), ("pgd", 1, 1),
                                                     ("freelb", 0, 0), ("rs_rp", 0, 1), ("rs_da", 0, 0),
                                                     ("rs_da", 1, 1)])
def test_a_cut_off_run_resumed_equals_the_uncut_run(tmp_path, monkeypatch, method, clean_epochs, cut):
    make = _objective(method, tmp_path)
    kw = dict(num_labels=3, epochs=3, batch_size=8, lr=1e-3, max_length=32, bf16=False, clean_epochs=clean_epochs,
              select_records=_records(9), seed=5)
    uncut = train_classifier("tiny-random", _records(), objective=make(), **kw)
    state = tmp_path / "cell.resume.pt"
    saved = _cut_after(monkeypatch, cut)
    with pytest.raises(Cut):
        train_classifier("tiny-random", _records(), objective=make(), resume_path=state, resume_key="k", **kw)
    assert saved == list(range(cut + 1)) and state.is_file()
    monkeypatch.undo()
    resumed = train_classifier("tiny-random", _records(), objective=make(), resume_path=state, resume_key="k", **kw)
    _same_run(uncut, resumed)
    # the steps of the second process say so: the cost report counts only its own part of the loop's clock
    assert [r["resumed"] for r in resumed[2]] == [int(r["epoch"] > cut) for r in resumed[2]]
    # the clock goes on from the saved epoch's: the loop's time of both parts, not of the second alone
    saved_clock = load_epoch_state(state, torch.load(state, weights_only=False)["fingerprint"]).elapsed_s
    assert resumed[2][-1]["elapsed_s"] >= saved_clock > 0


@pytest.mark.parametrize("method,extra,cut", [
    ("pgd", dict(epochs=2, seed=1), 0),
    # a trainable word-embedding table: SparseAdam's state and the masters copied back by rows, with selection
    # between epochs (bf16 inference)
    ("baseline", dict(epochs=3, seed=3, lr=1e-2, freeze_embeddings=False, select_records=_records(9)), 1)])
def test_bf16_weights_resume_through_the_fp32_masters(tmp_path, monkeypatch, method, extra, cut):
    native = lambda: monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)  # noqa: E731 (any CPU)
    native()
    kw = dict(dict(num_labels=3, batch_size=8, lr=1e-3, max_length=32, bf16=True, bf16_weights=True), **extra)
    uncut = train_classifier("tiny-random", _records(), objective=build_objective(method), **kw)
    state = tmp_path / "cell.resume.pt"
    _cut_after(monkeypatch, cut)
    with pytest.raises(Cut):
        train_classifier("tiny-random", _records(), objective=build_objective(method), resume_path=state, **kw)
    monkeypatch.undo()
    native()
    _same_run(uncut, train_classifier("tiny-random", _records(), objective=build_objective(method),
                                      resume_path=state, **kw))


def test_no_state_is_written_after_the_last_epoch_or_without_a_path(tmp_path):
    state = tmp_path / "cell.resume.pt"
    kw = dict(num_labels=3, batch_size=8, lr=1e-3, max_length=32, bf16=False, seed=0,
              objective=build_objective("baseline"))
    train_classifier("tiny-random", _records(), epochs=1, resume_path=state, **kw)
    assert not state.exists()  # one epoch: nothing to resume, nothing written
    train_classifier("tiny-random", _records(), epochs=2, resume_path=state, **kw)
    assert state.is_file()  # epoch 1 of 2 was saved; the stage deletes it once the checkpoint is on disk
    clear_epoch_state(state)
    assert not state.exists() and not list(tmp_path.glob("cell.resume.pt*"))


@pytest.mark.parametrize("change", ["key", "lr", "data", "corrupt"])
def test_a_state_of_other_settings_or_a_broken_file_starts_the_cell_over(tmp_path, monkeypatch, caplog, change):
    kw = dict(num_labels=3, epochs=2, batch_size=8, lr=1e-3, max_length=32, bf16=False, seed=2,
              objective=build_objective("baseline"))
    state = tmp_path / "cell.resume.pt"
    _cut_after(monkeypatch, 0)
    with pytest.raises(Cut):
        train_classifier("tiny-random", _records(), resume_path=state, resume_key="k", **kw)
    monkeypatch.undo()
    other = dict(kw, lr=5e-4) if change == "lr" else kw
    records = _records(30) if change == "data" else _records()
    key = "other" if change == "key" else "k"
    if change == "corrupt":
        state.write_bytes(state.read_bytes()[:100])  # a write cut short (not possible with the atomic rename)
    fresh = train_classifier("tiny-random", records, **other)
    with caplog.at_level(logging.WARNING, logger="xltlib.training.resume"):
        again = train_classifier("tiny-random", records, resume_path=state, resume_key=key, **other)
    assert ("unreadable resume state" if change == "corrupt" else "a resume state of other settings") in caplog.text
    _same_run(fresh, again)


def test_the_train_stage_resumes_a_cut_off_cell_and_deletes_its_state_once_the_checkpoint_is_saved(
        tmp_path, monkeypatch):
    cut_run = init_run(load_config(SMOKE, ["grid.task=[xnli]", "grid.method=[pgd]", "grid.seed=[1]"]), tmp_path / "a")
    whole_run = init_run(load_config(SMOKE, ["grid.task=[xnli]", "grid.method=[pgd]", "grid.seed=[1]"]), tmp_path / "b")
    for run in (cut_run, whole_run):
        stage_data(run)
    cell = cut_run.training_cells()[0]
    _cut_after(monkeypatch, 0)
    with pytest.raises(Cut):
        stage_train(cut_run, cell.cell_id)
    state = cut_run.resume_path(cell.checkpoint)
    assert state.is_file() and not cut_run.checkpoint_dir(cell.checkpoint).exists()  # nothing that looks done
    monkeypatch.undo()
    resumed = stage_train(cut_run, cell.cell_id)
    assert not state.exists() and cut_run.checkpoint_dir(cell.checkpoint).is_dir()
    whole = stage_train(whole_run, cell.cell_id)
    pd.testing.assert_frame_equal(resumed.drop(columns=["elapsed_s", "resumed"]),
                                  whole.drop(columns=["elapsed_s", "resumed"]))
    assert set(resumed["resumed"]) == {0, 1} and set(whole["resumed"]) == {0}


def _counting_epochs(monkeypatch) -> list[int]:
    """Count the epochs a loop trains (length_batches is drawn once per epoch)."""
    real, calls = loop.length_batches, []

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(loop, "length_batches", counted)
    return calls


@pytest.mark.parametrize("method", ["pgd", "freelb", "rs_da"])
def test_the_methods_of_a_group_start_from_the_clean_epochs_one_of_them_trained(tmp_path, monkeypatch, caplog,
                                                                               method):
    make = _objective(method, tmp_path)
    kw = dict(num_labels=3, epochs=3, clean_epochs=1, batch_size=8, lr=1e-3, max_length=32, bf16=False,
              select_records=_records(9), seed=7)
    alone = train_classifier("tiny-random", _records(), objective=make(), **kw)  # its own clean epoch
    prefix = tmp_path / "clean-prefix-g.pt"
    train_classifier("tiny-random", _records(), objective=build_objective("baseline"), prefix_path=prefix,
                     prefix_key="g", **kw)
    assert prefix.is_file()  # the baseline finished the group's clean epoch first
    epochs = _counting_epochs(monkeypatch)
    with caplog.at_level(logging.INFO, logger="xltlib.training.loop"):
        shared = train_classifier("tiny-random", _records(), objective=make(), prefix_path=prefix, prefix_key="g",
                                  **kw)
    assert len(epochs) == 2 and "clean epoch(s) of this group of methods were trained already" in caplog.text
    _same_run(alone, shared)


def test_no_prefix_is_shared_across_settings_or_without_clean_epochs(tmp_path, monkeypatch):
    kw = dict(num_labels=3, epochs=2, batch_size=8, lr=1e-3, max_length=32, bf16=False, seed=7)
    prefix = tmp_path / "clean-prefix-g.pt"
    train_classifier("tiny-random", _records(), objective=build_objective("baseline"), prefix_path=prefix,
                     prefix_key="g", **kw)
    assert not prefix.exists()  # no clean epochs: nothing the methods share
    train_classifier("tiny-random", _records(), objective=build_objective("baseline"), prefix_path=prefix,
                     prefix_key="g", clean_epochs=1, **kw)
    epochs = _counting_epochs(monkeypatch)
    other_lr = train_classifier("tiny-random", _records(), objective=build_objective("pgd"), prefix_path=prefix,
                                prefix_key="g", clean_epochs=1, **dict(kw, lr=5e-4))
    assert len(epochs) == 2  # another learning rate trains its own clean epoch
    monkeypatch.undo()
    _same_run(other_lr, train_classifier("tiny-random", _records(), objective=build_objective("pgd"),
                                         clean_epochs=1, **dict(kw, lr=5e-4)))


def test_the_train_stage_shares_the_clean_epoch_within_a_group_and_deletes_it_after_the_last_cell(tmp_path):
    sets = ["grid.task=[pawsx]", "grid.method=[baseline,pgd]", "grid.seed=[1]", "task_train={pawsx: {epochs: 2, "
            "clean_epochs: 1}}"]
    run = init_run(load_config(SMOKE, sets), tmp_path / "a")
    alone = init_run(load_config(SMOKE, sets), tmp_path / "b")
    for r in (run, alone):
        stage_data(r)
    base, pgd = run.training_cells()
    prefix = run.clean_prefix_path(keys.clean_prefix_key(run, base))
    assert keys.clean_prefix_key(run, pgd) == keys.clean_prefix_key(run, base)
    stage_train(run, base.cell_id)
    assert prefix.is_file()  # the group's pgd cell is still to train
    shared = stage_train(run, pgd.cell_id)
    assert not prefix.exists() and set(shared["resumed"]) == {0, 1}
    whole = stage_train(alone, pgd.cell_id)
    pd.testing.assert_frame_equal(shared.drop(columns=["elapsed_s", "resumed"]),
                                  whole.drop(columns=["elapsed_s", "resumed"]))


def test_a_row_sparse_copy_back_refreshes_the_cached_bf16_table():
    """bf16_inference caches a bf16 copy of the fp32 embedding table by its in-place version: the rows a step
    copies back from the masters must move that version, or selection scores a stale table."""
    model = load_classifier("tiny-random", 3)
    named = trainable_parameters(model, freeze_embeddings=False)
    masters = MasterWeights(model, named)
    table = model.get_input_embeddings().weight
    i = next(k for k, (_, p) in enumerate(named) if p is table)
    assert table.dtype == torch.float32  # the embedding block stays fp32 under bf16 weights
    cached = _bf16_copy(table)
    with torch.no_grad():
        masters.master[i][5] += 1.0
    masters._rows[i] = torch.tensor([5])  # the rows of the step's sparse gradient
    masters.master_to_model()
    assert torch.equal(table[5], masters.master[i][5]) and not torch.equal(_bf16_copy(table)[5], cached[5])
