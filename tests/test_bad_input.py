"""Bad input in every real-layout adapter: one line naming the file, or skipped and counted under ``skip``::

    .venv/bin/python -m pytest tests/test_bad_input.py -q

Images: 6 kinds x 6 adapters (RAF-DB, SFEW, AffectNet, FERPlus, FFHQ, CelebA-HQ). Truncated JPEGs, zero-byte
files, text files named like images and 1x1 placeholders are rejected; CMYK JPEGs and 16-bit PNGs are
decodable and accepted, converted to 8-bit RGB (the policy in docs/data.md). Label files: unknown classes,
duplicated rows and missing images in RAF-DB, AffectNet and FERPlus; a BOM and CRLF line endings in every
label file are read as if clean. A file that goes bad after the start raises the same one line from inside a
DataLoader worker.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ifer import cli
from ifer.core.config import ConfigError, load_config
from ifer.data import FFHQ, RAFDB, SFEW, AffectNet, BadImageError, CelebAHQ, DataError, FERPlus, make_loader
from ifer.data.build import fer_datasets
from ifer.data.common import BAD_IMAGES
from ifer.data.transforms import eval_transform
from tests.test_data_adapters import make_affectnet, make_celebahq, make_ferplus, make_ffhq, make_rafdb, make_sfew

# adapter -> (build the miniature layout, the test-split image to damage, open the test split)
ADAPTERS: dict[str, tuple[Callable[[Path], Path], str, Callable[..., object]]] = {
    "rafdb": (make_rafdb, "Image/aligned/test_00002_aligned.jpg", lambda r, **kw: RAFDB(r, "test", **kw)),
    "sfew": (make_sfew, "Val/Happy/Val_Happy_0.png", lambda r, **kw: SFEW(r, "test", **kw)),
    "affectnet": (make_affectnet, "Manually_Annotated_Images/3/va_3_0.jpg", lambda r, **kw: AffectNet(r, "test", **kw)),
    "ferplus": (make_ferplus, "FER2013Test/ferPrivateTest002.png", lambda r, **kw: FERPlus(r, "test", **kw)),
    "ffhq": (make_ffhq, "images1024x1024/00000/00002.png", lambda r, **kw: FFHQ(r, **kw)),
    "celebahq": (make_celebahq, "CelebA-HQ-img/4.jpg", lambda r, **kw: CelebAHQ(r, "test", **kw)),
}


def _encoded(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def _noise(size: int = 32) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))


# Written over an existing image, keeping its name and extension (the format is what the bytes say).
REJECTED = {
    "truncated_jpeg": lambda: _encoded(_noise(), "JPEG")[:300],
    "zero_byte_png": lambda: b"",
    "text_named_jpg": lambda: b"<html>404 Not Found</html>\n",
    "one_by_one": lambda: _encoded(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
}
ACCEPTED = {
    "cmyk_jpeg": lambda: _encoded(Image.new("CMYK", (16, 16), (0, 255, 0, 0)), "JPEG"),
    "png_16bit": lambda: _encoded(Image.fromarray(np.full((16, 16), 30000, dtype=np.uint16)), "PNG"),
}


def _damaged(tmp_path: Path, adapter: str, content: bytes) -> tuple[Path, Path, Callable[..., object]]:
    make, rel, open_test = ADAPTERS[adapter]
    root = make(tmp_path / adapter)
    (root / rel).write_bytes(content)
    return root, root / rel, open_test


@pytest.mark.parametrize("kind", sorted(REJECTED))
@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_bad_image_is_one_line_naming_the_file_or_a_counted_skip(tmp_path, adapter, kind):
    root, bad, open_test = _damaged(tmp_path, adapter, REJECTED[kind]())
    ds = open_test(root)
    index = [r.path for r in ds.records].index(bad)
    with pytest.raises(BadImageError) as exc:
        ds[index]
    msg = str(exc.value)
    assert "\n" not in msg and str(bad) in msg and f"[{adapter}]" in msg
    expected = {"zero_byte_png": "zero-byte file", "text_named_jpg": "not an image", "one_by_one": "1x1 px",
                "truncated_jpeg": "truncated"}[kind]
    assert expected in msg
    with pytest.raises(BadImageError, match=bad.name):
        ds.validate()

    skipped = open_test(root, on_bad_image="skip")
    p = skipped.protocol
    assert bad not in {r.path for r in skipped.records} and len(skipped) == len(ds) - 1
    assert p["skipped"] == {BAD_IMAGES: 1} and bad.name in p["skipped_files"][BAD_IMAGES][0]
    assert (p["n_scored"], p["n"]) == (len(ds) - 1, len(ds))


@pytest.mark.parametrize("kind", sorted(ACCEPTED))
@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_decodable_odd_formats_are_converted_to_rgb(tmp_path, adapter, kind):
    root, bad, open_test = _damaged(tmp_path, adapter, ACCEPTED[kind]())
    ds = open_test(root, on_bad_image="skip")
    assert ds.protocol["skipped"] == {} and ds.protocol["n"] == ds.protocol["n_scored"] == len(ds)
    im = ds.load_image([r.path for r in ds.records].index(bad))
    assert im.mode == "RGB" and im.size == (16, 16)
    # CMYK (0, 255, 0, 0) is magenta; 16-bit 30000 scales to 117 (Pillow's plain convert would saturate to 255)
    assert tuple(np.asarray(im)[0, 0]) == {"cmyk_jpeg": (255, 0, 255), "png_16bit": (117, 117, 117)}[kind]


def test_corrupt_at_run_time_in_a_worker_is_the_same_one_line(tmp_path):
    """The file goes bad after the dataset was built (and, under skip, checked): workers > 0 re-raise the
    adapter's own one-line BadImageError, not torch's 'Caught ... in DataLoader worker' traceback text."""
    root = make_rafdb(tmp_path / "rafdb")
    ds = RAFDB(root, "test", transform=eval_transform(12), on_bad_image="skip")
    bad = root / "Image/aligned/test_00005_aligned.jpg"
    bad.write_bytes(b"")
    loader = make_loader(ds, batch_size=2, train=False, num_workers=1)
    with pytest.raises(BadImageError) as exc:
        list(loader)
    msg = str(exc.value)  # under skip the line also says the file passed the check at open
    assert "\n" not in msg and msg.startswith(f"[rafdb] bad image {bad}: zero-byte file; it decoded when the dataset")


def test_data_error_keeps_its_line_through_pickling_and_torch_reraise():
    from torch._utils import ExceptionWrapper

    try:
        raise BadImageError("[sfew] bad image /d/x.png: zero-byte file")
    except BadImageError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 3")
    with pytest.raises(BadImageError) as exc:
        wrapped.reraise()
    assert str(exc.value) == "[sfew] bad image /d/x.png: zero-byte file"
    import pickle

    assert str(pickle.loads(pickle.dumps(exc.value))) == str(exc.value)


def test_policies_reach_the_adapters_from_the_config(tmp_path):
    make_rafdb(tmp_path / "rafdb")
    (tmp_path / "rafdb" / "Image/aligned/test_00003_aligned.jpg").write_bytes(b"")
    f = tmp_path / "rafdb" / "EmoLabel" / "list_patition_label.txt"
    f.write_text(f.read_text().replace("test_00006.jpg 6", "test_00006.jpg 0"))
    cfg = load_config("tiny", overrides=[f"paths.datasets={tmp_path}", "data.on_bad_label=skip",
                                         "data.on_bad_image=skip"])
    splits = fer_datasets(cfg, "rafdb", cfg.fer_methods.ifer.train, eval_only=True)
    p = splits.protocol
    assert p["skipped"] == {"unknown class labels": 1, BAD_IMAGES: 1} and (p["n_scored"], p["n"]) == (5, 7)
    assert p["on_bad_image"] == p["on_bad_label"] == "skip"
    cfg = load_config("tiny", overrides=[f"paths.datasets={tmp_path}"])
    with pytest.raises(DataError, match=r"unknown class.*test_00006_aligned.jpg=0.*data.on_bad_label=skip"):
        fer_datasets(cfg, "rafdb", cfg.fer_methods.ifer.train, eval_only=True)
    with pytest.raises(ConfigError, match="data.on_bad_image must be 'error' or 'skip', got 'ignore'"):
        cfg = load_config("tiny", overrides=[f"paths.datasets={tmp_path}", "data.on_bad_image=ignore"])
        fer_datasets(cfg, "rafdb", cfg.fer_methods.ifer.train, eval_only=True)


def test_cli_deep_verify_names_the_bad_files(tmp_path, capsys):
    root = make_rafdb(tmp_path / "rafdb")
    (root / "Image/aligned/test_00002_aligned.jpg").write_bytes(b"GIF89a not really")
    (root / "Image/aligned/train_00004_aligned.jpg").write_bytes(b"")
    assert cli.main(["verify", "--root", str(tmp_path), "--deep", "--workers", "1", "rafdb"]) == 1
    out = capsys.readouterr().out
    assert "21 decoded, 2 bad" in out
    assert "Image/aligned/test_00002_aligned.jpg (not an image)" in out
    assert "Image/aligned/train_00004_aligned.jpg (zero-byte file)" in out and "(2 in all)" in out


# ---------------------------------------------------------------- label files
def _rafdb_label(root: Path) -> Path:
    return root / "EmoLabel" / "list_patition_label.txt"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _append_copy_of_line(path: Path, needle: str) -> None:
    line = next(ln for ln in path.read_text().splitlines() if needle in ln)
    path.write_text(path.read_text() + line + "\n")


# (adapter, problem) -> (damage the layout, open the test split, text the one line must hold, skipped kind)
LABEL_CASES = {
    ("rafdb", "unknown_class"): (lambda r: _edit(_rafdb_label(r), "test_00002.jpg 2", "test_00002.jpg 8"),
                                 "test_00002_aligned.jpg=8", "unknown class labels"),
    ("rafdb", "duplicated_row"): (lambda r: _append_copy_of_line(_rafdb_label(r), "test_00003.jpg"),
                                  "test_00003_aligned.jpg", "files listed more than once"),
    ("rafdb", "missing_image"): (lambda r: (r / "Image/aligned/test_00004_aligned.jpg").unlink(),
                                 "test_00004_aligned.jpg", "label entries whose image is missing"),
    ("affectnet", "unknown_class"): (lambda r: _edit(r / "validation.csv", "va_2_0.jpg,2,3,12,14,1;2;3,2,",
                                                     "va_2_0.jpg,2,3,12,14,1;2;3,disgusted,"),
                                     "2/va_2_0.jpg='disgusted'", "unknown class labels"),
    ("affectnet", "duplicated_row"): (lambda r: _append_copy_of_line(r / "validation.csv", "va_1_1.jpg"),
                                      "1/va_1_1.jpg", "files listed more than once"),
    ("affectnet", "missing_image"): (lambda r: (r / "Manually_Annotated_Images/5/va_5_1.jpg").unlink(),
                                     "5/va_5_1.jpg", "label entries whose image is missing"),
    # FERPlus labels are vote counts: an unknown class is a vote that is not a count (a malformed row).
    ("ferplus", "unknown_class"): (lambda r: _edit(r / "fer2013new.csv", "ferPrivateTest003.png,0,0,0,8",
                                                   "ferPrivateTest003.png,0,0,0,eight"),
                                   "ferPrivateTest003.png: non-integer votes", "malformed rows"),
    ("ferplus", "duplicated_row"): (lambda r: _append_copy_of_line(r / "fer2013new.csv", "ferPrivateTest004.png"),
                                    "ferPrivateTest004.png", "files listed more than once"),
    ("ferplus", "missing_image"): (lambda r: (r / "FER2013Test/ferPrivateTest005.png").unlink(),
                                   "ferPrivateTest005.png", "label entries whose image is missing"),
}


@pytest.mark.parametrize("case", sorted(LABEL_CASES), ids=lambda c: f"{c[0]}-{c[1]}")
def test_label_problem_is_one_line_or_a_counted_skip(tmp_path, case):
    adapter, _ = case
    damage, named, kind = LABEL_CASES[case]
    make, _, open_test = ADAPTERS[adapter]
    clean_n = len(open_test(make(tmp_path / "clean")))
    root = make(tmp_path / adapter)
    damage(root)
    with pytest.raises(DataError) as exc:
        open_test(root)
    msg = str(exc.value)
    assert "\n" not in msg and named in msg and f"[{adapter}]" in msg and "data.on_bad_label=skip" in msg
    ds = open_test(root, on_bad_label="skip")
    assert ds.protocol["skipped"] == {kind: 1} and named in ds.protocol["skipped_files"][kind][0]
    # a duplicate keeps its first row, so nothing is lost from the split; the others lose one sample
    lost = 0 if kind == "files listed more than once" else 1
    assert len(ds) == clean_n - lost and ds.protocol["n_scored"] == len(ds) and ds.protocol["n"] == len(ds) + 1


def _bom_crlf(path: Path) -> None:
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


BOM_CRLF_FILES = {
    "rafdb": ["EmoLabel/list_patition_label.txt"],
    "affectnet": ["training.csv", "validation.csv"],
    "ferplus": ["fer2013new.csv"],
    "celebahq": ["CelebA-HQ-to-CelebA-mapping.txt", "list_eval_partition.txt"],
}


@pytest.mark.parametrize("adapter", sorted(BOM_CRLF_FILES))
def test_bom_and_crlf_label_files_read_as_clean(tmp_path, adapter):
    make, _, open_test = ADAPTERS[adapter]
    clean = open_test(make(tmp_path / "clean"))
    root = make(tmp_path / adapter)
    for rel in BOM_CRLF_FILES[adapter]:
        _bom_crlf(root / rel)
        assert (root / rel).read_bytes().startswith(b"\xef\xbb\xbf") and b"\r\n" in (root / rel).read_bytes()
    ds = open_test(root)
    assert [(r.path.name, r.label) for r in ds.records] == [(r.path.name, r.label) for r in clean.records]
    assert ds.protocol["skipped"] == {}


def test_celebahq_malformed_partition_line_is_one_line(tmp_path):
    root = make_celebahq(tmp_path / "celebahq")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000011.jpg\n")
    with pytest.raises(DataError, match=r"malformed lines in .*list_eval_partition.txt.*line 2: '000011.jpg'"):
        CelebAHQ(root, "test")
