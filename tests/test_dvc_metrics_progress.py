"""Issue 19 items 2-3: the numbers DVC shows and progress you can follow without a terminal.

* ``summary.json`` (report stage) has a scalar leaf per protocol x method x dataset x metric, and DVC reads it
  (``dvc metrics show --json``); the curve CSVs render with the real dvc.yaml's plot definitions
  (``dvc plots show --json``); the report ends with a terminal table.
* a FER training with stderr redirected to a file logs progress lines with ETA and the validation metric.

    .venv/bin/python -m pytest tests/test_dvc_metrics_progress.py -q
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ifer.core.config import load_config
from ifer.report import tables as t
from ifer.train.logging import RunLogger

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]
METHODS, SEEDS, METRICS = ("ifer", "fer_resnet18"), (0, 1, 2), ("accuracy", "mean_class_accuracy", "macro_f1")
INV_METRICS = ("mse_256_pm1", "psnr_rgb01_dr1")


def _fer_rows():
    rows = [{"protocol": "clean", "method": m, "dataset": "synthfer", "metric": k, "seed": s,
             "value": 0.5 + 0.1 * i + 0.01 * s}
            for i, m in enumerate(METHODS) for k in METRICS for s in SEEDS]
    # one seed (a `dvc exp run -S seeds=[0]`): a mean, no interval
    rows += [{"protocol": "released", "method": "ifer", "dataset": "synthfer", "metric": "accuracy", "seed": 0,
              "value": 0.7}]
    return rows


def _inv_rows():
    return [{"method": m, "dataset": "synthfer", "metric": k, "seed": s, "value": 0.1 + s / 100}
            for m, seeds in (("asit", (0, 1)), ("mean_image_baseline", (0,))) for k in INV_METRICS for s in seeds]


def _probe_rows():
    return [{"protocol": "clean", "method": m, "dataset": "synthfer", "seed": s, "identity_probe_accuracy": 0.3,
             "identity_chance": 0.1} for m in METHODS for s in SEEDS]


def _expected_keys():
    keys = {f"clean/{m}/synthfer/{k}" for m in METHODS for k in (*METRICS, "identity_probe_accuracy")}
    keys |= {"released/ifer/synthfer/accuracy"}
    keys |= {f"inversion/{m}/synthfer/{k}" for m in ("asit", "mean_image_baseline") for k in INV_METRICS}
    return keys


def test_summary_has_a_scalar_leaf_for_every_method_and_metric():
    summary = t.summary_metrics(t.headline_rows(_fer_rows(), _inv_rows(), _probe_rows()))
    assert set(summary) == _expected_keys()
    for key, stats in summary.items():
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in stats.values()), key
    ifer = summary["clean/ifer/synthfer/accuracy"]
    assert set(ifer) == {"mean", "std", "ci_low", "ci_high", "n"} and ifer["n"] == 3
    assert ifer["mean"] == pytest.approx(0.51) and ifer["ci_low"] < ifer["mean"] < ifer["ci_high"]
    assert summary["released/ifer/synthfer/accuracy"] == {"mean": 0.7, "n": 1}  # no interval for one seed


# ---------------------------------------------------------------------------------------------- report -> DVC
def _fer_metrics():
    runs = [{"method": m, "dataset": "synthfer", "seed": s, "run_protocol": "clean", "init": "scratch",
             "selection": "val", "protocol": {"label_order": ["a", "b", "c"]},
             "test": {"per_class_accuracy": [0.5, 0.6, 0.7]},
             "identity_probe": {"identity_probe_accuracy": 0.3, "identity_chance": 0.1}}
            for m in METHODS for s in SEEDS]
    return {"runs": runs, "rows": [r for r in _fer_rows() if r["protocol"] == "clean"],
            "chance_accuracy": {"synthfer": 1 / 7}}


def _inversion_metrics():
    return {"dataset": "synthfer", "split": "test", "n_images": 10, "rows": _inv_rows()}


def _fake_logs(runs: Path):
    for m in METHODS:
        for s in SEEDS:
            log = RunLogger(runs / "tiny" / "fer" / "clean" / m / "synthfer" / f"seed{s}", progress=False)
            for e in range(3):
                log.log("epoch", epoch=e, step=4 * (e + 1), train_loss=2.0 - e / 10, val_accuracy=0.3 + e / 10 + s / 100,
                        val_mean_class_accuracy=0.3)
    for s in (0, 1):
        log = RunLogger(runs / "tiny" / "asit" / f"seed{s}", progress=False)
        for step in (25, 50, 75):
            log.log("train", step=step, loss=1.0 / step, l2=0.5 / step)
        log.log("val", step=75, loss=0.02 + s / 100, l2=0.01)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """stage_report on a miniature results folder (two methods x three seeds, two ASIT seeds) and fake run logs."""
    from ifer import stages

    work = tmp_path_factory.mktemp("dvcrepo")
    res = work / "results" / "tiny"
    res.mkdir(parents=True)
    (res / "fer_metrics.json").write_text(json.dumps(_fer_metrics()))
    (res / "inversion_metrics.json").write_text(json.dumps(_inversion_metrics()))
    _fake_logs(work / "runs")
    cfg = load_config("tiny", overrides=[f"paths.results={work / 'results'}", f"paths.runs={work / 'runs'}",
                                         f"methods=[{','.join(METHODS)}]", "asit_seeds=[0,1]"])
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        stages.stage_report(cfg)
    return work, res, out.getvalue()


def test_report_writes_the_summary_curves_and_a_terminal_table(report):
    _, res, printed = report
    summary = json.loads((res / "summary.json").read_text())
    assert set(summary) == _expected_keys() - {"released/ifer/synthfer/accuracy"}
    runs = sorted(p.name for p in (res / "curves" / "fer").glob("*.csv"))
    assert runs == sorted(f"clean_{m}_synthfer_seed{s}.csv" for m in METHODS for s in SEEDS)
    mean = (res / "curves" / "fer_mean" / "clean_ifer_synthfer.csv").read_text().splitlines()
    assert mean[0].startswith("epoch,selection_accuracy_mean,selection_accuracy_std,selection_accuracy_lo,")
    assert len(mean) == 1 + 3 and mean[1].endswith(",3")  # three epochs, three seeds each
    assert {p.name for p in (res / "curves" / "asit").glob("*.csv")} == {"seed0.csv", "seed1.csv"}
    # the end-of-run table: headline numbers (accuracy in %) and where the files are
    assert "clean" in printed and "fer_resnet18" in printed and "51 ± 1" in printed
    assert "Where the files are" in printed and str(res / "summary.json") in printed


def test_dvc_reads_the_summary_and_renders_the_curves(report):
    """`dvc metrics show` lists every summary number; `dvc plots show` renders every curve file with the plot
    definitions of the real dvc.yaml (its top-level ``plots``; the stages are left out: nothing is run)."""
    work, res, _ = report
    real = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    report_stage = real["stages"]["report"]
    assert {"results/${profile}/summary.json": {"cache": False}} in report_stage["metrics"]
    assert {"results/${profile}/curves": {"cache": False}} in report_stage["outs"]
    (work / "dvc.yaml").write_text(yaml.safe_dump({"metrics": ["results/${profile}/summary.json"],
                                                   "plots": real["plots"]}, sort_keys=False))
    (work / "params.yaml").write_text("profile: tiny\n")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q"], cwd=work, check=True, env=env)
    subprocess.run([*DVC, "init", "-q"], cwd=work, check=True, env=env)

    shown = subprocess.run([*DVC, "metrics", "show", "--json"], cwd=work, check=True, capture_output=True,
                           text=True, env=env, timeout=60)
    rev = next(iter(json.loads(shown.stdout).values()))  # the workspace ("" before the first commit)
    data = rev["data"]["results/tiny/summary.json"]["data"]
    summary = json.loads((res / "summary.json").read_text())
    assert data == summary  # every leaf is a scalar DVC keeps (it drops lists and nulls)

    plots = subprocess.run([*DVC, "plots", "show", "--json"], cwd=work, check=True, capture_output=True, text=True,
                           env=env, timeout=60)
    rendered = json.loads(plots.stdout)
    assert not rendered.get("errors"), rendered.get("errors")
    curves = sorted(str(p.relative_to(work)) for p in (res / "curves").rglob("*.csv"))
    assert curves and set(curves) <= set(rendered["data"])
    spec = rendered["data"]["results/tiny/curves/fer_mean/clean_ifer_synthfer.csv"][0]
    assert spec["type"] == "vega"
    fields = {v["field"] for v in spec["content"]["data"]["values"]}
    assert fields == {"selection_accuracy_mean", "selection_accuracy_lo", "selection_accuracy_hi"}


# ---------------------------------------------------------------------------------------------- progress
TRAIN = """
import logging, torch
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from ifer.core.config import Config
from ifer.train.fer import train_fer
from tests.toy import ToyFER, ToyImages
torch.set_num_threads(1)
torch.manual_seed(0)
recipe = Config(optimizer="adamw", momentum=0.9, epochs=2, cooldown_epochs=0, warmup_epochs=1, lr=3e-3,
                warmup_lr=1e-4, min_lr=1e-5, weight_decay=0.05, batch_size=16, clip_grad=5.0, amp=False, mixup=0.0,
                cutmix=0.0, smoothing=0.1, log_interval=5)
train_fer(ToyFER(), ToyImages(64, seed=0), ToyImages(30, seed=1), ToyImages(30, seed=2), recipe, {run!r}, seed=0)
"""


def test_training_without_a_terminal_logs_progress_lines_with_eta(tmp_path):
    run = tmp_path / "run"
    log_file = tmp_path / "stderr.log"
    env = {**os.environ, "IFER_PROGRESS_INTERVAL": "0", "OMP_NUM_THREADS": "1"}
    env.pop("IFER_PROGRESS", None)
    with open(log_file, "w") as err:  # a file: not a TTY, so no bars, lines instead
        subprocess.run([sys.executable, "-c", TRAIN.format(run=str(run))], cwd=ROOT, stderr=err, check=True,
                       env=env, timeout=120)
    text = log_file.read_text()
    assert "\r" not in text  # no tqdm bar redraws
    steps = re.findall(r"INFO ifer: train_fer \S*run epoch (\d)/2: step (\d+)/8 \(\d+%\).* loss ([\d.]+)"
                       r".* \| elapsed \d+:\d\d eta (\d+:\d\d|\?)", text)
    assert [int(s) for _, s, _, _ in steps] == list(range(1, 9))  # every step of 4 per epoch x 2, run-wide count
    assert steps[-1][3] == "0:00" and all(eta != "?" for *_, eta in steps)
    # the epoch summary: train loss, the validation metric, the best so far, ETA; the second epoch shows epoch 1's
    # accuracy in its step lines
    ends = re.findall(r"train_fer \S*run epoch (\d)/2 done: train_loss [\d.]+ val_accuracy ([\d.]+) best ([\d.]+) "
                      r"\(epoch \d\) \| elapsed \d+:\d\d eta \d+:\d\d", text)
    assert [e for e, _, _ in ends] == ["1", "2"]
    assert re.search(r"epoch 2/2: step 5/8 .*val_accuracy [\d.]+ best [\d.]+", text)
    # evaluation reports too (validation and test scoring)
    assert re.search(r"predict 30 images: batch \d+/\d+ \(\d+%\) \| elapsed .* eta ", text)
