"""Run the stale stages of ``dvc.yaml`` as independent submitit jobs, in waves of the stage DAG (issue 20).

    python -c "from ifer.launch import print_plan; print_plan('.')"         # every stale job, its wave and resources
    python -c "from ifer.launch import launch; launch('.', executor='local', parallel=2)"

Design (DVC stays the source of truth):

* The DAG and each stage's ``cmd`` come from DVC itself (``dvc.repo.Repo(root).index.graph``); stale stages from
  ``dvc status --json``. Waves are topological generations: every job of a wave is submitted, the launcher waits
  for them, then goes on. Scheduling is submitit's (SLURM or its LocalExecutor), never ours.
* Jobs run the stage's own ``cmd`` directly, not ``dvc repro -s``; after a wave the launcher records each finished
  stage with ``dvc commit -f <stage>``, one at a time. Measured with dvc 3.67.1 (two ``dvc repro -s`` of 8 s
  sleep stages started 2 s apart in one repo): both exit 0 after 9 s and 11 s and dvc.lock has both, because DVC
  releases the repo lock while a stage's command runs (``dvc/stage/run.py``: ``unlocked_repo(cmd_run)``) and
  retries a busy lock only briefly. So concurrent repro works for two short jobs, but 70 jobs hashing and writing
  dvc.lock at once on a shared file system would race for ``.dvc/tmp/lock`` and fail "Unable to acquire lock";
  serial commits by one process cannot.
* A job that fails stops the following waves (its dependants) and is reported in one line with its log path.
  Jobs are ``submitit.helpers.Checkpointable``: SLURM preemption requeues the same command, and the stages
  resume from ``last.pt`` (``ifer.stages.prepare_run_dir``). Running ``launch`` again submits only what
  ``dvc status`` still calls stale.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import submitit

# Resources per stage kind (the part of the stage name before '@'); a `launch:` mapping in the config overrides
# any key per kind (`launch.train_fer.gpus: 1`) or for all (`launch.default.partition: gpu`).
DEFAULT_RESOURCES = {
    "default": {"gpus": 0, "cpus": 2, "mem_gb": 8, "time_min": 60, "partition": None, "account": None, "sbatch": {}},
    "train_asit": {"gpus": 1, "cpus": 8, "mem_gb": 32, "time_min": 2880},
    "finetune_asit": {"gpus": 1, "cpus": 8, "mem_gb": 32, "time_min": 720},
    "invert": {"gpus": 1, "cpus": 8, "mem_gb": 32, "time_min": 240},
    "eval_inversion": {"gpus": 1, "cpus": 8, "mem_gb": 32, "time_min": 240},
    "train_fer": {"gpus": 1, "cpus": 8, "mem_gb": 32, "time_min": 720},
    "eval_fer": {"gpus": 1, "cpus": 8, "mem_gb": 32, "time_min": 240},
}


@dataclass
class Job:
    stage: str
    cmd: str
    wave: int
    resources: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.stage.split("@")[0]


def resources_for(kind: str, overrides: dict | None = None) -> dict:
    """Defaults for ``kind``, then ``overrides['default']``, then ``overrides[kind]`` (a config's ``launch:``)."""
    overrides = overrides or {}
    return {**DEFAULT_RESOURCES["default"], **DEFAULT_RESOURCES.get(kind, {}),
            **(overrides.get("default") or {}), **(overrides.get(kind) or {})}


def stale_stages(root: str | Path) -> set[str]:
    """Stage names ``dvc status --json`` reports as changed (never run, or deps/outs/params changed)."""
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    return {k.split(":")[-1] for k in json.loads(out or "{}")}


def waves(root: str | Path, only: set[str] | None = None, overrides: dict | None = None) -> list[list[Job]]:
    """The stages (``only``: those names) as topological generations of DVC's own stage graph."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges stage -> the stage it depends on
        # `name`, not `addressing`: addressing is relative to the process's cwd ("../x/dvc.yaml:a")
        stages = {s.name: s for s in graph.nodes if getattr(s, "cmd", None)}
        g = nx.DiGraph()
        g.add_nodes_from(stages)
        g.add_edges_from((b.name, a.name) for a, b in graph.edges if a.name in stages and b.name in stages)  # dependency -> dependant
        out = []
        for gen in nx.topological_generations(g):
            jobs = [Job(n, stages[n].cmd if isinstance(stages[n].cmd, str) else " && ".join(stages[n].cmd),
                        len(out), resources_for(n.split("@")[0], overrides))
                    for n in sorted(gen) if only is None or n in only]
            if jobs:
                out.append(jobs)
        return out


def plan_lines(all_waves: list[list[Job]], estimates: dict[str, float] | None = None) -> list[str]:
    """One line per job: wave, stage, resources and the estimated minutes (``unmeasured`` where none is known)."""
    estimates = estimates or {}
    lines, total, missing = [], 0.0, 0
    for jobs in all_waves:
        for j in jobs:
            r = j.resources
            est = estimates.get(j.kind)
            total += est or 0
            missing += est is None
            lines.append(f"wave {j.wave}  {j.stage:<48} gpus={r['gpus']} cpus={r['cpus']} mem={r['mem_gb']}G "
                         f"limit={r['time_min']}min  est={'unmeasured' if est is None else f'{est:.1f} min'}")
    n = sum(len(w) for w in all_waves)
    lines.append(f"total: {n} jobs in {len(all_waves)} waves; measured estimate {total:.1f} min"
                 + (f", {missing} job(s) unmeasured" if missing else ""))
    return lines


def print_plan(root: str | Path = ".", overrides: dict | None = None) -> None:
    """Print the stale jobs of ``root``'s pipeline (``python -c "from ifer.launch import print_plan; print_plan()"``)."""
    print("\n".join(plan_lines(waves(root, stale_stages(root), overrides))))


class StageJob(submitit.helpers.Checkpointable):
    """One stage's ``cmd`` in ``root``; Checkpointable: on preemption submitit requeues this same call, and the
    stage resumes from its ``last.pt``."""

    def __call__(self, root: str, cmd: str, threads: int | None = None) -> int:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the venv's python/ifer
        if threads:  # a CPU pool: split the cores between the concurrent jobs
            env["OMP_NUM_THREADS"] = str(threads)
        return subprocess.run(cmd, shell=True, cwd=root, env=env, check=True).returncode


def _executor(kind: str, folder: Path, parallel: int, res: dict):
    if kind == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=int(res["time_min"]), gpus_per_node=int(res["gpus"]))
        return ex
    ex = submitit.AutoExecutor(folder=str(folder), cluster=kind if kind != "auto" else None)
    extra = dict(res.get("sbatch") or {})
    if res.get("account"):
        extra["account"] = res["account"]
    ex.update_parameters(timeout_min=int(res["time_min"]), gpus_per_node=int(res["gpus"]),
                         cpus_per_task=int(res["cpus"]), mem_gb=int(res["mem_gb"]),
                         slurm_partition=res.get("partition"), slurm_array_parallelism=parallel,
                         slurm_additional_parameters=extra)
    return ex


def launch(root: str | Path = ".", executor: str = "local", parallel: int = 2, overrides: dict | None = None,
           log_dir: str | Path | None = None) -> int:
    """Submit every stale stage, wave by wave; ``dvc commit -f`` each finished stage; 0 when all succeeded.

        python -c "from ifer.launch import launch; raise SystemExit(launch('.', 'local', 2))"
    """
    root = Path(root).resolve()
    folder = Path(log_dir or root / "runs" / "launch").resolve()
    todo = waves(root, stale_stages(root), overrides)
    threads = max(1, (os.cpu_count() or 1) // parallel)
    for jobs in todo:
        submitted = []
        for i in range(0, len(jobs), parallel):  # at most `parallel` local jobs at a time
            batch = []
            for j in jobs[i:i + parallel]:
                ex = _executor(executor, folder, parallel, j.resources)
                ex.update_parameters(name=j.stage)
                batch.append((j, ex.submit(StageJob(), str(root), j.cmd, threads if executor == "local" else None)))
            for j, job in batch:
                try:
                    job.result()
                    submitted.append(j)
                except Exception as e:  # one line: which stage, why, where its log is
                    print(f"ifer launch: {j.stage} failed ({type(e).__name__}); log: {job.paths.stderr}",
                          file=sys.stderr)
                    _commit(root, submitted)
                    return 1
        _commit(root, submitted)
    return 0


def _commit(root: Path, jobs: list[Job]) -> None:
    """Record finished stages in dvc.lock, one process at a time (no concurrent writer of .dvc/tmp/lock)."""
    for j in jobs:
        subprocess.run([sys.executable, "-m", "dvc", "commit", "-f", "-q", j.stage], cwd=root, check=True)
