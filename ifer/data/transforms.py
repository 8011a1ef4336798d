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


def ke2nt_train_transform(size: int = 112, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> T.Compose:
    """KE2NT's published training pipeline (hangyu94/KE2NT ``swint_raf_main.py``), which timm's
    ``create_transform`` cannot express: Resize(size) (short side), RandomCrop(size, padding 4) applied with
    p 0.5, horizontal flip, ImageNet normalisation, RandomErasing(p 0.5, scale (0.02, 0.25)) on the tensor.

    The official Resize gets an int, so non-square inputs keep their aspect ratio; the crop is applied only
    half the time, so a centre crop makes the output ``size`` x ``size`` either way (a no-op on the square
    aligned faces the paper uses)."""
    return T.Compose([
        T.Resize(size, antialias=True), T.CenterCrop(size),
        T.RandomApply([T.RandomCrop(size, padding=4)], p=0.5), T.RandomHorizontalFlip(),
        T.ToTensor(), T.Normalize(mean, std), T.RandomErasing(p=0.5, scale=(0.02, 0.25)),
    ])
