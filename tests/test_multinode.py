"""Multi-node training through ``launcher.nnodes``: torchrun's c10d rendezvous, 2 "nodes" on localhost (gloo).

Two processes of the same ``ifer train-asit`` command with ``launcher.nnodes=2`` (each one a node's torchrun agent)
must train exactly what ``launcher.nproc_per_node=2 --standalone`` trains: the same world size, ranks and shards.
Inside SLURM the rendezvous endpoint comes from the allocation (``torchrun_args``).

    OMP_NUM_THREADS=1 python -m pytest tests/test_multinode.py -q
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ifer.cli import _slurm_first_node, torchrun_args
from ifer.core.config import ConfigError, load_config
from tests.test_sharded_eval import MICRO

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["asit.train.steps=4", "asit.train.batch_size=4", "asit.train.val_interval=4", "asit.train.save_interval=4",
         "asit.train.log_interval=2"]


def test_torchrun_args_single_node_explicit_endpoint_and_slurm():
    cfg = load_config("tiny")
    assert torchrun_args(cfg, {}) == ["--standalone", "--nproc_per_node=1"]
    two = load_config("tiny", overrides=["launcher.nnodes=2", "launcher.nproc_per_node=4"])
    with pytest.raises(ConfigError, match="launcher.rdzv_endpoint"):
        torchrun_args(two, {})  # not inside SLURM and no endpoint: one clear line
    assert torchrun_args(two, {"SLURM_JOB_NODELIST": "gpu07", "SLURM_JOB_ID": "4242"}) == [
        "--nnodes=2", "--nproc_per_node=4", "--rdzv_backend=c10d", "--rdzv_endpoint=gpu07:29500", "--rdzv_id=4242"]
    explicit = load_config("tiny", overrides=["launcher.nnodes=2", "launcher.rdzv_endpoint=10.0.0.5:1234"])
    assert "--rdzv_endpoint=10.0.0.5:1234" in torchrun_args(explicit, {"SLURM_JOB_NODELIST": "gpu07"}, "train-asit")
    # only launcher.multinode_verbs (default: the ASIT runs) span nodes; an FER run or an eval stays on one
    assert torchrun_args(two, {}, "eval-fer") == ["--standalone", "--nproc_per_node=4"]


def test_launch_asks_slurm_for_the_nodes_of_multinode_kinds():
    from ifer.launch import resources_for, with_nodes

    res = with_nodes({"train_asit": {"time_min": 9}}, 2, ["train_asit"])
    assert resources_for("train_asit", res)["nodes"] == 2 and resources_for("train_asit", res)["time_min"] == 9
    assert resources_for("train_fer", res)["nodes"] == 1


def test_first_node_of_a_slurm_nodelist(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: the fallback parser
    assert _slurm_first_node({"SLURM_JOB_NODELIST": "gpu[03-04,07],cpu1"}) == "gpu03"
    assert _slurm_first_node({"SLURM_NODELIST": "node12"}) == "node12"
    assert _slurm_first_node({}) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.ddp
def test_two_nodes_on_localhost_train_what_two_local_ranks_train(tmp_path):
    from ifer import stages
    from ifer.core.config import save_resolved
    from ifer.data.build import generate_configured_synthfer

    cfg = load_config("tiny", overrides=[*MICRO, *STEPS, f"paths.runs={tmp_path / 'runs'}",
                                         f"paths.results={tmp_path / 'results'}",
                                         f"data.synthfer.out={tmp_path / 'synthfer'}"])
    save_resolved(cfg, tmp_path / "params.yaml")
    generate_configured_synthfer(cfg)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "ifer.cli", "train-asit", "--params", "params.yaml"]

    one = subprocess.run([*base, "launcher.nproc_per_node=2", f"paths.runs={tmp_path / 'standalone'}"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    port = _free_port()
    nodes = [subprocess.Popen([*base, "launcher.nnodes=2", f"launcher.rdzv_endpoint=127.0.0.1:{port}",
                               "launcher.rdzv_id=test", f"paths.runs={tmp_path / 'twonode'}"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in nodes]
    for p, (_, err) in zip(nodes, outs):
        assert p.returncode == 0, err[-3000:]
        assert "--nnodes=2" in err and "--rdzv_backend=c10d" in err
    rel = stages.asit_dir(cfg).relative_to(tmp_path / "runs")
    a = torch.load(tmp_path / "standalone" / rel / "asit_best.pt", weights_only=True)
    b = torch.load(tmp_path / "twonode" / rel / "asit_best.pt", weights_only=True)
    sa, sb = a.get("state_dict", a), b.get("state_dict", b)
    assert sa.keys() == sb.keys() and len(sa) > 10
    for k in sa:  # same ranks, shards and seeds: bit-identical on one machine (gloo sums 2 ranks in one order)
        if torch.is_tensor(sa[k]):
            assert torch.equal(sa[k], sb[k]), k
