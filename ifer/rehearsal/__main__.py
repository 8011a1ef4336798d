"""``python -m ifer.rehearsal write --root DIR`` (inputs only) or ``run --scratch DIR`` (the whole rehearsal).

    python -m ifer.rehearsal write --root .rehearsal/root
    python -m ifer.rehearsal run --scratch .rehearsal
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ifer.rehearsal", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("write", help="write the miniature datasets (DIR/datasets) and weight files (DIR/weights)")
    p.add_argument("--root", required=True)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("run", help="write the inputs and run the paper pipeline through dvc repro in a scratch copy")
    p.add_argument("--scratch", default=".rehearsal")
    p.add_argument("--repo", default=".")
    p.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.verb == "write":
        from ifer.rehearsal.run import write_root

        for kind, paths in write_root(args.root, args.seed).items():
            for name, path in paths.items():
                print(f"{kind:8s} {name:30s} {path}")
        return 0
    from ifer.rehearsal.run import RehearsalError, run

    try:
        run(args.scratch, args.repo, args.seed)
    except RehearsalError as e:
        print(f"ifer rehearsal: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
