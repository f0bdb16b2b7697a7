"""XTREME / XTREME-R task metrics, each with per-example values so a caller can bootstrap CIs.

All scores are fractions in [0, 1] (reports multiply by 100). Definitions follow the scripts
XTREME evaluates with (google-research/xtreme ``evaluate.py`` and ``third_party/``):

- extractive QA: the official SQuAD v1.1 ``evaluate-v1.1.py`` (XQuAD, TyDiQA-GoldP) and MLQA's
  ``mlqa_evaluation_v1.py`` (MLQA), both fetched by XTREME's ``install_tools.sh``;
- PAN-X and UD-POS: ``seqeval.metrics`` f1/precision/recall in default mode, as in
  ``third_party/run_tag.py`` and ``evaluate.py``;
- LAReQA: mAP@20 as in ``third_party/utils_lareqa.py`` (``average_precision_at_k``, k=20);
- classification / retrieval accuracy as in ``evaluate.py``.
"""
from __future__ import annotations

import re
import string
import unicodedata
import warnings
from collections import Counter
from typing import Sequence

import numpy as np
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

__all__ = ["normalize_answer", "squad_scores", "tag_f1", "f1_from_counts", "map_at_k", "accuracy",
           "MLQA_LANGS"]


# --------------------------------------------------------------------------------------------- QA
_SQUAD_PUNCT = frozenset(string.punctuation)

# Articles removed by mlqa_evaluation_v1.py (facebookresearch/MLQA); hi and zh have none. The Arabic
# pattern is copied as is: its first alternative never matches, so every "ال" substring is removed.
_MLQA_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "hi": None,
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": r"\sال^|ال",
    "zh": None,
}
MLQA_LANGS = tuple(_MLQA_ARTICLES)
_MLQA_MIXED_SEGMENTATION = {"zh"}
_CJK = re.compile(r"[\u4e00-\u9fa5]")  # the range mlqa_evaluation_v1.py uses


def _mlqa_is_punct(ch: str) -> bool:
    """MLQA's PUNCT set: every Unicode category-P character plus ``string.punctuation``."""
    return ch in _SQUAD_PUNCT or unicodedata.category(ch).startswith("P")


def _mixed_segmentation(text: str) -> list[str]:
    """MLQA zh tokenisation: each CJK character (and punctuation mark) is a token, the rest splits on whitespace."""
    out, buf = [], ""
    for ch in text:
        if _CJK.search(ch) or _mlqa_is_punct(ch):
            if buf:
                out.extend(buf.split())
                buf = ""
            out.append(ch)
        else:
            buf += ch
    if buf:
        out.extend(buf.split())
    return out


def normalize_answer(s: str, lang: str | None = None) -> str:
    """Lower-case, drop punctuation and articles, fix whitespace.

    ``lang=None``: SQuAD v1.1 ``evaluate-v1.1.py`` (ASCII ``string.punctuation``, English a/an/the).
    ``lang`` in :data:`MLQA_LANGS`: ``mlqa_evaluation_v1.py`` (all Unicode punctuation, the
    language's articles, and for zh one token per CJK character). Other languages raise
    ValueError, as the MLQA script does.
    """
    s = s.lower()
    if lang is None:
        s = "".join(ch for ch in s if ch not in _SQUAD_PUNCT)
        s = re.sub(r"\b(a|an|the)\b", " ", s)
        return " ".join(s.split())
    if lang not in _MLQA_ARTICLES:
        raise ValueError(f"MLQA normalisation has no language '{lang}'; known: {', '.join(MLQA_LANGS)} "
                         "(use lang=None for the SQuAD v1.1 normalisation)")
    s = "".join(ch for ch in s if not _mlqa_is_punct(ch))
    if _MLQA_ARTICLES[lang]:
        s = re.sub(_MLQA_ARTICLES[lang], " ", s)
    tokens = _mixed_segmentation(s) if lang in _MLQA_MIXED_SEGMENTATION else s.split()
    return " ".join(t for t in tokens if t.strip())


def _em_f1(prediction: str, gold: str, lang: str | None) -> tuple[float, float]:
    """Exact match and bag-of-tokens F1 of one prediction against one gold answer (official definitions)."""
    p, g = normalize_answer(prediction, lang), normalize_answer(gold, lang)
    em = float(p == g)
    pt, gt = p.split(), g.split()
    same = sum((Counter(pt) & Counter(gt)).values())
    if same == 0:
        return em, 0.0
    precision, recall = same / len(pt), same / len(gt)
    return em, 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], answers: dict[str, list[str]], lang: str | None = None) -> dict:
    """SQuAD-style exact match and F1 (max over the gold answers), averaged over the questions in ``answers``.

    ``lang=None`` uses the SQuAD v1.1 normalisation (XTREME uses it for XQuAD and TyDiQA-GoldP, in
    every language); a language code uses MLQA's (XTREME uses it for MLQA). As in the official
    scripts, a question without a prediction scores 0 (with a warning) and predictions for ids
    not in ``answers`` are ignored. Returns ``exact_match``, ``f1`` and ``per_example``
    (id -> (em, f1)).
    """
    if lang is not None and lang not in _MLQA_ARTICLES:
        raise ValueError(f"squad_scores: MLQA normalisation has no language '{lang}'; known: {', '.join(MLQA_LANGS)}")
    if not answers:
        raise ValueError("squad_scores: no questions in `answers`")
    per_example: dict[str, tuple[float, float]] = {}
    missing = 0
    for qid, golds in answers.items():
        if isinstance(golds, str) or not golds:
            raise ValueError(f"squad_scores: question {qid!r} needs a non-empty list of gold answers, got {golds!r}")
        if qid not in predictions:
            missing += 1
            per_example[qid] = (0.0, 0.0)
            continue
        scores = [_em_f1(predictions[qid], g, lang) for g in golds]
        per_example[qid] = (max(s[0] for s in scores), max(s[1] for s in scores))
    if missing:
        warnings.warn(f"squad_scores: {missing} of {len(answers)} questions have no prediction; they score 0",
                      stacklevel=2)
    arr = np.array(list(per_example.values()), dtype=float)
    return {"exact_match": float(arr[:, 0].mean()), "f1": float(arr[:, 1].mean()), "per_example": per_example}


# ---------------------------------------------------------------------------------------- tagging
def _check_paired(gold: Sequence, pred: Sequence, what: str) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{what}: {len(gold)} gold items but {len(pred)} predictions")
    if not len(gold):
        raise ValueError(f"{what}: no items")


def tag_f1(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Chunk-level micro precision/recall/F1 from ``seqeval.metrics`` in default mode, as XTREME scores PAN-X and UD-POS.

    XTREME (``third_party/run_tag.py``, ``evaluate.py``) calls seqeval's ``f1_score``,
    ``precision_score`` and ``recall_score`` on the tag sequences of both tasks; the values
    returned here are those calls' results. seqeval decodes every tag as IOB: the first character
    is the chunk tag and the rest the type, so for UD-POS tags, which have no ``B-``/``I-``
    prefix, "F1" is not token accuracy. With seqeval >= 1.0 (1.2.2 here):

    - a run of identical tags is one chunk (``NOUN NOUN`` is one NOUN chunk, so tagging one of
      them wrong loses the whole run);
    - tags starting with ``S`` (SCONJ, SYM) read as single-token ``S-`` chunks;
    - the type is the tag minus its first character, so CCONJ and SCONJ share the type ``CONJ``
      and confusing them is not penalised;
    - ``X`` has an empty type, so an ``X`` at the start of a sentence can form a chunk that
      begins in the previous sentence.

    Older seqeval (0.0.12, current when XTREME was released) took the whole tag as the type: runs
    still merge, but the last two quirks differ. This is XTREME's definition, kept for
    comparability; PAN-X IOB2 tags decode as usual.

    ``per_sentence`` is an int array (n_sentences, 3) of (correct, predicted, gold) chunk counts;
    each chunk is counted in the sentence where it ends, so the column sums are exactly seqeval's
    corpus counts and :func:`f1_from_counts` on a resample of rows recomputes micro-F1.
    """

    _check_paired(gold, pred, "tag_f1")
    gold, pred = [list(s) for s in gold], [list(s) for s in pred]
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"tag_f1: sentence {i} has {len(g)} gold tags but {len(p)} predicted tags")
    with warnings.catch_warnings():  # "NOUN seems not to be NE tag", undefined-metric warnings
        warnings.simplefilter("ignore")
        scores = {"f1": float(f1_score(gold, pred)), "precision": float(precision_score(gold, pred)),
                  "recall": float(recall_score(gold, pred))}
        # seqeval flattens the sentences with an 'O' after each; map flat positions back to sentences
        starts = np.cumsum([0] + [len(s) + 1 for s in gold[:-1]])
        g_ent, p_ent = set(get_entities(gold)), set(get_entities(pred))
    counts = np.zeros((len(gold), 3), dtype=np.int64)
    for col, ents in ((0, g_ent & p_ent), (1, p_ent), (2, g_ent)):
        ends = np.array([e[2] for e in ents], dtype=np.int64)
        if ends.size:
            np.add.at(counts[:, col], np.searchsorted(starts, ends, side="right") - 1, 1)
    scores["per_sentence"] = counts
    return scores


def f1_from_counts(counts) -> float | np.ndarray:
    """Micro-F1 from (correct, predicted, gold) counts, with seqeval's zero-division rule (0).

    ``counts`` has shape (..., n, 3) (summed over the ``n`` axis, e.g. ``per_sentence[idx]`` with
    ``idx`` of shape (B, n) gives B bootstrap F1s) or (3,) (already summed).
    """
    c = np.asarray(counts, dtype=float)
    if c.shape[-1] != 3:
        raise ValueError(f"f1_from_counts: expected a last axis of 3 (correct, predicted, gold), got shape {c.shape}")
    if c.ndim >= 2:
        c = c.sum(axis=-2)
    tp, n_pred, n_gold = c[..., 0], c[..., 1], c[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n_pred > 0, tp / n_pred, 0.0)
        r = np.where(n_gold > 0, tp / n_gold, 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return float(f) if f.ndim == 0 else f


# -------------------------------------------------------------------------------------- retrieval
def map_at_k(ranked: list[list[int]], relevant: list[set[int]], k: int | None = 20) -> dict:
    """Mean average precision at k (LAReQA's mAP@20 in XTREME-R).

    Per query, AP@k = sum over ranks i <= k of precision@i * rel_i, divided by
    min(|relevant|, k) (``k=None``: no cut-off, divided by |relevant|), as in
    ``average_precision_at_k`` of google-research/xtreme ``third_party/utils_lareqa.py``
    (called with k=20); a candidate repeated in a ranking counts once. Every query needs at
    least one relevant candidate. Returns ``map`` and ``per_query`` (array of AP@k).
    """
    _check_paired(relevant, ranked, "map_at_k")
    if k is not None and k < 1:
        raise ValueError(f"map_at_k: k must be >= 1 or None, got {k}")
    aps = np.zeros(len(ranked))
    for q, (ranking, rel) in enumerate(zip(ranked, relevant)):
        rel = set(rel)
        if not rel:
            raise ValueError(f"map_at_k: query {q} has no relevant candidate (AP is undefined)")
        top = list(ranking)[:k] if k is not None else list(ranking)
        hits, score, seen = 0, 0.0, set()
        for i, cand in enumerate(top, 1):
            if cand in rel and cand not in seen:
                hits += 1
                score += hits / i
            seen.add(cand)
        aps[q] = score / (min(len(rel), k) if k is not None else len(rel))
    return {"map": float(aps.mean()), "per_query": aps}


# --------------------------------------------------------------------------------- classification
def accuracy(pred: Sequence, gold: Sequence) -> dict:
    """Fraction of ``pred[i] == gold[i]`` (XNLI, PAWS-X, XCOPA, Tatoeba); ``per_example`` is a 0/1 float array."""
    _check_paired(gold, pred, "accuracy")
    per = np.array([float(p == g) for p, g in zip(pred, gold)])
    return {"accuracy": float(per.mean()), "per_example": per}
