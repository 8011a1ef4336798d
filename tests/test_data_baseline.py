"""Acceptance: a timm ResNet-18 trained from scratch on SynthFER 64 px generalises to unseen identities,
and the same recipe on shuffled labels stays at chance (the data carries expression, not leakage)::

    .venv/bin/python -m pytest tests/test_data_baseline.py -q -s
"""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from ifer.data.synthfer import SynthFER, SynthFERConfig, generate_synthfer
from ifer.data.transforms import eval_transform

EPOCHS = 8
CHANCE = 1 / 7


def _tensors(root, split):
    ds = SynthFER(root, split, transform=eval_transform(64))
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys)


def _train_eval(x, y, xt, yt, seed: int) -> float:
    torch.manual_seed(seed)
    model = timm.create_model("resnet18", pretrained=False, num_classes=7)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = EPOCHS * (len(x) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(EPOCHS):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - 63, 64):  # training may drop the ragged batch; evaluation below never does
            idx = perm[i:i + 64]
            xb = torch.where(torch.rand(len(idx), 1, 1, 1, generator=g) < 0.5, x[idx].flip(-1), x[idx])
            loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xt[i:i + 256]).argmax(1) for i in range(0, len(xt), 256)])
    return (pred == yt).float().mean().item()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # one thread, as every xdist worker (nox -s tests): 2 threads beside the other worker oversubscribe the 2 cores
    # and the spinning OpenMP threads slow the whole suite
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("synthfer64")
    generate_synthfer(root, SynthFERConfig(res=64, n_train_identities=60, n_val_identities=2,
                                           n_test_identities=15, images_per_identity=20, seed=0,
                                           min_intensity=0.5))  # as the tiny profile: clearly expressed faces
    x, y = _tensors(root, "train")
    xt, yt = _tensors(root, "test")
    return x, y, xt, yt


@pytest.mark.slow
def test_resnet18_beats_chance_on_unseen_identities(data):
    x, y, xt, yt = data
    acc = _train_eval(x, y, xt, yt, seed=0)
    print(f"held-out-identity accuracy: {acc:.3f} (chance {CHANCE:.3f})")
    # Measured 0.377 (2.6x chance) on 2 CPU threads, torch 2.14.1; 0.30 = 2.1x chance leaves room for
    # BLAS/thread-count differences without admitting a model that learnt nothing.
    assert acc > 0.30


@pytest.mark.slow
def test_shuffled_labels_stay_at_chance(data):
    x, y, xt, yt = data
    y_shuffled = y[torch.from_numpy(np.random.default_rng(0).permutation(len(y)))]
    acc = _train_eval(x, y_shuffled, xt, yt, seed=0)
    print(f"shuffled-label control accuracy: {acc:.3f} (chance {CHANCE:.3f})")
    assert acc < 0.3
