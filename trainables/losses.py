"""Losses over soft targets (B, K): the method's labels are smoothed per sample.

Cross-entropy with soft targets equals, up to a constant, the negative log Dirichlet density
Dir(f(x_t) | 1 + y_t): the paper's probabilistic reading (METHOD.md section 1.7)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Loss = Callable[[Tensor, Tensor], Tensor]  # (logits (B, K), soft targets (B, K)) -> scalar


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of -sum_k y_k log softmax(f)_k; torch takes class probabilities."""
    return F.cross_entropy(logits.float(), target)


def binary_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """One-vs-rest sigmoid loss, mean over batch and classes, as the authors' `bce`."""
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def normalised_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """The authors' `nce`: soft-target CE plus log Z, Z = sum_k (g - f_k) / (log g - log f_k),
    g the geometric mean of the probabilities f. Not in torch; written after the authors' code.

    Where log f_k = log g the summand is its limit, g (the 0/0 case of a uniform prediction)."""
    log_f = logits.float().log_softmax(dim=1)  # (B, K)
    log_g = log_f.mean(dim=1, keepdim=True)  # (B, 1) log geometric mean
    diff = log_g - log_f
    close = diff.abs() < 1e-6
    ratio = (log_g.exp() - log_f.exp()) / torch.where(close, 1.0, diff)
    log_z = torch.where(close, log_g.exp(), ratio).sum(dim=1).log()  # (B,)
    return -(target * log_f).sum(dim=1).mean() + log_z.mean()


LOSSES: dict[str, Loss] = {
    "ce": soft_cross_entropy,
    "bce": binary_cross_entropy,
    "nce": normalised_cross_entropy,
}


def create_loss(name: str) -> Loss:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]
