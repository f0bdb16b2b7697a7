"""Training-loop pieces on tiny made data: dropout, batching, seeding, checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xltlib.fast import FastDropout, fast_dropout, use_fast_dropout
from xltlib.models import load_classifier
from xltlib.robust import build_objective
from xltlib.train import length_batches, load_checkpoint, save_checkpoint, train_classifier


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
    from xltlib.precision import MasterWeights
    from xltlib.train import trainable_parameters

    model = load_classifier("tiny-random", 3)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    named = trainable_parameters(model, freeze_embeddings=True)
    masters = MasterWeights(model, named)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
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
