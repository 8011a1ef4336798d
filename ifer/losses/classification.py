"""The FER classification loss and its bookkeeping, shared by every FER model (IFER, timm baselines, KE2NT,
disentangled, the ASIT-code probe).

* ``classification_loss``: the one cross-entropy of the suite. Class indices (B,) go to
  ``F.cross_entropy``; soft targets (B, C) (mixup/cutmix, label smoothing) to timm's ``SoftTargetCrossEntropy``,
  the loss of the released IFER recipe (``train_ifer.py``), so IFER's loss stays bit-identical to it.
* ``hard_labels``: class indices from indices or soft targets (argmax), for accuracies and per-class terms.
* ``batch_accuracy``: top-1 accuracy of a batch against ``hard_labels(target)``, for the training log.

    python -c "import torch; from ifer.losses.classification import classification_loss as ce; \
print(float(ce(torch.zeros(2, 7), torch.tensor([0, 3]))))"   # ln 7 = 1.9459...
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy

_SOFT_CE = SoftTargetCrossEntropy()


def classification_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against class indices (B,) or soft targets (B, C); ``label_smoothing`` as in ``F.cross_entropy``.

    Soft targets are not cast to the logits' dtype: under autocast the products are taken in the targets'
    float32, as in timm.
    """
    if target.ndim == logits.ndim:
        if label_smoothing:
            target = target * (1.0 - label_smoothing) + label_smoothing / target.shape[-1]
        return _SOFT_CE(logits, target)
    return F.cross_entropy(logits, target.long(), label_smoothing=label_smoothing)


def hard_labels(target: torch.Tensor) -> torch.Tensor:
    """Class indices from indices (B,) or soft targets (B, C) (mixup / label smoothing -> argmax)."""
    return target.argmax(dim=-1) if target.ndim == 2 else target.long()


def batch_accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    return (logits.argmax(-1) == hard_labels(target)).float().mean().item()


__all__ = ["classification_loss", "hard_labels", "batch_accuracy"]
