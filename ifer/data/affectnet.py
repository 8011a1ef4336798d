"""AffectNet, from the official CSVs (7- or 8-class; no public test set, so validation = test)::

    <root>/training.csv  <root>/validation.csv
        columns: subDirectory_filePath, face_x, face_y, face_width, face_height,
                 facial_landmarks, expression, valence, arousal
    <root>/Manually_Annotated_Images/<subDirectory_filePath>

    python -c "from ifer.data.affectnet import AffectNet; print(AffectNet('datasets/affectnet', 'test', num_classes=8).protocol)"

Labels 8..10 (none / uncertain / non-face), and contempt (7) in the 7-class protocol, are excluded
explicitly and counted in ``protocol["excluded"]``. Expected validation sizes: 3,500 (7) / 4,000 (8).
"""
from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ifer.data import labels as L
from ifer.data.common import (
    LabelFileError,
    ModelSelection,
    OnBad,
    Record,
    RecordDataset,
    SkipLog,
    format_entries,
    reconcile_labels,
    report_bad,
    require_path,
    select_split,
)

CSV_COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
               "facial_landmarks", "expression", "valence", "arousal")
IMAGE_DIR = "Manually_Annotated_Images"
EXPECTED_SPLIT_SIZES = {7: {"test": 3500}, 8: {"test": 4000}}


def _read_csv(path: Path, on_bad_label: OnBad, skips: SkipLog) -> tuple[list[tuple[str, object]], dict[str, dict]]:
    with open(path, newline="", encoding="utf-8-sig") as f:  # tolerate a BOM from spreadsheet exports
        reader = csv.DictReader(f)
        missing_cols = [c for c in ("subDirectory_filePath", "expression") if c not in (reader.fieldnames or [])]
        if missing_cols:
            raise LabelFileError(f"[affectnet] {path} lacks columns {missing_cols}; expected {list(CSV_COLUMNS)}")
        rows = list(reader)
    entries, meta, malformed = [], {}, []
    for n, r in enumerate(rows, 2):
        raw = (r.get("expression") or "").strip()
        try:
            label: object = int(raw)
        except ValueError:
            label = raw  # not an int: reported as an unknown class with its value
        name = r["subDirectory_filePath"].strip()
        if not name:
            malformed.append(f"line {n}: empty subDirectory_filePath")
            continue
        entries.append((name, label))
        meta[name] = {k: r.get(k) for k in ("face_x", "face_y", "face_width", "face_height", "valence", "arousal")}
    report_bad("affectnet", "malformed rows", malformed, on_bad_label, skips, LabelFileError, path)
    return entries, meta


class AffectNet(RecordDataset):
    """AffectNet as ``(image, canonical_label)``; ``split='test'`` is the official validation set.

    ``crop_face=True`` crops to the CSV's face box (``face_x, face_y, face_width, face_height``).
    """

    # The keyword-only signature repeats across the adapters on purpose (duplicates scan: same shape): each
    # adapter's constructor is its documented public API, and a shared **kwargs would hide typos.
    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        *,
        num_classes: int = 7,
        crop_face: bool = False,
        model_selection: ModelSelection = "val",
        val_fraction: float = 0.1,
        seed: int = 0,
        on_bad_image: OnBad = "error",
        on_bad_label: OnBad = "error",
        return_meta: bool = False,
        workers: int | None = 0,
    ) -> None:
        L.class_names(num_classes)  # validates 7 / 8
        root = require_path("affectnet", Path(root))
        img_dir = require_path("affectnet", root / IMAGE_DIR, f"{IMAGE_DIR}/ folder")
        skips = SkipLog("affectnet")
        self.crop_face = crop_face
        parts, excluded = {}, {}
        for part, fname in (("train", "training.csv"), ("test", "validation.csv")):
            path = require_path("affectnet", root / fname, "label file")
            skips.part = part
            entries, meta = _read_csv(path, on_bad_label, skips)
            kept, excl = reconcile_labels("affectnet", path, entries, L.AFFECTNET, num_classes, None, on_bad_label, skips)
            # Stat only the files the CSV names: listing the ~290k-file tree is slower, and both CSVs share it.
            missing = [f for f, _ in kept if not (img_dir / f).is_file()]
            report_bad("affectnet", "label entries whose image is missing", missing, on_bad_label, skips,
                       LabelFileError, f"{path} vs {img_dir}")
            missing_set = set(missing)
            kept = [(f, y) for f, y in kept if f not in missing_set]
            parts[part] = [Record(img_dir / f, y, {"file": f, **meta[f]}) for f, y in kept]
            excluded[part] = excl
        records, info = select_split("affectnet", split, parts["train"], parts["test"], model_selection, val_fraction, seed)
        protocol = {
            "dataset": "affectnet",
            "num_classes": num_classes,
            "label_order": list(L.class_names(num_classes)),
            "label_map": L.AFFECTNET.as_dict(),
            "crop_face": crop_face,
            "official_split_sizes": {k: len(v) for k, v in parts.items()},
            "expected_split_sizes": EXPECTED_SPLIT_SIZES[num_classes],
            "excluded": excluded,
            "test_is": "official validation.csv (no public test set)",
            **info,
        }
        super().__init__("affectnet", records, transform, return_meta, on_bad_image, protocol, skips, workers=workers)

    def load_image(self, index: int) -> Image.Image:
        img = super().load_image(index)
        if not self.crop_face:
            return img
        m = self.records[index].meta
        try:
            x, y, w, h = (int(float(m[k])) for k in ("face_x", "face_y", "face_width", "face_height"))
        except (TypeError, ValueError) as exc:
            raise LabelFileError(f"[affectnet] no usable face box for {self.records[index].path}: "
                                 f"{format_entries([m.get(k) for k in ('face_x', 'face_y', 'face_width', 'face_height')])}") from exc
        return img.crop((x, y, x + w, y + h))
