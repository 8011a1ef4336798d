"""Opt-in inference and training fast paths, each behind a flag and each with a parity test against fp32 eager.

Flags (``InferenceOptions``):

* ``fused_attn``: ``F.scaled_dot_product_attention`` in every GC ViT and W+-head window attention
  (the models' own ``fused_attn`` switch, flipped on the built modules);
* ``channels_last``: NHWC weights and inputs, so oneDNN / cuDNN convolutions skip layout reorders;
* ``bf16``: ``torch.autocast(dtype=torch.bfloat16)`` (outputs come back in bf16 where the last op ran in it);
* ``compile``: ``torch.compile`` (inductor) with weight freezing, which folds constants and lets oneDNN
  prepack the frozen weights on CPU. The first call compiles: keep it out of timings (``ifer.bench.timers``).

Everything runs under ``torch.inference_mode()``. ``fused_optimizer`` is the training counterpart.

    python -c "import torch, ifer; from ifer.bench.fastpath import InferenceOptions, prepare_for_inference; \
run = prepare_for_inference(ifer.create_model('asit_encoder_tiny'), InferenceOptions(fused_attn=True)); \
print(run(torch.randn(2, 3, 64, 64))[0].shape)"
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["InferenceOptions", "prepare_for_inference", "set_fused_attn", "fused_optimizer", "relative_error",
           "flatten_tensors", "PARITY_RTOL"]

#: Parity bound per precision, as ``relative_error`` (max abs difference / max abs reference).
#: fp32 fast paths only reorder float additions (SDPA's fused softmax, NHWC convolution, inductor's fused
#: kernels), which moves results by ~1e-6 relative per layer; 1e-4 leaves room for ~30 blocks.
#: bf16 keeps 8 mantissa bits (relative rounding 2^-9 = 2e-3 per op); errors accumulate over the ~60
#: matmul/conv layers of the encoder (measured 1.2e-2 on the tiny one) and the ~20 more of the decoder
#: (inversion: 2.0e-2), so 5e-2 is the bound; a real bug shows up as O(1) relative error.
PARITY_RTOL = {"fp32": 1e-4, "bf16": 5e-2}


@dataclass(frozen=True)
class InferenceOptions:
    """Which fast paths to turn on; all off is the plain fp32 eager forward (under ``inference_mode``)."""

    channels_last: bool = False
    bf16: bool = False
    fused_attn: bool = False
    compile: bool = False

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def label(self) -> str:
        """Short name for tables: e.g. ``fp32+sdpa+nhwc+compile``."""
        flags = [("sdpa", self.fused_attn), ("nhwc", self.channels_last), ("compile", self.compile)]
        return "+".join([self.precision] + [name for name, on in flags if on])


def set_fused_attn(model: nn.Module, enabled: bool = True) -> int:
    """Flip ``fused_attn`` on every attention module that has the switch; return how many were changed.

    Raises when the model has none, so a flag that silently does nothing cannot pass a benchmark.
    """
    switched = 0
    for module in model.modules():
        if isinstance(getattr(module, "fused_attn", None), bool):
            module.fused_attn = enabled
            switched += 1
    if switched == 0:
        raise ValueError(f"{type(model).__name__} has no attention module with a fused_attn switch")
    return switched


def _has_attention(model: nn.Module) -> bool:
    return any(isinstance(getattr(m, "fused_attn", None), bool) for m in model.modules())


def prepare_for_inference(model: nn.Module, options: InferenceOptions,
                          device: str | torch.device | None = None) -> Callable[..., Any]:
    """Return ``run(x, ...)``: ``model`` in eval mode with ``options`` applied, called under inference mode.

    The model is modified in place (eval, device, memory format, attention switch), as ``.to()`` does.
    ``fused_attn`` on a model without attention (the StyleGAN2 generator) is a no-op rather than an
    error, so one option set can be used for every benchmarked model.
    """
    model.eval()
    if device is not None:
        model.to(device)
    device_type = next(model.parameters()).device.type
    if options.fused_attn and _has_attention(model):
        set_fused_attn(model, True)
    if options.channels_last:
        # only 4-D tensors have an NHWC layout (``model.to(memory_format=...)`` rejects StyleGAN2's 5-D
        # modulated-conv weight)
        for t in list(model.parameters()) + list(model.buffers()):
            if t.ndim == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)
    module: Callable[..., Any] = model
    if options.compile:
        # freezing: parameters become constants, so inductor can fold them and (on CPU) prepack weights
        # for oneDNN; valid because the weights do not change under inference_mode.
        module = torch.compile(model, options={"freezing": True})

    def run(x: torch.Tensor, *args, **kwargs):
        if options.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = (torch.autocast(device_type, dtype=torch.bfloat16) if options.bf16
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            return module(x, *args, **kwargs)

    return run


def fused_optimizer(params: Iterable[torch.Tensor] | Iterable[dict], lr: float = 1e-3,
                    weight_decay: float = 0.05, betas: tuple[float, float] = (0.9, 0.999),
                    eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW with one multi-tensor kernel per step: ``fused=True`` on CUDA, ``foreach=True`` elsewhere.

    Same update rule as the plain per-parameter loop (``foreach=False``), only batched across tensors;
    ``tests/test_fastpath.py`` checks the parameters agree after several steps.
    """
    params = list(params)
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    on_cuda = bool(tensors) and all(p.is_cuda for p in tensors)
    kind = {"fused": True} if on_cuda else {"foreach": True}
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **kind)


def flatten_tensors(out: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) model output in order: the encoder's ``(styles, structure, [f1, f2, f3])``."""
    if torch.is_tensor(out):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in flatten_tensors(item)]
    if isinstance(out, dict):
        return [t for key in sorted(out) for t in flatten_tensors(out[key])]
    return []


def relative_error(out: Any, ref: Any) -> float:
    """Worst ``max|out - ref| / max|ref|`` over the tensors of two outputs (computed in fp32).

    Scale-free and defined where reference entries are ~0 (unlike an elementwise relative error).
    Raises when the structures or shapes differ, or when ``out`` has a non-finite value.
    """
    outs, refs = flatten_tensors(out), flatten_tensors(ref)
    if len(outs) != len(refs) or not refs:
        raise ValueError(f"outputs have {len(outs)} tensors, reference {len(refs)}")
    worst = 0.0
    for o, r in zip(outs, refs):
        if o.shape != r.shape:
            raise ValueError(f"shape {tuple(o.shape)} != reference {tuple(r.shape)}")
        o, r = o.detach().float().cpu(), r.detach().float().cpu()
        if not torch.isfinite(o).all():
            raise ValueError("output has non-finite values")
        worst = max(worst, ((o - r).abs().max() / r.abs().max().clamp_min(1e-12)).item())
    return worst
