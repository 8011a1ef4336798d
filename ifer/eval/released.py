"""Evaluate an official (released) checkpoint under the suite's protocol: a "released weights" row.

Two official formats are recognised from their keys:

* ASIT: ``{'state_dict': {encoder.*, decoder.*}, 'opts', 'latent_avg'}`` -> inversion metrics on the test split
  of an inversion dataset (``celebahq``, ``ffhq``, ``synthfer``);
* IFER: a timm CheckpointSaver file (``state_dict`` with ``feature_model.*``/``head.*``, an argparse ``Namespace``
  in ``args``) -> FER metrics on the test split of a FER dataset (``rafdb``, ``sfew``, ``affectnet7``, ...).

The released IFER head follows ImageFolder's alphabetical order of the authors' class-folder names, which were
never published. ``class_folders`` names them explicitly; the default assumes RAF-DB's own numbering ``1..7``
(``1`` surprise, ``2`` fear, ``3`` disgust, ``4`` happy, ``5`` sad, ``6`` anger, ``7`` neutral). The logits are
remapped onto the suite's canonical order (``ifer.data.labels.EXPRESSIONS_7``) before scoring. A wrong order
does not fail loudly: it shows up as a confusion matrix whose mass sits off the diagonal, permuted.

    ifer eval-checkpoint CHECKPOINT --dataset rafdb --profile paper [--class-folders 1,2,3,4,5,6,7]
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from ifer.core.config import ConfigError
from ifer.core.io import sha256_file
from ifer.core.loading import CheckpointError, extract_state_dict, load_state_dict_strict, read_checkpoint
from ifer.data.labels import EXPRESSIONS_7, RAFDB, class_names

DEFAULT_CLASS_FOLDERS = ("1", "2", "3", "4", "5", "6", "7")
WRONG_ORDER_NOTE = ("a wrong class order is not an error: it shows up as a confusion matrix whose large entries "
                    "sit off the diagonal in a permutation pattern; check the confusion matrix before trusting "
                    "the accuracy")


def checkpoint_kind(ckpt: dict, source: str | Path) -> str:
    """``asit`` or ``ifer`` from the official key layout; anything else is a one-line CheckpointError."""
    try:
        sd = extract_state_dict(ckpt)
    except KeyError as e:
        raise CheckpointError(f"{source}: {e.args[0]}") from None
    if any(k.startswith("encoder.") for k in sd) and any(k.startswith("decoder.") for k in sd):
        return "asit"
    if any(k.startswith("feature_model.") for k in sd) and any(k.startswith("head.") for k in sd):
        return "ifer"
    raise CheckpointError(f"{source}: neither an official ASIT checkpoint (encoder.*/decoder.*) nor an official "
                          f"IFER checkpoint (feature_model.*/head.*); first keys: {sorted(sd)[:3]}")


def head_order(class_folders: Sequence[str] = DEFAULT_CLASS_FOLDERS) -> tuple[str, ...]:
    """Canonical expression of each head output: ImageFolder sorts the folder names, each names an expression.

    A folder name is a RAF-DB label number (``"1"``..``"7"``) or a canonical expression name; anything else
    is a ``ConfigError`` (one line from the CLI).

    >>> head_order(["1", "2", "3", "4", "5", "6", "7"])
    ('surprise', 'fear', 'disgust', 'happy', 'sad', 'anger', 'neutral')
    >>> head_order(["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"])[:2]
    ('anger', 'disgust')
    """
    names = []
    for folder in sorted(class_folders):  # torchvision ImageFolder: classes = sorted(entry.name ...)
        if re.fullmatch(r"\d+", folder) and int(folder) in RAFDB.native_to_name:
            names.append(RAFDB.name(int(folder)))
        elif folder in EXPRESSIONS_7 or folder == "contempt":
            names.append(folder)
        else:
            raise ConfigError(f"--class-folders: folder {folder!r} is neither a RAF-DB label 1..7 nor one of {EXPRESSIONS_7}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--class-folders {','.join(class_folders)} name an expression twice: {names}")
    return tuple(names)


def canonical_permutation(order: Sequence[str]) -> torch.Tensor:
    """Indices ``perm`` with ``logits[:, perm]`` in canonical order (``class_names(len(order))``)."""
    canonical = class_names(len(order))
    missing = set(canonical) - set(order)
    if missing:
        raise ConfigError(f"--class-folders: head order {list(order)} lacks {sorted(missing)}")
    return torch.tensor([list(order).index(c) for c in canonical])


class RemappedHead(torch.nn.Module):
    """A classifier whose outputs are put into the canonical class order (``logits[:, perm]``)."""

    def __init__(self, model: torch.nn.Module, order: Sequence[str]):
        super().__init__()
        self.model = model
        self.order = tuple(order)
        self.register_buffer("perm", canonical_permutation(order), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.perm]

    def expression_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.expression_features(x)


def _namespace_summary(args) -> dict:
    """The saved argparse Namespace as plain JSON-able values (it records how the authors trained)."""
    if args is None:
        return {}
    items = vars(args) if hasattr(args, "__dict__") else dict(args)
    return {k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v) for k, v in sorted(items.items())}


def load_released_ifer(cfg, path: Path, ckpt: dict, class_folders: Sequence[str]) -> RemappedHead:
    from ifer.models.registry import create_model

    order = head_order(class_folders)
    model = create_model(cfg.fer_methods.ifer.model, num_classes=len(order))
    load_state_dict_strict(model, extract_state_dict(ckpt), source=path)
    return RemappedHead(model, order).eval()


def load_released_asit(cfg, path: Path, ckpt: dict):
    from ifer.models.registry import create_model

    net = create_model(cfg.asit.model, mode=cfg.asit.mode, start_from_latent_avg=True)
    load_state_dict_strict(net, extract_state_dict(ckpt), source=path)
    if not torch.is_tensor(ckpt.get("latent_avg")):
        raise CheckpointError(f"{path}: no 'latent_avg' tensor at the top level (the official ASIT file has one)")
    try:
        net.set_latent_avg(ckpt["latent_avg"])
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return net.eval()


def evaluate_released(cfg, path: str | Path, dataset: str, class_folders: Sequence[str] = DEFAULT_CLASS_FOLDERS,
                      device: str | torch.device = "cpu") -> dict:
    """Score an official checkpoint on ``dataset``'s test split; return the JSON-able result (with ``rows``)."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    kind = checkpoint_kind(ckpt, path)
    device = torch.device(device)
    base = {"kind": kind, "checkpoint": str(path), "sha256": sha256_file(path), "dataset": dataset, "split": "test",
            "profile": cfg.profile, "saved_args": _namespace_summary(ckpt.get("args") or ckpt.get("opts"))}
    if kind == "ifer":
        return {**base, **_evaluate_fer(cfg, path, ckpt, dataset, class_folders, device)}
    return {**base, **_evaluate_inversion(cfg, path, ckpt, dataset, device)}


def _evaluate_fer(cfg, path, ckpt, dataset, class_folders, device) -> dict:
    from ifer.data.build import fer_datasets
    from ifer.eval.classify import predict
    from ifer.metrics.fer import fer_metrics

    model = load_released_ifer(cfg, path, ckpt, class_folders).to(device)
    splits = fer_datasets(cfg, dataset, cfg.fer_methods.ifer.train, eval_only=True)
    if splits.num_classes != len(model.order):
        raise CheckpointError(f"{path}: its head has {len(model.order)} classes but {dataset} has {splits.num_classes}")
    pred = predict(model, splits.test, cfg.eval.batch_size, device)
    m = fer_metrics(pred["logits"], pred["labels"], splits.num_classes)
    method = "ifer (released weights)"
    return {
        "method": method, "test": m, "protocol": splits.protocol,
        "class_order": {"class_folders": list(class_folders), "head_order": list(model.order),
                        "canonical_order": list(splits.class_names),
                        "assumption": None if tuple(class_folders) != DEFAULT_CLASS_FOLDERS else
                        "the authors' class folders were named by RAF-DB's numbering 1..7 (not published; "
                        "pass --class-folders to change)",
                        "note": WRONG_ORDER_NOTE},
        "rows": [{"method": method, "dataset": dataset, "metric": k, "seed": 0, "value": m[k]}
                 for k in cfg.eval.fer_metrics],
    }


def _evaluate_inversion(cfg, path, ckpt, dataset, device) -> dict:
    from torch.utils.data import DataLoader

    from ifer.data import open_dataset
    from ifer.data.build import dataset_root
    from ifer.data.transforms import eval_transform
    from ifer.metrics.inversion import InversionEvaluator

    net = load_released_asit(cfg, path, ckpt).to(device)
    test = open_dataset(dataset, dataset_root(cfg, dataset), "test", transform=eval_transform(cfg.asit.img_size))
    evaluator = InversionEvaluator(cfg.eval.inversion_metrics, lpips_backbone=cfg.asit.lpips_backbone,
                                   id_embedder=cfg.eval.id_embedder, id_weights=cfg.asit.id_weights, device=device)
    n = 0
    with torch.no_grad():
        for x, _ in DataLoader(test, batch_size=cfg.asit.invert.batch_size, shuffle=False, drop_last=False):
            x = x.to(device)
            evaluator.update(net(x, use_struct=cfg.asit.use_struct, randomize_noise=cfg.asit.invert.randomize_noise), x)
            n += len(x)
    out = evaluator.compute()
    summary = out["summary"]
    method = "asit (released weights)"
    return {"method": method, "n_images": n, "summary": summary, "protocol": out["protocol"],
            "use_struct": bool(cfg.asit.use_struct),
            "rows": [{"method": method, "dataset": dataset, "metric": k, "seed": 0, "value": v}
                     for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]}


def result_path(cfg, result: dict) -> Path:
    """``results/<profile>/released/<kind>_<dataset>_<checkpoint stem>.json``."""
    return Path(cfg.paths.results) / cfg.profile / "released" / \
        f"{result['kind']}_{result['dataset']}_{Path(result['checkpoint']).stem}.json"


def describe(result: dict) -> str:
    """Human summary printed by the CLI: the numbers, the class-order assumption and the wrong-order warning."""
    lines = [f"{result['method']} on {result['dataset']} test ({result['checkpoint']}):"]
    if result["kind"] == "ifer":
        t = result["test"]
        lines.append(f"  accuracy {100 * t['accuracy']:.2f} %, mean class accuracy {100 * t['mean_class_accuracy']:.2f} %, "
                     f"n = {t['num_samples']}")
        co = result["class_order"]
        lines.append(f"  head order (from class folders {','.join(co['class_folders'])}): {', '.join(co['head_order'])}")
        if co["assumption"]:
            lines.append(f"  assumption: {co['assumption']}")
        lines.append(f"  note: {co['note']}")
        lines.append("  confusion matrix (rows true, columns predicted, canonical order "
                     f"{', '.join(co['canonical_order'])}):")
        lines += ["    " + " ".join(f"{v:5d}" for v in row) for row in t["confusion_matrix"]]
    else:
        lines += [f"  {k}: {v}" for k, v in result["summary"].items()]
    return "\n".join(lines)
