"""Shared pieces of every dataset adapter: error types, image checks, the record dataset, splits, loaders.

Bad input never disappears silently: each problem raises a specific :class:`DataError` subclass whose
message names the dataset, the path and the first offending entries, or -- when the caller opts in with
``"skip"`` -- is logged and counted in the dataset's ``protocol["skipped"]`` (with ``n_scored`` of ``n``).
:func:`load_rgb` is the one image reader of ``ifer.data`` (docs/data.md, "Bad input", gives its policy)::

    python -c "from ifer.data.common import stratified_split; print(stratified_split([0,0,1,1,1,0,1,0,0,1], 0.2, 0))"
"""
from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ifer.core.io import IMAGE_EXTENSIONS, UnreadableImageError, read_rgb, sha256_file

log = logging.getLogger("ifer.data")

OnBad = Literal["error", "skip"]
ModelSelection = Literal["val", "test"]
UNLABELED = -1  # target returned by image-only datasets (FFHQ, CelebA-HQ)


class DataError(Exception):
    """Base class of every data problem the adapters report.

    A DataError raised inside a DataLoader worker comes back to the main process through torch's
    ``ExceptionWrapper.reraise``, which would rebuild it around the worker's whole traceback. Because the
    class has a truthy ``message`` attribute, torch calls ``cls(message=<that text>)`` instead, and the
    constructor keeps only the original one-line message, so the CLI prints the same line with or
    without workers (``IFER_TRACEBACK=1`` still shows the traceback of the main process).
    """

    message = "a DataError (see str(exc))"  # truthy: the hook torch's ExceptionWrapper.reraise looks for

    def __init__(self, *args: object, message: str | None = None) -> None:
        if message is not None:
            args = (_original_message(message, type(self)),)
        super().__init__(*args)
        self.message = str(args[0]) if args else ""

    def __reduce__(self):  # pickles as its one-line message (the keyword above is only for torch)
        return (type(self), self.args)


def _original_message(worker_text: str, cls: type) -> str:
    """The last ``<module>.<Class>: <message>`` line of a formatted worker traceback, without the prefix."""
    last = worker_text.rstrip().splitlines()[-1] if worker_text.strip() else worker_text
    for prefix in (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: "):
        if last.startswith(prefix):
            return last[len(prefix):]
    return last


class DatasetNotFoundError(DataError):
    """The dataset root, or a file the layout requires, does not exist."""


class BadImageError(DataError):
    """An image is unreadable, truncated or not an image."""


class LabelFileError(DataError):
    """A label file is malformed: unknown classes, missing entries, images without labels."""


class DuplicateFileError(DataError):
    """The same file name is listed twice, or two files have identical content."""


def format_entries(entries: Sequence[object], first: int = 5) -> str:
    """``'a, b, c (+7 more, 10 in all)'`` -- enough to find the problem without flooding the terminal."""
    shown = ", ".join(str(e) for e in entries[:first])
    rest = len(entries) - first
    return f"{shown} (+{rest} more, {len(entries)} in all)" if rest > 0 else f"{shown} ({len(entries)} in all)"


def require_path(dataset: str, path: Path, what: str = "dataset root") -> Path:
    """Return ``path`` or raise :class:`DatasetNotFoundError` naming the dataset and what was expected."""
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(f"[{dataset}] {what} not found: {path}. See docs/data.md for the expected layout.")
    return path


BAD_IMAGES = "bad images"  # the protocol["skipped"] kind: zero-byte, truncated, non-image or too-small files


def load_rgb(path: str | os.PathLike, dataset: str = "data", verify: bool = False) -> Image.Image:
    """The image reader of ``ifer.data``: :func:`ifer.core.io.read_rgb` (its docstring gives the accept /
    reject policy) with the EXIF orientation applied, as ``ifer predict`` does (``ifer.data.faces.read_photo``),
    and a bad file raised as a one-line :class:`BadImageError` naming the dataset and file.

    The publishers' files (RAF-DB and AffectNet crops, SFEW frames, FERPlus, FFHQ, CelebA-HQ, SynthFER) carry
    no orientation tag, so for them this is the plain decoding; a copy re-encoded or re-saved by a tool that
    rotates the pixels and records the turn in EXIF (a phone, an image editor) is served upright as well,
    instead of with the face on its side (docs/data.md, "EXIF orientation").
    """
    try:
        return read_rgb(path, verify=verify, exif=True)
    except UnreadableImageError as exc:
        raise BadImageError(f"[{dataset}] bad image {path}: {exc}") from exc


ORIENTATION_TAG = 0x0112  # EXIF Orientation; 1 (or absent) = stored upright


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF orientation of an image file (1 when absent or unreadable); reads the header, not the pixels."""
    try:
        with Image.open(path) as im:
            return int(im.getexif().get(ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 -- a damaged header is reported by the decode itself
        return 1


def read_lines(path: Path, dataset: str) -> list[str]:
    """Lines of a label text file: UTF-8 with or without a BOM, LF or CRLF (Windows-edited copies)."""
    try:
        return Path(path).read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise LabelFileError(f"[{dataset}] {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _check_one(path: str) -> tuple[str | None, int]:
    """``(None, orientation)`` for a usable image, else ``(reason, 1)``. The check decodes exactly as
    :func:`load_rgb` serves (EXIF orientation included); ``verify()`` catches corrupt headers and PNG CRCs, the
    full decode catches truncated pixel data, which ``verify()`` alone misses for JPEGs."""
    try:
        read_rgb(path, verify=True, exif=True)
    except UnreadableImageError as exc:
        return str(exc), 1
    return None, exif_orientation(path)


@dataclass
class ImageScan:
    """What one decode pass over image files found: ``bad`` {path: reason}; ``oriented`` {path: EXIF
    orientation} for the usable files stored sideways or mirrored (served upright by :func:`load_rgb`)."""

    bad: dict[Path, str]
    oriented: dict[Path, int]


def scan_images(paths: Sequence[Path], workers: int | None = None, progress: bool | str = False) -> ImageScan:
    """Decode every file in ``paths`` (in ``workers`` processes) as :func:`load_rgb` would.

    ``workers=None`` uses every CPU; 0 or 1 decodes in this process. ``progress`` (True or a label) draws
    a tqdm bar on stderr.
    """
    from tqdm.auto import tqdm

    paths = list(paths)
    workers = (os.cpu_count() or 1) if workers is None else workers
    bar = dict(total=len(paths), disable=not progress, unit="img", desc=progress if isinstance(progress, str) else "decode")
    if workers <= 1 or len(paths) < 64:
        results = [_check_one(str(p)) for p in tqdm(paths, **bar)]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(tqdm(pool.map(_check_one, [str(p) for p in paths], chunksize=32), **bar))
    return ImageScan(bad={p: r for p, (r, _) in zip(paths, results) if r is not None},
                     oriented={p: o for p, (r, o) in zip(paths, results) if r is None and o != 1})


def find_bad_images(paths: Sequence[Path], workers: int | None = None, progress: bool | str = False) -> dict[Path, str]:
    """Decode every file in ``paths`` -> {path: reason} for the bad ones (:func:`scan_images`)."""
    return scan_images(paths, workers, progress).bad


SHOW_SKIPPED = 20  # skipped entries listed per kind in protocol["skipped_files"]


@dataclass
class SkipLog:
    """Entries dropped under an opt-in ``"skip"`` policy: logged, counted, and kept in ``protocol``.

    ``part`` is the official split being read when the adapter scans one split at a time (SFEW folders,
    AffectNet CSVs, FERPlus usages); ``part_of`` names it from the entry when one label file lists every
    split (RAF-DB's ``train_``/``test_`` prefixes). ``by_part`` lets a split report ``n`` = scored + skipped.
    """

    dataset: str
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    part: str | None = None
    part_of: Callable[[str], str | None] | None = None
    by_part: Counter = field(default_factory=Counter)

    def skip(self, kind: str, entries: Sequence[object]) -> None:
        if not entries:
            return
        self.counts[kind] = self.counts.get(kind, 0) + len(entries)
        shown = self.examples.setdefault(kind, [])
        shown.extend(str(e) for e in entries[: max(0, SHOW_SKIPPED - len(shown))])
        for e in entries:
            self.by_part[(self.part_of(str(e)) if self.part_of else None) or self.part or "unattributed"] += 1
        log.warning("[%s] skipping %d entries (%s): %s", self.dataset, len(entries), kind, format_entries(entries))


def report_bad(
    dataset: str,
    kind: str,
    entries: Sequence[object],
    policy: OnBad,
    skips: SkipLog,
    error: type[DataError],
    where: Path | str,
) -> None:
    """Raise ``error`` for ``entries`` under policy ``"error"``; record them in ``skips`` under ``"skip"``."""
    if not entries:
        return
    if policy == "error":
        raise error(
            f"[{dataset}] {kind} in {where}: {format_entries(entries)}. "
            f"Fix the data, or set {_policy_key(error)}=skip to drop them with a logged count."
        )
    if policy != "skip":
        raise ValueError(f"policy must be 'error' or 'skip', got {policy!r}")
    skips.skip(kind, entries)


def _policy_key(error: type[DataError]) -> str:
    return "data.on_bad_image" if issubclass(error, BadImageError) else "data.on_bad_label"


def duplicates(items: Iterable[str]) -> list[str]:
    """Items that occur more than once, in first-seen order."""
    counts = Counter(items)
    return [k for k, n in counts.items() if n > 1]


def content_duplicates(paths: Sequence[Path]) -> list[tuple[Path, ...]]:
    """Groups of files with identical bytes (sha256), for ``validate(check_content=True)``."""
    by_hash: dict[str, list[Path]] = defaultdict(list)
    for p in paths:
        by_hash[sha256_file(p)].append(p)
    return [tuple(g) for g in by_hash.values() if len(g) > 1]


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (sorted, so every run sees the same order)."""
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class Record:
    """One sample: an image path, its canonical label (``UNLABELED`` for image-only data) and metadata."""

    path: Path
    label: int
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


class RecordDataset(Dataset):
    """A list of :class:`Record` s served as ``(image, label)`` or ``(image, label, meta)``.

    Images are checked when first read (:func:`load_rgb`); ``validate()`` scans everything up front. With
    ``on_bad_image="skip"`` the scan runs at construction (in ``workers`` processes) so bad files are
    dropped and counted before any index is handed out; ``bad_images`` keeps them ({path: reason}). A file
    that goes bad *after* that scan still raises the one-line :class:`BadImageError`, also under ``"skip"``
    (saying the file changed after the check) and inside DataLoader workers: substituting another sample
    would silently change the epoch or the scored test set, and a count kept in a worker process would
    never reach the protocol.
    """

    def __init__(
        self,
        name: str,
        records: Sequence[Record],
        transform: Callable | None = None,
        return_meta: bool = False,
        on_bad_image: OnBad = "error",
        protocol: dict[str, Any] | None = None,
        skips: SkipLog | None = None,
        workers: int | None = 0,
    ) -> None:
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        self.name = name
        self.records = list(records)
        self.transform = transform
        self.return_meta = return_meta
        self.on_bad_image = on_bad_image
        self.skips = skips or SkipLog(name)
        self.protocol: dict[str, Any] = dict(protocol or {})
        self.bad_images: dict[Path, str] = {}
        if on_bad_image == "skip":
            self.validate(workers=workers)
        self._sync_protocol()

    def _sync_protocol(self) -> None:
        """``n_scored`` = samples served; ``n`` = those + entries of this split dropped under ``"skip"``.

        Image skips belong to the split whose records were checked. Label-file skips belong to the official
        split the adapter read them from, so ``n`` is exact for test splits; a val split held out of train
        cannot claim its share of train's label skips (they count towards train).
        """
        split = self.protocol.get("split")
        skipped_here = self.skips.by_part.get(split, 0) if split else sum(self.skips.by_part.values())
        self.protocol["num_samples"] = len(self.records)
        self.protocol["n_scored"] = len(self.records)
        self.protocol["n"] = len(self.records) + skipped_here
        self.protocol["skipped"] = dict(self.skips.counts)
        self.protocol["skipped_files"] = {k: list(v) for k, v in self.skips.examples.items()}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    def load_image(self, index: int) -> Image.Image:
        return load_rgb(self.records[index].path, self.name)

    def __getitem__(self, index: int):
        rec = self.records[index]
        try:
            img = self.load_image(index)
        except BadImageError as exc:
            if self.on_bad_image != "skip":
                raise
            raise BadImageError(f"{exc}; it decoded when the dataset was opened (data.on_bad_image=skip), so it "
                                f"changed after that check: fix or remove it and restart the run") from exc
        x = self.transform(img) if self.transform is not None else img
        if self.return_meta:
            return x, rec.label, dict(rec.meta, path=str(rec.path))
        return x, rec.label

    def validate(self, check_content: bool = False, workers: int | None = 0, progress: bool = False) -> RecordDataset:
        """Decode every image; optionally find byte-identical duplicates. Applies ``on_bad_image``."""
        bad = find_bad_images([r.path for r in self.records], workers=workers, progress=progress and self.name)
        self.bad_images.update(bad)
        part = self.skips.part
        self.skips.part, part_of, self.skips.part_of = self.protocol.get("split"), self.skips.part_of, None
        try:
            report_bad(self.name, BAD_IMAGES, [f"{p} ({why})" for p, why in bad.items()], self.on_bad_image,
                       self.skips, BadImageError, "image files")
        finally:
            self.skips.part, self.skips.part_of = part, part_of
        self.records = [r for r in self.records if r.path not in bad]
        if check_content:
            groups = content_duplicates([r.path for r in self.records])
            if groups:
                raise DuplicateFileError(
                    f"[{self.name}] files with identical content: "
                    f"{format_entries([' == '.join(str(p) for p in g) for g in groups])}"
                )
        self._sync_protocol()
        return self


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic stratified split of indices into ``(keep, held_out)``; ``held_out`` ~ ``fraction``.

    Each class contributes ``round(fraction * n_class)`` samples (at least one when it has two or more),
    so rare classes (RAF-DB fear) still appear in the validation split.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_class[int(y)].append(i)
    held: list[int] = []
    for y in sorted(by_class):
        idx = np.array(by_class[y])
        rng.shuffle(idx)
        k = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        held.extend(idx[:k].tolist())
    held_set = set(held)
    keep = [i for i in range(len(labels)) if i not in held_set]
    return keep, sorted(held)


def build_splits(
    name: str,
    train: Sequence[Record],
    test: Sequence[Record],
    model_selection: ModelSelection = "val",
    val_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[dict[str, list[Record]], dict[str, Any]]:
    """The suite's split policy for datasets that ship train + test only.

    ``model_selection="val"`` (default): a seeded, stratified ``val_fraction`` of *train* is held out for
    model selection and the test split is touched once. ``"test"`` reproduces the common (inflating)
    practice of selecting on the test set: the val split *is* the test split, and the choice is recorded.
    """
    if model_selection == "val":
        keep, held = stratified_split([r.label for r in train], val_fraction, seed)
        splits = {"train": [train[i] for i in keep], "val": [train[i] for i in held], "test": list(test)}
        policy = f"held-out {val_fraction:.0%} of train (stratified, seed {seed}); test used once"
    elif model_selection == "test":
        log.warning("[%s] model selection on the TEST split was requested; this is recorded in protocol", name)
        splits = {"train": list(train), "val": list(test), "test": list(test)}
        policy = "selection on the test split (explicitly requested; inflates reported accuracy)"
    else:
        raise ValueError(f"model_selection must be 'val' or 'test', got {model_selection!r}")
    info = {
        "model_selection": model_selection,
        "selection_policy": policy,
        "val_fraction": val_fraction if model_selection == "val" else None,
        "split_seed": seed,
        "split_sizes": {k: len(v) for k, v in splits.items()},
    }
    return splits, info


def make_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    seed: int = 0,
    drop_last_train: bool = False,
    **kwargs: Any,
) -> DataLoader:
    """A DataLoader with the suite's rules: shuffled (seeded) for training; evaluation never drops samples.

    ``drop_last`` is only ever honoured for training, so every evaluation sees every sample.
    """
    if "drop_last" in kwargs or "shuffle" in kwargs:
        raise TypeError("make_loader sets shuffle/drop_last from `train`; use drop_last_train for training")
    generator = torch.Generator().manual_seed(seed) if train else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=bool(train and drop_last_train),
        num_workers=num_workers,
        generator=generator,
        **kwargs,
    )


def reconcile_labels(
    dataset: str,
    where: Path | str,
    entries: Sequence[tuple[str, Any]],
    label_map: Any,
    num_classes: int,
    on_disk: set[str] | None,
    on_bad_label: OnBad,
    skips: SkipLog,
    check_unlabelled: bool = True,
) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """Check ``(file, native_label)`` entries against a label map and the files on disk.

    Returns ``(kept, excluded)``: ``kept`` are ``(file, canonical_index)``; ``excluded`` counts entries
    whose label is *known* but outside the protocol (AffectNet none/uncertain/non-face, contempt in a
    7-class protocol) -- an explicit, counted exclusion, not an error. Unknown labels, files listed twice,
    and (when ``on_disk`` is given) entries whose image is missing and images without a label
    (``check_unlabelled``) are errors, or logged skips under ``on_bad_label="skip"``.
    """
    names = [f for f, _ in entries]
    dup = duplicates(names)
    report_bad(dataset, "files listed more than once", dup, on_bad_label, skips, DuplicateFileError, where)
    seen: set[str] = set()
    unique = []
    for f, y in entries:  # under "skip", the first listing wins
        if f not in seen:
            seen.add(f)
            unique.append((f, y))
    unknown = [f"{f}={y!r}" for f, y in unique if not label_map.is_known(y)]
    report_bad(dataset, "unknown class labels", unknown, on_bad_label, skips, LabelFileError, where)
    known = [(f, y) for f, y in unique if label_map.is_known(y)]
    if on_disk is not None:
        missing = [f for f, _ in known if f not in on_disk]
        report_bad(dataset, "label entries whose image is missing", missing, on_bad_label, skips, LabelFileError, where)
        unlabelled = sorted(on_disk - seen) if check_unlabelled else []
        report_bad(dataset, "images without a label", unlabelled, on_bad_label, skips, LabelFileError, where)
        known = [(f, y) for f, y in known if f in on_disk]
    kept: list[tuple[str, int]] = []
    excluded: Counter[str] = Counter()
    for f, y in known:
        idx = label_map.to_index(y, num_classes)
        if idx is None:
            reason = label_map.excluded.get(y) or label_map.native_to_name[y]
            excluded[str(reason)] += 1
        else:
            kept.append((f, idx))
    if excluded:
        log.info("[%s] excluded by protocol (%d classes): %s", dataset, num_classes, dict(excluded))
    return kept, dict(excluded)


def select_split(
    name: str,
    split: str,
    train: Sequence[Record],
    test: Sequence[Record],
    model_selection: ModelSelection,
    val_fraction: float,
    seed: int,
    val: Sequence[Record] | None = None,
) -> tuple[list[Record], dict[str, Any]]:
    """Records of ``split`` (train/val/test) under the split policy, plus the protocol fields describing it.

    ``val`` is an official validation split when the dataset has one (FERPlus); otherwise val is held
    out of train by :func:`build_splits`.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"[{name}] split must be 'train', 'val' or 'test', got {split!r}")
    if val is not None and model_selection == "val":
        splits = {"train": list(train), "val": list(val), "test": list(test)}
        info = {"model_selection": "val", "selection_policy": "official validation split; test used once",
                "val_fraction": None, "split_seed": None, "split_sizes": {k: len(v) for k, v in splits.items()}}
    else:
        splits, info = build_splits(name, train, test, model_selection, val_fraction, seed)
    return splits[split], dict(info, split=split)
