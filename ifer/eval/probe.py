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


def _fit_linear(x: torch.Tensor, y: torch.Tensor, n_classes: int, seed: int, weight_decay: float, iters: int,
                desc: str) -> torch.nn.Linear:
    """Multinomial logistic regression (L2 ``weight_decay`` on the weights), LBFGS from zero weights."""
    lin = torch.nn.Linear(x.shape[1], n_classes)
    torch.manual_seed(seed)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=0.5, max_iter=iters, line_search_fn="strong_wolfe")
    bar = Progress(iters, desc, unit="eval")

    def closure():
        bar.update()
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), y) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    bar.close()
    return lin


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
    lin = _fit_linear(x[fit], y[fit], len(ids), seed, weight_decay, iters, f"identity probe ({len(ids)} identities)")
    with torch.no_grad():
        acc = (lin(x[held]).argmax(1) == y[held]).float().mean().item()
    return {"identity_probe_accuracy": acc, "identity_chance": 1.0 / len(ids), "n_identities": len(ids),
            "n_fit": len(fit), "n_held": len(held)}


# ---------------------------------------------------------------------------------------------- factor probes
def split_identities(identities: Sequence[int], seed: int) -> tuple[list[int], list[int]]:
    """Images of half the identities (a seeded draw) to fit, of the other half to score: a nuisance probe must
    generalise to people it has not seen, or it could read the factor off the person."""
    ids = sorted({int(i) for i in identities})
    if len(ids) < 2:
        raise ValueError("a factor probe needs at least two identities")
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    fit_ids = {ids[j] for j in order[: len(ids) // 2]}
    fit = [i for i, ident in enumerate(identities) if int(ident) in fit_ids]
    held = [i for i, ident in enumerate(identities) if int(ident) not in fit_ids]
    return fit, held


def reduce_width(x: torch.Tensor, fit: Sequence[int], width: int | None) -> torch.Tensor:
    """Standardise on the fit rows, then (when ``width`` < the feature width) project onto the fit rows' top
    ``width`` principal components, each scaled to unit variance: every method's probe then has the same
    capacity (``width`` inputs) whatever its feature width."""
    x = x.float()
    mu, sd = x[fit].mean(0), x[fit].std(0).clamp_min(1e-6)
    x = (x - mu) / sd
    if width is None or width >= x.shape[1]:
        return x
    _, s, vh = torch.linalg.svd(x[fit].double(), full_matrices=False)
    comps = vh[:width].T
    scale = (s[:width] / max(1, len(fit) - 1) ** 0.5).clamp_min(1e-12)
    return ((x.double() @ comps) / scale).float()


def factor_probe(features: torch.Tensor, labels: Sequence[int | None], identities: Sequence[int], width: int | None,
                 seed: int = 0, weight_decay: float = 1e-3, iters: int = 200, per_identity_split: bool = False,
                 name: str = "factor") -> dict:
    """Linear probe from features to a factor's bins. Images with label ``None`` are left out. Split: held-out
    identities (``per_identity_split`` = the identity probe's split, half of each person's images, for the
    identity factor itself). Returns accuracy on the held rows, ``chance`` = the held rows' majority-bin rate
    (what a probe that learnt nothing scores), their difference ``above_chance``, ``width`` used and counts."""
    keep = [i for i, v in enumerate(labels) if v is not None]
    if len({labels[i] for i in keep}) < 2:
        raise ValueError(f"{name} probe needs at least two bins with images")
    feats = features[keep]
    ids = [int(identities[i]) for i in keep]
    bins = sorted({int(labels[i]) for i in keep})
    y = torch.tensor([bins.index(int(labels[i])) for i in keep])
    fit, held = _split_per_identity(ids, seed) if per_identity_split else split_identities(ids, seed)
    x = reduce_width(feats, fit, width)
    lin = _fit_linear(x[fit], y[fit], len(bins), seed, weight_decay, iters, f"{name} probe ({len(bins)} bins)")
    with torch.no_grad():
        acc = (lin(x[held]).argmax(1) == y[held]).float().mean().item()
    chance = torch.bincount(y[held], minlength=len(bins)).max().item() / len(held)
    return {"accuracy": acc, "chance": chance, "above_chance": acc - chance, "width": int(x.shape[1]),
            "feature_width": int(features.shape[1]), "n_bins": len(bins), "n_fit": len(fit), "n_held": len(held),
            "split": "half of each identity's images" if per_identity_split else "held-out identities"}
