"""Baselines: timm FER classifier, strict user-file loading, pSp encoder layout, ASIT-code classifier."""
from __future__ import annotations

import pytest
import torch

import ifer
from ifer.core.loading import CheckpointError
from ifer.models.baselines import build_timm_backbone
from ifer.models.psp import GradualStyleEncoder
from tests.toy import overfit_steps

pytestmark = pytest.mark.usefixtures("one_thread")


def test_timm_classifier_interface():
    m = ifer.create_model("fer_resnet18_tiny")
    x = torch.randn(3, 3, 64, 64)
    assert m(x).shape == (3, 7) and m.expression_features(x).shape == (3, 96) and m.num_classes == 7
    loss, logs = m.training_loss(x, torch.tensor([0, 5, 6]))
    assert torch.isfinite(loss) and set(logs) == {"loss", "ce", "acc"}
    loss_soft, _ = m.training_loss(x, torch.softmax(torch.randn(3, 7), -1))
    assert torch.isfinite(loss_soft)
    vit = ifer.create_model("fer_timm", backbone="test_vit", img_size=32, num_classes=8)
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 8)


def test_pretrained_path_loads_strictly_and_drops_only_the_classifier(tmp_path):
    src = build_timm_backbone("test_resnet")
    sd = {**src.state_dict(), "fc.weight": torch.zeros(1000, 96), "fc.bias": torch.zeros(1000)}
    good = tmp_path / "good.pt"
    torch.save({"state_dict": sd}, good)
    m = ifer.create_model("fer_resnet18_tiny", pretrained_path=good)
    for k, v in src.state_dict().items():
        assert torch.equal(m.backbone.state_dict()[k], v)
    bad = tmp_path / "bad.pt"
    first = next(iter(src.state_dict()))
    torch.save({k: v for k, v in sd.items() if k != first}, bad)
    with pytest.raises(CheckpointError, match=f"bad.pt.*missing key '{first}'"):
        ifer.create_model("fer_resnet18_tiny", pretrained_path=bad)


def test_overfit_tiny_batch():
    torch.manual_seed(0)
    m = ifer.create_model("fer_resnet18_tiny")
    losses = [step["loss"] for step in overfit_steps(m)]
    assert losses[-1] < 0.5 * losses[0]


def test_psp_encoder_has_psp_layout():
    with torch.device("meta"):  # shapes and names only: no 267 M-parameter allocation
        m = GradualStyleEncoder()
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["input_layer.0.weight"] == (64, 3, 3, 3)
    assert len(m.body) == 24 and "body.23.res_layer.5.fc2.weight" in shapes  # IR-SE50: 3 + 4 + 14 + 3 units
    assert shapes["body.3.shortcut_layer.0.weight"] == (128, 64, 1, 1)
    assert shapes["latlayer1.weight"] == (512, 256, 1, 1) and shapes["latlayer2.weight"] == (512, 128, 1, 1)
    assert len(m.styles) == 18 and shapes["styles.17.linear.weight"] == (512, 512)
    # coarse heads read 16x16 (4 stride-2 convs), fine heads 64x64 (6 convs)
    assert "styles.0.convs.6.weight" in shapes and "styles.0.convs.8.weight" not in shapes
    assert "styles.17.convs.10.weight" in shapes and "styles.17.convs.12.weight" not in shapes
    assert m._taps == (6, 20, 23)  # pSp's hard-coded feature indices


def test_psp_tiny_forward_and_checkpoint(tmp_path):
    m = ifer.create_model("psp_encoder_tiny").eval()
    codes = m(torch.randn(2, 3, 64, 64))
    assert codes.shape == (2, 10, 128)
    ckpt = tmp_path / "psp.pt"
    avg = torch.randn(10, 128)
    torch.save({"state_dict": {f"encoder.{k}": v for k, v in m.state_dict().items()}, "latent_avg": avg}, ckpt)
    other = ifer.create_model("psp_encoder_tiny")
    other.load_psp_checkpoint(ckpt)
    assert torch.equal(other.latent_avg, avg)
    assert torch.allclose(other.eval()(torch.ones(1, 3, 64, 64)), m(torch.ones(1, 3, 64, 64)))


def test_gcvit_asit_code_classifier():
    m = ifer.create_model("fer_gcvit_asit_tiny")
    x = torch.randn(2, 3, 64, 64)
    assert m(x).shape == (2, 7) and m.expression_features(x).shape == (2, 128)
    loss, logs = m.training_loss(x, torch.tensor([1, 2]))
    assert torch.isfinite(loss) and set(logs) == {"loss", "ce", "acc"}
    frozen = ifer.create_model("fer_gcvit_asit_tiny", freeze_encoder=True)
    frozen.training_loss(x, torch.tensor([1, 2]))[0].backward()
    assert all(p.grad is None for p in frozen.encoder.parameters())
