"""Baseline FER classifiers and the pSp inversion encoder, plus the timm helpers the FER models share.

* :class:`TimmFERClassifier`: any timm backbone + linear head, trained with cross-entropy
  (``fer_timm``, ``fer_resnet18``, ``fer_resnet18_tiny``).
* ``fer_gcvit_asit_base``: the ASIT encoder used by IFER (GC ViT -> W+ codes) with a linear head on the
  codes averaged over the style axis (:class:`WPlusCodeClassifier`).
* :class:`GradualStyleEncoder`: pSp's encoder (IR-SE50 body + feature pyramid + one style head per
  W+ entry) with pSp's parameter names, so ``encoder.*`` of a pSp checkpoint loads strictly
  (``psp_encoder``, ``psp_encoder_tiny``).

Every FER model here implements the suite's interface: ``forward(x) -> logits``,
``training_loss(x, target) -> (loss, {name: float})``, ``expression_features(x) -> (B, D)``, ``num_classes``.
timm models are always built with ``pretrained=False``; a ``pretrained_path`` loads a user file strictly.

    python -c "import torch, ifer; m = ifer.create_model('fer_resnet18_tiny'); \
print(m(torch.randn(2, 3, 64, 64)).shape, m.training_loss(torch.randn(2, 3, 64, 64), torch.tensor([0, 1]))[1])"
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn
from torch.nn import functional as F

from ifer.core.loading import load_state_dict_strict, read_checkpoint, read_state_dict
from ifer.models.registry import create_model, register_model

__all__ = [
    "build_timm_backbone", "classification_loss", "hard_labels", "batch_accuracy", "TimmFERClassifier", "WPlusCodeClassifier",
    "GradualStyleEncoder", "BottleneckIRSE", "GradualStyleBlock",
]


# ----------------------------------------------------------------------------------------------
# Shared helpers (used by ke2nt.py and disentangled.py too).


def build_timm_backbone(name: str, img_size: int | None = None, pretrained_path: str | Path | None = None,
                        **kwargs) -> nn.Module:
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
    if pretrained_path is not None:
        sd = read_state_dict(pretrained_path)
        head = model.pretrained_cfg.get("classifier") or ()
        heads = (head,) if isinstance(head, str) else tuple(head)
        sd = {k: v for k, v in sd.items() if not any(k.startswith(h + ".") for h in heads)}
        load_state_dict_strict(model, sd, source=pretrained_path)
    return model


def hard_labels(target: torch.Tensor) -> torch.Tensor:
    """Class indices from indices (B,) or soft targets (B, C) (mixup / label smoothing -> argmax)."""
    return target.argmax(dim=-1) if target.ndim == 2 else target.long()


def classification_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy for hard (B,) or soft (B, C) targets."""
    if target.ndim == 2:
        return F.cross_entropy(logits, target.to(logits.dtype), label_smoothing=label_smoothing)
    return F.cross_entropy(logits, target.long(), label_smoothing=label_smoothing)


def batch_accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    return (logits.argmax(-1) == hard_labels(target)).float().mean().item()


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


# ----------------------------------------------------------------------------------------------
# GC ViT as used by IFER: ASIT encoder -> W+ codes -> linear head.


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


# ----------------------------------------------------------------------------------------------
# pSp GradualStyleEncoder (Richardson et al., CVPR 2021) with an IR-SE backbone.


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIRSE(nn.Module):
    """ArcFace IR-SE unit: BN-conv-PReLU-conv-BN-SE residual branch + (max-pool | conv-BN) shortcut."""

    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel), nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth), SEModule(depth, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class EqualLinear(nn.Module):
    """StyleGAN's equalised-lr linear layer (no activation), as in pSp's GradualStyleBlock."""

    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class GradualStyleBlock(nn.Module):
    """Strided 3x3 convs from a ``spatial`` x ``spatial`` map down to 1x1, then EqualLinear: one W+ entry."""

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        self.out_c = out_c
        layers: list[nn.Module] = [nn.Conv2d(in_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        for _ in range(int(math.log2(spatial)) - 1):
            layers += [nn.Conv2d(out_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).view(-1, self.out_c))


class GradualStyleEncoder(nn.Module):
    """pSp encoder: IR-SE body, FPN (``latlayer1/2``), ``n_styles`` style heads -> W+ codes (B, n_styles, w_dim).

    With the defaults (256 px, IR-SE50 units (3, 4, 14, 3), widths (64, 128, 256, 512), 18 styles) the
    parameter names and shapes equal pSp's ``encoder.*`` (``input_layer``, ``body``, ``styles``,
    ``latlayer1``, ``latlayer2``). Styles 0-2 read the coarsest map (img/16), 3-6 the middle (img/8),
    the rest the finest (img/4). The codes are offsets: pSp adds ``latent_avg`` before decoding
    (``start_from_latent_avg``); ``load_psp_checkpoint`` keeps it in ``self.latent_avg`` when present.

    >>> GradualStyleEncoder(img_size=64, n_styles=10, units=(1, 1, 1, 1), widths=(16, 16, 32, 64))(
    ...     torch.randn(1, 3, 64, 64)).shape
    torch.Size([1, 10, 64])
    """

    coarse_ind = 3
    middle_ind = 7

    def __init__(self, img_size: int = 256, n_styles: int = 18, units: Sequence[int] = (3, 4, 14, 3),
                 widths: Sequence[int] = (64, 128, 256, 512), input_nc: int = 3):
        super().__init__()
        if img_size % 16:
            raise ValueError(f"img_size must be a multiple of 16 (four stride-2 stages), got {img_size}")
        if min(widths) < 16:
            raise ValueError(f"widths must be >= 16 (SE reduction 16), got {tuple(widths)}")
        self.n_styles = n_styles
        self.w_dim = widths[-1]
        self.input_layer = nn.Sequential(nn.Conv2d(input_nc, widths[0], 3, 1, 1, bias=False),
                                         nn.BatchNorm2d(widths[0]), nn.PReLU(widths[0]))
        modules, in_c = [], widths[0]
        for n, depth in zip(units, widths):
            modules += [BottleneckIRSE(in_c, depth, 2)] + [BottleneckIRSE(depth, depth, 1) for _ in range(n - 1)]
            in_c = depth
        self.body = nn.Sequential(*modules)
        # Feature taps at the end of stages 2, 3, 4 (pSp's hard-coded body indices 6, 20, 23 for IR-SE50).
        ends = [sum(units[: i + 1]) - 1 for i in range(4)]
        self._taps = (ends[1], ends[2], ends[3])
        spatial = {0: img_size // 16, 1: img_size // 8, 2: img_size // 4}
        self.styles = nn.ModuleList(
            GradualStyleBlock(self.w_dim, self.w_dim, spatial[0 if i < self.coarse_ind else 1 if i < self.middle_ind else 2])
            for i in range(n_styles))
        self.latlayer1 = nn.Conv2d(widths[2], self.w_dim, 1, 1, 0)
        self.latlayer2 = nn.Conv2d(widths[1], self.w_dim, 1, 1, 0)
        self.register_buffer("latent_avg", None, persistent=False)

    @staticmethod
    def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_layer(x)
        feats = {}
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self._taps:
                feats[i] = x
        c1, c2, c3 = (feats[i] for i in self._taps)
        p2 = self._upsample_add(c3, self.latlayer1(c2))
        p1 = self._upsample_add(p2, self.latlayer2(c1))
        maps = [c3] * self.coarse_ind + [p2] * (self.middle_ind - self.coarse_ind) + [p1] * self.n_styles
        return torch.stack([style(m) for style, m in zip(self.styles, maps)], dim=1)

    def load_psp_checkpoint(self, path: str | Path) -> None:
        """Load ``encoder.*`` of a pSp checkpoint strictly and keep its ``latent_avg`` (if any) as a buffer."""
        load_state_dict_strict(self, read_state_dict(path, prefix="encoder"), source=path)
        avg = read_checkpoint(path).get("latent_avg")
        if torch.is_tensor(avg):
            self.latent_avg = avg.float()


@register_model(family="baselines")
def psp_encoder(img_size: int = 256, n_styles: int = 18, checkpoint: str | Path | None = None) -> GradualStyleEncoder:
    """pSp GradualStyleEncoder, IR-SE50, 256 px / 18 styles (StyleGAN2 1024 px) by default."""
    model = GradualStyleEncoder(img_size=img_size, n_styles=n_styles)
    if checkpoint is not None:
        model.load_psp_checkpoint(checkpoint)
    return model


@register_model(family="baselines")
def psp_encoder_tiny(img_size: int = 64, n_styles: int = 10, w_dim: int = 128) -> GradualStyleEncoder:
    """CPU-test size: one IR-SE unit per stage, widths (16, 32, 64, w_dim), 64 px, 10 styles (StyleGAN2 64 px)."""
    return GradualStyleEncoder(img_size=img_size, n_styles=n_styles, units=(1, 1, 1, 1), widths=(16, 32, 64, w_dim))
