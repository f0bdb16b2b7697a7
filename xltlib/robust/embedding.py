"""Objectives that act on the input word embeddings: baseline, PGD, FreeLB, RS-RP.

All perturbations ``delta`` have the shape of ``model.get_input_embeddings()(input_ids)``
([batch, seq, hidden]), are float32, and are zero on padding (attention_mask == 0). Like
FreeLB, every non-pad token (special tokens included) is perturbed. L2 norms are taken per
example over the whole (seq x hidden) perturbation, as in FreeLB.
"""
from __future__ import annotations

import torch

from .base import Objective, boolean, choice, integer, model_inputs, real, register

__all__ = ["Baseline", "PGD", "FreeLB", "RSRP"]


def _pad_mask(batch: dict[str, torch.Tensor], embeds: torch.Tensor) -> torch.Tensor:
    """[B, L, 1] float32 mask: 1 on real tokens, 0 on padding."""
    am = batch.get("attention_mask")
    if am is None:
        return torch.ones(embeds.shape[:2] + (1,), device=embeds.device)
    return am.unsqueeze(-1).to(device=embeds.device, dtype=torch.float32)


def _norm(x: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Per-example norm over all but the batch dimension, shaped [B, 1, 1]."""
    return torch.linalg.vector_norm(x.flatten(1), ord=p, dim=1).view(-1, 1, 1)


def _repeat(t: torch.Tensor, m: int) -> torch.Tensor:
    return t.repeat(m, *([1] * (t.dim() - 1)))


def _forward(model, embeds, batch, labels=True):
    """The model on ``embeds`` (perturbations are fp32; a bf16-weight model takes bf16 inputs)."""
    embeds = embeds.to(model.get_input_embeddings().weight.dtype)
    kw = model_inputs(batch)
    if labels:
        kw["labels"] = batch["labels"]
    return model(inputs_embeds=embeds, **kw)


@register("baseline")
class Baseline(Objective):
    """Plain cross-entropy fine-tuning (one forward/backward per batch)."""


@register("pgd")
class PGD(Objective):
    """K-step PGD adversarial training on input word embeddings (Madry et al., 2018, ICLR).

    Inner max: ``steps`` ascent steps of size ``alpha`` within an ``eps`` ball (``l2``: normalised
    gradient step + per-example projection; ``linf``: signed gradient step + clamp), from a
    uniform random point of the ball if ``random_start``. The ascent uses
    ``torch.autograd.grad`` w.r.t. delta only, so no gradient reaches the parameters until the
    final loss ``(1 - clean_weight) * L(x + delta) + clean_weight * L(x)``.
    Cost: K forward/backward (input grads only) + 1 (+1 if 0 < clean_weight < 1).

    Defaults (l2, eps=0.2, alpha=0.1, steps=2, random start) are the vanilla-PGD MNLI setting of
    the FreeLB code (zhuchen03/FreeLB, fairseq-RoBERTa/launch/VanillaPGD/stdadv-mnli-*.sh:
    adv-lr 1e-1, adv-steps 2, rand-init-mag 2e-1, max-norm 2e-1). ``clean_weight=0`` is Madry
    et al.'s pure adversarial risk. The final delta is kept in ``self.last_delta``.
    """

    HPARAMS = {
        "norm": choice("l2", "l2", "linf"),
        "eps": real(0.2, 0.0),
        "alpha": real(0.1, 0.0, lo_open=True),
        "steps": integer(2, 1),
        "random_start": boolean(True),
        "clean_weight": real(0.0, 0.0, 1.0),
    }

    def _init_delta(self, ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.random_start or self.eps == 0:
            return torch.zeros_like(ref, dtype=torch.float32)
        if self.norm == "linf":
            return (torch.rand_like(ref, dtype=torch.float32) * 2 - 1) * self.eps * mask
        # uniform in the L2 ball over the n = tokens * hidden unmasked coordinates
        direction = torch.randn_like(ref, dtype=torch.float32) * mask
        direction = direction / _norm(direction).clamp_min(1e-12)
        n = mask.sum(dim=(1, 2)) * ref.shape[-1]
        radius = self.eps * torch.rand(ref.shape[0], device=ref.device).pow(1.0 / n.clamp_min(1))
        return direction * radius.view(-1, 1, 1)

    def _ascend(self, delta, grad, mask):
        if self.norm == "l2":
            delta = (delta + self.alpha * grad / _norm(grad).clamp_min(1e-12)) * mask
            return delta * (self.eps / _norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        return (delta + self.alpha * grad.sign()).clamp(-self.eps, self.eps) * mask

    def loss_and_backward(self, model, batch):
        if self.clean_weight == 1.0:
            return super().loss_and_backward(model, batch)
        embeds = model.get_input_embeddings()(batch["input_ids"])
        mask = _pad_mask(batch, embeds)
        clean = embeds.detach()
        delta = self._init_delta(clean, mask)
        for _ in range(self.steps):
            delta.requires_grad_(True)
            adv = _forward(model, clean + delta, batch).loss
            (grad,) = torch.autograd.grad(adv, delta)
            delta = self._ascend(delta.detach(), grad.float(), mask)
        self.last_delta = delta
        loss = _forward(model, embeds + delta, batch).loss
        if self.clean_weight > 0:
            loss = (1 - self.clean_weight) * loss + self.clean_weight * _forward(model, embeds, batch).loss
        loss.backward()
        return loss.detach()


@register("freelb")
class FreeLB(Objective):
    """FreeLB (Zhu et al., 2020, ICLR): "free" large-batch adversarial training.

    ``adv_steps`` = K forward/backward passes on x + delta_t; each backpropagates loss/K into the
    parameters (gradients accumulate: the update uses the average over the K perturbations) and
    gives delta's gradient, used for a normalised ascent step of size ``adv_lr`` then projected to
    ``adv_max_norm`` (0 = unbounded). delta_0 is uniform noise of magnitude ``adv_init_mag``
    (per-example L2 scaling by 1/sqrt(tokens*hidden), as in the reference code). The caller does
    one optimizer step per batch. Returns the mean adversarial loss over the K steps.

    Defaults (l2, adv_lr=0.1, adv_steps=2, adv_init_mag=0.1, adv_max_norm=0.3) are the FreeLB MNLI
    setting (zhuchen03/FreeLB, fairseq-RoBERTa/launch/FreeLB/mnli-fp32-clip.sh), MNLI being the
    English source of XNLI. The last delta is kept in ``self.last_delta``.
    """

    HPARAMS = {
        "norm": choice("l2", "l2", "linf"),
        "adv_lr": real(0.1, 0.0, lo_open=True),
        "adv_steps": integer(2, 1),
        "adv_init_mag": real(0.1, 0.0),
        "adv_max_norm": real(0.3, 0.0),
    }

    def _init_delta(self, embeds, mask):
        if self.adv_init_mag == 0:
            return torch.zeros_like(embeds, dtype=torch.float32)
        u = torch.rand_like(embeds, dtype=torch.float32) * 2 - 1
        if self.norm == "linf":
            return u * self.adv_init_mag * mask
        dims = mask.sum(dim=(1, 2)).clamp_min(1) * embeds.shape[-1]
        return u * mask * (self.adv_init_mag / dims.sqrt()).view(-1, 1, 1)

    def _ascend(self, delta, grad, mask):
        p = 2.0 if self.norm == "l2" else float("inf")
        delta = (delta + self.adv_lr * grad / _norm(grad, p).clamp_min(1e-8)) * mask
        if self.adv_max_norm > 0:
            if self.norm == "l2":
                delta = delta * (self.adv_max_norm / _norm(delta).clamp_min(1e-12)).clamp(max=1.0)
            else:
                delta = delta.clamp(-self.adv_max_norm, self.adv_max_norm)
        return delta

    def loss_and_backward(self, model, batch):
        embedding = model.get_input_embeddings()
        embeds = embedding(batch["input_ids"])
        mask = _pad_mask(batch, embeds)
        delta = self._init_delta(embeds, mask)
        total = torch.zeros((), device=embeds.device)
        for step in range(self.adv_steps):
            if step > 0:  # the lookup's graph was freed by backward(); re-gathering is cheap
                embeds = embedding(batch["input_ids"])
            delta.requires_grad_(True)
            loss = _forward(model, embeds + delta, batch).loss / self.adv_steps
            loss.backward()
            total += loss.detach().float()
            if step < self.adv_steps - 1:
                delta = self._ascend(delta.detach(), delta.grad.float(), mask)
        self.last_delta = delta.detach()
        return total


@register("rs_rp")
class RSRP(Objective):
    """Randomized smoothing with random perturbations of the word embeddings.

    Training (Huang et al., 2021, EMNLP, "RS-RP"; Gaussian data augmentation of Cohen et al.,
    2019, ICML): each example is repeated ``m`` times, each copy gets fresh noise on its (non-pad)
    word embeddings, and the loss is averaged over the m*B copies (one forward/backward on the
    repeated batch). ``noise='gaussian'``: N(0, sigma^2) per coordinate; ``'uniform'``:
    U[-sigma, sigma] per coordinate (an L-inf ball of radius sigma).
    ``test_time_votes`` = n > 0: ``predict_logits`` returns the class vote counts of n noisy
    copies (the smoothed classifier's majority vote, Cohen et al. 2019); 0 = clean prediction.

    Defaults: gaussian (Cohen et al.), m=1 (one draw per example per step, the usual Gaussian
    augmentation; cost = baseline), sigma=0.01 -- NOT taken from Huang et al. (their value could
    not be checked here); chosen so the per-token noise norm sigma*sqrt(768) ~= 0.28 stays
    well below a word-embedding norm of mBERT-base: tune it.
    """

    HPARAMS = {
        "noise": choice("gaussian", "gaussian", "uniform"),
        "sigma": real(0.01, 0.0),
        "m": integer(1, 1),
        "test_time_votes": integer(0, 0),
    }

    def _noisy(self, embeds, mask):
        if self.noise == "gaussian":
            noise = torch.randn_like(embeds, dtype=torch.float32) * self.sigma
        else:
            noise = (torch.rand_like(embeds, dtype=torch.float32) * 2 - 1) * self.sigma
        return embeds + noise * mask

    def loss_and_backward(self, model, batch):
        embeds = model.get_input_embeddings()(batch["input_ids"])
        if self.m > 1:
            batch = {k: _repeat(v, self.m) for k, v in batch.items() if torch.is_tensor(v)}
            embeds = _repeat(embeds, self.m)
        loss = _forward(model, self._noisy(embeds, _pad_mask(batch, embeds)), batch).loss
        loss.backward()
        return loss.detach()

    @torch.no_grad()
    def predict_logits(self, model, batch):
        if self.test_time_votes == 0:
            return super().predict_logits(model, batch)
        embeds = model.get_input_embeddings()(batch["input_ids"])
        mask = _pad_mask(batch, embeds)
        counts = None
        for _ in range(self.test_time_votes):  # B-sized passes: bounded memory, no extra work
            logits = _forward(model, self._noisy(embeds, mask), batch, labels=False).logits
            votes = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
            counts = votes if counts is None else counts + votes
        return counts
