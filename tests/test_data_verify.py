"""verify / fingerprint: changed, missing and extra files are named; unknown digests are reported as such::

    .venv/bin/python -m pytest tests/test_data_verify.py -q
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from ifer import cli
from ifer.data import SynthFERConfig, generate_synthfer, verify_datasets
from ifer.data.labels import AFFECTNET, EXPRESSIONS_7, FERPLUS, RAFDB, SFEW
from ifer.data.verify import FINGERPRINTS, fingerprint, format_report, load_fingerprints
from tests.test_data_adapters import img, make_rafdb, truncate

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
    assert d["status"] == "mismatch" and "21 images, expected 15339" in d["problems"]
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


def test_required_absent_is_an_error_optional_absent_is_not(tmp_path):
    report = verify_datasets(tmp_path, required=["affectnet7", "ffhq"])
    assert not report["ok"] and report["required"] == ["affectnet", "ffhq"]
    assert report["datasets"]["affectnet"]["status"] == "missing" and report["datasets"]["sfew"]["status"] == "absent"
    assert "required but not found" in format_report(report) and "FAILED (2 of 7: affectnet, ffhq)" in format_report(report)


def test_paper_profile_names_its_absent_datasets(tmp_path, capsys):
    rc = cli.main(["verify", "--profile", "paper", f"paths.datasets={tmp_path}", f"data.synthfer.out={tmp_path}/sf"])
    out = capsys.readouterr().out
    assert rc == 1
    for name in ("rafdb", "sfew", "affectnet", "ffhq", "celebahq"):
        assert re.search(rf"^  {name} +missing", out, re.M), out
    assert re.search(r"^  ferplus +absent", out, re.M)  # not read by the paper profile: optional


def test_tiny_profile_verifies_generated_synthfer(tmp_path, capsys):
    generate_synthfer(tmp_path / "sf", TINY, workers=1)
    rc = cli.main(["verify", "--profile", "tiny", "--deep", "--workers", "1", f"paths.datasets={tmp_path}/none",
                   f"data.synthfer.out={tmp_path}/sf"])
    out = capsys.readouterr().out
    assert rc == 0 and re.search(r"^  synthfer +ok +8 images \(expected 8\), 8 decoded, 0 bad", out, re.M), out


def test_typo_in_dataset_name_is_one_line(tmp_path, capsys):
    assert cli.main(["verify", "--root", str(tmp_path), "rafbd"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ifer verify: error: UnknownDatasetError: unknown dataset name(s) 'rafbd'")
    assert "rafdb" in err[0] and "affectnet7" in err[0]


def test_cli_prints_the_report_without_out(tmp_path, capsys):
    make_rafdb(tmp_path / "rafdb")
    assert cli.main(["verify", "--root", str(tmp_path), "rafdb"]) == 1
    out = capsys.readouterr().out
    assert "FAILED (1 of 1: rafdb)" in out
    assert re.search(r"^  rafdb +mismatch +21 images \(expected 15339\)", out, re.M), out
    assert "train split has 14 samples, protocol says 12271" in out
    assert cli.main(["verify", "--root", str(tmp_path), "--out", str(tmp_path / "r" / "check.json"), "rafdb"]) == 1
    saved = json.loads((tmp_path / "r" / "check.json").read_text())
    assert saved["ok"] is False and saved["datasets"]["rafdb"]["count"] == 21 and capsys.readouterr().out == out


def test_label_file_problem_is_an_error_status(tmp_path):
    root = make_rafdb(tmp_path / "rafdb")
    f = root / "EmoLabel" / "list_patition_label.txt"
    f.write_text(f.read_text().replace("train_00002.jpg 2", "train_00002.jpg 9"))
    d = verify_datasets(tmp_path, ["rafdb"])["datasets"]["rafdb"]
    assert d["status"] == "error" and "LabelFileError" in d["problems"][0] and "train_00002_aligned.jpg=9" in d["problems"][0]


def _fps_with(tmp_path, name, **fields):
    path = tmp_path / "fingerprints.json"
    fps = json.loads(Path(FINGERPRINTS).read_text())
    fps[name].update(fields)
    path.write_text(json.dumps(fps))
    return path


def test_ffhq_resized_copy_is_unverified_not_failed(tmp_path):
    """FFHQ at 256 px in a flat folder: the count is checked; the 1024-px digest cannot apply."""
    for i in range(3):
        img(tmp_path / "ffhq" / f"{i:05d}.png", seed=i)
    fps = _fps_with(tmp_path, "ffhq", count=3, digest="0" * 64)
    report = verify_datasets(tmp_path, ["ffhq"], fingerprints=fps)
    d = report["datasets"]["ffhq"]
    assert report["ok"] and d["status"] == "unverified" and d["count"] == 3
    assert any("does not use" in n for n in d["notes"])
    d = verify_datasets(tmp_path, ["ffhq"], fingerprints=_fps_with(tmp_path, "ffhq", count=4))["datasets"]["ffhq"]
    assert d["status"] == "mismatch" and "3 images, expected 4" in d["problems"]


def test_deep_decodes_in_parallel_and_names_bad_files(tmp_path):
    for i in range(70):  # over the serial threshold, so the process pool runs
        img(tmp_path / "ffhq" / f"{i:05d}.png", seed=i)
    (tmp_path / "ffhq" / "00007.png").write_bytes(b"")
    truncate(tmp_path / "ffhq" / "00042.png")
    fps = _fps_with(tmp_path, "ffhq", count=70)
    assert verify_datasets(tmp_path, ["ffhq"], fingerprints=fps)["ok"]  # shallow: sizes and names only
    report = verify_datasets(tmp_path, ["ffhq"], fingerprints=fps, deep=True, workers=2)
    d = report["datasets"]["ffhq"]
    assert not report["ok"] and d["status"] == "corrupt" and (d["decoded"], d["n_bad_images"]) == (70, 2)
    assert d["bad_images"]["00007.png"] == "zero-byte file" and d["bad_images"]["00042.png"].startswith("truncated")
    assert "70 decoded, 2 bad" in format_report(report)


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
