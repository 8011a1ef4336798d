"""Model cost against published figures and hand counts::

    .venv/bin/python -m pytest tests/test_cost.py -q
"""
import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from ifer.bench.cost import gmacs, model_cost, speed


def test_resnet18_at_224_is_the_published_1_8_gmacs_and_11_7m_parameters():
    m = model_cost(resnet18(num_classes=1000), 224)
    assert m["gmacs"] == pytest.approx(1.82, rel=0.01)  # torchvision's model card: 1.81 GFLOPS (MACs)
    assert m["params"] == 11_689_512 and m["trainable"] == m["params"]


def test_a_linear_layer_counts_in_features_times_out_features():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    assert gmacs(net, 8) * 1e9 == pytest.approx(192 * 10)
    net[1].weight.requires_grad_(False)
    assert model_cost(net, 8)["trainable"] == 10


def test_speed_reports_medians_and_ratios_to_the_reference_of_the_same_run():
    torch.manual_seed(0)
    small = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 7))
    s = speed(small, 32, batch=4, warmup=1, iters=3)
    assert s["latency_ms"] > 0 and s["ref_latency_ms"] > 0 and s["images_per_s"] > 0
    assert s["latency_ratio"] == pytest.approx(s["latency_ms"] / s["ref_latency_ms"])
    assert s["throughput_ratio"] == pytest.approx(s["images_per_s"] / s["ref_images_per_s"])
    assert s["fp32_peak_tflops"] > 0
