"""`dvc repro` killed inside a FER run resumes that run only, and ends with an uninterrupted run's metrics.

Guards the breakage "dvc repro deletes a stage's outputs before rerunning it (no persist), so the resume
machinery never fires; all FER runs sit in one stage, so one Ctrl-C restarts every run from zero" (issue 10).
Runs the real dvc.yaml in a temporary copy of the repository with a micro profile (a few images and steps).

    OMP_NUM_THREADS=1 python -m pytest tests/test_dvc_resume.py -q
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MICRO = [  # tiny, shrunk: one baseline method (no ASIT encoder needed), two seeds, a handful of images and steps
    "asit_seeds=[0]", "seeds=[0,1]", "methods=[fer_resnet18]",
    "data.synthfer.n_train_identities=6", "data.synthfer.n_val_identities=2", "data.synthfer.n_test_identities=3",
    "data.synthfer.images_per_identity=14",
    "asit.train.steps=2", "asit.train.batch_size=4", "asit.train.val_interval=2", "asit.train.save_interval=2",
    "asit.train.log_interval=1", "asit.latent_avg_samples=16",
    "fer_methods.fer_resnet18.train.epochs=6", "fer_methods.fer_resnet18.train.batch_size=16",
    "fer_methods.fer_resnet18.train.log_interval=1",
]
RUN = "runs/tiny/fer/clean/fer_resnet18/synthfer"  # keyed by protocol (tiny runs clean only)


def _copy_repo(dst: Path) -> None:
    """Tracked and untracked-but-not-ignored files: what a clean clone (plus this working tree's edits) holds."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("results/", "dvc.lock")):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
            "PYTHONHASHSEED": "0"}


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _repro(repo: Path) -> str:
    p = subprocess.run([str(BIN / "dvc"), "repro", "train_fer"], cwd=repo, env=_env(), capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


@pytest.mark.slow
def test_killed_dvc_repro_resumes_the_interrupted_fer_run_only(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    _copy_repo(repo)
    subprocess.run([sys.executable, "-m", "ifer.cli", "config", "--profile", "tiny", "--out", "params.yaml", *MICRO],
                   cwd=repo, env=_env(), check=True, capture_output=True)

    # 1. dvc repro, killed (whole process group, SIGKILL) once seed 1's run has saved an epoch to last.pt
    proc = subprocess.Popen([str(BIN / "dvc"), "repro", "train_fer"], cwd=repo, env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log1 = repo / RUN / "seed1" / "log.jsonl"
    deadline = time.monotonic() + 600
    while not (log1.parent / "last.pt").is_file():
        assert proc.poll() is None, "dvc repro ended before the run to interrupt had started"
        assert time.monotonic() < deadline, "seed 1 never logged an epoch"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    epochs_done = len([r for r in _log(log1) if r["kind"] == "epoch"])
    assert epochs_done < 6 and not (repo / RUN / "seed1" / "result.json").exists(), "the run finished before the kill"
    seed0 = repo / RUN / "seed0"
    assert (seed0 / "result.json").is_file()
    before = {p.name: p.stat().st_mtime_ns for p in seed0.iterdir()}
    asit_before = (repo / "runs/tiny/asit/seed0/asit_best.pt").stat().st_mtime_ns

    # 2. rerun: only the interrupted run reruns, and it resumes from its last.pt
    out = _repro(repo)
    assert "Stage 'train_fer@clean-fer_resnet18-synthfer-0' didn't change, skipping" in out, out
    assert "Running stage 'train_fer@clean-fer_resnet18-synthfer-1'" in out, out
    assert "Running stage 'train_asit@0'" not in out and "Running stage 'fer_init'" not in out, out
    assert {p.name: p.stat().st_mtime_ns for p in seed0.iterdir()} == before  # the finished run was not touched
    assert (repo / "runs/tiny/asit/seed0/asit_best.pt").stat().st_mtime_ns == asit_before
    rows = _log(log1)
    resumes = [r for r in rows if r["kind"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["epoch"] >= 1, resumes
    after = [r["epoch"] for r in rows[rows.index(resumes[0]):] if r["kind"] == "epoch"]
    assert after == list(range(resumes[0]["epoch"], 6)), after  # continued where last.pt left off, up to the end
    resumed = json.loads((repo / RUN / "seed1" / "result.json").read_text())

    # 3. the same run, uninterrupted, elsewhere: identical metrics
    monkeypatch.chdir(repo)
    from ifer import stages
    from ifer.core.config import load_config
    from ifer.train.distributed import DistInfo

    cfg = load_config(None, ["params.yaml"], ["paths.runs=runs_reference"])
    stages.stage_train_fer(cfg, DistInfo(), ["fer_resnet18"], ["synthfer"], [1])
    reference = json.loads((repo / "runs_reference/tiny/fer/clean/fer_resnet18/synthfer/seed1/result.json").read_text())
    assert resumed["test"] == reference["test"]
    assert resumed["best_epoch"] == reference["best_epoch"]

    # 4. a third repro does nothing (only the always-run input fingerprints)
    out = _repro(repo)
    assert "Running stage 'train_fer" not in out, out


def test_input_fingerprints_change_with_the_data_and_ignore_unused_weights(tmp_path):
    """Guards "real dataset roots and weight files are not deps of any stage": a relabelled or resized dataset and
    a replaced weight file change their fingerprint file; a weight path the profile does not use is not one."""
    from ifer import stages
    from ifer.core.config import load_config

    root = tmp_path / "datasets" / "rafdb"
    (root / "Image").mkdir(parents=True)
    (root / "Image" / "a.jpg").write_bytes(b"x" * 10)
    (root / "labels.txt").write_text("a.jpg 1\n")
    w = tmp_path / "model_ir_se50.pth"
    w.write_bytes(b"weights-1")
    cfg = load_config("tiny", overrides=[f"paths.datasets={tmp_path / 'datasets'}", f"paths.runs={tmp_path / 'runs'}",
                                         "data.fer.datasets=[rafdb]", "asit.id_embedder=arcface_ir_se50",
                                         "asit.lambdas.id=0.1", f"asit.id_weights={w}",
                                         f"asit.stylegan_weights={tmp_path / 'unused.pt'}"])

    def snapshot():
        return {p.name: p.read_text() for p in stages.stage_fingerprint_inputs(cfg).values()}

    first = snapshot()
    assert first == snapshot()  # unchanged inputs: identical bytes, so DVC reruns nothing downstream
    assert "asit.stylegan_weights" not in first["asit_weights.json"]  # train_decoder: the file is never read
    (root / "labels.txt").write_text("a.jpg 2\n")
    relabelled = snapshot()
    assert relabelled["fer_rafdb.json"] != first["fer_rafdb.json"]
    assert relabelled["asit_weights.json"] == first["asit_weights.json"]
    (root / "Image" / "a.jpg").write_bytes(b"x" * 11)
    assert snapshot()["fer_rafdb.json"] != relabelled["fer_rafdb.json"]
    w.write_bytes(b"weights-2")
    assert snapshot()["asit_weights.json"] != relabelled["asit_weights.json"]


def test_persisted_run_dir_is_resumed_only_when_unfinished_and_unchanged(tmp_path):
    """Guards the price of `persist: true`: DVC keeps outputs when it reruns a stage because a param, input or the
    code changed. A finished run is retrained; an unfinished run of other settings is refused with one line naming
    the keys (never silently wiped: it may hold days of training) unless --resume-override or --no-resume."""
    from ifer.stages import prepare_run_dir
    from ifer.train.checkpoint import ResumeMismatchError
    from ifer.train.distributed import DistInfo

    out = tmp_path / "run"
    assert not prepare_run_dir(out, {"lr": 1}, "result.json", DistInfo())
    (out / "last.pt").write_bytes(b"state")
    assert prepare_run_dir(out, {"lr": 1}, "result.json", DistInfo())  # killed run, same everything: resume
    assert (out / "last.pt").is_file()
    with pytest.raises(ResumeMismatchError, match=r"other settings \(lr\)"):
        prepare_run_dir(out, {"lr": 2}, "result.json", DistInfo())  # config changed: refused, nothing deleted
    assert (out / "last.pt").is_file()
    assert prepare_run_dir(out, {"lr": 3}, "result.json", DistInfo(), keep_changed=True)  # --resume-override
    assert (out / "last.pt").is_file()
    assert not prepare_run_dir(out, {"lr": 2}, "result.json", DistInfo(), resume=False)  # --no-resume
    assert not (out / "last.pt").exists()
    (out / "last.pt").write_bytes(b"state")
    (out / "result.json").write_text("{}")
    assert not prepare_run_dir(out, {"lr": 2}, "result.json", DistInfo())  # finished: a rerun retrains
    assert not (out / "last.pt").exists() and not (out / "result.json").exists()


def test_a_subset_list_edited_in_place_reaches_analyze_fer_through_its_fingerprint(tmp_path):
    """Guards "DVC tracks a subset list's path, not its content": ``analysis.subsets`` lists are user paths that
    dvc.yaml cannot name, so fingerprint_inputs writes their sha256 into ``inputs/analysis_subsets.json``, which
    analyze_fer depends on. Editing a list changes that file (and no other); every inputs file dvc.yaml names is
    one the stage writes."""
    import re

    import yaml

    from ifer import stages
    from ifer.core.config import load_config

    lst = tmp_path / "occlusion_list.txt"
    lst.write_text("test_0001.jpg\n")
    cfg = load_config("tiny", overrides=[f"paths.runs={tmp_path / 'runs'}",
                                         f"analysis.subsets=[{{name: occ, dataset: synthfer, list: {lst}}}]"])

    def snapshot():
        return {p.name: p.read_text() for p in stages.stage_fingerprint_inputs(cfg).values()}

    first = snapshot()
    rec = json.loads(first["analysis_subsets.json"])["occ"]
    assert rec["dataset"] == "synthfer" and rec["sha256"] == hashlib.sha256(lst.read_bytes()).hexdigest()
    lst.write_text("test_0001.jpg\ntest_0002.jpg\n")
    edited = snapshot()
    assert {k for k in first if first[k] != edited[k]} == {"analysis_subsets.json"}
    lst.unlink()
    assert json.loads(snapshot()["analysis_subsets.json"])["occ"]["status"] == "missing"

    dvc = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]
    assert "runs/${profile}/inputs/analysis_subsets.json" in dvc["analyze_fer"]["deps"]
    named = {m.group(1) for st in dvc.values() for d in st.get("deps", []) if isinstance(d, str)
             for m in [re.fullmatch(r"runs/\$\{profile\}/inputs/([a-z_]+)\.json", d)] if m}
    assert named and {f"{n}.json" for n in named} <= set(first), named
