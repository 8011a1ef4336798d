"""Adversarial pieces of the disentangled FER model (Halawa et al., arXiv 2008.07001).

* :func:`uniform_kl`: KL(U || softmax(logits)), the "confusion" objective that drives an adversary's
  prediction towards the uniform distribution (0 exactly when it is uniform).
* :func:`grad_reverse`: identity forward, gradient multiplied by ``-coeff`` backward (Ganin & Lempitsky 2015).

    python -c "import torch; from ifer.losses.disentangled import uniform_kl; print(uniform_kl(torch.zeros(3, 7)))"
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

__all__ = ["uniform_kl", "grad_reverse", "GradReverse"]


def uniform_kl(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(U || p) = -log C - (1/C) sum_k log p_k, with p = softmax(logits).

    KL(U || p) (rather than KL(p || U) = log C - H(p)) is the cross-entropy to a uniform target minus its
    constant entropy: it punishes any class the adversary rules out, and its gradient does not vanish
    when p is nearly one-hot.
    """
    num_classes = logits.shape[-1]
    return (-F.log_softmax(logits, dim=-1).mean(dim=-1) - math.log(num_classes)).mean()


class GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the incoming gradient by ``-coeff`` in the backward pass."""
    return GradReverse.apply(x, coeff)
