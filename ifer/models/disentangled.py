"""Disentangled adversarial FER (Halawa et al., "Learning Disentangled Expression Representations from
Facial Images", arXiv 2008.07001; 60.53 % on AffectNet).

Shared timm encoder -> two branches: an *expression* embedding (-> expression classifier) and a
*non-expression* embedding. An adversary classifier reads the non-expression embedding and tries to
predict the expression; the encoder is trained so that it cannot (``adversary="uniform_kl"``: its
output is pushed to uniform; ``"grad_reversal"``: its cross-entropy is maximised through a gradient-
reversal layer). An optional decoder reconstructs the image from both embeddings
(``recon_weight > 0``); the paper reports that the reconstruction task hurt, so it is off by default
and no decoder is built. No code was released: dimensions, backbone, adversary shape and weights are
our choices, listed in ``docs/methods.md``.

Stepping: one forward of ``training_loss`` (inside DDP, so every gradient is all-reduced) and one backward
feed both players; each term reaches only the parameters of the player it trains:
* ``uniform_kl``: the encoder term evaluates the adversary with *detached* parameters
  (``torch.func.functional_call``), and the adversary's own cross-entropy is computed on the
  *detached* non-expression embedding.
* ``grad_reversal``: one cross-entropy through :func:`~ifer.losses.disentangled.grad_reverse`;
  the adversary minimises it, the encoder receives ``-adv_weight`` times its gradient.
The trainer (``ifer.train.fer``) gives ``main_parameters()`` to the main optimizer and
``adversary_parameters()`` to the adversary's own optimizer, so the adversary is stepped exactly once per
iteration, with the gradient of that same backward.

    python -c "import torch, ifer; m = ifer.create_model('disentangled_tiny'); \
print(m.training_loss(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3]))[1])"
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call

from ifer.losses.classification import batch_accuracy, classification_loss
from ifer.losses.disentangled import grad_reverse, uniform_kl
from ifer.models.baselines import build_timm_backbone
from ifer.models.registry import register_model

__all__ = ["DisentangledFER", "ADVERSARY_MODES", "disentangled_resnet18", "disentangled_tiny"]

ADVERSARY_MODES = ("uniform_kl", "grad_reversal")


def _item(t: torch.Tensor) -> float:
    return t.detach().item()


def _embedding(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True))


class ImageDecoder(nn.Module):
    """Embedding -> 4x4 map -> (upsample x2, conv3x3, BN, ReLU) per octave -> 3-channel image of ``img_size``."""

    def __init__(self, in_dim: int, img_size: int, base_channels: int = 256, min_channels: int = 32):
        super().__init__()
        n_up = int(math.log2(img_size // 4))
        if 4 * 2**n_up != img_size:
            raise ValueError(f"the decoder needs img_size = 4 * 2^k, got {img_size}")
        self.base_channels = base_channels
        self.fc = nn.Linear(in_dim, base_channels * 16)
        layers, c = [], base_channels
        for _ in range(n_up):
            c_out = max(c // 2, min_channels)
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c_out, 3, 1, 1),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c = c_out
        layers.append(nn.Conv2d(c, 3, 3, 1, 1))  # linear output: targets are the normalised input tensor
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, self.base_channels, 4, 4))


class DisentangledFER(nn.Module):
    """Shared encoder, expression / non-expression branches, adversary, optional decoder.

    Args:
        backbone: timm model (shared layers). ``pretrained_path`` loads a user file strictly.
        expr_dim / nonexpr_dim: branch embedding sizes (not given in the paper; 256 each).
        adversary: ``"uniform_kl"`` (default) or ``"grad_reversal"``; see the module docstring.
        adv_weight: weight of the encoder's adversarial term (for grad reversal, the reversal coefficient).
        adversary_hidden: hidden width of the 2-layer MLP adversary (0 = linear adversary).
        recon_weight: weight of the MSE reconstruction of the (normalised) input; 0 builds no decoder.
    """

    def __init__(self, backbone: str = "resnet18", num_classes: int = 7, img_size: int = 112,
                 expr_dim: int = 256, nonexpr_dim: int = 256,
                 adversary: Literal["uniform_kl", "grad_reversal"] = "uniform_kl", adv_weight: float = 1.0,
                 adversary_hidden: int = 256, recon_weight: float = 0.0,
                 decoder_channels: int = 256, pretrained_path: str | Path | None = None, known_weights: str | None = None,
                 backbone_kwargs: dict | None = None):
        super().__init__()
        if adversary not in ADVERSARY_MODES:
            raise ValueError(f"adversary must be one of {ADVERSARY_MODES}, got {adversary!r}")
        self.num_classes = num_classes
        self.img_size = img_size
        self.adversary_mode = adversary
        self.adv_weight = adv_weight
        self.recon_weight = recon_weight
        self.backbone = build_timm_backbone(backbone, img_size, pretrained_path, known_weights=known_weights,
                                            **(backbone_kwargs or {}))
        feat = self.backbone.num_features
        self.expr_branch = _embedding(feat, expr_dim)
        self.nonexpr_branch = _embedding(feat, nonexpr_dim)
        self.classifier = nn.Linear(expr_dim, num_classes)
        if adversary_hidden > 0:
            self.adversary = nn.Sequential(nn.Linear(nonexpr_dim, adversary_hidden), nn.ReLU(inplace=True),
                                           nn.Linear(adversary_hidden, num_classes))
        else:
            self.adversary = nn.Linear(nonexpr_dim, num_classes)
        self.decoder = ImageDecoder(expr_dim + nonexpr_dim, img_size, decoder_channels) if recon_weight > 0 else None

    # --- parameters: each player has its own optimizer (see the module docstring) ---
    def adversary_parameters(self) -> Iterator[nn.Parameter]:
        return self.adversary.parameters()

    def main_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter except the adversary's: what the main optimizer may step."""
        adv = {id(p) for p in self.adversary.parameters()}
        return (p for p in self.parameters() if id(p) not in adv)

    # --- interface ---
    def embeddings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(x)
        return self.expr_branch(h), self.nonexpr_branch(h)

    def expression_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.expr_branch(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.expression_features(x))

    def _frozen_adversary(self, z: torch.Tensor) -> torch.Tensor:
        # The adversary's parameters enter as constants: this term trains the encoder only.
        params = {k: v.detach() for k, v in self.adversary.named_parameters()}
        return functional_call(self.adversary, params, (z,))

    def training_loss(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        z_e, z_n = self.embeddings(x)
        logits = self.classifier(z_e)
        ce = classification_loss(logits, target)
        logs: dict[str, float] = {"ce": _item(ce), "acc": batch_accuracy(logits, target)}
        if self.adversary_mode == "grad_reversal":
            adv_logits = self.adversary(grad_reverse(z_n, self.adv_weight))
            adv_ce = classification_loss(adv_logits, target)
            loss = ce + adv_ce
        else:
            adv_term = uniform_kl(self._frozen_adversary(z_n))
            loss = ce + self.adv_weight * adv_term
            logs["adv_uniform_kl"] = _item(adv_term)
            adv_logits = self.adversary(z_n.detach())
            adv_ce = classification_loss(adv_logits, target)
            loss = loss + adv_ce
        logs["adv_ce"] = _item(adv_ce)
        logs["adv_acc"] = batch_accuracy(adv_logits, target)
        if self.decoder is not None:
            recon = torch.mean((self.decoder(torch.cat([z_e, z_n], dim=1)) - x) ** 2)
            loss = loss + self.recon_weight * recon
            logs["recon"] = _item(recon)
        logs["loss"] = _item(loss)
        return loss, logs


@register_model(family="disentangled")
def disentangled_resnet18(num_classes: int = 7, img_size: int = 112, **kw) -> DisentangledFER:
    """ResNet-18 shared encoder, 256-d branches, uniform-KL adversary, no reconstruction."""
    return DisentangledFER("resnet18", num_classes=num_classes, img_size=img_size, **kw)


@register_model(family="disentangled")
def disentangled_tiny(num_classes: int = 7, img_size: int = 64, **kw) -> DisentangledFER:
    """CPU-test size: timm ``test_resnet`` at 64 px, 32-d branches, 32-wide adversary, small decoder if enabled."""
    kw = {"expr_dim": 32, "nonexpr_dim": 32, "adversary_hidden": 32, "decoder_channels": 32, **kw}
    return DisentangledFER("test_resnet", num_classes=num_classes, img_size=img_size, **kw)
