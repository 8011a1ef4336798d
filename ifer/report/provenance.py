"""Provenance of a result: what decides its numbers, recorded by the stage that computed them.

Each stage writes its own record (:func:`write_stage_provenance`): git SHA and dirty files, a hash of the
resolved config, dataset fingerprints, seeds and the machine (``ifer.core.machine``: CPU ISA flags that
select kernels, torch / oneDNN / MKL / CUDA / cuDNN versions, GPU, thread count). The report stage runs on
whatever machine assembles the tables, so it collects the training and evaluation stages' records into
``results/<profile>/provenance.json`` under ``stages`` instead of speaking for them.

Bit-identity is promised only between runs with the same ``hardware.kernel_key`` (same ISA flags and build);
elsewhere results agree statistically (``ifer compare``).

    python -c "from ifer.report.provenance import collect; import json; print(json.dumps(collect({}), indent=1))"
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ifer.core.io import atomic_write_json
from ifer.core.machine import machine_info

PACKAGES = ("torch", "torchvision", "timm", "torchmetrics", "lpips", "numpy", "scipy", "pandas", "pillow", "dvc",
            "pytorch-optimizer", "ifer")
BIT_IDENTITY = ("bit-identical only for the same hardware.kernel_key (CPU ISA flags, torch/oneDNN/CUDA/cuDNN "
                "build, GPU, threads, numerics package versions); otherwise compare statistically with `ifer compare`")
STAGE_FILE = "provenance.json"


def git_state(root: str | Path = ".") -> dict:
    def run(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    sha = run("rev-parse", "HEAD")
    # dvc.lock, README.md (its results block) and results/ are written by the run being recorded, so they do
    # not make its code dirty
    status = run("status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock", ":!results", ":!README.md")
    changed = [line.split(maxsplit=1)[1] for line in status.splitlines()] if status else []
    return {"sha": sha, "dirty": bool(changed) if status is not None else None, "dirty_files": changed}


def hardware() -> dict:
    """``ifer.core.machine.machine_info`` plus the old keys (``cpu_count`` = torch threads) readers use."""
    info = machine_info()
    info["cpu_count"] = info["torch_threads"]
    return info


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def collect(config: dict, dataset_fingerprints: dict | None = None, seeds=None, extra: dict | None = None) -> dict:
    return {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(),
        "config": config,
        "config_sha256": config_hash(config),
        "datasets": dataset_fingerprints or {},
        "seeds": list(seeds) if seeds is not None else config.get("seeds"),
        "hardware": hardware(),
        "packages": package_versions(),
        "bit_identity": BIT_IDENTITY,
        **(extra or {}),
    }


def stage_record(stage: str, config: dict, seeds=None, dataset_fingerprints: dict | None = None,
                 extra: dict | None = None) -> dict:
    """One stage's record: like :func:`collect` but with the config's hash only (the config sits beside it)."""
    rec = collect(config, dataset_fingerprints, seeds, extra)
    rec.pop("config")
    return {"stage": stage, **rec}


def write_stage_provenance(directory: str | Path, stage: str, config: dict, seeds=None,
                           dataset_fingerprints: dict | None = None, extra: dict | None = None,
                           name: str = STAGE_FILE) -> Path:
    """Write ``directory/name`` (default ``provenance.json``) for ``stage``; returns the path."""
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, stage_record(stage, config, seeds, dataset_fingerprints, extra))
    return path


def collect_stage_records(*roots: str | Path) -> dict[str, dict]:
    """Every stage record under ``roots`` (``**/provenance*.json`` with a ``stage`` key), keyed by relative path."""
    out = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("provenance*.json")):
            try:
                rec = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(rec, dict) and "stage" in rec:
                out[p.as_posix()] = rec
    return out
