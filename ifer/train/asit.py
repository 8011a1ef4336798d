"""ASIT training: alternating discriminator and encoder (generator) steps, as in the released coach.py.

Per iteration (training/coach.py):
  D step  - encoder in eval mode; x̂ = ASIT(x) without grad; source features of the decoder for random z;
            L_D = MSE(D(x, x), +1) + MSE(D(x̂, x), -1).
  G step  - encoder in train mode (DropPath active); x̂, encoder features t_fea;
            L = 1.0 L2 + 0.8 LPIPS(alex) + 0.1 ID + 1e-4 L_adv + 0.01 L_dist.
Quirks (``ifer/core/quirks.py``) choose between the released behaviour (no-grad adversarial term,
2-sample distribution loss, EMA key update inside every D forward) and the described one.

Randomness is a function of (seed, step), so resuming from ``last.pt`` reproduces an uninterrupted run (a SIGKILL at
any step or mid-save included: tests/test_fault_injection.py). ``last.pt`` records model, mode and config, and a
resume with other ones is refused (``ifer.train.checkpoint``); SIGINT/SIGTERM save it at the next step
(``ifer.train.interrupt``); non-finite gradients skip the step (``ifer.train.optim``).

    python -m ifer.cli train-asit --params params.yaml
    torchrun --standalone --nproc_per_node=2 -m ifer.cli train-asit --params params.yaml
"""
from __future__ import annotations

import math
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ifer.core.config import ConfigError
from ifer.core.loading import CheckpointError, load_state_dict_strict
from ifer.core.quirks import Quirks, get_quirks
from ifer.train.checkpoint import (
    check_finite,
    kill_if_requested,
    load_resume_state,
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


@dataclass
class ASITLosses:
    """The configured loss terms. ``perceptual``/``identity`` are None when their weights are unavailable."""

    lambdas: dict
    perceptual: torch.nn.Module | None
    identity: torch.nn.Module | None

    def reconstruction(self, y_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        terms = {"l2": F.mse_loss(y_hat, x)}
        if self.perceptual is not None and self.lambdas.get("lpips", 0) > 0:
            terms["lpips"] = self.perceptual(y_hat, x)
        if self.identity is not None and self.lambdas.get("id", 0) > 0:
            terms["id"] = self.identity(y_hat, x)
        total = sum(self.lambdas[k] * v for k, v in terms.items())
        return total, {k: float(v.detach()) for k, v in terms.items()}

    def to(self, device: torch.device | str) -> ASITLosses:
        """Move the LPIPS and identity networks to the training device (they are built on the CPU)."""
        for m in (self.perceptual, self.identity):
            if m is not None:
                m.to(device)
        return self


class _GStep(torch.nn.Module):
    """The encoder's forward for the G step, wrapped so DDP sees it (gradient all-reduce)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, use_struct: bool):
        return self.net(x, use_struct=use_struct, randomize_noise=True, return_features=True)


def train_asit(net: torch.nn.Module, disc: torch.nn.Module, losses: ASITLosses, train_set: Dataset, val_set: Dataset,
               cfg, run_dir: str | Path, *, info: DistInfo | None = None, seed: int = 0,
               quirks: Quirks | str = "as_described", use_struct: bool = True, num_workers: int = 0,
               resume: bool = True, stop_after_steps: int | None = None, progress: bool = True,
               model_name: str | None = None, resume_override: bool = False) -> dict | None:
    """Train ``net`` (an ``ifer.models.asit.ASIT``) against ``disc``; returns the final validation summary on rank 0.

    ``cfg`` is the ``asit.train`` config section. ``stop_after_steps`` simulates an interruption (for tests).
    ``last.pt`` records ``model_name``, the mode, ``cfg``, the loss weights and ``use_struct``; resuming with other
    ones raises ResumeMismatchError unless ``resume_override``. SIGINT/SIGTERM save ``last.pt`` at the next step
    and raise TrainingInterrupted.
    """
    from ifer.losses.adversarial import discriminator_loss, generator_adversarial_term
    from ifer.losses.distribution import distribution_loss

    info = info or DistInfo()
    record = run_record(model_name or type(net).__name__, mode_name(quirks),
                        {"asit.train": cfg, "asit.lambdas": losses.lambdas, "asit.use_struct": use_struct})
    quirks = get_quirks(quirks)
    run_dir = Path(run_dir)
    log = RunLogger(run_dir, info.is_main, progress)
    device = info.device
    configure_device(device, cfg.get("tf32", True))
    net.to(device)
    disc.to(device)
    losses.to(device)
    g_named = [(f"encoder.{n}", p) for n, p in net.encoder.named_parameters()]
    if net.train_decoder:
        g_named += [(f"decoder.{n}", p) for n, p in net.decoder.named_parameters()]
    g_params = [p for _, p in g_named]
    opt_g = build_optimizer(g_params, cfg.optimizer, cfg.lr)
    opt_d = build_optimizer(disc.parameters(), cfg.optimizer, cfg.get("d_lr", cfg.lr))
    max_bad = cfg.get("max_nonfinite_steps", DEFAULT_MAX_NONFINITE_STEPS)
    guard_g = GuardedStep(opt_g, g_named, device_type=device.type, clip=cfg.get("grad_clip"),
                          max_nonfinite_steps=max_bad, name="the encoder (G step)")
    guard_d = GuardedStep(opt_d, disc.named_parameters(), device_type=device.type, max_nonfinite_steps=max_bad,
                          name="the discriminator (D step)")
    g_step: torch.nn.Module = _GStep(net)
    if info.distributed:
        ids = [device.index] if device.type == "cuda" else None
        g_step = DistributedDataParallel(g_step, device_ids=ids, find_unused_parameters=True)

    seeded_train = SeededDataset(train_set, derive_seed(seed, "augment"))
    sampler = ResumableSampler(len(train_set), derive_seed(seed, "order"), info.rank, info.world_size)
    # drop_last: a final batch of one image breaks the distribution loss (it needs two samples)
    batches_per_epoch = len(sampler) // cfg.batch_size
    if batches_per_epoch == 0:
        raise ConfigError(f"asit.train.batch_size={cfg.batch_size} exceeds the {len(sampler)} training images per "
                         f"process: no full batch to train on")
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"

    step, best, history = 0, math.inf, []
    if info.is_main:
        remove_stale_temporaries(run_dir)
    state, source = load_resume_state(last_path, record, resume_override) if resume else (None, None)
    if state is not None:
        load_state_dict_strict(net, state["net"], source)
        if state.get("latent_avg") is not None:
            net.set_latent_avg(state["latent_avg"])
        load_state_dict_strict(disc, state["disc"], source)
        try:
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{source}: optimizer state does not fit ({type(e).__name__}: {e})") from e
        guard_g.load_state_dict(state["guard_g"])
        guard_d.load_state_dict(state["guard_d"])
        step, best, history = state["step"], state["best"], list(state["history"])
        log.rewind(step)
        log.log("resume", step=step, path=str(source))
    else:
        log.start_fresh()

    def checkpoint() -> None:
        save_resumable(last_path, {
            "net": net.state_dict(), "latent_avg": net.latent_avg, "disc": disc.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "guard_g": guard_g.state_dict(),
            "guard_d": guard_d.state_dict(), "step": step, "best": best, "history": history, "record": record})

    style_dim = net.decoder.style_dim
    bar = log.bar(cfg.steps, "train_asit", initial=step)
    with StopOnSignal() as stop:
        while step < cfg.steps:
            epoch, within = divmod(step, batches_per_epoch)
            seeded_train.set_epoch(epoch)
            sampler.set_epoch(epoch, start_index=within * cfg.batch_size)
            loader = DataLoader(seeded_train, batch_size=cfg.batch_size, sampler=sampler, num_workers=num_workers,
                                drop_last=True, pin_memory=device.type == "cuda")
            for batch in loader:
                if step >= cfg.steps:
                    break
                if stop_after_steps is not None and step >= stop_after_steps:
                    bar.close()
                    return None
                if stop.requested(info):
                    bar.close()
                    if info.is_main:
                        checkpoint()
                        log.log("interrupt", step=step, signal=stop.signum)
                    barrier(info)
                    raise TrainingInterrupted(step, stop.signum or signal.SIGTERM, last_path)
                kill_if_requested(step)
                x = (batch[0] if isinstance(batch, (list, tuple)) else batch).to(device)
                torch.manual_seed(derive_seed(seed, "step", step, info.rank))
                dist_rng = np.random.RandomState(derive_seed(seed, "dist", step, info.rank) % 2**32)

                # --- D step (encoder frozen in eval mode, as coach.py) ---
                net.eval()
                disc.train()
                with torch.no_grad():
                    z = torch.randn(x.shape[0], style_dim, device=device)
                    _, _, s_fea = net.decoder([z], randomize_noise=True, return_features=True)
                    fake = net(x, use_struct=use_struct, randomize_noise=True)
                loss_d = discriminator_loss(disc(x, x), disc(fake, x))
                opt_d.zero_grad(set_to_none=True)
                guard_d.backward(loss_d)
                _all_reduce_grads(disc, info)
                guard_d.step(step, last_path)
                if not quirks.ema_update_every_forward:
                    disc.update_key_network()

                # --- G step (encoder in train mode: DropPath active) ---
                net.train()
                if not net.train_decoder:
                    net.decoder.eval()
                disc.eval()
                y_hat, _, t_fea = g_step(x, use_struct)
                loss_rec, terms = losses.reconstruction(y_hat, x)
                loss_adv = generator_adversarial_term(disc, y_hat, x, quirks)
                loss_dist = distribution_loss(s_fea, t_fea, quirks=quirks, rng=dist_rng)
                lam = losses.lambdas
                loss = loss_rec + lam["adv"] * loss_adv + lam["dist"] * loss_dist
                terms.update(adv=_scalar(loss_adv), dist=_scalar(loss_dist), d=_scalar(loss_d))
                if broadcast_flag(not math.isfinite(_scalar(loss)) or not math.isfinite(terms["d"]), info):
                    check_finite({"loss": _scalar(loss), **terms}, step, last_path)
                opt_g.zero_grad(set_to_none=True)
                guard_g.backward(loss)
                guard_g.step(step, last_path)
                step += 1
                bar.update()

                if step % cfg.log_interval == 0:
                    log.log("train", step=step, loss=float(all_reduce_mean(loss.detach(), info)),
                            skipped_steps=guard_g.skipped + guard_d.skipped, **terms)
                    bar.set_postfix(loss=f"{_scalar(loss):.4f}")
                if step % cfg.val_interval == 0 or step == cfg.steps:
                    if info.is_main:
                        val = validate_asit(net, losses, val_set, cfg.batch_size, device, use_struct, num_workers)
                        history.append({"step": step, **val})
                        log.log("val", step=step, **val)
                        if val["loss"] < best:
                            best = val["loss"]
                            save_training_state(best_path, {"net": net.state_dict(), "step": step, "val": val})
                # The final step's last.pt (4.8 GB for asit_base) would be deleted once asit_best.pt is written: it is
                # written only when kept. A kill before then resumes from the previous save and retrains the rest to
                # the same weights (every draw is seeded by seed/step).
                final = step == cfg.steps
                if (step % cfg.save_interval == 0 and not final) or (final and cfg.get("keep_resume_state", False)):
                    if info.is_main:
                        checkpoint()
                    barrier(info)
    bar.close()
    if not info.is_main:
        return None
    return {"best_val_loss": best, "history": history, "steps": step}


def _scalar(x) -> float:
    """A loss term for logging (tensor or number), without touching autograd."""
    return float(x.detach()) if torch.is_tensor(x) else float(x)


def _all_reduce_grads(module: torch.nn.Module, info: DistInfo) -> None:
    """Average discriminator gradients across ranks (D is small and stepped outside DDP's wrapper)."""
    if not info.distributed:
        return
    import torch.distributed as dist

    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= info.world_size


@torch.no_grad()
def validate_asit(net, losses: ASITLosses, dataset: Dataset, batch_size: int, device, use_struct: bool,
                  num_workers: int = 0) -> dict[str, float]:
    """Validation as coach.calc_loss (l2 + lpips + id, no adversarial/distribution), over every image."""
    net.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers)
    sums, n = {}, 0
    for batch in loader:
        x = (batch[0] if isinstance(batch, (list, tuple)) else batch).to(device)
        y_hat = net(x, use_struct=use_struct, randomize_noise=False)
        total, terms = losses.reconstruction(y_hat, x)
        for k, v in {"loss": float(total), **terms}.items():
            sums[k] = sums.get(k, 0.0) + v * len(x)
        n += len(x)
    net.train()
    return {k: v / n for k, v in sums.items()}
