"""A tiny FER-interface model and a separable toy dataset, for testing the training machinery fast."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class ToyFER(torch.nn.Module):
    """Implements the suite's FER interface (forward / training_loss / expression_features)."""

    def __init__(self, num_classes: int = 3, dim: int = 8, nan_after: int | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, dim), torch.nn.ReLU(),
                                        torch.nn.Dropout(0.1))
        self.head = torch.nn.Linear(dim, num_classes)
        self.nan_after, self.calls = nan_after, 0

    def expression_features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))

    def training_loss(self, x, target):
        self.calls += 1
        logits = self(x)
        loss = F.cross_entropy(logits, target) if target.ndim == 1 else torch.sum(-target * logits.log_softmax(-1), -1).mean()
        if self.nan_after is not None and self.calls > self.nan_after:
            loss = loss * float("nan")
        return loss, {"ce": float(loss.detach())}


class ToyImages(Dataset):
    """Class k has a bright patch in region k, plus random noise augmentation drawn from torch's global RNG."""

    def __init__(self, n: int, num_classes: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, num_classes, (n,), generator=g)
        self.base = torch.randn(n, 3, 8, 8, generator=g) * 0.3
        for i, k in enumerate(self.y.tolist()):
            self.base[i, :, :, 2 * k:2 * k + 2] += 1.5

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.base[i] + 0.1 * torch.randn(3, 8, 8), int(self.y[i])


def overfit_steps(model: torch.nn.Module, steps: int = 20, log_key: str | None = None) -> list[dict]:
    """Adam (lr 1e-3) on one fixed 8-image batch through ``training_loss``; returns each step's logs.

    Each entry holds ``loss`` (float) plus the model's own log terms, so a test can check any of them.
    The batch is drawn from the current torch RNG state (seed it first); 32 px suits every CNN here.
    """
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 5, 6, 1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(steps):
        loss, logs = model.training_loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({**logs, "loss": loss.item()})
    return history


def tiny_synthfer(tmp_path_factory, n_train_identities: int = 1):
    """A SynthFER copy of 7 images per identity (the default 64 px), n_train_identities + 1 val + 2 test."""
    from ifer.data.synthfer import SynthFERConfig, generate_synthfer

    root = tmp_path_factory.mktemp("synthfer")
    generate_synthfer(root, SynthFERConfig(n_train_identities=n_train_identities, n_val_identities=1,
                                           n_test_identities=2, images_per_identity=7), workers=1)
    return root
