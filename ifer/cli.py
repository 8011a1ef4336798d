"""``ifer <verb>``: one command per pipeline stage (dvc.yaml calls these), plus config and data helpers.

    ifer config --profile tiny --out params.yaml      # resolve a profile into the DVC params file
    ifer data --params params.yaml                     # generate SynthFER
    ifer verify --root datasets                        # check real datasets against their fingerprints
    ifer train-asit --params params.yaml               # also under: torchrun --standalone --nproc_per_node=2 -m ifer.cli train-asit ...
    ifer invert --params params.yaml
    ifer eval-inversion --params params.yaml
    ifer train-fer --params params.yaml [--method ifer] [--dataset synthfer] [--seed 0]
    ifer eval-fer --params params.yaml
    ifer report --params params.yaml
    ifer readme --results results/tiny                 # copy the run's tables + provenance into README.md
Any trailing ``key.sub=value`` overrides the params file (e.g. ``asit.train.steps=100``).
"""
from __future__ import annotations

import argparse
import logging
import sys

from ifer.core.config import PROFILES, load_config, save_resolved


def _cfg(args):
    return load_config(args.profile, args.params, args.overrides)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input the user can fix (missing data/weights, bad files or config, a diverged run)."""
    from ifer.core.config import ConfigError
    from ifer.core.loading import CheckpointError
    from ifer.data.common import DataError
    from ifer.report.readme import ReadmeMarkerError
    from ifer.train.checkpoint import NonFiniteLossError

    return (ConfigError, DataError, CheckpointError, NonFiniteLossError, ReadmeMarkerError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    """Run one verb; a user-fixable error prints one line ``ifer <verb>: error: ...`` and returns 2.

    ``IFER_TRACEBACK=1`` re-raises instead (full traceback, for debugging).
    """
    import os

    try:
        return _main(argv)
    except _user_errors() as e:
        if os.environ.get("IFER_TRACEBACK"):
            raise
        verb = next((a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")), "")
        print(f"ifer {verb}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ifer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)

    def add(name, help_):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--profile", choices=PROFILES, default=None)
        p.add_argument("--params", action="append", default=[], help="YAML layer(s) over the profile, e.g. params.yaml")
        p.add_argument("overrides", nargs="*", help="key.sub=value")
        return p

    p = add("config", "print or save a resolved config")
    p.add_argument("--out")
    add("data", "generate the SynthFER dataset configured in data.synthfer")
    p = sub.add_parser("verify", help="verify real datasets against their expected fingerprints")
    p.add_argument("--root", default="datasets")
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.add_argument("names", nargs="*")
    p = add("train-asit", "train the ASIT inversion network")
    p.add_argument("--no-resume", action="store_true")
    add("invert", "invert the inversion test set with the trained ASIT")
    add("eval-inversion", "score inversions (and the mean-image baseline)")
    p = add("train-fer", "train the FER methods (each method x dataset x seed)")
    p.add_argument("--method", action="append")
    p.add_argument("--dataset", action="append")
    p.add_argument("--seed", action="append", type=int)
    p.add_argument("--no-resume", action="store_true")
    add("eval-fer", "score every FER run on its test split; identity probe on SynthFER")
    add("report", "comparison tables, plots and provenance into results/<profile>/")
    p = sub.add_parser("readme", help="copy results/<profile> tables and provenance into the README results block")
    p.add_argument("--results", default="results/tiny")
    p.add_argument("--readme", default="README.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.verb == "verify":
        from ifer.data.verify import verify_datasets, write_report

        report = verify_datasets(args.root, args.names or None)
        if args.out:
            write_report(report, args.out)
        return 0 if report["ok"] else 1

    if args.verb == "readme":
        from ifer.report.readme import update_readme

        update_readme(args.readme, args.results)
        return 0

    cfg = _cfg(args)
    if args.verb == "config":
        if args.out:
            save_resolved(cfg, args.out)
        else:
            import yaml

            sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    if args.verb == "data":
        from ifer.data.build import generate_configured_synthfer

        generate_configured_synthfer(cfg)
        return 0

    from ifer import stages
    from ifer.train.distributed import distributed_context

    with distributed_context(cfg.device) as info:
        if args.verb == "train-asit":
            stages.stage_train_asit(cfg, info, resume=not args.no_resume)
        elif args.verb == "invert":
            stages.stage_invert(cfg, info)
        elif args.verb == "eval-inversion":
            stages.stage_eval_inversion(cfg)
        elif args.verb == "train-fer":
            stages.stage_train_fer(cfg, info, args.method, args.dataset, args.seed, resume=not args.no_resume)
        elif args.verb == "eval-fer":
            stages.stage_eval_fer(cfg, info)
        elif args.verb == "report":
            stages.stage_report(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
