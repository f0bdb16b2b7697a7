"""Tests for xltlib.robust (tiny random BERT; whole file runs in a few seconds on CPU)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from xltlib.robust import (OBJECTIVES, build_objective, load_synonym_table, objective_defaults,
                           substitute_synonyms)

torch.set_num_threads(1)

LENGTHS = [8, 6, 5, 3]  # padded to 8 with id 0
NAMES = ["baseline", "pgd", "freelb", "rs_rp", "rs_da"]
TABLE = {"good": ["fine", "nice", "great"], "movie": ["film"], "bad": [], "plot": ["story", "plot"]}


def make_model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, num_labels=3, max_position_embeddings=32)
    return BertForSequenceClassification(cfg).train()


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (len(LENGTHS), max(LENGTHS)), generator=g)
    mask = (torch.arange(max(LENGTHS))[None] < torch.tensor(LENGTHS)[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": torch.randint(0, 3, (len(LENGTHS),), generator=g)}


@pytest.fixture
def table_path(tmp_path):
    p = tmp_path / "synonyms" / "counterfitted_neighbors.json"
    p.parent.mkdir()
    p.write_text(json.dumps(TABLE))
    return p


def build(name, table_path=None, **hp):
    return build_objective(name, hp, data_dir=None if table_path is None else table_path.parent.parent)


def grads_of(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ------------------------------------------------------------------ all objectives
@pytest.mark.parametrize("name", NAMES)
def test_finite_loss_and_gradients_reach_encoder(name, table_path):
    model, batch = make_model(), make_batch()
    obj = build(name, table_path)
    loss = obj.loss_and_backward(model, batch)
    assert loss.dim() == 0 and not loss.requires_grad and math.isfinite(loss.item())
    q = model.bert.encoder.layer[0].attention.self.query.weight.grad
    emb = model.bert.embeddings.word_embeddings.weight.grad
    assert q is not None and q.abs().sum() > 0
    assert emb is not None and emb.abs().sum() > 0
    logits = obj.predict_logits(model.eval(), {k: v for k, v in batch.items() if k != "labels"})
    assert logits.shape == (len(LENGTHS), 3)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_loss_sequence(name, table_path):
    words = sorted({w for k, v in TABLE.items() for w in [k, *v]} | {"the", "was", "a"})
    vocab = {w: i + 5 for i, w in enumerate(words)}
    texts = ["the movie was good", "a bad plot", "good good movie", "the plot was a movie"]

    def run():
        model, rng = make_model(1), np.random.default_rng(123)
        obj = build(name, table_path, **({"m": 2} if name == "rs_rp" else {}))
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        losses = []
        for _ in range(3):
            toks = [[vocab[w] for w in t.split(" ")] for t in obj.transform_texts(texts, rng)]
            ids = torch.zeros(len(toks), 6, dtype=torch.long)
            for i, t in enumerate(toks):
                ids[i, 1:1 + len(t)] = torch.tensor(t)
                ids[i, 0] = 1
            batch = {"input_ids": ids, "attention_mask": (ids > 0).long(), "labels": torch.tensor([0, 1, 2, 0])}
            opt.zero_grad()
            losses.append(obj.loss_and_backward(model, batch).item())
            opt.step()
        return losses

    a, b = run(), run()
    assert a == b and len(set(a)) > 1


@pytest.mark.parametrize("name,hp", [("baseline", {}), ("pgd", {}), ("pgd", {"norm": "linf", "eps": 0.05}),
                                     ("freelb", {}), ("rs_rp", {"m": 2})])
def test_bf16_autocast(name, hp):
    model, batch = make_model(), make_batch()
    obj = build(name, **hp)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = obj.loss_and_backward(model, batch)
    assert math.isfinite(loss.item())
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ PGD
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_delta_in_ball_and_masked(norm, random_start):
    model, batch = make_model(), make_batch()
    eps = 0.05
    obj = build("pgd", norm=norm, eps=eps, alpha=0.04, steps=3, random_start=random_start)
    obj.loss_and_backward(model, batch)
    d = obj.last_delta
    assert d.shape == (len(LENGTHS), max(LENGTHS), 16)
    pad = batch["attention_mask"] == 0
    assert torch.all(d[pad] == 0)
    if norm == "l2":
        norms = d.flatten(1).norm(dim=1)
        assert torch.all(norms <= eps * (1 + 1e-5))
        assert torch.all(norms > 0.9 * eps)  # 3 steps of 0.04 reach the boundary
    else:
        assert d.abs().max() <= eps * (1 + 1e-6)
        assert d[~pad].abs().max() > 0.5 * eps


def test_pgd_ascent_leaves_no_parameter_gradients():
    model, batch = make_model().eval(), make_batch()  # eval: deterministic forward
    obj = build("pgd", steps=3, clean_weight=0.25)
    obj.loss_and_backward(model, batch)
    got = grads_of(model)
    model.zero_grad()
    emb = model.get_input_embeddings()(batch["input_ids"])
    kw = {k: batch[k] for k in ("attention_mask", "token_type_ids", "labels")}
    loss = 0.75 * model(inputs_embeds=emb + obj.last_delta, **kw).loss + 0.25 * model(inputs_embeds=emb, **kw).loss
    loss.backward()
    want = grads_of(model)
    assert got.keys() == want.keys()
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ FreeLB
def test_freelb_one_optimizer_step_per_batch():
    model = make_model()
    obj = build("freelb", adv_steps=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = 0
    orig_step = opt.step

    def counting_step(*a, **k):
        nonlocal steps
        steps += 1
        return orig_step(*a, **k)

    opt.step = counting_step
    w = model.bert.encoder.layer[0].attention.self.query.weight
    for i in range(4):
        before = w.detach().clone()
        opt.zero_grad()
        obj.loss_and_backward(model, make_batch(i))
        assert torch.equal(w, before)  # no parameter update inside the objective
        opt.step()
        assert not torch.equal(w, before)
    assert steps == 4


def test_freelb_gradients_are_sum_over_steps():
    model, batch = make_model().eval(), make_batch()
    k = 2
    obj = build("freelb", adv_steps=k, adv_init_mag=0.0, adv_lr=0.5, adv_max_norm=0.0)
    obj.loss_and_backward(model, batch)
    got = grads_of(model)
    # with zero init, step 0 is the clean input and step 1 uses last_delta
    kw = {key: batch[key] for key in ("attention_mask", "token_type_ids", "labels")}
    model.zero_grad()
    emb = model.get_input_embeddings()(batch["input_ids"])
    ((model(inputs_embeds=emb, **kw).loss + model(inputs_embeds=emb + obj.last_delta, **kw).loss) / k).backward()
    want = grads_of(model)
    assert obj.last_delta.abs().sum() > 0
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-6)


def test_freelb_projection():
    model, batch = make_model(), make_batch()
    obj = build("freelb", adv_steps=3, adv_lr=1.0, adv_max_norm=0.2)
    obj.loss_and_backward(model, batch)
    norms = obj.last_delta.flatten(1).norm(dim=1)
    assert torch.all(norms <= 0.2 * (1 + 1e-5))
    assert torch.all(obj.last_delta[batch["attention_mask"] == 0] == 0)


# ------------------------------------------------------------------ RS-RP
def test_rs_rp_votes_and_uniform_noise():
    model, batch = make_model().eval(), make_batch()
    batch.pop("labels")
    obj = build("rs_rp", noise="uniform", sigma=0.5, test_time_votes=7)
    counts = obj.predict_logits(model, batch)
    assert counts.shape == (len(LENGTHS), 3)
    assert torch.all(counts.sum(-1) == 7)
    assert torch.equal(build("rs_rp").predict_logits(model, batch), model(**batch).logits)


# ------------------------------------------------------------------ RS-DA
def test_rs_da_substitution_rate(table_path):
    obj = build("rs_da", table_path)
    rng = np.random.default_rng(0)
    out = obj.transform_texts(["good"] * 4000 + ["movie"] * 4000, rng)
    good, movie = out[:4000], out[4000:]
    assert set(good) <= {"good", "fine", "nice", "great"}
    assert abs(np.mean([w != "good" for w in good]) - 3 / 4) < 0.03  # k=3 -> 3/4
    assert abs(np.mean([w != "movie" for w in movie]) - 1 / 2) < 0.03  # k=1 -> 1/2
    # self-neighbour in the table is dropped: 'plot' has k=1 -> 1/2
    plot = obj.transform_texts(["plot"] * 4000, rng)
    assert abs(np.mean([w != "plot" for w in plot]) - 1 / 2) < 0.03


def test_rs_da_tokens_case_and_punctuation(table_path):
    table = load_synonym_table(str(table_path.resolve()))
    rng = np.random.default_rng(1)
    outs = substitute_synonyms(['"Good," she said: a bad  movie. GOOD'] * 200, table, rng)
    seen = set()
    for o in outs:
        toks = o.split(" ")
        assert len(toks) == 8 and toks[3:6] == ["a", "bad", ""]  # no-neighbour word, double space kept
        assert toks[0] in {'"Good,"', '"Fine,"', '"Nice,"', '"Great,"'}
        assert toks[6] in {"movie.", "film."} and toks[7] in {"GOOD", "FINE", "NICE", "GREAT"}
        seen.add(toks[0])
    assert len(seen) == 4
    assert substitute_synonyms(["nothing here"], table, rng) == ["nothing here"]


def test_rs_da_same_rng_same_texts_and_cache(table_path):
    obj = build("rs_da", table_path)
    texts = ["the good movie", "a good plot"] * 50
    assert obj.transform_texts(texts, np.random.default_rng(5)) == obj.transform_texts(texts, np.random.default_rng(5))
    assert build("rs_da", synonyms=str(table_path)).table is obj.table  # lru_cache per path


@pytest.mark.parametrize("content,what", [("{not json", "not valid JSON"), ("[1, 2]", "JSON object"),
                                          ('{"a": "b"}', "not a list of strings"),
                                          ('{"a": [1]}', "not a list of strings")])
def test_rs_da_bad_table(tmp_path, content, what):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(ValueError) as e:
        build_objective("rs_da", {"synonyms": str(p)}, entry="da")
    assert str(p) in str(e.value) and what in str(e.value) and "methods.da.synonyms" in str(e.value)


def test_rs_da_missing_table_and_options(tmp_path):
    with pytest.raises(ValueError, match="synonyms"):
        build_objective("rs_da", {})  # no data_dir to resolve the default
    with pytest.raises(ValueError, match="missing.json"):
        build_objective("rs_da", {"synonyms": str(tmp_path / "missing.json")})
    with pytest.raises(ValueError, match=r"languages = \['de'\]"):
        build_objective("rs_da", {"languages": ["de"]}, data_dir=tmp_path)
    with pytest.raises(ValueError, match="test_time_votes = 5"):
        build_objective("rs_da", {"test_time_votes": 5}, data_dir=tmp_path)


# ------------------------------------------------------------------ registry / validation
def test_registry_and_defaults():
    assert set(NAMES) == set(OBJECTIVES)
    for name in NAMES:
        assert OBJECTIVES[name].name == name
    assert objective_defaults("freelb") == {"norm": "l2", "adv_lr": 0.1, "adv_steps": 2,
                                            "adv_init_mag": 0.1, "adv_max_norm": 0.3}
    assert build_objective("pgd").hparams == objective_defaults("pgd")


def test_unknown_method_lists_registered_names():
    with pytest.raises(ValueError) as e:
        build_objective("nope", entry="mine")
    for name in NAMES:
        assert name in str(e.value)
    assert "'nope'" in str(e.value)


@pytest.mark.parametrize("name,key,value", [
    ("pgd", "eps", -0.1), ("pgd", "steps", 0), ("pgd", "alpha", 0.0), ("pgd", "norm", "l1"),
    ("pgd", "clean_weight", 1.5), ("pgd", "random_start", 1), ("freelb", "adv_steps", 0),
    ("freelb", "adv_max_norm", -1.0), ("rs_rp", "sigma", -0.5), ("rs_rp", "m", 0),
    ("rs_rp", "sigma", float("nan")), ("baseline", "eps", 0.1), ("pgd", "epsilon", 0.1),
])
def test_invalid_hparams(name, key, value):
    with pytest.raises(ValueError) as e:
        build_objective(name, {key: value}, entry="entry1")
    msg = str(e.value)
    assert msg.startswith(f"methods.entry1.{key} = {value!r}: expected ")
