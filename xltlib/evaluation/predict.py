"""Zero-shot evaluation per language and per language pair (XTREME conventions).

Accuracy is the share of correct predictions in [0, 1] (XTREME prints it x100);
the task score is the mean over languages of the per-language score.
"""
from __future__ import annotations

import numpy as np
import torch

from xltlib.core.devices import model_device, to_device
from xltlib.core.progress import progress
from xltlib.training.batching import collate, length_batches, tokenize_pairs
from xltlib.training.precision import bf16_inference


def _collate_ids(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    return collate([f["input_ids"] for f in features], pad_id)


def logits_batches(model, features: list[dict], pad_id: int, *, batch_size: int, bf16: bool,
                   collate_fn=_collate_ids, length=lambda f: len(f["input_ids"]), objective=None):
    """(feature indices, float32 CPU logits) per length-sorted batch (little padding), without gradients, on
    the model's device.

    ``objective``: its ``predict_logits`` (e.g. RS-RP's noisy-copy vote) instead of the plain forward.
    ``bf16``: the model runs with bf16 weights (:func:`~xltlib.training.precision.bf16_inference`; faster than autocast).
    """
    lengths = np.array([length(f) for f in features])
    bar = progress(len(features), "examples scored", "ex")
    device = model_device(model)
    with bf16_inference(model, bf16), torch.inference_mode():
        for idx in length_batches(lengths, batch_size, rng=None):
            batch = collate_fn([features[i] for i in idx], pad_id)
            batch.pop("labels", None)
            batch = to_device(batch, device)
            logits = objective.predict_logits(model, batch) if objective is not None else model(**batch).logits
            bar.update(len(idx))
            yield idx, logits.float().cpu()
    bar.close()


def predict(model, tokenizer, text_a: list[str], text_b: list[str] | None, *, objective=None,
            batch_size: int = 128, max_length: int = 128, bf16: bool = True) -> np.ndarray:
    """Predicted label per example."""
    ids = tokenize_pairs(tokenizer, text_a, text_b, max_length)
    preds = np.empty(len(ids), dtype=np.int64)
    for idx, logits in logits_batches(model, [dict(input_ids=x) for x in ids], tokenizer.pad_token_id,
                                      batch_size=batch_size, bf16=bf16, objective=objective):
        preds[idx] = logits.argmax(-1).numpy()
    return preds


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


def evaluate_languages(model, tokenizer, eval_by_lang: dict[str, list[dict]], *, pairs: list[tuple[str, str]] | None = None,
                       **predict_kw) -> list[dict]:
    """Rows {language, language2, metric, value, n, ci_low, ci_high, per_example}.

    ``per_example``: 0/1 correctness of each scored row, in row order (the same rows in every language), so
    a method and the baseline can be compared with a paired bootstrap over test examples.

    Standard setting: both sentences in one language (language2 = "").
    Generalized setting (``pairs``): first sentence from ``language``, second from
    ``language2``, same row indices (the sets must be row-aligned); the gold label
    is the first language's.
    """
    rows = []
    todo = [(lang, lang) for lang in eval_by_lang] if pairs is None else pairs
    for la, lb in todo:
        ra, rb = eval_by_lang[la], eval_by_lang[lb]
        if len(ra) != len(rb):
            raise ValueError(f"generalized pair {la}-{lb}: {len(ra)} vs {len(rb)} rows; sets must be row-aligned")
        labels = np.array([r["label"] for r in ra])
        preds = predict(model, tokenizer, [r["text_a"] for r in ra], [r["text_b"] for r in rb], **predict_kw)
        correct = preds == labels
        lo, hi = bootstrap_ci(correct)
        rows.append(dict(language=la, language2="" if pairs is None else lb, metric="accuracy",
                         value=float(correct.mean()), n=len(labels), ci_low=lo, ci_high=hi,
                         per_example=correct.astype(np.int8)))
    return rows
