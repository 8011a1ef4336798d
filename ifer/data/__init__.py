"""Datasets: SynthFER (built-in) and adapters for FFHQ, CelebA-HQ, RAF-DB, SFEW, AffectNet, FERPlus.

Every adapter returns ``(image, label)`` with labels in one canonical order (:mod:`ifer.data.labels`)
and exposes a ``protocol`` dict (split sizes, label mapping, selection policy, exclusions) to record
with results::

    python -m ifer.data synthfer --out datasets/synthfer --res 64 --seed 0
    python -c "from ifer.data import open_dataset; print(open_dataset('synthfer', 'datasets/synthfer', 'val').protocol)"
"""
from __future__ import annotations

import os
from typing import Any

from ifer.data.affectnet import AffectNet
from ifer.data.celebahq import CelebAHQ
from ifer.data.common import (
    BadImageError,
    DataError,
    DatasetNotFoundError,
    DuplicateFileError,
    LabelFileError,
    RecordDataset,
    make_loader,
)
from ifer.data.ferplus import FERPlus
from ifer.data.ffhq import FFHQ
from ifer.data.rafdb import RAFDB
from ifer.data.sfew import SFEW
from ifer.data.synthfer import SynthFER, SynthFERConfig, generate_synthfer
from ifer.data.verify import verify_datasets

DATASETS = {
    "synthfer": SynthFER,
    "rafdb": RAFDB,
    "sfew": SFEW,
    "affectnet": AffectNet,
    "ferplus": FERPlus,
    "ffhq": FFHQ,
    "celebahq": CelebAHQ,
}


def open_dataset(name: str, root: str | os.PathLike, split: str = "train", **kwargs: Any) -> RecordDataset:
    """Build dataset ``name`` from ``root``; ``split`` is ignored by FFHQ (train-only)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    if name == "ffhq":
        return FFHQ(root, **kwargs)
    return DATASETS[name](root, split, **kwargs)


__all__ = [
    "DATASETS", "open_dataset", "generate_synthfer", "SynthFERConfig", "verify_datasets", "make_loader",
    "SynthFER", "RAFDB", "SFEW", "AffectNet", "FERPlus", "FFHQ", "CelebAHQ",
    "DataError", "DatasetNotFoundError", "BadImageError", "LabelFileError", "DuplicateFileError",
]
