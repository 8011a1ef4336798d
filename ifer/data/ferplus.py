"""FERPlus: FER2013 images relabelled by 10 annotators, majority-vote labels (8 classes, or 7)::

    <root>/fer2013new.csv   Usage, Image name, neutral, happiness, surprise, sadness, anger,
                            disgust, fear, contempt, unknown, NF
    <root>/FER2013Train/    (Usage = Training)     <root>/FER2013Valid/  (PublicTest)
    <root>/FER2013Test/     (PrivateTest)

    python -c "from ifer.data.ferplus import FERPlus; print(FERPlus('datasets/ferplus', 'test').protocol)"

Majority vote follows Microsoft's FERPlus reference code: votes of 1 are dropped as outliers; the label
is the class with more than half of the remaining votes, else the sample is "no majority" (there are no
ties to break: a strict majority is unique). Samples whose majority is unknown or NF, rows without an
image name (removed by FERPlus), and contempt in the 7-class protocol are excluded and counted.
FERPlus ships a validation split (FER2013Valid), used for model selection by default.
"""
from __future__ import annotations

import csv
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
    reconcile_labels,
    report_bad,
    require_path,
    select_split,
)

LABEL_FILE = "fer2013new.csv"
FOLDERS = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}
SPLIT_OF_USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def majority_vote(votes: dict[str, int]) -> str | None:
    """FERPlus 'majority' label: the column with > 50% of votes after removing single votes; else ``None``."""
    kept = {k: v for k, v in votes.items() if v > 1}
    total = sum(kept.values())
    if total == 0:
        return None
    best = max(kept, key=lambda k: kept[k])
    return best if kept[best] > 0.5 * total else None


class FERPlus(RecordDataset):
    """FERPlus majority-vote labels as ``(image, canonical_label)``; meta carries the raw votes."""

    # The keyword-only signature repeats across the adapters on purpose (duplicates scan: same shape): each
    # adapter's constructor is its documented public API, and a shared **kwargs would hide typos.
    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        *,
        num_classes: int = 8,
        model_selection: ModelSelection = "val",
        val_fraction: float = 0.1,
        seed: int = 0,
        on_bad_image: OnBad = "error",
        on_bad_label: OnBad = "error",
        return_meta: bool = False,
        workers: int | None = 0,
    ) -> None:
        L.class_names(num_classes)
        root = require_path("ferplus", Path(root))
        label_file = require_path("ferplus", root / LABEL_FILE, "label file")
        skips = SkipLog("ferplus")
        with open(label_file, newline="", encoding="utf-8-sig") as f:  # tolerate a BOM
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            rows = list(reader)
        expected = ["Usage", "Image name", *L.FERPLUS_VOTE_COLUMNS]
        if header != expected:
            raise LabelFileError(f"[ferplus] {label_file} header is {header}; expected {expected}")

        per_usage: dict[str, list[tuple[str, object]]] = {u: [] for u in FOLDERS}
        votes_of: dict[str, dict[str, int]] = {}
        excluded = {"no image name (removed by FERPlus)": 0, "no majority": 0}
        malformed: list[str] = []
        part_of_row: dict[str, str | None] = {}  # a malformed row counts towards its Usage's split when it has one
        for n, row in enumerate(rows, 2):
            if len(row) != len(expected) or row[0] not in FOLDERS:
                malformed.append(f"line {n}: {row[:3]}")
                part_of_row[malformed[-1]] = SPLIT_OF_USAGE.get(row[0]) if row else None
                continue
            usage, name = row[0], row[1].strip()
            if not name:
                excluded["no image name (removed by FERPlus)"] += 1
                continue
            try:
                votes = dict(zip(L.FERPLUS_VOTE_COLUMNS, (int(v) for v in row[2:])))
            except ValueError:
                malformed.append(f"line {n}: {name}: non-integer votes {row[2:]}")
                part_of_row[malformed[-1]] = SPLIT_OF_USAGE[usage]
                continue
            label = majority_vote(votes)
            if label is None:
                excluded["no majority"] += 1
                continue
            per_usage[usage].append((name, label))
            votes_of[f"{usage}/{name}"] = votes
        skips.part, skips.part_of = None, part_of_row.get
        report_bad("ferplus", "malformed rows", malformed, on_bad_label, skips, LabelFileError, label_file)
        skips.part_of = None

        parts: dict[str, list[Record]] = {}
        # The unlabelled-image check needs every listed name, including rows excluded above.
        listed = {u: {r[1].strip() for r in rows if len(r) > 1 and r[0] == u and r[1].strip()} for u in FOLDERS}
        for usage, folder in FOLDERS.items():
            img_dir = require_path("ferplus", root / folder, f"{folder}/ folder")
            skips.part = SPLIT_OF_USAGE[usage]
            on_disk = {p.name for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png"}
            unlabelled = sorted(on_disk - listed[usage])
            report_bad("ferplus", "images without a label", unlabelled, on_bad_label, skips, LabelFileError, img_dir)
            kept, excl = reconcile_labels("ferplus", f"{label_file} ({usage})", per_usage[usage], L.FERPLUS,
                                          num_classes, on_disk, on_bad_label, skips, check_unlabelled=False)
            for reason, count in excl.items():
                excluded[reason] = excluded.get(reason, 0) + count
            parts[SPLIT_OF_USAGE[usage]] = [
                Record(img_dir / f, y, {"file": f"{folder}/{f}", "votes": votes_of[f"{usage}/{f}"]}) for f, y in kept
            ]
        records, info = select_split("ferplus", split, parts["train"], parts["test"], model_selection, val_fraction,
                                     seed, val=parts["val"])
        protocol = {
            "dataset": "ferplus",
            "num_classes": num_classes,
            "label_order": list(L.class_names(num_classes)),
            "label_map": L.FERPLUS.as_dict(),
            "label_rule": "majority vote (FERPlus reference: drop single votes, > 50% of the rest)",
            "official_split_sizes": {k: len(v) for k, v in parts.items()},
            "excluded": excluded,
            **info,
        }
        super().__init__("ferplus", records, transform, return_meta, on_bad_image, protocol, skips, workers=workers)

