"""Weight drift over the trained parameters only (xltlib.training.drift), on a tiny BERT with a frozen table."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel

from xltlib.training.checkpoints import save_checkpoint
from xltlib.training.drift import checkpoint_drift, pretrained_name, trained_state, weight_drift

TABLE = "encoder.embeddings.word_embeddings.weight"
QUERY = "encoder.encoder.layer.0.attention.self.query.weight"


class TinyClassifier(nn.Module):
    """A task model as the package builds them: the encoder under ``encoder`` and a new head."""

    def __init__(self, encoder: BertModel):
        super().__init__()
        self.encoder, self.config = encoder, encoder.config
        self.config.num_labels = 3
        self.classifier = nn.Linear(encoder.config.hidden_size, 3)


@pytest.fixture
def models():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=500, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    base = BertModel(cfg)
    with torch.no_grad():  # a large table, like mE5's: counting it frozen would hide the drift
        base.embeddings.word_embeddings.weight.mul_(20.0)
    tuned = TinyClassifier(copy.deepcopy(base))
    return base, tuned


def _move(model, name, scale=0.05) -> float:
    """Move one tensor at random; the L2 norm of the step as stored (float32)."""
    p = dict(model.named_parameters())[name]
    with torch.no_grad():
        before = p.detach().clone()
        p.add_(scale * torch.randn_like(p))
        return float((p.detach().double() - before.double()).norm())


def test_frozen_table_is_not_drift(models):
    base, tuned = models
    tuned.encoder.get_input_embeddings().weight.requires_grad_(False)  # as training.loop does by default
    step = _move(tuned, QUERY)
    pre = {n: p.detach() for n, p in base.named_parameters()}
    d = weight_drift(trained_state(tuned), pre)
    trained_encoder = [n for n in pre if n != "embeddings.word_embeddings.weight"]
    den = sum(float(pre[n].double().pow(2).sum()) for n in trained_encoder)
    assert d.value == pytest.approx(step / den**0.5, rel=1e-9)
    assert d.n_tensors == len(trained_encoder)  # every encoder tensor but the table; the head has no pre-trained value
    assert d.n_params == sum(pre[n].numel() for n in trained_encoder)
    # the old measure (every encoder tensor) is several times smaller here: the table sits in its denominator
    everything = weight_drift(dict(tuned.named_parameters()), pre)
    assert everything.value < d.value / 3


def test_trained_table_is_drift(models):
    base, tuned = models
    step = _move(tuned, TABLE, scale=0.5)  # only the table moved (a `_emb` control arm)
    pre = {n: p.detach() for n, p in base.named_parameters()}
    d = weight_drift(trained_state(tuned), pre)
    den = sum(float(p.double().pow(2).sum()) for p in pre.values())
    assert d.value == pytest.approx(step / den**0.5, rel=1e-9)
    assert d.n_tensors == len(pre)


def test_checkpoint_drift_reads_what_the_checkpoint_stores(models, tmp_path):
    base, tuned = models
    tuned.encoder.get_input_embeddings().weight.requires_grad_(False)
    _move(tuned, QUERY)
    pre = dict(base.named_parameters())
    save_checkpoint(tuned, None, tmp_path / "ck", base_model="tiny", meta={})
    stored, live = checkpoint_drift(tmp_path / "ck", pre), weight_drift(trained_state(tuned), pre)
    assert stored.value == pytest.approx(live.value, rel=1e-12) and stored.n_params == live.n_params
    with pytest.raises(FileNotFoundError, match="trainable.safetensors"):
        checkpoint_drift(tmp_path, pre)


def test_names_map_to_the_pretrained_encoder():
    pre = {"embeddings.word_embeddings.weight": torch.zeros(1), "encoder.layer.0.output.dense.bias": torch.zeros(1)}
    assert pretrained_name("encoder.encoder.layer.0.output.dense.bias", pre) == "encoder.layer.0.output.dense.bias"
    assert pretrained_name("bert.embeddings.word_embeddings.weight", pre) == "embeddings.word_embeddings.weight"
    assert pretrained_name("classifier.weight", pre) is None
