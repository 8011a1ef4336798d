"""Pixel and perceptual reconstruction losses (pSp protocol: 256x256 RGB in [-1, 1]).

* ``l2_loss`` -- ``F.mse_loss`` on [-1, 1] images, mean over all elements (pSp ``l2_lambda`` term).
* ``LPIPSLoss`` -- LPIPS v0.1, AlexNet trunk (``ifer.metrics.lpips``: the same module computes the LPIPS
  metric). The torchvision ImageNet AlexNet (``alexnet-owt-7be5be79.pth``) is a file the user gives, so
  nothing is downloaded. Without it: ``MissingWeightsError`` naming the file.

No offline stand-in is provided: the only complete offline learned metric (ST-LPIPS) is a different
metric and would be mistaken for LPIPS. Without the AlexNet file use ``build_perceptual_loss("none")``.

    >>> import torch
    >>> from ifer.losses.reconstruction import build_perceptual_loss, l2_loss
    >>> x = torch.zeros(1, 3, 256, 256)
    >>> float(l2_loss(x + 0.5, x))
    0.25
    >>> float(build_perceptual_loss("none")(x, x))
    0.0
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ifer.core.weights import MissingWeightsError
from ifer.metrics.lpips import LPIPSLoss


def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pSp L2 term: mean squared error over all elements of [-1, 1] images."""
    return F.mse_loss(pred, target)


class NoPerceptualLoss(nn.Module):
    """Zero perceptual term (``kind="none"``), for runs without the AlexNet file; keeps the graph valid."""

    name = "none"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return pred.new_zeros(())


PERCEPTUAL_KINDS = ("lpips_alex", "none")


def build_perceptual_loss(kind: str, weights_path: str | Path | None = None) -> nn.Module:
    """``"lpips_alex"`` (needs the torchvision AlexNet file) or ``"none"``.

    Raises MissingWeightsError for ``lpips_alex`` without its file: the caller decides whether to fall
    back to ``"none"`` (and then should set the LPIPS weight to 0 and say so in the run record).
    """
    if kind == "lpips_alex":
        return LPIPSLoss(weights_path)
    if kind == "none":
        return NoPerceptualLoss()
    raise ValueError(f"unknown perceptual loss {kind!r}; expected one of {PERCEPTUAL_KINDS}")


__all__ = ["l2_loss", "LPIPSLoss", "NoPerceptualLoss", "build_perceptual_loss", "MissingWeightsError",
           "PERCEPTUAL_KINDS"]
