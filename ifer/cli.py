"""``ifer <verb>``: the user commands, and one verb per pipeline stage (dvc.yaml calls those).

    ifer --help                                        # the verbs, grouped; `ifer VERB --help` has examples
    ifer config --profile tiny --out params.yaml       # resolve a profile into the DVC params file
    ifer weights --profile paper                       # every weight file the profile reads: present or missing
    ifer predict photos/ --checkpoint best.pt          # expression of the face in each photo -> CSV
    ifer train-fer --params params.yaml --method ifer  # a pipeline stage (dvc.yaml runs these)

``--help`` and ``--version`` import neither torch nor numpy: every verb imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

# OpenMP wait policy, read when torch loads libgomp (so before any ifer import). Measured on a 2-core Xeon
# (ifer_tiny bf16 training step, batch 32, 2 threads, 2026-12-02; docs/performance.md): idle machine: default 203 ms,
# ACTIVE 206, PASSIVE 391; another process busy on one core: default 3567 ms (the 17x collapse: libgomp's spin
# then sleep), PASSIVE 1005, ACTIVE 682-698. ACTIVE is the best 2-thread choice in both cases; set the variable
# yourself to override it (or OMP_NUM_THREADS=1 on a machine that others share: 290 ms idle).
os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")

from ifer.core.config import PROFILES, load_config, save_resolved  # noqa: E402  (yaml only: no torch)


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
    except SystemExit:  # --help, --version, a usage error: argparse's exit, before the clause below imports torch
        raise
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


# ---------------------------------------------------------------------------------------------- the parser
# Verbs in the order `ifer --help` lists them, in two groups. Every verb gets a description (its summary) and an
# epilog of example commands; every argument a help text (tests/test_cli_help.py checks both).
USER_VERBS = ("config", "weights", "predict", "eval-checkpoint", "invert", "compare", "readme", "verify",
              "plan", "launch")
PIPELINE_VERBS = ("data", "verify", "fingerprint-inputs", "train-asit", "invert", "eval-inversion", "finetune-asit",
                  "fer-init", "train-fer", "eval-fer", "analyze-fer", "report")  # dvc.yaml's stages, in pipeline order

_SUMMARY = {
    "config": "print or save a resolved config (defaults <- profile <- --params files <- key=value overrides)",
    "weights": "list every pretrained weight file the config reads: path, present or missing, source, what for",
    "predict": "predict the expression of the face in every photo of FOLDER (CSV, one row per file)",
    "eval-checkpoint": "evaluate an official ASIT or IFER CHECKPOINT, or a suite best.pt, on a dataset's test split",
    "invert": "invert the inversion test set with the trained ASIT (or, with --folder, your own photos)",
    "compare": "do two results folders (or git:REV:PATH) agree within the statistical tolerance, per metric? "
               "exit 1 on any disagreement (rule: ifer/report/compare.py)",
    "readme": "copy results/<profile> tables and provenance into the README results block",
    "verify": "check datasets (counts, labels, fingerprints; --deep decodes every image) and print a report",
    "plan": "list every stale stage of dvc.yaml as a job: wave, resources, measured time and disk, and the total",
    "launch": "run every stale stage as its own job (submitit: a local pool, one GPU each, or SLURM), waves of the "
              "stage DAG; dvc.lock records each finished one",
    "data": "generate the SynthFER dataset configured in data.synthfer",
    "fingerprint-inputs": "fingerprint the configured datasets and weight files into runs/<profile>/inputs/",
    "train-asit": "train the ASIT inversion network",
    "eval-inversion": "score inversions (and the mean-image baseline)",
    "finetune-asit": "released protocol: fine-tune the trained ASIT on asit_finetune.dataset minus its holdout",
    "fer-init": "record what each FER run starts from (the ASIT checkpoint for IFER) in runs/<profile>/fer_init/",
    "train-fer": "train the FER methods (each protocol x method x dataset x seed)",
    "eval-fer": "score every FER run on its test split; identity probe on SynthFER",
    "analyze-fer": "beyond accuracy, from the trained runs: cost, calibration, corruptions, transfer; SynthFER "
                   "accuracy by factor and factor probes",
    "report": "comparison tables, plots and provenance into results/<profile>/",
}
# the one-line form `ifer --help` lists where it differs from the summary
_LISTED = {"invert": ("invert --folder", "FFHQ-aligned inversions of your own photos + grid.png"),
           "compare": ("compare", "do two results folders agree within the statistical tolerance? (exit 1 if not)"),
           "verify": ("verify", "are the datasets there and intact? (--deep decodes every image)")}

_EXAMPLES = {
    "config": ["ifer config --profile tiny --out params.yaml     # the DVC params file",
               "ifer config --profile paper asit.train.steps=1000  # print, with an override"],
    "weights": ["ifer weights --profile paper            # what to download, and where it goes",
                "ifer weights --params params.yaml --check --strict   # hash them; exit 2 if one is missing"],
    "predict": ["ifer predict photos/ --checkpoint runs/tiny/fer/clean/ifer/synthfer/seed0/best.pt",
                "ifer predict photos/ --checkpoint model_best.pth.tar --profile paper   # the official IFER file"],
    "eval-checkpoint": ["ifer eval-checkpoint ifer_rafdb.pth.tar --dataset rafdb --profile paper",
                        "ifer eval-checkpoint best_model.pt --dataset celebahq --profile paper   # official ASIT",
                        "ifer eval-checkpoint runs/tiny/fer/clean/ke2nt_minilm/synthfer/seed0/best.pt --dataset synthfer"],
    "invert": ["ifer invert --params params.yaml seed=1        # stage: the ASIT run of seed 1",
               "ifer invert --folder photos/ --checkpoint asit_best.pt   # your photos -> photos_inversions/"],
    "compare": ["ifer compare git:HEAD:results/tiny results/tiny",
                "ifer compare results/tiny /tmp/rerun/results/tiny --tolerance accuracy=0.5"],
    "readme": ["ifer readme --results results/tiny"],
    "verify": ["ifer verify --params params.yaml --deep      # the datasets the config reads",
               "ifer verify --root datasets rafdb sfew         # named datasets under a folder"],
    "plan": ["ifer plan                                   # the stale jobs of params.yaml's pipeline",
             "ifer plan --all launch.resources.train_fer.time_min=600   # every job, with an override"],
    "launch": ["ifer launch --executor local --parallel 4   # one machine: 4 jobs at once (one GPU each)",
               "ifer launch --executor slurm launch.resources.default.partition=gpu launch.resources.default.account=me",
               "ifer launch --executor slurm --dry-run       # what would be submitted (= ifer plan)"],
    "data": ["ifer data --params params.yaml"],
    "fingerprint-inputs": ["ifer fingerprint-inputs --params params.yaml"],
    "train-asit": ["ifer train-asit --params params.yaml seed=0",
                   "torchrun --standalone --nproc_per_node=2 -m ifer.cli train-asit --params params.yaml"],
    "eval-inversion": ["ifer eval-inversion --params params.yaml"],
    "finetune-asit": ["ifer finetune-asit --params params.yaml seed=0"],
    "fer-init": ["ifer fer-init --params params.yaml"],
    "train-fer": ["ifer train-fer --params params.yaml --protocol clean --method ifer --dataset synthfer --seed 0",
                  "ifer train-fer --profile tiny asit.train.steps=100 fer_methods.ifer.train.epochs=2"],
    "eval-fer": ["ifer eval-fer --params params.yaml"],
    "analyze-fer": ["ifer analyze-fer --params params.yaml",
                    "ifer analyze-fer --params params.yaml analysis.corruptions.severities=[3] analysis.cost.timed=false"],
    "report": ["ifer report --params params.yaml"],
}

_EPILOG = """\
Any trailing key.sub=value overrides the params file (e.g. asit.train.steps=100). With
launcher.nproc_per_node: N (N > 1) the training, invert and eval verbs rerun themselves under
torchrun --standalone --nproc_per_node=N: that is how dvc.yaml's stages go multi-GPU. launcher.nnodes: M
(M > 1) runs the verbs in launcher.multinode_verbs (default: train-asit, finetune-asit) under torchrun
--nnodes=M with a c10d rendezvous (launcher.rdzv_endpoint, or inside SLURM the allocation's first node);
every node runs the same command.
The whole paper pipeline on miniature data: python -m ifer.rehearsal run (nox -s rehearse).
`ifer VERB --help` shows a verb's arguments and examples. IFER_TRACEBACK=1 prints full tracebacks."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions and epilogs as written; an argument with ``usage_text`` shows it in the usage line
    (predict's ``FOLDER [key=value ...]``, parsed as one list by :func:`_split_positional`)."""

    def _format_args(self, action, default_metavar):
        return getattr(action, "usage_text", None) or super()._format_args(action, default_metavar)


class _Version(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked (no import cost for the rest)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        import ifer

        sys.stdout.write(f"ifer {ifer.__version__}\n")  # stdout, as argparse's own version action
        parser.exit()


def _verb_listing() -> str:
    width = max(len(_LISTED.get(v, (v,))[0]) for v in (*USER_VERBS, *PIPELINE_VERBS)) + 2

    def lines(verbs, listed):
        return "\n".join(f"  {listed.get(v, (v, _SUMMARY[v]))[0]:<{width}}{listed.get(v, (v, _SUMMARY[v]))[1]}"
                         for v in verbs)

    return ("Reproduce the IFER / ASIT paper (arXiv 2211.13564) and use its models.\n\n"
            f"user commands:\n{lines(USER_VERBS, _LISTED)}\n\n"
            f"pipeline stages (dvc.yaml runs these; dvc repro runs them all):\n{lines(PIPELINE_VERBS, {})}")


def build_parser() -> argparse.ArgumentParser:
    """The ``ifer`` argument parser: building it (and so ``--help``) imports no torch, numpy or pandas."""
    ap = argparse.ArgumentParser(prog="ifer", description=_verb_listing(), epilog=_EPILOG, formatter_class=_Formatter)
    ap.add_argument("--version", action=_Version, help="print the ifer version and exit")
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB", title="verbs",
                            help="one of the commands above; `ifer VERB --help` for its arguments and examples")

    def parser(name):
        examples = "\n".join(f"  {e}" for e in _EXAMPLES[name])
        return sub.add_parser(name, description=_SUMMARY[name], epilog=f"examples:\n{examples}",
                              formatter_class=_Formatter)

    def add(name, shown="[key.sub=value ...]",
            what="config overrides over the profile and params files, e.g. asit.train.steps=100", positional=None):
        """A verb that reads a config: --profile, --params and ``key.sub=value`` overrides; ``positional`` names
        the one plain word among them (FOLDER, CHECKPOINT), split off by :func:`_split_positional`."""
        p = parser(name)
        p.add_argument("--profile", choices=PROFILES, default=None,
                       help="config profile: tiny (SynthFER, CPU, minutes) or paper (the published protocol); "
                            "default: the params file's own profile, else tiny")
        p.add_argument("--params", action="append", default=[], metavar="FILE",
                       help="YAML layer(s) over the profile, e.g. params.yaml (repeatable; later ones win)")
        a = p.add_argument("overrides", nargs="*", metavar=shown, help=what)
        a.usage_text = shown  # the usage line shows `shown` as written (see _Formatter)
        if positional:
            p.set_defaults(positional=positional)
        return p

    p = add("config")
    p.add_argument("--out", metavar="FILE", help="write the resolved config here (default: print it)")
    p = add("weights")
    p.add_argument("--check", action="store_true",
                   help="hash every present file and compare it with the published sha256 (large files: slow)")
    p.add_argument("--strict", action="store_true",
                   help="exit 2 when any file is missing (or, with --check, does not match); default: exit 0")
    p = add("predict", "FOLDER [key.sub=value ...]", "FOLDER: the photos (JPEG/PNG, any size or mode, EXIF-rotated; "
            "one CSV row per file), then any key.sub=value config overrides", positional="folder")
    p.add_argument("--checkpoint", required=True, help="suite best.pt, or the official IFER file (see --class-folders)")
    p.add_argument("--method", default=None, help="only for a suite checkpoint that records no meta (older files): "
                   "its fer_methods key; a current best.pt says what it is")
    p.add_argument("--class-folders", default=None, help="official IFER file only: the authors' class folders "
                   "(default 1,2,3,4,5,6,7: RAF-DB numbering, an assumption)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 only with native CPU bf16 and >= 99.5%% measured fp32/bf16 agreement")
    p.add_argument("--agreement-dataset", default=None, help="test split for the agreement (default: the checkpoint's dataset, else the first FER dataset)")
    p.add_argument("--out", default=None, help="CSV path (default <folder>_predictions.csv)")
    p = add("eval-checkpoint", "CHECKPOINT [key.sub=value ...]", "CHECKPOINT: a suite best.pt (rebuilt from its "
            "meta), or an official ASIT (encoder.*/decoder.*) or IFER (timm) checkpoint file, then any key.sub=value "
            "config overrides", positional="checkpoint")
    p.add_argument("--dataset", required=True, help="FER dataset (rafdb, sfew, affectnet7, ...) or inversion test set")
    p.add_argument("--class-folders", default="1,2,3,4,5,6,7",
                   help="the authors' class-folder names (ImageFolder sorts them into the head order); default "
                        "assumes RAF-DB's numbering 1..7")
    p.add_argument("--out", default=None, help="result JSON (default results/<profile>/released/...)")
    p = add("invert")
    p.add_argument("--folder", default=None, help="invert the faces in this folder of photos instead (FFHQ-aligned)")
    p.add_argument("--checkpoint", default=None, help="with --folder: ASIT file (official layout; default: this run's)")
    p.add_argument("--out", default=None, help="with --folder: output folder (default <folder>_inversions)")
    p = parser("compare")
    p.add_argument("a", metavar="RESULTS_A", help="a results folder or git:REV:PATH (e.g. git:HEAD:results/tiny)")
    p.add_argument("b", metavar="RESULTS_B", help="the same, for the other run")
    p.add_argument("--z", type=float, default=3.0,
                   help="test level in normal sigmas; applied as Student's t with the seed dof (default 3)")
    p.add_argument("--tolerance", action="append", metavar="METRIC=VALUE",
                   help="absolute floor for a metric's tolerance (repeatable)")
    p = parser("readme")
    p.add_argument("--results", default="results/tiny", help="the results folder to copy from (default results/tiny)")
    p.add_argument("--readme", default="README.md", help="the README whose marked results block is rewritten "
                                                          "(default README.md)")
    p = add("verify", "[DATASET ...] [key.sub=value ...]", "datasets to check (default: those the config reads, "
            "given --profile or --params), then any key.sub=value config overrides")
    p.add_argument("--root", default=None, help="datasets folder (default: paths.datasets of the config)")
    p.add_argument("--out", default=None, help="also write the JSON report here")
    p.add_argument("--deep", action="store_true", help="decode every image; name corrupt, truncated, zero-byte ones")
    p.add_argument("--workers", type=int, default=None, help="decoding processes for --deep (default: CPU count)")
    for verb in ("plan", "launch"):
        p = add(verb)
        p.add_argument("--root", default=".", help="the DVC project (default: the current folder); its params.yaml "
                       "is read unless --params is given")
        if verb == "plan":
            p.add_argument("--all", action="store_true", help="list every stage, not only the stale ones")
    p.add_argument("--executor", choices=["local", "slurm", "auto"], default=None,
                   help="local: a pool on this machine; slurm: sbatch through submitit; auto: slurm where sbatch "
                        "exists (default: launch.executor of the config)")
    p.add_argument("--parallel", type=int, default=None, help="local: jobs at once (default: launch.parallel; "
                   "with GPUs at most one job per GPU)")
    p.add_argument("--retries", type=int, default=None, help="resubmissions of a killed job (default: launch.retries)")
    p.add_argument("--log-dir", default=None, help="submitit's job folders (default runs/launch)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and submit nothing")
    add("data")
    add("fingerprint-inputs")
    p = add("train-asit")
    _resume_flags(p)
    add("eval-inversion")
    p = add("finetune-asit")
    _resume_flags(p)
    add("fer-init")
    p = add("train-fer")
    p.add_argument("--protocol", action="append", help="a `protocols` entry (repeatable; default: all of them)")
    p.add_argument("--method", action="append", help="a `methods` entry (repeatable; default: all of them)")
    p.add_argument("--dataset", action="append", help="a data.fer.datasets entry (repeatable; default: all of them)")
    p.add_argument("--seed", action="append", type=int, help="a `seeds` entry (repeatable; default: all of them)")
    _resume_flags(p)
    add("eval-fer")
    add("analyze-fer")
    add("report")
    return ap


def _main(argv: list[str] | None = None) -> int:
    ap = build_parser()
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

    if args.verb in ("plan", "launch"):
        return _launch(args)

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

    if args.verb == "weights":
        return _weights(cfg, args)
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
    if args.verb in _DISTRIBUTED_VERBS and _launch_under_torchrun(cfg, args.verb):
        return _torchrun(cfg, argv, args.verb)

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
        elif args.verb == "analyze-fer":
            stages.stage_analyze_fer(cfg, info)
        elif args.verb == "report":
            stages.stage_report(cfg)
    return 0


def _resume_flags(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-resume", action="store_true", help="start over, ignoring last.pt")
    g.add_argument("--resume-override", action="store_true",
                   help="resume last.pt although it was written with another model, mode or training config")


_DISTRIBUTED_VERBS = ("train-asit", "finetune-asit", "train-fer", "invert", "eval-inversion", "eval-fer")


def _nnodes(cfg, verb: str | None) -> int:
    """``launcher.nnodes`` for the verbs in ``launcher.multinode_verbs`` (the big runs), else 1."""
    verbs = cfg.get_path("launcher.multinode_verbs", None) or []
    return int(cfg.get_path("launcher.nnodes", 1) or 1) if verb is None or verb in verbs else 1


def _launch_under_torchrun(cfg, verb: str | None = None) -> bool:
    """``launcher.nproc_per_node`` > 1 or more than one node for ``verb``, and not already a torchrun worker
    (torchrun sets LOCAL_RANK)."""
    import os

    return (int(cfg.get_path("launcher.nproc_per_node", 1) or 1) > 1 or _nnodes(cfg, verb) > 1) \
        and "LOCAL_RANK" not in os.environ


def _slurm_first_node(env) -> str | None:
    """The first host of the SLURM allocation (``SLURM_JOB_NODELIST``, expanded by ``scontrol show hostnames``)."""
    import shutil
    import subprocess

    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        return None
    if "[" not in nodelist and "," not in nodelist:
        return nodelist
    if shutil.which("scontrol"):
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True).stdout
        if out.split():
            return out.split()[0]
    import re  # no scontrol: the first host of "gpu[03-04,07],cpu1" is gpu03

    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    return (m.group(1) + (m.group(2).split(",")[0].split("-")[0] if m.group(2) else "")) if m else None


def torchrun_args(cfg, env=None, verb: str | None = None) -> list[str]:
    """torchrun's options for ``launcher``: ``--standalone`` on one node; with ``nnodes`` > 1 a c10d rendezvous at
    ``launcher.rdzv_endpoint``, or, inside a SLURM allocation, at its first node (port ``launcher.rdzv_port``),
    with ``rdzv_id`` = the SLURM job id. Every node runs the same command (``srun``, or ``ifer launch`` with
    ``launch.resources.<kind>.nodes``). ``verb`` outside ``launcher.multinode_verbs`` runs on one node."""
    from ifer.core.config import ConfigError

    env = os.environ if env is None else env
    n = int(cfg.get_path("launcher.nproc_per_node", 1) or 1)
    nodes = _nnodes(cfg, verb)
    if nodes <= 1:
        return ["--standalone", f"--nproc_per_node={n}"]
    endpoint = cfg.get_path("launcher.rdzv_endpoint", None)
    if not endpoint:
        host = _slurm_first_node(env)
        if host is None:
            raise ConfigError(f"launcher.nnodes={nodes} needs launcher.rdzv_endpoint=HOST:PORT (one node every node "
                              "can reach), or a SLURM allocation (SLURM_JOB_NODELIST) to take the first node from")
        endpoint = f"{host}:{int(cfg.get_path('launcher.rdzv_port', 29500))}"
    rid = cfg.get_path("launcher.rdzv_id", None) or env.get("SLURM_JOB_ID") or "ifer"
    return [f"--nnodes={nodes}", f"--nproc_per_node={n}", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}",
            f"--rdzv_id={rid}"]


def _torchrun(cfg, argv: list[str] | None, verb: str | None = None) -> int:
    """Rerun this very command under ``torchrun`` (what dvc.yaml's stages get): ``--standalone --nproc_per_node=N``
    on one node, a c10d rendezvous over ``launcher.nnodes`` nodes (:func:`torchrun_args`)."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun_args(cfg, verb=verb), "-m", "ifer.cli",
           *(sys.argv[1:] if argv is None else argv)]
    logging.getLogger("ifer").info("launcher: %s", " ".join(cmd))
    return subprocess.call(cmd)


def _launch(args) -> int:
    """``ifer plan`` / ``ifer launch``: the pipeline of ``--root``'s dvc.yaml with its params.yaml; resources and
    executor from the config's ``launch`` section (ifer/launch.py)."""
    from pathlib import Path

    from ifer.core.config import ConfigError

    root = Path(args.root)
    if not (root / "dvc.yaml").exists():
        raise ConfigError(f"{root / 'dvc.yaml'} not found: run from the project folder or pass --root")
    params = args.params or ([str(root / "params.yaml")] if (root / "params.yaml").exists() else [])
    if not params:
        raise ConfigError(f"no {root / 'params.yaml'}: write one first (ifer config --profile paper --out params.yaml)")
    cfg = load_config(None, params, args.overrides)
    if args.profile and args.profile != cfg.profile:
        raise ConfigError(f"params.yaml is profile {cfg.profile!r}, not {args.profile!r}: the pipeline runs params.yaml;"
                          f" write it first (ifer config --profile {args.profile} --out params.yaml)")
    lc = cfg.to_dict().get("launch") or {}
    from ifer import launch as L

    lc["resources"] = L.with_nodes(lc.get("resources"), int(cfg.get_path("launcher.nnodes", 1) or 1),
                                   [v.replace("-", "_") for v in cfg.get_path("launcher.multinode_verbs", []) or []])

    if args.verb == "plan" or args.dry_run:
        print("\n".join(L.plan(root, lc.get("resources"), cfg.profile, every_stage=getattr(args, "all", False))))
        return 0
    executor = args.executor or lc.get("executor", "local")
    if executor == "auto":
        import shutil

        executor = "slurm" if shutil.which("sbatch") else "local"
    return L.launch(root, executor, args.parallel or int(lc.get("parallel", 2)), lc.get("resources"),
                    log_dir=args.log_dir, retries=args.retries if args.retries is not None else int(lc.get("retries", 2)))


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


# config key -> the KNOWN_WEIGHTS asset it names (the identity-embedder keys name the asset of their embedder)
_KEY_ASSET = {"asit.stylegan_weights": "stylegan2_ffhq_256_rosinality", "asit.lpips_backbone": "torchvision_alexnet",
              "eval.inception_weights": "fid_inception_v3", "asit_finetune.init": "asit_ffhq_official"}
_ROLE_READER = {"asit_weights": "train-asit, finetune-asit", "eval_weights": "eval-inversion"}


def weight_files(cfg) -> list[dict]:
    """Every weight file ``cfg`` reads, one dict per config key: ``key``, ``path``, ``asset`` (a KNOWN_WEIGHTS
    name or None), ``read_by`` (the verbs) and ``present``.

    The ASIT and evaluation files are :func:`ifer.stages._used_weights` (what fingerprint-inputs tracks); over
    them come the FER methods' files (``kwargs.pretrained_path``, the text encoder's ``weights_path``) of every
    ``methods`` entry and, under the released protocol, ``asit_finetune.init``."""
    from pathlib import Path

    from ifer.models.ke2nt import PAPER_TEXT_ENCODER
    from ifer.stages import _method_weight_files, _used_weights, protocol_configs

    found: dict[str, dict] = {}

    def note(key, path, asset, reader):
        row = found.setdefault(key, {"key": key, "path": None if path is None else str(path), "asset": asset,
                                     "read_by": []})
        if reader not in row["read_by"]:
            row["read_by"].append(reader)

    embedder = {"asit.id_weights": cfg.asit.id_embedder, "eval.id_weights": cfg.eval.id_embedder}
    for role, used in _used_weights(cfg).items():
        if role == "fer_weights":  # listed per method below, with the asset and the method that reads it
            continue
        for key, path in used.items():
            note(key, path, _KEY_ASSET.get(key, embedder.get(key)), _ROLE_READER.get(role, role))
    for pcfg in protocol_configs(cfg):
        for method in pcfg.methods:
            kwargs = pcfg.fer_methods[method].get("kwargs") or {}
            assets = {"pretrained_path": kwargs.get("known_weights"),
                      "text_encoder_kwargs.weights_path": kwargs.get("text_encoder", PAPER_TEXT_ENCODER)}
            for sub, path in _method_weight_files(pcfg, method).items():
                note(f"fer_methods.{method}.kwargs.{sub}", path, assets[sub], f"train-fer ({method})")
    if cfg.finetune_seeds and cfg.asit_finetune.get("init"):
        note("asit_finetune.init", cfg.asit_finetune.init, _KEY_ASSET["asit_finetune.init"], "finetune-asit")
    rows = list(found.values())
    for row in rows:
        row["present"] = bool(row["path"]) and Path(row["path"]).is_file()
    return rows


def _hash_status(row: dict, skip: set[str]) -> tuple[str, bool]:
    """(what ``--check`` says about a present file, whether it matches)."""
    from ifer.core.io import sha256_file
    from ifer.core.weights import KNOWN_WEIGHTS

    digest = sha256_file(row["path"])
    w = KNOWN_WEIGHTS.get(row["asset"] or "")
    expected = w and (w.sha256 or w.sha256_prefix)
    if row["asset"] in skip:
        return f"not checked (weights.skip_sha256); sha256 {digest}", True
    if not expected:
        return f"no published hash; sha256 {digest}", True
    if digest.startswith(expected.lower()):
        return f"ok (published {'sha256' if w.sha256 else f'prefix {expected}'})", True
    return f"MISMATCH: sha256 {digest}, published {expected}", False


def _weights(cfg, args) -> int:
    """``ifer weights``: the weight-file table; exit 0 (informational), or 2 under --strict when one is missing."""
    from ifer.core.weights import KNOWN_WEIGHTS

    rows = weight_files(cfg)
    skip = set(cfg.get_path("weights.skip_sha256", []) or [])
    if not rows:
        print(f"profile {cfg.profile}: this config reads no pretrained weight file (nothing to fetch)")
        return 0
    bad = 0
    for row in rows:
        if not row["present"]:
            row["status"], row["sha256"] = ("MISSING" if row["path"] else "NOT SET"), "-"
            bad += 1
        else:
            row["status"] = "present"
            row["sha256"], ok = _hash_status(row, skip) if args.check else ("not checked (--check)", True)
            bad += not ok
    width = max(len(r["key"]) for r in rows)
    n_missing = sum(not r["present"] for r in rows)
    print(f"profile {cfg.profile}: {len(rows)} weight file{'s' * (len(rows) != 1)}, {len(rows) - n_missing} present, "
          f"{n_missing} missing. Nothing is downloaded: fetch each from its source and put it at its path (or set "
          "its config key to where it is).")
    for r in rows:
        w = KNOWN_WEIGHTS.get(r["asset"] or "")
        print(f"\n{r['status']:<8} {r['key']:<{width}}  {r['path'] or '(null: set the key to the file)'}")
        print(f"         name:    {r['asset'] or '(a user file, no known asset)'}"
              + (f" (published file {w.filename})" if w else ""))
        print(f"         sha256:  {r['sha256']}")
        if w:
            print(f"         source:  {w.source}")
            print(f"         for:     {w.used_by}")
            if w.notes:
                print(f"         note:    {w.notes}")
        print(f"         read by: ifer {', '.join(r['read_by'])}")
    return 2 if args.strict and bad else 0


def _predict(cfg, args) -> int:
    from pathlib import Path

    from ifer.data.build import eval_transform_from
    from ifer.eval.predict import load_classifier, precision_for, predict_folder, write_csv

    folders = args.class_folders.split(",") if args.class_folders else None
    model, names = load_classifier(cfg, args.checkpoint, args.method, folders)
    precision, why, _ = precision_for(cfg, model, args.checkpoint, args.precision, args.agreement_dataset)
    print(f"precision: {precision} ({why})")
    if hasattr(model, "order"):
        print(f"class order of the official head: {', '.join(model.order)} (from class folders "
              f"{args.class_folders or '1,2,3,4,5,6,7'}; an assumption unless you know the authors' folders)")
    print("  " + "\n  ".join(f"{k}: {v}" for k, v in model.choices.items()))
    # normalised as the file says: the official file from its own args, the suite's from its meta
    rows = predict_folder(model, args.folder, names, eval_transform_from(model.preprocessing), precision)
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
