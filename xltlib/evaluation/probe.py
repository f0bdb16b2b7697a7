"""Cross-validated multinomial logistic regression, every fold fitted at once: the language-ID probe's classifier.

:func:`cv_logistic_accuracy` gives, per fold, the test accuracy of what scikit-learn's
``make_pipeline(StandardScaler(), LogisticRegression(C=C, tol=tol))`` reaches on that fold (multinomial loss,
L2 penalty ``||W||^2 / 2`` on the standardised weights and none on the intercepts, L-BFGS-B from zero with
scikit-learn's settings: ``gtol=tol``, ``maxls=50``, ``ftol=64 eps``, 10 corrections), with two changes that
make it several times cheaper and leave the accuracy where it was (``tests/test_alignment.py`` proves it
to +-0.01 against scikit-learn):

* the folds are one problem: each fold's standardisation is folded into its weights (``x W_f`` on standardised
  features = raw features times ``W_f / sd_f``, minus a per-fold offset), so one ``[n, d] @ [d, folds * K]``
  product scores every fold, and one L-BFGS-B run minimises the sum of the folds' objectives (block-separable:
  each fold's optimum is unchanged);
* the products run in bf16 with float32 accumulation (``bf16=True``) on features standardised once over all
  rows, so rounding is relative to each feature's spread; the loss, gradient and optimiser stay in float32 /
  float64.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize

from xltlib.core.devices import bf16_supported

__all__ = ["cv_logistic_accuracy"]


def cv_logistic_accuracy(x: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], *,
                         C: float = 1.0, tol: float = 1e-4, max_iter: int = 5000, bf16: bool = True) -> np.ndarray:
    """Test accuracy per fold of a standardised multinomial logistic regression fitted on each fold's training rows.

    ``x``: ``[n, d]`` features; ``y``: ``[n]`` labels ``0..K-1``; ``folds``: ``(train_rows, test_rows)`` pairs
    (e.g. ``StratifiedKFold.split``); ``C``: inverse L2 strength, as scikit-learn's.
    """
    x = torch.as_tensor(np.asarray(x, np.float32))
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    n, d = x.shape
    k, f = int(y.max()) + 1, len(folds)
    if n != len(y) or not f:
        raise ValueError(f"cv_logistic_accuracy: {n} rows, {len(y)} labels and {f} folds; expected equal rows, >= 1 fold")
    # standardised once over all rows: bf16 rounding is then relative to each feature's spread, not its offset
    scale = x.std(0, unbiased=False)
    x = (x - x.mean(0)) / torch.where(scale > 0, scale, torch.ones_like(scale))
    weight = torch.zeros(n, f)  # 1 / n_f on fold f's training rows: each fold's loss is a mean over its rows
    for j, (train, _) in enumerate(folds):
        weight[torch.as_tensor(train), j] = 1.0 / len(train)
    mu = weight.T @ x  # [f, d] each fold's training mean and standard deviation (StandardScaler's, ddof 0)
    sd = (weight.T @ (x * x) - mu * mu).clamp_min(0).sqrt()
    sd = torch.where(sd > 1e-6, sd, torch.ones_like(sd))
    lam = (1.0 / (C * torch.tensor([len(tr) for tr, _ in folds], dtype=torch.float32))).view(f, 1, 1)
    # emulated bf16 (an AVX2-only CPU) is far slower than fp32: there the products stay fp32
    dtype = torch.bfloat16 if bf16 and bf16_supported(x.device) else torch.float32
    xm, xtm = x.to(dtype), x.T.contiguous().to(dtype)
    label = y.view(n, 1, 1).expand(n, f, 1)
    minus_one = torch.full((n, f, 1), -1.0)

    def raw_weights(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Standardised weights W [f, d, k], and the same model on the (globally standardised) rows: V, c."""
        p = p.view(f, d + 1, k)
        w, b = p[:, :d], p[:, d]
        v = w / sd[:, :, None]
        return w, v, b - torch.einsum("fd,fdk->fk", mu, v)

    def loss_grad(p64: np.ndarray) -> tuple[float, np.ndarray]:
        w, v, c = raw_weights(torch.from_numpy(p64).float())
        z = (xm @ v.permute(1, 0, 2).reshape(d, f * k).to(dtype)).float().view(n, f, k) + c
        logp = torch.log_softmax(z, -1)
        loss = -(weight * logp.gather(-1, label).squeeze(-1)).sum() + 0.5 * (lam * w * w).sum()
        r = logp.exp_().scatter_add_(-1, label, minus_one).mul_(weight[:, :, None])  # (softmax - onehot) / n_f
        gv = (xtm @ r.reshape(n, f * k).to(dtype)).float().view(d, f, k).permute(1, 0, 2)
        rs = r.sum(0)
        gw = (gv - mu[:, :, None] * rs[:, None, :]) / sd[:, :, None] + lam * w  # chain rule through v and c
        return float(loss), torch.cat([gw, rs[:, None, :]], 1).reshape(-1).double().numpy()

    res = minimize(loss_grad, np.zeros(f * (d + 1) * k), jac=True, method="L-BFGS-B",
                   options=dict(maxiter=max_iter, maxls=50, gtol=tol, ftol=64 * np.finfo(float).eps))
    _, v, c = raw_weights(torch.from_numpy(res.x).float())
    return np.array([float((x[torch.as_tensor(test)] @ v[j] + c[j]).argmax(1).eq(y[torch.as_tensor(test)])
                           .float().mean()) for j, (_, test) in enumerate(folds)])
