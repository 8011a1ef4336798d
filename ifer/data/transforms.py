"""The one place that defines image normalisation and the train/eval transforms.

ASIT/pSp-style generators work in [-1, 1]: mean = std = 0.5 per channel. Evaluation is deterministic
(resize + centre crop); training adds only a horizontal flip, so data sanity checks stay simple::

    python -c "from ifer.data.transforms import eval_transform; print(eval_transform(64))"
"""
from __future__ import annotations

import torch
from torchvision import transforms as T

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def normalize() -> T.Normalize:
    return T.Normalize(MEAN, STD)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] tensor -> [0, 1] (for saving or for metrics that expect [0, 1])."""
    return (x * 0.5 + 0.5).clamp(0, 1)


def eval_transform(size: int, crop_ratio: float = 1.0) -> T.Compose:
    """Resize the short side to ``size / crop_ratio``, centre-crop ``size``, to tensor in [-1, 1]."""
    resize = round(size / crop_ratio)
    return T.Compose([T.Resize(resize, antialias=True), T.CenterCrop(size), T.ToTensor(), normalize()])


def train_transform(size: int, flip: bool = True) -> T.Compose:
    ops = [T.Resize(size, antialias=True), T.CenterCrop(size)]
    if flip:
        ops.append(T.RandomHorizontalFlip())
    return T.Compose([*ops, T.ToTensor(), normalize()])
