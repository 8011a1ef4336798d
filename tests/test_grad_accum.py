"""Gradient accumulation (``fer_methods.<m>.train.grad_accum_steps``): the paper's IFER batch of 32 at 256 px
runs as k micro-batches with one optimizer step, and trains exactly like the undivided batch (issue 10, item 5:
"IFER at batch 32 and 256 px either fits an 80 GB GPU, or gradient accumulation keeps the effective batch").

    OMP_NUM_THREADS=1 python -m pytest tests/test_grad_accum.py -q
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ifer.core.config import Config, ConfigError
from ifer.train.fer import train_fer
from tests.toy import ToyFER, ToyImages

RECIPE = dict(optimizer="adamw", momentum=0.9, epochs=2, cooldown_epochs=0, warmup_epochs=1, lr=3e-3, warmup_lr=1e-4,
              min_lr=1e-5, weight_decay=0.05, batch_size=16, clip_grad=5.0, amp=False, mixup=0.0, cutmix=0.0,
              smoothing=0.1, log_interval=1)


def _run(tmp_path, accum: int):
    torch.manual_seed(0)
    model = ToyFER()
    model.body[3] = torch.nn.Identity()  # dropout masks are drawn per micro-batch, so they differ from one draw
    run = train_fer(model, ToyImages(96, seed=0), ToyImages(30, seed=1), ToyImages(45, seed=2),
                    Config(**RECIPE, grad_accum_steps=accum), tmp_path / f"accum{accum}", seed=0, progress=False)
    logs = [json.loads(line) for line in (run.run_dir / "log.jsonl").read_text().splitlines()]
    return model.state_dict(), run, [r["loss"] for r in logs if r.get("kind") == "train"]


def test_accumulated_micro_batches_train_like_the_whole_batch(tmp_path):
    ref_state, ref_run, ref_losses = _run(tmp_path, 1)
    for k in (2, 4):
        state, run, losses = _run(tmp_path, k)
        assert len(losses) == len(ref_losses) == 12  # same number of optimizer steps: 2 epochs x 96 // 16
        # fp32 sums in another order: equal to rounding, not bit for bit
        assert losses == pytest.approx(ref_losses, rel=1e-5, abs=1e-6)
        for name, ref in ref_state.items():
            torch.testing.assert_close(state[name], ref, rtol=1e-5, atol=1e-6, msg=f"{name} with grad_accum_steps={k}")
        assert run.test["accuracy"] == ref_run.test["accuracy"] and run.best_epoch == ref_run.best_epoch


def test_accumulation_that_does_not_divide_the_batch_is_one_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"grad_accum_steps=3 .*batch_size=16"):
        train_fer(ToyFER(), ToyImages(32), ToyImages(8), ToyImages(8), Config(**RECIPE, grad_accum_steps=3),
                  tmp_path, progress=False)


@pytest.mark.slow  # two torchrun launches of 2 gloo processes (~40 s on 2 cores)
@pytest.mark.ddp
def test_accumulation_under_ddp_matches_one_step_per_batch(tmp_path):
    """Under DDP the first k-1 micro-batches skip the all-reduce (no_sync); the weights after training equal the
    run without accumulation."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    states = []
    for k in (1, 2):
        out = tmp_path / f"accum{k}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(root / "tests" / "ddp_worker.py"), str(out), str(k)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        states.append(torch.load(out / "best.pt", map_location="cpu", weights_only=True)["model"])
    for name, ref in states[0].items():
        torch.testing.assert_close(states[1][name], ref, rtol=1e-5, atol=1e-6, msg=name)
