"""Objectives that act on the input word embeddings: baseline, PGD, FreeLB, RS-RP.

All perturbations ``delta`` have the shape of ``model.get_input_embeddings()(input_ids)``
([batch, seq, hidden]), are float32, and are zero on padding (attention_mask == 0). Like
FreeLB, every non-pad token (special tokens included) is perturbed. L2 norms are taken per
example over the whole (seq x hidden) perturbation, as in FreeLB.

Strength scale (``scale``):

* ``absolute`` (the references' convention): ``eps`` etc. are raw lengths in embedding space, per
  example (l2) or per coordinate (linf / Gaussian sigma). Budgets copied from RoBERTa-large
  (H = 1024) mean something else on a 384-wide encoder with smaller embeddings.
* ``relative``: every length is a fraction of the encoder's median token-embedding norm ``r``
  (:func:`median_token_norm`) *per token*. An l2 budget ``eps`` becomes the per-example radius
  ``eps * r * sqrt(n)`` (n = real tokens of the example: an RMS per-token norm of ``eps * r`` when
  the ball is full); a linf budget becomes the per-coordinate bound ``eps * r / sqrt(H)`` (a token
  at a corner of the box has norm ``eps * r``); RS-RP's ``sigma`` gives noise of RMS per-token norm
  ``sigma * r``. So one number means the same on any encoder.

Every ``loss_and_backward`` leaves diagnostics in ``self.last_stats``: ``clean_loss``,
``adv_loss`` (loss at the final perturbation / on the noisy copies), ``loss_gap`` (adv - clean),
``delta_token_norm`` (mean over real tokens of the per-token L2 norm of delta) and
``delta_token_norm_rel`` (the same over ``r``). The clean loss costs one extra no-grad forward
where no pass is clean (``diagnose = False`` skips it).
"""
from __future__ import annotations

import torch

from xltlib.training.dropout import shared_dropout_masks
from xltlib.training.objectives.base import (
    Objective,
    boolean,
    choice,
    integer,
    model_inputs,
    optional_real,
    real,
    register,
)

__all__ = ["Baseline", "PGD", "FreeLB", "RSRP", "median_token_norm", "SCALES"]

SCALES = ("absolute", "relative")


def median_token_norm(model) -> float:
    """Median L2 norm of the rows of the word-embedding table (cached per table on first use).

    Measured once: embeddings are frozen by default; a trainable table moves little over a run.
    """
    w = model.get_input_embeddings().weight
    cached = getattr(w, "_xlt_median_norm", None)  # on the parameter: it survives the bf16 cast of .data
    if cached is None:
        with torch.no_grad():
            cached = float(torch.linalg.vector_norm(w.detach().float(), dim=1).median())
        w._xlt_median_norm = cached
    return cached


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
    """The model on ``embeds``, in the embedding table's dtype: fp32 in training, where the embedding block stays
    fp32 in a bf16-weight model (xltlib.training.precision); bf16 under ``bf16_inference``."""
    embeds = embeds.to(model.get_input_embeddings().weight.dtype)
    kw = model_inputs(batch)
    if labels:
        kw["labels"] = batch["labels"]
    return model(inputs_embeds=embeds, **kw)


def token_norm(delta: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over real tokens of the per-token L2 norm of ``delta``."""
    per_token = torch.linalg.vector_norm(delta.float(), dim=-1) * mask[..., 0]
    return float(per_token.sum() / mask.sum().clamp_min(1))


def uniform_start(ref: torch.Tensor, mask: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """The FreeLB repository's random start: uniform in [-1, 1] per real-token coordinate, scaled per example
    by ``mag / sqrt(n * H)`` (n real tokens, H hidden size), fp32 (zhuchen03/FreeLB @ eb23701,
    fairseq-RoBERTa/fairseq/tasks/sentence_prediction.py lines 108-111 for FreeLB, 212-215 for vanilla PGD)."""
    u = (torch.rand_like(ref, dtype=torch.float32) * 2 - 1) * mask
    dims = mask.sum(dim=(1, 2)).clamp_min(1) * ref.shape[-1]
    return u * (mag / dims.sqrt().view(-1, 1, 1))


class _EmbeddingObjective(Objective):
    """Shared pieces: the strength unit of ``scale``, the adversarial phase and the diagnostics."""

    diagnose = True  # compute clean_loss etc. for last_stats (train_model sets it from TrainConfig)
    updates = 0  # loss_and_backward calls so far: one per optimizer update

    def before_adversarial_phase(self) -> bool:
        """Counts this update; True while it comes before ``adv_begin_iter`` (a plain cross-entropy step)."""
        self.updates += 1
        return self.updates <= self.hparams.get("adv_begin_iter", 0)

    def state_dict(self) -> dict:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state.get("updates", 0))

    def prepare(self, model) -> None:
        """Measure the reference norm on the model as loaded (fp32), before any precision cast."""
        median_token_norm(model)

    def unit(self, model, mask: torch.Tensor, norm: str) -> torch.Tensor:
        """[B, 1, 1] factor turning a budget in ``scale`` units into a raw per-example (l2) or per-coordinate
        (linf) length."""
        if self.scale == "absolute":
            return torch.ones(mask.shape[0], 1, 1, device=mask.device)
        r = median_token_norm(model)
        if norm == "l2":
            return r * mask.sum(dim=(1, 2)).clamp_min(1).sqrt().view(-1, 1, 1)
        hidden = model.get_input_embeddings().weight.shape[1]
        return torch.full((mask.shape[0], 1, 1), r / hidden ** 0.5, device=mask.device)

    @torch.no_grad()
    def _clean_loss(self, model, embeds, batch) -> float:
        return float(_forward(model, embeds.detach(), batch).loss)

    def _record(self, model, clean: float | None, adv: float, delta: torch.Tensor, mask: torch.Tensor) -> None:
        tn = token_norm(delta, mask)
        stats = {"adv_loss": adv, "delta_token_norm": tn, "delta_token_norm_rel": tn / median_token_norm(model)}
        if clean is not None:
            stats.update(clean_loss=clean, loss_gap=adv - clean)
        self.last_stats = stats


@register("baseline")
class Baseline(Objective):
    """Plain cross-entropy fine-tuning (one forward/backward per batch)."""


@register("pgd")
class PGD(_EmbeddingObjective):
    """K-step PGD adversarial training on input word embeddings (Madry et al., 2018, ICLR).

    Inner max: ``steps`` = K ascent steps of size ``alpha`` within an ``eps`` ball (``l2``: normalised
    gradient step + per-example projection; ``linf``: signed gradient step + clamp), from a
    uniform random point of the ball if ``random_start``. The ascent uses
    ``torch.autograd.grad`` w.r.t. delta only, so no gradient reaches the parameters until the
    final loss ``(1 - clean_weight) * L(x + delta) + clean_weight * L(x)``.
    Cost: K forward/backward (input grads only) + 1 (+1 if 0 < clean_weight < 1): K+1 passes and K
    ascent steps, as the reference's ``std_adv_train_step`` (zhuchen03/FreeLB @ eb23701,
    fairseq-RoBERTa/fairseq/tasks/sentence_prediction.py, lines 186-248).

    ``share_dropout`` (default, as the reference: ``init_dp=self.args.no_sync_dp``, line 245, with
    ``--no-sync-dp`` off by default, line 61): every pass of a batch uses the dropout masks of the
    first (:func:`xltlib.training.dropout.shared_dropout_masks`; applies to dropout installed by
    :func:`xltlib.training.dropout.use_fast_dropout`, which train_model always installs).

    Defaults (l2, eps=0.2, alpha=0.1, steps=2, random start, absolute scale) are the vanilla-PGD
    MNLI setting of the same repository (fairseq-RoBERTa/launch/VanillaPGD/stdadv-mnli-fp32-clip.sh,
    line 61: adv-lr 1e-1, adv-steps 2, rand-init-mag 2e-1, max-norm 2e-1).

    ``start`` (with ``random_start``): ``reference`` draws delta_0 as the reference does, uniform in [-1, 1]
    per real-token coordinate times ``init_mag / sqrt(n * H)`` (n real tokens, H hidden size;
    sentence_prediction.py lines 212-215), so its norm is about ``init_mag / sqrt(3)``; ``init_mag``
    defaults to ``eps`` (the MNLI script sets rand-init-mag = max-norm = 0.2). ``ball``: uniform in the eps
    ball (Madry et al.), which in n * H dimensions sits on the ball's surface. ``adv_begin_iter``: updates
    before it are plain cross-entropy steps (``--adv-begin-iter``, checked at line 209; 0 = adversarial from the
    first update). ``clean_weight=0`` is Madry et al.'s pure adversarial risk. The final delta is kept in
    ``self.last_delta``.
    """

    HPARAMS = {
        "norm": choice("l2", "l2", "linf"),
        "eps": real(0.2, 0.0),
        "alpha": real(0.1, 0.0, lo_open=True),
        "steps": integer(2, 1),
        "random_start": boolean(True),
        "start": choice("reference", "reference", "ball"),
        "init_mag": optional_real(0.0),
        "adv_begin_iter": integer(0, 0),
        "clean_weight": real(0.0, 0.0, 1.0),
        "scale": choice("absolute", *SCALES),
        "share_dropout": boolean(True),
    }

    def _init_delta(self, ref: torch.Tensor, mask: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        if not self.random_start or self.eps == 0:
            return torch.zeros_like(ref, dtype=torch.float32)
        if self.norm == "linf":
            return (torch.rand_like(ref, dtype=torch.float32) * 2 - 1) * eps * mask
        if self.start == "reference":
            mag = eps if self.init_mag is None else eps * (self.init_mag / self.eps)  # init_mag in eps's units
            return uniform_start(ref, mask, mag)
        # uniform in the L2 ball over the n = tokens * hidden unmasked coordinates
        direction = torch.randn_like(ref, dtype=torch.float32) * mask
        direction = direction / _norm(direction).clamp_min(1e-12)
        n = mask.sum(dim=(1, 2)) * ref.shape[-1]
        radius = eps.view(-1) * torch.rand(ref.shape[0], device=ref.device).pow(1.0 / n.clamp_min(1))
        return direction * radius.view(-1, 1, 1)

    def _ascend(self, delta, grad, mask, eps, alpha):
        if self.norm == "l2":
            delta = (delta + alpha * grad / _norm(grad).clamp_min(1e-12)) * mask
            return delta * (eps / _norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        return torch.minimum(torch.maximum(delta + alpha * grad.sign(), -eps), eps) * mask

    def attack(self, model, batch, embeds: torch.Tensor | None = None) -> torch.Tensor:
        """The PGD perturbation of ``batch`` (no parameter gradients); used for training and evaluation."""
        if embeds is None:
            embeds = model.get_input_embeddings()(batch["input_ids"])
        mask = _pad_mask(batch, embeds)
        clean = embeds.detach()
        unit = self.unit(model, mask, self.norm)
        eps, alpha = self.eps * unit, self.alpha * unit
        delta = self._init_delta(clean, mask, eps)
        for _ in range(self.steps):
            delta.requires_grad_(True)
            adv = _forward(model, clean + delta, batch).loss
            (grad,) = torch.autograd.grad(adv, delta)
            delta = self._ascend(delta.detach(), grad.float(), mask, eps, alpha)
        return delta

    def loss_and_backward(self, model, batch):
        if self.clean_weight == 1.0 or self.before_adversarial_phase():
            return super().loss_and_backward(model, batch)
        with shared_dropout_masks(self.share_dropout):
            embeds = model.get_input_embeddings()(batch["input_ids"])
            mask = _pad_mask(batch, embeds)
            delta = self.attack(model, batch, embeds)
            self.last_delta = delta
            adv = _forward(model, embeds + delta, batch).loss
            loss, clean = adv, None
            if self.clean_weight > 0:
                clean_loss = _forward(model, embeds, batch).loss
                loss = (1 - self.clean_weight) * adv + self.clean_weight * clean_loss
                clean = float(clean_loss.detach())
            elif self.diagnose:
                clean = self._clean_loss(model, embeds, batch)
            loss.backward()
        self._record(model, clean, float(adv.detach()), delta, mask)
        return loss.detach()


@register("freelb")
class FreeLB(_EmbeddingObjective):
    """FreeLB (Zhu et al., 2020, ICLR): "free" large-batch adversarial training, with the pass semantics
    of the fairseq script its defaults come from.

    ``adv_steps`` = K ascent steps = K+1 forward/backward passes on x + delta_0 ... x + delta_K; each
    backpropagates loss/(K+1) into the parameters (gradients accumulate: the update uses the average
    over the K+1 perturbations) and gives delta's gradient, used for a normalised ascent step of size
    ``adv_lr`` then projected to ``adv_max_norm`` (0 = unbounded). delta_0 is uniform noise of
    magnitude ``adv_init_mag`` (per-example L2 scaling by 1/sqrt(tokens*hidden)). The caller does one
    optimizer step per batch. Returns the sum of the K+1 scaled losses (their mean).

    Reference: zhuchen03/FreeLB @ eb23701, fairseq-RoBERTa/fairseq/tasks/sentence_prediction.py,
    ``freelb_train_step``, lines 78-184: a first pass on delta_0 (line 117), ``loss / (1 + adv_steps)``
    (lines 127 and 179), then ``for t_adv in range(adv_steps)``: ascent step, projection, pass (lines
    137-182). (The Hugging Face port, huggingface-transformers/examples/run_glue_freelb.py, makes
    ``adv-K`` passes with loss/K instead; its defaults are not the ones used here.)
    ``share_dropout``: passes after the first reuse the first pass's dropout masks, as
    ``init_dp=self.args.no_sync_dp`` (line 178, ``--no-sync-dp`` off by default, line 61).

    Defaults (l2, adv_lr=0.1, adv_steps=2, adv_init_mag=0.1, adv_max_norm=0.3, absolute scale) are
    the FreeLB MNLI setting (fairseq-RoBERTa/launch/FreeLB/mnli-fp32-clip.sh, line 63: ADV_LR 1e-1,
    ADV_STEP 2, INIT_MAG 1e-1, MNORM 3e-1), MNLI being the English source of XNLI. ``adv_begin_iter``:
    updates before it are plain cross-entropy steps (``--adv-begin-iter``, sentence_prediction.py line 59,
    checked at line 103 of its training step; 0 = adversarial from the first update, the scripts' -1). The last delta is
    kept in ``self.last_delta``.
    """

    HPARAMS = {
        "norm": choice("l2", "l2", "linf"),
        "adv_lr": real(0.1, 0.0, lo_open=True),
        "adv_steps": integer(2, 1),
        "adv_init_mag": real(0.1, 0.0),
        "adv_max_norm": real(0.3, 0.0),
        "adv_begin_iter": integer(0, 0),
        "scale": choice("absolute", *SCALES),
        "share_dropout": boolean(True),
    }

    def passes(self) -> int:
        """Forward/backward passes per batch (K ascent steps + 1)."""
        return self.adv_steps + 1

    def _init_delta(self, embeds, mask, unit):
        if self.adv_init_mag == 0:
            return torch.zeros_like(embeds, dtype=torch.float32)
        mag = self.adv_init_mag * unit
        if self.norm == "linf":
            return (torch.rand_like(embeds, dtype=torch.float32) * 2 - 1) * mag * mask
        return uniform_start(embeds, mask, mag)

    def _ascend(self, delta, grad, mask, unit):
        p = 2.0 if self.norm == "l2" else float("inf")
        delta = (delta + self.adv_lr * unit * grad / _norm(grad, p).clamp_min(1e-8)) * mask
        if self.adv_max_norm > 0:
            cap = self.adv_max_norm * unit
            if self.norm == "l2":
                delta = delta * (cap / _norm(delta).clamp_min(1e-12)).clamp(max=1.0)
            else:
                delta = torch.minimum(torch.maximum(delta, -cap), cap)
        return delta

    def loss_and_backward(self, model, batch):
        if self.before_adversarial_phase():
            return Objective.loss_and_backward(self, model, batch)
        embedding = model.get_input_embeddings()
        passes = self.passes()
        with shared_dropout_masks(self.share_dropout):
            embeds = embedding(batch["input_ids"])
            mask = _pad_mask(batch, embeds)
            unit = self.unit(model, mask, self.norm)
            delta = self._init_delta(embeds, mask, unit)
            clean = self._clean_loss(model, embeds, batch) if self.diagnose and self.adv_init_mag > 0 else None
            total = torch.zeros((), device=embeds.device)
            for step in range(passes):
                if step > 0:  # the lookup's graph was freed by backward(); re-gathering is cheap
                    embeds = embedding(batch["input_ids"])
                delta.requires_grad_(True)
                raw = _forward(model, embeds + delta, batch).loss
                (raw / passes).backward()
                total += raw.detach().float() / passes
                if step == 0 and clean is None and self.adv_init_mag == 0:
                    clean = float(raw.detach())  # delta_0 = 0: the first pass is the clean one
                if step < passes - 1:
                    delta = self._ascend(delta.detach(), delta.grad.float(), mask, unit)
        self.last_delta = delta.detach()
        self._record(model, clean, float(raw.detach()), self.last_delta, mask)
        return total


@register("rs_rp")
class RSRP(_EmbeddingObjective):
    """Randomized smoothing with random perturbations of the word embeddings.

    Training (Huang et al., 2021, EMNLP, "RS-RP"; Gaussian data augmentation of Cohen et al.,
    2019, ICML): each example is repeated ``m`` times, each copy gets fresh noise on its (non-pad)
    word embeddings, and the loss is averaged over the m*B copies (one forward/backward on the
    repeated batch). ``noise='gaussian'``: N(0, s^2) per coordinate; ``'uniform'``: U[-s, s] per
    coordinate, with s = ``sigma`` (``scale: absolute``) or s such that the RMS per-token noise norm
    is ``sigma`` times the median token-embedding norm (``scale: relative``).
    ``test_time_votes`` = n > 0: ``predict_logits`` returns the class vote counts of n noisy
    copies (the smoothed classifier's majority vote, Cohen et al. 2019); 0 = clean prediction.

    Defaults: gaussian (Cohen et al.), m=1 (one draw per example per step, the usual Gaussian
    augmentation; cost = baseline), sigma=0.01 absolute -- NOT taken from Huang et al. (their value
    could not be checked here): per token about 12% of a median mE5-small embedding. Tune it, or
    compare methods at matched relative strengths.
    """

    HPARAMS = {
        "noise": choice("gaussian", "gaussian", "uniform"),
        "sigma": real(0.01, 0.0),
        "m": integer(1, 1),
        "test_time_votes": integer(0, 0),
        "scale": choice("absolute", *SCALES),
    }

    def coordinate_scale(self, model) -> float:
        """The per-coordinate noise parameter s (std for gaussian, half-width for uniform)."""
        if self.scale == "absolute":
            return self.sigma
        hidden = model.get_input_embeddings().weight.shape[1]
        per_coord_rms = self.sigma * median_token_norm(model) / hidden ** 0.5
        return per_coord_rms * (3 ** 0.5 if self.noise == "uniform" else 1.0)  # U[-s, s] has RMS s/sqrt(3)

    def draw_noise(self, model, embeds, mask):
        s = self.coordinate_scale(model)
        if self.noise == "gaussian":
            noise = torch.randn_like(embeds, dtype=torch.float32) * s
        else:
            noise = (torch.rand_like(embeds, dtype=torch.float32) * 2 - 1) * s
        return noise * mask

    def loss_and_backward(self, model, batch):
        embeds = model.get_input_embeddings()(batch["input_ids"])
        # m == 1: the diagnostic clean pass uses the training pass's dropout masks, so the gap is the noise's
        with shared_dropout_masks(self.diagnose and self.m == 1):
            clean = self._clean_loss(model, embeds, batch) if self.diagnose else None
            if self.m > 1:
                batch = {k: _repeat(v, self.m) for k, v in batch.items() if torch.is_tensor(v)}
                embeds = _repeat(embeds, self.m)
            mask = _pad_mask(batch, embeds)
            delta = self.draw_noise(model, embeds, mask)
            loss = _forward(model, embeds + delta, batch).loss
            loss.backward()
        self._record(model, clean, float(loss.detach()), delta, mask)
        return loss.detach()

    @torch.no_grad()
    def predict_logits(self, model, batch):
        if self.test_time_votes == 0:
            return super().predict_logits(model, batch)
        embeds = model.get_input_embeddings()(batch["input_ids"])
        mask = _pad_mask(batch, embeds)
        counts = None
        for _ in range(self.test_time_votes):  # B-sized passes: bounded memory, no extra work
            logits = _forward(model, embeds + self.draw_noise(model, embeds, mask), batch, labels=False).logits
            votes = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
            counts = votes if counts is None else counts + votes
        return counts
