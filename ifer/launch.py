"""Run the stale stages of ``dvc.yaml`` as independent submitit jobs, in waves of the stage DAG (issue 20).

    ifer plan                                   # every stale job: wave, resources, measured time and disk
    ifer launch --executor local --parallel 2   # a local pool (one GPU per job where there are GPUs)
    ifer launch --executor slurm launch.default.partition=gpu   # SLURM through submitit

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

# Resources per stage kind (the part of the stage name before '@'); the config's `launch.resources` mapping
# overrides any key per kind (`launch.resources.train_fer.gpus: 2`) or for all (`launch.resources.default.partition:
# gpu`). GPU sizes: one GPU per run (the paper's runs each fit one 80 GB GPU); time limits are generous
# placeholders until GPU timings are measured (results/benchmarks/, `ifer plan` says "unmeasured").
DEFAULT_RESOURCES = {
    "default": {"gpus": 0, "cpus": 2, "mem_gb": 8, "time_min": 60, "partition": None, "account": None, "sbatch": {},
                "nodes": 1},
    "train_asit": {"gpus": 1, "cpus": 8, "mem_gb": 32, "time_min": 2880},
    "finetune_asit": {"gpus": 1, "cpus": 8, "mem_gb": 32, "time_min": 720},
    "invert": {"gpus": 1, "cpus": 8, "mem_gb": 32, "time_min": 240},
    "eval_inversion": {"gpus": 1, "cpus": 8, "mem_gb": 32, "time_min": 240},
    "train_fer": {"gpus": 1, "cpus": 8, "mem_gb": 32, "time_min": 720},
    "eval_fer": {"gpus": 1, "cpus": 8, "mem_gb": 32, "time_min": 240},
    "analyze_fer": {"gpus": 1, "cpus": 8, "mem_gb": 32, "time_min": 480},
}


# the stage kinds whose commands run under torchrun (ifer.cli's distributed verbs): with launcher.nnodes = N they
# need N nodes (every node runs the command; torchrun's c10d rendezvous joins them)
TORCHRUN_KINDS = ("train_asit", "finetune_asit", "train_fer", "invert", "eval_inversion", "eval_fer")


def with_nodes(resources: dict | None, nnodes: int, kinds: list[str] | tuple[str, ...] = TORCHRUN_KINDS) -> dict:
    """``launch.resources`` with ``nodes: nnodes`` for each of ``kinds`` (``launcher.multinode_verbs``) that does
    not set its own."""
    out = {k: dict(v or {}) for k, v in (resources or {}).items()}
    if nnodes > 1:
        for kind in kinds:
            out.setdefault(kind, {}).setdefault("nodes", nnodes)
    return out


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
    from ifer.core.config import ConfigError

    overrides = overrides or {}
    for name, layer in overrides.items():
        unknown = set(layer or {}) - set(DEFAULT_RESOURCES["default"])
        if unknown:
            raise ConfigError(f"launch.resources.{name}: unknown resource key(s) {sorted(unknown)}; known: "
                              f"{sorted(DEFAULT_RESOURCES['default'])}")
    return {**DEFAULT_RESOURCES["default"], **DEFAULT_RESOURCES.get(kind, {}),
            **(overrides.get("default") or {}), **(overrides.get(kind) or {})}


def stale_stages(root: str | Path) -> set[str]:
    """Stage names ``dvc status --json`` reports as changed (never run, or deps/outs/params changed)."""
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    return {k.split(":")[-1] for k in json.loads(out or "{}")}


def waves(root: str | Path, only: set[str] | None = None, overrides: dict | None = None,
          downstream: bool = False) -> list[list[Job]]:
    """The stages (``only``: those names; ``downstream``: and every stage that depends on one of them) as
    topological generations of DVC's own stage graph.

    ``downstream`` is what may run: ``dvc status`` reports a stage's *own* changed inputs, so a stage whose
    upstream is about to rerun is not stale yet (``ifer launch`` asks again before each wave)."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges stage -> the stage it depends on
        # `name`, not `addressing`: addressing is relative to the process's cwd ("../x/dvc.yaml:a")
        stages = {s.name: s for s in graph.nodes if getattr(s, "cmd", None)}
        g = nx.DiGraph()
        g.add_nodes_from(stages)
        g.add_edges_from((b.name, a.name) for a, b in graph.edges if a.name in stages and b.name in stages)  # dependency -> dependant
        if only is not None and downstream:
            only = set(only) | {d for n in only if n in g for d in nx.descendants(g, n)}
        out = []
        for gen in nx.topological_generations(g):
            jobs = [Job(n, stages[n].cmd if isinstance(stages[n].cmd, str) else " && ".join(stages[n].cmd),
                        len(out), resources_for(n.split("@")[0], overrides))
                    for n in sorted(gen) if only is None or n in only]
            if jobs:
                out.append(jobs)
        return out


def _pipeline(root: str | Path) -> tuple[set[str], set[str]]:
    """(every stage name of dvc.yaml, those marked ``always_changed``)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = [s for s in repo.index.stages if getattr(s, "cmd", None)]
        return {s.name for s in stages}, {s.name for s in stages if getattr(s, "always_changed", False)}


def estimates(root: str | Path, profile: str, kernel_key: str | None = None) -> dict:
    """Measured minutes and output bytes per stage *kind* for ``profile``, from ``results/benchmarks/``.

    Time: the median stage time of that kind in a ``profile-main-job-*.json`` whose ``profile`` is ``profile``
    (older files: "<profile> profile" in their ``what``), preferring one measured with this ``kernel_key``, else
    the newest by name. Disk: the median output size of that kind in ``stage-outputs-<profile>.json`` (sizes that
    ``dvc.lock`` recorded). ``{"time": {kind: (minutes, source)}, "disk": {kind: (bytes, source)}}`` plus the same per stage name
    (``time_stage``, ``disk_stage``: ``plan_lines`` prefers those, a seed's IFER outputs are not a baseline's); a
    kind with no measurement is absent (the plan says "unmeasured": a CPU ``tiny`` time says nothing about a GPU ``paper`` run).
    """
    import statistics

    bench = Path(root) / "results" / "benchmarks"
    found = []
    for f in sorted(bench.glob("profile-main-job-*.json")):
        d = json.loads(f.read_text())
        if d.get("profile") == profile or f"{profile} profile" in str(d.get("what", "")):
            found.append((d.get("machine", {}).get("kernel_key") == kernel_key, f.name, d))
    out = {"time": {}, "disk": {}}
    if found:
        _, name, d = max(found, key=lambda t: (t[0], t[1]))
        by_kind: dict[str, list[float]] = {}
        for stage, secs in d.get("stages", {}).items():
            by_kind.setdefault(stage.split("@")[0], []).append(float(secs))
        cpu = d.get("machine", {}).get("cpu", "?")
        out["time"] = {k: (statistics.median(v) / 60, f"{name} ({cpu})") for k, v in by_kind.items()}
        out["time_stage"] = {k: (float(v) / 60, f"{name} ({cpu})") for k, v in d.get("stages", {}).items()}
    disk = bench / f"stage-outputs-{profile}.json"
    if disk.exists():
        by_kind = {}
        sizes = json.loads(disk.read_text()).get("bytes", {})
        for stage, size in sizes.items():
            by_kind.setdefault(stage.split("@")[0], []).append(float(size))
        out["disk"] = {k: (statistics.median(v), disk.name) for k, v in by_kind.items()}
        out["disk_stage"] = {k: (float(v), disk.name) for k, v in sizes.items()}
    return out


def stage_output_sizes(root: str | Path) -> dict[str, int]:
    """Bytes of each stage's outputs as ``dvc.lock`` recorded them (the measured disk figures ``ifer plan`` reads from
    ``results/benchmarks/stage-outputs-<profile>.json``)::

        python -c "import json, ifer.launch as L; print(json.dumps(L.stage_output_sizes('.'), indent=1))"
    """
    import yaml

    lock = yaml.safe_load((Path(root) / "dvc.lock").read_text()) or {}
    current = {j.stage for jobs in waves(root) for j in jobs}  # dvc.lock keeps entries of stages since renamed
    return {name: sum(int(o.get("size", 0)) for o in st.get("outs", []))
            for name, st in (lock.get("stages") or {}).items() if name in current}


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def plan_lines(all_waves: list[list[Job]], est: dict | None = None) -> list[str]:
    """One line per job: wave, stage, resources, estimated time and disk (``unmeasured`` where nothing was
    measured), then the total: job-minutes (the serial sum) and the critical path (the sum of each wave's
    longest job: the wall time with enough GPUs), both over measured jobs only."""
    est = est or {}
    times, disks = est.get("time", {}), est.get("disk", {})
    t_stage, d_stage = est.get("time_stage", {}), est.get("disk_stage", {})
    lines, total, path, disk, missing_t, missing_d, sources = [], 0.0, 0.0, 0.0, 0, 0, set()
    for jobs in all_waves:
        longest = 0.0
        for j in jobs:
            r = j.resources
            t, d = t_stage.get(j.stage, times.get(j.kind)), d_stage.get(j.stage, disks.get(j.kind))
            total += t[0] if t else 0
            longest = max(longest, t[0] if t else 0)
            disk += d[0] if d else 0
            missing_t += t is None
            missing_d += d is None
            sources |= {x[1] for x in (t, d) if x}
            nodes = f"nodes={r['nodes']} " if int(r.get("nodes", 1)) > 1 else ""
            lines.append(f"wave {j.wave}  {j.stage:<48} {nodes}gpus={r['gpus']} cpus={r['cpus']} mem={r['mem_gb']}G "
                         f"limit={r['time_min']}min  time={'unmeasured' if t is None else f'{t[0]:.1f} min'}  "
                         f"disk={'unmeasured' if d is None else _size(d[0])}")
        path += longest
    n = sum(len(w) for w in all_waves)
    lines.append(f"total: {n} jobs in {len(all_waves)} waves; measured: {total:.1f} job-min, critical path "
                 f"{path:.1f} min, disk {_size(disk)}"
                 + ("; unmeasured: " + ", ".join(x for x in (f"time of {missing_t} job(s)" if missing_t else "",
                                                             f"disk of {missing_d} job(s)" if missing_d else "") if x)
                    if missing_t or missing_d else ""))
    lines.append("estimates from: " + (", ".join(sorted(sources)) if sources else
                                       "nothing measured for this profile (results/benchmarks/)"))
    return lines


def plan(root: str | Path = ".", overrides: dict | None = None, profile: str = "tiny",
         every_stage: bool = False) -> list[str]:
    """The plan ``ifer plan`` prints: the stale jobs (``every_stage``: all of them) with their estimates."""
    from ifer.core.machine import machine_info

    only = None if every_stage else stale_stages(root)  # and their dependants: they rerun when an input changes
    return plan_lines(waves(root, only, overrides, downstream=True),
                      estimates(root, profile, machine_info().get("kernel_key")))


def print_plan(root: str | Path = ".", overrides: dict | None = None, profile: str = "tiny") -> None:
    """Print the stale jobs of ``root``'s pipeline (``ifer plan``)."""
    print("\n".join(plan(root, overrides, profile)))


class _Watch:
    """When did a job end? submitit asks ``sacct``; a SLURM without an accounting database (a small cluster, the
    one-node SLURM of the tests) has no ``sacct``, and submitit would never see a job end that left no result
    file, and logs a warning at every poll. There a job has ended when its result file exists, or when ``squeue``
    no longer lists it (then without a result: it was cancelled or lost, and is resubmitted like a killed one)."""

    def __init__(self, local: bool):
        self.sacct = local or subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True).returncode == 0
        self._gone: set[str] = set()
        self._first: dict[str, float] = {}
        self._listed: set[str] = set()
        self._asked = 0.0
        if not self.sacct:
            print("ifer launch: sacct cannot answer (no SLURM accounting): a job's end is read from its result file "
                  "and from squeue", file=sys.stderr)

    def done(self, job) -> bool:
        if self.sacct:
            return job.done()
        if job.paths.result_pickle.exists():
            return True
        import time

        jid = str(job.job_id)
        first = self._first.setdefault(jid, time.monotonic())  # after its sbatch returned
        if time.monotonic() - self._asked > 10:  # squeue at most every 10 s
            p = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
            if p.returncode == 0:  # a controller that does not answer says nothing about the jobs
                self._asked, self._listed = time.monotonic(), set(p.stdout.split())
        if self._asked > first and jid not in self._listed:  # a listing taken after the submission lacks it
            if job.paths.result_pickle.exists():  # written just before the job left the queue
                return True
            self._gone.add(jid)
            return True
        return False

    def vanished(self, job) -> bool:
        return str(job.job_id) in self._gone and not job.paths.result_pickle.exists()


class InFlight:
    """``runs/launch/inflight.json``: the jobs a launcher has submitted and not yet seen end (stage -> executor, job
    id). A launcher that dies leaves its SLURM jobs (and local job processes) running; the next ``ifer launch`` must
    not submit the same stages again beside them, so it first asks whether they still run."""

    def __init__(self, path: Path):
        self.path = path

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _write(self, d: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(d, indent=1))
        os.replace(tmp, self.path)

    def add(self, stage: str, executor: str, job_id: str) -> None:
        self._write({**self._read(), stage: [executor, job_id]})

    def remove(self, stage: str) -> None:
        d = self._read()
        d.pop(stage, None)
        self._write(d)

    def alive(self) -> dict[str, str]:
        """{stage: job id} of the recorded jobs that still run (squeue for SLURM, the pid for local jobs)."""
        alive = {}
        for stage, (kind, jid) in self._read().items():
            if kind == "local":
                try:
                    os.kill(int(jid), 0)
                    alive[stage] = jid
                except (OSError, ValueError):
                    pass
            else:
                try:
                    out = subprocess.run(["squeue", "-h", "-j", jid, "-o", "%i"], capture_output=True, text=True,
                                         timeout=60).stdout
                except (OSError, subprocess.TimeoutExpired):
                    out = jid  # cannot ask SLURM: assume it runs rather than start a second copy
                if out.strip():
                    alive[stage] = jid
        return alive


class Preempted(RuntimeError):
    """The stage's command died from a signal (SIGTERM/SIGKILL: preemption, a node lost, ``kill``): resubmitted."""


class StageJob(submitit.helpers.Checkpointable):
    """One stage's ``cmd`` in ``root``; Checkpointable: on SLURM preemption or timeout submitit requeues this same
    call, and the stage resumes from its ``last.pt`` (``ifer.stages.prepare_run_dir``)."""

    def __call__(self, root: str, cmd: str, threads: int | None = None) -> int:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the venv's python/ifer
        if threads:  # a CPU pool: split the cores between the concurrent jobs
            env["OMP_NUM_THREADS"] = str(threads)
        rc = subprocess.run(cmd, shell=True, cwd=root, env=env).returncode
        if rc < 0 or rc in (128 + 9, 128 + 15):  # killed by a signal (directly, or reported by the shell)
            raise Preempted(f"killed by signal {-rc if rc < 0 else rc - 128}")
        if rc:
            raise subprocess.CalledProcessError(rc, cmd)
        return rc


def _executor(kind: str, folder: Path, parallel: int, res: dict, gpu_ids: list[int] | None = None):
    if kind == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        # visible_gpus: submitit's LocalExecutor sets CUDA_VISIBLE_DEVICES to these (without it every job gets 0)
        ex.update_parameters(timeout_min=int(res["time_min"]), gpus_per_node=len(gpu_ids or []),
                             visible_gpus=list(gpu_ids or []))
        return ex
    ex = submitit.AutoExecutor(folder=str(folder), cluster=kind if kind != "auto" else None)
    extra = dict(res.get("sbatch") or {})
    if res.get("account"):
        extra["account"] = res["account"]
    ex.update_parameters(timeout_min=int(res["time_min"]), gpus_per_node=int(res["gpus"]),
                         nodes=int(res.get("nodes", 1)), tasks_per_node=1,  # one stage command per node
                         cpus_per_task=int(res["cpus"]), mem_gb=int(res["mem_gb"]),
                         slurm_partition=res.get("partition"), slurm_additional_parameters=extra)
    return ex


def local_gpus() -> list[int]:
    """GPU ids a local pool may hand out: ``CUDA_VISIBLE_DEVICES`` if set, else every GPU torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [int(x) for x in env.split(",") if x.strip().isdigit()]
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:  # no torch / no driver: a CPU pool
        return []


def launch(root: str | Path = ".", executor: str = "local", parallel: int = 2, overrides: dict | None = None,
           log_dir: str | Path | None = None, retries: int = 2, gpus: list[int] | None = None,
           poll_s: float = 1.0) -> int:
    """Submit every stale stage, wave by wave; ``dvc commit -f`` each finished stage; 0 when all succeeded.

        ifer launch --executor local --parallel 2        # CPU pool, or one GPU per job where GPUs exist
        ifer launch --executor slurm                     # SLURM through submitit (resources: the launch: section)

    ``local``: at most ``parallel`` jobs at once; with GPUs (``gpus``, default :func:`local_gpus`) each job gets its
    own ``CUDA_VISIBLE_DEVICES`` (``resources.gpus`` of them) and ``parallel`` is capped by the GPUs; without, the
    cores are split between the jobs (OMP_NUM_THREADS). ``slurm``/``auto``: a wave's jobs are submitted at once and
    SLURM schedules them. A job killed by a signal is resubmitted up to ``retries`` times (it resumes from
    ``last.pt``); any other failure is reported in one line with its log path, the wave's other jobs finish and
    are recorded, and the later waves (its dependants) are not started: exit 1. Run again to continue: only what
    ``dvc status`` still calls stale is submitted.
    """
    import time

    t0 = time.monotonic()
    root = Path(root).resolve()
    folder = Path(log_dir or root / "runs" / "launch").resolve() / "%j"
    inflight = InFlight(root / "runs" / "launch" / "inflight.json")
    still = inflight.alive()
    if still:  # an earlier launcher died while these ran: a second copy would write the same run folders
        print(f"ifer launch: {len(still)} job(s) of an earlier launch still run ({', '.join(sorted(still))}): wait "
              f"for them or cancel them (scancel / kill {' '.join(sorted(set(still.values())))}), then run "
              "`ifer launch` again", file=sys.stderr)
        return 1
    # what may run: the stale stages and their dependants; before each wave `dvc status` says which of that wave
    # really are stale now that the waves before it have run (a rerun upstream whose outputs changed makes its
    # dependants stale; one whose outputs came out the same does not), as `dvc repro` decides stage by stage
    todo = waves(root, stale_stages(root), overrides, downstream=True)
    local = executor == "local"
    watch = _Watch(local or not todo)
    pool = list(gpus) if gpus is not None else (local_gpus() if local else [])
    failed = []
    ran = 0
    started: dict[str, float] = {}  # stage -> when its (latest) job was submitted: the per-job line's wall time
    for k, jobs in enumerate(todo):
        if k:
            now = stale_stages(root)
            jobs = [j for j in jobs if j.stage in now]
        ran += len(jobs)
        pending = [(j, 0) for j in jobs]
        running = []  # (job, attempt, submitit job, gpu ids)
        free = list(pool)
        cap = parallel if local else len(jobs)
        while pending or running:
            while pending and len(running) < cap:
                j, attempt = pending[0]
                if local and int(j.resources.get("nodes", 1)) > 1:
                    failed.append(f"ifer launch: {j.stage} needs {j.resources['nodes']} nodes: use --executor slurm "
                                  "(or launcher.nnodes=1 on one machine)")
                    print(failed[-1], file=sys.stderr)
                    pending.pop(0)
                    continue
                need = int(j.resources["gpus"]) if (local and pool) else 0
                if need > len(free):
                    if not running:  # can never fit
                        failed.append(f"ifer launch: {j.stage} needs {need} GPUs, the pool has {len(pool)}")
                        print(failed[-1], file=sys.stderr)
                        pending.pop(0)
                        continue
                    break
                pending.pop(0)
                ids, free = free[:need], free[need:]
                # threads: a CPU pool splits the cores between its jobs; on SLURM a job uses the CPUs it asked for
                # (without a bound torch starts one thread per core of the node: 6-8x slower when oversubscribed)
                threads = ((max(1, (os.cpu_count() or 1) // min(cap, len(jobs))) if not need else None) if local
                           else int(j.resources["cpus"]))
                ex = _executor(executor, folder, parallel, j.resources, ids)
                ex.update_parameters(name=j.stage)
                try:
                    running.append((j, attempt, ex.submit(StageJob(), str(root), j.cmd, threads), ids))
                    started[j.stage] = time.monotonic()
                    inflight.add(j.stage, executor, str(running[-1][2].job_id))
                except (submitit.core.utils.FailedJobError, OSError) as e:  # sbatch refused it / is missing
                    free += ids
                    first = next((ln for ln in str(e).splitlines() if "fatal" in ln or "error" in ln),
                                 str(e).splitlines()[0] if str(e) else type(e).__name__)
                    failed.append(f"ifer launch: {j.stage} could not be submitted: {first.strip()}")
                    print(failed[-1], file=sys.stderr)
            time.sleep(poll_s)
            for item in [r for r in running if watch.done(r[2])]:
                running.remove(item)
                j, attempt, sj, ids = item
                inflight.remove(j.stage)
                free += ids
                try:
                    if watch.vanished(sj):  # gone from squeue without a result: cancelled, or its node lost
                        raise submitit.core.utils.UncompletedJobError(f"job {sj.job_id} left SLURM without a result")
                    sj.result()
                    _commit(root, [j])  # at once: a crash of the launcher later loses no finished stage
                    # one line per finished job, so a long launch is not silent in its log (and the rehearsal
                    # reads each stage's wall time from it: ifer.rehearsal.run)
                    print(f"ifer launch: {j.stage} done in {time.monotonic() - started[j.stage]:.1f} s",
                          file=sys.stderr)
                except Exception as e:
                    killed = isinstance(e, submitit.core.utils.UncompletedJobError) or "Preempted" in str(e)
                    if killed and attempt < retries:
                        print(f"ifer launch: {j.stage} was killed; resubmitting (attempt {attempt + 2}, it resumes "
                              f"from last.pt); log: {sj.paths.stderr}", file=sys.stderr)
                        pending.insert(0, (j, attempt + 1))
                    else:
                        failed.append(f"ifer launch: {j.stage} failed ({type(e).__name__}"
                                      f"{', killed' if killed else ''}); log: {sj.paths.stderr}")
                        print(failed[-1], file=sys.stderr)
        if failed:
            later = sum(len(w) for w in todo[k + 1:])
            print(f"ifer launch: {len(failed)} job(s) failed; {later} dependent job(s) not started; "
                  "fix the cause and run `ifer launch` again (finished stages are recorded)", file=sys.stderr)
            return 1
    # always_changed stages (fingerprint_inputs) are stale by definition, and `dvc repro` reruns them every time
    # (cheap; their outputs come out the same); .dvc files (datasets.dvc) are data, not stages
    names, always = _pipeline(root)
    left = (stale_stages(root) & names) - always
    dry = subprocess.run([sys.executable, "-m", "dvc", "repro", "--dry"], cwd=root, capture_output=True,
                         text=True).stdout
    would = [n for n in (ln.split("'")[1] for ln in dry.splitlines() if ln.startswith("Running stage '"))
             if n not in always]
    if left or would:
        print(f"ifer launch: every job finished, but dvc status calls {sorted(left)} stale and `dvc repro` would run "
              f"{would}: dvc.lock does not record them", file=sys.stderr)
        return 1
    print(f"ifer launch: {ran} job(s) in {len(todo)} wave(s) done in {time.monotonic() - t0:.0f} s; dvc status is "
          "clean and `dvc repro` has nothing to run", file=sys.stderr)
    return 0


def _commit(root: Path, jobs: list[Job]) -> None:
    """Record finished stages in dvc.lock, one process at a time (no concurrent writer of .dvc/tmp/lock)."""
    for j in jobs:
        subprocess.run([sys.executable, "-m", "dvc", "commit", "-f", "-q", j.stage], cwd=root, check=True)
