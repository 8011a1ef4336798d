"""Sessions: ``nox -l`` lists them; ``nox --usage <name>`` shows one's full help.

All sessions share one project environment, ``.venv`` (created and refreshed here when pyproject.toml
changes), instead of one environment per session: the CUDA build of torch alone is several GB.

    nox -s reproduce                 # the main job: `dvc repro` of the tiny profile on SynthFER
    nox -s reproduce -- paper        # the published protocol (needs the real datasets and weights)
    nox -s tests                     # the test suite (CPU; GPU tests skip without CUDA)
    nox -s bench                     # pytest-benchmark throughput + paper-level checks
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "none"

ROOT = Path(__file__).parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
# torch comes first and pinned: 2.14.1 / 0.29.1 are the releases this project is tested with.
TORCH_SPEC = os.environ.get("IFER_TORCH_SPEC", "torch==2.14.1 torchvision==0.29.1").split()


def _ensure_env(session: nox.Session) -> None:
    """Create .venv once; reinstall the project only when pyproject.toml (or the torch spec) changed."""
    stamp = VENV / ".ifer-install-stamp"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + " ".join(TORCH_SPEC).encode()).hexdigest()
    if stamp.is_file() and stamp.read_text() == want and PY.is_file():
        return
    if not PY.is_file():
        session.run(sys.executable, "-m", "venv", str(VENV), external=True)
    pip = [str(PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    session.run(*pip, "--upgrade", "pip", external=True)
    session.run(*pip, *TORCH_SPEC, external=True)
    session.run(*pip, "-e", ".[dev]", external=True)
    stamp.write_text(want)


def _env() -> dict[str, str]:
    return {"PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONHASHSEED": "0"}


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (unit, integration, DDP-on-CPU). Extra args go to pytest, e.g. `-- -m "not slow"`."""
    _ensure_env(session)
    # Two xdist workers with one thread each: the paper rehearsal (~12 min of mostly serial stage start-up, I/O and
    # DVC work; conftest.py schedules it first) runs on one while the rest of the suite runs on the other, instead
    # of one after the other. One thread per worker: two 2-thread workers on 2 cores oversubscribe them.
    # --durations and the JUnit file are the per-test profile (tools/profile_run.py --pytest-junit reads it).
    args = session.posargs or ["-q", "-m", "not gpu", "-n", "2", "--durations=25",
                               "--junitxml=.test-reports/junit.xml"]
    session.run(str(PY), "-m", "pytest", "tests", *args, external=True, env={**_env(), "OMP_NUM_THREADS": "1"})


@nox.session
def tests_gpu(session: nox.Session) -> None:
    """Run only the CUDA tests (needs a GPU)."""
    _ensure_env(session)
    session.run(str(PY), "-m", "pytest", "tests", "benchmark", "-m", "gpu", *session.posargs, external=True, env=_env())


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check over the package, tests, benchmarks and this file; then the import contracts (pyproject.toml)."""
    _ensure_env(session)
    session.run(str(PY), "-m", "ruff", "check", "ifer", "tests", "benchmark", "tools", "noxfile.py", external=True,
                env=_env())
    session.run(str(VENV / "bin" / "lint-imports"), external=True, env=_env())


@nox.session
def bench(session: nox.Session) -> None:
    """pytest-benchmark: throughput (CPU, and CUDA when present) and paper-level checks; JSON + CSV into results/."""
    _ensure_env(session)
    env = _env()
    # paper-level checks are assertions on results/, not timings: --benchmark-only would skip them
    session.run(str(PY), "-m", "pytest", "benchmark", "-m", "paper", "-rs", external=True, env=env)
    args = session.posargs or ["--benchmark-autosave"]
    session.run(str(PY), "-m", "pytest", "benchmark", "--benchmark-only",
                "--benchmark-json", ".benchmarks/bench.json", *args, external=True, env=env)


@nox.session
def reproduce(session: nox.Session) -> None:
    """The main job: resolve the profile into params.yaml, run `dvc repro` (tiny by default; `-- paper`), then
    regenerate the README's results block from the fresh tiny results (`ifer readme`).

    The README block is regenerated so that the test command passes after the main job (its README check
    compares the block with results/tiny on disk); `git diff` then shows exactly what this run changed:
    results/tiny, dvc.lock and the README block. The paper profile leaves the README alone: its block shows tiny.
    """
    _ensure_env(session)
    profile = session.posargs[0] if session.posargs else "tiny"
    env = _env()
    session.run(str(PY), "-m", "ifer.cli", "config", "--profile", profile, "--out", "params.yaml", external=True, env=env)
    if not (ROOT / ".dvc").is_dir():
        session.run(str(VENV / "bin" / "dvc"), "init", "--quiet", external=True, env=env)
    session.run(str(VENV / "bin" / "dvc"), "repro", external=True, env=env)
    if profile == "tiny":
        session.run(str(PY), "-m", "ifer.cli", "readme", "--results", "results/tiny", "--readme", "README.md",
                    external=True, env=env)
    session.log(f"tables, plots and provenance are in results/{profile}/"
                + ("; README results block regenerated from them" if profile == "tiny" else ""))


@nox.session
def regression(session: nox.Session) -> None:
    """The CI regression check: the main job's stages through `ifer launch` (issue 20), then `ifer compare` of its
    results/tiny with the committed ones (git HEAD, made by the serial main job) within the stated tolerance.

    `ifer launch` runs 2 jobs at a time on a one-node SLURM started here (tools/slurm_single_node.sh, which
    installs slurm-wlm + munge with apt when root), else on submitit's local executor (the line above says why).
    One training job is SIGKILLed once it has saved last.pt (tools/kill_mid_run.py); launch must resubmit it and the
    run must resume (its log records the resume). Afterwards dvc status must be clean and `dvc repro` must have
    nothing to run (launch checks both). A no-op when the main job already ran here (nothing stale to launch).
    Fails only on a disagreement beyond the tolerance (a benign ISA/kernel difference passes). Part of the
    README's test command (`nox -s tests regression`), so `.ci/run` runs it on every clean clone.
    """
    import subprocess
    import time

    _ensure_env(session)
    env = _env()
    session.run(str(PY), "-m", "ifer.cli", "config", "--profile", "tiny", "--out", "params.yaml", external=True, env=env)
    if not (ROOT / ".dvc").is_dir():
        session.run(str(VENV / "bin" / "dvc"), "init", "--quiet", external=True, env=env)
    slurm_dir = ROOT / ".slurm"
    up = subprocess.run(["bash", str(ROOT / "tools" / "slurm_single_node.sh"), "start", str(slurm_dir)],
                        capture_output=True, text=True)
    executor = "slurm" if up.returncode == 0 else "local"
    if executor == "slurm":
        env["SLURM_CONF"] = str(slurm_dir / "slurm.conf")
        session.log(f"one-node SLURM up ({env['SLURM_CONF']}): the stages run as sbatch jobs, 2 at a time")
    else:
        session.log(f"{(up.stderr.strip().splitlines() or ['SLURM did not start'])[-1]}; the stages run on "
                    "submitit's local executor, 2 at a time")
    # one CPU per job (2 jobs on 2 cores, no oversubscription), no GPU: the tiny profile on this machine. The
    # evaluation stages and the report run alone in their waves (nothing else is ready beside them), so they get
    # both cores instead of leaving one idle.
    res = [f"launch.resources.default.{k}={v}" for k, v in (("gpus", 0), ("cpus", 1), ("mem_gb", 6))]
    res += [f"launch.resources.{kind}.cpus=2" for kind in ("eval_inversion", "eval_fer", "analyze_fer", "report")]
    victim = ROOT / "runs" / "tiny" / "asit" / "seed0"
    stale = subprocess.run([str(PY), "-m", "dvc", "status", "train_asit@0"], cwd=ROOT, capture_output=True,
                           text=True, env={**os.environ, **env}).stdout
    killer = None
    if "changed" in stale or "modified" in stale or "new" in stale:
        killer = subprocess.Popen([str(PY), str(ROOT / "tools" / "kill_mid_run.py"), str(victim / "last.pt"),
                                   "train-asit", "seed=0"], env={**os.environ, **env})
    t0 = time.monotonic()
    try:
        session.run(str(PY), "-m", "ifer.cli", "launch", "--executor", executor, "--parallel", "2", *res,
                    external=True, env=env)
    finally:
        if killer is not None and killer.poll() is None:
            killer.kill()
        if executor == "slurm":
            subprocess.run(["bash", str(ROOT / "tools" / "slurm_single_node.sh"), "stop", str(slurm_dir)])
    session.log(f"ifer launch ({executor}, 2 at a time): {(time.monotonic() - t0) / 60:.1f} min wall")
    if killer is not None:
        if killer.wait() != 0:
            session.error("the fault injection did not kill train_asit@0 mid-run: the resume path was not exercised")
        log = (victim / "log.jsonl").read_text()
        if '"kind": "resume"' not in log:
            session.error(f"train_asit@0 was killed but its resubmission did not resume from last.pt ({victim})")
        session.log("train_asit@0: SIGKILLed after saving last.pt, resubmitted by ifer launch, resumed from it")
    session.run(str(PY), "-m", "ifer.cli", "compare", "git:HEAD:results/tiny", "results/tiny",
                external=True, env=env)


@nox.session
def rehearse(session: nox.Session) -> None:
    """Rehearse the paper protocol: miniature real-layout data + random upstream-format weights, `dvc repro`
    of `paper` with only lengths shortened (its last 3 stages through `ifer launch`), in a scratch copy
    (.rehearsal/work). `-- DIR` picks the scratch dir."""
    _ensure_env(session)
    scratch = session.posargs[0] if session.posargs else ".rehearsal"
    session.run(str(PY), "-m", "ifer.rehearsal", "run", "--scratch", scratch, external=True, env=_env())


@nox.session
def data(session: nox.Session) -> None:
    """Generate SynthFER and verify any real datasets present under datasets/ (`dvc repro data verify`)."""
    _ensure_env(session)
    session.run(str(VENV / "bin" / "dvc"), "repro", "data", "verify_datasets", external=True, env=_env())
