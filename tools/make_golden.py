"""Regenerate the parity fixtures in tests/data/golden from the official code (imported from the user's checkouts).

Each fixture is the official module's output for weights from this suite's seeded initialisers
(``ifer.bench.init``: they fill a ``state_dict`` by key name, so the official module and ours get identical
values) on seeded inputs; the tests rebuild our module the same way and compare. Inputs the tests read back from
the file (``z``, noise maps, ...) are stored in it; the others are re-drawn by the tests from the same seeds.

    python tools/make_golden.py --official ../IFER-master --rosinality ../stylegan2-pytorch --out /tmp/golden --check

``--check`` reuses the inputs stored in the committed fixtures (tests/data/golden), compares every regenerated tensor
with the committed one and prints the largest difference. Fixtures are CPU fp32 and not bitwise portable: other CPU kernels sum in another order (the tests'
tolerances say what was measured). ``--only`` picks fixtures by name.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official import official, rosinality  # noqa: E402  (tools/ is not a package)

from ifer.bench.init import deterministic_init_, seeded_init_  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _stored_inputs(args, name: str) -> dict[str, torch.Tensor]:
    """With ``--check``, the inputs stored in the committed fixture (the tests read them from the file), so that the
    outputs can be compared; otherwise none, and fresh seeded inputs are drawn."""
    path = ROOT / "tests" / "data" / "golden" / f"{name}.safetensors"
    return load_file(path) if args.check and path.is_file() else {}


def gcvit_small_as_released(args) -> dict[str, torch.Tensor]:
    """Official GC ViT v1 blocks (PatchEmbed, two GCViTLayers, ASIT's GradualStyleBlock); tests/test_gcvit_asit.py."""
    gc = official(args.official).gc_vit
    m = nn.ModuleDict(dict(
        embed=gc.PatchEmbed(3, 32),
        l0=gc.GCViTLayer(32, 2, 16, 2, 8, downsample=True, mlp_ratio=2, layer_scale=1e-5),
        l1=gc.GCViTLayer(64, 2, 8, 4, 8, downsample=False, mlp_ratio=2, layer_scale=1e-5),
        head=gc.GradualStyleBlock(64, 64, 8, window=4)))
    m = deterministic_init_(m, seed=7).eval()
    x = torch.randn(3, 3, 64, 64, generator=_rng(1234))
    with torch.no_grad():
        e = m["embed"](x)
        a = m["l0"](e)
        b = m["l1"](a)
        return {"embed": e, "l0": a, "l1": b, "head": m["head"](b.permute(0, 3, 1, 2))}


def ifer_base_as_released(args) -> dict[str, torch.Tensor]:
    """Official ``scripts/ifer.py: ifer_model(None, 512, 7)``; tests/test_ifer_model.py (about 1 GB of RAM)."""
    net = deterministic_init_(official(args.official).ifer.ifer_model(None, 512, 7), seed=11).eval()
    x = torch.randn(2, 3, 256, 256, generator=_rng(4321))
    with torch.no_grad():
        styles, structure, feats = net.feature_model(x)
        out = {"styles": styles, "structure": structure, "logits": net(x)}
    for i, f in enumerate(feats):
        out[f"feature{i}_sub"] = f[:, :16, ::8, ::8]
        out[f"feature{i}_mean"] = f.mean(dim=(2, 3))
    return out


def stylegan2_g256(args) -> dict[str, torch.Tensor]:
    """Official IFER ``Generator(256, 512, 8)`` (rosinality's plus ``constant`` / features); tests/test_stylegan2.py."""
    g = seeded_init_(official(args.official).stylegan2.Generator(256, 512, 8), 1).eval()
    z = _stored_inputs(args, "stylegan2_g256").get("z", torch.randn(1, 512, generator=_rng(256)))
    with torch.no_grad():
        img, _, feats = g([z], randomize_noise=False)
    return {"z": z, "image": img, **{f"feature_{f.shape[-1]}_mean": f.mean((2, 3)) for f in feats}}


def stylegan2_g32(args) -> dict[str, torch.Tensor]:
    """Style mixing with a given structure code and noise, truncation, and a W+ input; tests/test_stylegan2.py."""
    g = seeded_init_(official(args.official).stylegan2.Generator(32, 64, 2), 2).eval()
    gen = _rng(32)
    out = {"z1": torch.randn(2, 64, generator=gen), "z2": torch.randn(2, 64, generator=gen),
           "constant": torch.randn(2, 512, 4, 4, generator=gen)}
    noise = [torch.randn(2, *getattr(g.noises, f"noise_{i}").shape[1:], generator=gen) for i in range(g.num_layers)]
    out.update({f"noise_{i}": n for i, n in enumerate(noise)})
    out["truncation_latent"] = torch.randn(1, 64, generator=gen)
    out["wplus"] = torch.randn(2, g.n_latent, 64, generator=gen)
    stored = _stored_inputs(args, "stylegan2_g32")
    out.update({k: stored[k] for k in out if k in stored})
    noise = [out[f"noise_{i}"] for i in range(g.num_layers)]
    with torch.no_grad():
        out["image_mix"], out["latent_mix"], feats = g([out["z1"], out["z2"]], out["constant"], return_latents=True,
                                                       inject_index=3, noise=noise)
        out["image_trunc"], _, _ = g([out["z1"]], truncation=0.7, truncation_latent=out["truncation_latent"],
                                     randomize_noise=False)
        out["image_wplus"], _, _ = g([out["wplus"]], input_is_latent=True, randomize_noise=False)
    for f in feats:
        out[f"feature_{f.shape[-1]}_mean"] = f.mean((2, 3))
        out[f"feature_{f.shape[-1]}_slice"] = f[:, :2]
    return out


def stylegan2_d32(args) -> dict[str, torch.Tensor]:
    """rosinality's ``Discriminator(32)`` (the StyleGAN2 discriminator ASIT's inversion discriminator derives from)."""
    if args.rosinality is None:
        raise SystemExit("stylegan2_d32 needs --rosinality (a rosinality/stylegan2-pytorch checkout)")
    d = seeded_init_(rosinality(args.rosinality, args.official).Discriminator(32), 3)
    with torch.no_grad():
        return {"score": d(torch.randn(4, 3, 32, 32, generator=_rng(31)))}


def inversion_disc_16(args) -> dict[str, torch.Tensor]:
    """Official MoCo ``Discriminator(m=0.9)``, its ``DiscriminatorModel`` built at 16 px (the class hard-codes 256):
    three forwards, each moving the key network; tests/test_inversion_disc.py."""
    sg2 = official(args.official).stylegan2
    full_size = sg2.DiscriminatorModel
    sg2.DiscriminatorModel = lambda size, *a, **kw: full_size(16, *a, **kw)
    try:
        d = sg2.Discriminator(m=0.9)
    finally:
        sg2.DiscriminatorModel = full_size
    seeded_init_(d.model_q, 4)
    d.model_k.load_state_dict(d.model_q.state_dict())
    seeded_init_(d.model_q, 5)
    a = torch.randn(2, 3, 16, 16, generator=_rng(41))
    b = torch.randn(2, 3, 16, 16, generator=_rng(42))
    out = {}
    with torch.no_grad():
        out["query_embedding"] = d.model_q(a)
        for step in range(3):
            out[f"score_{step}"] = d(a, b)
            out[f"key_param_sum_{step}"] = torch.stack([p.double().sum() for p in d.model_k.parameters()]).sum().reshape(1)
    return out


FIXTURES: dict[str, Callable] = {f.__name__: f for f in (gcvit_small_as_released, ifer_base_as_released,
                                                         stylegan2_g256, stylegan2_g32, stylegan2_d32,
                                                         inversion_disc_16)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", required=True, help="checkout of Talented-Q/IFER-master (2f21002)")
    p.add_argument("--rosinality", help="checkout of rosinality/stylegan2-pytorch (for stylegan2_d32)")
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "golden")
    p.add_argument("--only", nargs="*", choices=sorted(FIXTURES), default=None)
    p.add_argument("--check", action="store_true", help="compare with the committed fixtures in tests/data/golden")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or FIXTURES:
        tensors = {k: v.detach().contiguous() for k, v in FIXTURES[name](args).items()}
        save_file(tensors, args.out / f"{name}.safetensors")
        line = f"{name}: {len(tensors)} tensors -> {args.out / f'{name}.safetensors'}"
        if args.check:
            committed = load_file(ROOT / "tests" / "data" / "golden" / f"{name}.safetensors")
            if set(committed) != set(tensors):
                line += f"; KEYS DIFFER: {sorted(set(committed) ^ set(tensors))}"
            else:
                diff = max((tensors[k].double() - committed[k].double()).abs().max().item() for k in tensors)
                line += f"; max abs diff vs committed {diff:.3g}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
