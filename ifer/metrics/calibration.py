"""Calibration of a classifier's confidence, protocol ``calibration_top1_equal_width_v1`` (issue 21, item 4).

* ``ece``: expected calibration error of the top-1 confidence, ``sum_b (n_b / N) * |acc_b - conf_b|`` over
  ``n_bins`` equal-width confidence bins on (0, 1] (bin b holds confidences in ``(b/n, (b+1)/n]``), computed by
  torchmetrics ``multiclass_calibration_error`` (norm ``l1``; 15 bins, the common choice since Guo et al. 2017).
* ``mce``: the maximum ``|acc_b - conf_b|`` over non-empty bins (torchmetrics, norm ``max``).
* ``bins``: the reliability diagram's data, per bin: lower/upper edge, count, mean confidence, accuracy
  (``None`` in an empty bin), computed here independently of torchmetrics; ``tests/test_calibration.py``
  checks that the two agree and both agree with a hand-computed case.

Inputs: ``probs`` (N, C) probabilities (rows summing to 1; pass ``softmax(logits)``), ``labels`` (N,).

    >>> from ifer.metrics.calibration import calibration_metrics
    >>> m = calibration_metrics([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]], [0, 1, 1], n_bins=2)
    >>> round(m["ece"], 4)
    0.0667
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

PROTOCOL = "calibration_top1_equal_width_v1"
DEFAULT_BINS = 15


def _probs(probs, labels) -> tuple[torch.Tensor, torch.Tensor]:
    p = (probs.detach().cpu() if isinstance(probs, torch.Tensor) else torch.as_tensor(probs)).double()
    y = (labels.detach().cpu() if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)).long()
    if p.ndim != 2 or y.ndim != 1 or p.shape[0] != y.shape[0] or p.shape[0] == 0:
        raise ValueError(f"probs must be (N, C) and labels (N,) with N > 0, got {tuple(p.shape)} and {tuple(y.shape)}")
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype), atol=1e-4):
        raise ValueError("probs must be probabilities (non-negative rows summing to 1): pass softmax(logits)")
    if ((y < 0) | (y >= p.shape[1])).any():
        raise ValueError(f"labels must lie in [0, {p.shape[1]})")
    return p, y


def reliability_bins(probs: torch.Tensor | Sequence, labels: torch.Tensor | Sequence,
                     n_bins: int = DEFAULT_BINS) -> list[dict]:
    """Per equal-width confidence bin: edges, count, mean top-1 confidence and accuracy (None when empty)."""
    p, y = _probs(probs, labels)
    conf, pred = p.max(1)
    correct = (pred == y).double()
    # bin b = ceil(conf * n) - 1 puts conf in (b/n, (b+1)/n]; conf > 0 always (rows sum to 1)
    idx = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    out = []
    for b in range(n_bins):
        m = idx == b
        n = int(m.sum())
        out.append({"lower": b / n_bins, "upper": (b + 1) / n_bins, "count": n,
                    "confidence": float(conf[m].mean()) if n else None,
                    "accuracy": float(correct[m].mean()) if n else None})
    return out


def calibration_metrics(probs: torch.Tensor | Sequence, labels: torch.Tensor | Sequence,
                        n_bins: int = DEFAULT_BINS) -> dict:
    """ECE and MCE (torchmetrics) plus the reliability bins; see the module docstring for the definitions."""
    p, y = _probs(probs, labels)
    from torchmetrics.functional.classification import multiclass_calibration_error

    kw = {"num_classes": p.shape[1], "n_bins": n_bins}
    return {"protocol": PROTOCOL, "n_bins": n_bins, "num_samples": int(len(y)),
            "ece": float(multiclass_calibration_error(p.float(), y, norm="l1", **kw)),
            "mce": float(multiclass_calibration_error(p.float(), y, norm="max", **kw)),
            "bins": reliability_bins(p, y, n_bins)}
