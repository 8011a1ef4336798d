"""Pixel and perceptual reconstruction losses (pSp protocol: 256x256 RGB in [-1, 1]).

* ``l2_loss`` -- ``F.mse_loss`` on [-1, 1] images, mean over all elements (pSp ``l2_lambda`` term).
* ``LPIPSLoss`` -- LPIPS v0.1, AlexNet trunk, from the ``lpips`` package. The 1x1 linear heads ship with
  the package; the torchvision ImageNet AlexNet (``alexnet-owt-7be5be79.pth``) is a file the user gives,
  so nothing is downloaded. Without it: ``MissingWeightsError`` naming the file.

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

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ifer.core.loading import load_state_dict_strict, read_state_dict
from ifer.core.weights import MissingWeightsError, resolve_weights

ALEXNET_ASSET = "torchvision_alexnet"


def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pSp L2 term: mean squared error over all elements of [-1, 1] images."""
    return F.mse_loss(pred, target)


def _alexnet_file(path: str | Path | None, verify_hash: bool) -> Path:
    if verify_hash:
        return resolve_weights(ALEXNET_ASSET, path)
    if path is None or not Path(path).is_file():
        resolve_weights(ALEXNET_ASSET, path)  # raises MissingWeightsError with the standard message
    return Path(path)


def load_alexnet_into_lpips(model: nn.Module, weights_path: str | Path | None, verify_hash: bool = True) -> Path:
    """Load torchvision AlexNet ``features.*`` from the user's file into an ``lpips.LPIPS(net='alex')`` trunk.

    The lpips package splits ``alexnet().features`` into ``slice1..5`` keeping the layer indices
    (``slice2.3.weight`` is ``features.3.weight``), so the mapping is read off the trunk itself.
    ``verify_hash=False`` skips the sha256-prefix check (tests use a random-init file).
    """
    path = _alexnet_file(weights_path, verify_hash)
    sd = read_state_dict(path)
    trunk = model.net
    mapped = {}
    for key in trunk.state_dict():
        _, idx, param = key.split(".")  # "slice2.3.weight"
        src = f"features.{idx}.{param}"
        if src in sd:
            mapped[key] = sd[src]
    load_state_dict_strict(trunk, mapped, source=path)
    return path


class LPIPSLoss(nn.Module):
    """LPIPS(alex, v0.1) distance per image, (B,); ``forward`` returns the batch mean (pSp ``lpips_lambda``).

    Inputs: RGB in [-1, 1], 256x256 in the pSp protocol. All parameters are frozen; gradients reach
    the inputs only.
    """

    name = "lpips_alex_v0.1"

    def __init__(self, weights_path: str | Path | None, verify_hash: bool = True):
        super().__init__()
        import lpips

        # pretrained=True loads the packaged linear heads; pnet_rand=True keeps torchvision from downloading.
        # lpips calls the deprecated ``tv.alexnet(pretrained=False)``; its warning says nothing useful here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(pretrained=True, net="alex", version="0.1", pnet_rand=True, verbose=False)
        self.weights_path = load_alexnet_into_lpips(self.model, weights_path, verify_hash)
        self.model.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        # Dropout in the linear heads must stay off: LPIPS is a fixed metric.
        return super().train(False)

    def per_image(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.model(pred, target).flatten()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.per_image(pred, target).mean()


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


__all__ = ["l2_loss", "LPIPSLoss", "NoPerceptualLoss", "build_perceptual_loss", "load_alexnet_into_lpips",
           "MissingWeightsError", "PERCEPTUAL_KINDS"]
