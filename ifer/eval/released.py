"""Evaluate an official (released) checkpoint under the suite's protocol: a "released weights" row.

Two official formats are recognised from their keys:

* ASIT: ``{'state_dict': {encoder.*, decoder.*}, 'opts', 'latent_avg'}`` -> inversion metrics on the test split
  of an inversion dataset (``celebahq``, ``ffhq``, ``synthfer``);
* IFER: a timm CheckpointSaver file (``state_dict`` with ``feature_model.*``/``head.*``, an argparse ``Namespace``
  in ``args``) -> FER metrics on the test split of a FER dataset (``rafdb``, ``sfew``, ``affectnet7``, ...).

The suite's own FER ``best.pt`` (``{model, epoch, meta}``) is scored the same way, rebuilt from its ``meta``.

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


#: ``meta['format']`` of the suite's self-describing FER checkpoints (``ifer.stages.fer_checkpoint_meta`` writes it)
FER_CHECKPOINT_FORMAT = "ifer-suite/fer-checkpoint/1"
#: what the CLI says when a file cannot tell which network it holds
NO_META = ("records no 'meta' (written before suite checkpoints described themselves, or not a suite file): pass "
           "--method <fer_methods key> to say which network it is")


def method_record(cfg, method: str) -> dict:
    """The part of a FER checkpoint's ``meta`` that comes from the config: method, model section (name, kwargs;
    not the training recipe), quirk mode and evaluation preprocessing. ``ifer.stages.fer_checkpoint_meta`` writes
    it into every ``best.pt``; a file without ``meta`` is rebuilt from it under ``--method``."""
    from ifer.data.build import fer_preprocessing

    section = {k: v for k, v in cfg.fer_methods[method].to_dict().items() if k != "train"}
    return {"method": method, "model": section["model"], "section": section, "mode": cfg.ifer.mode,
            "preprocessing": fer_preprocessing(cfg.fer_methods[method].train)}


def suite_meta(ckpt: dict) -> dict | None:
    """The ``meta`` record of a suite FER checkpoint (``best.pt``), or None."""
    meta = ckpt.get("meta")
    return meta if isinstance(meta, dict) and meta.get("format") == FER_CHECKPOINT_FORMAT else None


def checkpoint_kind(ckpt: dict, source: str | Path) -> str:
    """``asit`` or ``ifer`` from the official key layout, ``suite_fer`` for the suite's own self-describing FER
    checkpoint; anything else is a one-line CheckpointError."""
    if suite_meta(ckpt) is not None:
        return "suite_fer"
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


# timm 0.5.4 resolve_data_config's fallbacks for a model without a default_cfg (the official ifer_model has none):
# what the authors' train_ifer.py used for every normalisation argument left at None / ''.
TIMM_DEFAULTS = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "crop_pct": 0.875,
                 "interpolation": "bicubic"}


def released_preprocessing(cfg, args) -> tuple[dict, list[str]]:
    """Evaluation preprocessing of an official IFER file from its own ``args`` Namespace (timm CheckpointSaver):
    ``input_size`` / ``img_size``, ``mean``, ``std``, ``crop_pct``, ``interpolation``. Returns the record
    (``ifer.data.build.fer_preprocessing`` layout) and one line per value the file did not state."""
    a = vars(args) if hasattr(args, "__dict__") else dict(args or {})
    assumed = []
    size = a.get("input_size") or a.get("img_size")
    if size is None:
        # timm would resolve 3x224x224, on which the 256-px encoder crashes (view error): the model's own size
        size = cfg.fer_methods.ifer.train.img_size
        assumed.append(f"input size: args has neither input_size nor img_size; used the model's {size} px "
                       "(fer_methods.ifer.train.img_size)")
    hw = [int(size), int(size)] if isinstance(size, (int, float)) else [int(v) for v in list(size)[-2:]]
    prep = {"input_size": [3, *hw]}
    for key in ("crop_pct", "interpolation", "mean", "std"):
        value = a.get(key)
        if value is None or value == "":
            value = TIMM_DEFAULTS[key]
            assumed.append(f"{key}: args.{key} is unset; used timm's default {value}")
        prep[key] = float(value) if key == "crop_pct" else str(value) if key == "interpolation" else \
            [float(v) for v in value]
    return prep, assumed


def load_released_ifer(cfg, path: Path, ckpt: dict, class_folders: Sequence[str]) -> RemappedHead:
    """The official IFER file in the network that wrote it: ``as_released`` quirks (the authors' GC ViT v1
    code), head remapped from ``class_folders``. ``model.choices`` records every choice made."""
    from ifer.core.quirks import resolved_quirks
    from ifer.models.registry import create_model

    order = head_order(class_folders)
    name = cfg.fer_methods.ifer.model
    model = create_model(name, num_classes=len(order), mode="as_released")
    load_state_dict_strict(model, extract_state_dict(ckpt), source=path)
    head = RemappedHead(model, order).eval()
    prep, assumed = released_preprocessing(cfg, ckpt.get("args"))
    head.preprocessing = prep
    head.choices = {"model": name, "mode": "as_released", "quirks": resolved_quirks("as_released")["flags"],
                    "preprocessing": prep, "assumptions": assumed}
    return head


def load_suite_classifier(cfg, path: Path, ckpt: dict, method: str | None = None) -> torch.nn.Module:
    """A FER network from the suite's own checkpoint, built from what the file records (``meta``: model section,
    mode, classes, preprocessing): no ``--method`` needed. A file without ``meta`` (older suite files) needs
    ``method``; then the choices come from the current config and are listed as assumptions.
    ``model.class_names``, ``model.preprocessing`` and ``model.choices`` say what was used."""
    from ifer.core.quirks import resolved_quirks
    from ifer.models.registry import build_from_record

    meta = suite_meta(ckpt)
    assumed = []
    if meta is not None:
        if method is not None and method != meta["method"]:
            raise ConfigError(f"--method {method}: {path} records method {meta['method']!r} (drop --method to use it)")
        record, source = meta, "recorded in the file (meta)"
    elif method is None:
        raise CheckpointError(f"{path}: {NO_META}")
    else:
        if method not in cfg.fer_methods:
            raise ConfigError(f"--method {method}: not a fer_methods key; known: {sorted(cfg.fer_methods)}")
        record = {**method_record(cfg, method), "num_classes": 7, "class_names": list(class_names(7)), "quirks": None}
        source = f"the file records none: --method {method} and the {cfg.profile} config"
        assumed = [f"model: {record['model']} with kwargs {record['section'].get('kwargs') or {}} "
                   f"(fer_methods.{method})",
                   f"7 classes in the canonical order {', '.join(record['class_names'])}",
                   f"mode {record['mode']} (ifer.mode)", f"preprocessing from fer_methods.{method}.train"]
    try:
        model = build_from_record(record)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot rebuild {record.get('model')!r} from its record ({e})") from None
    load_state_dict_strict(model, extract_state_dict(ckpt), source=path)
    model.eval()
    quirks = record.get("quirks") or resolved_quirks(getattr(model, "quirks_mode", "as_described"))
    model.class_names = tuple(record["class_names"])
    model.preprocessing = dict(record["preprocessing"])
    model.choices = {"model": record["model"], "method": record["method"], "mode": quirks["mode"],
                     "quirks": quirks["flags"], "preprocessing": model.preprocessing, "source": source,
                     "class_names": list(model.class_names), "assumptions": assumed,
                     **{k: record[k] for k in ("profile", "protocol", "dataset", "seed", "init") if k in record},
                     **({"git_sha": (record.get("git") or {}).get("sha")} if "git" in record else {})}
    return model


def load_released_asit(cfg, path: Path, ckpt: dict):
    """An ASIT file in the official layout, built with the quirks it records (``opts['quirks']``, written by
    this suite) or, for the authors' file that records none, ``as_released``. ``net.choices`` says which."""
    from ifer.core.quirks import Quirks, resolved_quirks
    from ifer.models.registry import create_model

    opts = ckpt.get("opts") if isinstance(ckpt.get("opts"), dict) else {}
    recorded = opts.get("quirks")
    if isinstance(recorded, dict) and isinstance(recorded.get("flags"), dict):
        try:
            quirks = Quirks(**recorded["flags"])
        except TypeError as e:
            raise CheckpointError(f"{path}: opts['quirks'] names unknown flags ({e})") from None
        source = "recorded in the file (opts['quirks'])"
    else:
        quirks = Quirks()  # the defaults are the released code's behaviours
        source = "the file records none: the authors' code, as_released"
    net = create_model(cfg.asit.model, quirks=quirks, start_from_latent_avg=True)
    load_state_dict_strict(net, extract_state_dict(ckpt), source=path)
    if not torch.is_tensor(ckpt.get("latent_avg")):
        raise CheckpointError(f"{path}: no 'latent_avg' tensor at the top level (the official ASIT file has one)")
    try:
        net.set_latent_avg(ckpt["latent_avg"])
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    q = resolved_quirks(quirks)
    size = int(opts.get("output_size") or cfg.asit.img_size)
    net.choices = {"model": cfg.asit.model, "mode": q["mode"], "quirks_source": source, "quirks": q["flags"],
                   "preprocessing": {"input_size": [3, size, size], "resize": "bilinear (short side), centre crop",
                                     "mean": [0.5] * 3, "std": [0.5] * 3,
                                     "size_source": "opts['output_size']" if opts.get("output_size")
                                     else "asit.img_size (the file has no opts['output_size'])"}}
    return net.eval()


def evaluate_released(cfg, path: str | Path, dataset: str, class_folders: Sequence[str] = DEFAULT_CLASS_FOLDERS,
                      device: str | torch.device = "cpu", return_outputs: bool = False):
    """Score an official checkpoint on ``dataset``'s test split; return the JSON-able result (with ``rows`` and
    ``choices``: model, mode, quirks, preprocessing, assumptions); with ``return_outputs`` also the network's
    outputs ``{'_logits'}`` (canonical class order) or ``{'_outputs'}`` (reconstructions), in dataset order."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    kind = checkpoint_kind(ckpt, path)
    device = torch.device(device)
    base = {"kind": kind, "checkpoint": str(path), "sha256": sha256_file(path), "dataset": dataset, "split": "test",
            "profile": cfg.profile, "saved_args": _namespace_summary(ckpt.get("args") or ckpt.get("opts"))}
    if kind == "ifer":
        model = load_released_ifer(cfg, path, ckpt, class_folders)
        result = {**base, **_evaluate_fer(cfg, path, model, dataset, device, "ifer (released weights)",
                                          model.order, class_folders)}
    elif kind == "suite_fer":
        model = load_suite_classifier(cfg, path, ckpt)
        result = {**base, **_evaluate_fer(cfg, path, model, dataset, device,
                                          f"{model.choices['method']} (checkpoint)", model.class_names)}
    else:
        result = {**base, **_evaluate_inversion(cfg, path, ckpt, dataset, device)}
    # the network outputs (logits / reconstructions) are for tests that compare them with a reference forward
    tensors = {k: result.pop(k) for k in [k for k in result if k.startswith("_")]}
    return (result, tensors) if return_outputs else result


def _evaluate_fer(cfg, path, model, dataset, device, method: str, head_order: Sequence[str],
                  class_folders: Sequence[str] | None = None) -> dict:
    """Score a loaded classifier (``model.preprocessing``: its own normalisation) on ``dataset``'s test split;
    ``class_folders`` only for the official file, whose head order is derived from them."""
    from ifer.data.build import fer_datasets, recipe_with_preprocessing
    from ifer.eval.classify import predict
    from ifer.metrics.fer import fer_metrics

    model = model.to(device)
    # the file's own normalisation, not the suite recipe's: fer_datasets builds its eval transform from these keys
    recipe = recipe_with_preprocessing(cfg.fer_methods.ifer.train, model.preprocessing)
    splits = fer_datasets(cfg, dataset, recipe, eval_only=True)
    if splits.num_classes != len(head_order):
        raise CheckpointError(f"{path}: its head has {len(head_order)} classes but {dataset} has {splits.num_classes}")
    if class_folders is None and tuple(head_order) != tuple(splits.class_names):
        raise CheckpointError(f"{path}: its classes {list(head_order)} are not {dataset}'s {list(splits.class_names)}")
    pred = predict(model, splits.test, cfg.eval.batch_size, device)
    m = fer_metrics(pred["logits"], pred["labels"], splits.num_classes)
    official = class_folders is not None
    return {
        "method": method, "test": m, "protocol": splits.protocol, "choices": model.choices, "_logits": pred["logits"],
        "class_order": {"class_folders": list(class_folders) if official else None, "head_order": list(head_order),
                        "canonical_order": list(splits.class_names),
                        "assumption": None if not official or tuple(class_folders) != DEFAULT_CLASS_FOLDERS else
                        "the authors' class folders were named by RAF-DB's numbering 1..7 (not published; "
                        "pass --class-folders to change)",
                        "note": WRONG_ORDER_NOTE if official else "head order recorded in the checkpoint"},
        "rows": [{"method": method, "dataset": dataset, "metric": k, "seed": 0, "value": m[k]}
                 for k in cfg.eval.fer_metrics],
    }


def _evaluate_inversion(cfg, path, ckpt, dataset, device) -> dict:
    from torch.utils.data import DataLoader

    from ifer.data import open_dataset
    from ifer.data.build import dataset_root
    from ifer.data.transforms import eval_transform
    from ifer.eval.inversion import inversion_evaluator

    net = load_released_asit(cfg, path, ckpt).to(device)
    size = net.choices["preprocessing"]["input_size"][-1]
    test = open_dataset(dataset, dataset_root(cfg, dataset), "test", transform=eval_transform(size))
    evaluator = inversion_evaluator(cfg, device)  # the same wiring as the eval-inversion stage
    n, outputs = 0, []
    with torch.no_grad():
        for x, _ in DataLoader(test, batch_size=cfg.asit.invert.batch_size, shuffle=False, drop_last=False):
            x = x.to(device)
            y = net(x, use_struct=cfg.asit.use_struct, randomize_noise=cfg.asit.invert.randomize_noise)
            evaluator.update(y, x)
            outputs.append(y.cpu())
            n += len(x)
    out = evaluator.compute()
    summary = out["summary"]
    method = "asit (released weights)"
    choices = {**net.choices, "use_struct": bool(cfg.asit.use_struct),
               "randomize_noise": bool(cfg.asit.invert.randomize_noise)}
    return {"method": method, "n_images": n, "summary": summary, "protocol": out["protocol"],
            "use_struct": bool(cfg.asit.use_struct), "choices": choices, "_outputs": torch.cat(outputs),
            "rows": [{"method": method, "dataset": dataset, "metric": k, "seed": 0, "value": v}
                     for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]}


def result_path(cfg, result: dict) -> Path:
    """``results/<profile>/released/<kind>_<dataset>_<checkpoint stem>.json`` for an official file (``ifer report``
    merges those as "released weights" rows); ``results/<profile>/checkpoints/<method>_<dataset>_<stem>.json``
    for a suite checkpoint, which the report does not merge (its runs are in the tables already)."""
    stem = Path(result["checkpoint"]).stem
    if result["kind"] == "suite_fer":
        return Path(cfg.paths.results) / cfg.profile / "checkpoints" / \
            f"{result['choices']['method']}_{result['dataset']}_{stem}.json"
    return Path(cfg.paths.results) / cfg.profile / "released" / f"{result['kind']}_{result['dataset']}_{stem}.json"


def describe(result: dict) -> str:
    """Human summary printed by the CLI: the numbers, the class-order assumption and the wrong-order warning."""
    lines = [f"{result['method']} on {result['dataset']} test ({result['checkpoint']}):"]
    if result["kind"] in ("ifer", "suite_fer"):
        t = result["test"]
        lines.append(f"  accuracy {100 * t['accuracy']:.2f} %, mean class accuracy {100 * t['mean_class_accuracy']:.2f} %, "
                     f"n = {t['num_samples']}")
        co = result["class_order"]
        lines.append(f"  head order (from class folders {','.join(co['class_folders'])}): {', '.join(co['head_order'])}"
                     if co["class_folders"] else f"  head order (recorded in the file): {', '.join(co['head_order'])}")
        if co["assumption"]:
            lines.append(f"  assumption: {co['assumption']}")
        lines.append(f"  note: {co['note']}")
        lines += _choice_lines(result["choices"])
        lines.append("  confusion matrix (rows true, columns predicted, canonical order "
                     f"{', '.join(co['canonical_order'])}):")
        lines += ["    " + " ".join(f"{v:5d}" for v in row) for row in t["confusion_matrix"]]
    else:
        lines += [f"  {k}: {v}" for k, v in result["summary"].items()]
        c = result["choices"]
        lines += _choice_lines(c)
        lines.append(f"  decoding: use_struct={c['use_struct']}, randomize_noise={c['randomize_noise']}; "
                     f"quirks {c['quirks_source']}")
    return "\n".join(lines)


def _choice_lines(c: dict) -> list[str]:
    """Every choice the evaluation made: architecture, quirk mode and flags, preprocessing, and what was assumed."""
    on = [k for k, v in c["quirks"].items() if v]
    p = c["preprocessing"]
    lines = [f"  model: {c['model']}, mode {c['mode']} (quirks on: {', '.join(on) or 'none'})",
             f"  preprocessing: input {'x'.join(map(str, p['input_size']))}, mean {p['mean']}, std {p['std']}, "
             + (f"interpolation {p['interpolation']}, crop_pct {p['crop_pct']} (resize to size / crop_pct, "
                "centre crop)" if "crop_pct" in p else f"resize {p['resize']} (size from {p['size_source']})")]
    if "source" in c:
        lines.append(f"  what the file is: {c['source']}"
                     + "".join(f", {k} {c[k]}" for k in ("method", "profile", "protocol", "dataset", "seed", "init",
                                                        "git_sha") if c.get(k) is not None))
    lines += [f"  assumption: {a}" for a in c.get("assumptions", [])]
    return lines
