"""timm baselines: any timm backbone + linear head as a FER classifier, and the backbone factory that KE2NT
and the disentangled model share.

* :class:`TimmFERClassifier` (``fer_timm``, ``fer_resnet18``, ``fer_resnet18_tiny``), trained with
  ``ifer.losses.classification.classification_loss``.
* :func:`build_timm_backbone`: a timm model without classifier; always ``pretrained=False``, a
  ``pretrained_path`` loads a user file strictly.

The other FER baselines have their own modules: the ASIT-code classifier (``ifer.models.asit_codes``) and,
for inversion, pSp's encoder (``ifer.models.psp``).

Every FER model implements the suite's interface: ``forward(x) -> logits``,
``training_loss(x, target) -> (loss, {name: float})``, ``expression_features(x) -> (B, D)``, ``num_classes``.

    python -c "import torch, ifer; m = ifer.create_model('fer_resnet18_tiny'); \
print(m(torch.randn(2, 3, 64, 64)).shape, m.training_loss(torch.randn(2, 3, 64, 64), torch.tensor([0, 1]))[1])"
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from ifer.core.loading import load_state_dict_strict, read_state_dict
from ifer.core.weights import resolve_weights
from ifer.losses.classification import batch_accuracy, classification_loss
from ifer.models.registry import register_model

__all__ = ["build_timm_backbone", "TimmFERClassifier"]


def build_timm_backbone(name: str, img_size: int | None = None, pretrained_path: str | Path | None = None,
                        known_weights: str | None = None, **kwargs) -> nn.Module:
    """A timm model without classifier (``num_classes=0``, pooled ``num_features`` output), never downloaded.

    ``img_size`` goes to models that take it (ViT/Swin-style); CNNs are size-agnostic and do not accept it.
    ``pretrained_path`` is loaded strictly, except the timm classifier (``pretrained_cfg['classifier']``),
    which a feature extractor does not have.
    """
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0,
                                  **({"img_size": img_size} if img_size else {}), **kwargs)
    except TypeError as e:
        if "img_size" not in str(e):
            raise
        model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    if known_weights is not None:  # a KNOWN_WEIGHTS asset: a missing file is one MissingWeightsError line
        pretrained_path = resolve_weights(known_weights, pretrained_path)
    if pretrained_path is not None:
        sd = read_state_dict(pretrained_path)
        head = model.pretrained_cfg.get("classifier") or ()
        heads = (head,) if isinstance(head, str) else tuple(head)
        sd = {k: v for k, v in sd.items() if not any(k.startswith(h + ".") for h in heads)}
        load_state_dict_strict(model, sd, source=pretrained_path)
    return model


# ----------------------------------------------------------------------------------------------
# Plain timm classifier.


class TimmFERClassifier(nn.Module):
    """timm backbone -> dropout -> linear head, trained with (soft-target) cross-entropy.

    >>> m = TimmFERClassifier("test_resnet", num_classes=7, img_size=64)
    >>> m(torch.randn(2, 3, 64, 64)).shape
    torch.Size([2, 7])
    """

    def __init__(self, backbone_name: str, num_classes: int = 7, pretrained_path: str | Path | None = None,
                 img_size: int | None = None, drop_rate: float = 0.0, label_smoothing: float = 0.0,
                 **backbone_kwargs):
        super().__init__()
        self.num_classes = num_classes
        self.img_size = img_size
        self.label_smoothing = label_smoothing
        self.backbone = build_timm_backbone(backbone_name, img_size, pretrained_path, **backbone_kwargs)
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.backbone.num_features, num_classes)

    def expression_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.expression_features(x)))

    def training_loss(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self(x)
        loss = classification_loss(logits, target, self.label_smoothing)
        return loss, {"loss": loss.item(), "ce": loss.item(), "acc": batch_accuracy(logits, target)}


@register_model(family="baselines")
def fer_timm(backbone: str = "resnet18", num_classes: int = 7, img_size: int = 112, **kw) -> TimmFERClassifier:
    """Any timm backbone as a plain FER classifier."""
    return TimmFERClassifier(backbone, num_classes=num_classes, img_size=img_size, **kw)


@register_model(family="baselines")
def fer_resnet18(num_classes: int = 7, img_size: int = 112, **kw) -> TimmFERClassifier:
    return TimmFERClassifier("resnet18", num_classes=num_classes, img_size=img_size, **kw)


@register_model(family="baselines")
def fer_resnet18_tiny(num_classes: int = 7, img_size: int = 64, **kw) -> TimmFERClassifier:
    """CPU-test size: timm's 0.37 M-parameter ``test_resnet`` (a narrow ResNet) at 64 px."""
    return TimmFERClassifier("test_resnet", num_classes=num_classes, img_size=img_size, **kw)
