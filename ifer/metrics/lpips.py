"""LPIPS v0.1 (AlexNet trunk) from the ``lpips`` package, with the AlexNet weights from the user's file.

One implementation serves both users: the inversion metric ``lpips_alex_v0.1_256`` (``ifer.metrics.inversion``)
and the ASIT perceptual loss (``ifer.losses.reconstruction.build_perceptual_loss``); losses sit above metrics,
so the loss imports it from here. The 1x1 linear heads ship with the package; the torchvision ImageNet AlexNet
(``alexnet-owt-7be5be79.pth``) is a file the user gives, so nothing is downloaded. Without it:
``MissingWeightsError`` naming the file.

    python -c "from ifer.metrics.lpips import LPIPSLoss; LPIPSLoss(None)"   # MissingWeightsError naming the file
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ifer.core.loading import load_state_dict_strict, read_state_dict
from ifer.core.weights import resolve_weights

ALEXNET_ASSET = "torchvision_alexnet"


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
        # pretrained=True loads the packaged linear heads; pnet_rand=True keeps torchvision from downloading.
        # lpips calls the deprecated ``tv.alexnet(pretrained=False)``; its warning says nothing useful here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            import lpips  # here: the package pulls in torchvision's model zoo at import

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


__all__ = ["ALEXNET_ASSET", "LPIPSLoss", "load_alexnet_into_lpips"]
