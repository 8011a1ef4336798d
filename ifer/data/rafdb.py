"""RAF-DB basic (7 classes; 12,271 train / 3,068 test), read from the layout the dataset ships in::

    <root>/EmoLabel/list_patition_label.txt     lines like ``train_00001.jpg 5`` (labels 1..7)
    <root>/Image/aligned/train_00001_aligned.jpg (default, 100x100) or <root>/Image/original/train_00001.jpg

    python -c "from ifer.data.rafdb import RAFDB; d = RAFDB('datasets/rafdb', 'test'); print(d.protocol)"

RAF-DB has no validation split; the default holds out a stratified 10% of train for model selection.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ifer.data import labels as L
from ifer.data.common import (
    LabelFileError,
    ModelSelection,
    OnBad,
    Record,
    RecordDataset,
    SkipLog,
    read_lines,
    reconcile_labels,
    report_bad,
    require_path,
    select_split,
)

EXPECTED_SPLIT_SIZES = {"train": 12271, "test": 3068}
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"  # sic: the dataset's own spelling


def _image_name(entry: str, images: str) -> str:
    stem, ext = os.path.splitext(entry)
    return f"{stem}_aligned{ext}" if images == "aligned" else entry


class RAFDB(RecordDataset):
    """RAF-DB basic expression split as ``(image, canonical_label)``."""

    # The keyword-only signature repeats across the adapters on purpose (duplicates scan: same shape): each
    # adapter's constructor is its documented public API, and a shared **kwargs would hide typos.
    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        *,
        images: str = "aligned",
        model_selection: ModelSelection = "val",
        val_fraction: float = 0.1,
        seed: int = 0,
        on_bad_image: OnBad = "error",
        on_bad_label: OnBad = "error",
        return_meta: bool = False,
        workers: int | None = 0,
    ) -> None:
        if images not in ("aligned", "original"):
            raise ValueError(f"images must be 'aligned' or 'original', got {images!r}")
        root = require_path("rafdb", Path(root))
        label_file = require_path("rafdb", root / LABEL_FILE, "label file")
        img_dir = require_path("rafdb", root / "Image" / images, f"{images} image folder")
        # One label file lists both splits; a skipped entry's split is its train_/test_ prefix.
        skips = SkipLog("rafdb", part_of=lambda e: next((s for s in ("train", "test") if e.startswith(f"{s}_")), None))

        entries, malformed = [], []
        for n, line in enumerate(read_lines(label_file, "rafdb"), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                malformed.append(f"line {n}: {line!r}")
                continue
            entries.append((parts[0], int(parts[1])))
        report_bad("rafdb", "malformed lines", malformed, on_bad_label, skips, LabelFileError, label_file)
        bad_prefix = [f for f, _ in entries if not f.startswith(("train_", "test_"))]
        report_bad("rafdb", "entries that are neither train_* nor test_*", bad_prefix, on_bad_label, skips,
                   LabelFileError, label_file)
        entries = [(_image_name(f, images), y) for f, y in entries if f.startswith(("train_", "test_"))]

        on_disk = {p.name for p in img_dir.iterdir() if p.is_file()}
        kept, excluded = reconcile_labels("rafdb", label_file, entries, L.RAFDB, 7, on_disk, on_bad_label, skips)
        train = [Record(img_dir / f, y, {"file": f}) for f, y in kept if f.startswith("train_")]
        test = [Record(img_dir / f, y, {"file": f}) for f, y in kept if f.startswith("test_")]
        records, info = select_split("rafdb", split, train, test, model_selection, val_fraction, seed)
        protocol = {
            "dataset": "rafdb",
            "images": images,
            "num_classes": 7,
            "label_order": list(L.EXPRESSIONS_7),
            "label_map": L.RAFDB.as_dict(),
            "official_split_sizes": {"train": len(train), "test": len(test)},
            "expected_split_sizes": EXPECTED_SPLIT_SIZES,
            "excluded": excluded,
            **info,
        }
        super().__init__("rafdb", records, transform, return_meta, on_bad_image, protocol, skips, workers=workers)
