"""pSp's encoder (Richardson et al., CVPR 2021): an IR-SE body, a feature pyramid and one style head per W+ entry,
with pSp's parameter names, so ``encoder.*`` of a pSp checkpoint loads strictly (``psp_encoder``,
``psp_encoder_tiny``).

Its parts are the suite's single copies: the IR-SE units are ``ifer.metrics.irse.BottleneckIR`` (the ArcFace
embedder's), the heads end in ``ifer.models.stylegan2.EqualLinear``, and ``upsample_add`` is the pyramid step the
ASIT encoder (``ifer.models.asit``) uses as well.

    python -c "import torch, ifer; print(ifer.create_model('psp_encoder_tiny')(torch.randn(1, 3, 64, 64)).shape)"
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ifer.core.loading import load_state_dict_strict, read_checkpoint, read_state_dict
from ifer.metrics.irse import BottleneckIR
from ifer.models.registry import register_model
from ifer.models.stylegan2 import EqualLinear

__all__ = ["GradualStyleEncoder", "PSPStyleHead", "upsample_add"]


def upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """pSp's FPN step: ``x`` resized bilinearly (align_corners=True) to ``y``'s size, plus ``y``."""
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class PSPStyleHead(nn.Module):
    """pSp's ``GradualStyleBlock`` (map2style): strided 3x3 convs from a ``spatial`` x ``spatial`` map down to 1x1,
    then EqualLinear: one W+ entry. Renamed here because ASIT's head with window attention keeps the official
    name ``GradualStyleBlock`` (``ifer.models.gcvit``); only the state-dict keys (``convs``, ``linear``) matter."""

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        self.out_c = out_c
        layers: list[nn.Module] = [nn.Conv2d(in_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        for _ in range(int(math.log2(spatial)) - 1):
            layers += [nn.Conv2d(out_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1)

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
            modules += [BottleneckIR(in_c, depth, 2, use_se=True)]
            modules += [BottleneckIR(depth, depth, 1, use_se=True) for _ in range(n - 1)]
            in_c = depth
        self.body = nn.Sequential(*modules)
        # Feature taps at the end of stages 2, 3, 4 (pSp's hard-coded body indices 6, 20, 23 for IR-SE50).
        ends = [sum(units[: i + 1]) - 1 for i in range(4)]
        self._taps = (ends[1], ends[2], ends[3])
        spatial = {0: img_size // 16, 1: img_size // 8, 2: img_size // 4}
        self.styles = nn.ModuleList(
            PSPStyleHead(self.w_dim, self.w_dim, spatial[0 if i < self.coarse_ind else 1 if i < self.middle_ind else 2])
            for i in range(n_styles))
        self.latlayer1 = nn.Conv2d(widths[2], self.w_dim, 1, 1, 0)
        self.latlayer2 = nn.Conv2d(widths[1], self.w_dim, 1, 1, 0)
        self.register_buffer("latent_avg", None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_layer(x)
        feats = {}
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self._taps:
                feats[i] = x
        c1, c2, c3 = (feats[i] for i in self._taps)
        p2 = upsample_add(c3, self.latlayer1(c2))
        p1 = upsample_add(p2, self.latlayer2(c1))
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
