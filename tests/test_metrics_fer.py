"""FER metrics on hand-computed cases (ifer.metrics.fer)."""
from __future__ import annotations

import json

import pytest
import torch

from ifer.metrics.fer import PROTOCOL, fer_metrics


def test_hand_computed_indices():
    # labels [0,1,1,1], preds [0,1,1,3], 4 classes (class 2 absent everywhere, class 3 only predicted).
    m = fer_metrics([0, 1, 1, 3], [0, 1, 1, 1], num_classes=4)
    assert m["protocol"] == PROTOCOL
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["per_class_accuracy"] == [1.0, pytest.approx(2 / 3), None, None]
    assert m["mean_class_accuracy"] == pytest.approx((1 + 2 / 3) / 2)  # over classes with labels
    # F1: class0 1, class1 P=1 R=2/3 -> 0.8, class3 0; class2 (no label, no prediction) left out.
    assert m["macro_f1"] == pytest.approx((1 + 0.8 + 0) / 3, rel=1e-6)
    assert m["confusion_matrix"] == [[1, 0, 0, 0], [0, 2, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert m["support"] == [1, 3, 0, 0]
    json.dumps(m)  # plain Python values only


def test_logits_equal_indices():
    logits = torch.tensor([[3.0, 0.1, 0.0], [0.0, 2.0, 1.0], [0.0, 2.0, 1.0], [0.0, 0.0, 5.0]])
    labels = torch.tensor([0, 1, 2, 2])
    assert fer_metrics(logits, labels, 3) == fer_metrics([0, 1, 1, 2], [0, 1, 2, 2], 3)


def test_rejects_out_of_range_and_bad_shapes():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\); found \[-1, 7\]"):
        fer_metrics([0, 1, 2], [7, -1, 0], num_classes=3)
    with pytest.raises(ValueError, match="num_classes=4"):
        fer_metrics(torch.zeros(2, 3), [0, 1], num_classes=4)
    with pytest.raises(ValueError, match="integer class indices"):
        fer_metrics(torch.tensor([0.2, 0.7]), [0, 1], num_classes=2)
