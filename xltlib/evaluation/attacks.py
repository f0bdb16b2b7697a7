"""An adversarial synonym attack on a sentence-pair classifier: greedy word swaps over a synonym table, under a
query budget (the TextFooler / Alzantot family, composed as TextAttack composes a recipe).

The recipe, in TextAttack's terms (``textattack/attack_recipes/textfooler_jin_2019.py``; Jin et al., 2020, AAAI):

* transformation: swap one word for one of its neighbours in the table (RS-DA's counter-fitted neighbours,
  :mod:`xltlib.training.objectives.synonyms`). A word is looked up lowercased, then stripped of edge
  punctuation; the substitute takes its capitalisation and punctuation (TextAttack's ``WordSwapEmbedding`` also
  looks words up lowercased and restores their case). Words are the space-separated tokens RS-DA substitutes.
* constraints: ``RepeatModification`` (a word is swapped at most once); ``StopwordModification`` (scikit-learn's
  English stop words); ``InputColumnModification`` (``sentences="second"``: only the second sentence, the
  hypothesis, as TextAttack's recipes do for premise / hypothesis inputs); ``MaxWordsPerturbed`` (at most
  ``max_change`` of the attacked words, and at least one word whatever the length). TextFooler's sentence-encoder
  similarity and part-of-speech checks need models that are not available offline: the table is the only
  semantic constraint.
* goal: ``UntargetedClassification``: the score of a text is 1 - p(gold); a text the model labels otherwise is a
  success. A row the model gets wrong unattacked is skipped.
* search: ``GreedyWordSwapWIR(wir_method="delete")``: every attackable word is ranked by the score of the text
  with that word deleted, then in that order each word is replaced by its best-scoring neighbour if that raises the
  score; the search stops at the first success, when every ranked word was tried, or at the query budget.
* queries: every distinct text the model scores for a row counts one, the unattacked text included (TextAttack's
  ``GoalFunction.get_results`` counts every text it is handed, so a repeat, e.g. the deletion of one of two equal
  adjacent words, would count twice there). When the next evaluations would pass ``query_budget`` only those that
  fit are made and the search ends there, as in ``get_results``.

TextAttack itself is not used because it does not install or import here (checked with 0.3.11, the newest on PyPI,
against this package's pinned torch / transformers / datasets): its resolved dependency flair 0.11.3 pins
sentencepiece==0.1.95, which has no wheel for Python 3.11 and whose source build clones github.com (unreachable);
installed without it, ``import textattack`` fails offline because ``StopwordModification`` loads NLTK's stopwords
corpus at import time (``LookupError: Resource stopwords not found``, an ``nltk.download``). It would also pull 44
packages and downgrade ``overrides`` (7.7.0 -> 3.1.0, needed by jupyter_server).

The search of each row is a generator that yields the texts it needs scored; :func:`attack_pairs` runs the
searches of many rows side by side and scores their texts in shared batches, so the model sees full batches.
"""
from __future__ import annotations

import math
import string
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

__all__ = ["STATUSES", "AttackResult", "SynonymAttack", "attack_pairs", "summarize_attack"]

Pair = tuple[str, str]
Scorer = Callable[[list[Pair]], np.ndarray]  # pairs -> class probabilities [n, C]
STATUSES = ("successful", "failed", "skipped")  # TextAttack's result types
SENTENCES = ("second", "both")
# stripped from both ends of a word before the table lookup and put back around the substitute (as RS-DA's lookup)
_EDGE = string.punctuation + "“”‘’«»„…–—¡¿"


def _is_word(token: str) -> bool:
    return any(ch.isalnum() for ch in token)


def _recase(word: str, like: str) -> str:
    """``word`` with the capitalisation pattern of ``like`` (UPPER, Title, or as is)."""
    if len(like) > 1 and like.isupper():
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


@dataclass(frozen=True)
class _Site:
    sentence: int  # 0: first sentence, 1: second
    position: int  # token index in the sentence
    substitutes: tuple[str, ...]  # the token with each neighbour swapped in (recased, punctuation kept)


@dataclass
class AttackResult:
    """One row's outcome (TextAttack's ``AttackResult``)."""

    status: str  # one of STATUSES
    text_a: str  # the final texts: perturbed after a success, the last accepted swaps after a failure
    text_b: str
    prediction: int  # the model's label of the final texts
    queries: int  # distinct texts scored for the row, the original included
    words: int  # words in the attacked sentence(s)
    words_total: int  # words in both sentences (TextAttack's denominator of the perturbed-word share)
    words_changed: int
    score: float  # 1 - p(gold) of the final texts

    @property
    def correct(self) -> bool:
        """Correct under attack: the attack failed on a row the model got right."""
        return self.status == "failed"


@dataclass(frozen=True)
class SynonymAttack:
    """The recipe of the module docstring. ``table``: lowercased word -> neighbours (``load_synonym_table(path,
    "normalized")``); ``query_budget``: queries per row; ``max_change``: the share of attacked words that may be
    swapped (at least one); ``sentences``: ``second`` or ``both``; ``stopwords``: words never swapped."""

    table: Mapping[str, Sequence[str]]
    query_budget: int = 300
    max_change: float = 0.2
    sentences: str = "second"
    stopwords: frozenset[str] = ENGLISH_STOP_WORDS

    def __post_init__(self):
        if self.query_budget < 1:
            raise ValueError(f"synonym attack query_budget = {self.query_budget}: expected an integer >= 1")
        if not 0 < self.max_change <= 1:
            raise ValueError(f"synonym attack max_change = {self.max_change}: expected a share in (0, 1]")
        if self.sentences not in SENTENCES:
            raise ValueError(f"synonym attack sentences = {self.sentences!r}: expected one of {', '.join(SENTENCES)}")

    def _substitutes(self, token: str) -> tuple[str, ...]:
        core = token.strip(_EDGE)
        if not core or core.lower() in self.stopwords:
            return ()
        options = self.table.get(token.lower())
        if options is not None:
            return tuple(_recase(o, token) for o in options)
        options = self.table.get(core.lower()) if core != token else None
        if options is None:
            return ()
        start = token.find(core)
        return tuple(token[:start] + _recase(o, core) + token[start + len(core):] for o in options)

    def sites(self, tokens: list[list[str]]) -> list[_Site]:
        """The swappable words of the attacked sentence(s), in reading order."""
        out = []
        for s in ((1,) if self.sentences == "second" else (0, 1)):
            for j, tok in enumerate(tokens[s]):
                subs = tuple(x for x in dict.fromkeys(self._substitutes(tok)) if x != tok)
                if subs:
                    out.append(_Site(s, j, subs))
        return out

    def search(self, text_a: str, text_b: str, gold: int) -> Generator[list[Pair], np.ndarray, AttackResult]:
        """The greedy search on one row: yields the pairs it needs scored, receives their probabilities [n, C]."""
        tokens = [text_a.split(" "), text_b.split(" ")]
        attacked = [1] if self.sentences == "second" else [0, 1]
        words = sum(_is_word(t) for s in attacked for t in tokens[s])
        words_total = sum(_is_word(t) for s in (0, 1) for t in tokens[s])
        scored: dict[Pair, np.ndarray] = {}

        def join(toks):
            return " ".join(toks[0]), " ".join(toks[1])

        def result(status, toks, changed):
            probs = scored[join(toks)]
            return AttackResult(status, *join(toks), int(np.argmax(probs)), len(scored), words, words_total,
                                changed, float(1 - probs[gold]))

        def ask(pairs):  # -> (the pairs scored, whether the budget stopped the search)
            new = list(dict.fromkeys(p for p in pairs if p not in scored))
            room = self.query_budget - len(scored)
            over = len(new) > room
            new = new[:room]
            if new:
                for p, probs in zip(new, (yield new)):
                    scored[p] = np.asarray(probs, dtype=float)
            return [p for p in pairs if p in scored], over

        (start,), _ = yield from ask([(text_a, text_b)])
        if int(np.argmax(scored[start])) != gold:
            return result("skipped", tokens, 0)
        sites = self.sites(tokens)

        def with_token(toks, site, new):
            out = [list(toks[0]), list(toks[1])]
            out[site.sentence][site.position] = new
            return out

        # word importance: the score with the word deleted (higher = the model leans on it more)
        deleted = [with_token(tokens, s, None) for s in sites]
        deleted = [join([[t for t in toks if t is not None] for toks in d]) for d in deleted]
        done, over = yield from ask(deleted)
        if over:
            return result("failed", tokens, 0)
        importance = np.array([1 - scored[d][gold] for d in deleted])
        order = np.argsort(-importance, kind="stable")
        cap = max(1, math.floor(self.max_change * words))
        current, changed, best = tokens, 0, 1 - scored[start][gold]
        for k in order:
            if changed >= cap:
                break
            site = sites[k]
            options = [join(with_token(current, site, sub)) for sub in site.substitutes]
            done, over = yield from ask(options)
            if done:
                scores = np.array([1 - scored[p][gold] for p in done])
                wins = [i for i, p in enumerate(done) if int(np.argmax(scored[p])) != gold]
                pick = max(wins, key=lambda i: scores[i]) if wins else int(np.argmax(scores))
                if wins or scores[pick] > best:
                    current = [done[pick][0].split(" "), done[pick][1].split(" ")]
                    changed, best = changed + 1, scores[pick]
                if wins:
                    return result("successful", current, changed)
            if over:
                break
        return result("failed", current, changed)


def attack_pairs(attack: SynonymAttack, records: Sequence[Mapping], scorer: Scorer, *,
                 chunk: int = 512) -> list[AttackResult]:
    """Run ``attack.search`` on every record (``text_a``, ``text_b``, ``label``), the searches side by side:
    ``scorer`` gets the pending texts of many rows at once, about ``chunk`` pairs per call (whole requests)."""
    searches = [attack.search(r["text_a"], r["text_b"], int(r["label"])) for r in records]
    results: list[AttackResult | None] = [None] * len(records)
    pending: dict[int, list[Pair]] = {}

    def advance(i, probs=None):
        try:
            pending[i] = searches[i].send(probs) if probs is not None else next(searches[i])
        except StopIteration as stop:
            pending.pop(i, None)
            results[i] = stop.value

    for i in range(len(records)):
        advance(i)
    while pending:
        take, size = [], 0
        for i, pairs in pending.items():
            if take and size + len(pairs) > chunk:
                break
            take.append(i)
            size += len(pairs)
        probs = scorer([p for i in take for p in pending[i]])
        if len(probs) != size:
            raise ValueError(f"synonym attack: the scorer returned {len(probs)} rows for {size} pairs")
        offset = 0
        for i in take:
            n = len(pending[i])
            advance(i, probs[offset:offset + n])
            offset += n
    return results


def summarize_attack(results: Sequence[AttackResult]) -> dict[str, float]:
    """The summary TextAttack logs (``textattack.metrics.AttackSuccessRate``, ``WordsPerturbed``,
    ``AttackQueries``): ``original_accuracy``, ``accuracy_under_attack`` (failed / all rows),
    ``attack_success_rate`` (successful / (successful + failed)), ``perturbed_word_share`` (mean over successful
    attacks of words changed / words of the input, both sentences), ``avg_words_per_input``, ``avg_queries`` (over
    rows not skipped), and the three counts."""
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    n = len(results)
    attacked = [r for r in results if r.status != "skipped"]
    won = [r for r in results if r.status == "successful"]
    nan = float("nan")
    return dict(
        successful=counts["successful"], failed=counts["failed"], skipped=counts["skipped"],
        original_accuracy=(n - counts["skipped"]) / n if n else nan,
        accuracy_under_attack=counts["failed"] / n if n else nan,
        attack_success_rate=len(won) / len(attacked) if attacked else nan,
        perturbed_word_share=float(np.mean([r.words_changed / max(r.words_total, 1) for r in won])) if won else nan,
        avg_words_per_input=float(np.mean([r.words_total for r in results])) if n else nan,
        avg_queries=float(np.mean([r.queries for r in attacked])) if attacked else nan)
