"""ASIT trainer: resumes after a kill to the identical result, stops on NaN keeping the last checkpoint, and
runs under torchrun (gloo, 2 processes) with rank 0 alone writing::

    .venv/bin/python -m pytest tests/test_train_asit.py -q
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from ifer.core.config import Config
from ifer.train.asit import ASITLosses, train_asit
from ifer.train.checkpoint import NonFiniteLossError

CFG = Config(optimizer="ranger", lr=1e-3, d_lr=1e-3, batch_size=4, steps=6, log_interval=2, val_interval=3,
             save_interval=2, grad_clip=0.0)
LAMBDAS = {"l2": 1.0, "lpips": 0.0, "id": 0.0, "adv": 1e-4, "dist": 0.01}


def _images(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1  # smooth 64-px images in [-1, 1]
    return TensorDataset(torch.nn.functional.interpolate(low, size=64, mode="bilinear", align_corners=False))


def _build(seed: int = 0):
    from ifer.models.registry import create_model

    torch.manual_seed(seed)
    net = create_model("asit_tiny", mode="as_described", train_decoder=True)
    net.init_latent_avg(256, seed=seed)
    disc = create_model("inversion_disc_64_tiny", quirks="as_described")
    return net, disc


class _NaNAfter(ASITLosses):
    """Reconstruction loss that turns NaN from call ``after`` on (a diverging run)."""

    def __init__(self, after: int):
        super().__init__(LAMBDAS, None, None)
        self.calls, self.after = 0, after

    def reconstruction(self, y_hat, x):
        total, terms = super().reconstruction(y_hat, x)
        self.calls += 1
        return (total * float("nan"), terms) if self.calls > self.after else (total, terms)


def _run(run_dir, **kw):
    net, disc = _build()
    out = train_asit(net, disc, ASITLosses(LAMBDAS, None, None), _images(12, 0), _images(4, 1), CFG, run_dir,
                     seed=5, progress=False, **kw)
    return out, net


@pytest.mark.slow
def test_resume_after_interruption_gives_identical_result(tmp_path):
    full, net_full = _run(tmp_path / "full")
    cut, _ = _run(tmp_path / "cut", stop_after_steps=4)
    assert cut is None and json.loads((tmp_path / "cut" / "log.jsonl").read_text().splitlines()[-1])["kind"] != "resume"
    torch.manual_seed(999)  # process RNG state after the restart must not matter
    resumed, net_resumed = _run(tmp_path / "cut")
    kinds = [json.loads(x)["kind"] for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert "resume" in kinds
    assert resumed == full and full["steps"] == 6 and len(full["history"]) == 2
    a, b = net_full.state_dict(), net_resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    net, disc = _build()
    # validation also calls reconstruction (at step 3): calls 1-3 train, 4 validation, 5 train, then NaN
    losses = _NaNAfter(after=5)
    with pytest.raises(NonFiniteLossError, match="last.pt is kept"):
        train_asit(net, disc, losses, _images(12, 0), _images(4, 1), CFG, tmp_path, seed=5, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["net"].values() if v.is_floating_point())


@pytest.mark.slow
@pytest.mark.ddp
def test_torchrun_two_process_gloo(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(root / "tests" / "ddp_worker_asit.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 6 and result["params_equal_across_ranks"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt", "log.jsonl", "prev.pt", "result.json"]
