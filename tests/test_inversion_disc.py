"""ASIT image-inversion discriminator: layout, parity with the official code, EMA behaviour per quirk.

``tests/data/golden/inversion_disc_16.safetensors`` holds three successive outputs of the official
``Discriminator(m=0.9)`` (its ``DiscriminatorModel`` patched to 16 px to keep the test fast: the class
hard-codes 256 and its channel table, 512 below 64 px, cannot be narrowed)
with q = ``seeded_init_(seed 5)`` and k = ``seeded_init_(seed 4)``: every official forward moves k, so
the three scores differ. ``tests/data/official_keys/inversion_disc_256.json`` is the official
``Discriminator()`` layout.

    python -m pytest tests/test_inversion_disc.py -q
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ifer
from ifer.bench.init import seeded_init_
from ifer.models.inversion_disc import InversionDiscriminator, InversionFeatureNet

DATA = Path(__file__).parent / "data"
# Parity tolerance vs the official code (fp32 CPU). Not bitwise: other CPU kernels sum in another order. Measured max
# abs diff 4.5e-7 on AMD EPYC AVX512, torch 2.14.1; 1e-4 leaves wide headroom for other CPUs.
ATOL = 1e-4
SMALL = {4: 16, 8: 16, 16: 8, 32: 8}


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _small(quirks: str, m: float = 0.5) -> InversionDiscriminator:
    """Discriminator whose q and k differ (q re-seeded after the copy), so each EMA step is visible."""
    d = InversionDiscriminator(32, m=m, channels=SMALL, quirks=quirks)
    seeded_init_(d.model_q, 0)
    d.model_k.load_state_dict(d.model_q.state_dict())
    seeded_init_(d.model_q, 1)
    return d


def _key_params(d: InversionDiscriminator) -> list[torch.Tensor]:
    return [p.detach().clone() for p in d.model_k.parameters()]


def test_param_count_256():
    with torch.device("meta"):
        d = ifer.create_model("inversion_disc_256")
    assert _n_params(d) == 44_740_096
    assert _n_params(d.model_q) == _n_params(d.model_k) == 22_370_048
    assert sum(p.numel() for p in d.parameters() if p.requires_grad) == 22_370_048


def test_state_dict_layout_matches_official():
    expected = json.loads((DATA / "official_keys" / "inversion_disc_256.json").read_text())
    with torch.device("meta"):
        d = InversionDiscriminator(256)
    assert list({k: list(v.shape) for k, v in d.state_dict().items()}.items()) == list(expected.items())


def test_golden_official_moco_discriminator_16():
    gold = load_file(DATA / "golden" / "inversion_disc_16.safetensors")
    d = InversionDiscriminator(16, m=0.9, quirks="as_released")
    seeded_init_(d.model_q, 4)
    d.model_k.load_state_dict(d.model_q.state_dict())
    seeded_init_(d.model_q, 5)
    a = torch.randn(2, 3, 16, 16, generator=_rng(41))
    b = torch.randn(2, 3, 16, 16, generator=_rng(42))
    with torch.no_grad():
        torch.testing.assert_close(d.model_q(a), gold["query_embedding"], atol=ATOL, rtol=0)
        for step in range(3):
            torch.testing.assert_close(d(a, b), gold[f"score_{step}"], atol=ATOL, rtol=0)
            key_sum = torch.stack([p.double().sum() for p in d.model_k.parameters()]).sum()
            torch.testing.assert_close(key_sum.reshape(1), gold[f"key_param_sum_{step}"], atol=1e-6, rtol=1e-9)
    assert d.num_key_updates == 3


def test_as_released_updates_key_network_in_every_forward():
    d = _small("as_released")
    q = [p.detach().clone() for p in d.model_q.parameters()]
    k0 = _key_params(d)
    x = torch.randn(2, 3, 32, 32, generator=_rng(2))
    with torch.no_grad():
        for _ in range(3):  # one ASIT iteration: D(x, x), D(x_hat, x), then G's D(x_hat, x)
            d(x, x)
    assert d.num_key_updates == 3
    for k, k_start, q_p in zip(d.model_k.parameters(), k0, q):
        # q is unchanged, so three steps of k <- m k + (1 - m) q give m^3 k0 + (1 - m^3) q.
        torch.testing.assert_close(k, 0.125 * k_start + 0.875 * q_p, atol=1e-6, rtol=1e-5)


def test_as_described_updates_only_on_request():
    d = _small("as_described")
    k0 = _key_params(d)
    x = torch.randn(2, 3, 32, 32, generator=_rng(2))
    with torch.no_grad():
        first = d(x, x)
        for _ in range(2):
            torch.testing.assert_close(d(x, x), first, atol=0, rtol=0)
    assert d.num_key_updates == 0 and all(torch.equal(a, b) for a, b in zip(k0, d.model_k.parameters()))
    d.update_key_network()
    assert d.num_key_updates == 1
    for k, k_start, q in zip(d.model_k.parameters(), k0, d.model_q.parameters()):
        torch.testing.assert_close(k, 0.5 * k_start + 0.5 * q, atol=1e-6, rtol=1e-5)


def test_quirk_overrides_and_default():
    assert InversionDiscriminator(32, channels=SMALL).quirks.ema_update_every_forward is False
    d = InversionDiscriminator(32, channels=SMALL, quirks="as_released")
    assert d.quirks.ema_update_every_forward is True


def test_only_query_network_gets_gradients():
    d = _small("as_described")
    x = torch.randn(2, 3, 32, 32, generator=_rng(3), requires_grad=True)
    d(x, x.detach()).sum().backward()
    assert all(p.grad is not None for p in d.model_q.parameters())
    assert all(p.grad is None and not p.requires_grad for p in d.model_k.parameters())
    assert x.grad is not None


def test_batch_of_one_and_batch_independence():
    # torch.squeeze in the official forward breaks at B=1; flatten(1) keeps the batch dimension.
    net = seeded_init_(InversionFeatureNet(32, channels=SMALL), 0)
    x = torch.randn(3, 3, 32, 32, generator=_rng(4))
    with torch.no_grad():
        one, three = net(x[:1]), net(x)
    assert one.shape == (1, 128) and three.shape == (3, 128)
    torch.testing.assert_close(one, three[:1], atol=1e-5, rtol=1e-5)
    d = _small("as_described")
    with torch.no_grad():
        assert d(x[:1], x[:1]).shape == (1, 1)
        torch.testing.assert_close(d(x, x), d(x, x).clamp(-1, 1))


@pytest.mark.parametrize("name, size", [("inversion_disc_64_tiny", 64),
                                        pytest.param("inversion_disc_256", 256, marks=pytest.mark.slow)])
def test_registered_roundtrip_strict(name, size, tmp_path):
    torch.manual_seed(0)
    d = ifer.create_model(name)
    path = tmp_path / f"{name}.pt"
    torch.save(d.state_dict(), path)
    loaded = ifer.create_model(name, checkpoint_path=path)
    assert all(torch.equal(a, b) for a, b in zip(d.state_dict().values(), loaded.state_dict().values()))
    assert all(not p.requires_grad for p in loaded.model_k.parameters())
    if size == 64:
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert loaded(x, x).shape == (2, 1)


def test_tiny_configuration():
    d = ifer.create_model("inversion_disc_64_tiny")
    assert _n_params(d.model_q) == 788_512 and d.model_q.lin.in_features == 128
