"""Weight drift: how far fine-tuning moved the encoder from its pre-trained weights, over the parameters training
changed.

``||theta - theta_0|| / ||theta_0||`` over the trained tensors (those with ``requires_grad``: exactly what a
checkpoint stores, :func:`xltlib.training.checkpoints.save_checkpoint`) that have a pre-trained value. A frozen
word-embedding table is not drift: counting it (96M of mE5-small's 118M parameters, norm about 800 against about
360 for the rest) put it in the denominator and understated drift about 2.5x. A trained table (the ``_emb``
control arms) is counted. The new task head has no pre-trained value and is left out.

Result rows name this measure :data:`DRIFT_METRIC`; the ``weight_drift`` rows of earlier runs (every encoder
tensor, frozen or not) are another quantity and are not read as this one.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

DRIFT_METRIC = "weight_drift_trained"
TRAINED_FILE = "trainable.safetensors"  # the file save_checkpoint writes the trained parameters to


@dataclass(frozen=True)
class Drift:
    """``value``: relative L2 distance; ``n_params`` / ``n_tensors``: what it was computed over."""

    value: float
    n_params: int
    n_tensors: int


def trained_state(model) -> dict[str, torch.Tensor]:
    """The parameters training updates (``requires_grad``), by name: what a checkpoint stores."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def pretrained_name(name: str, pretrained: Mapping[str, torch.Tensor]) -> str | None:
    """The pre-trained encoder's name for a task model's parameter: the name itself or the name without its
    leading module names (``encoder.encoder.layer.0...`` -> ``encoder.layer.0...``); None for a new head."""
    parts = name.split(".")
    for i in range(len(parts)):
        cand = ".".join(parts[i:])
        if cand in pretrained:
            return cand
    return None


def weight_drift(trained: Mapping[str, torch.Tensor], pretrained: Mapping[str, torch.Tensor]) -> Drift:
    """Relative L2 distance of the ``trained`` tensors from their ``pretrained`` values (float64 sums), over the
    trained tensors that have a pre-trained value of the same shape."""
    num = den = 0.0
    n_params = n_tensors = 0
    with torch.no_grad():
        for name, p in trained.items():
            base = pretrained_name(name, pretrained)
            if base is None or pretrained[base].shape != p.shape:
                continue
            b = pretrained[base].detach().double().cpu()
            num += float((p.detach().double().cpu() - b).pow(2).sum())
            den += float(b.pow(2).sum())
            n_params += p.numel()
            n_tensors += 1
    return Drift((num / den) ** 0.5 if den else float("nan"), n_params, n_tensors)


def checkpoint_drift(path: str | Path, pretrained: Mapping[str, torch.Tensor]) -> Drift:
    """:func:`weight_drift` of a saved checkpoint folder (its stored trained parameters)."""
    file = Path(path) / TRAINED_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no {TRAINED_FILE}; not a finished checkpoint")
    return weight_drift(load_file(str(file)), pretrained)
