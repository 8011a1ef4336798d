"""Training infrastructure: deterministic sampling, RNG checkpointing, NaN stop."""
import random

import numpy as np
import pytest
import torch

from ifer.train.checkpoint import (
    NonFiniteLossError,
    check_finite,
    load_training_state,
    rng_state,
    save_training_state,
    set_rng_state,
)
from ifer.train.seeding import ResumableSampler, SeededDataset, derive_seed


def test_sampler_resumes_mid_epoch_and_shards_without_overlap():
    s = ResumableSampler(10, seed=3)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start_index=4)
    assert list(s) == full[4:]
    shards = []
    for rank in range(2):
        r = ResumableSampler(10, seed=3, rank=rank, world_size=2)
        r.set_epoch(2)
        shards.append(list(r))
    assert sorted(shards[0] + shards[1]) == sorted(full)
    s.set_epoch(3)
    assert list(s) != full  # a new permutation each epoch


def test_seeded_dataset_is_independent_of_access_order():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(1).item() + random.random() + np.random.rand()

    ds = SeededDataset(Noisy(), seed=1)
    a = [ds[i] for i in range(4)]
    b = [ds[i] for i in reversed(range(4))][::-1]
    assert a == b
    ds.set_epoch(1)
    assert [ds[i] for i in range(4)] != a
    assert derive_seed(1, "x") == derive_seed(1, "x") != derive_seed(2, "x")


def test_rng_state_roundtrip_through_weights_only_checkpoint(tmp_path):
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    path = save_training_state(tmp_path / "last.pt", {"rng": rng_state(), "step": 5})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_training_state(path)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_nan_loss_message_names_step_and_checkpoint(tmp_path):
    kept = tmp_path / "last.pt"
    kept.write_bytes(b"x")
    with pytest.raises(NonFiniteLossError, match=r"step 12.*last.pt is kept"):
        check_finite({"loss": float("nan"), "l2": 0.1}, 12, kept)
    check_finite({"loss": 1.0}, 1, kept)  # finite: no error
