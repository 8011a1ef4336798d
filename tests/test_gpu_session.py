"""The prepared GPU session script (``benchmark/gpu_session.py``), checked here on the CPU so it works the first
time a GPU is lent::

    .venv/bin/python -m pytest tests/test_gpu_session.py -q
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from benchmark.gpu_session import STEP_MODELS, main, missing_methods, pipeline_commands
from ifer.cli import build_parser
from ifer.core.config import load_config, save_resolved
from ifer.launch import waves

ROOT = Path(__file__).resolve().parents[1]


def test_steps_part_measures_every_model_and_writes_as_it_goes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # fvcore's MAC cache (results/gmacs_per_image.json) goes here, not into the repo
    assert main(["--out", str(tmp_path / "out"), "--smoke", "--device", "cpu", "--parts", "steps"]) == 0
    data = json.loads((tmp_path / "out" / "gpu-train-steps-cpu.json").read_text())
    assert data["machine"]["torch"] == __import__("torch").__version__
    rows = data["rows"]
    assert [(r["model"], r["precision"]) for r in rows] == [(m, "bf16") for m, _, _ in STEP_MODELS["smoke"]]
    for r in rows:
        assert r["loss_finite"] and r["images_per_s"] > 0 and r["step_ms_min"] <= r["step_ms_median"] <= r["step_ms_max"]
        assert r["iters"] == 2 and r["train_tflops_achieved"] > 0  # fvcore counted the model's MACs


def test_pipeline_is_the_dvc_stage_graph_and_every_call_parses(tmp_path):
    """The pipeline part runs the tiny stages without DVC: its stage names must be exactly dvc.yaml's for the
    tiny params (verify_datasets aside: it checks real datasets; the GPU run only times), in an order that
    respects DVC's waves, and every command must parse with the real CLI."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    save_resolved(load_config("tiny", [], []), tmp_path / "params.yaml")
    wave_of = {j.stage: i for i, jobs in enumerate(waves(tmp_path)) for j in jobs}
    cmds = pipeline_commands()
    names = [n for n, _ in cmds if n != "config" and not n.startswith("torchrun")]
    assert set(names) == set(wave_of) - {"verify_datasets"}
    order = [wave_of[n] for n in names]
    assert order == sorted(order), list(zip(names, order))
    parser = build_parser()
    for name, cmd in cmds:
        i = cmd.index("ifer.cli")
        args = parser.parse_args(cmd[i + 1:])
        assert args.verb == cmd[i + 1], name
    torchrun = cmds[-1][1]
    assert "--nproc_per_node=1" in torchrun and "--no-resume" in torchrun


def test_a_method_whose_package_cannot_travel_is_left_out_and_said():
    cmds = dict(pipeline_commands(skip=("ke2nt_minilm",)))
    assert not any("ke2nt_minilm" in n for n in cmds)
    assert any(n.startswith("train_fer@clean-ifer-") for n in cmds)
    assert cmds["config"][-1] == "methods=[ifer,fer_resnet18,disentangled]"
    assert missing_methods(["ifer", "ke2nt_minilm"]) == {}  # installed here (a declared dependency)
