"""Expression-recognition metrics, protocol ``fer_torchmetrics_multiclass_v1``.

* ``accuracy``: top-1 over all samples (torchmetrics ``multiclass_accuracy``, average='micro').
* ``mean_class_accuracy`` (balanced accuracy): mean over classes **present in the labels** of the
  per-class recall ``C[c, c] / sum_k C[c, k]`` (the sklearn ``balanced_accuracy_score`` convention).
* ``per_class_accuracy``: that recall per class, ``None`` for classes absent from the labels.
* ``macro_f1``: torchmetrics ``multiclass_f1_score`` average='macro' (classes with no label and no
  prediction are left out of the mean; a class predicted but never labelled counts with F1 = 0).
* ``confusion_matrix``: rows = true class, columns = predicted class.

Inputs: ``preds`` as (N, C) logits/scores (argmax is taken) or (N,) class indices; ``labels`` (N,).
Every value is a plain float/list, ready for JSON.

    >>> from ifer.metrics.fer import fer_metrics
    >>> m = fer_metrics([0, 1, 1, 2], [0, 1, 2, 2], num_classes=3)
    >>> m["accuracy"], m["mean_class_accuracy"]
    (0.75, 0.8333333333333334)
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

PROTOCOL = "fer_torchmetrics_multiclass_v1"


def _as_tensor(x: torch.Tensor | Sequence) -> torch.Tensor:
    return x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(x)


def _to_class_indices(preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    if preds.ndim == 2:
        if preds.shape[1] != num_classes:
            raise ValueError(f"logits have {preds.shape[1]} columns but num_classes={num_classes}")
        return preds.argmax(dim=1)
    if preds.ndim != 1:
        raise ValueError(f"preds must be (N, C) logits or (N,) class indices, got shape {tuple(preds.shape)}")
    if preds.is_floating_point():
        raise ValueError("1-D preds must be integer class indices (pass (N, C) logits for scores)")
    return preds.long()


def _check_range(values: torch.Tensor, num_classes: int, what: str) -> None:
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.numel():
        raise ValueError(f"{what} must lie in [0, {num_classes}); found {sorted(set(bad.tolist()))[:10]}")


def fer_metrics(preds: torch.Tensor | Sequence, labels: torch.Tensor | Sequence, num_classes: int) -> dict:
    """All FER metrics for one evaluation; see the module docstring for the exact definitions."""
    preds_t = _to_class_indices(_as_tensor(preds), num_classes)
    labels_t = _as_tensor(labels).long()
    if labels_t.ndim != 1 or labels_t.shape != preds_t.shape:
        raise ValueError(f"labels must be (N,) matching preds, got {tuple(labels_t.shape)} vs {tuple(preds_t.shape)}")
    if labels_t.numel() == 0:
        raise ValueError("no samples to evaluate")
    _check_range(labels_t, num_classes, "labels")
    _check_range(preds_t, num_classes, "predicted classes")

    # imported here: torchmetrics' package import costs ~2.5 s per process (2-core CPU), paid only when scoring
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_confusion_matrix,
        multiclass_f1_score,
    )

    cm = multiclass_confusion_matrix(preds_t, labels_t, num_classes=num_classes)
    cm_f = cm.double()  # float64 so 2/3 prints as 0.666..., not a float32 artefact
    support = cm.sum(dim=1)
    per_class = [float(cm_f[c, c] / support[c]) if support[c] > 0 else None for c in range(num_classes)]
    present = [a for a in per_class if a is not None]
    return {
        "protocol": PROTOCOL,
        "num_samples": int(labels_t.numel()),
        "num_classes": num_classes,
        "accuracy": float(multiclass_accuracy(preds_t, labels_t, num_classes=num_classes, average="micro")),
        "mean_class_accuracy": sum(present) / len(present),
        "macro_f1": float(multiclass_f1_score(preds_t, labels_t, num_classes=num_classes, average="macro")),
        "per_class_accuracy": per_class,
        "support": support.tolist(),
        "confusion_matrix": cm.tolist(),
    }
