"""IFER (official ``scripts/ifer.py: ifer_model``): layout, official parity, losses, checkpoints, MACs.

``tests/data/golden/ifer_base_as_released.safetensors`` holds the official outputs (styles, structure code,
subsampled features, logits) for ``deterministic_init_(ifer_base, seed=11)`` on a seeded (2, 3, 256, 256)
input, produced in a scratch venv (timm 0.5.4, torch 2.14.1 CPU fp32).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import ifer
from ifer.bench.init import deterministic_init_
from ifer.core.loading import CheckpointError, first_mismatch
from ifer.losses.classification import classification_loss
from ifer.models.asit import build_encoder
from ifer.models.ifer import IFER, IFERLatentOnly

DATA = Path(__file__).parent / "data"
# Parity tolerance vs the official code (fp32 CPU). Not bitwise: other CPU kernels sum in another order. Measured
# max abs diff 2.0e-5 (ifer_base, 31 GC ViT blocks) on AMD EPYC AVX512, torch 2.14.1; 1e-4 leaves 5x headroom.
ATOL = RTOL = 1e-4


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_ifer_base_param_count_and_official_keys():
    with torch.device("meta"):
        net = ifer.create_model("ifer_base")
    assert n_params(net) == 268_720_655
    assert n_params(net) - n_params(net.feature_model) == 2_888_199
    ref = json.loads((DATA / "official_keys" / "ifer_base.json").read_text())
    assert [(k, list(v.shape)) for k, v in net.state_dict().items()] == list(ref.items())


def test_ifer_base_meta_roundtrip_and_latent_only():
    with torch.device("meta"):
        a, b = ifer.create_model("ifer_base"), ifer.create_model("ifer_base")
        lat = ifer.create_model("ifer_latent_only_base", num_classes=8)
    assert first_mismatch(b.state_dict(), a.state_dict()) is None
    b.load_state_dict(a.state_dict(), strict=True)
    assert lat.head.weight.shape == (8, 512)


@pytest.mark.slow
def test_ifer_base_matches_official():
    golden = load_file(DATA / "golden" / "ifer_base_as_released.safetensors")
    with torch.device("meta"):
        net = ifer.create_model("ifer_base", mode="as_released")
    net = deterministic_init_(net.to_empty(device="cpu"), seed=11).eval()
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(4321))
    with torch.no_grad():
        styles, structure, feats = net.feature_model(x)
        logits = net.head(net.fuse(styles, structure))
    out = {"styles": styles, "structure": structure, "logits": logits}
    for i, f in enumerate(feats):
        out[f"feature{i}_sub"] = f[:, :16, ::8, ::8]
        out[f"feature{i}_mean"] = f.mean(dim=(2, 3))
    for k, ref in golden.items():
        torch.testing.assert_close(out[k], ref, atol=ATOL, rtol=RTOL, msg=f"{k} differs from the official code")


@pytest.fixture(scope="module")
def tiny() -> IFER:
    return deterministic_init_(ifer.create_model("ifer_tiny", num_classes=5), seed=2).eval()


def test_ifer_tiny_outputs(tiny):
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, feats = tiny(x), tiny.expression_features(x)
        styles, structure, _ = tiny.feature_model(x)
    assert logits.shape == (3, 5) and feats.shape == (3, 128)
    torch.testing.assert_close(logits, tiny.head(feats))
    # the modulation uses the mean W+ code (no latent_avg): changing it changes the features
    with torch.no_grad():
        other = tiny.fuse(styles + 1.0, structure)
    assert (other - feats).abs().max() > 1e-4


def test_training_loss_hard_and_soft(tiny):
    x = torch.randn(2, 3, 64, 64)
    y = torch.tensor([1, 4])
    hard = tiny.training_loss(x, y)
    with torch.no_grad():
        logits = tiny(x)
    torch.testing.assert_close(classification_loss(logits, F.one_hot(y, 5).float()), F.cross_entropy(logits, y))
    assert hard.ndim == 0 and hard.requires_grad


def test_latent_only_variant():
    net = IFERLatentOnly(build_encoder("tiny"), num_classes=3).eval()
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_timm_checkpoint_with_namespace_loads(tmp_path, tiny):
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 3, "arch": "ifer_tiny", "state_dict": tiny.state_dict(),
                "args": argparse.Namespace(lr=1e-4, num_classes=5), "metric": 0.5}, path)
    net = ifer.create_model("ifer_tiny", num_classes=5, checkpoint_path=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x), tiny(x))


def test_wrong_and_truncated_checkpoints(tmp_path, tiny):
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": tiny.state_dict()}, path)
    with torch.device("meta"):
        base = ifer.create_model("ifer_base")
    with pytest.raises(CheckpointError) as e:
        base.load_checkpoint(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value) and "feature_model." in str(e.value)
    with pytest.raises(CheckpointError, match="head"):
        ifer.create_model("ifer_tiny", num_classes=7).load_checkpoint(path)  # 5-class head into a 7-class model
    broken = tmp_path / "cut.pth"
    broken.write_bytes(path.read_bytes()[:2048])
    with pytest.raises(CheckpointError, match="cut.pth"):
        tiny.load_checkpoint(broken)


def test_from_asit_checkpoint(tmp_path):
    asit = deterministic_init_(ifer.create_model("asit_tiny").encoder, seed=9)
    src = ifer.create_model("asit_tiny")
    src.encoder.load_state_dict(asit.state_dict())
    src.init_latent_avg(256)
    path = tmp_path / "asit.pt"
    src.save_checkpoint(path)
    net = IFER.from_asit_checkpoint(path, num_classes=4, size="tiny")
    assert all(torch.equal(a, b) for a, b in zip(net.feature_model.state_dict().values(), asit.state_dict().values()))
    assert net.head.out_features == 4
    torch.save({"state_dict": {"decoder.x": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt"):
        IFER.from_asit_checkpoint(tmp_path / "bad.pt", size="tiny")


@pytest.mark.slow
def test_macs_match_official_fvcore_counts():
    import fvcore.nn as fvcore  # a declared dev dependency: a broken install fails, never skips
    with torch.device("meta"):
        net = ifer.create_model("ifer_base")
    net = deterministic_init_(net.to_empty(device="cpu"), seed=0).eval()
    x = torch.zeros(1, 3, 256, 256)
    with torch.no_grad():
        enc = fvcore.FlopCountAnalysis(net.feature_model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        enc_g = enc.total() / 1e9
        full = fvcore.FlopCountAnalysis(net, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        full_g = full.total() / 1e9
    assert enc_g == pytest.approx(64.3, rel=0.02), enc_g
    assert full_g == pytest.approx(63.9, rel=0.02), full_g
