"""``ifer <verb>``: one command per pipeline stage (dvc.yaml calls these), plus config and data helpers.

    ifer config --profile tiny --out params.yaml      # resolve a profile into the DVC params file
    ifer data --params params.yaml                     # generate SynthFER
    ifer verify --params params.yaml --deep            # datasets the config reads: counts, labels, digests, decode
    ifer train-asit --params params.yaml               # also under: torchrun --standalone --nproc_per_node=2 -m ifer.cli train-asit ...
    ifer fingerprint-inputs --params params.yaml      # dataset/weight fingerprints that dvc.yaml's stages depend on
    ifer finetune-asit --params params.yaml seed=0     # released protocol: ASIT fine-tuned on RAF-DB (rafdb_encode)
    ifer fer-init --params params.yaml                 # what each FER run starts from, per protocol
    ifer invert --params params.yaml seed=1            # the ASIT run of seed 1 (one per asit_seeds entry)
    ifer eval-inversion --params params.yaml
    ifer train-fer --params params.yaml [--protocol clean] [--method ifer] [--dataset synthfer] [--seed 0]
    ifer eval-fer --params params.yaml
    ifer report --params params.yaml
    ifer readme --results results/tiny                 # copy the run's tables + provenance into README.md
    ifer compare git:HEAD:results/tiny results/tiny     # do two runs agree within the statistical tolerance?
    ifer eval-checkpoint ifer_rafdb.pth.tar --dataset rafdb --profile paper   # an official checkpoint
    ifer predict photos/ --checkpoint best.pt          # expression of the face in each photo -> CSV
    ifer invert --folder photos/ --checkpoint asit_best.pt   # FFHQ-aligned inversions + grid.png
Any trailing ``key.sub=value`` overrides the params file (e.g. ``asit.train.steps=100``). With
``launcher.nproc_per_node: N`` (N > 1) the training, invert and eval verbs rerun themselves under
``torchrun --standalone --nproc_per_node=N``: that is how dvc.yaml's stages go multi-GPU.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

# Idle OpenMP threads sleep instead of spinning (read when torch loads libgomp, so before any ifer import): with
# the default spin-wait, a 2-thread step ran 3.5x slower than a 1-thread one while another process held one of the
# 2 cores, and 1.4x with PASSIVE (fer_resnet18_tiny, 2-core Xeon, 2026-12-02; results/benchmarks/). Set it to
# ACTIVE yourself on a machine the run has to itself.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ifer.core.config import PROFILES, load_config, save_resolved  # noqa: E402


def _cfg(args):
    from ifer.core.weights import set_skip_sha256

    cfg = load_config(args.profile, args.params, args.overrides)
    set_skip_sha256(cfg.get_path("weights.skip_sha256", []) or [])
    return cfg


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input the user can fix (missing data/weights, bad files or config, a diverged run)."""
    from ifer.core.config import ConfigError
    from ifer.core.loading import CheckpointError
    from ifer.core.weights import WeightsHashError
    from ifer.data.common import DataError
    from ifer.report.readme import ReadmeMarkerError
    from ifer.train.checkpoint import NonFiniteLossError, ResumeMismatchError

    return (ConfigError, DataError, CheckpointError, NonFiniteLossError, ResumeMismatchError, ReadmeMarkerError,
            WeightsHashError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    """Run one verb; a user-fixable error prints one line ``ifer <verb>: error: ...`` and returns 2.

    ``IFER_TRACEBACK=1`` re-raises instead (full traceback, for debugging).
    """
    import os

    from ifer.train.interrupt import TrainingInterrupted

    try:
        return _main(argv)
    except TrainingInterrupted as e:
        args = list(sys.argv[1:] if argv is None else argv)
        if os.environ.get("RANK", "0") == "0":  # one line per run, not per torchrun worker
            print(f"ifer {_verb(args)}: interrupted at step {e.step}; resume with: {_resume_command(args)}",
                  file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (loading, building, scoring): nothing to save
        if os.environ.get("IFER_TRACEBACK"):
            raise
        print(f"ifer {_verb(list(sys.argv[1:] if argv is None else argv))}: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        if os.environ.get("IFER_TRACEBACK"):
            raise
        verb = next((a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")), "")
        print(f"ifer {verb}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # a full disk, a read-only or unwritable output folder: outputs are written atomically, so the previous
        # results are intact; say so in one line
        import errno

        if e.errno not in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.EPERM) \
                or os.environ.get("IFER_TRACEBACK"):
            raise
        verb = _verb(list(argv if argv is not None else sys.argv[1:]))
        print(f"ifer {verb}: error: {type(e).__name__}: cannot write {e.filename or 'an output file'}: "
              f"{e.strerror or e}; the previous outputs are left intact", file=sys.stderr)
        return 2


def _verb(args: list[str]) -> str:
    return next((a for a in args if not a.startswith("-")), "")


def _resume_command(args: list[str]) -> str:
    """The command that continues an interrupted run: the same one, less ``--no-resume`` (which would restart it)."""
    import shlex

    return " ".join(["ifer", *(shlex.quote(a) for a in args if a != "--no-resume")])


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
    p = add("verify", "check datasets (counts, labels, fingerprints; --deep decodes every image) and print a report")
    p.add_argument("--root", default=None, help="datasets folder (default: paths.datasets of the config)")
    p.add_argument("--out", default=None, help="also write the JSON report here")
    p.add_argument("--deep", action="store_true", help="decode every image; name corrupt, truncated, zero-byte ones")
    p.add_argument("--workers", type=int, default=None, help="decoding processes for --deep (default: CPU count)")
    p = add("train-asit", "train the ASIT inversion network")
    _resume_flags(p)
    p = add("finetune-asit", "released protocol: fine-tune the trained ASIT on asit_finetune.dataset minus its holdout")
    _resume_flags(p)
    add("fingerprint-inputs", "fingerprint the configured datasets and weight files into runs/<profile>/inputs/")
    add("fer-init", "record what each FER run starts from (the ASIT checkpoint for IFER) in runs/<profile>/fer_init/")
    p = add("invert", "invert the inversion test set with the trained ASIT (or, with --folder, your own photos)")
    p.add_argument("--folder", default=None, help="invert the faces in this folder of photos instead (FFHQ-aligned)")
    p.add_argument("--checkpoint", default=None, help="with --folder: ASIT file (official layout; default: this run's)")
    p.add_argument("--out", default=None, help="with --folder: output folder (default <folder>_inversions)")
    add("eval-inversion", "score inversions (and the mean-image baseline)")
    p = add("train-fer", "train the FER methods (each protocol x method x dataset x seed)")
    p.add_argument("--protocol", action="append", help="a `protocols` entry (default: all of them)")
    p.add_argument("--method", action="append")
    p.add_argument("--dataset", action="append")
    p.add_argument("--seed", action="append", type=int)
    _resume_flags(p)
    add("eval-fer", "score every FER run on its test split; identity probe on SynthFER")
    add("report", "comparison tables, plots and provenance into results/<profile>/")
    p = add("eval-checkpoint", "evaluate an official ASIT or IFER checkpoint on a dataset's test split")
    p.set_defaults(positional="checkpoint")  # CHECKPOINT: official ASIT (encoder.*/decoder.*) or IFER (timm) file
    p.add_argument("--dataset", required=True, help="FER dataset (rafdb, sfew, affectnet7, ...) or inversion test set")
    p.add_argument("--class-folders", default="1,2,3,4,5,6,7",
                   help="the authors' class-folder names (ImageFolder sorts them into the head order); default "
                        "assumes RAF-DB's numbering 1..7")
    p.add_argument("--out", default=None, help="result JSON (default results/<profile>/released/...)")
    p = add("predict", "predict the expression of the face in every photo of FOLDER (CSV, one row per file)")
    p.set_defaults(positional="folder")  # FOLDER of JPEG/PNG photos, any size/mode, EXIF-rotated
    p.add_argument("--checkpoint", required=True, help="suite best.pt, or the official IFER file (see --class-folders)")
    p.add_argument("--method", default="ifer", help="FER method of the checkpoint (fer_methods key)")
    p.add_argument("--class-folders", default=None, help="official IFER file only: the authors' class folders "
                   "(default 1,2,3,4,5,6,7: RAF-DB numbering, an assumption)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 only with native CPU bf16 and >= 99.5%% measured fp32/bf16 agreement")
    p.add_argument("--agreement-dataset", default=None, help="test split for the agreement (default: first FER dataset)")
    p.add_argument("--out", default=None, help="CSV path (default <folder>_predictions.csv)")
    p = sub.add_parser("readme", help="copy results/<profile> tables and provenance into the README results block")
    p.add_argument("--results", default="results/tiny")
    p.add_argument("--readme", default="README.md")
    p = sub.add_parser("compare", help="do two results folders (or git:REV:PATH) agree within the statistical "
                                       "tolerance, per metric? exit 1 on any disagreement (rule: ifer/report/compare.py)")
    p.add_argument("a", metavar="RESULTS_A", help="a results folder or git:REV:PATH (e.g. git:HEAD:results/tiny)")
    p.add_argument("b", metavar="RESULTS_B", help="the same, for the other run")
    p.add_argument("--z", type=float, default=3.0,
                   help="test level in normal sigmas; applied as Student's t with the seed dof (default 3)")
    p.add_argument("--tolerance", action="append", metavar="METRIC=VALUE", help="absolute floor for a metric")
    args = ap.parse_args(argv)
    if getattr(args, "positional", None):
        _split_positional(ap, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.verb == "verify":
        return _verify(args)

    if args.verb == "compare":
        from ifer.report.compare import run

        try:
            return run(args.a, args.b, z=args.z, tolerances=args.tolerance)
        except ValueError as e:
            ap.error(str(e))

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

    if args.verb == "eval-checkpoint":
        return _eval_checkpoint(cfg, args)
    if args.verb == "predict":
        return _predict(cfg, args)
    if args.verb == "invert" and args.folder:
        return _invert_folder(cfg, args)

    from ifer import stages

    if args.verb == "fingerprint-inputs":
        stages.stage_fingerprint_inputs(cfg)
        return 0
    if args.verb == "fer-init":
        stages.stage_fer_init(cfg)
        return 0
    if args.verb in _DISTRIBUTED_VERBS and _launch_under_torchrun(cfg):
        return _torchrun(cfg, argv)

    from ifer.train.distributed import distributed_context

    with distributed_context(cfg.device) as info:
        if args.verb == "train-asit":
            stages.stage_train_asit(cfg, info, resume=not args.no_resume, resume_override=args.resume_override)
        elif args.verb == "finetune-asit":
            stages.stage_finetune_asit(cfg, info, resume=not args.no_resume, resume_override=args.resume_override)
        elif args.verb == "invert":
            stages.stage_invert(cfg, info)
        elif args.verb == "eval-inversion":
            stages.stage_eval_inversion(cfg, info)
        elif args.verb == "train-fer":
            stages.stage_train_fer(cfg, info, args.method, args.dataset, args.seed, resume=not args.no_resume,
                                   resume_override=args.resume_override, protocols=args.protocol)
        elif args.verb == "eval-fer":
            stages.stage_eval_fer(cfg, info)
        elif args.verb == "report":
            stages.stage_report(cfg)
    return 0


def _resume_flags(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-resume", action="store_true", help="start over, ignoring last.pt")
    g.add_argument("--resume-override", action="store_true",
                   help="resume last.pt although it was written with another model, mode or training config")


_DISTRIBUTED_VERBS = ("train-asit", "finetune-asit", "train-fer", "invert", "eval-inversion", "eval-fer")


def _launch_under_torchrun(cfg) -> bool:
    """``launcher.nproc_per_node`` > 1 and not already a torchrun worker (torchrun sets LOCAL_RANK)."""
    import os

    return int(cfg.get_path("launcher.nproc_per_node", 1) or 1) > 1 and "LOCAL_RANK" not in os.environ


def _torchrun(cfg, argv: list[str] | None) -> int:
    """Rerun this very command under ``torchrun --standalone --nproc_per_node=N`` (what dvc.yaml's stages get)."""
    import subprocess

    n = int(cfg.launcher.nproc_per_node)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "ifer.cli",
           *(sys.argv[1:] if argv is None else argv)]
    logging.getLogger("ifer").info("launcher.nproc_per_node=%d: %s", n, " ".join(cmd))
    return subprocess.call(cmd)


def _verify(args) -> int:
    """``ifer verify [--profile P | --params F] [DATASET ...] [key=value ...]``: datasets named, and those the
    config reads (when a profile or params file is given), must be present; exit 1 when any fails."""
    from ifer.data.verify import required_by, run_verify

    names = [a for a in args.overrides if "=" not in a]
    overrides = [a for a in args.overrides if "=" in a]
    required, synthfer_root, fingerprints, root = [], None, None, args.root
    if args.profile or args.params or overrides:
        cfg = load_config(args.profile, args.params, overrides)
        required, synthfer_root, fingerprints = required_by(cfg), cfg.data.synthfer.out, cfg.data.fingerprints
        root = root or cfg.paths.datasets
    return run_verify(root or "datasets", names or None, required=required, deep=args.deep, workers=args.workers,
                      out=args.out, synthfer_root=synthfer_root, fingerprints=fingerprints)


def _split_positional(ap, args) -> None:
    """A verb's one positional (e.g. CHECKPOINT) shares argv with the ``key=value`` overrides: argparse cannot
    split a ``nargs="*"`` list from a following positional, so the first item without ``=`` is taken here."""
    plain = [a for a in args.overrides if "=" not in a]
    if len(plain) != 1:
        ap.error(f"{args.verb}: expected one {args.positional.upper()} (and key=value overrides), got {plain}")
    setattr(args, args.positional, plain[0])
    args.overrides = [a for a in args.overrides if "=" in a]


def _predict(cfg, args) -> int:
    from pathlib import Path

    from ifer.data.build import fer_eval_transform
    from ifer.eval.predict import load_classifier, precision_for, predict_folder, write_csv

    folders = args.class_folders.split(",") if args.class_folders else None
    model, names = load_classifier(cfg, args.checkpoint, args.method, folders)
    precision, why, _ = precision_for(cfg, model, args.checkpoint, args.precision, args.method, args.agreement_dataset)
    print(f"precision: {precision} ({why})")
    if hasattr(model, "order"):
        print(f"class order of the official head: {', '.join(model.order)} (from class folders "
              f"{args.class_folders or '1,2,3,4,5,6,7'}; an assumption unless you know the authors' folders)")
    rows = predict_folder(model, args.folder, names, fer_eval_transform(cfg.fer_methods[args.method].train), precision)
    out = write_csv(rows, args.out or f"{Path(args.folder).resolve()}_predictions.csv")
    found = sum(r["face_found"] for r in rows)
    print(f"{len(rows)} files, {found} with a face, {sum(r['status'].startswith('unreadable') for r in rows)} "
          f"unreadable: {out}")
    return 0


def _invert_folder(cfg, args) -> int:
    from pathlib import Path

    from ifer.core.loading import read_checkpoint
    from ifer.eval.predict import invert_folder
    from ifer.eval.released import load_released_asit
    from ifer.stages import asit_dir

    path = Path(args.checkpoint or asit_dir(cfg) / "asit_best.pt")
    net = load_released_asit(cfg, path, read_checkpoint(path))
    out = Path(args.out or f"{Path(args.folder).resolve()}_inversions")
    rows = invert_folder(net, args.folder, out, cfg.asit.img_size, use_struct=cfg.asit.use_struct)
    print(f"{len(rows)} files, {sum(r['face_found'] for r in rows)} inverted: {out / 'grid.png'}, {out / 'inversions.csv'}")
    return 0


def _eval_checkpoint(cfg, args) -> int:
    import json
    from pathlib import Path

    from ifer.eval.released import describe, evaluate_released, result_path
    from ifer.train.distributed import resolve_device

    result = evaluate_released(cfg, args.checkpoint, args.dataset, args.class_folders.split(","),
                               device=resolve_device(cfg.device))
    out = Path(args.out) if args.out else result_path(cfg, result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(describe(result) + f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
