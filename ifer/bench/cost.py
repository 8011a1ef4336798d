"""What a model costs beside its accuracy (issue 21, item 1): parameters, FLOPs, CPU latency and throughput.

    python -c "from ifer.bench.cost import model_cost; import ifer; print(model_cost(ifer.create_model('ifer_tiny', num_classes=7), 64))"

* ``params``: every parameter; ``trainable``: those with ``requires_grad``.
* ``gmacs``: multiply-accumulates of one image at the evaluated input size, counted once with torch's own
  ``torch.utils.flop_counter.FlopCounterMode`` (matmul / conv / attention kernels; it reports FLOPs = 2 x MACs,
  halved here because papers quote MACs as "FLOPs": ResNet-18 at 224 px is the published 1.8 G).
  Elementwise ops and normalisation are not counted, as in fvcore and the published figures.
* ``speed``: batch-1 latency and batch-``batch`` throughput (``ifer.bench.timers.measure_interleaved``: warm-up,
  medians, calls alternating with a reference model so the *ratio* survives a busy machine), reported as
  absolute medians and as ratios to the reference (default: torchvision ResNet-18 at the same size), with the
  machine's fp32 FLOP bound (``ifer.core.machine.cpu_peak``) beside them.
"""
from __future__ import annotations

import torch
from torch import nn

from ifer.bench.timers import measure_interleaved


def parameter_counts(model: nn.Module) -> dict:
    return {"params": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


@torch.no_grad()
def gmacs(model: nn.Module, img_size: int, channels: int = 3) -> float:
    """MACs (G) of one ``img_size`` image through ``model`` in eval mode, by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(1, channels, img_size, img_size, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9


def _reference(img_size: int) -> nn.Module:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return resnet18(num_classes=7).eval()


@torch.no_grad()
def speed(model: nn.Module, img_size: int, batch: int = 32, warmup: int = 3, iters: int = 10,
          reference: nn.Module | None = None) -> dict:
    """Median batch-1 latency (ms) and batch-``batch`` throughput (images/s) of ``model`` and of ``reference``
    measured alternately in one run, and their ratios (model / reference latency; model / reference
    throughput)."""
    from ifer.core.machine import cpu_peak

    model.eval()
    ref = reference if reference is not None else _reference(img_size)
    out = {"img_size": img_size, "batch": batch, "threads": torch.get_num_threads(),
           "reference": type(ref).__name__ if reference is not None else "torchvision resnet18 (random weights)",
           "fp32_peak_tflops": cpu_peak("fp32")["tflops"]}
    for n, key in ((1, "latency"), (batch, "throughput")):
        x = torch.randn(n, 3, img_size, img_size)
        r = measure_interleaved({"model": lambda x=x: model(x), "ref": lambda x=x: ref(x)}, warmup=warmup, iters=iters,
                                batch_size=n)
        if key == "latency":
            out |= {"latency_ms": r["model"]["median_s"] * 1e3, "ref_latency_ms": r["ref"]["median_s"] * 1e3,
                    "latency_ratio": r["model"]["median_s"] / r["ref"]["median_s"]}
        else:
            out |= {"images_per_s": r["model"]["images_per_s"], "ref_images_per_s": r["ref"]["images_per_s"],
                    "throughput_ratio": r["model"]["images_per_s"] / r["ref"]["images_per_s"]}
    return out


def model_cost(model: nn.Module, img_size: int, timed: bool = False, **speed_kw) -> dict:
    """Parameters and GMACs (and, with ``timed``, :func:`speed`) of ``model`` at ``img_size``."""
    rec = {**parameter_counts(model), "img_size": img_size, "gmacs": gmacs(model, img_size),
           "counter": "torch.utils.flop_counter.FlopCounterMode, batch 1, eval, MACs = FLOPs / 2"}
    if timed:
        rec["speed"] = speed(model, img_size, **speed_kw)
    return rec
