"""Training-loop pieces on tiny made data: dropout, batching, seeding, checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xltlib.training.dropout import FastDropout, fast_dropout, use_fast_dropout
from xltlib.models.heads import load_classifier
from xltlib.training.objectives import build_objective
from xltlib.training.batching import length_batches
from xltlib.evaluation.task_types import get_kind, load_checkpoint
from xltlib.training.checkpoints import save_checkpoint
from xltlib.core import devices
from xltlib.training.precision import bf16_inference
from xltlib.training import loop
from xltlib.config.schema import TrainConfig
from xltlib.runner.keys import train_settings
from xltlib.evaluation.task_types import train_classifier


def test_fast_dropout_rate_and_expectation():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = fast_dropout(x, 0.1)
    assert abs((y == 0).float().mean().item() - 26 / 256) < 0.005  # p quantized to 26/256
    assert abs(y.mean().item() - 1.0) < 0.01  # survivors rescaled: expectation kept
    assert torch.equal(fast_dropout(x, 0.1, training=False), x)
    assert torch.equal(fast_dropout(x, 0.0), x)


def test_fast_dropout_gradient_matches_mask():
    x = torch.randn(64, 8, requires_grad=True)
    y = fast_dropout(x, 0.5)
    y.sum().backward()
    kept = y.detach() != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 256 / 128))
    assert torch.all(x.grad[~kept] == 0)


def test_use_fast_dropout_swaps_every_dropout():
    model = load_classifier("tiny-random", 3)
    use_fast_dropout(model)
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(isinstance(m, FastDropout) for m in drops)
    model.train()
    out = model(input_ids=torch.tensor([[0, 7, 8, 2]]), attention_mask=torch.ones(1, 4, dtype=torch.long),
                labels=torch.tensor([1]))
    assert torch.isfinite(out.loss)


def test_length_batches_cover_every_index_once_and_group_lengths():
    lengths = np.random.default_rng(0).integers(3, 100, size=1000)
    for rng in (None, np.random.default_rng(1)):
        batches = length_batches(lengths, 32, rng)
        idx = np.concatenate(batches)
        assert sorted(idx.tolist()) == list(range(1000))
        spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
        assert spread < 15  # random batches would spread ~90


def _records(n=48):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    return [dict(text_a=" ".join(rng.choice(words, 5)), text_b=" ".join(rng.choice(words, 4)), label=int(i % 3))
            for i in range(n)]


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_same_seed_same_losses_and_checkpoint_roundtrip(tmp_path, pooling):
    kw = dict(num_labels=3, objective=build_objective("baseline"), epochs=2, batch_size=8, lr=1e-3,
              warmup_ratio=0.1, weight_decay=0.01, max_length=32, bf16=False, pooling=pooling)
    m1, tok, log1 = train_classifier("tiny-random", _records(), seed=3, **kw)
    _, _, log2 = train_classifier("tiny-random", _records(), seed=3, **kw)
    _, _, log3 = train_classifier("tiny-random", _records(), seed=4, **kw)
    losses = [r["loss"] for r in log1]
    assert losses == [r["loss"] for r in log2] and losses != [r["loss"] for r in log3]
    assert len(log1) == 12 and log1[-1]["examples"] == 96
    # frozen word embeddings are not saved; the rest round-trips exactly
    path = save_checkpoint(m1, tok, tmp_path / "ck", base_model="tiny-random", meta={"pooling": pooling})
    m2, _, meta = load_checkpoint(path)
    assert meta["pooling"] == pooling
    batch = tok(["w1 w2", "w3"], ["w4", "w5 w6"], padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        assert torch.allclose(m1.eval()(**batch).logits, m2(**batch).logits, atol=1e-6)


def test_unfinished_checkpoint_is_not_loadable(tmp_path):
    (tmp_path / "ck").mkdir()
    with pytest.raises(FileNotFoundError, match="not a finished xlt checkpoint"):
        load_checkpoint(tmp_path / "ck")


def test_master_weights_keep_updates_bf16_would_round_away():
    from xltlib.training.precision import MasterWeights
    from xltlib.training.loop import trainable_parameters

    model = load_classifier("tiny-random", 3)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    named = trainable_parameters(model, freeze_embeddings=True)
    masters = MasterWeights(model, named)
    embedding_block = {id(p) for p in model.base_model.embeddings.parameters()}  # stays fp32 (perturbations)
    assert all(p.dtype == (torch.float32 if id(p) in embedding_block else torch.bfloat16) for p in model.parameters())
    assert all(m.dtype == torch.float32 for m in masters.master)
    opt = torch.optim.SGD(masters.master, lr=1e-6)  # an update far below bf16 resolution at |w| ~ 0.02
    before = [m.detach().clone() for m in masters.master]
    out = model(input_ids=torch.tensor([[0, 7, 8, 2]]), attention_mask=torch.ones(1, 4, dtype=torch.long),
                labels=torch.tensor([1]))
    out.loss.backward()
    masters.grads_to_master()
    assert all(p.grad is None for _, p in named) and any(m.grad is not None for m in masters.master)
    opt.step()
    masters.master_to_model()
    moved = sum(int((m != b).sum()) for m, b in zip(masters.master, before))
    assert moved > 0
    restored = masters.restore()
    assert all(p.dtype == torch.float32 for p in restored.parameters())
    assert torch.equal(restored.get_input_embeddings().weight, emb_before)  # frozen: bit-identical
    assert all(torch.equal(p, m) for (_, p), m in zip(named, masters.master))  # trained: the fp32 masters


@pytest.mark.parametrize("method", ["baseline", "pgd", "freelb", "rs_rp"])
def test_bf16_weight_training_returns_fp32_model_and_finite_losses(method):
    kw = dict(num_labels=3, objective=build_objective(method), epochs=1, batch_size=8, lr=1e-3,
              warmup_ratio=0.1, weight_decay=0.01, max_length=32, bf16=True)
    model, _, log = train_classifier("tiny-random", _records(24), seed=0, **kw)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(np.isfinite(r["loss"]) for r in log)


def test_train_model_takes_train_config_and_rejects_bad_overrides():
    from xltlib.config.schema import TrainConfig
    from xltlib.training.loop import train_model

    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-3, max_length=32, bf16=False)
    kw = dict(task_type=get_kind("pair_classification"), task=None, num_labels=3, objective=build_objective("baseline"), seed=2)
    _, _, log = train_model("tiny-random", _records(16), cfg=cfg, **kw)
    _, _, same = train_model("tiny-random", _records(16), cfg=TrainConfig(epochs=3), epochs=1, batch_size=8,
                             lr=1e-3, max_length=32, bf16=False, **kw)  # overrides validated like a params file
    assert [r["loss"] for r in log] == [r["loss"] for r in same] and len(log) == 2
    with pytest.raises(ValueError, match="batch_size"):
        train_model("tiny-random", _records(16), cfg=cfg, batch_size=0, **kw)
    with pytest.raises(ValueError, match="epoch"):
        train_model("tiny-random", _records(16), cfg=cfg, epoch=1, **kw)


@pytest.mark.parametrize("bf16,bf16_weights", [(False, False), (True, False), (True, True)])
def test_one_loop_for_every_precision(bf16, bf16_weights):
    from xltlib.training.precision import Precision

    model = load_classifier("tiny-random", 3)
    from xltlib.training.loop import trainable_parameters

    prec = Precision(model, trainable_parameters(model, True), bf16=bf16, bf16_weights=bf16_weights)
    assert prec.mode == ("fp32" if not bf16 else "bf16_weights" if bf16_weights else "autocast")
    assert all(p.dtype == torch.float32 for p in prec.params)  # the optimizer always updates fp32 tensors
    kw = dict(num_labels=3, objective=build_objective("pgd"), epochs=1, batch_size=8, lr=1e-3,
              max_length=32, bf16=bf16, bf16_weights=bf16_weights)
    model, _, log = train_classifier("tiny-random", _records(16), seed=0, **kw)
    assert all(p.dtype == torch.float32 for p in model.parameters()) and all(np.isfinite(r["loss"]) for r in log)


def test_first_run_on_fresh_model_cache_equals_later_runs(tmp_path, monkeypatch):
    """Issue 11 item 8: converting a model on first use must not change the seeded numbers."""
    kw = dict(num_labels=3, objective=build_objective("baseline"), epochs=1, batch_size=8, lr=1e-3,
              max_length=32, bf16=False)
    losses = []
    for cache in ("a", "a", "b"):  # fresh cache (converts), the same cache warm, another fresh cache
        monkeypatch.setenv("XLT_MODEL_CACHE", str(tmp_path / cache))
        _, _, log = train_classifier("tiny-random", _records(24), seed=5, **kw)
        losses.append([r["loss"] for r in log])
    assert losses[0] == losses[1] == losses[2] and len(losses[0]) == 3


def test_diagnostics_in_the_train_log(tmp_path):
    table = tmp_path / "syn.json"
    table.write_text('{"w1": ["w2"], "w3": ["w4", "w5"], "W7": ["w8"]}')
    kw = dict(num_labels=3, epochs=2, batch_size=8, lr=1e-3, max_length=32, bf16=False)
    _, _, log = train_classifier("tiny-random", _records(16), seed=0, objective=build_objective("pgd"), **kw)
    for r in log:
        assert {"clean_loss", "adv_loss", "loss_gap", "delta_token_norm", "delta_token_norm_rel"} <= set(r)
        assert r["loss"] == pytest.approx(r["adv_loss"])
    _, _, off = train_classifier("tiny-random", _records(16), seed=0, objective=build_objective("pgd"),
                                 diagnostics=False, **kw)
    assert "clean_loss" not in off[0] and "adv_loss" in off[0]
    da = build_objective("rs_da", {"synonyms": str(table)})
    _, _, log = train_classifier("tiny-random", _records(16), seed=0, objective=da, **kw)
    rates = {(r["epoch"], r["subst_rate"], r["subst_site_rate"]) for r in log}
    assert len(rates) == 2  # one measured rate per epoch (fresh views)
    assert all(0 < rate < site < 0.2 for _, rate, site in rates)  # w1, w3 of 60 words; 'W7' is not 'w7'


def test_rs_da_copies_schedule(tmp_path):
    from xltlib.data import tasks as T

    table = tmp_path / "syn.json"
    table.write_text('{"w1": ["w2"], "w3": ["w4", "w5"]}')
    kw = dict(task_type=get_kind("pair_classification"), num_labels=3, seed=0, epochs=1, batch_size=8, lr=1e-3, max_length=32,
              bf16=False)
    from xltlib.training.loop import train_model

    obj = build_objective("rs_da", {"synonyms": str(table), "copies": 3})
    _, _, log = train_model("tiny-random", _records(16), task=None, objective=obj, **kw)
    assert len(log) == 6 and log[-1]["examples"] == 48  # 3 copies of 16 examples, one epoch
    ref = build_objective("rs_da", {"synonyms": str(table), "copies": "reference"})
    _, _, log = train_model("tiny-random", _records(8), task=T.get_task("xnli"), objective=ref, **kw)
    assert log[-1]["examples"] == 24 and {r["epoch"] for r in log} == {0}  # XNLI: 3 copies x 1 epoch
    with pytest.raises(ValueError, match=r"methods.rs_da.copies = 'reference'"):
        train_model("tiny-random", _records(8), task=None, objective=ref, **kw)


def test_bf16_inference_runs_bf16_weights_and_restores_the_fp32_ones(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)  # the mechanism, on any CPU

    model = load_classifier("tiny-random", 3).eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.tensor([[0, 7, 8, 2]])
    kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids))
    with torch.inference_mode():
        ref = model(**kw).logits
        with bf16_inference(model):
            assert all(p.dtype == torch.bfloat16 for p in model.parameters())
            ptrs = [p.data_ptr() for p in model.parameters()]
            out = model(**kw).logits
        with bf16_inference(model):  # the cast copies are reused, not made again
            assert [p.data_ptr() for p in model.parameters()] == ptrs
        with pytest.raises(RuntimeError), bf16_inference(model):
            raise RuntimeError("restored on errors too")
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), ref, atol=0.05)
    assert all(p.dtype == torch.float32 and torch.equal(p, before[n]) for n, p in model.named_parameters())
    with torch.no_grad():  # an in-place update (an optimizer step, load_state_dict) makes a fresh copy
        model.classifier.weight.add_(1.0)
    with bf16_inference(model):
        assert torch.allclose(model.classifier.weight.float(), before["classifier.weight"] + 1, atol=0.02)
    with bf16_inference(model, enabled=False):
        assert all(p.dtype == torch.float32 for p in model.parameters())


def test_clean_epochs_train_plain_cross_entropy_then_the_method():
    kw = dict(num_labels=3, epochs=2, batch_size=8, lr=1e-3, max_length=32, bf16=False)
    _, _, base = train_classifier("tiny-random", _records(16), seed=0, objective=build_objective("baseline"), **kw)
    _, _, log = train_classifier("tiny-random", _records(16), seed=0, objective=build_objective("pgd"),
                                 clean_epochs=1, **kw)
    first = [r for r in log if r["epoch"] == 0]
    assert all(r["clean_epoch"] and "adv_loss" not in r for r in first)
    assert all(not r["clean_epoch"] and "adv_loss" in r for r in log if r["epoch"] == 1)
    # the clean epoch is the baseline's first epoch: same seed, same batches, same updates
    assert [r["loss"] for r in first] == pytest.approx([r["loss"] for r in base if r["epoch"] == 0], abs=1e-6)


def test_clean_epochs_keep_the_text_clean_for_rs_da(tmp_path):
    table = tmp_path / "syn.json"
    table.write_text('{"w1": ["w2"], "w3": ["w4", "w5"]}')
    da = build_objective("rs_da", {"synonyms": str(table)})
    _, _, log = train_classifier("tiny-random", _records(16), seed=0, objective=da, num_labels=3, epochs=3,
                                 batch_size=8, lr=1e-3, max_length=32, bf16=False, clean_epochs=1)
    assert all("subst_rate" not in r for r in log if r["epoch"] == 0)
    assert all(r["subst_rate"] > 0 for r in log if r["epoch"] > 0)
    assert len({r["subst_rate"] for r in log if r["epoch"] > 0}) == 2  # a fresh view per robust epoch


def test_the_best_epoch_is_chosen_among_the_robust_epochs_only(monkeypatch):
    scores = iter([0.9, 0.5, 0.6])  # the clean epoch scores best: it must not be kept
    monkeypatch.setattr(loop, "selection_score", lambda *a, **k: next(scores))
    _, _, log = train_classifier("tiny-random", _records(16), seed=0, objective=build_objective("pgd"), num_labels=3,
                                 epochs=3, batch_size=8, lr=1e-3, max_length=32, bf16=False, clean_epochs=1,
                                 select_records=_records(6))
    assert [r["select_score"] for r in log if "select_score" in r] == [0.9, 0.5, 0.6]
    assert {r["selected_epoch"] for r in log} == {2}


def test_clean_epochs_that_leave_no_robust_epoch_or_meet_fixed_copies_are_errors(tmp_path):
    kw = dict(num_labels=3, batch_size=8, lr=1e-3, max_length=32, bf16=False)
    with pytest.raises(ValueError, match=r"clean_epochs = 2 leaves no robust epoch of epochs = 2"):
        train_classifier("tiny-random", _records(8), seed=0, objective=build_objective("pgd"), epochs=2,
                         clean_epochs=2, **kw)
    table = tmp_path / "syn.json"
    table.write_text('{"w1": ["w2"]}')
    copies = build_objective("rs_da", {"synonyms": str(table), "copies": 3})
    with pytest.raises(ValueError, match=r"train.clean_epochs = 1 with .*fixed copies \(copies: 3\)"):
        train_classifier("tiny-random", _records(8), seed=0, objective=copies, epochs=2, clean_epochs=1, **kw)


def test_a_checkpoint_key_leaves_out_clean_epochs_at_its_default():
    assert "clean_epochs" not in train_settings(TrainConfig())
    assert train_settings(TrainConfig(clean_epochs=1))["clean_epochs"] == 1
