"""Fine-tuning loop: seeded, length-bucketed, bf16 (weights with fp32 masters, or autocast), any robust objective.

A checkpoint is the base model's name plus the parameters that training changed
(the word-embedding table stays frozen by default, which keeps checkpoints at
~90 MB instead of ~470 MB and the AdamW step cheap), stored as safetensors."""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from xltlib.config.schema import TrainConfig
from xltlib.core.devices import resolve_device, set_cpu_threads, to_device, use_bf16
from xltlib.core.progress import progress
from xltlib.models.load import load_tokenizer, resolve_model
from xltlib.training.batching import length_batches
from xltlib.training.dropout import use_fast_dropout
from xltlib.training.objectives import Objective, build_objective
from xltlib.training.plateau import mark_plateau
from xltlib.training.precision import Precision, clip_grad_norm
from xltlib.training.resume import (
    capture_epoch_state,
    fingerprint,
    load_epoch_state,
    restore_epoch_state,
    save_epoch_state,
)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def trainable_parameters(model, freeze_embeddings: bool):
    """(name, parameter) of everything training updates. A trainable word-embedding table gets row-sparse
    gradients (``nn.Embedding(sparse=True)``): a batch touches a few thousand of its 250k rows, and a dense
    96M-entry gradient and AdamW update per step would cost more than the rest of the step."""
    emb = model.get_input_embeddings()
    if freeze_embeddings:
        emb.weight.requires_grad_(False)
    else:
        emb.sparse = True
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


class Optimizer:
    """AdamW over the dense parameters and, for a table with sparse gradients, ``torch.optim.SparseAdam``
    (lazy Adam: a row's moments and weights change only in steps whose batch holds its token; no weight decay,
    which would otherwise shrink every untouched row each step), each with the same linear warm-up/decay."""

    def __init__(self, named_params, lr: float, weight_decay: float, sparse: tuple[str, ...] = ()):
        dense = [(n, p) for n, p in named_params if n not in sparse]
        decay = [p for n, p in dense if p.ndim >= 2]
        no_decay = [p for n, p in dense if p.ndim < 2]  # biases and LayerNorm, as in BERT
        # fused: one kernel for all parameters instead of ~10 small ops per tensor (~6% of a step here)
        self.optimizers = [torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, fused=True)]
        rows = [p for n, p in named_params if n in sparse]
        if rows:
            self.optimizers.append(torch.optim.SparseAdam(rows, lr=lr))
        self.schedulers: list = []

    def schedule(self, warmup_steps: int, total_steps: int) -> None:

        self.schedulers = [get_linear_schedule_with_warmup(o, warmup_steps, total_steps) for o in self.optimizers]

    def step(self) -> None:
        for o in self.optimizers:
            o.step()
        for s in self.schedulers:
            s.step()

    def last_lr(self) -> float:
        return self.schedulers[0].get_last_lr()[0]


def rewrites_text(objective) -> bool:
    """True when the objective changes the training text (then it is re-tokenized every epoch)."""

    return type(objective).transform_texts is not Objective.transform_texts


log = logging.getLogger(__name__)


def train_model(model_name: str, records: list[dict], *, task_type, task, num_labels: int, objective, seed: int,
                cfg: TrainConfig | None = None, device: str | torch.device = "auto",
                select_records: list[dict] | None = None, resume_path: str | Path | None = None,
                resume_key: str = "", prefix_path: str | Path | None = None, prefix_key: str = "",
                **overrides) -> tuple[torch.nn.Module, object, list[dict]]:
    """Fine-tune ``model_name`` with the head of ``task_type`` (a task type of :mod:`xltlib.evaluation.task_types`, passed in: training does not import the evaluation layer) on ``records``.

    ``cfg``: the run's :class:`~xltlib.config.schema.TrainConfig` (or its dict; default: its defaults); ``overrides`` are
    TrainConfig fields (``epochs=1, bf16=False``, ...) validated like a params file.
    ``device``: ``auto`` / ``cpu`` / ``cuda`` (:mod:`xltlib.core.devices`) or a ``torch.device``; bf16 where it has bf16.
    ``select_records``: English rows neither trained on nor scored; after every epoch the task score on them is
    logged (``select_score`` on the epoch's last step) and the weights of the best epoch are the ones returned
    (``selected_epoch`` on every row); without them, the last epoch's.
    ``resume_path``: a file for the loop's state after every epoch but the last (:mod:`xltlib.training.resume`);
    when it holds the state of the same cell (``resume_key``, the settings, the seed, the data), training goes on
    after that epoch and gives the numbers of an uninterrupted run. The caller deletes it once the model is saved.
    ``prefix_path``: with ``clean_epochs``, a file for the state after the clean epochs, shared by every method of
    the same data, model, seed and train settings (``prefix_key``); a cell without a state of its own starts there.
    Returns (fp32 model in eval mode on ``device``, tokenizer, per-step log). Batches are length-bucketed; the objective
    computes loss and gradients; one optimizer step per batch; precision through one
    :class:`~xltlib.training.precision.Precision` object. Each log row carries the step's loss and the objective's
    diagnostics (``objective.last_stats``: clean/adversarial loss, their gap, delta per token) and the
    epoch's text statistics (RS-DA's substitution rates); ``resumed``: how many cut-offs came before the step.

    Same seed, same numbers: offline models are converted and the tokenizer loaded *before* seeding
    (a first conversion draws random numbers), so the first run on a fresh model cache equals later ones.
    """
    cfg = TrainConfig() if cfg is None else cfg if isinstance(cfg, TrainConfig) else TrainConfig.model_validate(cfg)
    if overrides:
        cfg = TrainConfig.model_validate({**cfg.model_dump(), **overrides})
    device = resolve_device(device)
    set_cpu_threads(device, cfg.threads)
    k = task_type
    copies = objective.train_copies(getattr(task, "name", None))  # bad settings fail before any training
    if cfg.clean_epochs and copies is not None:
        raise ValueError(f"train.clean_epochs = {cfg.clean_epochs} with {objective.entry}'s fixed copies "
                         f"(copies: {copies[0]}): the copies are one schedule of their own; use copies: fresh, or "
                         f"clean_epochs: 0")
    plain = build_objective("baseline")  # the clean epochs' objective (train.clean_epochs)
    epochs = cfg.epochs if copies is None or copies[1] is None else copies[1]
    train_records = records if copies is None else [r for r in records for _ in range(copies[0])]
    resolve_model(model_name)
    tokenizer = load_tokenizer(model_name)
    seed_everything(seed)
    model = k.load_model(model_name, task, num_labels, cfg.pooling)
    # always our dropout modules: objectives share their masks across passes (fast.shared_dropout_masks)
    use_fast_dropout(model, quantized=cfg.fast_dropout)
    model.to(device)
    model.train()
    objective.prepare(model)
    objective.diagnose = cfg.diagnostics
    named = trainable_parameters(model, cfg.freeze_embeddings)
    sparse = tuple(n for n, p in named if p is model.get_input_embeddings().weight)
    prec = Precision(model, named, bf16=use_bf16(cfg.bf16, device), bf16_weights=cfg.bf16_weights)
    optimizer = Optimizer(prec.named_params, cfg.lr, cfg.weight_decay, sparse)
    rng = np.random.default_rng(seed)
    # fixed copies are transformed once; otherwise objectives that rewrite text (RS-DA) draw afresh each epoch
    rewrites = copies is None and rewrites_text(objective)

    def encode(objective):
        feats = k.train_features(task, train_records, tokenizer, cfg.max_length, objective, rng)
        stats = objective.pop_text_stats()
        if stats:
            log.info("%s: %s", objective.entry, ", ".join(f"{n} {v:.4f}" for n, v in stats.items()))
        return feats, np.array([k.length(f) for f in feats]), stats

    features, lengths, text_stats = encode(plain if cfg.clean_epochs else objective)
    # QA contexts become several windows: steps are counted in features, not records
    n_steps_epoch = math.ceil(len(features) / cfg.batch_size)
    total_steps = max(1, math.ceil(epochs * n_steps_epoch))
    optimizer.schedule(int(cfg.warmup_ratio * total_steps), total_steps)
    rows, step, t0, tokens, examples = [], 0, time.perf_counter(), 0, 0
    best = None  # (selection score, epoch, trained parameters) of the best epoch so far
    # a tagger's loss is a mean over the batch's labelled words: the plateau check weights its steps by them
    per_word = word_labels(features) is not None
    bar = progress(total_steps, "training steps", "step")  # a terminal / JupyterLab bar, or xlt run's live view
    # what decides the numbers, the method aside: the shared clean prefix's fingerprint; the cell's adds the method
    settings = dict(cfg=cfg.model_dump(), seed=seed, model=model_name, task=getattr(task, "name", None), kind=k.name,
                    num_labels=num_labels, n_train=len(train_records), n_select=len(select_records or []),
                    steps=total_steps, precision=prec.mode, device=device.type, threads=torch.get_num_threads())
    cell_print = fingerprint(key=resume_key, objective=objective.entry, hparams=getattr(objective, "hparams", None),
                             **settings)
    shares_prefix = prefix_path is not None and cfg.clean_epochs > 0
    prefix_print = fingerprint(key=prefix_key, clean_epochs=cfg.clean_epochs, **settings) if shares_prefix else ""
    state = load_epoch_state(resume_path, cell_print) if resume_path is not None else None
    source = resume_path
    if state is None and shares_prefix:
        state = load_epoch_state(prefix_path, prefix_print)
        if state is not None:
            source = prefix_path
            log.info("the %d clean epoch(s) of this group of methods were trained already: starting after them",
                     cfg.clean_epochs)
    resumed = 0  # how many cut-offs came before this process's steps (the log's ``resumed`` column)
    if state is not None:  # go on after its epoch, as if never stopped: weights, moments, schedule, generators
        restore_epoch_state(state, prec=prec, optimizer=optimizer, objective=objective, data_rng=rng, device=device)
        rows, step, tokens, examples = state.rows, state.step, state.tokens, state.examples
        resumed = 1 + max((r.get("resumed", 0) for r in rows), default=0)
        t0 = time.perf_counter() - state.elapsed_s
        if state.best is not None:
            best = (state.best[0], state.best[1], [p.to(device) for p in state.best[2]])
        bar.update(step)
        log.info("resumed from %s after epoch %d of %d (step %d of %d)", source, state.epoch + 1,
                 math.ceil(epochs), step, total_steps)
    for epoch in range(0 if state is None else state.epoch + 1, math.ceil(epochs)):
        clean = epoch < cfg.clean_epochs
        step_objective = plain if clean else objective
        if rewrites and (epoch > 0 and not clean):
            features, lengths, text_stats = encode(objective)
        for idx in length_batches(lengths, cfg.batch_size, rng):
            if step >= total_steps:
                break
            batch = k.collate([features[i] for i in idx], tokenizer.pad_token_id)
            n_tokens = int(batch["attention_mask"].sum())  # counted on the host: no device sync
            words = dict(labelled=int((batch["labels"] != -100).sum())) if per_word else {}
            batch = to_device(batch, device)
            model.zero_grad(set_to_none=True)  # masters keep their fp32 grads between steps (precision.py)
            step_objective.last_stats = {}
            with prec.autocast():
                loss = step_objective.loss_and_backward(model, batch)
            prec.grads_to_master()
            clip_grad_norm(prec.params, 1.0)
            optimizer.step()  # and the learning-rate schedule
            prec.master_to_model()
            step += 1
            tokens += n_tokens
            examples += len(idx)
            rows.append(dict(step=step, epoch=epoch, loss=float(loss), lr=optimizer.last_lr(),
                             elapsed_s=time.perf_counter() - t0, tokens=tokens, examples=examples, clean_epoch=clean,
                             resumed=resumed, **words, **step_objective.last_stats, **text_stats))
            bar.update()
        if select_records and rows and rows[-1]["epoch"] == epoch:
            score = selection_score(model, tokenizer, k, task, select_records, cfg, bf16=prec.mode != "fp32")
            rows[-1]["select_score"] = score  # logged for a clean epoch too; chosen only among the robust ones
            if not clean and (best is None or score > best[0]):  # the earliest epoch wins a tie
                best = (score, epoch, [p.detach().clone() for p in prec.params])
        if epoch + 1 < math.ceil(epochs) and step < total_steps and (resume_path is not None or shares_prefix):
            done = capture_epoch_state(epoch=epoch, step=step, tokens=tokens, examples=examples,
                                       elapsed_s=time.perf_counter() - t0, rows=rows, best=best, prec=prec,
                                       optimizer=optimizer, objective=objective, data_rng=rng, device=device)
            if resume_path is not None:
                save_epoch_state(resume_path, done, cell_print)
            if shares_prefix and epoch == cfg.clean_epochs - 1 and source != prefix_path:
                save_epoch_state(prefix_path, replace(done, objective={}), prefix_print)
    bar.close()
    # a collapse onto the majority class, named in the log (plateau columns on every row; xltlib.training.plateau)
    mark_plateau(rows, k.name, records, num_labels, warmup_steps=int(cfg.warmup_ratio * total_steps),
                 word_labels=word_labels(features))
    if best is not None:
        with torch.no_grad():  # into the masters (or the model's own parameters): restore() returns them
            torch._foreach_copy_(prec.params, best[2])
        for r in rows:
            r["selected_epoch"] = best[1]
        log.info("checkpoint selection: epoch %d of %d (English selection score %.4f)", best[1] + 1,
                 math.ceil(epochs), best[0])
    model = prec.restore()
    model.eval()
    return model, tokenizer, rows


def word_labels(features: list[dict]) -> np.ndarray | None:
    """The labels a tagger is trained on, a tag id per word that survived truncation (None for other kinds)."""
    if not features or "labels" not in features[0] or np.ndim(features[0]["labels"]) != 1:
        return None
    ids = np.concatenate([np.asarray(f["labels"]) for f in features])
    return ids[ids != -100]


def selection_score(model, tokenizer, kind, task, records: list[dict], cfg: TrainConfig, *, bf16: bool) -> float:
    """The task score (accuracy, F1, ...) of the model in training on the English selection rows, no dropout."""
    model.eval()
    try:
        rows = kind.evaluate(model, tokenizer, task, {"en": records}, batch_size=2 * cfg.batch_size,
                             max_length=cfg.max_length, bf16=bf16)
    finally:
        model.train()
    return float(next(r["value"] for r in rows if r["metric"] == "score" and r["language"] == "en"))
