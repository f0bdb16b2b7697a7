"""train.freeze_embeddings: false trains the word-embedding table row-sparse (only the rows a batch touches),
in every precision mode; method entries carry it as a grid factor (a control arm)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xltlib.config.schema import ConfigError
from xltlib.config.grid import expand_grid
from xltlib.config.validate import load_config
from xltlib.models.heads import load_classifier
from xltlib.training.precision import clip_grad_norm
from xltlib.training.objectives import build_objective
from xltlib.evaluation.task_types import train_classifier
from xltlib.training.loop import trainable_parameters


def _records(n=24, vocab=20):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(vocab)]  # a few of the tiny vocabulary's tokens: most rows never occur
    return [dict(text_a=" ".join(rng.choice(words, 5)), text_b=" ".join(rng.choice(words, 4)), label=int(i % 3))
            for i in range(n)]


def _table(model) -> torch.Tensor:
    return model.get_input_embeddings().weight.detach().float().clone()


@pytest.mark.parametrize("bf16,bf16_weights", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("method", ["baseline", "pgd"])
def test_only_rows_of_seen_tokens_move(bf16, bf16_weights, method):
    before = _table(load_classifier("tiny-random", 3))
    kw = dict(num_labels=3, epochs=2, batch_size=8, lr=1e-2, bf16=bf16, bf16_weights=bf16_weights,
              freeze_embeddings=False)
    obj = build_objective(method, {"steps": 1} if method == "pgd" else {})
    model, tok, log = train_classifier("tiny-random", _records(), seed=0, objective=obj, **kw)
    after = _table(model)
    assert np.isfinite([r["loss"] for r in log]).all()
    seen = {i for r in _records() for i in tok(r["text_a"], r["text_b"])["input_ids"]}
    moved = set(torch.nonzero((after != before).any(1)).flatten().tolist())
    assert moved and moved <= seen  # every moved row is a token the data holds; the rest are bit-identical
    assert model.get_input_embeddings().weight.dtype == torch.float32  # restored to fp32


def test_frozen_table_stays_and_trainable_table_has_sparse_gradients():
    model = load_classifier("tiny-random", 3)
    frozen = {n for n, _ in trainable_parameters(model, freeze_embeddings=True)}
    assert not any("word_embeddings" in n for n in frozen)
    model = load_classifier("tiny-random", 3)
    named = trainable_parameters(model, freeze_embeddings=False)
    assert any("word_embeddings" in n for n, _ in named)
    ids = torch.tensor([[0, 7, 8, 2]])
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([1]))
    out.loss.backward()
    grad = model.get_input_embeddings().weight.grad
    assert grad.is_sparse and set(grad.coalesce().indices()[0].tolist()) <= {0, 7, 8, 2}


def test_clip_grad_norm_with_sparse_gradients_matches_the_dense_rule():
    dense = torch.nn.Parameter(torch.zeros(3))
    table = torch.nn.Parameter(torch.zeros(5, 2))
    dense.grad = torch.tensor([3.0, 0.0, 0.0])
    table.grad = torch.sparse_coo_tensor([[1, 1]], torch.tensor([[2.0, 0.0], [2.0, 0.0]]), (5, 2),
                                         check_invariants=True)  # row 1 twice
    total = clip_grad_norm([dense, table], 1.0)
    assert float(total) == pytest.approx(5.0)  # sqrt(3^2 + (2+2)^2): duplicates summed first
    assert torch.allclose(dense.grad, torch.tensor([0.6, 0, 0]), atol=1e-5)
    assert torch.allclose(table.grad.to_dense()[1], torch.tensor([0.8, 0.0]), atol=1e-5)


def test_method_entries_carry_train_overrides_as_a_grid_factor(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("grid: {method: [baseline, baseline_emb]}\n"
                 "methods: {baseline_emb: {type: baseline, train: {freeze_embeddings: false}}}\n")
    cfg = load_config(p)
    cells = {c.method: c for c in expand_grid(cfg)}
    assert cells["baseline_emb"].method_type == "baseline" and cells["baseline_emb"].method_params == {}
    assert cfg.train_for("xnli", "baseline_emb").freeze_embeddings is False
    assert cfg.train_for("xnli", "baseline").freeze_embeddings is True
    p.write_text("methods: {baseline_emb: {type: baseline, train: {freeze_embedding: false}}}\n")
    with pytest.raises(ConfigError, match=r"(?s)methods.baseline_emb.train.*unknown key 'freeze_embedding'"):
        load_config(p)
