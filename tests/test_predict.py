"""``ifer predict`` / ``ifer invert --folder`` on a folder of mixed real-world files: sizes, modes (RGB, grey,
RGBA, 16-bit), EXIF rotation, a photo without a face, a truncated JPEG and a non-image. The face is Grace
Hopper's portrait that ships with matplotlib (``sample_data/grace_hopper.jpg``, a declared dependency)."""
import csv
import io
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from ifer.cli import main
from ifer.core.config import load_config
from ifer.data.common import DataError
from ifer.data.faces import FaceDetector, align_ffhq, read_photo
from ifer.data.labels import EXPRESSIONS_7
from ifer.eval.predict import BF16_MIN_AGREEMENT, bf16_agreement, choose_precision, predict_folder
from ifer.models.registry import create_model

pytestmark = pytest.mark.usefixtures("one_thread")
HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
FACES = ("hopper.jpg", "big.jpg", "small_grey.png", "rgba.png", "exif_rotated.jpg", "grey16.png")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    face = Image.open(HOPPER).convert("RGB")  # 512 x 600
    face.save(d / "hopper.jpg", quality=92)
    face.resize((2048, 2400), Image.BICUBIC).save(d / "big.jpg", quality=85)
    face.convert("L").resize((170, 200)).save(d / "small_grey.png")
    rgba = face.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(face.size).point(lambda v: 128 + v // 2))
    rgba.save(d / "rgba.png")
    # stored on its side; EXIF orientation 6 says "rotate 90 degrees clockwise to display"
    exif = Image.Exif()
    exif[0x0112] = 6
    face.transpose(Image.Transpose.ROTATE_90).save(d / "exif_rotated.jpg", exif=exif, quality=92)
    grey16 = (np.asarray(face.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(grey16).save(d / "grey16.png")
    gradient = np.stack([*np.meshgrid(np.linspace(0, 255, 320), np.linspace(0, 255, 240)), np.full((240, 320), 90.0)], -1)
    Image.fromarray(gradient.astype(np.uint8)).save(d / "no_face.png")
    buf = io.BytesIO()
    face.save(buf, format="JPEG")
    (d / "truncated.jpg").write_bytes(buf.getvalue()[:2000])
    (d / "notes.txt").write_text("not an image")
    return d


def test_read_photo_modes_and_exif(photos):
    upright = read_photo(photos / "hopper.jpg")
    rotated = read_photo(photos / "exif_rotated.jpg")
    assert rotated.size == upright.size == (512, 600) and rotated.mode == "RGB"
    diff = np.abs(np.asarray(rotated, dtype=float) - np.asarray(upright, dtype=float)).mean()
    assert diff < 6, f"EXIF orientation not applied (mean abs difference {diff:.1f})"
    for name in ("rgba.png", "grey16.png", "small_grey.png"):
        assert read_photo(photos / name).mode == "RGB"
    assert np.asarray(read_photo(photos / "grey16.png")).max() > 200  # 16-bit scaled, not clipped to 255 or 0
    with pytest.raises(DataError, match="truncated.jpg: cannot decode image"):
        read_photo(photos / "truncated.jpg")


def test_detector_finds_the_face_and_aligns_it(photos):
    det = FaceDetector()
    faces = det.detect(read_photo(photos / "hopper.jpg"))
    assert len(faces) == 1 and faces[0].score > 0.8
    x, y, w, h = faces[0].box
    assert 150 < x < 220 and 90 < y < 160 and 130 < w < 220 and 170 < h < 260  # the face, in photo pixels
    # the same face in a 4x larger copy: box scales with it
    big = det.detect(read_photo(photos / "big.jpg"))[0]
    assert abs(big.box[0] / 4 - x) < 8 and abs(big.box[2] / 4 - w) < 10
    crop = align_ffhq(read_photo(photos / "hopper.jpg"), faces[0].landmarks, 256)
    assert crop.size == (256, 256)
    # FFHQ alignment puts the eyes level, symmetric about the centre, at ~0.39 of the height
    again = det.detect(crop)[0].landmarks
    assert abs(again[0, 1] - again[1, 1]) < 6 and abs((again[0, 0] + again[1, 0]) / 2 - 128) < 8
    assert 80 < again[0, 1] < 120
    assert det.detect(read_photo(photos / "no_face.png")) == []


def _suite_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("ifer_tiny", num_classes=7).eval()
    path = tmp_path / "best.pt"
    torch.save({"model": model.state_dict(), "epoch": 3}, path)
    return model, path


def test_predict_folder_rows(photos, tmp_path):
    from ifer.data.build import fer_eval_transform

    model, _ = _suite_checkpoint(tmp_path)
    cfg = load_config("tiny")
    rows = predict_folder(model, photos, EXPRESSIONS_7, fer_eval_transform(cfg.fer_methods.ifer.train))
    by = {r["file"]: r for r in rows}
    assert sorted(by) == sorted(p.name for p in photos.iterdir())
    for name in FACES:
        r = by[name]
        assert r["status"] == "ok" and r["face_found"] and r["predicted"] in EXPRESSIONS_7, (name, r)
        assert abs(sum(r[f"p_{c}"] for c in EXPRESSIONS_7) - 1) < 1e-4
    assert by["no_face.png"]["status"] == "no face" and by["no_face.png"]["predicted"] == ""
    assert by["truncated.jpg"]["status"].startswith("unreadable: cannot decode image")
    assert by["notes.txt"]["status"].startswith("unreadable")
    # the EXIF-rotated photo is the same face as the upright one: same box
    assert abs(by["exif_rotated.jpg"]["box_x"] - by["hopper.jpg"]["box_x"]) < 6


def test_predict_cli_writes_csv(photos, tmp_path, capsys):
    _, ckpt = _suite_checkpoint(tmp_path)
    out = tmp_path / "pred.csv"
    assert main(["predict", str(photos), "--checkpoint", str(ckpt), "--precision", "fp32", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "precision: fp32 (fp32 requested)" in text and f"{len(FACES)} with a face, 2 unreadable" in text
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(list(photos.iterdir()))
    assert list(rows[0])[:10] == ["file", "status", "face_found", "box_x", "box_y", "box_w", "box_h", "det_score",
                                  "predicted", "p_neutral"]


def test_invert_folder_grid(photos, tmp_path, capsys):
    torch.manual_seed(0)
    net = create_model("asit_tiny")
    net.init_latent_avg(256, seed=0)
    ckpt = tmp_path / "asit.pt"
    net.save_checkpoint(ckpt)
    out = tmp_path / "inv"
    assert main(["invert", "--folder", str(photos), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "inversions.csv").open()))
    assert sum(r["face_found"] == "True" for r in rows) == len(FACES) and len(rows) == len(list(photos.iterdir())) == 9
    grid = Image.open(out / "grid.png")
    assert grid.size == (len(FACES) * 66 + 2, 2 * 66 + 2)  # 64-px aligned input above its reconstruction
    assert (out / "recon" / "hopper.png").is_file() and (out / "aligned" / "rgba.png").is_file()


def test_bf16_policy():
    native = (True, "CPU has avx512_bf16")
    assert choose_precision("auto", 0.9990, native)[0] == "bf16"
    assert choose_precision("auto", BF16_MIN_AGREEMENT - 1e-4, native)[0] == "fp32"
    assert choose_precision("auto", None, native) == ("fp32", "no measured fp32/bf16 agreement for this checkpoint")
    assert choose_precision("auto", 1.0, (False, "no bf16"))[0] == "fp32"
    assert choose_precision("fp32", 1.0, native)[0] == "fp32"


def test_bf16_agreement_measurement():
    torch.manual_seed(0)
    model = create_model("ifer_tiny", num_classes=7).eval()
    data = torch.utils.data.TensorDataset(torch.randn(12, 3, 64, 64), torch.arange(12) % 7)
    m = bf16_agreement(model, data, batch_size=5)
    assert m["n"] == 12 and 0 <= m["top1_agreement"] <= 1
    with torch.no_grad():
        p32 = model(data.tensors[0]).argmax(1)
    assert m["accuracy_fp32"] == pytest.approx(float((p32 == data.tensors[1]).double().mean()), abs=1e-12)


def test_precision_auto_measures_once_and_stores_agreement(tmp_path, monkeypatch):
    from ifer.data.synthfer import SynthFERConfig, generate_synthfer
    from ifer.eval import predict as predict_mod

    root = tmp_path / "synthfer"
    generate_synthfer(root, SynthFERConfig(n_train_identities=1, n_val_identities=1, n_test_identities=1,
                                           images_per_identity=7), workers=1)
    cfg = load_config("tiny", overrides=[f"data.synthfer.out={root}", "eval.batch_size=4"])
    model, ckpt = _suite_checkpoint(tmp_path)
    monkeypatch.setattr(predict_mod, "native_bf16", lambda: (True, "CPU has avx512_bf16"))
    precision, why, measured = predict_mod.precision_for(cfg, model, ckpt, "auto")
    assert measured["n"] == 7 and measured["dataset"] == "synthfer"
    assert precision == ("bf16" if measured["top1_agreement"] >= BF16_MIN_AGREEMENT else "fp32")
    assert "agreement" in why
    # stored next to the checkpoint: a second call does not measure again
    monkeypatch.setattr(predict_mod, "bf16_agreement", lambda *a, **k: pytest.fail("measured twice"))
    assert predict_mod.precision_for(cfg, model, ckpt, "auto")[2] == measured
    monkeypatch.setattr(predict_mod, "native_bf16", lambda: (False, "no bf16 here"))
    assert predict_mod.precision_for(cfg, model, ckpt, "auto")[:2] == ("fp32", "no bf16 here")
