"""Word-level tagging (NER, POS) with subword models, following the XTREME conventions.

A word's label sits on its first subword; the other subwords and the special tokens get -100
(ignored by the loss), and a word's prediction is its first subword's argmax. A word that the
tokenizer turns into no token at all is encoded as the unknown token (as XTREME's
``utils_tag.py`` does), so that only words cut off by ``max_length`` lack a prediction; those
get a fill tag and are counted.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["IGNORE_INDEX", "encode_words", "word_predictions", "sentence_predictions", "substitute_words"]

IGNORE_INDEX = -100


def _first_subwords(word_ids: Sequence[int | None]) -> dict[int, int]:
    """word index -> position of its first subword."""
    first: dict[int, int] = {}
    for pos, w in enumerate(word_ids):
        if w is not None and w not in first:
            first[w] = pos
    return first


def encode_words(tokenizer, sentences: list[list[str]], tags: list[list[str]] | None,
                 label2id: Mapping[str, int], max_length: int) -> list[dict]:
    """Tokenize pre-split sentences; label the first subword of each word, -100 elsewhere.

    Needs a fast tokenizer (``word_ids()``). Returns per sentence ``{"input_ids", "labels"
    (only with tags), "word_ids" (word index or None per token), "n_words"}``; sequences are
    truncated to ``max_length`` (special tokens included), not padded.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("encode_words needs a fast tokenizer (it uses word_ids())")
    if tags is not None:
        if len(tags) != len(sentences):
            raise ValueError(f"{len(sentences)} sentences but {len(tags)} tag sequences")
        for i, (words, ts) in enumerate(zip(sentences, tags)):
            if len(words) != len(ts):
                raise ValueError(f"sentence {i}: {len(words)} words but {len(ts)} tags")
            unknown = sorted(set(ts) - set(label2id))
            if unknown:
                raise ValueError(f"sentence {i}: tags {unknown} are not in the label set {sorted(label2id)}")
    sentences = [list(words) for words in sentences]
    kw = dict(is_split_into_words=True, truncation=True, max_length=max_length)
    enc = tokenizer(sentences, **kw)
    rows = [(enc["input_ids"][i], enc.word_ids(i)) for i in range(len(sentences))]
    for i, words in enumerate(sentences):  # words without any subword -> unk token, then re-encode
        if len(_first_subwords(rows[i][1])) == len(words):
            continue
        full = tokenizer([words], is_split_into_words=True, add_special_tokens=False)
        present = {w for w in full.word_ids(0) if w is not None}
        empty = [j for j in range(len(words)) if j not in present]
        if empty:  # otherwise the missing words were only truncated
            for j in empty:
                words[j] = tokenizer.unk_token
            one = tokenizer([words], **kw)
            rows[i] = (one["input_ids"][0], one.word_ids(0))
    out = []
    for (input_ids, word_ids), words, sent_tags in zip(rows, sentences, tags or [None] * len(sentences)):
        item = {"input_ids": list(input_ids), "word_ids": list(word_ids), "n_words": len(words)}
        if tags is not None:
            first = set(_first_subwords(word_ids).values())
            item["labels"] = [label2id[sent_tags[w]] if pos in first else IGNORE_INDEX
                              for pos, w in enumerate(word_ids)]
        out.append(item)
    return out


def word_predictions(logits_per_sentence: Sequence[np.ndarray], encoded: Sequence[dict],
                     id2label: Mapping[int, str] | Sequence[str], fill: str = "O") -> tuple[list[list[str]], int]:
    """Tag each word with its first subword's argmax; words cut off by truncation get ``fill``.

    ``logits_per_sentence[i]`` is [L_i, C] for ``encoded[i]`` (rows past its tokens, e.g.
    padding, are ignored). Returns (tags per sentence, number of words filled).
    """
    preds, filled = sentence_predictions(logits_per_sentence, encoded, id2label, fill)
    return preds, sum(filled)


def sentence_predictions(logits_per_sentence: Sequence[np.ndarray], encoded: Sequence[dict],
                         id2label: Mapping[int, str] | Sequence[str], fill: str = "O") -> tuple[list[list[str]], list[int]]:
    """:func:`word_predictions` with the number of words filled per sentence (kept with the predictions)."""
    if len(logits_per_sentence) != len(encoded):
        raise ValueError(f"{len(logits_per_sentence)} logit arrays for {len(encoded)} sentences")
    preds, filled = [], []
    for logits, item in zip(logits_per_sentence, encoded):
        logits = np.asarray(logits)
        n_tok = len(item["word_ids"])
        if logits.ndim != 2 or logits.shape[0] < n_tok:
            raise ValueError(f"logits of shape {logits.shape} for a sentence of {n_tok} tokens")
        best = logits[:n_tok].argmax(-1)
        first = _first_subwords(item["word_ids"])
        words = [id2label[int(best[first[w]])] if w in first else fill for w in range(item["n_words"])]
        preds.append(words)
        filled.append(sum(w not in first for w in range(item["n_words"])))
    return preds, filled


def substitute_words(sentences: list[list[str]], synonym_fn: Callable[[list[str]], list[str]]) -> list[list[str]]:
    """Apply a text transform word by word, keeping each sentence's word count (RS-DA for tagging).

    ``synonym_fn`` maps a list of texts to a list of texts of the same length (e.g.
    ``lambda texts: objective.transform_texts(texts, rng)``); it receives every word of every
    sentence as its own text in one call, so each substitute replaces exactly one word and keeps
    its tag. A word turned into an empty string keeps its original form.
    """
    flat = [w for words in sentences for w in words]
    new = list(synonym_fn(flat))
    if len(new) != len(flat):
        raise ValueError(f"synonym_fn returned {len(new)} texts for {len(flat)} words")
    out, k = [], 0
    for words in sentences:
        out.append([n if n.strip() else w for w, n in zip(words, new[k:k + len(words)])])
        k += len(words)
    return out
