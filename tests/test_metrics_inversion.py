"""Inversion metrics and the LPIPS loading plumbing (ifer.metrics.inversion, ifer.losses.reconstruction)."""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ifer.metrics.inversion import evaluate_inversion, evaluate_tensors, pair_by_name
from ifer.metrics.lpips import LPIPSLoss

REAL_ALEXNET = Path(os.environ.get("IFER_ALEXNET_WEIGHTS", "weights/alexnet-owt-7be5be79.pth"))


def _reference_lpips(alexnet_file: Path, torch_home: Path):
    """The lpips package's own path: torchvision finds the AlexNet file in $TORCH_HOME/hub/checkpoints."""
    import lpips

    ckpt_dir = torch_home / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    target = ckpt_dir / "alexnet-owt-7be5be79.pth"
    if not target.exists():
        target.symlink_to(alexnet_file.resolve())
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(torch_home)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return lpips.LPIPS(net="alex", version="0.1", verbose=False).eval()
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME")
        else:
            os.environ["TORCH_HOME"] = old


def _pair(seed: int = 0, n: int = 2):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 64, 64, generator=g) * 2 - 1
    return (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1), x


def test_lpips_loading_plumbing_with_random_alexnet(tmp_path):
    import torchvision

    torch.manual_seed(0)
    alexnet_file = tmp_path / "random_alexnet.pth"
    torch.save(torchvision.models.alexnet().state_dict(), alexnet_file)
    ours = LPIPSLoss(alexnet_file, verify_hash=False)
    ref = _reference_lpips(alexnet_file, tmp_path / "torch_home")
    pred, gt = _pair()
    with torch.no_grad():
        torch.testing.assert_close(ours.per_image(pred, gt), ref(pred, gt).flatten(), atol=1e-6, rtol=0)
    # The published hash prefix is enforced by default: a random file is refused.
    with pytest.raises(ValueError, match="does not match"):
        LPIPSLoss(alexnet_file)


@pytest.mark.skipif(not REAL_ALEXNET.is_file(),
                    reason=f"needs the torchvision AlexNet file alexnet-owt-7be5be79.pth ({REAL_ALEXNET} missing; "
                           "set IFER_ALEXNET_WEIGHTS)")
def test_lpips_parity_with_lpips_package(tmp_path):
    ref = _reference_lpips(REAL_ALEXNET, tmp_path / "torch_home")
    pred, gt = _pair(1, 4)
    pred, gt = (torch.nn.functional.interpolate(t, size=256, mode="bilinear") for t in (pred, gt))
    ours = evaluate_tensors(pred, gt, metrics=["lpips"], lpips_backbone=REAL_ALEXNET)
    with torch.no_grad():
        expected = ref(pred, gt).flatten()
    got = torch.tensor([r["lpips_alex_v0.1_256"] for r in ours["rows"]])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_hand_computed_mse_psnr_ssim():
    gt = torch.zeros(2, 3, 32, 32)
    out = evaluate_tensors(gt + 0.5, gt, metrics=["mse", "psnr", "ssim"])
    s = out["summary"]
    assert s["mse_256_pm1"] == pytest.approx(0.25)
    # In [0,1] the error is 0.25 -> MSE 1/16 -> PSNR = 10 log10(16).
    assert s["psnr_rgb01_dr1"] == pytest.approx(10 * math.log10(16), rel=1e-5)
    assert evaluate_tensors(gt, gt, metrics=["ssim"])["summary"]["ssim_torchmetrics_gauss11_rgb01_dr1"] == \
        pytest.approx(1.0)
    assert out["n_images"] == 2 and out["std"]["mse_256_pm1"] == pytest.approx(0.0)
    assert set(out["protocol"]) == {"mse_256_pm1", "psnr_rgb01_dr1", "ssim_torchmetrics_gauss11_rgb01_dr1"}


def test_missing_assets_are_reported_not_invented():
    pred, gt = _pair()
    s = evaluate_tensors(pred, gt, metrics=["mse", "lpips", "id_sim", "fid"])["summary"]
    assert isinstance(s["mse_256_pm1"], float)
    assert s["lpips_alex_v0.1_256"].startswith("unavailable:") and "alexnet-owt-7be5be79.pth" in s["lpips_alex_v0.1_256"]
    assert s["id_sim_curricularface_ir101"].startswith("unavailable:") and \
        "CurricularFace_Backbone.pth" in s["id_sim_curricularface_ir101"]
    none = evaluate_tensors(pred, gt, metrics=["id_sim"], id_embedder="none")["summary"]["id_sim_none"]
    assert none.startswith("unavailable:")
    fid = s["fid_inception2048_tf1bilinear_uint8"]
    assert fid.startswith("unavailable:") and ("torch-fidelity" in fid or "weights-inception" in fid)


def _write(folder: Path, name: str, seed: int, size: int = 48) -> None:
    folder.mkdir(exist_ok=True)
    # Smooth content (upsampled 4x4 colours) so that JPEG barely changes it.
    arr = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(arr).resize((size, size), Image.BILINEAR).save(folder / name, quality=95)


def test_directory_pairing_by_name(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for i, name in enumerate(["b", "a", "c"]):
        _write(pred, f"{name}.png", i)
        _write(gt, f"{name}.jpg", i)  # .png results pair with .jpg ground truths
    _write(gt, "z.jpg", 9)
    with pytest.raises(ValueError, match=r"0 only in .*pred.*1 only in .*gt \['z'\]"):
        pair_by_name(pred, gt)
    (gt / "z.jpg").unlink()
    out = evaluate_inversion(pred, gt, metrics=["mse", "ssim", "psnr", "id_sim"], id_embedder="offline_sface_opencv",
                             batch_size=2)
    assert [r["name"] for r in out["rows"]] == ["a", "b", "c"]
    assert out["n_images"] == 3 and out["image_size"] == 256
    assert 0 <= out["summary"]["mse_256_pm1"] < 0.01  # JPEG vs PNG of the same pixels
    assert out["summary"]["id_sim_offline_sface_opencv"] > 0.9
    json.dumps(out)
