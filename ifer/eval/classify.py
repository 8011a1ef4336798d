"""Score a FER model on a whole dataset: ``predict`` (the inference loop) lives in ``ifer.metrics.predict``, below
both training (model selection) and evaluation, which may not import each other; it is re-exported here for the
eval stage, with ``predict_sharded`` for several ranks.

    python -m ifer.cli eval-fer --params params.yaml --method ifer
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ifer.eval.shard import DistInfo, gather_in_order, shard
from ifer.metrics.predict import predict, predict_each

__all__ = ["predict", "predict_each", "predict_sharded"]


def predict_sharded(model: torch.nn.Module, dataset: Dataset, batch_size: int, device: torch.device, info: DistInfo,
                    num_workers: int = 0, features: bool = False) -> dict[str, torch.Tensor]:
    """``predict`` with each rank scoring its own shard; every rank gets all items, in dataset order, once each."""
    local, idx = shard(dataset, info)
    out = predict(model, local, batch_size, device, num_workers, features=features)
    return gather_in_order(out, idx, len(dataset), info) if info.distributed else out
