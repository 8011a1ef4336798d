"""Factor probes and SynthFER factor bins (issue 21): a planted dependence (features that encode pose) is detected,
random features stay at chance, the PCA width equalises capacity, bins follow their definitions."""
import numpy as np
import pytest
import torch

from ifer.data.factors import factor_bins
from ifer.eval.probe import factor_probe, reduce_width


def _metas(n_ids: int = 20, per_id: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_ids):
        for k in range(per_id):
            expression = ["neutral", "happy", "sad"][k % 3]
            out.append({"identity": i, "yaw": float(rng.uniform(-0.45, 0.45)), "light_strength": float(rng.uniform(0, 0.35)),
                        "occlusion": "none" if rng.random() > 0.3 else "hand", "background": ["flat", "stripes"][k % 2],
                        "expression": expression, "intensity": 0.0 if expression == "neutral" else float(rng.uniform(0.5, 1))})
    return out


def test_planted_pose_is_detected_and_random_features_stay_at_chance():
    metas = _metas()
    ids = [m["identity"] for m in metas]
    pose = factor_bins(metas, "pose")
    g = torch.Generator().manual_seed(0)
    yaw = torch.tensor([abs(m["yaw"]) for m in metas]).unsqueeze(1)
    # pose written along one direction of a 16-d feature, on top of unit noise: the feature's main axis of variation
    w = torch.randn(1, 16, generator=g)
    planted = 8 * (yaw - yaw.mean()) / yaw.std() * w / w.norm() + 0.3 * torch.randn(len(metas), 16, generator=g)
    noise = torch.randn(len(metas), 16, generator=g)
    hi = factor_probe(planted, pose["bins"], ids, width=8)
    lo = factor_probe(noise, pose["bins"], ids, width=8)
    assert hi["split"] == "held-out identities" and hi["n_fit"] + hi["n_held"] == len(metas)
    # tertile bins on held-out people: chance (majority bin) is about 1/3
    assert 0.3 < hi["chance"] < 0.45
    assert hi["accuracy"] > hi["chance"] + 0.35
    assert abs(lo["accuracy"] - 1 / 3) < 0.12
    # PCA keeps the directions of largest variance: a factor written along a minor direction would be cut
    assert hi["width"] == 8 and hi["feature_width"] == 16


def test_probe_fits_on_some_identities_and_scores_others():
    metas = _metas(n_ids=6, per_id=10)
    ids = [m["identity"] for m in metas]
    # a feature that is the person's own code: identity is perfectly separable, pose is not in it
    code = torch.nn.functional.one_hot(torch.tensor(ids), 6).float()
    r = factor_probe(code, factor_bins(metas, "pose")["bins"], ids, width=None)
    assert r["accuracy"] < 0.6  # the people scored were never seen: their code says nothing about pose
    ident = factor_probe(code + 0.01 * torch.randn(code.shape, generator=torch.Generator().manual_seed(1)),
                         factor_bins(metas, "identity")["bins"], ids, width=None, per_identity_split=True)
    assert ident["accuracy"] == 1.0 and ident["split"] == "half of each identity's images"


def test_reduce_width_gives_unit_variance_principal_components():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 40, generator=g) @ torch.randn(40, 40, generator=g)
    fit = list(range(200))
    z = reduce_width(x, fit, 5)
    assert z.shape == (300, 5)
    assert torch.allclose(z[fit].std(0), torch.ones(5), atol=1e-4)
    cov = torch.cov(z[fit].T)
    assert torch.allclose(cov, torch.eye(5), atol=1e-4)  # uncorrelated: principal components
    assert reduce_width(x, fit, None).shape == (300, 40) and reduce_width(x, fit, 64).shape == (300, 40)


def test_factor_bins_follow_their_definitions():
    metas = _metas()
    pose = factor_bins(metas, "pose")
    counts = np.bincount([b for b in pose["bins"]], minlength=3)
    assert pose["names"] == ["low", "mid", "high"] and abs(counts - len(metas) / 3).max() <= 2
    lo, hi = pose["edges"]
    for m, b in zip(metas, pose["bins"]):
        assert b == (0 if abs(m["yaw"]) < lo else 1 if abs(m["yaw"]) < hi else 2)
    inten = factor_bins(metas, "intensity")
    assert all((b is None) == (m["expression"] == "neutral") for m, b in zip(metas, inten["bins"]))
    occ = factor_bins(metas, "occlusion")
    assert occ["bins"] == [0 if m["occlusion"] == "none" else 1 for m in metas]
    assert factor_bins(metas, "background")["names"] == ["flat", "stripes"]
    with pytest.raises(ValueError, match="unknown factor"):
        factor_bins(metas, "age")
