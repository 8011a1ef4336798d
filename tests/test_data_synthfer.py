"""SynthFER: determinism, identity-disjoint splits, metadata consistency, dataset and CLI::

    .venv/bin/python -m pytest tests/test_data_synthfer.py -q
"""
from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from ifer.data import SynthFER, SynthFERConfig, generate_synthfer
from ifer.data.__main__ import main
from ifer.data.common import DatasetNotFoundError, LabelFileError
from ifer.data.labels import EXPRESSIONS_7
from ifer.data.synthfer import save_grid
from ifer.data.synthfer_render import AU_NAMES

SMALL = SynthFERConfig(n_train_identities=4, n_val_identities=2, n_test_identities=2, images_per_identity=7)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("sf")
    return root, generate_synthfer(root, SMALL, workers=2)


def test_same_seed_same_bytes_any_worker_count(small, tmp_path):
    root, manifest = small
    again = generate_synthfer(tmp_path / "again", SMALL, workers=1)
    assert again["files"] == manifest["files"] and again["digest"] == manifest["digest"]
    assert (tmp_path / "again" / "train" / "metadata.csv").read_bytes() == (root / "train" / "metadata.csv").read_bytes()
    other = generate_synthfer(tmp_path / "other", SynthFERConfig(**{**SMALL.__dict__, "seed": 1}), workers=1)
    assert other["digest"] != manifest["digest"]


def test_splits_hold_out_identities(small):
    root, manifest = small
    ids = {s: set(SynthFER(root, s).identities) for s in ("train", "val", "test")}
    assert [len(ids[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert manifest["split_sizes"] == {"train": 28, "val": 14, "test": 14}


def test_metadata_matches_images(small):
    root, manifest = small
    rows = list(csv.DictReader(open(root / "train" / "metadata.csv")))
    assert len(rows) == 28 and {f"au_{n}" for n in AU_NAMES} <= rows[0].keys()
    for r in rows:
        assert EXPRESSIONS_7[int(r["label"])] == r["expression"]
        assert (float(r["intensity"]) == 0.0) == (r["expression"] == "neutral")
        assert 0 <= float(r["intensity"]) <= 1 and -0.5 < float(r["yaw"]) < 0.5
        assert Image.open(root / "train" / r["file"]).size == (64, 64)
    # every identity sees every expression once per 7 images
    per_id = {}
    for r in rows:
        per_id.setdefault(r["identity"], set()).add(int(r["label"]))
    assert all(v == set(range(7)) for v in per_id.values())
    idents = list(csv.DictReader(open(root / "identities.csv")))
    assert len(idents) == 8 and {"skin_tone", "face_w", "eye_spacing", "hair_style", "glasses"} <= idents[0].keys()


def test_dataset_returns_meta_and_protocol(small):
    root, _ = small
    ds = SynthFER(root, "val", return_meta=True)
    img, label, meta = ds[0]
    assert img.size == (64, 64) and 0 <= label < 7 and meta["identity"] in ds.identities
    assert ds.protocol["model_selection"] == "val" and "identities" in ds.protocol["selection_policy"]


def test_dataset_errors(small, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="synthfer"):
        SynthFER(tmp_path / "missing")
    root, _ = small
    copy = tmp_path / "copy"
    (copy / "test").mkdir(parents=True)
    text = (root / "test" / "metadata.csv").read_text()
    (copy / "test" / "metadata.csv").write_text(text)
    with pytest.raises(LabelFileError, match="missing"):
        SynthFER(copy, "test")


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate_synthfer(tmp_path, SMALL)


@pytest.mark.parametrize("res", [128, 256])
def test_other_resolutions_and_grid(tmp_path, res):
    cfg = SynthFERConfig(res=res, n_train_identities=1, n_val_identities=1, n_test_identities=1, images_per_identity=2)
    generate_synthfer(tmp_path / "d", cfg, workers=1)
    assert Image.open(next((tmp_path / "d" / "test").glob("*.png"))).size == (res, res)
    assert Image.open(save_grid(tmp_path / "g.png", res, rows=2)).size == (7 * res, 2 * res)


def test_cli_generates_and_verifies(tmp_path, capsys):
    out = tmp_path / "datasets" / "synthfer"
    assert main(["synthfer", "--out", str(out), "--n-train-identities", "2", "--n-val-identities", "1",
                 "--n-test-identities", "1", "--images-per-identity", "3", "--workers", "1"]) == 0
    assert json.loads((out / "manifest.json").read_text())["config"]["images_per_identity"] == 3
    assert main(["verify", "--root", str(tmp_path / "datasets"), "--report", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["datasets"]["synthfer"]["status"] == "ok"


def test_nuisance_strength_scales_amplitudes_only():
    import numpy as np

    from ifer.data.synthfer_render import sample_nuisance

    full = sample_nuisance(np.random.default_rng(3), 0.2)
    assert sample_nuisance(np.random.default_rng(3), 0.2, 1.0) == full      # 1.0 is an exact no-op
    half = sample_nuisance(np.random.default_rng(3), 0.2, 0.5)
    none = sample_nuisance(np.random.default_rng(3), 0.2, 0.0)
    for k in ("yaw", "roll", "tx", "ty", "light_strength", "noise"):
        assert half[k] == pytest.approx(0.5 * full[k]) and none[k] == 0.0
    assert none["scale"] == 1.0 and none["ambient"] == 1.0 and none["bg_b"] == none["bg_a"]
    assert half["background"] == full["background"] and half["occlusion"] == full["occlusion"]
    with pytest.raises(ValueError, match="nuisance strength"):
        sample_nuisance(np.random.default_rng(3), 0.2, 1.5)


def test_mean_image_baseline_is_deterministic(tmp_path):
    """The inversion baseline uses un-augmented training images, so two evaluations give the same mean."""
    import torch

    from ifer.core.config import load_config
    from ifer.data.build import inversion_datasets, mean_image

    generate_synthfer(tmp_path / "sf", SynthFERConfig(res=64, n_train_identities=3, n_val_identities=1,
                                                      n_test_identities=1, images_per_identity=4, seed=0))
    cfg = load_config("tiny", overrides=[f"data.synthfer.out={tmp_path / 'sf'}"])
    train, _, _ = inversion_datasets(cfg, augment=False)
    first = mean_image(train)
    torch.manual_seed(123)
    assert torch.equal(first, mean_image(inversion_datasets(cfg, augment=False)[0]))
