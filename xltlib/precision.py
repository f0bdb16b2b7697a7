"""bf16 training with fp32 master weights.

With ``torch.autocast`` the model stays fp32 and every linear layer casts its weight and input
to bf16 on every call, forward and backward; on this CPU those casts were ~15% of a training
step. Here the model itself is cast to bf16 for the duration of training (no casts in the step)
and the optimizer updates fp32 copies of the trained parameters, which are copied back into the
model after each step: an AdamW update of lr 3e-5 is far below bf16's 8-bit mantissa and would
otherwise round away (Micikevicius et al., 2018, "Mixed Precision Training", ICLR; the same
scheme as Megatron/DeepSpeed's bf16 optimizer). :meth:`MasterWeights.restore` puts fp32 weights
back, the trained ones from the masters and the frozen ones from their untouched fp32 originals.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["MasterWeights", "Precision"]


class MasterWeights:
    """Casts ``model`` to bf16 and holds fp32 master copies of ``named_params`` for the optimizer.

    Per step: backward on the bf16 model, :meth:`grads_to_master`, clip and step the optimizer built on
    :attr:`named_master`, then :meth:`master_to_model`. After training, :meth:`restore`.
    """

    def __init__(self, model: nn.Module, named_params: list[tuple[str, nn.Parameter]], dtype=torch.bfloat16):
        self.model = model
        self.params = [p for _, p in named_params]
        self.named_master = [(n, nn.Parameter(p.detach().float().clone())) for n, p in named_params]
        self.master = [m for _, m in self.named_master]
        trained = {id(p) for p in self.params}
        # .data of the frozen parameters before the cast: restore() needs them at full precision
        self._fp32_frozen = [(p, p.data) for p in model.parameters() if id(p) not in trained]
        model.to(dtype)

    def grads_to_master(self) -> None:
        """Move the bf16 gradients into the masters' fp32 ``.grad`` (kept between steps: no fresh 84 MB per step)."""
        for p, m in zip(self.params, self.master):
            if p.grad is None:
                m.grad = None
            elif m.grad is None:
                m.grad = p.grad.float()
            else:
                m.grad.copy_(p.grad)
            p.grad = None

    @torch.no_grad()
    def master_to_model(self) -> None:
        torch._foreach_copy_(self.params, self.master)

    @torch.no_grad()
    def restore(self) -> nn.Module:
        """The model back in fp32: trained parameters from the masters, frozen ones as they were."""
        for p, m in zip(self.params, self.master):
            p.data = m.data
        for p, original in self._fp32_frozen:
            p.data = original
        return self.model.float()  # buffers


class Precision:
    """The training loop's one precision object: bf16 weights with fp32 masters, bf16 autocast, or fp32.

    Every method is a no-op where the mode does not need it (the pattern of ``GradScaler(enabled=...)``),
    so the loop is the same for all three::

        prec = Precision(model, named_params, bf16=..., bf16_weights=...)
        optimizer = make_optimizer(prec.named_params, ...)
        for batch in batches:
            model.zero_grad(set_to_none=True)
            with prec.autocast():
                objective.loss_and_backward(model, batch)
            prec.grads_to_master()
            clip_grad_norm_(prec.params, ...); optimizer.step()
            prec.master_to_model()
        model = prec.restore()
    """

    def __init__(self, model: nn.Module, named_params: list[tuple[str, nn.Parameter]], *, bf16: bool,
                 bf16_weights: bool = True):
        self.model = model
        self.mode = "fp32" if not bf16 else ("bf16_weights" if bf16_weights else "autocast")
        self.masters = MasterWeights(model, named_params) if self.mode == "bf16_weights" else None
        #: the (name, parameter) list the optimizer updates: fp32 masters, or the model's own parameters
        self.named_params = self.masters.named_master if self.masters else list(named_params)
        self.params = [p for _, p in self.named_params]

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.mode == "autocast")

    def grads_to_master(self) -> None:
        if self.masters:
            self.masters.grads_to_master()

    def master_to_model(self) -> None:
        if self.masters:
            self.masters.master_to_model()

    def restore(self) -> nn.Module:
        """The model in fp32 (a no-op unless the weights were cast)."""
        return self.masters.restore() if self.masters else self.model
