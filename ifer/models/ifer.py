"""IFER: the facial-expression classifier on top of the ASIT encoder (official ``scripts/ifer.py: ifer_model``).

Forward: ``styles, structure, _ = feature_model(x)`` (W+ codes **without** ``latent_avg``), then the
feature modulation module ``style_conv(conv(structure), styles.mean(1))`` (a demodulated 3x3
``ModulatedConv2d``, no bias/noise/activation), global average pooling and ``head``. Key layout
``feature_model.*``, ``conv.*``, ``style_conv.{weight, modulation.weight, modulation.bias}``, ``head.*``.

Example (CPU)::

    import torch, ifer
    net = ifer.create_model("ifer_tiny", num_classes=7).eval()
    logits = net(torch.randn(2, 3, 64, 64))                  # (2, 7)
    loss = net.training_loss(torch.randn(2, 3, 64, 64), torch.tensor([0, 3]))
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ifer.core.loading import load_state_dict_strict, read_state_dict
from ifer.core.quirks import Quirks
from ifer.losses.classification import classification_loss
from ifer.models.asit import ASITEncoder, build_encoder
from ifer.models.registry import create_model, register_config_builder, register_model
from ifer.models.stylegan2 import ModulatedConv2d

__all__ = ["IFER", "IFERLatentOnly"]


class _FERBase(nn.Module):
    """Shared checkpoint handling and loss of the IFER variants (subclasses define ``expression_features``)."""

    feature_model: ASITEncoder
    head: nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.expression_features(x))

    def training_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy for (B,) class indices; soft-target cross-entropy for (B, num_classes) targets."""
        return classification_loss(self(x), target)

    def load_checkpoint(self, path: str | Path) -> None:
        """Strictly load a timm CheckpointSaver file (``state_dict`` + ``args`` Namespace, ...) or a bare dict."""
        load_state_dict_strict(self, read_state_dict(path), source=path)

    def load_asit_encoder(self, path: str | Path) -> None:
        """Strictly load the ``encoder.*`` weights of an official ASIT checkpoint into ``feature_model``."""
        load_state_dict_strict(self.feature_model, read_state_dict(path, prefix="encoder"), source=path)


class IFER(_FERBase):
    """Official ``ifer_model`` for any ``num_classes`` (the released code hard-codes 7).

    >>> net = IFER(build_encoder("tiny"), num_classes=5).eval()
    >>> net(torch.randn(1, 3, 64, 64)).shape, net.expression_features(torch.randn(1, 3, 64, 64)).shape
    (torch.Size([1, 5]), torch.Size([1, 128]))
    """

    def __init__(self, feature_model: ASITEncoder, num_classes: int = 7):
        super().__init__()
        ch = feature_model.last_block.out_channels
        style_dim = feature_model.styles[0].out_c
        self.feature_model = feature_model
        self.conv = nn.Conv2d(ch, ch, kernel_size=1)
        self.style_conv = ModulatedConv2d(ch, ch, 3, style_dim, demodulate=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(ch, num_classes)

    def expression_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C) pooled, modulated structure features (the input of ``head``)."""
        styles, structure, _ = self.feature_model(x)
        return self.fuse(styles, structure)

    def fuse(self, styles: torch.Tensor, structure: torch.Tensor) -> torch.Tensor:
        """Feature modulation module: structure code modulated by the mean W+ code, then pooled to (B, C)."""
        x = self.style_conv(self.conv(structure), styles.mean(dim=1, keepdim=True))
        return torch.flatten(self.avgpool(x), 1)

    @classmethod
    def from_asit_checkpoint(cls, path: str | Path, num_classes: int = 7, size: str = "base",
                             **encoder_kwargs) -> IFER:
        """Build ``ifer_{size}`` and take its encoder weights (strictly) from an official ASIT checkpoint."""
        net = cls(build_encoder(size, **encoder_kwargs), num_classes)
        net.load_asit_encoder(path)
        return net


class IFERLatentOnly(_FERBase):
    """The ``Faep2`` ablation found in the released ``.pyc``: ``Linear`` on the mean W+ code only."""

    def __init__(self, feature_model: ASITEncoder, num_classes: int = 7):
        super().__init__()
        self.feature_model = feature_model
        self.head = nn.Linear(feature_model.styles[0].out_c, num_classes)

    def expression_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_model(x)[0].mean(dim=1)


@register_model(family="ifer")
def ifer_base(num_classes: int = 7, **kwargs) -> IFER:
    """Official ``ifer_model(None, 512, 7)``: 268,720,655 parameters at 7 classes; 256-px input."""
    return IFER(build_encoder("base", **kwargs), num_classes)


@register_model(family="ifer")
def ifer_tiny(num_classes: int = 7, **kwargs) -> IFER:
    """64-px CPU member on the tiny ASIT encoder (128-channel structure code, 128-d W+ codes)."""
    return IFER(build_encoder("tiny", **kwargs), num_classes)


@register_model(family="ifer")
def ifer_latent_only_base(num_classes: int = 7, **kwargs) -> IFERLatentOnly:
    """``Faep2`` ablation on the base encoder (W+ codes only, no structure code or modulation)."""
    return IFERLatentOnly(build_encoder("base", **kwargs), num_classes)


@register_config_builder("ifer")
def build_ifer_from_config(name: str, section, num_classes: int = 7, mode: str | Quirks = "as_described",
                           init_checkpoint: str | Path | None = None, **_other_context) -> _FERBase:
    """IFER from its FER-method section (``model``, ``kwargs``): the encoder gets the run's quirk ``mode``, and
    ``init_checkpoint`` (a trained ASIT checkpoint) supplies its weights, strictly."""
    model = create_model(name, num_classes=num_classes, mode=mode, **dict(section.get("kwargs") or {}))
    if init_checkpoint is not None:
        model.load_asit_encoder(init_checkpoint)
    model.quirks_mode = mode  # the trainer's quirks (e.g. the ImageNet-length LR schedule) follow the model's mode
    return model
