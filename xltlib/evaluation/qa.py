"""Extractive QA features and answers, as HF ``run_qa.py`` / XTREME ``run_squad.py`` do.

A record is SQuAD-like: ``{"id", "question", "context", "answers": {"text": [...],
"answer_start": [...]}}``. The question comes first and the context second; a long context is cut
into overlapping windows (``truncation="only_second"``, ``stride=doc_stride``: the overlap in
tokens between consecutive windows, HF's meaning). A training window that does not hold the
whole first answer is labelled (0, 0), the <s>/[CLS] position (SQuAD v1.1 preprocessing).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = ["prepare_train_features", "prepare_eval_features", "postprocess", "qa_substitute"]


def _questions(tokenizer, records, max_query_length: int) -> list[str]:
    """Questions without leading blanks, cut after their first ``max_query_length`` tokens."""
    questions = [r["question"].lstrip() for r in records]
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    return [q if len(offs) <= max_query_length else q[:offs[max_query_length - 1][1]]
            for q, offs in zip(questions, enc["offset_mapping"])]


def _windows(tokenizer, records, max_length: int, doc_stride: int, max_query_length: int):
    """Tokenized (question, context) windows with offsets and the record index of each window."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("QA features need a fast tokenizer (offset mappings, overflowing windows)")
    return tokenizer(_questions(tokenizer, records, max_query_length), [r["context"] for r in records],
                     truncation="only_second", max_length=max_length, stride=doc_stride,
                     return_overflowing_tokens=True, return_offsets_mapping=True)


def _context_span(sequence_ids: Sequence[int | None]) -> tuple[int, int] | None:
    """First and last token position of the context (sequence 1) in a window; None if empty."""
    ctx = [k for k, s in enumerate(sequence_ids) if s == 1]
    return (ctx[0], ctx[-1]) if ctx else None


def prepare_train_features(tokenizer, records: list[dict], max_length: int = 384, doc_stride: int = 128,
                           max_query_length: int = 64) -> list[dict]:
    """One ``{"input_ids", "labels": [start, end]}`` per window; (0, 0) when the answer is not inside.

    Labels are the token positions of the first gold answer: the last context token starting
    at or before its first character and the first context token ending at or after its end.
    """
    enc = _windows(tokenizer, records, max_length, doc_stride, max_query_length)
    features = []
    for i, input_ids in enumerate(enc["input_ids"]):
        record = records[enc["overflow_to_sample_mapping"][i]]
        offsets = enc["offset_mapping"][i]
        span = _context_span(enc.sequence_ids(i))
        answers = record["answers"]
        label = [0, 0]
        if answers["text"] and span is not None:
            first, last = span
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            if offsets[first][0] <= start_char and offsets[last][1] >= end_char:
                start = max(k for k in range(first, last + 1) if offsets[k][0] <= start_char)
                end = min(k for k in range(first, last + 1) if offsets[k][1] >= end_char)
                label = [start, end]
        features.append({"input_ids": list(input_ids), "labels": label})
    return features


def prepare_eval_features(tokenizer, records: list[dict], max_length: int = 384, doc_stride: int = 128,
                          max_query_length: int = 64) -> list[dict]:
    """One ``{"input_ids", "example_id", "offsets"}`` per window; offsets are None off the context."""
    enc = _windows(tokenizer, records, max_length, doc_stride, max_query_length)
    features = []
    for i, input_ids in enumerate(enc["input_ids"]):
        record = records[enc["overflow_to_sample_mapping"][i]]
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], enc.sequence_ids(i))]
        features.append({"input_ids": list(input_ids), "example_id": record["id"], "offsets": offsets})
    return features


def postprocess(records: list[dict], features: list[dict], start_logits, end_logits, n_best: int = 20,
                max_answer_length: int = 30) -> dict[str, str]:
    """Answer text per record id: the best-scoring valid span over all windows of the record.

    Candidates are pairs of the ``n_best`` top start and end positions of each window; a span
    is valid when both ends are context tokens, start <= end and it has at most
    ``max_answer_length`` tokens; its score is start + end logit. ``start_logits[i]`` /
    ``end_logits[i]`` belong to ``features[i]`` (rows may be padded past its tokens). The text
    is cut from the context by character offsets and stripped; "" when no span is valid.
    """
    if not len(features) == len(start_logits) == len(end_logits):
        raise ValueError(f"{len(features)} features but {len(start_logits)} start / {len(end_logits)} end logits")
    best: dict[str, tuple[float, int, int, int]] = {}  # id -> (score, feature, start, end)
    for i, feat in enumerate(features):
        offsets = feat["offsets"]
        s_log = np.asarray(start_logits[i], dtype=np.float64)[:len(offsets)]
        e_log = np.asarray(end_logits[i], dtype=np.float64)[:len(offsets)]
        starts = np.argsort(s_log)[::-1][:n_best]
        ends = np.argsort(e_log)[::-1][:n_best]
        for s in starts.tolist():
            if offsets[s] is None:
                continue
            for e in ends.tolist():
                if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                score = s_log[s] + e_log[e]
                key = feat["example_id"]
                if key not in best or score > best[key][0]:
                    best[key] = (score, i, s, e)
    answers = {}
    for record in records:
        hit = best.get(record["id"])
        if hit is None:
            answers[record["id"]] = ""
            continue
        _, i, s, e = hit
        offsets = features[i]["offsets"]
        answers[record["id"]] = record["context"][offsets[s][0]:offsets[e][1]].strip()
    return answers


def qa_substitute(records: list[dict], synonym_fn: Callable[[list[str]], list[str]]) -> list[dict]:
    """Copies of ``records`` with ``synonym_fn`` applied to the questions only (RS-DA for QA).

    The context is left as is so the gold answer offsets stay valid. ``synonym_fn`` maps a list
    of texts to a list of the same length, e.g. ``lambda t: objective.transform_texts(t, rng)``.
    """
    questions = list(synonym_fn([r["question"] for r in records]))
    if len(questions) != len(records):
        raise ValueError(f"synonym_fn returned {len(questions)} questions for {len(records)} records")
    return [dict(r, question=q) for r, q in zip(records, questions)]
