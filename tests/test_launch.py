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
    assert "unmeasured" in lines[0] and lines[-2].startswith("total: 3 jobs in 2 waves")


def test_resources_layer():
    r = resources_for("train_fer", {"default": {"partition": "gpu"}, "train_fer": {"time_min": 5}})
    assert (r["gpus"], r["partition"], r["time_min"]) == (1, "gpu", 5)


def test_local_pool_then_dvc_clean(toy, capsys):
    assert launch(toy, "local", parallel=2) == 0
    assert stale_stages(toy) == set()
    # one line per finished job with its wall time (each toy stage sleeps 1 s): a long launch is not silent
    done = {ln.split()[2]: float(ln.split()[5]) for ln in capsys.readouterr().err.splitlines()
            if ln.startswith("ifer launch: ") and ln.endswith(" s") and " job(s) " not in ln}
    assert set(done) == {"a", "b", "c"} and all(1.0 <= t < 60 for t in done.values()), done
    assert launch(toy, "local", parallel=2) == 0  # nothing stale: nothing submitted
    assert (toy / "b.txt").read_text() == "a\n"


def test_failed_job_is_reported(toy, capsys):
    (toy / "dvc.yaml").write_text(DVC_YAML.replace("sleep 1 && echo a > a.txt", "exit 3"))
    assert launch(toy, "local", parallel=2) == 1
    assert "a failed" in capsys.readouterr().err
    assert not os.path.exists(toy / "b.txt")


def test_dependants_of_a_rerun_stage_whose_output_changed_run_too(toy):
    """`dvc status` names a stage whose *own* inputs changed; b and c become stale only once a has rerun with a new
    output, so launch asks again before each wave (as `dvc repro` does), else dvc.lock ends inconsistent."""
    assert launch(toy, "local", parallel=2) == 0
    (toy / "dvc.yaml").write_text(DVC_YAML.replace("echo a > a.txt", "echo a2 > a.txt"))
    assert stale_stages(toy) == {"a"}
    assert launch(toy, "local", parallel=2) == 0
    assert (toy / "b.txt").read_text() == (toy / "c.txt").read_text() == "a2\n" and stale_stages(toy) == set()


def test_each_local_job_gets_its_own_gpus(toy):
    """A local pool hands each job its own CUDA_VISIBLE_DEVICES (submitit's visible_gpus), never all of them 0."""
    (toy / "dvc.yaml").write_text(DVC_YAML.replace("cat a.txt > b.txt", "echo $CUDA_VISIBLE_DEVICES > b.txt")
                                  .replace("cat a.txt > c.txt", "echo $CUDA_VISIBLE_DEVICES > c.txt"))
    assert launch(toy, "local", parallel=2, overrides={"default": {"gpus": 1}}, gpus=[3, 5]) == 0
    got = {(toy / f).read_text().strip() for f in ("b.txt", "c.txt")}
    assert got == {"3", "5"}, got  # both wave-1 jobs ran at once, one GPU each


def test_a_killed_job_is_resubmitted_and_dvc_is_clean(toy, capsys):
    """SIGKILL of a stage's command (a preemption, an OOM kill) is resubmitted; the rerun finishes the stage (the
    real stages resume from last.pt: tests/test_dvc_resume.py) and dvc.lock records it."""
    kill_once = "'if test -f killed_once; then echo a > a.txt; else touch killed_once; kill -9 $$; fi'"
    (toy / "dvc.yaml").write_text(DVC_YAML.replace("sleep 1 && echo a > a.txt", kill_once))
    assert launch(toy, "local", parallel=2, retries=1) == 0
    assert "a was killed; resubmitting" in capsys.readouterr().err
    assert stale_stages(toy) == set() and (toy / "c.txt").read_text() == "a\n"


def test_a_job_killed_every_time_fails_after_its_retries(toy, capsys):
    (toy / "dvc.yaml").write_text(DVC_YAML.replace("sleep 1 && echo a > a.txt", "'kill -9 $$'"))
    assert launch(toy, "local", parallel=2, retries=1) == 1
    err = capsys.readouterr().err
    assert err.count("a was killed; resubmitting") == 1 and "a failed" in err and "2 dependent job(s) not started" in err


def test_plan_verb_uses_measured_estimates(toy, capsys):
    """`ifer plan` reads params.yaml's launch section and the measured times/sizes of the same profile."""
    import json

    from ifer import cli

    (toy / "params.yaml").write_text("profile: tiny\nlaunch: {resources: {b: {time_min: 7}}}\n")
    bench = toy / "results" / "benchmarks"
    bench.mkdir(parents=True)
    (bench / "profile-main-job-test.json").write_text(json.dumps(
        {"profile": "tiny", "stages": {"a": 60, "b": 120, "c": 240}, "machine": {"cpu": "test cpu"}}))
    (bench / "profile-main-job-other.json").write_text(json.dumps({"profile": "paper", "stages": {"a": 9999}}))
    (bench / "stage-outputs-tiny.json").write_text(json.dumps({"bytes": {"a": 2048, "b": 1024}}))
    assert cli.main(["plan", "--root", str(toy)]) == 0
    out = capsys.readouterr().out.splitlines()
    line = {ln.split()[2]: ln for ln in out if ln.startswith("wave ")}
    assert "time=1.0 min" in line["a"] and "disk=2.0 KB" in line["a"]
    assert "limit=7min" in line["b"] and "time=2.0 min" in line["b"] and "disk=1.0 KB" in line["b"]
    assert "disk=unmeasured" in line["c"]
    assert out[-2].startswith("total: 3 jobs in 2 waves; measured: 7.0 job-min, critical path 5.0 min, disk 3.0 KB")
    assert "unmeasured: time of 0" not in out[-2] and "disk of 1 job(s)" in out[-2]
    assert "profile-main-job-test.json (test cpu)" in out[-1]
    assert cli.main(["plan", "--root", str(toy), "--profile", "paper"]) == 2  # params.yaml is tiny: one clear line
    assert "params.yaml is profile 'tiny'" in capsys.readouterr().err


def test_unknown_resource_key_is_one_clear_error():
    from ifer.core.config import ConfigError

    with pytest.raises(ConfigError, match="unknown resource key"):
        resources_for("train_fer", {"train_fer": {"gpu": 1}})


def test_a_rerun_after_the_launcher_died_waits_for_its_orphaned_jobs(toy, capsys):
    """A launcher that dies leaves its jobs running; the next `ifer launch` must not start the same stages beside
    them (two writers of one run folder). A job recorded in inflight.json that still runs blocks, one that ended
    does not."""
    import json

    state = toy / "runs" / "launch" / "inflight.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"a": ["local", str(os.getpid())]}))  # this process: alive
    assert launch(toy, "local", parallel=2) == 1
    assert "1 job(s) of an earlier launch still run (a)" in capsys.readouterr().err
    dead = subprocess.Popen(["true"])
    dead.wait()
    state.write_text(json.dumps({"a": ["local", str(dead.pid)]}))
    assert launch(toy, "local", parallel=2) == 0 and stale_stages(toy) == set()
    assert json.loads(state.read_text()) == {}


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node SLURM on this machine (tools/slurm_single_node.sh installs slurm-wlm + munge with apt when root),
    on other ports than the regression session's. Where it cannot start, the test is skipped saying why."""
    d = tmp_path_factory.mktemp("slurm")
    script = os.path.join(ROOT, "tools", "slurm_single_node.sh")
    env = {**os.environ, "IFER_SLURMCTLD_PORT": "6917", "IFER_SLURMD_PORT": "6918"}
    p = subprocess.run(["bash", script, "start", str(d)], capture_output=True, text=True, env=env, timeout=900)
    if p.returncode != 0:
        pytest.skip((p.stderr.strip().splitlines() or [f"slurm_single_node.sh exited {p.returncode}"])[-1])
    yield str(d / "slurm.conf")
    subprocess.run(["bash", script, "stop", str(d)])


@pytest.mark.slow
def test_slurm_jobs_killed_or_cancelled_are_resubmitted_and_dvc_is_clean(toy, slurm, capsys, monkeypatch):
    """On a real (one-node) SLURM: stage a SIGKILLs its own command once (the OOM killer, a scheduler's kill);
    stage b's whole job is cancelled once with `scancel -s KILL` (no result file: the launcher learns it from
    squeue). Both are resubmitted, every stage ends recorded, dvc status is clean."""
    import threading
    import time

    monkeypatch.setenv("SLURM_CONF", slurm)
    kill_once = "'if test -f killed_once; then echo a > a.txt; else touch killed_once; kill -9 $$; fi'"
    cancel_once = "'if test -f b_started; then cat a.txt > b.txt; else touch b_started; sleep 120; fi'"
    (toy / "dvc.yaml").write_text(DVC_YAML.replace("sleep 1 && echo a > a.txt", kill_once)
                                  .replace("sleep 1 && cat a.txt > b.txt", cancel_once))

    def cancel_b():
        for _ in range(600):
            if (toy / "b_started").exists():
                subprocess.run(["scancel", "-s", "KILL", "-n", "b"], env={**os.environ, "SLURM_CONF": slurm})
                return
            time.sleep(0.2)

    t = threading.Thread(target=cancel_b, daemon=True)
    t.start()
    res = {"default": {"gpus": 0, "cpus": 1, "mem_gb": 1, "time_min": 10}}
    assert launch(toy, "slurm", parallel=2, overrides=res, retries=1, poll_s=0.5) == 0
    err = capsys.readouterr().err
    assert "a was killed; resubmitting" in err and "b was killed; resubmitting" in err
    assert "sacct cannot answer" in err  # this SLURM has no accounting database: squeue is asked instead
    assert stale_stages(toy) == set() and (toy / "b.txt").read_text() == "a\n"
