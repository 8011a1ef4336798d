"""The rehearsal's inputs: miniature datasets in the real layouts the adapters accept, weight files in the
upstream formats the strict loaders accept; and (slow) the whole paper pipeline under ``dvc repro`` (its last
three stages under ``ifer launch``).

    OMP_NUM_THREADS=1 python -m pytest tests/test_rehearsal.py -q -m "not slow"
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from ifer.data import open_dataset
from ifer.rehearsal import datasets as RD
from ifer.rehearsal.weights import FILES, write_weights

ROOT = Path(__file__).resolve().parents[1]


def _sizes(ds) -> set[tuple[int, int]]:
    return {Image.open(r.path).size for r in ds.records}


def _formats(ds) -> set[str]:
    return {Image.open(r.path).format for r in ds.records}


def _classes(ds) -> set[int]:
    return {r.label for r in ds.records}


def test_rafdb_layout_accepted(tmp_path):
    root = RD.write_rafdb(tmp_path)
    assert (root / "EmoLabel" / "list_patition_label.txt").read_text().splitlines()[0] == "train_00001.jpg 7"  # neutral
    train, test = (open_dataset("rafdb", root, s, model_selection="test") for s in ("train", "test"))
    assert (len(train), len(test)) == (14, 7)
    assert _classes(train) == _classes(test) == set(range(7))
    assert _sizes(test) == {(100, 100)} and _formats(test) == {"JPEG"}
    assert all(r.path.name.endswith("_aligned.jpg") for r in test.records)
    assert test.records[0].path.name == "test_0001_aligned.jpg"


def test_sfew_layout_accepted(tmp_path):
    root = RD.write_sfew(tmp_path)
    assert sorted(p.name for p in (root / "Train").iterdir()) == sorted(
        ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"])
    train, test = (open_dataset("sfew", root, s, model_selection="test") for s in ("train", "test"))
    assert (len(train), len(test)) == (14, 7)
    assert _classes(train) == _classes(test) == set(range(7))
    assert _sizes(train) == {RD.SFEW_FRAME} and _formats(train) == {"PNG"}


def test_affectnet_layout_accepted_with_exclusions(tmp_path):
    root = RD.write_affectnet(tmp_path)
    with open(root / "training.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == RD.AFFECTNET_COLUMNS
    assert len(rows[0]["facial_landmarks"].split(";")) == 136
    train, test = (open_dataset("affectnet", root, s, num_classes=7, model_selection="test", crop_face=True)
                   for s in ("train", "test"))
    assert (len(train), len(test)) == (14, 7)
    assert _classes(train) == _classes(test) == set(range(7))
    excluded = train.protocol["excluded"]["train"]
    assert sum(excluded.values()) == 4, excluded  # contempt + none / uncertain / non-face
    assert _formats(test) == {"JPEG"} and len(_sizes(train)) > 1  # AffectNet images vary in size
    r = test.records[0]
    assert train.load_image(0).size == (int(train.records[0].meta["face_width"]), int(train.records[0].meta["face_height"]))
    assert r.path.parent.parent.name == "Manually_Annotated_Images"
    eight = open_dataset("affectnet", root, "test", num_classes=8, model_selection="test")
    assert len(eight) == 8  # the contempt row is kept in the 8-class protocol


def test_ffhq_official_layout_at_1024(tmp_path):
    root = RD.write_ffhq(tmp_path, n=2)
    assert (root / "images1024x1024" / "00000" / "00001.png").is_file()
    ds = open_dataset("ffhq", root)
    assert len(ds) == 2 and ds.protocol["folder"].endswith("images1024x1024")
    assert _sizes(ds) == {(1024, 1024)} and _formats(ds) == {"PNG"}


def test_celebahq_test_split_from_mapping_and_partition(tmp_path):
    root = RD.write_celebahq(tmp_path, n_train=2, n_val=1, n_test=2)
    header = (root / "CelebA-HQ-to-CelebA-mapping.txt").read_text().splitlines()[0].split()
    assert header == ["idx", "orig_idx", "orig_file"]
    splits = {s: open_dataset("celebahq", root, s) for s in ("train", "val", "test", "all")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 2, "val": 1, "test": 2, "all": 5}
    assert "CelebA-HQ-to-CelebA-mapping.txt" in splits["test"].protocol["split_source"]
    assert _sizes(splits["all"]) == {(1024, 1024)} and _formats(splits["all"]) == {"JPEG"}


def test_writers_are_deterministic(tmp_path):
    a, b = RD.write_rafdb(tmp_path / "a"), RD.write_rafdb(tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_rehearsal_fingerprints_make_verify_pass_where_the_published_counts_fail(tmp_path):
    """The miniature copies can never have the published counts; their own fingerprints (``data.fingerprints``
    in the rehearsal profile) let ``verify`` check them by digest instead."""
    from ifer.data.verify import FINGERPRINTS, verify_datasets
    from ifer.rehearsal.run import rehearsal_fingerprints

    RD.write_rafdb(tmp_path)
    RD.write_sfew(tmp_path)
    assert not verify_datasets(tmp_path, ["rafdb", "sfew"])["ok"]
    fps = tmp_path / "fingerprints.json"
    fps.write_text(json.dumps(rehearsal_fingerprints(tmp_path, FINGERPRINTS)))
    report = verify_datasets(tmp_path, ["rafdb", "sfew"], fingerprints=fps)
    assert report["ok"] and {d["status"] for d in report["datasets"].values()} == {"ok"}, report
    (tmp_path / "rafdb" / "Image" / "aligned" / "test_0001_aligned.jpg").write_bytes(b"changed")
    assert verify_datasets(tmp_path, ["rafdb"], fingerprints=fps)["datasets"]["rafdb"]["status"] == "mismatch"


# ---------------------------------------------------------------------------------------------- weights
def test_stylegan2_file_is_rosinality_dict_and_loads_strictly(tmp_path):
    from ifer.core.loading import read_checkpoint
    from ifer.models.stylegan2 import load_stylegan2_checkpoint

    path = write_weights(tmp_path, names=["stylegan2_ffhq_256_rosinality"])["stylegan2_ffhq_256_rosinality"]
    assert path.name == "stylegan2-ffhq-256-550000.pt"
    ckpt = read_checkpoint(path)  # weights_only, with the argparse Namespace rosinality pickles in 'args'
    assert {"g", "d", "g_ema", "g_optim", "d_optim", "args"} <= set(ckpt) and "latent_avg" not in ckpt
    assert load_stylegan2_checkpoint(path).size == 256
    load_stylegan2_checkpoint(path, size=256, key="d")
    assert not torch.equal(ckpt["g"]["style.1.weight"], ckpt["g_ema"]["style.1.weight"])


def test_face_embedder_files_load_strictly(tmp_path):
    from ifer.metrics.embedders import get_embedder

    paths = write_weights(tmp_path, names=["arcface_ir_se50", "curricularface_ir101"])
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    for name, path in paths.items():
        assert path.name == FILES[name]
        emb = get_embedder(name, path).embed(x)
        assert emb.shape == (2, 512) and torch.isfinite(emb).all()
    with pytest.raises(Exception, match="does not fit"):  # the files are not interchangeable
        get_embedder("curricularface_ir101", paths["arcface_ir_se50"])


def test_alexnet_file_fits_lpips_trunk_but_fails_the_published_hash(tmp_path):
    """A random AlexNet cannot carry torchvision's sha256 prefix: the check must fire unless skipped explicitly."""
    from ifer.core.weights import check_sha256
    from ifer.metrics.lpips import load_alexnet_into_lpips

    path = write_weights(tmp_path, names=["torchvision_alexnet"])["torchvision_alexnet"]
    import lpips

    model = lpips.LPIPS(pretrained=True, net="alex", version="0.1", pnet_rand=True, verbose=False)
    load_alexnet_into_lpips(model, path, verify_hash=False)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(model.net.slice1[0].weight, sd["features.0.weight"])
    with pytest.raises(ValueError, match="7be5be79"):
        check_sha256(path, "7be5be79")


def test_clip_file_loads_in_the_ke2nt_text_encoder(tmp_path):
    """The paper's KE2NT reads OpenAI's ``ViT-B-16.pt`` through open_clip; the rehearsal had no such file, so every
    ``ke2nt`` stage of the paper profile stopped (issue 10). The random file has OpenAI's keys and loads."""
    from ifer.models.text_encoders import build_text_encoder

    path = write_weights(tmp_path, names=["clip_vit_b16"])["clip_vit_b16"]
    assert path.name == "ViT-B-16.pt"
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert {"visual.conv1.weight", "token_embedding.weight", "text_projection", "logit_scale"} <= set(sd)
    assert sd["token_embedding.weight"].dtype == torch.float16  # OpenAI releases fp16 weights
    enc = build_text_encoder("clip_vit_b16", weights_path=path)
    emb = enc.encode(["a photo of a happy face", "a photo of a sad face"])
    assert emb.shape == (2, 512) and torch.isfinite(emb).all() and not torch.allclose(emb[0], emb[1])
    assert enc.logit_scale == pytest.approx(100.0, rel=1e-3)


def test_resnet18_imagenet_file_initialises_fer_resnet18_strictly(tmp_path):
    """``paper`` starts fer_resnet18 from torchvision's ImageNet file; the rehearsal must write one in that format."""
    from ifer.models.registry import create_model

    path = write_weights(tmp_path, names=["torchvision_resnet18_imagenet"])["torchvision_resnet18_imagenet"]
    assert path.name == "resnet18-f37072fd.pth"
    sd = torch.load(path, map_location="cpu", weights_only=True)
    from ifer.core.weights import WeightsHashError, set_skip_sha256

    kw = dict(num_classes=7, known_weights="torchvision_resnet18_imagenet", pretrained_path=path)
    with pytest.raises(WeightsHashError, match="f37072fd"):  # a random file fails the published prefix ...
        create_model("fer_resnet18", **kw)
    set_skip_sha256(["torchvision_resnet18_imagenet"])  # ... unless skipped explicitly, as rehearse.yaml does
    try:
        model = create_model("fer_resnet18", **kw)
    finally:
        set_skip_sha256([])
    assert torch.equal(model.backbone.conv1.weight, sd["conv1.weight"])


@pytest.mark.slow  # 17-33 s measured on 2 shared cores (Inception init + FID on CPU)
def test_fid_inception_file_loads_in_torchmetrics(tmp_path):
    from ifer.metrics.inversion import evaluate_tensors

    path = write_weights(tmp_path, names=["fid_inception_v3"])["fid_inception_v3"]
    assert path.name == "weights-inception-2015-12-05-6726825d.pth"
    out = evaluate_tensors(torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1, metrics=["fid"],
                           inception_weights=path)
    fid = out["summary"]["fid_inception2048_tf1bilinear_uint8"]
    assert isinstance(fid, float), fid


# ---------------------------------------------------------------------------------------------- whole run
def _report_fixture(results: Path, protocols=("clean", "released"), lpips=0.3):
    results.mkdir(parents=True)
    rows = [{"protocol": p, "method": m, "dataset": d, "metric": "accuracy", "seed": 0, "value": 0.5}
            for p in protocols for m in ("ifer", "ke2nt") for d in ("rafdb", "sfew")]
    (results / "fer_metrics.json").write_text(json.dumps({"rows": rows}))
    lines = ["method,dataset,metric,clean_mean,released_mean,delta_released_minus_clean"]
    lines += [f"{m},{d},accuracy,0.5,{'0.6' if 'released' in protocols else ''},{'0.1' if 'released' in protocols else ''}"
              for m in ("ifer", "ke2nt") for d in ("rafdb", "sfew")]
    (results / "fer_comparison.csv").write_text("\n".join(lines) + "\n")
    inv = {"lpips_alex": lpips, "id_sim_curricularface_ir101": 0.1, "fid_inception2048_tf1bilinear_uint8": 300.0}
    (results / "inversion_metrics.json").write_text(json.dumps({"methods": {"asit": inv}}))
    datasets = ("rafdb", "sfew")
    size = {"ifer": 224, "ke2nt": 112}
    runs = [{"protocol": p, "method": m, "dataset": d, "transfer": {o: {} for o in datasets if o != d},
             "corruptions": {"input_size": size[m]}}
            for p in protocols for m in ("ifer", "ke2nt") for d in datasets]
    (results / "analysis_metrics.json").write_text(json.dumps(
        {"protocols_analysed": list(protocols), "runs": runs, "cost": {"ifer": {}, "ke2nt": {}},
         "protocols": {"corruption_parameters": {"112": {}, "224": {}}}}))
    for name in ("fer_cost.md", "fer_calibration.md", "fer_corruptions.md", "fer_transfer.md"):
        (results / name).write_text("| table |\n")


def test_report_check_names_a_missing_protocol_row_and_a_non_numeric_metric(tmp_path):
    """The rehearsal's final check (issue 10: a row per method x dataset, LPIPS/ID/FID numbers; issue 13: both
    protocols with their delta) passes on a complete report and names what is missing otherwise."""
    from ifer.rehearsal.run import check_report

    _report_fixture(tmp_path / "ok")
    assert check_report(tmp_path / "ok", ["ifer", "ke2nt"], ["rafdb", "sfew"], ["clean", "released"]) == []
    _report_fixture(tmp_path / "bad", protocols=("clean",), lpips=float("nan"))
    problems = check_report(tmp_path / "bad", ["ifer", "ke2nt"], ["rafdb", "sfew"], ["clean", "released"])
    assert "fer_metrics.json has no row for released x ifer x rafdb" in problems
    assert "fer_comparison.csv: ke2nt x sfew has no released estimate" in problems
    assert any("lpips_alex = nan is not a number" in p for p in problems)
    # the analyses beyond accuracy: a run that does not transfer to every other dataset is named
    _edit_json(tmp_path / "ok" / "analysis_metrics.json", lambda a: a["runs"][0].update(transfer={}))
    (tmp_path / "ok" / "fer_transfer.md").unlink()
    problems = check_report(tmp_path / "ok", ["ifer", "ke2nt"], ["rafdb", "sfew"], ["clean", "released"])
    assert "fer_transfer.md was not written" in problems
    assert any("clean x ifer x rafdb transfers to [], not to every other dataset" in p for p in problems)
    # corruption parameters stated at one size only (the mislabel of KE2NT's 112-px blur) are named
    _edit_json(tmp_path / "ok" / "analysis_metrics.json",
               lambda a: a["protocols"].update(corruption_parameters={"224": {}}))
    problems = check_report(tmp_path / "ok", ["ifer", "ke2nt"], ["rafdb", "sfew"], ["clean", "released"])
    assert any("ke2nt was corrupted at 112 px, but corruption_parameters states sizes ['224']" in p for p in problems)


def test_stage_times_come_from_dvc_repro_and_from_ifer_launch_lines(tmp_path):
    """The rehearsal runs its head under `dvc repro` and eval_fer/analyze_fer/report under `ifer launch`: each
    stage's time comes from the "Running stage" lines (the time to the next) or from launch's per-job "done in"
    lines; a stage both ran (fingerprint_inputs, always_changed) keeps both times; a failing command raises with
    its last lines and the log path."""
    import sys

    from ifer.rehearsal.run import RehearsalError, _run_logged

    script = ("import sys, time\n"
              "print(\"Running stage 'a':\", flush=True); time.sleep(0.3)\n"
              "print(\"Running stage 'b@1':\", flush=True); time.sleep(0.1)\n"
              "print('ifer launch: c done in 12.5 s', file=sys.stderr)\n"
              "print('ifer launch: a done in 2.0 s', file=sys.stderr)\n"
              "print('ifer launch: 2 job(s) in 1 wave(s) done in 15 s; dvc status is clean', file=sys.stderr)\n")
    stages, lines = {}, []
    with open(tmp_path / "log.txt", "w") as log:
        _run_logged([sys.executable, "-c", script], tmp_path, dict(os.environ), log, stages, lines.append, tmp_path)
    assert list(stages) == ["a", "c", "a (again, ifer launch)", "b@1"]
    assert stages["a"] >= 0.3 and stages["c"] == 12.5 and stages["a (again, ifer launch)"] == 2.0
    assert "ifer launch: c done in 12.5 s" in (tmp_path / "log.txt").read_text()
    with open(tmp_path / "log2.txt", "w") as log, pytest.raises(RehearsalError, match="exit 3.*\n.*boom"):
        _run_logged([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], tmp_path, dict(os.environ), log,
                    {}, lines.append, tmp_path)


def _edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.slow
@pytest.mark.rehearsal  # in the test command (nox -s tests runs it on one xdist worker beside the rest)
def test_rehearsal_runs_the_paper_pipeline_end_to_end(tmp_path, record_property):
    """Every dvc stage of the paper profile (lengths shortened) finishes on the rehearsal inputs under both
    protocols; the report has a clean and a released estimate and their delta for every method x dataset, and
    numeric LPIPS, ID similarity and FID (``run`` raises otherwise, naming what is missing). The wall time of
    each stage goes into the JUnit file (property ``rehearsal_stage_s``), where ``tools/profile_run.py`` puts it
    in the test command's profile: the rehearsal is its long pole."""
    import yaml

    from ifer.core.config import load_config
    from ifer.rehearsal.run import PROFILE_LAYER, run

    lines: list[str] = []
    summary = run(tmp_path / "scratch", repo=ROOT, log=lines.append)
    record_property("rehearsal_stage_s", json.dumps({k: round(v, 1) for k, v in summary["stages"].items()}))
    stages = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    ran = {s.split("@")[0] for s in summary["stages"]}
    assert stages <= ran, stages - ran
    cfg = load_config("paper", files=[ROOT / PROFILE_LAYER])
    assert list(cfg.protocols) == ["clean", "released"]
    expected = {f"train_fer@{p}-{m}-{d}-{s}" for p in cfg.protocols for m in cfg.methods
                for d in cfg.data.fer.datasets for s in cfg.seeds}
    assert expected <= set(summary["stages"]), expected - set(summary["stages"])
    assert "finetune_asit@0" in summary["stages"]
    assert any(t.endswith("fer_comparison.md") for t in summary["tables"])
    assert any(t.endswith("inversion_comparison.md") for t in summary["tables"])
    assert lines[-1].startswith("rehearsal passed")
    shutil.rmtree(tmp_path / "scratch")  # ~15 GB of full-size checkpoints; a failed run keeps them to inspect


def test_official_layout_files_load_as_the_authors_released_kinds(tmp_path):
    """The rehearsal's stand-ins for the authors' RAF-DB IFER and FFHQ ASIT files: recognised by kind, loaded
    strictly as_released (IFER: the file's args leave mean/std/crop/interpolation unset, so each is an assumption;
    ASIT: no opts['quirks'], so the authors' code), with the tiny members so the test is fast."""
    from ifer.core.config import load_config
    from ifer.core.loading import read_checkpoint
    from ifer.eval.released import DEFAULT_CLASS_FOLDERS, checkpoint_kind, load_released_asit, load_released_ifer
    from ifer.rehearsal.weights import OFFICIAL_FILES, write_official_checkpoints

    paths = write_official_checkpoints(tmp_path, ifer_model="ifer_tiny", asit_model="asit_tiny", latent_samples=64)
    assert {k: p.relative_to(tmp_path).as_posix() for k, p in paths.items()} == OFFICIAL_FILES
    cfg = load_config("tiny")
    ifer_ckpt, asit_ckpt = read_checkpoint(paths["ifer"]), read_checkpoint(paths["asit"])
    assert checkpoint_kind(ifer_ckpt, paths["ifer"]) == "ifer" and checkpoint_kind(asit_ckpt, paths["asit"]) == "asit"
    head = load_released_ifer(cfg, paths["ifer"], ifer_ckpt, DEFAULT_CLASS_FOLDERS)
    assert head.choices["mode"] == "as_released"
    assert {a.split(":")[0] for a in head.choices["assumptions"]} == {"mean", "std", "crop_pct", "interpolation"}
    net = load_released_asit(cfg, paths["asit"], asit_ckpt)
    assert net.choices["mode"] == "as_released" and "records none" in net.choices["quirks_source"]
    assert net.choices["preprocessing"]["size_source"] == "opts['output_size']"
