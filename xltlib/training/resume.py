"""Epoch-level resume of a training cell: a cell cut off mid-way (a session's end, a killed job) goes on from its
last finished epoch instead of from step 0.

A search or study cell can take longer than a session (a PAWS-X FreeLB cell: ~85 core-minutes with native bf16,
~3 h in fp32 on a CPU without it), and ``xlt run`` resumes a grid only by finished checkpoints. After every epoch
but the last, :func:`save_epoch_state` writes what the loop needs to go on exactly where it was: the trained
parameters (the fp32 masters), the optimizer's moments and learning-rate schedule, every random-number generator
the loop draws from (the data order's ``numpy`` generator, torch's for dropout and perturbations, Python's and
numpy's global ones), the objective's counters (``adv_begin_iter``), the log rows so far and the best epoch's
parameters. A resumed run is the same run: same batches, same masks, same numbers (``tests/test_resume.py``).

**A shared clean prefix.** With ``train.clean_epochs`` the first epochs are plain cross-entropy on clean text for
every method (:func:`xltlib.training.loop.train_model`): same seed, same head, same batches, same dropout masks,
same updates. Those epochs are the same computation for every method of a (data, model, seed, train settings)
group, so the first cell of the group to finish them writes their state once (its fingerprint leaves out the
method) and every other method of the group starts from it: on the recipe search's PAWS-X cells (3 epochs, the
first clean) that spares each robust cell a baseline epoch, and the numbers are those of training it again.

The state is one file written atomically (a file that exists is complete) beside the checkpoint folder, named
``<checkpoint>.resume.pt``; it is kept only while its cell is unfinished (the train stage deletes it after the
checkpoint is saved). It records a fingerprint of everything that decides the numbers (the cell's key, the training
settings, the seed, the model, the objective, the training data's size): a state whose fingerprint differs is
stale, and the cell starts over, with a log line that says why.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the file's layout changes: an older file is then stale, never misread


def fingerprint(**parts) -> str:
    """A short hash of what decides a cell's numbers (JSON-able values; anything else by its ``str``)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class EpochState:
    """Where a training loop stood after a finished epoch (``epoch``: its 0-based index)."""

    epoch: int
    step: int
    tokens: int
    examples: int
    elapsed_s: float                    # training-loop seconds so far (the loop's clock goes on from here)
    rows: list[dict]                    # the per-step log rows so far
    params: list[torch.Tensor]          # the trained parameters (fp32 masters, or the model's own)
    optimizers: list[dict]              # state_dict of each optimizer
    schedulers: list[dict]              # state_dict of each learning-rate schedule
    objective: dict                     # Objective.state_dict()
    data_rng: dict                      # the loop's numpy Generator: bit_generator.state
    best: tuple[float, int, list[torch.Tensor]] | None = None   # (selection score, epoch, parameters)
    global_rngs: dict = field(default_factory=dict)             # torch / cuda / python / numpy global states


def capture_global_rngs(device: torch.device) -> dict:
    state = dict(torch=torch.get_rng_state(), python=random.getstate(), numpy=np.random.get_state())
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_global_rngs(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def capture_epoch_state(*, epoch: int, step: int, tokens: int, examples: int, elapsed_s: float, rows: list[dict],
                        best, prec, optimizer, objective, data_rng: np.random.Generator,
                        device: torch.device) -> EpochState:
    """The loop's state after ``epoch`` (``prec``: its :class:`~xltlib.training.precision.Precision`;
    ``optimizer``: its optimizers and schedules; ``objective``: the method's); tensors are not copied here."""
    return EpochState(epoch=epoch, step=step, tokens=tokens, examples=examples, elapsed_s=elapsed_s, rows=rows,
                      params=prec.params, optimizers=[o.state_dict() for o in optimizer.optimizers],
                      schedulers=[s.state_dict() for s in optimizer.schedulers], objective=objective.state_dict(),
                      data_rng=data_rng.bit_generator.state, best=best, global_rngs=capture_global_rngs(device))


def restore_epoch_state(state: EpochState, *, prec, optimizer, objective, data_rng: np.random.Generator,
                        device: torch.device) -> None:
    """Put back what :func:`capture_epoch_state` took: the trained parameters (and the model's copy of them), the
    optimizers' moments, the schedules, the objective's counters and every generator the loop draws from."""
    with torch.no_grad():
        torch._foreach_copy_(prec.params, [p.to(device) for p in state.params])
    prec.sync_model()
    for opt, saved in zip(optimizer.optimizers, state.optimizers):
        opt.load_state_dict(saved)
    for sched, saved in zip(optimizer.schedulers, state.schedulers):
        sched.load_state_dict(saved)
    objective.load_state_dict(state.objective)  # a prefix's is empty: the method has not stepped yet
    data_rng.bit_generator.state = state.data_rng
    restore_global_rngs(state.global_rngs, device)


def _rows_json(rows: list[dict]) -> str:
    # numpy scalars in a row (text statistics) become plain numbers; rows are read back as they were logged
    return json.dumps(rows, default=lambda v: v.item() if hasattr(v, "item") else str(v))


def save_epoch_state(path: str | Path, state: EpochState, fingerprint_: str) -> Path:
    """Write ``state`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(format=FORMAT, fingerprint=fingerprint_, epoch=state.epoch, step=state.step, tokens=state.tokens,
                   examples=state.examples, elapsed_s=state.elapsed_s, rows=_rows_json(state.rows),
                   params=[p.detach().cpu().clone() for p in state.params], optimizers=state.optimizers,
                   schedulers=state.schedulers, objective=state.objective, data_rng=state.data_rng,
                   best=None if state.best is None else
                   (state.best[0], state.best[1], [p.detach().cpu().clone() for p in state.best[2]]),
                   global_rngs=state.global_rngs)
    # two cells (on two hosts of a shared folder) may write one shared prefix at once
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_epoch_state(path: str | Path, fingerprint_: str) -> EpochState | None:
    """The state saved at ``path`` if it exists and was written for the same cell and settings, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        # our own file, written by save_epoch_state (RNG states hold numpy arrays: not a weights-only pickle)
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file is not a state to resume from
        log.warning("%s: unreadable resume state (%s); the cell starts over", path, err)
        return None
    if payload.get("format") != FORMAT or payload.get("fingerprint") != fingerprint_:
        log.warning("%s: a resume state of other settings (fingerprint %s, this cell %s); the cell starts over",
                    path, payload.get("fingerprint"), fingerprint_)
        return None
    return EpochState(epoch=payload["epoch"], step=payload["step"], tokens=payload["tokens"],
                      examples=payload["examples"], elapsed_s=payload["elapsed_s"], rows=json.loads(payload["rows"]),
                      params=payload["params"], optimizers=payload["optimizers"], schedulers=payload["schedulers"],
                      objective=payload["objective"], data_rng=payload["data_rng"],
                      best=None if payload["best"] is None else tuple(payload["best"]),
                      global_rngs=payload["global_rngs"])


def epoch_state_info(path: str | Path) -> dict | None:
    """Where a saved state stands (``epoch``: the last finished one, 0-based; ``step``; ``elapsed_s``) without
    reading its tensors (memory-mapped); None when there is no readable state."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:
        return None
    return {k: payload.get(k) for k in ("epoch", "step", "elapsed_s", "fingerprint")}


def clear_epoch_state(path: str | Path) -> None:
    """Delete a finished cell's resume state (and a temporary file a cut-off write left)."""
    path = Path(path)
    for p in (path, *path.parent.glob(f"{path.name}.*.tmp")):
        p.unlink(missing_ok=True)
