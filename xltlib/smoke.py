"""Tiny data and a tiny random model made on the fly, for smoke runs and tests.

The data are an XTREME-layout folder with synthetic "languages": each language
renames the same English word ids (``de`` writes word 7 as ``de7``), so rows are
translations of each other and the readers, splits and metrics run unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SMOKE_LANGS = ("en", "de", "fr", "sw")
SMOKE_MODEL_DIR = "tiny-random-encoder"


def _word(lang: str, i: int) -> str:
    return f"w{i}" if lang == "en" else f"{lang}{i}"


def _sentence(lang: str, ids) -> str:
    return " ".join(_word(lang, int(i)) for i in ids)


def make_smoke_data(root: str | Path, n_premises: int = 24, seed: int = 0) -> Path:
    """Write xnli/, pawsx/, tatoeba-laser/ and synonyms/ with a few rows per language."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    premises = [rng.integers(0, 60, size=rng.integers(4, 9)) for _ in range(n_premises)]
    hyps = []
    for p in premises:  # entailment: subset; neutral: other words; contradiction: negation marker 99
        hyps.append((p, p[: max(2, len(p) // 2)], 0))
        hyps.append((p, rng.integers(60, 90, size=4), 1))
        hyps.append((p, np.append(p[:3], 99), 2))
    labels = ("entailment", "neutral", "contradiction")
    for lang in SMOKE_LANGS:
        (root / "xnli").mkdir(parents=True, exist_ok=True)
        with open(root / "xnli" / f"dev-{lang}.tsv", "w") as f:
            for p, h, y in hyps:
                f.write(f"{_sentence(lang, p)}\t{_sentence(lang, h)}\t{labels[y]}\n")
        (root / "pawsx").mkdir(parents=True, exist_ok=True)
        with open(root / "pawsx" / f"dev-{lang}.tsv", "w") as f:
            for k, p in enumerate(premises):
                q = p if k % 2 == 0 else p[::-1]
                f.write(f"{_sentence(lang, p)}\t{_sentence(lang, q)}\t{int(k % 2 == 0)}\n")
    codes = {"de": "deu", "fr": "fra", "sw": "swh"}
    (root / "tatoeba-laser").mkdir(parents=True, exist_ok=True)
    for lang, code in codes.items():
        sents = [rng.integers(0, 90, size=rng.integers(3, 8)) for _ in range(30)]
        (root / "tatoeba-laser" / f"tatoeba.{code}-eng.{code}").write_text(
            "".join(_sentence(lang, s) + "\n" for s in sents))
        (root / "tatoeba-laser" / f"tatoeba.{code}-eng.eng").write_text(
            "".join(_sentence("en", s) + "\n" for s in sents))
    (root / "synonyms").mkdir(parents=True, exist_ok=True)
    (root / "synonyms" / "counterfitted_neighbors.json").write_text(
        json.dumps({f"w{i}": [f"w{i + 1}", f"w{i + 2}"] for i in range(0, 60, 3)}))
    return root


def make_tiny_model(path: str | Path, seed: int = 0) -> Path:
    """A 2-layer random BERT with a word-level tokenizer over the smoke vocabulary, saved like a hub model."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

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
                                   model_max_length=64)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=1, type_vocab_size=1)
    tmp = path.with_name(path.name + ".tmp")
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp)
    fast.save_pretrained(tmp)
    tmp.rename(path)
    return path
