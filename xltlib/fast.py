"""Cheaper dropout for CPU training.

``torch.nn.functional.dropout`` draws one Philox number per element; on this
CPU that made dropout ~45% of an mE5-small training step. Here one 64-bit draw
gives eight byte-sized uniforms, so the keep-mask costs ~1/4 as much. The drop
probability is quantized to k/256 (0.1 -> 26/256 = 0.1016) and survivors are
scaled by 256/(256-k), so the expectation is exact.
"""
from __future__ import annotations

import torch
from torch import nn

ATTN_IMPLEMENTATION = "xlt_eager"


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p <= 0:
        return x
    k = min(255, max(1, int(round(p * 256))))
    n = x.numel()
    words = torch.empty((n + 7) // 8, dtype=torch.int64, device=x.device).random_(-2**63, None)
    keep = words.view(torch.uint8)[:n].view(x.shape) >= k
    return x * (keep.to(x.dtype) * (256.0 / (256 - k)))


class FastDropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def _eager_attention_fast_dropout(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' eager attention with the cheaper dropout on the attention probabilities."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1)
    attn_weights = fast_dropout(attn_weights, dropout, module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, _eager_attention_fast_dropout)


def use_fast_dropout(model: nn.Module) -> nn.Module:
    """Swap every ``nn.Dropout`` for :class:`FastDropout` and attention for the fast-dropout eager kernel."""
    for name, child in list(model.named_children()):
        if type(child) is nn.Dropout:
            setattr(model, name, FastDropout(child.p, child.inplace))
        else:
            use_fast_dropout(child)
    if hasattr(model, "set_attn_implementation"):
        _register()
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
    return model
