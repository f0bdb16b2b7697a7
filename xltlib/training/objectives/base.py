"""Objective base class, hyperparameter validation and the objective registry."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from xltlib.core.registry import Registry

__all__ = [
    "HParam", "Objective", "OBJECTIVES", "register", "build_objective", "objective_defaults",
    "model_inputs",
]

# Keys of a training/evaluation batch that are passed on to the model (besides input_ids / labels).
_PASSTHROUGH = ("attention_mask", "token_type_ids")


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: default, a human-readable allowed range, a predicate and a converter."""

    default: Any
    expected: str
    check: Callable[[Any], bool]
    convert: Callable[[Any], Any] = lambda v: v


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def real(default: float, lo: float | None = None, hi: float | None = None, *, lo_open=False) -> HParam:
    """A finite float in [lo, hi] (or (lo, hi] with lo_open)."""
    parts = [f"> {lo:g}" if lo_open else f">= {lo:g}"] if lo is not None else []
    if hi is not None:
        parts.append(f"<= {hi:g}")
    expected = "a finite number" + (" " + " and ".join(parts) if parts else "")

    def check(v):
        return (_is_real(v) and (lo is None or (v > lo if lo_open else v >= lo))
                and (hi is None or v <= hi))
    return HParam(default, expected, check, float)


def optional_real(lo: float) -> HParam:
    """A finite float >= lo, or null (None: the objective derives it, e.g. from another hyperparameter)."""
    return HParam(None, f"a finite number >= {lo:g}, or null", lambda v: v is None or (_is_real(v) and v >= lo),
                  lambda v: v if v is None else float(v))


def integer(default: int, lo: int) -> HParam:
    return HParam(default, f"an integer >= {lo}",
                  lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo, int)


def boolean(default: bool) -> HParam:
    return HParam(default, "true or false", lambda v: isinstance(v, bool), bool)


def choice(default: str, *options: str) -> HParam:
    return HParam(default, "one of " + " | ".join(repr(o) for o in options), lambda v: v in options)


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """attention_mask / token_type_ids of a batch (the keyword arguments besides the input)."""
    return {k: batch[k] for k in _PASSTHROUGH if batch.get(k) is not None}


def hparam_error(entry: str, key: str, value, expected: str) -> ValueError:
    return ValueError(f"methods.{entry}.{key} = {value!r}: expected {expected}")


class Objective:
    """A training objective: optional text transform + loss/backward + prediction.

    Subclasses declare ``HPARAMS`` (name -> HParam); validated values are stored in
    ``self.hparams`` and as attributes. ``entry`` (the params entry name) is only used in
    error messages; ``data_dir`` resolves data-relative defaults (e.g. the synonym table).
    """

    name: ClassVar[str] = ""
    HPARAMS: ClassVar[dict[str, HParam]] = {}

    def __init__(self, *, entry: str | None = None, data_dir: str | Path | None = None, **hparams):
        self.entry = entry or self.name
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.last_stats = {}
        self.hparams: dict[str, Any] = self.checked_hparams(hparams, self.entry)
        for key, value in self.hparams.items():
            setattr(self, key, value)

    @classmethod
    def checked_hparams(cls, hparams: dict, entry: str | None = None) -> dict[str, Any]:
        """``hparams`` checked against ``HPARAMS`` (unknown key, type, range), defaults filled in, converted.
        Config validation calls it without building the objective (RS-DA's build reads its synonym table)."""
        entry = entry or cls.name
        for key, value in hparams.items():
            if key not in cls.HPARAMS:
                known = ", ".join(sorted(cls.HPARAMS)) or "none"
                raise hparam_error(entry, key, value, f"a hyperparameter of objective '{cls.name}' ({known})")
        out = {}
        for key, spec in cls.HPARAMS.items():
            value = hparams.get(key, spec.default)
            if not spec.check(value):
                raise hparam_error(entry, key, value, spec.expected)
            out[key] = spec.convert(value)
        return out

    def hparam_error(self, key: str, value, expected: str) -> ValueError:
        return hparam_error(self.entry, key, value, expected)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"{type(self).__name__}({args})"

    # ---------------------------------------------------------------- interface
    #: diagnostics of the last ``loss_and_backward`` call (name -> float), logged per step by train_model
    last_stats: dict[str, float]

    def transform_texts(self, texts: list[str], rng: np.random.Generator) -> list[str]:
        """Per-epoch transform of the English training texts (default: identity)."""
        return texts

    def prepare(self, model) -> None:
        """Called by train_model once on the freshly loaded (fp32) model, before training (default: nothing)."""

    def state_dict(self) -> dict:
        """What the objective counts across steps, for a resumed run (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Set what :meth:`state_dict` returned."""

    def pop_text_stats(self) -> dict[str, float]:
        """Statistics of the ``transform_texts`` calls since the last pop (e.g. RS-DA's substitution rate)."""
        return {}

    def train_copies(self, task_name: str | None) -> tuple[int, float | None] | None:
        """None: the training text is transformed afresh each epoch. (n, epochs): n transformed copies of
        every example are built once and reused each epoch; ``epochs`` (or None) overrides the run's."""
        return None

    def loss_and_backward(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Plain cross-entropy: one forward/backward; returns the detached loss."""
        loss = model(input_ids=batch["input_ids"], labels=batch["labels"], **model_inputs(batch)).loss
        loss.backward()
        self.last_stats = {"clean_loss": float(loss.detach())}
        return loss.detach()

    def predict_logits(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], **model_inputs(batch)).logits


OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def register(name: str):
    """Class decorator: register an Objective subclass under ``name``."""
    def deco(cls: type[Objective]) -> type[Objective]:
        cls.name = name
        return OBJECTIVES.add(name, cls)
    return deco


def _lookup(name: str, entry: str | None = None) -> type[Objective]:
    try:
        return OBJECTIVES.get(name)
    except ValueError as exc:
        raise ValueError(f"methods.{entry}: {exc}" if entry else str(exc)) from None


def build_objective(name: str, hparams: dict | None = None, *, data_dir: str | Path | None = None,
                    entry: str | None = None) -> Objective:
    """Instantiate the registered objective ``name`` with validated ``hparams``."""
    cls = _lookup(name, entry)
    if hparams is None:
        hparams = {}
    if not isinstance(hparams, dict):
        raise ValueError(f"methods.{entry or name} = {hparams!r}: expected a mapping of hyperparameters")
    return cls(entry=entry, data_dir=data_dir, **hparams)


def objective_defaults(name: str) -> dict:
    """The documented default hyperparameters of objective ``name``."""
    return {k: spec.default for k, spec in _lookup(name).HPARAMS.items()}
