"""FER trainer: learns, resumes after a kill to the identical result, stops on NaN keeping the last checkpoint."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ifer.core.config import Config
from ifer.core.quirks import get_quirks
from ifer.train.checkpoint import NonFiniteLossError
from ifer.train.fer import schedule_updates_per_epoch, train_fer
from tests.toy import ToyFER, ToyImages

RECIPE = Config(optimizer="adamw", momentum=0.9, epochs=4, cooldown_epochs=0, warmup_epochs=1, lr=3e-3, warmup_lr=1e-4,
                min_lr=1e-5, weight_decay=0.05, batch_size=16, clip_grad=5.0, amp=False, mixup=0.0, cutmix=0.0,
                smoothing=0.1, log_interval=5)


def _data():
    return ToyImages(96, seed=0), ToyImages(30, seed=1), ToyImages(45, seed=2)


def test_learns_and_selects_on_val(tmp_path):
    torch.manual_seed(0)
    run = train_fer(ToyFER(), *_data(), RECIPE, tmp_path, seed=0, progress=False)
    assert run.selection_split == "val" and run.test["accuracy"] > 0.8
    assert len(run.history) == 4 and (tmp_path / "best.pt").is_file() and not (tmp_path / "last.pt").exists()
    events = [json.loads(x)["kind"] for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert events.count("epoch") == 4 and events[-1] == "test"


def test_resume_after_interruption_gives_identical_result(tmp_path):
    torch.manual_seed(0)
    full = train_fer(ToyFER(), *_data(), RECIPE, tmp_path / "full", seed=3, progress=False)
    torch.manual_seed(0)
    assert train_fer(ToyFER(), *_data(), RECIPE, tmp_path / "cut", seed=3, progress=False, stop_after_epochs=2) is None
    torch.manual_seed(123)  # a different process state must not matter after resuming
    resumed = train_fer(ToyFER(), *_data(), RECIPE, tmp_path / "cut", seed=3, progress=False)
    assert resumed.test == full.test and resumed.history == full.history
    a = torch.load(tmp_path / "full" / "best.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = ToyFER(nan_after=8)  # 6 batches per epoch: epoch 0 completes, epoch 1 hits NaN
    with pytest.raises(NonFiniteLossError, match="last.pt is kept"):
        train_fer(model, *_data(), RECIPE, tmp_path, seed=0, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 0 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_schedule_length_quirk():
    assert schedule_updates_per_epoch(12271, 16, 2, get_quirks("as_described")) == 12271 // 32
    assert schedule_updates_per_epoch(12271, 16, 2, get_quirks("as_released")) == 1_281_167 // 32


def test_max_steps_per_epoch_caps_each_epoch_and_resumes_exactly(tmp_path):
    """The rehearsal's length cut: 2 of the 6 full batches per epoch, counted in the schedule too; a run stopped
    after epoch 2 resumes to the uninterrupted run's result; a bad value is one ConfigError."""
    from ifer.core.config import ConfigError

    capped = RECIPE.__class__({**RECIPE, "max_steps_per_epoch": 2})
    assert schedule_updates_per_epoch(96, 16, 1, get_quirks("as_described"), 2) == 2
    assert schedule_updates_per_epoch(96, 16, 1, get_quirks("as_described"), 50) == 6
    assert schedule_updates_per_epoch(96, 16, 1, get_quirks("as_released"), 2) == 1_281_167 // 16
    torch.manual_seed(0)
    full = train_fer(ToyFER(), *_data(), capped, tmp_path / "full", seed=3, progress=False)
    assert [r["step"] for r in full.history] == [2, 4, 6, 8]
    torch.manual_seed(0)
    assert train_fer(ToyFER(), *_data(), capped, tmp_path / "cut", seed=3, progress=False, stop_after_epochs=2) is None
    torch.manual_seed(123)
    resumed = train_fer(ToyFER(), *_data(), capped, tmp_path / "cut", seed=3, progress=False)
    assert resumed.test == full.test and resumed.history == full.history
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="max_steps_per_epoch"):
            train_fer(ToyFER(), *_data(), RECIPE.__class__({**RECIPE, "max_steps_per_epoch": bad}), tmp_path / "x",
                      progress=False)


def test_model_selection_on_test_is_recorded(tmp_path):
    torch.manual_seed(0)
    run = train_fer(ToyFER(), *_data(), RECIPE.__class__({**RECIPE, "epochs": 1}), tmp_path, seed=0, progress=False,
                    model_selection="test")
    assert run.selection_split == "test" and "test_accuracy" in run.history[0]
    with pytest.raises(ValueError, match="model_selection"):
        train_fer(ToyFER(), *_data(), RECIPE, tmp_path / "x", model_selection="train", progress=False)


@pytest.mark.ddp
def test_torchrun_two_process_gloo(tmp_path):
    """2 CPU processes under torchrun (gloo): rank 0 alone writes logs/checkpoints; the run learns."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(root / "tests" / "ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2 and result["test_accuracy"] > 0.7
    # the finished run keeps best.pt; its resume state (last.pt, prev.pt) is dropped (keep_resume_state: false)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "log.jsonl", "result.json"]


def test_finished_run_drops_its_resume_state_unless_kept(tmp_path):
    """last.pt/prev.pt hold the optimizer state (3x the weights: 3.2 GB for ifer_base); nothing reads them once
    the run is finished, so they go (issue 10: the paper rehearsal wrote tens of GB), unless keep_resume_state."""
    torch.manual_seed(0)
    dropped = train_fer(ToyFER(), *_data(), RECIPE, tmp_path / "a", seed=0, progress=False)
    assert not (tmp_path / "a" / "last.pt").exists() and not (tmp_path / "a" / "prev.pt").exists()
    assert (tmp_path / "a" / "best.pt").is_file()
    torch.manual_seed(0)
    kept = train_fer(ToyFER(), *_data(), Config({**RECIPE, "keep_resume_state": True}), tmp_path / "b", seed=0,
                     progress=False)
    assert (tmp_path / "b" / "last.pt").is_file() and (tmp_path / "b" / "prev.pt").is_file()
    assert dropped.test == kept.test


def test_float16_amp_runs_as_bfloat16_on_cpu_and_says_so(tmp_path):
    """The released recipe's fp16 AMP (a GPU setting) has no fast CPU kernels: one ifer_base step took ~180 s in
    fp16 against ~2.5 s in bf16, which stalled the rehearsal of the released protocol. On a CPU it runs as
    ``amp_dtype_cpu`` (bf16), logged; ``amp_dtype_cpu: float16`` keeps fp16 (with its GradScaler)."""
    from ifer.train.fer import resolve_amp_dtype

    fp16 = Config({**RECIPE, "amp": True, "amp_dtype": "float16", "epochs": 1})
    assert resolve_amp_dtype(fp16, torch.device("cpu")) == torch.bfloat16
    assert resolve_amp_dtype(fp16, torch.device("cuda")) == torch.float16
    assert resolve_amp_dtype(Config({**fp16, "amp_dtype_cpu": "float16"}), torch.device("cpu")) == torch.float16
    torch.manual_seed(0)
    train_fer(ToyFER(), *_data(), fp16, tmp_path, seed=0, progress=False)
    events = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    amp = [e for e in events if e["kind"] == "amp"]
    # bf16 where the CPU has it natively; elsewhere emulated bf16 is slower than fp32, so fp32 (also logged)
    from ifer.core.machine import native_bf16

    assert len(amp) == 1 and amp[0]["requested"] == "float16"
    assert amp[0]["used"] == ("bfloat16" if native_bf16() else "float32"), amp[0]
