"""xltlib.evaluation.attacks: the greedy synonym-swap search on scorers whose answers are known."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from xltlib.evaluation.attacks import SynonymAttack, attack_pairs, summarize_attack

TABLE = {"good": ("fine", "great"), "movie": ("film",), "bad": ("poor",), "big": ("large", "huge"),
         "house": ("home",), "the": ("teh",)}


def keyword_scorer(weights: dict[str, float], base: float = 0.9, log: list | None = None):
    """p(label 1) = base minus the weights of the words in the second sentence (binary task)."""
    def score(pairs):
        if log is not None:
            log.extend(pairs)
        p = np.array([base - sum(w for word, w in weights.items() if word in b.lower().split()) for _, b in pairs])
        p = np.clip(p, 0.0, 1.0)
        return np.stack([1 - p, p], axis=1)
    return score


def test_a_swap_that_flips_the_label_is_found_with_queries_counted():
    log = []
    res, = attack_pairs(SynonymAttack(TABLE), [dict(text_a="x", text_b="A good movie .", label=1)],
                        keyword_scorer({"great": 0.5, "film": 0.1}, log=log))
    # queries: the original, 2 deletions ('A' is a stop word), 'good' -> fine / great: success at 'great'
    assert res.status == "successful" and res.text_b == "A great movie ." and res.text_a == "x"
    assert res.queries == 5 == len(set(log)) and res.prediction == 0
    assert (res.words, res.words_total, res.words_changed) == (3, 4, 1)


def test_words_are_ranked_by_deletion_and_the_best_swap_is_kept():
    log = []
    # deleting 'movie' hurts most (weight of a missing word: the scorer rewards 'movie'), so it is tried first
    def score(pairs):
        log.extend(pairs)
        p = np.array([0.6 + 0.3 * ("movie" in b.split()) - 0.2 * ("huge" in b.split()) - 0.1 * ("large" in b.split())
                      for _, b in pairs])
        return np.stack([1 - p, p], axis=1)

    res, = attack_pairs(SynonymAttack(TABLE, max_change=1.0), [dict(text_a="x", text_b="big movie", label=1)], score)
    swaps = log[3:]  # after the original and the two deletions
    assert swaps[0] == ("x", "big film")  # 'movie' first: its deletion raised 1 - p(gold) most
    assert res.status == "successful" and res.text_b == "huge film"  # then 'big': huge beats large
    assert res.words_changed == 2


def test_skipped_when_wrong_before_the_attack_and_failed_without_sites():
    rows = [dict(text_a="x", text_b="good movie", label=0), dict(text_a="x", text_b="no sites here", label=1)]
    skipped, failed = attack_pairs(SynonymAttack(TABLE), rows, keyword_scorer({}))
    assert skipped.status == "skipped" and skipped.queries == 1 and not skipped.correct
    assert failed.status == "failed" and failed.queries == 1 and failed.correct
    assert failed.text_b == "no sites here"


def test_the_query_budget_stops_the_search():
    text = "good movie big house bad"
    for budget in (1, 3, 6, 9):
        res, = attack_pairs(SynonymAttack(TABLE, query_budget=budget, max_change=1.0),
                            [dict(text_a="x", text_b=text, label=1)], keyword_scorer({}))
        assert res.status == "failed" and res.queries <= budget
    res, = attack_pairs(SynonymAttack(TABLE, query_budget=1000, max_change=1.0),
                        [dict(text_a="x", text_b=text, label=1)], keyword_scorer({}))
    assert res.queries == 1 + 5 + 7  # original, 5 deletions, every neighbour once; nothing raised the score


def test_at_most_max_change_words_and_at_least_one():
    weights = {"fine": 0.05, "film": 0.05, "huge": 0.05, "home": 0.05, "poor": 0.05}
    rows = [dict(text_a="x", text_b="good movie big house bad", label=1)]
    for share, cap in ((0.2, 1), (0.4, 2), (1.0, 5), (0.01, 1)):
        res, = attack_pairs(SynonymAttack(TABLE, max_change=share), rows, keyword_scorer(weights, base=0.95))
        assert res.words_changed == cap and res.status == "failed"  # each swap helps, none flips the label


def test_only_the_second_sentence_unless_both_and_stop_words_are_kept():
    rows = [dict(text_a="good movie", text_b="the big house", label=1)]
    second, = attack_pairs(SynonymAttack(TABLE, max_change=1.0), rows, keyword_scorer({"home": 0.2, "huge": 0.2}))
    assert second.text_a == "good movie" and second.text_b == "the huge home" and second.words == 3
    both, = attack_pairs(SynonymAttack(TABLE, max_change=1.0, sentences="both"), rows,
                         keyword_scorer({"home": 0.2, "huge": 0.2}))
    assert both.words == 5 and both.words_total == 5 and both.status == "successful"
    assert both.text_a == "good movie"  # swaps of the first sentence do not raise the score: none is kept
    assert "the" in both.text_b.split()  # 'the' has a neighbour in the table but is a stop word


def test_case_and_punctuation_survive_a_swap():
    att = SynonymAttack(TABLE)
    tokens = [["x"], ["Good,", "MOVIE", "(big)"]]
    assert [s.substitutes for s in att.sites(tokens)] == [("Fine,", "Great,"), ("FILM",), ("(large)", "(huge)")]


def test_many_rows_in_shared_batches_give_the_same_results_as_one_by_one():
    rng = np.random.default_rng(0)
    vocab = list(TABLE) + ["film", "great", "huge", "home", "poor", "fine", "x", "y"]
    rows = [dict(text_a=" ".join(rng.choice(vocab, 3)), text_b=" ".join(rng.choice(vocab, 6)), label=int(k % 2))
            for k in range(30)]
    weights = {"great": 0.3, "huge": 0.2, "film": 0.15, "poor": 0.25}

    def scorer(pairs):  # label 1 falls with the weights, label 0 rises: both labels can be attacked
        p = keyword_scorer(weights, base=0.75)(pairs)
        return p
    att = SynonymAttack(TABLE, query_budget=25, max_change=0.5)
    calls = []

    def counting(pairs):
        calls.append(len(pairs))
        return scorer(pairs)
    together = attack_pairs(att, rows, counting, chunk=64)
    alone = [attack_pairs(att, [r], scorer, chunk=1)[0] for r in rows]
    assert together == alone
    assert len(calls) < sum(r.queries for r in alone) / 4  # batched: few calls, many texts each
    assert {r.status for r in together} == {"successful", "failed", "skipped"}


def test_the_summary_is_textattacks():
    rng = np.random.default_rng(3)
    rows = [dict(text_a="x", text_b=" ".join(rng.choice(["good", "movie", "big", "house", "y"], 5)),
                 label=int(rng.integers(2))) for _ in range(40)]
    res = attack_pairs(SynonymAttack(TABLE, max_change=1.0), rows, keyword_scorer({"great": 0.3, "huge": 0.3}, 0.6))
    s = summarize_attack(res)
    ok = [r for r in res if r.status == "successful"]
    bad = [r for r in res if r.status == "failed"]
    assert s["successful"] + s["failed"] + s["skipped"] == 40 and ok and bad and s["skipped"]
    assert s["accuracy_under_attack"] == pytest.approx(len(bad) / 40)
    assert s["original_accuracy"] == pytest.approx((len(ok) + len(bad)) / 40)
    assert s["attack_success_rate"] == pytest.approx(len(ok) / (len(ok) + len(bad)))
    assert s["perturbed_word_share"] == pytest.approx(np.mean([r.words_changed / r.words_total for r in ok]))
    assert s["avg_queries"] == pytest.approx(np.mean([r.queries for r in ok + bad]))
    # accuracy under attack never exceeds clean accuracy, and a success really changes the label
    assert s["accuracy_under_attack"] <= s["original_accuracy"]
    assert all(r.prediction != rows[i]["label"] for i, r in enumerate(res) if r.status == "successful")


def test_greedy_finds_every_single_swap_success():
    """With no cap and no budget the greedy search tries every neighbour of every word, so where one swap flips the
    label (checked by brute force) it succeeds."""
    vocab = ["good", "movie", "big", "house", "bad", "z"]
    weights = {"great": 0.35, "huge": 0.35, "poor": 0.2, "film": 0.2}
    att = SynonymAttack(TABLE, query_budget=10_000, max_change=1.0)
    scorer = keyword_scorer(weights, base=0.8)
    for words in itertools.product(vocab, repeat=3):
        text = " ".join(words)
        single = [" ".join(words[:i] + (n,) + words[i + 1:]) for i, w in enumerate(words) for n in TABLE.get(w, ())]
        flips = bool(single) and (scorer([("x", t) for t in single])[:, 1] < 0.5).any()
        res, = attack_pairs(att, [dict(text_a="x", text_b=text, label=1)], scorer)
        if flips:
            assert res.status == "successful", text


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="query_budget = 0"):
        SynonymAttack(TABLE, query_budget=0)
    with pytest.raises(ValueError, match="max_change = 1.5"):
        SynonymAttack(TABLE, max_change=1.5)
    with pytest.raises(ValueError, match="sentences = 'first': expected one of second, both"):
        SynonymAttack(TABLE, sentences="first")
    with pytest.raises(ValueError, match="returned 1 rows for 2 pairs"):
        attack_pairs(SynonymAttack(TABLE), [dict(text_a="x", text_b="a", label=0)] * 2,
                     lambda pairs: np.array([[0.5, 0.5]]), chunk=10)
