"""Multi-rank invert / eval-inversion / eval-fer: each test image scored exactly once, same numbers as one process.

Guards the breakage "`invert` and `eval-*` are not rank-aware: every rank writes every file, and nothing is sharded
or gathered" (issue 10), and that `launcher.nproc_per_node` really starts torchrun (gloo on 2 CPU processes).

    OMP_NUM_THREADS=1 python -m pytest tests/test_sharded_eval.py -q
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ifer.eval.shard import gather_in_order, shard_indices
from ifer.train.distributed import DistInfo

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n,world", [(7, 2), (5, 3), (2, 4), (64, 8)])
def test_shards_cover_every_item_exactly_once_without_padding(n, world):
    """A DistributedSampler pads the last shard with repeats; these shards never repeat nor miss an item."""
    shards = [shard_indices(n, DistInfo(rank=r, world_size=world)) for r in range(world)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_gather_in_order_restores_dataset_order_and_rejects_gaps():
    info = DistInfo()
    out = gather_in_order({"x": torch.tensor([20.0, 0.0, 10.0])}, [2, 0, 1], 3, info)
    assert out["x"].tolist() == [0.0, 10.0, 20.0]  # rows put back at their dataset index
    with pytest.raises(RuntimeError, match="covered 2 items"):
        gather_in_order({"x": torch.zeros(2)}, [0, 1], 3, info)


MICRO = [
    "asit_seeds=[0]", "seeds=[0]", "methods=[fer_resnet18]", "eval.inversion_metrics=[mse,ssim,psnr]",
    "data.synthfer.n_train_identities=4", "data.synthfer.n_val_identities=1", "data.synthfer.n_test_identities=3",
    "data.synthfer.images_per_identity=7", "asit.latent_avg_samples=16", "asit.invert.batch_size=4",
    "eval.batch_size=4", "device=cpu",
]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _ifer(work: Path, verb: str, *extra: str) -> str:
    p = subprocess.run([sys.executable, "-m", "ifer.cli", verb, "--params", "params.yaml", *extra], cwd=work, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stderr


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A micro SynthFER, a random asit_tiny checkpoint and a random fer_resnet18_tiny 'best.pt' to evaluate."""
    from ifer import stages
    from ifer.core.config import load_config, save_resolved
    from ifer.data.build import fer_datasets, generate_configured_synthfer

    work = tmp_path_factory.mktemp("sharded")
    cfg = load_config("tiny", overrides=[*MICRO, f"paths.runs={work / 'runs'}", f"paths.results={work / 'results'}",
                                         f"data.synthfer.out={work / 'synthfer'}"])
    save_resolved(cfg, work / "params.yaml")
    generate_configured_synthfer(cfg)
    torch.manual_seed(0)
    net, _, _ = stages.build_asit(cfg, for_training=False)
    stages.asit_dir(cfg).mkdir(parents=True)
    net.save_checkpoint(stages.asit_dir(cfg) / "asit_best.pt")
    splits = fer_datasets(cfg, "synthfer", cfg.fer_methods.fer_resnet18.train, eval_only=True)
    model = stages.build_fer_model(cfg, "fer_resnet18", splits.num_classes)
    run = stages.fer_run_dir(cfg, "fer_resnet18", "synthfer", 0)
    run.mkdir(parents=True)
    torch.save({"model": model.state_dict()}, run / "best.pt")
    return work, cfg, len(splits.test)


def _outputs(work: Path) -> dict:
    inv = work / "runs" / "tiny" / "inversions" / "seed0"
    pngs = {f"{d}/{p.name}": torch.from_numpy(np.array(Image.open(p).convert("RGB"))).short()
            for d in ("source", "recon") for p in sorted((inv / d).glob("*.png"))}
    res = work / "results" / "tiny"
    return {"pngs": pngs, "inv": json.loads((res / "inversion_metrics.json").read_text()),
            "fer": json.loads((res / "fer_metrics.json").read_text())}


@pytest.mark.slow
@pytest.mark.ddp
def test_two_ranks_score_every_image_once_and_match_one_process(work):
    """Same outputs with launcher.nproc_per_node=2 (torchrun, gloo, sharded) as with one process."""
    work, cfg, n_fer_test = work
    for verb in ("invert", "eval-inversion", "eval-fer"):
        _ifer(work, verb)
    single = _outputs(work)
    for verb in ("invert", "eval-inversion", "eval-fer"):
        assert "torch.distributed.run --standalone --nproc_per_node=2" in _ifer(work, verb, "launcher.nproc_per_node=2")
    double = _outputs(work)

    n_inv = single["inv"]["n_images"]
    assert n_inv == double["inv"]["n_images"] == len(single["pngs"]) // 2 > 4
    assert single["pngs"].keys() == double["pngs"].keys()
    for k, a in single["pngs"].items():  # batches differ across ranks: 8-bit output may move by one level
        assert (a - double["pngs"][k]).abs().max() <= 1, k
    for metric, v in single["inv"]["methods"]["asit"].items():
        assert double["inv"]["methods"]["asit"][metric] == pytest.approx(v, rel=1e-4, abs=1e-5), metric
    (r1,), (r2,) = single["fer"]["runs"], double["fer"]["runs"]
    assert r1["test"]["num_samples"] == r2["test"]["num_samples"] == n_fer_test  # nothing padded, nothing dropped
    assert r1["test"]["accuracy"] == r2["test"]["accuracy"]
    assert r1["test"]["confusion_matrix"] == r2["test"]["confusion_matrix"]
    assert r1["identity_probe"]["identity_probe_accuracy"] == pytest.approx(
        r2["identity_probe"]["identity_probe_accuracy"], abs=1e-6)
