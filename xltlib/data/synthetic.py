"""Tiny data and a tiny random model made on the fly, for smoke runs and tests.

The data are an XTREME-layout folder with synthetic "languages": each language
renames the same English word ids (``de`` writes word 7 as ``de7``), so rows are
translations of each other and the readers, splits and metrics run unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

SMOKE_LANGS = ("en", "de", "fr", "sw")
SMOKE_MODEL_DIR = "tiny-random-encoder"


def _word(lang: str, i: int) -> str:
    return f"w{i}" if lang == "en" else f"{lang}{i}"


def _sentence(lang: str, ids) -> str:
    return " ".join(_word(lang, int(i)) for i in ids)


def make_smoke_data(root: str | Path, n_premises: int = 24, seed: int = 0) -> Path:
    """Write xnli/, pawsx/, tatoeba-laser/, the other XTREME-R task folders and synonyms/, a few rows each."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    labels = ("entailment", "neutral", "contradiction")

    def nli_rows(n):
        rows = []
        for p in [rng.integers(0, 60, size=rng.integers(4, 9)) for _ in range(n)]:
            # entailment: subset; neutral: other words; contradiction: negation marker 99
            rows += [(p, p[: max(2, len(p) // 2)], 0), (p, rng.integers(60, 90, size=4), 1), (p, np.append(p[:3], 99), 2)]
        return rows

    def paws_rows(n):
        out = []
        for k in range(n):
            p = rng.integers(0, 60, size=rng.integers(4, 9))
            out.append((p, p if k % 2 == 0 else p[::-1], int(k % 2 == 0)))
        return out

    # dev and test hold different rows, like the real files; English training sets beside them
    nli = {"dev": nli_rows(n_premises), "test": nli_rows(n_premises)}
    paws = {"dev": paws_rows(n_premises), "test": paws_rows(n_premises), "train": paws_rows(3 * n_premises)}
    (root / "xnli").mkdir(parents=True, exist_ok=True)
    (root / "pawsx").mkdir(parents=True, exist_ok=True)
    for lang in SMOKE_LANGS:
        for split in ("dev", "test"):
            with open(root / "xnli" / f"{split}-{lang}.tsv", "w") as f:
                for p, h, y in nli[split]:
                    f.write(f"{_sentence(lang, p)}\t{_sentence(lang, h)}\t{labels[y]}\n")
            with open(root / "pawsx" / f"{split}-{lang}.tsv", "w") as f:
                for p, q, y in paws[split]:
                    f.write(f"{_sentence(lang, p)}\t{_sentence(lang, q)}\t{y}\n")
    with open(root / "pawsx" / "train-en.tsv", "w") as f:
        for p, q, y in paws["train"]:
            f.write(f"{_sentence('en', p)}\t{_sentence('en', q)}\t{y}\n")
    codes = {"de": "deu", "fr": "fra", "sw": "swh"}
    (root / "tatoeba-laser").mkdir(parents=True, exist_ok=True)
    for lang, code in codes.items():
        sents = [rng.integers(0, 90, size=rng.integers(3, 8)) for _ in range(30)]
        (root / "tatoeba-laser" / f"tatoeba.{code}-eng.{code}").write_text(
            "".join(_sentence(lang, s) + "\n" for s in sents))
        (root / "tatoeba-laser" / f"tatoeba.{code}-eng.eng").write_text(
            "".join(_sentence("en", s) + "\n" for s in sents))
    _suite_data(root, rng)
    (root / "synonyms").mkdir(parents=True, exist_ok=True)
    (root / "synonyms" / "counterfitted_neighbors.json").write_text(
        json.dumps({f"w{i}": [f"w{i + 1}", f"w{i + 2}"] for i in range(0, 60, 3)}))
    return root


_POS = ("NOUN", "VERB", "ADJ")  # a word's tag is a function of its id, so tags carry across "languages"


def _conllu(lang: str, sents) -> str:
    out = []
    for k, ids in enumerate(sents):
        out += [f"# sent_id = s{k:03d}", f"# text = {_sentence(lang, ids)}"]
        out += [f"{j + 1}\t{_word(lang, w)}\t_\t{_POS[w % 3]}\t_\t_\t0\t_\t_\t_" for j, w in enumerate(ids)]
        out.append("")
    return "\n".join(out) + "\n"


def _iob(lang: str, sents) -> str:
    """Words 60-64 start a person, 65-69 continue it; everything else is O."""
    lines = []
    for ids in sents:
        for w in ids:
            tag = "B-PER" if 60 <= w < 65 else ("I-PER" if 65 <= w < 70 else "O")
            lines.append(f"{_word(lang, w)}\t{tag}")
        lines.append("")
    return "\n".join(lines) + "\n"


def _squad(lang: str, items) -> dict:
    """Answer = two context words; the question repeats them (an easy, language-independent pattern)."""
    paragraphs = []
    for k, (ctx_ids, a) in enumerate(items):
        context = " . ".join(_sentence(lang, part) for part in np.array_split(ctx_ids, 2))
        words = context.split(" ")
        answer = " ".join(words[a:a + 2])
        start = len(" ".join(words[:a])) + (1 if a else 0)
        paragraphs.append(dict(context=context, qas=[dict(id=f"q{k:03d}", question=f"{answer} {words[0]}",
                                                          answers=[dict(text=answer, answer_start=start)])]))
    return dict(version="smoke", data=[dict(title="smoke", paragraphs=paragraphs)])


def _suite_data(root: Path, rng: np.random.Generator) -> None:
    """Tiny XCOPA, PUD, PAN-X, XQuAD, MLQA and TyDiQA folders in the XTREME layout, in the smoke languages."""
    def sents(n, lo=3, hi=8):
        return [rng.integers(0, 90, size=rng.integers(lo, hi)) for _ in range(n)]

    def copa(lang, rows):
        out = []
        for k, (p, c) in enumerate(rows):  # the right choice repeats the premise's first word
            right, wrong = _sentence(lang, np.append(p[:1], c[:2])), _sentence(lang, c[2:5])
            label = k % 2
            choices = (wrong, right) if label else (right, wrong)
            out.append(json.dumps(dict(premise=_sentence(lang, p), choice1=choices[0], choice2=choices[1],
                                       question=("cause", "effect")[k % 3 == 0], label=label, idx=k)))
        return "\r\n".join(out) + "\r\n"  # XCOPA's files have CRLF endings

    (root / "xcopa").mkdir(parents=True, exist_ok=True)
    copa_rows = [(p, rng.integers(0, 90, size=5)) for p in sents(40)]
    (root / "xcopa" / "train-en.jsonl").write_text(copa(("en"), copa_rows[:24]))
    (root / "xcopa" / "val-en.jsonl").write_text(copa("en", copa_rows[24:]))
    for lang in ("sw", "et"):  # et is XCOPA's source of the question field for test sets
        (root / "xcopa" / f"test-{lang}.jsonl").write_text(copa(lang if lang in SMOKE_LANGS else "en", copa_rows[24:]))
    (root / "udpos-pud").mkdir(parents=True, exist_ok=True)
    pud = sents(30)
    for lang in ("en", "de", "fr"):
        (root / "udpos-pud" / f"{lang}.conllu").write_text(_conllu(lang, pud))
    (root / "panx").mkdir(parents=True, exist_ok=True)
    (root / "panx" / "train-en.tsv").write_text(_iob("en", sents(40)))
    for lang in SMOKE_LANGS:
        (root / "panx" / f"dev-{lang}.tsv").write_text(_iob(lang, sents(12)))
    qa = [(rng.integers(0, 90, size=10), int(rng.integers(0, 5))) for _ in range(40)]
    for folder, name, langs, items in (
            ("xquad", "xquad.{lang}.json", ("en", "de"), qa[:12]),
            ("mlqa/MLQA_V1/dev", "dev-context-{lang}-question-{lang}.json", ("en", "de"), qa[:12]),
            ("tydiqa/tydiqa-goldp-v1.1-train", "tydiqa.goldp.{lang}.train.json", ("en",), qa[12:])):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for lang in langs:
            (root / folder / name.format(lang=lang)).write_text(json.dumps(_squad(lang, items)))


def make_tiny_model(path: str | Path, seed: int = 0) -> Path:
    """A 2-layer random BERT with a word-level tokenizer over the smoke vocabulary, saved like a hub model."""

    path = Path(path)
    if (path / "config.json").exists():
        return path
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    words = [_word(lang, i) for lang in SMOKE_LANGS for i in range(100)]
    vocab = {w: i for i, w in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                   sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                   model_max_length=64)  # = max_position_embeddings
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=1, type_vocab_size=1)
    tmp = path.with_name(path.name + ".tmp")
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp)
    fast.save_pretrained(tmp)
    tmp.rename(path)
    return path
