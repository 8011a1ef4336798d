"""The pipeline's stages, one function each; ``dvc.yaml`` runs them through ``ifer.cli``.

    data -> train_asit -> invert -> eval_inversion
                      \\-> train_fer (every method x dataset x seed) -> eval_fer -> report

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

from ifer.core.config import Config, save_resolved
from ifer.train.distributed import DistInfo

log = logging.getLogger("ifer")


# ---------------------------------------------------------------------------------------------- paths
def run_root(cfg: Config) -> Path:
    return Path(cfg.paths.runs) / cfg.profile


def results_root(cfg: Config) -> Path:
    return Path(cfg.paths.results) / cfg.profile


def asit_dir(cfg: Config) -> Path:
    return run_root(cfg) / "asit"


def fer_run_dir(cfg: Config, method: str, dataset: str, seed: int) -> Path:
    return run_root(cfg) / "fer" / method / dataset / f"seed{seed}"


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=_json_default) + "\n")
    return path


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _set_threads(cfg: Config) -> None:
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))


# ---------------------------------------------------------------------------------------------- ASIT
def build_asit(cfg: Config, for_training: bool = True):
    """The ASIT network + inversion discriminator + losses, as configured (weights from user paths only)."""
    from ifer.core.weights import resolve_weights
    from ifer.models.registry import create_model
    from ifer.train.asit import ASITLosses

    a = cfg.asit
    # resolve user files before building a 265M-parameter model, so a missing file fails in milliseconds
    decoder_file = None if a.train_decoder else resolve_weights("stylegan2_ffhq_256_rosinality", a.stylegan_weights)
    net = create_model(a.model, mode=a.mode, train_decoder=a.train_decoder,
                       start_from_latent_avg=a.start_from_latent_avg)
    if decoder_file is not None:
        net.load_decoder(decoder_file)
    if net.latent_avg is None:
        net.init_latent_avg(a.latent_avg_samples, seed=cfg.seed)
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


def stage_train_asit(cfg: Config, info: DistInfo, resume: bool = True, stop_after_steps: int | None = None):
    from ifer.data.build import inversion_datasets
    from ifer.train.asit import train_asit

    _set_threads(cfg)
    torch.manual_seed(cfg.seed)
    net, disc, losses = build_asit(cfg)
    train_set, val_set, _ = inversion_datasets(cfg)
    out = asit_dir(cfg)
    if info.is_main:
        save_resolved(cfg, out / "config.yaml")
    summary = train_asit(net, disc, losses, train_set, val_set, cfg.asit.train, out, info=info, seed=cfg.seed,
                         quirks=cfg.asit.mode, use_struct=cfg.asit.use_struct, num_workers=cfg.data.num_workers,
                         resume=resume, stop_after_steps=stop_after_steps)
    if info.is_main and summary is not None:
        best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(best["net"])
        net.save_checkpoint(out / "asit_best.pt", opts={"profile": cfg.profile, "model": cfg.asit.model, "step": best["step"]})
        write_json(out / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------- inversion
@torch.no_grad()
def stage_invert(cfg: Config, info: DistInfo):
    """Encode and decode every test image; save source and reconstruction PNGs under the same file names."""
    from torch.utils.data import DataLoader

    from ifer.data.build import inversion_datasets, save_png

    _set_threads(cfg)
    net, _, _ = build_asit(cfg, for_training=False)
    net.load_checkpoint(asit_dir(cfg) / "asit_best.pt")
    net.to(info.device).eval()
    *_, test_set = inversion_datasets(cfg, with_names=True)
    out = run_root(cfg) / "inversions"
    loader = DataLoader(test_set, batch_size=cfg.asit.invert.batch_size, shuffle=False, drop_last=False)
    n = 0
    for x, names in loader:
        y_hat = net(x.to(info.device), use_struct=_decode_with_struct(cfg), randomize_noise=cfg.asit.invert.randomize_noise)
        for img_src, img_rec, name in zip(x, y_hat.cpu(), names):
            save_png(img_src, out / "source" / f"{name}.png")
            save_png(img_rec, out / "recon" / f"{name}.png")
            n += 1
    if n != len(test_set):
        raise RuntimeError(f"inverted {n} of {len(test_set)} test images")
    save_resolved(cfg, out / "config.yaml")
    return n


def _decode_with_struct(cfg: Config) -> bool:
    """The released inference.py forgot use_struct (decodes from the learned constant); the quirk keeps that."""
    from ifer.core.quirks import get_quirks

    return cfg.asit.use_struct and not get_quirks(cfg.asit.mode).inference_without_struct


def stage_eval_inversion(cfg: Config):
    """Inversion metrics for ASIT and for the mean-image baseline (every test image reconstructed as the train mean)."""
    from ifer.data.build import inversion_datasets, mean_image, save_png
    from ifer.metrics.inversion import evaluate_inversion

    inv = run_root(cfg) / "inversions"
    metrics = list(cfg.eval.inversion_metrics)
    kwargs = {"lpips_backbone": cfg.asit.lpips_backbone, "id_embedder": cfg.eval.id_embedder,
              "id_weights": cfg.asit.id_weights}
    asit = evaluate_inversion(inv / "recon", inv / "source", metrics=metrics, **kwargs)
    train_set, _, test_set = inversion_datasets(cfg, with_names=True, augment=False)
    mean = mean_image(train_set)
    base_dir = run_root(cfg) / "inversions" / "mean_image"
    for p in sorted((inv / "source").glob("*.png")):
        save_png(mean, base_dir / p.name)
    baseline = evaluate_inversion(base_dir, inv / "source", metrics=metrics, **kwargs)
    res = results_root(cfg)
    payload = {
        "dataset": cfg.data.inversion.test, "split": "test", "n_images": asit["n_images"],
        "methods": {"asit": asit["summary"], "mean_image_baseline": baseline["summary"]},
        "protocol": asit["protocol"], "mode": cfg.asit.mode,
    }
    write_json(res / "inversion_metrics.json", payload)
    _inversion_grid(inv, res / "plots" / "inversion_grid.png")
    return payload


def _inversion_grid(inv: Path, path: Path, n: int = 8) -> None:
    from ifer.data.build import load_png
    from ifer.report.plots import inversion_grid

    names = sorted(p.name for p in (inv / "source").glob("*.png"))[:n]
    src = torch.stack([load_png(inv / "source" / m) for m in names])
    rec = torch.stack([load_png(inv / "recon" / m) for m in names])
    inversion_grid(src, rec, path)


# ---------------------------------------------------------------------------------------------- FER
def build_fer_model(cfg: Config, method: str, num_classes: int):
    """The FER model of ``method`` (ifer initialised from the trained ASIT encoder unless ifer.init=scratch)."""
    from ifer.models.registry import create_model

    spec = cfg.fer_methods[method]
    kwargs = dict(spec.get("kwargs", {}))
    model = create_model(spec.model, num_classes=num_classes, **kwargs)
    if method == "ifer" and cfg.ifer.init == "asit":
        model.load_asit_encoder(asit_dir(cfg) / "asit_best.pt")
    return model


def stage_train_fer(cfg: Config, info: DistInfo, methods=None, datasets=None, seeds=None, resume: bool = True,
                    stop_after_epochs: int | None = None):
    from ifer.data.build import fer_datasets
    from ifer.train.fer import train_fer

    _set_threads(cfg)
    results = []
    for method in methods or cfg.methods:
        recipe = cfg.fer_methods[method].train
        for dataset in datasets or cfg.data.fer.datasets:
            splits = fer_datasets(cfg, dataset, recipe)
            for seed in seeds or cfg.seeds:
                torch.manual_seed(seed)
                model = build_fer_model(cfg, method, splits.num_classes)
                out = fer_run_dir(cfg, method, dataset, seed)
                if info.is_main:
                    save_resolved(cfg, out / "config.yaml")
                    write_json(out / "protocol.json", splits.protocol)
                run = train_fer(model, splits.train, splits.val, splits.test, recipe, out, info=info, seed=seed,
                                quirks=cfg.ifer.mode if method == "ifer" else "as_described",
                                model_selection=cfg.data.fer.model_selection, num_classes=splits.num_classes,
                                eval_batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers,
                                resume=resume, stop_after_epochs=stop_after_epochs)
                if run is not None:
                    write_json(out / "result.json", {"method": method, "dataset": dataset, "seed": seed,
                                                     "best_epoch": run.best_epoch, "selection": run.selection_split,
                                                     "test": run.test, "history": run.history})
                    results.append(run)
    return results


def stage_eval_fer(cfg: Config, info: DistInfo):
    """Re-score every selected checkpoint on its test split; add the identity linear probe on SynthFER."""
    from ifer.data.build import fer_datasets
    from ifer.eval.classify import predict
    from ifer.eval.probe import identity_probe
    from ifer.metrics.fer import fer_metrics
    from ifer.report.plots import confusion_matrix_plot

    _set_threads(cfg)
    rows, runs = [], []
    res = results_root(cfg)
    for method in cfg.methods:
        recipe = cfg.fer_methods[method].train
        for dataset in cfg.data.fer.datasets:
            splits = fer_datasets(cfg, dataset, recipe, eval_only=True)
            for seed in cfg.seeds:
                out = fer_run_dir(cfg, method, dataset, seed)
                model = build_fer_model(cfg, method, splits.num_classes)
                model.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=True)["model"])
                model.to(info.device)
                pred = predict(model, splits.test, cfg.eval.batch_size, info.device, features=splits.identities is not None)
                m = fer_metrics(pred["logits"], pred["labels"], splits.num_classes)
                run = {"method": method, "dataset": dataset, "seed": seed, "test": m,
                       "selection": cfg.data.fer.model_selection, "protocol": splits.protocol}
                if splits.identities is not None:
                    run["identity_probe"] = identity_probe(pred["features"], splits.identities, seed=seed)
                runs.append(run)
                for metric in cfg.eval.fer_metrics:
                    rows.append({"method": method, "dataset": dataset, "metric": metric, "seed": seed, "value": m[metric]})
                if seed == cfg.seeds[0]:
                    confusion_matrix_plot(m["confusion_matrix"], splits.class_names,
                                          res / "plots" / "confusion" / f"{method}_{dataset}.png",
                                          f"{method} on {dataset} (seed {seed}, test)")
    payload = {"runs": runs, "rows": rows, "chance_accuracy": {d: None for d in cfg.data.fer.datasets}}
    for d in cfg.data.fer.datasets:
        payload["chance_accuracy"][d] = 1.0 / fer_datasets(cfg, d, cfg.fer_methods[cfg.methods[0]].train, eval_only=True).num_classes
    write_json(res / "fer_metrics.json", payload)
    return payload


# ---------------------------------------------------------------------------------------------- report
def stage_report(cfg: Config):
    """Comparison tables (Markdown + CSV), training-curve plots and provenance in results/<profile>/."""
    from ifer.data.build import dataset_fingerprints
    from ifer.report.plots import training_curves
    from ifer.report.provenance import collect
    from ifer.report.tables import compare, summarise, write_tables
    from ifer.train.logging import read_log

    res = results_root(cfg)
    tol = cfg.report.verdict_tolerance.to_dict()
    written = []
    inv = json.loads((res / "inversion_metrics.json").read_text())
    inv_rows = []
    for method, summary in inv["methods"].items():
        for metric, value in summary.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                inv_rows.append({"method": method, "dataset": inv["dataset"], "metric": metric, "seed": cfg.seed, "value": value})
    written += write_tables(compare(summarise(inv_rows), tol), res, "inversion_comparison",
                            f"Inversion ({inv['dataset']} test, {inv['n_images']} images, profile {cfg.profile})")
    fer = json.loads((res / "fer_metrics.json").read_text())
    written += write_tables(compare(summarise(fer["rows"]), tol), res, "fer_comparison",
                            f"FER (test split, selection on {cfg.data.fer.model_selection}, profile {cfg.profile})")
    probe = [{"method": r["method"], "dataset": r["dataset"], "seed": r["seed"], **r["identity_probe"]}
             for r in fer["runs"] if "identity_probe" in r]
    if probe:
        import pandas as pd

        pd.DataFrame(probe).to_csv(res / "identity_probe.csv", index=False)
        written.append(res / "identity_probe.csv")
    # training curves
    asit_log = read_log(asit_dir(cfg) / "log.jsonl", "train")
    if asit_log:
        training_curves({"G loss": ([r["step"] for r in asit_log], [r["loss"] for r in asit_log]),
                         "L2": ([r["step"] for r in asit_log], [r["l2"] for r in asit_log])},
                        res / "plots" / "curves" / "asit_training.png", "ASIT training")
    series = {}
    for method in cfg.methods:
        for dataset in cfg.data.fer.datasets:
            ep = read_log(fer_run_dir(cfg, method, dataset, cfg.seeds[0]) / "log.jsonl", "epoch")
            key = f"{cfg.data.fer.model_selection}_accuracy"
            if ep:
                series[f"{method}/{dataset}"] = ([r["epoch"] + 1 for r in ep], [r[key] for r in ep])
    if series:
        training_curves(series, res / "plots" / "curves" / "fer_selection_accuracy.png",
                        f"FER {cfg.data.fer.model_selection} accuracy per epoch (seed {cfg.seeds[0]})", xlabel="epoch")
    prov = collect(cfg.to_dict(), dataset_fingerprints(cfg), cfg.seeds,
                   extra={"outputs": sorted(str(p) for p in written)})
    write_json(res / "provenance.json", prov)
    save_resolved(cfg, res / "config.yaml")
    return written


def is_finite_number(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
