"""Regenerate tests/data/official_keys/*.json (key -> shape of the official ``state_dict()``, in order) from the
official code, imported from the user's checkouts. The modules are built on the CPU one at a time (the official GC ViT
calls ``.item()`` in ``__init__``, which the meta device refuses): about 1.2 GB of RAM for the largest.

    python tools/dump_official_keys.py --official ../IFER-master --rosinality ../stylegan2-pytorch --check

``--check`` compares with the committed files (same keys, shapes and order) instead of only writing to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
from argparse import Namespace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official import official, rosinality  # noqa: E402  (tools/ is not a package)

ROOT = Path(__file__).resolve().parents[1]


def _asit_base(off):
    # The official wrapper loads a StyleGAN2 file in __init__; give it a fresh generator's weights through a patched
    # torch.load, so no file is needed. opts as in options/train_options.py for the released run.
    opts = Namespace(output_size=256, checkpoint_path=None, stylegan_weights="<in memory>", learn_in_w=False,
                     start_from_latent_avg=True, device="cpu")
    real_load = torch.load
    torch.load = lambda *a, **kw: {"g_ema": off.stylegan2.Generator(256, 512, 8).state_dict()}
    try:
        return off.asit.ASIT(opts)
    finally:
        torch.load = real_load


def modules(args) -> dict:
    off = official(args.official)
    out = {
        "asit_encoder_base": lambda: off.gc_vit.gc_vit_base(),
        "asit_base": lambda: _asit_base(off),
        "ifer_base": lambda: off.ifer.ifer_model(None, 512, 7),
        "inversion_disc_256": lambda: off.stylegan2.Discriminator(),
        "stylegan2_generator_256": lambda: off.stylegan2.Generator(256, 512, 8),
    }
    if args.rosinality is not None:
        out["stylegan2_discriminator_256"] = lambda: rosinality(args.rosinality, args.official).Discriminator(256)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", required=True, help="checkout of Talented-Q/IFER-master (2f21002)")
    p.add_argument("--rosinality", help="checkout of rosinality/stylegan2-pytorch (stylegan2_discriminator_256)")
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "official_keys")
    p.add_argument("--check", action="store_true", help="compare with the committed files")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    bad = 0
    for name, build in modules(args).items():
        layout = {k: list(v.shape) for k, v in build().state_dict().items()}
        (args.out / f"{name}.json").write_text(
            "{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in layout.items()) + "\n}\n")
        line = f"{name}: {len(layout)} entries"
        if args.check:
            committed = json.loads((ROOT / "tests" / "data" / "official_keys" / f"{name}.json").read_text())
            same = list(committed.items()) == list(layout.items())
            bad += not same
            line += "; identical to the committed file" if same else "; DIFFERS from the committed file"
        print(line, flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
