"""Fidelity to the references: fp32 perturbations through a bf16-weight model, the FreeLB repository's random
start, and ``adv_begin_iter`` (tiny random BERT; seconds)."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from xltlib.training.objectives import build_objective
from xltlib.training.precision import Precision, embedding_block

torch.set_num_threads(1)
LENGTHS = [12, 9, 5, 3]


def make_model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, num_labels=3, max_position_embeddings=32)
    return BertForSequenceClassification(cfg).train()


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (len(LENGTHS), max(LENGTHS)), generator=g)
    mask = (torch.arange(max(LENGTHS))[None] < torch.tensor(LENGTHS)[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": torch.randint(0, 3, (len(LENGTHS),), generator=g)}


def bf16_trainer(model):
    named = [(n, p) for n, p in model.named_parameters() if "word_embeddings" not in n]
    model.get_input_embeddings().weight.requires_grad_(False)
    return Precision(model, named, bf16=True, bf16_weights=True)


def test_embedding_block_stays_fp32_and_casts_its_output():
    model = make_model()
    original = model.bert.embeddings.word_embeddings.weight.detach().clone()
    prec = bf16_trainer(model)
    assert embedding_block(model) is model.bert.embeddings
    assert model.bert.embeddings.word_embeddings.weight.dtype == torch.float32
    assert model.bert.embeddings.LayerNorm.weight.dtype == torch.float32
    assert model.bert.encoder.layer[0].attention.self.query.weight.dtype == torch.bfloat16
    batch = make_batch()
    assert model.bert.embeddings(batch["input_ids"]).dtype == torch.bfloat16  # the encoder gets bf16 states
    obj = build_objective("pgd", {"eps": 0.05, "alpha": 0.03})
    loss = obj.loss_and_backward(model, batch)
    assert math.isfinite(float(loss)) and obj.last_delta.dtype == torch.float32
    restored = prec.restore()
    assert all(p.dtype == torch.float32 for p in restored.parameters())
    assert torch.equal(restored.bert.embeddings.word_embeddings.weight, original)  # never rounded to bf16
    assert restored.bert.embeddings(batch["input_ids"]).dtype == torch.float32  # the cast hook is gone


def test_perturbed_embeddings_reach_the_model_in_fp32():
    """The embedding block receives x + delta exactly, in fp32: no coordinate of a small delta is rounded away
    (cast to bf16 first, many of them would be)."""
    model, batch = make_model(), make_batch()
    bf16_trainer(model)
    seen = []
    model.bert.embeddings.register_forward_pre_hook(lambda m, args, kw: seen.append(kw.get("inputs_embeds")),
                                                    with_kwargs=True)
    obj = build_objective("rs_rp", {"sigma": 0.0003, "scale": "relative"})
    obj.diagnose = False
    obj.loss_and_backward(model, batch)
    got = seen[-1]
    assert got.dtype == torch.float32
    clean = model.get_input_embeddings()(batch["input_ids"])
    delta = got - clean
    mask = batch["attention_mask"].bool()
    assert float((delta[mask] != 0).float().mean()) == 1.0
    rounded = (clean + delta).bfloat16().float() - clean.bfloat16().float()
    assert float((rounded[mask] == 0).float().mean()) > 0.1  # what the old bf16 path lost


@pytest.mark.parametrize("name,hp,mag", [("pgd", {"eps": 0.3, "alpha": 0.1}, 0.3),
                                         ("pgd", {"eps": 0.3, "alpha": 0.1, "init_mag": 0.15}, 0.15),
                                         ("freelb", {"adv_init_mag": 0.2}, 0.2)])
def test_reference_random_start(name, hp, mag):
    """Uniform per coordinate, scaled by mag / sqrt(n * H): bounded by that scale, zero on padding, norm about
    mag / sqrt(3) (the FreeLB repository's start for vanilla PGD and FreeLB)."""
    torch.manual_seed(0)
    model, batch = make_model(), make_batch()
    obj = build_objective(name, hp)
    embeds = model.get_input_embeddings()(batch["input_ids"])
    mask = batch["attention_mask"].unsqueeze(-1).float()
    unit = obj.unit(model, mask, "l2")
    delta = (obj._init_delta(embeds, mask, obj.eps * unit) if name == "pgd"
             else obj._init_delta(embeds, mask, unit))
    hidden = embeds.shape[-1]
    for i, n in enumerate(LENGTHS):
        bound = mag / math.sqrt(n * hidden)
        assert float(delta[i, :n].abs().max()) <= bound + 1e-7
        assert float(delta[i, n:].abs().sum()) == 0.0
        assert float(delta[i].norm()) == pytest.approx(mag / math.sqrt(3), rel=0.25)


def test_ball_start_kept_as_an_option():
    torch.manual_seed(0)
    model, batch = make_model(), make_batch()
    obj = build_objective("pgd", {"eps": 0.3, "alpha": 0.1, "start": "ball"})
    embeds = model.get_input_embeddings()(batch["input_ids"])
    mask = batch["attention_mask"].unsqueeze(-1).float()
    delta = obj._init_delta(embeds, mask, obj.eps * obj.unit(model, mask, "l2"))
    norms = delta.flatten(1).norm(dim=1)
    assert float(norms.max()) <= 0.3 + 1e-6 and float(norms.min()) > 0.25  # uniform in a high-dim ball: near its surface


@pytest.mark.parametrize("name", ["pgd", "freelb"])
def test_adv_begin_iter_makes_the_first_updates_clean(name):
    model, batch = make_model(), make_batch()
    obj = build_objective(name, {"adv_begin_iter": 2})
    for update in range(1, 4):
        model.zero_grad()
        obj.last_stats = {}
        obj.loss_and_backward(model, batch)
        adversarial = "adv_loss" in obj.last_stats
        assert adversarial == (update > 2), (update, obj.last_stats)


def test_bad_start_settings_name_the_key():
    with pytest.raises(ValueError, match="methods.pgd.start"):
        build_objective("pgd", {"start": "surface"}, entry="pgd")
    with pytest.raises(ValueError, match="methods.pgd.init_mag"):
        build_objective("pgd", {"init_mag": -1}, entry="pgd")
    with pytest.raises(ValueError, match="methods.freelb.adv_begin_iter"):
        build_objective("freelb", {"adv_begin_iter": -1}, entry="freelb")
