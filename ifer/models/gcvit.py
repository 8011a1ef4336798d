"""GC ViT v1 building blocks as used by the IFER/ASIT encoder, with the released code's quirks as flags.

Module and parameter names reproduce the official ``models/encoders/gc_vit.py`` of Talented-Q/IFER-master
(itself NVlabs/GCVit v1, June 2022, adapted to 256 px), so official checkpoints load strictly. The code
is a clean re-implementation; only the state-dict layout is shared.

Three inherited GC ViT v1 bugs are reproduced exactly behind ``Quirks`` flags (``ifer.core.quirks``):

* ``channels_last_view`` (NVlabs/GCVit #13): the channels-last stage map is *reinterpreted* as NCHW with
  ``reshape(B, C, H, W)`` before the global-query generator. Fixed: ``permute(0, 3, 1, 2)``.
* ``global_query_no_head_transpose`` (#11): the global query (B, C, h, w) is reshaped straight to
  (B, heads, N, C/heads). Fixed: tokens first, (B, N, C) -> (B, N, heads, hd) -> (B, heads, N, hd).
* ``global_query_batch_tiling`` (#10): the query is tiled ``repeat(nW, 1, 1, 1)`` (batch-first) while
  windows are batch-major, so window ``w`` of image ``b`` attends with image ``(b*nW + w) % B``'s query.
  Fixed: ``repeat_interleave(nW, dim=0)`` (each image's query for its own windows, as in NVlabs eb3471a).

Example::

    import torch
    from ifer.models.gcvit import GCViTLayer
    layer = GCViTLayer(dim=32, depth=2, input_resolution=16, num_heads=2, window_size=8, mode="as_released")
    y = layer(torch.randn(2, 16, 16, 32))   # channels-last in -> (2, 8, 8, 64) after the ReduceSize
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.layers import weight_init as timm_init  # looked up at call time: registry.skipped_init patches it
from torch import nn

from ifer.core.quirks import Quirks, get_quirks
from ifer.models.stylegan2 import EqualLinear

__all__ = [
    "resolve_quirks", "SE", "Mlp", "SinusoidalPositionalEmbedding2d", "ReduceSize", "PatchEmbed", "FeatExtract",
    "WindowAttention", "WindowAttentionGlobal", "GCViTBlock", "GCViTLayer", "StyleBlock", "GradualStyleBlock",
    "window_partition", "window_reverse",
]


def resolve_quirks(mode: str | Quirks | None = "as_described", quirks: Quirks | None = None) -> Quirks:
    """``quirks`` wins over ``mode``; both accept what ``get_quirks`` accepts."""
    return get_quirks(quirks if quirks is not None else mode)


class SE(nn.Module):
    """Squeeze-and-excitation on NCHW maps (bias-free MLP, GELU, sigmoid gate)."""

    def __init__(self, dim: int, expansion: float = 0.25):
        super().__init__()
        hidden = int(dim * expansion)
        self.fc = nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.GELU(),
                                nn.Linear(hidden, dim, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return x * gate[:, :, None, None]


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout (timm's ViT MLP layout)."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def _conv_se_block(dim: int) -> nn.Sequential:
    # depthwise 3x3 -> GELU -> SE -> pointwise 1x1: the "fused MBConv" shared by ReduceSize and FeatExtract
    return nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=False), nn.GELU(), SE(dim),
                         nn.Conv2d(dim, dim, 1, 1, 0, bias=False))


class SinusoidalPositionalEmbedding2d(nn.Module):
    """Fixed 2-D sinusoidal position grid (mmgen SPE2d), ``embedding_dim`` channels per axis.

    Positions start at 1 (0 is mmgen's padding index). Frequencies ``exp(-i * ln(1e4) / (half - 1))``.
    The ``_float_tensor`` buffer carries no information; it exists because the official module registers
    it (persistently), so every official checkpoint has the key.
    """

    def __init__(self, embedding_dim: int):
        super().__init__()
        if embedding_dim % 2 or embedding_dim < 4:
            raise ValueError(f"embedding_dim must be even and >= 4, got {embedding_dim}")
        self.embedding_dim = embedding_dim
        self.register_buffer("_float_tensor", torch.zeros(1))

    def _axis(self, n: int) -> torch.Tensor:
        half = self.embedding_dim // 2
        freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
        ang = torch.arange(1, n + 1, dtype=torch.float32)[:, None] * freq[None]
        return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)  # (n, embedding_dim)

    def grid(self, height: int, width: int) -> torch.Tensor:
        """(height, width, 2*embedding_dim) channels-last grid: x-axis channels first, then y-axis."""
        x_emb = self._axis(width)[None, :, :].expand(height, width, -1)
        y_emb = self._axis(height)[:, None, :].expand(height, width, -1)
        return torch.cat([x_emb, y_emb], dim=-1)


class ReduceSize(nn.Module):
    """LN -> residual conv-SE block -> 3x3/s2 conv (2x channels unless ``keep_dim``) -> LN -> + alpha * SPE.

    Channels-last in and out. ``alpha`` starts at 0, so the positional term is off at initialisation.
    """

    def __init__(self, dim: int, keep_dim: bool = False):
        super().__init__()
        dim_out = dim if keep_dim else 2 * dim
        self.conv = _conv_se_block(dim)
        self.reduction = nn.Conv2d(dim, dim_out, 3, 2, 1, bias=False)
        self.norm2 = nn.LayerNorm(dim_out)
        self.norm1 = nn.LayerNorm(dim)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.sin_pos_embed = SinusoidalPositionalEmbedding2d(dim_out // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x).permute(0, 3, 1, 2)
        x = x + self.conv(x)
        x = self.norm2(self.reduction(x).permute(0, 2, 3, 1))
        pos = self.sin_pos_embed.grid(x.shape[1], x.shape[2]).to(device=x.device, dtype=x.dtype)
        return (x + pos * self.alpha).contiguous()


class PatchEmbed(nn.Module):
    """3x3/s2 conv stem then a keep-dim ReduceSize: (B, 3, H, W) -> channels-last (B, H/4, W/4, dim)."""

    def __init__(self, in_chans: int = 3, dim: int = 96):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, 3, 2, 1)
        self.conv_down = ReduceSize(dim, keep_dim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_down(self.proj(x).permute(0, 2, 3, 1))


class FeatExtract(nn.Module):
    """NCHW residual conv-SE block, then 3x3/s2 max-pool unless ``keep_dim`` (global-query generator stage)."""

    def __init__(self, dim: int, keep_dim: bool = False):
        super().__init__()
        self.conv = _conv_se_block(dim)
        if not keep_dim:
            self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.keep_dim = keep_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.conv(x)
        return x if self.keep_dim else self.pool(x)


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws*ws, C), windows batch-major then row-major."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, C)


def window_reverse(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    """Inverse of ``window_partition``: (B * nW, ws*ws, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // window_size, W // window_size, window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


def relative_position_index(window_size: int) -> torch.Tensor:
    """Swin's (N, N) index into the ((2ws-1)^2, heads) bias table, N = ws*ws."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


class _WindowAttentionBase(nn.Module):
    """Shared parts of local and global window attention: relative position bias, projection, attention core.

    ``fused_attn=True`` runs ``F.scaled_dot_product_attention`` with the bias as an additive float mask;
    ``False`` runs the explicit (q * scale) @ k^T + bias -> softmax -> @ v of the official code.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, n_qkv: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, fused_attn: bool = False):
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.fused_attn = fused_attn
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * n_qkv, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        timm_init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _bias(self) -> torch.Tensor:
        n = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1).unsqueeze(0)  # (1, heads, N, N)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v: (B_, heads, N, hd) -> projected (B_, N, C)."""
        B_, _, N, _ = k.shape
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=self._bias().to(q.dtype), scale=self.scale,
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1) + self._bias()
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B_, N, -1)))


class WindowAttention(_WindowAttentionBase):
    """Local window MHSA with Swin relative position bias. ``q_global`` is accepted and ignored."""

    def __init__(self, dim: int, num_heads: int, window_size: int, **kwargs):
        super().__init__(dim, num_heads, window_size, n_qkv=3, **kwargs)

    def forward(self, x: torch.Tensor, q_global: torch.Tensor | None = None) -> torch.Tensor:
        B_, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        return self._attend(q, k, v)


class WindowAttentionGlobal(_WindowAttentionBase):
    """Window attention whose queries are the stage's global query tokens (K, V from the window)."""

    def __init__(self, dim: int, num_heads: int, window_size: int, quirks: Quirks | None = None, **kwargs):
        super().__init__(dim, num_heads, window_size, n_qkv=2, **kwargs)
        self.quirks = quirks or get_quirks()

    def global_query(self, q_global: torch.Tensor, n_windows: int) -> torch.Tensor:
        """(B, C, ws, ws) NCHW global query -> (B * n_windows, heads, N, hd) aligned with the windows."""
        B, C = q_global.shape[:2]
        hd = C // self.num_heads
        if self.quirks.global_query_no_head_transpose:
            # as released (GCVit #11): raw reinterpretation of the (C, h, w) memory as (heads, N, hd)
            q = q_global.reshape(B, self.num_heads, -1, hd)
        else:
            q = q_global.flatten(2).transpose(1, 2).reshape(B, -1, self.num_heads, hd).transpose(1, 2)
        if self.quirks.global_query_batch_tiling:
            # as released (GCVit #10): [b0..bB-1, b0..bB-1, ...] against batch-major windows
            return q.repeat(n_windows, 1, 1, 1)
        return q.repeat_interleave(n_windows, dim=0)

    def forward(self, x: torch.Tensor, q_global: torch.Tensor) -> torch.Tensor:
        B_, N, C = x.shape
        k, v = self.qkv(x).reshape(B_, N, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q = self.global_query(q_global, B_ // q_global.shape[0])
        return self._attend(q, k, v)


class GCViTBlock(nn.Module):
    """Pre-norm window attention (local or global) + pre-norm MLP, each with layer-scale and DropPath.

    Channels-last (B, H, W, C) in and out. ``layer_scale=None`` means gamma = 1 with no parameter.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, global_query: bool = False,
                 layer_scale: float | None = None, quirks: Quirks | None = None, fused_attn: bool = False):
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim)
        attn_kwargs = dict(qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop, fused_attn=fused_attn)
        if global_query:
            self.attn = WindowAttentionGlobal(dim, num_heads, window_size, quirks=quirks, **attn_kwargs)
        else:
            self.attn = WindowAttention(dim, num_heads, window_size, **attn_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        if layer_scale is not None:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim))
        else:
            self.gamma1 = self.gamma2 = 1.0

    def forward(self, x: torch.Tensor, q_global: torch.Tensor | None = None) -> torch.Tensor:
        _, H, W, _ = x.shape
        attn = self.attn(window_partition(self.norm1(x), self.window_size), q_global)
        x = x + self.drop_path(self.gamma1 * window_reverse(attn, self.window_size, H, W))
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))


class GCViTLayer(nn.Module):
    """One GC ViT stage: blocks alternating local (even) / global (odd) attention, then an optional ReduceSize.

    The global query comes from ``to_q_global``: log2(resolution / window) pooling FeatExtracts, or one
    keep-dim FeatExtract when the stage is a single window wide (the official 64/32/16/8 cases). It is
    computed once per stage and shared by all global blocks.
    """

    def __init__(self, dim: int, depth: int, input_resolution: int, num_heads: int, window_size: int,
                 downsample: bool = True, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float | list[float] = 0.0, layer_scale: float | None = None,
                 mode: str | Quirks | None = "as_described", quirks: Quirks | None = None, fused_attn: bool = False):
        super().__init__()
        self.quirks = resolve_quirks(mode, quirks)
        n_pools = int(math.log2(input_resolution // window_size))
        if input_resolution % window_size or window_size << n_pools != input_resolution:
            raise ValueError(f"window {window_size} must divide resolution {input_resolution} by a power of 2")
        self.blocks = nn.ModuleList([
            GCViTBlock(dim, num_heads, window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop,
                       attn_drop=attn_drop, drop_path=drop_path[i] if isinstance(drop_path, list) else drop_path,
                       global_query=i % 2 == 1, layer_scale=layer_scale, quirks=self.quirks, fused_attn=fused_attn)
            for i in range(depth)])
        self.downsample = ReduceSize(dim) if downsample else None
        gen = [FeatExtract(dim, keep_dim=False) for _ in range(n_pools)] or [FeatExtract(dim, keep_dim=True)]
        self.to_q_global = nn.Sequential(*gen)
        self.dim = dim
        self.resolution = input_resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        if self.quirks.channels_last_view:
            # as released (GCVit #13): channels-last memory reinterpreted as NCHW
            q_global = self.to_q_global(x.reshape(B, C, H, W))
        else:
            q_global = self.to_q_global(x.permute(0, 3, 1, 2))
        for blk in self.blocks:
            x = blk(x, q_global)
        return x if self.downsample is None else self.downsample(x)


class StyleBlock(nn.Module):
    """ASIT's window-attention block inside the W+ heads: NCHW in/out, gamma = 1, **no norm before the MLP**."""

    def __init__(self, dim: int, num_heads: int = 1, window_size: int = 8, mlp_ratio: float = 2.0,
                 fused_attn: bool = False):
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, fused_attn=fused_attn)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        _, H, W, _ = x.shape
        x = x + window_reverse(self.attn(window_partition(self.norm1(x), self.window_size)), self.window_size, H, W)
        x = x + self.mlp(x)  # the official block has no norm2 here
        return x.permute(0, 3, 1, 2)


class GradualStyleBlock(nn.Module):
    """pSp map2style head with StyleBlocks: (B, in_c, s, s) -> (B, out_c) W+ code.

    3x3/s2 conv + LeakyReLU(0.01), then per further halving either StyleBlock + 2x2 max-pool (while the map
    is at least ``window`` wide) or 3x3/s2 conv + LeakyReLU, then ``EqualLinear(out_c, out_c)``.
    """

    def __init__(self, in_c: int, out_c: int, spatial: int, window: int = 16, fused_attn: bool = False):
        super().__init__()
        self.out_c = out_c
        modules: list[nn.Module] = [nn.Conv2d(in_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        for _ in range(int(math.log2(spatial)) - 1):
            spatial //= 2
            if spatial >= window:
                modules += [StyleBlock(out_c, 1, window, fused_attn=fused_attn), nn.MaxPool2d(2, 2)]
            else:
                modules += [nn.Conv2d(out_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        self.blocks = nn.Sequential(*modules)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.blocks(x).reshape(-1, self.out_c))
