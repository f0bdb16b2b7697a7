"""Tests for xltlib.evaluation.metrics against hand-computed values (no model, no data)."""
from __future__ import annotations

import numpy as np
import pytest

from xltlib.evaluation.metrics import accuracy, f1_from_counts, map_at_k, normalize_answer, squad_scores, tag_f1


# ------------------------------------------------------------------------------------------------ QA
def test_squad_v11_scores_by_hand():
    answers = {
        "q1": ["Eiffel Tower"],
        "q2": ["Paris"],
        "q3": ["1889", "the year 1889"],
        "q4": ["red"],
        "q5": ["anything"],
    }
    predictions = {"q1": "the Eiffel Tower!", "q2": "Paris, France", "q3": "in 1889", "q4": "blue",
                   "other": "ignored"}
    with pytest.warns(UserWarning, match="1 of 5 questions have no prediction"):
        r = squad_scores(predictions, answers)
    # q1: article and '!' removed -> EM 1, F1 1
    # q2: [paris, france] vs [paris]: P 1/2, R 1 -> F1 2/3
    # q3: vs "1889": P 1/2, R 1 -> 2/3; vs "year 1889" (article dropped): P 1/2, R 1/2 -> 1/2; max 2/3
    # q4: no overlap -> 0; q5: no prediction -> 0
    expected = {"q1": (1, 1), "q2": (0, 2 / 3), "q3": (0, 2 / 3), "q4": (0, 0), "q5": (0, 0)}
    assert list(r["per_example"]) == list(expected)
    for qid, em_f1 in expected.items():
        assert r["per_example"][qid] == pytest.approx(em_f1), qid
    assert r["exact_match"] == pytest.approx(1 / 5)
    assert r["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 5)  # 7/15


def test_squad_v11_normalisation_is_ascii_and_english_only():
    assert normalize_answer("  The  Cat's   hat. ") == "cats hat"
    assert normalize_answer("«Paris»") == "«paris»"  # « » are not in string.punctuation
    r = squad_scores({"a": "«Paris»", "b": "der Vertrag von Versailles"},
                     {"a": ["Paris"], "b": ["Vertrag von Versailles"]})
    # a: one token "«paris»" vs "paris" -> 0/0; b: 3 of 4 tokens shared: P 3/4, R 1 -> F1 6/7
    assert r["per_example"]["a"] == (0.0, 0.0)
    assert r["per_example"]["b"] == pytest.approx((0.0, 6 / 7))


def test_mlqa_normalisation_by_language():
    # Unicode punctuation removed for every MLQA language
    assert squad_scores({"a": "«Paris»"}, {"a": ["Paris"]}, lang="en")["per_example"]["a"] == (1.0, 1.0)
    # de articles
    r = squad_scores({"b": "der Vertrag von Versailles"}, {"b": ["Vertrag von Versailles"]}, lang="de")
    assert r["per_example"]["b"] == (1.0, 1.0)
    assert normalize_answer("Einem Mann, einer Frau", "de") == "mann frau"
    # es articles, vi function words, ar: every "ال" substring is removed (copied as is from MLQA)
    assert normalize_answer("El rey y la reina", "es") == "rey y reina"
    assert normalize_answer("chiếc xe của tôi", "vi") == "xe tôi"
    assert normalize_answer("الكتاب", "ar") == normalize_answer("كتاب", "ar") == "كتاب"
    # hi has no articles: English "the" is kept
    assert normalize_answer("the book", "hi") == "the book"
    with pytest.raises(ValueError, match="no language 'th'"):
        squad_scores({"a": "x"}, {"a": ["x"]}, lang="th")


def test_mlqa_zh_mixed_segmentation():
    assert normalize_answer("2008年 奥运会。", "zh") == "2008 年 奥 运 会"
    r = squad_scores({"a": "北京大学", "b": "2008年奥运会"}, {"a": ["北京"], "b": ["2008年"]}, lang="zh")
    # a: [北 京 大 学] vs [北 京]: P 2/4, R 1 -> F1 2/3
    # b: [2008 年 奥 运 会] vs [2008 年]: P 2/5, R 1 -> F1 2*(2/5)/(7/5) = 4/7
    assert r["per_example"]["a"] == pytest.approx((0, 2 / 3))
    assert r["per_example"]["b"] == pytest.approx((0, 4 / 7))
    assert r["f1"] == pytest.approx((2 / 3 + 4 / 7) / 2)
    # without lang (SQuAD v1.1, as XTREME scores XQuAD zh) the whole string is one token
    assert squad_scores({"a": "北京大学"}, {"a": ["北京"]})["f1"] == 0.0


def test_squad_scores_rejects_bad_gold():
    with pytest.raises(ValueError, match="non-empty list"):
        squad_scores({"a": "x"}, {"a": []})
    with pytest.raises(ValueError, match="non-empty list"):
        squad_scores({"a": "x"}, {"a": "x"})
    with pytest.raises(ValueError, match="no questions"):
        squad_scores({}, {})


# ------------------------------------------------------------------------------------------- tagging
def test_tag_f1_iob_spans_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O"], ["O", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O"], ["B-LOC", "O"]]
    # gold chunks: PER(0-1), LOC(3) | ORG(0-1) | -                 -> 3
    # pred chunks: PER(0-1) ok, ORG(3) wrong type | ORG(0-0) wrong boundary | LOC(0) spurious -> 4
    # correct 1: P = 1/4, R = 1/3, F1 = 2 (1/12) / (7/12) = 2/7
    r = tag_f1(gold, pred)
    assert r["precision"] == pytest.approx(1 / 4)
    assert r["recall"] == pytest.approx(1 / 3)
    assert r["f1"] == pytest.approx(2 / 7)
    assert r["per_sentence"].tolist() == [[1, 2, 2], [0, 1, 1], [0, 1, 0]]
    assert f1_from_counts(r["per_sentence"]) == pytest.approx(2 / 7)


def test_tag_f1_default_mode_is_lenient_like_conlleval():
    # seqeval default mode (XTREME): an I- without a B- still opens a chunk
    assert tag_f1([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]])["f1"] == 1.0


def test_tag_f1_pos_merging_quirk():
    # UPOS tags decode as IOB: a run of identical tags is ONE chunk.
    gold = [["DET", "NOUN", "NOUN", "VERB"]]
    pred = [["DET", "NOUN", "VERB", "VERB"]]
    # gold chunks: DET(0), NOUN(1-2), VERB(3); pred: DET(0), NOUN(1), VERB(2-3) -> 1 of 3 correct
    # so F1 = 1/3 although 3 of 4 tokens are tagged right.
    r = tag_f1(gold, pred)
    assert (r["precision"], r["recall"], r["f1"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert accuracy(sum(pred, []), sum(gold, []))["accuracy"] == 0.75
    # identical runs: one chunk each side
    assert tag_f1([["NOUN", "NOUN"]], [["NOUN", "NOUN"]])["per_sentence"].tolist() == [[1, 1, 1]]
    # SCONJ reads as an S- (single) tag: two SCONJs are two chunks
    assert tag_f1([["SCONJ", "SCONJ"]], [["SCONJ", "SCONJ"]])["per_sentence"].tolist() == [[2, 2, 2]]
    # seqeval >= 1.0 types a tag by all but its first letter: CCONJ and SCONJ are both "CONJ"
    assert tag_f1([["NOUN", "SCONJ", "NOUN"]], [["NOUN", "CCONJ", "NOUN"]])["f1"] == 1.0


def test_tag_f1_counts_sum_to_seqeval_on_random_sequences():
    rng = np.random.default_rng(0)
    for tags in (["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], ["NOUN", "VERB", "X", "SCONJ", "CCONJ", "PUNCT"]):
        for _ in range(50):
            gold = [list(rng.choice(tags, size=rng.integers(0, 6))) for _ in range(rng.integers(1, 6))]
            pred = [[t if rng.random() < 0.6 else str(rng.choice(tags)) for t in s] for s in gold]
            r = tag_f1(gold, pred)
            assert f1_from_counts(r["per_sentence"]) == pytest.approx(r["f1"], abs=1e-12)


def test_f1_from_counts_shapes_for_bootstrap():
    counts = np.array([[1, 2, 2], [0, 1, 1], [0, 1, 0]])
    assert f1_from_counts(counts.sum(0)) == pytest.approx(2 / 7)
    idx = np.array([[0, 0, 0], [1, 2, 2]])  # two resamples of the 3 sentences
    # resample 1: (3, 6, 6) -> 1/2; resample 2: (0, 3, 1) -> 0
    assert f1_from_counts(counts[idx]) == pytest.approx([0.5, 0.0])
    assert f1_from_counts([0, 0, 0]) == 0.0
    with pytest.raises(ValueError):
        f1_from_counts([1, 2])


def test_tag_f1_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="sentence 0"):
        tag_f1([["O", "O"]], [["O"]])
    with pytest.raises(ValueError):
        tag_f1([["O"]], [])


# ----------------------------------------------------------------------------------------- retrieval
def test_map_at_k_by_hand():
    ranked = [[3, 1, 7, 2], [5, 6], [9, 8, 4]]
    relevant = [{1, 2}, {5}, {4, 10, 11}]
    # q1: hits at ranks 2 and 4: (1/2 + 2/4) / min(2, 20) = 1/2
    # q2: hit at rank 1: 1/1 / 1 = 1
    # q3: hit at rank 3: (1/3) / min(3, 20) = 1/9
    r = map_at_k(ranked, relevant)
    assert r["per_query"] == pytest.approx([0.5, 1.0, 1 / 9])
    assert r["map"] == pytest.approx((0.5 + 1 + 1 / 9) / 3)  # 29/54


def test_map_at_k_cutoff_and_duplicates():
    # k=2: hit at rank 2 only: (1/2) / min(3, 2) = 1/4 (the hit at rank 3 is cut)
    assert map_at_k([[0, 1, 2]], [{1, 2, 3}], k=2)["map"] == pytest.approx(1 / 4)
    # no cut-off: (1/2 + 2/3) / 3
    assert map_at_k([[0, 1, 2]], [{1, 2, 3}], k=None)["map"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    # a repeated candidate counts once: (1/1 + 2/3) / 2 = 5/6
    assert map_at_k([[1, 1, 2]], [{1, 2}])["map"] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="no relevant"):
        map_at_k([[1]], [set()])


# ------------------------------------------------------------------------------------ classification
def test_accuracy():
    r = accuracy([0, 1, 1, 0], [0, 1, 0, 0])
    assert r["accuracy"] == 0.75 and r["per_example"].tolist() == [1.0, 1.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_tag_f1_bootstrap_ci_brackets_the_estimate():
    """The tagging kind's CI: resampled sentences -> one micro-F1 per resample (a regression: summing the
    sentence axis before f1_from_counts summed the resamples too and gave a zero-width interval)."""
    from xltlib.evaluation.predict import bootstrap_ci

    rng = np.random.default_rng(0)
    gold = rng.integers(1, 6, size=300)
    pred = gold + rng.integers(-1, 2, size=300)
    counts = np.stack([np.minimum(gold, pred) * (rng.random(300) < 0.8), pred, gold], axis=1)
    lo, hi = bootstrap_ci(counts, stat=f1_from_counts)
    point = f1_from_counts(counts)
    assert lo < point < hi and hi - lo > 0.02
