"""Miniature copies of the licensed datasets, drawn with SynthFER's renderer, in each dataset's real layout.

File names, label files, CSV columns, JPEG/PNG and image sizes follow the originals (docs/data.md); only
the counts are tiny (every class in every split). Each writer returns the dataset root it filled::

    python -c "from ifer.rehearsal.datasets import write_rafdb; print(write_rafdb('/tmp/rh/datasets'))"
"""
from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ifer.data import labels as L
from ifer.data.synthfer_render import expression_aus, render, sample_identity, sample_nuisance

#: Image sizes of the originals: FFHQ and CelebA-HQ 1024 px; RAF-DB aligned 100 px; SFEW 2.0 frames are
#: 720x576 movie stills; AffectNet images vary (the CSV's face box locates the face).
FFHQ_RES = CELEBAHQ_RES = 1024
RAFDB_ALIGNED_RES = 100
SFEW_FRAME = (720, 576)
JPEG_QUALITY = 95


def _rng(seed: int, stream: str) -> np.random.Generator:
    # One stream per dataset so adding images to one dataset leaves the others' bytes unchanged.
    key = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:4], "little")
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))


def face(rng: np.random.Generator, expression: str, res: int) -> Image.Image:
    """One SynthFER face (new identity) showing ``expression`` at ``res`` x ``res``."""
    intensity = 0.0 if expression == "neutral" else float(rng.uniform(0.5, 1.0))
    return render(sample_identity(rng), expression_aus(expression, intensity, rng), sample_nuisance(rng, 0.0, 0.5),
                  res, noise_rng=rng)


def _in_frame(rng: np.random.Generator, img: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """Paste a face into a larger flat-coloured frame at a random position; returns the frame and the offset."""
    frame = Image.new("RGB", size, tuple(int(c) for c in rng.integers(20, 230, 3)))
    x = int(rng.integers(0, size[0] - img.width + 1))
    y = int(rng.integers(0, size[1] - img.height + 1))
    frame.paste(img, (x, y))
    return frame, (x, y)


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(path, format="JPEG", quality=JPEG_QUALITY)
    else:
        img.save(path, format="PNG", compress_level=1)


def _balanced(per_class: int, classes=L.EXPRESSIONS_7) -> list[str]:
    return [c for _ in range(per_class) for c in classes]


# ---------------------------------------------------------------------------------------------- unlabeled
def write_ffhq(datasets: str | Path, n: int = 8, seed: int = 0) -> Path:
    """``ffhq/images1024x1024/00000/00000.png`` ...: 1024-px PNGs in folders of 1,000, as NVIDIA ships them."""
    root = Path(datasets) / "ffhq"
    rng = _rng(seed, "ffhq")
    for i in range(n):
        expression = L.EXPRESSIONS_7[int(rng.integers(7))]
        _save(face(rng, expression, FFHQ_RES), root / "images1024x1024" / f"{i // 1000 * 1000:05d}" / f"{i:05d}.png")
    return root


def write_celebahq(datasets: str | Path, n_train: int = 6, n_val: int = 2, n_test: int = 4, seed: int = 0) -> Path:
    """``celebahq/CelebA-HQ-img/<idx>.jpg`` (1024-px JPEG, CelebAMask-HQ) plus the two files the test split
    is derived from: ``CelebA-HQ-to-CelebA-mapping.txt`` and CelebA's ``list_eval_partition.txt``."""
    root = Path(datasets) / "celebahq"
    rng = _rng(seed, "celebahq")
    n = n_train + n_val + n_test
    # CelebA's partition is by file number: 1..162770 train, 162771..182637 val, 182638..202599 test. HQ
    # indices map to scattered CelebA files, in an order unrelated to CelebA's, as in the real mapping.
    ranges = ((0, 1, 162_770, n_train), (1, 162_771, 182_637, n_val), (2, 182_638, 202_599, n_test))
    files = [(int(k), p) for p, lo, hi, m in ranges for k in rng.choice(np.arange(lo + 2, hi - 1), m, replace=False)]
    rows = []
    for idx, j in enumerate(rng.permutation(n).tolist()):
        number, part = files[j]
        _save(face(rng, L.EXPRESSIONS_7[int(rng.integers(7))], CELEBAHQ_RES), root / "CelebA-HQ-img" / f"{idx}.jpg")
        rows.append((idx, number - 1, f"{number:06d}.jpg", part))
    lines = ["idx         orig_idx  orig_file   "]
    lines += [f"{idx:<12d}{oi:<10d}{of}" for idx, oi, of, _ in rows]
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(lines) + "\n")
    # The partition file covers all of CelebA; a few files outside CelebA-HQ are listed too.
    extra = [(1, 0), (162_770, 0), (162_771, 1), (182_637, 1), (182_638, 2), (202_599, 2)]
    part_rows = sorted([(int(of[:6]), p) for _, _, of, p in rows] + extra)
    (root / "list_eval_partition.txt").write_text("".join(f"{k:06d}.jpg {p}\n" for k, p in part_rows))
    return root


# ---------------------------------------------------------------------------------------------- FER
def write_rafdb(datasets: str | Path, train_per_class: int = 2, test_per_class: int = 1, seed: int = 0) -> Path:
    """``rafdb/EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``, labels 1..7) and 100-px aligned
    JPEGs ``Image/aligned/train_00001_aligned.jpg`` (test names have four digits: ``test_0001``)."""
    root = Path(datasets) / "rafdb"
    rng = _rng(seed, "rafdb")
    native = {name: code for code, name in L.RAFDB.native_to_name.items()}
    lines = []
    for split, per_class, width in (("train", train_per_class, 5), ("test", test_per_class, 4)):
        for i, expression in enumerate(_balanced(per_class), 1):
            name = f"{split}_{i:0{width}d}"
            _save(face(rng, expression, RAFDB_ALIGNED_RES), root / "Image" / "aligned" / f"{name}_aligned.jpg")
            lines.append(f"{name}.jpg {native[expression]}")
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def write_sfew(datasets: str | Path, train_per_class: int = 2, val_per_class: int = 1, seed: int = 0) -> Path:
    """``sfew/Train/<Class>/*.png`` and ``sfew/Val/<Class>/*.png``: 720x576 PNG movie frames with one face."""
    root = Path(datasets) / "sfew"
    rng = _rng(seed, "sfew")
    folder_of = {name: folder for folder, name in L.SFEW.native_to_name.items()}
    for split, per_class in (("Train", train_per_class), ("Val", val_per_class)):
        for i, expression in enumerate(_balanced(per_class)):
            frame, _ = _in_frame(rng, face(rng, expression, int(rng.integers(160, 300))), SFEW_FRAME)
            _save(frame, root / split / folder_of[expression] / f"Rehearsal_{split}_{i:09d}_{i % 7:08d}.png")
    return root


AFFECTNET_COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                     "facial_landmarks", "expression", "valence", "arousal")


def _landmarks(x: int, y: int, w: int, h: int) -> str:
    """68 points inside the face box, written as AffectNet does (``x;y;x;y;...``, two decimals)."""
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    pts = np.stack([x + w * (0.5 + 0.35 * np.cos(t)), y + h * (0.55 + 0.35 * np.sin(t))], 1).reshape(-1)
    return ";".join(f"{v:.2f}" for v in pts)


def write_affectnet(datasets: str | Path, train_per_class: int = 2, val_per_class: int = 1, seed: int = 0) -> Path:
    """``affectnet/training.csv`` / ``validation.csv`` with the official columns and
    ``Manually_Annotated_Images/<n>/<sha1>.jpg`` JPEGs of varying size. Besides the 7 basic classes the CSVs
    hold contempt (7) and the excluded codes 8..10 (none, uncertain, non-face), which the adapter counts."""
    root = Path(datasets) / "affectnet"
    rng = _rng(seed, "affectnet")
    native = {name: code for code, name in L.AFFECTNET.native_to_name.items()}
    for fname, per_class in (("training.csv", train_per_class), ("validation.csv", val_per_class)):
        codes = [native[e] for e in _balanced(per_class)] + [native["contempt"]]
        if fname == "training.csv":
            codes += sorted(L.AFFECTNET.excluded)
        rows = []
        for code in codes:
            expression = L.AFFECTNET.native_to_name.get(code, "neutral")
            side = int(rng.integers(120, 260))
            img, (x, y) = _in_frame(rng, face(rng, expression if expression in L.EXPRESSIONS_7 else "neutral", side),
                                    (side + int(rng.integers(0, 200)), side + int(rng.integers(0, 200))))
            rel = f"{int(rng.integers(1, 1000))}/{hashlib.sha1(rng.bytes(16)).hexdigest()}.jpg"
            _save(img, root / "Manually_Annotated_Images" / rel)
            excluded = code in L.AFFECTNET.excluded
            va = (-2.0, -2.0) if excluded else tuple(round(float(v), 6) for v in rng.uniform(-1, 1, 2))
            rows.append({"subDirectory_filePath": rel, "face_x": x, "face_y": y, "face_width": side,
                         "face_height": side, "facial_landmarks": _landmarks(x, y, side, side), "expression": code,
                         "valence": va[0], "arousal": va[1]})
        with open(root / fname, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(AFFECTNET_COLUMNS))
            w.writeheader()
            w.writerows(rows)
    return root


def write_ferplus(datasets: str | Path, per_class: int = 1, seed: int = 0) -> Path:
    """``ferplus/fer2013new.csv`` (Usage, Image name, 10 vote columns) and 48x48 greyscale PNGs
    ``FER2013{Train,Valid,Test}/fer<n>.png``, as the FERPlus script generates them from fer2013.csv: one clear
    majority per image for the 8 classes (contempt included), one "unknown" majority and one row FERPlus
    removed (no image name) per usage. The rehearsal tests on it only (cross-dataset transfer, 8 -> 7 classes)."""
    root = Path(datasets) / "ferplus"
    rng = _rng(seed, "ferplus")
    native = {name: code for code, name in L.FERPLUS.native_to_name.items()}
    classes = [*L.EXPRESSIONS_7, "contempt"]
    rows, k = [], 0
    for usage, folder in (("Training", "FER2013Train"), ("PublicTest", "FER2013Valid"), ("PrivateTest", "FER2013Test")):
        for expression in _balanced(per_class, classes) + ["unknown"]:
            k += 1
            name = f"fer{k:07d}.png"
            votes = dict.fromkeys(L.FERPLUS_VOTE_COLUMNS, 0)
            votes[native.get(expression, expression)] = 8
            votes["neutral" if expression != "neutral" else "surprise"] += 2
            shown = expression if expression in L.EXPRESSIONS_7 else "neutral"
            _save(face(rng, shown, 48).convert("L"), root / folder / name)
            rows.append([usage, name, *votes.values()])
        rows.append([usage, "", *[0] * 9, 10])
    with open(root / "fer2013new.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Usage", "Image name", *L.FERPLUS_VOTE_COLUMNS])
        w.writerows(rows)
    return root


#: Dataset folder name (under ``paths.datasets``) -> writer. The folder names are the adapters'.
WRITERS: dict[str, Callable[..., Path]] = {
    "ffhq": write_ffhq,
    "celebahq": write_celebahq,
    "rafdb": write_rafdb,
    "sfew": write_sfew,
    "affectnet": write_affectnet,
    "ferplus": write_ferplus,
}


#: The published-subset lists the rehearsal writes (``datasets/subset_lists/``), read through ``analysis.subsets``
#: of ``rehearse.yaml``: RAN-style names (RAF-DB without ``_aligned``, AffectNet by its CSV path).
SUBSET_LISTS = ("rafdb_occlusion_list.txt", "affectnet_pose_30_list.txt")


def write_subset_lists(datasets: str | Path) -> dict[str, Path]:
    """Occlusion / pose subset lists in the published formats for the miniature RAF-DB and AffectNet: RAF-DB
    names as its label file spells them (``test_0002.jpg``, the file is ``test_0002_aligned.jpg``) plus one train
    image (published lists hold only test images; it exercises the unmatched count); AffectNet validation images
    by ``<folder>/<sha1>.jpg`` with a comment line and a second column, as hand-edited lists have."""
    datasets = Path(datasets)
    out = datasets / "subset_lists"
    out.mkdir(parents=True, exist_ok=True)
    raf = [ln.split()[0] for ln in (datasets / "rafdb" / "EmoLabel" / "list_patition_label.txt").read_text().splitlines()]
    tests = [n for n in raf if n.startswith("test_")]
    (out / SUBSET_LISTS[0]).write_text("\n".join(tests[1::2] + [raf[0]]) + "\n")
    with open(datasets / "affectnet" / "validation.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["expression"]) not in L.AFFECTNET.excluded]
    (out / SUBSET_LISTS[1]).write_text("# pose > 30 degrees (rehearsal stand-in)\n"
                                       + "".join(f"{r['subDirectory_filePath']} {r['expression']}\n" for r in rows[::2]))
    return {name: out / name for name in SUBSET_LISTS}


def write_datasets(datasets: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write every miniature dataset under ``datasets`` and the subset lists; returns ``{name: root}``."""
    written = {name: writer(datasets, seed=seed) for name, writer in WRITERS.items()}
    written.update(write_subset_lists(datasets))
    return written
