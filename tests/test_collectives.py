"""Issue 10 trainer breakages, each guarded by a test named after it: collectives on the process group's device,
ASIT losses on the training device, drop_last on training loaders, TF32 on CUDA, strict loading of best.pt::

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/test_collectives.py -q
"""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from ifer.core.loading import CheckpointError
from ifer.train.distributed import DistInfo, all_reduce_mean, broadcast_flag, configure_device

pytestmark = pytest.mark.usefixtures("one_thread")
META = DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("meta"))


class _Reduced(Exception):
    pass


def _spy_all_reduce(monkeypatch) -> list[torch.device]:
    """Replace dist.all_reduce: record the tensor's device, then stop (no process group exists here)."""
    seen: list[torch.device] = []

    def all_reduce(t, op=None, **kw):
        seen.append(t.device)
        raise _Reduced

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    return seen


@pytest.mark.parametrize("collective", ["broadcast_flag", "all_reduce_mean"])
def test_nccl_collectives_reduce_tensors_on_the_process_group_device(collective, monkeypatch):
    """Issue 10: broadcast_flag and all_reduce_mean reduced CPU tensors, which NCCL cannot do (multi-GPU died at
    step 1). A process group on device D must get tensors on D; `meta` stands in for `cuda` on a CPU-only box."""
    seen = _spy_all_reduce(monkeypatch)
    with pytest.raises(_Reduced):
        if collective == "broadcast_flag":
            broadcast_flag(True, META)
        else:
            all_reduce_mean(torch.tensor(1.5), META)  # a CPU value, as the trainers log it
    assert seen == [torch.device("meta")]


def test_collectives_are_skipped_in_a_single_process(monkeypatch):
    seen = _spy_all_reduce(monkeypatch)
    assert broadcast_flag(True, DistInfo()) is True and float(all_reduce_mean(torch.tensor(2.0), DistInfo())) == 2.0
    assert seen == []


def test_asit_lpips_and_identity_losses_move_to_the_training_device(monkeypatch, tmp_path):
    """Issue 10: ASITLosses (LPIPS and identity modules) were never moved to the training device, so the first
    G step failed on a GPU. train_asit must move them to info.device before training."""
    from ifer.train import asit
    from tests.test_train_asit import CFG, LAMBDAS, _build, _images

    perceptual, identity = torch.nn.Linear(2, 2), torch.nn.Conv2d(3, 1, 1)
    losses = asit.ASITLosses({**LAMBDAS, "lpips": 0.8, "id": 0.1}, perceptual, identity)
    losses.to("meta")
    assert all(p.device.type == "meta" for m in (perceptual, identity) for p in m.parameters())

    moved_to = []

    def spy_to(self, device):
        moved_to.append(torch.device(device))
        raise _Reduced  # stop before training: only the move is under test

    monkeypatch.setattr(asit.ASITLosses, "to", spy_to)
    net, disc = _build()
    with pytest.raises(_Reduced):
        asit.train_asit(net, disc, losses, _images(8, 0), _images(4, 1), CFG, tmp_path, progress=False,
                        info=DistInfo(device=torch.device("cpu")))
    assert moved_to == [torch.device("cpu")]


@pytest.mark.slow
def test_asit_train_loader_drops_a_final_batch_of_one(monkeypatch, tmp_path):
    """Issue 10: the ASIT train loader had no drop_last; a final batch of one image crashes the distribution loss.
    13 images at batch 4: every step must see 4 images (the 13th is left for the next epoch's permutation)."""
    import ifer.losses.distribution as distribution
    from ifer.core.config import Config
    from ifer.train.asit import ASITLosses, train_asit
    from tests.test_train_asit import CFG, LAMBDAS, _build, _images

    real, sizes = distribution.distribution_loss, []

    def spy(s_fea, t_fea, **kw):
        sizes.append(len(t_fea[0]) if isinstance(t_fea, (list, tuple)) else len(t_fea))
        return real(s_fea, t_fea, **kw)

    monkeypatch.setattr(distribution, "distribution_loss", spy)
    net, disc = _build()
    cfg = Config({**CFG, "steps": 4, "val_interval": 4, "save_interval": 4})
    out = train_asit(net, disc, ASITLosses(LAMBDAS, None, None), _images(13, 0), _images(4, 1), cfg, tmp_path,
                     seed=5, progress=False)
    assert out["steps"] == 4 and sizes == [4, 4, 4, 4]


def test_fer_train_loader_drops_the_last_partial_batch(tmp_path):
    """Issue 10: training loaders drop_last (100 images at batch 16: 6 full steps per epoch, not 7)."""
    from ifer.core.config import Config
    from ifer.train.checkpoint import load_training_state
    from ifer.train.fer import train_fer
    from tests.test_train_fer import RECIPE
    from tests.toy import ToyFER, ToyImages

    torch.manual_seed(0)
    train_fer(ToyFER(), ToyImages(100, seed=0), ToyImages(30, seed=1), ToyImages(20, seed=2),
              Config({**RECIPE, "epochs": 2, "keep_resume_state": True}), tmp_path, progress=False)
    state = load_training_state(tmp_path / "last.pt")
    assert state["step"] == 12 and state["updates_per_epoch"] == 6


def test_tf32_is_switched_on_for_cuda_by_the_tf32_key():
    """Issue 10: a paper run on a GPU expects TF32 matmuls/convolutions (config key ``tf32``, default on)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        configure_device(torch.device("cuda", 0), tf32=True)  # only sets flags: no GPU needed
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        configure_device(torch.device("cuda", 0), tf32=False)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        configure_device(torch.device("cpu"), tf32=True)  # CPU runs leave the CUDA settings alone
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_eval_fer_and_resume_load_best_pt_with_the_strict_loader(tmp_path):
    """Issue 10: eval_fer and the resume paths used a raw load_state_dict (a traceback, not the one-line error the
    CLI promises). stages.stage_eval_fer / stage_train_asit read best.pt through load_trained_weights."""
    from ifer.train.checkpoint import load_trained_weights, save_training_state
    from tests.toy import ToyFER

    path = save_training_state(tmp_path / "best.pt", {"model": ToyFER(dim=8).state_dict(), "epoch": 3})
    model = ToyFER(dim=8)
    assert load_trained_weights(model, path, "model")["epoch"] == 3
    with pytest.raises(CheckpointError, match=r"best.pt: does not fit ToyFER: shape mismatch at 'body.1.weight'") as e:
        load_trained_weights(ToyFER(dim=16), path, "model")
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match=r"best.pt: no 'net' entry"):
        load_trained_weights(model, path, "net")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="best.pt: cannot read checkpoint"):
        load_trained_weights(model, path, "model")
