"""``python -m ifer.data``: generate SynthFER, verify datasets, record fingerprints, draw sample grids.

    python -m ifer.data synthfer --out datasets/synthfer --res 64 --n-train-identities 400 --seed 0
    python -m ifer.data verify --root datasets --synthfer-root synthetic/synthfer [--names rafdb sfew] [--deep]
    python -m ifer.data fingerprint --root datasets --name rafdb --write
    python -m ifer.data grid --out docs/img --res 64 128 256
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

from ifer.data.synthfer import SynthFERConfig, generate_synthfer, save_grid
from ifer.data.verify import fingerprint, run_verify


def _synthfer(args: argparse.Namespace) -> int:
    cfg = SynthFERConfig(**{f.name: getattr(args, f.name) for f in fields(SynthFERConfig)})
    t0 = time.perf_counter()
    manifest = generate_synthfer(args.out, cfg, workers=args.workers)
    n = sum(manifest["split_sizes"].values())
    print(f"SynthFER: {n} images at {cfg.res}px in {time.perf_counter() - t0:.1f}s -> {args.out} "
          f"(splits {manifest['split_sizes']}, digest {manifest['digest'][:16]})")
    return 0


def _verify(args: argparse.Namespace) -> int:
    return run_verify(args.root, args.names, deep=args.deep, workers=args.workers, out=args.report,
                      synthfer_root=args.synthfer_root, check_splits=not args.no_splits)


def _fingerprint(args: argparse.Namespace) -> int:
    entry = fingerprint(args.root, args.name, write=args.write)
    print(json.dumps({k: entry[k] for k in ("count", "digest", "manifest")}, indent=1))
    return 0


def _grid(args: argparse.Namespace) -> int:
    for res in args.res:
        print(save_grid(Path(args.out) / f"synthfer_grid_{res}.png", res, args.seed, rows=4 if res < 256 else 2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ifer.data", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("synthfer", help="generate SynthFER")
    g.add_argument("--out", required=True)
    defaults = SynthFERConfig()
    for f in fields(SynthFERConfig):
        g.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(getattr(defaults, f.name)),
                       default=getattr(defaults, f.name))
    g.add_argument("--workers", type=int, default=None, help="processes (default: CPU count; output is identical)")
    g.set_defaults(fn=_synthfer)

    v = sub.add_parser("verify", help="check file counts / checksums against fingerprints")
    v.add_argument("--root", default="datasets")
    v.add_argument("--names", nargs="*", default=None, help="datasets that must be present (default: those found)")
    v.add_argument("--synthfer-root", default=None, help="SynthFER folder (default: <root>/synthfer)")
    v.add_argument("--report", default=None, help="write the JSON report here")
    v.add_argument("--no-splits", action="store_true", help="skip the protocol split-size check via the adapters")
    v.add_argument("--deep", action="store_true", help="decode every image; name corrupt, truncated, zero-byte ones")
    v.add_argument("--workers", type=int, default=None, help="decoding processes for --deep (default: CPU count)")
    v.set_defaults(fn=_verify)

    f = sub.add_parser("fingerprint", help="compute (and with --write, record) a real dataset's fingerprint")
    f.add_argument("--root", default="datasets")
    f.add_argument("--name", required=True)
    f.add_argument("--write", action="store_true")
    f.set_defaults(fn=_fingerprint)

    d = sub.add_parser("grid", help="sample grids for the docs")
    d.add_argument("--out", default="docs/img")
    d.add_argument("--res", type=int, nargs="+", default=[64, 128, 256])
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(fn=_grid)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; a data problem prints one line (``IFER_TRACEBACK=1`` for the traceback) and returns 2."""
    import os

    from ifer.data.common import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except DataError as e:
        if os.environ.get("IFER_TRACEBACK"):
            raise
        print(f"python -m ifer.data {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
