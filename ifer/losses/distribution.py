"""Distribution-alignment loss (``criteria/distribute_loss.py``), after Ojha et al. CVPR'21's
cross-domain relational loss: pairwise cosine similarities between samples, row-softmaxed, then
``KL(softmax_source || softmax_target)`` via ``nn.KLDivLoss()`` ('mean' over matrix entries).

* source: StyleGAN2 features for random z (computed without gradient);
* target: the encoder's ``t_fea`` list, for ASIT ``[B,512,64,64], [B,512,32,32], [B,512,16,16]``.

Two protocols (pick with ``quirks.distribution_two_samples``):

``distribution_loss_as_released``
    The released function, numerically identical. It draws ``feat_ind ~ randint(0, L, 3)`` THEN
    ``batch_ind ~ randint(0, 2, 3)``; anchor ``i`` (level ``feat_ind[i]``, sample ``batch_ind[i]``) is
    compared with the samples ``batch_ind[j]`` of the anchors ``j`` whose batch index differs, filling
    row ``i`` of a 3x2 matrix left to right; unfilled entries stay 0 and still enter the softmax. Only
    samples 0 and 1 are ever used, and when all three ``batch_ind`` agree (25% of draws) the loss is
    exactly 0 with no graph. The official code draws from numpy's global, unseeded RNG; here the caller
    passes a ``numpy.random.RandomState`` (``RandomState(s)`` gives the same draws as ``np.random.seed(s)``).
    The official code draws levels from ``randint(0, feat_const_batch)``; that equals ``L`` (=3) for ASIT.

``distribution_loss_all_pairs`` (as described)
    Every sample is an anchor against every other sample, at every level; B x (B-1) matrices,
    ``log_softmax`` for the target, KL 'mean' per level, averaged over levels. No RNG, always a graph.

    >>> import numpy as np, torch
    >>> from ifer.losses.distribution import distribution_loss_all_pairs, distribution_loss_as_released
    >>> src = [torch.randn(4, 8, 4, 4)]; tgt = [torch.randn(4, 8, 4, 4, requires_grad=True)]
    >>> distribution_loss_all_pairs(src, tgt).requires_grad
    True
    >>> float(distribution_loss_as_released(src, tgt, np.random.RandomState(0))) >= 0
    True
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ifer.core.quirks import Quirks


def _kl_mean(log_q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``nn.KLDivLoss()`` ('mean' over all entries), the released reduction, without torch's deprecation notice."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="reduction: 'mean' divides")
        return F.kl_div(log_q, p, reduction="mean")


def _relation_matrix(feats: Sequence[torch.Tensor], feat_ind: np.ndarray, batch_ind: np.ndarray) -> torch.Tensor:
    """The released 3x2 cosine matrix (unfilled entries 0), built entry by entry as the official code does."""
    n = len(batch_ind)
    dist = feats[0].new_zeros((n, n - 1))
    for i in range(n):
        col = 0
        for j in range(n):
            if batch_ind[i] != batch_ind[j]:
                level = feats[feat_ind[i]]
                anchor = level[batch_ind[i]].reshape(1, -1)
                other = level[batch_ind[j]].reshape(1, -1)
                dist[i, col] = F.cosine_similarity(anchor, other, dim=1, eps=1e-8)[0]
                col += 1
    return dist


def draw_released_indices(rng: np.random.RandomState, n_levels: int, batch: int = 2,
                          feat_const_batch: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The released draw order: ``feat_ind`` first, then ``batch_ind``."""
    feat_ind = rng.randint(0, n_levels, size=feat_const_batch)
    batch_ind = rng.randint(0, batch, size=feat_const_batch)
    return feat_ind, batch_ind


def distribution_loss_as_released(feat_source: Sequence[torch.Tensor], feat_target: Sequence[torch.Tensor],
                                  rng: np.random.RandomState, batch: int = 2, feat_const_batch: int = 3,
                                  kl_wt: float = 1.0) -> torch.Tensor:
    """The official ``distribution_loss`` (defaults ``batch=2, feat_const_batch=3, kl_wt=1``), seeded."""
    feat_ind, batch_ind = draw_released_indices(rng, len(feat_target), batch, feat_const_batch)
    if (batch_ind == batch_ind[0]).all():
        # Nothing is filled: both rows are uniform and the KL is exactly 0, with no graph (as released).
        return feat_target[0].new_zeros(())
    with torch.no_grad():
        dist_source = torch.softmax(_relation_matrix(feat_source, feat_ind, batch_ind), dim=1)
    dist_target = torch.softmax(_relation_matrix(feat_target, feat_ind, batch_ind), dim=1)
    # log(softmax) rather than log_softmax: bit-identical to the released numerics.
    return kl_wt * _kl_mean(torch.log(dist_target), dist_source)


def _cosine_matrix_off_diagonal(feats: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, B-1) cosines of each sample with every other sample, in index order."""
    flat = F.normalize(feats.flatten(1), dim=1, eps=1e-8)
    sims = flat @ flat.T
    b = sims.shape[0]
    off_diagonal = ~torch.eye(b, dtype=torch.bool, device=sims.device)
    return sims[off_diagonal].reshape(b, b - 1)


def distribution_loss_all_pairs(feat_source: Sequence[torch.Tensor], feat_target: Sequence[torch.Tensor],
                                kl_wt: float = 1.0) -> torch.Tensor:
    """As described: all B samples, every level, KL('mean') of row-softmaxed relation matrices, level-averaged."""
    if len(feat_source) != len(feat_target):
        raise ValueError(f"source has {len(feat_source)} feature levels, target {len(feat_target)}")
    losses = []
    for src, tgt in zip(feat_source, feat_target):
        if src.shape[0] != tgt.shape[0] or tgt.shape[0] < 2:
            raise ValueError(f"need equal batch sizes >= 2, got source {src.shape[0]} and target {tgt.shape[0]}")
        with torch.no_grad():
            p_source = torch.softmax(_cosine_matrix_off_diagonal(src), dim=1)
        log_p_target = torch.log_softmax(_cosine_matrix_off_diagonal(tgt), dim=1)
        losses.append(_kl_mean(log_p_target, p_source))
    return kl_wt * torch.stack(losses).mean()


def distribution_loss(feat_source: Sequence[torch.Tensor], feat_target: Sequence[torch.Tensor], quirks: Quirks,
                      rng: np.random.RandomState | None = None, kl_wt: float = 1.0) -> torch.Tensor:
    """Dispatch on ``quirks.distribution_two_samples``; the released protocol needs a seeded ``rng``."""
    if quirks.distribution_two_samples:
        if rng is None:
            raise ValueError("the as-released distribution loss draws indices: pass rng=np.random.RandomState(seed)")
        return distribution_loss_as_released(feat_source, feat_target, rng, kl_wt=kl_wt)
    return distribution_loss_all_pairs(feat_source, feat_target, kl_wt=kl_wt)
