"""Tests for xltlib.training.objectives (tiny random BERT; whole file runs in a few seconds on CPU)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from xltlib.training.objectives import OBJECTIVES, build_objective, load_synonym_table, objective_defaults, substitute_synonyms

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


def test_freelb_gradients_are_mean_over_k_plus_one_passes():
    model, batch = make_model().eval(), make_batch()
    k = 2
    obj = build("freelb", adv_steps=k, adv_init_mag=0.0, adv_lr=0.5, adv_max_norm=0.0)
    deltas = []
    orig = obj._ascend
    obj._ascend = lambda *a: deltas.append(orig(*a)) or deltas[-1]
    loss = obj.loss_and_backward(model, batch)
    got = grads_of(model)
    # fairseq semantics: pass 0 on delta_0 = 0 (clean), then one pass per ascent step, each loss/(K+1)
    assert len(deltas) == k and torch.equal(deltas[-1], obj.last_delta)
    kw = {key: batch[key] for key in ("attention_mask", "token_type_ids", "labels")}
    model.zero_grad()
    emb = model.get_input_embeddings()(batch["input_ids"])
    losses = [model(inputs_embeds=emb + d, **kw).loss for d in [torch.zeros_like(emb)] + deltas]
    (sum(losses) / (k + 1)).backward()
    want = grads_of(model)
    assert obj.last_delta.abs().sum() > 0
    torch.testing.assert_close(loss, (sum(losses) / (k + 1)).detach(), rtol=1e-5, atol=1e-6)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_freelb_makes_k_plus_one_passes(k):
    model, batch = make_model(), make_batch()
    obj = build("freelb", adv_steps=k)
    obj.diagnose = False  # no extra clean forward: count the training passes only
    calls = []
    model.register_forward_hook(lambda mod, args, kwargs, out: calls.append(kwargs.get("inputs_embeds") is not None),
                                with_kwargs=True)
    obj.loss_and_backward(model, batch)
    assert calls == [True] * (k + 1) and obj.passes() == k + 1


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
    # zhuchen03/FreeLB fairseq-RoBERTa/launch/FreeLB/mnli-fp32-clip.sh line 63, absolute scale
    assert objective_defaults("freelb") == {"norm": "l2", "adv_lr": 0.1, "adv_steps": 2, "adv_init_mag": 0.1,
                                            "adv_max_norm": 0.3, "adv_begin_iter": 0, "scale": "absolute",
                                            "share_dropout": True}
    assert objective_defaults("rs_da")["lookup"] == "exact" and objective_defaults("rs_da")["copies"] == "fresh"
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
    ("pgd", "scale", "percent"), ("freelb", "scale", "Relative"), ("rs_rp", "scale", None),
    ("pgd", "share_dropout", "yes"),
])
def test_invalid_hparams(name, key, value):
    with pytest.raises(ValueError) as e:
        build_objective(name, {key: value}, entry="entry1")
    msg = str(e.value)
    assert msg.startswith(f"methods.entry1.{key} = {value!r}: expected ")


@pytest.mark.parametrize("name,key,value,allowed", [
    ("rs_da", "lookup", "fuzzy", ["'exact'", "'normalized'"]),
    ("rs_da", "lookup", "Exact", ["'exact'", "'normalized'"]),
    ("rs_da", "copies", 0, ["'fresh'", "'reference'", "integer >= 1"]),
    ("rs_da", "copies", -3, ["'fresh'", "'reference'", "integer >= 1"]),
    ("rs_da", "copies", "ten", ["'fresh'", "'reference'", "integer >= 1"]),
    ("rs_da", "copies", True, ["'fresh'", "'reference'", "integer >= 1"]),
    ("pgd", "scale", "percent", ["'absolute'", "'relative'"]),
    ("freelb", "scale", 1, ["'absolute'", "'relative'"]),
    ("rs_rp", "scale", "rel", ["'absolute'", "'relative'"]),
])
def test_bad_lookup_scale_copies_name_key_value_and_allowed(name, key, value, allowed, table_path):
    with pytest.raises(ValueError) as e:
        build_objective(name, {key: value}, data_dir=table_path.parent.parent, entry="m1")
    msg = str(e.value)
    assert msg.startswith(f"methods.m1.{key} = {value!r}: expected ")
    assert all(a in msg for a in allowed), msg


def test_rs_da_reference_copies_only_for_reference_tasks(table_path):
    obj = build("rs_da", table_path, copies="reference")
    assert obj.train_copies("pawsx") == (10, 3.0) and obj.train_copies("xnli") == (3, 1.0)
    with pytest.raises(ValueError) as e:
        obj.train_copies("xcopa")
    assert "methods.rs_da.copies = 'reference'" in str(e.value) and "pawsx, xnli" in str(e.value)
    assert build("rs_da", table_path, copies=4).train_copies("xcopa") == (4, None)
    assert build("rs_da", table_path).train_copies("xnli") is None  # fresh: one new view per epoch


# ------------------------------------------------------------------ shared dropout masks
def _dropout_model(seed=0, quantized=True):
    from xltlib.training.dropout import use_fast_dropout

    model = make_model(seed)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.3
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.3
    for layer in model.bert.encoder.layer:  # the eager kernel reads the attention module's rate
        layer.attention.self.dropout_prob = 0.3
    return use_fast_dropout(model, quantized=quantized)


@pytest.mark.parametrize("name,hp", [("pgd", {"steps": 3}), ("freelb", {"adv_steps": 3})])
@pytest.mark.parametrize("share", [True, False])
def test_dropout_masks_shared_across_passes(name, hp, share, monkeypatch):
    import xltlib.training.dropout as fast

    model, batch = _dropout_model(), make_batch()
    draws, patterns = [], {}
    real_draw = fast._draw_mask
    monkeypatch.setattr(fast, "_draw_mask", lambda *a: draws.append(1) or real_draw(*a))
    for mod in model.modules():
        if isinstance(mod, fast.FastDropout):
            mod.register_forward_hook(lambda m, i, o: patterns.setdefault(id(m), []).append(
                (o == 0) & (i[0] != 0)))
    obj = build(name, share_dropout=share, **hp)
    obj.diagnose = False
    obj.loss_and_backward(model, batch)
    passes = 4  # K = 3 ascent steps: 4 forward passes in both PGD and FreeLB
    sites = len(patterns) + model.config.num_hidden_layers  # module dropouts + attention-probability dropouts
    assert all(len(p) == passes for p in patterns.values())
    dropped = [p for ps in patterns.values() for p in ps]
    assert sum(int(p.sum()) for p in dropped) > 0  # dropout is active
    same = all(torch.equal(ps[0], q) for ps in patterns.values() for q in ps[1:])
    if share:
        assert same and len(draws) == sites  # every site drew once, on the first pass
    else:
        assert not same and len(draws) == sites * passes


@pytest.mark.parametrize("quantized", [True, False])  # train.fast_dropout on (byte masks) or off (exact masks)
def test_shared_masks_make_train_mode_passes_identical(quantized):
    from xltlib.training.dropout import shared_dropout_masks

    model, batch = _dropout_model(quantized=quantized), make_batch()
    with shared_dropout_masks():
        a, b = model(**batch).logits, model(**batch).logits
    c = model(**batch).logits
    assert torch.equal(a, b) and not torch.equal(a, c)


# ------------------------------------------------------------------ relative strength
def test_median_token_norm_and_relative_pgd_per_token_norm():
    from xltlib.training.objectives import median_token_norm

    model, batch = make_model(), make_batch()
    r = median_token_norm(model)
    w = model.get_input_embeddings().weight.detach()
    assert r == pytest.approx(float(w.norm(dim=1).median()))
    eps = 0.05
    obj = build("pgd", eps=eps, alpha=0.05, steps=4, scale="relative")  # 4 steps of eps: on the sphere
    obj.loss_and_backward(model, batch)
    n = batch["attention_mask"].sum(1).float()
    per_token = obj.last_delta.flatten(1).norm(dim=1) / n.sqrt()  # RMS per-token norm of each example
    torch.testing.assert_close(per_token, torch.full_like(per_token, eps * r), rtol=1e-4, atol=0)
    assert obj.last_stats["delta_token_norm_rel"] <= eps * (1 + 1e-4)
    # linf: each coordinate within eps * r / sqrt(H): a token at a corner has norm eps * r
    # one step of 2 eps from inside the box lands every coordinate on a face (two steps may flip a sign back to 0)
    lin = build("pgd", norm="linf", eps=eps, alpha=2 * eps, steps=1, scale="relative")
    lin.loss_and_backward(model, batch)
    bound = eps * r / 16 ** 0.5
    assert lin.last_delta.abs().max() <= bound * (1 + 1e-5)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(lin.last_delta[real].norm(dim=-1).max(), torch.tensor(eps * r), rtol=1e-4, atol=0)


def test_relative_freelb_cap_and_rs_rp_noise_norm():
    from xltlib.training.objectives import median_token_norm

    model, batch = make_model(), make_batch()
    r = median_token_norm(model)
    fl = build("freelb", adv_steps=3, adv_lr=1.0, adv_max_norm=0.1, scale="relative")
    fl.loss_and_backward(model, batch)
    n = batch["attention_mask"].sum(1).float()
    per_token = fl.last_delta.flatten(1).norm(dim=1) / n.sqrt()
    torch.testing.assert_close(per_token, torch.full_like(per_token, 0.1 * r), rtol=1e-4, atol=0)
    big = {k: v.repeat(200, 1) for k, v in batch.items()}
    emb = model.get_input_embeddings()(big["input_ids"]).detach()
    mask = big["attention_mask"].unsqueeze(-1).float()
    for noise in ("gaussian", "uniform"):
        rp = build("rs_rp", sigma=0.2, noise=noise, scale="relative")
        d = rp.draw_noise(model, emb, mask)
        rms = d[big["attention_mask"].bool()].norm(dim=-1).pow(2).mean().sqrt()
        assert float(rms) == pytest.approx(0.2 * r, rel=0.03), noise
        assert torch.all(d[~big["attention_mask"].bool()] == 0)
    assert build("rs_rp", sigma=0.2).coordinate_scale(model) == 0.2  # absolute: sigma per coordinate


# ------------------------------------------------------------------ the adversary does its job
def test_pgd_attack_raises_loss_over_clean():
    model, batch = make_model().eval(), make_batch()
    kw = {k: batch[k] for k in ("attention_mask", "token_type_ids", "labels")}
    obj = build("pgd", eps=0.5, alpha=0.2, steps=5, scale="relative")
    delta = obj.attack(model, batch)
    emb = model.get_input_embeddings()(batch["input_ids"]).detach()
    with torch.no_grad():
        clean = model(inputs_embeds=emb, **kw).loss
        adv = model(inputs_embeds=emb + delta, **kw).loss
        rand = torch.randn_like(delta) * batch["attention_mask"].unsqueeze(-1)
        rand = rand * (delta.flatten(1).norm(dim=1) / rand.flatten(1).norm(dim=1)).view(-1, 1, 1)
        noisy = model(inputs_embeds=emb + rand, **kw).loss
    assert adv > clean and adv > noisy  # ascent beats a random direction of the same norm
    assert all(p.grad is None for p in model.parameters())  # the attack trains nothing


@pytest.mark.parametrize("name,hp", [("pgd", {"eps": 1.0, "alpha": 0.5, "steps": 3}),
                                     ("freelb", {"adv_lr": 0.5, "adv_max_norm": 1.0}),
                                     ("rs_rp", {"sigma": 0.5, "scale": "relative"})])
def test_training_diagnostics(name, hp):
    model, batch = _dropout_model(), make_batch()
    obj = build(name, **hp)
    obj.loss_and_backward(model, batch)
    st = obj.last_stats
    assert set(st) == {"clean_loss", "adv_loss", "loss_gap", "delta_token_norm", "delta_token_norm_rel"}
    assert st["loss_gap"] == pytest.approx(st["adv_loss"] - st["clean_loss"])
    assert st["delta_token_norm"] > 0 and all(math.isfinite(v) for v in st.values())
    if name == "pgd":  # same dropout masks for the clean and the adversarial pass: the gap is delta's doing
        assert st["loss_gap"] > 0


# ------------------------------------------------------------------ RS-DA lookup rules
def test_exact_lookup_leaves_proper_nouns_and_normalized_does_not(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"china": ["porcelain"], "may": ["might"], "good": ["fine"], "us": ["ours"]}))
    texts = ["China and the US may be good , Good."] * 300
    exact = build_objective("rs_da", {"synonyms": str(p)})  # default lookup: exact
    stats = {}
    out = substitute_synonyms(texts, exact.table, np.random.default_rng(0), "exact", stats)
    assert all(o.split(" ")[:2] == ["China", "and"] and o.split(" ")[3] == "US" for o in out)
    assert {o.split(" ")[4] for o in out} == {"may", "might"} and {o.split(" ")[6] for o in out} == {"good", "fine"}
    assert all(o.endswith(", Good.") for o in out)  # 'Good.' is not a key as written
    assert stats["sites"] == 2 * 300 and stats["tokens"] == 9 * 300
    norm = build_objective("rs_da", {"synonyms": str(p), "lookup": "normalized"})
    out_n = norm.transform_texts(texts, np.random.default_rng(0))
    assert {o.split(" ")[0] for o in out_n} == {"China", "Porcelain"}
    assert {o.split(" ")[3] for o in out_n} == {"US", "OURS"}
    assert {o.split(" ")[-1] for o in out_n} == {"Good.", "Fine."}
    st = norm.pop_text_stats()
    assert st["subst_site_rate"] == pytest.approx(5 / 9)
    assert 0.22 < st["subst_rate"] < 0.33  # each of 5 of 9 tokens changes with probability 1/2
    assert norm.pop_text_stats() == {}  # counters restart


def test_exact_table_keeps_case_of_keys(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"UNK": ["unk2"], "unk": ["x"]}))
    assert load_synonym_table(str(p), "exact") == {"UNK": ("unk2",), "unk": ("x",)}
    assert load_synonym_table(str(p), "normalized") == {"unk": ("unk2", "x")}


@pytest.mark.data
def test_real_table_exact_vs_normalized_on_xnli_english(data_dir):
    """The shipped table (Robust-XLT's) and the real English XNLI dev rows: exact lookup substitutes fewer
    sites and never touches a capitalised proper noun whose lower-case form is a key."""
    from xltlib.data import tasks as T

    table = str(data_dir / "synonyms" / "counterfitted_neighbors.json")
    exact, normalized = load_synonym_table(table, "exact"), load_synonym_table(table, "normalized")
    assert "china" in exact and "China" not in exact
    rng = np.random.default_rng(0)
    assert set(substitute_synonyms(["China"] * 200, exact, rng, "exact")) == {"China"}
    assert len(set(substitute_synonyms(["China"] * 200, normalized, rng, "normalized"))) > 1
    recs = T.load_records("xnli", "en", data_dir)
    texts = [r["text_a"] for r in recs] + [r["text_b"] for r in recs]
    st_e, st_n = {}, {}
    substitute_synonyms(texts, exact, rng, "exact", st_e)
    substitute_synonyms(texts, normalized, rng, "normalized", st_n)
    assert st_e["tokens"] == st_n["tokens"] and st_e["sites"] < st_n["sites"]
    assert 0.3 < st_e["sites"] / st_n["sites"] < 0.9
