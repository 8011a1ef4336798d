"""The pipeline's stages, one function each; ``dvc.yaml`` runs them through ``ifer.cli``.

    data -> train_asit -> invert -> eval_inversion
                      \\-> [finetune_asit, released protocol only] -> fer_init
                          -> train_fer (every protocol x method x dataset x seed) -> eval_fer -> report

Each FER stage runs every entry of ``protocols`` under its overlay (``ifer.core.config.with_protocol``) and keys
its outputs by the protocol's name (``runs/<profile>/fer/<protocol>/...``, rows with ``protocol``).

Every stage reads the resolved config, writes its outputs under ``runs/<profile>/`` (checkpoints,
images: not committed) or ``results/<profile>/`` (metrics, tables, plots: committed), and saves the
resolved config next to them.

    python -m ifer.cli train-asit --params params.yaml
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

from ifer.core.config import Config, ConfigError, save_resolved, with_protocol
from ifer.core.io import atomic_write_json, sha256_file
from ifer.train.distributed import DistInfo

log = logging.getLogger("ifer")


# ---------------------------------------------------------------------------------------------- paths
def run_root(cfg: Config) -> Path:
    return Path(cfg.paths.runs) / cfg.profile


def results_root(cfg: Config) -> Path:
    return Path(cfg.paths.results) / cfg.profile


def asit_seeds(cfg: Config) -> list[int]:
    """Seeds of the ASIT runs (``asit_seeds``; the base ``seed`` when unset)."""
    return [int(s) for s in (cfg.get("asit_seeds") or [cfg.seed])]


def asit_seed_for(cfg: Config, fer_seed: int) -> int:
    """The ASIT run that IFER seed ``s`` starts from: ``asit_seeds[s % len(asit_seeds)]``."""
    seeds = asit_seeds(cfg)
    return seeds[int(fer_seed) % len(seeds)]


def with_seed(cfg: Config, seed: int) -> Config:
    """``cfg`` with the base ``seed`` replaced: an ASIT run (and everything built from it) is keyed by ``seed``."""
    return Config({**cfg, "seed": int(seed)})


def asit_dir(cfg: Config, seed: int | None = None) -> Path:
    return run_root(cfg) / "asit" / f"seed{cfg.seed if seed is None else int(seed)}"


def inversion_dir(cfg: Config, seed: int | None = None) -> Path:
    return run_root(cfg) / "inversions" / f"seed{cfg.seed if seed is None else int(seed)}"


def inputs_dir(cfg: Config) -> Path:
    """Fingerprints of the real datasets and weight files (``fingerprint_inputs``); dvc.yaml's deps point here."""
    return run_root(cfg) / "inputs"


def protocol_of(cfg: Config) -> str:
    """The protocol a config runs under: the one ``with_protocol`` set, else the first of ``protocols``."""
    return cfg.get("protocol") or cfg.protocols[0]


def protocol_configs(cfg: Config, names=None) -> list[Config]:
    """``cfg`` under each protocol of ``names`` (default: every entry of ``protocols``), in that order."""
    return [with_protocol(cfg, p) for p in (names or cfg.protocols)]


def fer_run_dir(cfg: Config, method: str, dataset: str, seed: int) -> Path:
    """``runs/<profile>/fer/<protocol>/<method>/<dataset>/seed<s>``: one protocol never overwrites the other."""
    return run_root(cfg) / "fer" / protocol_of(cfg) / method / dataset / f"seed{seed}"


def finetune_dir(cfg: Config, seed: int | None = None) -> Path:
    """The released protocol's ASIT fine-tune of ASIT seed ``seed`` (inside ``runs/<profile>/asit``)."""
    return run_root(cfg) / "asit" / "finetune" / f"seed{cfg.seed if seed is None else int(seed)}"


def fer_init_file(cfg: Config, method: str, seed: int) -> Path:
    return run_root(cfg) / "fer_init" / protocol_of(cfg) / f"{method}_seed{seed}.json"


def init_label(cfg: Config, method: str) -> str:
    """What a method's weights start from, as the report's ``init`` column names it."""
    if method == "ifer":
        base = "released_asit" if cfg.asit_finetune.get("init") else "asit"  # the authors' FFHQ ASIT or ours
        return {"asit_finetune": f"{base}_{cfg.asit_finetune.dataset}_finetune"}.get(cfg.ifer.init, cfg.ifer.init)
    return cfg.fer_methods[method].get("init", "scratch")


def write_json(path: Path, obj) -> Path:
    """Atomic: a full disk or a kill mid-write leaves the previous file intact (ifer.core.io.atomic_write)."""
    return atomic_write_json(path, obj, default=_json_default)


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item") and getattr(o, "ndim", None) == 0:  # numpy / scipy scalars (float64, bool_, int64)
        return o.item()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _set_threads(cfg: Config) -> None:
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))


RUN_RECORD = "provenance.json"


def record_session(cfg: Config, out: Path, stage: str, seeds=None, info: DistInfo | None = None,
                   name: str = RUN_RECORD) -> Path | None:
    """Write ``out/<name>`` (default ``provenance.json``): this stage's record (machine, ``kernel_key``, git, config hash, seeds) for
    the run folder ``out``, on the main rank, when the run starts or resumes.

    Training stages call it after ``prepare_run_dir``; the report collects these records, and ``ifer compare``
    applies its exact rule only when the training stages' kernel keys match too (a launch that trains at 1
    thread and evaluates at 2 is not the serial main job). A resumed run keeps the keys of its earlier sessions
    in ``kernel_keys_seen``: a run trained partly on another machine or thread count is a mixed-kernel run.

        python -c "import json; print(json.load(open('runs/tiny/asit/seed0/provenance.json'))['kernel_keys_seen'])"
    """
    from ifer.report.provenance import stage_record

    if info is not None and not info.is_main:
        return None
    path = Path(out) / name
    seen: list[str] = []
    if path.is_file():  # a kept (resumed) run: its earlier sessions' kernel keys
        try:
            old = json.loads(path.read_text())
            seen = list(old.get("kernel_keys_seen") or [(old.get("hardware") or {}).get("kernel_key")])
        except (OSError, ValueError, AttributeError):
            seen = ["unreadable earlier record"]
    rec = stage_record(stage, cfg.to_dict(), seeds)
    key = rec["hardware"]["kernel_key"]
    rec["kernel_keys_seen"] = [k for k in seen if k] + ([key] if key not in seen else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, rec)
    return path


# ---------------------------------------------------------------------------------------------- inputs
def fingerprint_dataset(cfg: Config, name: str) -> dict:
    """What identifies a dataset's bytes, cheaply enough to run on every ``dvc repro``.

    SynthFER: its manifest (sha256 of every file). A real dataset: every file's relative path and size, and the
    sha256 of every non-image file (labels, CSVs, partition lists), so relabelling or swapping images is seen
    without reading hundreds of thousands of JPEGs.
    """
    import hashlib

    from ifer.core.io import is_image_file
    from ifer.data.build import FER_DATASETS, dataset_root

    root = dataset_root(cfg, name)
    entry = {"dataset": name, "root": str(root)}
    if FER_DATASETS.get(name, (name, {}))[0] == "synthfer":
        manifest = root / "manifest.json"
        return {**entry, "sha256": sha256_file(manifest) if manifest.is_file() else "missing"}
    if not root.is_dir():
        return {**entry, "status": "missing"}
    h, n = hashlib.sha256(), 0
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        h.update(f"{rel}\t{p.stat().st_size}\t{'' if is_image_file(p) else sha256_file(p)}\n".encode())
        n += 1
    return {**entry, "n_files": n, "sha256": h.hexdigest()}


def _used_weights(cfg: Config) -> dict[str, dict[str, str | None]]:
    """The weight-file keys each consumer really reads under ``cfg`` (an unused key is not a dependency)."""
    a, e = cfg.asit, cfg.eval
    asit = {}
    if not a.train_decoder:
        asit["asit.stylegan_weights"] = a.stylegan_weights
    if a.lambdas.lpips > 0 and a.perceptual != "none":
        asit["asit.lpips_backbone"] = a.lpips_backbone
    if a.lambdas.id > 0 and a.id_embedder != "none":
        asit["asit.id_weights"] = a.id_weights
    ev = {}
    if "lpips" in e.inversion_metrics:
        ev["asit.lpips_backbone"] = a.lpips_backbone
    if "id_sim" in e.inversion_metrics and e.id_embedder != "none":
        ev["eval.id_weights"] = e.get("id_weights")
    if "fid" in e.inversion_metrics:
        ev["eval.inception_weights"] = e.get("inception_weights")
    return {"asit_weights": asit, "eval_weights": ev, "fer_weights": _fer_weight_keys(cfg)}


def _fer_weight_keys(cfg: Config) -> dict[str, str]:
    """The FER methods' start files (an ImageNet ResNet-18 ``pretrained_path``, KE2NT's CLIP text tower), by
    config key, over every protocol's config: ``fer_init`` depends on their fingerprint, so replacing one
    reruns the runs that start from it."""
    keys = {}
    for pcfg in protocol_configs(cfg):
        for method in pcfg.methods:
            for key, path in _method_weight_files(pcfg, method).items():
                keys[f"fer_methods.{method}.kwargs.{key}"] = path
    return keys


def _method_weight_files(cfg: Config, method: str) -> dict[str, str]:
    """``{"pretrained_path": ..., "text_encoder_kwargs.weights_path": ...}``: the files ``method`` starts from."""
    kwargs = cfg.fer_methods[method].get("kwargs") or {}
    files = {"pretrained_path": kwargs.get("pretrained_path"),
             "text_encoder_kwargs.weights_path": (kwargs.get("text_encoder_kwargs") or {}).get("weights_path")}
    return {k: str(v) for k, v in files.items() if v}


def stage_fingerprint_inputs(cfg: Config) -> dict[str, Path]:
    """One JSON per input role under ``runs/<profile>/inputs/``; downstream DVC stages depend on these files.

    DVC runs this stage on every ``repro`` (``always_changed``) and rewrites only the content, so replacing a
    dataset or a weight file reruns exactly the stages that read it, while absent optional inputs (a clean
    clone with SynthFER only) still give a valid file to depend on.

        python -m ifer.cli fingerprint-inputs --params params.yaml
    """
    out = inputs_dir(cfg)
    files = {"inversion_train": fingerprint_dataset(cfg, cfg.data.inversion.train),
             "inversion_test": fingerprint_dataset(cfg, cfg.data.inversion.test),
             **{f"fer_{d}": fingerprint_dataset(cfg, d) for d in cfg.data.fer.datasets},
             # the released protocol's fine-tune data; a file even when unused, so dvc.yaml can name it
             "asit_finetune": (_finetune_inputs(cfg) if cfg.finetune_seeds else
                               {"status": f"unused: protocols {list(cfg.protocols)} do not include released"})}
    for role, keys in _used_weights(cfg).items():
        files[role] = {k: _file_record(v) for k, v in keys.items()}
    # the published subset lists (analysis.subsets): dvc.yaml cannot name a list of user paths as deps, so their
    # content reaches analyze_fer through this file, and editing a list in place reruns it
    files["analysis_subsets"] = {str(x.get("name")): {"dataset": x.get("dataset"),
                                                      **_file_record(str(x.get("list")))}
                                 for x in (cfg.analysis.get("subsets") or [])}
    return {role: write_json(out / f"{role}.json", content) for role, content in files.items()}


def _file_record(path) -> dict:
    """``{"path", "sha256"}`` of an input file (a weight file, a subset list), or ``{"path", "status": "missing"}``."""
    return {"path": path, "sha256": sha256_file(Path(path))} if path and Path(path).is_file() else \
        {"path": path, "status": "missing"}


def _finetune_inputs(cfg: Config) -> dict:
    """The fine-tune's data fingerprint and, when ``asit_finetune.init`` names a released ASIT file, its sha256."""
    fp = fingerprint_dataset(cfg, cfg.asit_finetune.dataset)
    init = cfg.asit_finetune.get("init")
    return {**fp, "init": _file_record(str(init))} if init else fp


def finetune_source(cfg: Config) -> Path:
    """What the released fine-tune starts from: ``asit_finetune.init`` (the authors' released FFHQ ASIT) when set,
    else this suite's ASIT run of ``cfg.seed``."""
    init = cfg.asit_finetune.get("init")
    return Path(init) if init else asit_dir(cfg) / "asit_best.pt"


def stage_fer_init(cfg: Config) -> dict[str, Path]:
    """``runs/<profile>/fer_init/<protocol>/<method>_seed<s>.json``: what each FER run starts from.

    IFER records the sha256 of the checkpoint it starts from: under ``clean`` (``ifer.init: asit``) the ASIT run
    of seed ``asit_seeds[s % n]``, under ``released`` (``asit_finetune``) that run's fine-tune. The other methods
    start from scratch or a user's weight file, so their files never change and retraining ASIT does not retrain
    them. Returned keys: ``<protocol>/<method>_seed<s>``.

        python -m ifer.cli fer-init --params params.yaml
    """
    written = {}
    for pcfg in protocol_configs(cfg):
        for method in pcfg.methods:
            for seed in pcfg.seeds:
                info = {"method": method, "seed": seed, "protocol": pcfg.protocol, "init": init_label(pcfg, method)}
                files = _method_weight_files(pcfg, method)
                weights = files.get("pretrained_path")
                # every start file in one format (``_file_record``): {"path", "sha256"} or {"path", "status"}
                if weights:  # e.g. the ImageNet ResNet-18 of `paper`: record which file the run starts from
                    info = {**info, "weights": _file_record(weights)}
                if files.get("text_encoder_kwargs.weights_path"):  # KE2NT's CLIP text tower: its class embeddings
                    info = {**info, "text_weights": _file_record(files["text_encoder_kwargs.weights_path"])}
                if method == "ifer":
                    k = asit_seed_for(pcfg, seed)
                    ckpt = ifer_init_checkpoint(with_seed(pcfg, k))
                    if ckpt is not None:
                        info = {**info, "asit_seed": k, "checkpoint": _file_record(str(ckpt))}
                path = fer_init_file(pcfg, method, seed)
                written[f"{pcfg.protocol}/{method}_seed{seed}"] = write_json(path, info)
    return written


def _code_digest() -> str:
    import hashlib

    import ifer

    h = hashlib.sha256()
    for p in sorted(Path(ifer.__file__).parent.rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()


def prepare_run_dir(out: Path, identity: dict, finished_marker: str, info: DistInfo,
                    keep_changed: bool = False, resume: bool = True) -> bool:
    """Decide what happens to a persisted run folder before training; True when it is kept for a resume.

    dvc.yaml marks training outputs ``persist: true`` so that ``last.pt`` survives a killed ``dvc repro``; DVC
    then also keeps them when it reruns a stage because a param, an input or the code changed. The policy:

    - finished run (``finished_marker`` present), no ``last.pt``, or ``--no-resume``: wiped, the run starts fresh;
    - unfinished run, same config and inputs: kept and resumed (a code-only change is logged, not refused: a
      bug fix elsewhere must not throw away days of training);
    - unfinished run whose config or inputs changed: refused with one line naming the differing keys
      (``ResumeMismatchError``), unless ``keep_changed`` (``--resume-override``). Nothing is deleted.
    """
    import hashlib
    import shutil

    from ifer.train.checkpoint import ResumeMismatchError
    from ifer.train.distributed import barrier

    record = {"config": identity, "code": _code_digest()}
    key = hashlib.sha256(json.dumps(record, sort_keys=True, default=_json_default).encode()).hexdigest()
    key_file = out / "run_key.json"
    old = json.loads(key_file.read_text()) if key_file.is_file() else {}
    unfinished = (out / "last.pt").exists() and not (out / finished_marker).exists()
    changed = _differing_keys(old.get("config"), json.loads(json.dumps(identity, default=_json_default)))
    keep = resume and unfinished and bool(old)
    if keep and changed and not keep_changed:
        raise ResumeMismatchError(
            f"{out}: an unfinished run was started with other settings ({', '.join(changed[:6])}"
            f"{', ...' if len(changed) > 6 else ''}); resume with `--resume-override`, or start over with "
            f"`--no-resume` (or delete {out})")
    barrier(info)  # every rank has read the old key before rank 0 rewrites it
    if info.is_main:
        if keep and old.get("code") != record["code"]:
            log.warning("%s: the code changed since this run started; resuming it anyway (--no-resume restarts)", out)
        if not keep and out.exists():
            log.info("%s: %s; starting fresh", out, "finished run" if (out / finished_marker).exists()
                     else "no resumable state" if resume else "--no-resume")
            shutil.rmtree(out)
        write_json(key_file, {"key": key, **json.loads(json.dumps(record, default=_json_default))})
    barrier(info)
    return keep


def _differing_keys(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (``None`` old = nothing recorded)."""
    if old is None:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _differing_keys(old.get(k, "<absent>"), new.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".") or "<root>"]


def _run_identity(cfg: Config, *input_files: Path, sections: tuple[str, ...] = ()) -> dict:
    """What a training run depends on: the named config sections (dotted paths) and the input fingerprints.

    Only the sections a stage reads count, so changing e.g. ``report.*`` never blocks the resume of a run."""
    conf = cfg.to_dict()
    picked = {}
    for dotted in sections:
        node = conf
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        picked[dotted] = node
    return {"config": picked if sections else conf,
            "inputs": {str(p): (p.read_text() if p.is_file() else None) for p in input_files}}


# ---------------------------------------------------------------------------------------------- ASIT
def build_asit(cfg: Config, for_training: bool = True):
    """The ASIT network + inversion discriminator + losses, as configured (weights from user paths only)."""
    from ifer.models.registry import build_from_config, create_model
    from ifer.train.asit import ASITLosses

    a = cfg.asit
    net = build_from_config(a, seed=cfg.seed)
    disc = create_model(a.discriminator, quirks=a.mode) if for_training else None
    perceptual = identity = None
    if for_training and a.lambdas.lpips > 0 and a.perceptual != "none":
        from ifer.losses.reconstruction import build_perceptual_loss

        perceptual = build_perceptual_loss(a.perceptual, a.lpips_backbone)
    if for_training and a.lambdas.id > 0 and a.id_embedder != "none":
        from ifer.losses.identity import IDLoss
        from ifer.metrics.embedders import get_embedder

        identity = IDLoss(get_embedder(a.id_embedder, a.id_weights))
    losses = ASITLosses(lambdas=a.lambdas.to_dict(), perceptual=perceptual, identity=identity)
    return net, disc, losses


def stage_train_asit(cfg: Config, info: DistInfo, resume: bool = True, stop_after_steps: int | None = None,
                     resume_override: bool = False):
    from ifer.data.build import inversion_datasets
    from ifer.train.asit import train_asit

    _set_threads(cfg)
    torch.manual_seed(cfg.seed)
    net, disc, losses = build_asit(cfg)
    train_set, val_set, _ = inversion_datasets(cfg)
    out = asit_dir(cfg)
    inputs = inputs_dir(cfg)
    prepare_run_dir(out, _run_identity(cfg, inputs / "inversion_train.json", inputs / "asit_weights.json",
                                       sections=("seed", "asit", "data.inversion", "data.synthfer")),
                    "asit_best.pt", info, keep_changed=resume_override, resume=resume)
    record_session(cfg, out, "train_asit", [cfg.seed], info)
    if info.is_main:
        save_resolved(cfg, out / "config.yaml")
    summary = train_asit(net, disc, losses, train_set, val_set, cfg.asit.train, out, info=info, seed=cfg.seed,
                         quirks=cfg.asit.mode, use_struct=cfg.asit.use_struct, num_workers=cfg.data.num_workers,
                         resume=resume, stop_after_steps=stop_after_steps, model_name=cfg.asit.model,
                         resume_override=resume_override)
    if info.is_main and summary is not None:
        _save_asit_best(cfg, net, out, summary, keep_resume_state=bool(cfg.asit.train.get("keep_resume_state")))
    return summary


def _save_asit_best(cfg: Config, net, out: Path, summary: dict, keep_resume_state: bool = False, **opts) -> None:
    """The best validated weights in the official layout (``asit_best.pt``, what IFER starts from) + summary.

    ``asit_best.pt`` marks the run finished; then the trainer's own files go unless ``keep_resume_state``:
    ``last.pt``/``prev.pt`` (weights + discriminator + optimizer states: 4.8 GB each for ``asit_base``) and
    ``best.pt`` (the same weights as ``asit_best.pt``). Nothing reads them after the end: a finished run that DVC
    reruns is retrained (``prepare_run_dir``)."""
    from ifer.train.checkpoint import drop_resume_state, load_trained_weights

    best = load_trained_weights(net, out / "best.pt", "net")
    net.save_checkpoint(out / "asit_best.pt", opts={"profile": cfg.profile, "model": cfg.asit.model,
                                                    "step": best["step"], **opts})
    write_json(out / "summary.json", summary)
    if not keep_resume_state:
        drop_resume_state(out / "last.pt")
        (out / "best.pt").unlink(missing_ok=True)


def stage_finetune_asit(cfg: Config, info: DistInfo, resume: bool = True, stop_after_steps: int | None = None,
                        resume_override: bool = False):
    """Released protocol: fine-tune the trained ASIT of seed ``cfg.seed`` on ``asit_finetune.dataset`` (the README's
    ``rafdb_encode``: RAF-DB train minus 400 random held-out images, which validate it), under the released
    protocol's config (``asit.mode: as_released``), with ``asit_finetune.train`` over ``asit.train``. The
    discriminator starts fresh (the official checkpoint holds only the encoder and decoder). Output:
    ``runs/<profile>/asit/finetune/seed<s>/asit_best.pt`` (IFER's start under ``ifer.init: asit_finetune``)
    and ``holdout.json`` (the held-out file names). Resumes from ``last.pt`` like ``train_asit``.

        python -m ifer.cli finetune-asit --params params.yaml seed=0
    """
    from ifer.core.config import merge
    from ifer.data.build import finetune_datasets
    from ifer.train.asit import train_asit

    cfg = with_protocol(cfg, "released")
    _set_threads(cfg)
    torch.manual_seed(cfg.seed)
    source = finetune_source(cfg)
    if not source.is_file():
        raise FileNotFoundError(
            f"{source}: asit_finetune.init names no file (put the authors' released FFHQ ASIT checkpoint there, or "
            "set asit_finetune.init: null to fine-tune this suite's ASIT run)" if cfg.asit_finetune.get("init") else
            f"{source}: the ASIT run to fine-tune is missing; run `ifer train-asit` (seed={cfg.seed}) first")
    train_cfg = Config(merge(cfg.asit.train, cfg.asit_finetune.train, "asit_finetune.train"))
    net, disc, losses = build_asit(cfg)
    net.load_checkpoint(source)
    train_set, val_set, held = finetune_datasets(cfg, cfg.seed)
    out = finetune_dir(cfg)
    inputs = inputs_dir(cfg)
    identity = _run_identity(cfg, inputs / "asit_finetune.json", inputs / "asit_weights.json",
                             sections=("seed", "asit", "asit_finetune", "data.synthfer"))
    source_sha256 = sha256_file(source)  # a 1.2 GB file for asit_base: hashed once
    prepare_run_dir(out, {**identity, "init_sha256": source_sha256}, "asit_best.pt", info,
                    keep_changed=resume_override, resume=resume)
    record_session(cfg, out, "finetune_asit", [cfg.seed], info)
    if info.is_main:
        save_resolved(cfg, out / "config.yaml")
        write_json(out / "holdout.json", {"dataset": cfg.asit_finetune.dataset, "seed": cfg.seed,
                                          "n_train": len(train_set), "n_holdout": len(held), "holdout": held,
                                          "init": str(source), "init_sha256": source_sha256})
    summary = train_asit(net, disc, losses, train_set, val_set, train_cfg, out, info=info, seed=cfg.seed,
                         quirks=cfg.asit.mode, use_struct=cfg.asit.use_struct, num_workers=cfg.data.num_workers,
                         resume=resume, stop_after_steps=stop_after_steps, model_name=cfg.asit.model,
                         resume_override=resume_override)
    if info.is_main and summary is not None:
        _save_asit_best(cfg, net, out, summary, keep_resume_state=bool(train_cfg.get("keep_resume_state")),
                        finetune_of=str(source), finetune_dataset=cfg.asit_finetune.dataset)
    return summary


# ---------------------------------------------------------------------------------------------- inversion
@torch.no_grad()
def stage_invert(cfg: Config, info: DistInfo):
    """Encode and decode every test image; save source and reconstruction PNGs under the same file names.

    Under torchrun each rank inverts its own shard (``ifer.eval.shard``); the images of every batch are gathered
    and rank 0 alone writes them. Output: ``runs/<profile>/inversions/seed<seed>/{source,recon}``.
    """
    from ifer.data.build import inversion_datasets, save_png
    from ifer.eval.shard import gather_objects, shard, steps_for

    _set_threads(cfg)
    net, _, _ = build_asit(cfg, for_training=False)
    net.load_checkpoint(asit_dir(cfg) / "asit_best.pt")
    net.to(info.device).eval()
    *_, test_set = inversion_datasets(cfg, with_names=True)
    out = inversion_dir(cfg)
    local, _ = shard(test_set, info)
    bs = cfg.asit.invert.batch_size
    n = 0
    from ifer.core.progress import track

    for b in track(range(steps_for(len(local), bs, info)), desc=f"invert seed {cfg.seed} ({len(test_set)} images)",
                   unit="batch", enabled=info.is_main):
        items = [local[i] for i in range(b * bs, min((b + 1) * bs, len(local)))]
        batch = []
        if items:
            x = torch.stack([x for x, _ in items])
            y_hat = net(x.to(info.device), use_struct=_decode_with_struct(cfg), randomize_noise=cfg.asit.invert.randomize_noise)
            batch = list(zip(x, y_hat.cpu(), [name for _, name in items]))
        for part in gather_objects(batch, info):
            for img_src, img_rec, name in part:
                if info.is_main:
                    save_png(img_src, out / "source" / f"{name}.png")
                    save_png(img_rec, out / "recon" / f"{name}.png")
                n += 1
    if n != len(test_set):
        raise RuntimeError(f"inverted {n} of {len(test_set)} test images")
    if info.is_main:  # every image was rewritten: one session, this one
        (out / RUN_RECORD).unlink(missing_ok=True)
    record_session(cfg, out, "invert", [cfg.seed], info)
    if info.is_main:
        save_resolved(cfg, out / "config.yaml")
    return n


def _decode_with_struct(cfg: Config) -> bool:
    """The released inference.py forgot use_struct (decodes from the learned constant); the quirk keeps that."""
    from ifer.core.quirks import get_quirks

    return cfg.asit.use_struct and not get_quirks(cfg.asit.mode).inference_without_struct


def stage_eval_inversion(cfg: Config, info: DistInfo):
    """Inversion metrics of every ASIT seed and of the mean-image baseline (each test image reconstructed as the
    train mean), on ``info.device``, sharded across ranks; rank 0 writes ``inversion_metrics.json``.

    ``methods.asit`` is the mean over ASIT seeds (``per_seed`` and ``rows`` keep each seed); the baseline is
    deterministic and recorded once, under the first ASIT seed. ID similarity uses ``eval.id_embedder`` with ``eval.id_weights``, FID ``eval.inception_weights``.
    """
    from ifer.data.build import inversion_datasets, mean_image, save_png
    from ifer.eval.inversion import evaluate_inversion_sharded, inversion_evaluator_kwargs
    from ifer.train.distributed import barrier

    _set_threads(cfg)
    metrics = list(cfg.eval.inversion_metrics)
    kwargs = inversion_evaluator_kwargs(cfg, info.device)  # the same wiring as `ifer eval-checkpoint`
    seeds = asit_seeds(cfg)
    per_seed = {s: evaluate_inversion_sharded(inversion_dir(cfg, s) / "recon", inversion_dir(cfg, s) / "source",
                                              metrics, info, **kwargs) for s in seeds}
    first = inversion_dir(cfg, seeds[0])
    base_dir = run_root(cfg) / "inversions" / "mean_image"
    if info.is_main:
        train_set, _, _ = inversion_datasets(cfg, with_names=True, augment=False)
        mean = mean_image(train_set)
        for p in sorted((first / "source").glob("*.png")):
            save_png(mean, base_dir / p.name)
    barrier(info)
    baseline = evaluate_inversion_sharded(base_dir, first / "source", metrics, info, **kwargs)
    if not info.is_main:
        return None
    dataset = cfg.data.inversion.test
    rows = [{"method": "asit", "dataset": dataset, "metric": k, "seed": s, "value": v}
            for s, r in per_seed.items() for k, v in r["summary"].items() if is_finite_number(v)]
    rows += [{"method": "mean_image_baseline", "dataset": dataset, "metric": k, "seed": seeds[0], "value": v}
             for k, v in baseline["summary"].items() if is_finite_number(v)]
    asit_mean = {}
    for k, v in per_seed[seeds[0]]["summary"].items():
        vals = [r["summary"][k] for r in per_seed.values()]
        asit_mean[k] = sum(vals) / len(vals) if all(is_finite_number(x) for x in vals) else v
    payload = {
        "dataset": dataset, "split": "test", "n_images": per_seed[seeds[0]]["n_images"], "asit_seeds": seeds,
        "methods": {"asit": asit_mean, "mean_image_baseline": baseline["summary"]},
        "per_seed": {str(s): r["summary"] for s, r in per_seed.items()}, "rows": rows,
        "protocol": per_seed[seeds[0]]["protocol"], "mode": cfg.asit.mode,
    }
    res = results_root(cfg)
    write_json(res / "inversion_metrics.json", payload)
    _inversion_grid(first, res / "plots" / "inversion_grid.png")
    (res / "provenance_eval_inversion.json").unlink(missing_ok=True)  # one session: this one
    record_session(cfg, res, "eval_inversion", seeds, name="provenance_eval_inversion.json")
    return payload


def _inversion_grid(inv: Path, path: Path, n: int = 8) -> None:
    from ifer.data.build import load_png
    from ifer.report.plots import inversion_grid

    names = sorted(p.name for p in (inv / "source").glob("*.png"))[:n]
    src = torch.stack([load_png(inv / "source" / m) for m in names])
    rec = torch.stack([load_png(inv / "recon" / m) for m in names])
    inversion_grid(src, rec, path)


# ---------------------------------------------------------------------------------------------- FER
def ifer_init_checkpoint(cfg: Config) -> Path | None:
    """The ASIT file IFER's encoder starts from (``ifer.init``), for the ASIT run keyed by ``cfg.seed``."""
    init = cfg.ifer.init
    if init == "asit":
        return asit_dir(cfg) / "asit_best.pt"
    if init == "asit_finetune":
        return finetune_dir(cfg) / "asit_best.pt"
    if init == "scratch":
        return None
    raise ConfigError(f"ifer.init: unknown value {init!r}; expected asit, asit_finetune or scratch")


def build_fer_model(cfg: Config, method: str, num_classes: int, start_weights: bool = True):
    """The FER model of ``method`` (ifer initialised from the trained ASIT encoder unless ifer.init=scratch).
    ``start_weights=False``: the network only (``registry.build_untrained``), for a caller that loads best.pt next."""
    from ifer.models.registry import build_from_config, build_untrained

    build = build_from_config if start_weights else build_untrained
    model = build(cfg.fer_methods[method], num_classes=num_classes, mode=cfg.ifer.mode,
                  init_checkpoint=ifer_init_checkpoint(cfg) if start_weights else None)
    if hasattr(model, "method_label"):  # KE2NT: only the paper's CLIP text encoder may report as `ke2nt`
        from ifer.models.ke2nt import check_method_name

        check_method_name(method, model.text_encoder_name)
    return model


def fer_checkpoint_meta(cfg: Config, method: str, dataset: str, seed: int, class_names, model=None) -> dict:
    """What a FER ``best.pt`` records about itself, so ``ifer predict`` / ``ifer eval-checkpoint`` rebuild and
    normalise it without ``--method``: the method and its model section (name, kwargs), quirk mode and resolved
    flags, classes in head order, evaluation preprocessing, profile, protocol, dataset, seed, init and git state.

        python -c "import torch; print(torch.load('runs/tiny/fer/clean/ifer/synthfer/seed0/best.pt', weights_only=True)['meta'])"
    """
    from ifer.core.quirks import resolved_quirks
    from ifer.eval.released import FER_CHECKPOINT_FORMAT, method_record
    from ifer.report.provenance import git_state

    quirks = resolved_quirks(getattr(model, "quirks_mode", "as_described")) if model is not None else None
    meta = {"format": FER_CHECKPOINT_FORMAT, **method_record(cfg, method), "quirks": quirks,
            "num_classes": len(class_names), "class_names": list(class_names), "profile": cfg.profile,
            "protocol": cfg.protocol, "dataset": dataset, "seed": int(seed), "init": init_label(cfg, method),
            "git": git_state()}
    return json.loads(json.dumps(meta, default=str))  # plain JSON types: read back with weights_only=True


def stage_train_fer(cfg: Config, info: DistInfo, methods=None, datasets=None, seeds=None, resume: bool = True,
                    stop_after_epochs: int | None = None, resume_override: bool = False, protocols=None):
    """Train every protocol x method x dataset x seed given (default: all configured) under its protocol's config."""
    results = []
    for pcfg in protocol_configs(cfg, protocols):
        results += _train_fer_protocol(pcfg, info, methods, datasets, seeds, resume, stop_after_epochs, resume_override)
    return results


def _train_fer_protocol(cfg: Config, info: DistInfo, methods, datasets, seeds, resume: bool,
                        stop_after_epochs: int | None, resume_override: bool):
    from ifer.data.build import fer_datasets
    from ifer.train.fer import train_fer

    _set_threads(cfg)
    results = []
    # which of the dvc.yaml train_fer matrix's N runs this is (protocols x methods x datasets x seeds)
    matrix = [(p, m, d, s) for p in cfg.get("protocols", [cfg.protocol]) for m in cfg.methods
              for d in cfg.data.fer.datasets for s in cfg.seeds]
    for method in methods or cfg.methods:
        recipe = cfg.fer_methods[method].train
        for dataset in datasets or cfg.data.fer.datasets:
            splits = fer_datasets(cfg, dataset, recipe)
            for seed in seeds or cfg.seeds:
                if info.is_main:
                    k = (cfg.protocol, method, dataset, seed)
                    log.info("train_fer [%s/%d] %s %s %s seed %s", matrix.index(k) + 1 if k in matrix else "?",
                             len(matrix), *k)
                torch.manual_seed(seed)
                # IFER seed s starts from ASIT seed asit_seeds[s % n] (the ASIT run keyed by the base seed)
                model = build_fer_model(with_seed(cfg, asit_seed_for(cfg, seed)), method, splits.num_classes)
                out = fer_run_dir(cfg, method, dataset, seed)
                prepare_run_dir(out, {**_run_identity(cfg, inputs_dir(cfg) / f"fer_{dataset}.json",
                                                      fer_init_file(cfg, method, seed),
                                                      sections=(f"fer_methods.{method}", "ifer", "data.fer",
                                                                "data.synthfer", "protocol")),
                                      "run": [method, dataset, seed]}, "result.json", info,
                                keep_changed=resume_override, resume=resume)
                record_session(cfg, out, "train_fer", [seed], info)
                if info.is_main:
                    save_resolved(cfg, out / "config.yaml")
                    write_json(out / "protocol.json", {**splits.protocol, "protocol": cfg.protocol})
                run = train_fer(model, splits.train, splits.val, splits.test, recipe, out, info=info, seed=seed,
                                quirks=getattr(model, "quirks_mode", "as_described"),  # set by the family's builder
                                model_selection=cfg.data.fer.model_selection, num_classes=splits.num_classes,
                                eval_batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers,
                                resume=resume, stop_after_epochs=stop_after_epochs,
                                model_name=cfg.fer_methods[method].model,
                                config_section=f"fer_methods.{method}.train", resume_override=resume_override,
                                checkpoint_meta=fer_checkpoint_meta(cfg, method, dataset, seed, splits.class_names,
                                                                    model) if info.is_main else None)
                if run is not None:
                    write_json(out / "result.json", {"method": method, "dataset": dataset, "seed": seed,
                                                     "protocol": cfg.protocol, "best_epoch": run.best_epoch,
                                                     "selection": run.selection_split,
                                                     "test": run.test, "history": run.history})
                    results.append(run)
    return results


def trained_fer_model(cfg: Config, method: str, dataset: str, seed: int, num_classes: int, device):
    """The selected checkpoint (``best.pt``) of one FER run, built as it was trained, on ``device``, in eval mode:
    the one loader of eval_fer and analyze_fer."""
    from ifer.train.checkpoint import load_trained_weights

    model = build_fer_model(with_seed(cfg, asit_seed_for(cfg, seed)), method, num_classes,
                            start_weights=False)  # best.pt replaces every weight
    load_trained_weights(model, fer_run_dir(cfg, method, dataset, seed) / "best.pt", "model")
    return model.to(device).eval()


def stage_eval_fer(cfg: Config, info: DistInfo):
    """Re-score every selected checkpoint of every protocol on its test split; add the identity linear probe on
    SynthFER. Rows and runs carry ``protocol`` (and runs ``init``); predictions go to
    ``predictions/<protocol>/<dataset>.json``, confusion plots to ``plots/confusion/<protocol>/``."""
    from ifer.data.build import fer_datasets
    from ifer.eval.classify import predict_sharded
    from ifer.eval.probe import identity_probe
    from ifer.metrics.fer import fer_metrics
    from ifer.report.plots import confusion_matrix_plot
    from ifer.report.provenance import write_stage_provenance
    from ifer.report.stats import image_ids, write_predictions

    _set_threads(cfg)
    rows, runs = [], []
    res = results_root(cfg)
    predictions: dict[tuple[str, str], dict] = {}  # per (protocol, dataset): ids, labels, predictions per method/seed
    for pcfg, method in ((p, m) for p in protocol_configs(cfg) for m in p.methods):
        recipe = pcfg.fer_methods[method].train
        for dataset in pcfg.data.fer.datasets:
            splits = fer_datasets(pcfg, dataset, recipe, eval_only=True)
            per_ds = predictions.setdefault((pcfg.protocol, dataset), {"image_ids": image_ids(splits.test), "runs": {}})
            confusions = []
            for seed in pcfg.seeds:
                model = trained_fer_model(pcfg, method, dataset, seed, splits.num_classes, info.device)
                # each rank scores its shard; all get every prediction once, in order; rank 0 alone scores and writes
                pred = predict_sharded(model, splits.test, pcfg.eval.batch_size, info.device, info,
                                       features=splits.identities is not None)
                if not info.is_main:
                    continue
                m = fer_metrics(pred["logits"], pred["labels"], splits.num_classes)
                per_ds["labels"] = pred["labels"].tolist()
                per_ds["runs"].setdefault(method, {})[str(seed)] = pred["logits"].argmax(1).tolist()
                confusions.append(m["confusion_matrix"])
                run = {"method": method, "dataset": dataset, "seed": seed, "test": m, "run_protocol": pcfg.protocol,
                       "init": _recorded_init(pcfg, method, seed), "selection": pcfg.data.fer.model_selection,
                       "protocol": splits.protocol}
                if splits.identities is not None:
                    run["identity_probe"] = identity_probe(pred["features"], splits.identities, seed=seed)
                runs.append(run)
                for metric in pcfg.eval.fer_metrics:
                    rows.append({"protocol": pcfg.protocol, "method": method, "dataset": dataset, "metric": metric,
                                 "seed": seed, "value": m[metric]})
            if not info.is_main:
                continue
            mean_cm = torch.tensor(confusions, dtype=torch.float64).mean(0).tolist()
            confusion_matrix_plot(mean_cm, splits.class_names,
                                  res / "plots" / "confusion" / pcfg.protocol / f"{method}_{dataset}.png",
                                  f"{method} on {dataset}, {pcfg.protocol} (test, mean over seeds {list(pcfg.seeds)})")
    if not info.is_main:
        return None
    payload = {"runs": runs, "rows": rows, "chance_accuracy": {d: None for d in cfg.data.fer.datasets}}
    for d in cfg.data.fer.datasets:
        payload["chance_accuracy"][d] = 1.0 / fer_datasets(cfg, d, cfg.fer_methods[cfg.methods[0]].train, eval_only=True).num_classes
    write_json(res / "fer_metrics.json", payload)
    for (protocol, dataset), per_ds in predictions.items():
        write_predictions(res / "predictions" / protocol / f"{dataset}.json", per_ds)
    write_stage_provenance(res, "eval_fer", cfg.to_dict(), cfg.seeds, name="provenance_eval_fer.json",
                           dataset_fingerprints={d: {"digest": p.get("digest")} for d, p in
                                                 ((r["dataset"], r["protocol"]) for r in runs)})
    return payload


def _recorded_init(cfg: Config, method: str, seed: int) -> str:
    """The ``init`` fer_init recorded for this run (what the report's init column shows)."""
    path = fer_init_file(cfg, method, seed)
    return json.loads(path.read_text())["init"] if path.is_file() else init_label(cfg, method)


# ---------------------------------------------------------------------------------------------- beyond accuracy
def _class_map(train_names, test_names) -> dict[int, int]:
    """Test label -> the training class of the same name (the 7 basic expressions by name; a test class the
    training set lacks, e.g. FERPlus's contempt, maps to nothing and its images are left out)."""
    return {j: list(train_names).index(n) for j, n in enumerate(test_names) if n in list(train_names)}


def stage_analyze_fer(cfg: Config, info: DistInfo):
    """Beyond one accuracy (issue 21), from the trained runs, nothing retrained: model cost (parameters, MACs,
    CPU latency / throughput as ratios to a ResNet-18 measured alongside), calibration (ECE, MCE, reliability
    bins), accuracy under 5 corruptions x severities, cross-dataset transfer between the configured datasets;
    on SynthFER accuracy per bin of each known factor (with the paired seed-level test between methods) and linear
    probes of every factor at one common width. Writes ``results/<profile>/analysis_metrics.json`` and the
    plots under ``plots/{reliability,robustness,corruptions}``; the report stage builds the tables.

        python -m ifer.cli analyze-fer --params params.yaml
    """
    import numpy as np

    from ifer.bench.cost import model_cost
    from ifer.data.build import fer_datasets, fer_preprocessing
    from ifer.data.corruptions import PROTOCOL as CORRUPTION_PROTOCOL
    from ifer.data.corruptions import SEVERITIES, CorruptedDataset, parameter
    from ifer.data.factors import factor_bins
    from ifer.data.subsets import SubsetError, match_subset
    from ifer.eval.classify import predict, predict_each
    from ifer.eval.probe import factor_probe
    from ifer.metrics.calibration import PROTOCOL as CALIBRATION_PROTOCOL
    from ifer.metrics.calibration import calibration_metrics
    from ifer.metrics.fer import fer_metrics
    from ifer.report import plots
    from ifer.report.provenance import write_stage_provenance
    from ifer.report.stats import pairwise_table, seed_interval

    _set_threads(cfg)
    a = cfg.analysis

    def by_method(correct: dict) -> tuple[dict, list]:
        """Per method (``{method: seeds x images}`` 0/1 correctness of one factor bin or subset): per-seed
        accuracy with its interval, and the paired seed-level test between the methods."""
        per_method = {m: {"per_seed": [float(r.mean()) for r in c], **seed_interval([float(r.mean()) for r in c])}
                      for m, c in correct.items()}
        return per_method, pairwise_table(correct) if len(correct) > 1 else []

    res = results_root(cfg)
    types, severities = list(a.corruptions.types), [int(s) for s in a.corruptions.severities]
    bs = int(cfg.eval.batch_size)
    runs, cost = [], {}
    pooled: dict[tuple, dict] = {}      # (protocol, method, dataset) -> probs / labels over seeds (reliability plot)
    by_ds: dict[tuple, dict] = {}       # (protocol, dataset) -> metas, identities, correct / features per method, seed
    analysed = list(a.protocols) if a.get("protocols") else list(cfg.protocols)
    # published occlusion / pose subsets (user-supplied image lists): checked before any model is built
    subset_cfg = [dict(x) for x in (a.get("subsets") or [])]
    for x in subset_cfg:
        if not {"name", "dataset", "list"} <= set(x):
            raise SubsetError(f"analysis.subsets entry {x}: needs name, dataset and list")
        if x["dataset"] not in cfg.data.fer.datasets:
            raise SubsetError(f"analysis.subsets {x['name']}: dataset {x['dataset']!r} is not one of the configured "
                              f"data.fer.datasets {list(cfg.data.fer.datasets)}")
    subset_idx: dict[str, list[tuple[dict, list[int], dict]]] = {}   # dataset -> (entry, indices, match info)
    by_subset: dict[tuple, dict] = {}   # (protocol, dataset, subset) -> info, correct per method / seed
    for pcfg in protocol_configs(cfg, analysed):
        for method in pcfg.methods:
            recipe = pcfg.fer_methods[method].train
            prep = fer_preprocessing(recipe)
            size = int(prep["input_size"][1])
            splits = {d: fer_datasets(pcfg, d, recipe, eval_only=True) for d in pcfg.data.fer.datasets}
            # test-only datasets (tiny: synthfer_shift) join the transfer table as columns, never as training rows
            targets = {**splits, **{d: fer_datasets(pcfg, d, recipe, eval_only=True)
                                    for d in (a.transfer_datasets or []) if d not in splits}}
            for dataset, sp in splits.items():
                n_corrupt = len(sp.test) if a.corruptions.max_images is None else min(len(sp.test), int(a.corruptions.max_images))
                if dataset not in subset_idx:  # the test records are the same for every method
                    paths = [r.path for r in sp.test.records]
                    subset_idx[dataset] = [(x, *match_subset(x["list"], paths, dataset))
                                           for x in subset_cfg if x["dataset"] == dataset]
                seed_models: list[tuple[torch.nn.Module, dict]] = []
                for seed in pcfg.seeds:
                    model = trained_fer_model(pcfg, method, dataset, seed, sp.num_classes, info.device)
                    if method not in cost:  # counted (and timed) once per method: every seed is the same network
                        cost[method] = {"model": pcfg.fer_methods[method].model,
                                        **model_cost(model.cpu(), size, timed=bool(a.cost.timed),
                                                     batch=int(a.cost.batch), iters=int(a.cost.iters))}
                        model.to(info.device)
                    pred = predict(model, sp.test, bs, info.device, features=sp.identities is not None)
                    probs = torch.softmax(pred["logits"].double(), 1)
                    labels = pred["labels"]
                    correct = (pred["logits"].argmax(1) == labels).numpy()
                    run = {"protocol": pcfg.protocol, "method": method, "dataset": dataset, "seed": seed,
                           "n_images": len(labels), "accuracy": float(correct.mean()),
                           "calibration": calibration_metrics(probs, labels, int(a.calibration_bins))}
                    pool = pooled.setdefault((pcfg.protocol, method, dataset), {"probs": [], "labels": []})
                    pool["probs"].append(probs)
                    pool["labels"].append(labels)
                    run["corruptions"] = {"n_images": n_corrupt, "input_size": size,
                                          "clean_accuracy": float(correct[:n_corrupt].mean()), "accuracy": {}}
                    seed_models.append((model, run))  # corrupted below, all seeds of this method at once
                    transfer = {}
                    for other, osp in targets.items():
                        if other == dataset or not a.transfer:
                            continue
                        cmap = _class_map(sp.class_names, osp.class_names)
                        keep = [i for i, r in enumerate(osp.test.records) if int(r.label) in cmap]
                        if not keep:
                            continue
                        p = predict(model, torch.utils.data.Subset(osp.test, keep), bs, info.device)
                        y = torch.tensor([cmap[int(v)] for v in p["labels"].tolist()])
                        m = fer_metrics(p["logits"], y, sp.num_classes)
                        transfer[other] = {"accuracy": m["accuracy"], "mean_class_accuracy": m["mean_class_accuracy"],
                                           "n_images": len(keep), "digest": osp.protocol.get("digest"),
                                           "class_map": {osp.class_names[j]: sp.class_names[k] for j, k in cmap.items()}}
                    run["transfer"] = transfer
                    run["subsets"] = {}
                    for x, idx, match in subset_idx[dataset]:
                        run["subsets"][x["name"]] = {"accuracy": float(correct[idx].mean()), "n_images": len(idx)}
                        entry = by_subset.setdefault((pcfg.protocol, dataset, x["name"]), {"match": match, "correct": {}})
                        entry["correct"].setdefault(method, {})[seed] = correct[idx]
                    runs.append(run)
                    if sp.identities is not None:
                        d = by_ds.setdefault((pcfg.protocol, dataset), {
                            "metas": [r.meta for r in sp.test.records], "identities": list(sp.identities),
                            "correct": {}, "features": {}})
                        d["correct"].setdefault(method, {})[seed] = correct
                        d["features"].setdefault(method, {})[seed] = pred["features"]
                # each corrupted image is made once and scored by every seed's model (the corruption, not the
                # small models, dominated this stage in tiny); logits as if scored one model at a time
                sub = list(range(n_corrupt))
                for name in types:
                    for _, run in seed_models:
                        run["corruptions"]["accuracy"][name] = {}
                    for sev in severities:
                        ds = CorruptedDataset(sp.test, name, sev, prep["mean"], prep["std"],
                                              seed=int(a.corruptions.seed), indices=sub)
                        outs = predict_each([m for m, _ in seed_models], ds, bs, info.device)
                        for (_, run), p in zip(seed_models, outs):
                            run["corruptions"]["accuracy"][name][str(sev)] = float(
                                (p["logits"].argmax(1) == p["labels"]).float().mean())
                del seed_models
    # SynthFER: accuracy per factor bin (paired seed-level t test between methods per bin) and factor probes
    robustness, probes = [], []
    for (protocol, dataset), d in by_ds.items():
        methods = list(d["correct"])
        seeds = sorted(d["correct"][methods[0]])
        for factor in a.robustness_factors:
            fb = factor_bins(d["metas"], factor)
            for b, bin_name in enumerate(fb["names"]):
                idx = [i for i, v in enumerate(fb["bins"]) if v == b]
                if not idx:
                    continue
                per_method, tests = by_method({m: np.stack([d["correct"][m][s][idx] for s in seeds]).astype(int)
                                               for m in methods})
                robustness.append({"protocol": protocol, "dataset": dataset, "factor": factor, "bin": bin_name,
                                   "definition": fb["definition"], "edges": fb["edges"], "n_images": len(idx),
                                   "methods": per_method, "pairwise": tests})
        widths = {m: int(d["features"][m][seeds[0]].shape[1]) for m in methods}
        width = int(a.probe_width) if a.probe_width is not None else min(widths.values())
        for factor in a.probe_factors:
            fb = factor_bins(d["metas"], factor)
            for m in methods:
                for s in seeds:
                    r = factor_probe(d["features"][m][s], fb["bins"], d["identities"], width, seed=s,
                                     per_identity_split=factor == "identity", name=factor)
                    probes.append({"protocol": protocol, "dataset": dataset, "factor": factor, "method": m,
                                   "seed": s, "definition": fb["definition"], **r})
    # published subsets: accuracy per method with intervals and the same paired test between methods
    subsets = []
    for (protocol, dataset, name), e in by_subset.items():
        methods = list(e["correct"])
        seeds = sorted(e["correct"][methods[0]])
        correct = {m: np.stack([e["correct"][m][s] for s in seeds]).astype(int) for m in methods}
        per_method, tests = by_method(correct)
        subsets.append({"protocol": protocol, "dataset": dataset, "subset": name, **e["match"],
                        "n_images": int(correct[methods[0]].shape[1]), "methods": per_method, "pairwise": tests})
    if not info.is_main:
        return None
    for folder in ("reliability", "robustness", "corruptions"):  # DVC outs: present even when empty (no SynthFER)
        (res / "plots" / folder).mkdir(parents=True, exist_ok=True)
    payload = {
        "protocols_analysed": analysed,
        "protocols": {"calibration": CALIBRATION_PROTOCOL, "corruptions": CORRUPTION_PROTOCOL,
                      # per input size: pixel parameters (blur sigma, low-resolution size) scale with it, and the
                      # methods differ (paper: KE2NT at 112 px, the others at 224)
                      "corruption_parameters": {str(z): {n: {str(s): parameter(n, s, z) for s in severities}
                                                         for n in types}
                                                for z in sorted({r["corruptions"]["input_size"] for r in runs})},
                      "severity_values": {n: SEVERITIES[n] for n in types},
                      "probe": "multinomial logistic regression (L-BFGS, L2 1e-3) on features standardised and "
                               "PCA-reduced to a common width; nuisance factors: fit on half the identities, scored "
                               "on the others; identity: half of each identity's images",
                      "cost": "params; MACs = torch FlopCounterMode FLOPs / 2 at the evaluated input size, batch 1; "
                              "latency / throughput interleaved with a ResNet-18 reference (ratios)"},
        "cost": cost, "runs": runs, "robustness": robustness, "probes": probes, "subsets": subsets}
    write_json(res / "analysis_metrics.json", payload)
    for (protocol, method, dataset), pool in pooled.items():
        cal = calibration_metrics(torch.cat(pool["probs"]), torch.cat(pool["labels"]), int(a.calibration_bins))
        plots.reliability_diagram(cal["bins"], res / "plots" / "reliability" / protocol / f"{method}_{dataset}.png",
                                  f"{method} on {dataset}, {protocol}: ECE {100 * cal['ece']:.1f} points "
                                  f"(seeds pooled)")
    for (protocol, dataset) in {(r["protocol"], r["dataset"]) for r in robustness}:
        for factor in a.robustness_factors:
            rows = [r for r in robustness if (r["protocol"], r["dataset"], r["factor"]) == (protocol, dataset, factor)]
            if rows:
                plots.factor_plot(rows, res / "plots" / "robustness" / protocol / f"{dataset}_{factor}.png",
                                  f"accuracy by {factor} ({rows[0]['definition']}), {dataset}, {protocol}")
    for (protocol, dataset) in {(r["protocol"], r["dataset"]) for r in runs}:
        sel = [r for r in runs if (r["protocol"], r["dataset"]) == (protocol, dataset)]
        plots.corruption_plot(sel, types, severities, res / "plots" / "corruptions" / protocol / f"{dataset}.png",
                              f"accuracy under corruptions, {dataset}, {protocol} (mean over seeds)")
    write_stage_provenance(res, "analyze_fer", cfg.to_dict(), cfg.seeds, name="provenance_analyze_fer.json")
    return payload


# ---------------------------------------------------------------------------------------------- report
def stage_report(cfg: Config):
    """Tables (Markdown + CSV): paper vs reproduced with 95% intervals, per-class accuracy, pairwise significance,
    identity probe; training-curve plots; provenance (this machine plus every stage's own record)."""
    from ifer.data.build import dataset_fingerprints
    from ifer.report import tables as t
    from ifer.report.plots import training_curves
    from ifer.report.provenance import collect, collect_stage_records
    from ifer.report.stats import load_correctness, pairwise_table
    from ifer.train.logging import read_log

    res = results_root(cfg)
    tol = cfg.report.verdict_tolerance.to_dict()
    written = []
    released = t.released_weight_rows(res / "released")  # `ifer eval-checkpoint` results: "released weights" rows
    inv = json.loads((res / "inversion_metrics.json").read_text())
    inv_rows = t.inversion_rows(inv, default_seed=cfg.seed)
    n_asit = len({r["seed"] for r in inv_rows if r["method"] == "asit"})
    written += t.write_tables(t.compare(t.summarise(inv_rows + released["asit"]), tol), res, "inversion_comparison",
                              f"Inversion ({inv['dataset']} test, {inv['n_images']} images, {n_asit} ASIT seed(s), "
                              f"profile {cfg.profile})")
    fer = json.loads((res / "fer_metrics.json").read_text())
    init = {(r.get("run_protocol") or "clean", r["method"]): r["init"] for r in fer["runs"] if r.get("init")}
    init.update({("released", r["method"]): t.RELEASED_WEIGHTS_INIT for r in released["ifer"]})
    selection = ", ".join(f"{p.protocol}: {p.data.fer.model_selection}" for p in protocol_configs(cfg))
    written += t.write_protocol_tables(t.protocol_comparison(fer["rows"] + released["ifer"], tol, init), res,
                                       "fer_comparison", f"FER (test split; selection on {selection}; profile "
                                       f"{cfg.profile})", configured=list(cfg.protocols))
    label_order = next((r["protocol"].get("label_order") for r in fer["runs"] if r["protocol"].get("label_order")), None)
    if fer["runs"]:
        names = label_order or [str(c) for c in range(len(fer["runs"][0]["test"]["per_class_accuracy"]))]
        written += t.write_per_class(t.per_class_table(fer["runs"], names), names, res, "fer_per_class",
                                     f"FER per-class accuracy (test split, profile {cfg.profile})")
    sig_rows = []
    for protocol in cfg.protocols:
        for dataset in cfg.data.fer.datasets:
            pred_file = res / "predictions" / protocol / f"{dataset}.json"
            if pred_file.is_file():
                correct, _ = load_correctness(pred_file)
                sig_rows += [{"protocol": protocol, "dataset": dataset, **r}
                             for r in pairwise_table(correct, seed=cfg.seed)]
    if sig_rows:
        written += t.write_significance(t.significance_table(sig_rows), res, "fer_significance",
                                        f"FER pairwise comparisons (accuracy, test split, profile {cfg.profile})")
    probe = [{"protocol": r.get("run_protocol") or "clean", "method": r["method"], "dataset": r["dataset"],
              "seed": r["seed"], **r["identity_probe"]} for r in fer["runs"] if "identity_probe" in r]
    written += t.write_probe(probe, res, "identity_probe",
                             "Identity information in the expression features (linear probe, SynthFER test identities)")
    extra_rows = []
    if (res / "analysis_metrics.json").is_file():  # the analyze_fer stage: cost, calibration, robustness, probes
        from ifer.report import analysis

        payload = json.loads((res / "analysis_metrics.json").read_text())
        written += analysis.write_analysis_tables(payload, res, cfg.profile)
        extra_rows = analysis.headline_rows(payload)
    # training curves
    asit_log = read_log(asit_dir(cfg) / "log.jsonl", "train")
    if asit_log:
        training_curves({"G loss": ([r["step"] for r in asit_log], [r["loss"] for r in asit_log]),
                         "L2": ([r["step"] for r in asit_log], [r["l2"] for r in asit_log])},
                        res / "plots" / "curves" / "asit_training.png", "ASIT training")
    series = {}
    for pcfg in protocol_configs(cfg):
        for method in pcfg.methods:
            for dataset in pcfg.data.fer.datasets:
                ep = read_log(fer_run_dir(pcfg, method, dataset, pcfg.seeds[0]) / "log.jsonl", "epoch")
                key = f"{pcfg.data.fer.model_selection}_accuracy"
                if ep:
                    series[f"{pcfg.protocol}/{method}/{dataset} ({pcfg.data.fer.model_selection})"] = (
                        [r["epoch"] + 1 for r in ep], [r[key] for r in ep])
    if series:
        training_curves(series, res / "plots" / "curves" / "fer_selection_accuracy.png",
                        f"FER selection accuracy per epoch (seed {cfg.seeds[0]})", xlabel="epoch")
    # DVC: every headline number as scalar leaves (`dvc metrics show`), per-run and over-seed curves (`dvc plots show`)
    summary = t.summary_metrics(t.headline_rows(fer["rows"] + released["ifer"], inv_rows + released["asit"], probe)
                                + extra_rows)
    written.append(t.write_summary(summary, res / "summary.json"))
    written += _write_curves(cfg, res / "curves")
    # the report machine is not the training machine: keep every stage's own record beside this one
    prov = collect(cfg.to_dict(), dataset_fingerprints(cfg), cfg.seeds,
                   extra={"outputs": sorted(str(p) for p in written),
                          "stages": collect_stage_records(res, run_root(cfg))})
    write_json(res / "provenance.json", prov)
    save_resolved(cfg, res / "config.yaml")
    t.print_headline(summary, [("FER table", res / "fer_comparison.md"), ("inversion table", res / "inversion_comparison.md"),
                               ("DVC metrics (`dvc metrics show`)", res / "summary.json"),
                               ("DVC curves (`dvc plots show`)", res / "curves"), ("plots", res / "plots"),
                               ("provenance", res / "provenance.json"), ("runs (checkpoints, log.jsonl)", run_root(cfg))])
    return written


def _write_curves(cfg: Config, out: Path) -> list[Path]:
    """``curves/fer/<protocol>_<method>_<dataset>_seed<s>.csv`` per FER run (``fer_loss/``: its train loss alone, a
    plot of its own scale), ``curves/fer_mean/...csv`` mean and
    spread over seeds, ``curves/asit/seed<s>.csv`` per ASIT run and ``curves/asit_mean/asit.csv``, from the runs'
    log.jsonl (runs/ is not committed; these are). The folder is rewritten: no stale run survives a config change."""
    import shutil

    from ifer.report import tables as t
    from ifer.train.logging import read_log

    shutil.rmtree(out, ignore_errors=True)
    written = []
    for pcfg in protocol_configs(cfg):
        selection = pcfg.data.fer.model_selection
        for method in pcfg.methods:
            for dataset in pcfg.data.fer.datasets:
                per_seed = {}
                for seed in pcfg.seeds:
                    rows = t.fer_curve(read_log(fer_run_dir(pcfg, method, dataset, seed) / "log.jsonl", "epoch"), selection)
                    if rows:
                        per_seed[seed] = rows
                        name = f"{pcfg.protocol}_{method}_{dataset}_seed{seed}.csv"
                        written.append(t.write_curve(rows, out / "fer" / name, t.FER_CURVE_COLUMNS))
                        written.append(t.write_curve(rows, out / "fer_loss" / name, ["epoch", "step", "train_loss"]))
                if per_seed:
                    written.append(t.write_curve(t.mean_curve(per_seed, "epoch", ["selection_accuracy", "train_loss"]),
                                                 out / "fer_mean" / f"{pcfg.protocol}_{method}_{dataset}.csv"))
    per_seed = {}
    for seed in asit_seeds(cfg):
        rows = t.asit_curve(read_log(asit_dir(cfg, seed) / "log.jsonl"))
        if rows:
            per_seed[seed] = rows
            written.append(t.write_curve(rows, out / "asit" / f"seed{seed}.csv"))
    if per_seed:
        written.append(t.write_curve(t.mean_curve(per_seed, "step", ["train_loss", "val_loss"]),
                                     out / "asit_mean" / "asit.csv"))
    return written


def is_finite_number(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
