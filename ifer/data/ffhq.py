"""FFHQ (70,000 faces; image-only, ASIT/pSp training data)::

    <root>/images1024x1024/00000/00000.png ...   (official layout; used when present)
    <root>/*.png                                   (any flat or nested resized copy)

    python -c "from ifer.data.ffhq import FFHQ; print(len(FFHQ('datasets/ffhq')))"

Returns ``(image, UNLABELED)``. The same file name twice (e.g. two resolutions side by side under one
root) is a :class:`DuplicateFileError`: point ``root`` at one copy.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ifer.data.common import (
    UNLABELED,
    DatasetNotFoundError,
    DuplicateFileError,
    OnBad,
    Record,
    RecordDataset,
    SkipLog,
    duplicates,
    list_images,
    report_bad,
    require_path,
)

EXPECTED_COUNT = 70000
OFFICIAL_SUBDIR = "images1024x1024"


def image_folder_records(dataset: str, folder: Path, on_duplicate: OnBad, skips: SkipLog) -> list[Record]:
    """All images under ``folder`` as unlabeled records; duplicate names are reported."""
    paths = list_images(folder)
    if not paths:
        raise DatasetNotFoundError(f"[{dataset}] no images (.png/.jpg/...) under {folder}")
    dup = duplicates([p.name for p in paths])
    report_bad(dataset, "file names found more than once", dup, on_duplicate, skips, DuplicateFileError, folder)
    seen: set[str] = set()
    records = []
    for p in paths:  # under "skip", the first path in sorted order wins
        if p.name not in seen:
            seen.add(p.name)
            records.append(Record(p, UNLABELED, {"file": str(p.relative_to(folder))}))
    return records


class FFHQ(RecordDataset):
    """FFHQ images as ``(image, UNLABELED)``."""

    # The keyword-only signature repeats across the adapters on purpose (duplicates scan: same shape): each
    # adapter's constructor is its documented public API, and a shared **kwargs would hide typos.
    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable | None = None,
        *,
        on_bad_image: OnBad = "error",
        on_duplicate: OnBad = "error",
        return_meta: bool = False,
        workers: int | None = 0,
    ) -> None:
        root = require_path("ffhq", Path(root))
        folder = root / OFFICIAL_SUBDIR if (root / OFFICIAL_SUBDIR).is_dir() else root
        skips = SkipLog("ffhq")
        records = image_folder_records("ffhq", folder, on_duplicate, skips)
        protocol = {"dataset": "ffhq", "split": "train", "labels": None, "folder": str(folder),
                    "expected_count": EXPECTED_COUNT}
        super().__init__("ffhq", records, transform, return_meta, on_bad_image, protocol, skips, workers=workers)
