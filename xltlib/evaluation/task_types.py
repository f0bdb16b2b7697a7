"""Task kinds: how a task's records become model inputs, which head they train, how they are scored.

One registry entry per kind (``KINDS``); a task names its kind (:class:`xltlib.data.tasks.Task.kind`), so the
training loop, the robust objectives and the transfer stage treat every task alike:

* ``train_features`` -> one feature per training example (``input_ids`` plus ``labels``), rebuilt each
  epoch when the objective rewrites text (RS-DA; see :func:`xltlib.training.loop.rewrites_text`);
* ``collate`` -> a padded batch with ``input_ids``, ``attention_mask`` and ``labels`` (what every
  objective passes to the model);
* ``predict`` -> per (language, language2) a table of the model's predictions, one row per scored item in
  order: ``id`` (the record's, as text), ``gold``, ``prediction`` and what each kind scores from them (its
  class docstring says which); the transfer stage keeps them (:mod:`xltlib.evaluation.predictions`);
* ``score`` -> from those tables alone (no model), tidy rows ``{language, language2, metric, value, n, ci_low,
  ci_high}`` per language, including ``metric="score"``: the XTREME-R task score (accuracy; tag F1; mean of QA
  F1 and EM; mAP@20), with a percentile bootstrap CI over the language's examples (sentences, questions, queries);
* ``evaluate`` = ``score(predict(...))``.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import torch

from xltlib.core.registry import Registry
from xltlib.data import tasks as T
from xltlib.evaluation import metrics as M
from xltlib.evaluation.alignment import encode_layers
from xltlib.evaluation.predict import Predictions, accuracy_rows, bootstrap_ci, logits_batches, predict_languages
from xltlib.evaluation.qa import postprocess, prepare_eval_features, prepare_train_features, qa_substitute
from xltlib.evaluation.tagging import encode_words, sentence_predictions, substitute_words
from xltlib.models.heads import load_classifier, load_head
from xltlib.training.batching import collate, tokenize_pairs
from xltlib.training.checkpoints import read_checkpoint_meta, restore_checkpoint
from xltlib.training.loop import train_model


def _row(lang: str, metric: str, value: float, n: int, ci: tuple[float, float], language2: str = "") -> dict:
    return dict(language=lang, language2=language2, metric=metric, value=float(value), n=int(n),
                ci_low=ci[0], ci_high=ci[1])


class Kind:
    """Interface of a task kind; subclasses are registered in ``KINDS`` by name."""

    name = ""

    def num_labels(self, task: T.Task) -> int:
        return len(task.labels)

    def load_model(self, model_name: str, task: T.Task | None, num_labels: int, pooling: str):

        return load_head(self.name, model_name, num_labels)

    def train_features(self, task, records, tokenizer, max_length, objective, rng) -> list[dict]:
        raise NotImplementedError

    def length(self, feature: dict) -> int:
        return len(feature["input_ids"])

    def collate(self, features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
        """One padded sequence per feature; ``labels`` when the features carry them."""
        labels = [f["labels"] for f in features] if "labels" in features[0] else None
        return collate([f["input_ids"] for f in features], pad_id, labels)

    def predict(self, model, tokenizer, task, by_lang: dict[str, list[dict]], *, objective=None,
                batch_size: int = 128, max_length: int = 128, bf16: bool = True) -> Predictions:
        """The model's predictions on each language's records: (language, language2) -> one row per item."""
        raise NotImplementedError

    def score(self, task: T.Task, predictions: Predictions) -> list[dict]:
        """Tidy rows of :meth:`predict`'s tables; needs no model."""
        raise NotImplementedError

    def evaluate(self, model, tokenizer, task, by_lang: dict[str, list[dict]], **predict_kw) -> list[dict]:
        """Rows of the model on each language's records (``predict_kw``: those of :meth:`predict`)."""
        return self.score(task, self.predict(model, tokenizer, task, by_lang, **predict_kw))


KINDS: Registry[Kind] = Registry("task kind")


def register_kind(cls):
    KINDS.add(cls.name, cls())
    return cls


def get_kind(name: str) -> Kind:
    return KINDS.get(name)


def load_checkpoint(path, device="auto"):
    """(model in eval mode on ``device``, tokenizer, metadata) of a saved checkpoint, rebuilt by the task type
    that trained it."""
    return restore_checkpoint(path, get_kind(read_checkpoint_meta(path).get("kind", "pair_classification")), device)


def train_classifier(model_name: str, records: list[dict], *, num_labels: int, **kw):
    """Fine-tune a sentence-pair classifier on ``records`` (``text_a``, ``text_b``, ``label``)."""
    return train_model(model_name, records, task_type=get_kind("pair_classification"), task=None,
                       num_labels=num_labels, **kw)


# -------------------------------------------------------------------------------- sentence pairs
@register_kind
class PairClassification(Kind):
    """XNLI, PAWS-X: (text_a, text_b) -> label, accuracy. Predictions: ``gold``, ``prediction`` (label indices),
    ``scores`` (per class: logits, or RS-RP's vote counts)."""

    name = "pair_classification"

    def load_model(self, model_name, task, num_labels, pooling):

        return load_classifier(model_name, num_labels, pooling)

    def train_features(self, task, records, tokenizer, max_length, objective, rng):
        a = objective.transform_texts([r["text_a"] for r in records], rng)
        b = objective.transform_texts([r["text_b"] for r in records], rng)
        ids = tokenize_pairs(tokenizer, a, b, max_length)
        return [dict(input_ids=x, labels=r["label"]) for x, r in zip(ids, records)]

    def predict(self, model, tokenizer, task, by_lang, *, objective=None, batch_size=128, max_length=128,
                bf16=True, pairs=None):
        """``pairs``: the generalized setting, (language, language2) pairs of row-aligned sets
        (:func:`~xltlib.evaluation.predict.predict_languages`)."""
        return predict_languages(model, tokenizer, by_lang, pairs=pairs, objective=objective,
                                 batch_size=batch_size, max_length=max_length, bf16=bf16)

    def score(self, task, predictions):
        rows = accuracy_rows(predictions)
        return rows + [dict(r, metric="score") for r in rows]


# ------------------------------------------------------------------------------- multiple choice
COPA_PROMPTS = {"cause": "What was the cause?", "effect": "What happened as a result?"}


class _RowGroupsKind(Kind):
    """Kinds whose feature is a fixed group of sequences (XCOPA's choices, LAReQA's question and answer),
    flattened group-major into one padded batch; one label per group."""

    def length(self, feature):
        return max(len(x) for x in feature["input_ids"])

    def collate(self, features, pad_id):
        flat = [x for f in features for x in f["input_ids"]]
        labels = [f["labels"] for f in features] if "labels" in features[0] else None
        return collate(flat, pad_id, labels)


@register_kind
class MultipleChoiceKind(_RowGroupsKind):
    """XCOPA: (premise + question prompt, choice) per choice, one score each, softmax over choices.

    The cause/effect prompt is the English SuperGLUE wording in every language: a fixed marker the
    model learns from English COPA, not a translation. Predictions: ``gold``, ``prediction`` (choice indices),
    ``scores`` (one logit per choice).
    """

    name = "multiple_choice"

    def _encode(self, records, tokenizer, max_length, transform=lambda x: x):
        contexts = transform([r["premise"] for r in records])
        k = len(records[0]["choices"]) if records else 2
        choices = [transform([r["choices"][j] for r in records]) for j in range(k)]
        out = []
        for i, r in enumerate(records):
            a = f"{contexts[i]} {COPA_PROMPTS[r['question']]}"
            ids = tokenize_pairs(tokenizer, [a] * k, [choices[j][i] for j in range(k)], max_length)
            out.append(dict(input_ids=ids, labels=r["label"]))
        return out

    def train_features(self, task, records, tokenizer, max_length, objective, rng):
        return self._encode(records, tokenizer, max_length, lambda texts: objective.transform_texts(texts, rng))

    def predict(self, model, tokenizer, task, by_lang, *, objective=None, batch_size=128, max_length=128, bf16=True):
        out = {}
        for lang, recs in by_lang.items():
            feats = self._encode(recs, tokenizer, max_length)
            pred = np.empty(len(feats), dtype=np.int64)
            scores: list = [None] * len(feats)
            for idx, logits in logits_batches(model, feats, tokenizer.pad_token_id, batch_size=max(1, batch_size // 2),
                                               bf16=bf16, collate_fn=self.collate, length=self.length,
                                               objective=objective):
                pred[idx] = logits.argmax(-1).numpy()
                for k, i in enumerate(idx):
                    scores[i] = logits[k].numpy()
            out[(lang, "")] = pd.DataFrame(dict(id=[str(r["id"]) for r in recs], gold=[r["label"] for r in recs],
                                                prediction=pred, scores=scores))
        return out

    def score(self, task, predictions):
        rows = []
        for (lang, _), table in predictions.items():
            acc = M.accuracy(table["prediction"].tolist(), table["gold"].tolist())
            ci = bootstrap_ci(acc["per_example"])
            n = len(table)
            rows += [_row(lang, "accuracy", acc["accuracy"], n, ci), _row(lang, "score", acc["accuracy"], n, ci)]
        return rows


# -------------------------------------------------------------------------------- token tagging
TAG_EVAL_LENGTH = 512  # PAN-X ja/zh are character-tokenised: each character becomes ~2 subwords


def _tag_length(tokenizer, max_length: int) -> int:
    limit = getattr(tokenizer, "model_max_length", TAG_EVAL_LENGTH) or TAG_EVAL_LENGTH
    return min(max(max_length, TAG_EVAL_LENGTH), limit)

@register_kind
class TokenClassificationKind(Kind):
    """UD-POS, PAN-X: a tag per word from its first subword; seqeval F1 as XTREME computes it. Predictions:
    ``gold`` and ``prediction`` (a tag per word), ``truncated_words`` (words past the length limit, given the
    fill tag)."""

    name = "token_classification"

    def train_features(self, task, records, tokenizer, max_length, objective, rng):

        words = substitute_words([r["tokens"] for r in records], lambda texts: objective.transform_texts(texts, rng))
        label2id = {t: i for i, t in enumerate(task.labels)}
        enc = encode_words(tokenizer, words, [r["tags"] for r in records], label2id, max_length)
        return [dict(input_ids=e["input_ids"], labels=e["labels"]) for e in enc]

    def collate(self, features, pad_id):
        batch = collate([f["input_ids"] for f in features], pad_id)
        if "labels" in features[0]:
            labels = torch.full(batch["input_ids"].shape, -100, dtype=torch.long)
            for i, f in enumerate(features):
                labels[i, :len(f["labels"])] = torch.tensor(f["labels"])
            batch["labels"] = labels
        return batch

    def predict(self, model, tokenizer, task, by_lang, *, objective=None, batch_size=128, max_length=128, bf16=True):

        out = {}
        for lang, recs in by_lang.items():
            enc = encode_words(tokenizer, [r["tokens"] for r in recs], None, {}, _tag_length(tokenizer, max_length))
            logits: list = [None] * len(enc)
            for idx, lg in logits_batches(model, enc, tokenizer.pad_token_id, batch_size=batch_size, bf16=bf16,
                                           collate_fn=self.collate, objective=objective):
                for k, i in enumerate(idx):
                    logits[i] = lg[k].numpy()
            pred, cut = sentence_predictions(logits, enc, list(task.labels), fill="O" if "O" in task.labels else "X")
            out[(lang, "")] = pd.DataFrame(dict(id=[str(r["id"]) for r in recs], gold=[list(r["tags"]) for r in recs],
                                                prediction=pred, truncated_words=np.array(cut, dtype=np.int64)))
        return out

    def score(self, task, predictions):
        rows = []
        for (lang, _), table in predictions.items():
            res = M.tag_f1([list(t) for t in table["gold"]], [list(t) for t in table["prediction"]])
            ci = bootstrap_ci(res["per_sentence"], stat=M.f1_from_counts)  # sums the sentence axis itself
            n = len(table)
            rows += [_row(lang, "f1", res["f1"], n, ci), _row(lang, "score", res["f1"], n, ci),
                     _row(lang, "precision", res["precision"], n, (np.nan, np.nan)),
                     _row(lang, "recall", res["recall"], n, (np.nan, np.nan)),
                     _row(lang, "truncated_words", int(table["truncated_words"].sum()), n, (np.nan, np.nan))]
        return rows


def check_unique_ids(task, lang: str, recs: list[dict]) -> None:
    """QA and retrieval scores key predictions and answers by question id: a repeated id would mix questions."""
    ids = [r["id"] for r in recs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"task '{getattr(task, 'name', task)}', language '{lang}': question id {dup!r} repeats "
                         f"({len(ids) - len(set(ids))} repeats in {len(ids)} records); scores key answers by id")


# ---------------------------------------------------------------------------- extractive QA
QA_MAX_LENGTH = 384  # SQuAD/XTREME windows; train.max_length (for sentence pairs) does not apply
QA_DOC_STRIDE = 128


def _qa_windows(tokenizer, max_length: int) -> dict:
    """Window settings: 384 tokens, stride 128, questions cut at 64 (XTREME), within the model's positions."""
    limit = getattr(tokenizer, "model_max_length", QA_MAX_LENGTH) or QA_MAX_LENGTH
    length = min(max(max_length, QA_MAX_LENGTH), limit)
    return dict(max_length=length, doc_stride=min(QA_DOC_STRIDE, length // 4), max_query_length=min(64, length // 4))


def _qa_lang(task: T.Task, lang: str) -> str | None:
    """MLQA is scored with MLQA's language-aware normalisation, the others with SQuAD v1.1's (as XTREME)."""
    return lang if task.name == "mlqa" else None


@register_kind
class SpanExtractionKind(Kind):
    """XQuAD, MLQA, TyDiQA-GoldP: start/end of the answer span; score = mean of F1 and EM. Predictions:
    ``gold`` (the gold answer texts), ``prediction`` (the predicted span's text, "" when no span is valid)."""

    name = "span_extraction"

    def num_labels(self, task):
        return 2

    def train_features(self, task, records, tokenizer, max_length, objective, rng):

        records = qa_substitute(records, lambda texts: objective.transform_texts(texts, rng))
        return prepare_train_features(tokenizer, records, **_qa_windows(tokenizer, max_length))

    def answers(self, model, tokenizer, recs, *, batch_size, max_length, bf16) -> dict[str, str]:
        """Predicted answer text per record id."""

        feats = prepare_eval_features(tokenizer, recs, **_qa_windows(tokenizer, max_length))
        start, end = [None] * len(feats), [None] * len(feats)
        for idx, lg in logits_batches(model, feats, tokenizer.pad_token_id, batch_size=batch_size, bf16=bf16):
            for k, i in enumerate(idx):
                start[i], end[i] = lg[k, :, 0].numpy(), lg[k, :, 1].numpy()
        return postprocess(recs, feats, start, end)

    def predict(self, model, tokenizer, task, by_lang, *, objective=None, batch_size=128, max_length=128, bf16=True):
        out = {}
        for lang, recs in by_lang.items():
            check_unique_ids(task, lang, recs)
            pred = self.answers(model, tokenizer, recs, batch_size=max(1, batch_size // 4), max_length=max_length,
                                bf16=bf16)
            out[(lang, "")] = pd.DataFrame(dict(id=[str(r["id"]) for r in recs],
                                                gold=[list(r["answers"]["text"]) for r in recs],
                                                prediction=[pred[r["id"]] for r in recs]))
        return out

    def score(self, task, predictions):
        rows = []
        for (lang, _), table in predictions.items():
            ids = table["id"].tolist()
            res = M.squad_scores(dict(zip(ids, table["prediction"])), dict(zip(ids, (list(g) for g in table["gold"]))),
                                 lang=_qa_lang(task, lang))
            per = np.array([res["per_example"][i] for i in ids], dtype=float)  # (em, f1)
            n = len(table)
            rows += [_row(lang, "f1", res["f1"], n, bootstrap_ci(per[:, 1])),
                     _row(lang, "exact_match", res["exact_match"], n, bootstrap_ci(per[:, 0])),
                     _row(lang, "score", (res["f1"] + res["exact_match"]) / 2, n, bootstrap_ci(per.mean(1)))]
        return rows


# ------------------------------------------------------------------------ answer retrieval (LAReQA)
_SENTENCE_END = re.compile(r"(?<=[.!?;。！？؟।॥])\s+|(?<=[。！？])")


def split_sentences(context: str, lang: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of a paragraph.

    Punctuation-based (XQuAD-R's own segmentation is not offline); Thai, which marks sentence ends by
    a space rather than punctuation, is split on spaces.
    """
    pattern = re.compile(r"\s+") if lang == "th" else _SENTENCE_END
    spans, start = [], 0
    for m in pattern.finditer(context):
        if m.start() > start:
            spans.append((start, m.start()))
        start = m.end()
    if start < len(context):
        spans.append((start, len(context)))
    return spans or [(0, len(context))]


def answer_span_index(record: dict, spans: list[tuple[int, int]]) -> int:
    """Index of the sentence span holding the start of the record's first answer."""
    pos = record["answers"]["answer_start"][0]
    return next((j for j, (a, b) in enumerate(spans) if a <= pos < b), len(spans) - 1)


def answer_sentence(record: dict, lang: str = "en") -> str:
    """The sentence of the record's passage that holds its answer (the LAReQA candidate)."""
    spans = split_sentences(record["context"], lang)
    a, b = spans[answer_span_index(record, spans)]
    return record["context"][a:b]


def build_xquad_r(by_lang: dict[str, list[dict]]):
    """Candidates (answer sentences of every language's paragraphs) and, per question, the relevant ones.

    Returns (candidate texts, {lang: (questions, relevant candidate-index sets)}): a question's relevant
    candidates are the sentences holding its answer in *every* language (LAReQA's "strong alignment" test).
    """
    cand_text, cand_index = [], {}
    answer_sentence: dict[tuple[str, str], int] = {}  # (lang, question id) -> candidate index
    for lang, recs in by_lang.items():
        for r in recs:
            key = (lang, r["context"])
            if key not in cand_index:
                spans = split_sentences(r["context"], lang)
                cand_index[key] = (len(cand_text), spans)
                cand_text += [r["context"][a:b] for a, b in spans]
            first, spans = cand_index[key]
            answer_sentence[(lang, r["id"])] = first + answer_span_index(r, spans)
    queries = {}
    for lang, recs in by_lang.items():
        qs = [r["question"] for r in recs]
        rel = [{answer_sentence[(other, r["id"])] for other in by_lang if (other, r["id"]) in answer_sentence}
               for r in recs]
        queries[lang] = (qs, rel)
    return cand_text, queries


MAP_AT = 20  # LAReQA's mAP@20 (XTREME-R)
RANKED_DEPTH = 100  # candidates kept per question: mAP@20 reads 20, the rest leave room for other cut-offs


@register_kind
class AnswerRetrievalKind(_RowGroupsKind):
    """LAReQA on XQuAD-R: a dual encoder (:class:`xltlib.models.heads.DualEncoder`) trained on English (question, answer
    sentence) pairs with in-batch negatives, as XTREME-R trains its LAReQA baseline on SQuAD
    (google-research/xtreme scripts/train_lareqa.sh, third_party/bert.py ``BertForRetrieval``); here on
    TyDiQA-GoldP English train, the answer sentence cut from the passage as evaluation cuts XQuAD's.

    Evaluation ranks the pooled candidates of all languages at once by the cosine of mean-pooled last-layer
    embeddings (the head's own similarity), so a question must retrieve the answer in other languages too.
    XTREME encodes a candidate as its sentence plus its paragraph; here the sentence alone, in training and
    evaluation alike.

    Predictions: ``gold`` (the relevant candidates), ``prediction`` (the top :data:`RANKED_DEPTH` candidates,
    best first) and ``scores`` (their cosines); a candidate is its index in :func:`build_xquad_r`'s candidates
    of the scored records of every language.
    """

    name = "answer_retrieval"

    def num_labels(self, task):
        return 1

    def train_features(self, task, records, tokenizer, max_length, objective, rng):
        answers = [answer_sentence(r) for r in records]
        answer_id = {a: i for i, a in enumerate(dict.fromkeys(answers))}  # a shared answer is no negative
        q = tokenize_pairs(tokenizer, objective.transform_texts([r["question"] for r in records], rng), None, max_length)
        a = tokenize_pairs(tokenizer, objective.transform_texts(answers, rng), None, max_length)
        return [dict(input_ids=[qi, ai], labels=answer_id[text]) for qi, ai, text in zip(q, a, answers)]

    def predict(self, model, tokenizer, task, by_lang, *, objective=None, batch_size=128, max_length=128, bf16=True):

        for lang, recs in by_lang.items():
            check_unique_ids(task, lang, recs)
        cands, queries = build_xquad_r(by_lang)
        kw = dict(pooling="mean", batch_size=batch_size, max_length=max_length, bf16=bf16)

        def embed(texts):
            x = encode_layers(model, tokenizer, texts, **kw)[-1]
            return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)

        c = embed(cands)
        out = {}
        for lang, (qs, rel) in queries.items():
            sims = embed(qs) @ c.T
            top = np.argsort(-sims, axis=1)[:, :RANKED_DEPTH]
            out[(lang, "")] = pd.DataFrame(dict(id=[str(r["id"]) for r in by_lang[lang]], gold=[sorted(g) for g in rel],
                                                prediction=list(top), scores=list(np.take_along_axis(sims, top, 1))))
        return out

    def score(self, task, predictions):
        rows = []
        for (lang, _), table in predictions.items():
            res = M.map_at_k([list(t) for t in table["prediction"]], [set(g) for g in table["gold"]], k=MAP_AT)
            ci = bootstrap_ci(res["per_query"])
            n = len(table)
            rows += [_row(lang, f"map@{MAP_AT}", res["map"], n, ci), _row(lang, "score", res["map"], n, ci)]
        return rows
