"""CelebA-HQ (30,000 faces; image-only) with pSp's test split of 2,824 images::

    <root>/CelebA-HQ-img/0.jpg ... 29999.jpg   (CelebAMask-HQ layout; or any folder of images)

    python -c "from ifer.data.celebahq import CelebAHQ; print(len(CelebAHQ('datasets/celebahq', 'test')))"

We do not ship the test-image list (it is derived from CelebA's files, which we cannot redistribute).
The split comes from, in order of preference:

1. ``split_dir``: a folder holding exactly the split's images (what pSp's ``celeba_test`` path points to);
2. ``split_list``: a text file with one image name per line;
3. the two files CelebAMask-HQ and CelebA ship, found in ``root`` (or passed as paths):
   ``CelebA-HQ-to-CelebA-mapping.txt`` (``idx orig_idx orig_file``) and CelebA's
   ``list_eval_partition.txt`` (``000001.jpg 0``; 0 train, 1 val, 2 test). CelebA-HQ image ``idx`` is
   in split ``s`` when its ``orig_file`` is; this gives 24,183 / 2,993 / 2,824.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ifer.data.common import (
    DatasetNotFoundError,
    LabelFileError,
    OnBad,
    RecordDataset,
    SkipLog,
    format_entries,
    read_lines,
    require_path,
)
from ifer.data.ffhq import image_folder_records

log = logging.getLogger("ifer.data")
EXPECTED_SPLIT_SIZES = {"train": 24183, "val": 2993, "test": 2824, "all": 30000}
MAPPING_FILE = "CelebA-HQ-to-CelebA-mapping.txt"
PARTITION_FILE = "list_eval_partition.txt"
_PARTITION_IDS = {"train": 0, "val": 1, "test": 2}


def split_from_celeba_partition(mapping: Path, partition: Path, split: str) -> set[str]:
    """CelebA-HQ image stems (``'123'``) in ``split``, derived from the mapping and CelebA partition files."""
    part_of: dict[int, int] = {}
    bad: list[str] = []
    for n, line in enumerate(read_lines(partition, "celebahq"), 1):
        try:
            if line.strip():
                name, p = line.split()
                part_of[int(Path(name).stem)] = int(p)
        except ValueError:
            bad.append(f"line {n}: {line!r}")
    if bad:
        raise LabelFileError(f"[celebahq] malformed lines in {partition} (expected '000001.jpg 0'): {format_entries(bad)}")
    stems, unknown = set(), []
    for n, line in enumerate(read_lines(mapping, "celebahq")[1:], 2):  # header: idx orig_idx orig_file
        if not line.strip():
            continue
        try:
            idx, _, orig_file = line.split()
            idx, orig = str(int(idx)), int(Path(orig_file).stem)
        except ValueError:
            bad.append(f"line {n}: {line!r}")
            continue
        if orig not in part_of:
            unknown.append(orig_file)
        elif part_of[orig] == _PARTITION_IDS[split]:
            stems.add(idx)
    if bad:
        raise LabelFileError(f"[celebahq] malformed lines in {mapping} (expected 'idx orig_idx orig_file'): {format_entries(bad)}")
    if unknown:
        raise LabelFileError(f"[celebahq] {mapping} names CelebA files absent from {partition}: {format_entries(unknown)}")
    return stems


class CelebAHQ(RecordDataset):
    """CelebA-HQ images as ``(image, UNLABELED)``; ``split`` in all/train/val/test."""

    # The keyword-only signature repeats across the adapters on purpose (duplicates scan: same shape): each
    # adapter's constructor is its documented public API, and a shared **kwargs would hide typos.
    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "test",
        transform: Callable | None = None,
        *,
        split_dir: str | os.PathLike | None = None,
        split_list: str | os.PathLike | None = None,
        mapping_file: str | os.PathLike | None = None,
        partition_file: str | os.PathLike | None = None,
        on_bad_image: OnBad = "error",
        on_duplicate: OnBad = "error",
        return_meta: bool = False,
        workers: int | None = 0,
    ) -> None:
        if split not in EXPECTED_SPLIT_SIZES:
            raise ValueError(f"split must be one of {list(EXPECTED_SPLIT_SIZES)}, got {split!r}")
        root = require_path("celebahq", Path(root))
        skips = SkipLog("celebahq")
        if split_dir is not None:
            folder = require_path("celebahq", Path(split_dir), "split_dir")
            records, source = image_folder_records("celebahq", folder, on_duplicate, skips), f"split_dir {folder}"
        else:
            folder = root / "CelebA-HQ-img" if (root / "CelebA-HQ-img").is_dir() else root
            records = image_folder_records("celebahq", folder, on_duplicate, skips)
            if split != "all":
                wanted, source = self._wanted(root, split, split_list, mapping_file, partition_file)
                by_stem = {r.path.stem: r for r in records}
                absent = sorted(wanted - by_stem.keys(), key=lambda s: (len(s), s))
                if absent:
                    raise LabelFileError(f"[celebahq] {source} names images missing from {folder}: {format_entries(absent)}")
                records = [by_stem[s] for s in sorted(wanted, key=lambda s: (len(s), s))]
            else:
                source = f"all images in {folder}"
        if len(records) != EXPECTED_SPLIT_SIZES[split]:
            log.warning("[celebahq] %s split has %d images; the standard split has %d",
                        split, len(records), EXPECTED_SPLIT_SIZES[split])
        protocol = {"dataset": "celebahq", "split": split, "labels": None, "split_source": source,
                    "expected_split_sizes": EXPECTED_SPLIT_SIZES}
        super().__init__("celebahq", records, transform, return_meta, on_bad_image, protocol, skips, workers=workers)

    @staticmethod
    def _wanted(root: Path, split: str, split_list, mapping_file, partition_file) -> tuple[set[str], str]:
        if split_list is not None:
            path = require_path("celebahq", Path(split_list), "split_list")
            return {Path(n.strip()).stem for n in read_lines(path, "celebahq") if n.strip()}, f"split_list {path}"
        mapping = Path(mapping_file) if mapping_file else root / MAPPING_FILE
        partition = Path(partition_file) if partition_file else root / PARTITION_FILE
        if not (mapping.exists() and partition.exists()):
            raise DatasetNotFoundError(
                f"[celebahq] the {split} split needs split_dir=, split_list=, or both {mapping} and {partition} "
                f"(from CelebAMask-HQ and CelebA); see docs/data.md"
            )
        return split_from_celeba_partition(mapping, partition, split), f"{mapping.name} + {partition.name}"
