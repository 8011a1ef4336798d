"""The ASIT-code classifier: the GC ViT/ASIT encoder used by IFER, with a linear FER head on its W+ codes averaged
over the style axis and without IFER's feature modulation (``fer_gcvit_asit_base``, ``fer_gcvit_asit_tiny``).
``freeze_encoder=True`` makes it a linear probe of the inversion codes.

    python -c "import torch, ifer; m = ifer.create_model('fer_gcvit_asit_tiny'); print(m(torch.randn(2, 3, 64, 64)).shape)"
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ifer.core.loading import load_state_dict_strict, read_state_dict
from ifer.losses.classification import batch_accuracy, classification_loss
from ifer.models.registry import create_model, register_model

__all__ = ["WPlusCodeClassifier"]


def _wplus_codes(out) -> torch.Tensor:
    """Pick the (B, n_styles, w_dim) W+ codes from an encoder output (tensor, tuple/list, or dict)."""
    if torch.is_tensor(out) and out.ndim == 3:
        return out
    if isinstance(out, dict):
        for key in ("codes", "w_plus", "latents"):
            if key in out:
                return out[key]
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        for item in out:
            if torch.is_tensor(item) and item.ndim == 3:
                return item
    raise TypeError(f"cannot find (B, n_styles, w_dim) W+ codes in encoder output of type {type(out).__name__}")


class WPlusCodeClassifier(nn.Module):
    """Linear FER head on W+ codes averaged over styles: the GC ViT/ASIT encoder used by IFER, without IFER's
    feature modulation. ``freeze_encoder=True`` makes it a linear probe of the inversion codes."""

    def __init__(self, encoder: nn.Module, num_classes: int = 7, w_dim: int = 512, freeze_encoder: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.encoder = encoder.requires_grad_(not freeze_encoder)
        self.freeze_encoder = freeze_encoder
        self.head = nn.Linear(w_dim, num_classes)

    def expression_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            return _wplus_codes(self.encoder(x)).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.expression_features(x))

    def training_loss(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self(x)
        loss = classification_loss(logits, target)
        return loss, {"loss": loss.item(), "ce": loss.item(), "acc": batch_accuracy(logits, target)}


def _asit_code_classifier(encoder_name: str, num_classes: int, w_dim: int, freeze_encoder: bool,
                          encoder_checkpoint: str | Path | None, encoder_kw: dict) -> WPlusCodeClassifier:
    # Resolved by name at call time: ifer.models.asit registers the encoder; this module never imports it.
    encoder = create_model(encoder_name, **encoder_kw)
    if encoder_checkpoint is not None:
        # An ASIT checkpoint ({'state_dict': {encoder.*, decoder.*}}): keep the encoder's half, strictly.
        load_state_dict_strict(encoder, read_state_dict(encoder_checkpoint, prefix="encoder"), source=encoder_checkpoint)
    return WPlusCodeClassifier(encoder, num_classes=num_classes, w_dim=w_dim, freeze_encoder=freeze_encoder)


@register_model(family="baselines")
def fer_gcvit_asit_base(num_classes: int = 7, freeze_encoder: bool = False,
                        encoder_checkpoint: str | Path | None = None, **encoder_kw) -> WPlusCodeClassifier:
    """ASIT encoder (``asit_encoder_base``, GC ViT-B, 14 x 512 W+) + linear head on the mean W+ code."""
    return _asit_code_classifier("asit_encoder_base", num_classes, 512, freeze_encoder, encoder_checkpoint, encoder_kw)


@register_model(family="baselines")
def fer_gcvit_asit_tiny(num_classes: int = 7, freeze_encoder: bool = False,
                        encoder_checkpoint: str | Path | None = None, **encoder_kw) -> WPlusCodeClassifier:
    """CPU-test size: ``asit_encoder_tiny`` (64 px, 10 x 128 W+) + linear head."""
    return _asit_code_classifier("asit_encoder_tiny", num_classes, 128, freeze_encoder, encoder_checkpoint, encoder_kw)
