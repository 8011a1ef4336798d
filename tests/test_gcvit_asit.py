"""GC ViT blocks, the ASIT encoder and the ASIT wrapper: layout, official parity, quirks, checkpoints.

Official facts used here were produced once from Talented-Q/IFER-master (HEAD 2f21002) in a scratch venv
(timm 0.5.4, torch 2.14.1 CPU, fp32) and stored as data: ``tests/data/official_keys/*.json`` (key -> shape
of the official ``state_dict()``) and ``tests/data/golden/gcvit_small_as_released.safetensors`` (official
outputs for weights from ``deterministic_init_(seed=7)`` on a fixed seeded input).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import ifer
from ifer.bench.init import deterministic_init_, seeded_init_
from ifer.core.loading import CheckpointError
from ifer.core.quirks import get_quirks, resolved_quirks
from ifer.core.weights import MissingWeightsError
from ifer.models.asit import ASIT
from ifer.models.gcvit import GCViTLayer, GradualStyleBlock, PatchEmbed, WindowAttentionGlobal
from ifer.models.registry import build_from_config

DATA = Path(__file__).parent / "data"
# Parity tolerance vs the committed golden file. Not bitwise: it was written by the official code on another CPU
# build, and fp32 sums come out in other last bits with other kernels. Measured max abs diff 3.3e-6 (explicit
# attention) and 3.8e-6 (SDPA) on AMD EPYC AVX512, torch 2.14.1 CPU; 1e-4 leaves 25x headroom for other CPUs.
# Run on the same machine as ours, the official code gives exactly our outputs:
# test_bitwise_equal_to_the_official_code_run_here.
ATOL = RTOL = 1e-4
SDPA_ATOL = 1e-5  # fused (SDPA) vs explicit attention, fp32


def official_keys(name: str) -> dict[str, list[int]]:
    return json.loads((DATA / "official_keys" / f"{name}.json").read_text())


def layout(module: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_stack(mode: str = "as_released", fused_attn: bool = False) -> nn.ModuleDict:
    """The small official-compatible composition used for the fast golden test (same in the scratch script)."""
    return nn.ModuleDict(dict(
        embed=PatchEmbed(3, 32),
        l0=GCViTLayer(32, 2, 16, 2, 8, downsample=True, mlp_ratio=2, layer_scale=1e-5, mode=mode,
                      fused_attn=fused_attn),
        l1=GCViTLayer(64, 2, 8, 4, 8, downsample=False, mlp_ratio=2, layer_scale=1e-5, mode=mode,
                      fused_attn=fused_attn),
        head=GradualStyleBlock(64, 64, 8, window=4, fused_attn=fused_attn)))


def run_small(m: nn.ModuleDict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    e = m["embed"](x)
    a = m["l0"](e)
    b = m["l1"](a)
    return {"embed": e, "l0": a, "l1": b, "head": m["head"](b.permute(0, 3, 1, 2))}


def tiny_encoder(mode: str = "as_described", seed: int = 3, **kw) -> nn.Module:
    return deterministic_init_(ifer.create_model("asit_encoder_tiny", mode=mode, **kw), seed).eval()


def tiny_asit(seed: int = 0, **kw) -> ASIT:
    net = ifer.create_model("asit_tiny", **kw)
    deterministic_init_(net.encoder, seed)
    seeded_init_(net.decoder, seed + 1)
    net.init_latent_avg(512, seed=seed)
    return net.eval()


# ---------------------------------------------------------------------------------------------
# Layout: parameter counts and the official key/shape lists


def test_encoder_base_param_count_and_keys():
    with torch.device("meta"):
        enc = ifer.create_model("asit_encoder_base")
    assert n_params(enc) == 265_832_456
    ref = official_keys("asit_encoder_base")
    assert len(ref) == 1082
    assert list(layout(enc).items()) == list(ref.items())  # same keys, shapes and order


def test_asit_base_keys_match_official_wrapper():
    with torch.device("meta"):
        net = ifer.create_model("asit_base")
    assert list(layout(net).items()) == list(official_keys("asit_base").items())
    assert n_params(net.decoder) == 30_034_338
    assert not any(p.requires_grad for p in net.decoder.parameters())  # train_decoder=False by default


def test_tiny_shapes_match_tiny_generator():
    net = ifer.create_model("asit_tiny")
    styles, structure, feats = net.encoder(torch.randn(2, 3, 64, 64))
    assert styles.shape == (2, net.decoder.n_latent, net.decoder.style_dim) == (2, 10, 128)
    assert structure.shape[1:] == net.decoder.input.input.shape[1:] and structure.shape == (2, 128, 4, 4)
    assert [tuple(f.shape) for f in feats] == [(2, 128, 16, 16), (2, 128, 8, 8), (2, 128, 4, 4)]


# ---------------------------------------------------------------------------------------------
# Numerical parity with the official code (as_released)


@pytest.mark.parametrize("fused_attn", [False, True])
def test_small_stack_matches_official(fused_attn):
    golden = load_file(DATA / "golden" / "gcvit_small_as_released.safetensors")
    m = deterministic_init_(small_stack("as_released", fused_attn), seed=7).eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1234))
    with torch.no_grad():
        out = run_small(m, x)
    for k, ref in golden.items():  # SDPA rounding is ~3e-6 here, inside the same tolerance
        torch.testing.assert_close(out[k], ref, atol=ATOL, rtol=RTOL, msg=f"{k} differs from the official code")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("IFER_OFFICIAL_REPO"),
                    reason="needs a Talented-Q/IFER-master checkout: IFER_OFFICIAL_REPO=<path> "
                           "(and IFER_ROSINALITY_REPO=<rosinality/stylegan2-pytorch checkout> for the 32-px D)")
def test_bitwise_equal_to_the_official_code_run_here(tmp_path, monkeypatch):
    """Every golden fixture regenerated here by tools/make_golden.py equals our output exactly (atol = rtol = 0).

    Only the fused (SDPA) attention path is left out: it rounds differently from the official explicit softmax
    (3.1e-6 measured), and test_fused_attention_matches_explicit bounds that."""
    import tests.test_ifer_model as t_ifer
    import tests.test_inversion_disc as t_disc
    import tests.test_stylegan2 as t_sg2

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import make_golden

    rosinality = os.environ.get("IFER_ROSINALITY_REPO")
    (tmp_path / "golden").mkdir()
    make_golden.main(["--official", os.environ["IFER_OFFICIAL_REPO"], "--out", str(tmp_path / "golden"), "--check",
                      *(["--rosinality", rosinality] if rosinality else
                        ["--only", *(n for n in make_golden.FIXTURES if n != "stylegan2_d32")])])
    for module in (sys.modules[__name__], t_ifer, t_disc, t_sg2):
        monkeypatch.setattr(module, "DATA", tmp_path)
        monkeypatch.setattr(module, "ATOL", 0.0)
        if hasattr(module, "RTOL"):
            monkeypatch.setattr(module, "RTOL", 0.0)
    test_small_stack_matches_official(fused_attn=False)
    t_ifer.test_ifer_base_matches_official()
    t_sg2.test_golden_generator_256()
    t_sg2.test_golden_generator_32_mixing_constant_noise_truncation_wplus()
    t_disc.test_golden_official_moco_discriminator_16()
    if rosinality:
        t_sg2.test_golden_rosinality_discriminator_32()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["as_released", "as_described"])
def test_cuda_matches_cpu(mode):
    """The tiny ASIT (encoder + decoder) gives the CPU's outputs on CUDA in fp32 (TF32 off), in both modes."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    net = tiny_asit(seed=5, mode=mode)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        cpu_styles, cpu_structure, _ = net.encoder(x)
        cpu_img = net(x)
        net.cuda()
        gpu_styles, gpu_structure, _ = net.encoder(x.cuda())
        gpu_img = net(x.cuda())
    # Same bound as the CPU parity with the official code; not yet measured on a GPU (none in the session that
    # wrote this test). A wrong kernel or a lost quirk moves these outputs by far more.
    for got, want in ((gpu_styles, cpu_styles), (gpu_structure, cpu_structure), (gpu_img, cpu_img)):
        torch.testing.assert_close(got.cpu(), want, atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------------------------------------
# Quirks


def test_global_query_window_to_image_mapping():
    """as_released: window i of the B*nW windows gets image i % B's query; as_described: image i // nW."""
    B, nW, C, ws, heads = 3, 4, 8, 2, 2
    q_global = torch.arange(B, dtype=torch.float32)[:, None, None, None].expand(B, C, ws, ws).contiguous()
    rel = WindowAttentionGlobal(C, heads, ws, quirks=get_quirks("as_released")).global_query(q_global, nW)
    desc = WindowAttentionGlobal(C, heads, ws, quirks=get_quirks("as_described")).global_query(q_global, nW)
    idx = torch.arange(B * nW)
    assert torch.equal(rel[:, 0, 0, 0], (idx % B).float())
    assert torch.equal(desc[:, 0, 0, 0], (idx // nW).float())


def test_head_transpose_fix_splits_channels_per_token():
    C, ws, heads = 4, 2, 2
    q_global = torch.arange(C * ws * ws, dtype=torch.float32).view(1, C, ws, ws)
    desc = WindowAttentionGlobal(C, heads, ws, quirks=get_quirks("as_described")).global_query(q_global, 1)
    # token n, head h, dim d must be channel h*hd + d at spatial position n
    expected = q_global.flatten(2).transpose(1, 2).reshape(1, ws * ws, heads, C // heads).transpose(1, 2)
    assert torch.equal(desc, expected)
    rel = WindowAttentionGlobal(C, heads, ws, quirks=get_quirks("as_released")).global_query(q_global, 1)
    assert torch.equal(rel, q_global.reshape(1, heads, ws * ws, C // heads))


def test_as_described_is_batch_independent():
    enc = tiny_encoder("as_described")
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        full = enc(x)[0]
        single = torch.cat([enc(x[i:i + 1])[0] for i in range(4)])
        permuted = enc(x[perm])[0]
    torch.testing.assert_close(full, single, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(permuted, full[perm], atol=1e-5, rtol=1e-5)


def test_as_released_depends_on_batch():
    enc = tiny_encoder("as_released")
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = enc(x)[0]
        single = enc(x[:1])[0]
        permuted = enc(x[torch.tensor([1, 0, 2, 3])])[0]
    assert (full[0] - single[0]).abs().max() > 1e-3
    assert (full[0] - permuted[1]).abs().max() > 1e-3


@pytest.mark.parametrize("flag", ["global_query_batch_tiling", "channels_last_view", "global_query_no_head_transpose"])
def test_each_gcvit_quirk_flag_changes_the_output(flag):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = tiny_encoder("as_described")(x)[0]
        one = tiny_encoder(get_quirks("as_described", **{flag: True}))(x)[0]
    assert (base - one).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------
# Fused attention and determinism


@pytest.mark.parametrize("mode", ["as_released", "as_described"])
def test_fused_attention_matches_explicit(mode):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = tiny_encoder(mode, fused_attn=False)(x)
        fused = tiny_encoder(mode, fused_attn=True)(x)
    for a, b in zip(ref[:2], fused[:2]):
        torch.testing.assert_close(b, a, atol=SDPA_ATOL, rtol=SDPA_ATOL)


def test_asit_eval_is_deterministic_and_uses_structure():
    net = tiny_asit()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = net(x)
        b, codes, feats = net(x, return_latents=True, return_features=True)
        c = net(x, use_struct=False)
    assert a.shape == (2, 3, 64, 64) and torch.equal(a, b)
    assert codes.shape == (2, 10, 128) and len(feats) == 3
    assert (a - c).abs().max() > 1e-3  # the structure code replaces the learned constant
    with torch.no_grad():
        raw = net.encoder(x)[0]
    torch.testing.assert_close(codes, raw + net.latent_avg)  # start_from_latent_avg


def test_asit_train_decoder_flag_and_backward():
    net = tiny_asit()
    net.train()
    net(torch.randn(2, 3, 64, 64)).square().mean().backward()
    assert all(p.grad is None for p in net.decoder.parameters())
    assert net.encoder.styles[0].linear.weight.grad is not None
    net.set_train_decoder(True)
    assert all(p.requires_grad for p in net.decoder.parameters())


def test_asit_requires_latent_avg():
    net = ifer.create_model("asit_tiny")
    with pytest.raises(RuntimeError, match="latent_avg"):
        net(torch.randn(1, 3, 64, 64))


# ---------------------------------------------------------------------------------------------
# Checkpoints


def test_asit_tiny_checkpoint_roundtrip(tmp_path):
    net = tiny_asit(seed=5)
    path = tmp_path / "asit.pt"
    net.save_checkpoint(path, opts={"output_size": 64})
    other = ifer.create_model("asit_tiny").eval()
    other.load_checkpoint(path)
    assert torch.equal(other.latent_avg, net.latent_avg)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(other(x), net(x))


def test_asit_load_decoder_from_rosinality_file(tmp_path):
    src = tiny_asit(seed=1)
    torch.save({"g_ema": src.decoder.state_dict(), "args": {"size": 64}}, tmp_path / "g.pt")
    net = ifer.create_model("asit_tiny")
    net.load_decoder(tmp_path / "g.pt", n_mean_latent=256, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(net.decoder.state_dict().values(), src.decoder.state_dict().values()))
    assert net.latent_avg.shape == (128,)


def test_asit_builds_from_its_config_section(tmp_path):
    """Mode, frozen decoder from the user's file, and ``latent_avg_samples`` (seeded by the run's seed) all apply."""
    src = tiny_asit(seed=1)
    torch.save({"g_ema": src.decoder.state_dict()}, tmp_path / "g.pt")  # no latent_avg in the file
    section = {"model": "asit_tiny", "mode": "as_released", "train_decoder": False, "start_from_latent_avg": True,
               "stylegan_weights": str(tmp_path / "g.pt"), "latent_avg_samples": 300}
    net = build_from_config(section, seed=4)
    assert net.encoder.quirks == get_quirks("as_released")
    assert not any(p.requires_grad for p in net.decoder.parameters())
    assert all(torch.equal(a, b) for a, b in zip(net.decoder.state_dict().values(), src.decoder.state_dict().values()))
    expected = src.init_latent_avg(300, seed=4)
    assert torch.equal(net.latent_avg, expected)
    assert not torch.equal(net.latent_avg, src.init_latent_avg(100_000, seed=0))  # the old hard-coded draw
    with pytest.raises(MissingWeightsError, match="550000.pt"):
        build_from_config({**section, "stylegan_weights": None})


def test_asit_checkpoint_records_the_resolved_quirks(tmp_path):
    net = tiny_asit(seed=0, mode="as_released")
    net.save_checkpoint(tmp_path / "a.pt", opts={"step": 3})
    opts = torch.load(tmp_path / "a.pt", map_location="cpu", weights_only=True)["opts"]
    assert opts["step"] == 3 and opts["quirks"] == resolved_quirks("as_released")
    assert opts["quirks"]["mode"] == "as_released" and opts["quirks"]["flags"]["global_query_batch_tiling"] is True


@pytest.mark.parametrize("name", ["asit_encoder_tiny", "asit_tiny"])
def test_tiny_strict_roundtrip_via_create_model(tmp_path, name):
    model = ifer.create_model(name)
    path = tmp_path / f"{name}.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    again = ifer.create_model(name, checkpoint_path=path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize("name", ["asit_encoder_base", "asit_base"])
def test_base_strict_roundtrip_on_meta(name):
    """Base models are too big to write in a unit test; the strict key/shape round trip runs on meta."""
    from ifer.core.loading import first_mismatch

    with torch.device("meta"):
        a, b = ifer.create_model(name), ifer.create_model(name)
    assert first_mismatch(b.state_dict(), a.state_dict()) is None
    b.load_state_dict(a.state_dict(), strict=True)


def test_wrong_checkpoint_names_file_and_key(tmp_path):
    tiny = ifer.create_model("asit_tiny")
    path = tmp_path / "tiny_asit.pt"
    torch.save({"state_dict": tiny.state_dict(), "latent_avg": torch.zeros(128)}, path)
    with torch.device("meta"):
        base = ifer.create_model("asit_base")
    with pytest.raises(CheckpointError) as e:
        base.load_checkpoint(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "encoder.patch_embed" in msg
    broken = tmp_path / "truncated.pt"
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        tiny.load_checkpoint(broken)
