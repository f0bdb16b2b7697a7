"""Dropout for CPU training: a cheaper mask, and masks that can be shared across passes.

``torch.nn.functional.dropout`` draws one Philox number per element; on this
CPU that made dropout ~45% of an mE5-small training step. Here one 64-bit draw
gives eight byte-sized uniforms, so the keep-mask costs ~1/4 as much. The drop
probability is quantized to k/256 (0.1 -> 26/256 = 0.1016) and survivors are
scaled by 256/(256-k), so the expectation is exact. ``quantized=False`` draws an
exact Bernoulli(1-p) mask instead.

Adversarial objectives run several forward passes per batch; their references
(FreeLB's fairseq code, ``init_dp``/``--no-sync-dp``) draw the dropout masks on
the first pass and reuse them on the others, so that the ascent follows one
fixed network. :func:`shared_dropout_masks` does that for every dropout site
installed by :func:`use_fast_dropout`: inside the block each site draws its mask
on first use and reuses it afterwards (keyed by the module, which is called once
per forward pass in every head here).
"""
from __future__ import annotations

import contextlib
import threading

import torch
from torch import nn
from transformers import AttentionInterface

ATTN_IMPLEMENTATION = "xlt_eager"

_state = threading.local()  # .masks: dict | None, the cache of the innermost shared_dropout_masks block


@contextlib.contextmanager
def shared_dropout_masks(enabled: bool = True):
    """Within the block, each dropout site reuses the mask it drew first (no-op when ``enabled`` is false)."""
    if not enabled:
        yield None
        return
    previous = getattr(_state, "masks", None)
    _state.masks = {}
    try:
        yield _state.masks
    finally:
        _state.masks = previous


def _draw_mask(x: torch.Tensor, p: float, quantized: bool) -> torch.Tensor:
    """The scaled keep-mask (0 or 1/(1-p')) in ``x``'s dtype."""
    if quantized:
        k = min(255, max(1, int(round(p * 256))))
        n = x.numel()
        words = torch.empty((n + 7) // 8, dtype=torch.int64, device=x.device).random_(-2**63, None)
        keep = words.view(torch.uint8)[:n].view(x.shape) >= k
        return keep.to(x.dtype) * (256.0 / (256 - k))
    keep = torch.empty_like(x).bernoulli_(1 - p)
    return keep / (1 - p)


def fast_dropout(x: torch.Tensor, p: float, training: bool = True, *, key=None,
                 quantized: bool = True) -> torch.Tensor:
    """Dropout of ``x``; with a ``key`` inside :func:`shared_dropout_masks` the mask is cached under it."""
    if not training or p <= 0:
        return x
    cache = getattr(_state, "masks", None)
    if cache is None or key is None:
        return x * _draw_mask(x, p, quantized)
    mask = cache.get(key)
    if mask is None:
        mask = cache[key] = _draw_mask(x, p, quantized)
    elif mask.shape != x.shape:
        raise RuntimeError(f"shared dropout mask for {key!r} has shape {tuple(mask.shape)}, the input "
                           f"{tuple(x.shape)}: a dropout site ran twice in one pass or the batch changed")
    return x * mask.to(x.dtype)


class FastDropout(nn.Dropout):
    """nn.Dropout with the byte mask (or an exact one: ``quantized=False``) and mask sharing."""

    def __init__(self, p: float = 0.5, inplace: bool = False, quantized: bool = True):
        super().__init__(p, inplace)
        self.quantized = quantized

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training, key=(id(self), "out"), quantized=self.quantized)


def _eager_attention_fast_dropout(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' eager attention with this module's dropout on the attention probabilities."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1)
    attn_weights = fast_dropout(attn_weights, dropout, module.training, key=(id(module), "attn"),
                                quantized=getattr(module, "xlt_quantized_dropout", True))
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def _register() -> None:

    AttentionInterface.register(ATTN_IMPLEMENTATION, _eager_attention_fast_dropout)


def use_fast_dropout(model: nn.Module, quantized: bool = True) -> nn.Module:
    """Swap every ``nn.Dropout`` for :class:`FastDropout` and attention for the eager kernel using it.

    ``quantized=False`` keeps exact Bernoulli masks (torch's numbers of dropout) but still routes every
    dropout through this module, so :func:`shared_dropout_masks` applies to it.
    """
    for module in model.modules():  # attention modules read this flag in _eager_attention_fast_dropout
        module.xlt_quantized_dropout = quantized
    _swap(model, quantized)
    if hasattr(model, "set_attn_implementation"):
        _register()
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
    return model


def _swap(model: nn.Module, quantized: bool) -> None:
    for name, child in list(model.named_children()):
        if type(child) is nn.Dropout:
            setattr(model, name, FastDropout(child.p, child.inplace, quantized))
        else:
            _swap(child, quantized)
