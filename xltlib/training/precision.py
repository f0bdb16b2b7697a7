"""bf16 training with fp32 master weights.

With ``torch.autocast`` the model stays fp32 and every linear layer casts its weight and input
to bf16 on every call, forward and backward; on this CPU those casts were ~15% of a training
step. Here the model itself is cast to bf16 for the duration of training (no casts in the step)
and the optimizer updates fp32 copies of the trained parameters, which are copied back into the
model after each step: an AdamW update of lr 3e-5 is far below bf16's 8-bit mantissa and would
otherwise round away (Micikevicius et al., 2018, "Mixed Precision Training", ICLR; the same
scheme as Megatron/DeepSpeed's bf16 optimizer). :meth:`MasterWeights.restore` puts fp32 weights
back, the trained ones from the masters and the frozen ones from their untouched fp32 originals.
Inference runs the same way, without masters: :func:`bf16_inference`.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from xltlib.core.devices import bf16_supported

__all__ = ["MasterWeights", "Precision", "bf16_inference", "clip_grad_norm"]


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
        self._rows: dict[int, torch.Tensor] = {}  # index of a row-sparse parameter -> rows its last gradient touched
        trained = {id(p) for p in self.params}
        # .data of the frozen parameters before the cast: restore() needs them at full precision
        self._fp32_frozen = [(p, p.data) for p in model.parameters() if id(p) not in trained]
        embeddings = embedding_block(model)
        kept = [(p, p.data) for p in embeddings.parameters()] if embeddings is not None else []
        model.to(dtype)
        # The embedding block stays fp32 and casts its output: a perturbation of the input embeddings (PGD,
        # FreeLB, RS-RP) is added, normed and stepped in fp32 (in bf16, 11-35% of a small delta's coordinates
        # round to zero), as in the references' fp32 runs. It is a lookup, a few adds and one LayerNorm.
        for p, data in kept:
            p.data = data
        self._cast_hook = (embeddings.register_forward_hook(lambda module, args, out: out.to(dtype))
                           if embeddings is not None else None)

    def grads_to_master(self) -> None:
        """Move the bf16 gradients into the masters' fp32 ``.grad`` (kept between steps: no fresh 84 MB per step).
        A sparse gradient (a trainable embedding table) stays sparse: its rows are remembered for the copy back."""
        self._rows.clear()
        for i, (p, m) in enumerate(zip(self.params, self.master)):
            if p.grad is None:
                m.grad = None
            elif p.grad.is_sparse:
                g = p.grad.coalesce()
                self._rows[i] = g.indices()[0]
                m.grad = torch.sparse_coo_tensor(g.indices(), g.values().float(), m.shape, is_coalesced=True,
                                                 check_invariants=False)
            elif m.grad is None:
                m.grad = p.grad.float()
            else:
                m.grad.copy_(p.grad)
            p.grad = None

    @torch.no_grad()
    def master_to_model_all(self) -> None:
        """Every master into the model, whatever rows the last step touched."""
        self._rows.clear()
        torch._foreach_copy_(self.params, self.master)

    @torch.no_grad()
    def master_to_model(self) -> None:
        """Updated masters into the model; of a row-sparse table only the rows this step touched."""
        if not self._rows:
            torch._foreach_copy_(self.params, self.master)
            return
        dense = [i for i in range(len(self.params)) if i not in self._rows]
        torch._foreach_copy_([self.params[i] for i in dense], [self.master[i] for i in dense])
        for i, rows in self._rows.items():
            # on the parameter, not its .data: the in-place version moves, so bf16_inference's cached copy of the
            # table (selection scoring between epochs) is made again instead of scoring the table of epoch 0
            self.params[i].index_copy_(0, rows, self.master[i].index_select(0, rows).to(self.params[i].dtype))

    @torch.no_grad()
    def restore(self) -> nn.Module:
        """The model back in fp32: trained parameters from the masters, frozen ones as they were."""
        for p, m in zip(self.params, self.master):
            p.data = m.data
        for p, original in self._fp32_frozen:
            p.data = original
        if self._cast_hook is not None:
            self._cast_hook.remove()
        return self.model.float()  # buffers


def embedding_block(model: nn.Module) -> nn.Module | None:
    """The module that turns token ids into the encoder's first hidden states (word + position embeddings and
    their LayerNorm: ``model.base_model.embeddings`` in BERT-family models), or None for a model without one."""
    block = getattr(getattr(model, "base_model", model), "embeddings", None)
    words = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if isinstance(block, nn.Module) and words is not None and any(m is words for m in block.modules()):
        return block
    return None


class Precision:
    """The training loop's one precision object: bf16 weights with fp32 masters, bf16 autocast, or fp32.

    Every method is a no-op where the mode does not need it (the pattern of ``GradScaler(enabled=...)``),
    so the loop is the same for all three::

        prec = Precision(model, named_params, bf16=..., bf16_weights=...)
        optimizer = train.Optimizer(prec.named_params, ...)
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
        self.device_type = next(model.parameters()).device.type  # the model is on its device already
        self.mode = "fp32" if not bf16 else ("bf16_weights" if bf16_weights else "autocast")
        self.masters = MasterWeights(model, named_params) if self.mode == "bf16_weights" else None
        #: the (name, parameter) list the optimizer updates: fp32 masters, or the model's own parameters
        self.named_params = self.masters.named_master if self.masters else list(named_params)
        self.params = [p for _, p in self.named_params]

    def autocast(self):
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.mode == "autocast")

    def grads_to_master(self) -> None:
        if self.masters:
            self.masters.grads_to_master()

    def master_to_model(self) -> None:
        if self.masters:
            self.masters.master_to_model()

    def sync_model(self) -> None:
        """All trained parameters into the model after they were set from outside (a resumed run's weights)."""
        if self.masters:
            self.masters.master_to_model_all()

    def restore(self) -> nn.Module:
        """The model in fp32 (a no-op unless the weights were cast)."""
        return self.masters.restore() if self.masters else self.model


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` that also takes sparse gradients (a trainable embedding table trained
    row-sparse): the total L2 norm over every gradient, each scaled by min(1, max_norm / norm)."""
    sparse = [p for p in params if p.grad is not None and p.grad.is_sparse]
    if not sparse:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    for p in sparse:
        p.grad = p.grad.coalesce()  # duplicate indices summed: the norm of what the optimizer will apply
    dense = [p.grad for p in params if p.grad is not None and not p.grad.is_sparse]
    sq = sum((n.float() ** 2 for n in torch._foreach_norm(dense)), torch.zeros(()))
    total = (sq + sum(p.grad.values().float().pow(2).sum() for p in sparse)).sqrt()
    coef = float(torch.clamp(max_norm / (total + 1e-6), max=1.0))
    if coef < 1.0:
        torch._foreach_mul_(dense, coef)
        for p in sparse:
            p.grad = p.grad * coef
    return total


# tensor -> (its data_ptr and in-place version when cast, the bf16 copy); an entry goes with its parameter
_BF16_COPIES = WeakIdKeyDictionary()  # by identity: a tensor's == is elementwise


def _bf16_copy(t: torch.Tensor) -> torch.Tensor:
    key = (t.data_ptr(), t._version, t.shape, t.device)
    hit = _BF16_COPIES.get(t)
    if hit is None or hit[0] != key:
        with torch.inference_mode(False), torch.no_grad():  # a normal tensor: usable outside inference_mode too
            hit = _BF16_COPIES[t] = (key, t.detach().to(torch.bfloat16))
    return hit[1]


@contextlib.contextmanager
def bf16_inference(model: nn.Module, enabled: bool = True):
    """Inside the block ``model`` runs with bf16 weights; on exit its fp32 parameters are back, untouched.

    The inference counterpart of :class:`MasterWeights` and faster than ``torch.autocast``, which keeps fp32
    weights and casts weights and activations at every op (layer norms, softmax and the residual stream stay fp32):
    every fp32 parameter and buffer is swapped for a bf16 copy (``.data``, as ``MasterWeights`` does). The copies are
    cached per tensor while the model lives (half its fp32 size) and made again only when the tensor changed
    (another storage, or an in-place update: its version counter; an edit through ``.data`` is not seen), so the
    cast -- ~0.3 s for mE5-small on a CPU, its word-embedding table mostly -- is paid once, not per call.
    Floating inputs must be bf16 (the robust objectives cast ``inputs_embeds`` to the embedding weight's dtype).
    Parameters that are not fp32 (a model already in bf16) are left alone. A device without native bf16 (an AVX2-only
    CPU, where bf16 is emulated and ~100x slower) runs fp32 (:func:`~xltlib.core.devices.bf16_supported`).
    """
    params = list(model.parameters())
    if not enabled or (params and not bf16_supported(params[0].device)):
        yield model
        return
    params = [p for p in params if p.dtype == torch.float32]
    buffers = [(m, name, b) for m in model.modules() for name, b in m._buffers.items()
               if b is not None and b.dtype == torch.float32]
    originals = [p.data for p in params]
    try:
        for p in params:
            p.data = _bf16_copy(p)
        for m, name, b in buffers:
            m._buffers[name] = _bf16_copy(b)
        yield model
    finally:
        for p, data in zip(params, originals):
            p.data = data
        for m, name, b in buffers:
            m._buffers[name] = b
