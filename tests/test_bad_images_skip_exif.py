"""Bad images under ``data.on_bad_image=skip`` and EXIF orientation, on miniature datasets built from real photos::

    .venv/bin/python -m pytest tests/test_bad_images_skip_exif.py -q

The photos are scikit-image's sample images (``skimage.data``: astronaut, chelsea, coffee, ...), cropped to
RAF-DB's 100x100 aligned JPEGs in RAF-DB's own layout. One bad file is planted per case (a truncated JPEG, a
zero-byte file, a text file named ``.jpg``, a 1x1 image) in the train or the test split:

* with ``skip`` the dataset drops it at open (one warning line naming it), one epoch is served without it, and
  the recorded protocol (``fer_datasets``, and ``protocol.json`` of a real ``ifer train-fer``) has ``skipped``,
  the file in ``skipped_files`` and ``n_scored`` of ``n`` for the split it was in; with ``error`` the CLI
  prints one line naming the file and exits 2;
* a file that decoded at open and goes bad mid-epoch is one line saying so, also under ``skip``;
* an EXIF-rotated photo (orientations 3, 6, 8) in the train or test split of every adapter is served upright:
  the tensor equals the transform of the raw pixels rotated by hand, not of the sideways pixels; and
  ``ifer verify --deep`` names such files.
"""
from __future__ import annotations

import io
import json
import logging
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ifer import cli
from ifer.core.config import load_config
from ifer.data import RAFDB, BadImageError, make_loader
from ifer.data.build import fer_datasets
from ifer.data.common import BAD_IMAGES
from ifer.data.transforms import eval_transform
from tests.test_bad_input import ADAPTERS

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) provides the sample photos")

N_TRAIN, N_TEST = 14, 7
ALIGNED = Path("Image") / "aligned"
ORIENTATION = 0x0112  # the EXIF Orientation tag


@lru_cache(maxsize=1)
def photos() -> tuple[np.ndarray, ...]:
    """Real colour photos (HxWx3 uint8) shipped with scikit-image (no download)."""
    names = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")
    return tuple(np.ascontiguousarray(getattr(skimage_data, n)()[..., :3]) for n in names)


def photo(i: int, size: tuple[int, int] = (100, 100)) -> Image.Image:
    """The ``i``-th distinct crop of a sample photo, resized to ``size`` (w, h)."""
    arr = photos()[i % len(photos())]
    h, w = arr.shape[:2]
    side = min(h, w) * 3 // 4
    off = (i // len(photos())) * 17 % (min(h, w) - side + 1)
    return Image.fromarray(arr[off:off + side, off:off + side]).resize(size, Image.BILINEAR)


def face(size: tuple[int, int] = (100, 80)) -> Image.Image:
    """The astronaut's face (upright, not symmetric under rotation), resized to ``size`` (w, h)."""
    return Image.fromarray(photos()[0][20:220, 150:330]).resize(size, Image.BILINEAR)


def make_real_rafdb(root: Path) -> Path:
    """RAF-DB's layout (label file + 100x100 aligned JPEGs) with real photos: 14 train / 7 test, 7 classes."""
    lines = []
    for split, n, first in (("train", N_TRAIN, 0), ("test", N_TEST, 50)):
        for i in range(1, n + 1):
            lines.append(f"{split}_{i:05d}.jpg {(i - 1) % 7 + 1}")
            path = root / ALIGNED / f"{split}_{i:05d}_aligned.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            photo(first + i).save(path, quality=90)
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def _encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


BAD = {  # written over a real photo's file, keeping its name: the format is what the bytes say
    "truncated_jpeg": (lambda: _encoded(photo(3, (160, 160)), "JPEG", quality=95)[:4000], "truncated"),
    "zero_byte": (lambda: b"", "zero-byte file"),
    "text_named_jpg": (lambda: b"<html><body>404 Not Found</body></html>\n", "not an image"),
    "one_by_one": (lambda: _encoded(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "1x1 px"),
}
PLANTED = {"train": ALIGNED / "train_00003_aligned.jpg", "test": ALIGNED / "test_00002_aligned.jpg"}


def _cfg(datasets: Path, policy: str):
    return load_config("tiny", overrides=[f"paths.datasets={datasets}", f"data.on_bad_image={policy}",
                                          "data.fer.datasets=[rafdb]"])


def _warnings(caplog) -> list[str]:
    # the data layer's warnings (logger ifer.data): the trainer may warn for its own reasons, e.g. "bf16 autocast
    # runs as fp32 on this CPU" on a machine without native bf16, which says nothing about bad images
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("ifer.data")]


def _split_of(splits, path: Path) -> str:
    return next(s for s in ("train", "val", "test") if path in {r.path for r in getattr(splits, s).records})


@pytest.mark.parametrize("where", sorted(PLANTED))
@pytest.mark.parametrize("kind", sorted(BAD))
def test_skip_drops_logs_and_records_the_bad_image_of_any_split(tmp_path, caplog, kind, where):
    root = make_real_rafdb(tmp_path / "rafdb")
    bad = root / PLANTED[where]
    recipe = _cfg(tmp_path, "error").fer_methods.fer_resnet18.train
    clean = fer_datasets(_cfg(tmp_path, "error"), "rafdb", recipe)
    split = _split_of(clean, bad)  # train_00003 is in train or in the held-out val: both must be recorded
    sizes = {s: len(getattr(clean, s)) for s in ("train", "val", "test")}
    bad.write_bytes(BAD[kind][0]())

    with caplog.at_level(logging.WARNING, logger="ifer.data"):
        splits = fer_datasets(_cfg(tmp_path, "skip"), "rafdb", recipe)
    warned = _warnings(caplog)
    assert len(warned) == 1 and str(bad) in warned[0] and BAD[kind][1] in warned[0] and "\n" not in warned[0]

    p = splits.protocol
    assert p["skipped"] == {BAD_IMAGES: 1}
    assert len(p["skipped_files"][BAD_IMAGES]) == 1 and str(bad) in p["skipped_files"][BAD_IMAGES][0]
    for s, n in sizes.items():
        assert p["splits"][s] == {"n_scored": n - (s == split), "n": n, "skipped": {BAD_IMAGES: 1} if s == split else {}}
    assert (p["n_scored"], p["n"]) == (sizes["test"] - (split == "test"), sizes["test"])
    json.dumps(p)  # recorded as is in protocol.json and in the results

    # one epoch of every split is served without the file, and without an error from a loader
    for s in ("train", "val", "test"):
        ds = getattr(splits, s)
        assert bad not in {r.path for r in ds.records}
        seen = sum(len(y) for _, y in make_loader(ds, batch_size=4, train=s == "train"))
        assert seen == len(ds) == p["splits"][s]["n_scored"]


def _train_fer(tmp_path: Path, policy: str) -> list[str]:
    return ["train-fer", "--profile", "tiny", "--method", "fer_resnet18", "--dataset", "rafdb", "--seed", "0",
            f"paths.datasets={tmp_path / 'datasets'}", f"paths.runs={tmp_path / 'runs'}",
            f"paths.results={tmp_path / 'results'}", "data.fer.datasets=[rafdb]", f"data.on_bad_image={policy}",
            "fer_methods.fer_resnet18.train.epochs=1", "fer_methods.fer_resnet18.train.batch_size=4"]


@pytest.mark.parametrize("kind", sorted(BAD))
def test_cli_train_fer_skip_finishes_and_records_error_is_one_line(tmp_path, capsys, caplog, kind):
    """A one-epoch ``ifer train-fer`` from an empty folder with a bad training image: ``skip`` finishes and its
    protocol.json records the file; ``error`` prints one line naming it and exits 2."""
    root = make_real_rafdb(tmp_path / "datasets" / "rafdb")
    bad = root / PLANTED["train"]
    bad.write_bytes(BAD[kind][0]())

    assert cli.main(_train_fer(tmp_path, "error")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ifer train-fer: error: BadImageError: [rafdb] bad image {bad}: ")
    assert BAD[kind][1] in err[0]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ifer.data"):
        assert cli.main(_train_fer(tmp_path, "skip")) == 0
    warned = _warnings(caplog)
    assert len(warned) == 1 and str(bad) in warned[0]
    (protocol_file,) = (tmp_path / "runs").rglob("protocol.json")
    p = json.loads(protocol_file.read_text())
    assert p["skipped"] == {BAD_IMAGES: 1} and str(bad) in p["skipped_files"][BAD_IMAGES][0]
    split = next(s for s, c in p["splits"].items() if c["skipped"])
    assert split in ("train", "val") and p["splits"][split]["n_scored"] == p["splits"][split]["n"] - 1
    assert p["on_bad_image"] == "skip"
    assert (protocol_file.parent / "result.json").is_file()


def test_a_file_that_goes_bad_mid_epoch_under_skip_is_one_line_saying_so(tmp_path):
    """Checked at open, damaged before the epoch reads it: no other sample is substituted (the epoch and the
    scored set would change silently); the one line says the file changed after the check."""
    root = make_real_rafdb(tmp_path / "rafdb")
    ds = RAFDB(root, "test", transform=eval_transform(32), on_bad_image="skip")
    assert ds.protocol["skipped"] == {} and len(ds) == N_TEST
    bad = root / ALIGNED / "test_00004_aligned.jpg"
    bad.write_bytes(BAD["truncated_jpeg"][0]())
    with pytest.raises(BadImageError) as exc:
        list(make_loader(ds, batch_size=4, train=False))
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"[rafdb] bad image {bad}: truncated")
    assert "changed after" in msg and "data.on_bad_image=skip" in msg


# ---------------------------------------------------------------- EXIF orientation
# Orientation tag -> how the stored (sideways) pixels relate to the upright face, as np.rot90 turns.
STORED_TURNS = {3: 2, 6: 1, 8: -1}  # 6: stored turned 90 deg counter-clockwise, shown after a clockwise turn


def _write_rotated(path: Path, upright: Image.Image, orientation: int) -> None:
    """``upright`` stored sideways (as a phone or a re-encoding tool leaves it) with the EXIF tag that undoes it."""
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(np.asarray(upright), STORED_TURNS[orientation])))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    path.write_bytes(_encoded(stored, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {})))


def _upright_reference(path: Path, orientation: int) -> tuple[Image.Image, Image.Image]:
    """(the raw stored pixels, those pixels turned upright by hand): what a decoder without EXIF would serve,
    and what the model must be served."""
    with Image.open(path) as im:
        assert im.getexif().get(ORIENTATION) == orientation
        raw = im.convert("RGB")
    return raw, Image.fromarray(np.ascontiguousarray(np.rot90(np.asarray(raw), -STORED_TURNS[orientation])))


def _assert_served_upright(ds, path: Path, orientation: int, tf) -> None:
    raw, upright = _upright_reference(path, orientation)
    served, _ = ds[[r.path for r in ds.records].index(path)]
    assert torch.equal(served, tf(upright))
    sideways = tf(raw)
    if sideways.shape == served.shape:  # the test can tell: the sideways decoding is far from the upright one
        assert (served - sideways).abs().mean() > 0.1


@pytest.mark.parametrize("orientation", sorted(STORED_TURNS))
@pytest.mark.parametrize("split", ["train", "test"])
def test_exif_rotated_photo_in_rafdb_train_or_test_is_served_upright(tmp_path, split, orientation):
    root = make_real_rafdb(tmp_path / "rafdb")
    path = root / PLANTED[split]
    _write_rotated(path, face(), orientation)
    tf = eval_transform(48)
    ds = RAFDB(root, split, transform=tf)
    if path not in {r.path for r in ds.records}:  # held out for model selection: the val split serves it
        ds = RAFDB(root, "val", transform=tf)
    _assert_served_upright(ds, path, orientation, tf)
    # the skip policy's decode pass accepts it and serves the same tensor
    skipped = RAFDB(root, ds.protocol["split"], transform=tf, on_bad_image="skip")
    assert skipped.protocol["skipped"] == {}
    _assert_served_upright(skipped, path, orientation, tf)


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_exif_rotated_photo_is_served_upright_by_every_adapter(tmp_path, adapter):
    make, rel, open_test = ADAPTERS[adapter]
    root = make(tmp_path / adapter)
    _write_rotated(root / rel, face((40, 32)), 6)
    tf = eval_transform(24)
    _assert_served_upright(open_test(root, transform=tf), root / rel, 6, tf)


def test_deep_verify_names_exif_rotated_files(tmp_path, capsys):
    root = make_real_rafdb(tmp_path / "rafdb")
    _write_rotated(root / PLANTED["train"], face(), 6)
    _write_rotated(root / PLANTED["test"], face(), 3)
    cli.main(["verify", "--root", str(tmp_path), "--deep", "--workers", "1", "rafdb"])
    out = capsys.readouterr().out
    note = next(ln for ln in out.splitlines() if "EXIF orientation" in ln)
    assert "2 images" in note and PLANTED["train"].as_posix() in note and PLANTED["test"].as_posix() in note
    assert "corrupt" not in out and "21 decoded, 0 bad" in out
