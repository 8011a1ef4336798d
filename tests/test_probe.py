"""Identity probe: finds identity when features carry it, stays near chance when they do not."""
import torch

from ifer.eval.probe import identity_probe


def test_probe_detects_identity_information():
    g = torch.Generator().manual_seed(0)
    ids = [i % 5 for i in range(200)]
    centres = torch.randn(5, 16, generator=g) * 3
    informative = centres[ids] + torch.randn(200, 16, generator=g)
    noise = torch.randn(200, 16, generator=g)
    hi = identity_probe(informative, ids)
    lo = identity_probe(noise, ids)
    assert hi["identity_chance"] == 0.2 and hi["n_fit"] + hi["n_held"] == 200
    assert hi["identity_probe_accuracy"] > 0.9
    assert lo["identity_probe_accuracy"] < 0.4
