"""Per-layer cross-lingual alignment of encoder representations on parallel sentences.

Pipeline: :func:`encode_layers` pools the hidden states of every layer of a HF encoder,
:func:`compute_alignment` / :func:`compute_alignment_pairs` apply registered metrics
(:data:`METRICS`) layer by layer and return long-format rows (one value per row) that
drop straight into a ``pandas.DataFrame``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from xltlib.core.progress import progress
from xltlib.core.registry import Registry
from xltlib.core.timing import record, timed
from xltlib.evaluation.probe import cv_logistic_accuracy
from xltlib.training.batching import collate, token_batches
from xltlib.training.precision import bf16_inference

__all__ = [
    "METRICS",
    "METRICS_VERSION",
    "MetricSpec",
    "compute_alignment",
    "compute_alignment_pairs",
    "encode_layers",
    "item_ids",
    "pool_rows",
    "read_parallel",
    "register_metric",
    "retrieval_outcomes",
]

_CHUNK = 4096  # rows per similarity block: memory stays O(_CHUNK * n)
# Every row carries it; raised when a metric's meaning changes, so rows of two meanings are never mixed (the
# alignment key includes it, :func:`xltlib.runner.keys.alignment_key`, so older rows are recomputed).
# 2: ``cka.cka`` is debiased CKA (linear CKA is ``cka.cka_linear_biased``); pair rows carry the dimension ``d``;
#    retrieval keeps its per-sentence outcomes (``outcomes`` of :func:`compute_alignment_pairs`).
# 3: ``langid_probe`` fits its folds at once with bf16 products (:mod:`xltlib.evaluation.probe`), not with
#    scikit-learn: the same classifier and folds, accuracy within +-0.01 of version 2's.
# 4: with ``pool="common"`` only the pooled pairs are encoded, so ``langid_probe`` draws its rows from each
#    language's pool, not from every available sentence (the pair metrics' values are unchanged; where every
#    language has as many pairs as the pool, quick's Tatoeba, nothing changes at all).
METRICS_VERSION = 4


# --------------------------------------------------------------------------- encoding
def encode_layers(
    model: Any,
    tokenizer: Any,
    sentences: list[str],
    *,
    pooling: Literal["mean", "cls"] = "mean",
    batch_size: int = 64,
    max_length: int = 128,
    bf16: bool = False,
    text_prefix: str = "",
) -> np.ndarray:
    """Pooled hidden states of all layers, shape ``[n_layers + 1, n, hidden]`` float32.

    Index 0 is the embedding output (HF ``output_hidden_states`` convention). One forward
    pass per batch; sentences are sorted by token length, longest first, into batches of at most
    ``batch_size`` sentences and a budget of padded tokens (:func:`~xltlib.training.batching.token_batches`: the
    few long sentences of a long tail get small batches of their own rather than padding a full batch to their
    length), and the original order is restored. ``mean`` averages non-padding tokens
    (attention mask), ``cls`` takes the first non-padding token (position 0 with right
    padding). ``model.base_model`` is used when present, so task-head models also work.
    ``bf16``: the model runs with bf16 weights (:func:`~xltlib.training.precision.bf16_inference`; faster
    than autocast); the bf16 states are pooled in float32.
    """
    if pooling not in ("mean", "cls"):
        raise ValueError(f"unknown pooling {pooling!r}; expected 'mean' or 'cls'")
    base = getattr(model, "base_model", model)
    device = next(base.parameters()).device
    texts = [text_prefix + s for s in sentences]
    if not texts:
        cfg = base.config
        return np.zeros((cfg.num_hidden_layers + 1, 0, cfg.hidden_size), np.float32)
    with timed("alignment: tokenisation"):
        ids = tokenizer(texts, truncation=True, max_length=max_length, return_token_type_ids=False,
                        return_attention_mask=False)["input_ids"]
    out: np.ndarray | None = None
    was_training = base.training
    base.eval()
    bar = progress(len(texts), "sentences encoded", "sent")
    try:
        with bf16_inference(base, bf16), torch.inference_mode():
            for idx in token_batches(np.array([len(x) for x in ids]), batch_size, device):
                batch = {k: v.to(device) for k, v in collate([ids[i] for i in idx], tokenizer.pad_token_id).items()}
                hs = base(**batch, output_hidden_states=True, return_dict=True).hidden_states
                mask = batch["attention_mask"]
                if pooling == "mean":  # one [b, 1, t] @ [b, t, h] product per layer: no [L+1, b, t, h] copies
                    w = (mask / mask.sum(1, keepdim=True).clamp_min(1)).float().unsqueeze(1)
                    pooled = torch.stack([torch.bmm(w, h.float()).squeeze(1) for h in hs])
                else:
                    first = mask.argmax(1)  # first non-padding position
                    rows = torch.arange(len(first), device=first.device)
                    pooled = torch.stack([h[rows, first] for h in hs]).float()
                if out is None:
                    out = np.empty((len(hs), len(texts), hs[0].shape[-1]), np.float32)
                out[:, idx] = pooled.cpu().numpy()
                bar.update(len(idx))
    finally:
        bar.close()
        base.train(was_training)
    assert out is not None
    return out


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: ``pair`` takes ``(x, y, **opts)``, ``multi`` takes ``({lang: X}, **opts)``.
    ``per_item`` (pair metrics that are a mean over translation pairs): the same arguments, each value's
    per-pair outcomes (arrays of length n whose means are ``fn``'s values)."""

    name: str
    kind: Literal["pair", "multi"]
    fn: Callable[..., dict[str, float]]
    per_item: Callable[..., dict[str, np.ndarray]] | None = None


METRICS: Registry[MetricSpec] = Registry("alignment metric")


def register_metric(name: str, kind: Literal["pair", "multi"] = "pair",
                    per_item: Callable[..., dict[str, np.ndarray]] | None = None) -> Callable:
    """Decorator adding a metric to :data:`METRICS` under ``name`` (``per_item``: see :class:`MetricSpec`)."""
    if kind not in ("pair", "multi"):
        raise ValueError(f"unknown metric kind {kind!r}; expected 'pair' or 'multi'")
    if per_item is not None and kind != "pair":
        raise ValueError(f"metric {name!r}: per-item outcomes exist for pair metrics only, not {kind!r}")

    def deco(fn: Callable[..., dict[str, float]]) -> Callable[..., dict[str, float]]:
        METRICS.add(name, MetricSpec(name, kind, fn, per_item))
        return fn

    return deco


def _prep(a: np.ndarray, center: bool) -> np.ndarray:
    """float32 copy, optionally mean-centred, rows L2-normalised (cosine = dot product)."""
    a = np.asarray(a, dtype=np.float32)
    if center:
        a = a - a.mean(0, keepdims=True)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _knn_mean(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Mean cosine of each row of ``a`` to its ``k`` nearest rows of ``b`` (unit rows)."""
    k = min(k, len(b))
    res = np.empty(len(a), np.float32)
    for s in range(0, len(a), _CHUNK):
        sim = a[s : s + _CHUNK] @ b.T
        res[s : s + _CHUNK] = np.partition(sim, -k, axis=1)[:, -k:].mean(1)
    return res


def _hits(a: np.ndarray, b: np.ndarray, ra: np.ndarray | None = None, rb: np.ndarray | None = None) -> np.ndarray:
    """Per query row i of ``a``: whether its top-1 row of ``b`` is row i (bool array; its mean is accuracy@1).

    With neighbourhood means ``ra``/``rb`` the ratio margin of Artetxe & Schwenk (2019,
    "Margin-based Parallel Corpus Mining with Multilingual Sentence Embeddings") is used:
    ``cos(a,b) / ((ra[a] + rb[b]) / 2)`` (the 1/2k sums of the paper), which penalises hubs.
    """
    hits = np.zeros(len(a), bool)
    for s in range(0, len(a), _CHUNK):
        sim = a[s : s + _CHUNK] @ b.T
        if ra is not None and rb is not None:
            sim = sim / ((ra[s : s + _CHUNK, None] + rb[None, :]) / 2)
        hits[s : s + len(sim)] = sim.argmax(1) == np.arange(s, s + len(sim))
    return hits


def retrieval_outcomes(x: np.ndarray, y: np.ndarray, *, center: bool = False, k: int = 4) -> dict[str, np.ndarray]:
    """Per translation pair i, whether its query found its translation at rank 1, for each value of
    :func:`retrieval` (bool arrays of length n; their means are :func:`retrieval`'s values). The items of the
    item-level comparison of checkpoints (:mod:`xltlib.analysis.alignment_compare`)."""
    xn, yn = _prep(x, center), _prep(y, center)
    rx, ry = _knn_mean(xn, yn, k), _knn_mean(yn, xn, k)
    return {
        "acc1_en2xx": _hits(yn, xn),
        "acc1_xx2en": _hits(xn, yn),
        "margin_acc1_en2xx": _hits(yn, xn, ry, rx),
        "margin_acc1_xx2en": _hits(xn, yn, rx, ry),
    }


@register_metric("retrieval", per_item=retrieval_outcomes)
def retrieval(x: np.ndarray, y: np.ndarray, *, center: bool = False, k: int = 4) -> dict[str, float]:
    """Bitext retrieval accuracy@1 with cosine and with ratio margin (k-NN, k=4); ``x`` is the xx side,
    ``y`` English, row i of each a translation pair.

    Names say query -> index: ``acc1_en2xx`` queries with each English row and searches the xx rows.
    That is XTREME's Tatoeba number: google-research/xtreme@838c13b third_party/evaluate_retrieval.py
    lines 807-808 call ``similarity_search(x=xx embeddings, y=English embeddings)``, and
    third_party/utils_retrieve.py lines 337-338 index ``x`` and search it with ``y``. ``acc1_xx2en`` is
    the reverse. Accuracy falls with the pool size, so compare languages on a common pool
    (:func:`compute_alignment_pairs` does). ``center`` removes each language's mean vector first.
    """
    return {name: float(hits.mean()) for name, hits in retrieval_outcomes(x, y, center=center, k=k).items()}


@register_metric("cosine_gap")
def cosine_gap(x: np.ndarray, y: np.ndarray, *, center: bool = True) -> dict[str, float]:
    """Mean cosine of translation pairs minus mean cosine of all non-translation pairs.

    Centring per language removes the shared anisotropy (Ethayarajh 2019) that otherwise
    makes every pair look similar. The off-diagonal sum uses ``sum_ij x_i.y_j = (sum x).(sum y)``.
    """
    xn, yn = _prep(x, center), _prep(y, center)
    n = len(xn)
    diag = np.einsum("ij,ij->i", xn, yn, dtype=np.float64)
    total = float(xn.sum(0, dtype=np.float64) @ yn.sum(0, dtype=np.float64))
    pos = float(diag.mean())
    neg = (total - float(diag.sum())) / (n * (n - 1)) if n > 1 else float("nan")
    return {"cosine_gap": pos - neg, "cos_pos": pos, "cos_neg": neg}


def _unbiased_hsic(x: np.ndarray, y: np.ndarray, xy: np.ndarray, xx_diag: np.ndarray, yy_diag: np.ndarray,
                   sx: np.ndarray, sy: np.ndarray) -> float:
    """Unbiased HSIC estimator (Song et al. 2012, eq. 5) with linear kernels K = XX', L = YY', from
    feature-space quantities: tr(K~L~), 1'K~1, 1'L~1 and 1'K~L~1 where K~, L~ have zero diagonals."""
    n = len(x)
    tr_kl = float((xy**2).sum()) - float(xx_diag @ yy_diag)  # tr(KL) - sum_i K_ii L_ii
    k1 = x @ sx - xx_diag  # K~ 1
    l1 = y @ sy - yy_diag  # L~ 1
    sk, sl = float(k1.sum()), float(l1.sum())
    return (tr_kl + sk * sl / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(k1 @ l1)) / (n * (n - 3))


def _feature_grams(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x'x, y'y and y'x accumulated over row chunks (float64; no n x n matrix)."""
    xx, yy, yx = np.zeros((x.shape[1],) * 2), np.zeros((y.shape[1],) * 2), np.zeros((y.shape[1], x.shape[1]))
    for s in range(0, len(x), _CHUNK):
        a, b = x[s : s + _CHUNK], y[s : s + _CHUNK]
        xx += a.T @ a
        yy += b.T @ b
        yx += b.T @ a
    return xx, yy, yx


@register_metric("cka")
def cka(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Debiased linear CKA (the headline ``cka``) and, under its own name, biased linear CKA.

    ``cka``: the ratio of unbiased HSIC estimates (Song et al. 2012, eq. 5; debiased CKA of Kornblith et al.
    2019 sec. 3 / Nguyen et al. 2021), near 0 for independent data at any n (needs n >= 4; NaN below).
    ``cka_linear_biased``: linear CKA of Kornblith et al. (2019), ``||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F)``, columns
    centred; biased upwards when n is not much larger than d (about 0.65 for independent data at n = 205,
    d = 384), so it is only comparable at equal n and d (the rows carry both). Before metric version 2
    (:data:`METRICS_VERSION`) the row ``cka.cka`` held this biased value. Invariant to orthogonal transforms
    and isotropic scaling. Feature-space Gram matrices are accumulated over row chunks in float64.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = len(x)
    x, y = x - x.mean(0), y - y.mean(0)
    xx, yy, yx = _feature_grams(x, y)
    den = np.linalg.norm(xx) * np.linalg.norm(yy)
    biased = float((yx**2).sum() / den) if den > 0 else float("nan")
    if n < 4:
        return {"cka": float("nan"), "cka_linear_biased": biased}
    # the unbiased estimator is translation invariant: on the centred columns (fewer cancellations), the same Grams
    dx, dy = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
    sx, sy = x.sum(0), y.sum(0)
    hxy = _unbiased_hsic(x, y, yx, dx, dy, sx, sy)
    hxx = _unbiased_hsic(x, x, xx, dx, dx, sx, sx)
    hyy = _unbiased_hsic(y, y, yy, dy, dy, sy, sy)
    debiased = float(hxy / np.sqrt(hxx * hyy)) if hxx > 0 and hyy > 0 else float("nan")
    return {"cka": debiased, "cka_linear_biased": biased}


@register_metric("langid_probe", kind="multi")
def langid_probe(
    reps: dict[str, np.ndarray], *, max_per_lang: int = 200, folds: int = 5, seed: int = 0, C: float = 1.0,
    bf16: bool = True,
) -> dict[str, float]:
    """Cross-validated accuracy of a linear language-ID probe (lower = more language-neutral).

    Standardised features + multinomial logistic regression (L2, ``C``), stratified ``folds``-fold CV; at most
    ``max_per_lang`` rows per language (seeded subsample) to keep it cheap and balanced. Every fold is fitted at
    once by :func:`~xltlib.evaluation.probe.cv_logistic_accuracy` (``bf16``: its products in bf16), the
    accuracy of scikit-learn's ``StandardScaler`` + ``LogisticRegression`` on the same folds to +-0.01.
    """

    rng = np.random.default_rng(seed)
    feats, labels = [], []
    for i, (_, a) in enumerate(sorted(reps.items())):
        sel = rng.choice(len(a), size=min(max_per_lang, len(a)), replace=False)
        feats.append(np.asarray(a, np.float32)[np.sort(sel)])
        labels.append(np.full(len(sel), i))
    x, y = np.concatenate(feats), np.concatenate(labels)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    acc = cv_logistic_accuracy(x, y, list(cv.split(x, y)), C=C, max_iter=5000, bf16=bf16)
    return {"langid_acc": float(acc.mean()), "langid_chance": 1.0 / len(reps)}


def item_ids(english: list[str]) -> np.ndarray:
    """The item each translation pair is, from its English sentence (int64; the same sentence, the same id in
    every language and run): the unit the item-level comparison of checkpoints resamples."""
    return np.array([int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little", signed=True)
                     for s in english], dtype=np.int64)


# --------------------------------------------------------------------------- driver
def _check_metrics(metrics: list[str]) -> None:
    unknown = [m for m in metrics if m not in METRICS]  # all of them named in one error
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; registered: {sorted(METRICS)}")


def _check_layers(layers: list[int] | None, n_layers: int) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} out of range; allowed 0..{n_layers - 1}")
    return list(layers)


def _pool_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subsample of ``size`` of ``n`` rows (all rows when size >= n)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def pool_rows(available: dict[str, int], pool: Literal["common", "full"] = "common",
              seed: int = 0) -> dict[str, np.ndarray]:
    """Per language, the positions of the pairs the pair metrics score out of its ``available`` pairs: with
    ``pool="common"`` a seeded subsample of the smallest language's size (the same ``seed`` for every language and
    checkpoint), with ``"full"`` every pair. A caller that knows the counts before encoding encodes only these
    (:func:`compute_alignment_pairs`' ``available``): with 61 Tatoeba languages the common pool is 168 pairs (Amharic)
    of up to 1,000, a fifth of the encoding."""
    if pool not in ("common", "full"):
        raise ValueError(f"unknown pool {pool!r}; expected 'common' or 'full'")
    n_pool = min(available.values(), default=0)
    return {lang: _pool_rows(n, n_pool if pool == "common" else n, seed) for lang, n in available.items()}


def compute_alignment_pairs(
    x_by_lang: dict[str, np.ndarray],
    y_by_lang: dict[str, np.ndarray],
    *,
    pivot: str = "en",
    metrics: list[str],
    layers: list[int] | None = None,
    options: dict[str, dict] | None = None,
    multi_inputs: dict[str, np.ndarray] | None = None,
    pool: Literal["common", "full"] = "common",
    pool_seed: int = 0,
    outcomes: list[dict] | None = None,
    available: dict[str, int] | None = None,
) -> list[dict]:
    """Per-layer alignment where each language has its own pivot side (e.g. Tatoeba).

    ``x_by_lang[lang]`` and ``y_by_lang[lang]`` are ``[L+1, n_lang, d]`` and row-aligned.
    Pair metrics yield rows ``{metric: "name.sub", language, language2: pivot, layer, value, n,
    n_available, d}`` (``d``: the representation's dimension); multi metrics run once per layer on
    ``multi_inputs`` (default: the x sides) with ``language = language2 = "all"``. Every row carries
    ``metrics_version`` (:data:`METRICS_VERSION`).

    ``outcomes``: when a list is given, the per-pair outcomes of metrics that have them (``MetricSpec.per_item``;
    retrieval: did pair i's query find its translation at rank 1) are appended to it, one dict per metric value,
    language and layer: ``metric, language, layer, n, n_available, in_pool`` (bool, one per available pair: the
    pairs scored) and ``correct`` (bool, one per scored pair, in pair order); the pool is the same for every
    checkpoint (``pool_seed``), so position i is the same sentence pair in every checkpoint's outcomes.

    ``pool="common"`` scores every language on the same number of pairs, the smallest language's
    (a seeded subsample of the others, the same ``pool_seed`` for every language and checkpoint):
    retrieval accuracy falls with the pool size and linear CKA's bias grows as n shrinks, so unequal
    pools (Tatoeba: sw 390, th 548, most 1000) confound a comparison across languages. ``n`` is the
    pool used, ``n_available`` the pairs there were. ``pool="full"`` keeps every pair.

    ``available``: when given, the number of pairs each language has, and ``x_by_lang`` / ``y_by_lang`` (and
    ``multi_inputs``) hold only the rows :func:`pool_rows` keeps of them (``pool``, ``pool_seed``), in that order:
    the caller encoded the pool only. Every value, ``n_available`` and ``in_pool`` are those of encoding every
    pair; multi metrics (``langid_probe``) then see the pooled rows.
    """
    _check_metrics(metrics)  # an unknown pool is refused by pool_rows below
    options = options or {}
    if set(x_by_lang) != set(y_by_lang):
        raise ValueError(f"x/y languages differ: {sorted(x_by_lang)} vs {sorted(y_by_lang)}")
    multi = x_by_lang if multi_inputs is None else multi_inputs
    arrays = {**{f"x[{k}]": v for k, v in x_by_lang.items()}, **{f"y[{k}]": v for k, v in y_by_lang.items()}}
    arrays.update({f"multi[{k}]": v for k, v in multi.items()})
    depths = {k: np.shape(v)[0] for k, v in arrays.items()}
    if len(set(depths.values())) > 1:
        raise ValueError(f"layer counts differ across inputs: {depths}")
    for lang in x_by_lang:
        nx, ny = np.shape(x_by_lang[lang])[1], np.shape(y_by_lang[lang])[1]
        if nx != ny:
            raise ValueError(f"row counts differ for {lang!r}: {lang}={nx}, {pivot}={ny}")
    layers = _check_layers(layers, next(iter(depths.values()), 0))
    held = {lang: int(np.shape(x_by_lang[lang])[1]) for lang in x_by_lang}
    pooled = available is not None  # the inputs are the pool's rows only
    if pooled and set(available) != set(x_by_lang):
        raise ValueError(f"available names other languages than the inputs: {sorted(available)} vs {sorted(x_by_lang)}")
    available = {lang: int(available[lang]) for lang in x_by_lang} if pooled else held
    keep = pool_rows(available, pool, pool_seed)
    if pooled:
        wrong = {lang: (held[lang], len(keep[lang])) for lang in x_by_lang if held[lang] != len(keep[lang])}
        if wrong:
            raise ValueError(f"inputs hold other row counts than the pool of `available` (held, pool): {wrong}")
    rows_of = {lang: np.arange(held[lang]) if pooled else keep[lang] for lang in x_by_lang}  # rows in the inputs
    rows: list[dict] = []
    spent: dict[str, list[float]] = {}  # wall and CPU seconds per metric over layers and languages (xlt cost)
    for layer in layers:
        for name in metrics:
            t0, c0 = time.perf_counter(), time.process_time()
            spec, opts = METRICS[name], options.get(name, {})
            if spec.kind == "pair":
                for lang in x_by_lang:
                    x, y = x_by_lang[lang][layer][rows_of[lang]], y_by_lang[lang][layer][rows_of[lang]]
                    if spec.per_item is not None:  # the value is the mean of the per-pair outcomes: one pass
                        per = spec.per_item(x, y, **opts)
                        values = {sub: float(np.mean(v)) for sub, v in per.items()}
                        if outcomes is not None:
                            in_pool = np.zeros(available[lang], bool)
                            in_pool[keep[lang]] = True
                            outcomes += [{"metric": f"{name}.{sub}", "language": lang, "layer": layer, "n": len(x),
                                          "n_available": available[lang], "in_pool": in_pool,
                                          "correct": np.asarray(v, bool)} for sub, v in per.items()]
                    else:
                        values = spec.fn(x, y, **opts)
                    for sub, val in values.items():
                        rows.append({"metric": f"{name}.{sub}", "language": lang, "language2": pivot,
                                     "layer": layer, "value": float(val), "n": len(x),
                                     "n_available": available[lang], "d": int(np.shape(x)[1]),
                                     "metrics_version": METRICS_VERSION})
            else:
                reps = {lang: a[layer] for lang, a in multi.items()}
                n = min(len(a) for a in reps.values())
                for sub, val in spec.fn(reps, **opts).items():
                    rows.append({"metric": f"{name}.{sub}", "language": "all", "language2": "all",
                                 "layer": layer, "value": float(val), "n": n, "n_available": n,
                                 "metrics_version": METRICS_VERSION})
            wall_cpu = spent.setdefault(name, [0.0, 0.0])
            wall_cpu[0] += time.perf_counter() - t0
            wall_cpu[1] += time.process_time() - c0
    for name, (seconds, cpu) in spent.items():
        record(f"alignment metric: {name}", seconds, cpu=cpu)
    return rows


def compute_alignment(
    embeddings: dict[str, np.ndarray],
    *,
    pivot: str = "en",
    metrics: list[str],
    layers: list[int] | None = None,
    options: dict[str, dict] | None = None,
) -> list[dict]:
    """Per-layer alignment of every non-pivot language with the pivot on a shared parallel set.

    ``embeddings[lang]`` is ``[L+1, n, d]`` with row i of every language a translation of
    row i of the pivot. Multi metrics see all languages including the pivot. Delegates to
    :func:`compute_alignment_pairs`.
    """
    _check_metrics(metrics)
    if pivot not in embeddings:
        raise ValueError(f"pivot {pivot!r} not in embeddings: {sorted(embeddings)}")
    counts = {lang: np.shape(a)[1] for lang, a in embeddings.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"languages have different row counts: {counts}")
    xs = {lang: a for lang, a in embeddings.items() if lang != pivot}
    return compute_alignment_pairs(xs, {lang: embeddings[pivot] for lang in xs}, pivot=pivot,
                                   metrics=metrics, layers=layers, options=options, multi_inputs=embeddings)


def read_parallel(path_a: str | Path, path_b: str | Path) -> tuple[list[str], list[str]]:
    """Read two line-aligned UTF-8 files (only ``\\n`` separates lines, so U+2028 etc. inside
    a sentence cannot break the alignment); raise ValueError if the line counts differ."""

    def lines(p: str | Path) -> list[str]:
        out = Path(p).read_text(encoding="utf-8").split("\n")
        if out and out[-1] == "":
            out.pop()
        return [s.removesuffix("\r") for s in out]

    a, b = lines(path_a), lines(path_b)
    if len(a) != len(b):
        raise ValueError(f"line counts differ: {path_a} has {len(a)}, {path_b} has {len(b)}")
    return a, b
