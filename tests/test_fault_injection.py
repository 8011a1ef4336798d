"""Fault injection: SIGKILL the ASIT and FER trainers at seeded random steps and in the middle of a checkpoint
write, rerun, and require the final weights (``torch.equal``) and metrics of an uninterrupted run; SIGTERM and
SIGINT save a resumable checkpoint and exit 143 / 130 within a bounded time.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/test_fault_injection.py -q

Each trainer runs in a subprocess (this file's ``__main__``): ``python tests/test_fault_injection.py fer|asit RUN OUT``.
The kills come from ``IFER_FAULT_INJECT`` (``kill_at_step=N``: SIGKILL before step N; ``kill_in_save=N``: SIGKILL
with half of the N-th checkpoint written), see ``ifer.train.checkpoint.fault_requested``.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FER_STEPS, FER_SAVES = 18, 4  # 3 epochs x 6 batches; at least 3 last.pt + 1 best.pt writes
ASIT_STEPS, ASIT_SAVES = 4, 4  # save_interval 1: 4 last.pt writes (+ best.pt at the validations)
N_TRIALS = 10


# ---------------------------------------------------------------------------------------------- the worker
def _fer_recipe():
    from ifer.core.config import Config

    return Config(optimizer="adamw", momentum=0.9, epochs=3, cooldown_epochs=0, warmup_epochs=1, lr=3e-3,
                  warmup_lr=1e-4, min_lr=1e-5, weight_decay=0.05, batch_size=16, clip_grad=5.0, amp=False, mixup=0.0,
                  cutmix=0.0, smoothing=0.1, log_interval=1)


class _Slow(torch.utils.data.Dataset):
    """Wraps a dataset so each batch takes a while (time for the test to send a signal mid-run)."""

    def __init__(self, ds, delay: float):
        self.ds, self.delay = ds, delay

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        time.sleep(self.delay)
        return self.ds[i]


def _worker(kind: str, run_dir: Path, out: Path, slow: bool) -> int:
    from ifer.train.interrupt import TrainingInterrupted

    torch.set_num_threads(1)
    try:
        if kind == "fer":
            from ifer.train.fer import train_fer
            from tests.toy import ToyFER, ToyImages

            torch.manual_seed(0)
            model = ToyFER()
            train = ToyImages(96, seed=0)
            run = train_fer(model, _Slow(train, 0.02) if slow else train, ToyImages(30, seed=1), ToyImages(45, seed=2),
                            _fer_recipe(), run_dir, seed=3, progress=False)
            weights, metrics = model.state_dict(), {"test": run.test, "history": run.history}
        else:
            from ifer.core.config import Config
            from ifer.train.asit import ASITLosses, train_asit
            from tests.test_train_asit import CFG, LAMBDAS, _build, _images

            cfg = Config({**CFG, "steps": ASIT_STEPS, "save_interval": 1, "val_interval": 2, "log_interval": 1})
            net, disc = _build()
            metrics = train_asit(net, disc, ASITLosses(LAMBDAS, None, None), _images(12, 0), _images(4, 1), cfg,
                                 run_dir, seed=5, progress=False)
            weights = {**{f"net.{k}": v for k, v in net.state_dict().items()},
                       **{f"disc.{k}": v for k, v in disc.state_dict().items()}}
    except TrainingInterrupted as e:
        print(f"interrupted at step {e.step}", file=sys.stderr)
        return e.exit_code
    torch.save(weights, out / "weights.pt")
    (out / "metrics.json").write_text(json.dumps(metrics, sort_keys=True))
    return 0


# ---------------------------------------------------------------------------------------------- helpers
def _run(kind: str, run_dir: Path, out: Path, fault: str | None = None, slow: bool = False, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("IFER_FAULT_INJECT", None)
    if fault:
        env["IFER_FAULT_INJECT"] = fault
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), kind, str(run_dir), str(out)] + (["slow"] if slow else [])
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _result(out: Path):
    return torch.load(out / "weights.pt", weights_only=True), json.loads((out / "metrics.json").read_text())


def _assert_same_as_reference(out: Path, reference) -> None:
    weights, metrics = _result(out)
    ref_w, ref_m = reference
    assert weights.keys() == ref_w.keys()
    assert [k for k in ref_w if not torch.equal(weights[k], ref_w[k])] == []
    assert metrics == ref_m


def _assert_log_has_no_duplicates(run_dir: Path) -> None:
    from ifer.train.logging import read_log

    for kind in ("train", "epoch", "val"):
        steps = [r["step"] for r in read_log(run_dir / "log.jsonl", kind)]
        assert steps == sorted(set(steps)), f"{kind} rows repeat or go back after a resume: {steps}"
    assert len(read_log(run_dir / "log.jsonl", "test")) <= 1


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run of each trainer, in this process (one thread, like the workers: same numbers)."""
    refs, threads = {}, torch.get_num_threads()
    try:
        for kind in ("fer", "asit"):
            base = tmp_path_factory.mktemp(f"ref_{kind}")
            base.joinpath("out").mkdir()
            assert _worker(kind, base / "run", base / "out", slow=False) == 0
            refs[kind] = _result(base / "out")
            _assert_log_has_no_duplicates(base / "run")
    finally:
        torch.set_num_threads(threads)
    return refs


def _faults(trial: int) -> tuple[str, list[str]]:
    """Seeded: the trainer and one or two faults (a kill at a random step or inside a random checkpoint write)."""
    rng = random.Random(1000 + trial)
    kind = "fer" if trial % 5 < 3 else "asit"  # 6 FER and 4 ASIT trials
    steps, saves = (FER_STEPS, FER_SAVES) if kind == "fer" else (ASIT_STEPS, ASIT_SAVES)

    def one() -> str:
        if rng.random() < 0.5:
            return f"kill_at_step={rng.randrange(1, steps)}"
        return f"kill_in_save={rng.randrange(1, saves + 1)}"

    return kind, [one() for _ in range(2 if trial in (2, 7) else 1)]  # two trials are killed again while resuming


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.slow
@pytest.mark.parametrize("trial", range(N_TRIALS))
def test_sigkill_then_rerun_equals_uninterrupted_run(trial, tmp_path, reference):
    """SIGKILL (no handler runs) at a seeded random step or mid-checkpoint-write; the rerun resumes from last.pt
    (or prev.pt) and ends with the uninterrupted run's weights, metrics and a log without repeated steps."""
    kind, faults = _faults(trial)
    run_dir = tmp_path / "run"
    for fault in faults:
        proc = _run(kind, run_dir, tmp_path / "killed", fault=fault)
        assert proc.returncode == -signal.SIGKILL, f"{fault}: {proc.returncode} {proc.stderr[-2000:]}"
        assert not (tmp_path / "killed" / "weights.pt").exists()
    proc = _run(kind, run_dir, tmp_path / "out")
    assert proc.returncode == 0, f"{faults}: {proc.stderr[-3000:]}"
    _assert_same_as_reference(tmp_path / "out", reference[kind])
    _assert_log_has_no_duplicates(run_dir)
    assert list(run_dir.glob("*.tmp")) == []  # a killed write's temporary file is cleaned up on the rerun


@pytest.mark.slow
@pytest.mark.parametrize("kind,sig", [("fer", signal.SIGTERM), ("fer", signal.SIGINT), ("asit", signal.SIGTERM)])
def test_sigterm_sigint_save_within_a_step_and_resume_exactly(kind, sig, tmp_path, reference):
    """A scheduler's SIGTERM or a Ctrl-C: the trainer saves last.pt at the next step boundary, exits 128+signal
    within seconds, and the same command resumes to the uninterrupted result."""
    from ifer.train.checkpoint import load_training_state
    from ifer.train.logging import read_log

    run_dir = tmp_path / "run"
    proc = _run(kind, run_dir, tmp_path / "cut", slow=True, wait=False)
    deadline = time.time() + 120
    while not read_log(run_dir / "log.jsonl", "train"):  # training has started: step 1 is logged
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
        time.sleep(0.05)
    sent = time.time()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert time.time() - sent < 30  # within a step (a few seconds), not the rest of the run
    step = int(err.strip().splitlines()[-1].rsplit(" ", 1)[-1])
    state = load_training_state(run_dir / "last.pt")
    assert state["step"] == step and 0 < step < (FER_STEPS if kind == "fer" else ASIT_STEPS)
    assert read_log(run_dir / "log.jsonl", "interrupt")[-1]["step"] == step
    done = _run(kind, run_dir, tmp_path / "out")
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_as_reference(tmp_path / "out", reference[kind])
    _assert_log_has_no_duplicates(run_dir)


def test_cli_prints_one_resume_line_and_exits_143(monkeypatch, capsys):
    """`ifer train-fer` interrupted: one line naming the step and the command that resumes (without --no-resume)."""
    from ifer import cli, stages
    from ifer.train.interrupt import TrainingInterrupted

    def interrupted(*a, **k):
        raise TrainingInterrupted(7, signal.SIGTERM, Path("runs/tiny/fer/x/last.pt"))

    monkeypatch.setattr(stages, "stage_train_fer", interrupted)
    rc = cli.main(["train-fer", "--profile", "tiny", "--no-resume", "--seed", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 143
    assert err[-1] == "ifer train-fer: interrupted at step 7; resume with: ifer train-fer --profile tiny --seed 0"
    assert not any("Traceback" in line for line in err)


def test_ctrl_c_outside_the_training_loop_is_one_line_and_exit_130(monkeypatch, capsys):
    """Ctrl-C while data or models load (no training state yet): one line, exit 130, no Python traceback."""
    from ifer import cli, stages

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "stage_train_asit", ctrl_c)
    rc = cli.main(["train-asit", "--profile", "tiny"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 130 and err[-1] == "ifer train-asit: interrupted" and not any("Traceback" in x for x in err)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(_worker(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), "slow" in sys.argv[4:]))
