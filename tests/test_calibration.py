"""Calibration metrics against hand computation and the reliability bins computed independently::

    .venv/bin/python -m pytest tests/test_calibration.py -q
"""
import pytest
import torch

from ifer.metrics.calibration import calibration_metrics, reliability_bins


def test_ece_of_a_hand_computed_case():
    # 2 bins: (0, .5] and (.5, 1]. Top-1 confidences .9 (correct), .6 (wrong: predicts 0, label 1), .7 (correct)
    # all fall in bin 2: accuracy 2/3, mean confidence (0.9 + 0.6 + 0.7) / 3 = 0.7333; ECE = |0.6667 - 0.7333|
    m = calibration_metrics([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]], [0, 1, 1], n_bins=2)
    assert m["ece"] == pytest.approx(abs(2 / 3 - 2.2 / 3), abs=1e-6)
    assert m["mce"] == pytest.approx(m["ece"], abs=1e-6)  # one non-empty bin
    assert m["bins"][0]["count"] == 0 and m["bins"][0]["accuracy"] is None
    assert m["bins"][1] == pytest.approx({"lower": 0.5, "upper": 1.0, "count": 3, "confidence": 2.2 / 3,
                                          "accuracy": 2 / 3})


def test_perfectly_calibrated_and_overconfident_extremes():
    # every prediction right at confidence 1: ECE 0; every prediction wrong at confidence 1: ECE 1
    eye = torch.eye(4)
    assert calibration_metrics(eye, torch.arange(4))["ece"] == pytest.approx(0.0, abs=1e-7)
    assert calibration_metrics(eye, (torch.arange(4) + 1) % 4)["ece"] == pytest.approx(1.0, abs=1e-6)


def test_torchmetrics_ece_equals_the_independent_bin_sum_on_random_predictions():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 7, generator=g), 1)
    labels = torch.randint(0, 7, (500,), generator=g)
    m = calibration_metrics(probs, labels)
    bins = reliability_bins(probs, labels)
    by_hand = sum(b["count"] / 500 * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    worst = max(abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    assert sum(b["count"] for b in bins) == 500
    assert m["ece"] == pytest.approx(by_hand, abs=1e-5) and m["mce"] == pytest.approx(worst, abs=1e-5)


@pytest.mark.parametrize("probs, labels, needle", [
    ([[2.0, -1.0]], [0], "probabilities"), ([[0.5, 0.5]], [2], "labels must lie"),
    ([0.5, 0.5], [0], "must be (N, C)")])
def test_bad_input_is_one_clear_error(probs, labels, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        calibration_metrics(probs, labels)
