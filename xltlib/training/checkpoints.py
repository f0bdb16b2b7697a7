"""A fine-tuned checkpoint on disk: the trained parameters (safetensors) and a metadata file, written atomically.

The model is rebuilt by the task type that trained it (``meta['kind']``); :func:`restore_checkpoint` takes that
task type as an argument, so training does not depend on the evaluation layer that defines the task types
(:func:`xltlib.evaluation.task_types.load_checkpoint` looks it up by name).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from xltlib.core.devices import resolve_device
from xltlib.models.load import load_tokenizer

CHECKPOINT_META = "xlt_checkpoint.json"


def save_checkpoint(model, tokenizer, path: str | Path, *, base_model: str, meta: dict) -> Path:
    """Write the changed parameters + metadata atomically (a folder that exists is complete).

    ``meta`` must say the task ``kind`` and the head's ``pooling`` so that :func:`restore_checkpoint` rebuilds the same module.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(state, str(tmp / "trainable.safetensors"))
    info = dict(meta, base_model=base_model, num_labels=model.config.num_labels,
                saved_parameters=sum(v.numel() for v in state.values()))
    (tmp / CHECKPOINT_META).write_text(json.dumps(info, indent=1))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def read_checkpoint_meta(path: str | Path) -> dict:
    """The metadata of a finished checkpoint (its task ``kind``, base model, head, key and provenance)."""
    meta_file = Path(path) / CHECKPOINT_META
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not a finished xlt checkpoint (no {CHECKPOINT_META})")
    return json.loads(meta_file.read_text())


def restore_checkpoint(path: str | Path, task_type, device: str | torch.device = "auto"):
    """(model in eval mode on ``device``, tokenizer, metadata) of a saved checkpoint; ``task_type`` builds the
    module the parameters are loaded into (``task_type.load_model``)."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    model = task_type.load_model(meta["base_model"], None, meta["num_labels"], meta.get("pooling", "cls"))
    missing, unexpected = model.load_state_dict(load_file(str(path / "trainable.safetensors")), strict=False)
    if unexpected:
        raise RuntimeError(f"{path}: unexpected parameters {unexpected[:5]}")
    return model.to(resolve_device(device)).eval(), load_tokenizer(meta["base_model"]), meta
