"""FER training with the released timm-style IFER recipe, for any model with the suite's FER interface.

The interface (``ifer.models``): ``forward(x) -> logits``, ``training_loss(x, target) -> (loss, terms)``
where ``target`` is class indices or soft targets, ``expression_features(x)``. Optional: an adversary
(``adversary_parameters()``) whose loss is part of ``training_loss``, stepped by its own optimizer only.

Recipe (scripts/train_ifer.py + configs/ifer.yml): AdamW (no weight decay on 1-D params), cosine
schedule with linear warmup counted in optimizer updates, RandAugment, random erasing, mixup/cutmix
with label smoothing, gradient clipping, native AMP. The warmup/cosine length comes from the real
dataset length unless the ``lr_schedule_imagenet_length`` quirk asks for the released behaviour.

Every random draw is a function of (seed, epoch, step, rank, sample index), so a run resumed from
``last.pt`` after a kill finishes with exactly the metrics of an uninterrupted run. ``last.pt`` is written after
every epoch and, mid-epoch, on SIGINT/SIGTERM (``ifer.train.interrupt``); it records model, mode and config, and a
resume with other ones is refused (``ifer.train.checkpoint``). ``amp_dtype: float16`` adds a GradScaler; with bf16
or fp32 a non-finite gradient skips the step (``ifer.train.optim``). Training loaders drop the last partial batch.

    python -m ifer.cli train-fer --params params.yaml --method ifer --seed 0
    torchrun --standalone --nproc_per_node=2 -m ifer.cli train-fer --params params.yaml --method ifer
"""
from __future__ import annotations

import logging
import math
import signal
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ifer.core.config import ConfigError
from ifer.core.loading import CheckpointError, load_state_dict_strict
from ifer.core.machine import native_bf16
from ifer.core.quirks import Quirks, get_quirks
from ifer.metrics.predict import predict
from ifer.train.checkpoint import (
    check_finite,
    drop_resume_state,
    kill_if_requested,
    load_resume_state,
    load_training_state,
    mode_name,
    remove_stale_temporaries,
    run_record,
    save_resumable,
    save_training_state,
)
from ifer.train.distributed import DistInfo, all_reduce_mean, barrier, broadcast_flag, configure_device
from ifer.train.interrupt import StopOnSignal, TrainingInterrupted
from ifer.train.logging import RunLogger
from ifer.train.optim import DEFAULT_MAX_NONFINITE_STEPS, GuardedStep, build_optimizer
from ifer.train.seeding import ResumableSampler, SeededDataset, derive_seed

IMAGENET_TRAIN_LEN = 1_281_167  # scripts/train_ifer.py --data_len default
_AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}  # float16 adds a GradScaler


def resolve_amp_dtype(cfg, device: torch.device) -> torch.dtype:
    """``amp_dtype``, except float16 on a CPU, which becomes ``amp_dtype_cpu`` (default bfloat16).

    float16 autocast on a CPU has no fast kernels: one ``ifer_base`` step at batch 2 took ~180 s in float16 against
    ~2.5 s in bfloat16 (2-core AVX-512 + bf16 machine, 2026-11-29), so the released recipe's fp16 + GradScaler
    (a GPU setting) would make a CPU run or the rehearsal impractical. The substitution is logged by the caller
    and recorded (``amp`` event in log.jsonl); ``amp_dtype_cpu: float16`` keeps float16 on the CPU as well."""
    want = cfg.get("amp_dtype", "bfloat16")
    if device.type == "cpu" and want == "float16":
        want = cfg.get("amp_dtype_cpu", "bfloat16") or want
    return _AMP_DTYPES[want]


class _LossModule(torch.nn.Module):
    """Routes DDP's forward through ``training_loss`` so gradient all-reduce hooks fire."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, target):
        out = self.model.training_loss(x, target)
        # models may return the loss alone or (loss, {term: float}) for logging
        return out if isinstance(out, tuple) else (out, {})


@dataclass
class FERRun:
    run_dir: Path
    best_epoch: int
    selection_split: str
    selection_metric: float
    test: dict[str, Any]
    history: list[dict] = field(default_factory=list)


def schedule_updates_per_epoch(n_train: int, batch_size: int, world_size: int, quirks: Quirks,
                               max_steps_per_epoch: int | None = None) -> int:
    """Updates per epoch used by the LR schedule. The released code used ImageNet's length (a bug), which a
    ``max_steps_per_epoch`` cap leaves alone (the quirk is the schedule's length, not the data's)."""
    if quirks.lr_schedule_imagenet_length:
        return max(1, IMAGENET_TRAIN_LEN // (batch_size * world_size))
    n = max(1, n_train // (batch_size * world_size))
    return min(n, max_steps_per_epoch) if max_steps_per_epoch else n


def build_scheduler(optimizer, cfg, updates_per_epoch: int):
    from timm.scheduler import CosineLRScheduler

    main_epochs = max(1, cfg.epochs - cfg.get("cooldown_epochs", 0))
    # lr_step=epoch: stepped once per epoch (KE2NT's published recipe); warmup_prefix starts the cosine after the
    # warmup, so warmup_epochs=1 is one epoch at the constant warmup_lr, as the official ConstantWarmupScheduler
    per_epoch = cfg.get("lr_step", "update") == "epoch"
    unit = 1 if per_epoch else updates_per_epoch
    return CosineLRScheduler(
        optimizer, t_initial=main_epochs * unit, lr_min=cfg.min_lr,
        warmup_lr_init=cfg.warmup_lr, warmup_t=cfg.warmup_epochs * unit, warmup_prefix=bool(cfg.get("warmup_prefix")),
        cycle_limit=1, t_in_epochs=per_epoch,
    )


def build_mixup(cfg, num_classes: int):
    """timm Mixup/CutMix with label smoothing inside, or None (then plain/smoothed targets)."""
    if cfg.get("mixup", 0) > 0 or cfg.get("cutmix", 0) > 0:
        from timm.data import Mixup

        return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=1.0,
                     switch_prob=cfg.get("mixup_switch_prob", 0.5), mode="batch",
                     label_smoothing=cfg.get("smoothing", 0.0), num_classes=num_classes)
    return None


def smooth_targets(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    return F.one_hot(y, num_classes).float() * (1.0 - smoothing) + off


def train_fer(model: torch.nn.Module, train_set: Dataset, val_set: Dataset, test_set: Dataset, cfg, run_dir: str | Path,
              *, info: DistInfo | None = None, seed: int = 0, quirks: Quirks | str = "as_described",
              model_selection: str = "val", num_classes: int | None = None, eval_batch_size: int = 64,
              num_workers: int = 0, resume: bool = True, stop_after_epochs: int | None = None,
              progress: bool = True, model_name: str | None = None, config_section: str = "train",
              resume_override: bool = False, checkpoint_meta: Mapping | None = None) -> FERRun | None:
    """Train, select the best epoch on ``model_selection`` ('val' by default; 'test' only when asked, and recorded),
    then score the selected weights on the test set. Returns None when stopped early by ``stop_after_epochs``.

    ``last.pt`` records ``model_name``, the quirks mode and ``cfg`` (named ``config_section`` in messages); a resume
    with different ones raises ResumeMismatchError unless ``resume_override``. SIGINT/SIGTERM save ``last.pt`` at the
    next step and raise TrainingInterrupted. ``best.pt`` is ``{model, epoch, meta}``: ``checkpoint_meta`` (plain
    JSON data) says what the weights are (``ifer.stages.fer_checkpoint_meta``).
    """
    info = info or DistInfo()
    record = run_record(model_name or type(model).__name__, mode_name(quirks), {config_section: cfg})
    quirks = get_quirks(quirks)
    run_dir = Path(run_dir)
    num_classes = num_classes or model.num_classes
    if model_selection not in ("val", "test"):
        raise ValueError(f"model_selection must be 'val' or 'test', got {model_selection!r}")
    log = RunLogger(run_dir, info.is_main, progress)
    device = info.device
    configure_device(device, cfg.get("tf32", True))
    model.to(device)
    core = model
    loss_module: torch.nn.Module = _LossModule(model)
    if info.distributed:
        loss_module = DistributedDataParallel(loss_module, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=True)

    optimizer = build_optimizer(core, cfg.get("optimizer", "adamw"), cfg.lr, cfg.weight_decay, cfg.get("momentum", 0.9))
    # --- adversary hook (disentangled model; H7, issue 13): the adversary is its own player. Its loss is a
    # term of training_loss, so its gradient comes from the one DDP backward; only its own optimizer steps it.
    adversary_opt = None
    if hasattr(core, "adversary_parameters"):
        adversarial = {id(p) for p in core.adversary_parameters()}
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in adversarial]
        adversary_opt = torch.optim.Adam(core.adversary_parameters(), lr=cfg.lr)
    # --- end adversary hook
    accum = int(cfg.get("grad_accum_steps", 1) or 1)
    if accum < 1 or cfg.batch_size % accum:
        raise ConfigError(f"{config_section}.grad_accum_steps={accum} must be >= 1 and divide "
                          f"{config_section}.batch_size={cfg.batch_size} (the batch is split into equal micro-batches)")
    upe_real = len(train_set) // (cfg.batch_size * info.world_size)  # drop_last: only full batches
    if upe_real == 0:
        raise ConfigError(f"{config_section}.batch_size={cfg.batch_size} x {info.world_size} process(es) exceeds the "
                         f"{len(train_set)} training images: no full batch to train on")
    # max_steps_per_epoch: a length, not the protocol (the rehearsal's `paper` runs take 1 step of each epoch; a
    # step of ifer_base at 1 CPU thread costs tens of seconds). null = every full batch, as the recipes do.
    cap = cfg.get("max_steps_per_epoch")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
        raise ConfigError(f"{config_section}.max_steps_per_epoch={cap!r} must be null or an integer >= 1")
    upe_real = min(upe_real, cap) if cap else upe_real
    scheduler = build_scheduler(optimizer, cfg, schedule_updates_per_epoch(len(train_set), cfg.batch_size,
                                                                           info.world_size, quirks, cap))
    mixup = build_mixup(cfg, num_classes)
    use_amp = bool(cfg.get("amp", False))
    amp_dtype = resolve_amp_dtype(cfg, device)
    emulated_bf16 = use_amp and device.type == "cpu" and amp_dtype == torch.bfloat16 and not native_bf16()
    use_amp = use_amp and not emulated_bf16  # emulated bf16 is slower than fp32: the run is fp32 (logged below)
    optimizers = [optimizer] + ([adversary_opt] if adversary_opt is not None else [])
    guard = GuardedStep(optimizers, core.named_parameters(), device_type=device.type,
                        fp16=use_amp and amp_dtype == torch.float16, clip=cfg.get("clip_grad"),
                        max_nonfinite_steps=cfg.get("max_nonfinite_steps", DEFAULT_MAX_NONFINITE_STEPS))

    seeded_train = SeededDataset(train_set, derive_seed(seed, "augment"))
    sampler = ResumableSampler(len(train_set), derive_seed(seed, "order"), info.rank, info.world_size)
    selection_set = val_set if model_selection == "val" else test_set

    start_epoch, step, best, best_epoch, history = 0, 0, -math.inf, -1, []
    best_scores = None  # the selection-split metrics of best.pt when scored in this process
    partial = None  # a mid-epoch checkpoint (written on SIGINT/SIGTERM): batches done and running sums
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if info.is_main:
        remove_stale_temporaries(run_dir)
    state, source = load_resume_state(last_path, record, resume_override) if resume else (None, None)
    if state is not None:
        load_state_dict_strict(core, state["model"], source)
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if adversary_opt is not None:
                adversary_opt.load_state_dict(state["adversary_optimizer"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{source}: optimizer or scheduler state does not fit ({type(e).__name__}: {e})") from e
        guard.load_state_dict(state["guard"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        best, best_epoch, history = state["best"], state["best_epoch"], list(state["history"])
        partial = state.get("partial") or None
        if partial:
            start_epoch = partial["epoch"]
        log.rewind(step)
        log.log("resume", epoch=start_epoch, step=step, path=str(source))
    else:
        log.start_fresh()
    if emulated_bf16:
        log.log("amp", requested=cfg.get("amp_dtype", "bfloat16"), used="float32", device=device.type,
                reason="this CPU has no native bf16 (avx512_bf16 / amx_bf16): emulated bf16 is slower than fp32")
        if info.is_main:
            logging.getLogger("ifer").warning("%s: bf16 autocast runs as fp32 on this CPU (no avx512_bf16 / amx_bf16)",
                                              run_dir)
    if use_amp and _AMP_DTYPES[cfg.get("amp_dtype", "bfloat16")] != amp_dtype:
        used = str(amp_dtype).removeprefix("torch.")
        log.log("amp", requested=cfg.amp_dtype, used=used, device=device.type,
                reason="float16 autocast has no fast CPU kernels (amp_dtype_cpu)")
        if info.is_main:
            logging.getLogger("ifer").warning("%s: amp_dtype float16 runs as %s on the CPU (%s.amp_dtype_cpu)",
                                              run_dir, used, config_section)

    def checkpoint(epoch_done: int, partial_state: dict | None) -> None:
        save_resumable(last_path, {
            "model": core.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "adversary_optimizer": adversary_opt.state_dict() if adversary_opt is not None else {},
            "epoch": epoch_done, "step": step, "best": best, "best_epoch": best_epoch, "history": history,
            "updates_per_epoch": upe_real, "guard": guard.state_dict(), "partial": partial_state, "record": record,
        })

    with StopOnSignal() as stop:
        for epoch in range(start_epoch, cfg.epochs):
            if stop_after_epochs is not None and epoch >= stop_after_epochs:
                return None
            skip = partial["batches"] if partial else 0
            running, n_batches = (dict(partial["running"]), skip) if partial else ({}, 0)
            partial = None
            core.train()
            seeded_train.set_epoch(epoch)
            sampler.set_epoch(epoch, start_index=skip * cfg.batch_size)
            loader = DataLoader(seeded_train, batch_size=cfg.batch_size, sampler=sampler, num_workers=num_workers,
                                drop_last=True, pin_memory=device.type == "cuda")
            bar = log.bar(min(len(loader), upe_real - skip), f"epoch {epoch + 1}/{cfg.epochs}", epoch=epoch, epochs=cfg.epochs)
            for x, y in loader:
                if n_batches >= upe_real:  # max_steps_per_epoch reached (counts the batches a resume skipped)
                    break
                if stop.requested(info):
                    bar.close()
                    if info.is_main:
                        checkpoint(epoch - 1, {"epoch": epoch, "batches": n_batches, "running": running})
                        log.log("interrupt", epoch=epoch, step=step, signal=stop.signum)
                    barrier(info)
                    raise TrainingInterrupted(step, stop.signum or signal.SIGTERM, last_path)
                kill_if_requested(step)
                torch.manual_seed(derive_seed(seed, "step", step, info.rank))
                np.random.seed(derive_seed(seed, "np-step", step, info.rank) % 2**32)
                x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device)
                if mixup is not None and len(x) % 2 == 0:  # timm's batch mixup needs an even batch
                    x, target = mixup(x, y)
                elif cfg.get("smoothing", 0) > 0:
                    target = smooth_targets(y, num_classes, cfg.smoothing)
                else:
                    target = y
                optimizer.zero_grad(set_to_none=True)
                if adversary_opt is not None:  # adversary hook (H7)
                    adversary_opt.zero_grad(set_to_none=True)
                # grad_accum_steps = k: the batch (same data, order and schedule as k = 1) runs as k equal
                # micro-batches whose gradients add up before the one optimizer step, so memory holds 1/k of
                # the activations; gradients are all-reduced only on the last one (DDP no_sync).
                losses, terms = [], {}
                for i, (xc, tc) in enumerate(zip(x.chunk(accum), target.chunk(accum))):
                    sync = nullcontext() if not info.distributed or i == accum - 1 else loss_module.no_sync()
                    with sync:
                        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                            loss_c, terms_c = loss_module(xc, tc)
                        terms_c = {k: float(v) for k, v in terms_c.items() if k != "loss"}
                        bad = broadcast_flag(not torch.isfinite(loss_c.detach()).all().item(), info)
                        if bad:
                            check_finite({"loss": float("nan"), **terms_c}, step, last_path)
                        # clip, check and step every optimizer in ``optimizers`` (the adversary's too: H7's one
                        # step per iteration) after the last micro-batch; a non-finite gradient skips the step
                        guard.backward(loss_c if accum == 1 else loss_c / accum)
                    losses.append(loss_c.detach())
                    for k, v in terms_c.items():
                        terms[k] = terms.get(k, 0.0) + v / accum
                loss = losses[0] if accum == 1 else torch.stack(losses).mean()
                guard.step(step, last_path)
                step += 1
                scheduler.step_update(num_updates=step)
                loss_val = float(all_reduce_mean(loss.detach().float(), info))
                for k, v in {"loss": loss_val, **terms}.items():
                    running[k] = running.get(k, 0.0) + float(v)
                n_batches += 1
                if step % cfg.get("log_interval", 20) == 0:
                    log.log("train", epoch=epoch, step=step, lr=optimizer.param_groups[0]["lr"], loss=loss_val,
                            skipped_steps=guard.skipped, overflow_skips=guard.overflow_skips, **terms)
                bar.set_postfix(loss=f"{loss_val:.3f}")
                bar.update()
            bar.close()
            scheduler.step(epoch + 1)  # acts only for lr_step=epoch (timm ignores it when t_in_epochs=False)

            row = {"epoch": epoch, "step": step, **{f"train_{k}": v / max(n_batches, 1) for k, v in running.items()}}
            if info.is_main:
                sel = _score(core, selection_set, num_classes, eval_batch_size, device, num_workers)
                row[f"{model_selection}_accuracy"] = sel["accuracy"]
                row[f"{model_selection}_mean_class_accuracy"] = sel["mean_class_accuracy"]
                if sel["accuracy"] > best:
                    best, best_epoch, best_scores = sel["accuracy"], epoch, sel
                    save_training_state(best_path, {"model": core.state_dict(), "epoch": epoch,
                                                    **({"meta": dict(checkpoint_meta)} if checkpoint_meta else {})})
                history.append(row)
                log.log("epoch", **row)
                # The final epoch's last.pt would be deleted once the test score is in (drop_resume_state): it is
                # written only when kept. A kill before result.json resumes from the previous epoch's last.pt and
                # retrains the final epoch to the same weights (every draw is seeded by seed/epoch/step/index).
                if epoch + 1 < cfg.epochs or cfg.get("keep_resume_state", False):
                    checkpoint(epoch, None)
            barrier(info)

    if not info.is_main:
        return None
    # when best.pt is the final epoch trained in this process, it holds the weights in memory right now: no reload
    if not (best_epoch == cfg.epochs - 1 and start_epoch < cfg.epochs):
        load_state_dict_strict(core, load_training_state(best_path)["model"], best_path)
    if model_selection == "test" and best_scores is not None:
        test = best_scores  # the selected weights were scored on this very test set when selected (deterministic)
    else:
        test = _score(core, test_set, num_classes, eval_batch_size, device, num_workers)
    log.log("test", best_epoch=best_epoch, selection=model_selection, **{k: v for k, v in test.items() if not isinstance(v, list)})
    if not cfg.get("keep_resume_state", False):
        drop_resume_state(last_path)
    return FERRun(run_dir=run_dir, best_epoch=best_epoch, selection_split=model_selection, selection_metric=best,
                  test=test, history=history)


def _score(model, dataset, num_classes, batch_size, device, num_workers) -> dict[str, Any]:
    from ifer.metrics.fer import fer_metrics

    out = predict(model, dataset, batch_size, device, num_workers)
    return fer_metrics(out["logits"], out["labels"], num_classes)
