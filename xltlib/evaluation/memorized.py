"""The bar an entity tagger must clear to count as having learned its task: the memorized-entity baseline.

Span F1 has no majority rate (a tagger that predicts ``O`` everywhere scores 0, so "above 0" says nothing). The
reference of the CoNLL-2003 shared task (Tjong Kim Sang & De Meulder 2003, the baseline row of its results tables)
is the bar used here: a tagger that only knows the entity phrases of the training data whose type is unique there,
and tags each of them wherever it reappears, the longest phrase first. A fine-tuned encoder that does not beat a
lookup table of its own training entities has not learned to recognise entities in context. Like the majority rate
of the classification tasks it is a low bar that catches a run which did not learn, not one that learned a little:
on the study's PAN-X split (5,000 English training sentences, 1,000 held-out selection sentences) it scores 13.3% F1
(precision 32%, recall 8%).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from seqeval.metrics.sequence_labeling import get_entities

from xltlib.evaluation.metrics import tag_f1


def is_entity_tagging(task) -> bool:
    """A token-classification task whose tags are IOB entity chunks (PAN-X; not UD-POS): it gets this bar."""
    return task.kind == "token_classification" and any(str(t).startswith("B-") for t in task.labels)


@dataclass(frozen=True)
class MemorizedEntities:
    """Entity phrases (tuples of words) of the training data with one type there, by phrase -> type."""

    phrases: dict[tuple[str, ...], str]
    longest: int

    @classmethod
    def learn(cls, records: list[dict]) -> "MemorizedEntities":
        """From training records ``{"tokens": [...], "tags": [...]}`` (IOB tags): every entity phrase whose type
        never differs between its occurrences (a phrase seen as both PER and ORG is left out, as in the reference)."""
        types: dict[tuple[str, ...], set[str]] = defaultdict(set)
        for r in records:
            for kind, start, end in get_entities(list(r["tags"])):
                types[tuple(r["tokens"][start:end + 1])].add(kind)
        phrases = {p: next(iter(k)) for p, k in types.items() if len(k) == 1}
        return cls(phrases, max(map(len, phrases), default=0))

    def tag(self, tokens: list[str]) -> list[str]:
        """IOB tags of one sentence: left to right, the longest known phrase starting at each word."""
        out, i = ["O"] * len(tokens), 0
        while i < len(tokens):
            for n in range(min(self.longest, len(tokens) - i), 0, -1):
                kind = self.phrases.get(tuple(tokens[i:i + n]))
                if kind is not None:
                    out[i:i + n] = [f"B-{kind}"] + [f"I-{kind}"] * (n - 1)
                    i += n
                    break
            else:
                i += 1
        return out


def memorized_entity_counts(train: list[dict], scored: list[dict]) -> np.ndarray:
    """Per scored sentence, the (correct, predicted, gold) chunk counts of the memorized-entity tagger learned
    from ``train`` (:func:`xltlib.evaluation.metrics.f1_from_counts` gives its micro-F1)."""
    if not scored:
        return np.zeros((0, 3), dtype=np.int64)
    tagger = MemorizedEntities.learn(train)
    return tag_f1([list(r["tags"]) for r in scored], [tagger.tag(list(r["tokens"])) for r in scored])["per_sentence"]
