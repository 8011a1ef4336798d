"""Split an evaluation set across torchrun ranks and gather the results: every item scored exactly once.

A ``DistributedSampler`` pads the last shard by repeating items, so a mean over its output counts some
images twice. Here rank ``r`` of ``w`` takes the items ``r, r + w, r + 2w, ...`` (shards differ in length
by at most one, nothing is repeated) and the per-item results travel back with their dataset index.

    torchrun --standalone --nproc_per_node=2 -m ifer.cli eval-fer --params params.yaml
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset


class DistInfo(Protocol):
    """What sharding needs of ``ifer.train.distributed.DistInfo`` (eval does not import train: layers)."""

    rank: int
    world_size: int

    @property
    def distributed(self) -> bool: ...


def shard_indices(n: int, info: DistInfo) -> list[int]:
    """This rank's item indices: a strided slice, so the union over ranks is ``range(n)`` with no repeats."""
    return list(range(info.rank, n, info.world_size))


def shard(dataset: Dataset, info: DistInfo) -> tuple[Dataset, list[int]]:
    idx = shard_indices(len(dataset), info)
    return (dataset if not info.distributed else Subset(dataset, idx)), idx


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` in rank order (a one-item list when not distributed)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def steps_for(n_local: int, batch_size: int, info: DistInfo) -> int:
    """Batches every rank must step through so that per-batch collectives line up across uneven shards."""
    steps = math.ceil(n_local / batch_size)
    return max(gather_objects(steps, info))


def gather_in_order(parts: dict[str, torch.Tensor], indices: Sequence[int], n: int, info: DistInfo) -> dict[str, torch.Tensor]:
    """Reassemble per-rank tensors (rows aligned with ``indices``) into dataset order on every rank.

    Raises if any index is missing or repeated, i.e. the shards did not cover the set exactly once.
    """
    gathered = gather_objects(({k: v.cpu() for k, v in parts.items()}, list(indices)), info)
    all_idx = torch.tensor([i for _, idx in gathered for i in idx], dtype=torch.long)
    if len(all_idx) != n or not torch.equal(torch.sort(all_idx).values, torch.arange(n)):
        raise RuntimeError(f"sharded evaluation covered {len(all_idx)} items ({len(set(all_idx.tolist()))} distinct) "
                           f"of {n}")
    order = torch.argsort(all_idx)
    return {k: torch.cat([p[k] for p, _ in gathered])[order] for k in parts}
