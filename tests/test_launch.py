"""``ifer.launch`` on a toy DVC pipeline (a -> {b, c}): waves, plan, a local submitit pool, DVC clean afterwards.

    .venv/bin/python -m pytest tests/test_launch.py -q
"""
import os
import shutil
import subprocess
import sys

import pytest

from ifer.launch import launch, plan_lines, resources_for, stale_stages, waves

DVC_YAML = """stages:
  a: {cmd: sleep 1 && echo a > a.txt, outs: [a.txt]}
  b: {cmd: sleep 1 && cat a.txt > b.txt, deps: [a.txt], outs: [b.txt]}
  c: {cmd: sleep 1 && cat a.txt > c.txt, deps: [a.txt], outs: [c.txt]}
"""


@pytest.fixture()
def toy(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git missing")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    return tmp_path


def test_waves_and_plan(toy):
    w = waves(toy, stale_stages(toy))
    assert [[j.stage for j in jobs] for jobs in w] == [["a"], ["b", "c"]]
    lines = plan_lines(w)
    assert "unmeasured" in lines[0] and lines[-1].startswith("total: 3 jobs in 2 waves")


def test_resources_layer():
    r = resources_for("train_fer", {"default": {"partition": "gpu"}, "train_fer": {"time_min": 5}})
    assert (r["gpus"], r["partition"], r["time_min"]) == (1, "gpu", 5)


def test_local_pool_then_dvc_clean(toy):
    assert launch(toy, "local", parallel=2) == 0
    assert stale_stages(toy) == set()
    assert launch(toy, "local", parallel=2) == 0  # nothing stale: nothing submitted
    assert (toy / "b.txt").read_text() == "a\n"


def test_failed_job_is_reported(toy, capsys):
    (toy / "dvc.yaml").write_text(DVC_YAML.replace("sleep 1 && echo a > a.txt", "exit 3"))
    assert launch(toy, "local", parallel=2) == 1
    assert "a failed" in capsys.readouterr().err
    assert not os.path.exists(toy / "b.txt")
