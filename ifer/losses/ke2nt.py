"""KE2NT losses (Li et al., arXiv 2409.08598): transformation loss L_t and self-contrast loss L_c.

Both follow the official code (hangyu94/KE2NT, ``swint_raf_main.py`` and ``utils/loss.py``) and are
computed on non-neutral samples only; the caller passes that ``mask``. With no non-neutral sample in
the batch the official code returns NaN (mean over an empty tensor); here the loss is an exact 0 that
stays connected to the graph, so a batch of neutral faces neither breaks training nor DDP.

    python -c "import torch; from ifer.losses.ke2nt import transformation_loss; \
f = torch.tensor([[1., 0.]]); print(transformation_loss(f, torch.zeros(1, 2), torch.tensor([[0., 1.]]), \
torch.zeros(2), torch.tensor([True])))"   # 90 degrees apart -> 1 - cos = 1
"""
from __future__ import annotations

from typing import Literal

import torch
from torch.nn import functional as F

__all__ = ["transformation_loss", "self_contrast_loss", "PAIRWISE_MODES"]

PAIRWISE_MODES = ("all", "diagonal")


def _zero_like_graph(*tensors: torch.Tensor) -> torch.Tensor:
    # 0 * sum keeps every input's parameters in the graph (DDP expects a gradient for each of them).
    return sum(t.sum() for t in tensors) * 0.0


def transformation_loss(f_e: torch.Tensor, f_n: torch.Tensor, t_y: torch.Tensor, t_neutral: torch.Tensor,
                        mask: torch.Tensor) -> torch.Tensor:
    """L_t = mean over masked samples of 1 - cos(f_e - f_n, t_y - t_neutral).

    ``f_e``/``f_n``: (B, D) expression and transformed ("neutral") image features; ``t_y``: (B, D) text
    embedding of each sample's class; ``t_neutral``: (D,) neutral prompt embedding; ``mask``: (B,) bool,
    True for non-neutral samples. cos(a/|a|, b/|b|) = cos(a, b), so the official pre-normalisation is implied.
    """
    if not bool(mask.any()):
        return _zero_like_graph(f_e, f_n)
    delta_f = (f_e - f_n)[mask]
    delta_t = (t_y - t_neutral.unsqueeze(0))[mask]
    return (1.0 - F.cosine_similarity(delta_f, delta_t, dim=-1)).mean()


def self_contrast_loss(anchor: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
                       pairwise: Literal["all", "diagonal"] = "all") -> torch.Tensor:
    """L_c = mean[cos(anchor, neg) - cos(anchor, pos)] + 2 on L2-normalised (N, D) inputs.

    Anchor = class text embedding t_y, positive = f_e, negative = f_n, already restricted to the
    non-neutral samples. ``pairwise="all"`` is the released ``SelfConLoss``: ``anchor @ pos.T`` is an
    N x N matrix, so the mean runs over every pair (i, j) of the batch, not only i == j.
    ``pairwise="diagonal"`` is the per-sample formula, cos(t_i, n_i) - cos(t_i, e_i) + 2.
    """
    if pairwise not in PAIRWISE_MODES:
        raise ValueError(f"pairwise must be one of {PAIRWISE_MODES}, got {pairwise!r}")
    if anchor.shape[0] == 0:
        return _zero_like_graph(pos, neg)
    a, p, n = (F.normalize(t.float(), dim=-1) for t in (anchor, pos, neg))
    if pairwise == "all":
        return (a @ n.t() - a @ p.t() + 2.0).mean()
    return ((a * n).sum(-1) - (a * p).sum(-1) + 2.0).mean()
