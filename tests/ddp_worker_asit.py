"""Run by tests/test_train_asit.py under torchrun: 6 ASIT steps with DDP (gloo); rank 0 reports."""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ifer.train.asit import ASITLosses, train_asit  # noqa: E402
from ifer.train.distributed import distributed_context  # noqa: E402
from tests.test_train_asit import CFG, LAMBDAS, _build, _images  # noqa: E402

if __name__ == "__main__":
    out = Path(sys.argv[1])
    with distributed_context("cpu") as info:
        net, disc = _build()  # same seed on every rank; DDP also broadcasts rank 0's weights
        summary = train_asit(net, disc, ASITLosses(LAMBDAS, None, None), _images(12, 0), _images(4, 1), CFG, out,
                             info=info, seed=5, progress=False)
        flat = torch.cat([p.detach().flatten() for p in net.encoder.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(info.world_size)]
        dist.all_gather(gathered, flat)
        if info.is_main:
            (out / "result.json").write_text(json.dumps({
                "world_size": info.world_size, "steps": summary["steps"],
                "params_equal_across_ranks": all(torch.equal(gathered[0], t) for t in gathered[1:])}))
