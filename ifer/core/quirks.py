"""The released code's quirks as data: one flag per documented behaviour of Talented-Q/IFER-master.

``mode="as_released"`` reproduces the released code bit for bit (needed to use the official weights
faithfully); ``mode="as_described"`` follows the paper and fixes the bugs. Code never tests a mode
string: it reads the flag for the one behaviour it implements, e.g. ``quirks.global_query_batch_tiling``.

    python -c "from ifer.core.quirks import get_quirks; print(get_quirks('as_released'))"
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

MODES = ("as_released", "as_described")


# Frozen bool flags, the same shape as ifer.bench.fastpath.InferenceOptions but another job: these select the
# released code's behaviours, those select inference fast paths; merging them would mix numerics with speed.
@dataclass(frozen=True)
class Quirks:
    # --- GC ViT v1 backbone (inherited from NVlabs/GCVit before eb3471a) ---
    #: ``q_global.repeat(B_ // B, 1, 1, 1)`` tiles the global query batch-first while windows are
    #: batch-major, so window w of image b uses image (b*nW + w) % B's query (NVlabs/GCVit #10).
    global_query_batch_tiling: bool = True
    #: ``x.view(-1, C, H, W)`` on a channels-last tensor before ``to_q_global``: a raw
    #: reinterpretation of memory instead of a permute (NVlabs/GCVit #13).
    channels_last_view: bool = True
    #: the global query is reshaped to (B, heads, N, C/heads) from a (B, C, h, w) tensor without the
    #: head transpose (NVlabs/GCVit #11).
    global_query_no_head_transpose: bool = True
    # --- ASIT training (training/coach.py, criteria/*) ---
    #: the G-step discriminator call runs under ``torch.no_grad()``, so the adversarial term is a
    #: constant with no gradient (coach.py l.117).
    adversarial_no_grad: bool = True
    #: the distribution-alignment loss only looks at batch items 0 and 1, drawn with an unseeded numpy
    #: RNG, and is exactly 0 in ~25% of steps (distribute_loss.py l.22-28).
    distribution_two_samples: bool = True
    #: the discriminator's EMA key network is updated inside every forward (3x per iteration) rather
    #: than once per D step (stylegan2/model.py l.743).
    ema_update_every_forward: bool = True
    # --- inference / evaluation ---
    #: scripts/inference.py decodes from the learned constant (``use_struct`` not passed) although
    #: training and validation decode from the structure code.
    inference_without_struct: bool = True
    # (No eval_drop_last flag: the released evaluation loaders' drop_last=True only lost the tail of the test set,
    # a scoring error with nothing to reproduce; every evaluation here scores every sample.)
    #: IFER's warmup/cosine schedule is computed from ``--data_len`` = 1,281,167 (ImageNet) rather
    #: than the real dataset length (scheduler_factory.py).
    lr_schedule_imagenet_length: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    def differences(self, other: Quirks) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


AS_RELEASED = Quirks()
AS_DESCRIBED = Quirks(**{f.name: False for f in fields(Quirks)})


def get_quirks(mode: str | Quirks | None = "as_described", **overrides) -> Quirks:
    """Resolve a mode name (or a Quirks) plus per-flag overrides into a Quirks instance."""
    if mode is None:
        mode = "as_described"
    if isinstance(mode, Quirks):
        base = mode
    elif mode == "as_released":
        base = AS_RELEASED
    elif mode == "as_described":
        base = AS_DESCRIBED
    else:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    unknown = set(overrides) - {f.name for f in fields(Quirks)}
    if unknown:
        raise ValueError(f"unknown quirk flag(s) {sorted(unknown)}; known: {[f.name for f in fields(Quirks)]}")
    return replace(base, **overrides) if overrides else base


def resolved_quirks(mode: str | Quirks | None = "as_described", **overrides) -> dict:
    """The flags one run uses, as plain data for checkpoints and results: ``{"mode": ..., "flags": {...}}``.

    ``mode`` is the name given, or ``"custom"`` for a Quirks instance (or overrides) equal to neither preset, so
    a reader never has to know which defaults applied when the file was written.
    """
    q = get_quirks(mode, **overrides)
    name = "as_released" if q == AS_RELEASED else "as_described" if q == AS_DESCRIBED else "custom"
    return {"mode": name, "flags": q.to_dict()}
