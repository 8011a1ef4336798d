"""``ifer predict`` / ``ifer invert --folder`` on a folder of mixed real-world files: sizes, modes (RGB, grey,
RGBA, 16-bit), EXIF rotation, a photo without a face, a truncated JPEG and a non-image. The face is Grace
Hopper's portrait that ships with matplotlib (``sample_data/grace_hopper.jpg``, a declared dependency)."""
import csv
import io
import json
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
    from ifer.stages import fer_checkpoint_meta

    torch.manual_seed(0)
    model = create_model("ifer_tiny", num_classes=7).eval()
    path = tmp_path / "best.pt"
    meta = fer_checkpoint_meta(load_config("tiny"), "ifer", "synthfer", 0, EXPRESSIONS_7, model)
    torch.save({"model": model.state_dict(), "epoch": 3, "meta": meta}, path)
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
    _, ckpt = _suite_checkpoint(tmp_path)
    model, _ = predict_mod.load_classifier(cfg, ckpt)  # as the CLI loads it: with its recorded preprocessing
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


# ------------------------------------------------------------------ self-describing suite checkpoints (issue 18.1)
TINY_METHODS = ("ifer", "fer_resnet18", "ke2nt_minilm", "disentangled")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real one-epoch ``ifer train-fer`` per tiny method on a 7-image SynthFER: its best.pt, as users get it."""
    from tests.toy import tiny_synthfer

    synth = tiny_synthfer(tmp_path_factory, n_train_identities=1)
    runs = tmp_path_factory.mktemp("runs")
    out = {}
    for method in TINY_METHODS:
        assert main(["train-fer", "--profile", "tiny", "--method", method, "--dataset", "synthfer", "--seed", "0",
                     f"data.synthfer.out={synth}", f"paths.runs={runs}", f"paths.results={runs / 'results'}",
                     "protocol_overrides.clean.ifer.init=scratch", f"fer_methods.{method}.train.epochs=1",
                     f"fer_methods.{method}.train.batch_size=4", "device=cpu"]) == 0
        (out[method],) = runs.rglob(f"fer/*/{method}/synthfer/seed0/best.pt")
    return synth, out


@pytest.mark.parametrize("method", TINY_METHODS)
def test_suite_checkpoint_says_what_it_is_and_predict_needs_no_method(photos, trained, method, tmp_path, capsys):
    """best.pt records model, kwargs, mode and quirks, classes, preprocessing, profile, protocol and git; ``ifer
    predict`` without --method rebuilds exactly that network: its probabilities equal the stage's own model
    (built by ``stages.build_fer_model``, the trained weights loaded) fed the recipe's eval transform."""
    from ifer import stages
    from ifer.data.build import fer_eval_transform, fer_preprocessing

    _, ckpts = trained
    saved = torch.load(ckpts[method], weights_only=True)
    meta = saved["meta"]
    cfg = load_config("tiny", overrides=["ifer.init=scratch"])  # what the clean overlay resolved to in training
    assert meta["format"] == "ifer-suite/fer-checkpoint/1" and meta["method"] == method
    assert meta["model"] == cfg.fer_methods[method].model and meta["section"]["kwargs"] == {}
    assert meta["class_names"] == list(EXPRESSIONS_7) and meta["num_classes"] == 7
    assert meta["preprocessing"] == fer_preprocessing(cfg.fer_methods[method].train)
    assert meta["profile"] == "tiny" and meta["protocol"] == "clean" and meta["dataset"] == "synthfer"
    assert meta["seed"] == 0 and meta["mode"] == cfg.ifer.mode and set(meta["quirks"]) == {"mode", "flags"}
    assert len(meta["git"]["sha"] or "") in (0, 40)

    out = tmp_path / "pred.csv"
    assert main(["predict", str(photos), "--checkpoint", str(ckpts[method]), "--precision", "fp32",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"method: {method}" in text and "source: recorded in the file (meta)" in text
    assert f"{len(FACES)} with a face" in text
    got = {r["file"]: r for r in csv.DictReader(out.open())}

    model = stages.build_fer_model(stages.with_seed(cfg, 0), method, 7)
    model.load_state_dict(saved["model"])
    want = {r["file"]: r for r in predict_folder(model.eval(), photos, EXPRESSIONS_7,
                                                 fer_eval_transform(cfg.fer_methods[method].train))}
    for name in FACES:
        assert got[name]["predicted"] == want[name]["predicted"], name
        for c in EXPRESSIONS_7:  # the CSV rounds to 6 decimals
            assert abs(float(got[name][f"p_{c}"]) - want[name][f"p_{c}"]) <= 1e-6, (name, c)


def test_suite_checkpoint_method_mismatch_and_old_files_are_one_line(photos, trained, tmp_path, capsys):
    _, ckpts = trained
    assert main(["predict", str(photos), "--checkpoint", str(ckpts["ifer"]), "--method", "disentangled"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "records method 'ifer'" in err[0]
    # a file written before checkpoints described themselves: without --method it says what to pass ...
    old = tmp_path / "old_best.pt"
    saved = torch.load(ckpts["disentangled"], weights_only=True)
    torch.save({"model": saved["model"], "epoch": saved["epoch"]}, old)
    assert main(["predict", str(photos), "--checkpoint", str(old)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "records no 'meta'" in err[0] and "--method" in err[0]
    # ... and with it, the current config's choices are listed as assumptions
    assert main(["predict", str(photos), "--checkpoint", str(old), "--method", "disentangled", "--precision", "fp32",
                 "--out", str(tmp_path / "p.csv")]) == 0
    assert "assumptions: ['model: disentangled_tiny" in capsys.readouterr().out


def test_eval_checkpoint_scores_a_suite_checkpoint_like_eval_fer(trained, tmp_path, capsys):
    """``ifer eval-checkpoint best.pt`` rebuilds the network from its meta and scores the test split: the same
    metrics as fer_metrics over the stage model's own predictions."""
    from ifer import stages
    from ifer.data.build import fer_datasets
    from ifer.eval.classify import predict
    from ifer.metrics.fer import fer_metrics

    synth, ckpts = trained
    out = tmp_path / "r.json"
    assert main(["eval-checkpoint", str(ckpts["ke2nt_minilm"]), f"data.synthfer.out={synth}", "device=cpu",
                 "--dataset", "synthfer", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ke2nt_minilm (checkpoint) on synthfer test" in text and "head order (recorded in the file)" in text
    result = json.loads(out.read_text())
    assert result["kind"] == "suite_fer" and result["choices"]["method"] == "ke2nt_minilm"
    cfg = load_config("tiny", overrides=[f"data.synthfer.out={synth}"])
    model = stages.build_fer_model(stages.with_seed(cfg, 0), "ke2nt_minilm", 7)
    model.load_state_dict(torch.load(ckpts["ke2nt_minilm"], weights_only=True)["model"])
    test = fer_datasets(cfg, "synthfer", cfg.fer_methods.ke2nt_minilm.train, eval_only=True).test
    pred = predict(model.eval(), test, 64, "cpu")
    want = fer_metrics(pred["logits"], pred["labels"], 7)
    assert result["test"]["accuracy"] == want["accuracy"]
    assert result["test"]["confusion_matrix"] == want["confusion_matrix"]
