"""Identity linear probe: how much identity information do a method's expression features carry?

SynthFER knows every image's identity, so for the held-out test identities we fit a multinomial
logistic regression from expression features to identity on half of each identity's images and score
it on the other half. Lower probe accuracy = better disentangled expression features. None of the
original papers could report this, since real FER datasets lack identity labels.

    python -c "import torch; from ifer.eval.probe import identity_probe; print(identity_probe(torch.randn(40, 8), [i % 4 for i in range(40)]))"
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ifer.core.progress import Progress


def _split_per_identity(identities: Sequence[int], seed: int) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(seed)
    by_id: dict[int, list[int]] = defaultdict(list)
    for i, ident in enumerate(identities):
        by_id[int(ident)].append(i)
    fit, held = [], []
    for ident in sorted(by_id):
        idx = by_id[ident]
        order = torch.randperm(len(idx), generator=g).tolist()
        half = len(idx) // 2
        fit += [idx[j] for j in order[:half]]
        held += [idx[j] for j in order[half:]]
    return fit, held


def identity_probe(features: torch.Tensor, identities: Sequence[int], seed: int = 0, weight_decay: float = 1e-3,
                   iters: int = 200) -> dict[str, float]:
    """Fit on half of each identity's samples, score on the other half. Returns probe accuracy and chance."""
    ids = sorted({int(i) for i in identities})
    if len(ids) < 2:
        raise ValueError("identity probe needs at least two identities")
    remap = {ident: k for k, ident in enumerate(ids)}
    y = torch.tensor([remap[int(i)] for i in identities])
    fit, held = _split_per_identity(identities, seed)
    x = features.float()
    mu, sd = x[fit].mean(0), x[fit].std(0).clamp_min(1e-6)
    x = (x - mu) / sd
    lin = torch.nn.Linear(x.shape[1], len(ids))
    torch.manual_seed(seed)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=0.5, max_iter=iters, line_search_fn="strong_wolfe")
    bar = Progress(iters, f"identity probe ({len(ids)} identities)", unit="eval")

    def closure():
        bar.update()
        opt.zero_grad()
        loss = F.cross_entropy(lin(x[fit]), y[fit]) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    bar.close()
    with torch.no_grad():
        acc = (lin(x[held]).argmax(1) == y[held]).float().mean().item()
    return {"identity_probe_accuracy": acc, "identity_chance": 1.0 / len(ids), "n_identities": len(ids),
            "n_fit": len(fit), "n_held": len(held)}
