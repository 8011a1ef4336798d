"""SFEW 2.0 (EmotiW 2015; 958 train / 436 val; test labels withheld, so papers report on val)::

    <root>/Train/<Class>/*.png     <root>/Val/<Class>/*.png
    Class in Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise

    python -c "from ifer.data.sfew import SFEW; print(SFEW('datasets/sfew', 'test').protocol)"

The official Val split is this suite's *test* split; model selection uses a stratified 10% of Train.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ifer.core.io import IMAGE_EXTENSIONS
from ifer.data import labels as L
from ifer.data.common import (
    ModelSelection,
    OnBad,
    Record,
    RecordDataset,
    SkipLog,
    reconcile_labels,
    require_path,
    select_split,
)

EXPECTED_SPLIT_SIZES = {"train": 958, "test": 436}
FOLDERS = {"train": "Train", "test": "Val"}


def _scan(root: Path, folder: str, on_bad_label: OnBad, skips: SkipLog) -> list[Record]:
    split_dir = require_path("sfew", root / folder, f"{folder}/ folder")
    skips.part = "train" if folder == FOLDERS["train"] else "test"
    entries = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        for img in sorted(class_dir.iterdir()):
            if img.suffix.lower() in IMAGE_EXTENSIONS:
                # Keyed by file name: the same face in two class folders is a duplicate, not two samples.
                entries.append((img.name, class_dir.name, img))
    where = {name: path for name, _, path in entries}
    kept, _ = reconcile_labels("sfew", split_dir, [(n, c) for n, c, _ in entries], L.SFEW, 7, None, on_bad_label, skips)
    return [Record(where[f], y, {"file": f"{folder}/{where[f].parent.name}/{f}"}) for f, y in kept]


class SFEW(RecordDataset):
    """SFEW 2.0 as ``(image, canonical_label)``; ``split='test'`` is the official Val folder."""

    # The keyword-only signature repeats across the adapters on purpose (duplicates scan: same shape): each
    # adapter's constructor is its documented public API, and a shared **kwargs would hide typos.
    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        *,
        model_selection: ModelSelection = "val",
        val_fraction: float = 0.1,
        seed: int = 0,
        on_bad_image: OnBad = "error",
        on_bad_label: OnBad = "error",
        return_meta: bool = False,
        workers: int | None = 0,
    ) -> None:
        root = require_path("sfew", Path(root))
        skips = SkipLog("sfew")
        train = _scan(root, FOLDERS["train"], on_bad_label, skips)
        test = _scan(root, FOLDERS["test"], on_bad_label, skips)
        records, info = select_split("sfew", split, train, test, model_selection, val_fraction, seed)
        protocol = {
            "dataset": "sfew",
            "num_classes": 7,
            "label_order": list(L.EXPRESSIONS_7),
            "label_map": L.SFEW.as_dict(),
            "official_split_sizes": {"train": len(train), "test": len(test)},
            "expected_split_sizes": EXPECTED_SPLIT_SIZES,
            "test_is": "official Val folder (test labels are withheld)",
            **info,
        }
        super().__init__("sfew", records, transform, return_meta, on_bad_image, protocol, skips, workers=workers)
