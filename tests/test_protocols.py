"""Two protocols, ``clean`` and ``released``, side by side: config overlays, keyed outputs, the DVC stages each
profile resolves to, the ASIT fine-tune of the released protocol, and the one report table with its delta::

    .venv/bin/python -m pytest tests/test_protocols.py -q
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ifer.cli import main
from ifer.core.config import ConfigError, load_config, save_resolved, with_protocol
from tests.toy import tiny_synthfer

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def test_overlays_apply_and_outputs_are_keyed_by_protocol():
    from ifer import stages

    paper = load_config("paper")
    assert paper.protocols == ["clean", "released"] and paper.finetune_seeds == [0]
    released, clean = with_protocol(paper, "released"), with_protocol(paper, "clean")
    assert released.protocol == "released" and clean.protocol == "clean"
    # released: the authors' run. as_released everywhere, IFER from the fine-tune, test selection, fp16 AMP
    assert released.asit.mode == released.ifer.mode == "as_released"
    assert released.ifer.init == "asit_finetune" and released.data.fer.model_selection == "test"
    assert released.fer_methods.ifer.train.amp is True and released.fer_methods.ifer.train.amp_dtype == "float16"
    # baselines: only the selection changes (no quirks, their own precision)
    assert released.fer_methods.fer_resnet18.train == paper.fer_methods.fer_resnet18.train
    # clean: as described, selection on a val split carved from train
    assert clean.asit.mode == clean.ifer.mode == "as_described" and clean.ifer.init == "asit"
    assert clean.data.fer.model_selection == "val" and clean.fer_methods.ifer.train.amp_dtype == "bfloat16"
    assert paper.protocol is None and paper.ifer.mode == "as_described"  # the base config is left untouched
    # outputs keyed by protocol
    a, b = (stages.fer_run_dir(c, "ifer", "rafdb", 0) for c in (clean, released))
    assert a == Path("runs/paper/fer/clean/ifer/rafdb/seed0") and b == Path("runs/paper/fer/released/ifer/rafdb/seed0")
    assert stages.ifer_init_checkpoint(clean) == Path("runs/paper/asit/seed0/asit_best.pt")
    assert stages.ifer_init_checkpoint(released) == Path("runs/paper/asit/finetune/seed0/asit_best.pt")
    assert stages.init_label(released, "ifer") == "asit_rafdb_finetune" and stages.init_label(clean, "ifer") == "asit"
    # the released fine-tune: the README's rafdb_encode (20k steps, 400 held-out train images)
    assert paper.asit_finetune.dataset == "rafdb" and paper.asit_finetune.holdout == 400
    assert paper.asit_finetune.train.steps == 20000
    tiny = load_config("tiny")
    assert tiny.protocols == ["clean"] and tiny.finetune_seeds == []
    # `ifer verify` (stage verify_datasets) checks the fine-tune's data only when the released protocol runs
    from ifer.data.verify import required_by

    assert "rafdb" not in required_by(tiny)
    assert "rafdb" in required_by(load_config("tiny", overrides=["protocols=[clean, released]"]))
    # a test-only transfer dataset is read too (SynthFER variants are generated, not verified as real data)
    assert "ferplus" in required_by(load_config("tiny", overrides=["analysis.transfer_datasets=[synthfer_shift, ferplus]"]))
    assert "ferplus" not in required_by(tiny)


def test_released_ifer_model_runs_the_released_quirks():
    from ifer import stages

    cfg = load_config("tiny", overrides=["protocol_overrides.released.ifer.init=scratch",
                                         "protocol_overrides.clean.ifer.init=scratch"])
    model = stages.build_fer_model(with_protocol(cfg, "released"), "ifer", 7)
    assert model.quirks_mode == "as_released"  # the trainer's quirks: ImageNet-length LR schedule
    assert model.feature_model.quirks.global_query_batch_tiling  # the encoder's own GC ViT quirks
    clean = stages.build_fer_model(with_protocol(cfg, "clean"), "ifer", 7)
    assert clean.quirks_mode == "as_described" and not clean.feature_model.quirks.global_query_batch_tiling


def _one_error_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_unknown_or_stale_protocol_settings_are_one_line(tmp_path, capsys):
    line = _one_error_line(capsys, ["config", "protocols=[clean, paperish]"])
    assert line == ("ifer config: error: ConfigError: protocols: unknown protocol 'paperish'; "
                    "known: ['clean', 'released']")
    line = _one_error_line(capsys, ["train-fer", "--protocol", "relased", "device=cpu"])
    assert line == "ifer train-fer: error: ConfigError: unknown protocol 'relased'; known: ['clean', 'released']"
    with pytest.raises(ConfigError, match="unknown protocol 'x'"):
        with_protocol(load_config("tiny"), "x")
    # params.yaml edited by hand after `ifer config`: its finetune_seeds (DVC's matrix) no longer fit
    params = tmp_path / "params.yaml"
    save_resolved(load_config("tiny"), params)
    params.write_text(params.read_text().replace("- clean\n", "- clean\n- released\n", 1))
    line = _one_error_line(capsys, ["config", "--params", str(params)])
    assert f"{params}: finetune_seeds [] does not match protocols ['clean', 'released']" in line
    assert "rewrite it with `ifer config`" in line


def _dvc_stages(tmp_path, profile: str) -> list[str]:
    work = tmp_path / profile
    work.mkdir()
    shutil.copy(ROOT / "dvc.yaml", work / "dvc.yaml")
    save_resolved(load_config(profile), work / "params.yaml")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=work, check=True)
    out = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=work, check=True,
                         capture_output=True, text=True).stdout
    return out.split()


def test_dvc_resolves_both_protocols_for_paper_and_clean_only_for_tiny(tmp_path):
    paper = _dvc_stages(tmp_path, "paper")
    assert "finetune_asit@0" in paper
    fer = [s for s in paper if s.startswith("train_fer@")]
    assert len(fer) == 2 * 4 * 3 * 3  # protocols x methods x datasets x seeds
    assert {"train_fer@clean-ifer-rafdb-0", "train_fer@released-ifer-rafdb-0",
            "train_fer@released-fer_resnet18-affectnet7-2"} <= set(fer)
    assert paper.index("train_asit@0") < paper.index("finetune_asit@0") < paper.index("fer_init")
    tiny = _dvc_stages(tmp_path, "tiny")
    assert not any(s.startswith("finetune_asit") for s in tiny)  # an empty matrix: no stage at all
    assert [s for s in tiny if s.startswith("train_fer@")][0] == "train_fer@clean-ifer-synthfer-0"
    assert not any("released" in s for s in tiny)


# ---------------------------------------------------------------------------------------------- report
def _rows(protocol, method, values, metric="accuracy"):
    return [{"protocol": protocol, "method": method, "dataset": "synthfer", "metric": metric, "seed": s, "value": v}
            for s, v in enumerate(values)]


def test_report_merges_two_protocols_into_one_table_with_the_delta():
    from ifer.report import tables as t

    rows = (_rows("clean", "ifer", [0.80, 0.82, 0.84]) + _rows("released", "ifer", [0.86, 0.88, 0.90])
            + _rows("clean", "fer_resnet18", [0.70, 0.71, 0.72]) + _rows("released", "fer_resnet18", [0.73]))
    init = {("clean", "ifer"): "asit", ("released", "ifer"): "asit_rafdb_finetune",
            ("clean", "fer_resnet18"): "imagenet", ("released", "fer_resnet18"): "imagenet"}
    table = t.protocol_comparison(rows, {"accuracy": 1.0}, init)
    ifer = table[table.method == "ifer"].iloc[0]
    assert ifer.clean_mean == pytest.approx(82.0) and ifer.released_mean == pytest.approx(88.0)
    assert ifer.clean_std == pytest.approx(2.0) and ifer.clean_n_seeds == 3 and ifer.released_n_seeds == 3
    assert ifer.delta_released_minus_clean == pytest.approx(6.0)
    assert ifer.init == "clean: asit; released: asit_rafdb_finetune"
    base = table[table.method == "fer_resnet18"].iloc[0]
    assert base.init == "imagenet" and base.delta_released_minus_clean == pytest.approx(2.0)
    md = t.protocol_markdown(table, "FER", configured=["clean", "released"])
    assert "| paper | clean: mean ± std [95% Student-t interval over seeds] (n seeds) | released: mean ± std" in md
    assert "| released − clean | verdict (vs paper) |" in md
    assert "| ifer | clean: asit; released: asit_rafdb_finetune | synthfer | accuracy | — | 82 ± 2 [77.03, 86.97] (n=3) " \
           "| 88 ± 2 [83.03, 92.97] (n=3) | +6 |" in md
    assert "| fer_resnet18 | imagenet | synthfer | accuracy | — | 71 ± 1 [68.52, 73.48] (n=3) | 73 (n=1, no interval) | +2 |" in md
    assert "mixes two effects" in md and "selecting the epoch on the test split" in md
    assert "Baselines (every method but IFER) run under both protocols" in md
    # tiny: one protocol, no delta column, and the table says why
    clean_only = t.protocol_comparison([r for r in rows if r["protocol"] == "clean"], {}, init)
    assert "delta_released_minus_clean" not in clean_only.columns
    md = t.protocol_markdown(clean_only, "FER", configured=["clean"])
    assert "released − clean |" not in md.splitlines()[2] and "runs the clean protocol only" in md


def test_summaries_never_merge_the_seeds_of_two_protocols():
    """``summarise`` (also used by the paper-level checks) keeps each protocol's seeds apart."""
    from ifer.report.tables import summarise

    rows = _rows("clean", "ifer", [0.80, 0.82]) + _rows("released", "ifer", [0.90, 0.92])
    rows += [{k: v for k, v in r.items() if k != "protocol"} for r in _rows("x", "knn", [0.5])]  # unnamed: clean
    got = {(r["protocol"], r["method"]): (r["mean"], r["n_seeds"]) for r in summarise(rows).to_dict("records")}
    assert got == {("clean", "ifer"): (pytest.approx(0.81), 2), ("released", "ifer"): (pytest.approx(0.91), 2),
                   ("clean", "knn"): (0.5, 1)}


@pytest.fixture(scope="module")
def synthfer(tmp_path_factory):
    return tiny_synthfer(tmp_path_factory, n_train_identities=2)


def test_released_weights_row_lands_in_the_report(synthfer, tmp_path, capsys):
    """`ifer eval-checkpoint` on an official-format IFER file (random values) -> results/<profile>/released/ ->
    a "released weights" row of the FER table, in the released column, beside the suite's clean runs."""
    from ifer.eval.released import DEFAULT_CLASS_FOLDERS, head_order
    from ifer.models.registry import create_model
    from ifer.report import tables as t
    from tests.test_released_checkpoints import _save_official_ifer

    torch.manual_seed(0)
    path = _save_official_ifer(create_model("ifer_tiny", num_classes=7).eval(), head_order(DEFAULT_CLASS_FOLDERS),
                               tmp_path / "ifer_rafdb.pth.tar")
    over = [f"data.synthfer.out={synthfer}", f"paths.results={tmp_path / 'results'}", "eval.batch_size=7", "device=cpu"]
    assert main(["eval-checkpoint", str(path), *over, "--dataset", "synthfer"]) == 0
    capsys.readouterr()
    released = t.released_weight_rows(tmp_path / "results" / "tiny" / "released")
    assert released["asit"] == [] and {r["method"] for r in released["ifer"]} == {"ifer (released weights)"}
    clean = [{**r, "protocol": "clean", "method": "ifer", "value": 0.5} for r in released["ifer"]]
    init = {("clean", "ifer"): "asit", ("released", "ifer (released weights)"): t.RELEASED_WEIGHTS_INIT}
    table = t.protocol_comparison(clean + released["ifer"], {}, init)
    md = t.protocol_markdown(table, "FER", configured=["clean"])
    row = next(line for line in md.splitlines() if line.startswith("| ifer (released weights) | official checkpoint "
                                                                   "| synthfer | accuracy |"))
    acc = 100 * next(r["value"] for r in released["ifer"] if r["metric"] == "accuracy")
    assert row.split(" | ")[5] == "—" and row.split(" | ")[6] == f"{acc:.4g} (n=1, no interval)"  # released column


def test_finetune_stage_starts_from_asit_and_holds_out_a_recorded_draw(synthfer, tmp_path, monkeypatch):
    """The released protocol's ASIT fine-tune on a miniature (SynthFER train minus 6 held-out images, 2 steps):
    it starts from the trained ASIT file, records the seeded held-out draw, runs as_released, resumes after a kill
    to the weights of an uninterrupted run, and fer_init points released IFER at its output while clean IFER
    keeps the plain ASIT file."""
    from ifer import stages
    from ifer.models.registry import create_model
    from ifer.train.distributed import DistInfo

    monkeypatch.chdir(tmp_path)
    overrides = [
        f"data.synthfer.out={synthfer}", "device=cpu", "seeds=[0]", "asit_seeds=[0]", "protocols=[clean, released]",
        "methods=[ifer]", "asit.latent_avg_samples=64", "asit_finetune.dataset=synthfer", "asit_finetune.holdout=6",
        "asit_finetune.train={steps: 2, batch_size: 4, log_interval: 1, val_interval: 1, save_interval: 1}"]
    cfg = load_config("tiny", overrides=overrides)
    torch.manual_seed(0)
    net = create_model("asit_tiny")
    net.init_latent_avg(64, seed=0)
    source = stages.asit_dir(cfg, 0) / "asit_best.pt"
    source.parent.mkdir(parents=True)
    net.save_checkpoint(source)
    stages.stage_fingerprint_inputs(cfg)
    # killed after one step (persist: true keeps last.pt), then rerun: it resumes like train_asit
    assert stages.stage_finetune_asit(cfg, DistInfo(), stop_after_steps=1) is None
    summary = stages.stage_finetune_asit(cfg, DistInfo())
    assert summary["steps"] == 2 and len(summary["history"]) == 2
    out = stages.finetune_dir(cfg, 0)
    assert [json.loads(line)["kind"] for line in (out / "log.jsonl").read_text().splitlines()].count("resume") == 1
    held = json.loads((out / "holdout.json").read_text())
    assert held["n_holdout"] == 6 and held["n_train"] == 14 - 6 and len(set(held["holdout"])) == 6
    assert held["init"] == str(source) and held["seed"] == 0
    from ifer.data.build import finetune_datasets

    assert finetune_datasets(cfg, 0)[2] == held["holdout"]  # the draw is a function of the seed alone
    assert finetune_datasets(cfg, 1)[2] != held["holdout"]
    # finished: the resume state and the trainer's best.pt (the same weights as asit_best.pt) are dropped
    assert not any((out / f).exists() for f in ("last.pt", "prev.pt", "best.pt")), sorted(os.listdir(out))
    tuned = torch.load(out / "asit_best.pt", weights_only=True)
    assert tuned["opts"]["finetune_of"] == str(source) and tuned["opts"]["quirks"]["mode"] == "as_released"
    before = torch.load(source, weights_only=True)["state_dict"]
    assert any(not torch.equal(before[k], v) for k, v in tuned["state_dict"].items() if k.startswith("encoder."))
    # an uninterrupted fine-tune elsewhere ends with the same weights
    other = load_config("tiny", overrides=[*overrides, "paths.runs=runs_other"])
    stages.asit_dir(other, 0).mkdir(parents=True)
    shutil.copy(source, stages.asit_dir(other, 0) / "asit_best.pt")
    stages.stage_fingerprint_inputs(other)
    stages.stage_finetune_asit(other, DistInfo())
    again = torch.load(stages.finetune_dir(other, 0) / "asit_best.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(again[k], v) for k, v in tuned["state_dict"].items())
    written = stages.stage_fer_init(cfg)
    rel, cln = (json.loads(written[f"{p}/ifer_seed0"].read_text()) for p in ("released", "clean"))
    assert rel["init"] == "asit_synthfer_finetune" and rel["checkpoint"]["path"] == str(out / "asit_best.pt")
    assert cln["init"] == "asit" and cln["checkpoint"]["path"] == str(source)
    assert len(rel["checkpoint"]["sha256"]) == 64 and rel["checkpoint"]["sha256"] != cln["checkpoint"]["sha256"]


def test_finetune_starts_from_the_authors_released_asit_when_given(synthfer, tmp_path, monkeypatch):
    """``released`` means what the authors ran: they fine-tuned their released FFHQ ASIT. With
    ``asit_finetune.init`` naming such a file (official layout, argparse opts), the fine-tune starts from it, its
    sha256 is an input (fingerprint_inputs) and the init label says so; a missing file is one line naming the key."""
    import argparse

    from ifer import stages
    from ifer.models.registry import create_model
    from ifer.train.distributed import DistInfo

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(1)
    authors = create_model("asit_tiny")
    authors.init_latent_avg(64, seed=1)
    official = tmp_path / "weights" / "asit_ffhq_released.pt"
    official.parent.mkdir()
    torch.save({"state_dict": authors.state_dict(), "latent_avg": authors.latent_avg,
                "opts": argparse.Namespace(dataset_type="ffhq_encode", output_size=64)}, official)
    overrides = [
        f"data.synthfer.out={synthfer}", "device=cpu", "seeds=[0]", "asit_seeds=[0]", "protocols=[clean, released]",
        "methods=[ifer]", "asit.latent_avg_samples=64", "asit_finetune.dataset=synthfer", "asit_finetune.holdout=6",
        f"asit_finetune.init={official}",
        "asit_finetune.train={steps: 1, batch_size: 4, log_interval: 1, val_interval: 1, save_interval: 1}"]
    cfg = load_config("tiny", overrides=overrides)
    assert stages.finetune_source(cfg) == official
    assert stages.init_label(with_protocol(cfg, "released"), "ifer") == "released_asit_synthfer_finetune"
    inputs = json.loads(stages.stage_fingerprint_inputs(cfg)["asit_finetune"].read_text())
    assert inputs["init"]["path"] == str(official) and len(inputs["init"]["sha256"]) == 64
    stages.stage_finetune_asit(cfg, DistInfo())
    out = stages.finetune_dir(cfg, 0)
    held = json.loads((out / "holdout.json").read_text())
    assert held["init"] == str(official)
    assert torch.load(out / "asit_best.pt", weights_only=True)["opts"]["finetune_of"] == str(official)
    missing = load_config("tiny", overrides=[*overrides, "asit_finetune.init=weights/absent.pt"])
    with pytest.raises(FileNotFoundError, match=r"weights/absent.pt: asit_finetune.init names no file"):
        stages.stage_finetune_asit(missing, DistInfo())
