"""Identity loss, pSp ``IDLoss`` semantics over a pluggable face embedder.

``L_id = mean_b (1 - <E(crop(x_hat_b)), E(crop(x_b))>)`` where ``crop`` is pSp's ``[35:223, 32:220]``
cut of a 256 image pooled to 112 (done by the embedder) and the target embedding is detached.
The official run uses ArcFace IR-SE50 (``arcface_ir_se50``); the embedder must be differentiable.

    >>> import torch
    >>> from ifer.losses.identity import IDLoss
    >>> class Toy:  # any object with the IdentityEmbedder attributes works
    ...     name, requires_weights, differentiable = "toy", False, True
    ...     def embed(self, x):
    ...         return torch.nn.functional.normalize(x.mean((2, 3)), dim=1)
    >>> x = torch.rand(2, 3, 256, 256)
    >>> round(float(IDLoss(Toy())(x, x)), 6)
    0.0
"""
from __future__ import annotations

import torch
from torch import nn

from ifer.metrics.embedders import IdentityEmbedder


class IDLoss(nn.Module):
    """``1 - cos`` between embeddings of prediction and (detached) target, averaged over the batch."""

    def __init__(self, embedder: IdentityEmbedder):
        super().__init__()
        if not embedder.differentiable:
            raise ValueError(f"embedder {embedder.name!r} gives no gradient; the ID loss needs a differentiable "
                             "one (arcface_ir_se50)")
        self.embedder = embedder
        self.name = f"id_{embedder.name}"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_feats = self.embedder.embed(target)
        pred_feats = self.embedder.embed(pred)
        return (1 - (pred_feats * target_feats).sum(dim=1)).mean()
