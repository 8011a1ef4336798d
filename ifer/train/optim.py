"""The optimizer factory of both trainers and the guarded optimizer step (AMP scaler, non-finite gradients).

    python -c "import torch; from ifer.train.optim import build_optimizer; print(build_optimizer(torch.nn.Linear(2, 2), 'adamw', 1e-3))"

With fp16 autocast a ``torch.amp.GradScaler`` scales the loss and skips steps whose gradients overflow; those
skips are its normal search for a scale (logged as ``overflow_skips``), not non-finite steps, unless the scale has
fallen below ``MIN_SCALE``. With bf16 or fp32 there is no scaler, so every step checks the gradient norm first: a
non-finite one skips the step (counted in the log as ``skipped_steps``), and ``max_nonfinite_steps`` consecutive
skips (default 10) stop the run with NonFiniteGradientError naming the step and the first parameter whose gradient
is not finite.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from ifer.train.checkpoint import NonFiniteGradientError

DEFAULT_MAX_NONFINITE_STEPS = 10


def build_optimizer(params: torch.nn.Module | Iterable[torch.nn.Parameter], name: str, lr: float,
                    weight_decay: float = 0.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    """One factory for every trainer. ``ranger``: RAdam + Lookahead (alpha 0.5, k 6) + gradient centralisation,
    betas (0.95, 0.999), eps 1e-5 (pSp's). Anything else goes to timm's ``create_optimizer_v2``, which skips
    weight decay on 1-D parameters and biases when given a module (the released IFER recipe)."""
    if name == "ranger":
        from pytorch_optimizer import Ranger

        plist = params.parameters() if isinstance(params, torch.nn.Module) else params
        return Ranger([p for p in plist if p.requires_grad], lr=lr, alpha=0.5, k=6, betas=(0.95, 0.999), eps=1e-5,
                      weight_decay=weight_decay, use_gc=True, gc_conv_only=False)
    from timm.optim import create_optimizer_v2

    if not isinstance(params, torch.nn.Module):
        params = [p for p in params if p.requires_grad]
    kwargs = {"momentum": momentum} if name in ("sgd", "momentum") else {}
    try:
        return create_optimizer_v2(params, opt=name, lr=lr, weight_decay=weight_decay, **kwargs)
    except (AssertionError, ValueError) as e:
        raise ValueError(f"unknown optimizer {name!r} ({e})") from None


#: below this GradScaler scale an fp16 skip counts as a non-finite step (toward ``max_nonfinite_steps``)
MIN_SCALE = 1.0


class GuardedStep:
    """``backward`` + clipping + ``optimizer.step`` that never applies a non-finite gradient.

    ``optimizers`` (one, or several stepped after the same backward, e.g. a model and its adversary) are stepped
    together or not at all. ``named_params`` are the parameters clipped and checked (names appear in the error).
    """

    def __init__(self, optimizers: torch.optim.Optimizer | list[torch.optim.Optimizer], named_params: Iterable[tuple[str, torch.nn.Parameter]], *,
                 device_type: str = "cpu", fp16: bool = False, clip: float | None = None,
                 max_nonfinite_steps: int = DEFAULT_MAX_NONFINITE_STEPS, name: str = "optimizer"):
        self.optimizers = list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]
        self.named = [(n, p) for n, p in named_params if p.requires_grad]
        self.fp16, self.clip, self.max_bad, self.name = fp16, clip or None, int(max_nonfinite_steps), name
        self.scaler = torch.amp.GradScaler(device_type, enabled=fp16)
        self.skipped, self.consecutive = 0, 0
        #: fp16 steps the GradScaler skipped for an overflow while its scale was still >= MIN_SCALE: the scaler's
        #: normal search for a scale (it starts at 2**16 and halves), not a non-finite gradient of the model
        self.overflow_skips = 0

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, step: int, kept: Path | None = None) -> bool:
        """Apply the step unless a gradient is non-finite; returns whether it was applied."""
        grads = [p.grad for _, p in self.named if p.grad is not None]
        if self.fp16:
            for opt in self.optimizers:
                self.scaler.unscale_(opt)
        # the norm first, clipping after (what clip_grad_norm_ does), so the grads still show which one went bad
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        finite = bool(torch.isfinite(norm))
        if self.clip and finite:
            torch.nn.utils.clip_grads_with_norm_([p for _, p in self.named], self.clip, norm)
        if self.fp16:
            for opt in self.optimizers:
                self.scaler.step(opt)  # the scaler skips the step itself when it found inf/NaN
            self.scaler.update()
        elif finite:
            for opt in self.optimizers:
                opt.step()
        if finite:
            self.consecutive = 0
            return True
        if self.fp16 and self.scaler.get_scale() >= MIN_SCALE:
            # an overflow of the scaled fp16 gradient: the scaler halved its scale and will retry; only once the
            # scale has collapsed below MIN_SCALE (16 halvings from 2**16) is the gradient itself non-finite
            self.overflow_skips += 1
            return False
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive >= self.max_bad:
            bad = next((n for n, p in self.named if p.grad is not None and not torch.isfinite(p.grad).all()), "?")
            where = f"the last good checkpoint {kept} is kept" if kept and Path(kept).exists() else "no checkpoint was written yet"
            raise NonFiniteGradientError(
                f"non-finite gradients in {self.name} for {self.consecutive} consecutive steps up to step {step} "
                f"(first offending parameter {bad!r}); stopping, {where}. Lower the learning rate, use fp32 or "
                f"raise max_nonfinite_steps, then resume.")
        return False

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "consecutive": self.consecutive, "overflow_skips": self.overflow_skips,
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.skipped, self.consecutive = int(state["skipped"]), int(state["consecutive"])
        self.overflow_skips = int(state.get("overflow_skips", 0))  # absent in files written before it was counted
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
