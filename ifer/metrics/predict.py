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
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers)
    was_training = model.training
    model.eval()
    logits, labels, feats = [], [], []
    for x, y in track(loader, desc=f"predict {len(dataset)} images", unit="batch"):
        x = x.to(device)
        logits.append(model(x).float().cpu())
        labels.append(torch.as_tensor(y))
        if features:
            feats.append(model.expression_features(x).float().cpu())
    model.train(was_training)
    out = {"logits": torch.cat(logits), "labels": torch.cat(labels)}
    if features:
        out["features"] = torch.cat(feats)
    if len(out["labels"]) != len(dataset):
        raise RuntimeError(f"evaluated {len(out['labels'])} items but the dataset has {len(dataset)}")
    return out
