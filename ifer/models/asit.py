"""ASIT: GC ViT encoder with pSp-style W+ heads and a structure code, in front of a StyleGAN2 decoder.

``ASITEncoder`` is the official ``GCViT`` class of ``models/encoders/gc_vit.py`` (Talented-Q/IFER-master)
with its exact state-dict layout (1082 entries for ``asit_encoder_base``, persistent buffers included).
Its forward keeps the official return order ``(styles, structure, features)``:

* ``styles``: (B, n_styles, style_dim) W+ codes **without** ``latent_avg`` (14 x 512 at 256 px),
* ``structure``: (B, struct_channels, 4, 4) structure code that can replace the generator's constant,
* ``features``: the three feature-extract maps ``[(B, style_dim, R/4, R/4), (.., R/8, ..), (.., R/16, ..)]``
  used only by the distribution-alignment loss.

``ASIT`` wraps encoder + decoder + ``latent_avg`` like the official ``models/asit.py`` (keys ``encoder.*``,
``decoder.*``; ``latent_avg`` lives at the top level of the checkpoint, not in the state dict).

Example (CPU, < 1 s)::

    import torch, ifer
    net = ifer.create_model("asit_tiny").eval()
    net.init_latent_avg(1024, seed=0)
    img = net(torch.randn(2, 3, 64, 64))                   # (2, 3, 64, 64)
    styles, struct, feats = net.encoder(torch.randn(2, 3, 64, 64))  # (2, 10, 128), (2, 128, 4, 4)
"""
from __future__ import annotations

from pathlib import Path

import torch
from timm.layers import weight_init as timm_init  # looked up at call time: registry.skipped_init patches it
from torch import nn

from ifer.core.loading import CheckpointError, extract_state_dict, load_state_dict_strict, read_checkpoint
from ifer.core.quirks import Quirks, resolved_quirks
from ifer.core.weights import resolve_weights
from ifer.models.gcvit import GCViTLayer, GradualStyleBlock, PatchEmbed, resolve_quirks
from ifer.models.psp import upsample_add
from ifer.models.registry import create_model, register_config_builder, register_model
from ifer.models.stylegan2 import TINY_64_CHANNELS, Generator

__all__ = ["ASITEncoder", "ASIT", "build_encoder", "ENCODER_CONFIGS", "GENERATOR_CONFIGS"]

#: GC ViT-B at 256 px as in the official ``gc_vit_base()``, and a 64-px CPU member on the same code path.
ENCODER_CONFIGS: dict[str, dict] = {
    "base": dict(dim=128, depths=(3, 4, 19, 5), num_heads=(4, 8, 16, 32), window_size=(8, 8, 16, 8),
                 mlp_ratio=2.0, resolution=256, drop_path_rate=0.5, layer_scale=1e-5, style_dim=512,
                 n_styles=14, style_window=8, struct_channels=512),
    # 64 px: stages at 16/8/4 px (three levels, so the structure code stays 4x4 with a stride-1 last_block),
    # windows 4/4/2 (16/4/4 windows per image, so the global-query tiling quirk is visible at every level),
    # W+ width 4*dim = 128 and structure channels 128 = the tiny generator's style_dim and 4x4 channels.
    "tiny": dict(dim=32, depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=(4, 4, 2), mlp_ratio=2.0,
                 resolution=64, drop_path_rate=0.1, layer_scale=1e-5, style_dim=128, n_styles=10,
                 style_window=4, struct_channels=TINY_64_CHANNELS[4]),
}

#: Decoders matching the encoder configs (official ``Generator(256, 512, 8)``; the 64-px CPU generator).
GENERATOR_CONFIGS: dict[str, dict] = {
    "base": dict(size=256, style_dim=512, n_mlp=8),
    "tiny": dict(size=64, style_dim=128, n_mlp=4, channels=TINY_64_CHANNELS),
}


class ASITEncoder(nn.Module):
    """The official ASIT encoder (``GCViT``): GC ViT backbone + FPN + map2style heads + structure conv.

    Levels 0-2 take c1/c2/c3 (their inputs, at R/4, R/8, R/16); the W+ heads read c3 (coarse), p2 =
    up(c3) + latlayer1(c2) (medium) and p1 = up(p2) + latlayer2(c1) (fine), bilinear with
    ``align_corners=True``. ``last_block`` (3x3 conv, stride chosen so the result is 4x4) turns the last
    level's output into the structure code. ``norm`` and ``head`` are unused; they exist because the
    official checkpoints contain them.

    >>> enc = ASITEncoder(**ENCODER_CONFIGS["tiny"])
    >>> [t.shape for t in enc(torch.randn(1, 3, 64, 64))[:2]]
    [torch.Size([1, 10, 128]), torch.Size([1, 128, 4, 4])]
    """

    def __init__(self, dim: int, depths: tuple[int, ...], num_heads: tuple[int, ...], window_size: tuple[int, ...],
                 mlp_ratio: float, resolution: int = 256, drop_path_rate: float = 0.2, layer_scale: float | None = None,
                 style_dim: int = 512, n_styles: int = 14, coarse_ind: int = 3, middle_ind: int = 7,
                 style_window: int = 8, struct_channels: int = 512, in_chans: int = 3, num_classes: int = 1000,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 mode: str | Quirks | None = "as_described", quirks: Quirks | None = None, fused_attn: bool = False):
        super().__init__()
        if len(depths) < 3:
            raise ValueError("the W+ pyramid needs at least 3 levels (c1, c2, c3)")
        if n_styles <= middle_ind:
            raise ValueError(f"n_styles={n_styles} must exceed middle_ind={middle_ind}")
        last_res = resolution // 2 ** (len(depths) + 1)
        if last_res not in (4, 8):
            raise ValueError(f"last level is {last_res} px; the 4x4 structure code needs 4 or 8 (resolution "
                             f"{resolution}, {len(depths)} levels)")
        self.quirks = resolve_quirks(mode, quirks)
        self.resolution = resolution
        self.n_styles, self.coarse_ind, self.middle_ind = n_styles, coarse_ind, middle_ind
        num_features = dim * 2 ** (len(depths) - 1)
        c3_dim = dim * 4

        self.patch_embed = PatchEmbed(in_chans, dim)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.levels = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.levels.append(GCViTLayer(
                dim * 2 ** i, depth, resolution // 2 ** (i + 2), num_heads[i], window_size[i],
                downsample=i < len(depths) - 1, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                attn_drop=attn_drop_rate, drop_path=dpr[start:start + depth], layer_scale=layer_scale,
                quirks=self.quirks, fused_attn=fused_attn))
        # feature-extract branch on c1/c2/c3 (the official builds one per non-final level; 3 for GC ViT-B)
        self.convs = nn.ModuleList([nn.Conv2d(dim * 2 ** i, style_dim, 1) for i in range(3)])
        self.last_block = nn.Conv2d(num_features, struct_channels, 3, stride=last_res // 4, padding=1)
        spatial = [resolution // 16] * coarse_ind + [resolution // 8] * (middle_ind - coarse_ind) \
            + [resolution // 4] * (n_styles - middle_ind)
        self.styles = nn.ModuleList([GradualStyleBlock(c3_dim, style_dim, s, window=style_window,
                                                       fused_attn=fused_attn) for s in spatial])
        self.latlayer1 = nn.Conv2d(dim * 2, c3_dim, 1)
        self.latlayer2 = nn.Conv2d(dim, c3_dim, 1)
        self.act = nn.LeakyReLU()
        self.norm = nn.LayerNorm(num_features)
        self.head = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # the official GCViT init: trunc-normal(0.02) Linear weights, zero biases, unit LayerNorms
        if isinstance(m, nn.Linear):
            timm_init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(B, 3, R, R) -> (styles (B, n_styles, style_dim), structure (B, C, 4, 4), [f1, f2, f3])."""
        x = self.pos_drop(self.patch_embed(x))
        pyramid, features = [], []
        for i, level in enumerate(self.levels):
            if i < 3:
                c = x.permute(0, 3, 1, 2)
                pyramid.append(c)
                features.append(self.act(self.convs[i](c)))
            x = level(x)
        c1, c2, c3 = pyramid
        p2 = upsample_add(c3, self.latlayer1(c2))
        p1 = upsample_add(p2, self.latlayer2(c1))
        sources = [c3] * self.coarse_ind + [p2] * (self.middle_ind - self.coarse_ind) \
            + [p1] * (self.n_styles - self.middle_ind)
        styles = torch.stack([head(src) for head, src in zip(self.styles, sources)], dim=1)
        structure = self.last_block(x.permute(0, 3, 1, 2))
        return styles, structure, features


class ASIT(nn.Module):
    """Encoder + StyleGAN2 decoder + ``latent_avg`` (the official ``models/asit.py`` wrapper).

    ``start_from_latent_avg`` adds ``latent_avg`` (a (style_dim,) or (n_styles, style_dim) buffer, not part
    of the state dict) to the encoder's codes. ``use_struct=True`` feeds the structure code to the decoder
    in place of its learned constant (training and in-training validation do; the official
    ``inference.py`` does not, see ``Quirks.inference_without_struct``). ``train_decoder=False`` freezes
    the decoder (the official default).

    >>> net = ASIT(ASITEncoder(**ENCODER_CONFIGS["tiny"]), Generator(**GENERATOR_CONFIGS["tiny"]))
    >>> _ = net.init_latent_avg(256, seed=0)
    >>> net(torch.randn(1, 3, 64, 64)).shape
    torch.Size([1, 3, 64, 64])
    """

    def __init__(self, encoder: ASITEncoder, decoder: Generator, start_from_latent_avg: bool = True,
                 train_decoder: bool = False):
        super().__init__()
        if encoder.n_styles != decoder.n_latent:
            raise ValueError(f"encoder makes {encoder.n_styles} W+ codes, decoder takes {decoder.n_latent}")
        self.encoder = encoder
        self.decoder = decoder
        self.start_from_latent_avg = start_from_latent_avg
        self.register_buffer("latent_avg", None, persistent=False)
        self.set_train_decoder(train_decoder)

    def set_train_decoder(self, train_decoder: bool) -> None:
        """Freeze (False) or unfreeze (True) every decoder parameter."""
        self.train_decoder = train_decoder
        self.decoder.requires_grad_(train_decoder)

    def set_latent_avg(self, latent_avg: torch.Tensor) -> None:
        """Accepts (style_dim,), (1, style_dim) or (n_styles, style_dim)."""
        latent_avg = latent_avg.detach().float()
        if latent_avg.ndim == 2 and latent_avg.shape[0] == 1:
            latent_avg = latent_avg[0]
        ok_rows = latent_avg.ndim == 1 or (latent_avg.ndim == 2 and latent_avg.shape[0] == self.encoder.n_styles)
        if not ok_rows or latent_avg.shape[-1] != self.decoder.style_dim:
            raise ValueError(f"latent_avg of shape {tuple(latent_avg.shape)} does not fit "
                             f"{self.encoder.n_styles} x {self.decoder.style_dim} codes")
        self.latent_avg = latent_avg.to(self.decoder.input.input.device)

    @torch.no_grad()
    def init_latent_avg(self, n: int = 100_000, seed: int = 0) -> torch.Tensor:
        """Set ``latent_avg`` to the decoder's mean mapped latent over ``n`` seeded z (what the official Coach
        does, unseeded, with n = 1e5, when the StyleGAN checkpoint has none)."""
        self.set_latent_avg(self.decoder.mean_latent(n, generator=torch.Generator().manual_seed(seed))[0])
        return self.latent_avg

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Encoder outputs with ``latent_avg`` added to the codes when ``start_from_latent_avg``."""
        codes, structure, features = self.encoder(x)
        if self.start_from_latent_avg:
            if self.latent_avg is None:
                raise RuntimeError("latent_avg is not set: load_checkpoint / load_decoder / init_latent_avg first "
                                   "(or build with start_from_latent_avg=False)")
            codes = codes + self.latent_avg
        return codes, structure, features

    def decode(self, codes: torch.Tensor, structure: torch.Tensor | None = None, randomize_noise: bool = False,
               noise: list | None = None, return_latents: bool = False):
        """W+ codes (+ optional structure code) -> ``(images, latents or None)``."""
        return self.decoder([codes], input_is_latent=True, noise=noise, randomize_noise=randomize_noise,
                            constant=structure, return_latents=return_latents)

    def forward(self, x: torch.Tensor, use_struct: bool = True, randomize_noise: bool = False,
                return_latents: bool = False, return_features: bool = False):
        """Reconstruct ``x``. Returns ``images``; with ``return_latents`` ``(images, codes)``; with
        ``return_features`` ``(images, codes or None, encoder features)`` (the official returns the same
        encoder feature list for the distribution-alignment loss)."""
        codes, structure, features = self.encode(x)
        images, latents = self.decode(codes, structure if use_struct else None, randomize_noise,
                                      return_latents=return_latents)
        if return_features:
            return images, latents, features
        return (images, latents) if return_latents else images

    # ---- checkpoints -------------------------------------------------------------------------

    def load_checkpoint(self, path: str | Path) -> None:
        """Load an official ASIT checkpoint ``{'state_dict': {encoder.*, decoder.*}, 'opts', 'latent_avg'}``
        strictly; ``latent_avg`` comes from its top-level key (kept as is when the file has none)."""
        ckpt = read_checkpoint(path)
        try:
            sd = extract_state_dict(ckpt)
        except KeyError as e:
            raise CheckpointError(f"{path}: {e.args[0]}") from None
        load_state_dict_strict(self, sd, source=path)
        if torch.is_tensor(ckpt.get("latent_avg")):
            try:
                self.set_latent_avg(ckpt["latent_avg"])
            except ValueError as e:
                raise CheckpointError(f"{path}: {e}") from None

    def save_checkpoint(self, path: str | Path, opts: dict | None = None) -> None:
        """Write the official layout, which ``load_checkpoint`` (and the official code) read back.

        ``opts["quirks"]`` records the resolved quirk flags the encoder ran with (``resolved_quirks``) unless the
        caller gives the run's own."""
        ckpt = {"state_dict": self.state_dict(), "opts": {"quirks": resolved_quirks(self.encoder.quirks), **(opts or {})}}
        if self.latent_avg is not None:
            ckpt["latent_avg"] = self.latent_avg.cpu()
        torch.save(ckpt, path)

    def load_decoder(self, path: str | Path, n_mean_latent: int = 100_000, seed: int = 0) -> None:
        """Load a rosinality StyleGAN2 file's ``g_ema`` strictly into the decoder. ``latent_avg`` is the
        file's when it has one, else the mean of ``n_mean_latent`` seeded mapped latents."""
        latent_avg = self.decoder.load_rosinality(path, key="g_ema")
        if latent_avg is not None:
            self.set_latent_avg(latent_avg)
        else:
            self.init_latent_avg(n_mean_latent, seed)


# ----------------------------------------------------------------------------------------------
# Registered models


def build_encoder(size: str, mode: str | Quirks = "as_described", quirks: Quirks | None = None,
                  fused_attn: bool = False, drop_path_rate: float | None = None, **kwargs) -> ASITEncoder:
    """``ASITEncoder`` from ``ENCODER_CONFIGS[size]`` with overrides (``drop_path_rate=None`` keeps the config's)."""
    cfg = {**ENCODER_CONFIGS[size], **kwargs}
    if drop_path_rate is not None:
        cfg["drop_path_rate"] = drop_path_rate
    return ASITEncoder(**cfg, mode=mode, quirks=quirks, fused_attn=fused_attn)


def _asit(size: str, start_from_latent_avg: bool, train_decoder: bool, **encoder_kwargs) -> ASIT:
    return ASIT(build_encoder(size, **encoder_kwargs), Generator(**GENERATOR_CONFIGS[size]), start_from_latent_avg,
                train_decoder)


@register_model(family="asit")
def asit_encoder_base(mode: str | Quirks = "as_described", quirks: Quirks | None = None, fused_attn: bool = False,
                      drop_path_rate: float | None = None, **kwargs) -> ASITEncoder:
    """Official ``gc_vit_base()``: 265,832,456 parameters, 14 x 512 W+ codes, 512x4x4 structure code at 256 px."""
    return build_encoder("base", mode, quirks, fused_attn, drop_path_rate, **kwargs)


@register_model(family="asit")
def asit_encoder_tiny(mode: str | Quirks = "as_described", quirks: Quirks | None = None, fused_attn: bool = False,
                      drop_path_rate: float | None = None, **kwargs) -> ASITEncoder:
    """64-px CPU encoder: 10 x 128 W+ codes, 128x4x4 structure code (see ``ENCODER_CONFIGS['tiny']``)."""
    return build_encoder("tiny", mode, quirks, fused_attn, drop_path_rate, **kwargs)


@register_model(family="asit")
def asit_base(mode: str | Quirks = "as_described", quirks: Quirks | None = None, fused_attn: bool = False,
              drop_path_rate: float | None = None, start_from_latent_avg: bool = True, train_decoder: bool = False,
              **kwargs) -> ASIT:
    """Official ASIT: ``gc_vit_base()`` + ``Generator(256, 512, 8)``."""
    return _asit("base", start_from_latent_avg, train_decoder, mode=mode, quirks=quirks, fused_attn=fused_attn,
                 drop_path_rate=drop_path_rate, **kwargs)


@register_model(family="asit")
def asit_tiny(mode: str | Quirks = "as_described", quirks: Quirks | None = None, fused_attn: bool = False,
              drop_path_rate: float | None = None, start_from_latent_avg: bool = True, train_decoder: bool = False,
              **kwargs) -> ASIT:
    """64-px CPU ASIT: tiny encoder + ``Generator(64, 128, 4, channels=TINY_64_CHANNELS)``."""
    return _asit("tiny", start_from_latent_avg, train_decoder, mode=mode, quirks=quirks, fused_attn=fused_attn,
                 drop_path_rate=drop_path_rate, **kwargs)


@register_config_builder("asit")
def build_asit_from_config(name: str, section, seed: int = 0, **_other_context) -> ASIT:
    """ASIT from the ``asit`` config section: quirk ``mode``, ``train_decoder``, ``start_from_latent_avg``, the
    StyleGAN2 file (required when the decoder is frozen) and ``latent_avg`` from the file, else from
    ``latent_avg_samples`` mapped latents drawn with ``seed``."""
    train_decoder = bool(section["train_decoder"])
    # resolve the user's file before building a 265M-parameter model, so a missing file fails in milliseconds
    decoder_file = None if train_decoder else resolve_weights("stylegan2_ffhq_256_rosinality",
                                                               section.get("stylegan_weights"))
    net = create_model(name, mode=section["mode"], train_decoder=train_decoder,
                       start_from_latent_avg=section["start_from_latent_avg"], **dict(section.get("kwargs") or {}))
    n_samples = int(section.get("latent_avg_samples", 100_000))
    if decoder_file is not None:
        net.load_decoder(decoder_file, n_mean_latent=n_samples, seed=seed)
    if net.latent_avg is None:
        net.init_latent_avg(n_samples, seed=seed)
    return net
