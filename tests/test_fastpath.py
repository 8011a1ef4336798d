"""Parity of every fast-path flag with the plain fp32 eager forward (tiny models, CPU, seconds).

    pytest tests/test_fastpath.py -q            # add -m slow for the torch.compile parity
"""
from __future__ import annotations

import copy

import pytest
import torch

from ifer.bench.fastpath import (
    PARITY_RTOL,
    InferenceOptions,
    fused_optimizer,
    prepare_for_inference,
    relative_error,
    set_fused_attn,
)
from ifer.bench.throughput import BenchModule
from ifer.bench.timers import measure


def _parity(name: str, options: InferenceOptions, batch_size: int = 2) -> float:
    plain = BenchModule(name)
    fast = BenchModule(name)  # same seeded weights
    x = plain.example_input(batch_size)
    with torch.no_grad():
        ref = plain(x)
    return relative_error(prepare_for_inference(fast, options)(x), ref)


@pytest.mark.parametrize("name", ["asit_encoder_tiny", "ifer_tiny"])
def test_fused_attn_parity(name):
    # SDPA's fused softmax reorders fp32 sums: ~1e-6 relative after the tiny encoder's 6 blocks + 10 heads
    assert _parity(name, InferenceOptions(fused_attn=True)) <= PARITY_RTOL["fp32"]


@pytest.mark.parametrize("name", ["asit_encoder_tiny", "stylegan2_generator_64_tiny", "asit_tiny"])
def test_channels_last_parity(name):
    assert _parity(name, InferenceOptions(channels_last=True)) <= PARITY_RTOL["fp32"]


@pytest.mark.parametrize("name", ["asit_encoder_tiny", "asit_tiny"])
def test_bf16_autocast_parity(name):
    err = _parity(name, InferenceOptions(bf16=True))
    # looser by design (see PARITY_RTOL), but it must still be a real approximation, not garbage
    assert 0 < err <= PARITY_RTOL["bf16"]


@pytest.mark.slow
def test_compile_parity():
    assert _parity("asit_encoder_tiny", InferenceOptions(compile=True, fused_attn=True)) <= PARITY_RTOL["fp32"]


def test_set_fused_attn_covers_backbone_and_style_heads():
    enc = BenchModule("asit_encoder_tiny").net
    n = set_fused_attn(enc)
    attn = [m for m in enc.modules() if hasattr(m, "fused_attn")]
    assert n == len(attn) and all(m.fused_attn for m in attn)
    assert any("styles" in name for name, m in enc.named_modules() if getattr(m, "fused_attn", False))
    with pytest.raises(ValueError, match="no attention module"):
        set_fused_attn(torch.nn.Linear(2, 2))


def test_fused_optimizer_matches_plain_adamw():
    torch.manual_seed(0)
    plain_model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 3))
    fused_model = copy.deepcopy(plain_model)
    plain_opt = torch.optim.AdamW(plain_model.parameters(), lr=1e-2, weight_decay=0.05, foreach=False)
    fused_opt = fused_optimizer(fused_model.parameters(), lr=1e-2, weight_decay=0.05)
    assert fused_opt.defaults["foreach"] is True  # CPU: the multi-tensor path
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        for model, opt in ((plain_model, plain_opt), (fused_model, fused_opt)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    # same update rule, batched differently: fp32 rounding only
    for p, q in zip(plain_model.parameters(), fused_model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


def test_measure_reports_median_and_output():
    r = measure(lambda: torch.ones(3), warmup=1, iters=5, batch_size=4)
    assert r["p10"] <= r["median_s"] <= r["p90"] and len(r["times_s"]) == 5
    assert r["images_per_s"] == pytest.approx(4 / r["median_s"])
    assert torch.equal(r["output"], torch.ones(3))
