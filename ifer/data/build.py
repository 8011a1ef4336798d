"""From a resolved config to datasets: the glue the pipeline stages use (one place for transforms per stage).

    python -c "from ifer.core.config import load_config; from ifer.data.build import fer_datasets; \
cfg = load_config('tiny'); s = fer_datasets(cfg, 'synthfer', cfg.fer_methods.ifer.train); print(len(s.train), s.protocol)"
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from ifer.core.config import ConfigError
from ifer.data import open_dataset
from ifer.data.common import BAD_IMAGES, SHOW_SKIPPED, RecordDataset, load_rgb
from ifer.data.labels import FER_DATASETS, class_names
from ifer.data.synthfer import SynthFERConfig, generate_synthfer
from ifer.data.transforms import eval_transform, ke2nt_train_transform, train_transform

log = logging.getLogger(__name__)



def dataset_root(cfg, name: str) -> Path:
    """SynthFER lives at ``data.synthfer.out``; licensed datasets under ``paths.datasets/<adapter>``."""
    adapter = FER_DATASETS.get(name, (name, {}))[0]
    if name == "synthfer_shift":
        return Path(cfg.data.synthfer.out) / "shift"
    return Path(cfg.data.synthfer.out) if adapter == "synthfer" else Path(cfg.paths.datasets) / adapter


def bad_input_policy(cfg, name: str) -> dict[str, Any]:
    """Adapter kwargs for the configured ``data.on_bad_image`` / ``data.on_bad_label`` (``error`` | ``skip``).

    SynthFER is generated and checked against its manifest, so it only takes the image policy; FFHQ and
    CelebA-HQ have no labels, and a file name found twice is their label-level problem (``on_duplicate``).
    ``data.num_workers`` processes decode the images when ``skip`` checks them at construction.
    """
    policy = {}
    for key in ("on_bad_image", "on_bad_label"):
        value = cfg.data.get_path(key, "error")
        if value not in ("error", "skip"):
            raise ConfigError(f"data.{key} must be 'error' or 'skip', got {value!r}")
        policy[key] = value
    adapter = FER_DATASETS.get(name, (name, {}))[0]
    out: dict[str, Any] = {"on_bad_image": policy["on_bad_image"], "workers": int(cfg.data.num_workers)}
    if adapter in ("ffhq", "celebahq"):
        out["on_duplicate"] = policy["on_bad_label"]
    elif adapter != "synthfer":
        out["on_bad_label"] = policy["on_bad_label"]
    return out


def generate_configured_synthfer(cfg) -> dict:
    """Generate SynthFER as configured in ``data.synthfer`` into ``<paths.datasets>/synthfer``."""
    params = {k: v for k, v in cfg.data.synthfer.to_dict().items() if k != "out"}
    manifest = generate_synthfer(Path(cfg.data.synthfer.out), SynthFERConfig(**params))
    shift = cfg.data.get_path("synthfer_shift", None)
    if shift:  # same seed and counts: the same people and random draws, only the amplitudes given here differ
        generate_synthfer(dataset_root(cfg, "synthfer_shift"), SynthFERConfig(**{**params, **shift.to_dict()}))
    write_synthfer_subset_lists(Path(cfg.data.synthfer.out))
    return manifest


def write_synthfer_subset_lists(root: Path) -> dict[str, Path]:
    """``<root>/subsets/occlusion_list.txt``: SynthFER's occluded test images, one file name per line -- the
    format of the published RAF-DB / FERPlus occlusion lists -- so ``tiny`` runs ``analysis.subsets`` the way a
    user's list does (ifer.data.subsets). Its accuracy must equal the ``occluded`` bin of the robustness table."""
    test = open_dataset("synthfer", root, split="test")
    names = [r.path.name for r in test.records if str(r.meta.get("occlusion", "none")) != "none"]
    out = root / "subsets" / "occlusion_list.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{n}\n" for n in names))
    return {"occlusion": out}


# ---------------------------------------------------------------------------------------------- inversion
class _Named(Dataset):
    """(image, file-stem) pairs so inversions are saved and matched by file name."""

    def __init__(self, ds: RecordDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        x, _ = self.ds[i]
        return x, self.ds.records[i].path.stem


def inversion_datasets(cfg, with_names: bool = False, augment: bool = True) -> tuple[Dataset, Dataset, Dataset]:
    """(train, val, test) image sets for ASIT. SynthFER: its identity-disjoint splits; real data: FFHQ
    (train, with a 1% held-out val) and CelebA-HQ test. Images in [-1, 1] at the model's resolution;
    training adds the released horizontal flip unless ``augment=False`` (deterministic statistics)."""
    res = cfg.asit.img_size
    train_tf = train_transform(res) if augment else eval_transform(res)
    train_name, test_name = cfg.data.inversion.train, cfg.data.inversion.test
    if train_name == "synthfer":
        root = dataset_root(cfg, "synthfer")
        policy = bad_input_policy(cfg, "synthfer")
        train = open_dataset("synthfer", root, "train", transform=train_tf, **policy)
        val = open_dataset("synthfer", root, "val", transform=eval_transform(res), **policy)
    else:
        root = Path(cfg.paths.datasets)
        full = open_dataset(train_name, root / train_name, "train", transform=train_tf, **bad_input_policy(cfg, train_name))
        g = torch.Generator().manual_seed(cfg.seed)
        order = torch.randperm(len(full), generator=g).tolist()
        n_val = max(1, len(full) // 100)
        full_eval = copy.copy(full)  # same (already checked) records, un-augmented: no second scan of 70k files
        full_eval.transform = eval_transform(res)
        val = torch.utils.data.Subset(full_eval, order[:n_val])
        train = torch.utils.data.Subset(full, order[n_val:])
    test = open_dataset(test_name, dataset_root(cfg, test_name), "test", transform=eval_transform(res),
                        **bad_input_policy(cfg, test_name))
    if with_names:
        test = _Named(test)
    return train, val, test


def finetune_datasets(cfg, seed: int) -> tuple[Dataset, Dataset, list[str]]:
    """(train, holdout, held-out file names) for the released protocol's ASIT fine-tune (``asit_finetune``).

    The README's ``rafdb_encode``: RAF-DB train minus ``holdout`` random images, which are the validation set.
    The draw is a seeded permutation (``seed`` = the ASIT seed) of the full train split (no val carved out);
    images in [-1, 1] at ``asit.img_size`` with the released horizontal flip for training only.
    """
    ft = cfg.asit_finetune
    name = ft.dataset
    if name not in FER_DATASETS:
        raise ConfigError(f"asit_finetune.dataset: unknown FER dataset {name!r}; known: {sorted(FER_DATASETS)}")
    adapter, kwargs = FER_DATASETS[name]
    kwargs = {**kwargs, **bad_input_policy(cfg, name)}
    if adapter != "synthfer":
        kwargs = {**kwargs, "model_selection": "test", "seed": seed}  # "test": train is the whole official train split
    res = cfg.asit.img_size
    full = open_dataset(adapter, dataset_root(cfg, name), "train", transform=train_transform(res), **kwargs)
    n_hold = int(ft.holdout)
    if not 0 < n_hold < len(full):
        raise ConfigError(f"asit_finetune.holdout={n_hold} must be between 1 and {len(full) - 1} "
                          f"({name} train has {len(full)} images)")
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(int(seed))).tolist()
    full_eval = copy.copy(full)  # same records, un-augmented, for the validation on the held-out images
    full_eval.transform = eval_transform(res)
    held = sorted(order[:n_hold])
    names = [full.records[i].path.name for i in held]
    return torch.utils.data.Subset(full, sorted(order[n_hold:])), torch.utils.data.Subset(full_eval, held), names


def mean_image(dataset: Dataset, limit: int = 2000) -> torch.Tensor:
    """Mean of (up to ``limit``) training images: the trivial reconstruction every inversion must beat.

    Pass an un-augmented dataset (``inversion_datasets(cfg, augment=False)``): with the random flip the
    mean, and so the baseline's metrics, would change from run to run.
    """
    n = min(len(dataset), limit)
    total = None
    for i in range(n):
        x = dataset[i][0]
        total = x.clone() if total is None else total + x
    return total / n


def save_png(img: torch.Tensor, path: Path) -> None:
    """Save a (3,H,W) image in [-1, 1] losslessly as 8-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr).save(path)


def load_png(path: Path) -> torch.Tensor:
    """A saved inversion image as (3,H,W) in [-1, 1]; a damaged file is a one-line BadImageError."""
    arr = np.asarray(load_rgb(path, "inversions"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------- FER
def skip_record(splits: dict[str, RecordDataset | None]) -> dict[str, Any]:
    """What ``skip`` dropped from one dataset, over the splits given (``None``: not opened).

    ``skipped`` / ``skipped_files``: label-file kinds as every split's adapter counts them (each reads the whole
    label file), bad images as the union of the files each split's decode pass dropped. ``splits``:
    ``{split: {n_scored, n, skipped}}``, each split's own samples served of those it had.
    """
    opened = {name: ds for name, ds in splits.items() if ds is not None}
    if not opened:
        return {}
    first = opened.get("test") or next(iter(opened.values()))
    skipped = {k: v for k, v in first.protocol.get("skipped", {}).items() if k != BAD_IMAGES}
    files = {k: list(v) for k, v in first.protocol.get("skipped_files", {}).items() if k != BAD_IMAGES}
    bad: dict[Path, str] = {}
    for ds in opened.values():
        bad.update(getattr(ds, "bad_images", {}))
    if bad:
        skipped[BAD_IMAGES] = len(bad)
        files[BAD_IMAGES] = [f"{p} ({why})" for p, why in list(bad.items())[:SHOW_SKIPPED]]
    per_split = {}
    for name, ds in opened.items():
        own = len(getattr(ds, "bad_images", {}))
        per_split[name] = {"n_scored": ds.protocol.get("n_scored", len(ds)), "n": ds.protocol.get("n", len(ds)),
                           "skipped": {BAD_IMAGES: own} if own else {}}
    return {"skipped": skipped, "skipped_files": files, "splits": per_split}


@dataclass
class FERSplits:
    train: Dataset | None
    val: Dataset
    test: Dataset
    num_classes: int
    class_names: tuple[str, ...]
    protocol: dict
    identities: list[int] | None  # test-split identities (SynthFER only) for the identity probe


def fer_train_transform(recipe) -> T.Compose:
    """The timm training pipeline of the recipe: RandomResizedCrop, flip, colour jitter or RandAugment, erasing."""
    from timm.data import create_transform

    if recipe.get("transform", "timm") == "ke2nt":  # the published KE2NT pipeline, which timm cannot express
        return ke2nt_train_transform(recipe.img_size, tuple(recipe.mean), tuple(recipe.std))
    return create_transform(
        input_size=recipe.img_size, is_training=True, scale=tuple(recipe.scale), hflip=recipe.hflip,
        auto_augment=recipe.auto_augment or None, re_prob=recipe.reprob, re_mode="pixel", interpolation="random",
        color_jitter=recipe.color_jitter, mean=tuple(recipe.mean), std=tuple(recipe.std),
    )


def fer_preprocessing(recipe) -> dict:
    """The evaluation preprocessing of a FER recipe as plain data (what a checkpoint's ``meta`` records and what
    ``eval_transform_from`` builds): ``input_size`` [C, H, W], ``crop_pct``, ``interpolation``, ``mean``, ``std``.

        python -c "from ifer.core.config import load_config; from ifer.data.build import fer_preprocessing; \
    print(fer_preprocessing(load_config('tiny').fer_methods.ifer.train))"
    """
    size = recipe.img_size
    hw = [int(size), int(size)] if isinstance(size, (int, float)) else [int(v) for v in list(size)[-2:]]
    return {"input_size": [3, *hw], "crop_pct": float(recipe.crop_pct),
            "interpolation": str(recipe.get("interpolation") or "bicubic"),
            "mean": [float(v) for v in recipe.mean], "std": [float(v) for v in recipe.std]}


def eval_transform_from(prep: dict) -> T.Compose:
    """timm's evaluation pipeline (Resize(size / crop_pct), CenterCrop(size), ToTensor, Normalize) for a
    ``fer_preprocessing`` record, e.g. one read back from a checkpoint."""
    from timm.data import create_transform

    return create_transform(input_size=tuple(prep["input_size"]), is_training=False, crop_pct=prep["crop_pct"],
                            interpolation=prep["interpolation"], mean=tuple(prep["mean"]), std=tuple(prep["std"]))


def recipe_with_preprocessing(recipe, prep: dict):
    """``recipe`` with its evaluation keys (``img_size``, ``crop_pct``, ``interpolation``, ``mean``, ``std``) taken
    from a ``fer_preprocessing`` record, e.g. a checkpoint's own, so ``fer_datasets`` normalises as the file says."""
    from ifer.core.config import Config

    return Config({**recipe.to_dict(), "img_size": prep["input_size"][1:], "crop_pct": prep["crop_pct"],
                   "interpolation": prep["interpolation"], "mean": prep["mean"], "std": prep["std"]})


def fer_eval_transform(recipe) -> T.Compose:
    # one definition of the eval pipeline: what training scores with is what a checkpoint's meta records
    return eval_transform_from(fer_preprocessing(recipe))


def fer_datasets(cfg, name: str, recipe, eval_only: bool = False) -> FERSplits:
    """train / val / test for FER dataset ``name`` with the suite's split policy (``data.fer.model_selection``)."""
    if name not in FER_DATASETS:
        raise ValueError(f"unknown FER dataset {name!r}; known: {sorted(FER_DATASETS)}")
    adapter, kwargs = FER_DATASETS[name]
    root = dataset_root(cfg, name)
    ev = fer_eval_transform(recipe)
    kwargs = {**kwargs, **bad_input_policy(cfg, name)}
    if adapter != "synthfer":
        kwargs = {**kwargs, "model_selection": cfg.data.fer.model_selection, "val_fraction": cfg.data.fer.val_fraction,
                  "seed": cfg.seed}
    train = None if eval_only else open_dataset(adapter, root, "train", transform=fer_train_transform(recipe), **kwargs)
    test = open_dataset(adapter, root, "test", transform=ev, **kwargs)
    selection_on_test = cfg.data.fer.model_selection == "test"
    # Selecting on test: val *is* the test split (same records, same transform), so it is not opened, decoded
    # and, under skip, warned about a second time.
    val = test if selection_on_test else open_dataset(adapter, root, "val", transform=ev, **kwargs)
    num_classes = int(test.protocol.get("num_classes", 7))
    # The test split's protocol: its n_scored / n are what the report prints; skipped / skipped_files and
    # ``splits`` cover every split read (a bad training image is recorded too, not only logged).
    protocol = dict(test.protocol, **skip_record({"train": train, "val": val, "test": test}))
    protocol["on_bad_image"], protocol["on_bad_label"] = cfg.data.on_bad_image, cfg.data.on_bad_label
    if adapter == "synthfer" and selection_on_test:
        protocol["model_selection"] = "test"
        protocol["selection_policy"] = "selection on the test split (explicitly requested)"
    identities = list(test.identities) if hasattr(test, "identities") else None
    return FERSplits(train, val, test, num_classes, class_names(num_classes), protocol, identities)


def dataset_fingerprints(cfg) -> dict:
    """Fingerprints of every dataset the config uses (SynthFER: the manifest digest; real: verify report)."""
    from ifer.data.verify import FINGERPRINTS, required_by, verify_datasets

    names = sorted(required_by(cfg))
    report = verify_datasets(cfg.paths.datasets, names, cfg.data.fingerprints or FINGERPRINTS,
                             synthfer_root=cfg.data.synthfer.out)
    return {n: {k: v for k, v in report["datasets"][n].items() if k in ("status", "digest", "count", "problems")}
            for n in names}
