"""Each real-dataset adapter on a miniature copy of its real layout (generated images), plus bad input::

    .venv/bin/python -m pytest tests/test_data_adapters.py -q
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ifer.data import (
    FFHQ,
    RAFDB,
    SFEW,
    AffectNet,
    BadImageError,
    CelebAHQ,
    DatasetNotFoundError,
    DuplicateFileError,
    FERPlus,
    LabelFileError,
    make_loader,
)
from ifer.data.common import BAD_IMAGES
from ifer.data.labels import EXPRESSIONS_7, EXPRESSIONS_8
from ifer.data.transforms import eval_transform


def img(path: Path, seed: int = 0, size: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ---------------------------------------------------------------- RAF-DB
def make_rafdb(root: Path, n_train: int = 14, n_test: int = 7) -> Path:
    lines = []
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(1, n + 1):
            name = f"{split}_{i:05d}.jpg"
            lines.append(f"{name} {(i - 1) % 7 + 1}")
            img(root / "Image" / "aligned" / f"{split}_{i:05d}_aligned.jpg", seed=i + (0 if split == "train" else 100))
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def test_rafdb_layout_and_label_mapping(tmp_path):
    root = make_rafdb(tmp_path / "rafdb")
    test = RAFDB(root, "test", transform=eval_transform(12))
    assert len(test) == 7
    # RAF-DB 1 = Surprise, 4 = Happiness, 7 = Neutral
    by_file = {r.path.name: r.label for r in test.records}
    assert by_file["test_00001_aligned.jpg"] == EXPRESSIONS_7.index("surprise")
    assert by_file["test_00004_aligned.jpg"] == EXPRESSIONS_7.index("happy")
    assert by_file["test_00007_aligned.jpg"] == EXPRESSIONS_7.index("neutral")
    x, y = test[0]
    assert x.shape == (3, 12, 12) and -1 <= x.min() and x.max() <= 1
    train, val = RAFDB(root, "train"), RAFDB(root, "val")
    assert len(train) + len(val) == 14 and not {r.path for r in train.records} & {r.path for r in val.records}
    assert train.protocol["model_selection"] == "val" and train.protocol["official_split_sizes"] == {"train": 14, "test": 7}
    assert train.protocol["expected_split_sizes"] == {"train": 12271, "test": 3068}


def test_rafdb_select_on_test_is_recorded(tmp_path):
    root = make_rafdb(tmp_path / "rafdb")
    val = RAFDB(root, "val", model_selection="test")
    assert {r.path for r in val.records} == {r.path for r in RAFDB(root, "test").records}
    assert val.protocol["model_selection"] == "test" and "test" in val.protocol["selection_policy"]


def test_rafdb_original_images(tmp_path):
    root = tmp_path / "rafdb"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 1\ntest_00001.jpg 2\n")
    img(root / "Image" / "original" / "train_00001.jpg")
    img(root / "Image" / "original" / "test_00001.jpg")
    assert len(RAFDB(root, "test", images="original")) == 1


def test_missing_root_names_dataset_and_path(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"\[rafdb\].*nowhere"):
        RAFDB(tmp_path / "nowhere")
    root = tmp_path / "r"
    root.mkdir()
    with pytest.raises(DatasetNotFoundError, match="list_patition_label.txt"):
        RAFDB(root)


def test_rafdb_unknown_class(tmp_path):
    root = make_rafdb(tmp_path / "rafdb")
    f = root / "EmoLabel" / "list_patition_label.txt"
    f.write_text(f.read_text().replace("train_00002.jpg 2", "train_00002.jpg 9"))
    with pytest.raises(LabelFileError, match=r"unknown class.*train_00002_aligned.jpg=9"):
        RAFDB(root)
    ds = RAFDB(root, "test", on_bad_label="skip")
    assert ds.protocol["skipped"] == {"unknown class labels": 1}


def test_rafdb_missing_image_and_unlabelled_image(tmp_path):
    root = make_rafdb(tmp_path / "rafdb")
    (root / "Image" / "aligned" / "train_00003_aligned.jpg").unlink()
    with pytest.raises(LabelFileError, match=r"image is missing.*train_00003_aligned.jpg"):
        RAFDB(root)
    root2 = make_rafdb(tmp_path / "rafdb2")
    img(root2 / "Image" / "aligned" / "train_09999_aligned.jpg")
    with pytest.raises(LabelFileError, match=r"without a label.*train_09999_aligned.jpg"):
        RAFDB(root2)
    assert RAFDB(root2, "train", on_bad_label="skip").protocol["skipped"] == {"images without a label": 1}


def test_rafdb_duplicate_entry(tmp_path):
    root = make_rafdb(tmp_path / "rafdb")
    f = root / "EmoLabel" / "list_patition_label.txt"
    f.write_text(f.read_text() + "train_00001.jpg 3\n")
    with pytest.raises(DuplicateFileError, match="train_00001_aligned.jpg"):
        RAFDB(root)


def test_truncated_image_error_or_counted_skip(tmp_path):
    root = make_rafdb(tmp_path / "rafdb")
    truncate(root / "Image" / "aligned" / "test_00002_aligned.jpg")
    ds = RAFDB(root, "test")
    with pytest.raises(BadImageError, match="test_00002_aligned.jpg"):
        ds.validate()
    bad_index = [r.path.name for r in ds.records].index("test_00002_aligned.jpg")
    with pytest.raises(BadImageError):
        ds[bad_index]
    skipped = RAFDB(root, "test", on_bad_image="skip")
    assert len(skipped) == 6 and skipped.protocol["skipped"] == {BAD_IMAGES: 1}
    assert (skipped.protocol["n_scored"], skipped.protocol["n"]) == (6, 7)
    assert "test_00002_aligned.jpg" in skipped.protocol["skipped_files"][BAD_IMAGES][0]


def test_content_duplicates_found_by_validate(tmp_path):
    root = make_rafdb(tmp_path / "rafdb")
    a = root / "Image" / "aligned"
    (a / "test_00003_aligned.jpg").write_bytes((a / "test_00002_aligned.jpg").read_bytes())
    with pytest.raises(DuplicateFileError, match="identical content"):
        RAFDB(root, "test").validate(check_content=True)


def test_eval_loader_never_drops_last(tmp_path):
    ds = RAFDB(make_rafdb(tmp_path / "rafdb"), "test", transform=eval_transform(12))
    loader = make_loader(ds, batch_size=4, train=False)
    assert sum(len(y) for _, y in loader) == 7 and loader.drop_last is False
    with pytest.raises(TypeError):
        make_loader(ds, batch_size=4, train=False, drop_last=True)


# ---------------------------------------------------------------- SFEW
def make_ffhq(root: Path) -> Path:
    for i in range(4):
        img(root / "images1024x1024" / "00000" / f"{i:05d}.png", seed=i)
    return root


def make_celebahq(root: Path) -> Path:
    for i in range(6):
        img(root / "CelebA-HQ-img" / f"{i}.jpg", seed=i)
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text(
        "idx orig_idx orig_file\n" + "".join(f"{i} {i * 10} {i * 10 + 1:06d}.jpg\n" for i in range(6)))
    (root / "list_eval_partition.txt").write_text(
        "".join(f"{i * 10 + 1:06d}.jpg {0 if i < 3 else (1 if i == 3 else 2)}\n" for i in range(6)))
    return root


def make_sfew(root: Path) -> Path:
    for folder, n in (("Train", 3), ("Val", 1)):
        for c in ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"):
            for i in range(n):
                img(root / folder / c / f"{folder}_{c}_{i}.png", seed=hash((folder, c, i)) % 1000)
    return root


def test_sfew_layout(tmp_path):
    root = make_sfew(tmp_path / "sfew")
    test = SFEW(root, "test")
    assert len(test) == 7 and sorted(test.labels) == list(range(7))
    angry = [r for r in test.records if "Angry" in r.path.name][0]
    assert angry.label == EXPRESSIONS_7.index("anger")
    assert len(SFEW(root, "train")) + len(SFEW(root, "val")) == 21


def test_sfew_unknown_folder_and_duplicate(tmp_path):
    root = make_sfew(tmp_path / "sfew")
    img(root / "Train" / "Contempt" / "x.png")
    with pytest.raises(LabelFileError, match=r"unknown class.*x.png='Contempt'"):
        SFEW(root)
    root2 = make_sfew(tmp_path / "sfew2")
    img(root2 / "Train" / "Sad" / "Train_Angry_0.png")
    with pytest.raises(DuplicateFileError, match="Train_Angry_0.png"):
        SFEW(root2)


# ---------------------------------------------------------------- AffectNet
def make_affectnet(root: Path, n_per_class: int = 2) -> Path:
    header = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
              "expression", "valence", "arousal"]
    for csv_name, part in (("training.csv", "tr"), ("validation.csv", "va")):
        with open(root / csv_name if root.exists() else _mk(root) / csv_name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for label in range(11):
                for i in range(n_per_class):
                    rel = f"{label}/{part}_{label}_{i}.jpg"
                    img(root / "Manually_Annotated_Images" / rel, seed=label * 10 + i + (500 if part == "va" else 0), size=20)
                    w.writerow([rel, 2, 3, 12, 14, "1;2;3", label, 0.1, -0.2])
    return root


def _mk(p: Path) -> Path:
    p.mkdir(parents=True)
    return p


def test_affectnet_7_and_8_class_exclusions(tmp_path):
    root = make_affectnet(tmp_path / "affectnet")
    t7 = AffectNet(root, "test", num_classes=7)
    assert len(t7) == 14
    assert t7.protocol["excluded"]["test"] == {"contempt": 2, "none": 2, "uncertain": 2, "non-face": 2}
    t8 = AffectNet(root, "test", num_classes=8)
    assert len(t8) == 16 and EXPRESSIONS_8[max(t8.labels)] == "contempt"
    assert t8.protocol["excluded"]["test"] == {"none": 2, "uncertain": 2, "non-face": 2}
    assert t8.protocol["expected_split_sizes"] == {"test": 4000}
    cropped = AffectNet(root, "test", crop_face=True, return_meta=True)
    assert cropped.load_image(0).size == (12, 14)


def test_affectnet_errors(tmp_path):
    root = make_affectnet(tmp_path / "affectnet")
    (root / "Manually_Annotated_Images" / "3" / "va_3_0.jpg").unlink()
    with pytest.raises(LabelFileError, match=r"image is missing.*3/va_3_0.jpg"):
        AffectNet(root, "test")
    assert AffectNet(root, "test", on_bad_label="skip").protocol["skipped"] == {"label entries whose image is missing": 1}
    root2 = make_affectnet(tmp_path / "a2")
    text = (root2 / "validation.csv").read_text().replace(",1;2;3,4,", ",1;2;3,12,", 1)
    (root2 / "validation.csv").write_text(text)
    with pytest.raises(LabelFileError, match="unknown class.*=12"):
        AffectNet(root2, "test")


# ---------------------------------------------------------------- FERPlus
def make_ferplus(root: Path) -> Path:
    header = ["Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
              "contempt", "unknown", "NF"]
    rows = []
    for usage, folder in (("Training", "FER2013Train"), ("PublicTest", "FER2013Valid"), ("PrivateTest", "FER2013Test")):
        for k in range(8):  # one clear majority per class
            votes = [0] * 10
            votes[k], votes[(k + 1) % 8] = 8, 2
            name = f"fer{usage}{k:03d}.png"
            rows.append([usage, name, *votes])
            img(root / folder / name, seed=hash((usage, k)) % 1000, size=10)
        rows.append([usage, f"fer{usage}tie.png", 4, 4, 2, 0, 0, 0, 0, 0, 0, 0])  # no strict majority
        img(root / folder / f"fer{usage}tie.png", size=10)
        rows.append([usage, f"fer{usage}unk.png", 1, 0, 0, 0, 0, 0, 0, 0, 9, 0])  # majority unknown
        img(root / folder / f"fer{usage}unk.png", size=10)
        rows.append([usage, "", 0, 0, 0, 0, 0, 0, 0, 0, 0, 10])  # removed by FERPlus
    with open(root / "fer2013new.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return root


def test_ferplus_majority_vote_and_exclusions(tmp_path):
    root = make_ferplus(tmp_path / "ferplus")
    test = FERPlus(root, "test", return_meta=True)
    assert len(test) == 8 and sorted(test.labels) == list(range(8))
    happy = [r for r in test.records if r.path.name == "ferPrivateTest001.png"][0]
    assert EXPRESSIONS_8[happy.label] == "happy"
    ex = test.protocol["excluded"]
    assert ex["no majority"] == 3 and ex["no image name (removed by FERPlus)"] == 3 and ex["unknown"] == 3
    assert len(FERPlus(root, "test", num_classes=7)) == 7
    assert FERPlus(root, "val").protocol["selection_policy"].startswith("official validation")


def test_ferplus_unlabelled_and_missing(tmp_path):
    root = make_ferplus(tmp_path / "ferplus")
    img(root / "FER2013Test" / "stray.png")
    with pytest.raises(LabelFileError, match="without a label.*stray.png"):
        FERPlus(root, "test")
    root2 = make_ferplus(tmp_path / "f2")
    (root2 / "FER2013Valid" / "ferPublicTest002.png").unlink()
    with pytest.raises(LabelFileError, match="image is missing.*ferPublicTest002.png"):
        FERPlus(root2, "val")


# ---------------------------------------------------------------- FFHQ / CelebA-HQ
def test_ffhq_official_and_flat_layouts(tmp_path):
    root = tmp_path / "ffhq"
    for i in range(3):
        img(root / "images1024x1024" / "00000" / f"{i:05d}.png", seed=i)
    img(root / "thumbnails128x128" / "00000" / "00000.png")  # ignored: the official folder wins
    ds = FFHQ(root)
    assert len(ds) == 3 and ds[0][1] == -1
    flat = tmp_path / "flat"
    for i in range(2):
        img(flat / f"{i:05d}.png", seed=i)
    img(flat / "sub" / "00001.png", seed=9)
    with pytest.raises(DuplicateFileError, match="00001.png"):
        FFHQ(flat)
    assert len(FFHQ(flat, on_duplicate="skip")) == 2


def test_celebahq_split_sources(tmp_path):
    root = make_celebahq(tmp_path / "celebahq")
    test = CelebAHQ(root, "test")
    assert [r.path.name for r in test.records] == ["4.jpg", "5.jpg"]
    assert len(CelebAHQ(root, "train")) == 3 and len(CelebAHQ(root, "all")) == 6
    lst = tmp_path / "test.txt"
    lst.write_text("1.jpg\n2.jpg\n")
    assert len(CelebAHQ(root, "test", split_list=lst)) == 2
    split_dir = tmp_path / "celeba_test"
    img(split_dir / "0.jpg")
    assert len(CelebAHQ(root, "test", split_dir=split_dir)) == 1
    lst.write_text("77.jpg\n")
    with pytest.raises(LabelFileError, match="77"):
        CelebAHQ(root, "test", split_list=lst)
    (root / "list_eval_partition.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="split_dir"):
        CelebAHQ(root, "test")
