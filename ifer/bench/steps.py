"""One training step of a registered model, as the timing benchmarks run it (CPU ratio gate, GPU session).

    python -c "from ifer.bench.steps import training_step; s = training_step('ifer_tiny', 64, 8, 'bf16', 'cpu'); print(float(s()))"

FER models: ``training_loss`` (their own objective) + backward + AdamW. ASIT: the generator's L2 term (encoder +
decoder, decoder trainable as in the tiny profile) + backward + AdamW, without the LPIPS/ID terms or the
discriminator step, so it is a lower bound on ``ifer train-asit``'s step. ``precision``: fp32, bf16 (autocast)
or fp16 (autocast + GradScaler, as the released recipe's AMP; the scaler is a no-op for the others).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ifer.models.registry import create_model

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def training_step(name: str, img_size: int, batch: int, precision: str = "fp32",
                  device: str = "cpu") -> Callable[[], torch.Tensor]:
    """A closure running one training step of ``name`` on a fixed random batch; returns the loss tensor."""
    if precision not in AMP_DTYPES:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(AMP_DTYPES)}")
    torch.manual_seed(0)
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    if name.startswith("asit"):
        net = create_model(name, train_decoder=True)
        net.init_latent_avg(256, seed=0)  # as the tiny profile builds it (latent_avg_samples mapped latents)
        net.to(device).train()

        def loss_fn():
            return ((net(x) - x) ** 2).mean()
    else:
        net = create_model(name, num_classes=7).to(device).train()
        y = torch.randint(0, 7, (batch,), device=device)

        def loss_fn():
            out = net.training_loss(x, y)
            return out[0] if isinstance(out, tuple) else out
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    amp = AMP_DTYPES[precision]
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=amp or torch.float32, enabled=amp is not None):
            loss = loss_fn()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss
    return step


def step_flops(step: Callable[[], torch.Tensor]) -> float:
    """FLOPs of one call of ``step`` (forward, backward and all), counted by torch's ``FlopCounterMode`` (matmuls
    and convolutions, 2 per MAC; elementwise work and the optimizer are not counted, so achieved FLOP/s from it is
    a lower bound on what the machine did). The call is a real step: it updates the model once.

    >>> s = training_step("fer_resnet18_tiny", 64, 2)
    >>> round(step_flops(s) / 1e9, 3) > 0
    True
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())
