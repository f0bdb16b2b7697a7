"""Tests for the task heads (xltlib.models.heads), word tagging (xltlib.evaluation.tagging) and QA features (xltlib.evaluation.qa).

Everything runs on the tiny random model and hand-made tokenizers (seconds, CPU).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from xltlib.models.heads import MASKED_LOGIT, MultipleChoice, SpanExtractor, TokenClassifier, load_head
from xltlib.models.load import load_tokenizer
from xltlib.evaluation.qa import postprocess, prepare_eval_features, prepare_train_features, qa_substitute
from xltlib.training.objectives import build_objective
from xltlib.evaluation.tagging import encode_words, substitute_words, word_predictions

torch.set_num_threads(1)


def batch_of(tokenizer, texts, pairs=None, **extra):
    enc = tokenizer(texts, pairs, padding=True, return_tensors="pt")
    return dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **extra)


def encoder_grad_ok(head) -> bool:
    grads = [p.grad for p in head.encoder.parameters() if p.grad is not None]
    emb = head.get_input_embeddings().weight.grad
    return (len(grads) > 0 and all(torch.isfinite(g).all() for g in grads)
            and emb is not None and emb.abs().sum() > 0)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny-random")


# ------------------------------------------------------------------------- heads
def test_token_classifier_loss_grads_and_ignored_labels(tok):
    head = load_head("token_classification", "tiny-random", 5)
    assert isinstance(head, TokenClassifier) and head.config.num_labels == 5 and head.base_model is head.encoder
    b = batch_of(tok, ["w1 w2 w3 w4", "w5 w6"])
    labels = torch.full(b["input_ids"].shape, -100)
    labels[:, 1] = torch.tensor([2, 4])
    labels[0, 2] = 1
    out = head(**b, labels=labels)
    assert out.logits.shape == (*b["input_ids"].shape, 5) and out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert encoder_grad_ok(head)
    head.eval()  # loss = mean CE over the 3 labelled tokens only
    with torch.no_grad():
        out = head(**b, labels=labels)
    keep = labels != -100
    expected = torch.nn.functional.cross_entropy(out.logits[keep], labels[keep])
    assert torch.allclose(out.loss, expected)
    assert head(**b).loss is None
    assert head(**b, labels=torch.full_like(labels, -100)).loss.item() == 0.0  # no NaN


def test_span_extractor_loss_grads_and_padding_never_wins(tok):
    head = load_head("span_extraction", "tiny-random", 2)
    assert isinstance(head, SpanExtractor) and head.config.num_labels == 2
    b = batch_of(tok, ["w1 w2", "w3 w4 w5 w6 w7 w8"], ["w9 w10", "w11"])
    am = b["attention_mask"]
    assert (am == 0).any()
    out = head(**b, labels=torch.tensor([[6, 7], [0, 0]]))
    assert out.logits.shape == (*b["input_ids"].shape, 2) and torch.isfinite(out.loss)
    assert torch.equal(out.start_logits, out.logits[..., 0])
    out.loss.backward()
    assert encoder_grad_ok(head)

    class Rising(torch.nn.Module):  # scores grow with the position: unmasked, padding would win
        def forward(self, h):
            return torch.arange(h.shape[1], dtype=h.dtype).view(1, -1, 1).expand(h.shape[0], -1, 2) * 10.0

    head.qa_outputs = Rising()
    out = head(**b)
    assert (out.logits[am == 0] == MASKED_LOGIT).all()
    last_real = am.sum(1) - 1
    assert torch.equal(out.logits[..., 0].argmax(1), last_real)
    assert torch.equal(out.logits[..., 1].argmax(1), last_real)
    # the padded row's loss ignores its padding: same as the row alone without padding
    lab = torch.tensor([[1, 2], [1, 2]])
    row0 = head(input_ids=b["input_ids"][:1, :last_real[0] + 1], labels=lab[:1]).loss
    both = head(**b, labels=lab).loss
    row1 = head(input_ids=b["input_ids"][1:], attention_mask=am[1:], labels=lab[1:]).loss
    assert torch.allclose(both, (row0 + row1) / 2, atol=1e-5)


def test_multiple_choice_reshape_loss_and_grads(tok):
    k = 3
    head = load_head("multiple_choice", "tiny-random", k)
    assert isinstance(head, MultipleChoice) and head.config.num_labels == k
    ctx, choices = ["w1 w2 w3", "w4 w5"], [["w6", "w7 w8", "w9"], ["w10 w11 w12", "w13", "w14"]]
    b = batch_of(tok, [c for c in ctx for _ in range(k)], [x for ch in choices for x in ch])
    out = head(**b, labels=torch.tensor([2, 0]))
    assert out.logits.shape == (2, k) and torch.isfinite(out.loss)
    out.loss.backward()
    assert encoder_grad_ok(head)

    head.eval()
    with torch.no_grad():
        logits = head(**b).logits
        # row i * k + j is choice j of example i: score each row alone, padding removed
        single = torch.stack([head.scorer(_pool(head, b, r)).squeeze() for r in range(2 * k)])
        assert torch.allclose(logits, single.view(2, k), atol=1e-5)
        # [B, k, L] input is flattened the same way
        stacked = {n: t.view(2, k, -1) for n, t in b.items()}
        assert torch.allclose(head(**stacked).logits, logits, atol=1e-6)
        # RS-RP style: whole flattened batch repeated m times along dim 0, labels m times
        m = 3
        rep = {n: t.repeat(m, 1) for n, t in b.items()}
        out = head(**rep, labels=torch.tensor([2, 0]).repeat(m))
        assert out.logits.shape == (m * 2, k)
        assert torch.allclose(out.logits, logits.repeat(m, 1), atol=1e-5)
        assert torch.allclose(out.loss, head(**b, labels=torch.tensor([2, 0])).loss, atol=1e-5)
    with pytest.raises(ValueError, match="not a multiple"):
        head(**{n: t[:4] for n, t in b.items()})
    with pytest.raises(ValueError, match="labels"):
        head(**b, labels=torch.tensor([0, 1, 2]))


def _pool(head, b, r):
    """Mean-pooled state of flattened row r, encoded alone without its padding."""
    n = int(b["attention_mask"][r].sum())
    h = head.encoder(input_ids=b["input_ids"][r:r + 1, :n]).last_hidden_state
    return h.mean(1)[0]


@pytest.mark.parametrize("objective", [("rs_rp", {"m": 2}), ("freelb", {}), ("pgd", {})])
def test_robust_objectives_run_on_every_head(tok, objective):
    name, hp = objective
    obj = build_objective(name, hp)
    k = 2
    tags = torch.tensor([[-100, 1, 2, 0, -100], [-100, 1, -100, -100, -100]])
    cases = {
        "token_classification": (3, batch_of(tok, ["w1 w2 w3", "w4"], labels=tags)),
        "span_extraction": (2, batch_of(tok, ["w1", "w2 w3"], ["w4 w5 w6", "w7"],
                                        labels=torch.tensor([[4, 5], [0, 0]]))),
        "multiple_choice": (k, batch_of(tok, ["w1 w2"] * k + ["w3"] * k, ["w4", "w5 w6", "w7", "w8"],
                                        labels=torch.tensor([1, 0]))),
    }
    for kind, (n, batch) in cases.items():
        head = load_head(kind, "tiny-random", n)
        loss = obj.loss_and_backward(head, batch)
        assert torch.isfinite(loss), kind
        assert encoder_grad_ok(head), kind
        assert obj.predict_logits(head, batch).shape[0] == batch["labels"].shape[0], kind


def test_load_head_rejects_bad_arguments():
    with pytest.raises(ValueError, match="head kind"):
        load_head("pooling", "tiny-random", 2)
    with pytest.raises(ValueError, match="2 outputs"):
        load_head("span_extraction", "tiny-random", 3)
    with pytest.raises(OSError, match="could not load model"):
        load_head("token_classification", "/nonexistent/model-dir", 3)


# ----------------------------------------------------------------------- tagging
def wordpiece_tokenizer(max_length=64) -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer that splits 'unbelievable' -> un ##believ ##able, 'cats' -> cat ##s."""
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "un", "##believ", "##able", "cat", "##s", "dog", "runs", "the",
              "##e", "th"]
    tk = Tokenizer(models.WordPiece({p: i for i, p in enumerate(pieces)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                   sep_token="</s>", pad_token="<pad>", unk_token="<unk>", model_max_length=max_length)


LABELS = {"O": 0, "B-PER": 1, "I-PER": 2, "ADJ": 3}


def test_encode_words_labels_first_subwords_only():
    wp = wordpiece_tokenizer()
    sents = [["the", "unbelievable", "cats"], ["dog", "runs"]]
    tags = [["O", "ADJ", "B-PER"], ["I-PER", "O"]]
    enc = encode_words(wp, sents, tags, LABELS, max_length=32)
    toks = wp.convert_ids_to_tokens(enc[0]["input_ids"])
    assert toks == ["<s>", "the", "un", "##believ", "##able", "cat", "##s", "</s>"]
    assert enc[0]["word_ids"] == [None, 0, 1, 1, 1, 2, 2, None]
    assert enc[0]["labels"] == [-100, 0, 3, -100, -100, 1, -100, -100]
    assert enc[0]["n_words"] == 3
    assert enc[1]["labels"] == [-100, 2, 0, -100]
    assert "labels" not in encode_words(wp, sents, None, LABELS, max_length=32)[0]
    with pytest.raises(ValueError, match="not in the label set"):
        encode_words(wp, sents, [["O", "X", "O"], ["O", "O"]], LABELS, max_length=32)
    # a word with no subword at all is encoded as the unknown token (XTREME), not dropped
    enc = encode_words(wp, [["dog", "", "runs"]], [["O", "ADJ", "O"]], LABELS, max_length=32)[0]
    assert wp.convert_ids_to_tokens(enc["input_ids"]) == ["<s>", "dog", "<unk>", "runs", "</s>"]
    assert enc["labels"] == [-100, 0, 3, 0, -100]


def test_word_predictions_first_subword_and_truncation_fill():
    wp = wordpiece_tokenizer()
    sents = [["unbelievable", "cats", "dog", "runs"], ["the", "dog"]]
    enc = encode_words(wp, sents, None, LABELS, max_length=6)  # <s> un ##believ ##able cat </s>
    assert enc[0]["word_ids"] == [None, 0, 0, 0, 1, None]
    id2label = {v: k for k, v in LABELS.items()}
    lg0 = np.zeros((8, 4), np.float32)  # padded past the 6 tokens
    lg0[1, 3] = lg0[2, 1] = lg0[3, 1] = 5  # word 0: first subword says ADJ, the others B-PER
    lg0[4, 2] = 5  # word 1 -> I-PER
    lg0[6:, 1] = 9  # padding must be ignored
    lg1 = np.zeros((4, 4), np.float32)
    lg1[1, 1] = lg1[2, 2] = 5
    preds, n_cut = word_predictions([lg0, lg1], enc, id2label, fill="O")
    assert preds == [["ADJ", "I-PER", "O", "O"], ["B-PER", "I-PER"]]
    assert n_cut == 2
    preds, _ = word_predictions([lg0, lg1], enc, [k for k in LABELS], fill="X")  # list id2label, other fill
    assert preds[0][2:] == ["X", "X"]


def test_substitute_words_keeps_word_count():
    sents = [["the", "cats", "run"], ["dogs"]]
    table = {"cats": "felines", "run": "", "dogs": "big dogs"}
    out = substitute_words(sents, lambda texts: [table.get(t, t) for t in texts])
    assert out == [["the", "felines", "run"], ["big dogs"]]  # empty result keeps the word
    assert sents[0][1] == "cats"
    with pytest.raises(ValueError, match="returned"):
        substitute_words(sents, lambda texts: texts[:-1])


# ---------------------------------------------------------------------------- QA
def qa_record(rid, question, words, answer_words):
    context = " ".join(words)
    answer = " ".join(answer_words)
    return {"id": rid, "question": question, "context": context,
            "answers": {"text": [answer], "answer_start": [context.index(" " + answer) + 1]}}


def long_record():
    words = [f"w{i}" for i in range(40)]
    return qa_record("long", "  w1 w2 w3", words, ["w20", "w21", "w22"])


def test_prepare_train_features_labels_answer_tokens_in_every_window(tok):
    rec = long_record()
    short = qa_record("short", "w5", ["de1", "de2", "de3", "de4"], ["de3"])
    feats = prepare_train_features(tok, [rec, short], max_length=20, doc_stride=6)
    assert all(len(f["input_ids"]) <= 20 for f in feats)
    long_feats = feats[:-1]
    assert len(long_feats) > 2  # 40 context words, 13 per window
    hits = [f for f in long_feats if f["labels"] != [0, 0]]
    assert hits and len(hits) < len(long_feats)  # some windows hold the answer, others get (0, 0)
    for f in hits:
        s, e = f["labels"]
        assert tok.decode(f["input_ids"][s:e + 1]) == "w20 w21 w22"
    for f in long_feats:  # a window labelled (0, 0) really misses part of the answer
        ids = f["input_ids"]
        has_all = all(tok.convert_tokens_to_ids(w) in ids[5:] for w in ("w20", "w21", "w22"))
        assert has_all == (f["labels"] != [0, 0])
    s, e = feats[-1]["labels"]
    assert tok.decode(feats[-1]["input_ids"][s:e + 1]) == "de3"


def test_question_truncated_to_max_query_length(tok):
    rec = qa_record("q", "w1 w2 w3 w4 w5 w6 w7 w8", ["w9", "w10", "w11"], ["w10"])
    f = prepare_train_features(tok, [rec], max_length=30, doc_stride=8, max_query_length=3)[0]
    assert tok.convert_ids_to_tokens(f["input_ids"][:5]) == ["<s>", "w1", "w2", "w3", "</s>"]
    s, e = f["labels"]
    assert tok.decode(f["input_ids"][s:e + 1]) == "w10"


def test_eval_features_and_postprocess_recover_gold(tok):
    recs = [long_record(), qa_record("short", "w5", ["de1", "de2", "de3", "de4"], ["de2", "de3"])]
    feats = prepare_eval_features(tok, recs, max_length=20, doc_stride=6)
    train = prepare_train_features(tok, recs, max_length=20, doc_stride=6)
    assert [f["input_ids"] for f in feats] == [f["input_ids"] for f in train]
    assert sum(f["example_id"] == "long" for f in feats) > 2 and feats[-1]["example_id"] == "short"
    offs = feats[-1]["offsets"]  # <s> w5 </s> </s> de1 de2 de3 de4 </s>: offsets only on the context
    assert [k for k, o in enumerate(offs) if o is not None] == [4, 5, 6, 7]
    assert [recs[1]["context"][a:b] for a, b in offs[4:8]] == ["de1", "de2", "de3", "de4"]
    width = max(len(f["input_ids"]) for f in feats)
    start = np.full((len(feats), width), -5.0, np.float32)  # padded rows, as a batch gives them
    end = np.full((len(feats), width), -5.0, np.float32)
    for i, t in enumerate(train):
        if t["labels"] != [0, 0]:
            start[i, t["labels"][0]], end[i, t["labels"][1]] = 10.0, 10.0
        else:  # windows without the answer point at <s>, which is not context and never chosen
            start[i, 0] = end[i, 0] = 20.0
    assert postprocess(recs, feats, start, end) == {"long": "w20 w21 w22", "short": "de2 de3"}


def test_postprocess_span_rules():
    rec = {"id": "x", "question": "q", "context": "aa bb cc dd", "answers": {"text": [], "answer_start": []}}
    feat = {"input_ids": [0] * 7, "example_id": "x", "offsets": [None, None, (0, 2), (3, 5), (6, 8), (9, 11), None]}

    def answer(start, end, **kw):
        return postprocess([rec], [feat], [np.array(start, float)], [np.array(end, float)], **kw)["x"]

    # the best pair (start 4, end 2) is reversed; the best valid one is (4, 4)
    assert answer([0, 0, 0, 1, 10, 0, 0], [0, 0, 10, 0, 1, 0, 0]) == "cc"
    # too long for max_answer_length=2 -> the best span of at most 2 tokens
    s, e = [0, 0, 10, 0, 0, 0, 0], [0, 0, 0, 1, 0, 10, 0]
    assert answer(s, e) == "aa bb cc dd" and answer(s, e, max_answer_length=2) == "aa bb"
    # special / question tokens never give an answer, however high their scores
    assert answer([99, 99, 0, 0, 0, 5, 99], [99, 99, 0, 0, 0, 5, 99]) == "dd"
    # no context token among the n_best -> no valid span -> ""
    assert answer([9, 9, 0, 0, 0, 0, 9], [9, 9, 0, 0, 0, 0, 9], n_best=3) == ""
    assert postprocess([rec], [], [], []) == {"x": ""}


def test_qa_substitute_only_changes_questions():
    rec = long_record()
    out = qa_substitute([rec], lambda texts: [t.replace("w1", "w9") for t in texts])
    assert out[0]["question"] == "  w9 w2 w3" and rec["question"] == "  w1 w2 w3"
    assert out[0]["context"] == rec["context"] and out[0]["answers"] == rec["answers"]
    a = out[0]["answers"]
    assert out[0]["context"][a["answer_start"][0]:][:len(a["text"][0])] == a["text"][0]
