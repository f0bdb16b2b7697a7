"""Did robust training make the model robust? English accuracy of a pair classifier under attack, the same attacks
at the same strengths for every checkpoint of a task, whatever it trained with.

For the English test records of a ``pair_classification`` task (``id``, ``text_a``, ``text_b``, ``label``),
:func:`score_robustness` scores a fine-tuned model

* clean: ``robust_acc_clean``;
* under an l2 PGD attack on the input word embeddings (Madry et al., 2018: random start, ``pgd_steps``
  normalised ascent steps of 2.5 eps / steps, projection) at each relative strength eps of ``pgd_eps``:
  ``robust_acc_pgd_<eps>`` and the mean loss increase it causes, ``attack_loss_gain_pgd_<eps>`` (positive for a
  working adversary);
* with one draw of Gaussian word-embedding noise at each relative sigma of ``noise_sigma`` (RS-RP's noise; a
  random draw, not an attack): ``robust_acc_noise_<sigma>``;
* under the greedy synonym-swap attack of :mod:`xltlib.evaluation.attacks` (adversarial, within a query budget),
  logged as TextAttack logs it: ``robust_acc_synonym_attack`` (accuracy under attack), ``attack_success_rate_synonym``,
  ``attack_perturbed_words_synonym`` (share of words changed by successful attacks), ``attack_queries_synonym``
  (mean queries of the rows attacked);
* with one random synonym draw per word (RS-DA's training distribution, ``exact`` lookup, both sentences; not an
  attack, and one that favours RS-DA): ``robust_acc_synonym_draw`` and ``synonym_subst_rate`` (tokens changed /
  tokens).

Strengths are relative (fractions of the median token-embedding norm per token, ``scale: relative`` of
:mod:`xltlib.training.objectives.embedding`), so one number means the same for every checkpoint; they come from
``evaluate.robustness_*`` (:func:`robustness_settings`). Every attack is seeded by the settings' seed and its own
name and strength, not by the checkpoint, so the same rows meet the same random starts and draws everywhere.

Rows are tidy: ``{language, language2, metric, value, n, ci_low, ci_high, attack, strength, scale}`` with a
percentile bootstrap CI over rows, and ``per_example`` / ``item_ids`` (the record ids) for the item-paired
comparison of checkpoints. Per-item outcomes (:data:`ITEM_COLUMNS`: one row per item x attack x strength) come back
as a prediction table (:mod:`xltlib.evaluation.predictions` writes and reads it). Everything runs under its own
seeded RNG and leaves the caller's random state alone.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xltlib.config.schema import EvalConfig
from xltlib.core.devices import model_device, to_device
from xltlib.evaluation.attacks import AttackResult, SynonymAttack, attack_pairs
from xltlib.evaluation.predict import bootstrap_ci
from xltlib.training.batching import collate, length_batches, tokenize_pairs
from xltlib.training.objectives import PGD, RSRP, load_synonym_table, median_token_norm, substitute_synonyms
from xltlib.training.objectives.base import model_inputs
from xltlib.training.objectives.synonyms import DEFAULT_TABLE
from xltlib.training.precision import bf16_inference

__all__ = ["ATTACKS", "ITEM_COLUMNS", "RobustnessScores", "RobustnessSettings", "is_robustness_metric", "is_share",
           "metric_order", "pair_scorer", "robustness_settings", "score_robustness"]

# attack -> how a table should name it
ATTACKS = {
    "clean": "clean (no attack)",
    "pgd": "PGD on word embeddings, l2, relative eps (adversarial)",
    "noise": "Gaussian noise on word embeddings, relative sigma (one random draw, not an attack)",
    "synonym_attack": "greedy synonym-swap attack within a query budget (adversarial)",
    "synonym_draw": "random synonym draw (not an attack)",
}
ITEM_COLUMNS = ("id", "attack", "strength", "gold", "prediction", "correct", "loss_gain", "status", "queries",
                "words", "words_total", "words_changed", "text_a", "text_b")
_PREFIXES = ("robust_", "attack_", "synonym_subst_rate")


# a table's column order: clean, then each attack's metrics in order of strength
_ORDER = ("robust_acc_clean", "robust_acc_pgd_", "attack_loss_gain_pgd_", "robust_acc_noise_",
          "robust_acc_synonym_attack", "attack_success_rate_synonym", "attack_perturbed_words_synonym",
          "attack_queries_synonym", "robust_acc_synonym_draw", "synonym_subst_rate")


def is_robustness_metric(metric: str) -> bool:
    """Whether a transfer row's metric is one of this module's (they need the model: `xlt rescore` keeps them)."""
    return metric.startswith(_PREFIXES)


def is_share(metric: str) -> bool:
    """Whether a robustness metric is a share in [0, 1] (shown as a percentage); loss gains and queries are not."""
    return metric.startswith(("robust_acc_", "attack_success_rate_", "attack_perturbed_words_", "synonym_subst_rate"))


def metric_order(metrics) -> list[str]:
    """Robustness ``metrics`` in reading order: clean, PGD by eps, its loss gains, noise by sigma, the synonym attack's
    log, the random synonym draw."""
    def key(m):
        rank = next((i for i, p in enumerate(_ORDER) if m == p or (p.endswith("_") and m.startswith(p))), len(_ORDER))
        try:
            strength = float(m.rsplit("_", 1)[-1])
        except ValueError:
            strength = 0.0
        return rank, strength, m
    return sorted((m for m in metrics if is_robustness_metric(m)), key=key)


@dataclass(frozen=True)
class RobustnessSettings:
    """The attacks every checkpoint of one task faces (see the module docstring)."""

    pgd_eps: tuple[float, ...]
    noise_sigma: tuple[float, ...]
    synonyms: Path  # the synonym table (JSON word -> neighbours)
    pgd_steps: int = 10
    query_budget: int = 300
    max_change: float = 0.2
    sentences: str = "second"
    seed: int = 0


def robustness_settings(ev: EvalConfig, task: str, data_dir: Path | None) -> RobustnessSettings:
    """The settings of ``task`` from ``evaluate.robustness_*``; ConfigError naming the key when a strength is not
    set for the task, ValueError when no synonym table is given and there is no data folder to find the default."""
    strengths = ev.robustness_strengths(task)
    if ev.robustness_synonyms:
        table = Path(ev.robustness_synonyms).expanduser()
    elif data_dir is not None:
        table = Path(data_dir) / DEFAULT_TABLE
    else:
        raise ValueError("evaluate.robustness_synonyms is not set and the run has no data_dir to find "
                         f"{DEFAULT_TABLE} in: give the synonym table's path")
    return RobustnessSettings(pgd_eps=tuple(strengths["pgd"]), noise_sigma=tuple(strengths["noise"]),
                              synonyms=table, pgd_steps=ev.robustness_attack_steps,
                              query_budget=ev.robustness_synonym_queries, max_change=ev.robustness_synonym_max_change,
                              sentences=ev.robustness_synonym_sentences)


@dataclass
class RobustnessScores:
    rows: list[dict] = field(default_factory=list)  # tidy rows (module docstring)
    items: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(ITEM_COLUMNS)))  # per-item outcomes
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per attack (summed over its strengths)


def _seed(seed: int, attack: str, strength: float) -> int:
    """One seed per (settings seed, attack, strength): the same draws for every checkpoint."""
    return int(np.random.SeedSequence([seed, zlib.crc32(f"{attack}:{strength!r}".encode())]).generate_state(1)[0])


def _batches(model, tokenizer, records, batch_size, max_length):
    ids = tokenize_pairs(tokenizer, [r["text_a"] for r in records], [r["text_b"] for r in records], max_length)
    labels = np.array([r["label"] for r in records])
    device = model_device(model)
    for idx in length_batches(np.array([len(x) for x in ids]), batch_size, rng=None):
        yield idx, to_device(collate([ids[i] for i in idx], tokenizer.pad_token_id, labels[idx]), device)


def _embedding_pass(model, tokenizer, records, delta_fn, batch_size, max_length):
    """(prediction, CE loss) per record of the model on word embeddings + delta_fn(embeds, batch)."""
    n = len(records)
    pred, loss = np.zeros(n, dtype=np.int64), np.zeros(n)
    for idx, batch in _batches(model, tokenizer, records, batch_size, max_length):
        embeds = model.get_input_embeddings()(batch["input_ids"]).detach()
        delta = delta_fn(embeds, batch)
        with torch.no_grad():
            logits = model(inputs_embeds=(embeds + delta).to(embeds.dtype), **model_inputs(batch)).logits.float()
        loss[idx] = torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none").cpu().numpy()
        pred[idx] = logits.argmax(-1).cpu().numpy()
    return pred, loss


def pair_scorer(model, tokenizer, batch_size: int = 32, max_length: int = 128):
    """pairs -> class probabilities [n, C] (the synonym attack's queries), length-sorted batches."""
    device = model_device(model)

    def score(pairs):
        ids = tokenize_pairs(tokenizer, [a for a, _ in pairs], [b for _, b in pairs], max_length)
        out = None
        for idx in length_batches(np.array([len(x) for x in ids]), batch_size, rng=None):
            batch = to_device(collate([ids[i] for i in idx], tokenizer.pad_token_id), device)
            with torch.no_grad():
                probs = torch.softmax(model(**batch).logits.float(), -1).cpu().numpy()
            if out is None:
                out = np.empty((len(ids), probs.shape[-1]))
            out[idx] = probs
        return out

    return score


def _row(metric, attack, values, ids, strength=float("nan"), scale="", language="en"):
    values = np.asarray(values, dtype=float)
    lo, hi = bootstrap_ci(values)
    value = float(values.mean()) if len(values) else float("nan")
    return dict(language=language, language2="", metric=metric, value=value,
                n=len(values), ci_low=lo, ci_high=hi, attack=attack, strength=float(strength), scale=scale,
                per_example=values.tolist(), item_ids=[str(i) for i in ids])


def _items(ids, gold, attack, strength, pred, **cols) -> pd.DataFrame:
    n = len(ids)
    base = dict(id=[str(i) for i in ids], attack=attack, strength=np.full(n, float(strength)), gold=gold,
                prediction=pred,
                correct=(pred == gold).astype(np.int8), loss_gain=np.full(n, np.nan), status="",
                queries=np.full(n, np.nan), words=np.full(n, np.nan), words_total=np.full(n, np.nan),
                words_changed=np.full(n, np.nan), text_a="", text_b="")
    base.update(cols)
    return pd.DataFrame(base, columns=list(ITEM_COLUMNS))


def _synonym_attack_rows(results: list[AttackResult], ids, settings, language) -> list[dict]:
    attacked = [(i, r) for i, r in zip(ids, results) if r.status != "skipped"]
    won = [(i, r) for i, r in zip(ids, results) if r.status == "successful"]
    budget, tag = settings.query_budget, "synonym_attack"
    rows = [
        _row("robust_acc_synonym_attack", tag, [r.correct for r in results], ids, budget, "queries", language),
        _row("attack_success_rate_synonym", tag, [r.status == "successful" for _, r in attacked],
             [i for i, _ in attacked], budget, "queries", language),
        _row("attack_perturbed_words_synonym", tag, [r.words_changed / max(r.words_total, 1) for _, r in won],
             [i for i, _ in won], budget, "queries", language),
        _row("attack_queries_synonym", tag, [r.queries for _, r in attacked], [i for i, _ in attacked], budget,
             "queries", language),
    ]
    return rows


def score_robustness(model, tokenizer, records: list[dict], settings: RobustnessSettings, *,
                     batch_size: int = 32, max_length: int = 128, max_examples: int | None = None,
                     bf16: bool = False, language: str = "en") -> RobustnessScores:
    """Rows and per-item outcomes of a fine-tuned pair classifier on ``records`` under ``settings``' attacks
    (module docstring). ``max_examples``: the first k records only, the same k for every checkpoint. ``bf16``: every
    pass with bf16 weights (:func:`~xltlib.training.precision.bf16_inference`, as the transfer stage scores; about
    2x faster on a CPU with bf16 instructions); the strength unit is measured on the fp32 weights first."""
    if max_examples is not None:
        records = records[:max_examples]
    if not records:
        raise ValueError("robustness: no English records to attack")
    ids = [r.get("id", k) for k, r in enumerate(records)]
    gold = np.array([r["label"] for r in records], dtype=np.int64)
    was_training = model.training
    model.eval()  # no dropout: the attack and the noise are the only randomness
    median_token_norm(model)  # the relative strength unit, cached on the fp32 table before any bf16 swap
    rows, items, seconds = [], [], {}
    run = dict(batch_size=batch_size, max_length=max_length)
    clock = time.perf_counter()

    def lap(attack):
        nonlocal clock
        now = time.perf_counter()
        seconds[attack] = seconds.get(attack, 0.0) + now - clock
        clock = now

    with torch.random.fork_rng(devices=[]), bf16_inference(model, bf16):
        pred, clean_loss = _embedding_pass(model, tokenizer, records, lambda e, b: torch.zeros_like(e), **run)
        rows.append(_row("robust_acc_clean", "clean", pred == gold, ids, language=language))
        items.append(_items(ids, gold, "clean", float("nan"), pred))
        lap("clean")

        for eps in settings.pgd_eps:
            attack = PGD(eps=eps, alpha=2.5 * eps / settings.pgd_steps, steps=settings.pgd_steps, norm="l2",
                         scale="relative", random_start=True, share_dropout=False)
            torch.manual_seed(_seed(settings.seed, "pgd", eps))
            pred, loss = _embedding_pass(model, tokenizer, records,
                                         lambda e, b, attack=attack: attack.attack(model, b, e), **run)
            rows.append(_row(f"robust_acc_pgd_{eps:g}", "pgd", pred == gold, ids, eps, "relative", language))
            rows.append(_row(f"attack_loss_gain_pgd_{eps:g}", "pgd", loss - clean_loss, ids, eps, "relative", language))
            items.append(_items(ids, gold, "pgd", eps, pred, loss_gain=loss - clean_loss))
            lap("pgd")

        for sigma in settings.noise_sigma:
            noise = RSRP(noise="gaussian", sigma=sigma, scale="relative")
            torch.manual_seed(_seed(settings.seed, "noise", sigma))
            pred, _ = _embedding_pass(model, tokenizer, records, lambda e, b, noise=noise: noise.draw_noise(
                model, e, b["attention_mask"].unsqueeze(-1).float()), **run)
            rows.append(_row(f"robust_acc_noise_{sigma:g}", "noise", pred == gold, ids, sigma, "relative", language))
            items.append(_items(ids, gold, "noise", sigma, pred))
            lap("noise")

        table = load_synonym_table(str(settings.synonyms), "normalized")
        attack = SynonymAttack(table, query_budget=settings.query_budget, max_change=settings.max_change,
                               sentences=settings.sentences)
        results = attack_pairs(attack, records, pair_scorer(model, tokenizer, **run), chunk=4 * batch_size)
        rows += _synonym_attack_rows(results, ids, settings, language)
        items.append(_items(
            ids, gold, "synonym_attack", settings.query_budget, np.array([r.prediction for r in results]),
            status=[r.status for r in results], queries=[r.queries for r in results],
            words=[r.words for r in results], words_total=[r.words_total for r in results],
            words_changed=[r.words_changed for r in results], text_a=[r.text_a for r in results],
            text_b=[r.text_b for r in results]))
        lap("synonym_attack")

        rng = np.random.default_rng(_seed(settings.seed, "synonym_draw", 0.0))
        exact = load_synonym_table(str(settings.synonyms), "exact")
        stats: dict = {}
        drawn_a = substitute_synonyms([r["text_a"] for r in records], exact, rng, "exact", stats)
        drawn_b = substitute_synonyms([r["text_b"] for r in records], exact, rng, "exact", stats)
        rate = stats.get("changed", 0) / max(stats.get("tokens", 0), 1)
        swapped = [dict(r, text_a=x, text_b=y) for r, x, y in zip(records, drawn_a, drawn_b)]
        pred, _ = _embedding_pass(model, tokenizer, swapped, lambda e, b: torch.zeros_like(e), **run)
        rows.append(_row("robust_acc_synonym_draw", "synonym_draw", pred == gold, ids, rate, "exact", language))
        rows.append(dict(language=language, language2="", metric="synonym_subst_rate", value=rate, n=len(records),
                         ci_low=float("nan"), ci_high=float("nan"), attack="synonym_draw", strength=rate,
                         scale="exact"))
        items.append(_items(ids, gold, "synonym_draw", rate, pred, text_a=drawn_a, text_b=drawn_b))
        lap("synonym_draw")
    model.train(was_training)
    return RobustnessScores(rows, pd.concat(items, ignore_index=True), seconds)
