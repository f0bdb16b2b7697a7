"""Known-answer tests for xltlib.evaluation.alignment (tiny data, CPU only)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from xltlib.evaluation.alignment import (
    METRICS,
    METRICS_VERSION,
    cka,
    compute_alignment,
    compute_alignment_pairs,
    cosine_gap,
    encode_layers,
    item_ids,
    langid_probe,
    pool_rows,
    read_parallel,
    retrieval,
    retrieval_outcomes,
)
from xltlib.evaluation.probe import cv_logistic_accuracy
from xltlib.training.batching import CPU_BATCH_TOKENS, token_batches


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------ retrieval
def test_retrieval_identical_is_perfect():
    x = rng().standard_normal((100, 16)).astype(np.float32)
    r = retrieval(x, x.copy())
    assert r == {"acc1_xx2en": 1.0, "acc1_en2xx": 1.0, "margin_acc1_xx2en": 1.0, "margin_acc1_en2xx": 1.0}
    assert retrieval(x, x.copy(), center=True)["acc1_xx2en"] == 1.0


def test_retrieval_random_near_chance():
    g = rng(1)
    x, y = g.standard_normal((200, 64)), g.standard_normal((200, 64))
    r = retrieval(x, y)
    assert all(v < 0.05 for v in r.values()), r


def _hub_pairs(n: int = 60, d: int = 256):
    """(clean side, noisy side): rows c + r_i and c + r_i + big noise, whose row 0 is the hub c, close to
    every row of the clean side."""
    g = rng(2)
    c = np.zeros(d)
    c[0] = 1.0
    r = g.standard_normal((n, d)) / np.sqrt(d)
    noisy = c + r + 2.0 * g.standard_normal((n, d)) / np.sqrt(d)
    noisy[0] = c
    return c + r, noisy


def test_margin_beats_cosine_on_hub():
    # x_i = c + r_i ; y_i = c + r_i + big noise ; y_0 = c is a hub close to every x.
    x, y = _hub_pairs()
    res = retrieval(x, y)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    assert (np.argmax(xn @ yn.T, 1) == 0).mean() > 0.5  # the hub wins plain cosine
    assert res["acc1_xx2en"] < 0.2
    assert res["margin_acc1_xx2en"] > 0.8
    assert res["margin_acc1_xx2en"] > res["acc1_xx2en"] + 0.5


# ------------------------------------------------------------------ cosine gap
def test_cosine_gap_random_and_noisy_copy():
    g = rng(3)
    x = g.standard_normal((200, 32))
    assert abs(cosine_gap(x, g.standard_normal((200, 32)))["cosine_gap"]) < 0.05
    res = cosine_gap(x, x + 0.3 * g.standard_normal((200, 32)))
    assert res["cosine_gap"] > 0.5
    assert res["cosine_gap"] == pytest.approx(res["cos_pos"] - res["cos_neg"])


def test_cosine_gap_matches_explicit_matrix():
    g = rng(4)
    x, y = g.standard_normal((30, 8)) + 2, g.standard_normal((30, 8))
    xc, yc = x - x.mean(0), y - y.mean(0)
    s = (xc / np.linalg.norm(xc, axis=1, keepdims=True)) @ (yc / np.linalg.norm(yc, axis=1, keepdims=True)).T
    off = s[~np.eye(30, dtype=bool)]
    res = cosine_gap(x, y)
    assert res["cos_pos"] == pytest.approx(np.diag(s).mean(), abs=1e-5)
    assert res["cos_neg"] == pytest.approx(off.mean(), abs=1e-5)


# ------------------------------------------------------------------ CKA
def _cka_hsic(x: np.ndarray, y: np.ndarray) -> float:
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def test_linear_cka_known_values():
    g = rng(5)
    x = g.standard_normal((40, 10))
    assert cka(x, x)["cka_linear_biased"] == pytest.approx(1.0, abs=1e-9)
    y = x[:, :6] @ g.standard_normal((6, 7)) + 0.5 * g.standard_normal((40, 7))
    assert cka(x, y)["cka_linear_biased"] == pytest.approx(_cka_hsic(x, y), abs=1e-5)
    z = g.standard_normal((40, 12))
    assert cka(x, z)["cka_linear_biased"] == pytest.approx(_cka_hsic(x, z), abs=1e-5)


def _unbiased_hsic_explicit(x, y):
    """Song et al. (2012) eq. 5 on n x n kernels with zeroed diagonals."""
    n = len(x)
    k, l_ = x @ x.T, y @ y.T
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l_, 0)
    one = np.ones(n)
    return (np.trace(k @ l_) + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ k @ l_ @ one) / (n * (n - 3))


def _unbiased_hsic_brute_force(x, y):
    """Song et al. (2012)'s unbiased HSIC as the U-statistic it is, summed over every tuple of distinct rows:
    mean k_ij l_ij + mean k_ij l_qr - 2 mean k_ij l_iq (linear kernels)."""
    k, l_ = x @ x.T, y @ y.T
    n = len(x)
    t1 = np.mean([k[i, j] * l_[i, j] for i, j in itertools.permutations(range(n), 2)])
    t2 = np.mean([k[i, j] * l_[q, r] for i, j, q, r in itertools.permutations(range(n), 4)])
    t3 = np.mean([k[i, j] * l_[i, q] for i, j, q in itertools.permutations(range(n), 3)])
    return t1 + t2 - 2 * t3


def test_unbiased_hsic_matches_brute_force_u_statistic():
    g = rng(15)
    x, y = g.standard_normal((8, 3)), g.standard_normal((8, 4))
    y[:, :2] += x[:, :2]
    brute = {(a, b): _unbiased_hsic_brute_force(u, v) for a, u in (("x", x), ("y", y)) for b, v in (("x", x), ("y", y))}
    assert _unbiased_hsic_explicit(x, y) == pytest.approx(brute[("x", "y")], abs=1e-10)
    want = brute[("x", "y")] / np.sqrt(brute[("x", "x")] * brute[("y", "y")])
    assert cka(x, y)["cka"] == pytest.approx(want, abs=1e-10)


def test_headline_cka_is_debiased_and_removes_small_n_bias():
    g = rng(14)
    x, y = g.standard_normal((30, 7)), g.standard_normal((30, 5))
    y[:, :3] += x[:, :3]
    want = _unbiased_hsic_explicit(x, y) / np.sqrt(_unbiased_hsic_explicit(x, x) * _unbiased_hsic_explicit(y, y))
    assert cka(x, y)["cka"] == pytest.approx(want, abs=1e-9)
    assert cka(x, x)["cka"] == pytest.approx(1.0, abs=1e-9)
    # independent data at the issue's size (n = 205, d = 384): linear CKA is mostly bias, debiased CKA is ~0
    a, b = g.standard_normal((205, 384)), g.standard_normal((205, 384))
    res = cka(a, b)
    assert res["cka_linear_biased"] > 0.6 and abs(res["cka"]) < 0.02
    assert np.isnan(cka(a[:3], b[:3])["cka"]) and np.isfinite(cka(a[:3], b[:3])["cka_linear_biased"])


def test_retrieval_direction_labels():
    """acc1_en2xx queries with English (y) and searches the xx rows (x), XTREME's Tatoeba direction:
    a hub among the xx rows captures the English queries (en->xx fails) but not the xx queries."""
    en, xx = _hub_pairs()  # the hub, on the xx side
    res = retrieval(xx, en)
    assert res["acc1_en2xx"] < 0.2 and res["acc1_xx2en"] > 0.9


def test_cka_matches_hsic_and_invariances():
    g = rng(6)
    x, y = g.standard_normal((50, 12)), g.standard_normal((50, 9))
    y[:, :5] += x[:, :5]
    base = cka(x, y)
    assert base["cka_linear_biased"] == pytest.approx(_cka_hsic(x, y), abs=1e-5)
    q, _ = np.linalg.qr(g.standard_normal((12, 12)))
    for name in ("cka", "cka_linear_biased"):  # orthogonal transforms, isotropic scaling, shifts
        assert cka(x @ q * 3.7, y)[name] == pytest.approx(base[name], abs=1e-6)
        assert cka(x, y * 0.01 + 5.0)[name] == pytest.approx(base[name], abs=1e-6)


# ------------------------------------------------------------------ language-ID probe
def test_langid_probe_separated_and_independent():
    g = rng(7)
    sep = {lang: g.standard_normal((60, 8)) + 6 * i for i, lang in enumerate(["en", "de", "fr"])}
    res = langid_probe(sep)
    assert res["langid_acc"] > 0.98 and res["langid_chance"] == pytest.approx(1 / 3)
    same = {lang: g.standard_normal((150, 4)) for lang in ["en", "de"]}
    assert abs(langid_probe(same)["langid_acc"] - 0.5) < 0.12
    assert langid_probe(same, max_per_lang=40)["langid_acc"] <= 1.0


def _clustered(g: np.random.Generator, k: int, per: int, d: int, sep: float) -> tuple[np.ndarray, np.ndarray]:
    """k language clusters ``sep`` apart in correlated features around a large shared offset, as encoders are."""
    common, mix = g.normal(0, 3, d), g.normal(0, 1, (d, d)) / np.sqrt(d)
    centers = g.normal(0, 1, (k, d)) * sep
    x = np.concatenate([common + (g.normal(0, 1, (per, d)) + centers[i]) @ mix for i in range(k)])
    return x.astype(np.float32), np.repeat(np.arange(k), per)


@pytest.mark.parametrize("bf16", [False, True])
def test_probe_matches_sklearn_logistic_regression(bf16):
    """The probe's classifier (every fold at once, bf16 products) has scikit-learn's accuracy to +-0.01, on the
    same folds, from chance to perfect separation."""
    seen = []
    for sep, seed in itertools.product([0.0, 0.1, 0.2, 0.3, 0.5, 1.0], [0, 1]):
        x, y = _clustered(rng(seed), k=6, per=60, d=96, sep=sep)
        folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(x, y))
        ref = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)), x, y,
                              cv=folds).mean()
        ours = cv_logistic_accuracy(x, y, folds, C=1.0, bf16=bf16)
        assert ours.shape == (5,) and abs(ours.mean() - ref) <= 0.01, (sep, seed, ours.mean(), ref)
        seen.append(ref)
    assert min(seen) < 0.25 and max(seen) == 1.0  # the regimes span chance (1/6) to perfect


def test_probe_rejects_mismatched_input():
    with pytest.raises(ValueError, match="rows"):
        cv_logistic_accuracy(np.zeros((10, 3)), np.zeros(9, int), [(np.arange(5), np.arange(5, 10))])


# ------------------------------------------------------------------ driver
def _emb(g: np.random.Generator, langs=("en", "de", "fr"), L=3, n=40, d=8) -> dict[str, np.ndarray]:
    en = g.standard_normal((L, n, d)).astype(np.float32)
    return {lang: en if lang == "en" else en + 0.1 * g.standard_normal((L, n, d)).astype(np.float32) for lang in langs}


def test_compute_alignment_rows():
    emb = _emb(rng(8))
    rows = compute_alignment(emb, metrics=["retrieval", "cka", "langid_probe"], layers=[0, 2],
                             options={"langid_probe": {"max_per_lang": 30}})
    pair = [r for r in rows if r["language"] != "all"]
    multi = [r for r in rows if r["language"] == "all"]
    assert len(pair) == 2 * 2 * (4 + 2) and len(multi) == 2 * 2
    assert set(rows[0]) == {"metric", "language", "language2", "layer", "value", "n", "n_available", "d",
                            "metrics_version"}
    assert all(r["metrics_version"] == METRICS_VERSION for r in rows) and all(r["d"] == 8 for r in pair)
    assert {r["language"] for r in pair} == {"de", "fr"} and {r["language2"] for r in pair} == {"en"}
    assert {r["layer"] for r in rows} == {0, 2} and all(r["n"] == 40 for r in pair)
    assert {r["metric"] for r in multi} == {"langid_probe.langid_acc", "langid_probe.langid_chance"}
    chance = [r["value"] for r in multi if r["metric"].endswith("chance")]
    assert chance == pytest.approx([1 / 3, 1 / 3])  # pivot included in multi metrics
    assert all(r["value"] == 1.0 for r in pair if r["metric"] == "retrieval.acc1_xx2en")
    assert len(compute_alignment(emb, metrics=["cka"])) == 3 * 2 * 2  # default: all layers


def test_compute_alignment_pairs_own_pivot_side():
    g = rng(9)
    y = {"de": g.standard_normal((2, 30, 8)), "sw": g.standard_normal((2, 50, 8))}
    x = {"de": y["de"].copy(), "sw": g.standard_normal((2, 50, 8))}
    rows = compute_alignment_pairs(x, y, metrics=["cka"], pool="full")
    got = {(r["language"], r["layer"]): (r["value"], r["n"]) for r in rows if r["metric"] == "cka.cka"}
    assert got[("de", 1)] == (pytest.approx(1.0), 30) and got[("sw", 0)][1] == 50
    assert got[("sw", 0)][0] < 0.9


def test_common_pool_subsamples_to_the_smallest_language():
    g = rng(12)
    y = {"de": g.standard_normal((2, 30, 8)), "sw": g.standard_normal((2, 50, 8))}
    x = {lang: v + 0.05 * g.standard_normal(v.shape) for lang, v in y.items()}
    rows = compute_alignment_pairs(x, y, metrics=["retrieval", "cka"])
    assert {(r["language"], r["n"], r["n_available"]) for r in rows} == {("de", 30, 30), ("sw", 30, 50)}
    again = compute_alignment_pairs(x, y, metrics=["retrieval", "cka"])
    assert [r["value"] for r in rows] == [r["value"] for r in again]  # seeded: the same rows every time
    # the kept sw rows are a subsample of the pairs, still row-aligned: retrieval stays perfect
    sw = {r["metric"]: r["value"] for r in rows if r["language"] == "sw" and r["layer"] == 1}
    assert sw["retrieval.acc1_en2xx"] == 1.0 and sw["cka.cka"] > 0.9
    with pytest.raises(ValueError, match="pool"):
        compute_alignment_pairs(x, y, metrics=["cka"], pool="smallest")


def test_retrieval_outcomes_are_kept_per_pair_in_pool_order():
    """The per-pair outcomes average to the rows' values, and position i of a language's mask is pair i."""
    g = rng(16)
    y = {"de": g.standard_normal((2, 30, 16)), "sw": g.standard_normal((2, 50, 16))}
    x = {lang: v + 1.2 * g.standard_normal(v.shape) for lang, v in y.items()}  # noisy: some pairs are missed
    outcomes: list[dict] = []
    rows = compute_alignment_pairs(x, y, metrics=["retrieval", "cka"], outcomes=outcomes)
    assert {o["metric"] for o in outcomes} == {f"retrieval.{k}" for k in retrieval(x["de"][0], y["de"][0])}
    assert len(outcomes) == 2 * 2 * 4  # languages x layers x retrieval values; CKA has no per-pair outcome
    value = {(r["metric"], r["language"], r["layer"]): r["value"] for r in rows}
    for o in outcomes:
        assert o["correct"].mean() == pytest.approx(value[(o["metric"], o["language"], o["layer"])])
        assert o["in_pool"].sum() == o["n"] == len(o["correct"]) == 30 and len(o["in_pool"]) == o["n_available"]
    sw = next(o for o in outcomes if o["language"] == "sw" and o["layer"] == 1 and o["metric"] == "retrieval.acc1_en2xx")
    kept = np.flatnonzero(sw["in_pool"])
    assert np.array_equal(sw["correct"], retrieval_outcomes(x["sw"][1][kept], y["sw"][1][kept])["acc1_en2xx"])
    assert 0 < sw["correct"].mean() < 1


def test_encoding_only_the_pool_gives_the_rows_of_encoding_every_pair():
    """The stage encodes only the pairs the pool keeps (``available`` + :func:`pool_rows`): every pair metric's
    value, n, n_available and per-pair outcome is that of passing every pair; only the pool's rows are read."""
    g = rng(17)
    y = {"de": g.standard_normal((2, 30, 16)), "sw": g.standard_normal((2, 50, 16)),
         "am": g.standard_normal((2, 12, 16))}
    x = {lang: v + 1.0 * g.standard_normal(v.shape) for lang, v in y.items()}
    available = {lang: v.shape[1] for lang, v in x.items()}
    keep = pool_rows(available)
    assert {lang: len(k) for lang, k in keep.items()} == {"de": 12, "sw": 12, "am": 12}
    assert np.array_equal(keep["am"], np.arange(12))
    full_out: list[dict] = []
    full = compute_alignment_pairs(x, y, metrics=["retrieval", "cka", "cosine_gap"], outcomes=full_out)
    px = {lang: v[:, keep[lang]] for lang, v in x.items()}
    py = {lang: v[:, keep[lang]] for lang, v in y.items()}
    pooled_out: list[dict] = []
    pooled = compute_alignment_pairs(px, py, metrics=["retrieval", "cka", "cosine_gap"], outcomes=pooled_out,
                                     available=available)
    assert pooled == full
    assert len(pooled_out) == len(full_out)
    for a, b in zip(pooled_out, full_out):
        assert {k: v for k, v in a.items() if k not in ("in_pool", "correct")} == \
            {k: v for k, v in b.items() if k not in ("in_pool", "correct")}
        assert np.array_equal(a["in_pool"], b["in_pool"]) and np.array_equal(a["correct"], b["correct"])
    assert compute_alignment_pairs(x, y, metrics=["cka"], pool="full", available=available) == \
        compute_alignment_pairs(x, y, metrics=["cka"], pool="full")  # a full pool is every pair
    with pytest.raises(ValueError, match="row counts"):
        compute_alignment_pairs(x, y, metrics=["cka"], available=available)  # every pair passed, not the pool
    with pytest.raises(ValueError, match="other languages"):
        compute_alignment_pairs(px, py, metrics=["cka"], available={"de": 30, "sw": 50})


def test_item_ids_name_the_english_sentence():
    a, b = item_ids(["I love you.", "Hello."]), item_ids(["Hello.", "Bye."])
    assert a.dtype == np.int64 and a[1] == b[0] and len({*a, *b}) == 3


def test_retrieval_accuracy_depends_on_pool_size():
    """Why pools must be equal: the same per-pair noise scores lower in a larger pool."""
    g = rng(13)
    y = g.standard_normal((1000, 32))
    x = y + 1.6 * g.standard_normal((1000, 32))
    small, large = retrieval(x[:200], y[:200])["acc1_en2xx"], retrieval(x, y)["acc1_en2xx"]
    assert small > large + 0.1


def test_compute_alignment_errors():
    emb = _emb(rng(10))
    with pytest.raises(ValueError, match=r"nope.*registered.*cka"):
        compute_alignment(emb, metrics=["nope"])
    with pytest.raises(ValueError, match=r"layer 3 .*0\.\.2"):
        compute_alignment(emb, metrics=["cka"], layers=[3])
    with pytest.raises(ValueError, match=r"layer -1"):
        compute_alignment(emb, metrics=["cka"], layers=[-1])
    emb["de"] = emb["de"][:, :30]
    with pytest.raises(ValueError, match=r"'de': 30.*'en': 40|'en': 40.*'de': 30"):
        compute_alignment(emb, metrics=["cka"])
    assert {"retrieval", "cosine_gap", "cka", "langid_probe"} <= set(METRICS)
    assert METRICS["langid_probe"].kind == "multi" and METRICS["cka"].kind == "pair"


# ------------------------------------------------------------------ IO
def test_read_parallel(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("Hallo Welt\nzwei\u2028drei\n", encoding="utf-8")
    b.write_text("hello world\r\ntwo three\n", encoding="utf-8")
    assert read_parallel(a, b) == (["Hallo Welt", "zwei\u2028drei"], ["hello world", "two three"])
    b.write_text("only one\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"a\.txt has 2.*b\.txt has 1"):
        read_parallel(a, b)


# ------------------------------------------------------------------ encoding
WORDS = "the a cat dog sat on mat big small red house tree runs quickly and under".split()


@pytest.fixture(scope="module")
def tiny():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64)
    return BertModel(cfg).eval(), tokenizer


SENTS = ["the cat sat", "a big red house under the small tree and the dog",
         "dog runs", "the mat", "a cat and a dog sat on the big red mat quickly", "tree"]


def test_token_batches_cover_every_row_within_the_budgets():
    lengths = np.array([39, 5, 12, 12, 30, 11, 13, 12, 9, 12] * 20)
    for device, cap in ((torch.device("cpu"), CPU_BATCH_TOKENS), (torch.device("cuda"), None)):
        batches = token_batches(lengths, 32, device)
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))  # every row once
        budget = 32 * 12 if cap is None else min(32 * 12, cap)
        for b in batches:
            assert len(b) <= 32 and len(b) * lengths[b].max() <= max(budget, lengths[b].max())
            assert lengths[b[0]] == lengths[b].max()  # longest first: the padded width is the first row's
        padded = sum(len(b) * lengths[b].max() for b in batches)
        fixed = sum(len(lengths[i:i + 32]) * np.sort(lengths)[::-1][i:i + 32].max() for i in range(0, len(lengths), 32))
        assert padded < fixed  # the long tail no longer pads whole batches
    assert [len(b) for b in token_batches(np.array([200, 3, 3]), 8, torch.device("cpu"))] == [1, 2]


def test_encode_layers_shape_and_order(tiny):
    model, tok = tiny
    out = encode_layers(model, tok, SENTS, batch_size=4)
    assert out.shape == (3, len(SENTS), 32) and out.dtype == np.float32
    perm = [3, 0, 5, 1, 4, 2]
    out_p = encode_layers(model, tok, [SENTS[i] for i in perm], batch_size=4)
    np.testing.assert_allclose(out_p, out[:, perm], atol=1e-5)
    cls = encode_layers(model, tok, SENTS, pooling="cls", batch_size=2)
    assert cls.shape == out.shape and not np.allclose(cls, out)
    with pytest.raises(ValueError, match="pooling"):
        encode_layers(model, tok, SENTS, pooling="max")


def test_encode_layers_mean_ignores_padding(tiny):
    model, tok = tiny
    alone = encode_layers(model, tok, ["dog runs"])
    # batch_size 64: the two share one padded batch (the token budget would give a batch of 2 a budget of 2 x median)
    padded = encode_layers(model, tok, ["dog runs", SENTS[4]], batch_size=64)
    np.testing.assert_allclose(padded[:, 0], alone[:, 0], atol=1e-5)
    cls_alone = encode_layers(model, tok, ["dog runs"], pooling="cls")
    cls_padded = encode_layers(model, tok, ["dog runs", SENTS[4]], pooling="cls", batch_size=64)
    np.testing.assert_allclose(cls_padded[:, 0], cls_alone[:, 0], atol=1e-5)
    # direct check against the model: layer L mean over the 4 real tokens
    enc = tok(["dog runs"], return_tensors="pt")
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(alone[:, 0], torch.stack(hs)[:, 0].mean(1).numpy(), atol=1e-5)


def test_encode_layers_bf16_and_head_model(tiny):
    from transformers import BertForSequenceClassification

    model, tok = tiny
    head = BertForSequenceClassification(model.config)
    head.bert.load_state_dict(model.state_dict())
    ref = encode_layers(model, tok, SENTS[:3])
    np.testing.assert_allclose(encode_layers(head, tok, SENTS[:3]), ref, atol=1e-5)
    bf = encode_layers(model, tok, SENTS[:3], bf16=True)
    assert bf.dtype == np.float32 and np.abs(bf - ref).max() < 0.1
    assert encode_layers(model, tok, []).shape == (3, 0, 32)


def test_chunked_path_matches_single_block(monkeypatch):
    import xltlib.evaluation.alignment as al

    g = rng(11)
    x = g.standard_normal((50, 16))
    y = x + 0.8 * g.standard_normal((50, 16))
    full = {**retrieval(x, y), **cka(x, y), **cosine_gap(x, y)}
    monkeypatch.setattr(al, "_CHUNK", 7)
    chunked = {**retrieval(x, y), **cka(x, y), **cosine_gap(x, y)}
    assert chunked == pytest.approx(full, abs=1e-6)
    assert 0 < full["acc1_xx2en"] < 1
