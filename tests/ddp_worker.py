"""Run by tests/test_train_fer.py under torchrun: train the toy model with DDP (gloo) and report from rank 0.

An optional second argument sets ``grad_accum_steps`` (tests/test_grad_accum.py)."""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ifer.core.config import Config  # noqa: E402
from ifer.train.distributed import distributed_context  # noqa: E402
from ifer.train.fer import train_fer  # noqa: E402
from tests.toy import ToyFER, ToyImages  # noqa: E402

if __name__ == "__main__":
    out = Path(sys.argv[1])
    recipe = Config(optimizer="adamw", momentum=0.9, epochs=3, cooldown_epochs=0, warmup_epochs=1, lr=3e-3,
                    warmup_lr=1e-4, min_lr=1e-5, weight_decay=0.05, batch_size=8, clip_grad=5.0, amp=False,
                    mixup=0.0, cutmix=0.0, smoothing=0.0, log_interval=5,
                    grad_accum_steps=int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    with distributed_context("cpu") as info:
        torch.manual_seed(0)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
        run = train_fer(ToyFER(), ToyImages(96, seed=0), ToyImages(30, seed=1), ToyImages(45, seed=2), recipe, out,
                        info=info, seed=0, progress=False)
        if info.is_main:
            (out / "result.json").write_text(json.dumps({"world_size": info.world_size,
                                                         "test_accuracy": run.test["accuracy"]}))
