"""Determinism that survives interruption: every random draw is a function of (seed, epoch/step, index).

Per-sample augmentation seeds make the data independent of the number of loader workers, of the
world size and of where a run was resumed; per-step seeds do the same for DropPath, mixup and noise.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes and Python versions)."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    # the default CPU generator only: torch.manual_seed also goes through dynamo-disable and the lazy CUDA/MPS/XPU
    # seeding, ~60x slower, and runs twice per sample here (augmentation happens on the CPU)
    torch.random.default_generator.manual_seed(seed)


@contextmanager
def seeded(seed: int):
    """Seed python/numpy/torch for the block and restore the previous global states afterwards."""
    py, npy, tch = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(tch)


class SeededDataset(Dataset):
    """Wraps a dataset so item ``i`` of epoch ``e`` is augmented with seed ``derive_seed(seed, e, i)``."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with seeded(derive_seed(self.seed, self.epoch, index)):
            return self.dataset[index]


class ResumableSampler(Sampler[int]):
    """Seeded permutation per epoch, sharded over ranks, that can start mid-epoch at ``start`` batches.

    Training only: for ``world_size > 1`` the permutation is padded by wrapping (as DistributedSampler);
    evaluation never uses this sampler, so nothing is duplicated or dropped there.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world_size
        self.shuffle, self.epoch, self.start = shuffle, 0, 0
        self.per_rank = -(-n // world_size)

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        self.epoch, self.start = epoch, start_index

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, "perm", self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world
        order = (order * (1 + total // max(self.n, 1)))[:total]
        return order[self.rank:total:self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start:])

    def __len__(self) -> int:
        return self.per_rank - self.start
