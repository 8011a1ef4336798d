"""Run a FER model over a whole dataset (no drop_last, no padding, fixed order): the logits every FER score
is computed from.

It lives below both users, model selection during training (``ifer.train.fer``) and the final test scoring
(``ifer.stages.stage_eval_fer``), which the layer contracts keep independent of each other.

    python -c "import torch, ifer; from torch.utils.data import TensorDataset; from ifer.metrics.predict import predict; \
m = ifer.create_model('fer_resnet18_tiny'); \
print(predict(m, TensorDataset(torch.randn(5, 3, 64, 64), torch.arange(5) % 7), 2, torch.device('cpu'))['logits'].shape)"
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from ifer.core.progress import track


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Dataset, batch_size: int, device: torch.device,
            num_workers: int = 0, features: bool = False) -> dict[str, torch.Tensor]:
    """Logits (and optionally expression features) for every item, in dataset order; nothing dropped."""
    return predict_each([model], dataset, batch_size, device, num_workers, features)[0]


@torch.no_grad()
def predict_each(models: list[torch.nn.Module], dataset: Dataset, batch_size: int, device: torch.device,
                 num_workers: int = 0, features: bool = False) -> list[dict[str, torch.Tensor]]:
    """:func:`predict` for several models over one pass of ``dataset``: each batch is read (decoded, corrupted,
    ...) once and scored by every model, e.g. the seeds of one method on a corrupted test set. Per model the
    same batches in the same order as :func:`predict`, so the logits are the same."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers)
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    logits: list[list[torch.Tensor]] = [[] for _ in models]
    feats: list[list[torch.Tensor]] = [[] for _ in models]
    labels = []
    for x, y in track(loader, desc=f"predict {len(dataset)} images", unit="batch"):
        x = x.to(device)
        labels.append(torch.as_tensor(y))
        for k, m in enumerate(models):
            logits[k].append(m(x).float().cpu())
            if features:
                feats[k].append(m.expression_features(x).float().cpu())
    for m, t in zip(models, was_training):
        m.train(t)
    outs = []
    for k in range(len(models)):
        out = {"logits": torch.cat(logits[k]), "labels": torch.cat(labels)}
        if features:
            out["features"] = torch.cat(feats[k])
        if len(out["labels"]) != len(dataset):
            raise RuntimeError(f"evaluated {len(out['labels'])} items but the dataset has {len(dataset)}")
        outs.append(out)
    return outs
