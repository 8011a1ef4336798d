"""StyleGAN2 generator and discriminator in plain PyTorch ops (no custom CUDA kernels).

Parameter and buffer names reproduce rosinality/stylegan2-pytorch's ``model.py`` exactly, so its
``550000.pt`` checkpoint (``{'g_ema', 'g', 'd', ...}``) loads strictly. The generator also carries the
two additions of the official IFER code (``models/stylegan2/model.py``): a ``constant`` input that
replaces the learned 4x4 constant (ASIT's structure code) and the returned intermediate ``features``.
``upfirdn2d`` and the fused bias + leaky-ReLU are written as ordinary torch functions, numerically
equal to rosinality's native fallbacks.

    python -c "import torch; from ifer.models.stylegan2 import Generator; \
g = Generator(64, 128, 2, channels={4: 64, 8: 64, 16: 32, 32: 32, 64: 16}); \
img, _ = g([torch.randn(2, 128)], randomize_noise=False); print(img.shape)"
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ifer.core.loading import CheckpointError, load_state_dict_strict, read_checkpoint
from ifer.models.registry import register_model

__all__ = [
    "upfirdn2d", "fused_leaky_relu", "FusedLeakyReLU", "ScaledLeakyReLU", "PixelNorm", "Blur", "Upsample",
    "EqualLinear", "EqualConv2d", "ModulatedConv2d", "NoiseInjection", "ConstantInput", "StyledConv", "ToRGB",
    "Generator", "ConvLayer", "ResBlock", "Discriminator", "channel_table", "resblock_trunk", "infer_generator_size",
    "load_stylegan2_checkpoint", "BLUR_KERNEL", "TINY_64_CHANNELS",
]

BLUR_KERNEL = (1, 3, 3, 1)


# ----------------------------------------------------------------------------------------------
# Pure-torch replacements for rosinality's CUDA ops.


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter with the (flipped) FIR ``kernel``, keep every ``down``-th pixel.

    ``pad=(p0, p1)`` is applied on both axes; negative values crop. Equivalent to rosinality's
    ``upfirdn2d_native`` but filters per channel with a grouped conv instead of folding channels into
    the batch, and strides the conv instead of slicing its full-resolution output.

    >>> upfirdn2d(torch.ones(1, 2, 4, 4), torch.ones(2, 2) / 4, pad=(1, 0)).shape
    torch.Size([1, 2, 4, 4])
    """
    b, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    kh, kw = kernel.shape
    weight = torch.flip(kernel, [0, 1]).to(x.dtype).view(1, 1, kh, kw).expand(c, 1, kh, kw)
    return F.conv2d(x, weight, stride=down, groups=c)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2,
                     scale: float = 2 ** 0.5) -> torch.Tensor:
    """``scale * leaky_relu(x + bias)`` with ``bias`` broadcast over dim 1 (rosinality's fused op)."""
    return F.leaky_relu(x + bias.view((1, -1) + (1,) * (x.ndim - 2)), negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias then scaled leaky ReLU; the bias is the ``.bias`` key in checkpoints."""

    def __init__(self, channel: int, negative_slope: float = 0.2, scale: float = 2 ** 0.5):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x):
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


class ScaledLeakyReLU(nn.Module):
    """Leaky ReLU times sqrt(2), for bias-free ConvLayers."""

    def __init__(self, negative_slope: float = 0.2):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope) * math.sqrt(2)


class PixelNorm(nn.Module):
    """Normalise each vector along dim 1 to unit RMS (the mapping network's input layer)."""

    def forward(self, x):
        return x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)


def make_kernel(k: Sequence[float]) -> torch.Tensor:
    """Separable 2-D FIR kernel from a 1-D tap list, normalised to sum 1."""
    k = torch.tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


class Blur(nn.Module):
    """FIR low-pass with padding ``pad``; the kernel is a persistent buffer (it is in rosinality's state dicts)."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        # After zero-insertion upsampling the filter must be scaled by factor^2 to keep the DC gain.
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor ** 2)
        self.pad = pad

    def forward(self, x):
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling of the RGB skip path in ToRGB."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor ** 2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x):
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


# ----------------------------------------------------------------------------------------------
# Equalised-learning-rate layers: weights are stored at unit scale and scaled at run time.


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate and optional fused leaky ReLU (``activation`` truthy).

    >>> EqualLinear(512, 256, lr_mul=0.01, activation="fused_lrelu")(torch.randn(2, 512)).shape
    torch.Size([2, 256])
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0, lr_mul: float = 1,
                 activation=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x):
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            return fused_leaky_relu(out, bias) if bias is not None else F.leaky_relu(out, 0.2) * 2 ** 0.5
        return F.linear(x, self.weight * self.scale, bias=bias)

    def extra_repr(self):
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate.

    >>> EqualConv2d(3, 8, 3, padding=1)(torch.randn(1, 3, 16, 16)).shape
    torch.Size([1, 8, 16, 16])
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride = stride
        self.padding = padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        w = self.weight.shape
        return f"{w[1]}, {w[0]}, {w[2]}, stride={self.stride}, padding={self.padding}"


class ModulatedConv2d(nn.Module):
    """StyleGAN2 weight-(de)modulated conv; ``weight`` is (1, out, in, k, k), ``modulation`` maps style -> in.

    Each sample gets its own kernel, run as one grouped conv over the batch. ``upsample`` uses a
    stride-2 transposed conv followed by a blur, ``downsample`` a blur followed by a stride-2 conv.

    >>> ModulatedConv2d(8, 4, 3, 16, upsample=True)(torch.randn(2, 8, 8, 8), torch.randn(2, 16)).shape
    torch.Size([2, 4, 16, 16])
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, downsample: bool = False, blur_kernel: Sequence[float] = BLUR_KERNEL):
        super().__init__()
        self.eps = 1e-8
        self.kernel_size = kernel_size
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.upsample = upsample
        self.downsample = downsample
        factor = 2
        if upsample:
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        if downsample:
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        # bias_init=1: styles start as the identity modulation.
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
        self.demodulate = demodulate
        self.fused = False  # True: the per-sample grouped-conv form (same result; kept for parity tests)

    def extra_repr(self):
        return (f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, upsample={self.upsample}, "
                f"downsample={self.downsample}, demodulate={self.demodulate}")

    def forward(self, x, style):
        """Per-sample (de)modulation as scaling of the activations around one shared conv (StyleGAN2's
        ``fused_modconv=False``): ``conv(x * s, w) * d`` equals ``conv(x, w * s * d)`` exactly in real arithmetic,
        since s scales input channels and d output channels, and blur, stride and transposition are linear and
        per channel. It never builds the (B, out, in, k, k) per-sample kernels, which cost ~45% of an
        ``ifer_tiny`` training step (2-core Xeon, 2026-12-02). ``fused=True`` keeps the grouped-conv form of the
        paper's code (rosinality); ``tests/test_stylegan2.py`` checks the two agree (fp32, forward and gradients)."""
        if self.fused:
            return self._forward_grouped(x, style)
        batch = x.shape[0]
        s = self.modulation(style)                                   # (B, in)
        w = self.scale * self.weight[0]                              # (out, in, k, k)
        x = x * s.view(batch, self.in_channel, 1, 1).to(x.dtype)
        if self.upsample:
            out = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
        elif self.downsample:
            out = F.conv2d(self.blur(x), w, stride=2)
        else:
            out = F.conv2d(x, w, padding=self.padding)
        if self.demodulate:
            # sum over (in, k, k) of (w * s)^2 = (sum_kk w^2) @ s^2
            demod = torch.rsqrt(s.pow(2) @ w.pow(2).sum([2, 3]).t() + self.eps)   # (B, out)
            out = out * demod.view(batch, self.out_channel, 1, 1).to(out.dtype)
        return self.blur(out) if self.upsample else out

    def _forward_grouped(self, x, style):
        batch, in_channel, height, width = x.shape
        k = self.kernel_size
        style = self.modulation(style).view(batch, 1, in_channel, 1, 1)
        weight = self.scale * self.weight * style
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + self.eps)
            weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)

        if self.upsample:
            # conv_transpose2d wants (in, out) per group.
            weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, k, k)
            out = F.conv_transpose2d(x.reshape(1, batch * in_channel, height, width), weight, stride=2, groups=batch)
            return self.blur(out.view(batch, self.out_channel, *out.shape[-2:]))
        weight = weight.reshape(batch * self.out_channel, in_channel, k, k)
        if self.downsample:
            x = self.blur(x)
            out = F.conv2d(x.reshape(1, batch * in_channel, *x.shape[-2:]), weight, stride=2, groups=batch)
        else:
            out = F.conv2d(x.reshape(1, batch * in_channel, height, width), weight, padding=self.padding,
                           groups=batch)
        return out.view(batch, self.out_channel, *out.shape[-2:])


class NoiseInjection(nn.Module):
    """Add per-pixel noise times a learned scalar ``weight`` (fresh N(0, 1) noise when none is given)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image, noise=None):
        if noise is None:
            batch, _, height, width = image.shape
            noise = image.new_empty(batch, 1, height, width).normal_()
        return image + self.weight * noise


class ConstantInput(nn.Module):
    """The learned (1, C, 4, 4) input of the synthesis network, repeated over the batch of ``x``."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, x):
        return self.input.repeat(x.shape[0], 1, 1, 1)


class StyledConv(nn.Module):
    """ModulatedConv2d + noise + fused bias/leaky ReLU (keys ``conv``, ``noise``, ``activate``)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[float] = BLUR_KERNEL, demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, demodulate=demodulate,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x, style, noise=None):
        return self.activate(self.noise(self.conv(x, style), noise=noise))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB, plus the upsampled RGB ``skip`` of the previous scale."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = BLUR_KERNEL):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# ----------------------------------------------------------------------------------------------
# Generator


def channel_table(channel_multiplier: int = 2, channels: Mapping[int, int] | None = None) -> dict[int, int]:
    """Feature channels per resolution: rosinality's table, with entries of ``channels`` overriding it.

    The override is how small CPU members narrow the network, e.g. ``{4: 128, 8: 128, 16: 128, 32: 64, 64: 32}``.
    """
    cm = channel_multiplier
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm,
             1024: 16 * cm}
    table.update({int(k): int(v) for k, v in (channels or {}).items()})
    return table


def _log2_size(size: int) -> int:
    log_size = int(math.log2(size))
    if size < 8 or 2 ** log_size != size:
        raise ValueError(f"size must be a power of two >= 8, got {size}")
    return log_size


class Generator(nn.Module):
    """StyleGAN2 generator (rosinality layout) with the official IFER ``constant`` input and ``features``.

    ``n_latent = 2 * log2(size) - 2`` W+ codes and ``num_layers = 2 * log2(size) - 3`` noise inputs; the
    fixed noises are buffers ``noises.noise_{i}`` (part of ``g_ema`` state dicts).

    >>> g = Generator(32, 64, 2, channels={4: 32, 8: 32, 16: 16, 32: 16})
    >>> img, w, feats = g(torch.randn(2, g.n_latent, 64), input_is_latent=True, randomize_noise=False,
    ...                   return_latents=True, return_features=True)
    >>> img.shape, w.shape, [f.shape[-1] for f in feats]
    (torch.Size([2, 3, 32, 32]), torch.Size([2, 8, 64]), [32, 16])
    """

    def __init__(self, size: int, style_dim: int, n_mlp: int, channel_multiplier: int = 2,
                 blur_kernel: Sequence[float] = BLUR_KERNEL, lr_mlp: float = 0.01,
                 channels: Mapping[int, int] | None = None):
        super().__init__()
        self.size = size
        self.style_dim = style_dim
        self.log_size = _log2_size(size)
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.channels = channel_table(channel_multiplier, channels)

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)])
        c4 = self.channels[4]
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(c4, style_dim, upsample=False)

        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = 2 ** ((layer_idx + 5) // 2)
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, res, res))
        in_channel = c4
        for i in range(3, self.log_size + 1):
            out_channel = self.channels[2 ** i]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channel, style_dim))
            in_channel = out_channel

    def make_noise(self, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """One fresh (1, 1, r, r) noise map per layer, in layer order."""
        device = self.input.input.device
        return [torch.randn(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), generator=generator, device=device)
                for i in range(self.num_layers)]

    @torch.no_grad()
    def mean_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of ``n`` mapped z ~ N(0, I), shape (1, style_dim); deterministic given ``generator``."""
        z = torch.randn(n, self.style_dim, generator=generator, device=self.input.input.device)
        return self.style(z).mean(0, keepdim=True)

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.style(z)

    def _latent_codes(self, styles, input_is_latent, truncation, truncation_latent, inject_index) -> torch.Tensor:
        """Turn z/w vectors or a W+ tensor into the (B, n_latent, style_dim) codes, as rosinality does."""
        if torch.is_tensor(styles):
            styles = [styles]
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if truncation < 1:
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        if len(styles) < 2:
            s = styles[0]
            return s if s.ndim == 3 else s.unsqueeze(1).repeat(1, self.n_latent, 1)
        if inject_index is None:
            # Style mixing crossover; drawn from torch's RNG so torch.manual_seed makes it reproducible.
            inject_index = int(torch.randint(1, self.n_latent, ()).item())
        return torch.cat([styles[0].unsqueeze(1).repeat(1, inject_index, 1),
                          styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)], 1)

    def forward(self, styles, *, input_is_latent: bool = False, noise: Sequence | None = None,
                randomize_noise: bool = True, constant: torch.Tensor | None = None, return_latents: bool = False,
                return_features: bool = False, truncation: float = 1.0,
                truncation_latent: torch.Tensor | None = None, inject_index: int | None = None):
        """Synthesize images.

        ``styles``: a list of (B, style_dim) z (or w with ``input_is_latent``); two entries mix styles at
        ``inject_index``. A (B, n_latent, style_dim) W+ tensor (alone or in a list) is used per layer.
        ``noise``: a list of ``num_layers`` maps (None entries draw fresh noise); otherwise fresh noise if
        ``randomize_noise`` else the stored ``noises.noise_i`` buffers. ``constant`` (B, C4, 4, 4) replaces
        the learned constant (ASIT's structure code).

        Returns ``(image, latents or None)``, plus ``features`` with ``return_features``: the outputs of the
        second StyledConv at 64, 32 and 16 px in that order, as in the official IFER code
        (``features[1:4]`` reversed). Smaller generators return the subset that exists: [32, 16] at 32 px,
        [16] at 16 px, [] at 8 px.
        """
        latent = self._latent_codes(styles, input_is_latent, truncation, truncation_latent, inject_index)
        if noise is None:
            noise = ([None] * self.num_layers if randomize_noise
                     else [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)])
        if constant is None:
            constant = self.input(latent)

        out = self.conv1(constant, latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        features = []
        i = 1
        for conv1, conv2, noise1, noise2, to_rgb in zip(self.convs[::2], self.convs[1::2], noise[1::2],
                                                         noise[2::2], self.to_rgbs):
            out = conv1(out, latent[:, i], noise=noise1)
            out = conv2(out, latent[:, i + 1], noise=noise2)
            if return_features and 16 <= out.shape[-1] <= 64:
                features.append(out)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2

        result = (skip, latent if return_latents else None)
        return result + (features[::-1],) if return_features else result

    def load_rosinality(self, path: str | Path, key: str = "g_ema") -> torch.Tensor | None:
        """Load ``ckpt[key]`` (or a bare state dict) strictly; return the checkpoint's ``latent_avg`` or None.

        A checkpoint of another resolution is refused with a one-line CheckpointError naming the file, the
        first mismatching key and the resolution its keys imply (the official code's ``strict=False``
        silently loads a 1024-px ``g_ema`` into the 256-px model and decodes from its 256-px toRGB).
        """
        ckpt = read_checkpoint(path)
        sd = _pick_state_dict(ckpt, key, path)
        _check_generator_size(self, sd, path)
        load_state_dict_strict(self, sd, source=path)
        latent_avg = ckpt.get("latent_avg")
        return latent_avg if torch.is_tensor(latent_avg) else None

    def load_checkpoint(self, path: str | Path) -> None:
        """Hook used by ``create_model(..., checkpoint_path=...)``: a rosinality dict or a bare state dict."""
        self.load_rosinality(path)


def _pick_state_dict(ckpt: Mapping, key: str, path) -> dict:
    if all(torch.is_tensor(v) for v in ckpt.values()):
        return dict(ckpt)
    if key in ckpt and isinstance(ckpt[key], Mapping):
        return dict(ckpt[key])
    raise CheckpointError(f"{path}: no {key!r} state dict in the checkpoint; top-level keys: {sorted(ckpt)[:10]}")


_TO_RGBS = re.compile(r"^to_rgbs\.(\d+)\.")


def infer_generator_size(state_dict: Mapping) -> int | None:
    """Resolution implied by a generator state dict: ``to_rgbs.{i}`` run over i = 0 .. log2(size) - 3."""
    idx = [int(m.group(1)) for k in state_dict if (m := _TO_RGBS.match(k))]
    return 2 ** (max(idx) + 3) if idx else None


def _check_generator_size(model: Generator, sd: Mapping, path) -> None:
    size = infer_generator_size(sd)
    if size is None or size == model.size:
        return
    target = model.state_dict()
    first = next((f"unexpected key {k!r}" for k in sd if k not in target), None) or next(
        f"missing key {k!r}" for k in target if k not in sd)
    raise CheckpointError(f"{path}: checkpoint looks like a {size}-px generator (inferred from its to_rgbs.* keys) "
                          f"but the model is {model.size}-px: {first}")


# ----------------------------------------------------------------------------------------------
# Discriminator


class ConvLayer(nn.Sequential):
    """[Blur] + EqualConv2d + activation, as an ``nn.Sequential`` so keys read ``{i}.weight`` like rosinality.

    >>> ConvLayer(8, 16, 3, downsample=True)(torch.randn(1, 8, 16, 16)).shape
    torch.Size([1, 16, 8, 8])
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = BLUR_KERNEL, bias: bool = True, activate: bool = True):
        layers = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        # With an activation the bias lives in FusedLeakyReLU, not in the conv.
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, padding=padding, stride=stride,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channel) if bias else ScaledLeakyReLU(0.2))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Two 3x3 ConvLayers (the second downsamples) plus a 1x1 downsampling skip, summed / sqrt(2)."""

    def __init__(self, in_channel: int, out_channel: int, blur_kernel: Sequence[float] = BLUR_KERNEL):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, blur_kernel=blur_kernel,
                              activate=False, bias=False)

    def forward(self, x):
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


def resblock_trunk(size: int, channels: Mapping[int, int], blur_kernel: Sequence[float] = BLUR_KERNEL) -> nn.Sequential:
    """FromRGB 1x1 ConvLayer then ResBlocks from ``size`` down to 4 px (shared by both discriminators)."""
    convs = [ConvLayer(3, channels[size], 1)]
    in_channel = channels[size]
    for i in range(_log2_size(size), 2, -1):
        convs.append(ResBlock(in_channel, channels[2 ** (i - 1)], blur_kernel))
        in_channel = channels[2 ** (i - 1)]
    return nn.Sequential(*convs)


class Discriminator(nn.Module):
    """rosinality's StyleGAN2 discriminator: ResBlock trunk, minibatch stddev, 3x3 conv, two EqualLinears.

    The batch must be divisible by ``min(batch, 4)`` (the stddev groups), as in rosinality.

    >>> d = Discriminator(32, channels={4: 32, 8: 32, 16: 16, 32: 16})
    >>> d(torch.randn(4, 3, 32, 32)).shape
    torch.Size([4, 1])
    """

    def __init__(self, size: int, channel_multiplier: int = 2, blur_kernel: Sequence[float] = BLUR_KERNEL,
                 channels: Mapping[int, int] | None = None):
        super().__init__()
        self.size = size
        table = channel_table(channel_multiplier, channels)
        self.convs = resblock_trunk(size, table, blur_kernel)
        self.stddev_group = 4
        self.stddev_feat = 1
        self.final_conv = ConvLayer(table[4] + 1, table[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(table[4] * 4 * 4, table[4], activation="fused_lrelu"),
                                          EqualLinear(table[4], 1))

    def forward(self, x):
        out = self.convs(x)
        batch, channel, height, width = out.shape
        group = min(batch, self.stddev_group)
        stddev = out.view(group, -1, self.stddev_feat, channel // self.stddev_feat, height, width)
        stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8)
        stddev = stddev.mean([2, 3, 4], keepdim=True).squeeze(2).repeat(group, 1, height, width)
        out = self.final_conv(torch.cat([out, stddev], 1))
        return self.final_linear(out.view(batch, -1))

    def load_checkpoint(self, path: str | Path, key: str = "d") -> None:
        """Load rosinality's ``ckpt['d']`` (or a bare state dict) strictly."""
        load_state_dict_strict(self, _pick_state_dict(read_checkpoint(path), key, path), source=path)


def load_stylegan2_checkpoint(path: str | Path, size: int | None = None, key: str = "g_ema",
                              **kwargs) -> Generator | Discriminator:
    """Build the network a rosinality checkpoint entry holds and load it strictly.

    ``key`` is ``'g_ema'``/``'g'`` (a Generator; ``style_dim=512, n_mlp=8`` unless given in ``kwargs``)
    or ``'d'`` (a Discriminator). ``size`` defaults to the size inferred from the keys (generators) and
    must be given for a discriminator. A mismatching ``size`` raises a one-line CheckpointError.

        g = load_stylegan2_checkpoint("550000.pt", size=256)
    """
    ckpt = read_checkpoint(path)
    sd = _pick_state_dict(ckpt, key, path)
    if key == "d":
        if size is None:
            raise ValueError("size is required to build a discriminator")
        model = Discriminator(size, **kwargs)
        load_state_dict_strict(model, sd, source=path)
        return model
    inferred = infer_generator_size(sd)
    if size is None and inferred is None:
        raise CheckpointError(f"{path}: cannot infer the generator size from {key!r} (no to_rgbs.* keys)")
    kwargs = {"style_dim": 512, "n_mlp": 8, **kwargs}
    model = Generator(size or inferred, **kwargs)
    _check_generator_size(model, sd, path)
    load_state_dict_strict(model, sd, source=path)
    return model


# ----------------------------------------------------------------------------------------------
# Registered models

#: Narrow channel table of the tiny 64-px CPU generator (ASIT tiny decoder).
TINY_64_CHANNELS = {4: 128, 8: 128, 16: 128, 32: 64, 64: 32}


@register_model(family="stylegan2")
def stylegan2_generator(size: int = 256, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                        **kwargs) -> Generator:
    """Any-size StyleGAN2 generator; ``channels=`` overrides the channel table (see ``channel_table``)."""
    return Generator(size, style_dim, n_mlp, channel_multiplier=channel_multiplier, **kwargs)


@register_model(family="stylegan2")
def stylegan2_generator_256(**kwargs) -> Generator:
    """The official ASIT decoder ``Generator(256, 512, 8)``: 30,034,338 parameters, 14 W+ codes."""
    return stylegan2_generator(**{"size": 256, **kwargs})


@register_model(family="stylegan2")
def stylegan2_generator_1024(**kwargs) -> Generator:
    """FFHQ 1024-px layout (the checkpoint the official README links; it does not fit the 256-px model)."""
    return stylegan2_generator(**{"size": 1024, **kwargs})


@register_model(family="stylegan2")
def stylegan2_generator_64_tiny(**kwargs) -> Generator:
    """64-px CPU generator: style_dim 128, 4 mapping layers, channels ``TINY_64_CHANNELS``; 10 W+ codes."""
    return stylegan2_generator(**{"size": 64, "style_dim": 128, "n_mlp": 4, "channels": TINY_64_CHANNELS,
                                  **kwargs})


@register_model(family="stylegan2")
def stylegan2_discriminator_256(**kwargs) -> Discriminator:
    """rosinality's 256-px discriminator (the ``'d'`` entry of ``550000.pt``)."""
    return Discriminator(**{"size": 256, **kwargs})
