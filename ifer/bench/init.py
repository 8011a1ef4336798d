"""Seeded initialisers for benchmarks, parity tests and the golden-fixture scripts (``tools/``); never used in training.

Training uses each model's own initialisation (layer scale 1e-5 and the like), under which most residual paths
contribute almost nothing, so a parity check on it would pass for a broken block. These fill every tensor of a
``state_dict`` in key order from a seeded generator with scales that keep activations O(1) and make every path
matter. They rely on key names (and, for ``seeded_init_``, class names) only, so the official code's modules with
the same layout get identical values.

    python -c "import ifer; from ifer.bench.init import deterministic_init_; deterministic_init_(ifer.create_model('asit_encoder_tiny'), 7)"
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from ifer.models.gcvit import relative_position_index

__all__ = ["deterministic_init_", "seeded_init_"]


_NORM_WEIGHT = re.compile(r"(^|\.)norm\d?\.weight$")
_EQUALIZED = re.compile(r"(^|\.)(linear|modulation)\.weight$")


@torch.no_grad()
def deterministic_init_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every float tensor of an encoder / IFER ``state_dict`` in key order from a seeded generator.

    Scales keep activations O(1) through 31 blocks while making every path matter: layer-scale gammas are
    1; LayerNorm weights ``1 + 0.1 N``; ``alpha`` (SPE gate) ``0.5 N``; relative-position tables ``N``;
    equalised (runtime-scaled) EqualLinear / modulated-conv weights ``N``; modulation biases ``1 + 0.1 N``;
    other biases ``0.1 N``; other weights ``N / sqrt(fan_in)``. ``relative_position_index`` buffers are recomputed. A module
    with the same keys (e.g. the official one) gets identical values. For an ``ASIT`` use this on
    ``.encoder`` and ``seeded_init_`` on ``.decoder``.
    """
    g = torch.Generator().manual_seed(seed)
    for name, t in module.state_dict(keep_vars=True).items():
        if name.endswith("relative_position_index"):
            # recomputed rather than skipped, so modules materialised with ``to_empty`` are fully defined
            t.data.copy_(relative_position_index(math.isqrt(t.shape[0])))
            continue
        if not t.is_floating_point():
            continue
        v = torch.randn(t.shape, generator=g)
        if name.endswith(("gamma1", "gamma2")):
            v = torch.ones_like(v)
        elif name.endswith("_float_tensor"):
            v = torch.zeros_like(v)
        elif _NORM_WEIGHT.search(name) or name.endswith("modulation.bias"):
            v = 1 + 0.1 * v
        elif name.endswith("alpha"):
            v = 0.5 * v
        elif name.endswith("relative_position_bias_table") or _EQUALIZED.search(name) or t.ndim == 5:
            pass
        elif t.ndim == 1:
            v = 0.1 * v
        else:
            v = v / math.sqrt(t[0].numel())
        t.data.copy_(v)
    return module


@torch.no_grad()
def seeded_init_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every tensor of ``module.state_dict()`` (in key order) from a seeded CPU generator.

    Scales follow rosinality's initialisation where it matters for realistic activations: mapping
    weights ``N(0, 1/lr_mul^2)``, modulation biases ``1 + N(0, 0.01)``, other biases and noise strengths
    ``N(0, 0.01)``, other weights/constants/noise maps ``N(0, 1)``; ``nn.Linear`` weights ``N(0, 1/fan_in)``.
    Blur kernels (fixed buffers) are left alone. Any module with rosinality key names gets the same values.
    """
    g = torch.Generator().manual_seed(seed)
    modules = dict(module.named_modules())
    for name, t in module.state_dict(keep_vars=True).items():
        if name.endswith("kernel") or not t.is_floating_point():
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = modules[owner_name]
        v = torch.randn(t.shape, generator=g)
        if leaf == "bias" and owner_name.endswith("modulation"):
            v = 1 + 0.1 * v
        # Class names, not isinstance: the same rules must apply to the official code's own classes.
        elif leaf == "bias" or (leaf == "weight" and type(owner).__name__ == "NoiseInjection"):
            v = 0.1 * v
        elif leaf == "weight" and isinstance(owner, nn.Linear):
            v = v / math.sqrt(t.shape[1])
        elif leaf == "weight" and hasattr(owner, "lr_mul"):
            v = v / owner.lr_mul
        t.data.copy_(v)
    return module
