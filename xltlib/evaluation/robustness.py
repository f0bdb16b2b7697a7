"""Did robust training make the model robust? English test accuracy of a pair classifier under attack.

For the English test records of a ``pair_classification`` task (``text_a``, ``text_b``, ``label``),
:func:`robustness_rows` scores a fine-tuned model

* clean: ``robust_acc_clean``;
* (a) under a PGD attack on the input word embeddings (Madry et al., 2018: random start, ``steps``
  signed/normalised ascent steps of 2.5 eps / steps, projection) at the trained strength eps and at
  2 eps: ``robust_acc_pgd_eps``, ``robust_acc_pgd_2eps`` (and the mean loss increase the attack
  causes, ``attack_loss_gain_pgd_eps`` / ``_2eps``, which must be positive for a working adversary);
* (b) with RS-DA synonym substitution of both sentences (one seeded draw per example, the table and
  lookup rule of RS-DA): ``robust_acc_synonym`` (and ``synonym_subst_rate``, tokens changed / tokens);
* (c) with Gaussian noise on the word embeddings at RS-RP's sigma (one draw per example):
  ``robust_acc_noise_sigma``.

Strengths come from the checkpoint's own objective where it has one (PGD's eps; FreeLB's
``adv_max_norm``; RS-RP's sigma and noise; RS-DA's table and lookup), with its ``scale``; otherwise
from the documented defaults of ``pgd`` and ``rs_rp``, so every method of a grid is attacked alike
(pass ``eps=`` / ``sigma=`` to fix them across methods). Rows are tidy: ``{language, language2,
metric, value, n, ci_low, ci_high, strength, scale}`` with a percentile bootstrap CI over examples.
Everything runs under its own seeded RNG and leaves the caller's random state alone.
"""
from __future__ import annotations

import numpy as np
import torch

from xltlib.core.devices import model_device, to_device
from xltlib.evaluation.predict import bootstrap_ci
from xltlib.training.batching import collate, length_batches, tokenize_pairs
from xltlib.training.objectives import PGD, RSDA, RSRP, SCALES, FreeLB, build_objective, objective_defaults
from xltlib.training.objectives.base import model_inputs

__all__ = ["robustness_rows", "attack_settings"]


def attack_settings(objective=None, *, eps: float | None = None, sigma: float | None = None,
                    scale: str | None = None) -> dict:
    """The strengths used against a checkpoint trained with ``objective`` (see the module docstring).

    ``eps`` / ``sigma`` / ``scale`` (``absolute`` | ``relative``, for both) fix them instead, e.g. to attack
    every method of a grid at one matched relative strength.
    """
    pgd = objective_defaults("pgd")
    out = dict(norm=pgd["norm"], eps=pgd["eps"], eps_scale=pgd["scale"])
    if isinstance(objective, PGD):
        out.update(norm=objective.norm, eps=objective.eps, eps_scale=objective.scale)
    elif isinstance(objective, FreeLB) and objective.adv_max_norm > 0:
        out.update(norm=objective.norm, eps=objective.adv_max_norm, eps_scale=objective.scale)
    rp = objective_defaults("rs_rp")
    out.update(noise=rp["noise"], sigma=rp["sigma"], sigma_scale=rp["scale"])
    if isinstance(objective, RSRP):
        out.update(noise=objective.noise, sigma=objective.sigma, sigma_scale=objective.scale)
    if eps is not None:
        out["eps"] = eps
    if sigma is not None:
        out["sigma"] = sigma
    if scale is not None:

        if scale not in SCALES:
            raise ValueError(f"robustness scale = {scale!r}: expected one of {', '.join(SCALES)}")
        out.update(eps_scale=scale, sigma_scale=scale)
    return out


def _batches(model, tokenizer, records, batch_size, max_length):
    ids = tokenize_pairs(tokenizer, [r["text_a"] for r in records], [r["text_b"] for r in records], max_length)
    labels = np.array([r["label"] for r in records])
    device = model_device(model)
    for idx in length_batches(np.array([len(x) for x in ids]), batch_size, rng=None):
        yield idx, to_device(collate([ids[i] for i in idx], tokenizer.pad_token_id, labels[idx]), device)


def _embed_scores(model, batch, delta_fn):
    """(correct per example, CE loss per example) of the model on embeddings + delta_fn(embeds, batch)."""
    embeds = model.get_input_embeddings()(batch["input_ids"]).detach()
    delta = delta_fn(embeds, batch)
    with torch.no_grad():
        logits = model(inputs_embeds=(embeds + delta).to(embeds.dtype), **model_inputs(batch)).logits.float()
    loss = torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
    return (logits.argmax(-1) == batch["labels"]).cpu().numpy(), loss.cpu().numpy()


def _row(metric, per_example, strength=float("nan"), scale="", language="en"):

    per_example = np.asarray(per_example, dtype=float)
    lo, hi = bootstrap_ci(per_example)
    # per_example: a method and the baseline are compared by a paired bootstrap over the same English rows
    return dict(language=language, language2="", metric=metric, value=float(per_example.mean()),
                n=len(per_example), ci_low=lo, ci_high=hi, strength=float(strength), scale=scale,
                per_example=per_example.tolist())


def robustness_rows(model, tokenizer, records: list[dict], *, objective=None, data_dir=None,
                    eps: float | None = None, sigma: float | None = None, scale: str | None = None,
                    attack_steps: int = 10,
                    batch_size: int = 32, max_length: int = 128, max_examples: int | None = None,
                    seed: int = 0, language: str = "en") -> list[dict]:
    """Tidy robustness rows of a fine-tuned pair classifier on English ``records`` (see the module docstring).

    ``objective``: the checkpoint's training objective (strengths, synonym table); ``data_dir``: where
    the default synonym table lives when the objective is not RS-DA (no synonym rows without either).
    ``max_examples``: score the first k records only (the attack costs 2 x (attack_steps + 1) passes).
    """
    if max_examples is not None:
        records = records[:max_examples]
    s = attack_settings(objective, eps=eps, sigma=sigma, scale=scale)
    was_training = model.training
    model.eval()  # no dropout: the attack and the noise are the only randomness
    rows = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        n = len(records)
        clean_ok, clean_loss = np.zeros(n), np.zeros(n)
        for idx, batch in _batches(model, tokenizer, records, batch_size, max_length):
            clean_ok[idx], clean_loss[idx] = _embed_scores(model, batch, lambda e, b: torch.zeros_like(e))
        rows.append(_row("robust_acc_clean", clean_ok, language=language))

        for mult, tag in ((1, "eps"), (2, "2eps")):
            strength = s["eps"] * mult
            attack = PGD(eps=strength, alpha=max(2.5 * strength / attack_steps, 1e-12), steps=attack_steps,
                         norm=s["norm"], scale=s["eps_scale"], random_start=True, share_dropout=False)
            ok, loss = np.zeros(n), np.zeros(n)
            for idx, batch in _batches(model, tokenizer, records, batch_size, max_length):
                ok[idx], loss[idx] = _embed_scores(model, batch, lambda e, b: attack.attack(model, b, e))
            rows.append(_row(f"robust_acc_pgd_{tag}", ok, strength, s["eps_scale"], language))
            rows.append(_row(f"attack_loss_gain_pgd_{tag}", loss - clean_loss, strength, s["eps_scale"], language))

        noise = RSRP(noise=s["noise"], sigma=s["sigma"], scale=s["sigma_scale"])
        ok = np.zeros(n)
        for idx, batch in _batches(model, tokenizer, records, batch_size, max_length):
            ok[idx], _ = _embed_scores(model, batch, lambda e, b: noise.draw_noise(
                model, e, b["attention_mask"].unsqueeze(-1).float()))
        rows.append(_row("robust_acc_noise_sigma", ok, s["sigma"], s["sigma_scale"], language))

        syn = objective if isinstance(objective, RSDA) else (
            build_objective("rs_da", {}, data_dir=data_dir) if data_dir is not None else None)
        if syn is not None:
            rng = np.random.default_rng(seed)
            syn.pop_text_stats()
            a = syn.transform_texts([r["text_a"] for r in records], rng)
            b = syn.transform_texts([r["text_b"] for r in records], rng)
            rate = syn.pop_text_stats().get("subst_rate", 0.0)
            swapped = [dict(r, text_a=x, text_b=y) for r, x, y in zip(records, a, b)]
            ok = np.zeros(n)
            for idx, batch in _batches(model, tokenizer, swapped, batch_size, max_length):
                ok[idx], _ = _embed_scores(model, batch, lambda e, b: torch.zeros_like(e))
            rows.append(_row("robust_acc_synonym", ok, rate, syn.lookup, language))
            rows.append(dict(language=language, language2="", metric="synonym_subst_rate", value=rate, n=n,
                             ci_low=float("nan"), ci_high=float("nan"), strength=rate, scale=syn.lookup))
    model.train(was_training)
    return rows
