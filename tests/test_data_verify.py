"""verify / fingerprint: changed, missing and extra files are named; unknown digests are reported as such::

    .venv/bin/python -m pytest tests/test_data_verify.py -q
"""
from __future__ import annotations

import json
import shutil

from ifer.data import SynthFERConfig, generate_synthfer, verify_datasets
from ifer.data.labels import AFFECTNET, EXPRESSIONS_7, FERPLUS, RAFDB, SFEW
from ifer.data.verify import fingerprint, format_report, load_fingerprints
from tests.test_data_adapters import make_rafdb

TINY = SynthFERConfig(n_train_identities=2, n_val_identities=1, n_test_identities=1, images_per_identity=2)


def test_synthfer_changed_and_missing_files_are_named(tmp_path):
    root = tmp_path / "datasets"
    generate_synthfer(root / "synthfer", TINY, workers=1)
    assert verify_datasets(root)["ok"]
    changed = root / "synthfer" / "train" / "00000_000.png"
    changed.write_bytes(changed.read_bytes()[:-3] + b"xyz")
    (root / "synthfer" / "test" / "00003_001.png").unlink()
    report = verify_datasets(root)
    d = report["datasets"]["synthfer"]
    assert not report["ok"] and d["status"] == "mismatch"
    assert d["changed"] == ["train/00000_000.png"] and d["missing"] == ["test/00003_001.png"]
    assert "synthfer" in format_report(report) and "changed" in format_report(report)


def test_absent_datasets_ok_unless_required(tmp_path):
    report = verify_datasets(tmp_path)
    assert report["ok"] and {d["status"] for d in report["datasets"].values()} == {"absent"}
    assert not verify_datasets(tmp_path, ["rafdb"])["ok"]


def test_real_dataset_count_split_and_digest(tmp_path):
    root = tmp_path / "datasets"
    make_rafdb(root / "rafdb")
    d = verify_datasets(root, ["rafdb"])["datasets"]["rafdb"]
    # a miniature copy: the count and split sizes differ from the protocol, and both are reported
    assert d["status"] == "mismatch" and any("expected 15340" in p for p in d["problems"])
    assert any("train split has 14 samples, protocol says 12271" in p for p in d["problems"])

    fps_path = tmp_path / "fingerprints.json"
    shutil.copy(load_fingerprints.__defaults__[0], fps_path)
    fps = json.loads(fps_path.read_text())
    entry = fingerprint(root, "rafdb")
    fps["rafdb"].update(count=entry["count"], digest=entry["digest"], split_sizes={"train": 14, "test": 7})
    fps_path.write_text(json.dumps(fps))
    assert verify_datasets(root, ["rafdb"], fingerprints=fps_path)["datasets"]["rafdb"]["status"] == "ok"
    (root / "rafdb" / "Image" / "aligned" / "test_00001_aligned.jpg").write_bytes(b"not a jpeg")
    d = verify_datasets(root, ["rafdb"], fingerprints=fps_path, check_splits=False)["datasets"]["rafdb"]
    assert d["status"] == "mismatch" and any("digest differs" in p for p in d["problems"])


def test_fingerprints_file_is_complete():
    fps = load_fingerprints()
    assert set(fps) == {"rafdb", "sfew", "affectnet", "ferplus", "ffhq", "celebahq"}
    for entry in fps.values():
        assert entry["include"] and (entry["digest"] or entry["reason"])


def test_label_maps_are_explicit_and_consistent():
    assert [EXPRESSIONS_7[RAFDB.to_index(i)] for i in range(1, 8)] == ["surprise", "fear", "disgust", "happy", "sad", "anger", "neutral"]
    assert [AFFECTNET.to_index(i, 8) for i in range(8)] == list(range(8))
    assert AFFECTNET.to_index(7, 7) is None and AFFECTNET.to_index(9, 8) is None
    assert {SFEW.name(k) for k in SFEW.native_to_name} == set(EXPRESSIONS_7)
    assert set(FERPLUS.native_to_name.values()) == set(EXPRESSIONS_7) | {"contempt"}
