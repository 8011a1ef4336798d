"""Inversion metrics over a folder pair, sharded across torchrun ranks: each image scored once, on ``device``.

    torchrun --standalone --nproc_per_node=2 -m ifer.cli eval-inversion --params params.yaml
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ifer.core.progress import track
from ifer.eval.shard import DistInfo, gather_objects, shard_indices
from ifer.metrics.inversion import InversionEvaluator, load_image, pair_by_name


def inversion_evaluator_kwargs(cfg, device: str | torch.device = "cpu") -> dict:
    """The one wiring of the inversion metric's weight files, shared by ``ifer eval-inversion`` and ``ifer
    eval-checkpoint``: ID similarity from ``eval.id_embedder`` + ``eval.id_weights`` (not the training loss's
    ``asit.id_weights``), FID from ``eval.inception_weights``.

        python -c "from ifer.core.config import load_config; from ifer.eval.inversion import inversion_evaluator_kwargs as k; print(k(load_config('paper')))"
    """
    return {"lpips_backbone": cfg.asit.lpips_backbone, "id_embedder": cfg.eval.id_embedder,
            "id_weights": cfg.eval.get("id_weights"), "inception_weights": cfg.eval.get("inception_weights"),
            "device": device}


def inversion_evaluator(cfg, device: str | torch.device = "cpu") -> InversionEvaluator:
    """``InversionEvaluator`` over ``eval.inversion_metrics`` wired by ``inversion_evaluator_kwargs``."""
    return InversionEvaluator(list(cfg.eval.inversion_metrics), **inversion_evaluator_kwargs(cfg, device))


def evaluate_inversion_sharded(pred_dir: str | Path, gt_dir: str | Path, metrics: Sequence[str], info: DistInfo, *,
                               size: int = 256, batch_size: int = 8, **evaluator_kwargs) -> dict:
    """``ifer.metrics.inversion.evaluate_inversion`` split across ranks; every rank returns the full result.

    Per-image rows are gathered (means therefore over exactly the set, no padding); FID's set-level statistics
    are summed across ranks by torchmetrics itself when ``compute`` runs under an initialised process group.
    """
    pairs = pair_by_name(pred_dir, gt_dir)
    mine = [pairs[i] for i in shard_indices(len(pairs), info)]
    ev = InversionEvaluator(metrics, **evaluator_kwargs)
    starts = range(0, len(mine), batch_size)
    for i in track(starts, desc=f"eval_inversion {pred_dir} ({', '.join(metrics)})", unit="batch",
                   enabled=info.rank == 0):
        chunk = mine[i:i + batch_size]
        pred = torch.stack([load_image(p, size) for _, p, _ in chunk])
        gt = torch.stack([load_image(g, size) for _, _, g in chunk])
        ev.update(pred, gt, [name for name, _, _ in chunk])
    if info.distributed:
        parts = gather_objects((ev.rows, list(ev._fid_counts)), info)
        order = {name: k for k, (name, _, _) in enumerate(pairs)}
        ev.rows = sorted((r for rows, _ in parts for r in rows), key=lambda r: order[r["name"]])
        # the "at least 2 images per set" check must see the whole set, not this rank's shard
        ev._fid_counts = [sum(c[0] for _, c in parts), sum(c[1] for _, c in parts)]
    if len(ev.rows) != len(pairs) or len({r["name"] for r in ev.rows}) != len(pairs):
        raise RuntimeError(f"scored {len(ev.rows)} rows for {len(pairs)} image pairs in {pred_dir}")
    out = ev.compute()
    out["pred_dir"], out["gt_dir"], out["image_size"] = str(pred_dir), str(gt_dir), size
    return out
