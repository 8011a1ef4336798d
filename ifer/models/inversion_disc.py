"""ASIT's image-inversion discriminator: a MoCo-style query network and its EMA key network.

The official code (``models/stylegan2/model.py`` l.683-753, classes ``DiscriminatorModel`` and
``Discriminator``) scores a pair of images by the cosine of their embeddings: the query network embeds
the first image, the momentum (EMA) key network the second. Key names match the official module
(``model_q.convs.0.0.weight`` ... ``model_k.lin.bias``), so its state dicts load strictly.

Released behaviour kept behind the quirk ``ema_update_every_forward``: the key network's momentum
update runs inside every forward (three times per ASIT training iteration). Without the quirk it runs
only when the training loop calls ``update_key_network()`` (once per D step).

    python -c "import torch, ifer; d = ifer.create_model('inversion_disc_64_tiny'); \
x = torch.randn(2, 3, 64, 64); print(d(x, x))"
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ifer.core.quirks import Quirks, get_quirks
from ifer.models.registry import register_model
from ifer.models.stylegan2 import BLUR_KERNEL, TINY_64_CHANNELS, channel_table, resblock_trunk

__all__ = ["InversionFeatureNet", "InversionDiscriminator"]


class InversionFeatureNet(nn.Module):
    """Official ``DiscriminatorModel``: FromRGB 1x1 ConvLayer, StyleGAN2 ResBlocks down to 4 px, global
    average pool, ``nn.Linear(channels[4], num_classes)``. No minibatch stddev and no EqualLinear head.

    At 256 px the channels run 128 -> 256 -> 512 -> 512 -> 512 -> 512 -> 512 (22,370,048 parameters).
    The official forward uses ``torch.squeeze`` after the pool, which also drops the batch dimension at
    B=1 and then fails in the linear layer's output shape (fixed bug 4); ``flatten(1)`` gives the same
    values for every B > 1 and works at B=1.

    >>> InversionFeatureNet(32, channels={4: 32, 8: 32, 16: 16, 32: 16})(torch.randn(1, 3, 32, 32)).shape
    torch.Size([1, 128])
    """

    def __init__(self, size: int = 256, num_classes: int = 128, channel_multiplier: int = 2,
                 blur_kernel: Sequence[float] = BLUR_KERNEL, channels: Mapping[int, int] | None = None):
        super().__init__()
        table = channel_table(channel_multiplier, channels)
        self.convs = resblock_trunk(size, table, blur_kernel)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.lin = nn.Linear(table[4], num_classes)

    def forward(self, x):
        return self.lin(self.pool(self.convs(x)).flatten(1))


class InversionDiscriminator(nn.Module):
    """Official ``Discriminator``: ``cos(normalize(q(inp1)), normalize(k(inp2)))`` of shape (B, 1).

    ``model_k`` starts as a copy of ``model_q``, takes no gradient and follows it by EMA with momentum
    ``m`` (0.999): ``k <- m * k + (1 - m) * q``. ``num_key_updates`` counts the updates.

    >>> d = InversionDiscriminator(32, channels={4: 32, 8: 32, 16: 16, 32: 16}, quirks="as_described")
    >>> x = torch.randn(2, 3, 32, 32)
    >>> d(x, x).shape, d.num_key_updates
    (torch.Size([2, 1]), 0)
    >>> d.update_key_network(); d.num_key_updates
    1
    """

    def __init__(self, size: int = 256, m: float = 0.999, num_classes: int = 128, channel_multiplier: int = 2,
                 channels: Mapping[int, int] | None = None, quirks: str | Quirks | None = None):
        super().__init__()
        self.m = m
        self.quirks = get_quirks(quirks)
        self.model_q = InversionFeatureNet(size, num_classes, channel_multiplier, channels=channels)
        self.model_k = copy.deepcopy(self.model_q)
        self.model_k.requires_grad_(False)
        self.num_key_updates = 0

    @torch.no_grad()
    def update_key_network(self) -> None:
        """One momentum step of the key network towards the query network."""
        for q, k in zip(self.model_q.parameters(), self.model_k.parameters()):
            # Same expression (and so the same rounding) as the official ``_momentum_update_key_model``.
            k.copy_(k * self.m + q * (1.0 - self.m))
        self.num_key_updates += 1

    def forward(self, inp1: torch.Tensor, inp2: torch.Tensor) -> torch.Tensor:
        out1 = self.model_q(inp1)
        if self.quirks.ema_update_every_forward:
            self.update_key_network()
        with torch.no_grad():
            out2 = self.model_k(inp2)
        return F.cosine_similarity(F.normalize(out1, dim=1), F.normalize(out2, dim=1), dim=1).unsqueeze(1)


@register_model(family="inversion_disc")
def inversion_disc_256(**kwargs) -> InversionDiscriminator:
    """The official ASIT discriminator at 256 px: 44,740,096 parameters (22,370,048 each in q and k)."""
    return InversionDiscriminator(**{"size": 256, **kwargs})


@register_model(family="inversion_disc")
def inversion_disc_64_tiny(**kwargs) -> InversionDiscriminator:
    """64-px CPU discriminator with the tiny generator's channel table ``TINY_64_CHANNELS``."""
    return InversionDiscriminator(**{"size": 64, "channels": TINY_64_CHANNELS, **kwargs})
