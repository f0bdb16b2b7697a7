"""Zero-shot evaluation per language and per language pair (XTREME conventions).

Accuracy is the share of correct predictions in [0, 1] (XTREME prints it x100);
the task score is the mean over languages of the per-language score.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from xltlib.core.devices import model_device, to_device
from xltlib.core.progress import progress
from xltlib.training.batching import collate, token_batches, tokenize_pairs
from xltlib.training.precision import bf16_inference


# (language, language2) -> the model's predictions there, one row per scored item in order (language2 is "" but
# in the generalized setting); the columns are the task kind's (xltlib.evaluation.task_types)
Predictions = dict[tuple[str, str], pd.DataFrame]


def _collate_ids(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    return collate([f["input_ids"] for f in features], pad_id)


def logits_batches(model, features: list[dict], pad_id: int, *, batch_size: int, bf16: bool,
                   collate_fn=_collate_ids, length=lambda f: len(f["input_ids"]), objective=None):
    """(feature indices, float32 CPU logits) per length-sorted batch within a budget of padded tokens
    (:func:`~xltlib.training.batching.token_batches`), without gradients, on the model's device.

    ``objective``: its ``predict_logits`` (e.g. RS-RP's noisy-copy vote) instead of the plain forward.
    ``bf16``: the model runs with bf16 weights (:func:`~xltlib.training.precision.bf16_inference`; faster than autocast).
    """
    lengths = np.array([length(f) for f in features])
    bar = progress(len(features), "examples scored", "ex")
    device = model_device(model)
    with bf16_inference(model, bf16), torch.inference_mode():
        for idx in token_batches(lengths, batch_size, device):
            batch = collate_fn([features[i] for i in idx], pad_id)
            batch.pop("labels", None)
            batch = to_device(batch, device)
            logits = objective.predict_logits(model, batch) if objective is not None else model(**batch).logits
            bar.update(len(idx))
            yield idx, logits.float().cpu()
    bar.close()


def classify(model, tokenizer, text_a: list[str], text_b: list[str] | None, *, objective=None,
             batch_size: int = 128, max_length: int = 128, bf16: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(predicted label per example, per-class scores [n, C]): the scores are the logits, or the vote counts
    of an objective that predicts by votes (RS-RP); the label is their first argmax."""
    ids = tokenize_pairs(tokenizer, text_a, text_b, max_length)
    preds = np.empty(len(ids), dtype=np.int64)
    scores = None  # [n, C] once the first batch tells C
    for idx, logits in logits_batches(model, [dict(input_ids=x) for x in ids], tokenizer.pad_token_id,
                                      batch_size=batch_size, bf16=bf16, objective=objective):
        if scores is None:
            scores = np.empty((len(ids), logits.shape[-1]), dtype=np.float32)
        preds[idx] = logits.argmax(-1).numpy()
        scores[idx] = logits.numpy()
    return preds, scores if scores is not None else np.empty((0, 0), dtype=np.float32)


def bootstrap_ci(per_example: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 stat=None) -> tuple[float, float]:
    """Percentile bootstrap CI over examples: of their mean, or of ``stat`` (resamples [n_boot, n, ...] ->
    [n_boot]; e.g. micro-F1 from per-sentence counts). NaNs when there are no examples."""
    per_example = np.asarray(per_example, dtype=float)
    if len(per_example) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    resamples = per_example[rng.integers(0, len(per_example), size=(n_boot, len(per_example)))]
    boots = resamples.mean(1) if stat is None else stat(resamples)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def predict_languages(model, tokenizer, eval_by_lang: dict[str, list[dict]], *,
                      pairs: list[tuple[str, str]] | None = None, **predict_kw) -> Predictions:
    """Predictions per (language, language2): one row per scored example, in row order, with ``id`` (the
    record's, as text), ``gold`` and ``prediction`` (label indices) and ``scores`` (per class, see :func:`classify`).

    Standard setting: both sentences in one language (language2 = "").
    Generalized setting (``pairs``): first sentence from ``language``, second from
    ``language2``, same row indices (the sets must be row-aligned); the gold label
    is the first language's.
    """
    out = {}
    todo = [(lang, lang) for lang in eval_by_lang] if pairs is None else pairs
    for la, lb in todo:
        ra, rb = eval_by_lang[la], eval_by_lang[lb]
        if len(ra) != len(rb):
            raise ValueError(f"generalized pair {la}-{lb}: {len(ra)} vs {len(rb)} rows; sets must be row-aligned")
        preds, scores = classify(model, tokenizer, [r["text_a"] for r in ra], [r["text_b"] for r in rb], **predict_kw)
        out[(la, "" if pairs is None else lb)] = pd.DataFrame(dict(
            id=[str(r["id"]) for r in ra], gold=np.array([r["label"] for r in ra], dtype=np.int64), prediction=preds,
            scores=list(scores)))
    return out


def accuracy_rows(predictions: Predictions) -> list[dict]:
    """Rows {language, language2, metric="accuracy", value, n, ci_low, ci_high, per_example} of
    :func:`predict_languages`' tables.

    ``per_example``: 0/1 correctness of each scored row, in row order (the same rows in every language), so
    a method and the baseline can be compared with a paired bootstrap over test examples.
    """
    rows = []
    for (la, lb), table in predictions.items():
        correct = table["prediction"].to_numpy() == table["gold"].to_numpy()
        lo, hi = bootstrap_ci(correct)
        rows.append(dict(language=la, language2=lb, metric="accuracy", value=float(correct.mean()), n=len(correct),
                         ci_low=lo, ci_high=hi, per_example=correct.astype(np.int8)))
    return rows


def evaluate_languages(model, tokenizer, eval_by_lang: dict[str, list[dict]], *, pairs: list[tuple[str, str]] | None = None,
                       **predict_kw) -> list[dict]:
    """Accuracy rows (:func:`accuracy_rows`) of the predictions of :func:`predict_languages`."""
    return accuracy_rows(predict_languages(model, tokenizer, eval_by_lang, pairs=pairs, **predict_kw))
